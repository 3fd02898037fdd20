//! The task that owns one bastion's state: the session, the waiting demands, the start/stop in flight, the idle clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lease::{Leases, StopDecision};
use super::start::{Counters, Starter};
use super::{BastionSpec, Cmd, Lease, Ready, Reached, Shared};
use crate::config::InstanceRef;
use crate::control::BastionStatus;
use crate::ec2::{Ec2Api, InstanceState};
use crate::error::Error;
use crate::progress::Progress;
use crate::tunnel::Dialer;

mod adopt;
use adopt::jittered;

enum Waiter {
    Acquire(oneshot::Sender<Shared<Lease>>),
    Up(oneshot::Sender<Shared<Ready>>),
    /// Wants the instance running, not a session (`bastionctl trust`).
    Start(oneshot::Sender<Shared<Reached>>),
}

/// Results of background work, fed back into the actor loop.
enum Done {
    Adopted(Result<(String, InstanceState), Error>),
    /// The idle watch's DescribeInstances (same shape as `Adopted`).
    Watched(Result<(String, InstanceState), Error>),
    Resolved(Result<String, Error>, oneshot::Sender<Shared<String>>),
    Started(Option<String>, Result<Ready, Error>),
    /// A start attempt for [`Waiter::Start`]s only: running, address known, no session dialed.
    Reached(Option<String>, Result<std::net::SocketAddr, Error>),
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
    /// This daemon called StartInstances for the instance now running (so `adopt = false` does not keep it up).
    started_by_us: bool,
    /// `start_calls` when the current start attempt began.
    start_calls_before: u64,
    /// When the idle watch next re-reads the instance state.
    next_watch: Instant,
    /// A watch DescribeInstances is in flight.
    watching: bool,
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
        let next_watch = Instant::now() + jittered(spec.watch_interval);
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
            started_by_us: false,
            start_calls_before: 0,
            next_watch,
            watching: false,
            holding: false,
            refresh_at: None,
            recheck_at: None,
        }
    }

    pub async fn run(mut self) {
        self.adopt();
        loop {
            let idle_deadline = self.idle_deadline();
            let watch_deadline = self.watch_deadline();
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
                _ = sleep_until_opt(watch_deadline) => self.watch(),
                _ = sleep_until_opt(self.refresh_at) => self.refresh_lease(),
            }
        }
        if let Some(h) = self.starting.take() {
            h.abort();
        }
        self.drain().await;
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

    /// After shutdown, open channels may still drain (the daemon gives them [`crate::daemon::DRAIN_GRACE`]): the
    /// lease stays up, and fresh, until the last one closes, so that another daemon sharing the bastion does not
    /// stop it under them.
    async fn drain(&mut self) {
        let open = *self.channels_rx.borrow();
        if open == 0 {
            return;
        }
        info!(bastion = %self.name(), open, "shutting down: the lease stays until the open channels close");
        let until = Instant::now() + crate::daemon::DRAIN_GRACE;
        let mut channels = self.channels_rx.clone();
        loop {
            tokio::select! {
                _ = channels.wait_for(|n| *n == 0) => return,
                _ = sleep_until_opt(self.refresh_at) => self.refresh_lease(),
                _ = tokio::time::sleep_until(until) => {
                    warn!(bastion = %self.name(), "channels open past the drain grace period; releasing the lease");
                    return;
                }
            }
        }
    }

    /// When the idle stop is due, if the clock is running at all. A bastion this daemon did not start runs no
    /// clock when the config says `adopt = false`.
    fn idle_deadline(&self) -> Option<Instant> {
        let ours = self.started_by_us || self.starter.spec.adopt;
        let idle = self.maybe_running
            && ours
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
            Cmd::Start(reply) => match self.live_ready() {
                Some(ready) => {
                    self.idle_since = Instant::now();
                    let _ = reply.send(Ok(Reached { instance_id: ready.instance_id, addr: ready.addr }));
                }
                None => self.enqueue(Waiter::Start(reply)),
            },
            Cmd::Down { force, reply } => self.down(force, reply),
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Cmd::InstanceId(reply) => match &self.instance_id {
                Some(id) => drop(reply.send(Ok(id.clone()))),
                None => {
                    let (starter, done) = (self.starter.clone(), self.done_tx.clone());
                    tokio::spawn(async move {
                        let _ = done.send(Done::Resolved(starter.resolve().await, reply)).await;
                    });
                }
            },
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

    /// Starts one attempt for the waiters: up to a dialed session, or, when every waiter is a
    /// [`Waiter::Start`], only up to `running` (a session would fail on a host key that is not trusted yet).
    fn begin_start(&mut self) {
        let starter = self.starter.clone();
        let known = self.instance_id.clone();
        let done = self.done_tx.clone();
        let session_wanted = self.waiters.iter().any(|w| !matches!(w, Waiter::Start(_)));
        self.maybe_running = true;
        // The start task writes the lease before it starts or connects (see `Starter::on_instance`).
        self.recheck_at = None;
        self.holding = true;
        self.refresh_at = Some(Instant::now() + self.starter.spec.lease.refresh);
        self.start_calls_before = self.starter.counters.start_calls.load(Ordering::Relaxed);
        self.starting = Some(tokio::spawn(async move {
            let done_msg = match session_wanted {
                true => {
                    let (id, res) = starter.bring_up_any(known).await;
                    Done::Started(id, res)
                }
                false => {
                    let (id, res) = starter.reach_any(known).await;
                    Done::Reached(id, res)
                }
            };
            let _ = done.send(done_msg).await;
        }));
    }

    /// A start attempt for `Start` waiters is over: answer them; dial now for any demand that came meanwhile.
    fn on_reached(&mut self, id: Option<String>, res: Result<std::net::SocketAddr, Error>) {
        self.starting = None;
        self.note_start_calls();
        if id.is_some() {
            self.instance_id = id.clone();
        }
        self.idle_since = Instant::now();
        let res = res.map_err(Arc::new);
        let (starts, others): (Vec<Waiter>, Vec<Waiter>) =
            std::mem::take(&mut self.waiters).into_iter().partition(|w| matches!(w, Waiter::Start(_)));
        self.waiters = others;
        for w in starts {
            if let Waiter::Start(tx) = w {
                let reached = res.clone().map(|addr| Reached { instance_id: id.clone().unwrap_or_default(), addr });
                let _ = tx.send(reached);
            }
        }
        match (&res, self.waiters.is_empty()) {
            (Ok(_), false) => self.begin_start(),
            (Err(e), false) => self.fail_waiters(e.clone()),
            _ => {}
        }
    }

    /// Remembers whether the attempt that just ended called StartInstances (see `adopt`).
    fn note_start_calls(&mut self) {
        if self.starter.counters.start_calls.load(Ordering::Relaxed) > self.start_calls_before {
            self.started_by_us = true;
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Adopted(res) => self.on_described(res, true),
            Done::Watched(res) => {
                self.watching = false;
                self.on_described(res, false);
            }
            Done::Resolved(res, reply) => {
                if let Ok(id) = &res {
                    self.instance_id.get_or_insert_with(|| id.clone());
                }
                let _ = reply.send(res.map_err(Arc::new));
            }
            Done::Reached(id, res) => self.on_reached(id, res),
            Done::Started(id, res) => {
                self.starting = None;
                self.note_start_calls();
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
                                Waiter::Start(tx) => {
                                    let (instance_id, addr) = (ready.instance_id.clone(), ready.addr);
                                    let _ = tx.send(Ok(Reached { instance_id, addr }));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        warn!(bastion = %self.name(), "start failed: {e}");
                        if super::start::is_gone(&e) && matches!(self.starter.spec.instance, InstanceRef::NameTag(_)) {
                            // Resolve the Name tag again on the next demand (the bastion may be rebuilt by then).
                            self.instance_id = None;
                        }
                        // A session that failed (e.g. on a host key not trusted yet) does not fail a `Start`
                        // waiter: the instance is running, which is all it asked for.
                        let keep_starts = matches!(e, Error::Ssh(_));
                        let (starts, others): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
                            .into_iter()
                            .partition(|w| keep_starts && matches!(w, Waiter::Start(_)));
                        self.waiters = others;
                        self.fail_waiters(Arc::new(e));
                        self.waiters = starts;
                        if !self.waiters.is_empty() {
                            self.begin_start();
                        }
                    }
                }
            }
            Done::Stopped(res, reply) => {
                self.stopping = false;
                self.idle_since = Instant::now();
                self.recheck_at = None;
                let res = res.map_err(Arc::new);
                self.next_watch = Instant::now() + jittered(self.starter.spec.watch_interval);
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
                    Ok(_) => {
                        self.maybe_running = false;
                        self.started_by_us = false;
                    }
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
                Waiter::Start(tx) => drop(tx.send(Err(e.clone()))),
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
                starter.progress.conclude(format!("stopping {id}"));
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
