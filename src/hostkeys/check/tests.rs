//! [`decide`]: one test per known_hosts line kind, as the daemon uses it; [`HostKeyCheck`]: the precedence of the
//! files and first trust, with a fake console.

use std::path::Path;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;

use super::*;
use crate::ec2::Ec2Error;
use crate::hostkeys::pattern::hash_name;

const NOW: u64 = 1_700_000_000;

fn private(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn key(seed: u8) -> PublicKey {
    private(seed).public_key().clone()
}

// ---- the files: decide ----

fn names(port: u16) -> HostNames {
    HostNames { instance_id: "i-0abc".into(), addr: SocketAddr::from(([127, 0, 2, 1], port)) }
}

fn user(text: &str) -> KnownHosts {
    KnownHosts::parse(Path::new("/home/u/.ssh/known_hosts"), text)
}

fn plain(k: &PublicKey) -> PublicKeyOrCertificate {
    PublicKeyOrCertificate::from(k.clone())
}

fn check(text: &str, offered: &PublicKeyOrCertificate, port: u16) -> Decision {
    decide(offered, &names(port), None, &user(text), NOW)
}

fn body(k: &PublicKey) -> String {
    known_hosts_line("", k).trim_start().to_string()
}

fn trusted(d: &Decision) -> bool {
    matches!(d, Decision::Trusted(_))
}

#[test]
fn plain_line_comments_and_blank_lines() {
    let text = format!("# comment\n\n   # indented comment\n{}\n", known_hosts_line("i-0abc", &key(1)));
    assert_eq!(check(&text, &plain(&key(1)), 2222), Decision::Trusted("/home/u/.ssh/known_hosts:4".into()));
    assert_eq!(check("# i-0abc only a comment\n", &plain(&key(1)), 2222), Decision::Unknown);
}

#[test]
fn tab_separators_and_trailing_comment() {
    let text = format!("i-0abc\t{}\t\tsome comment here\n", body(&key(1)).replace(' ', "\t"));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)), "{text}");
}

#[test]
fn hashed_entry() {
    let text = format!("{} {}\n", hash_name("[127.0.2.1]:2222", b"twenty bytes of salt"), body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 2222)));
    assert_eq!(check(&text, &plain(&key(1)), 22), Decision::Unknown, "the hash is of [addr]:2222 only");
}

#[test]
fn hashed_entry_written_by_ssh_keygen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, format!("[127.0.2.1]:2222 {}\n", body(&key(1)))).expect("write");
    let out = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&path).output();
    let out = out.expect("ssh-keygen runs (install openssh-client: scripts/install-deps.sh)");
    assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("|1|"), "{text}");
    assert!(trusted(&check(&text, &plain(&key(1)), 2222)), "{text}");
}

#[test]
fn bracketed_host_and_port() {
    let text = format!("[127.0.2.1]:2222 {}\n", body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 2222)));
    assert_eq!(check(&text, &plain(&key(1)), 22), Decision::Unknown);
    let text = format!("127.0.2.1 {}\n", body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)), "port 22 is the bare address");
}

#[test]
fn comma_list() {
    let text = format!("bastion.example.com,127.0.2.1,i-0zzz {}\n", body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)));
}

#[test]
fn wildcards() {
    let text = format!("i-0a?c {}\n[127.0.*]:* {}\n", body(&key(1)), body(&key(2)));
    assert!(trusted(&check(&text, &plain(&key(1)), 2222)));
    // The instance id's line is looked up first and holds another key.
    assert!(matches!(check(&text, &plain(&key(2)), 2222), Decision::Changed { line: 1, .. }));
}

#[test]
fn negation_means_the_line_does_not_apply() {
    let text = format!("i-*,!i-0abc {}\n", body(&key(1)));
    assert_eq!(check(&text, &plain(&key(1)), 2222), Decision::Unknown);
    let text = format!("*,!127.0.2.1 {}\n", body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)), "the instance id is not negated");
}

#[test]
fn changed_key_names_the_line_and_both_fingerprints() {
    let text = format!("# header\ni-0abc {}\n", body(&key(1)));
    match check(&text, &plain(&key(2)), 22) {
        Decision::Changed { line, name, pinned, in_pin_file, .. } => {
            assert_eq!((line, name.as_str(), in_pin_file), (2, "i-0abc", false));
            assert_eq!(pinned, fingerprint(&key(1)));
        }
        other => panic!("expected Changed, got {other:?}"),
    }
}

#[test]
fn revoked_refuses_even_when_another_line_trusts_it() {
    let text = format!("i-0abc {k}\n@revoked * {k}\n", k = body(&key(1)));
    assert_eq!(check(&text, &plain(&key(1)), 22), Decision::Revoked { path: user("").path, line: 2 });
    // A revocation in the user's file also beats a pin.
    let pins = KnownHosts::parse(Path::new("/state/known_hosts"), &known_hosts_line("i-0abc", &key(1)));
    let d = decide(&plain(&key(1)), &names(22), Some(&pins), &user(&text), NOW);
    assert!(matches!(d, Decision::Revoked { line: 2, .. }), "{d:?}");
    // Only for the hosts it names.
    let text = format!("i-0abc {k}\n@revoked other.host {k}\n", k = body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)));
}

