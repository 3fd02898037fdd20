//! The "instance agent": plays the bastion machine. It watches the instance's state in moto and runs the bastion
//! sshd only while the instance is `running`, after a boot delay, and kills it (with all its sessions) as soon as
//! the instance is anything else, as a real stop would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::proc::Proc;
use super::sshd::{self, SshdSpec};
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
    pub fn spawn(ec2: aws_sdk_ec2::Client, instance_id: String, spec: SshdSpec, boot_delay: Duration) -> Agent {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(run(ec2, instance_id, spec, boot_delay, shared.clone()));
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

async fn run(ec2: aws_sdk_ec2::Client, id: String, spec: SshdSpec, boot_delay: Duration, shared: Arc<Mutex<Shared>>) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut running_since: Option<Instant> = None;
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
                                let mut s = lock();
                                s.sshd = Some(p);
                                s.starts += 1;
                            }
                            Err(e) => lock().last_error = Some(format!("{e:#}")),
                        }
                    }
                }
            }
            Err(e) => lock().last_error = Some(format!("{e:#}")),
        }
        tokio::time::sleep(AGENT_POLL).await;
    }
}
