//! The routes the benchmark compares, each a Host of the lab's ssh_config reaching the same private host with
//! the same inner ssh options, and how one run of `ssh HOST CMD` is timed and accounted.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use super::cpu::CpuGroup;
use crate::Lab;

/// Longest one benchmark run may take (1 GiB through the slowest route on a loaded 2-core machine).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// One way to reach the private host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `ssh` straight to the private host: no bastion (the baseline of the inner ssh's own cost).
    Direct,
    /// `ssh -J bastion`: OpenSSH's `ssh -W` in the middle.
    Jump,
    /// `ssh -J` through a ControlMaster held on the bastion (the master forwards; no handshake per connect).
    JumpMaster,
    /// bastionctl as `ProxyCommand bastionctl proxy %h %p`.
    Proxy,
    /// bastionctl with `ProxyUseFdpass yes` (`bastionctl proxy --fdpass`).
    Fdpass,
}

/// Every route, in the order of the table.
pub const ALL: [Route; 5] = [Route::Direct, Route::Jump, Route::JumpMaster, Route::Proxy, Route::Fdpass];

impl Route {
    /// The ssh_config Host alias.
    pub fn host(self) -> &'static str {
        match self {
            Route::Direct => "private-direct",
            Route::Jump => "private-jump",
            Route::JumpMaster => "private-jump-cm",
            Route::Proxy => "private",
            Route::Fdpass => "private-fdpass",
        }
    }

    /// The row label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct, no bastion",
            Route::Jump => "`ssh -J`",
            Route::JumpMaster => "`ssh -J`, ControlMaster on the jump",
            Route::Proxy => "bastionctl ProxyCommand",
            Route::Fdpass => "bastionctl ProxyUseFdpass",
        }
    }

    /// Whether a long-lived helper (the daemon, the ControlMaster) forwards for this route.
    pub fn helper(self) -> Option<Helper> {
        match self {
            Route::Proxy | Route::Fdpass => Some(Helper::Daemon),
            Route::JumpMaster => Some(Helper::Master),
            Route::Direct | Route::Jump => None,
        }
    }
}

/// A long-lived process whose CPU delta is added to a route's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// The bastionctl daemon.
    Daemon,
    /// OpenSSH's ControlMaster for `bastion-cm`.
    Master,
}

/// What one run moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// `ssh HOST true`.
    Connect,
    /// This many bytes from the client to `wc -c` on the private host.
    Up(u64),
    /// This many bytes from `head -c` on the private host to `wc -c` on the client.
    Down(u64),
}

/// The measurements of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// Wall time from spawning ssh to its exit.
    pub wall: Duration,
    /// CPU of the route's client side (its cgroup), plus its helper's delta, if measured.
    pub cpu: Option<Duration>,
}

/// The CPU groups of one benchmark: one per route's client side, one per helper.
#[derive(Debug, Default)]
pub struct Groups {
    /// Per route, in [`ALL`] order.
    pub routes: Vec<Option<CpuGroup>>,
    /// The daemon's group.
    pub daemon: Option<CpuGroup>,
    /// The ControlMaster's group.
    pub master: Option<CpuGroup>,
}

impl Groups {
    /// Makes every group; `None` entries where cgroups are unavailable.
    pub fn create() -> Groups {
        Groups {
            routes: ALL.iter().map(|r| CpuGroup::create(r.host())).collect(),
            daemon: CpuGroup::create("daemon"),
            master: CpuGroup::create("master"),
        }
    }

    fn route(&self, r: Route) -> Option<&CpuGroup> {
        self.routes.get(ALL.iter().position(|&x| x == r)?)?.as_ref()
    }

    fn helper(&self, h: Helper) -> Option<&CpuGroup> {
        match h {
            Helper::Daemon => self.daemon.as_ref(),
            Helper::Master => self.master.as_ref(),
        }
    }

    /// Whether CPU is measured at all.
    pub fn available(&self) -> bool {
        self.routes.iter().all(Option::is_some)
    }
}

