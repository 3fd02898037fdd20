//! [`HostKeyCheck`]: the precedence of the files and first trust, with a fake console.

use super::*;
use crate::ec2::Ec2Error;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;

fn key(seed: u8) -> PublicKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32])).public_key().clone()
}

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
        Err(SshError::HostKeyChanged { known_hosts, line, fingerprint: got, pinned_fingerprint, trust_command, .. }) => {
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
        let hint = err.hint().unwrap_or_default();
        assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
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
    assert!(matches!(c.verify(&offered(4)).await, Err(SshError::HostKeyChanged { line: 2, .. })));
    assert_eq!(s.pinned(), "", "a key the user's file trusts is not copied into the pin file");
    let plain = HostKeyCheck { first_trust: None, ..c };
    plain.verify(&offered(1)).await.expect("without a pin file too");
}
