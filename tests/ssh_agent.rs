//! `SshDialer` logging in through a real `ssh-agent`: an encrypted identity file is usable when the agent holds its
//! key, and `identities_only` keeps other agent keys out. Its own test binary, because it sets `SSH_AUTH_SOCK` for
//! the whole process.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bastionctl::lab::keys;
use bastionctl::lab::sshd::{self, SshdSpec};
use bastionctl::ssh::{SshDialer, SshError, SshSettings};
use bastionctl::tunnel::{Dialer, Progress};
use tokio::process::Command;
use tokio::time::Instant;

const INSTANCE: &str = "i-0ssh0agent0test";

async fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().await.expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn ssh_add(sock: &Path, key: &Path) {
    run(Command::new("ssh-add").env("SSH_AUTH_SOCK", sock).arg(key)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_unlocks_encrypted_identity_and_identities_only_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = keys::generate(dir.path().join("id_user"), "user".into()).await.expect("key");
    let stray = keys::generate(dir.path().join("id_stray"), "stray".into()).await.expect("key");
    let host = keys::generate(dir.path().join("host_ed25519"), "host".into()).await.expect("key");
    let mut spec = SshdSpec {
        role: "bastion".into(),
        dir: dir.path().to_path_buf(),
        addr: Ipv4Addr::new(127, 0, 2, 42),
        port: 0,
        host_key: host.private.clone(),
        // The stray key is authorized too, so only identities_only keeps it from logging in.
        authorized_key: format!("{}\n{}", user.public, stray.public),
        log_level: "DEBUG1",
    };
    let _sshd = sshd::spawn_on_free_port(&mut spec).await.expect("sshd starts");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{INSTANCE} {}\n", host.public_no_comment())).expect("known_hosts");

    let sock = dir.path().join("agent.sock");
    let _agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh-agent");
    let until = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < until, "ssh-agent did not create its socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ssh_add(&sock, &user.private).await;
    ssh_add(&sock, &stray.private).await;
    // Now lock the user's file with a passphrase: only the agent can use that key.
    run(Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", "locked away", "-f"]).arg(&user.private)).await;
    // SAFETY: this test binary has a single test, and nothing else reads the environment concurrently.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &sock) };

    let settings = |identity: &Path, identities_only: bool| SshSettings {
        user: "root".into(),
        identity_files: vec![identity.to_path_buf()],
        agent: true,
        identities_only,
        known_hosts: known_hosts.clone(),
    };
    let addr = spec.socket_addr();
    let dial = |s: SshSettings| async move {
        SshDialer::new(s).dial(addr, INSTANCE, Instant::now() + Duration::from_secs(20), &Progress::default()).await
    };

    // The encrypted file's key comes from the agent.
    let session = dial(settings(&user.private, true)).await.unwrap_or_else(|e| panic!("agent login failed: {e}"));
    session.close();

    // identities_only with an unrelated identity file: no agent key may be offered, so the login fails even though
    // the agent holds authorized keys.
    let unrelated = keys::generate(dir.path().join("id_unrelated"), "unrelated".into()).await.expect("key");
    match dial(settings(&unrelated.private, true)).await {
        Err(SshError::AuthFailed { tried, .. }) => {
            assert_eq!(tried.len(), 1, "only the identity file is offered: {tried:?}");
        }
        Err(e) => panic!("expected AuthFailed, got {e:?}"),
        Ok(_) => panic!("identities_only let an agent key through"),
    }
    // Without identities_only the agent's keys are offered and one is accepted.
    let session = dial(settings(&unrelated.private, false)).await.unwrap_or_else(|e| panic!("agent login failed: {e}"));
    session.close();
}
