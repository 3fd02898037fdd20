//! Readiness of a booting bastion: poll its sshd until it answers with an SSH-2.0 version line.
//!
//! A freshly started instance refuses or drops connections for a while, and something other than sshd may answer
//! first; only a real `SSH-2.0-` line counts as ready.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::SshError;

/// Pause between two probes of a bastion that is not answering yet.
pub const BANNER_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Limit for one probe (TCP connect plus reading the version line), so a black-holed SYN does not eat the deadline.
pub const BANNER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest version line accepted (RFC 4253 allows 255 bytes including CR LF).
const MAX_LINE: usize = 255;

/// Waits until sshd at `addr` sends its version line, giving up at `deadline` with [`SshError::Timeout`].
/// Returns the version line without its line ending, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
/// Lines starting with `SSH-1.99-` (a server that also speaks 2.0) count as ready too.
pub async fn wait_for_banner(addr: SocketAddr, deadline: Instant) -> Result<String, SshError> {
    let start = Instant::now();
    loop {
        let probe_deadline = deadline.min(Instant::now() + BANNER_PROBE_TIMEOUT);
        let last = match timeout_at(probe_deadline, probe(addr)).await {
            Ok(Ok(line)) if is_ssh2(&line) => return Ok(line),
            Ok(Ok(line)) => format!("not an SSH-2.0 server: {:?}", line.chars().take(60).collect::<String>()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        tracing::debug!(%addr, "sshd not ready: {last}");
        let next = Instant::now() + BANNER_RETRY_INTERVAL;
        if next >= deadline {
            return Err(SshError::Timeout {
                what: format!("sshd at {addr} to answer (last: {last})"),
                after: deadline.saturating_duration_since(start),
            });
        }
        tokio::time::sleep_until(next).await;
    }
}

fn is_ssh2(line: &str) -> bool {
    line.starts_with("SSH-2.0-") || line.starts_with("SSH-1.99-")
}

/// Connects once and reads the first line (up to `\n`, EOF or [`MAX_LINE`] bytes).
async fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 64];
    loop {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            if buf.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without a banner"));
            }
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.contains(&b'\n') || buf.len() >= MAX_LINE {
            break;
        }
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()).min(MAX_LINE);
    let line = String::from_utf8_lossy(&buf[..end]);
    Ok(line.trim_end_matches('\r').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn serve(banner: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(banner).await;
                // Keep the connection open a little like sshd waiting for the client's version.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(s);
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn ready_when_sshd_answers() {
        let addr = serve(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n").await;
        let line = wait_for_banner(addr, Instant::now() + Duration::from_secs(5)).await.expect("ready");
        assert_eq!(line, "SSH-2.0-OpenSSH_9.2p1 Debian");
    }

    #[tokio::test]
    async fn waits_for_a_late_listener() {
        // Reserve a port, free it, and start listening on it only after a while.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let listener = TcpListener::bind(addr).await.expect("rebind");
            let (mut s, _) = listener.accept().await.expect("accept");
            let _ = s.write_all(b"SSH-2.0-late\n").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let start = std::time::Instant::now();
        let line = wait_for_banner(addr, Instant::now() + Duration::from_secs(10)).await.expect("ready");
        assert_eq!(line, "SSH-2.0-late");
        assert!(start.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn non_ssh_banner_keeps_waiting_then_times_out() {
        let addr = serve(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let start = std::time::Instant::now();
        let err = wait_for_banner(addr, Instant::now() + Duration::from_millis(900)).await.expect_err("timeout");
        assert!(start.elapsed() >= Duration::from_millis(600), "gave up early: {:?}", start.elapsed());
        match &err {
            SshError::Timeout { what, .. } => {
                assert!(what.contains(&addr.to_string()) && what.contains("not an SSH-2.0 server"), "{what}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.kind(), "timeout");
    }

    #[tokio::test]
    async fn silent_server_times_out_at_the_deadline() {
        // Accepts (via the backlog) but never writes.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let start = std::time::Instant::now();
        let err = wait_for_banner(addr, Instant::now() + Duration::from_millis(500)).await.expect_err("timeout");
        assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "overran the deadline: {:?}", start.elapsed());
        drop(listener);
    }
}
