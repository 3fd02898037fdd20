//! The lifecycle state machine against a fake EC2 and a fake dialer, in paused (virtual) time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ec2::{Ec2Error, InstanceInfo, InstanceState};
use crate::ssh::SshError;
use crate::tunnel::{Channel, Session};

const IDLE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(300);
const ME: &str = "me@here:000000";

/// A wall clock that follows tokio's (paused) time, from a fixed start.
fn paused_clock() -> WallClock {
    let base = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let t0 = Instant::now();
    WallClock::new(move || base + t0.elapsed())
}

/// EC2 where `pending` and `stopping` last a set (virtual) time, like the real thing.
struct FakeEc2 {
    st: Mutex<FakeState>,
    /// The instance's tags.
    tags: Mutex<std::collections::BTreeMap<String, String>>,
    /// Every tag call, in order: `create KEY`, `delete KEY`, `describe`.
    tag_calls: Mutex<Vec<String>>,
    /// Answer CreateTags/DeleteTags with this error code.
    deny_tags: Mutex<Option<&'static str>>,
    starts: AtomicUsize,
    stops: AtomicUsize,
    describes: AtomicUsize,
    /// What the Name tag lookup finds: one id, or several (ambiguous).
    tagged: Mutex<Result<String, Vec<String>>>,
    /// Ids that are terminated (the one state machine above is every other id's).
    terminated: Mutex<Vec<String>>,
    pending_for: Duration,
    stopping_for: Duration,
}

struct FakeState {
    state: InstanceState,
    until: Option<Instant>,
}

impl FakeEc2 {
    fn new(state: InstanceState, pending_for: Duration, stopping_for: Duration) -> Arc<FakeEc2> {
        let until = matches!(state, InstanceState::Pending | InstanceState::Stopping).then(|| Instant::now() + pending_for);
        Arc::new(FakeEc2 {
            st: Mutex::new(FakeState { state, until }),
            tags: Mutex::default(),
            tag_calls: Mutex::default(),
            deny_tags: Mutex::default(),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
            describes: AtomicUsize::new(0),
            tagged: Mutex::new(Ok("i-0123456789abcdef0".into())),
            terminated: Mutex::new(Vec::new()),
            pending_for,
            stopping_for,
        })
    }

    fn state(&self) -> InstanceState {
        let mut st = self.st.lock().unwrap();
        if st.until.is_some_and(|u| Instant::now() >= u) {
            st.until = None;
            st.state = match st.state {
                InstanceState::Pending => InstanceState::Running,
                InstanceState::Stopping => InstanceState::Stopped,
                s => s,
            };
        }
        st.state
    }

    fn set(&self, state: InstanceState, lasts: Option<Duration>) {
        let mut st = self.st.lock().unwrap();
        st.state = state;
        st.until = lasts.map(|d| Instant::now() + d);
    }
}

fn incorrect_state(op: &'static str) -> Ec2Error {
    Ec2Error::Api { operation: op, code: "IncorrectInstanceState".into(), message: "wrong state".into() }
}

