//! The bastion's idle watchdog (`config/bastion/bastionctl-watchdog`) run for real by the instance agent against the
//! lab's bastion sshd: its `ss` sees only that sshd's processes (a wrapper filters by its process tree, so other
//! labs and other users' sshds on this machine do not count), its uptime is the time since the agent "booted" the
//! instance, its "minute" is [`WatchdogOptions::minute_seconds`] seconds, and its power-off writes a file that the
//! agent turns into a StopInstances in moto (through the lab's own client, so it never counts as the product's).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

/// How the agent runs the watchdog.
#[derive(Debug, Clone)]
pub struct WatchdogOptions {
    /// `BASTIONCTL_WATCHDOG_IDLE_MINUTES`.
    pub idle_minutes: u32,
    /// `BASTIONCTL_WATCHDOG_BOOT_GRACE_MINUTES`.
    pub boot_grace_minutes: u32,
    /// `BASTIONCTL_WATCHDOG_MINUTE_SECONDS`: seconds per "minute" (1 in tests).
    pub minute_seconds: u32,
    /// How often the agent runs it while the instance is running (the timer's "every minute").
    pub interval: Duration,
}

impl Default for WatchdogOptions {
    /// Idle 3 "minutes" of 1 s, boot grace 1, run every 300 ms.
    fn default() -> Self {
        WatchdogOptions { idle_minutes: 3, boot_grace_minutes: 1, minute_seconds: 1, interval: Duration::from_millis(300) }
    }
}

/// The shipped script: `config/bastion/bastionctl-watchdog` of the source tree.
pub fn script_path() -> PathBuf {
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let p = d.join("config/bastion/bastionctl-watchdog");
        if p.exists() {
            return p;
        }
        dir = d.parent();
    }
    PathBuf::from("config/bastion/bastionctl-watchdog")
}

/// The files of one lab's watchdog, in the bastion fixture's directory.
#[derive(Debug, Clone)]
pub(super) struct WatchdogFiles {
    pub opts: WatchdogOptions,
    /// The `ss` wrapper.
    ss: PathBuf,
    /// The PID of the bastion sshd listener, read by the wrapper.
    pub pid_file: PathBuf,
    /// The script's state file (removed at every boot, as /run is).
    state: PathBuf,
    /// Written by the power-off command.
    pub poweroff: PathBuf,
    /// Everything the script printed, over all runs.
    pub log: PathBuf,
}

impl WatchdogFiles {
    /// Writes the `ss` wrapper into `dir`.
    pub fn new(dir: &Path, opts: WatchdogOptions) -> anyhow::Result<WatchdogFiles> {
        let f = WatchdogFiles {
            opts,
            ss: dir.join("watchdog-ss"),
            pid_file: dir.join("sshd.pid"),
            state: dir.join("watchdog-state/last-active"),
            poweroff: dir.join("watchdog-poweroff"),
            log: dir.join("watchdog.log"),
        };
        let wrapper = format!(
            "#!/bin/sh\n\
             # bastionctl lab: `ss` limited to the sockets of this lab's bastion sshd and its sessions.\n\
             root=$(cat '{pid}') || exit 1\n\
             pids=$(ps -e -o pid= -o ppid= | awk -v root=\"$root\" '{{ parent[$1] = $2 }}\n\
               END {{ for (p in parent) {{ q = p; while ((q in parent) && q != root && q > 1) q = parent[q];\n\
               if (q == root) printf \"%s|\", p }} }}')\n\
             out=$(ss \"$@\") || exit 1\n\
             printf '%s\\n' \"$out\" | grep -E \"pid=(${{pids}}${{root}}),\" || true\n",
            pid = f.pid_file.display()
        );
        std::fs::write(&f.ss, wrapper)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f.ss, std::fs::Permissions::from_mode(0o755))?;
        Ok(f)
    }

    /// A new boot: the state file goes (as /run does) and `sshd_pid` is the listener to watch.
    pub fn boot(&self, sshd_pid: u32) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.poweroff);
        std::fs::write(&self.pid_file, sshd_pid.to_string())?;
        Ok(())
    }

    /// Runs the script once at `uptime`; returns whether it powered off (and clears that mark).
    pub async fn run(&self, uptime: Duration) -> anyhow::Result<bool> {
        let o = &self.opts;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let status = Command::new("sh")
            .arg(script_path())
            .env("BASTIONCTL_WATCHDOG_IDLE_MINUTES", o.idle_minutes.to_string())
            .env("BASTIONCTL_WATCHDOG_BOOT_GRACE_MINUTES", o.boot_grace_minutes.to_string())
            .env("BASTIONCTL_WATCHDOG_MINUTE_SECONDS", o.minute_seconds.to_string())
            .env("BASTIONCTL_WATCHDOG_STATE", &self.state)
            .env("BASTIONCTL_WATCHDOG_VERBOSE", "1")
            .env("BASTIONCTL_WATCHDOG_SS", &self.ss)
            .env("BASTIONCTL_WATCHDOG_UPTIME", format!("echo {}", uptime.as_secs()))
            .env("BASTIONCTL_WATCHDOG_POWEROFF", format!("touch '{}'", self.poweroff.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(Duration::from_secs(10), status)
            .await
            .context("the watchdog script did not finish within 10 s")??;
        anyhow::ensure!(status.success(), "the watchdog script exited with {status}; see {}", self.log.display());
        Ok(std::fs::remove_file(&self.poweroff).is_ok())
    }
}
