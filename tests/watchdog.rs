//! The bastion's idle watchdog (`config/bastion/bastionctl-watchdog`, issue 8): shellcheck, the cloud-init snippet
//! in step with the files, the script's decision against canned `ss` output, and the real script run by the lab's
//! instance agent against the lab's bastion sshd. Rows go to the reliability table.

#[path = "faults_ec2/common.rs"]
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bastionctl_lab::report;
use bastionctl_lab::watchdog::{WatchdogOptions, script_path};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn bastion_dir() -> PathBuf {
    script_path().parent().expect("config/bastion").to_path_buf()
}

#[test]
fn shellcheck_passes_on_the_watchdog_script() {
    let out = std::process::Command::new("shellcheck").args(["-s", "sh"]).arg(script_path()).output();
    let out = out.unwrap_or_else(|e| panic!("cannot run shellcheck ({e}): install it with scripts/install-deps.sh"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pass = out.status.success();
    report::record(
        "watchdog-shellcheck",
        "Watchdog script is POSIX sh",
        "`shellcheck -s sh` reports nothing on config/bastion/bastionctl-watchdog",
        &if pass { "shellcheck: no findings".to_string() } else { text.lines().take(5).collect::<Vec<_>>().join(" ") },
        pass,
    );
    assert!(pass, "shellcheck:\n{text}");
}

/// The `content: |` block of `path` in the cloud-init snippet, dedented.
fn user_data_file(yaml: &str, path: &str) -> Option<String> {
    let start = yaml.find(&format!("  - path: {path}\n"))?;
    let rest = &yaml[start..];
    let body = &rest[rest.find("    content: |\n")? + "    content: |\n".len()..];
    let mut out = String::new();
    for line in body.lines() {
        if line.starts_with("  - path:") || line.starts_with("runcmd:") {
            break;
        }
        out.push_str(line.strip_prefix("      ").unwrap_or(line));
        out.push('\n');
    }
    Some(out)
}

#[test]
fn the_cloud_init_snippet_carries_the_current_files() {
    let dir = bastion_dir();
    let yaml = std::fs::read_to_string(dir.join("user-data.yaml")).expect("user-data.yaml");
    assert!(yaml.starts_with("#cloud-config\n"));
    for (path, file) in [
        ("/usr/local/sbin/bastionctl-watchdog", "bastionctl-watchdog"),
        ("/etc/systemd/system/bastionctl-watchdog.service", "bastionctl-watchdog.service"),
        ("/etc/systemd/system/bastionctl-watchdog.timer", "bastionctl-watchdog.timer"),
        ("/etc/default/bastionctl-watchdog", "bastionctl-watchdog.default"),
        ("/usr/local/share/bastionctl/bastionctl-watchdog.cron", "bastionctl-watchdog.cron"),
    ] {
        let want = std::fs::read_to_string(dir.join(file)).unwrap();
        let got = user_data_file(&yaml, path).unwrap_or_else(|| panic!("user-data.yaml installs no {path}"));
        assert_eq!(got, want, "user-data.yaml's copy of {file} is stale: run scripts/gen-user-data.py");
    }
    for needle in ["ClientAliveInterval 30", "ClientAliveCountMax 4", "enable --now bastionctl-watchdog.timer",
        "bastionctl-watchdog: installed", "Key=bastionctl:watchdog", "instanceInitiatedShutdownBehavior"] {
        assert!(yaml.contains(needle), "user-data.yaml lacks {needle}");
    }
}

/// Runs the script once with canned `ss` output (`listening`, `established`; `None` = ss fails) at `uptime` seconds,
/// idle 20 and grace 10 minutes of 1 s. Returns (exit code, powered off, state file content, output).
fn decide(dir: &Path, listening: Option<&str>, established: &str, uptime: u64) -> (i32, bool, String, String) {
    let ss = dir.join("ss");
    let body = match listening {
        Some(l) => format!(
            "#!/bin/sh\ncase \" $* \" in *' -l '*) cat <<'X'\n{l}\nX\n;; *) cat <<'X'\n{established}\nX\n;; esac\n"
        ),
        None => "#!/bin/sh\necho 'ss: cannot open netlink socket' >&2\nexit 1\n".into(),
    };
    std::fs::write(&ss, body).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&ss).status().unwrap();
    let poweroff = dir.join("poweroff");
    let _ = std::fs::remove_file(&poweroff);
    let out = std::process::Command::new("sh")
        .arg(script_path())
        .env("BASTIONCTL_WATCHDOG_SS", &ss)
        .env("BASTIONCTL_WATCHDOG_UPTIME", format!("echo {uptime}.42 1234.5"))
        .env("BASTIONCTL_WATCHDOG_POWEROFF", format!("touch {}", poweroff.display()))
        .env("BASTIONCTL_WATCHDOG_MINUTE_SECONDS", "1")
        .env("BASTIONCTL_WATCHDOG_STATE", dir.join("state/last"))
        .env_remove("BASTIONCTL_WATCHDOG_IDLE_MINUTES")
        .env_remove("BASTIONCTL_WATCHDOG_BOOT_GRACE_MINUTES")
        .output()
        .unwrap();
    let state = std::fs::read_to_string(dir.join("state/last")).unwrap_or_default().trim().to_string();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), poweroff.exists(), state, text)
}

