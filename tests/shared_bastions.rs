//! Shared bastions (issue 8), in the lab with the EC2 front: two daemons (two users' configs, homes and sockets) on
//! one instance, coordinated only through lease tags on it. Every test records a row of the reliability table.

#[path = "faults_ec2/common.rs"]
#[allow(dead_code)]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use bastionctl_lab::{Fault, Lab, OtherUser};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The holder named by `user`'s (or, for `None`, the lab's own) daemon in `status`.
async fn holder_of(lab: &Lab, user: Option<&OtherUser>) -> String {
    let st = match user {
        Some(u) => lab.status_as(u).await,
        None => lab.daemon_status().await,
    };
    let st = st.unwrap_or_else(|e| panic!("status: {e:#}{}", diag(lab)));
    st[0].holder.clone().expect("status names this daemon's holder")
}

/// The lease of `holder` on the instance, as `user`'s status lists it: (expiry, valid, mine).
async fn lease_seen_by(lab: &Lab, user: &OtherUser, holder: &str) -> Option<(String, bool, bool)> {
    let st = lab.status_as(user).await.ok()?;
    st[0].leases.iter().find(|l| l.holder == holder).map(|l| (l.expires.clone(), l.valid, l.mine))
}

/// StopInstances calls that reached moto from the daemons (not the lab's own client).
fn stops(lab: &Lab) -> usize {
    lab.moto_foreign_actions().unwrap_or_default().iter().filter(|a| *a == "StopInstances").count()
}

async fn wait_log(lab: &Lab, what: &str, within: Duration, log: impl Fn() -> String) {
    wait_for(lab, what, within, || log().contains(what)).await;
}

