//! Whether the bastion runs the idle watchdog of `config/bastion/` (the dead-man switch that powers it off when no
//! forwarded connection has been open for a while), when doctor can tell: the tag `bastionctl:watchdog` (the
//! cloud-init snippet sets it when the instance may, or put it on the instance yourself), or the line the snippet
//! prints to the serial console.

use super::Report;
use crate::ec2::Ec2Api;
use crate::ec2::aws::AwsEc2;

/// The tag that says the watchdog is installed (any value; the snippet writes `installed`).
pub const WATCHDOG_TAG: &str = "bastionctl:watchdog";
/// The line the cloud-init snippet prints to the console once the watchdog is installed.
pub const CONSOLE_MARKER: &str = "bastionctl-watchdog: installed";

const HOW: &str = "install the idle watchdog on the bastion (config/bastion/, README \"Idle watchdog on the bastion\"), \
                   so it powers itself off when no laptop is left to stop it; then tag the instance \
                   bastionctl:watchdog=installed (the cloud-init snippet does both)";

pub(super) async fn check(r: &mut Report, name: &str, ec2: &AwsEc2, id: &str) {
    match ec2.tags(id, WATCHDOG_TAG).await {
        Ok(tags) if !tags.is_empty() => {
            return r.pass(format!("bastion {name}: idle watchdog installed (tag {WATCHDOG_TAG}={})", tags[0].1));
        }
        Ok(_) => {}
        Err(e) => return r.skip(format!("bastion {name}: idle watchdog (cannot read the instance's tags: {e})")),
    }
    match ec2.console_output(id).await {
        Ok(Some(text)) if text.contains(CONSOLE_MARKER) => {
            r.pass(format!("bastion {name}: idle watchdog installed (its line is in the console output)"))
        }
        Ok(_) => r.warn(
            format!(
                "bastion {name}: cannot tell whether the idle watchdog is installed (no tag {WATCHDOG_TAG}, no \
                 `{CONSOLE_MARKER}` in the console output)"
            ),
            HOW,
        ),
        Err(e) => r.skip(format!("bastion {name}: idle watchdog (cannot read the console output: {e})")),
    }
}