#[async_trait::async_trait]
impl Ec2Api for FakeEc2 {
    async fn describe(&self, id: &str) -> Result<InstanceInfo, Ec2Error> {
        self.describes.fetch_add(1, Ordering::SeqCst);
        let state = match self.terminated.lock().unwrap().iter().any(|t| t == id) {
            true => InstanceState::Terminated,
            false => self.state(),
        };
        Ok(InstanceInfo { instance_id: id.into(), state, public_ip: None, vpc_id: None })
    }
    async fn find_by_name_tag(&self, name: &str) -> Result<String, Ec2Error> {
        match &*self.tagged.lock().unwrap() {
            Ok(id) => Ok(id.clone()),
            Err(ids) => Err(Ec2Error::Ambiguous { name: name.into(), ids: ids.clone() }),
        }
    }
    async fn private_ips_by_name(&self, _vpc: &str, _name: &str) -> Result<Vec<crate::ec2::NamedInstance>, Ec2Error> {
        Ok(Vec::new())
    }
    async fn elastic_ip(&self, _id: &str) -> Result<Option<IpAddr>, Ec2Error> {
        Ok(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1))))
    }
    async fn start(&self, _id: &str) -> Result<(), Ec2Error> {
        if self.state() != InstanceState::Stopped {
            return Err(incorrect_state("StartInstances"));
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.tag_calls.lock().unwrap().push("start".into());
        self.set(InstanceState::Pending, Some(self.pending_for));
        Ok(())
    }
    async fn stop(&self, _id: &str) -> Result<(), Ec2Error> {
        if !matches!(self.state(), InstanceState::Running | InstanceState::Pending) {
            return Err(incorrect_state("StopInstances"));
        }
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.tag_calls.lock().unwrap().push("stop".into());
        self.set(InstanceState::Stopping, Some(self.stopping_for));
        Ok(())
    }
    async fn vpc_cidrs(&self, _vpc_id: &str) -> Result<Vec<ipnet::IpNet>, Ec2Error> {
        Ok(vec!["10.0.0.0/16".parse().unwrap()])
    }
    async fn console_output(&self, _id: &str) -> Result<Option<String>, Ec2Error> {
        Ok(None)
    }
    async fn tags(&self, _id: &str, key: &str) -> Result<Vec<(String, String)>, Ec2Error> {
        self.tag_calls.lock().unwrap().push("describe".into());
        let prefix = key.trim_end_matches('*');
        let tags = self.tags.lock().unwrap();
        Ok(tags.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
    async fn create_tags(&self, _id: &str, tags: &[(String, String)]) -> Result<(), Ec2Error> {
        let mut calls = self.tag_calls.lock().unwrap();
        calls.extend(tags.iter().map(|(k, _)| format!("create {k}")));
        if let Some(code) = *self.deny_tags.lock().unwrap() {
            return Err(Ec2Error::Api { operation: "CreateTags", code: code.into(), message: "denied".into() });
        }
        self.tags.lock().unwrap().extend(tags.iter().cloned());
        Ok(())
    }
    async fn delete_tags(&self, _id: &str, keys: &[String]) -> Result<(), Ec2Error> {
        let mut calls = self.tag_calls.lock().unwrap();
        calls.extend(keys.iter().map(|k| format!("delete {k}")));
        if let Some(code) = *self.deny_tags.lock().unwrap() {
            return Err(Ec2Error::Api { operation: "DeleteTags", code: code.into(), message: "denied".into() });
        }
        let mut tags = self.tags.lock().unwrap();
        keys.iter().for_each(|k| drop(tags.remove(k)));
        Ok(())
    }
}

#[derive(Default)]
struct FakeSession {
    closed: AtomicBool,
}

#[async_trait::async_trait]
impl Session for FakeSession {
    async fn open(&self, _host: &str, _port: u16) -> Result<Channel, SshError> {
        Ok(crate::tunnel::tests::echo_channel())
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct FakeDialer {
    dials: AtomicUsize,
    sessions: Mutex<Vec<Arc<FakeSession>>>,
}

#[async_trait::async_trait]
impl Dialer for FakeDialer {
    async fn dial(
        &self,
        _addr: SocketAddr,
        _id: &str,
        _deadline: Instant,
        _progress: &Progress,
    ) -> Result<Arc<dyn Session>, SshError> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await; // banner + handshake
        let s = Arc::new(FakeSession::default());
        self.sessions.lock().unwrap().push(s.clone());
        Ok(s)
    }
}

struct World {
    clock: WallClock,
    ec2: Arc<FakeEc2>,
    dialer: Arc<FakeDialer>,
    bastion: Bastion,
    /// The daemon's shutdown token, cancelled when the world is dropped.
    shutdown: CancellationToken,
    _shutdown: tokio_util::sync::DropGuard,
}

fn world(state: InstanceState, pending_for: Duration, stopping_for: Duration, start_timeout: Duration) -> World {
    world_with(state, pending_for, stopping_for, start_timeout, |_| {})
}

fn world_with(
    state: InstanceState,
    pending_for: Duration,
    stopping_for: Duration,
    start_timeout: Duration,
    tweak: impl FnOnce(&mut BastionSpec),
) -> World {
    let ec2 = FakeEc2::new(state, pending_for, stopping_for);
    let dialer = Arc::new(FakeDialer::default());
    let clock = paused_clock();
    let mut spec = BastionSpec {
        name: "test".into(),
        instance: crate::config::InstanceRef::Id("i-0123456789abcdef0".into()),
        port: 22,
        address: None,
        idle_timeout: IDLE,
        start_timeout,
        watch_interval: crate::config::DEFAULT_WATCH_INTERVAL,
        adopt: true,
        lease: LeaseSpec { holder: ME.into(), ttl: TTL, refresh: TTL / 3, clock: clock.clone() },
    };
    tweak(&mut spec);
    let token = CancellationToken::new();
    let bastion = Bastion::spawn(spec, ec2.clone(), dialer.clone(), token.clone());
    World { clock, ec2, dialer, bastion, shutdown: token.clone(), _shutdown: token.drop_guard() }
}

fn stopped_world() -> World {
    world(InstanceState::Stopped, Duration::from_secs(10), Duration::from_secs(20), Duration::from_secs(300))
}

#[tokio::test(start_paused = true)]
async fn demand_on_stopped_starts_once_and_becomes_ready() {
    let w = stopped_world();
    let t0 = Instant::now();
    let lease = w.bastion.acquire().await.expect("ready");
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 1);
    assert_eq!(w.ec2.state(), InstanceState::Running);
    assert!(t0.elapsed() >= Duration::from_secs(10), "waited for pending to end");
    assert_eq!(lease.ready.addr.to_string(), "127.0.2.1:22");
    let st = w.bastion.status().await;
    assert_eq!((st.channels, st.start_calls, st.state.as_deref()), (1, 1, Some("running")));
}

#[tokio::test(start_paused = true)]
async fn concurrent_demands_share_one_start_and_one_session() {
    let w = stopped_world();
    let demands = (0..10).map(|_| {
        let b = w.bastion.clone();
        tokio::spawn(async move { b.acquire().await.map(|l| l.ready.session.clone()) })
    });
    let sessions: Vec<_> = futures_join(demands).await;
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 1);
    assert_eq!(w.dialer.dials.load(Ordering::SeqCst), 1);
    assert!(sessions.windows(2).all(|p| Arc::ptr_eq(&p[0], &p[1])));
}

async fn futures_join<T: Send + 'static>(
    hs: impl Iterator<Item = tokio::task::JoinHandle<Shared<T>>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in hs.collect::<Vec<_>>() {
        out.push(h.await.unwrap().unwrap_or_else(|e| panic!("demand failed: {e}")));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn idle_bastion_is_stopped_after_idle_timeout_and_not_before() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    let released = Instant::now();
    tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 0, "stopped too early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1);
    assert!(released.elapsed() >= IDLE);
    assert!(w.dialer.sessions.lock().unwrap()[0].is_closed(), "session closed before the stop");
    tokio::time::sleep(IDLE * 5).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1, "a stopped bastion is not stopped again");
}

