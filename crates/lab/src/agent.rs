//! The "instance agent": plays the bastion machine. It watches the instance's state in moto and runs the bastion
//! sshd only while the instance is `running`, after a boot delay, and kills it (with all its sessions) as soon as
//! the instance is anything else, as a real stop would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::proc::Proc;
use super::sshd::{self, SshdSpec};
use super::watchdog::WatchdogFiles;
use super::world;

/// How often the agent asks moto for the instance state.
pub const AGENT_POLL: Duration = Duration::from_millis(100);

/// What the agent has seen and done, shared with the [`Agent`] handle.
#[derive(Debug, Default)]
struct Shared {
    sshd: Option<Proc>,
    starts: u32,
    last_state: String,
    last_error: Option<String>,
    /// Times the watchdog script ran, and how many of those runs powered the instance off.
    watchdog_runs: u32,
    poweroffs: u32,
}

/// Handle of the agent task; dropping it stops the task and kills the bastion sshd.
#[derive(Debug)]
pub struct Agent {
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Agent {
    /// Starts watching `instance_id`; the bastion sshd described by `spec` (files already written) is run while the
    /// instance has been `running` for `boot_delay`.
    ///
    /// With `watchdog`, it also runs the bastion's idle watchdog script every `interval` while sshd runs, and turns
    /// its power-off into a StopInstances.
    pub fn spawn(
        ec2: aws_sdk_ec2::Client,
        instance_id: String,
        spec: SshdSpec,
        boot_delay: Duration,
        watchdog: Option<WatchdogFiles>,
    ) -> Agent {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(run(ec2, instance_id, spec, boot_delay, watchdog, shared.clone()));
        Agent { shared, task }
    }

    /// Whether the bastion sshd is running (spawned, banner seen, not exited).
    pub fn sshd_running(&self) -> bool {
        let mut s = self.lock();
        s.sshd.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// The bastion sshd listener's PID, while it runs.
    pub fn sshd_pid(&self) -> Option<u32> {
        let mut s = self.lock();
        let p = s.sshd.as_mut()?;
        if p.exited().is_some() { None } else { p.pid() }
    }

    /// Kills the bastion sshd and every session it forked (SIGKILL), as a crash would. The agent starts a new one at
    /// its next poll, since the instance is still `running`.
    pub fn kill_sshd(&self) {
        let old = self.lock().sshd.take();
        drop(old);
    }

    /// How many times the agent has started the bastion sshd.
    pub fn sshd_starts(&self) -> u32 {
        self.lock().starts
    }

    /// The instance state the agent saw last.
    pub fn last_state(&self) -> String {
        self.lock().last_state.clone()
    }

    /// How many times the watchdog script has powered the instance off (each became a StopInstances), and how many
    /// times it ran.
    pub fn watchdog_counts(&self) -> (u32, u32) {
        let s = self.lock();
        (s.poweroffs, s.watchdog_runs)
    }

    /// The agent's last error (a failed DescribeInstances or sshd start), if any.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
        self.lock().sshd.take();
    }
}

async fn run(
    ec2: aws_sdk_ec2::Client,
    id: String,
    spec: SshdSpec,
    boot_delay: Duration,
    watchdog: Option<WatchdogFiles>,
    shared: Arc<Mutex<Shared>>,
) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut running_since: Option<Instant> = None;
    let mut next_watchdog = Instant::now();
    loop {
        match world::instance_state(&ec2, &id).await {
            Ok(state) => {
                let running = state == "running";
                lock().last_state = state;
                if !running {
                    running_since = None;
                    let old = lock().sshd.take();
                    if let Some(p) = old {
                        p.kill().await;
                    }
                } else {
                    let since = *running_since.get_or_insert_with(Instant::now);
                    let need = lock().sshd.as_mut().is_none_or(|p| p.exited().is_some());
                    if need && since.elapsed() >= boot_delay {
                        match sshd::spawn(&spec).await {
                            Ok(p) => {
                                if let (Some(w), Some(pid)) = (&watchdog, p.pid())
                                    && let Err(e) = w.boot(pid)
                                {
                                    lock().last_error = Some(format!("watchdog: {e:#}"));
                                }
                                let mut s = lock();
                                s.sshd = Some(p);
                                s.starts += 1;
                            }
                            Err(e) => lock().last_error = Some(format!("{e:#}")),
                        }
                    } else if let Some(w) = &watchdog
                        && !need
                        && Instant::now() >= next_watchdog
                    {
                        next_watchdog = Instant::now() + w.opts.interval;
                        watchdog_tick(&ec2, &id, w, since.elapsed(), &shared).await;
                    }
                }
            }
            Err(e) => lock().last_error = Some(format!("{e:#}")),
        }
        tokio::time::sleep(AGENT_POLL).await;
    }
}

/// One run of the watchdog script; a power-off stops the instance in moto (the next poll then kills sshd).
async fn watchdog_tick(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    w: &WatchdogFiles,
    uptime: Duration,
    shared: &Arc<Mutex<Shared>>,
) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let res = w.run(uptime).await;
    lock().watchdog_runs += 1;
    match res {
        Ok(false) => {}
        Ok(true) => match ec2.stop_instances().instance_ids(id).send().await {
            Ok(_) => lock().poweroffs += 1,
            Err(e) => lock().last_error = Some(format!("watchdog power-off: StopInstances: {e}")),
        },
        Err(e) => lock().last_error = Some(format!("watchdog: {e:#}")),
    }
}
