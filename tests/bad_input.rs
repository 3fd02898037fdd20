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
    exchange_at(&lab.files().socket, bytes, half_close, within).await
}

/// [`exchange`] on the socket at `socket`.
async fn exchange_at(socket: &std::path::Path, bytes: &[u8], half_close: bool, within: Duration) -> Seen {
    let t0 = Instant::now();
    let mut s = UnixStream::connect(socket).await.expect("connect to the daemon");
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

/// One request line for the bad-request stream: the JSON text (sent as it is) and what it tries.
fn bad_requests(private: std::net::SocketAddr) -> Vec<(String, Vec<u8>)> {
    let connect = |host: &str, port: u32| {
        let line = serde_json::json!({"v": 1, "op": "connect", "host": host, "port": port, "framed": true});
        format!("{line}\n").into_bytes()
    };
    let ip = private.ip().to_string();
    let mut list: Vec<(String, Vec<u8>)> = vec![
        ("empty host".into(), connect("", 22)),
        ("space".into(), connect("a b", 22)),
        ("newline forging a log line".into(), connect("web\nFORGED-LINE: admin logged in", 22)),
        ("terminal escape".into(), connect("db\u{1b}[2J\u{1b}[31m", 22)),
        ("NUL".into(), connect("web\0.internal", 22)),
        ("bidi override".into(), connect("web\u{202e}lanretni", 22)),
        ("60 000-byte name".into(), connect(&"a".repeat(60_000), 22)),
        ("64-byte label".into(), connect(&format!("{}.internal", "a".repeat(64)), 22)),
        // Under an allowed pattern, so only the name check stands between them and the bastion. Each has a label
        // or a length no resolver takes, so even if one got through, glibc would refuse it without a DNS query.
        ("60 000-byte name, allowed pattern".into(), connect(&format!("{}.h10.invalid", "a.".repeat(30_000)), 1)),
        ("64-byte label, allowed pattern".into(), connect(&format!("{}.h10.invalid", "a".repeat(64)), 1)),
        ("newline, allowed pattern".into(), connect(&format!("x\nFORGED-LINE: {}.h10.invalid", "y".repeat(64)), 1)),
        ("empty label".into(), connect("a..internal", 22)),
        ("leading hyphen".into(), connect("-web.internal", 22)),
        ("bracketed IPv4".into(), connect(&format!("[{ip}]"), 22)),
        ("octal IPv4".into(), connect("0177.0.0.1", 22)),
        ("hex IPv4".into(), connect("0x7f000001", 22)),
        ("IPv6 zone id".into(), connect("fe80::1%lo", 22)),
        ("non-ASCII".into(), connect("wéb.internal", 22)),
        ("host:port in host".into(), connect(&format!("{ip}:22"), 22)),
        ("outside the targets (IP)".into(), connect("8.8.8.8", 22)),
        ("outside the targets (name)".into(), connect("evil.example.com", 22)),
        ("allowed host, port not allowed".into(), connect(&ip, 5432)),
        ("allowed, bastion refuses: closed port".into(), connect(&ip, 1)),
        // `localhost` resolves from /etc/hosts: no DNS query leaves loopback.
        ("allowed name, bastion refuses: closed port".into(), connect("localhost", 1)),
        ("port 0".into(), connect(&ip, 0)),
        ("port out of range".into(), connect(&ip, 70_000)),
        ("port as a string".into(), b"{\"v\":1,\"op\":\"connect\",\"host\":\"web\",\"port\":\"22\"}\n".to_vec()),
        ("host as a number".into(), b"{\"v\":1,\"op\":\"connect\",\"host\":7,\"port\":22}\n".to_vec()),
        ("no host".into(), b"{\"v\":1,\"op\":\"connect\",\"port\":22}\n".to_vec()),
        ("framed not a bool".into(), b"{\"v\":1,\"op\":\"connect\",\"host\":\"web\",\"port\":22,\"framed\":\"yes\"}\n".to_vec()),
        ("op with a newline".into(), b"{\"v\":1,\"op\":\"x\\nFORGED-LINE: op\"}\n".to_vec()),
        ("up for a bastion name with controls".into(), b"{\"v\":1,\"op\":\"up\",\"bastion\":\"x\\nFORGED-LINE: up\\u001b[2J\"}\n".to_vec()),
        ("down for an unknown bastion".into(), b"{\"v\":1,\"op\":\"down\",\"bastion\":\"nope\",\"force\":true}\n".to_vec()),
        ("start for an unknown bastion".into(), b"{\"v\":1,\"op\":\"start\",\"bastion\":\"nope\"}\n".to_vec()),
        ("version 0".into(), b"{\"v\":0,\"op\":\"status\"}\n".to_vec()),
        ("garbage then a newline".into(), b"\xff\xfe\x00garbage\n".to_vec()),
        ("two requests in one line".into(), b"{\"v\":1,\"op\":\"status\"}{\"v\":1,\"op\":\"status\"}\n".to_vec()),
    ];
    // A good connect whose client sends junk and hangs up at once, and one that hangs up before the reply.
    let mut junk = connect(&ip, private.port() as u32);
    junk.extend_from_slice(b"NOT-SSH\r\n\x00\xff");
    list.push(("valid connect, junk, hang up".into(), junk));
    list
}

/// Issue 10: one client's bad input never ends the shared SSH session under other clients' open tunnels. Three
/// `ssh private cat` tunnels are half-way through their data when a stream of bad requests of every kind (bad
/// names, refused targets, targets the bastion rejects, malformed JSON, bad names in up/down/start, 20 concurrent
/// rejected channels) goes through the control socket; then every tunnel finishes and its bytes are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_never_end_the_session_under_open_tunnels() {
    let _serial = SERIAL.lock().await;
    let lab = lab(opts(Duration::from_secs(120))).await;
    allow_targets(&lab, &["*.invalid", "localhost"], &[1, 5433]);
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    const HALF: usize = 512 * 1024;

    // Three tunnels, each echoing 1 MiB back: the first half now, the second after the bad stream.
    let mut tunnels = Vec::new();
    for i in 0..3u64 {
        let mut seed = 0x9e37_79b9_7f4a_7c15 ^ i;
        let data: Vec<u8> = (0..2 * HALF / 8).flat_map(|_| xorshift(&mut seed).to_le_bytes()).collect();
        let mut child = lab
            .ssh_command("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        stdin.write_all(&data[..HALF]).await.unwrap();
        let mut got = vec![0u8; HALF];
        tokio::time::timeout(SSH_DEADLINE, stdout.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("tunnel {i}: first half not echoed{}", diag(&lab)))
            .unwrap();
        assert!(got == data[..HALF], "tunnel {i}: first half garbled");
        tunnels.push((child, stdin, stdout, data, got));
    }
    wait_channels(&lab, 3).await;

    let mut answered = Vec::new();
    let mut raw_controls = Vec::new();
    for (what, bytes) in bad_requests(lab.private_addr()) {
        let seen = exchange(&lab, &bytes, true, Duration::from_secs(30)).await;
        // The wire is JSON (which escapes them anyway): what matters is the message the client prints.
        if seen.error_message().is_some_and(|m| m.chars().any(char::is_control)) {
            raw_controls.push(what.clone());
        }
        answered.push(format!("{what}: {}", seen.error_message().unwrap_or_else(|| "(no error)".into())));
    }
    // Twenty rejected channels at once.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let req = serde_json::json!({"v": 1, "op": "connect", "host": lab.private_addr().ip().to_string(), "port": 1});
        let bytes = format!("{req}\n").into_bytes();
        let socket = lab.files().socket.clone();
        set.spawn(async move { exchange_at(&socket, &bytes, true, Duration::from_secs(30)).await });
    }
    let burst: Vec<Seen> = set.join_all().await;
    let burst_refused = burst.iter().filter(|s| s.error_message().is_some_and(|m| m.contains("refused"))).count();

    // Every tunnel finishes its second half intact, on the same session.
    let mut intact = 0;
    for (i, (mut child, mut stdin, mut stdout, data, mut got)) in tunnels.into_iter().enumerate() {
        stdin.write_all(&data[HALF..]).await.unwrap();
        drop(stdin);
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(SSH_DEADLINE, stdout.read_to_end(&mut rest)).await;
        got.extend_from_slice(&rest);
        let status = tokio::time::timeout(SSH_DEADLINE, child.wait()).await.ok().and_then(Result::ok);
        if got == data && status.is_some_and(|s| s.success()) {
            intact += 1;
        } else {
            eprintln!("tunnel {i}: {} of {} bytes, exit {status:?}", got.len(), data.len());
        }
    }
    let st = lab.daemon_status().await.unwrap_or_default();
    let log = lab.daemon_log();
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with("FORGED-LINE")).collect();
    let pass = intact == 3 && burst_refused == 20 && forged.is_empty() && raw_controls.is_empty()
        && st.first().is_some_and(|b| b.start_calls == 1);
    let observed = format!(
        "3 tunnels with 512 KiB echoed each, then {} bad requests and 20 concurrent channels the bastion refused \
         ({burst_refused} refused); afterwards {intact}/3 tunnels completed their 1 MiB intact; StartInstances {}; \
         log lines forged: {}; replies with raw control characters: {raw_controls:?}",
        answered.len(),
        st.first().map_or(0, |b| b.start_calls),
        forged.len()
    );
    record(
        "10-bad-stream",
        "bad requests of every kind while tunnels are open",
        "each bad request ends only its own connection with a clear error; every open tunnel completes intact; \
         nothing a client sends forges a log line or reaches a reply unescaped",
        &observed,
        pass,
    );
    assert!(pass, "{observed}\n{}\n{forged:?}{}", answered.join("\n"), diag(&lab));
}

