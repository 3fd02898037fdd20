//! The config's `[[forward]]` tables: TCP listeners the daemon binds at start-up and keeps open for its life. Each
//! accepted connection is routed, leased and opened as a direct-tcpip channel like a proxy's `connect` (so the
//! bastion starts on the first connection, an open connection holds it, and an idle listener does not), then
//! copied both ways. A broken tunnel resets the local connection instead of closing it cleanly.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use bastionctl_core::text::host_port;

use super::Shared;
use crate::config::{Config, ForwardConfig};

/// A `[[forward]]` with its bound listener.
pub struct Bound {
    forward: ForwardConfig,
    listener: TcpListener,
}

/// Binds every `[[forward]]` listener, so that a port in use stops the daemon before it says it is ready.
///
/// Errors: the first listener that cannot be bound, naming the table, the address and the file.
pub async fn bind(cfg: &Config) -> anyhow::Result<Vec<Bound>> {
    let mut out = Vec::new();
    for (i, f) in cfg.forwards.iter().enumerate() {
        let addr = f.listen_addr();
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for forward[{i}] `{}` of {}", f.name, cfg.source.display())
        })?;
        out.push(Bound { forward: f.clone(), listener });
    }
    Ok(out)
}

/// Accepts on one listener until `shutdown`; connections run under `tracker` (so the daemon's drain covers them).
pub(super) async fn serve(shared: Arc<Shared>, bound: Bound, tracker: TaskTracker, shutdown: CancellationToken) {
    let Bound { forward, listener } = bound;
    let (host, port) = forward.target();
    let target = host_port(&host, port);
    info!(forward = %forward.name, listen = %forward.listen_addr(), %target, "forward listening");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: log it, and do not spin on it.
                    warn!(forward = %forward.name, "accept failed: {e}");
                    tokio::time::sleep(crate::forward::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let span = info_span!("forward", name = %forward.name, %peer);
        tracker.spawn(one(shared.clone(), tcp, host.clone(), port).instrument(span));
    }
}

async fn one(shared: Arc<Shared>, tcp: TcpStream, host: String, port: u16) {
    let _ = tcp.set_nodelay(true);
    let opened = async {
        let target = crate::policy::TargetHost::parse(&host).map_err(|e| crate::control::ErrorReply {
            kind: "bad_request".into(),
            message: e.to_string(),
            hint: None,
        })?;
        let route = super::route::route(&shared, &target, port).await.map_err(|e| e.to_reply())?;
        let lease = route.bastion.acquire().await.map_err(|e| e.to_reply())?;
        let channel = lease.open(&route.host.to_string(), port).await.map_err(crate::error::Error::from)?;
        Ok::<_, crate::control::ErrorReply>((lease, channel, route.host))
    };
    let (lease, channel, host) = match opened.await {
        Ok(o) => o,
        Err(e) => {
            warn!("refused or failed: {}", e.message);
            let _ = tcp.set_zero_linger();
            return;
        }
    };
    let target = host_port(&host, port);
    info!(%target, "channel open");
    super::conn::splice(&tcp, bytes::Bytes::new(), channel, &lease, &target, false).await;
    drop(lease);
}