#[test]
fn the_decision_counts_only_sshds_outbound_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let listen = "LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:((\"sshd\",pid=500,fd=3))\n\
                  LISTEN 0 128 [::]:22 [::]:* users:((\"sshd\",pid=500,fd=4))";
    let session = "ESTAB 0 0 10.0.0.5:22 198.51.100.7:51234 users:((\"sshd\",pid=900,fd=4),(\"sshd\",pid=901,fd=4))";
    let forwarded = "ESTAB 0 0 10.0.0.5:40522 10.0.16.10:22 users:((\"sshd\",pid=901,fd=9))";
    let other = "ESTAB 0 0 10.0.0.5:40600 10.0.16.11:5432 users:((\"psql\",pid=77,fd=3))";
    let newer = "ESTAB 0 0 10.0.0.5:40523 10.0.16.10:22 users:((\"sshd-session\",pid=902,fd=9))";

    // A forwarded connection: no power-off, its time is remembered.
    let (code, off, state, _) = decide(d, Some(listen), &format!("{session}\n{forwarded}\n{other}"), 5000);
    assert_eq!((code, off, state.as_str()), (0, false, "5000"));
    // Only SSH sessions and other programs' connections: idle since 5000 s; 19 "minutes" later not yet, 20 later yes.
    let quiet = format!("{session}\n{other}");
    assert!(!decide(d, Some(listen), &quiet, 5000 + 19).1);
    let (code, off, _, text) = decide(d, Some(listen), &quiet, 5000 + 20);
    assert!(code == 0 && off && text.contains("powering off"), "{code} {off} {text}");
    // OpenSSH 9.8+ names the session process sshd-session.
    assert!(!decide(d, Some(listen), &format!("{quiet}\n{newer}"), 9000).1);
    // A state file from an earlier boot (uptime went backwards) is ignored; the boot grace holds first.
    std::fs::write(d.join("state/last"), "99999").unwrap();
    assert!(!decide(d, Some(listen), "", 9).1, "inside the boot grace");
    std::fs::write(d.join("state/last"), "99999").unwrap();
    assert!(decide(d, Some(listen), "", 25).1, "idle since boot, past grace and idle");
    // Cannot tell: never powers off.
    let (code, off, _, text) = decide(d, None, "", 99999);
    assert!(code == 2 && !off && text.contains("not powering off"), "{code} {off} {text}");
    let (code, off, _, text) = decide(d, Some("LISTEN 0 5 0.0.0.0:80 0.0.0.0:* users:((\"nginx\",pid=1,fd=3))"), "", 99999);
    assert!(code == 2 && !off && text.contains("no listening sshd"), "{code} {off} {text}");
}

