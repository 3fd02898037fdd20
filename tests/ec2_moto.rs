//! `AwsEc2` against a real moto server on 127.0.0.1: config loading (endpoint, region, env credentials), describe,
//! find_by_name_tag, elastic_ip, stop, start, and the NotFound mapping of a real `InvalidInstanceID.NotFound`.
//!
//! Fails with a message naming scripts/install-deps.sh when `moto_server` is not installed. Everything runs in one
//! test function because it sets the AWS environment variables of the process, which must not race with another test.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    DomainType, InstanceNetworkInterfaceSpecification, InstanceType, ResourceType, Tag, TagSpecification,
};
use bastionctl::config::AwsConfig;
use bastionctl::ec2::aws::AwsEc2;
use bastionctl::ec2::{Ec2Api, Ec2Error, InstanceState};
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const NAME_TAG: &str = "ec2-moto-bastion";
const EIP: &str = "127.0.2.1";

/// A moto server on a free loopback port; killed when dropped.
struct Moto {
    _child: Child,
    url: String,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

async fn start_moto(dir: &Path) -> Moto {
    let port = free_port();
    let log = std::fs::File::create(dir.join("moto.log")).expect("moto log");
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn();
    let mut child = child.unwrap_or_else(|e| panic!("cannot run moto_server ({e}): run scripts/install-deps.sh"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Moto { _child: child, url: format!("http://{addr}") };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto_server exited with {status}; see {}", dir.join("moto.log").display());
        }
        assert!(Instant::now() < deadline, "moto_server not listening on {addr} after {READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a VPC, a subnet, one tagged instance without a public IP, and an Elastic IP associated with it.
async fn create_world(client: &Client) -> (String, String) {
    let vpc = client.create_vpc().cidr_block("10.77.0.0/16").send().await.expect("CreateVpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_owned();
    let subnet = client.create_subnet().vpc_id(&vpc_id).cidr_block("10.77.1.0/24").send().await.expect("CreateSubnet");
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned();
    let images = client.describe_images().owners("amazon").send().await.expect("DescribeImages");
    let image_id = images.images().iter().find_map(|i| i.image_id()).expect("an AMI in moto's catalogue").to_owned();
    let run = client
        .run_instances()
        .image_id(image_id)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&subnet_id)
                .associate_public_ip_address(false)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value(NAME_TAG).build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    let instance_id = run.instances().first().and_then(|i| i.instance_id()).expect("instance id").to_owned();
    let eip = client.allocate_address().domain(DomainType::Vpc).address(EIP).send().await.expect("AllocateAddress");
    client
        .associate_address()
        .allocation_id(eip.allocation_id().expect("allocation id"))
        .instance_id(&instance_id)
        .send()
        .await
        .expect("AssociateAddress");
    (instance_id, vpc_id)
}

#[allow(unsafe_code)]
fn set_lab_env(dir: &Path) {
    let empty = dir.join("empty");
    std::fs::write(&empty, "").expect("empty aws file");
    // SAFETY: the only test in this binary; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_CONFIG_FILE", &empty);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &empty);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_EC2",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            std::env::remove_var(var);
        }
    }
}

#[tokio::test]
async fn aws_ec2_against_moto() {
    let dir = tempfile::tempdir().expect("temp dir");
    set_lab_env(dir.path());
    let moto = start_moto(dir.path()).await;

    // No region anywhere: a clear error before any call.
    let no_region =
        AwsEc2::from_config(&AwsConfig { endpoint_url: Some(moto.url.clone()), ..Default::default() }).await;
    assert!(matches!(no_region, Err(Ec2Error::NoRegion)), "{no_region:?}");

    let cfg = AwsConfig { profile: None, region: Some("us-east-1".into()), endpoint_url: Some(moto.url.clone()) };
    let ec2 = AwsEc2::from_config(&cfg).await.expect("from_config");
    let (id, vpc_id) = create_world(ec2.client()).await;

    let info = ec2.describe(&id).await.expect("describe");
    assert_eq!(info.instance_id, id);
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.vpc_id.as_deref(), Some(vpc_id.as_str()));

    assert_eq!(ec2.find_by_name_tag(NAME_TAG).await.expect("find_by_name_tag"), id);
    let missing = ec2.find_by_name_tag("no-such-bastion").await;
    assert!(matches!(missing, Err(Ec2Error::NotFound { .. })), "{missing:?}");

    let eip: IpAddr = EIP.parse().expect("ip");
    assert_eq!(ec2.elastic_ip(&id).await.expect("elastic_ip"), Some(eip));

    ec2.stop(&id).await.expect("stop");
    assert_eq!(ec2.describe(&id).await.expect("describe").state, InstanceState::Stopped);
    ec2.start(&id).await.expect("start");
    assert_eq!(ec2.describe(&id).await.expect("describe").state, InstanceState::Running);
    assert_eq!(ec2.elastic_ip(&id).await.expect("elastic_ip"), Some(eip));

    let unknown = "i-0123456789abcdef0";
    for result in [ec2.describe(unknown).await.map(|_| ()), ec2.start(unknown).await] {
        match result {
            Err(e @ Ec2Error::NotFound { .. }) => assert!(e.to_string().contains(unknown), "{e}"),
            other => panic!("expected NotFound for {unknown}, got {other:?}"),
        }
    }
}
