//! Faults a test can cause in a [`Lab`] and figures it can read: kill or freeze the bastion's sshd, read a
//! process's memory from `/proc`.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Lab, proc};

/// A process's memory as `/proc/PID/status` reports it, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`; `None` once the process is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

impl Lab {
    /// Kills the bastion's sshd and all its sessions with SIGKILL (a crash of the bastion's sshd). The instance stays
    /// `running`, so the agent starts a fresh sshd at once: "the bastion is back".
    pub fn kill_bastion_sshd(&self) {
        self.agent.kill_sshd();
    }

    /// The bastion sshd listener's PID, while it runs.
    pub fn bastion_sshd_pid(&self) -> Option<u32> {
        self.agent.sshd_pid()
    }

    /// Freezes (SIGSTOP) every session process of the bastion's sshd, leaving the listener up: to the daemon the
    /// bastion goes silent, as when the network drops. Returns the frozen PIDs; they die with the lab (SIGKILL works
    /// on stopped processes), or call [`Lab::thaw`].
    pub fn freeze_bastion_sessions(&self) -> Vec<u32> {
        let Some(listener) = self.bastion_sshd_pid() else { return Vec::new() };
        let pids = proc::descendants(listener);
        for &p in &pids {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGSTOP);
        }
        pids
    }

    /// Resumes processes frozen by [`Lab::freeze_bastion_sessions`].
    pub fn thaw(&self, pids: &[u32]) {
        for &p in pids {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
        }
    }
}