#[tokio::test(start_paused = true)]
async fn an_open_channel_keeps_it_running_until_closed() {
    let w = stopped_world();
    let lease = w.bastion.acquire().await.unwrap();
    tokio::time::sleep(IDLE * 10).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 0);
    assert_eq!(w.bastion.status().await.idle_stop_in_secs, None);
    drop(lease);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn demand_during_stopping_waits_for_stopped_then_starts_again() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.ec2.state(), InstanceState::Stopping);
    let lease = w.bastion.acquire().await.expect("started again");
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 2);
    assert_eq!(w.ec2.state(), InstanceState::Running);
    assert!(!lease.ready.session.is_closed(), "a fresh session, not the closed one");
    assert_eq!(w.dialer.dials.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn demand_while_pending_waits_without_starting() {
    let w = world(InstanceState::Pending, Duration::from_secs(15), Duration::ZERO, Duration::from_secs(300));
    w.bastion.acquire().await.expect("ready");
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_running_bastion_found_at_startup_is_adopted_and_stopped_when_idle() {
    let w = world(InstanceState::Running, Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300));
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1);
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn stuck_in_pending_fails_with_start_timeout_naming_the_state() {
    let w = world(InstanceState::Pending, Duration::from_secs(3600), Duration::ZERO, Duration::from_secs(30));
    let err = w.bastion.acquire().await.err().expect("times out");
    match &*err {
        Error::StartTimeout { state, after, .. } => {
            assert_eq!(state, "pending");
            assert_eq!(*after, Duration::from_secs(30));
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("30s") && err.hint().is_some(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn terminated_instance_is_a_clear_error() {
    let w = world(InstanceState::Terminated, Duration::ZERO, Duration::ZERO, Duration::from_secs(30));
    let err = w.bastion.acquire().await.err().expect("fails");
    assert!(matches!(&*err, Error::Terminated { .. }), "{err}");
    assert_eq!(err.kind(), "terminated");
}

#[tokio::test(start_paused = true)]
async fn down_refuses_with_open_channels_unless_forced() {
    let w = stopped_world();
    let lease = w.bastion.acquire().await.unwrap();
    let err = w.bastion.down(false).await.expect_err("refused");
    assert!(matches!(&*err, Error::ChannelsOpen { count: 1, .. }), "{err}");
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 0);
    w.bastion.down(true).await.expect("forced");
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1);
    assert!(lease.ready.session.is_closed());
}

#[tokio::test(start_paused = true)]
async fn down_on_a_stopped_bastion_says_so_without_calling_stop_instances() {
    let w = stopped_world();
    let msg = w.bastion.down(false).await.expect("down on a stopped bastion is fine");
    assert_eq!(msg, "bastion test (i-0123456789abcdef0) is already stopped");
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 0);
    assert_eq!(w.bastion.status().await.stop_calls, 0);
    // A started one is stopped as before, and a second `down` while it is stopping does not stop it again.
    drop(w.bastion.acquire().await.unwrap());
    assert_eq!(w.bastion.down(false).await.unwrap(), "stopping bastion test (i-0123456789abcdef0)");
    assert_eq!(w.bastion.down(false).await.unwrap(), "bastion test (i-0123456789abcdef0) is already stopping");
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_session_is_replaced_on_the_next_demand() {
    let w = stopped_world();
    let first = w.bastion.acquire().await.unwrap();
    first.ready.session.close();
    drop(first);
    let second = w.bastion.acquire().await.unwrap();
    assert!(!second.ready.session.is_closed());
    assert_eq!(w.dialer.dials.load(Ordering::SeqCst), 2);
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 1, "the instance was running: no second StartInstances");
}

/// Issue 4 case 15 (clock jumps, suspend). tokio's `Instant` is `CLOCK_MONOTONIC`, which on Linux does not advance
/// while the machine is suspended: after a resume the idle clock and the keepalive timers carry on from where they
/// were, so a suspend never fires them early. A jump of the clock (here: paused time advanced by hours in one step)
/// must still never stop a bastion with a lease held, and must stop an idle one exactly once.
#[tokio::test(start_paused = true)]
async fn clock_jump_never_stops_with_a_lease_and_stops_an_idle_bastion_once() {
    let w = stopped_world();
    let lease = w.bastion.acquire().await.unwrap();
    tokio::time::advance(Duration::from_secs(10 * 3600)).await;
    tokio::task::yield_now().await;
    let with_lease = w.ec2.stops.load(Ordering::SeqCst);
    let idle_clock = w.bastion.status().await.idle_stop_in_secs;
    drop(lease);
    tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
    let early = w.ec2.stops.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_time = w.ec2.stops.load(Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10 * 3600)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_second_jump = w.ec2.stops.load(Ordering::SeqCst);
    let pass = with_lease == 0 && idle_clock.is_none() && early == 0 && on_time == 1 && after_second_jump == 1;
    bastionctl_lab::report::record(
        "15",
        "clock jump / suspend",
        "no stop while a channel is open, whatever the clock does; an idle bastion is stopped once, idle_timeout after \
         the last channel closed",
        &format!(
            "virtual clock jumped 10 h with a lease held: {with_lease} StopInstances, idle clock {idle_clock:?}; lease \
             dropped: {early} stops at idle_timeout-1 s, {on_time} at +1 s; another 10 h jump: {after_second_jump} in \
             total. Suspend: tokio's Instant is CLOCK_MONOTONIC (stops during suspend on Linux), so timers resume where \
             they were; a dead session after resume is found by the keepalives within 15 s of wake time"
        ),
        pass,
    );
    assert!(pass, "{with_lease} {idle_clock:?} {early} {on_time} {after_second_jump}");
}

/// Issue 10: a bastion started outside the daemon (console, CLI) while the daemon idles is noticed by the idle
/// watch within `watch_interval` (+20 % jitter) and stopped `idle_timeout` later.
#[tokio::test(start_paused = true)]
async fn a_bastion_started_elsewhere_while_idle_is_adopted_and_stopped() {
    let w = stopped_world();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.ec2.set(InstanceState::Running, None); // someone ran `aws ec2 start-instances`
    let watch = crate::config::DEFAULT_WATCH_INTERVAL;
    let t0 = Instant::now();
    let mut noticed = None;
    while t0.elapsed() <= watch.mul_f64(1.2) + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if w.bastion.status().await.idle_stop_in_secs.is_some() {
            noticed = Some(t0.elapsed());
            break;
        }
    }
    let early = w.ec2.stops.load(Ordering::SeqCst);
    tokio::time::sleep(IDLE + Duration::from_secs(2)).await;
    let stops = w.ec2.stops.load(Ordering::SeqCst);
    let in_window = noticed.is_some_and(|t| t + Duration::from_secs(1) >= watch.mul_f64(0.8) && t <= watch.mul_f64(1.2) + Duration::from_secs(1));
    let pass = in_window && early == 0 && stops == 1 && w.ec2.starts.load(Ordering::SeqCst) == 0;
    bastionctl_lab::report::record(
        "10-adopt",
        "bastion started outside the daemon while it idles",
        "the idle daemon re-reads the instance state every watch_interval (default 5 min, ±20 % jitter), adopts a \
         running bastion with no channels and stops it after idle_timeout (adopt = true)",
        &format!(
            "started elsewhere 1 s after the daemon: noticed (idle clock running) after {} (watch_interval {} s \
             ±20 %); StopInstances {stops}× idle_timeout ({} s) later, none before (virtual time)",
            noticed.map_or("NEVER".into(), |t| format!("{} s", t.as_secs())),
            watch.as_secs(),
            IDLE.as_secs()
        ),
        pass,
    );
    assert!(pass, "noticed {noticed:?}, early {early}, stops {stops}");
}

/// With `adopt = false` a bastion the daemon did not start is left running; one it started itself is still stopped.
#[tokio::test(start_paused = true)]
async fn adopt_false_leaves_a_bastion_it_did_not_start_running() {
    let w = world_with(InstanceState::Running, Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300), |s| {
        s.adopt = false;
    });
    drop(w.bastion.acquire().await.unwrap());
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 0, "not started here: not stopped here");
    assert_eq!(w.bastion.status().await.idle_stop_in_secs, None);
    // `down` still stops it on request; a start of its own is stopped when idle.
    w.bastion.down(false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(w.bastion.acquire().await.unwrap());
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 1);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 2);
}

