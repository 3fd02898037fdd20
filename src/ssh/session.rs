//! [`RusshSession`]: one authenticated russh session to a bastion, opening `direct-tcpip` channels for forwarded
//! connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::Disconnect;
use russh::client::Handle;

use super::SshError;
use super::handler::{ClientHandler, SessionEvents, describe_refusal};
use crate::tunnel::{BoxStream, Session};

/// Limit for the bastion to confirm or refuse a channel. sshd confirms only once its own TCP connect to the target
/// has succeeded, so this also bounds a target that does not answer.
pub const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Limit for sending the disconnect message in [`Session::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for sshd's text after a refusal (it arrives right behind the refusal).
const REFUSAL_TEXT_WAIT: Duration = Duration::from_millis(200);

/// An authenticated session; made by [`super::SshDialer`]. Dropping it (and every stream it opened) ends the session.
pub struct RusshSession {
    /// Shared with the background task of [`Session::close`].
    handle: Arc<Handle<ClientHandler>>,
    events: Arc<SessionEvents>,
    addr: SocketAddr,
    /// Set by [`Session::close`], so the session counts as closed before the disconnect has gone through.
    closing: AtomicBool,
}

impl RusshSession {
    pub(crate) fn new(handle: Handle<ClientHandler>, events: Arc<SessionEvents>, addr: SocketAddr) -> Self {
        RusshSession { handle: Arc::new(handle), events, addr, closing: AtomicBool::new(false) }
    }

    /// The bastion's sshd address this session is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn gone(&self) -> SshError {
        SshError::Disconnected(self.events.closed_reason().unwrap_or_else(|| format!("session to {} ended", self.addr)))
    }
}

impl std::fmt::Debug for RusshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusshSession").field("addr", &self.addr).field("closed", &self.is_closed()).finish()
    }
}

#[async_trait::async_trait]
impl Session for RusshSession {
    async fn open(&self, host: &str, port: u16) -> Result<BoxStream, SshError> {
        if self.is_closed() {
            return Err(self.gone());
        }
        let opening = self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let channel = match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, opening).await {
            Err(_) => {
                return Err(SshError::Timeout {
                    what: format!("the bastion to open a channel to {host}:{port}"),
                    after: CHANNEL_OPEN_TIMEOUT,
                });
            }
            Ok(Ok(channel)) => channel,
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => {
                let text = self.events.refusal_text(reason.code(), REFUSAL_TEXT_WAIT).await;
                return Err(SshError::ChannelRefused {
                    host: host.to_string(),
                    port,
                    reason: describe_refusal(&reason, text.as_deref()),
                });
            }
            Ok(Err(e)) if self.handle.is_closed() => {
                tracing::debug!("channel open failed on a closed session: {e}");
                return Err(self.gone());
            }
            Ok(Err(e)) => return Err(e.into()),
        };
        tracing::debug!(%host, port, channel = %channel.id(), "direct-tcpip channel open");
        Ok(Box::new(channel.into_stream()))
    }

    fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Relaxed) || self.handle.is_closed()
    }

    fn close(&self) {
        if self.closing.swap(true, Ordering::Relaxed) {
            return;
        }
        self.events.record_close("closed by bastionctl".to_string());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime to send the disconnect; dropping the session ends it");
            return;
        };
        let handle = self.handle.clone();
        let addr = self.addr;
        rt.spawn(async move {
            let bye = handle.disconnect(Disconnect::ByApplication, "bastionctl closed the session", "en");
            match tokio::time::timeout(CLOSE_TIMEOUT, bye).await {
                Ok(Ok(())) => tracing::debug!(%addr, "SSH session closed"),
                Ok(Err(e)) => tracing::debug!(%addr, "disconnect: {e}"),
                Err(_) => tracing::debug!(%addr, "disconnect did not go through in {CLOSE_TIMEOUT:?}"),
            }
        });
    }
}
