//! Child processes of the lab, killed together with everything they forked when their handle drops.
//!
//! sshd forks a new session for every connection (`setsid`), so killing the listener alone would leave those
//! sessions running. [`Proc`] therefore kills the whole tree below its child, found through `/proc` by parent
//! PID, and never looks a process up by name.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

/// Longest blocking wait for killed processes to be reaped.
const REAP_WAIT: Duration = Duration::from_millis(500);

/// A spawned child that is killed with all of its descendants on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Takes ownership of `child` (spawned with `kill_on_drop(true)`); `what` names it in errors.
    pub fn new(child: Child, what: impl Into<String>) -> Proc {
        Proc { child, what: what.into() }
    }

    /// The child's PID, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What this process is, e.g. `bastion sshd`.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the child and its descendants now, and reaps the child.
    pub async fn kill(mut self) {
        self.kill_tree();
        let _ = self.child.wait().await;
    }

    /// Kills the descendants first (so the child can still reap them: no zombies left to init), then the child,
    /// and reaps it. Bounded waits of a few hundred milliseconds; a SIGKILLed process dies at once.
    fn kill_tree(&mut self) {
        if let Some(pid) = self.child.id() {
            let below = descendants(pid);
            for &p in &below {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
            let deadline = Instant::now() + REAP_WAIT;
            while Instant::now() < deadline && below.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.start_kill();
        let deadline = Instant::now() + REAP_WAIT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// All descendants of `root`, found by walking `/proc/*/stat` parent links.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Field 4 follows the command name, which is in parentheses and may contain spaces.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found: HashSet<u32> = HashSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p && found.insert(child) {
                frontier.push(child);
            }
        }
    }
    found.into_iter().collect()
}
