//! End to end: the `up`, `down`, `status` and `daemon` subcommands, a refused target, and systemd's readiness
//! notification, in the local lab.

use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl::control::BastionStatus;
use bastionctl_lab::net::wait_until;
use bastionctl_lab::{Lab, LabOptions};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
const DEADLINE: Duration = Duration::from_secs(90);

async fn lab() -> Lab {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(600);
    o.boot_delay = Duration::from_millis(500);
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

async fn run(lab: &Lab, args: &[&str]) -> Output {
    let child = lab.bastionctl_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("bastionctl {args:?} did not finish within {DEADLINE:?}"))
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn status(lab: &Lab) -> BastionStatus {
    lab.daemon_status().await.unwrap().into_iter().next().expect("one bastion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_status_and_down_drive_the_bastion() {
    let lab = lab().await;
    let _daemon = lab.start_daemon().await.unwrap();

    let up = run(&lab, &["up"]).await;
    assert!(up.status.success(), "up failed: {}", text(&up.stderr));
    let addr = lab.bastion_addr().to_string();
    let out = text(&up.stdout);
    assert!(out.contains(&addr) && out.contains(lab.instance_id()) && out.contains(" s"), "up printed {out:?}");
    assert!(text(&up.stderr).contains("starting"), "progress goes to stderr: {}", text(&up.stderr));
    // The result once, on stdout: the start's own `ready` line is not relayed as progress as well.
    assert_eq!(out.matches("ready at").count(), 1, "up printed {out:?}");
    assert!(!text(&up.stderr).contains("ready at"), "the result is repeated on stderr: {}", text(&up.stderr));
    assert_eq!(lab.instance_state().await.unwrap(), "running");

    let st = status(&lab).await;
    assert_eq!((st.state.as_deref(), st.session, st.channels), (Some("running"), true, 0));
    assert_eq!(st.address.as_deref(), Some(addr.as_str()));
    assert_eq!(st.instance_id.as_deref(), Some(lab.instance_id()));
    assert!(st.idle_stop_in_secs.is_some_and(|s| s <= 600), "idle clock runs after up: {st:?}");

    let table = run(&lab, &["status"]).await;
    assert!(!text(&table.stderr).contains("warning"), "same config, no warning: {}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(table.contains("running") && table.contains(&addr) && table.contains("IDLE STOP"), "{table}");

    // Another config on the same socket: the daemon's table is shown, with a warning that it is not this file's.
    let other = lab.dir().join("other.toml");
    let same_socket = std::fs::read_to_string(lab.dir().join("bastionctl.toml")).unwrap();
    std::fs::write(&other, same_socket.replace("name = \"lab\"", "name = \"elsewhere\"")).unwrap();
    let mut cmd = tokio::process::Command::new(BASTIONCTL);
    cmd.arg("--config").arg(&other).arg("status");
    lab.apply_env(&mut cmd);
    let mixed = cmd.stdin(Stdio::null()).output().await.unwrap();
    let warned = text(&mixed.stderr);
    assert!(warned.contains("serves bastions [lab], not this config's [elsewhere]"), "{warned}");
    assert!(text(&mixed.stdout).contains("running"), "the daemon's view is still shown: {}", text(&mixed.stdout));

    let down = run(&lab, &["down"]).await;
    assert!(down.status.success(), "down failed: {}", text(&down.stderr));
    assert_eq!(text(&down.stdout).matches("stopping").count(), 1, "down printed {:?}", text(&down.stdout));
    assert!(!text(&down.stderr).contains("stopping"), "the result is repeated on stderr: {}", text(&down.stderr));
    lab.wait_instance_state("stopped", Duration::from_secs(20)).await.unwrap();
    assert_eq!(status(&lab).await.stop_calls, 1);

    let again = run(&lab, &["down"]).await;
    assert!(again.status.success(), "down on a stopped bastion: {}", text(&again.stderr));
    assert!(text(&again.stdout).contains("is already stopped"), "{}", text(&again.stdout));
    assert!(!text(&again.stderr).contains("stopping"), "no stop on a stopped bastion: {}", text(&again.stderr));
    assert_eq!(status(&lab).await.stop_calls, 1, "no second StopInstances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_refuses_while_a_channel_is_open_unless_forced() {
    let lab = lab().await;
    let _daemon = lab.start_daemon().await.unwrap();
    let session = lab.ssh_command("sleep 60").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("one open channel", DEADLINE, || async {
        lab.daemon_status().await.is_ok_and(|s| s.first().is_some_and(|b| b.channels == 1))
    })
    .await
    .unwrap();

    let refused = run(&lab, &["down"]).await;
    assert!(!refused.status.success(), "down must refuse with a channel open");
    let err = text(&refused.stderr);
    assert!(err.contains("1 open channel") && err.contains("--force"), "stderr: {err}");
    assert_eq!(lab.instance_state().await.unwrap(), "running");

    let forced = run(&lab, &["down", "--force"]).await;
    assert!(forced.status.success(), "down --force failed: {}", text(&forced.stderr));
    lab.wait_instance_state("stopped", Duration::from_secs(20)).await.unwrap();
    let out = tokio::time::timeout(DEADLINE, session.wait_with_output()).await.expect("the cut session ends").unwrap();
    assert!(!out.status.success(), "the forced-down session must not report success");
    // The proxy has no result of its own: the start's `ready` line, which races the reply in the daemon, is relayed.
    assert!(text(&out.stderr).contains("ready at"), "the `ready` progress line is relayed: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_status_work_without_a_daemon() {
    let lab = lab().await;
    lab.ec2().start_instances().instance_ids(lab.instance_id()).send().await.unwrap();
    let st = run(&lab, &["status", "--json"]).await;
    assert!(st.status.success(), "{}", text(&st.stderr));
    let list: Vec<BastionStatus> = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(list[0].state.as_deref(), Some("running"));
    assert_eq!(list[0].pid, None, "no daemon, no pid");
    assert!(text(&st.stdout).contains("\"pid\": null"), "{}", text(&st.stdout));
    assert!(text(&st.stdout).contains("\"lease_error\": null"), "one schema: {}", text(&st.stdout));
    let down = run(&lab, &["down"]).await;
    assert!(down.status.success(), "{}", text(&down.stderr));
    lab.wait_instance_state("stopped", Duration::from_secs(20)).await.unwrap();
    let again = run(&lab, &["down"]).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains(&format!("({}) is already stopped", lab.instance_id())), "{}", text(&again.stdout));
    assert!(lab.daemon_pid().await.is_none(), "down without a daemon must not start one");
}

/// A daemon draining after SIGTERM holds its lock but no longer accepts: a new proxy waits for it to exit and starts
/// a new daemon instead of failing with the new daemon's "already running".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_during_a_daemons_drain_waits_and_starts_a_new_daemon() {
    let lab = lab().await;
    let first = lab.start_daemon().await.unwrap();
    let first_pid = first.pid().unwrap();
    // An open session keeps the first daemon draining until `sleep` ends.
    let session = lab.ssh_command("sleep 4").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("one open channel", DEADLINE, || async {
        lab.daemon_status().await.is_ok_and(|s| s.first().is_some_and(|b| b.channels == 1))
    })
    .await
    .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first_pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until("the draining daemon refuses new connections", DEADLINE, || async {
        tokio::net::UnixStream::connect(&lab.files().socket).await.is_err()
    })
    .await
    .unwrap();

    let out = tokio::time::timeout(DEADLINE, lab.ssh_command("echo after-drain").output()).await.expect("ssh ends").unwrap();
    assert!(out.status.success(), "ssh during the drain failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "after-drain\n");
    let drained = tokio::time::timeout(DEADLINE, session.wait_with_output()).await.expect("the session ends").unwrap();
    assert!(drained.status.success(), "the draining session completes: {}", text(&drained.stderr));
    let second = lab.daemon_pid().await.expect("a new daemon serves the socket");
    assert_ne!(second, first_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outside_the_config_is_refused_naming_the_rule() {
    let lab = lab().await;
    let out = run(&lab, &["proxy", "127.0.9.9", "22"]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout carries tunnel bytes only: {:?}", text(&out.stdout));
    let err = text(&out.stderr);
    let rule = format!("{}/32", lab.private_addr().ip());
    assert!(err.contains("127.0.9.9:22 is not allowed") && err.contains(&rule) && err.contains("targets"), "{err}");
    assert_eq!(lab.instance_state().await.unwrap(), "stopped", "a refused target must not start the bastion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_notifies_systemd_when_ready_and_exits_cleanly_on_sigterm() {
    let lab = lab().await;
    let notify_path = lab.dir().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let mut daemon = lab
        .bastionctl_command(["daemon"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(DEADLINE, notify.recv(&mut buf)).await.expect("READY=1 within the deadline").unwrap();
    assert!(text(&buf[..n]).contains("READY=1"), "got {:?}", text(&buf[..n]));
    // Ready means the socket accepts now, not later.
    tokio::net::UnixStream::connect(&lab.files().socket).await.expect("socket accepts once READY=1 is sent");

    let pid = nix::unistd::Pid::from_raw(daemon.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = tokio::time::timeout(DEADLINE, notify.recv(&mut buf)).await.expect("STOPPING=1").unwrap();
    assert!(text(&buf[..n]).contains("STOPPING=1"));
    let status = tokio::time::timeout(DEADLINE, daemon.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "daemon exit status {status}");
    assert!(!lab.files().socket.exists(), "the socket file is removed on exit");
}

/// The tunnel's bytes that cannot be written to stdout (a full disk) fail the proxy loudly, as any command's output
/// does: exit 74 (EX_IOERR) with a message naming stdout, not a quiet success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_stdout_is_full_fails_loudly() {
    let lab = lab().await;
    let _daemon = lab.start_daemon().await.unwrap();
    let target = lab.private_addr();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    // The target's sshd sends its banner first: the proxy has bytes to write before stdin's EOF ends the tunnel.
    let child = lab
        .bastionctl_command(["proxy", &target.ip().to_string(), &target.port().to_string()])
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("the proxy ends").unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("cannot write to stdout: No space left on device"), "{err}");
}
