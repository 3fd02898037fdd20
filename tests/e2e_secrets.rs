//! No secret leaks: a whole session in the lab at the most verbose level (`RUST_LOG=trace`, `-vvv` for the daemon
//! and the proxy) with planted secrets (AWS secret access key and session token as unique markers, an encrypted
//! identity whose passphrase comes from `SSH_ASKPASS`), then an error path (a wrong passphrase). The daemon's log,
//! the proxy's stderr (through ssh's stderr) and `status` / `status --json` must contain none of: the markers, the
//! passphrases, any 24-character piece of either private key file's base64 body, or the private key bytes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bastionctl_lab::{Lab, LabOptions};
use russh::keys::PrivateKey;
use tokio::process::Command;
use tokio::time::Instant;

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
const SECRET_ACCESS_KEY: &str = "SECRETACCESSKEYMARKERq7Zx2Lm9Vb4Nc8Rt1Ws6Yp3";
const SESSION_TOKEN: &str = "SESSIONTOKENMARKERIQoJb3JpZ2luX2VjEJr9Hh5Gg0Kk";
const PASSPHRASE: &str = "PASSPHRASEMARKER-d81f3b-good";
const WRONG_PASSPHRASE: &str = "PASSPHRASEMARKER-0a9c44-wrong";
const SSH_DEADLINE: Duration = Duration::from_secs(90);
const DAEMON_READY: Duration = Duration::from_secs(15);

async fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.stdin(Stdio::null()).output().await.expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The environment with the planted secrets, on top of the lab's.
fn secret_env(askpass: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.into()),
        ("RUST_LOG", "trace".into()),
        ("SSH_ASKPASS", askpass.display().to_string()),
        ("SSH_ASKPASS_REQUIRE", "force".into()),
    ]
}

