//! The daemon's error type: everything a connect, `up` or `down` can fail with, each with a kind and a hint that
//! says what to do. Sent to clients as [`crate::control::ErrorReply`].

use std::sync::Arc;
use std::time::Duration;

use bastionctl_core::text::host_port;

use crate::control::ErrorReply;
use crate::ec2::{Ec2Error, NamedInstance};
use crate::ssh::SshError;

/// A failure of a daemon operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An EC2 API call failed (permission, credentials, not found, network).
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    /// The SSH side failed (sshd never answered, host key, auth, channel refused).
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The bastion did not become ready within `start_timeout`.
    #[error("bastion {bastion} ({instance_id}) was not ready after {}: it was stuck in state `{state}`", humantime::format_duration(*after))]
    StartTimeout {
        /// Bastion name.
        bastion: String,
        /// Instance id.
        instance_id: String,
        /// What it was waiting in: an EC2 state, or `running, sshd not answering`.
        state: String,
        /// The `start_timeout` that ran out.
        after: Duration,
    },
    /// The instance is terminated or being terminated: it can never start again.
    #[error("bastion {bastion} ({instance_id}) is {state} and can never be started again")]
    Terminated {
        /// Bastion name.
        bastion: String,
        /// Instance id.
        instance_id: String,
        /// `shutting-down` or `terminated`.
        state: String,
    },
    /// The instance is running but EC2 reports no Elastic IP and no public IP for it.
    #[error("bastion {bastion} ({instance_id}) is running but has no Elastic IP or public IP")]
    NoAddress {
        /// Bastion name.
        bastion: String,
        /// Instance id.
        instance_id: String,
    },
    /// No configured bastion allows this target.
    #[error("target {} is not allowed by {config}: {detail}", host_port(host, *port))]
    NotAllowed {
        /// The requested host.
        host: String,
        /// The requested port.
        port: u16,
        /// The config file whose rules were checked.
        config: String,
        /// Which rules were checked.
        detail: String,
    },
    /// A host name that `targets` allows is the Name tag of a running instance whose private IP it does not allow.
    #[error(
        "target {name}:{port} resolved by its EC2 Name tag to {ip} ({instance_id}), which {config} does not allow: \
         bastion {bastion}: {detail}"
    )]
    NameOutsideTargets {
        /// The requested name.
        name: String,
        /// The requested port.
        port: u16,
        /// The private IP the Name tag gave.
        ip: std::net::IpAddr,
        /// The instance carrying the tag.
        instance_id: String,
        /// The bastion whose set allowed the name.
        bastion: String,
        /// The config file whose rules were checked.
        config: String,
        /// Which rules were checked, from the policy.
        detail: String,
    },
    /// Several running instances in the bastion's VPC carry the name as their Name tag.
    #[error(
        "target {name}: {} running instances in VPC {vpc_id} are tagged Name={name}: {}",
        instances.len(),
        instances.iter().map(|i| format!("{} ({})", i.instance_id, i.private_ip)).collect::<Vec<_>>().join(", ")
    )]
    NameAmbiguous {
        /// The requested name (the tag value).
        name: String,
        /// The bastion's VPC.
        vpc_id: String,
        /// The instances carrying it, sorted by id.
        instances: Vec<NamedInstance>,
    },
    /// Looking a host name up as a Name tag failed (the bastion's VPC id, or DescribeInstances).
    #[error("cannot look up {name} as an EC2 Name tag in the VPC of bastion {bastion}: {cause}")]
    NameLookup {
        /// The requested name.
        name: String,
        /// The bastion whose VPC was searched.
        bastion: String,
        /// What failed (part of the message, not a `source`: clients get the message, not a chain).
        cause: Arc<Error>,
    },
    /// `down` without `--force` while channels are open.
    #[error("bastion {bastion} has {count} open channel(s)")]
    ChannelsOpen {
        /// Bastion name.
        bastion: String,
        /// Open channels.
        count: usize,
    },
    /// `down` without `--force` while other daemons hold valid leases on the bastion.
    #[error("bastion {bastion} is in use by {}: not stopped", holders.join(", "))]
    InUse {
        /// Bastion name.
        bastion: String,
        /// The holders of the valid leases.
        holders: Vec<String>,
    },
    /// No bastion of that name.
    #[error("{0}")]
    UnknownBastion(crate::config::UnknownBastion),
    /// The daemon is shutting down, or `down` interrupted the start this request waited for.
    #[error("{0}")]
    Aborted(String),
}

