//! [`AwsEc2`] against `aws-smithy-mocks` rules: parsing of outputs and mapping of error paths, no network.

use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_addresses::DescribeAddressesOutput;
use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
use aws_sdk_ec2::operation::start_instances::{StartInstancesError, StartInstancesOutput};
use aws_sdk_ec2::types::{Address, Instance, InstanceState as SdkState, InstanceStateName, Reservation};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};

use super::*;

/// What `mock_client!` does, without needing aws-sdk-ec2's `test-util` feature (which would compile the EC2 crate a
/// second time): static dummy credentials, a fixed region, the mock HTTP client and the rules' interceptor.
fn mock_config(rules: &[&Rule]) -> aws_sdk_ec2::config::Builder {
    let interceptor =
        rules.iter().fold(MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny), |i, r| i.with_rule(r));
    aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(
            RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(Duration::from_millis(1)),
        )
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
}

/// A real HTTP client aimed at a loopback port nobody listens on (connection refused), with fast retries.
fn unreachable_config() -> aws_sdk_ec2::config::Builder {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(RetryConfig::standard().with_max_attempts(2).with_initial_backoff(Duration::from_millis(1)))
}

fn mock_ec2(rules: &[&Rule]) -> AwsEc2 {
    AwsEc2::from_client(Client::from_conf(mock_config(rules).build()))
}

fn instance(id: &str, state: InstanceStateName, ip: Option<&str>) -> Instance {
    Instance::builder()
        .instance_id(id)
        .state(SdkState::builder().name(state).build())
        .set_public_ip_address(ip.map(Into::into))
        .vpc_id("vpc-1234")
        .build()
}

fn reservations(instances: Vec<Instance>) -> DescribeInstancesOutput {
    let r = instances.into_iter().fold(Reservation::builder(), |b, i| b.instances(i)).build();
    DescribeInstancesOutput::builder().reservations(r).build()
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message("You are not authorized to perform this operation.").build()
}

