//! Leases on a shared bastion (issue 8), in paused time: the stop decision goes through the lease tags.

use super::*;

const MY_KEY: &str = "bastionctl:lease:me@here:000000";
const OTHER_KEY: &str = "bastionctl:lease:bob@pc:abcdef";

impl World {
    fn calls(&self) -> Vec<String> {
        self.ec2.tag_calls.lock().unwrap().clone()
    }
    fn tag(&self, key: &str) -> Option<String> {
        self.ec2.tags.lock().unwrap().get(key).cloned()
    }
    /// Puts another holder's lease on the instance, valid for `valid_for` from now (by the world's clock).
    fn other_lease(&self, valid_for: Duration) {
        let value = humantime::format_rfc3339_seconds(self.clock.now() + valid_for).to_string();
        self.ec2.tags.lock().unwrap().insert(OTHER_KEY.into(), value);
    }
    fn stops(&self) -> usize {
        self.ec2.stops.load(Ordering::SeqCst)
    }
}

fn expiry(value: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(value).expect("an RFC 3339 expiry")
}

#[tokio::test(start_paused = true)]
async fn a_demand_writes_its_lease_before_it_starts_and_keeps_it_fresh() {
    let w = stopped_world();
    let lease = w.bastion.acquire().await.unwrap();
    let calls = w.calls();
    let create = calls.iter().position(|c| c == &format!("create {MY_KEY}")).expect("lease written");
    let start = calls.iter().position(|c| c == "start").expect("started");
    assert!(create < start, "{calls:?}");
    for _ in 0..12 {
        tokio::time::sleep(TTL / 2).await;
        let left = expiry(&w.tag(MY_KEY).expect("lease held")).duration_since(w.clock.now()).unwrap_or_default();
        assert!(left >= TTL - TTL / 3 - Duration::from_secs(1), "lease about to lapse: {left:?} left");
    }
    let writes = w.calls().iter().filter(|c| c.starts_with("create")).count();
    assert!((18..=20).contains(&writes), "one write plus one per refresh interval over 6 TTLs: {writes}");
    drop(lease);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.stops(), 1);
    assert_eq!(w.tag(MY_KEY), None, "lease deleted after the idle stop");
    let after = w.calls().len();
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(w.calls().len(), after, "no refresh after release");
}

#[tokio::test(start_paused = true)]
async fn another_valid_lease_blocks_the_idle_stop_until_it_expires() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    w.other_lease(IDLE * 3);
    let t0 = Instant::now();
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.stops(), 0, "stopped under another holder's lease");
    assert_eq!(w.tag(MY_KEY), None, "this daemon gave up its own lease when its idle time passed");
    assert!(w.dialer.sessions.lock().unwrap()[0].is_closed(), "its session was closed with its lease");
    let st = w.bastion.status().await;
    let other = st.leases.iter().find(|l| !l.mine).expect("status lists the other lease");
    assert_eq!((other.holder.as_str(), other.valid), ("bob@pc:abcdef", true));
    // Stopped once the other lease has expired (its holder vanished), not before.
    while w.stops() == 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(t0.elapsed() < IDLE * 10, "never stopped");
    }
    let waited = t0.elapsed();
    assert!(waited >= IDLE * 3 && waited <= IDLE * 3 + Duration::from_secs(3), "stopped after {waited:?}");
    assert_eq!(w.tag(OTHER_KEY), None, "the expired lease of the vanished holder was cleaned up");
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(w.stops(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lease_kept_fresh_by_another_daemon_blocks_for_as_long_as_it_is_fresh() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    for _ in 0..30 {
        w.other_lease(TTL);
        tokio::time::sleep(TTL / 3).await;
    }
    assert_eq!(w.stops(), 0, "stopped under a fresh lease");
    // The other daemon finishes and stops the bastion itself: this one sees `stopped` and calls nothing.
    w.ec2.tags.lock().unwrap().remove(OTHER_KEY);
    w.ec2.set(InstanceState::Stopped, None);
    tokio::time::sleep(TTL + Duration::from_secs(2)).await;
    assert_eq!(w.stops(), 0, "a stopped bastion is not stopped again");
    assert_eq!(w.bastion.status().await.idle_stop_in_secs, None, "nothing left to stop");
}

#[tokio::test(start_paused = true)]
async fn an_expired_or_garbled_lease_does_not_block() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    w.ec2.tags.lock().unwrap().insert(OTHER_KEY.into(), humantime::format_rfc3339_seconds(w.clock.now()).to_string());
    w.ec2.tags.lock().unwrap().insert("bastionctl:lease:junk".into(), "tomorrow".into());
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.stops(), 1);
}

