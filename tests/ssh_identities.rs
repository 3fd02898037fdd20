//! `SshDialer` logging in to a real OpenSSH sshd with each key type (ed25519, ecdsa nistp256, rsa with
//! rsa-sha2-256 and rsa-sha2-512, each forced by sshd's `PubkeyAcceptedAlgorithms`), with identity files in config
//! order, and with an OpenSSH user certificate (`-cert.pub`) that sshd trusts through `TrustedUserCAKeys` while the
//! key itself is in no authorized_keys. No test here touches the environment (no agent, no askpass).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bastionctl_lab::net;
use bastionctl_lab::proc::Proc;
use bastionctl_lab::sshd::{self, SshdSpec};
use bastionctl::ssh::{SshDialer, SshError, SshSettings};
use bastionctl::progress::Progress;
use bastionctl::tunnel::{Dialer, Session};
use tokio::process::Command;
use tokio::time::Instant;

const INSTANCE: &str = "i-0ssh0identities";
const DIAL: Duration = Duration::from_secs(30);

async fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().await.expect("run (install openssh-client: scripts/install-deps.sh)");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `ssh-keygen -t TYPE [-b BITS] -N '' -f DIR/NAME`; returns the private key path and the public key line.
async fn keygen(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, String) {
    let path = dir.join(name);
    run(Command::new("ssh-keygen").args(["-q", "-N", "", "-C", name]).args(args).arg("-f").arg(&path)).await;
    let public = std::fs::read_to_string(format!("{}.pub", path.display())).expect("public key").trim().to_string();
    (path, public)
}

/// A real sshd in `dir` with `authorized` as its authorized_keys and `extra` appended to its config.
struct Fixture {
    _sshd: Proc,
    spec: SshdSpec,
    known_hosts: PathBuf,
}

impl Fixture {
    async fn start(dir: &Path, last_octet: u8, authorized: &str, extra: &str) -> Fixture {
        let (host_key, host_public) = keygen(dir, "host_ed25519", &["-t", "ed25519"]).await;
        let mut spec = SshdSpec {
            role: "bastion".into(),
            dir: dir.to_path_buf(),
            addr: Ipv4Addr::new(127, 0, 2, last_octet),
            port: 0,
            host_key,
            authorized_key: authorized.to_string(),
            log_level: "DEBUG1",
        };
        let mut last = None;
        for _ in 0..5 {
            spec.port = net::free_port(spec.addr).expect("free port");
            spec.write_files().expect("sshd files");
            let mut config = std::fs::read_to_string(spec.config_path()).expect("config");
            config.push_str(extra);
            std::fs::write(spec.config_path(), config).expect("config");
            match sshd::spawn(&spec).await {
                Ok(sshd) => {
                    let known_hosts = dir.join("known_hosts");
                    let pinned: Vec<&str> = host_public.split_whitespace().take(2).collect();
                    std::fs::write(&known_hosts, format!("{INSTANCE} {}\n", pinned.join(" "))).expect("known_hosts");
                    return Fixture { _sshd: sshd, spec, known_hosts };
                }
                Err(e) => last = Some(e),
            }
        }
        panic!("sshd did not start: {:#}", last.expect("tried"));
    }

    fn settings(&self, identity_files: Vec<PathBuf>) -> SshSettings {
        SshSettings {
            user: "root".into(),
            identity_files,
            agent: false,
            identities_only: true,
            known_hosts: self.known_hosts.clone(),
        }
    }

