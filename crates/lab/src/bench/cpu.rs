//! CPU accounting for the benchmark: one cgroup per route's client side (cgroup v1 `cpuacct`, else a cgroup v2
//! directory's `cpu.stat`), made by the benchmark (as root) and removed when dropped.
//!
//! A route's command runs as `sh -c 'echo $$ > <group>/cgroup.procs; exec ssh ...'`, so ssh and everything it
//! starts (its ProxyCommand, `ssh -W`, `bastionctl proxy`) are counted from the first instruction. Long-lived helpers
//! (the daemon, a ControlMaster) are moved into a group of their own and read as deltas around each run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// A cgroup the benchmark made; its CPU usage covers every process that ever ran in it.
#[derive(Debug)]
pub struct CpuGroup {
    dir: PathBuf,
    v2: bool,
}

/// The writable hierarchy to make groups in: cgroup v1's cpuacct, else the cgroup v2 root.
fn hierarchy() -> Option<(PathBuf, bool)> {
    let v1 = Path::new("/sys/fs/cgroup/cpuacct");
    if v1.join("cpuacct.usage").exists() {
        return Some((v1.to_path_buf(), false));
    }
    for v2 in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let root = Path::new(v2);
        if root.join("cgroup.procs").exists() && root.join("cgroup.controllers").exists() {
            return Some((root.to_path_buf(), true));
        }
    }
    None
}

impl CpuGroup {
    /// Makes the group `name` (unique per benchmark process); `None` when there is no writable cgroup hierarchy
    /// (not root, or no cgroup file system), and the benchmark then reports CPU as unmeasured.
    pub fn create(name: &str) -> Option<CpuGroup> {
        let (root, v2) = hierarchy()?;
        let dir = root.join(format!("bastionctl-bench-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let group = CpuGroup { dir, v2 };
        group.usage().ok()?;
        Some(group)
    }

    /// The file a process writes its PID into to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Moves process `pid` (all its threads) into this group.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.procs_file(), pid.to_string())
            .with_context(|| format!("cannot move pid {pid} into {}", self.dir.display()))
    }

    /// CPU time (user + system) used by all processes in the group so far.
    pub fn usage(&self) -> anyhow::Result<Duration> {
        if self.v2 {
            let text = std::fs::read_to_string(self.dir.join("cpu.stat"))?;
            let usec = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .context("no usage_usec in cpu.stat")?
                .trim()
                .parse()?;
            Ok(Duration::from_micros(usec))
        } else {
            let ns = std::fs::read_to_string(self.dir.join("cpuacct.usage"))?.trim().parse()?;
            Ok(Duration::from_nanos(ns))
        }
    }
}

impl Drop for CpuGroup {
    /// Moves processes still inside (a helper that outlived its group) back to the root, then removes the group.
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.procs_file())
            && let Some(root) = self.dir.parent()
        {
            for pid in pids.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A process's resident set size from `/proc/<pid>/status`, in bytes: in all (`VmRSS`), and its anonymous part
/// (`RssAnon`: heap, stacks, relocated data). The rest is file-backed (`RssFile`, mostly the binary's code pages
/// the process has touched, shared with the page cache) and shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

/// The resident set size of process `pid` ([`Rss`]).
pub fn rss(pid: u32) -> anyhow::Result<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let kb: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    };
    Ok(Rss { total: field("VmRSS:")?, anon: field("RssAnon:")? })
}
