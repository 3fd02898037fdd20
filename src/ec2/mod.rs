//! The AWS side: what bastionctl needs from EC2, behind the small [`Ec2Api`] trait so the lifecycle logic can be
//! tested against a fake. [`aws::AwsEc2`] is the real implementation over aws-sdk-ec2.

use std::net::IpAddr;

use ipnet::IpNet;

pub mod aws;
pub mod error;
pub mod permissions;
mod proxy_env;

pub use error::Ec2Error;

use crate::config::InstanceRef;

/// The instance id a bastion's config names: `instance_id` as it is, or the one live instance carrying the
/// `name_tag` (DescribeInstances filtered by `tag:Name`). The one place a Name tag becomes an id.
///
/// Errors: [`Ec2Error::NotFound`] when no live instance carries the tag, [`Ec2Error::Ambiguous`] when several do
/// (the message lists them), or the DescribeInstances failure.
pub async fn resolve(ec2: &dyn Ec2Api, instance: &InstanceRef) -> Result<String, Ec2Error> {
    match instance {
        InstanceRef::Id(id) => Ok(id.clone()),
        InstanceRef::NameTag(tag) => ec2.find_by_name_tag(tag).await,
    }
}

/// An EC2 instance state, as DescribeInstances reports it (`State.Name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Starting; not yet running.
    Pending,
    /// Running (sshd may still be booting).
    Running,
    /// Stop requested; not yet stopped.
    Stopping,
    /// Stopped: no charge for compute, can be started.
    Stopped,
    /// Being terminated: can never be started again.
    ShuttingDown,
    /// Terminated: can never be started again.
    Terminated,
}

impl InstanceState {
    /// The EC2 API name: `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What DescribeInstances says about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The instance id, e.g. `i-0123456789abcdef0`.
    pub instance_id: String,
    /// Current state.
    pub state: InstanceState,
    /// `PublicIpAddress`, if any (the fallback when no Elastic IP is associated).
    pub public_ip: Option<IpAddr>,
    /// `VpcId`, if any (for the default target policy).
    pub vpc_id: Option<String>,
}

/// A running instance found by its `Name` tag ([`Ec2Api::private_ips_by_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedInstance {
    /// The instance id.
    pub instance_id: String,
    /// Its primary private IPv4 address (`PrivateIpAddress`).
    pub private_ip: IpAddr,
}

/// The bastion's sshd IP: `configured` (the config's `address`), else its Elastic IP (DescribeAddresses is the source
/// of truth), else the public IP of `info`. `None` when it has none.
pub async fn bastion_ip(
    ec2: &dyn Ec2Api,
    configured: Option<IpAddr>,
    info: &InstanceInfo,
) -> Result<Option<IpAddr>, Ec2Error> {
    if configured.is_some() {
        return Ok(configured);
    }
    Ok(ec2.elastic_ip(&info.instance_id).await?.or(info.public_ip))
}

/// The EC2 operations bastionctl uses. Every call is bounded by a timeout inside the implementation; errors keep the
/// AWS error code and carry a hint (see [`Ec2Error`]).
#[async_trait::async_trait]
pub trait Ec2Api: Send + Sync + 'static {
    /// DescribeInstances for one id. Errors: [`Ec2Error::NotFound`] if EC2 does not know it.
    async fn describe(&self, instance_id: &str) -> Result<InstanceInfo, Ec2Error>;
    /// DescribeInstances filtered by `tag:Name` (ignoring terminated instances): the id of the one match.
    /// Errors: [`Ec2Error::NotFound`] for none, [`Ec2Error::Ambiguous`] for several.
    async fn find_by_name_tag(&self, name: &str) -> Result<String, Ec2Error>;
    /// DescribeInstances filtered by `tag:Name` = `name`, `vpc-id` = `vpc_id` and `instance-state-name` =
    /// `running`, all pages: every running instance of that VPC carrying the tag, with its private IP, sorted by
    /// id. Instances without a private IPv4 address are left out (nothing could connect to them by it). `name` is
    /// a checked host name, so it holds no `*` or `?` that EC2 would read as a wildcard.
    async fn private_ips_by_name(&self, vpc_id: &str, name: &str) -> Result<Vec<NamedInstance>, Ec2Error>;
    /// DescribeAddresses filtered by `instance-id`: the Elastic IP associated with the instance, if any.
    async fn elastic_ip(&self, instance_id: &str) -> Result<Option<IpAddr>, Ec2Error>;
    /// StartInstances for one id.
    async fn start(&self, instance_id: &str) -> Result<(), Ec2Error>;
    /// StopInstances for one id.
    async fn stop(&self, instance_id: &str) -> Result<(), Ec2Error>;
    /// DescribeVpcs for one id: every associated IPv4 and IPv6 CIDR block of the VPC (the primary block first),
    /// the default target set of a bastion without `targets`. Errors: [`Ec2Error::NotFound`] if EC2 does not know
    /// the VPC.
    async fn vpc_cidrs(&self, vpc_id: &str) -> Result<Vec<IpNet>, Ec2Error>;
    /// GetConsoleOutput for one id, decoded from base64 (invalid UTF-8 replaced): what the instance printed to its
    /// serial console, where cloud-init writes the SSH host key fingerprints. `None` when EC2 has no output yet.
    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, Ec2Error>;
    /// DescribeTags for one instance, filtered by `key` (EC2's filter syntax: `*` matches any run of characters,
    /// e.g. `bastionctl:lease:*`): every matching tag as `(key, value)`, all pages.
    async fn tags(&self, instance_id: &str, key: &str) -> Result<Vec<(String, String)>, Ec2Error>;
    /// CreateTags on one instance: adds the tags, or overwrites the values of keys it already has. Errors keep
    /// EC2's code: `UnauthorizedOperation` (IAM), `TagLimitExceeded` (the instance would have more than
    /// [`MAX_TAGS_PER_INSTANCE`] tags).
    async fn create_tags(&self, instance_id: &str, tags: &[(String, String)]) -> Result<(), Ec2Error>;
    /// DeleteTags on one instance, by key (whatever the value). Deleting a key the instance does not have is fine.
    async fn delete_tags(&self, instance_id: &str, keys: &[String]) -> Result<(), Ec2Error>;
}

/// EC2's limit of user tags per resource; CreateTags beyond it fails with `TagLimitExceeded`.
pub const MAX_TAGS_PER_INSTANCE: usize = 50;