/// Target names are checked before anything else sees them: each refusal says what is wrong with the name, and a
/// client's control characters reach neither the reply nor the log as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_target_names_are_refused_with_what_is_wrong() {
    let _serial = SERIAL.lock().await;
    let lab = lab(opts(Duration::from_secs(120))).await;
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    let cases: &[(&str, &str)] = &[
        ("web\nFORGED-LINE: x", "unprintable character \\n at byte 3"),
        ("a..internal", "empty label"),
        (&"a".repeat(300), "300 bytes long; a host name has at most 253"),
        ("0x7f000001", "neither a host name nor an IPv4 address"),
        ("[10.0.16.10]", "brackets may only enclose an IPv6 address"),
        ("my_host.internal", "`_` at byte 2"),
    ];
    let mut bad = Vec::new();
    let mut rows = Vec::new();
    for (host, want) in cases {
        let line = format!("{}\n", serde_json::json!({"v": 1, "op": "connect", "host": host, "port": 22}));
        let seen = exchange(&lab, line.as_bytes(), true, EXCHANGE).await;
        let msg = seen.error_message().unwrap_or_default();
        if !msg.contains(want) || msg.contains('\n') {
            bad.push(format!("{host:?}: {msg:?} (wanted {want:?})"));
        }
        rows.push(msg);
    }
    // The proxy refuses them too, before it starts a daemon, and its stdout stays empty.
    let out = proxy_output(&lab, "web\u{1b}[2J", 22).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let proxy_ok = !out.status.success() && out.stdout.is_empty() && err.contains("\\u{1b}") && !err.contains('\u{1b}');
    let forged = lab.daemon_log().lines().any(|l| l.starts_with("FORGED-LINE"));
    let pass = bad.is_empty() && proxy_ok && !forged && still_serves(&lab).await;
    let observed = format!(
        "{} names refused, e.g. {:?}; proxy: {} {:?}; forged log line: {forged}; {bad:?}",
        rows.len(),
        rows.first(),
        out.status,
        err.trim()
    );
    record(
        "10-names",
        "target names that are not IP literals or RFC 1123 host names",
        "refused before the policy, the log or the bastion sees them, with a message saying what is wrong; control \
         characters escaped",
        &observed,
        pass,
    );
    assert!(pass, "{observed}{}", diag(&lab));
}
