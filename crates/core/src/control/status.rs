//! The status record the daemon reports for each bastion (`bastionctl status`, `--json`).

use serde::{Deserialize, Serialize};

use super::ErrorReply;

/// One bastion's state for `bastionctl status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BastionStatus {
    /// Bastion name from the config.
    pub name: String,
    /// Instance id (resolved from the Name tag if configured that way), if known.
    pub instance_id: Option<String>,
    /// EC2 instance state from DescribeInstances (`pending`, `running`, `stopping`, `stopped`, ...); `null` when it
    /// is unknown, and then `error` says why.
    pub state: Option<String>,
    /// Why `state` is unknown (the DescribeInstances failure, or the Name tag not resolved yet); `null` when known.
    /// Written even when `null`, like every key, for a stable schema; read as absent from older daemons.
    #[serde(default)]
    pub error: Option<ErrorReply>,
    /// Address the daemon connects to (`ip:port`), if known.
    pub address: Option<String>,
    /// Whether an SSH session to the bastion is open.
    pub session: bool,
    /// Open forwarded channels.
    pub channels: usize,
    /// Seconds until the idle stop, if the idle clock is running.
    pub idle_stop_in_secs: Option<u64>,
    /// StartInstances calls this daemon has made for this bastion since it started.
    pub start_calls: u64,
    /// StopInstances calls this daemon has made for this bastion since it started.
    pub stop_calls: u64,
    /// Process id of the daemon that answered (to stop a background daemon: `kill PID`); `None` (JSON `null`) when
    /// no daemon runs and `status` asked EC2 itself.
    #[serde(default)]
    pub pid: Option<u32>,
    /// This daemon's (or, without a daemon, this config's) lease holder name on the instance.
    #[serde(default)]
    pub holder: Option<String>,
    /// The lease tags on the instance (`bastionctl:lease:<holder>`), read now.
    #[serde(default)]
    pub leases: Vec<LeaseStatus>,
    /// Why the leases could not be read or written, when they could not (e.g. a missing ec2:CreateTags: the daemon
    /// then runs in single-user mode); `null` when there is none (written, like `error`).
    #[serde(default)]
    pub lease_error: Option<ErrorReply>,
}

/// One lease tag on a bastion, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Who holds it: `user@host:hash` of a daemon.
    pub holder: String,
    /// Its expiry as written (RFC 3339, UTC).
    pub expires: String,
    /// Whether it is still valid by this machine's clock.
    pub valid: bool,
    /// Whether it is this daemon's (this config's) lease.
    pub mine: bool,
}

impl BastionStatus {
    /// The record as protocol version 1 clients read it: `state` a string, `unknown (<message>)` when unknown.
    pub fn to_v1(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let state = match (&self.state, &self.error) {
            (Some(s), _) => s.clone(),
            (None, Some(e)) => format!("unknown ({})", e.message),
            (None, None) => "unknown".into(),
        };
        v["state"] = serde_json::Value::String(state);
        v
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// Every key is in every record (`null` when there is nothing to say), so a script reads one schema; a record
    /// from an older daemon, without the optional keys, still reads.
    #[test]
    fn the_json_schema_is_stable_and_old_records_still_read() {
        let v = serde_json::to_value(BastionStatus { name: "prod".into(), ..Default::default() }).unwrap();
        for key in ["state", "error", "address", "idle_stop_in_secs", "pid", "holder", "leases", "lease_error"] {
            assert!(v.get(key).is_some(), "no `{key}` in {v}");
        }
        assert!(v["error"].is_null() && v["lease_error"].is_null(), "{v}");
        let old = r#"{"name":"prod","instance_id":null,"state":"running","address":null,"session":false,"channels":0,
            "idle_stop_in_secs":null,"start_calls":0,"stop_calls":0}"#;
        let st: BastionStatus = serde_json::from_str(old).unwrap();
        assert_eq!((st.error, st.lease_error, st.leases.len()), (None, None, 0));
    }
}
