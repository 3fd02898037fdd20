//! Exit statuses: sysexits(3) where one fits, so scripts can tell a typo from an outage.
//!
//! | status | meaning | examples |
//! |---|---|---|
//! | 0 | success | |
//! | 1 | anything else | `doctor` found a failing check, `status` could not learn a state |
//! | 64 | usage (EX_USAGE) | unknown option, bad `forward` spec, no bastion of that name, a malformed target host or port 0 |
//! | 69 | unavailable (EX_UNAVAILABLE) | bastion did not start in time, network, SSH connect, broken tunnel, no daemon, `down` refused (channels, leases) |
//! | 74 | I/O error (EX_IOERR) | a command's output (the proxy's tunnel bytes too) cannot be written to stdout |
//! | 77 | permission (EX_NOPERM) | IAM denies an EC2 action, no credentials, target not allowed (or its Name tag's IP), host key refused, bastion login refused |
//! | 78 | configuration (EX_CONFIG) | the config file is missing or invalid, no region, the instance does not exist, a Name tag several instances carry, an identity file cannot be used |

use crate::client::DaemonError;
use crate::config::{ConfigError, UnknownBastion};
use crate::policy::TargetError;
use crate::ec2::Ec2Error;
use crate::forward::SpecError;

/// Generic failure.
pub const FAILURE: u8 = 1;
/// EX_USAGE.
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE.
pub const UNAVAILABLE: u8 = 69;
/// EX_SOFTWARE: an internal error.
pub const SOFTWARE: u8 = 70;
/// EX_NOPERM.
pub const NOPERM: u8 = 77;
/// EX_CONFIG.
pub const CONFIG: u8 = 78;
/// EX_IOERR: an output could not be written (stdout on a full disk).
pub const IOERR: u8 = 74;

/// The status for a command-line parse result that is not a run: 0 for `--help` / `--version`, else [`USAGE`].
pub fn for_clap(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        _ => USAGE,
    }
}

/// The status for a failed command: the first error in the chain whose type says what went wrong decides.
pub fn for_error(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return CONFIG;
        }
        if cause.downcast_ref::<SpecError>().is_some()
            || cause.downcast_ref::<UnknownBastion>().is_some()
            || cause.downcast_ref::<TargetError>().is_some()
        {
            return USAGE;
        }
        if let Some(d) = cause.downcast_ref::<DaemonError>() {
            return for_kind(&d.kind);
        }
        if let Some(ec2) = cause.downcast_ref::<Ec2Error>() {
            return for_kind(ec2.kind());
        }
        if let Some(err) = cause.downcast_ref::<crate::error::Error>() {
            return for_kind(err.kind());
        }
        if let Some(err) = cause.downcast_ref::<super::StdoutError>() {
            return for_stdout(err);
        }
    }
    FAILURE
}

/// The status for output that could not be written: 0 when the reader went away, else [`IOERR`].
pub(crate) fn for_stdout(e: &super::StdoutError) -> u8 {
    if e.reader_gone() { 0 } else { IOERR }
}

/// The status for an error kind as the daemon reports it ([`crate::error::Error::kind`]).
pub fn for_kind(kind: &str) -> u8 {
    match kind {
        "bad_request" | "bad_target" | "usage" => USAGE,
        "timeout" | "network" | "throttled" | "connect" | "disconnected" | "channel" | "tunnel_broken" | "aborted"
        | "terminated" | "no_address" | "busy" | "invalid_state" => UNAVAILABLE,
        "permission" | "credentials" | "forbidden" | "not_allowed" | "host_key" | "auth" => NOPERM,
        "no_region" | "not_found" | "ambiguous" | "key" | "config" => CONFIG,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_deep_in_the_chain_choose_the_status() {
        let cfg: anyhow::Error = ConfigError::NotFound { default: "/x".into() }.into();
        assert_eq!(for_error(&cfg.context("loading")), CONFIG);
        let denied = DaemonError { kind: "permission".into(), message: "no".into(), hint: None };
        assert_eq!(for_error(&anyhow::Error::from(denied).context("up")), NOPERM);
        let slow = DaemonError { kind: "timeout".into(), message: "slow".into(), hint: None };
        assert_eq!(for_error(&slow.into()), UNAVAILABLE);
        assert_eq!(for_error(&anyhow::anyhow!("something else")), FAILURE);
        assert_eq!(for_error(&Ec2Error::NoRegion.into()), CONFIG);
    }
}
