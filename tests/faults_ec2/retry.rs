//! Items 1–3: EC2 throttling and 5xx are retried; a bastion held in `stopping` is waited out and started; one held
//! in `pending` past `start_timeout` fails with the timeout and the state named.

use std::time::{Duration, Instant};

use bastionctl_lab::Fault;

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case1_throttling_and_503_on_describe_start_stop_are_retried() {
    let idle = Duration::from_secs(3);
    let lab = lab(opts(idle, Duration::from_secs(90))).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let f = front(&lab);
    f.inject("DescribeInstances", Fault::Throttle, 2);
    f.inject("DescribeInstances", Fault::Status(503), 1);
    f.inject("StartInstances", Fault::Throttle, 1);
    f.inject("StartInstances", Fault::Status(503), 1);
    f.inject("StopInstances", Fault::Status(503), 1);
    f.inject("StopInstances", Fault::Throttle, 1);

    let (out, took) = ssh(&lab, "echo ok").await;
    let demand_ok = ok(&out, "ok\n");
    let t = Instant::now();
    let stopped = lab.wait_instance_state("stopped", idle + STOP_SLACK).await.is_ok();
    let stop_took = t.elapsed();
    let (starts, stops) = (count(&lab, "StartInstances"), count(&lab, "StopInstances"));
    let describes = count(&lab, "DescribeInstances");
    let shown_errors = ["RequestLimitExceeded", "Unavailable", "503"].iter().any(|e| stderr(&out).contains(e));
    record(
        &lab,
        "1",
        "EC2 throttling and 503 on Describe, Start, Stop",
        "retried with backoff (SDK standard mode, 4 attempts); the demand succeeds, the idle stop happens",
        &format!(
            "3 faults on DescribeInstances, 2 on StartInstances, 2 on StopInstances: ssh {} in {}; \
             StartInstances seen {starts}× (2 faulted + 1), StopInstances {stops}× (2 faulted + 1), \
             DescribeInstances {describes}×; stopped {} after the ssh ended; fault visible to the user: {shown_errors}",
            if demand_ok { "succeeded" } else { "FAILED" },
            secs(took),
            if stopped { secs(stop_took) } else { "NOT".into() },
        ),
        demand_ok && stopped && starts == 3 && stops == 3 && describes >= 4 && !shown_errors,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_bastion_held_in_stopping_is_waited_out_then_started() {
    let lab = lab(opts(Duration::from_secs(30), Duration::from_secs(90))).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let f = front(&lab);
    let id = lab.instance_id().to_string();
    f.hold_state(&id, Some("stopping"));
    let before = count(&lab, "DescribeInstances");

    let release = async {
        // The daemon polls DescribeInstances while it waits; release after it has seen `stopping` three times.
        wait_for(&lab, "the daemon to poll the stopping bastion", Duration::from_secs(60), || {
            count(&lab, "DescribeInstances") >= before + 3
        })
        .await;
        let starts_while_stopping = count(&lab, "StartInstances");
        f.hold_state(&id, None);
        (Instant::now(), starts_while_stopping)
    };
    let t = Instant::now();
    let ((out, took), (released, starts_while_stopping)) = tokio::join!(ssh(&lab, "echo ok"), release);
    let held_for = released - t;
    let err = stderr(&out);
    let demand_ok = ok(&out, "ok\n");
    let saw_incorrect = err.contains("IncorrectInstanceState");
    let starts = count(&lab, "StartInstances");
    record(
        &lab,
        "2",
        "Instance held in `stopping` when a demand arrives",
        "the daemon waits for `stopped`, then starts it; the user never sees IncorrectInstanceState",
        &format!(
            "held `stopping` for {}: StartInstances calls while stopping {starts_while_stopping}, after {}; ssh {} after \
             {} in all; IncorrectInstanceState shown: {saw_incorrect}; progress shown: {:?}",
            secs(held_for),
            starts - starts_while_stopping,
            if demand_ok { "succeeded" } else { "FAILED" },
            secs(took),
            err.lines().find(|l| l.contains("stopping")).unwrap_or("(none)"),
        ),
        demand_ok && !saw_incorrect && starts_while_stopping == 0 && starts == 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_bastion_held_in_pending_past_start_timeout_fails_clearly() {
    let start_timeout = Duration::from_secs(5);
    let lab = lab(opts(Duration::from_secs(30), start_timeout)).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let f = front(&lab);
    let id = lab.instance_id().to_string();

    // DescribeInstances hangs (one SDK attempt may take 10 s, all retries 30 s): the start still ends at start_timeout.
    wait_for(&lab, "the daemon's first DescribeInstances", Duration::from_secs(30), || {
        count(&lab, "DescribeInstances") >= 1
    })
    .await;
    f.inject("DescribeInstances", Fault::Hang, 1);
    let (hung, hung_took) = ssh(&lab, "echo ok").await;
    let hung_line = stderr(&hung).lines().find(|l| l.contains("not ready")).unwrap_or("(no such line)").to_string();
    let hung_ok = !hung.status.success()
        && hung_line.contains("did not answer")
        && hung_took < start_timeout + Duration::from_secs(10);

    f.hold_state(&id, Some("pending"));
    let (out, took) = ssh(&lab, "echo ok").await;
    let err = stderr(&out);
    let line = err.lines().find(|l| l.contains("not ready")).unwrap_or("(no such line)").to_string();
    let names_both = line.contains("5s") && line.contains("pending");
    let prompt = took >= start_timeout && took < start_timeout + Duration::from_secs(10);

    // Once the state moves on, the next demand succeeds.
    f.hold_state(&id, None);
    let (again, again_took) = ssh(&lab, "echo ok").await;
    let recovered = ok(&again, "ok\n");
    record(
        &lab,
        "3",
        "Instance held in `pending` past start_timeout",
        "a clear error naming the timeout and the stuck state, at start_timeout (also when DescribeInstances hangs); \
         the next demand works once it moves",
        &format!(
            "start_timeout 5 s: held `pending`: ssh exited {} after {} with {line:?}; after release the next ssh {} in \
             {}; DescribeInstances hanging: ssh exited {} after {} with {hung_line:?}",
            out.status,
            secs(took),
            if recovered { "succeeded" } else { "FAILED" },
            secs(again_took),
            hung.status,
            secs(hung_took),
        ),
        !out.status.success() && names_both && prompt && recovered && hung_ok,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_idle_stop_refused_while_pending_is_retried_not_forgotten() {
    let idle = Duration::from_secs(3);
    let lab = lab(opts(idle, Duration::from_secs(60))).await;
    let _daemon = lab.start_daemon().await.expect("daemon");
    let (out, _) = ssh(&lab, "echo ok").await;
    assert!(ok(&out, "ok\n"), "ssh: {}{}", stderr(&out), diag(&lab));

    // The idle stop comes while EC2 says `pending` (so StopInstances is refused with IncorrectInstanceState).
    let f = front(&lab);
    let id = lab.instance_id().to_string();
    f.hold_state(&id, Some("pending"));
    wait_for(&lab, "the idle StopInstances to be refused", idle + STOP_SLACK, || count(&lab, "StopInstances") >= 1).await;
    let t = Instant::now();
    f.hold_state(&id, None);
    let stopped = lab.wait_instance_state("stopped", idle + STOP_SLACK).await.is_ok();
    let stop_took = t.elapsed();
    let stops = count(&lab, "StopInstances");
    record(
        &lab,
        "3",
        "Idle stop refused while the instance is `pending`",
        "IncorrectInstanceState on StopInstances for a pending/running instance is not taken as stopped: the daemon \
         tries again after idle_timeout, so the bastion is not left running",
        &format!(
            "first StopInstances refused (held `pending`); after release the bastion was {} {} later \
             (idle_timeout {}), StopInstances calls {stops}",
            if stopped { "stopped" } else { "NOT stopped" },
            secs(stop_took),
            secs(idle),
        ),
        stopped && stops >= 2,
    );
}
