//! Bad input on the control socket (issue 4): malformed JSON, oversized lines, unknown version or op, a client that
//! disconnects mid-request, a client that connects and says nothing, a client that leaves while the bastion starts.
//! Each gets a clear error or a closed connection, and the daemon keeps serving: after all of it, `status` answers and
//! an ssh goes through. Each case records a row for `docs/RELIABILITY.md`.

mod faults_common;

use std::time::{Duration, Instant};

use bastionctl::control::{self, MAX_LINE, Reply};
use bastionctl_lab::report::record;
use faults_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The daemon's bound on receiving a request line (`REQUEST_TIMEOUT` in src/daemon/conn.rs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one bad-input exchange (except the silent client, which waits for the daemon's request timeout).
const EXCHANGE: Duration = Duration::from_secs(5);

/// What the daemon did with some bytes: its reply lines and whether it then closed the connection.
#[derive(Debug)]
struct Seen {
    replies: Vec<String>,
    closed: bool,
    secs: f64,
}

impl Seen {
    fn error_message(&self) -> Option<String> {
        self.replies.iter().find_map(|l| match serde_json::from_str::<Reply>(l) {
            Ok(Reply::Error(e)) => Some(e.message),
            _ => None,
        })
    }
}

/// Sends `bytes` (then, if `half_close`, a write shutdown) and collects what comes back until the daemon closes or
/// `within` passes.
async fn exchange(lab: &bastionctl_lab::Lab, bytes: &[u8], half_close: bool, within: Duration) -> Seen {
    let t0 = Instant::now();
    let mut s = UnixStream::connect(&lab.files().socket).await.expect("connect to the daemon");
    let (mut rd, mut wr) = s.split();
    // The daemon may stop reading (and close) before an oversized write is done: that is a valid answer.
    let write = async {
        let _ = wr.write_all(bytes).await;
        if half_close {
            let _ = wr.shutdown().await;
        }
    };
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (_, closed) = tokio::join!(write, async { tokio::time::timeout(within, read).await.unwrap_or(false) });
    let text = String::from_utf8_lossy(&buf).to_string();
    Seen { replies: text.lines().map(str::to_string).collect(), closed, secs: t0.elapsed().as_secs_f64() }
}

