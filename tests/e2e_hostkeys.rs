//! Bastion host key trust end to end in the lab: the real `ssh` through `bastionctl proxy`, moto behind the lab's EC2
//! front (which serves cloud-init console output with the fixture's real fingerprints), real sshds; plus a real sshd
//! presenting an OpenSSH host certificate to the dialer. Every wait polls with a deadline.

use std::net::Ipv4Addr;
use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::keys;
use bastionctl_lab::sshd::{self, SshdSpec};
use bastionctl_lab::{ConsoleFingerprints, Lab, LabOptions};
use bastionctl::hostkeys::HostKeyError;
use bastionctl::ssh::{SshDialer, SshError, SshSettings};
use bastionctl::progress::Progress;
use bastionctl::tunnel::Dialer;

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh` or `bastionctl` run that may start the bastion (on a loaded 2-core box).
const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// A lab whose bastion key is in no file, with the EC2 front (for console output) unless `front` is false.
async fn lab(front: bool) -> Lab {
    lab_idle(front, Duration::from_secs(60)).await
}

async fn lab_idle(front: bool, idle: Duration) -> Lab {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = idle;
    o.boot_delay = Duration::from_millis(500);
    o.trust_bastion_key = false;
    o.ec2_front = front;
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

fn diag(lab: &Lab) -> String {
    let tail = |s: String| s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    format!("\n--- daemon log ---\n{}\n--- pin file ---\n{}", tail(lab.daemon_log()), pins(lab))
}

fn pins(lab: &Lab) -> String {
    std::fs::read_to_string(lab.pinned_host_keys()).unwrap_or_default()
}

async fn finish(lab: &Lab, what: &str, cmd: &mut tokio::process::Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {RUN_DEADLINE:?}{}", diag(lab)))
        .expect("wait")
}

async fn ssh(lab: &Lab) -> Output {
    finish(lab, "ssh", &mut lab.ssh_command("echo ok")).await
}

async fn bastionctl(lab: &Lab, args: &[&str]) -> Output {
    finish(lab, "bastionctl", &mut lab.bastionctl_command(args)).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(lab: &Lab, out: &Output) {
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "ssh: {}, stdout {:?}, stderr:\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        diag(lab)
    );
}

/// The `known_hosts` body (`ssh-ed25519 AAAA...`) of the bastion's current host key.
fn key_body(lab: &Lab) -> String {
    lab.bastion_host_key().public_no_comment()
}

/// The fingerprint of the bastion's current host key, as the real `ssh-keygen -lf` prints it.
fn real_fingerprint(lab: &Lab) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", lab.bastion_host_key().private.display()))
        .output()
        .expect("ssh-keygen runs (run scripts/install-deps.sh)");
    text(&out.stdout).split_whitespace().nth(1).expect("a fingerprint").to_string()
}

fn trust_command(lab: &Lab) -> String {
    format!("bastionctl --config {} trust lab", lab.files().config.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_fingerprints_pin_the_key_on_first_connect() {
    let lab = lab(true).await;
    lab.serve_console(ConsoleFingerprints::Real).await.expect("console");
    assert_ok(&lab, &ssh(&lab).await);
    let pinned = pins(&lab);
    let line = format!("{} {}", lab.instance_id(), key_body(&lab));
    assert!(pinned.lines().any(|l| l == line), "the key is not pinned under the instance id:\n{pinned}");
    assert!(pinned.contains("console output"), "the pin does not say where it came from:\n{pinned}");
    let user = std::fs::read_to_string(&lab.files().bastion_known_hosts).unwrap();
    assert_eq!(user, "", "the user's known_hosts is never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused_until_bastionctl_trust_pins_it() {
    let lab = lab(true).await;
    lab.serve_console(ConsoleFingerprints::None).await.expect("console");
    let out = ssh(&lab).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "ssh succeeded with an unknown host key{}", diag(&lab));
    assert!(out.stdout.is_empty(), "stdout must stay empty: {:?}", text(&out.stdout));
    assert!(stderr.contains(&real_fingerprint(&lab)), "no fingerprint in:\n{stderr}");
    assert!(stderr.contains(&format!("`{}`", trust_command(&lab))), "no trust command in:\n{stderr}");
    assert!(stderr.contains("console output shows no host key fingerprints"), "{stderr}");
    assert_eq!(pins(&lab), "", "pinned without evidence or consent");

    // Without a terminal and without --yes, trust refuses.
    let out = bastionctl(&lab, &["trust"]).await;
    assert!(!out.status.success(), "trust pinned without confirmation: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&real_fingerprint(&lab)), "trust did not show the offered key");
    assert_eq!(pins(&lab), "");

    let out = bastionctl(&lab, &["trust", "lab", "--yes"]).await;
    assert!(out.status.success(), "trust --yes: {}{}", text(&out.stderr), diag(&lab));
    assert!(text(&out.stdout).contains(&format!("{}:2", lab.pinned_host_keys().display())), "{}", text(&out.stdout));
    assert!(pins(&lab).contains(&format!("{} {}", lab.instance_id(), key_body(&lab))), "{}", pins(&lab));
    assert_ok(&lab, &ssh(&lab).await);
}

/// Issue 10: `bastionctl trust` on a stopped bastion with no daemon running has a daemon start it (starting the
/// daemon), so the bastion is not left running: the daemon's idle clock stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_hands_the_bastion_it_starts_to_the_daemon() {
    let idle = Duration::from_secs(4);
    let lab = lab_idle(true, idle).await;
    lab.serve_console(ConsoleFingerprints::Real).await.expect("console");
    let before = (lab.daemon_pid().await, lab.instance_state().await.unwrap_or_default());
    let out = bastionctl(&lab, &["trust", "lab", "--yes"]).await;
    let trusted = out.status.success() && pins(&lab).contains(&key_body(&lab));
    let t = std::time::Instant::now();
    let daemon = lab.daemon_pid().await;
    let slack = Duration::from_secs(20);
    let stopped = lab.wait_instance_state("stopped", idle + slack).await.is_ok();
    let after = t.elapsed();
    let said = text(&out.stderr).lines().find(|l| l.contains("stops it after")).unwrap_or("").to_string();
    let pass = before == (None, "stopped".to_string()) && trusted && daemon.is_some() && stopped && !said.is_empty();
    bastionctl_lab::report::record(
        "10-trust",
        "`bastionctl trust` starts a stopped bastion",
        "the start goes through the daemon (one is started when none runs), so the idle clock stops the bastion",
        &format!(
            "before: daemon {:?}, bastion {}; trust --yes: {} ({said:?}); daemon afterwards: {daemon:?}; bastion              stopped {} after trust returned (idle_timeout {} s)",
            before.0,
            before.1,
            out.status,
            if stopped { format!("{:.1} s", after.as_secs_f64()) } else { "NEVER".into() },
            idle.as_secs()
        ),
        pass,
    );
    assert!(pass, "{}
{}{}", text(&out.stdout), text(&out.stderr), diag(&lab));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_bastion_is_refused_with_both_fingerprints_the_line_and_the_command() {
    let mut lab = lab(true).await;
    lab.serve_console(ConsoleFingerprints::Real).await.expect("console");
    assert_ok(&lab, &ssh(&lab).await);
    let old = real_fingerprint(&lab);

    let out = bastionctl(&lab, &["down", "--force"]).await;
    assert!(out.status.success(), "down: {}", text(&out.stderr));
    lab.wait_instance_state("stopped", Duration::from_secs(30)).await.expect("stopped");
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await.expect("sshd gone");
    lab.rebuild_bastion_host_key().await.expect("rebuild");
    let new = real_fingerprint(&lab);
    assert_ne!(old, new);
    // Even a console that vouches for the new key does not override a pin.
    lab.serve_console(ConsoleFingerprints::Real).await.expect("console");

    let out = ssh(&lab).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "ssh accepted a changed host key{}", diag(&lab));
    assert!(out.stdout.is_empty(), "stdout must stay empty: {:?}", text(&out.stdout));
    for (what, needle) in [
        ("pinned fingerprint", old.clone()),
        ("offered fingerprint", new.clone()),
        ("file:line of the pin", format!("{}:2", lab.pinned_host_keys().display())),
        ("re-trust command", format!("`{} --replace`", trust_command(&lab))),
    ] {
        assert!(stderr.contains(&needle), "stderr lacks the {what} ({needle}):\n{stderr}");
    }

    let out = bastionctl(&lab, &["trust", "--yes"]).await;
    assert!(!out.status.success() && text(&out.stderr).contains("--replace"), "{}", text(&out.stderr));
    let out = bastionctl(&lab, &["trust", "--yes", "--replace"]).await;
    assert!(out.status.success(), "trust --replace: {}", text(&out.stderr));
    assert!(!pins(&lab).contains(&old) && pins(&lab).matches(lab.instance_id()).count() == 2, "{}", pins(&lab));
    assert_ok(&lab, &ssh(&lab).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_only_when_opted_in_and_never_against_the_console() {
    let lab = lab(true).await;
    // The [[bastion]] table is the last one of the lab config.
    let mut cfg = std::fs::read_to_string(&lab.files().config).unwrap();
    cfg.push_str("trust_on_first_use = true\n");
    std::fs::write(&lab.files().config, cfg).unwrap();

    lab.serve_console(ConsoleFingerprints::Wrong).await.expect("console");
    let out = ssh(&lab).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "TOFU overrode a console listing another key{}", diag(&lab));
    assert!(stderr.contains("console output lists"), "{stderr}");
    assert_eq!(pins(&lab), "");

    lab.serve_console(ConsoleFingerprints::None).await.expect("console");
    assert_ok(&lab, &ssh(&lab).await);
    let pinned = pins(&lab);
    assert!(pinned.contains("trust on first use") && pinned.contains(&key_body(&lab)), "{pinned}");
}

/// A real sshd with `HostCertificate` (signed by `ssh-keygen -s ca -h -n ...`), dialed with `@cert-authority` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificate_from_a_trusted_ca_is_accepted() {
    const ID: &str = "i-0cert0host0test0";
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    let (user, host, ca, other_ca) = tokio::try_join!(
        keys::generate(p("id_user"), "user".into()),
        keys::generate(p("host_ed25519"), "host".into()),
        keys::generate(p("ca"), "ca".into()),
        keys::generate(p("other_ca"), "other".into()),
    )
    .expect("keys");
    let addr = Ipv4Addr::new(127, 0, 2, 42);
    let sign = std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca.private)
        .args(["-I", "bastion", "-h", "-n", &format!("{addr},{ID}"), "-V", "-5m:+1h"])
        .arg(p("host_ed25519.pub"))
        .output()
        .expect("ssh-keygen runs (run scripts/install-deps.sh)");
    assert!(sign.status.success(), "ssh-keygen -s: {}", text(&sign.stderr));
    let spec = SshdSpec {
        role: "bastion".into(),
        dir: dir.path().to_path_buf(),
        addr,
        port: bastionctl_lab::net::free_port(addr).expect("port"),
        host_key: host.private.clone(),
        authorized_key: user.public.clone(),
        log_level: "DEBUG1",
    };
    spec.write_files().expect("files");
    let config = std::fs::read_to_string(spec.config_path()).unwrap();
    std::fs::write(spec.config_path(), format!("{config}HostCertificate {}\n", p("host_ed25519-cert.pub").display())).unwrap();
    let _sshd = sshd::spawn(&spec).await.expect("sshd with a host certificate");
    let target = std::net::SocketAddr::from((addr, spec.port));

    let dial = |lines: String| {
        let known = p("known_hosts");
        std::fs::write(&known, lines).unwrap();
        let settings = SshSettings {
            user: whoami(),
            identity_files: vec![user.private.clone()],
            agent: false,
            identities_only: true,
            known_hosts: known,
        };
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            SshDialer::new(settings).dial(target, ID, deadline, &Progress::default()).await
        }
    };
    let ca_line = |key: &keys::KeyPair, hosts: &str| format!("@cert-authority {hosts} {}\n", key.public_no_comment());

    let session = dial(ca_line(&ca, "i-0cert*")).await.expect("accepted through the CA");
    session.close();
    let log = std::fs::read_to_string(spec.log_path()).unwrap_or_default();
    assert!(log.contains("cert-v01@openssh.com"), "sshd did not present its certificate:\n{log}");

    match dial(ca_line(&other_ca, "*")).await {
        Err(SshError::HostKey(HostKeyError::Unknown { .. })) => {}
        Err(other) => panic!("another CA: expected HostKeyError::Unknown, got {other}"),
        Ok(_) => panic!("a certificate from an untrusted CA was accepted"),
    }
    match dial(format!("{}@revoked * {}\n", ca_line(&ca, "*"), ca.public_no_comment())).await {
        Err(SshError::HostKey(HostKeyError::Revoked { line: 2, .. })) => {}
        Err(other) => panic!("revoked CA: expected HostKeyError::Revoked, got {other}"),
        Ok(_) => panic!("a certificate from a revoked CA was accepted"),
    }
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name).expect("a passwd entry")
}
