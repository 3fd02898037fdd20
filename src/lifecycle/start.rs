//! One start attempt: drive the instance to `running` (waiting out `stopping` and `pending`), find its address, and
//! dial it. Bounded by `start_timeout` as a whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::{BastionSpec, POLL_INTERVAL, Ready};
use crate::config::InstanceRef;
use crate::ec2::{Ec2Api, Ec2Error, InstanceInfo, InstanceState};
use crate::error::Error;
use crate::progress::Progress;
use crate::tunnel::Dialer;

/// True when the error says the instance no longer exists as a bastion (not found, or terminated).
pub(super) fn is_gone(e: &Error) -> bool {
    matches!(e, Error::Terminated { .. } | Error::Ec2(Ec2Error::NotFound { .. }))
}

/// Calls this daemon made, for `status` and for tests that count StartInstances.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub start_calls: AtomicU64,
    pub stop_calls: AtomicU64,
}

/// Everything a start attempt needs; cheap to clone into a task.
#[derive(Clone)]
pub(super) struct Starter {
    pub spec: Arc<BastionSpec>,
    pub ec2: Arc<dyn Ec2Api>,
    pub dialer: Arc<dyn Dialer>,
    pub progress: Progress,
    pub counters: Arc<Counters>,
    pub leases: Arc<super::lease::Leases>,
}

impl Starter {
    /// Resolves the instance id (from the Name tag if configured so).
    pub async fn resolve(&self) -> Result<String, Error> {
        Ok(crate::ec2::resolve(&*self.ec2, &self.spec.instance).await?)
    }

    /// Brings up the instance `known` (the id resolved earlier) or, without one, the one the config names. When the
    /// bastion is configured by `name_tag` and the known instance is gone (not found, or terminated: the bastion was
    /// rebuilt), the tag is resolved again and the instance it names now is brought up. Returns the id used.
    pub async fn bring_up_any(&self, known: Option<String>) -> (Option<String>, Result<Ready, Error>) {
        self.on_instance(known, |id| async move { self.bring_up(&id).await }).await
    }

    /// Like [`Starter::bring_up_any`], but only up to `running` with its address known: no SSH session (for
    /// `bastionctl trust`, which must see a host key that nothing vouches for yet).
    pub async fn reach_any(&self, known: Option<String>) -> (Option<String>, Result<SocketAddr, Error>) {
        self.on_instance(known, |id| async move {
            let deadline = Instant::now() + self.spec.start_timeout;
            let running = self.wait_running(&id, deadline).await?;
            let addr = self.address(&running).await?;
            self.progress.conclude(format!("bastion {} ({id}) is running at {addr}", self.spec.name));
            Ok(addr)
        })
        .await
    }

