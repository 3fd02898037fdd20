//! Which of the EC2 actions bastionctl needs the credentials may call, asked with EC2's `DryRun` flag: EC2 checks
//! the IAM policy (conditions on the instance's tags included) and answers `DryRunOperation` when the call would be
//! allowed, `UnauthorizedOperation` when it would not, without doing anything. Used by `bastionctl doctor`.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use super::Ec2Error;

/// The EC2 actions bastionctl calls, as IAM names them; the same list as `config/iam-policy.json`.
pub const ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeAddresses",
    "ec2:DescribeVpcs",
    "ec2:StartInstances",
    "ec2:StopInstances",
    "ec2:GetConsoleOutput",
    "ec2:DescribeTags",
    "ec2:CreateTags",
    "ec2:DeleteTags",
];

/// What EC2 said about one action.
#[derive(Debug)]
pub enum Permission {
    /// `DryRunOperation`: the call would succeed. (Also a plain success: some emulators, moto for
    /// GetConsoleOutput, ignore `DryRun` on read-only calls; real EC2 never answers a dry run with success.)
    Allowed,
    /// `UnauthorizedOperation` (or another access-denied code): the IAM policy does not allow it.
    Missing {
        /// EC2's message (it may carry an encoded authorization message to decode with `aws sts
        /// decode-authorization-message`).
        message: String,
    },
    /// Something else went wrong (credentials, network, unknown instance...): the permission is unknown.
    Unknown(Ec2Error),
}

/// One action's result.
#[derive(Debug)]
pub struct PermissionCheck {
    /// The IAM action, e.g. `ec2:StartInstances`.
    pub action: &'static str,
    /// What EC2 said.
    pub result: Permission,
}

/// Asks EC2 about every action in [`ACTIONS`] with `DryRun`, for the bastion `instance_id` (its tags are what the
/// policy's conditions look at) and its VPC when known; CreateTags and DeleteTags with this daemon's lease key
/// `lease_key` (the policy limits them to `bastionctl:lease:*` keys). Each call is bounded by the client's timeouts.
pub async fn check(
    client: &aws_sdk_ec2::Client,
    instance_id: &str,
    vpc_id: Option<&str>,
    lease_key: &str,
) -> Vec<PermissionCheck> {
    use aws_sdk_ec2::types::{Filter, Tag};
    let id = instance_id.to_string();
    let tag = |v: Option<&str>| Tag::builder().key(lease_key).set_value(v.map(str::to_owned)).build();
    let by_id = Filter::builder().name("resource-id").values(&id).build();
    let results = [
        classify("DescribeInstances", client.describe_instances().instance_ids(&id).dry_run(true).send().await),
        classify("DescribeAddresses", client.describe_addresses().dry_run(true).send().await),
        classify(
            "DescribeVpcs",
            client.describe_vpcs().set_vpc_ids(vpc_id.map(|v| vec![v.into()])).dry_run(true).send().await,
        ),
        classify("StartInstances", client.start_instances().instance_ids(&id).dry_run(true).send().await),
        classify("StopInstances", client.stop_instances().instance_ids(&id).dry_run(true).send().await),
        classify("GetConsoleOutput", client.get_console_output().instance_id(&id).dry_run(true).send().await),
        classify("DescribeTags", client.describe_tags().filters(by_id).dry_run(true).send().await),
        classify(
            "CreateTags",
            client.create_tags().resources(&id).tags(tag(Some("1970-01-01T00:00:00Z"))).dry_run(true).send().await,
        ),
        classify("DeleteTags", client.delete_tags().resources(&id).tags(tag(None)).dry_run(true).send().await),
    ];
    ACTIONS.iter().zip(results).map(|(action, result)| PermissionCheck { action, result }).collect()
}

fn classify<T, E, R>(operation: &'static str, res: Result<T, SdkError<E, R>>) -> Permission
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match res {
        Ok(_) => Permission::Allowed,
        Err(e) => match Ec2Error::from_sdk(operation, e, None) {
            Ec2Error::Api { code, .. } if code == "DryRunOperation" => Permission::Allowed,
            err if err.kind() == "permission" => Permission::Missing { message: err.to_string() },
            other => Permission::Unknown(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::Client;
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::describe_addresses::DescribeAddressesError;
    use aws_sdk_ec2::operation::create_tags::CreateTagsError;
    use aws_sdk_ec2::operation::delete_tags::DeleteTagsError;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
    use aws_sdk_ec2::operation::describe_tags::DescribeTagsError;
    use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsError;
    use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
    use aws_sdk_ec2::operation::start_instances::StartInstancesError;
    use aws_sdk_ec2::operation::stop_instances::StopInstancesError;
    use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};

    use super::*;

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message("msg").build()
    }

    #[tokio::test]
    async fn dry_run_codes_are_read_as_allowed_missing_or_unknown() {
        let rules = [
            mock!(Client::describe_instances)
                .match_requests(|r| r.dry_run() == Some(true))
                .then_error(|| DescribeInstancesError::generic(meta("DryRunOperation"))),
            mock!(Client::describe_addresses).then_error(|| DescribeAddressesError::generic(meta("DryRunOperation"))),
            mock!(Client::describe_vpcs).then_error(|| DescribeVpcsError::generic(meta("InternalError"))),
            mock!(Client::start_instances).then_error(|| StartInstancesError::generic(meta("UnauthorizedOperation"))),
            mock!(Client::stop_instances).then_error(|| StopInstancesError::generic(meta("DryRunOperation"))),
            mock!(Client::get_console_output).then_output(|| GetConsoleOutputOutput::builder().build()),
            mock!(Client::describe_tags).then_error(|| DescribeTagsError::generic(meta("DryRunOperation"))),
            mock!(Client::create_tags)
                .match_requests(|r| r.tags().iter().all(|t| t.key().is_some_and(|k| k.starts_with("bastionctl:lease:"))))
                .then_error(|| CreateTagsError::generic(meta("UnauthorizedOperation"))),
            mock!(Client::delete_tags).then_error(|| DeleteTagsError::generic(meta("DryRunOperation"))),
        ];
        let interceptor =
            rules.iter().fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |i, r| i.with_rule(r));
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        let got = check(&Client::from_conf(config), "i-0123456789abcdef0", Some("vpc-1"), "bastionctl:lease:me").await;
        let summary: Vec<(&str, &str)> = got
            .iter()
            .map(|c| {
                let r = match &c.result {
                    Permission::Allowed => "allowed",
                    Permission::Missing { .. } => "missing",
                    Permission::Unknown(_) => "unknown",
                };
                (c.action, r)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("ec2:DescribeInstances", "allowed"),
                ("ec2:DescribeAddresses", "allowed"),
                ("ec2:DescribeVpcs", "unknown"),
                ("ec2:StartInstances", "missing"),
                ("ec2:StopInstances", "allowed"),
                ("ec2:GetConsoleOutput", "allowed"),
                ("ec2:DescribeTags", "allowed"),
                ("ec2:CreateTags", "missing"),
                ("ec2:DeleteTags", "allowed"),
            ]
        );
    }
}
