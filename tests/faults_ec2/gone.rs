//! Items 4 and 7: a bastion that is gone or terminated while the daemon runs gives a clear error and the daemon keeps
//! serving the other bastion; a bastion stopped behind the daemon's back is started again on the next demand, and
//! channels open at that moment fail promptly.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bastionctl_lab::{Fault, Lab};

use super::common::*;

/// Runs a second instance in moto (stopped) and appends a `[[bastion]]` named `other` for it to the lab's config,
/// routing `127.0.3.2/32` port 22 to it. Returns its instance id.
async fn add_other_bastion(lab: &Lab) -> String {
    let ec2 = lab.ec2();
    let images = ec2.describe_images().owners("amazon").send().await.expect("DescribeImages");
    let image = images.images().iter().find_map(|i| i.image_id()).expect("an AMI").to_string();
    let run = ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&lab.world().public_subnet_id)
        .send()
        .await
        .expect("RunInstances");
    let id = run.instances().iter().find_map(|i| i.instance_id()).expect("instance id").to_string();
    ec2.stop_instances().instance_ids(&id).send().await.expect("StopInstances");
    let f = lab.files();
    let block = format!(
        "\n[[bastion]]\nname = \"other\"\ninstance_id = {id:?}\nuser = {user:?}\nport = {port}\n\
         identity_files = [{identity:?}]\nagent = false\nknown_hosts = {kh:?}\n\
         targets = [\"127.0.3.2/32\"]\ntarget_ports = [22]\n",
        user = lab.user(),
        port = lab.bastion_addr().port(),
        identity = f.identity.display().to_string(),
        kh = f.bastion_known_hosts.display().to_string(),
    );
    let mut text = std::fs::read_to_string(&f.config).expect("read config");
    text.push_str(&block);
    std::fs::write(&f.config, text).expect("write config");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_gone_or_terminated_bastion_fails_clearly_and_the_daemon_serves_others() {
    let lab = lab(opts(Duration::from_secs(60), Duration::from_secs(60))).await;
    let other = add_other_bastion(&lab).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let pid = lab.daemon_pid().await;
    let (first, _) = ssh(&lab, "echo ok").await;
    assert!(ok(&first, "ok\n"), "first ssh: {}{}", stderr(&first), diag(&lab));

    // Gone: EC2 no longer knows the id.
    let message = format!("The instance ID '{other}' does not exist");
    let not_found = Fault::Error { status: 400, code: "InvalidInstanceID.NotFound".into(), message };
    front(&lab).inject("DescribeInstances", not_found, 1);
    let (gone, gone_took) = proxy(&lab, "127.0.3.2", 22, &[]).await;
    let gone_err = stderr(&gone);
    let gone_clear = !gone.status.success() && gone_err.contains(&other) && gone_err.contains("not found");

    // Terminated.
    lab.ec2().terminate_instances().instance_ids(&other).send().await.expect("TerminateInstances");
    let (term, term_took) = proxy(&lab, "127.0.3.2", 22, &[]).await;
    let term_err = stderr(&term);
    let term_clear = !term.status.success() && term_err.contains("terminated") && term_err.contains("never");

    // The daemon is the same process and still serves the other bastion.
    let (again, again_took) = ssh(&lab, "echo ok").await;
    let same_daemon = lab.daemon_pid().await == pid && pid.is_some();
    let served = ok(&again, "ok\n");
    let status = lab.daemon_status().await.map(|s| s.len()).unwrap_or(0);
    record(
        &lab,
        "4",
        "Instance terminated or gone while the daemon runs",
        "a clear error naming the instance and what happened; the daemon stays up and keeps serving the other bastion",
        &format!(
            "gone (InvalidInstanceID.NotFound): proxy exited {} after {}: {:?}; terminated: exited {} after {}: {:?}; \
             same daemon afterwards: {same_daemon}; ssh through the other bastion {} in {}; status lists {status} bastions",
            gone.status,
            secs(gone_took),
            error_line(&gone_err),
            term.status,
            secs(term_took),
            error_line(&term_err),
            if served { "succeeded" } else { "FAILED" },
            secs(again_took),
        ),
        gone_clear
            && term_clear
            && same_daemon
            && served
            && status == 2
            && gone_took < Duration::from_secs(15)
            && term_took < Duration::from_secs(15),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case7_bastion_stopped_by_someone_else_is_restarted_and_open_channels_fail_promptly() {
    let lab = lab(opts(Duration::from_secs(60), Duration::from_secs(90))).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let id = lab.instance_id().to_string();
    let (first, _) = ssh(&lab, "echo ok").await;
    assert!(ok(&first, "ok\n"), "first ssh: {}{}", stderr(&first), diag(&lab));

    // Idle: stopped from the console; the next demand notices and starts it again.
    lab.ec2().stop_instances().instance_ids(&id).send().await.expect("StopInstances");
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await.expect("sshd gone after the stop");
    let (idle_again, idle_took) = ssh(&lab, "echo ok").await;
    let restarted = ok(&idle_again, "ok\n");
    let starts_after_idle = count(&lab, "StartInstances");

    // Busy: a channel is open when it is stopped; the ssh must end promptly.
    let mut busy = lab.ssh_command("echo open; sleep 600").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt;
        let mut rd = tokio::io::BufReader::new(busy.stdout.as_mut().unwrap());
        tokio::time::timeout(SSH_DEADLINE, rd.read_line(&mut line)).await.expect("channel open in time").unwrap();
    }
    assert_eq!(line, "open\n", "{}", diag(&lab));
    let t = Instant::now();
    lab.ec2().stop_instances().instance_ids(&id).send().await.expect("StopInstances");
    let busy_end = tokio::time::timeout(Duration::from_secs(60), busy.wait()).await;
    let busy_took = t.elapsed();
    let busy_status = busy_end.as_ref().ok().and_then(|r| r.as_ref().ok()).copied();
    let prompt = busy_status.is_some_and(|s| !s.success()) && busy_took < Duration::from_secs(15);

    // And after that, the next demand starts it again too.
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await.expect("sshd gone after the stop");
    let (after, after_took) = ssh(&lab, "echo ok").await;
    let recovered = ok(&after, "ok\n");
    record(
        &lab,
        "7",
        "Bastion stopped by someone else",
        "idle: the next demand notices and starts it again; with a channel open: the ssh fails promptly, nothing hangs",
        &format!(
            "stopped while idle: next ssh {} in {} (StartInstances so far {starts_after_idle}); stopped with a channel \
             open: ssh ended {:?} {} after the stop; next ssh {} in {}",
            if restarted { "succeeded" } else { "FAILED" },
            secs(idle_took),
            busy_status,
            secs(busy_took),
            if recovered { "succeeded" } else { "FAILED" },
            secs(after_took),
        ),
        restarted && starts_after_idle == 2 && prompt && recovered,
    );
}
