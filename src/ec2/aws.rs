//! aws-sdk-ec2 implementation of [`super::Ec2Api`]: one client, built once from the `[aws]` config and cloned, with
//! timeouts on every call and the SDK's standard retries (throttling such as `RequestLimitExceeded` and 5xx errors
//! are retried with exponential backoff). Every SDK error is mapped with [`Ec2Error::from_sdk`], keeping its code.

use std::net::IpAddr;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag, Vpc, VpcCidrBlockStateCode};
use ipnet::IpNet;

use super::{Ec2Api, Ec2Error, InstanceInfo, InstanceState, NamedInstance};
use crate::config::AwsConfig;

/// Bound on establishing the TCP (and TLS) connection to the EC2 endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one attempt of an EC2 call (request sent to response read); a slow attempt is retried.
pub const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a whole EC2 call, all retries and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per EC2 call (the first plus retries), in the SDK's standard retry mode.
pub const MAX_ATTEMPTS: u32 = 4;

/// The real EC2 client. Cheap to clone (the SDK client is reference-counted).
#[derive(Debug, Clone)]
pub struct AwsEc2 {
    client: aws_sdk_ec2::Client,
    /// The configured AWS profile, for hints in errors.
    profile: Option<String>,
}

impl AwsEc2 {
    /// Loads the AWS configuration (aws-config's default chains for credentials and region, overridden by the
    /// `[aws]` table's `profile`, `region` and `endpoint_url`; `AWS_ENDPOINT_URL` is honoured too) and builds the
    /// client with [`CONNECT_TIMEOUT`], [`OPERATION_ATTEMPT_TIMEOUT`], [`OPERATION_TIMEOUT`] and standard retries of
    /// [`MAX_ATTEMPTS`].
    ///
    /// Credentials are resolved lazily on the first call, so missing ones show up there as
    /// [`Ec2Error::NoCredentials`]. Errors: [`Ec2Error::NoRegion`] when no region is configured anywhere.
    pub async fn from_config(cfg: &AwsConfig) -> Result<AwsEc2, Ec2Error> {
        let sdk_config = load_sdk_config(cfg).await?;
        Ok(AwsEc2::from_sdk_config(&sdk_config, cfg.profile.clone()))
    }

    /// Builds the client from an SDK configuration made by [`load_sdk_config`]; `profile` is named in hints.
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, profile: Option<String>) -> AwsEc2 {
        AwsEc2 { client: aws_sdk_ec2::Client::new(sdk_config), profile }
    }

    /// Wraps an already-built client (tests, or callers with their own SDK configuration). Its timeouts and
    /// retries are whatever that client was configured with.
    pub fn from_client(client: aws_sdk_ec2::Client) -> AwsEc2 {
        AwsEc2 { client, profile: None }
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    fn err<E, R>(&self, operation: &'static str, e: aws_sdk_ec2::error::SdkError<E, R>) -> Ec2Error
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Ec2Error::from_sdk(operation, e, self.profile.as_deref())
    }
}

/// The SDK configuration [`AwsEc2::from_config`] uses: aws-config's default chains for credentials and region,
/// overridden by the `[aws]` table's `profile`, `region` and `endpoint_url`, with [`CONNECT_TIMEOUT`],
/// [`OPERATION_ATTEMPT_TIMEOUT`], [`OPERATION_TIMEOUT`] and the SDK's retries with [`MAX_ATTEMPTS`] attempts unless
/// the user set a number (`AWS_MAX_ATTEMPTS`, a profile's `max_attempts`); `AWS_RETRY_MODE` and `retry_mode` are
/// honoured as the SDK reads them.
///
/// Errors: [`Ec2Error::NoRegion`] when no region is configured anywhere.
pub async fn load_sdk_config(cfg: &AwsConfig) -> Result<aws_config::SdkConfig, Ec2Error> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(profile) = &cfg.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk_config = loader.load().await;
    if sdk_config.region().is_none() {
        return Err(Ec2Error::NoRegion);
    }
    if user_sets_max_attempts(cfg.profile.as_deref()).await {
        return Ok(sdk_config);
    }
    // Only the attempt count is ours; a retry mode the user chose (AWS_RETRY_MODE, `retry_mode`) stays.
    let retry = sdk_config.retry_config().cloned().unwrap_or_else(RetryConfig::standard).with_max_attempts(MAX_ATTEMPTS);
    Ok(sdk_config.to_builder().retry_config(retry).build())
}

/// Whether the user chose the number of attempts the way the AWS CLI reads it: `AWS_MAX_ATTEMPTS`, or
/// `max_attempts` in the selected profile of the shared config files (`[aws] profile`, else `AWS_PROFILE`, else
/// `default`). A profile file that cannot be read counts as not set (aws-config reports it on the first call).
async fn user_sets_max_attempts(profile: Option<&str>) -> bool {
    use aws_runtime::env_config::file::EnvConfigFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let selected = profile.map(|p| std::borrow::Cow::Owned(p.to_string()));
    match aws_config::profile::load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), selected).await {
        Ok(set) => set.get("max_attempts").is_some(),
        Err(_) => false,
    }
}

