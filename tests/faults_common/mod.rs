//! Helpers shared by the fault tests (`faults_stream.rs`, `bad_input.rs`): the lab, ssh runs with a deadline, a
//! ProxyCommand wrapper that records the proxy's exit code, daemon signals, checksums.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::{DaemonGuard, Lab, LabOptions};
use sha2::{Digest, Sha256};
use tokio::process::Child;

/// The bastionctl binary under test.
pub const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh` run that may start the bastion, on a loaded 2-core box.
pub const SSH_DEADLINE: Duration = Duration::from_secs(90);

/// One lab case at a time, so timings and memory figures mean something on 2 cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lab options: `idle` idle timeout, 800 ms boot delay.
pub fn opts(idle: Duration) -> LabOptions {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = idle;
    o.boot_delay = Duration::from_millis(800);
    o
}

/// Starts a lab or panics with why.
pub async fn lab(o: LabOptions) -> Lab {
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#} (missing tools? run scripts/install-deps.sh)"))
}

/// The daemon's and the bastion's log tails, for failure messages.
pub fn diag(lab: &Lab) -> String {
    lab.diagnostics()
}

/// `ssh private <cmd>` to completion (stdout/stderr captured), without a deadline of its own.
pub async fn ssh_output(lab: &Lab, cmd: &str) -> Output {
    let child = lab.ssh_command(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ssh");
    child.wait_with_output().await.expect("wait for ssh")
}

/// `ssh private <cmd>` under [`SSH_DEADLINE`].
pub async fn ssh(lab: &Lab, cmd: &str) -> Output {
    tokio::time::timeout(SSH_DEADLINE, ssh_output(lab, cmd))
        .await
        .unwrap_or_else(|_| panic!("ssh {cmd:?} did not finish within {SSH_DEADLINE:?}{}", diag(lab)))
}

/// Asserts success and exact stdout.
pub fn assert_ok(lab: &Lab, out: &Output, stdout: &str) {
    lab.assert_output(out, stdout);
}

/// `bastionctl proxy HOST PORT` run directly, stdin closed, under a 30 s deadline.
pub async fn proxy_output(lab: &Lab, host: &str, port: u16) -> Output {
    let child = lab
        .bastionctl_command(["proxy", host, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("proxy {host}:{port} did not exit within 30 s{}", diag(lab)))
        .expect("wait for proxy")
}

/// An `ssh private <cmd>` whose ProxyCommand is a wrapper that writes the proxy's exit code to a file (ssh itself
/// hides it: it kills its ProxyCommand on exit). The wrapper ignores SIGHUP so that ssh's cleanup cannot mask how
/// the proxy ended on its own.
pub struct WrappedSsh {
    /// The ssh process (stdout piped).
    pub child: Child,
    status_file: PathBuf,
    stderr_file: PathBuf,
}

impl WrappedSsh {
    /// Polls for the proxy's exit code for at most `within`.
    pub async fn wait_proxy_exit(&self, within: Duration) -> anyhow::Result<i32> {
        let f = self.status_file.clone();
        bastionctl_lab::net::wait_until(&format!("the proxy to write {}", f.display()), within, || {
            let f = f.clone();
            async move { std::fs::read_to_string(&f).is_ok_and(|s| s.ends_with('\n')) }
        })
        .await?;
        Ok(std::fs::read_to_string(&self.status_file)?.trim().parse()?)
    }

    /// What the proxy printed on stderr.
    pub fn proxy_stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

/// Starts `ssh private <cmd>` through the recording wrapper; `name` keeps its files apart.
pub fn wrapped_ssh(lab: &Lab, name: &str, cmd: &str) -> WrappedSsh {
    let dir = lab.dir().join("client");
    let script = dir.join(format!("proxy-{name}.sh"));
    let status_file = dir.join(format!("proxy-{name}.status"));
    let stderr_file = dir.join(format!("proxy-{name}.err"));
    let q = |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let text = format!(
        "#!/bin/sh\ntrap '' HUP\n{} --config {} proxy \"$1\" \"$2\" 2>{}\necho $? > {}.tmp && mv {}.tmp {}\n",
        q(std::path::Path::new(BASTIONCTL)),
        q(&lab.files().config),
        q(&stderr_file),
        q(&status_file),
        q(&status_file),
        q(&status_file),
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = tokio::process::Command::new("ssh");
    command
        .arg("-F")
        .arg(&lab.files().ssh_config)
        .arg("-o")
        .arg(format!("ProxyCommand={} %h %p", script.display()))
        .arg("private")
        .arg(cmd);
    lab.apply_env(&mut command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ssh");
    WrappedSsh { child, status_file, stderr_file }
}

/// Waits until the daemon reports `n` open channels.
pub async fn wait_channels(lab: &Lab, n: usize) {
    bastionctl_lab::net::wait_until(&format!("{n} open channel(s)"), SSH_DEADLINE, || async {
        lab.daemon_status().await.is_ok_and(|s| s.iter().map(|b| b.channels).sum::<usize>() == n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}{}", diag(lab)));
}

/// Sends SIGTERM to `pid` (a daemon this test started).
pub fn sigterm(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Polls for the daemon's exit for at most `within`; its exit code, or `None` if it is still running.
pub async fn wait_exit(d: &mut DaemonGuard, within: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = d.exited() {
            return s.code();
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first line of `text` containing `word` (or the last line), for short quotes in the report.
pub fn first_line_with(text: &str, word: &str) -> String {
    text.lines().find(|l| l.contains(word)).or_else(|| text.lines().last()).unwrap_or("").trim().to_string()
}

/// Adds target patterns and ports to the lab's bastionctl config (before the daemon starts).
pub fn allow_targets(lab: &Lab, targets: &[&str], ports: &[u16]) {
    let path = &lab.files().config;
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("targets = [") {
            let extra: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            out.push_str(&format!("targets = [{}, {rest}\n", extra.join(", ")));
        } else if let Some(rest) = line.strip_prefix("target_ports = [") {
            let extra: Vec<String> = ports.iter().map(u16::to_string).collect();
            out.push_str(&format!("target_ports = [{}, {rest}\n", extra.join(", ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_ne!(out, text, "the lab config has no targets/target_ports lines to extend");
    std::fs::write(path, out).unwrap();
}

/// xorshift64*: deterministic test bytes.
pub fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
