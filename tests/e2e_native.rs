//! End to end, in the lab: bastionctl as systemd, OpenSSH and database users meet it.
//!
//! - socket activation: systemd's own `systemd-socket-activate` holds the control socket and starts the daemon on
//!   the first connection with `LISTEN_FDS`/`LISTEN_PID`, exactly as a socket unit does; `ssh` works through it and
//!   no background daemon is spawned;
//! - `BASTIONCTL_QUIET=1` silences a ProxyCommand's progress lines;
//! - `bastionctl forward` and the daemon's `[[forward]]` carry a real TCP service on the private loopback address
//!   through the bastion: bytes intact both ways, the bastion started by the first connection, not by the listener,
//!   and stopped after the idle time.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bastionctl_lab::net::{echo_service, free_port, wait_until};
use bastionctl_lab::{Lab, LabOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
const DEADLINE: Duration = Duration::from_secs(90);
/// Slack on top of `idle_timeout` for the idle stop to show in moto.
const STOP_SLACK: Duration = Duration::from_secs(20);


fn opts(idle: Duration, service: SocketAddr, extra_config: String) -> LabOptions {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = idle;
    o.boot_delay = Duration::from_millis(500);
    o.extra_target_ports = vec![service.port()];
    o.extra_config = extra_config;
    o
}

async fn lab(o: LabOptions) -> Lab {
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

/// Sends 1 MiB of varied bytes through `addr` and checks that exactly the same bytes come back (the echo service
/// returns them, so both directions of the tunnel carry all of it).
async fn round_trip(addr: SocketAddr, lab: &Lab) {
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").unwrap();
    let (mut rd, mut wr) = s.split();
    let send = async {
        wr.write_all(&payload).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = rd.read_to_end(&mut back);
    let (_, got) = tokio::time::timeout(DEADLINE, async { tokio::join!(send, recv) })
        .await
        .unwrap_or_else(|_| panic!("round trip through {addr} did not finish{}", lab.diagnostics()));
    got.unwrap_or_else(|e| panic!("reading back through {addr}: {e}{}", lab.diagnostics()));
    assert_eq!(back.len(), payload.len(), "bytes lost through {addr}{}", lab.diagnostics());
    assert!(back == payload, "bytes changed through {addr}");
}

/// A `[[forward]]` table from a free local port to `service`: the port and the TOML.
fn forward_table(service: SocketAddr) -> (u16, String) {
    let port = free_port(std::net::Ipv4Addr::LOCALHOST).unwrap();
    let table = format!("\n[[forward]]\nname = \"db\"\nlisten = \"127.0.0.1:{port}\"\ntarget = \"{service}\"\n");
    (port, table)
}

async fn wait_stopped(lab: &Lab) {
    let within = lab.options().idle_timeout + STOP_SLACK;
    lab.wait_instance_state("stopped", within).await.unwrap_or_else(|e| panic!("{e:#}{}", lab.diagnostics()));
}

fn marker(service: SocketAddr) -> String {
    format!("target {} port {}", service.ip(), service.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_command_carries_a_tcp_service_and_the_idle_rule_holds() {
    let service = echo_service(std::net::Ipv4Addr::new(127, 0, 3, 1)).await;
    let lab = lab(opts(Duration::from_secs(3), service, String::new())).await;
    let spec = format!("0:{}:{}", service.ip(), service.port());
    let mut forward = lab
        .bastionctl_command(["forward", spec.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("a listener line").unwrap().unwrap();
    let target = format!(" -> {service}");
    assert!(line.starts_with("127.0.0.1:") && line.ends_with(&target), "listener line {line:?}");
    let local: SocketAddr = line.split(' ').next().unwrap().parse().unwrap();

    // A listening forward does not start the bastion.
    assert_eq!(lab.instance_state().await.unwrap(), "stopped");
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 0);

    round_trip(local, &lab).await;
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1, "{}", lab.diagnostics());
    assert!(lab.bastion_log().contains(&marker(service)), "no direct-tcpip to the service in the bastion's log");
    // Two at once share the running bastion.
    tokio::join!(round_trip(local, &lab), round_trip(local, &lab));
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1);

    // Closed connections and an idle listener: the bastion stops after idle_timeout, while `forward` still runs.
    wait_stopped(&lab).await;
    assert!(forward.try_wait().unwrap().is_none(), "forward exited");
    // And the next connection starts it again.
    round_trip(local, &lab).await;
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 2, "{}", lab.diagnostics());
    forward.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_forward_listens_before_the_bastion_runs() {
    let service = echo_service(std::net::Ipv4Addr::new(127, 0, 3, 1)).await;
    let (port, table) = forward_table(service);
    let lab = lab(opts(Duration::from_secs(3), service, table)).await;
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(lab.instance_state().await.unwrap(), "stopped", "the listener alone starts nothing");

    round_trip(local, &lab).await;
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1, "{}", lab.diagnostics());
    assert!(lab.bastion_log().contains(&marker(service)), "no direct-tcpip to the service in the bastion's log");
    wait_stopped(&lab).await;
    round_trip(local, &lab).await;
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 2, "{}", lab.diagnostics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activated_daemon_serves_ssh_and_no_background_daemon_starts() {
    let service = echo_service(std::net::Ipv4Addr::new(127, 0, 3, 1)).await;
    let lab = lab(opts(Duration::from_secs(600), service, String::new())).await;
    let socket = &lab.files().socket;
    let log_path = lab.dir().join("socket-activated.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // systemd-socket-activate gives the program a clean environment: the lab's goes in with -E.
    let mut cmd = tokio::process::Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(socket);
    for (k, v) in lab.env() {
        cmd.arg("-E").arg(format!("{k}={v}"));
    }
    cmd.arg(BASTIONCTL).arg("--config").arg(&lab.files().config).arg("daemon");
    let mut activator = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("systemd-socket-activate is missing: scripts/install-deps.sh installs Debian's `systemd` package");
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("systemd-socket-activate to listen", DEADLINE, || async { socket.exists() }).await.unwrap();
    assert!(!daemon_log().contains("daemon ready"), "no daemon before the first connection:\n{}", daemon_log());

    // The first ssh after "login": its proxy's connection waits in the backlog while the daemon starts.
    let out = lab.ssh_command("echo ok").output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{}\n{}", String::from_utf8_lossy(&out.stderr), daemon_log());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bastionctl: starting"), "the proxy shows the start on stderr: {stderr}");

    let log = daemon_log();
    assert!(log.contains("daemon ready") && log.contains("socket_from=Systemd"), "{log}");
    assert_eq!(lab.daemon_pid().await, activator.id(), "the socket-activated process serves the socket");
    assert!(!lab.files().daemon_log.exists(), "a background daemon was spawned:\n{}", lab.daemon_log());

    // The same start again, with BASTIONCTL_QUIET=1 in the ProxyCommand's environment: no progress lines. ssh has
    // exited, but the daemon lets go of the channel a moment later: `down` (without --force) waits for that.
    wait_until("the daemon to close the channel", DEADLINE, || async {
        lab.daemon_status().await.is_ok_and(|s| s.iter().all(|b| b.channels == 0))
    })
    .await
    .unwrap();
    let down = lab.bastionctl_command(["down"]).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    lab.wait_instance_state("stopped", DEADLINE).await.unwrap();
    let out = lab.ssh_command("echo quiet").env("BASTIONCTL_QUIET", "1").output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "quiet\n", "{}", lab.diagnostics());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("bastionctl:"), "BASTIONCTL_QUIET=1 left progress lines: {stderr}");
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 2);

    // Stopping the daemon leaves systemd's socket file alone.
    lab.stop_daemon().await;
    let _ = activator.wait().await;
    assert!(socket.exists(), "the daemon must not remove systemd's socket file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_up_shows_a_spinner_with_phase_and_elapsed_time() {
    let service = echo_service(std::net::Ipv4Addr::new(127, 0, 3, 1)).await;
    let mut o = opts(Duration::from_secs(600), service, String::new());
    o.boot_delay = Duration::from_secs(2);
    let lab = lab(o).await;
    // util-linux `script` runs the command on a pseudo-terminal and copies what it draws to our pipe.
    let cmd = format!("{} up", lab.files().lab_bastionctl.display());
    let out = tokio::time::timeout(DEADLINE, tokio::process::Command::new("script").args(["-qfec", &cmd, "/dev/null"]).output())
        .await
        .expect("up finished")
        .expect("util-linux script is installed");
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{drawn}{}", lab.diagnostics());
    assert!(drawn.contains("bastionctl: starting") && drawn.contains("\u{1b}[2K"), "no spinner line redrawn in place:\n{drawn:?}");
    assert!(drawn.contains("s]"), "no elapsed time on the spinner line:\n{drawn:?}");
    assert!(drawn.contains(&format!("ready at {}", lab.bastion_addr())), "the result line: {drawn:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_forward_resets_its_client_when_the_bastion_session_dies() {
    let service = echo_service(std::net::Ipv4Addr::new(127, 0, 3, 1)).await;
    let (port, table) = forward_table(service);
    let lab = lab(opts(Duration::from_secs(600), service, table)).await;
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(("127.0.0.1", port))).await.unwrap().unwrap();
    // One echo through the channel: it is open and spliced.
    s.write_all(b"ping\n").await.unwrap();
    let mut line = [0u8; 5];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut line)).await.expect("echo in time").unwrap();
    assert_eq!(&line, b"ping\n");

    // The bastion's sshd dies with the session: the local client must see a failure, not a clean end of stream
    // that a database client would take for a finished reply.
    lab.kill_bastion_sshd();
    let mut rest = Vec::new();
    let end = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await.expect("the end in time");
    match end {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}{}", lab.diagnostics()),
        Ok(n) => panic!("a clean EOF after {n} bytes: the broken tunnel looked like a finished stream{}", lab.diagnostics()),
    }
}
