//! Commands run against a [`Lab`]: the real `ssh` client, `bastionctl` subcommands, the daemon; and stopping
//! whatever daemon serves the lab's socket when the lab drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::time::Instant;

use super::Lab;
use super::moto::{DUMMY_SECRET, REGION};
use super::net::POLL_INTERVAL;
use super::proc::Proc;
use bastionctl_core::control::BastionStatus;

/// How long a daemon may take to accept on its control socket.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon gets to exit after SIGTERM before it is killed.
const DAEMON_STOP_GRACE: Duration = Duration::from_secs(3);

/// A foreground `bastionctl daemon` started by [`Lab::start_daemon`]; killed (with its children) on drop.
#[derive(Debug)]
pub struct DaemonGuard {
    proc: Proc,
}

impl DaemonGuard {
    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// `Some(status)` once the daemon has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.exited()
    }
}

impl Lab {
    /// The environment every command of the lab gets: dummy AWS credentials, empty AWS config files, no IMDS, the
    /// EC2 endpoint pointed at moto (or at the [`super::Ec2Front`] in front of it). Inherited `AWS_*` variables,
    /// `SSH_AUTH_SOCK` and `BASTIONCTL_CONFIG` are removed by [`Lab::apply_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        let f = &self.files;
        [
            ("AWS_ACCESS_KEY_ID", DUMMY_SECRET.to_string()),
            ("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET.to_string()),
            ("AWS_CONFIG_FILE", f.aws_config.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", f.aws_credentials.display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.ec2_endpoint_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Clears inherited `AWS_*`, `SSH_AUTH_SOCK` and `BASTIONCTL_CONFIG` from `cmd` and sets [`Lab::env`].
    pub fn apply_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("AWS_") || name == "SSH_AUTH_SOCK" || name == "BASTIONCTL_CONFIG" {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(self.env());
    }

    /// `ssh -F <lab ssh_config> private <remote_cmd>`: the user's ssh through bastionctl. stdin is null unless the
    /// caller sets it; the child is killed on drop.
    pub fn ssh_command(&self, remote_cmd: &str) -> Command {
        self.ssh_host_command("private", remote_cmd)
    }

    /// Like [`Lab::ssh_command`] for another host of the ssh_config: `private`, `private-direct` (no bastion),
    /// `private-jump` (OpenSSH ProxyJump through the bastion) or `bastion`.
    pub fn ssh_host_command(&self, host: &str, remote_cmd: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.files.ssh_config).arg(host).arg(remote_cmd);
        self.apply_env(&mut cmd);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// `bastionctl --config <lab config> <args>`, with the lab's environment; killed on drop.
    pub fn bastionctl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.opts.bastionctl);
        cmd.arg("--config").arg(&self.files.config).args(args);
        self.apply_env(&mut cmd);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    pub(super) fn foreground_daemon_log(&self) -> PathBuf {
        self.files.dir.join("daemon-foreground.log")
    }

    /// Spawns `bastionctl --config <cfg> daemon` (stderr appended to `daemon-foreground.log`) and waits until its
    /// control socket accepts.
    pub async fn start_daemon(&self) -> anyhow::Result<DaemonGuard> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.foreground_daemon_log())?;
        let child = self
            .bastionctl_command(["daemon"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.opts.bastionctl.display()))?;
        let mut guard = DaemonGuard { proc: Proc::new(child, "bastionctl daemon") };
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            if let Some(status) = guard.exited() {
                bail!("bastionctl daemon exited with {status}:\n{}", self.daemon_log());
            }
            if tokio::net::UnixStream::connect(&self.files.socket).await.is_ok() {
                return Ok(guard);
            }
            if Instant::now() >= deadline {
                bail!(
                    "bastionctl daemon did not accept on {} within {DAEMON_READY_TIMEOUT:?}",
                    self.files.socket.display()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs `bastionctl status --json` and parses it. `status` exits 1 after printing the list when a bastion's
    /// EC2 state is unknown; that list is returned too.
    pub async fn daemon_status(&self) -> anyhow::Result<Vec<BastionStatus>> {
        let out = self.bastionctl_command(["status", "--json"]).output().await?;
        match serde_json::from_slice(&out.stdout) {
            Ok(list) => Ok(list),
            Err(_) if !out.status.success() => {
                bail!("bastionctl status --json failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))
            }
            Err(e) => Err(e).with_context(|| format!("status --json printed {:?}", String::from_utf8_lossy(&out.stdout))),
        }
    }

    /// The PID of the process serving the lab's control socket (from the socket's peer credentials), if any.
    pub async fn daemon_pid(&self) -> Option<u32> {
        socket_peer_pid(&self.files.socket).await
    }

    /// Stops the daemon serving the lab's socket (found by [`Lab::daemon_pid`]): SIGTERM, then SIGKILL if it still
    /// serves after a grace period. Returns whether there was one.
    pub async fn stop_daemon(&self) -> bool {
        stop_socket_server(&self.files.socket).await
    }
}

/// The PID of the process listening on the Unix socket `path`, from `SO_PEERCRED`.
async fn socket_peer_pid(path: &Path) -> Option<u32> {
    let connect = tokio::net::UnixStream::connect(path);
    let stream = tokio::time::timeout(Duration::from_secs(1), connect).await.ok()?.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok().filter(|&p| p > 1 && p != std::process::id())
}

async fn stop_socket_server(path: &Path) -> bool {
    let Some(pid) = socket_peer_pid(path).await else { return false };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + DAEMON_STOP_GRACE;
    while Instant::now() < deadline {
        if socket_peer_pid(path).await != Some(pid) {
            return true;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    true
}

impl Drop for Lab {
    /// Stops a daemon still serving the lab's socket (for example one `bastionctl proxy` started in the background),
    /// by the PID its socket reports. Runs on a helper thread with its own runtime, so it works inside or outside
    /// an async context.
    fn drop(&mut self) {
        let socket = self.files.socket.clone();
        if !socket.exists() {
            return;
        }
        let stop = move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(stop_socket_server(&socket));
            }
        };
        let _ = std::thread::spawn(stop).join();
    }
}
