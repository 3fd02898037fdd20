//! The task that owns one bastion's state: the session, the waiting demands, the start/stop in flight, the idle clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lease::{Leases, StopDecision};
use super::start::{Counters, Starter};
use super::{BastionSpec, Cmd, Lease, Ready, Shared};
use crate::control::BastionStatus;
use crate::ec2::{Ec2Api, InstanceState};
use crate::error::Error;
use crate::progress::Progress;
use crate::tunnel::Dialer;

enum Waiter {
    Acquire(oneshot::Sender<Shared<Lease>>),
    Up(oneshot::Sender<Shared<Ready>>),
}

/// Results of background work, fed back into the actor loop.
enum Done {
    Adopted(Result<(String, InstanceState), Error>),
    Started(Option<String>, Result<Ready, Error>),
    Stopped(Result<StopOutcome, Error>, Option<oneshot::Sender<Shared<String>>>),
}

/// How a stop attempt ended.
enum StopOutcome {
    /// StopInstances was called.
    Stopped,
    /// It was already `stopped`/`stopping` (found by `down` or a re-check): StopInstances was not called.
    Already(InstanceState),
    /// Other daemons hold valid leases: not stopped; look again after the duration.
    Blocked(Vec<String>, Duration),
}

/// Bound on deleting this daemon's lease when the daemon shuts down.
const RELEASE_ON_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Actor {
    starter: Starter,
    rx: mpsc::Receiver<Cmd>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    shutdown: CancellationToken,
    channels: Arc<watch::Sender<usize>>,
    channels_rx: watch::Receiver<usize>,
    instance_id: Option<String>,
    ready: Option<Ready>,
    starting: Option<JoinHandle<()>>,
    stopping: bool,
    waiters: Vec<Waiter>,
    /// We may have a running instance to stop (we started it, or found it running).
    maybe_running: bool,
    /// Start of the current idle period (no channels, nothing in flight).
    idle_since: Instant,
    /// This daemon's lease tag is held (written at a demand, refreshed, deleted at the idle stop).
    holding: bool,
    /// When the held lease is written anew.
    refresh_at: Option<Instant>,
    /// Set when an idle stop was blocked by other daemons' leases: when to look again.
    recheck_at: Option<Instant>,
}

impl Actor {
    pub fn new(
        spec: Arc<BastionSpec>,
        ec2: Arc<dyn Ec2Api>,
        dialer: Arc<dyn Dialer>,
        progress: Progress,
        leases: Arc<Leases>,
        rx: mpsc::Receiver<Cmd>,
        shutdown: CancellationToken,
    ) -> Actor {
        let (done_tx, done_rx) = mpsc::channel(16);
        let (channels, channels_rx) = watch::channel(0);
        let starter = Starter { spec, ec2, dialer, progress, counters: Arc::new(Counters::default()), leases };
        Actor {
            starter,
            rx,
            done_tx,
            done_rx,
            shutdown,
            channels: Arc::new(channels),
            channels_rx,
            instance_id: None,
            ready: None,
            starting: None,
            stopping: false,
            waiters: Vec::new(),
            maybe_running: false,
            idle_since: Instant::now(),
            holding: false,
            refresh_at: None,
            recheck_at: None,
        }
    }

