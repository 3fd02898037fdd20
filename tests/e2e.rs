//! End to end: the real `ssh` through `bastionctl proxy` and a bastion that starts on demand and stops when idle,
//! in the local lab (moto's EC2, real sshds on loopback). Each test owns its lab: its own moto, ports, temp dir.
//! Every wait polls with a deadline.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bastionctl_lab::{Lab, LabOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh` run that starts the bastion (boot delay plus handshakes, on a loaded 2-core box).
const SSH_DEADLINE: Duration = Duration::from_secs(90);
/// Slack on top of `idle_timeout` for the idle stop to show in moto.
const STOP_SLACK: Duration = Duration::from_secs(20);

fn opts(idle: Duration) -> LabOptions {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = idle;
    o.boot_delay = Duration::from_millis(800);
    o
}

async fn lab(o: LabOptions) -> Lab {
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

/// What to look at when a test fails: the daemon's and the bastion's logs.
fn diag(lab: &Lab) -> String {
    lab.diagnostics()
}

/// Runs `ssh private <cmd>` to completion under [`SSH_DEADLINE`].
async fn ssh(lab: &Lab, cmd: &str) -> Output {
    let child = lab.ssh_command(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ssh");
    tokio::time::timeout(SSH_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh {cmd:?} did not finish within {SSH_DEADLINE:?}{}", diag(lab)))
        .expect("wait for ssh")
}

fn assert_ok(lab: &Lab, out: &Output, stdout: &str) {
    lab.assert_output(out, stdout);
}

async fn wait_stopped(lab: &Lab) {
    let within = lab.options().idle_timeout + STOP_SLACK;
    lab.wait_instance_state("stopped", within).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(lab)));
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{e:#}{}", diag(lab)));
}

async fn start_calls(lab: &Lab) -> u64 {
    let status = lab.daemon_status().await.unwrap_or_else(|e| panic!("status --json: {e:#}{}", diag(lab)));
    status.iter().map(|b| b.start_calls).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_bastion_starts_and_forwards_without_copying_keys() {
    let lab = lab(opts(Duration::from_secs(60))).await;
    assert_eq!(lab.instance_state().await.unwrap(), "stopped");
    assert!(!lab.bastion_sshd_running());

    let out = ssh(&lab, "echo ok").await;
    assert_ok(&lab, &out, "ok\n");

    assert_eq!(lab.instance_state().await.unwrap(), "running", "{}", diag(&lab));
    let log = lab.bastion_log();
    assert!(
        log.lines().any(|l| l.contains("server_request_direct_tcpip") && l.contains(&lab.direct_tcpip_marker())),
        "the bastion sshd log shows no direct-tcpip request to {}:\n{log}",
        lab.private_addr()
    );
    let leaked = lab.fixture_files_with_user_private_key().unwrap();
    assert!(leaked.is_empty(), "the user's private key is in the bastion fixture: {leaked:?}");
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_bastion_stops_and_starts_again_on_demand() {
    let lab = lab(opts(Duration::from_secs(3))).await;
    assert_ok(&lab, &ssh(&lab, "echo ok").await, "ok\n");

    wait_stopped(&lab).await;
    assert!(lab.moto_foreign_actions().unwrap().iter().any(|a| a == "StopInstances"));

    assert_ok(&lab, &ssh(&lab, "echo again").await, "again\n");
    assert_eq!(lab.instance_state().await.unwrap(), "running", "{}", diag(&lab));
    assert_eq!(lab.bastion_sshd_starts(), 2);
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_ssh_share_one_start() {
    let mut o = opts(Duration::from_secs(60));
    o.boot_delay = Duration::from_secs(2);
    let lab = lab(o).await;
    // All ten processes start before any is awaited, so they race for real.
    let children: Vec<_> = (0..10)
        .map(|i| {
            lab.ssh_command(&format!("echo ok-{i}")).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = tokio::time::timeout(SSH_DEADLINE, child.wait_with_output()).await.expect("ssh finished").unwrap();
        assert_ok(&lab, &out, &format!("ok-{i}\n"));
    }
    assert_eq!(start_calls(&lab).await, 1, "StartInstances calls per the daemon{}", diag(&lab));
    // The daemon the racing proxies share is the one serving the socket.
    let serving = lab.daemon_pid().await.expect("a daemon serves the lab's socket");
    assert!(lab.daemon_status().await.unwrap().iter().all(|b| b.pid == Some(serving)));
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1, "StartInstances calls per moto");
    assert_eq!(lab.bastion_sshd_starts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_session_keeps_the_bastion_up_past_idle_timeout() {
    let idle = Duration::from_secs(3);
    let lab = lab(opts(idle)).await;
    let mut child =
        lab.ssh_command("sleep 8; echo done").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ssh");

    // Wait for the session to be up (the bastion's sshd logged our direct-tcpip request).
    let marker = lab.direct_tcpip_marker();
    bastionctl_lab::net::wait_until("the forwarded session", SSH_DEADLINE, || async {
        lab.bastion_log().contains(&marker)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}{}", diag(&lab)));
    let opened = Instant::now();

    // While the session is open the instance stays running, well past idle_timeout.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let state = lab.instance_state().await.unwrap();
        assert_eq!(
            state,
            "running",
            "stopped with a session open, {:?} after it opened{}",
            opened.elapsed(),
            diag(&lab)
        );
        assert!(opened.elapsed() < SSH_DEADLINE, "ssh sleep 8 never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(opened.elapsed() > idle, "the session was shorter than idle_timeout, so this proves nothing");
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
    assert!(status.success() && stdout == "done\n", "ssh: {status}, stdout {stdout:?}{}", diag(&lab));

    // Closed: now it stops.
    wait_stopped(&lab).await;
}

/// 64 MiB of deterministic pseudo-random bytes, written in 1 MiB pieces.
fn chunk(seed: &mut u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 << 20);
    while buf.len() < 1 << 20 {
        // xorshift64*
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        buf.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    buf
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_intact() {
    const MIB: usize = 64;
    let lab = lab(opts(Duration::from_secs(60))).await;
    let up = lab.dir().join("private/upload.bin");
    let down = lab.dir().join("private/download.bin");

    // Upload: stream 64 MiB into `cat > file`, then the far side hashes the file.
    let cmd = format!("cat > '{}' && sha256sum '{}'", up.display(), up.display());
    let mut child =
        lab.ssh_command(&cmd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let (mut seed, mut hash) = (0x9e37_79b9_7f4a_7c15_u64, Sha256::new());
        for _ in 0..MIB {
            let c = chunk(&mut seed);
            hash.update(&c);
            stdin.write_all(&c).await?;
        }
        stdin.shutdown().await?;
        std::io::Result::Ok(hex(hash.finalize()))
    });
    let out = tokio::time::timeout(SSH_DEADLINE, child.wait_with_output()).await.expect("upload finished").unwrap();
    let sent = writer.await.unwrap().expect("write 64 MiB to ssh");
    let remote = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "upload: {}: {}{}", out.status, String::from_utf8_lossy(&out.stderr), diag(&lab));
    assert_eq!(remote.split_whitespace().next(), Some(sent.as_str()), "upload hash differs");

    // Download: the far side makes a random file and hashes it; we hash what `cat` sends back.
    let cmd = format!("head -c {} /dev/urandom > '{}' && sha256sum '{}'", MIB << 20, down.display(), down.display());
    let out = ssh(&lab, &cmd).await;
    assert!(out.status.success(), "make download file: {}", String::from_utf8_lossy(&out.stderr));
    let want = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string();
    let mut child = lab.ssh_command(&format!("cat '{}'", down.display())).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (mut hash, mut n, mut buf) = (Sha256::new(), 0usize, vec![0u8; 1 << 16]);
    let read = async {
        loop {
            let k = stdout.read(&mut buf).await?;
            if k == 0 {
                break std::io::Result::Ok(());
            }
            hash.update(&buf[..k]);
            n += k;
        }
    };
    tokio::time::timeout(SSH_DEADLINE, read).await.expect("download finished").unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(n, MIB << 20, "download length");
    assert_eq!(hex(hash.finalize()), want, "download hash differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_bastion_host_key_is_refused_with_advice() {
    let mut o = opts(Duration::from_secs(60));
    o.trust_bastion_key = false;
    let lab = lab(o).await;
    let out = ssh(&lab, "echo ok").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lower = stderr.to_lowercase();
    assert!(!out.status.success(), "ssh succeeded with an unknown bastion host key{}", diag(&lab));
    assert!(out.stdout.is_empty(), "stdout must stay empty, got {:?}", String::from_utf8_lossy(&out.stdout));
    // One line names the host key and says it is not trusted (ssh's own "UNKNOWN port" line must not count).
    let says_unknown = lower.lines().any(|l| {
        l.contains("host key") && ["unknown", "not known", "not in", "not trusted"].iter().any(|w| l.contains(w))
    });
    assert!(says_unknown, "stderr does not say the bastion's host key is unknown:\n{stderr}");
    let known_hosts = lab.files().bastion_known_hosts.display().to_string();
    assert!(
        stderr.contains(&known_hosts) || lower.contains("bastionctl trust"),
        "stderr does not say how to trust the key (known_hosts file or `bastionctl trust`):\n{stderr}"
    );
    let pinned = std::fs::read_to_string(&lab.files().bastion_known_hosts).unwrap();
    assert!(pinned.trim().is_empty(), "the unknown key was written to known_hosts without consent:\n{pinned}");
}