fn tagged_world() -> World {
    world_with(InstanceState::Stopped, Duration::from_secs(10), Duration::from_secs(20), Duration::from_secs(300), |s| {
        s.instance = crate::config::InstanceRef::NameTag("lab-bastion".into());
    })
}

/// Issue 10: a Name tag is resolved again when the instance it named is terminated (the bastion was rebuilt).
#[tokio::test(start_paused = true)]
async fn name_tag_is_resolved_again_when_its_instance_is_terminated() {
    let w = tagged_world();
    let first = w.bastion.acquire().await.unwrap();
    assert_eq!(first.ready.instance_id, "i-0123456789abcdef0");
    // The bastion is rebuilt: the old instance is terminated (its sshd goes with it), the tag moves to a new one.
    w.ec2.terminated.lock().unwrap().push("i-0123456789abcdef0".into());
    *w.ec2.tagged.lock().unwrap() = Ok("i-0fedcba9876543210".into());
    w.ec2.set(InstanceState::Stopped, None);
    first.ready.session.close();
    drop(first);
    let res = w.bastion.acquire().await;
    let got = res.as_ref().map(|l| l.ready.instance_id.clone()).map_err(|e| e.to_string());
    let status = w.bastion.status().await;
    let pass = got.as_deref() == Ok("i-0fedcba9876543210")
        && status.instance_id.as_deref() == Some("i-0fedcba9876543210")
        && status.state.as_deref() == Some("running");
    bastionctl_lab::report::record(
        "10-name-tag",
        "name_tag instance terminated and rebuilt while the daemon runs",
        "the Name tag is resolved again when its instance is not found or terminated; the next demand uses the new \
         instance",
        &format!("after the old instance was terminated and the tag moved: next demand got {got:?}; status says {} {}",
            status.instance_id.as_deref().unwrap_or("-"), status.state.as_deref().unwrap_or("unknown")),
        pass,
    );
    assert!(pass, "{got:?} {status:?}");
}

