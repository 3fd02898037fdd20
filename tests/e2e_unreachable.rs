//! End to end: a target the bastion cannot reach (a closed port; an address that never answers) fails loudly: the
//! reason on stderr and a non-zero exit, with and without `--fdpass`, instead of a silent hang.

use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::{Lab, LabOptions};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
const DEADLINE: Duration = Duration::from_secs(90);

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.3.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A loopback address whose SYNs go unanswered: a listener with backlog 0 that never accepts, its one-slot accept
/// queue filled by one connection, so Linux drops every further SYN (tcp_conn_request: accept queue full) and a
/// connect to it retries until it times out, like a firewalled host. Returns the port and what keeps it so.
fn dropping_port() -> (u16, tokio::net::TcpListener, Vec<std::net::TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(([127, 0, 3, 1], 0).into()).expect("bind");
    let listener = sock.listen(0).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let mut keep = Vec::new();
    // Fill the queue: connections that complete their handshake, until one does not within 200 ms.
    let addr: std::net::SocketAddr = ([127, 0, 3, 1], port).into();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => keep.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
        assert!(keep.len() < 16, "the accept queue of {addr} does not fill");
    }
    (port, listener, keep)
}

async fn lab(port: u16) -> Lab {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(600);
    o.extra_target_ports = vec![port];
    o.extra_config = "channel_open_timeout = \"2s\"\n".into();
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

/// Runs `bastionctl ARGS` as ssh would: with `--fdpass`, stdout is one end of a Unix socket pair (ssh's
/// `ProxyUseFdpass yes`), and whatever arrives on the other end is returned as the output's stdout.
async fn proxy(lab: &Lab, args: &[&str]) -> Output {
    let (stdout, peer) = if args.contains(&"--fdpass") {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        (Stdio::from(std::os::fd::OwnedFd::from(theirs)), Some(ours))
    } else {
        (Stdio::piped(), None)
    };
    let child = lab
        .bastionctl_command(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("bastionctl {args:?} did not finish within {DEADLINE:?}{}", lab.diagnostics()))
        .unwrap();
    if let Some(mut peer) = peer {
        // The child has exited and our copy of its end is closed: this read ends at EOF.
        use std::io::Read;
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        peer.read_to_end(&mut out.stdout).expect("reading the proxy's socket");
    }
    out
}

/// `bastionctl proxy [--fdpass] 127.0.3.1 PORT` fails with exit 69, `want` on stderr and nothing on stdout.
async fn assert_fails(lab: &Lab, port: u16, want: &[&str]) {
    let p = port.to_string();
    for args in [&["proxy", "127.0.3.1", &p][..], &["proxy", "--fdpass", "127.0.3.1", &p][..]] {
        let out = proxy(lab, args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: stdout carries only tunnel bytes: {:?}", out.stdout);
        assert_eq!(out.status.code(), Some(69), "{args:?}: stderr: {err}{}", lab.diagnostics());
        assert!(err.contains(&format!("127.0.3.1:{port}")), "{args:?}: stderr names the target: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: stderr lacks {w:?}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_reaches_stderr_and_exits_69() {
    let port = closed_port();
    let lab = lab(port).await;
    let _daemon = lab.start_daemon().await.unwrap();
    assert_fails(&lab, port, &["could not connect", "Connection refused"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_drops_packets_times_out_after_channel_open_timeout() {
    let (port, _listener, _queued) = dropping_port();
    let lab = lab(port).await;
    let _daemon = lab.start_daemon().await.unwrap();
    let began = std::time::Instant::now();
    assert_fails(&lab, port, &["could not connect", "open timed out after 2s", "channel_open_timeout"]).await;
    // Two attempts of 2 s each, plus the start of the bastion; the built-in 20 s would take 40 s.
    assert!(began.elapsed() < Duration::from_secs(30), "took {:?}", began.elapsed());
}