    /// Runs `f` on the instance (see [`Starter::bring_up_any`] for how it is found, and found again).
    async fn on_instance<T, F, Fut>(&self, known: Option<String>, f: F) -> (Option<String>, Result<T, Error>)
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let id = match known.clone() {
            Some(id) => id,
            None => match self.resolve().await {
                Ok(id) => id,
                Err(e) => return (None, Err(e)),
            },
        };
        // The lease goes up before the start or the connect, so a daemon deciding to stop sees it.
        self.leases.write(&id, Some(&self.progress)).await;
        let res = f(id.clone()).await;
        let by_tag = matches!(self.spec.instance, InstanceRef::NameTag(_));
        match res {
            Err(e) if by_tag && known.is_some() && is_gone(&e) => match self.resolve().await {
                Ok(new) if new != id => {
                    self.progress.say(format!("{id} is gone ({e}); {} now names {new}", self.spec.instance));
                    self.leases.write(&new, Some(&self.progress)).await;
                    let res = f(new.clone()).await;
                    (Some(new), res)
                }
                Ok(_) => (Some(id), Err(e)),
                Err(again) => (None, Err(again)),
            },
            res => (Some(id), res),
        }
    }

    /// Brings the bastion from whatever state to a dialed session.
    pub async fn bring_up(&self, id: &str) -> Result<Ready, Error> {
        let began = Instant::now();
        let deadline = began + self.spec.start_timeout;
        let running = self.wait_running(id, deadline).await?;
        let addr = self.address(&running).await?;
        let session = self.dialer.dial(addr, id, deadline, &self.progress).await.map_err(|e| match e {
            crate::ssh::SshError::Timeout { .. } => Error::StartTimeout {
                bastion: self.spec.name.clone(),
                instance_id: id.into(),
                state: format!("running, but sshd at {addr} did not answer"),
                after: self.spec.start_timeout,
            },
            other => other.into(),
        })?;
        let took = began.elapsed().as_secs_f64();
        self.progress.conclude(format!("bastion {} ready at {addr} in {took:.1} s", self.spec.name));
        Ok(Ready { session, instance_id: id.into(), addr })
    }

    /// Polls DescribeInstances until `running`: starts it from `stopped` (once), waits out `stopping` and `pending`.
    /// Returns the `running` description (its public IP is the address fallback).
    async fn wait_running(&self, id: &str, deadline: Instant) -> Result<InstanceInfo, Error> {
        let mut started = false;
        let mut last: Option<InstanceState> = None;
        let timeout = |state: Option<InstanceState>| Error::StartTimeout {
            bastion: self.spec.name.clone(),
            instance_id: id.into(),
            state: state.map_or_else(|| "unknown (DescribeInstances did not answer)".into(), |s| s.to_string()),
            after: self.spec.start_timeout,
        };
        loop {
            // A slow DescribeInstances (retries with backoff) must not stretch the start beyond its deadline.
            let info = tokio::time::timeout_at(deadline, self.ec2.describe(id)).await.map_err(|_| timeout(last))??;
            let state = info.state;
            match state {
                InstanceState::Running => return Ok(info),
                InstanceState::ShuttingDown | InstanceState::Terminated => {
                    return Err(Error::Terminated {
                        bastion: self.spec.name.clone(),
                        instance_id: id.into(),
                        state: state.to_string(),
                    });
                }
                InstanceState::Stopped if !started => {
                    match tokio::time::timeout_at(deadline, self.ec2.start(id)).await.map_err(|_| timeout(last))? {
                        Ok(()) => {
                            self.counters.start_calls.fetch_add(1, Ordering::Relaxed);
                            self.progress.say(format!("starting {id} (stopped → pending)"));
                            started = true;
                        }
                        // It changed state between Describe and Start (e.g. someone else started it): poll again.
                        Err(Ec2Error::Api { code, .. }) if code == "IncorrectInstanceState" => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                InstanceState::Stopping if last != Some(state) => {
                    self.progress.say(format!("{id} is stopping; it will be started again once stopped"));
                }
                InstanceState::Pending if last != Some(state) && !started => {
                    self.progress.say(format!("{id} is pending; waiting for running"));
                }
                _ => {}
            }
            last = Some(state);
            // Wait up to the deadline itself, then give up naming the last state seen.
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout(last));
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// The sshd address: the configured override, else the Elastic IP (DescribeAddresses is the source of truth),
    /// else the public IP of the `running` DescribeInstances answer.
    async fn address(&self, running: &InstanceInfo) -> Result<SocketAddr, Error> {
        match crate::ec2::bastion_ip(self.ec2.as_ref(), self.spec.address, running).await? {
            Some(ip) => Ok(SocketAddr::new(ip, self.spec.port)),
            None => Err(Error::NoAddress { bastion: self.spec.name.clone(), instance_id: running.instance_id.clone() }),
        }
    }

    /// StopInstances; a bastion already stopping, stopped or gone is fine. EC2 also refuses to stop an instance that
    /// is still `pending` (`IncorrectInstanceState`): that is an error, so the caller keeps the bastion on its books
    /// and tries again later instead of leaving it running.
    pub async fn stop(&self, id: &str) -> Result<(), Error> {
        match self.ec2.stop(id).await {
            Ok(()) => {
                self.counters.stop_calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Ec2Error::Api { operation, code, message }) if code == "IncorrectInstanceState" => {
                match self.ec2.describe(id).await {
                    Ok(info) if matches!(info.state, InstanceState::Pending | InstanceState::Running) => {
                        Err(Ec2Error::Api { operation, code, message }.into())
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
