//! One bastion's lifecycle: start on demand (single-flight), one shared SSH session, idle stop.
//!
//! A [`Bastion`] is a cheap handle to an actor task that owns the state. Demands ([`Bastion::acquire`],
//! [`Bastion::up`]) that arrive while the bastion is not ready share one start attempt, so N concurrent `ssh` runs cause
//! at most one StartInstances. Each forwarded connection holds a [`Lease`]; when no lease has existed for
//! `idle_timeout`, the actor calls StopInstances. It never stops while a lease is held or a demand is waiting.

mod actor;
mod start;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{BastionConfig, InstanceRef};
use crate::control::BastionStatus;
use crate::ec2::Ec2Api;
use crate::error::Error;
use crate::progress::Progress;
use crate::tunnel::{Dialer, Session};

/// How often EC2 is polled while waiting for a state change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on the DescribeInstances call made for `status`.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// What the lifecycle needs to know about one bastion (from its `[[bastion]]` table).
#[derive(Debug, Clone)]
pub struct BastionSpec {
    /// Display name.
    pub name: String,
    /// Which EC2 instance.
    pub instance: InstanceRef,
    /// The bastion's SSH port.
    pub port: u16,
    /// Fixed address instead of the Elastic IP / public IP from EC2.
    pub address: Option<IpAddr>,
    /// Stop after this long with no open channel.
    pub idle_timeout: Duration,
    /// Bound on demand-to-ready.
    pub start_timeout: Duration,
    /// While idle, re-read the instance state this often (with jitter); zero = never.
    pub watch_interval: Duration,
    /// Stop a bastion this daemon did not start (found running) once idle for `idle_timeout`.
    pub adopt: bool,
}

impl From<&BastionConfig> for BastionSpec {
    fn from(b: &BastionConfig) -> Self {
        BastionSpec {
            name: b.name(),
            instance: b.instance_ref(),
            port: b.port,
            address: b.address,
            idle_timeout: b.idle_timeout,
            start_timeout: b.start_timeout,
            watch_interval: b.watch_interval,
            adopt: b.adopt,
        }
    }
}

/// A ready bastion: its session and where it is.
#[derive(Clone)]
pub struct Ready {
    /// The shared SSH session.
    pub session: Arc<dyn Session>,
    /// Instance id (resolved from the Name tag if needed).
    pub instance_id: String,
    /// Address of its sshd.
    pub addr: SocketAddr,
}

/// A bastion that is `running` with its address known; no SSH session is implied (see [`Bastion::start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    /// Instance id.
    pub instance_id: String,
    /// Address of its sshd.
    pub addr: SocketAddr,
}

/// Proof that a forwarded channel is (about to be) open; the bastion is not stopped while one exists.
pub struct Lease {
    /// The session to open the channel on.
    pub ready: Ready,
    counter: Arc<watch::Sender<usize>>,
}

impl Lease {
    fn new(ready: Ready, counter: Arc<watch::Sender<usize>>) -> Lease {
        counter.send_modify(|c| *c += 1);
        Lease { ready, counter }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counter.send_modify(|c| *c = c.saturating_sub(1));
    }
}

/// A demand's result, shared between all demands served by one start attempt.
pub type Shared<T> = Result<T, Arc<Error>>;

pub(crate) enum Cmd {
    Acquire(oneshot::Sender<Shared<Lease>>),
    Up(oneshot::Sender<Shared<Ready>>),
    Start(oneshot::Sender<Shared<Reached>>),
    Down { force: bool, reply: oneshot::Sender<Shared<String>> },
    Status(oneshot::Sender<BastionStatus>),
    InstanceId(oneshot::Sender<Shared<String>>),
}

/// Handle to one bastion's actor. Clone freely; the actor stops when `shutdown` is cancelled.
#[derive(Clone)]
pub struct Bastion {
    spec: Arc<BastionSpec>,
    tx: mpsc::Sender<Cmd>,
    progress: Progress,
    ec2: Arc<dyn Ec2Api>,
}

