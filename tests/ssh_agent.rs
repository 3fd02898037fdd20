//! `SshDialer` logging in through a real `ssh-agent` and `SSH_ASKPASS`: an encrypted identity file is usable when
//! the agent holds its key or an askpass program gives its passphrase, and `identities_only` keeps other agent keys
//! out (also when the agent holds more keys than sshd's MaxAuthTries). Its own test binary, because it sets
//! `SSH_AUTH_SOCK` and `SSH_ASKPASS*` for the whole process; [`ENV`] keeps its tests from running at the same time.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bastionctl_lab::keys;
use bastionctl_lab::sshd::{self, SshdSpec};
use bastionctl::ssh::{SshDialer, SshError, SshSettings};
use bastionctl::progress::Progress;
use bastionctl::tunnel::Dialer;
use tokio::process::Command;
use tokio::time::Instant;

const INSTANCE: &str = "i-0ssh0agent0test";

/// Held by each test for its whole run: they change this process's environment.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sets (`Some`) or removes (`None`) environment variables. Only called while [`ENV`] is held.
fn set_env(vars: &[(&str, Option<&std::ffi::OsStr>)]) {
    for (k, v) in vars {
        // SAFETY: every test of this binary holds ENV while it runs, so nothing reads the environment concurrently.
        unsafe {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

/// Starts `ssh-agent -D -a DIR/agent.sock` and waits for its socket.
async fn start_agent(dir: &Path) -> (tokio::process::Child, std::path::PathBuf) {
    let sock = dir.join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh-agent (install openssh-client: scripts/install-deps.sh)");
    let until = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < until, "ssh-agent did not create its socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (agent, sock)
}

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

    let _env = ENV.lock().await;
    let (_agent, sock) = start_agent(dir.path()).await;
    ssh_add(&sock, &user.private).await;
    ssh_add(&sock, &stray.private).await;
    // Now lock the user's file with a passphrase: only the agent can use that key.
    run(Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", "locked away", "-f"]).arg(&user.private)).await;
    set_env(&[("SSH_AUTH_SOCK", Some(sock.as_os_str())), ("SSH_ASKPASS", None), ("SSH_ASKPASS_REQUIRE", None)]);

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

/// A bastion sshd with default MaxAuthTries (6) that authorizes `authorized` only; returns it, its address and the
/// known_hosts file pinning it.
async fn bastion(
    dir: &Path,
    last_octet: u8,
    authorized: &str,
) -> (bastionctl_lab::proc::Proc, SshdSpec, std::path::PathBuf) {
    let host = keys::generate(dir.join("host_ed25519"), "host".into()).await.expect("key");
    let mut spec = SshdSpec {
        role: "bastion".into(),
        dir: dir.to_path_buf(),
        addr: Ipv4Addr::new(127, 0, 2, last_octet),
        port: 0,
        host_key: host.private.clone(),
        authorized_key: authorized.to_string(),
        log_level: "DEBUG1",
    };
    let sshd = sshd::spawn_on_free_port(&mut spec).await.expect("sshd starts");
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("{INSTANCE} {}\n", host.public_no_comment())).expect("known_hosts");
    (sshd, spec, known_hosts)
}

async fn dial_with(
    spec: &SshdSpec,
    s: SshSettings,
) -> Result<std::sync::Arc<dyn bastionctl::tunnel::Session>, SshError> {
    SshDialer::new(s)
        .dial(spec.socket_addr(), INSTANCE, Instant::now() + Duration::from_secs(30), &Progress::default())
        .await
}

/// An agent holding 7 unrelated keys before the right one: offering them all runs into sshd's MaxAuthTries (6),
/// `identities_only` offers only the identity file's key and logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_only_beats_max_auth_tries_with_a_crowded_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _env = ENV.lock().await;
    let user = keys::generate(dir.path().join("id_user"), "user".into()).await.expect("key");
    let (_sshd, spec, known_hosts) = bastion(dir.path(), 43, &user.public).await;
    let (_agent, sock) = start_agent(dir.path()).await;
    for i in 0..7 {
        let k =
            keys::generate(dir.path().join(format!("id_unrelated{i}")), format!("unrelated{i}")).await.expect("key");
        ssh_add(&sock, &k.private).await;
    }
    ssh_add(&sock, &user.private).await;
    run(Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", "only the agent knows", "-f"]).arg(&user.private))
        .await;
    set_env(&[("SSH_AUTH_SOCK", Some(sock.as_os_str())), ("SSH_ASKPASS", None), ("SSH_ASKPASS_REQUIRE", None)]);
    let settings = |identity_files: Vec<std::path::PathBuf>, identities_only: bool| SshSettings {
        user: "root".into(),
        identity_files,
        agent: true,
        identities_only,
        known_hosts: known_hosts.clone(),
    };

    // Every agent key, in the agent's order: sshd hangs up before the right one comes.
    match dial_with(&spec, settings(vec![], false)).await {
        Err(SshError::AuthFailed { tried, .. }) => {
            assert!(tried.iter().any(|t| t.contains("hung up")), "{tried:?}");
            assert!(tried.len() <= 7, "{tried:?}");
        }
        Err(e) => panic!("expected AuthFailed, got {e}"),
        Ok(_) => panic!("sshd let 7 refused keys through; MaxAuthTries is not in force"),
    }
    // sshd may write its reason just after hanging up.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(spec.log_path()).unwrap_or_default();
        if log.contains("maximum authentication attempts exceeded") {
            break;
        }
        assert!(Instant::now() < until, "sshd logged no MaxAuthTries cut:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let session = dial_with(&spec, settings(vec![user.private.clone()], true))
        .await
        .unwrap_or_else(|e| panic!("identities_only login failed: {e}"));
    session.close();
    // The identity file comes first even without identities_only: its key is the first one offered.
    let session = dial_with(&spec, settings(vec![user.private.clone()], false))
        .await
        .unwrap_or_else(|e| panic!("identity-file-first login failed: {e}"));
    session.close();
}

/// An encrypted identity file without an agent: `SSH_ASKPASS` gives the passphrase when OpenSSH's rules allow it
/// (`SSH_ASKPASS_REQUIRE=force`, or a `DISPLAY`); otherwise the error says to `ssh-add` the key. A wrong
/// passphrase is asked for three times and never shows in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn askpass_unlocks_an_encrypted_identity() {
    const PASSPHRASE: &str = "askpass-passphrase-4f1c9e";
    let dir = tempfile::tempdir().expect("tempdir");
    let _env = ENV.lock().await;
    let user = keys::generate(dir.path().join("id_locked"), "locked".into()).await.expect("key");
    let (_sshd, spec, known_hosts) = bastion(dir.path(), 44, &user.public).await;
    run(Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", PASSPHRASE, "-f"]).arg(&user.private)).await;

    let answer = dir.path().join("answer");
    let calls = dir.path().join("calls");
    let script = dir.path().join("askpass.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\ncat '{}'\n", calls.display(), answer.display()),
    )
    .expect("askpass script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let calls_made = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
    let settings = SshSettings {
        user: "root".into(),
        identity_files: vec![user.private.clone()],
        agent: false,
        identities_only: true,
        known_hosts: known_hosts.clone(),
    };
    let askpass = Some(script.as_os_str());
    let force = Some(std::ffi::OsStr::new("force"));

    std::fs::write(&answer, format!("{PASSPHRASE}\n")).expect("answer");
    set_env(&[("SSH_AUTH_SOCK", None), ("SSH_ASKPASS", askpass), ("SSH_ASKPASS_REQUIRE", force), ("DISPLAY", None)]);
    let session = dial_with(&spec, settings.clone()).await.unwrap_or_else(|e| panic!("askpass login failed: {e}"));
    session.close();
    assert_eq!(calls_made(), 1);
    let prompt = std::fs::read_to_string(&calls).expect("calls");
    assert!(prompt.contains(&user.private.display().to_string()), "prompt {prompt:?} names no key");

    // A display also allows askpass (no tty either way).
    set_env(&[("SSH_ASKPASS_REQUIRE", None), ("DISPLAY", Some(std::ffi::OsStr::new(":99")))]);
    dial_with(&spec, settings.clone()).await.unwrap_or_else(|e| panic!("askpass with DISPLAY failed: {e}")).close();
    assert_eq!(calls_made(), 2);

    // Neither forced nor a display, or explicitly never: no askpass, and the error says what to do.
    for (require, display) in [(None, None), (Some("never"), Some(":99"))] {
        set_env(&[
            ("SSH_ASKPASS_REQUIRE", require.map(std::ffi::OsStr::new)),
            ("DISPLAY", display.map(std::ffi::OsStr::new)),
        ]);
        match dial_with(&spec, settings.clone()).await {
            Err(e @ SshError::KeyEncrypted { .. }) => {
                let hint = e.hint().unwrap_or_default();
                assert!(hint.contains(&format!("ssh-add {}", user.private.display())), "{hint}");
            }
            Err(e) => panic!("expected KeyEncrypted with {require:?}/{display:?}, got {e}"),
            Ok(_) => panic!("logged in with an encrypted key and askpass disabled"),
        }
    }
    assert_eq!(calls_made(), 2, "askpass ran although OpenSSH's rules forbid it");

    // A wrong passphrase: asked three times, then a clear error without the passphrase.
    const WRONG: &str = "wrong-passphrase-77d0a3";
    std::fs::write(&answer, format!("{WRONG}\n")).expect("answer");
    set_env(&[("SSH_ASKPASS_REQUIRE", force), ("DISPLAY", None)]);
    match dial_with(&spec, settings.clone()).await {
        Err(e @ SshError::KeyPassphrase { .. }) => {
            let text = format!("{e} {}", e.hint().unwrap_or_default());
            assert!(text.contains("wrong") && text.contains("ssh-add"), "{text}");
            assert!(!text.contains(WRONG) && !text.contains(PASSPHRASE), "{text}");
        }
        Err(e) => panic!("expected KeyPassphrase, got {e}"),
        Ok(_) => panic!("logged in with a wrong passphrase"),
    }
    assert_eq!(calls_made(), 5);
}
