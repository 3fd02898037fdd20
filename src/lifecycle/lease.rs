//! Leases on a shared bastion: tags on the instance that say "a daemon is using this bastion until T".
//!
//! While a daemon uses a bastion it keeps the tag `bastionctl:lease:<holder>` = expiry (RFC 3339, UTC) fresh; it
//! deletes it when it stops using the bastion. A daemon calls StopInstances only when [`Leases::decide_stop`], which
//! reads the tags right before the stop (never from a cache), finds no other unexpired lease. EC2 is the shared
//! state, so daemons of different users, configs and machines see each other without talking.
//!
//! Clock skew: expiries are written and read with each machine's own wall clock. A holder refreshes every
//! `lease_refresh` (default a third of `lease_ttl`), so a live lease always has at least `lease_ttl - lease_refresh`
//! left when written. A reader whose clock is ahead of the holder's by less than that never sees a live lease as
//! expired (3 min 20 s at the defaults). A clock that is behind only makes leases last longer.
//!
//! A lease is believed for at most `lease_ttl` + [`MAX_CLOCK_SKEW`] after this daemon first saw its current value
//! ([`LeaseTag::effective_expiry`]): a holder that is alive rewrites it every `lease_refresh`, so a value that stays
//! the same longer (a far-future expiry written by hand, by a broken clock or by a tool) no longer blocks the idle
//! stop once that time has passed, and is then deleted like any expired lease. Daemons sharing a bastion should
//! use the same `lease_ttl`, or at least a `lease_refresh` shorter than this daemon's `lease_ttl`.
//!
//! Without permission for CreateTags/DeleteTags the daemon keeps working in single-user mode: it says so once in the
//! log, serves its own connections, and still honours the leases of others when it can read them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::control::{ErrorReply, LeaseStatus};
use crate::ec2::{Ec2Api, Ec2Error};
use crate::progress::Progress;

/// Prefix of every lease tag key; the rest is the holder.
pub const LEASE_PREFIX: &str = "bastionctl:lease:";
/// The largest clock difference between two daemons that leases allow for: a lease value is believed for at most
/// `lease_ttl` plus this after it was first seen.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Slack added to the earliest expiry of another lease before looking again.
pub const RECHECK_MARGIN: Duration = Duration::from_secs(1);
/// Longest tag key EC2 accepts.
const MAX_KEY_LEN: usize = 128;

/// The wall clock leases are written and judged with (the system clock; tests pass one that follows paused time).
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl WallClock {
    /// A clock that calls `now`.
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new(SystemTime::now)
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// One bastion's lease settings.
#[derive(Debug, Clone)]
pub struct LeaseSpec {
    /// This daemon's holder name (see [`holder_id`]).
    pub holder: String,
    /// How long a written lease is valid.
    pub ttl: Duration,
    /// How often it is written anew while held.
    pub refresh: Duration,
    /// The clock expiries are computed with.
    pub clock: WallClock,
}

/// A stable, short, secret-free holder name for this daemon: `user@host:hash`, where `hash` is 6 hex digits of the
/// config file's path, so two configs of one user on one machine are two holders. Characters EC2 does not allow in
/// tag keys become `-`.
pub fn holder_id(user: &str, host: &str, config_path: &std::path::Path) -> String {
    use sha1::Digest;
    let clean = |s: &str, max: usize| -> String {
        let s: String = s
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
            .take(max)
            .collect();
        if s.is_empty() { "unknown".into() } else { s }
    };
    let short_host = host.split('.').next().unwrap_or(host);
    let path = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let digest = sha1::Sha1::digest(path.to_string_lossy().as_bytes());
    let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let id = format!("{}@{}:{hash}", clean(user, 32), clean(short_host, 40));
    id.chars().take(MAX_KEY_LEN - LEASE_PREFIX.len()).collect()
}

/// The holder name of this process for `config_path`: the login name of the uid and the machine's host name.
pub fn local_holder(config_path: &std::path::Path) -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name);
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    holder_id(&user, &host, config_path)
}

/// One lease tag as read from the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTag {
    /// The holder (the key after [`LEASE_PREFIX`]).
    pub holder: String,
    /// The expiry; `None` when the value is not an RFC 3339 time (such a tag blocks nothing).
    pub expires: Option<SystemTime>,
    /// The tag's value as written.
    pub value: String,
}

impl LeaseTag {
    /// Parses one `(key, value)` tag; `None` when the key is not a lease key.
    pub fn parse(key: &str, value: &str) -> Option<LeaseTag> {
        let holder = key.strip_prefix(LEASE_PREFIX)?;
        let expires = humantime::parse_rfc3339(value.trim()).ok();
        Some(LeaseTag { holder: holder.into(), expires, value: value.into() })
    }

    /// Whether it is still valid at `now`.
    pub fn live_at(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e > now)
    }

    /// The expiry this daemon acts on: the written one, capped at `first_seen + ttl +` [`MAX_CLOCK_SKEW`], where
    /// `first_seen` is when this value was first read. No live holder leaves a value unchanged that long.
    pub fn effective_expiry(&self, first_seen: SystemTime, ttl: Duration) -> Option<SystemTime> {
        self.expires.map(|e| e.min(first_seen + ttl + MAX_CLOCK_SKEW))
    }
}

