//! End to end with OpenSSH's ProxyUseFdpass: `bastionctl proxy --fdpass` negotiates with the daemon, passes the
//! socket to the real `ssh` and exits, so the proxy is out of the data path; errors before the handover come from
//! the proxy on stderr, a tunnel that breaks afterwards is a closed socket ssh reports and the daemon logs.

use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::{Lab, LabOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
const SSH_DEADLINE: Duration = Duration::from_secs(90);
/// The ssh_config Host using `proxy --fdpass` with `ProxyUseFdpass yes`.
const HOST: &str = "private-fdpass";

async fn lab() -> Lab {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(120);
    o.boot_delay = Duration::from_millis(300);
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

async fn ssh(lab: &Lab, args: &[&str], remote: &str, stdin: Vec<u8>) -> Output {
    // `-o` options must come before the destination, so the command is built here rather than by the lab.
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.arg("-F").arg(&lab.files().ssh_config).args(args).arg(HOST).arg(remote);
    lab.apply_env(&mut cmd);
    let mut child = cmd
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut input = child.stdin.take().unwrap();
    tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    tokio::time::timeout(SSH_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh {remote:?} did not finish within {SSH_DEADLINE:?}{}", lab.diagnostics()))
        .expect("wait for ssh")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_socket_carries_the_session_whole_and_the_proxy_is_gone() {
    let lab = lab().await;
    assert_eq!(lab.instance_state().await.unwrap(), "stopped");

    // 8 MiB of varied bytes up, hashed on the far side, and the same back down, through the passed socket.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..8 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let out = ssh(&lab, &[], "sha256sum", data.clone()).await;
    lab.assert_output(&out, &format!("{}  -\n", sha256_hex(&data)));
    assert_eq!(lab.instance_state().await.unwrap(), "running", "the fdpass proxy started the bastion");
    let out = ssh(&lab, &[], "cat", data.clone()).await;
    assert!(out.status.success(), "cat failed: {}{}", String::from_utf8_lossy(&out.stderr), lab.diagnostics());
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(&data), "downloaded bytes differ");

    // While a session is open, ssh has no child: the proxy handed the socket over and exited.
    let mut child = lab
        .ssh_host_command(HOST, "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut input = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    input.write_all(b"ping\n").await.unwrap();
    let echoed = tokio::time::timeout(SSH_DEADLINE, lines.next_line()).await.expect("echo in time").unwrap();
    assert_eq!(echoed.as_deref(), Some("ping"));
    let pid = child.id().expect("ssh runs");
    let below = bastionctl_lab::proc::descendants(pid);
    assert!(below.is_empty(), "ssh still has children (the proxy should have exited): {below:?}");
    drop(input);
    let status = tokio::time::timeout(SSH_DEADLINE, child.wait()).await.expect("ssh exits").unwrap();
    assert!(status.success(), "{status}");
    let log = lab.daemon_log();
    assert!(log.contains("framed=false"), "the daemon served a raw (passed) socket:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_printed_by_the_proxy_before_the_handover() {
    let lab = lab().await;
    // Port 2 is not in target_ports: the daemon refuses during negotiation.
    let out = ssh(&lab, &["-o", "Port=2"], "true", Vec::new()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused target must fail: {stderr}");
    assert!(stderr.contains("is not allowed by"), "the proxy names the refusal:\n{stderr}");
    assert!(stderr.contains("hint:"), "with the hint:\n{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_tunnel_ends_the_passed_socket_and_the_daemon_logs_why() {
    let lab = lab().await;
    lab.assert_output(&ssh(&lab, &[], "true", Vec::new()).await, "");
    let mut child = lab
        .ssh_host_command(HOST, "cat /dev/zero")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    while got < 1 << 20 {
        let n = tokio::time::timeout(SSH_DEADLINE, stdout.read(&mut buf)).await.expect("bytes in time").unwrap();
        assert!(n > 0, "the download ended early{}", lab.diagnostics());
        got += n;
    }
    lab.kill_bastion_sshd();
    let drain = tokio::spawn(async move { while matches!(stdout.read(&mut buf).await, Ok(n) if n > 0) {} });
    let out = tokio::time::timeout(SSH_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh did not notice the broken tunnel{}", lab.diagnostics()))
        .unwrap();
    let _ = drain.await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "ssh reports the broken connection: {stderr}");
    assert!(
        stderr.contains("closed") || stderr.contains("reset") || stderr.contains("Broken pipe"),
        "ssh says the connection ended: {stderr}"
    );
    let log = lab.daemon_log();
    assert!(log.contains("tunnel broke") && log.contains("framed=false"), "the daemon logs the break:\n{log}");
}