/// Issue 10: two live instances with the bastion's Name tag: `status` says so (not "not found").
#[tokio::test(start_paused = true)]
async fn status_says_when_two_live_instances_carry_the_name_tag() {
    let w = tagged_world();
    *w.ec2.tagged.lock().unwrap() = Err(vec!["i-0000000000000000a".into(), "i-0000000000000000b".into()]);
    let st = w.bastion.status().await;
    assert!(
        st.state.is_none()
            && st.error.as_ref().is_some_and(|e| e
                .message
                .contains("several instances are tagged Name=lab-bastion: i-0000000000000000a, i-0000000000000000b")),
        "{st:?}"
    );
    let err = w.bastion.acquire().await.err().expect("refused");
    assert_eq!(err.kind(), "ambiguous", "{err}");
}

/// The actor answers the instance id it knows without asking EC2 again (the daemon's VPC lookup uses it).
#[tokio::test(start_paused = true)]
async fn the_instance_id_comes_from_the_actor_once_resolved() {
    let w = tagged_world();
    assert_eq!(w.bastion.instance_id().await.unwrap(), "i-0123456789abcdef0");
    *w.ec2.tagged.lock().unwrap() = Err(vec![]);
    assert_eq!(w.bastion.instance_id().await.unwrap(), "i-0123456789abcdef0", "cached, not looked up again");
}

/// `bastionctl trust`'s start (issue 10): the daemon starts the bastion to `running` without dialing a session
/// (the host key may not be trusted yet), and its idle clock then stops it.
#[tokio::test(start_paused = true)]
async fn start_without_a_session_runs_the_idle_clock() {
    let w = stopped_world();
    let reached = w.bastion.start().await.expect("running");
    assert_eq!(reached.addr.to_string(), "127.0.2.1:22");
    assert_eq!(reached.instance_id, "i-0123456789abcdef0");
    assert_eq!(w.dialer.dials.load(Ordering::SeqCst), 0, "no session for a start");
    assert_eq!(w.ec2.starts.load(Ordering::SeqCst), 1);
    assert!(w.bastion.status().await.idle_stop_in_secs.is_some(), "the idle clock runs");
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.ec2.stops.load(Ordering::SeqCst), 1, "stopped after idle_timeout");
}

#[path = "tests_leases.rs"]
mod leases;
