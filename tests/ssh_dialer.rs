//! `SshDialer` against a real OpenSSH sshd (the lab's fixture): login, channels, and every refusal that must be
//! typed: wrong key, encrypted key, unknown and changed host keys. Loopback and temp dirs only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bastionctl_lab::keys::{self, KeyPair};
use bastionctl_lab::proc::Proc;
use bastionctl_lab::sshd::{self, SshdSpec};
use bastionctl::hostkeys::HostKeyError;
use bastionctl::ssh::{SshDialer, SshError, SshSettings};
use bastionctl::progress::Progress;
use bastionctl::tunnel::{Dialer, Session};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const INSTANCE: &str = "i-0ssh0dialer0test";
const DIAL: Duration = Duration::from_secs(20);

/// One sshd with its keys, in its own temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    user_key: KeyPair,
    host_key: KeyPair,
    spec: SshdSpec,
    _sshd: Proc,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let user_key = keys::generate(dir.path().join("id_user"), "user".into()).await.expect("user key");
        let host_key = keys::generate(dir.path().join("host_ed25519"), "host".into()).await.expect("host key");
        let mut spec = SshdSpec {
            role: "bastion".into(),
            dir: dir.path().to_path_buf(),
            addr: Ipv4Addr::new(127, 0, 2, 41),
            port: 0,
            host_key: host_key.private.clone(),
            authorized_key: user_key.public.clone(),
            log_level: "DEBUG1",
        };
        let sshd = sshd::spawn_on_free_port(&mut spec).await.expect("sshd starts");
        Fixture { dir, user_key, host_key, spec, _sshd: sshd }
    }

    fn addr(&self) -> SocketAddr {
        self.spec.socket_addr()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file holding `lines`.
    fn known_hosts(&self, lines: &[String]) -> PathBuf {
        let path = self.path("known_hosts");
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("known_hosts");
        path
    }

    fn trusted(&self) -> PathBuf {
        self.known_hosts(&[format!("{INSTANCE} {}", self.host_key.public_no_comment())])
    }

    fn settings(&self, identity: &Path, known_hosts: PathBuf) -> SshSettings {
        SshSettings {
            user: "root".into(),
            identity_files: vec![identity.to_path_buf()],
            agent: false,
            identities_only: true,
            known_hosts,
        }
    }

    async fn dial(&self, settings: SshSettings) -> Result<Arc<dyn Session>, SshError> {
        SshDialer::new(settings).dial(self.addr(), INSTANCE, Instant::now() + DIAL, &Progress::default()).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.spec.log_path()).unwrap_or_default()
    }
}

fn expect_err(r: Result<Arc<dyn Session>, SshError>) -> SshError {
    match r {
        Ok(_) => panic!("dial succeeded but should have failed"),
        Err(e) => e,
    }
}

/// An echo server on 127.0.0.1, the target of forwarded channels.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_forwards_and_closes() {
    let f = Fixture::start().await;
    let session = f
        .dial(f.settings(&f.user_key.private, f.trusted()))
        .await
        .unwrap_or_else(|e| panic!("dial failed: {e}\nhint: {:?}\nsshd log:\n{}", e.hint(), f.log()));
    assert!(!session.is_closed());

    // A forwarded stream carries bytes both ways, and EOF after shutdown.
    let echo = echo_server().await;
    let mut channel = session.open("127.0.0.1", echo.port()).await.expect("channel opens");
    channel.tx.send(bytes::Bytes::from_static(b"hello through the bastion")).await.expect("write");
    channel.tx.eof().await.expect("send EOF");
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        let mut back = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut channel.rx).await {
            back.extend_from_slice(&chunk);
        }
        back
    })
    .await
    .expect("echo in time");
    assert_eq!(back, b"hello through the bastion");

    // A target nothing listens on: refused with sshd's reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let err = match session.open("127.0.0.1", closed.port()).await {
        Ok(_) => panic!("channel to a closed port opened"),
        Err(e) => e,
    };
    match &err {
        SshError::ChannelRefused { host, port, reason } => {
            assert_eq!((host.as_str(), *port), ("127.0.0.1", closed.port()));
            assert!(reason.contains("could not connect"), "{reason}");
        }
        other => panic!("expected ChannelRefused, got {other:?}"),
    }
    assert!(!session.is_closed(), "a refused channel does not end the session");

    session.close();
    assert!(session.is_closed());
    assert!(matches!(session.open("127.0.0.1", echo.port()).await, Err(SshError::Disconnected(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_entry_is_accepted_too() {
    let f = Fixture::start().await;
    let name = format!("[{}]:{}", f.addr().ip(), f.addr().port());
    let known = f.known_hosts(&[format!("{name} {}", f.host_key.public_no_comment())]);
    f.dial(f.settings(&f.user_key.private, known)).await.expect("accepted by [addr]:port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_auth_failed() {
    let f = Fixture::start().await;
    let wrong = keys::generate(f.path("id_wrong"), "wrong".into()).await.expect("key");
    let err = expect_err(f.dial(f.settings(&wrong.private, f.trusted())).await);
    match &err {
        SshError::AuthFailed { user, tried, .. } => {
            assert_eq!(user, "root");
            assert_eq!(tried.len(), 1, "{tried:?}");
            assert!(tried[0].contains("id_wrong") && tried[0].contains("SHA256:"), "{tried:?}");
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert_eq!(err.kind(), "auth");
    // Nothing secret in the message: no private key file content.
    let private = std::fs::read_to_string(&wrong.private).expect("read key");
    let body = private.lines().nth(1).unwrap_or_default();
    assert!(!body.is_empty() && !err.to_string().contains(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_key_without_agent_says_ssh_add() {
    let f = Fixture::start().await;
    let path = f.path("id_locked");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret passphrase", "-C", "locked", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let err = expect_err(f.dial(f.settings(&path, f.trusted())).await);
    assert!(matches!(&err, SshError::KeyEncrypted { path: p } if p == &path), "{err:?}");
    assert!(err.hint().unwrap_or_default().contains(&format!("ssh-add {}", path.display())));
    assert!(!err.to_string().contains("secret passphrase"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_with_the_line_to_add() {
    let f = Fixture::start().await;
    let known = f.known_hosts(&[]);
    let err = expect_err(f.dial(f.settings(&f.user_key.private, known.clone())).await);
    match &err {
        SshError::HostKey(HostKeyError::Unknown { instance_id, known_hosts, key_line, fingerprint, .. }) => {
            assert_eq!(instance_id, INSTANCE);
            assert_eq!(known_hosts, &known);
            assert_eq!(key_line, &format!("{INSTANCE} {}", f.host_key.public_no_comment()));
            assert!(fingerprint.starts_with("SHA256:"));
        }
        other => panic!("expected HostKeyError::Unknown, got {other:?}"),
    }
    assert_eq!(err.kind(), "host_key");
    // Nothing was learned behind the user's back.
    assert_eq!(std::fs::read_to_string(&known).expect("read"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_with_the_line() {
    let f = Fixture::start().await;
    let other = keys::generate(f.path("other_host"), "other".into()).await.expect("key");
    let known = f.known_hosts(&["# pinned".into(), format!("{INSTANCE} {}", other.public_no_comment())]);
    let err = expect_err(f.dial(f.settings(&f.user_key.private, known)).await);
    assert!(matches!(&err, SshError::HostKey(HostKeyError::Changed { line: 2, .. })), "{err:?}");
}