#[tokio::test(start_paused = true)]
async fn down_refuses_under_another_lease_unless_forced() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    w.other_lease(TTL);
    let err = w.bastion.down(false).await.expect_err("refused");
    assert!(matches!(&*err, Error::InUse { holders, .. } if holders == &["bob@pc:abcdef".to_string()]), "{err}");
    assert!(err.hint().unwrap().contains("--force"));
    assert_eq!(w.stops(), 0);
    assert_eq!(w.bastion.down(true).await.unwrap(), "stopping bastion test (i-0123456789abcdef0)");
    assert_eq!(w.stops(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_tag_permission_it_works_in_single_user_mode() {
    let w = stopped_world();
    *w.ec2.deny_tags.lock().unwrap() = Some("UnauthorizedOperation");
    let mut progress = w.bastion.progress().subscribe();
    let lease = w.bastion.acquire().await.expect("served without a lease tag");
    let mut said = Vec::new();
    while let Ok(m) = progress.try_recv() {
        said.push(m.text);
    }
    assert!(said.iter().any(|m| m.contains("single-user mode") && m.contains("ec2:CreateTags")), "{said:?}");
    let st = w.bastion.status().await;
    assert!(st.lease_error.as_ref().is_some_and(|e| e.kind == "permission"), "{st:?}");
    drop(lease);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    assert_eq!(w.stops(), 1, "single-user mode still stops an idle bastion");
}

#[tokio::test(start_paused = true)]
async fn the_fifty_tag_limit_is_said_and_the_demand_still_served() {
    let w = stopped_world();
    *w.ec2.deny_tags.lock().unwrap() = Some("TagLimitExceeded");
    let mut progress = w.bastion.progress().subscribe();
    w.bastion.acquire().await.expect("served");
    let said: Vec<String> = std::iter::from_fn(|| progress.try_recv().ok()).map(|m| m.text).collect();
    assert!(said.iter().any(|m| m.contains("TagLimitExceeded") && m.contains("50 tags")), "{said:?}");
    let st = w.bastion.status().await;
    assert_eq!(st.lease_error.map(|e| e.kind), Some("tag_limit".to_string()));
}

/// Missing credentials fail the lease tag and then the start's own DescribeInstances: the waiting client is told
/// once, by the start's error, not also by a lease warning with the same text.
#[tokio::test(start_paused = true)]
async fn an_error_that_is_not_about_the_tags_is_not_told_as_a_lease_warning() {
    let w = stopped_world();
    *w.ec2.deny_tags.lock().unwrap() = Some("ExpiredToken");
    let mut progress = w.bastion.progress().subscribe();
    w.bastion.acquire().await.expect("served");
    let said: Vec<String> = std::iter::from_fn(|| progress.try_recv().ok()).map(|m| m.text).collect();
    assert!(!said.iter().any(|m| m.contains("ExpiredToken")), "{said:?}");
    let st = w.bastion.status().await;
    assert_eq!(st.lease_error.map(|e| e.kind), Some("credentials".to_string()), "status still says it");
}

#[tokio::test(start_paused = true)]
async fn a_far_future_lease_blocks_the_idle_stop_for_at_most_ttl_plus_skew() {
    let w = stopped_world();
    drop(w.bastion.acquire().await.unwrap());
    w.ec2.tags.lock().unwrap().insert(OTHER_KEY.into(), "2099-01-01T00:00:00Z".into());
    let t0 = Instant::now();
    while w.stops() == 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(t0.elapsed() < TTL * 10, "a lease expiring in 2099 blocked the idle stop for {:?}", t0.elapsed());
    }
    let waited = t0.elapsed();
    let cap = IDLE + TTL + crate::lifecycle::lease::MAX_CLOCK_SKEW;
    let least = TTL + crate::lifecycle::lease::MAX_CLOCK_SKEW;
    assert!(waited >= least && waited <= cap + Duration::from_secs(5), "stopped after {waited:?}, cap {cap:?}");
    assert_eq!(w.tag(OTHER_KEY), None, "the unbelievable lease was deleted like an expired one");
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_keeps_the_lease_until_the_open_channels_close() {
    let w = stopped_world();
    let lease = w.bastion.acquire().await.unwrap();
    assert!(w.tag(MY_KEY).is_some(), "lease written");
    // The daemon shuts down while a channel drains: another daemon must still see this one's lease.
    w.shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(w.tag(MY_KEY).is_some(), "lease released under an open channel");
    drop(lease);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.tag(MY_KEY), None, "lease kept after the last channel closed");
    assert_eq!(w.stops(), 0, "a shutdown does not stop the bastion");
}