/// What [`Leases::decide_stop`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopDecision {
    /// No other daemon holds a valid lease: stop.
    Stop,
    /// Others hold valid leases: do not stop; look again after `recheck_in`.
    Blocked {
        /// Their holder names.
        holders: Vec<String>,
        /// When to look again: just after the earliest of their expiries (at most one `lease_ttl` away).
        recheck_in: Duration,
    },
}

/// One bastion's leases, over the EC2 tag calls.
pub struct Leases {
    ec2: Arc<dyn Ec2Api>,
    spec: LeaseSpec,
    bastion: String,
    /// Set after a permission error on the tag calls, until one works again (the log says so once per change).
    single_user: AtomicBool,
    /// The last failure of a tag call, for `status`; cleared by a success.
    last_error: Mutex<Option<ErrorReply>>,
    /// Other holders' lease values and when each was first read (for [`LeaseTag::effective_expiry`]).
    first_seen: Mutex<HashMap<String, (String, SystemTime)>>,
}

impl Leases {
    /// Leases of the bastion named `bastion` (for log lines).
    pub fn new(ec2: Arc<dyn Ec2Api>, spec: LeaseSpec, bastion: String) -> Leases {
        Leases {
            ec2,
            spec,
            bastion,
            single_user: AtomicBool::new(false),
            last_error: Mutex::new(None),
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    /// This daemon's tag key.
    pub fn key(&self) -> String {
        format!("{LEASE_PREFIX}{}", self.spec.holder)
    }

    /// This daemon's holder name.
    pub fn holder(&self) -> &str {
        &self.spec.holder
    }

    /// The lease settings.
    pub fn spec(&self) -> &LeaseSpec {
        &self.spec
    }

    /// Whether the daemon runs in single-user mode (the tag calls are not allowed).
    pub fn single_user(&self) -> bool {
        self.single_user.load(Ordering::Relaxed)
    }

    /// Writes (or refreshes) this daemon's lease: expiry now + `lease_ttl`. Never fails the caller: a permission
    /// error switches to single-user mode (said once in the log and on `progress`); anything else (the 50-tag limit)
    /// is logged and told on `progress` (only logged when the start's own calls fail the same way and say it: missing
    /// credentials, a timeout), and the next refresh tries again. Returns whether it was written.
    pub async fn write(&self, instance_id: &str, progress: Option<&Progress>) -> bool {
        let expires = self.spec.clock.now() + self.spec.ttl;
        let value = humantime::format_rfc3339_seconds(expires).to_string();
        match self.ec2.create_tags(instance_id, &[(self.key(), value)]).await {
            Ok(()) => {
                self.leave_single_user();
                true
            }
            Err(e) => {
                self.failed(&e, progress);
                false
            }
        }
    }

    /// Deletes this daemon's lease (best effort: a failure is logged; the lease then expires by itself).
    pub async fn release(&self, instance_id: &str) {
        if self.single_user() {
            return;
        }
        match self.ec2.delete_tags(instance_id, &[self.key()]).await {
            Ok(()) => info!(bastion = %self.bastion, holder = %self.spec.holder, "lease released"),
            Err(e) => self.failed(&e, None),
        }
    }

    /// Every lease tag on the instance, read now.
    pub async fn read(&self, instance_id: &str) -> Result<Vec<LeaseTag>, Ec2Error> {
        let tags = self.ec2.tags(instance_id, &format!("{LEASE_PREFIX}*")).await?;
        Ok(tags.iter().filter_map(|(k, v)| LeaseTag::parse(k, v)).collect())
    }

    /// Reads the leases right now and says whether this daemon may stop the bastion: only when no other holder's
    /// lease is valid. Expired leases of others (crashed or sleeping holders) are deleted on the way, so they do not
    /// pile up towards EC2's 50-tag limit.
    ///
    /// Errors: the DescribeTags failure, except a permission error, which means single-user mode (no other lease
    /// can be seen; said once in the log) and so [`StopDecision::Stop`].
    pub async fn decide_stop(&self, instance_id: &str) -> Result<StopDecision, Ec2Error> {
        let tags = match self.read(instance_id).await {
            Ok(tags) => tags,
            Err(e) if e.kind() == "permission" => {
                self.failed(&e, None);
                return Ok(StopDecision::Stop);
            }
            Err(e) => return Err(e),
        };
        let now = self.spec.clock.now();
        let others: Vec<LeaseTag> = self.capped(tags.into_iter().filter(|t| t.holder != self.spec.holder), now);
        let (live, expired): (Vec<&LeaseTag>, Vec<&LeaseTag>) = others.iter().partition(|t| t.live_at(now));
        if !expired.is_empty() {
            let keys: Vec<String> = expired.iter().map(|t| format!("{LEASE_PREFIX}{}", t.holder)).collect();
            info!(bastion = %self.bastion, expired = ?keys, "deleting expired leases of other holders");
            if let Err(e) = self.ec2.delete_tags(instance_id, &keys).await {
                warn!(bastion = %self.bastion, "cannot delete expired leases: {e}");
            }
        }
        if live.is_empty() {
            return Ok(StopDecision::Stop);
        }
        let earliest = live.iter().filter_map(|t| t.expires).min().unwrap_or(now);
        let until = earliest.duration_since(now).unwrap_or_default() + RECHECK_MARGIN;
        Ok(StopDecision::Blocked {
            holders: live.iter().map(|t| t.holder.clone()).collect(),
            recheck_in: until.min(self.spec.ttl),
        })
    }

    /// `tags` with each expiry replaced by its [`LeaseTag::effective_expiry`], remembering when each value was first
    /// seen (values no longer on the instance are forgotten).
    fn capped(&self, tags: impl Iterator<Item = LeaseTag>, now: SystemTime) -> Vec<LeaseTag> {
        let mut seen = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        let tags: Vec<LeaseTag> = tags.collect();
        seen.retain(|holder, (value, _)| tags.iter().any(|t| &t.holder == holder && &t.value == value));
        tags.into_iter()
            .map(|mut t| {
                let (_, first) = seen.entry(t.holder.clone()).or_insert_with(|| (t.value.clone(), now));
                t.expires = t.effective_expiry(*first, self.spec.ttl);
                t
            })
            .collect()
    }

    /// The leases on the instance as `status` shows them, read now; with the reason when they cannot be read, or
    /// when this daemon's last tag call failed (single-user mode, the 50-tag limit).
    pub async fn status(&self, instance_id: &str) -> (Vec<LeaseStatus>, Option<ErrorReply>) {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match self.read(instance_id).await {
            Ok(tags) => (lease_status(&tags, &self.spec.holder, self.spec.clock.now()), last),
            Err(e) => (Vec::new(), Some(ErrorReply { kind: e.kind().into(), message: e.to_string(), hint: e.hint() })),
        }
    }

    fn failed(&self, e: &Ec2Error, progress: Option<&Progress>) {
        let reply = ErrorReply { kind: e.kind().into(), message: e.to_string(), hint: e.hint() };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
        let hint = e.hint().map(|h| format!("; {h}")).unwrap_or_default();
        if e.kind() == "permission" {
            if !self.single_user.swap(true, Ordering::Relaxed) {
                let msg = format!(
                    "single-user mode for bastion {}: {e}{hint}. Until that is fixed this daemon cannot see or tell \
                     other users of the bastion, and may stop it under their sessions",
                    self.bastion
                );
                warn!("{msg}");
                if let Some(p) = progress {
                    p.tell(msg);
                }
            }
            return;
        }
        let msg = format!("cannot write or delete the lease tag of bastion {}: {e}{hint}", self.bastion);
        warn!("{msg}");
        // Missing credentials, no network: the start's own calls fail the same way, and that error is the one the
        // waiting clients get; told here too, it would be said twice.
        if let Some(p) = progress.filter(|_| !e.is_not_about_the_call()) {
            p.tell(msg);
        }
    }

    fn leave_single_user(&self) {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.single_user.swap(false, Ordering::Relaxed) {
            info!(bastion = %self.bastion, "lease tags work again: leaving single-user mode");
        }
    }
}

/// The `status` view of lease tags read at `now`; `me` is this daemon's holder name.
pub fn lease_status(tags: &[LeaseTag], me: &str, now: SystemTime) -> Vec<LeaseStatus> {
    tags.iter()
        .map(|t| LeaseStatus { holder: t.holder.clone(), expires: t.value.clone(), valid: t.live_at(now), mine: t.holder == me })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_are_short_stable_and_valid_tag_keys() {
        let p = std::path::Path::new("/home/alice/.config/bastionctl/config.toml");
        let a = holder_id("alice", "laptop.example.com", p);
        assert_eq!(a, holder_id("alice", "laptop.example.com", p), "stable");
        assert!(a.starts_with("alice@laptop:") && a.len() == "alice@laptop:".len() + 6, "{a}");
        assert_ne!(a, holder_id("alice", "laptop", std::path::Path::new("/other.toml")), "per config");
        let odd = holder_id("a b\"c", "", p);
        assert!(odd.starts_with("a-b-c@unknown:"), "{odd}");
        let long = holder_id(&"u".repeat(300), &"h".repeat(300), p);
        assert!(LEASE_PREFIX.len() + long.len() <= MAX_KEY_LEN, "{}", long.len());
    }

    #[test]
    fn lease_values_round_trip_and_garbage_blocks_nothing() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v = humantime::format_rfc3339_seconds(t).to_string();
        assert_eq!(v, "2027-01-15T08:00:00Z");
        let tag = LeaseTag::parse("bastionctl:lease:bob@pc:abcdef", &v).unwrap();
        assert_eq!((tag.holder.as_str(), tag.expires), ("bob@pc:abcdef", Some(t)));
        assert!(tag.live_at(t - Duration::from_secs(1)) && !tag.live_at(t));
        assert!(LeaseTag::parse("Name", "x").is_none());
        assert!(!LeaseTag::parse("bastionctl:lease:x", "soon").unwrap().live_at(SystemTime::UNIX_EPOCH));
    }
}
