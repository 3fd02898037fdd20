//! One bastion's lifecycle: start on demand (single-flight), one shared SSH session, idle stop.
//!
//! A [`Bastion`] is a cheap handle to an actor task that owns the state. Demands ([`Bastion::acquire`],
//! [`Bastion::up`]) that arrive while the bastion is not ready share one start attempt, so N concurrent `ssh` runs cause
//! at most one StartInstances. Each forwarded connection holds a [`Lease`]; when no lease has existed for
//! `idle_timeout`, the actor calls StopInstances. It never stops while a lease is held or a demand is waiting.

mod actor;
pub mod lease;
mod start;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{BastionConfig, InstanceRef};
use crate::control::{BastionStatus, ErrorReply};
use crate::ec2::Ec2Api;
use crate::error::Error;
use crate::progress::Progress;
use crate::tunnel::{Dialer, Session};
pub use lease::{LeaseSpec, Leases, WallClock};

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
    /// This daemon's lease on the (possibly shared) instance.
    pub lease: LeaseSpec,
}

impl BastionSpec {
    /// The spec of the `[[bastion]]` table `b`, leased as `holder` (see [`lease::local_holder`]).
    pub fn from_config(b: &BastionConfig, holder: String) -> Self {
        BastionSpec {
            name: b.name(),
            instance: b.instance_ref(),
            port: b.port,
            address: b.address,
            idle_timeout: b.idle_timeout,
            start_timeout: b.start_timeout,
            watch_interval: b.watch_interval,
            adopt: b.adopt,
            lease: LeaseSpec { holder, ttl: b.lease_ttl, refresh: b.lease_refresh(), clock: WallClock::default() },
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

    /// Opens a direct-tcpip channel to `host:port` (as the bastion sees it) on the shared session: the one step of
    /// a connection that needs SSH once the bastion is ready.
    pub async fn open(&self, host: &str, port: u16) -> Result<crate::tunnel::Channel, crate::ssh::SshError> {
        self.ready.session.open(host, port).await
    }

    /// True once the shared session is gone (its channels with it).
    pub fn session_closed(&self) -> bool {
        self.ready.session.is_closed()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counter.send_modify(|c| *c = c.saturating_sub(1));
    }
}

fn timed_out(operation: &str) -> ErrorReply {
    ErrorReply {
        kind: "timeout".into(),
        message: format!("EC2 {operation} did not answer within {}s", STATUS_TIMEOUT.as_secs()),
        hint: Some("check network access to the EC2 endpoint".into()),
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
    leases: Arc<Leases>,
    tx: mpsc::Sender<Cmd>,
    progress: Progress,
    ec2: Arc<dyn Ec2Api>,
    /// Closed when the actor's task has ended (after its shutdown work: the lease tag deleted).
    ended: watch::Receiver<()>,
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
        let leases = Arc::new(Leases::new(ec2.clone(), spec.lease.clone(), spec.name.clone()));
        let actor = actor::Actor::new(spec.clone(), ec2.clone(), dialer, progress.clone(), leases.clone(), rx, shutdown);
        let (ended_tx, ended) = watch::channel(());
        tokio::spawn(async move {
            actor.run().await;
            drop(ended_tx);
        });
        Bastion { spec, leases, tx, progress, ec2, ended }
    }

    /// Waits until the actor has ended, shutdown work included (once `shutdown` is cancelled it deletes this
    /// daemon's lease tag, bounded by a few seconds). The daemon awaits this before it exits, so that a daemon with
    /// no open connection does not leave its lease behind for `lease_ttl`.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        while ended.changed().await.is_ok() {}
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

    /// This bastion's leases on the instance.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// Local facts plus a live DescribeInstances and DescribeTags (each bounded by [`STATUS_TIMEOUT`]) for the EC2
    /// state and the leases.
    pub async fn status(&self) -> BastionStatus {
        let mut st = match self.ask(Cmd::Status).await {
            Ok(st) => st,
            Err(e) => BastionStatus {
                name: self.spec.name.clone(),
                error: Some(e.to_reply()),
                pid: Some(std::process::id()),
                ..Default::default()
            },
        };
        st.holder = Some(self.leases.holder().to_string());
        // A Name tag is looked up afresh: it may have moved to a rebuilt bastion, or be on several live instances.
        let id = match &self.spec.instance {
            InstanceRef::Id(id) => Ok(id.clone()),
            InstanceRef::NameTag(_) => {
                match tokio::time::timeout(STATUS_TIMEOUT, crate::ec2::resolve(&*self.ec2, &self.spec.instance)).await {
                    Ok(res) => res.map_err(|e| Error::from(e).to_reply()),
                    Err(_) => Err(timed_out("DescribeInstances")),
                }
            }
        };
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                st.error.get_or_insert(e);
                return st;
            }
        };
        st.instance_id = Some(id.clone());
        match tokio::time::timeout(STATUS_TIMEOUT, self.ec2.describe(&id)).await {
            Ok(Ok(info)) => st.state = Some(info.state.to_string()),
            Ok(Err(e)) => st.error = Some(Error::from(e).to_reply()),
            Err(_) => st.error = Some(timed_out("DescribeInstances")),
        }
        match tokio::time::timeout(STATUS_TIMEOUT, self.leases.status(&id)).await {
            Ok((leases, err)) => (st.leases, st.lease_error) = (leases, err),
            Err(_) => st.lease_error = Some(timed_out("DescribeTags")),
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
