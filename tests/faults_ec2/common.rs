//! Helpers of the EC2 fault tests: a lab with the EC2 front, timed `ssh` and `bastionctl proxy` runs, diagnostics,
//! and recording a row before asserting it.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bastionctl_lab::{Ec2Front, Lab, LabOptions, report};

/// The product binary under test.
pub const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh` run that starts the bastion (boot delay, retries with backoff, handshakes, on a loaded
/// 2-core box).
pub const SSH_DEADLINE: Duration = Duration::from_secs(120);
/// Upper bound for one `bastionctl proxy` run that is expected to fail.
pub const PROXY_DEADLINE: Duration = Duration::from_secs(60);
/// Slack on top of `idle_timeout` for an idle stop to show in moto.
pub const STOP_SLACK: Duration = Duration::from_secs(20);

/// Lab options with the EC2 front, the given idle and start timeouts, and a short boot delay.
pub fn opts(idle: Duration, start_timeout: Duration) -> LabOptions {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = idle;
    o.start_timeout = start_timeout;
    o.boot_delay = Duration::from_millis(500);
    o.ec2_front = true;
    o
}

/// Starts a lab or fails the test with the reason.
pub async fn lab(o: LabOptions) -> Lab {
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

/// The lab's EC2 front (the options of [`opts`] always have one).
pub fn front(lab: &Lab) -> &Ec2Front {
    lab.front().expect("lab built with ec2_front")
}

/// How many requests of `action` the front has seen.
pub fn count(lab: &Lab, action: &str) -> usize {
    front(lab).actions().iter().filter(|a| *a == action).count()
}

/// The daemon's log and the bastion sshd's log tail, for failure messages.
pub fn diag(lab: &Lab) -> String {
    lab.diagnostics()
}

/// Runs `ssh private <cmd>` to completion under [`SSH_DEADLINE`]; returns its output and how long it took.
pub async fn ssh(lab: &Lab, cmd: &str) -> (Output, Duration) {
    let t = Instant::now();
    let child = lab.ssh_command(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ssh");
    let out = tokio::time::timeout(SSH_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh {cmd:?} did not finish within {SSH_DEADLINE:?}{}", diag(lab)))
        .expect("wait for ssh");
    (out, t.elapsed())
}

/// Runs `bastionctl proxy <host> <port>` (stdin null) with extra environment `env` (a `None` value removes the
/// variable) under [`PROXY_DEADLINE`]; returns its output and how long it took.
pub async fn proxy(lab: &Lab, host: &str, port: u16, env: &[(&str, Option<&str>)]) -> (Output, Duration) {
    let mut cmd = lab.bastionctl_command(["proxy", host, &port.to_string()]);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let t = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn bastionctl proxy");
    let out = tokio::time::timeout(PROXY_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("bastionctl proxy did not finish within {PROXY_DEADLINE:?}{}", diag(lab)))
        .expect("wait for bastionctl proxy");
    (out, t.elapsed())
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stderr lines that say what went wrong and what to do (`error`, `hint`).
pub fn error_line(err: &str) -> String {
    let wanted = |l: &&str| l.to_ascii_lowercase().contains("error") || l.trim_start().starts_with("hint");
    let lines: Vec<&str> = err.lines().filter(wanted).map(str::trim).collect();
    if lines.is_empty() { err.trim().to_string() } else { lines.join(" / ") }
}

/// Whether `ssh` succeeded and printed exactly `stdout`.
pub fn ok(out: &Output, stdout: &str) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout) == stdout
}

/// Records the row, then fails the test with `observed` and the diagnostics if it did not pass.
pub fn record(lab: &Lab, case: &str, title: &str, expected: &str, observed: &str, pass: bool) {
    report::record(case, title, expected, observed, pass);
    println!("case {case}: {title}\n  expected: {expected}\n  observed: {observed}\n  pass: {pass}");
    assert!(pass, "case {case} ({title}) failed: {observed}{}", diag(lab));
}

/// Polls `check` every 50 ms until it holds, for at most `within`; fails the test naming `what` otherwise.
pub async fn wait_for(lab: &Lab, what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}{}", diag(lab));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds with one decimal, for observations.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
