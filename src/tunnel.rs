//! The seam between the bastion lifecycle and SSH: a [`Dialer`] turns a ready address into a [`Session`], and a
//! session opens forwarded streams. [`crate::ssh`] implements both over russh; unit tests use fakes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;

use crate::progress::Progress;
use crate::ssh::SshError;

/// A forwarded byte stream (a direct-tcpip channel) as owned chunks both ways: a chunk read from a client socket
/// reaches russh's packet encoder without another copy, and what the target sent is written to the client as it
/// arrived, several chunks per write when they queue up.
pub struct Channel {
    /// What the target sent, chunk by chunk. Ends at the target's EOF, or when the channel or the session closes
    /// ([`Session::is_closed`] tells which).
    pub rx: ChannelRx,
    /// Toward the target. Dropping it closes the channel.
    pub tx: Box<dyn ChannelTx>,
}

/// The target-to-client half of a [`Channel`].
pub type ChannelRx = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// The client-to-target half of a [`Channel`].
#[async_trait::async_trait]
pub trait ChannelTx: Send {
    /// Queues `data` for the target, split into SSH packets as the channel's window and packet size allow; waits
    /// while the window is exhausted. Errors once the channel or session is gone.
    async fn send(&mut self, data: Bytes) -> std::io::Result<()>;
    /// Sends EOF: the client will send nothing more. The channel stays open for the target's reply.
    async fn eof(&mut self) -> std::io::Result<()>;
}

/// One authenticated SSH session to a bastion, shared by all forwarded connections.
#[async_trait::async_trait]
pub trait Session: Send + Sync + 'static {
    /// Opens a direct-tcpip channel to `host:port` as seen from the bastion.
    /// Errors: [`SshError::ChannelRefused`] with the bastion's reason, or [`SshError::Disconnected`].
    async fn open(&self, host: &str, port: u16) -> Result<Channel, SshError>;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A channel whose target sends back every chunk it gets, and ends (EOF) once the client has sent EOF.
    pub(crate) fn echo_channel() -> Channel {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let rx = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Channel { rx: Box::pin(futures_util::StreamExt::fuse(rx)), tx: Box::new(Echo(Some(tx))) }
    }

    struct Echo(Option<tokio::sync::mpsc::Sender<Bytes>>);

    #[async_trait::async_trait]
    impl ChannelTx for Echo {
        async fn send(&mut self, data: Bytes) -> std::io::Result<()> {
            let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed");
            self.0.as_ref().ok_or_else(gone)?.send(data).await.map_err(|_| gone())
        }

        async fn eof(&mut self) -> std::io::Result<()> {
            self.0 = None;
            Ok(())
        }
    }
}