/// Runs `ssh -F <lab config> HOST <remote>` inside the route's group (when there is one), with the lab's environment.
fn ssh(lab: &Lab, route: Route, group: Option<&CpuGroup>, remote: &str) -> Command {
    let mut cmd = match group {
        Some(g) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(g.procs_file()).arg("ssh");
            c
        }
        None => Command::new("ssh"),
    };
    cmd.arg("-F").arg(&lab.files().ssh_config).arg(route.host()).arg(remote);
    lab.apply_env(&mut cmd);
    cmd.kill_on_drop(true);
    cmd
}

/// One run of `transfer` over `route`: wall time, and CPU when groups are available. The transferred byte count is
/// checked; a failed ssh is an error with its stderr.
pub async fn run(lab: &Lab, groups: &Groups, route: Route, transfer: Transfer) -> anyhow::Result<RunResult> {
    let group = groups.route(route);
    let helper = route.helper().and_then(|h| groups.helper(h));
    let before = (group.map(CpuGroup::usage).transpose()?, helper.map(CpuGroup::usage).transpose()?);
    let started = Instant::now();
    let (status, stderr, counted) = match transfer {
        Transfer::Connect => {
            let out = ssh(lab, route, group, "true").stdin(Stdio::null()).stdout(Stdio::null()).output();
            let out = tokio::time::timeout(RUN_TIMEOUT, out).await.context("ssh true timed out")??;
            (out.status, out.stderr, None)
        }
        Transfer::Up(n) => {
            let mut src = Command::new("head")
                .arg("-c")
                .arg(n.to_string())
                .arg("/dev/zero")
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin: Stdio = src.stdout.take().context("head's stdout")?.try_into()?;
            let out = ssh(lab, route, group, "wc -c").stdin(stdin).output();
            let out = tokio::time::timeout(RUN_TIMEOUT, out).await.context("upload timed out")??;
            let _ = src.wait().await;
            (out.status, out.stderr, Some((n, String::from_utf8_lossy(&out.stdout).into_owned())))
        }
        Transfer::Down(n) => {
            let mut child = ssh(lab, route, group, &format!("head -c {n} /dev/zero"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let piped: Stdio = child.stdout.take().context("ssh's stdout")?.try_into()?;
            let count = Command::new("wc").arg("-c").stdin(piped).stdout(Stdio::piped()).kill_on_drop(true).output();
            let (out, count) = tokio::time::timeout(RUN_TIMEOUT, async { tokio::join!(child.wait_with_output(), count) })
                .await
                .context("download timed out")?;
            let (out, count) = (out?, count?);
            (out.status, out.stderr, Some((n, String::from_utf8_lossy(&count.stdout).into_owned())))
        }
    };
    let wall = started.elapsed();
    if !status.success() {
        bail!("ssh {} over {:?} failed ({status}): {}", route.host(), transfer, String::from_utf8_lossy(&stderr).trim());
    }
    if let Some((want, got)) = counted
        && got.trim().parse::<u64>().ok() != Some(want)
    {
        bail!("{:?} over {}: expected {want} bytes, wc -c counted {:?}", transfer, route.host(), got.trim());
    }
    let cpu = match before {
        (Some(g0), h0) => {
            let g = group.expect("measured before").usage()? - g0;
            let h = match (helper, h0) {
                (Some(h), Some(h0)) => h.usage()? - h0,
                _ => Duration::ZERO,
            };
            Some(g + h)
        }
        (None, _) => None,
    };
    Ok(RunResult { wall, cpu })
}

/// Starts the ControlMaster for `bastion-cm` (the first `ssh -J` through it does) and returns its PID.
pub async fn start_master(lab: &Lab, groups: &Groups) -> anyhow::Result<u32> {
    run(lab, groups, Route::JumpMaster, Transfer::Connect).await.context("cannot start the ControlMaster")?;
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(&lab.files().ssh_config).args(["-O", "check", "bastion-cm"]);
    lab.apply_env(&mut cmd);
    let out = cmd.output().await?;
    let text = String::from_utf8_lossy(&out.stderr);
    let pid = text
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("ssh -O check printed no master pid: {text}"))?;
    if let Some(g) = &groups.master {
        g.add(pid)?;
    }
    Ok(pid)
}

/// Stops the ControlMaster through its own control socket (`ssh -O exit`).
pub async fn stop_master(lab: &Lab) {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(&lab.files().ssh_config).args(["-O", "exit", "bastion-cm"]);
    lab.apply_env(&mut cmd);
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().await;
}
