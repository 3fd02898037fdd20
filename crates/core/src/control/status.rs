//! The status record the daemon reports for each bastion (`bastionctl status`, `--json`).

use serde::{Deserialize, Serialize};

/// One bastion's state for `bastionctl status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BastionStatus {
    /// Bastion name from the config.
    pub name: String,
    /// Instance id (resolved from the Name tag if configured that way), if known.
    pub instance_id: Option<String>,
    /// EC2 instance state from DescribeInstances (`pending`, `running`, `stopping`, `stopped`, ...), or
    /// `unknown (<error>)` if the call failed.
    pub state: String,
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
}
