//! `bastionctl forward [--bind ADDR] [BIND:]LOCAL_PORT:HOST:PORT ...`: local TCP listeners whose connections each
//! become a tunnel through the daemon, exactly like a `bastionctl proxy` (same single-flight start, same idle rule:
//! an open connection holds the bastion, an idle listener does not). Runs in the foreground until Ctrl-C.
//!
//! A forwarded stream is delivered whole or fails loudly: when the tunnel breaks, the local connection is reset
//! (not closed cleanly), so the client program sees an error rather than a short read.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Config, parse_host_port};
use crate::progress_ui::ProgressUi;

/// Pause after a failed accept (e.g. no file descriptors left) before accepting again.
pub const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// One forward as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Local address, when given in the spec (else `--bind`).
    pub bind: Option<IpAddr>,
    /// Local port; 0 picks a free one.
    pub local_port: u16,
    /// Target host as the bastion sees it.
    pub host: String,
    /// Target port.
    pub port: u16,
}

/// A spec that does not parse (exit status 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{spec}` is not [BIND:]LOCAL_PORT:HOST:PORT ({why}), e.g. 5432:db.internal:5432")]
pub struct SpecError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong.
    pub why: String,
}

impl FromStr for ForwardSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let err = |why: String| SpecError { spec: s.into(), why };
        let parts = split_fields(s).ok_or_else(|| err("an unclosed `[`".into()))?;
        let (bind, local, host, port) = match parts.as_slice() {
            [local, host, port] => (None, *local, *host, *port),
            [bind, local, host, port] => {
                let ip = bind.parse::<IpAddr>().map_err(|_| err(format!("`{bind}` is not a local address")))?;
                (Some(ip), *local, *host, *port)
            }
            _ => return Err(err(format!("{} fields instead of 3 or 4", parts.len()))),
        };
        let local_port = local.parse::<u16>().map_err(|_| err(format!("`{local}` is not a local port")))?;
        let bracketed = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let (host, port) = parse_host_port(&bracketed).map_err(err)?;
        Ok(ForwardSpec { bind, local_port, host, port })
    }
}

/// Splits `s` at the colons outside `[...]`, dropping the brackets; `None` for an unclosed bracket or text right
/// after a `]`.
fn split_fields(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let (field, tail) = match rest.strip_prefix('[') {
            Some(inner) => inner.split_once(']')?,
            None => rest.find(':').map_or((rest, ""), |i| rest.split_at(i)),
        };
        out.push(field);
        match tail.strip_prefix(':') {
            Some(next) => rest = next,
            None if tail.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// Checks every spec against the config's policy, binds every listener (printing one line each on stdout), then
/// serves until Ctrl-C.
///
/// Errors: a target the config does not allow (naming the key to add), a port that cannot be bound.
pub async fn run(cfg: &Config, bind: IpAddr, specs: Vec<ForwardSpec>, progress: ProgressUi) -> anyhow::Result<()> {
    for s in &specs {
        let host = crate::policy::TargetHost::parse(&s.host)?;
        crate::proxy::check_policy(cfg, &host, s.port)?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in specs {
        let local = SocketAddr::new(s.bind.unwrap_or(bind), s.local_port);
        let listener = TcpListener::bind(local).await.with_context(|| format!("cannot listen on {local}"))?;
        let local = listener.local_addr()?;
        println!("{local} -> {}", target_text(&s.host, s.port));
        let label = format!("{local} -> {}: ", target_text(&s.host, s.port));
        tasks.spawn(listen(cfg.clone(), listener, s.host, s.port, progress.with_prefix(label)));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(res) = tasks.join_next() => res.context("a listener failed")?,
    }
}

fn target_text(host: &str, port: u16) -> String {
    bastionctl_core::text::host_port(host, port)
}

/// Accepts on `listener` for ever; each connection gets its own task and its own tunnel.
async fn listen(cfg: Config, listener: TcpListener, host: String, port: u16, progress: ProgressUi) -> anyhow::Result<()> {
    let cfg = std::sync::Arc::new(cfg);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // E.g. out of file descriptors: say so, and do not spin on it.
                eprintln!("bastionctl: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (cfg, host) = (cfg.clone(), host.clone());
        let mut progress = progress.with_prefix(format!("{peer}: "));
        tokio::spawn(async move {
            if let Err(e) = tunnel(&cfg, tcp, &host, port, &mut progress).await {
                progress.finish();
                eprintln!("bastionctl: {peer} -> {}: {e:#}", target_text(&host, port));
            }
        });
    }
}

/// One local connection through the daemon. On a broken tunnel the local connection is reset.
async fn tunnel(cfg: &Config, mut tcp: TcpStream, host: &str, port: u16, progress: &mut ProgressUi) -> anyhow::Result<()> {
    let _ = tcp.set_nodelay(true);
    let opened = crate::proxy::open(cfg, host, port, progress).await;
    progress.finish();
    let (mut down, mut wr) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = tcp.set_zero_linger();
            return Err(e);
        }
    };
    anyhow::ensure!(down.framed, "the daemon is too old to frame the tunnel; restart it");
    let down_res = splice(&mut tcp, &mut down, &mut wr).await;
    if down_res.is_err() {
        // Reset, so the client program sees an error instead of a clean end of a cut stream.
        let _ = tcp.set_zero_linger();
    }
    down_res
}

/// Copies the local connection to the daemon raw, and the daemon's frames back, until the daemon's side ends.
async fn splice(
    tcp: &mut TcpStream,
    from_daemon: &mut crate::proxy::Downstream,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
) -> anyhow::Result<()> {
    let (mut tcp_rd, mut tcp_wr) = tcp.split();
    let up = async {
        let res = tokio::io::copy(&mut tcp_rd, wr).await;
        let _ = wr.shutdown().await;
        res
    };
    let down = async {
        let res = crate::proxy::copy_frames(&from_daemon.buffered, &mut from_daemon.rd, &mut tcp_wr).await;
        if res.is_ok() {
            let _ = tcp_wr.shutdown().await;
        }
        res
    };
    tokio::pin!(up, down);
    tokio::select! {
        d = &mut down => d,
        _ = &mut up => down.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bind: Option<&str>, local: u16, host: &str, port: u16) -> ForwardSpec {
        ForwardSpec { bind: bind.map(|b| b.parse().unwrap()), local_port: local, host: host.into(), port }
    }

    #[test]
    fn specs_parse_like_ssh_dash_l() {
        assert_eq!("5432:db.internal:5432".parse(), Ok(spec(None, 5432, "db.internal", 5432)));
        assert_eq!("0:10.0.16.5:22".parse(), Ok(spec(None, 0, "10.0.16.5", 22)));
        assert_eq!("127.0.0.2:15432:db:5432".parse(), Ok(spec(Some("127.0.0.2"), 15432, "db", 5432)));
        assert_eq!("[::1]:15432:db:5432".parse(), Ok(spec(Some("::1"), 15432, "db", 5432)));
        assert_eq!("5432:[fd00::5]:5432".parse(), Ok(spec(None, 5432, "fd00::5", 5432)));
        for bad in ["5432", "5432:db", "x:5432:db:5432", "99999:db:5432", "5432:db:0", "5432::5432"] {
            assert!(bad.parse::<ForwardSpec>().is_err(), "{bad}");
        }
    }
}