impl Bastion {
    /// Spawns the actor. It first describes the instance and, if it is already running, adopts it: the idle clock
    /// starts at once, so a bastion left running by a previous daemon is still stopped.
    pub fn spawn(
        spec: BastionSpec,
        ec2: Arc<dyn Ec2Api>,
        dialer: Arc<dyn Dialer>,
        shutdown: CancellationToken,
    ) -> Bastion {
        let spec = Arc::new(spec);
        let progress = Progress::default();
        let (tx, rx) = mpsc::channel(256);
        let actor = actor::Actor::new(spec.clone(), ec2.clone(), dialer, progress.clone(), rx, shutdown);
        tokio::spawn(actor.run());
        Bastion { spec, tx, progress, ec2 }
    }

    /// The bastion's configuration.
    pub fn spec(&self) -> &BastionSpec {
        &self.spec
    }

    /// Progress messages of start attempts; subscribe before [`Bastion::acquire`] to see them all.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Makes the bastion ready (starting it if needed) and returns a lease for one forwarded channel.
    ///
    /// Errors: whatever the start attempt failed with (EC2, SSH, `start_timeout`), or [`Error::Aborted`].
    pub async fn acquire(&self) -> Shared<Lease> {
        self.ask(Cmd::Acquire).await?
    }

    /// The bastion's instance id: the one the actor knows, else resolved from the Name tag (and remembered).
    pub async fn instance_id(&self) -> Shared<String> {
        self.ask(Cmd::InstanceId).await?
    }

    /// Makes the bastion ready without holding a lease; the idle clock starts when it is ready.
    pub async fn up(&self) -> Shared<Ready> {
        self.ask(Cmd::Up).await?
    }

    /// Starts the bastion if needed and waits until it is `running` with its address known, without an SSH
    /// session: for `bastionctl trust`, which reads a host key nothing vouches for yet. The bastion is then this
    /// daemon's like any other: its idle clock runs and stops it after `idle_timeout` with no channel.
    pub async fn start(&self) -> Shared<Reached> {
        self.ask(Cmd::Start).await?
    }

    /// Stops the bastion now. Without `force`, refuses with [`Error::ChannelsOpen`] while channels are open; with it,
    /// the session is closed first. Returns a summary sentence.
    pub async fn down(&self, force: bool) -> Shared<String> {
        self.ask(|reply| Cmd::Down { force, reply }).await?
    }

    /// Local facts plus a live DescribeInstances (bounded by [`STATUS_TIMEOUT`]) for the EC2 state.
    pub async fn status(&self) -> BastionStatus {
        let mut st = match self.ask(Cmd::Status).await {
            Ok(st) => st,
            Err(e) => BastionStatus {
                name: self.spec.name.clone(),
                state: format!("unknown ({e})"),
                pid: Some(std::process::id()),
                ..Default::default()
            },
        };
        // A Name tag is looked up afresh: it may have moved to a rebuilt bastion, or be on several live instances.
        let id = match &self.spec.instance {
            InstanceRef::Id(id) => Ok(id.clone()),
            InstanceRef::NameTag(_) => {
                match tokio::time::timeout(STATUS_TIMEOUT, crate::ec2::resolve(&*self.ec2, &self.spec.instance)).await {
                    Ok(res) => res.map_err(|e| e.to_string()),
                    Err(_) => Err("DescribeInstances timed out".into()),
                }
            }
        };
        match id {
            Ok(id) => {
                st.instance_id = Some(id.clone());
                st.state = match tokio::time::timeout(STATUS_TIMEOUT, self.ec2.describe(&id)).await {
                    Ok(Ok(info)) => info.state.to_string(),
                    Ok(Err(e)) => format!("unknown ({e})"),
                    Err(_) => "unknown (DescribeInstances timed out)".into(),
                };
            }
            Err(e) if st.state.is_empty() => st.state = format!("unknown ({e})"),
            Err(_) => {}
        }
        st
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Arc<Error>> {
        let (reply, rx) = oneshot::channel();
        let gone = || Arc::new(Error::Aborted("the daemon is shutting down".into()));
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}
