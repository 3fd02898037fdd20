//! Self-test of the lab alone, without the product: moto is seeded with a stopped bastion, the agent runs the
//! bastion sshd only while the instance runs, and the real `ssh` reaches the private host directly and through
//! OpenSSH's own ProxyJump.

use std::time::Duration;

use bastionctl_lab::{Lab, LabOptions};

const WAIT: Duration = Duration::from_secs(20);

async fn ssh_ok(lab: &Lab, host: &str) {
    let out = lab.ssh_host_command(host, "echo ok").output().await.expect("run ssh");
    assert!(
        out.status.success(),
        "ssh {host} failed: {}\nprivate sshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.private_log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_world_agent_and_fixtures() {
    let lab = Lab::start(LabOptions::new("/nonexistent/bastionctl")).await.expect("lab starts");
    let id = lab.instance_id().to_string();

    // The seeded world: a stopped bastion whose Elastic IP is the loopback address.
    assert_eq!(lab.instance_state().await.unwrap(), "stopped");
    let eip = bastionctl_lab::world::elastic_ip_of(lab.ec2(), &id).await.unwrap();
    assert_eq!(eip.as_deref(), Some("127.0.2.1"));
    assert!(!lab.bastion_sshd_running());

    // The private host answers directly.
    ssh_ok(&lab, "private-direct").await;

    // Start through the SDK: the agent brings the bastion sshd up after the boot delay.
    lab.ec2().start_instances().instance_ids(&id).send().await.unwrap();
    lab.wait_bastion_sshd(true, WAIT).await.unwrap_or_else(|e| panic!("{e:#}; agent: {:?}", lab.agent_error()));
    assert_eq!(lab.bastion_sshd_starts(), 1);

    // OpenSSH's own ProxyJump through the bastion: the bastion logs the direct-tcpip request.
    ssh_ok(&lab, "private-jump").await;
    let log = lab.bastion_log();
    assert!(log.contains(&lab.direct_tcpip_marker()), "no direct-tcpip line in the bastion log:\n{log}");

    // Stop: the sshd goes away and refuses connections.
    lab.ec2().stop_instances().instance_ids(&id).send().await.unwrap();
    lab.wait_bastion_sshd(false, WAIT).await.unwrap();

    // The lab's own calls are not counted as the product's; no user private key in the bastion fixture.
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 0);
    assert!(lab.fixture_files().len() >= 4, "{:?}", lab.fixture_files());
    assert!(lab.fixture_files_with_user_private_key().unwrap().is_empty());
    // Planting the key must be caught by the check.
    std::fs::copy(&lab.user_key().private, lab.dir().join("bastion/planted")).unwrap();
    assert_eq!(lab.fixture_files_with_user_private_key().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labs_run_side_by_side() {
    let (a, b) = tokio::join!(Lab::start(LabOptions::new("bastionctl")), Lab::start(LabOptions::new("bastionctl")));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.bastion_addr(), b.bastion_addr());
    assert_ne!(a.moto_url(), b.moto_url());
    a.ec2().start_instances().instance_ids(a.instance_id()).send().await.unwrap();
    a.wait_bastion_sshd(true, WAIT).await.unwrap();
    assert!(!b.bastion_sshd_running(), "starting lab a's instance must not touch lab b");
    assert_eq!(b.instance_state().await.unwrap(), "stopped");
}