    async fn dial(&self, identity_files: Vec<PathBuf>) -> Result<Arc<dyn Session>, SshError> {
        let dialer = SshDialer::new(self.settings(identity_files));
        dialer.dial(self.spec.socket_addr(), INSTANCE, Instant::now() + DIAL, &Progress::default()).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.spec.log_path()).unwrap_or_default()
    }

    /// Dials with `identity`, expects a login, and returns sshd's log.
    async fn login(&self, identity: &Path) -> String {
        match self.dial(vec![identity.to_path_buf()]).await {
            Ok(session) => session.close(),
            Err(e) => panic!("login with {} failed: {e}\n--- sshd log ---\n{}", identity.display(), self.log()),
        }
        self.log()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_and_ecdsa_keys_log_in() {
    for (i, (name, args, alg)) in [
        ("id_ed25519", ["-t", "ed25519", "", ""], "ssh-ed25519"),
        ("id_ecdsa", ["-t", "ecdsa", "-b", "256"], "ecdsa-sha2-nistp256"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let (key, public) = keygen(dir.path(), name, &args).await;
        assert!(public.starts_with(alg), "{public}");
        let extra = format!("PubkeyAcceptedAlgorithms {alg}\n");
        let fx = Fixture::start(dir.path(), 60 + i as u8, &public, &extra).await;
        let log = fx.login(&key).await;
        assert!(log.contains("Accepted publickey for root"), "{log}");
    }
}

/// sshd accepts only one RSA signature hash; the login must use exactly that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_logs_in_with_sha2_256_and_sha2_512() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]).await;
    for (i, alg) in ["rsa-sha2-512", "rsa-sha2-256"].into_iter().enumerate() {
        let sub = dir.path().join(alg);
        std::fs::create_dir(&sub).expect("dir");
        let fx = Fixture::start(&sub, 70 + i as u8, &public, &format!("PubkeyAcceptedAlgorithms {alg}\n")).await;
        let log = fx.login(&key).await;
        assert!(log.contains("Accepted publickey for root"), "{alg}:\n{log}");
        assert!(log.contains(&format!("publickey test pkalg {alg} ")), "{alg} was not offered:\n{log}");
    }
}

/// Identity files are tried in config order: an unauthorized key first is offered and refused, then the next one
/// logs in; a missing file is reported but does not stop the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_files_are_offered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, public) = keygen(dir.path(), "id_good", &["-t", "ed25519"]).await;
    let (other, _) = keygen(dir.path(), "id_other", &["-t", "ed25519"]).await;
    let fx = Fixture::start(dir.path(), 80, &public, "").await;
    let missing = dir.path().join("id_missing");
    match fx.dial(vec![missing.clone(), other.clone(), good.clone()]).await {
        Ok(session) => session.close(),
        Err(e) => panic!("login failed: {e}\n{}", fx.log()),
    }
    // Only the good key may be accepted: refused in the wrong order would mean a different set of log lines.
    let log = fx.log();
    assert_eq!(log.matches("Accepted publickey for root").count(), 1, "{log}");
    match fx.dial(vec![other.clone(), missing.clone()]).await {
        Err(SshError::AuthFailed { tried, .. }) => {
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert!(tried[0].starts_with(&other.display().to_string()), "{tried:?}");
            assert!(tried[1].starts_with(&missing.display().to_string()) && tried[1].contains("could not load"));
        }
        Err(e) => panic!("expected AuthFailed, got {e}"),
        Ok(_) => panic!("an unauthorized key logged in"),
    }
}

/// A user certificate beside the key (`id-cert.pub`) logs in although the key is in no authorized_keys; without the
/// certificate the same key is refused. Covers an ed25519 and an RSA certificate (rsa-sha2-256 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_user_certificate_logs_in_without_authorized_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = keygen(dir.path(), "user_ca", &["-t", "ed25519"]).await;
    let (_, unrelated_public) = keygen(dir.path(), "id_unrelated", &["-t", "ed25519"]).await;
    let cases = [
        ("id_ed25519", vec!["-t", "ed25519"], "PubkeyAcceptedAlgorithms ssh-ed25519-cert-v01@openssh.com\n"),
        ("id_rsa", vec!["-t", "rsa", "-b", "2048"], "PubkeyAcceptedAlgorithms rsa-sha2-256-cert-v01@openssh.com\n"),
    ];
    for (i, (name, args, algs)) in cases.into_iter().enumerate() {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).expect("dir");
        let (key, _) = keygen(&sub, name, &args).await;
        let public_path = format!("{}.pub", key.display());
        run(Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "bastionctl-test", "-n", "root"])
            .arg(&public_path))
        .await;
        let cert = PathBuf::from(format!("{}-cert.pub", key.display()));
        assert!(cert.exists(), "ssh-keygen -s wrote no {}", cert.display());
        let extra = format!("TrustedUserCAKeys {}.pub\n{algs}", ca.display());
        let fx = Fixture::start(&sub, 90 + i as u8, &unrelated_public, &extra).await;

        let log = fx.login(&key).await;
        assert!(log.contains("Accepted publickey for root") && log.contains("CERT"), "{name}:\n{log}");

        std::fs::rename(&cert, sub.join("set-aside")).expect("move the certificate away");
        match fx.dial(vec![key.clone()]).await {
            Err(SshError::AuthFailed { .. }) => {}
            Err(e) => panic!("{name}: expected AuthFailed without the certificate, got {e}"),
            Ok(_) => panic!("{name}: logged in without the certificate: the key is not authorized"),
        }
    }
}