    pub async fn run(mut self) {
        self.adopt();
        loop {
            let idle_deadline = self.idle_deadline();
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.on_cmd(cmd),
                Some(done) = self.done_rx.recv() => self.on_done(done),
                Ok(()) = self.channels_rx.changed() => {
                    if *self.channels_rx.borrow_and_update() == 0 {
                        self.idle_since = Instant::now();
                    }
                }
                _ = sleep_until_opt(idle_deadline) => self.idle_stop(),
                _ = sleep_until_opt(self.refresh_at) => self.refresh_lease(),
            }
        }
        if let Some(h) = self.starting.take() {
            h.abort();
        }
        if let (true, Some(id)) = (self.holding, &self.instance_id) {
            let release = self.starter.leases.release(id);
            if tokio::time::timeout(RELEASE_ON_SHUTDOWN_TIMEOUT, release).await.is_err() {
                warn!(bastion = %self.name(), "could not delete the lease tag while shutting down; it expires by itself");
            }
        }
        self.fail_waiters(Arc::new(Error::Aborted("the daemon is shutting down".into())));
    }

    fn name(&self) -> &str {
        &self.starter.spec.name
    }

    /// When the idle stop is due, if the clock is running at all.
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.maybe_running
            && *self.channels.borrow() == 0
            && self.starting.is_none()
            && !self.stopping
            && self.waiters.is_empty();
        idle.then(|| self.recheck_at.unwrap_or(self.idle_since + self.starter.spec.idle_timeout))
    }

    /// Writes the held lease anew, in the background.
    fn refresh_lease(&mut self) {
        self.refresh_at = Some(Instant::now() + self.starter.spec.lease.refresh);
        let Some(id) = self.instance_id.clone() else { return };
        let leases = self.starter.leases.clone();
        tokio::spawn(async move {
            leases.write(&id, None).await;
        });
    }

    fn adopt(&mut self) {
        let starter = self.starter.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let res = async {
                let id = starter.resolve().await?;
                let info = starter.ec2.describe(&id).await?;
                Ok((id, info.state))
            }
            .await;
            let _ = done.send(Done::Adopted(res)).await;
        });
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Acquire(reply) => match self.live_ready() {
                Some(ready) => {
                    let _ = reply.send(Ok(Lease::new(ready, self.channels.clone())));
                }
                None => self.enqueue(Waiter::Acquire(reply)),
            },
            Cmd::Up(reply) => match self.live_ready() {
                Some(ready) => {
                    self.idle_since = Instant::now();
                    let _ = reply.send(Ok(ready));
                }
                None => self.enqueue(Waiter::Up(reply)),
            },
            Cmd::Down { force, reply } => self.down(force, reply),
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    /// The current session, unless it has died (then it is dropped so the next demand dials anew).
    fn live_ready(&mut self) -> Option<Ready> {
        if self.ready.as_ref().is_some_and(|r| r.session.is_closed()) {
            info!(bastion = %self.name(), "SSH session to the bastion is closed; a new one will be made");
            self.ready = None;
        }
        self.ready.clone()
    }

    fn enqueue(&mut self, w: Waiter) {
        self.waiters.push(w);
        if self.starting.is_none() && !self.stopping {
            self.begin_start();
        }
    }

    fn begin_start(&mut self) {
        let starter = self.starter.clone();
        let known = self.instance_id.clone();
        let done = self.done_tx.clone();
        self.maybe_running = true;
        self.recheck_at = None;
        self.holding = true;
        self.refresh_at = Some(Instant::now() + self.starter.spec.lease.refresh);
        self.starting = Some(tokio::spawn(async move {
            let id = match known {
                Some(id) => Ok(id),
                None => starter.resolve().await,
            };
            let (id, res) = match id {
                Ok(id) => {
                    // The lease goes up before the start or the connect, so a daemon deciding to stop sees it.
                    starter.leases.write(&id, Some(&starter.progress)).await;
                    (Some(id.clone()), starter.bring_up(&id).await)
                }
                Err(e) => (None, Err(e)),
            };
            let _ = done.send(Done::Started(id, res)).await;
        }));
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Adopted(Ok((id, state))) => {
                info!(bastion = %self.name(), instance = %id, %state, "found the bastion");
                self.instance_id.get_or_insert(id);
                if matches!(state, InstanceState::Running | InstanceState::Pending) && !self.maybe_running {
                    self.maybe_running = true;
                    self.idle_since = Instant::now();
                }
            }
            Done::Adopted(Err(e)) => warn!(bastion = %self.name(), "cannot describe the bastion yet: {e}"),
            Done::Started(id, res) => {
                self.starting = None;
                if id.is_some() {
                    self.instance_id = id;
                }
                self.idle_since = Instant::now();
                match res {
                    Ok(ready) => {
                        self.ready = Some(ready.clone());
                        for w in std::mem::take(&mut self.waiters) {
                            match w {
                                Waiter::Acquire(tx) => {
                                    let _ = tx.send(Ok(Lease::new(ready.clone(), self.channels.clone())));
                                }
                                Waiter::Up(tx) => {
                                    let _ = tx.send(Ok(ready.clone()));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        warn!(bastion = %self.name(), "start failed: {e}");
                        self.fail_waiters(Arc::new(e));
                    }
                }
            }
            Done::Stopped(res, reply) => {
                self.stopping = false;
                self.idle_since = Instant::now();
                self.recheck_at = None;
                let res = res.map_err(Arc::new);
                match &res {
                    Ok(StopOutcome::Blocked(holders, again)) => {
                        info!(
                            bastion = %self.name(),
                            "not stopping: in use by {} (their leases are valid); looking again in {}",
                            holders.join(", "),
                            humantime::format_duration(Duration::from_secs(again.as_secs().max(1)))
                        );
                        self.recheck_at = Some(Instant::now() + *again);
                    }
                    Ok(_) => self.maybe_running = false,
                    Err(e) => warn!(bastion = %self.name(), "the stop failed: {e}"),
                }
                if let Some(reply) = reply {
                    let id = self.instance_id.clone().unwrap_or_default();
                    let name = self.name().to_string();
                    let _ = reply.send(res.and_then(|outcome| match outcome {
                        StopOutcome::Already(state) => Ok(format!("bastion {name} ({id}) is already {state}")),
                        StopOutcome::Stopped => Ok(format!("stopping bastion {name} ({id})")),
                        StopOutcome::Blocked(holders, _) => Err(Arc::new(Error::InUse { bastion: name, holders })),
                    }));
                }
                if !self.waiters.is_empty() {
                    self.begin_start();
                }
            }
        }
    }

    fn fail_waiters(&mut self, e: Arc<Error>) {
        for w in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::Acquire(tx) => drop(tx.send(Err(e.clone()))),
                Waiter::Up(tx) => drop(tx.send(Err(e.clone()))),
            }
        }
    }

    fn idle_stop(&mut self) {
        info!(
            bastion = %self.name(),
            "no open channel for {}: stopping the bastion",
            humantime::format_duration(self.starter.spec.idle_timeout)
        );
        self.begin_stop(None, false);
    }

    fn down(&mut self, force: bool, reply: oneshot::Sender<Shared<String>>) {
        let open = *self.channels.borrow();
        if open > 0 && !force {
            let _ = reply.send(Err(Arc::new(Error::ChannelsOpen { bastion: self.name().into(), count: open })));
            return;
        }
        if let Some(h) = self.starting.take() {
            h.abort();
            self.fail_waiters(Arc::new(Error::Aborted(format!("bastion {} was stopped by `bastionctl down`", self.name()))));
        }
        info!(bastion = %self.name(), channels = open, force, "stopping the bastion on request");
        self.begin_stop(Some(reply), force);
    }

    /// Closes the session, gives up this daemon's lease and stops the instance in the background, unless (without
    /// `force`) other daemons hold valid leases, read right before the stop. For `down` (a `reply` is waiting) and
    /// for a re-check after a blocked stop, the instance is described first: one already `stopped` or `stopping` is
    /// not stopped again.
    fn begin_stop(&mut self, reply: Option<oneshot::Sender<Shared<String>>>, force: bool) {
        if let Some(ready) = self.ready.take() {
            ready.session.close();
        }
        self.stopping = true;
        let release = std::mem::take(&mut self.holding);
        self.refresh_at = None;
        let starter = self.starter.clone();
        let known = self.instance_id.clone();
        let done = self.done_tx.clone();
        let check_first = reply.is_some() || self.recheck_at.is_some();
        tokio::spawn(async move {
            let res = async {
                let id = match known {
                    Some(id) => id,
                    None => starter.resolve().await?,
                };
                let leases = &starter.leases;
                if check_first {
                    let state = starter.ec2.describe(&id).await?.state;
                    if matches!(state, InstanceState::Stopped | InstanceState::Stopping) {
                        if release {
                            leases.release(&id).await;
                        }
                        return Ok(StopOutcome::Already(state));
                    }
                }
                if !force && let StopDecision::Blocked { holders, recheck_in } = leases.decide_stop(&id).await? {
                    if release {
                        leases.release(&id).await;
                    }
                    return Ok(StopOutcome::Blocked(holders, recheck_in));
                }
                starter.progress.say(format!("stopping {id}"));
                starter.stop(&id).await?;
                if release {
                    leases.release(&id).await;
                }
                Ok(StopOutcome::Stopped)
            }
            .await;
            let _ = done.send(Done::Stopped(res, reply)).await;
        });
    }

    fn status(&self) -> BastionStatus {
        let c = &self.starter.counters;
        BastionStatus {
            name: self.name().into(),
            instance_id: self.instance_id.clone(),
            state: None,
            address: self.ready.as_ref().map(|r| r.addr.to_string()),
            session: self.ready.as_ref().is_some_and(|r| !r.session.is_closed()),
            channels: *self.channels.borrow(),
            idle_stop_in_secs: self.idle_deadline().map(|d| d.saturating_duration_since(Instant::now()).as_secs()),
            start_calls: c.start_calls.load(Ordering::Relaxed),
            stop_calls: c.stop_calls.load(Ordering::Relaxed),
            pid: Some(std::process::id()),
            ..Default::default()
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
