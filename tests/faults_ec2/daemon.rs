//! Item 8: a SIGKILLed daemon leaves no bastion running for good: a restarted daemon adopts it and stops it after
//! `idle_timeout`; a proxy started while no daemon runs starts one.

use std::time::{Duration, Instant};

use bastionctl_lab::{DaemonGuard, Lab};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::common::*;

/// SIGKILLs the daemon `guard` started (it must be the one serving the lab's socket) and waits until it is reaped.
async fn sigkill_daemon(lab: &Lab, guard: &mut DaemonGuard) -> u32 {
    let pid = lab.daemon_pid().await.unwrap_or_else(|| panic!("no daemon serves the socket{}", diag(lab)));
    assert_eq!(Some(pid), guard.pid(), "the socket is served by another process{}", diag(lab));
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL the daemon");
    wait_for(lab, "the killed daemon to be reaped", Duration::from_secs(10), || guard.exited().is_some()).await;
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_restarted_daemon_adopts_and_stops_the_bastion_and_a_proxy_starts_a_daemon() {
    let idle = Duration::from_secs(4);
    let lab = lab(opts(idle, Duration::from_secs(90))).await;
    let mut first = lab.start_daemon().await.expect("daemon");
    let (out, _) = ssh(&lab, "echo ok").await;
    assert!(ok(&out, "ok\n"), "ssh: {}{}", stderr(&out), diag(&lab));

    let killed = sigkill_daemon(&lab, &mut first).await;
    let running_after_kill = lab.instance_state().await.unwrap_or_default();

    // A new daemon adopts the running bastion and stops it after idle_timeout.
    let t = Instant::now();
    let second = lab.start_daemon().await;
    let restarted = second.is_ok();
    let stopped = lab.wait_instance_state("stopped", idle + STOP_SLACK).await.is_ok();
    let stop_after = t.elapsed();
    let adopted_in_time = stopped && stop_after >= idle && stop_after < idle + STOP_SLACK;
    let mut second = second.unwrap_or_else(|e| panic!("second daemon: {e:#}{}", diag(&lab)));

    // Kill that one too; a plain `ssh` (its proxy) finds no daemon and starts one in the background.
    let killed2 = sigkill_daemon(&lab, &mut second).await;
    let (auto, auto_took) = ssh(&lab, "echo ok").await;
    let auto_ok = ok(&auto, "ok\n");
    let auto_pid = lab.daemon_pid().await;
    let new_daemon = auto_pid.is_some_and(|p| p != killed && p != killed2);
    record(
        &lab,
        "8",
        "Daemon SIGKILLed",
        "a restarted daemon adopts the running bastion and stops it after idle_timeout; a proxy with no daemon starts one",
        &format!(
            "after SIGKILL the bastion was {running_after_kill}; a new daemon (up: {restarted}) stopped it {} after its \
             start (idle_timeout {}); after killing that one too, ssh {} in {} with a daemon auto-started (pid {:?}, \
             new: {new_daemon})",
            if stopped { secs(stop_after) } else { "NEVER".into() },
            secs(idle),
            if auto_ok { "succeeded" } else { "FAILED" },
            secs(auto_took),
            auto_pid,
        ),
        running_after_kill == "running" && restarted && adopted_in_time && auto_ok && new_daemon,
    );
}

/// Issue 10: a bastion started outside the daemon (here with the AWS SDK, as the console or the AWS CLI would)
/// while the daemon idles is noticed by the idle watch (`watch_interval`) and stopped `idle_timeout` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_a_bastion_started_elsewhere_is_adopted_by_the_idle_watch() {
    let (idle, watch) = (Duration::from_secs(3), Duration::from_secs(2));
    let lab = lab(opts(idle, Duration::from_secs(90))).await;
    let cfg = &lab.files().config;
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, format!("{text}watch_interval = \"{}ms\"\n", watch.as_millis())).unwrap();
    let _daemon = lab.start_daemon().await.expect("daemon");
    let before = lab.instance_state().await.unwrap_or_default();
    let t = Instant::now();
    lab.ec2().start_instances().instance_ids(lab.instance_id()).send().await.expect("StartInstances from outside");
    let bound = watch.mul_f64(1.2) + idle + STOP_SLACK;
    let stopped = lab.wait_instance_state("stopped", bound).await.is_ok();
    let after = t.elapsed();
    let log = lab.daemon_log();
    let said = log.lines().find(|l| l.contains("adopting it")).unwrap_or("").trim().to_string();
    record(
        &lab,
        "10-adopt-lab",
        "bastion started from outside while the daemon idles (lab)",
        "noticed within watch_interval (+20 % jitter) and stopped idle_timeout later, without any demand",
        &format!(
            "was {before}; StartInstances from the SDK; the daemon (watch_interval {}, idle_timeout {}) stopped it {} \
             later; log: {:?}",
            secs(watch),
            secs(idle),
            if stopped { secs(after) } else { "NEVER".into() },
            said.split("adopting").nth(1).map(|s| format!("adopting{s}")).unwrap_or_default(),
        ),
        before == "stopped" && stopped && after >= idle && !said.is_empty(),
    );
}