/// The lab's bastion runs the real watchdog (idle 3 "minutes" of 1 s, grace 1) and sshd drops silent clients after
/// 1 s x 2 probes. The daemon's own idle_timeout (120 s) is far away, so every stop here is the watchdog's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_on_the_lab_bastion_powers_off_only_when_nothing_is_forwarded() {
    let mut o = opts(Duration::from_secs(120), Duration::from_secs(90));
    o.watchdog = Some(WatchdogOptions::default());
    o.bastion_client_alive = Some((1, 2));
    let idle = Duration::from_secs(3);
    // The script reads the uptime in whole seconds: with 1 s "minutes" its idle time is exact to within 1 s.
    let resolution = Duration::from_secs(1);
    let lab = lab(o).await;
    let mut daemon = lab.start_daemon().await.expect("daemon");

    // 1. Started with no forwarded connection (`up`): powered off after the idle time, counted from boot.
    let t = Instant::now();
    let up = lab.bastionctl_command(["up"]).output().await.expect("up");
    assert!(up.status.success(), "up: {}{}", String::from_utf8_lossy(&up.stderr), diag(&lab));
    let off1 = lab.wait_instance_state("stopped", idle + STOP_SLACK).await.is_ok();
    let idle_off_after = t.elapsed();
    let (poweroffs1, _) = lab.watchdog_counts();
    settle(&lab).await;

    // 2. Never while `ssh ... 'sleep 8'` is open; after it ends, powered off after the idle time.
    let (out, took) = ssh(&lab, "sleep 8; echo slept").await;
    let ended = Instant::now();
    let during = lab.watchdog_counts().0 - poweroffs1;
    let off2 = lab.wait_instance_state("stopped", idle + STOP_SLACK).await.is_ok();
    let after_close = ended.elapsed();
    settle(&lab).await;

    // 3. The laptop vanishes (its daemon SIGSTOPped, channel open): sshd's ClientAlive drops it, then power-off.
    let child = lab.ssh_command("sleep 300").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ssh");
    let deadline = Instant::now() + SSH_DEADLINE;
    while !lab.daemon_status().await.is_ok_and(|s| s[0].channels == 1) {
        assert!(Instant::now() < deadline, "the channel never opened{}", diag(&lab));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = daemon.pid().expect("daemon pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP the daemon");
    let t = Instant::now();
    let off3 = lab.wait_instance_state("stopped", Duration::from_secs(3) + idle + STOP_SLACK).await.is_ok();
    let vanished_off_after = t.elapsed();
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    drop(child);
    let _ = daemon.exited();
    let (poweroffs, runs) = lab.watchdog_counts();
    let product_stops = lab.moto_foreign_actions().unwrap_or_default().iter().filter(|a| *a == "StopInstances").count();
    let pass = off1
        && idle_off_after + resolution >= idle
        && ok(&out, "slept\n")
        && during == 0
        && off2
        && after_close + resolution >= idle
        && off3
        && vanished_off_after + resolution >= idle
        && poweroffs == 3
        && product_stops == 0;
    let row = format!(
        "started by `up`, no channel: powered off {} after the `up` began; `ssh 'sleep 8'` {} in {} with {during} power-offs meanwhile, \
         then powered off {} after it ended; daemon SIGSTOPped with a channel open: powered off {} later \
         (ClientAlive 1 s x 2, then idle 3 s); watchdog runs {runs}, power-offs {poweroffs}, product StopInstances \
         {product_stops}",
        if off1 { secs(idle_off_after) } else { "NEVER".into() },
        if ok(&out, "slept\n") { "completed" } else { "FAILED" },
        secs(took),
        if off2 { secs(after_close) } else { "NEVER".into() },
        if off3 { secs(vanished_off_after) } else { "NEVER".into() },
    );
    report::record(
        "watchdog-lab",
        "Idle watchdog on the bastion",
        "powers the instance off after idle_minutes with no forwarded connection; never while `ssh 'sleep'` is open; \
         after the client vanishes (SIGSTOP, sshd ClientAlive) it powers off once the idle time has passed",
        &row,
        pass,
    );
    assert!(pass, "{row}\n--- watchdog log (tail) ---\n{}{}", tail(&lab.watchdog_log(), 30), diag(&lab));
}

/// After a power-off: the bastion sshd is gone and the daemon has noticed its session ended, so the next `ssh`
/// starts the bastion instead of opening a channel on a dead session.
async fn settle(lab: &bastionctl_lab::Lab) {
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(lab)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab.daemon_status().await.is_ok_and(|s| !s[0].session) {
        assert!(Instant::now() < deadline, "the daemon did not notice the session ended{}", diag(lab));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