#[tokio::test]
async fn describe_parses_state_ip_and_vpc() {
    let rule =
        mock!(Client::describe_instances).match_requests(|r| r.instance_ids() == ["i-0123456789abcdef0"]).then_output(
            || reservations(vec![instance("i-0123456789abcdef0", InstanceStateName::Stopping, Some("203.0.113.7"))]),
        );
    let info = mock_ec2(&[&rule]).describe("i-0123456789abcdef0").await.unwrap();
    assert_eq!(
        info,
        InstanceInfo {
            instance_id: "i-0123456789abcdef0".into(),
            state: InstanceState::Stopping,
            public_ip: Some("203.0.113.7".parse().unwrap()),
            vpc_id: Some("vpc-1234".into()),
        }
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_without_public_ip() {
    let rule = mock!(Client::describe_instances)
        .then_output(|| reservations(vec![instance("i-1", InstanceStateName::Stopped, None)]));
    let info = mock_ec2(&[&rule]).describe("i-1").await.unwrap();
    assert_eq!(info.state, InstanceState::Stopped);
    assert_eq!(info.public_ip, None);
}

#[tokio::test]
async fn describe_unknown_id_is_not_found() {
    let rule = mock!(Client::describe_instances)
        .then_error(|| DescribeInstancesError::generic(meta("InvalidInstanceID.NotFound")));
    let err = mock_ec2(&[&rule]).describe("i-0123456789abcdef0").await.unwrap_err();
    assert!(matches!(&err, Ec2Error::NotFound { what } if what.contains("i-0123456789abcdef0")), "{err:?}");
    assert!(err.hint().unwrap().contains("instance_id"));

    let empty = mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build());
    let err = mock_ec2(&[&empty]).describe("i-1").await.unwrap_err();
    assert!(matches!(err, Ec2Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn start_unauthorized_keeps_code_and_names_iam_action() {
    let rule =
        mock!(Client::start_instances).then_error(|| StartInstancesError::generic(meta("UnauthorizedOperation")));
    let err = mock_ec2(&[&rule]).start("i-1").await.unwrap_err();
    match &err {
        Ec2Error::Api { operation, code, .. } => {
            assert_eq!(*operation, "StartInstances");
            assert_eq!(code, "UnauthorizedOperation");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(err.kind(), "permission");
    let hint = err.hint().unwrap();
    assert!(hint.contains("ec2:StartInstances"), "{hint}");
    assert_eq!(rule.num_calls(), 1, "permission errors are not retried");
}

#[tokio::test]
async fn start_is_retried_on_throttling() {
    let rule = mock!(Client::start_instances)
        .sequence()
        .error(|| StartInstancesError::generic(meta("RequestLimitExceeded")))
        .times(2)
        .output(|| StartInstancesOutput::builder().build())
        .build();
    mock_ec2(&[&rule]).start("i-1").await.unwrap();
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_with_code() {
    let rule = mock!(Client::stop_instances)
        .sequence()
        .error(|| aws_sdk_ec2::operation::stop_instances::StopInstancesError::generic(meta("InternalError")))
        .repeatedly()
        .build();
    // A modeled error with no HTTP status is not a 5xx to the classifier, so give the attempt count a bound anyway.
    let err = mock_ec2(&[&rule]).stop("i-1").await.unwrap_err();
    assert!(
        matches!(&err, Ec2Error::Api { code, operation: "StopInstances", .. } if code == "InternalError"),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(rule.num_calls() <= MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn find_by_name_tag_none_one_several() {
    let none = mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build());
    let err = mock_ec2(&[&none]).find_by_name_tag("lab").await.unwrap_err();
    assert!(matches!(&err, Ec2Error::NotFound { what } if what.contains("Name=lab")), "{err:?}");

    let one = mock!(Client::describe_instances)
        .match_requests(|r| {
            let f = r.filters();
            f.iter().any(|f| f.name() == Some("tag:Name") && f.values() == ["lab"])
                && f.iter().any(|f| {
                    f.name() == Some("instance-state-name")
                        && f.values() == ["pending", "running", "stopping", "stopped"]
                })
        })
        .then_output(|| reservations(vec![instance("i-1", InstanceStateName::Stopped, None)]));
    assert_eq!(mock_ec2(&[&one]).find_by_name_tag("lab").await.unwrap(), "i-1");
    assert_eq!(one.num_calls(), 1);

    let several = mock!(Client::describe_instances).then_output(|| {
        reservations(vec![
            instance("i-2", InstanceStateName::Running, None),
            instance("i-1", InstanceStateName::Stopped, None),
        ])
    });
    let err = mock_ec2(&[&several]).find_by_name_tag("lab").await.unwrap_err();
    match &err {
        Ec2Error::Ambiguous { name, ids } => {
            assert_eq!(name, "lab");
            assert_eq!(ids, &["i-1", "i-2"]);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

#[tokio::test]
async fn find_by_name_tag_follows_pages() {
    let rule = mock!(Client::describe_instances)
        .sequence()
        .output(|| {
            let mut out = reservations(vec![instance("i-1", InstanceStateName::Stopped, None)]);
            out.next_token = Some("page2".into());
            out
        })
        .output(|| reservations(vec![instance("i-2", InstanceStateName::Stopped, None)]))
        .build();
    let err = mock_ec2(&[&rule]).find_by_name_tag("lab").await.unwrap_err();
    assert!(matches!(&err, Ec2Error::Ambiguous { ids, .. } if ids.len() == 2), "{err:?}");
}

fn with_private_ip(id: &str, ip: Option<&str>) -> Instance {
    named(id, ip, "web")
}

fn named(id: &str, ip: Option<&str>, name: &str) -> Instance {
    Instance::builder()
        .instance_id(id)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(name).build())
        .state(SdkState::builder().name(InstanceStateName::Running).build())
        .set_private_ip_address(ip.map(Into::into))
        .vpc_id("vpc-1234")
        .build()
}

#[tokio::test]
async fn private_ips_by_name_asks_for_running_instances_of_the_vpc_by_tag() {
    let rule = mock!(Client::describe_instances)
        .match_requests(|r| {
            let has = |name: &str, values: &[&str]| {
                r.filters().iter().any(|f| f.name() == Some(name) && f.values() == values)
            };
            has("tag-key", &["Name"]) && has("vpc-id", &["vpc-1234"]) && has("instance-state-name", &["running"])
        })
        .then_output(|| {
            reservations(vec![
                with_private_ip("i-2", Some("10.0.16.6")),
                with_private_ip("i-3", None),
                with_private_ip("i-1", Some("10.0.16.5")),
            ])
        });
    let got = mock_ec2(&[&rule]).private_ips_by_name("vpc-1234", "web").await.unwrap();
    let want = [("i-1", "10.0.16.5"), ("i-2", "10.0.16.6")]
        .map(|(id, ip)| NamedInstance { instance_id: id.into(), private_ip: ip.parse().unwrap() });
    assert_eq!(got, want, "sorted by id; an instance without a private IP is left out");
    assert_eq!(rule.num_calls(), 1);

    let none = mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build());
    assert_eq!(mock_ec2(&[&none]).private_ips_by_name("vpc-1234", "web").await.unwrap(), []);
}

#[tokio::test]
async fn private_ips_by_name_ignores_the_case_of_name_tags() {
    let rule = mock!(Client::describe_instances).then_output(|| {
        reservations(vec![
            named("i-1", Some("10.0.16.5"), "Web"),
            named("i-2", Some("10.0.16.6"), "db"),
            named("i-3", Some("10.0.16.7"), "web-2"),
        ])
    });
    let got = mock_ec2(&[&rule]).private_ips_by_name("vpc-1234", "web").await.unwrap();
    let ids: Vec<&str> = got.iter().map(|n| n.instance_id.as_str()).collect();
    assert_eq!(ids, ["i-1"], "Name=Web is found by `web`, and only it");

    let twins = mock!(Client::describe_instances).then_output(|| {
        reservations(vec![named("i-1", Some("10.0.16.5"), "Web"), named("i-2", Some("10.0.16.6"), "WEB")])
    });
    let got = mock_ec2(&[&twins]).private_ips_by_name("vpc-1234", "web").await.unwrap();
    assert_eq!(got.len(), 2, "two that differ only in case are both found (the route calls that ambiguous)");
}

#[tokio::test]
async fn private_ips_by_name_follows_pages() {
    let rule = mock!(Client::describe_instances)
        .sequence()
        .output(|| {
            let mut out = reservations(vec![with_private_ip("i-1", Some("10.0.16.5"))]);
            out.next_token = Some("page2".into());
            out
        })
        .output(|| reservations(vec![with_private_ip("i-2", Some("10.0.16.6"))]))
        .build();
    let got = mock_ec2(&[&rule]).private_ips_by_name("vpc-1234", "web").await.unwrap();
    let ids: Vec<&str> = got.iter().map(|n| n.instance_id.as_str()).collect();
    assert_eq!(ids, ["i-1", "i-2"]);
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn private_ips_by_name_errors_keep_their_code_or_name_the_field() {
    let denied = mock!(Client::describe_instances)
        .then_error(|| DescribeInstancesError::generic(meta("UnauthorizedOperation")));
    let err = mock_ec2(&[&denied]).private_ips_by_name("vpc-1234", "web").await.unwrap_err();
    assert!(
        matches!(&err, Ec2Error::Api { operation: "DescribeInstances", code, .. } if code == "UnauthorizedOperation"),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("ec2:DescribeInstances"), "{err:?}");

    let bad = mock!(Client::describe_instances)
        .then_output(|| reservations(vec![with_private_ip("i-1", Some("not-an-ip"))]));
    let err = mock_ec2(&[&bad]).private_ips_by_name("vpc-1234", "web").await.unwrap_err();
    assert!(
        matches!(&err, Ec2Error::BadResponse { detail, .. } if detail.contains("PrivateIpAddress `not-an-ip`")),
        "{err:?}"
    );

    let err = AwsEc2::from_client(Client::from_conf(unreachable_config().build()))
        .private_ips_by_name("vpc-1234", "web")
        .await
        .unwrap_err();
    assert!(matches!(err, Ec2Error::Network { operation: "DescribeInstances", .. }), "{err:?}");
}

#[tokio::test]
async fn elastic_ip_none_and_some() {
    let none = mock!(Client::describe_addresses).then_output(|| DescribeAddressesOutput::builder().build());
    assert_eq!(mock_ec2(&[&none]).elastic_ip("i-1").await.unwrap(), None);

    let some = mock!(Client::describe_addresses)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("instance-id") && f.values() == ["i-1"]))
        .then_output(|| {
            DescribeAddressesOutput::builder()
                .addresses(Address::builder().instance_id("i-1").public_ip("198.51.100.4").build())
                .build()
        });
    assert_eq!(mock_ec2(&[&some]).elastic_ip("i-1").await.unwrap(), Some("198.51.100.4".parse().unwrap()));
}

#[tokio::test]
#[allow(deprecated)]
async fn missing_credentials_are_reported_as_such() {
    use aws_config::profile::ProfileFileCredentialsProvider;
    use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let files = ProfileFiles::builder()
        .with_file(ProfileFileKind::Config, &empty)
        .with_file(ProfileFileKind::Credentials, &empty)
        .build();
    let provider = ProfileFileCredentialsProvider::builder().profile_files(files).profile_name("nope").build();
    // The mock interceptor answers before credentials are resolved, so use a real (refused) endpoint instead.
    let conf = unreachable_config().credentials_provider(SharedCredentialsProvider::new(provider)).build();
    let ec2 = AwsEc2 { client: Client::from_conf(conf), profile: Some("nope".into()) };
    let err = ec2.start("i-1").await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Ec2Error::NoCredentials { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("--profile nope"));
}

#[tokio::test]
async fn refused_connection_is_a_network_error() {
    let conf = unreachable_config().build();
    let ec2 = AwsEc2::from_client(Client::from_conf(conf));
    let err = ec2.describe("i-1").await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Ec2Error::Network { operation: "DescribeInstances", .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains("secret"));
}

#[tokio::test]
async fn vpc_cidrs_lists_every_associated_block_primary_first() {
    use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsOutput;
    use aws_sdk_ec2::types::{
        Vpc, VpcCidrBlockAssociation, VpcCidrBlockState, VpcCidrBlockStateCode, VpcIpv6CidrBlockAssociation,
    };
    fn state(s: VpcCidrBlockStateCode) -> VpcCidrBlockState {
        VpcCidrBlockState::builder().state(s).build()
    }
    fn v4(cidr: &str, s: VpcCidrBlockStateCode) -> VpcCidrBlockAssociation {
        VpcCidrBlockAssociation::builder().cidr_block(cidr).cidr_block_state(state(s)).build()
    }
    let rule = mock!(Client::describe_vpcs).match_requests(|r| r.vpc_ids() == ["vpc-1234"]).then_output(move || {
        let vpc = Vpc::builder()
            .vpc_id("vpc-1234")
            .cidr_block("10.0.0.0/16")
            .cidr_block_association_set(v4("10.0.0.0/16", VpcCidrBlockStateCode::Associated))
            .cidr_block_association_set(v4("100.64.0.0/20", VpcCidrBlockStateCode::Associated))
            .cidr_block_association_set(v4("172.16.0.0/24", VpcCidrBlockStateCode::Disassociated))
            .ipv6_cidr_block_association_set(
                VpcIpv6CidrBlockAssociation::builder()
                    .ipv6_cidr_block("2600:1f18:abcd:ef00::/56")
                    .ipv6_cidr_block_state(state(VpcCidrBlockStateCode::Associated))
                    .build(),
            )
            .build();
        DescribeVpcsOutput::builder().vpcs(vpc).build()
    });
    let got = mock_ec2(&[&rule]).vpc_cidrs("vpc-1234").await.unwrap();
    let want: Vec<IpNet> =
        ["10.0.0.0/16", "100.64.0.0/20", "2600:1f18:abcd:ef00::/56"].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn vpc_cidrs_of_an_unknown_vpc_is_not_found() {
    use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsError;
    let rule = mock!(Client::describe_vpcs).then_error(|| DescribeVpcsError::generic(meta("InvalidVpcID.NotFound")));
    let err = mock_ec2(&[&rule]).vpc_cidrs("vpc-0bad").await.unwrap_err();
    assert!(matches!(&err, Ec2Error::NotFound { what } if what == "VPC vpc-0bad"), "{err:?}");
}