/// `InvalidInstanceID.NotFound` / `.Malformed` from any call on one id becomes [`Ec2Error::NotFound`].
fn not_found_for(instance_id: &str, e: Ec2Error) -> Ec2Error {
    match &e {
        Ec2Error::Api { code, .. } if code.starts_with("InvalidInstanceID.") => {
            Ec2Error::NotFound { what: format!("instance {instance_id}") }
        }
        _ => e,
    }
}

/// Converts the SDK's state name; `None` for a state this crate does not know (a future API addition).
fn parse_state(name: &InstanceStateName) -> Option<InstanceState> {
    Some(match name {
        InstanceStateName::Pending => InstanceState::Pending,
        InstanceStateName::Running => InstanceState::Running,
        InstanceStateName::Stopping => InstanceState::Stopping,
        InstanceStateName::Stopped => InstanceState::Stopped,
        InstanceStateName::ShuttingDown => InstanceState::ShuttingDown,
        InstanceStateName::Terminated => InstanceState::Terminated,
        _ => return None,
    })
}

fn parse_ip(operation: &'static str, field: &str, s: &str) -> Result<IpAddr, Ec2Error> {
    s.parse().map_err(|_| Ec2Error::BadResponse { operation, detail: format!("{field} `{s}` is not an IP address") })
}

/// Builds an [`InstanceInfo`] from one DescribeInstances `Instance`.
fn instance_info(inst: &Instance) -> Result<InstanceInfo, Ec2Error> {
    const OP: &str = "DescribeInstances";
    let instance_id = inst
        .instance_id()
        .ok_or_else(|| Ec2Error::BadResponse { operation: OP, detail: "instance without InstanceId".into() })?;
    let state_name = inst.state().and_then(|s| s.name());
    let state = state_name.and_then(parse_state).ok_or_else(|| Ec2Error::BadResponse {
        operation: OP,
        detail: format!("instance {instance_id} has unknown state {:?}", state_name.map(|n| n.as_str())),
    })?;
    let public_ip = inst.public_ip_address().map(|s| parse_ip(OP, "PublicIpAddress", s)).transpose()?;
    Ok(InstanceInfo { instance_id: instance_id.to_owned(), state, public_ip, vpc_id: inst.vpc_id().map(str::to_owned) })
}

impl AwsEc2 {
    /// DescribeInstances with `filters`, every page: the instances of all reservations.
    async fn instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, Ec2Error> {
        let mut all = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeInstances", e))?;
            all.extend(out.reservations().iter().flat_map(|r| r.instances()).cloned());
            match out.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(all)
    }
}

fn filter(name: &str, values: &[&str]) -> Filter {
    values.iter().fold(Filter::builder().name(name), |b, v| b.values(*v)).build()
}