fn host_cert(subject: u8, ca: u8, principals: &[&str], after: u64, before: u64, kind: CertType) -> PublicKeyOrCertificate {
    let mut b = Builder::new([7u8; 32], key(subject).key_data().clone(), after, before).expect("builder");
    b.cert_type(kind).expect("type");
    for p in principals {
        b.valid_principal(*p).expect("principal");
    }
    if principals.is_empty() {
        b.all_principals_valid().expect("empty principal list");
    }
    PublicKeyOrCertificate::Certificate(b.sign(&private(ca)).expect("sign"))
}

#[test]
fn cert_authority_accepts_valid_host_certificates_only() {
    let text = format!("@cert-authority *.example.com,i-0* {}\n", body(&key(9)));
    let ok = host_cert(1, 9, &["127.0.2.1", "i-0abc"], NOW - 60, NOW + 60, CertType::Host);
    assert!(trusted(&check(&text, &ok, 2222)), "{:?}", check(&text, &ok, 2222));
    let refused = [
        ("another CA", host_cert(1, 8, &["i-0abc"], NOW - 60, NOW + 60, CertType::Host)),
        ("principal", host_cert(1, 9, &["127.0.2.1"], NOW - 60, NOW + 60, CertType::Host)),
        ("no principals", host_cert(1, 9, &[], NOW - 60, NOW + 60, CertType::Host)),
        ("expired", host_cert(1, 9, &["i-0abc"], NOW - 60, NOW - 1, CertType::Host)),
        ("not yet valid", host_cert(1, 9, &["i-0abc"], NOW + 10, NOW + 60, CertType::Host)),
        ("user cert", host_cert(1, 9, &["i-0abc"], NOW - 60, NOW + 60, CertType::User)),
    ];
    for (what, cert) in &refused {
        assert_eq!(check(&text, cert, 2222), Decision::Unknown, "{what}");
    }
    // A refused certificate falls back to its plain key, as in OpenSSH.
    let with_plain = format!("{text}i-0abc {}\n", body(&key(1)));
    assert!(trusted(&check(&with_plain, &refused[1].1, 2222)));
    // Revoking the CA revokes its certificates.
    let revoked = format!("{text}@revoked * {}\n", body(&key(9)));
    assert!(matches!(check(&revoked, &ok, 2222), Decision::Revoked { line: 2, .. }));
}

#[test]
fn unparsable_lines_refuse_only_for_their_hosts() {
    let text = format!("i-0abc ssh-ed25519 not-base64!\nother {}\n@bogus i-0abc {}\n", body(&key(1)), body(&key(1)));
    assert!(matches!(check(&text, &plain(&key(1)), 22), Decision::Invalid { line: 1, .. }));
    let text = format!("elsewhere ssh-ed25519 not-base64!\ni-0abc {}\n", body(&key(1)));
    assert!(trusted(&check(&text, &plain(&key(1)), 22)), "a broken line for another host is skipped");
    let text = format!("@bogus i-0abc {}\n", body(&key(1)));
    assert!(matches!(check(&text, &plain(&key(1)), 22), Decision::Invalid { line: 1, .. }), "unknown marker");
}

#[test]
fn pin_file_wins_over_the_users_file() {
    let pins = KnownHosts::parse(Path::new("/state/known_hosts"), &format!("# i-0abc: x\n{}\n", known_hosts_line("i-0abc", &key(1))));
    let user_text = format!("i-0abc {}\n", body(&key(2)));
    let d = decide(&plain(&key(1)), &names(22), Some(&pins), &user(&user_text), NOW);
    assert_eq!(d, Decision::Trusted("/state/known_hosts:2 (pinned)".into()));
    let d = decide(&plain(&key(2)), &names(22), Some(&pins), &user(&user_text), NOW);
    assert!(matches!(d, Decision::Changed { line: 2, in_pin_file: true, .. }), "{d:?}");
    // A new Elastic IP changes nothing: the pin is by instance id.
    let moved = HostNames { addr: SocketAddr::from(([198, 51, 100, 7], 22)), ..names(22) };
    assert!(trusted(&decide(&plain(&key(1)), &moved, Some(&pins), &user(""), NOW)));
    // A pin is for the instance id only: the address does not count in the pin file.
    let pins = KnownHosts::parse(Path::new("/state/known_hosts"), &known_hosts_line("127.0.2.1", &key(1)));
    assert_eq!(decide(&plain(&key(1)), &names(22), Some(&pins), &user(""), NOW), Decision::Unknown);
}

// ---- HostKeyCheck: the files, then first trust ----