/// The daemon still answers `status` over a fresh connection.
async fn still_serves(lab: &bastionctl_lab::Lab) -> bool {
    let Ok(mut s) = UnixStream::connect(&lab.files().socket).await else { return false };
    let ask = async {
        control::write_line(&mut s, &serde_json::json!({"v": 1, "op": "status"})).await.ok()?;
        let mut r = BufReader::new(s);
        control::read_line::<_, Reply>(&mut r).await.ok()
    };
    matches!(tokio::time::timeout(EXCHANGE, ask).await, Ok(Some(Reply::Status(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_bad_input_gets_an_error_or_a_close_and_the_daemon_serves_on() {
    let _serial = SERIAL.lock().await;
    let lab = lab(opts(Duration::from_secs(120))).await;
    let daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    let pid = daemon.pid().unwrap();

    // Started first: it waits out the daemon's request timeout while the other cases run.
    let silent = {
        let socket = lab.files().socket.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut s = UnixStream::connect(&socket).await.expect("connect");
            let mut buf = Vec::new();
            let res = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(10), s.read_to_end(&mut buf)).await;
            (res.is_ok(), String::from_utf8_lossy(&buf).to_string(), t0.elapsed().as_secs_f64())
        })
    };
    // And a crowd of silent clients, which must not starve the others.
    let mut crowd = Vec::new();
    for _ in 0..100 {
        crowd.push(UnixStream::connect(&lab.files().socket).await.expect("connect"));
    }

    let oversized = vec![b'x'; MAX_LINE + 4096];
    let cases: Vec<(&str, &str, Vec<u8>, bool, &str)> = vec![
        ("bad-input: malformed JSON", "malformed JSON", b"{\"v\":1,\"op\":\n".to_vec(), false, "malformed"),
        ("bad-input: not JSON at all", "binary garbage", b"\x00\xff\xfe garbage \x01\n".to_vec(), false, "malformed"),
        ("bad-input: oversized line", "a line over MAX_LINE (64 KiB) without a newline", oversized, false, "longer than"),
        ("bad-input: unknown version", "unknown protocol version", b"{\"v\":99,\"op\":\"status\"}\n".to_vec(), false, "version 99"),
        ("bad-input: unknown op", "unknown op", b"{\"v\":1,\"op\":\"frobnicate\"}\n".to_vec(), false, "unknown variant"),
        ("bad-input: wrong field types", "connect with a port out of range", b"{\"v\":1,\"op\":\"connect\",\"host\":\"h\",\"port\":70000}\n".to_vec(), false, "malformed"),
        ("bad-input: disconnect mid-request", "half a request, then the client closes", b"{\"v\":1,\"op\":\"conn".to_vec(), true, ""),
    ];
    let mut failures = Vec::new();
    for (case, title, bytes, half_close, want) in cases {
        let seen = exchange(&lab, &bytes, half_close, EXCHANGE).await;
        let serves = still_serves(&lab).await;
        let msg = seen.error_message();
        let answered = match want {
            "" => seen.closed && seen.replies.is_empty(),
            w => seen.closed && msg.as_deref().is_some_and(|m| m.contains(w)),
        };
        let pass = answered && serves;
        let observed = format!(
            "{} after {:.2} s: {}; daemon still serves: {serves}",
            if seen.closed { "closed" } else { "NOT closed" },
            seen.secs,
            msg.map(|m| format!("error {m:?}")).unwrap_or_else(|| "no reply".into()),
        );
        let expected = match want {
            "" => "the daemon closes the connection quietly and keeps serving".to_string(),
            w => format!("an error reply naming the problem (`{w}`), then a close; the daemon keeps serving"),
        };
        record(case, title, &expected, &observed, pass);
        if !pass {
            failures.push(format!("{case}: {observed} {seen:?}"));
        }
    }

    // A proxy that leaves while the bastion is starting: the start goes on, and the next ssh uses it.
    let mut p = lab
        .bastionctl_command(["proxy", &lab.private_addr().ip().to_string(), &lab.private_addr().port().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = p.stderr.take().unwrap();
    let mut first = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(20), err.read(&mut first)).await; // a progress line: starting
    p.kill().await.unwrap();
    let out = ssh(&lab, "echo after").await;
    let serves = still_serves(&lab).await;
    let pass = out.status.success() && out.stdout == b"after\n" && serves;
    let observed = format!("proxy killed during the start; next ssh: {}; daemon still serves: {serves}", out.status);
    record("bad-input: client leaves mid-start", "a proxy killed while the bastion starts", "the daemon is unaffected; the next ssh goes through", &observed, pass);
    if !pass {
        failures.push(format!("mid-start: {observed}"));
    }

    let (closed, text, secs) = silent.await.unwrap();
    let crowd_served = still_serves(&lab).await;
    let pass = closed && text.contains("no request") && secs < REQUEST_TIMEOUT.as_secs_f64() + 5.0 && crowd_served;
    let observed = format!(
        "closed after {secs:.1} s with {:?}; with 100 more silent clients connected the daemon still serves: {crowd_served}",
        text.trim()
    );
    record(
        "bad-input: silent client",
        "a client connects and sends nothing",
        &format!("an error after the request timeout ({} s), then a close; other clients unaffected", REQUEST_TIMEOUT.as_secs()),
        &observed,
        pass,
    );
    if !pass {
        failures.push(format!("silent: {observed}"));
    }
    drop(crowd);
    assert_eq!(lab.daemon_pid().await, Some(pid), "the same daemon serves at the end");
    assert!(failures.is_empty(), "{failures:#?}{}", diag(&lab));
}