#[async_trait::async_trait]
impl Ec2Api for AwsEc2 {
    async fn describe(&self, instance_id: &str) -> Result<InstanceInfo, Ec2Error> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err("DescribeInstances", e)))?;
        let inst = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .ok_or_else(|| Ec2Error::NotFound { what: format!("instance {instance_id}") })?;
        instance_info(inst)
    }

    async fn find_by_name_tag(&self, name: &str) -> Result<String, Ec2Error> {
        let states = filter("instance-state-name", &["pending", "running", "stopping", "stopped"]);
        let found = self.instances(vec![filter("tag:Name", &[name]), states]).await?;
        let mut ids: Vec<String> = found.iter().filter_map(|i| i.instance_id()).map(str::to_owned).collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => Err(Ec2Error::NotFound { what: format!("an instance tagged Name={name}") }),
            1 => Ok(ids.remove(0)),
            _ => Err(Ec2Error::Ambiguous { name: name.to_owned(), ids }),
        }
    }

    async fn private_ips_by_name(&self, vpc_id: &str, name: &str) -> Result<Vec<NamedInstance>, Ec2Error> {
        let running = filter("instance-state-name", &["running"]);
        // EC2's `tag:Name` filter is case-sensitive and host names arrive in lower case: every running instance of
        // the VPC with a Name tag is fetched and the tag compared here, ignoring ASCII case.
        let filters = vec![filter("tag-key", &["Name"]), filter("vpc-id", &[vpc_id]), running];
        let mut found: Vec<NamedInstance> = Vec::new();
        for inst in self.instances(filters).await? {
            let is_name = |v: &str| v.eq_ignore_ascii_case(name);
            let tagged = inst.tags().iter().any(|t| t.key() == Some("Name") && t.value().is_some_and(is_name));
            let (true, Some(id), Some(ip)) = (tagged, inst.instance_id(), inst.private_ip_address()) else { continue };
            let private_ip = parse_ip("DescribeInstances", "PrivateIpAddress", ip)?;
            found.push(NamedInstance { instance_id: id.to_owned(), private_ip });
        }
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        found.dedup_by(|a, b| a.instance_id == b.instance_id);
        Ok(found)
    }

    async fn elastic_ip(&self, instance_id: &str) -> Result<Option<IpAddr>, Ec2Error> {
        const OP: &str = "DescribeAddresses";
        let out = self
            .client
            .describe_addresses()
            .filters(filter("instance-id", &[instance_id]))
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        out.addresses().iter().find_map(|a| a.public_ip()).map(|s| parse_ip(OP, "PublicIp", s)).transpose()
    }

    async fn start(&self, instance_id: &str) -> Result<(), Ec2Error> {
        self.client
            .start_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err("StartInstances", e)))?;
        Ok(())
    }

    async fn stop(&self, instance_id: &str) -> Result<(), Ec2Error> {
        self.client
            .stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err("StopInstances", e)))?;
        Ok(())
    }

    async fn vpc_cidrs(&self, vpc_id: &str) -> Result<Vec<IpNet>, Ec2Error> {
        const OP: &str = "DescribeVpcs";
        let out = self.client.describe_vpcs().vpc_ids(vpc_id).send().await.map_err(|e| match self.err(OP, e) {
            Ec2Error::Api { code, .. } if code.starts_with("InvalidVpcID.") => {
                Ec2Error::NotFound { what: format!("VPC {vpc_id}") }
            }
            e => e,
        })?;
        let vpc = out
            .vpcs()
            .iter()
            .find(|v| v.vpc_id() == Some(vpc_id))
            .ok_or_else(|| Ec2Error::NotFound { what: format!("VPC {vpc_id}") })?;
        vpc_blocks(vpc)
    }

    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, Ec2Error> {
        const OP: &str = "GetConsoleOutput";
        let out = self
            .client
            .get_console_output()
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err(OP, e)))?;
        let Some(b64) = out.output().filter(|s| !s.trim().is_empty()) else { return Ok(None) };
        // EC2 may wrap the base64 text; the decoder wants it in one piece.
        let b64: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = aws_smithy_types::base64::decode(&b64)
            .map_err(|e| Ec2Error::BadResponse { operation: OP, detail: format!("console output is not base64: {e}") })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn tags(&self, instance_id: &str, key: &str) -> Result<Vec<(String, String)>, Ec2Error> {
        let mut out = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_tags()
                .filters(filter("resource-id", &[instance_id]))
                .filters(filter("key", &[key]))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| self.err("DescribeTags", e))?;
            for t in page.tags() {
                if let Some(k) = t.key() {
                    out.push((k.to_owned(), t.value().unwrap_or_default().to_owned()));
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn create_tags(&self, instance_id: &str, tags: &[(String, String)]) -> Result<(), Ec2Error> {
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build());
        self.client
            .create_tags()
            .resources(instance_id)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err("CreateTags", e)))?;
        Ok(())
    }

    async fn delete_tags(&self, instance_id: &str, keys: &[String]) -> Result<(), Ec2Error> {
        let tags = keys.iter().map(|k| Tag::builder().key(k).build());
        self.client
            .delete_tags()
            .resources(instance_id)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|e| not_found_for(instance_id, self.err("DeleteTags", e)))?;
        Ok(())
    }
}

/// The associated CIDR blocks of a VPC, primary first, without duplicates.
fn vpc_blocks(vpc: &Vpc) -> Result<Vec<IpNet>, Ec2Error> {
    const OP: &str = "DescribeVpcs";
    let associated = |s: Option<&VpcCidrBlockStateCode>| s.is_none_or(|s| *s == VpcCidrBlockStateCode::Associated);
    let v4 = vpc
        .cidr_block_association_set()
        .iter()
        .filter(|a| associated(a.cidr_block_state().and_then(|s| s.state())))
        .filter_map(|a| a.cidr_block());
    let v6 = vpc
        .ipv6_cidr_block_association_set()
        .iter()
        .filter(|a| associated(a.ipv6_cidr_block_state().and_then(|s| s.state())))
        .filter_map(|a| a.ipv6_cidr_block());
    let mut blocks: Vec<IpNet> = Vec::new();
    for s in vpc.cidr_block().into_iter().chain(v4).chain(v6) {
        let net = s.parse::<IpNet>().map_err(|_| Ec2Error::BadResponse {
            operation: OP,
            detail: format!("CIDR block `{s}` of {} is not a CIDR block", vpc.vpc_id().unwrap_or("the VPC")),
        })?;
        if !blocks.contains(&net.trunc()) {
            blocks.push(net.trunc());
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests;
