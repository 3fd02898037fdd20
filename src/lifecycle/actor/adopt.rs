//! The idle watch and adoption: what the actor does with a DescribeInstances made at startup or, while it idles,
//! every `watch_interval` (jittered), so that a bastion started elsewhere is noticed and stopped when idle.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Actor, Done};
use crate::config::InstanceRef;
use crate::ec2::InstanceState;
use crate::error::Error;

impl Actor {
    pub(super) fn adopt(&mut self) {
        self.describe_in_background(Done::Adopted);
    }

    /// When the idle watch is due: only while nothing is known to be running here (no session, nothing in flight,
    /// no idle clock), so a bastion in use costs no extra EC2 calls.
    pub(super) fn watch_deadline(&self) -> Option<Instant> {
        let quiet = self.ready.is_none()
            && self.starting.is_none()
            && !self.stopping
            && !self.watching
            && self.waiters.is_empty()
            && self.idle_deadline().is_none();
        (quiet && !self.starter.spec.watch_interval.is_zero()).then_some(self.next_watch)
    }

    /// Re-reads the instance state (the idle watch); the answer comes back as [`Done::Watched`].
    pub(super) fn watch(&mut self) {
        self.watching = true;
        self.next_watch = Instant::now() + jittered(self.starter.spec.watch_interval);
        self.describe_in_background(Done::Watched);
    }

    /// DescribeInstances of the known instance (resolving the Name tag first if none is known yet).
    pub(super) fn describe_in_background(&self, wrap: fn(Result<(String, InstanceState), Error>) -> Done) {
        let starter = self.starter.clone();
        let known = self.instance_id.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let res = async {
                let id = match known {
                    Some(id) => id,
                    None => starter.resolve().await?,
                };
                let info = starter.ec2.describe(&id).await?;
                Ok((id, info.state))
            }
            .await;
            let _ = done.send(wrap(res)).await;
        });
    }

    /// What a startup or watch DescribeInstances found. A `running` or `pending` bastion this daemon did not
    /// start is adopted: the idle clock starts (and stops it after `idle_timeout` unless `adopt = false`). An
    /// instance that is gone (not found, terminated) is forgotten, so a Name tag is resolved again next time.
    pub(super) fn on_described(&mut self, res: Result<(String, InstanceState), Error>, at_startup: bool) {
        let (id, state) = match res {
            Ok(found) => found,
            Err(e) => {
                if crate::lifecycle::start::is_gone(&e) && matches!(self.starter.spec.instance, InstanceRef::NameTag(_)) {
                    self.instance_id = None;
                }
                return warn!(bastion = %self.name(), "cannot describe the bastion: {e}");
            }
        };
        if at_startup {
            info!(bastion = %self.name(), instance = %id, %state, "found the bastion");
        }
        if matches!(state, InstanceState::Terminated | InstanceState::ShuttingDown)
            && matches!(self.starter.spec.instance, InstanceRef::NameTag(_))
        {
            self.instance_id = None;
            return;
        }
        self.instance_id.get_or_insert(id.clone());
        let busy = self.ready.is_some() || self.starting.is_some() || self.stopping;
        match state {
            InstanceState::Running | InstanceState::Pending if !self.maybe_running && !busy => {
                self.maybe_running = true;
                self.idle_since = Instant::now();
                let spec = &self.starter.spec;
                match spec.adopt {
                    true => info!(
                        bastion = %spec.name, instance = %id, %state,
                        "the bastion is {state} though this daemon did not start it: adopting it, it is stopped after {} with no channel",
                        humantime::format_duration(spec.idle_timeout)
                    ),
                    false => info!(
                        bastion = %spec.name, instance = %id, %state,
                        "the bastion is {state}; adopt = false, so this daemon leaves it running"
                    ),
                }
            }
            InstanceState::Stopped | InstanceState::Stopping if self.maybe_running && !busy && self.waiters.is_empty() => {
                info!(bastion = %self.name(), instance = %id, %state, "the bastion was stopped elsewhere");
                self.maybe_running = false;
                self.started_by_us = false;
            }
            _ => {}
        }
    }
}

/// `interval` scaled by a random factor in [0.8, 1.2), so many daemons started together do not call EC2 together.
pub(super) fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    interval.mul_f64(0.8 + 0.4 * (r as f64 / u64::MAX as f64))
}
