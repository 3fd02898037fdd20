//! Fault matrix of issue 4, the EC2 side (items 1, 2, 3, 4, 5, 7, 8, 14): the lab's fault-injecting front between
//! the product and moto, held instance states, credentials, a killed daemon, proxies in the environment. Every test
//! records a row of the reliability table (`bastionctl_lab::report`).

#[path = "faults_ec2/common.rs"]
mod common;
#[path = "faults_ec2/creds.rs"]
mod creds;
#[path = "faults_ec2/daemon.rs"]
mod daemon;
#[path = "faults_ec2/gone.rs"]
mod gone;
#[path = "faults_ec2/retry.rs"]
mod retry;

use std::time::{Duration, Instant};

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use bastionctl_lab::{Ec2Front, Fault, moto::Moto, world};

/// An SDK client for `url` with dummy credentials, standard retries of `attempts` and a 2 s attempt timeout.
fn client(url: &str, attempts: u32) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(Duration::from_secs(2)).build())
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

async fn state_via(c: &aws_sdk_ec2::Client, id: &str) -> Result<String, String> {
    let out = c.describe_instances().instance_ids(id).send().await.map_err(|e| {
        let code = e.code().map(str::to_string);
        code.unwrap_or_else(|| format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&e)))
    })?;
    let inst = out.reservations().iter().flat_map(|r| r.instances()).next().expect("one instance");
    Ok(inst.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_forwards_injects_holds_and_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path()).await.expect("moto");
    let w = world::seed(&moto.client(), "front", "127.0.2.9".parse().unwrap()).await.expect("seed");
    let front = Ec2Front::start(&moto.url()).await.expect("front");
    let id = w.instance_id.as_str();
    let c = client(&front.url(), 4);

    // Plain forwarding.
    assert_eq!(state_via(&c, id).await.unwrap(), "stopped");
    assert_eq!(front.actions(), ["DescribeInstances"]);

    // Throttling and 503 are retried by the SDK; the front saw every attempt.
    front.inject("DescribeInstances", Fault::Throttle, 2);
    front.inject("DescribeInstances", Fault::Status(503), 1);
    assert_eq!(state_via(&c, id).await.unwrap(), "stopped");
    assert_eq!(front.actions().len(), 5, "{:?}", front.actions());

    // Errors keep their code; faults are per action.
    front.inject("DescribeInstances", Fault::ExpiredToken, 1);
    assert_eq!(state_via(&c, id).await.unwrap_err(), "ExpiredToken");
    let err = Fault::Error { status: 400, code: "InvalidInstanceID.NotFound".into(), message: "gone".into() };
    front.inject("DescribeInstances", err, 1);
    assert_eq!(state_via(&c, id).await.unwrap_err(), "InvalidInstanceID.NotFound");

    // A hung answer runs into the client's attempt timeout (1 attempt, 2 s).
    front.inject("DescribeInstances", Fault::Hang, 1);
    let t = Instant::now();
    assert!(state_via(&client(&front.url(), 1), id).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(10), "hang not bounded by the client: {:?}", t.elapsed());

    // A delay delays, then forwards.
    front.inject("DescribeInstances", Fault::Delay(Duration::from_millis(700)), 1);
    let t = Instant::now();
    assert_eq!(state_via(&c, id).await.unwrap(), "stopped");
    assert!(t.elapsed() >= Duration::from_millis(700));

    // Held states: DescribeInstances lies, StartInstances is refused like real EC2 while stopping.
    front.hold_state(id, Some("stopping"));
    assert_eq!(state_via(&c, id).await.unwrap(), "stopping");
    let e = c.start_instances().instance_ids(id).send().await.unwrap_err();
    assert_eq!(e.code(), Some("IncorrectInstanceState"));
    front.hold_state(id, None);
    assert_eq!(state_via(&c, id).await.unwrap(), "stopped");
    c.start_instances().instance_ids(id).send().await.expect("start after release");
    front.hold_state(id, Some("pending"));
    assert_eq!(state_via(&c, id).await.unwrap(), "pending");
    assert_eq!(state_via(&moto.client(), id).await.unwrap(), "running", "moto itself is not changed");
    front.hold_state(id, None);

    // Console output.
    front.set_console_output(id, "SSH HOST KEY FINGERPRINTS\nhello".into());
    let out = c.get_console_output().instance_id(id).send().await.expect("console output");
    let text = out.output().map(|b| aws_smithy_types::base64::decode(b).expect("base64")).expect("output");
    assert_eq!(String::from_utf8(text).unwrap(), "SSH HOST KEY FINGERPRINTS\nhello");

    let actions = front.actions();
    assert!(actions.contains(&"StartInstances".to_string()) && actions.last().unwrap() == "GetConsoleOutput");
}
