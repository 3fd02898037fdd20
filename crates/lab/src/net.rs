//! Loopback ports and readiness probes for the lab.
//!
//! Ports come from the OS (bind port 0, read it, close). A process-wide set keeps two labs in one test binary
//! from being handed the same number before either has bound it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Longest wait for one probe (connect plus banner).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between polls of anything the lab waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that was free on `ip` a moment ago and has not been handed out before in this process.
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    assert!(ip.is_loopback(), "the lab only uses 127.0.0.0/8 addresses, not {ip}");
    for _ in 0..100 {
        let port = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("cannot bind {ip}:0 to find a free port"))?
            .local_addr()?
            .port();
        let mut set = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if set.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no fresh free port on {ip} after 100 tries")
}

/// Connects to `addr` and reads the first line; `Ok(line)` if it starts with `SSH-2.0-`.
pub async fn read_ssh_banner(addr: SocketAddr) -> anyhow::Result<String> {
    assert!(addr.ip().is_loopback(), "the lab only dials 127.0.0.0/8 addresses, not {addr}");
    let probe = async {
        let stream = TcpStream::connect(addr).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        anyhow::Ok(line)
    };
    let line = timeout(PROBE_TIMEOUT, probe).await.context("no banner within the probe timeout")??;
    if !line.starts_with("SSH-2.0-") {
        bail!("{addr} answered {line:?}, not an SSH-2.0 banner");
    }
    Ok(line.trim_end().to_string())
}

/// One HTTP/1.0 GET to `127.0.0.1:port`; returns the status code and the body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let req = async {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = timeout(PROBE_TIMEOUT, req).await.context("HTTP request timed out")??;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    Ok((code, buf[head_end + 4..].to_vec()))
}

/// A TCP echo service on `ip` (port from the OS), what a database is to the tests; runs until the runtime ends.
pub async fn echo_service(ip: Ipv4Addr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("cannot listen for the echo service");
    let addr = listener.local_addr().expect("the echo service's address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    addr
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `true` or `deadline` passes; `what` names the wait in
/// the error.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