fn spawn_ssh(lab: &Lab, cmd: &str) -> tokio::process::Child {
    lab.ssh_command(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ssh")
}

async fn finish(lab: &Lab, child: tokio::process::Child, within: Duration) -> std::process::Output {
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh did not finish within {within:?}{}", diag(lab)))
        .expect("wait for ssh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_one_bastion_it_keeps_running_for_the_user_and_stops_once() {
    let ttl = Duration::from_secs(6);
    let idle_a = Duration::from_secs(4);
    let mut o = opts(idle_a, Duration::from_secs(90));
    o.lease_ttl = Some(ttl);
    let lab = lab(o).await;
    let _a = lab.start_daemon().await.expect("A's daemon");
    let b_user = lab.other_user("b", Duration::from_secs(3), Some(ttl)).expect("user B");

    // A holds a session open; B's daemon starts once the bastion runs, so it adopts it with no channel of its own.
    let a_ssh = spawn_ssh(&lab, "sleep 20; echo done");
    lab.wait_bastion_sshd(true, SSH_DEADLINE).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(&lab)));
    let _b = lab.start_daemon_as(&b_user).await.expect("B's daemon");
    let holder_a = holder_of(&lab, None).await;
    let holder_b = holder_of(&lab, Some(&b_user)).await;
    wait_log(&lab, "not stopping: in use by", Duration::from_secs(20), || b_user.daemon_log()).await;
    let seen = lease_seen_by(&lab, &b_user, &holder_a).await;
    let a_out = finish(&lab, a_ssh, Duration::from_secs(60)).await;
    let closed = Instant::now();
    let served = ok(&a_out, "done\n");
    let stops_while_open = stops(&lab);

    // After A's channel closes and A's idle time passes, the bastion stops, once.
    let stopped = lab.wait_instance_state("stopped", idle_a + STOP_SLACK).await.is_ok();
    let stop_after = closed.elapsed();
    tokio::time::sleep(ttl + Duration::from_secs(2)).await; // B's next look must not stop it again
    let total_stops = stops(&lab);
    let b_blocked = b_user.daemon_log().matches("not stopping: in use by").count();
    record(
        &lab,
        "shared-1",
        "Two daemons on one bastion",
        "user B's daemon (idle_timeout 3 s, no channel) never stops the bastion under user A's open `ssh 'sleep 20'`; \
         after A's channel closes and A's idle time passes it stops exactly once",
        &format!(
            "B saw A's lease {seen:?} (expiry, valid, mine) and held back {b_blocked} time(s); A's ssh {} after 20 s \
             with {stops_while_open} StopInstances meanwhile; stopped {} after A's channel closed (A's idle_timeout \
             {}); StopInstances in total: {total_stops}; holders A={holder_a} B={holder_b}",
            if served { "completed" } else { "FAILED" },
            if stopped { secs(stop_after) } else { "NEVER".into() },
            secs(idle_a),
        ),
        served
            && stops_while_open == 0
            && seen.as_ref().is_some_and(|(_, valid, mine)| *valid && !mine)
            && b_blocked >= 1
            && stopped
            && stop_after >= idle_a
            && total_stops == 1
            && holder_a != holder_b,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_holder_blocks_only_until_its_lease_expires() {
    let ttl = Duration::from_secs(8);
    let mut o = opts(Duration::from_secs(60), Duration::from_secs(90));
    o.lease_ttl = Some(ttl);
    let lab = lab(o).await;
    let mut a = lab.start_daemon().await.expect("A's daemon");
    let b_user = lab.other_user("b", Duration::from_secs(2), Some(ttl)).expect("user B");
    let a_ssh = spawn_ssh(&lab, "sleep 60");
    lab.wait_bastion_sshd(true, SSH_DEADLINE).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(&lab)));
    let holder_a = holder_of(&lab, None).await;
    let _b = lab.start_daemon_as(&b_user).await.expect("B's daemon");
    wait_log(&lab, "not stopping: in use by", Duration::from_secs(20), || b_user.daemon_log()).await;

    // SIGKILL A while it holds the lease; its last expiry is what B must wait for.
    let pid = a.pid().expect("A's pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL A");
    wait_for(&lab, "A to be reaped", Duration::from_secs(10), || a.exited().is_some()).await;
    drop(a_ssh);
    let (expires, _, _) = lease_seen_by(&lab, &b_user, &holder_a).await.expect("A's lease is still on the instance");
    let expiry = humantime::parse_rfc3339(&expires).expect("RFC 3339 expiry");
    let before = expiry.duration_since(SystemTime::now()).unwrap_or_default().saturating_sub(Duration::from_millis(500));
    tokio::time::sleep(before).await;
    let running_before_expiry = lab.instance_state().await.unwrap_or_default();
    let stopped = lab.wait_instance_state("stopped", ttl + STOP_SLACK).await.is_ok();
    let late = SystemTime::now().duration_since(expiry).unwrap_or_default();
    let cleaned = lease_seen_by(&lab, &b_user, &holder_a).await.is_none();
    record(
        &lab,
        "shared-2",
        "Lease holder SIGKILLed",
        "the other daemon stops the bastion once the dead holder's lease has expired (lease_ttl 8 s), not before",
        &format!(
            "A SIGKILLed holding a lease until {expires}; 0.5 s before that the bastion was {running_before_expiry}; \
             B stopped it {} after the expiry and removed the stale lease: {cleaned}; StopInstances: {}",
            if stopped { secs(late) } else { "NEVER".into() },
            stops(&lab)
        ),
        running_before_expiry == "running" && stopped && stops(&lab) == 1 && cleaned,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_meeting_another_daemons_stop_waits_and_is_served() {
    let mut o = opts(Duration::from_secs(60), Duration::from_secs(90));
    o.lease_ttl = Some(Duration::from_secs(6));
    let lab = lab(o).await;
    let _a = lab.start_daemon().await.expect("A's daemon");
    let b_user = lab.other_user("b", Duration::from_secs(3), Some(Duration::from_secs(6))).expect("user B");
    let _b = lab.start_daemon_as(&b_user).await.expect("B's daemon");
    front(&lab).inject("StopInstances", Fault::Delay(Duration::from_secs(4)), 1);
    let up = lab.bastionctl_as(&b_user, ["up"]).output().await.expect("bastionctl up as B");
    assert!(up.status.success(), "up as B: {}{}", String::from_utf8_lossy(&up.stderr), diag(&lab));

    // B's idle stop is on its way (delayed by the front); the instance reports `stopping` meanwhile.
    let id = lab.instance_id().to_string();
    wait_for(&lab, "B's StopInstances", Duration::from_secs(30), || count(&lab, "StopInstances") >= 1).await;
    front(&lab).hold_state(&id, Some("stopping"));
    let t = Instant::now();
    let a_ssh = spawn_ssh(&lab, "echo served");
    lab.wait_instance_state("stopped", Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(&lab)));
    front(&lab).hold_state(&id, None);
    let out = finish(&lab, a_ssh, SSH_DEADLINE).await;
    let took = t.elapsed();
    let err = stderr(&out);
    let waited = err.contains("is stopping; it will be started again once stopped");
    let starts = lab.moto_start_instances_calls().unwrap_or_default();
    record(
        &lab,
        "shared-3",
        "Stop/connect race between two daemons",
        "a demand that arrives while the other daemon is stopping the bastion waits for `stopped`, starts it again \
         and is served",
        &format!(
            "B's StopInstances delayed 4 s by the front, instance `stopping`; A's ssh {} in {} (said it waits: \
             {waited}); StartInstances: {starts} (B's up and A's restart), StopInstances: {}",
            if ok(&out, "served\n") { "succeeded" } else { "FAILED" },
            secs(took),
            stops(&lab)
        ),
        ok(&out, "served\n") && waited && starts == 2 && stops(&lab) == 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_tags_it_works_in_single_user_mode_and_says_why() {
    let lab = lab(opts(Duration::from_secs(3), Duration::from_secs(90))).await;
    let denied = |op: &str| Fault::Error {
        status: 403,
        code: "UnauthorizedOperation".into(),
        message: format!("You are not authorized to perform this operation. ({op})"),
    };
    front(&lab).inject("CreateTags", denied("CreateTags"), 1000);
    front(&lab).inject("DeleteTags", denied("DeleteTags"), 1000);
    let _d = lab.start_daemon().await.expect("daemon");
    let (first, _) = ssh(&lab, "echo one").await;
    let (second, _) = ssh(&lab, "echo two").await;
    let said_to_user = stderr(&first).contains("single-user mode") && stderr(&first).contains("ec2:CreateTags");
    let stopped = lab.wait_instance_state("stopped", Duration::from_secs(3) + STOP_SLACK).await.is_ok();
    let log = lab.daemon_log();
    let in_log = log.matches("single-user mode").count();
    let doctor = lab.bastionctl_command(["doctor"]).output().await.expect("doctor");
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let doctor_says = report.lines().any(|l| {
        l.starts_with("FAIL") && l.contains("ec2:CreateTags is not allowed") && l.contains("single-user mode")
    }) && report.contains("bastionctl:lease:*");
    record(
        &lab,
        "shared-4",
        "CreateTags denied (single-user mode)",
        "connections are served and the idle stop still works; the log says once why and how to fix it, and so do \
         the user's stderr and `doctor`",
        &format!(
            "two ssh runs: {} and {}; told on stderr: {said_to_user}; `single-user mode` in the log {in_log} time(s); \
             idle stop: {stopped}; doctor exit {} with a FAIL line naming ec2:CreateTags and the fix: {doctor_says}",
            if ok(&first, "one\n") { "ok" } else { "FAILED" },
            if ok(&second, "two\n") { "ok" } else { "FAILED" },
            doctor.status
        ),
        ok(&first, "one\n")
            && ok(&second, "two\n")
            && said_to_user
            && in_log == 1
            && stopped
            && !doctor.status.success()
            && doctor_says,
    );
}

/// Sends one `status` request of protocol version `v` on the raw socket and returns the first bastion's record.
async fn raw_status(lab: &Lab, v: u32) -> serde_json::Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::UnixStream::connect(&lab.files().socket).await.expect("connect to the daemon");
    s.write_all(format!("{{\"v\":{v},\"op\":\"status\"}}\n").as_bytes()).await.expect("send");
    let mut line = String::new();
    let mut r = BufReader::new(s);
    let read = r.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("status answered").expect("read");
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    reply["status"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_keeps_version_1_clients_working_and_doctor_sees_the_watchdog_tag() {
    let lab = lab(opts(Duration::from_secs(60), Duration::from_secs(90))).await;
    let _d = lab.start_daemon().await.expect("daemon");
    wait_log(&lab, "found the bastion", Duration::from_secs(20), || lab.daemon_log()).await;
    let denied = || Fault::Error { status: 403, code: "UnauthorizedOperation".into(), message: "not allowed".into() };

    // The EC2 state unknown: v1 gets the old string, v2 null with an error object beside it.
    front(&lab).inject("DescribeInstances", denied(), 1);
    let v1 = raw_status(&lab, 1).await;
    let v1_state = v1["state"].as_str().unwrap_or_default().to_string();
    assert!(v1_state.starts_with("unknown (") && v1_state.contains("UnauthorizedOperation"), "{v1}");
    front(&lab).inject("DescribeInstances", denied(), 1);
    let v2 = raw_status(&lab, 2).await;
    assert!(v2["state"].is_null() && v2["error"]["kind"] == "permission", "{v2}");
    assert!(v2["error"]["hint"].as_str().is_some_and(|h| h.contains("ec2:DescribeInstances")), "{v2}");
    // The CLI reads v2: the table says `unknown`, the error and its hint go below it, and the exit status is 1.
    front(&lab).inject("DescribeInstances", denied(), 1);
    let out = lab.bastionctl_command(["status"]).output().await.expect("status");
    let (table, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert!(!out.status.success() && table.contains(" unknown ") && err.contains("hint: your AWS identity"), "{table}{err}");
    // Known again: a plain string in both versions.
    assert_eq!(raw_status(&lab, 1).await["state"], "stopped");
    assert_eq!(raw_status(&lab, 2).await["state"], "stopped");

    // doctor: no sign of the watchdog is a warning with the way to install it; the tag makes it a pass.
    let doctor = || async { String::from_utf8_lossy(&lab.bastionctl_command(["doctor"]).output().await.unwrap().stdout).into_owned() };
    let before = doctor().await;
    assert!(before.lines().any(|l| l.starts_with("WARN") && l.contains("idle watchdog")), "{before}");
    assert!(before.contains("config/bastion/"), "{before}");
    lab.ec2()
        .create_tags()
        .resources(lab.instance_id())
        .tags(aws_sdk_ec2::types::Tag::builder().key("bastionctl:watchdog").value("installed").build())
        .send()
        .await
        .expect("tag the instance");
    let after = doctor().await;
    assert!(after.lines().any(|l| l.starts_with("PASS") && l.contains("idle watchdog installed (tag")), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_fifty_tag_limit_the_user_is_told_and_still_served() {
    let lab = lab(opts(Duration::from_secs(60), Duration::from_secs(90))).await;
    // The instance has its Name tag; 49 more make the 50 EC2 allows.
    let tags = (0..49).map(|i| aws_sdk_ec2::types::Tag::builder().key(format!("team:tag{i}")).value("x").build());
    let ec2 = lab.ec2().create_tags().resources(lab.instance_id()).set_tags(Some(tags.collect()));
    ec2.send().await.expect("tag the instance up to the limit");
    let _d = lab.start_daemon().await.expect("daemon");
    let (out, _) = ssh(&lab, "echo ok").await;
    let err = stderr(&out);
    let told = err.contains("TagLimitExceeded") && err.contains("50 tags") && err.contains("delete-tags");
    let st = lab.daemon_status().await.unwrap_or_default();
    let kind = st.first().and_then(|s| s.lease_error.as_ref()).map(|e| e.kind.clone());
    let logged = lab.daemon_log().contains("TagLimitExceeded");
    record(
        &lab,
        "shared-5",
        "50 tags on the instance already",
        "the lease cannot be written: the connection is served, and the user's stderr, the log and `status` name \
         EC2's 50-tag limit and how to delete tags",
        &format!(
            "ssh {}; stderr names TagLimitExceeded, the limit and delete-tags: {told}; logged: {logged}; status \
             lease_error kind {kind:?}",
            if ok(&out, "ok\n") { "succeeded" } else { "FAILED" }
        ),
        ok(&out, "ok\n") && told && logged && kind.as_deref() == Some("tag_limit"),
    );
}

/// A daemon with no open connection that gets SIGTERM deletes its lease tag before it exits. It used to exit as soon
/// as the (empty) drain was over, before its bastion actor had deleted the tag, which then kept the bastion up for
/// everyone else for `lease_ttl` (120 s here, far longer than this test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_idle_daemon_deletes_its_lease_before_exiting() {
    let ttl = Duration::from_secs(120);
    let mut o = opts(Duration::from_secs(60), Duration::from_secs(90));
    o.lease_ttl = Some(ttl);
    let lab = lab(o).await;
    let mut a = lab.start_daemon().await.expect("A's daemon");
    let b_user = lab.other_user("b", Duration::from_secs(2), Some(ttl)).expect("user B");
    let out = finish(&lab, spawn_ssh(&lab, "true"), SSH_DEADLINE).await;
    assert!(out.status.success(), "ssh: {}{}", String::from_utf8_lossy(&out.stderr), diag(&lab));
    let holder_a = holder_of(&lab, None).await;
    let leases = |st: Vec<bastionctl_core::control::BastionStatus>| st[0].leases.iter().map(|l| l.holder.clone()).collect::<Vec<_>>();
    let before = leases(lab.status_as(&b_user).await.expect("B's status"));
    assert!(before.contains(&holder_a), "A's lease is on the instance: {before:?}{}", diag(&lab));

    let pid = a.pid().expect("A's pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM A");
    wait_for(&lab, "A to exit", Duration::from_secs(20), || a.exited().is_some()).await;
    let after = leases(lab.status_as(&b_user).await.expect("B's status"));
    assert!(!after.contains(&holder_a), "A exited and left its lease on the instance: {after:?}{}", diag(&lab));
}