fn offered(seed: u8) -> PublicKeyOrCertificate {
    PublicKeyOrCertificate::from(key(seed))
}

/// Console output holding a fixed text (or failing).
struct FakeConsole(Result<Option<String>, ()>);

#[async_trait::async_trait]
impl ConsoleSource for FakeConsole {
    async fn console_output(&self, _id: &str) -> Result<Option<String>, Ec2Error> {
        self.0.clone().map_err(|()| Ec2Error::Api {
            operation: "GetConsoleOutput",
            code: "UnauthorizedOperation".into(),
            message: "no".into(),
        })
    }
}

fn cloud_init(fps: &[String]) -> String {
    let lines: String = fps.iter().map(|f| format!("ec2: 256 {f} root@ip-10-0-0-5 (ED25519)\n")).collect();
    format!("booting\nec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n{lines}ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn check(&self, console: Option<Result<Option<String>, ()>>, tofu: bool) -> HostKeyCheck {
        HostKeyCheck {
            known_hosts: self.dir.path().join("user_known_hosts"),
            instance_id: "i-0abc".into(),
            addr: SocketAddr::from(([127, 0, 2, 1], 2222)),
            first_trust: Some(FirstTrust {
                pins: self.pins(),
                trust_on_first_use: tofu,
                trust_command: "bastionctl trust lab".into(),
                console: console.map(|c| Arc::new(FakeConsole(c)) as Arc<dyn ConsoleSource>),
            }),
        }
    }

    fn pins(&self) -> PathBuf {
        self.dir.path().join("state/known_hosts")
    }

    fn pinned(&self) -> String {
        std::fs::read_to_string(self.pins()).unwrap_or_default()
    }
}

#[tokio::test]
async fn console_fingerprint_pins_the_key_under_the_instance_id() {
    let s = Setup::new();
    let c = s.check(Some(Ok(Some(cloud_init(&[fingerprint(&key(2)), fingerprint(&key(1))])))), false);
    c.verify(&offered(1)).await.expect("trusted by the console");
    assert!(s.pinned().contains(&known_hosts_line("i-0abc", &key(1))), "{}", s.pinned());
    // From now on the pin decides, console or not; another key is a change.
    let c = s.check(None, false);
    c.verify(&offered(1)).await.expect("pinned");
    match c.verify(&offered(3)).await {
        Err(HostKeyError::Changed { known_hosts, line, fingerprint: got, pinned_fingerprint, trust_command, .. }) => {
            assert_eq!((known_hosts, line), (s.pins(), 2));
            assert_eq!((got, pinned_fingerprint), (fingerprint(&key(3)), fingerprint(&key(1))));
            assert_eq!(trust_command.as_deref(), Some("bastionctl trust lab"));
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
}

#[tokio::test]
async fn no_evidence_and_no_tofu_is_refused_with_the_trust_command() {
    let s = Setup::new();
    for console in [Some(Ok(Some("Linux booting\n".to_string()))), Some(Ok(None)), Some(Err(())), None] {
        let err = s.check(console.clone(), false).verify(&offered(1)).await.expect_err("refused");
        let hint = err.hint();
        assert!(matches!(err, HostKeyError::Unknown { .. }), "{err:?}");
        assert!(hint.contains("`bastionctl trust lab`"), "{hint}");
        assert!(err.to_string().contains(&fingerprint(&key(1))), "{err}");
    }
    assert_eq!(s.pinned(), "", "nothing pinned without evidence or consent");
}

#[tokio::test]
async fn tofu_pins_only_when_the_console_does_not_contradict() {
    let s = Setup::new();
    let other = cloud_init(&[fingerprint(&key(2))]);
    let err = s.check(Some(Ok(Some(other))), true).verify(&offered(1)).await.expect_err("console contradicts");
    assert!(err.to_string().contains(&fingerprint(&key(2))), "{err}");
    assert_eq!(s.pinned(), "");
    s.check(Some(Ok(Some("no fingerprints".into()))), true).verify(&offered(1)).await.expect("tofu");
    assert!(s.pinned().contains("trust on first use"), "{}", s.pinned());
}

#[tokio::test]
async fn users_known_hosts_still_trusts_and_instance_id_wins_over_address() {
    let s = Setup::new();
    let c = s.check(None, false);
    std::fs::write(
        &c.known_hosts,
        format!("{}\n{}\n", known_hosts_line("[127.0.2.1]:2222", &key(4)), known_hosts_line("i-0abc", &key(1))),
    )
    .expect("write");
    c.verify(&offered(1)).await.expect("trusted by the user's file");
    assert!(matches!(c.verify(&offered(4)).await, Err(HostKeyError::Changed { line: 2, .. })));
    assert_eq!(s.pinned(), "", "a key the user's file trusts is not copied into the pin file");
    let plain = HostKeyCheck { first_trust: None, ..c };
    plain.verify(&offered(1)).await.expect("without a pin file too");
}