/// `bastionctl -vvv daemon` with the secret environment, stderr into `log`; returns once its socket accepts.
async fn start_daemon(lab: &Lab, env: &[(&str, String)], log: &Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("daemon log");
    let mut child = lab
        .bastionctl_command(["-vvv", "daemon"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn daemon");
    let until = Instant::now() + DAEMON_READY;
    while tokio::net::UnixStream::connect(&lab.files().socket).await.is_err() {
        if let Some(status) = child.try_wait().expect("daemon") {
            panic!("daemon exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < until, "daemon did not accept within {DAEMON_READY:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// `ssh private 'echo ok'` through `bastionctl -vvv proxy`, with the secret environment; its stderr carries the
/// proxy's.
async fn ssh(lab: &Lab, env: &[(&str, String)]) -> std::process::Output {
    let proxy = format!("ProxyCommand {BASTIONCTL} -vvv --config {} proxy %h %p", lab.files().config.display());
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(&lab.files().ssh_config).arg("-o").arg(proxy).args(["private", "echo ok"]);
    lab.apply_env(&mut cmd);
    cmd.envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(SSH_DEADLINE, cmd.output()).await.expect("ssh finished in time").expect("ssh")
}

/// `bastionctl -vvv status` and `status --json`: stdout and stderr of both.
async fn status_outputs(lab: &Lab, env: &[(&str, String)]) -> String {
    let mut all = String::new();
    for args in [vec!["-vvv", "status"], vec!["-vvv", "status", "--json"]] {
        let out = lab.bastionctl_command(&args).envs(env.iter().map(|(k, v)| (k, v))).output().await.expect("status");
        all.push_str(&format!(
            "\n--- {args:?} ({}) ---\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    all
}

/// Everything that must never be printed: markers, passphrases, pieces of the key files, the private key bytes.
/// Pieces that also occur in a public key line (`public`) are public: a key file holds its public key too, and
/// the base64 of the common `ssh-ed25519` prefix is the same in every key.
fn forbidden(key_files: &[&Path], private: &PrivateKey, public: &[&str]) -> Vec<String> {
    let mut out: Vec<String> =
        [SECRET_ACCESS_KEY, SESSION_TOKEN, PASSPHRASE, WRONG_PASSPHRASE].iter().map(|s| s.to_string()).collect();
    for file in key_files {
        let text = std::fs::read_to_string(file).expect("key file");
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 100, "{} has no base64 body", file.display());
        let chars: Vec<char> = body.chars().collect();
        let pieces = chars.windows(24).map(|w| w.iter().collect::<String>());
        out.extend(pieces.filter(|piece| !public.iter().any(|p| p.contains(piece.as_str()))));
    }
    let secret = private.key_data().ed25519().expect("an ed25519 key").private.to_bytes();
    out.push(secret.iter().map(|b| format!("{b:02x}")).collect());
    out.push(format!("{:?}", &secret[..8]).trim_end_matches(']').to_string());
    out
}

fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    assert!(!text.is_empty(), "{what} is empty: the test would prove nothing");
    for f in forbidden {
        if let Some(at) = text.find(f.as_str()) {
            let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("{what} leaks {f:?} in line:\n{}", &text[from..to]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_status_or_errors_at_trace_level() {
    let mut opts = LabOptions::new(BASTIONCTL);
    opts.idle_timeout = Duration::from_secs(120);
    opts.boot_delay = Duration::from_millis(300);
    let lab = Lab::start(opts).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"));
    let dir = lab.dir().to_path_buf();

    // An encrypted copy of the user's key becomes the daemon's identity; ssh itself keeps the plain one.
    let plain = lab.user_key().private.clone();
    let locked = dir.join("client/id_locked");
    std::fs::copy(&plain, &locked).expect("copy key");
    run(Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", PASSPHRASE, "-f"]).arg(&locked)).await;
    let config = std::fs::read_to_string(&lab.files().config).expect("config");
    let identity_line = format!("identity_files = [\"{}\"]", plain.display());
    assert!(config.contains(&identity_line), "unexpected lab config:\n{config}");
    let config = config.replace(&identity_line, &format!("identity_files = [\"{}\"]", locked.display()));
    std::fs::write(&lab.files().config, config).expect("config");

    let answer = dir.join("askpass-answer");
    let calls = dir.join("askpass-calls");
    let askpass = dir.join("askpass.sh");
    std::fs::write(&answer, format!("{PASSPHRASE}\n")).expect("answer");
    std::fs::write(&askpass, format!("#!/bin/sh\necho called >> '{}'\ncat '{}'\n", calls.display(), answer.display()))
        .expect("askpass");
    std::fs::set_permissions(&askpass, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let env = secret_env(&askpass);
    let private = PrivateKey::read_openssh_file(&plain).expect("plain key");
    let public = [lab.user_key().public.as_str(), lab.bastion_host_key().public.as_str()];
    let forbidden = forbidden(&[&plain, &locked], &private, &public);
    assert!(forbidden.len() > 200, "too few pieces to look for: {}", forbidden.len());

    // A whole session: start, key decrypted through askpass, a forwarded ssh command, status.
    let daemon_log = dir.join("daemon-trace.log");
    let mut daemon = start_daemon(&lab, &env, &daemon_log).await;
    let out = ssh(&lab, &env).await;
    let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "ssh: {}\n--- ssh/proxy stderr ---\n{stderr}\n--- daemon log ---\n{log}",
        out.status
    );
    assert_eq!(std::fs::read_to_string(&calls).unwrap_or_default().lines().count(), 1, "askpass was not used once");
    // The daemon really logged at trace level, and the SDK's signing ran (so its headers were formatted). The proxy
    // logs little of its own at any level; its stderr (progress lines) is checked all the same.
    assert!(log.contains(" TRACE "), "the daemon did not log at trace level:\n{log}");
    assert!(log.contains("x-amz-security-token"), "no SDK request trace in the daemon log:\n{log}");
    let status = status_outputs(&lab, &env).await;
    assert!(status.contains(lab.instance_id()), "{status}");
    assert_clean("the daemon log", &log, &forbidden);
    assert_clean("the proxy's stderr", &stderr, &forbidden);
    assert_clean("status", &status, &forbidden);

    // The error path: a new daemon whose askpass gives a wrong passphrase.
    daemon.kill().await.expect("kill daemon");
    std::fs::write(&answer, format!("{WRONG_PASSPHRASE}\n")).expect("answer");
    let daemon_log = dir.join("daemon-trace-wrong.log");
    let _daemon = start_daemon(&lab, &env, &daemon_log).await;
    let out = ssh(&lab, &env).await;
    let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "ssh logged in with a wrong passphrase");
    assert!(stderr.contains("could not decrypt identity file"), "no clear error on the proxy's stderr:\n{stderr}");
    let status = status_outputs(&lab, &env).await;
    assert_clean("the daemon log (wrong passphrase)", &log, &forbidden);
    assert_clean("the proxy's stderr (wrong passphrase)", &stderr, &forbidden);
    assert_clean("status (wrong passphrase)", &status, &forbidden);
}
