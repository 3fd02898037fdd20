//! The seam between the bastion lifecycle and SSH: a [`Dialer`] turns a ready address into a [`Session`], and a
//! session opens forwarded streams. [`crate::ssh`] implements both over russh; unit tests use fakes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::progress::Progress;
use crate::ssh::SshError;

/// Anything that is a bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A forwarded byte stream (a direct-tcpip channel). Shutting down its write half sends EOF to the target.
pub type BoxStream = Box<dyn Stream>;

/// One authenticated SSH session to a bastion, shared by all forwarded connections.
#[async_trait::async_trait]
pub trait Session: Send + Sync + 'static {
    /// Opens a direct-tcpip channel to `host:port` as seen from the bastion.
    /// Errors: [`SshError::ChannelRefused`] with the bastion's reason, or [`SshError::Disconnected`].
    async fn open(&self, host: &str, port: u16) -> Result<BoxStream, SshError>;
    /// True once the session is gone (disconnect, keepalive failure); a new one must be dialed.
    fn is_closed(&self) -> bool;
    /// Disconnects the session now (for `bastionctl down --force` and idle stop); open channels end with it.
    /// Returns at once; the disconnect completes in the background.
    fn close(&self);
}

/// Makes sessions: waits for the `SSH-2.0-` banner at `addr`, connects, verifies the host key, authenticates.
#[async_trait::async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// Dials the bastion `instance_id` at `addr`, giving up at `deadline` ([`SshError::Timeout`]). Progress lines
    /// (e.g. `waiting for sshd at 127.0.2.1:22`) go to `progress`.
    async fn dial(
        &self,
        addr: SocketAddr,
        instance_id: &str,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Arc<dyn Session>, SshError>;
}