impl Error {
    /// Machine-readable class for [`ErrorReply::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Ec2(e) => e.kind(),
            Error::Ssh(e) => e.kind(),
            Error::StartTimeout { .. } => "timeout",
            Error::Terminated { .. } => "terminated",
            Error::NoAddress { .. } => "no_address",
            Error::NotAllowed { .. } | Error::NameOutsideTargets { .. } => "not_allowed",
            Error::NameAmbiguous { .. } => "ambiguous",
            Error::NameLookup { cause, .. } => cause.kind(),
            Error::ChannelsOpen { .. } | Error::InUse { .. } => "busy",
            Error::UnknownBastion(_) => "bad_request",
            Error::Aborted(_) => "aborted",
        }
    }

    /// What the user should do, if anything can be said.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Ec2(e) => e.hint(),
            Error::Ssh(e) => e.hint(),
            Error::StartTimeout { instance_id, .. } => Some(format!(
                "check the instance in the EC2 console (`aws ec2 describe-instances --instance-ids {instance_id}`) \
                 and its security group allows SSH from here; raise start_timeout if it is just slow"
            )),
            Error::Terminated { .. } => {
                Some("point instance_id (or name_tag) in the config at the new bastion".into())
            }
            Error::NoAddress { .. } => Some(
                "associate an Elastic IP with the bastion (`aws ec2 associate-address`), or set `address` in the config"
                    .into(),
            ),
            Error::NotAllowed { .. } => {
                Some("add the target's CIDR block or host-name pattern to `targets` (and its port to `target_ports`); \
                 a `targets` list replaces the default, the VPC's CIDR blocks".into())
            }
            Error::NameOutsideTargets { ip, bastion, name, .. } => Some(format!(
                "add {ip} (or its subnet's CIDR block) to `targets` of bastion {bastion}, or set \
                 `resolve_name_tags = false` there to let the bastion resolve `{name}` itself"
            )),
            Error::NameAmbiguous { name, instances, .. } => {
                let first = &instances[0];
                Some(format!(
                    "give each instance its own Name tag (e.g. `aws ec2 create-tags --resources {} --tags \
                     Key=Name,Value={name}-2`), or connect by private IP (`ssh {}`)",
                    instances[instances.len() - 1].instance_id,
                    first.private_ip
                ))
            }
            Error::NameLookup { cause, bastion, .. } => {
                let off =
                    format!("or set `resolve_name_tags = false` for bastion {bastion} to pass names on unresolved");
                Some(match cause.hint() {
                    Some(h) if !matches!(&**cause, Error::Ec2(Ec2Error::NotFound { .. })) => format!("{h}; {off}"),
                    _ => off,
                })
            }
            Error::ChannelsOpen { .. } => Some("close those SSH sessions, or run `bastionctl down --force`".into()),
            Error::InUse { .. } => Some(
                "their lease tags keep it running; this daemon gave up its own and stops the bastion once theirs \
                 have ended or expired (`bastionctl status` lists them). `bastionctl down --force` stops it now and \
                 ends their sessions"
                    .into(),
            ),
            Error::UnknownBastion(_) | Error::Aborted(_) => None,
        }
    }

    /// The wire form for clients. Message and hint may quote outside text (an EC2 or sshd message, a name a
    /// client sent): control characters in them are escaped here, for every error a client is sent.
    pub fn to_reply(&self) -> ErrorReply {
        let clean = |s: String| crate::escape::escape_keep_newlines(&s).into_owned();
        ErrorReply { kind: self.kind().into(), message: clean(self.to_string()), hint: self.hint().map(clean) }
    }
}

impl From<Error> for ErrorReply {
    fn from(e: Error) -> Self {
        e.to_reply()
    }
}
