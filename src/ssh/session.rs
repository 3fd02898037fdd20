//! One russh session to a bastion: the client [`Handler`] that russh's session task calls (the host key check,
//! through [`crate::hostkeys::check`], and what the task learns that the session needs later: why it ended, the
//! bastion's text for refused channels), and [`RusshSession`], the authenticated session that opens a
//! `direct-tcpip` channel per forwarded connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::client::{self, DisconnectReason, Handle, Handler};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelId, ChannelOpenFailure, Disconnect};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::SshError;
use crate::hostkeys::check::HostKeyCheck;
use crate::tunnel::{Channel, ChannelRx, ChannelTx, Session};

/// Default limit for the bastion to confirm or refuse a channel (`channel_open_timeout`). sshd confirms only once
/// its own TCP connect to the target has succeeded, so this also bounds a target that does not answer.
pub const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Limit for sending the disconnect message in [`Session::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for sshd's text after a refusal (it arrives right behind the refusal).
const REFUSAL_TEXT_WAIT: Duration = Duration::from_millis(200);

/// How long a refused channel's text is kept for the opener to pick up.
const FAILURE_TEXT_TTL: Duration = Duration::from_secs(5);
/// At most this many unclaimed refusal texts are kept.
const FAILURE_TEXT_MAX: usize = 32;

// ---- the russh handler ----

/// What the session task reports to the session's users.
#[derive(Debug, Default)]
pub(crate) struct SessionEvents {
    /// Why the session ended, once it has.
    closed: Mutex<Option<String>>,
    /// Texts of refused channel opens not yet claimed: (reason code, sshd's description, when).
    refusals: Mutex<VecDeque<(u32, String, Instant)>>,
    /// Woken whenever a refusal text arrives.
    refusal_arrived: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SessionEvents {
    /// Why the session ended, if it has and the reason is known.
    pub(crate) fn closed_reason(&self) -> Option<String> {
        lock(&self.closed).clone()
    }

    /// Remembers why the session ended (the first reason wins).
    pub(crate) fn record_close(&self, reason: String) {
        lock(&self.closed).get_or_insert(reason);
    }

    fn record_refusal(&self, code: u32, text: &str) {
        let mut q = lock(&self.refusals);
        let now = Instant::now();
        q.retain(|(_, _, at)| now.duration_since(*at) < FAILURE_TEXT_TTL);
        if q.len() >= FAILURE_TEXT_MAX {
            q.pop_front();
        }
        q.push_back((code, text.to_string(), now));
        drop(q);
        self.refusal_arrived.notify_waiters();
    }

    /// Claims sshd's text for a refusal with `code`, waiting up to `wait` for the session task to deliver it (it
    /// arrives just after the refusal itself). With concurrent refusals of the same code the texts may be swapped;
    /// that only affects the wording of the message.
    pub(crate) async fn refusal_text(&self, code: u32, wait: Duration) -> Option<String> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.refusal_arrived.notified();
            {
                let mut q = lock(&self.refusals);
                if let Some(i) = q.iter().position(|(c, _, _)| *c == code) {
                    return q.remove(i).map(|(_, text, _)| text);
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// The per-session russh handler.
pub(crate) struct ClientHandler {
    /// How the server's host key is judged.
    pub(crate) hostkey: HostKeyCheck,
    /// Shared with the [`RusshSession`].
    pub(crate) events: Arc<SessionEvents>,
}

impl Handler for ClientHandler {
    type Error = SshError;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        // Certificates go to `@cert-authority` lines first and fall back to the key they certify.
        self.hostkey.verify(server_public_key).await?;
        Ok(true)
    }

    async fn channel_open_failure(
        &mut self,
        _channel: ChannelId,
        reason: ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        self.events.record_refusal(reason.code(), description);
        Ok(())
    }

    async fn disconnected(&mut self, reason: DisconnectReason<SshError>) -> Result<(), SshError> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                self.events.record_close(format!("the bastion disconnected: {info:?}"));
                Ok(())
            }
            DisconnectReason::Error(e) => {
                self.events.record_close(e.to_string());
                Err(e)
            }
        }
    }
}

/// Words for a refusal: the reason code's meaning plus sshd's text when it adds something.
fn describe_refusal(reason: &ChannelOpenFailure, text: Option<&str>) -> String {
    let base = match reason {
        ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".to_string(),
        ChannelOpenFailure::ConnectFailed => "the bastion could not connect to the target".to_string(),
        ChannelOpenFailure::UnknownChannelType => "unknown channel type".to_string(),
        ChannelOpenFailure::ResourceShortage => "resource shortage on the bastion".to_string(),
        ChannelOpenFailure::Other { code, .. } => format!("reason code {code}"),
    };
    match text.map(str::trim) {
        Some(t) if !t.is_empty() => format!("{base} ({t})"),
        _ => base,
    }
}

/// Words for a channel the bastion neither confirmed nor refused within `after`.
fn open_timed_out(after: Duration) -> String {
    format!(
        "the bastion could not connect to the target: open timed out after {} (the target does not answer: is it \
         up, and does its security group let the bastion in? channel_open_timeout sets the limit)",
        humantime::format_duration(after)
    )
}

// ---- the session ----

/// An authenticated session; made by [`super::SshDialer`]. Dropping it (and every stream it opened) ends the session.
pub struct RusshSession {
    /// Shared with the background task of [`Session::close`].
    handle: Arc<Handle<ClientHandler>>,
    events: Arc<SessionEvents>,
    addr: SocketAddr,
    /// Set by [`Session::close`], so the session counts as closed before the disconnect has gone through.
    closing: AtomicBool,
    /// Limit for each channel open.
    open_timeout: Duration,
}

impl RusshSession {
    pub(crate) fn new(
        handle: Handle<ClientHandler>,
        events: Arc<SessionEvents>,
        addr: SocketAddr,
        open_timeout: Duration,
    ) -> Self {
        RusshSession { handle: Arc::new(handle), events, addr, closing: AtomicBool::new(false), open_timeout }
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
    async fn open(&self, host: &str, port: u16) -> Result<Channel, SshError> {
        if self.is_closed() {
            return Err(self.gone());
        }
        let opening = self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let channel = match tokio::time::timeout(self.open_timeout, opening).await {
            // sshd is still connecting to the target: it drops packets or is down. Said as a refusal, so the
            // message and hint are about the target, not the bastion.
            Err(_) => {
                return Err(SshError::ChannelRefused {
                    host: host.to_string(),
                    port,
                    reason: open_timed_out(self.open_timeout),
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
        let (read, write) = channel.split();
        Ok(Channel { rx: received(read), tx: Box::new(RusshTx(Some(write))) })
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

// ---- a channel's two halves ----

/// The data the target sent, as russh delivered it (one chunk per SSH packet); ends at EOF, close, or with the
/// session. Other channel messages (window adjusts, requests) are skipped.
fn received(read: russh::ChannelReadHalf) -> ChannelRx {
    let chunks = futures_util::stream::unfold(read, |mut read| async move {
        loop {
            match read.wait().await? {
                russh::ChannelMsg::Data { data } => return Some((data, read)),
                russh::ChannelMsg::Eof | russh::ChannelMsg::Close => return None,
                _ => {}
            }
        }
    });
    // Fused: polling it again after its end gives the end again.
    Box::pin(futures_util::StreamExt::fuse(chunks))
}

/// Sends owned chunks to the target with russh's `data_bytes`: sliced into packets as the window allows, with no
/// copy on our side. Dropping it closes the channel (as russh's own stream does).
struct RusshTx(Option<russh::ChannelWriteHalf<client::Msg>>);

impl RusshTx {
    fn half(&self) -> std::io::Result<&russh::ChannelWriteHalf<client::Msg>> {
        self.0.as_ref().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed"))
    }
}

fn channel_gone(e: russh::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, format!("channel closed: {e}"))
}

#[async_trait::async_trait]
impl ChannelTx for RusshTx {
    async fn send(&mut self, data: bytes::Bytes) -> std::io::Result<()> {
        self.half()?.data_bytes(data).await.map_err(channel_gone)
    }

    async fn eof(&mut self) -> std::io::Result<()> {
        self.half()?.eof().await.map_err(channel_gone)
    }
}

impl Drop for RusshTx {
    fn drop(&mut self) {
        let Some(half) = self.0.take() else { return };
        // The close goes out through the session task; without a runtime the session is gone with it anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = half.close().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusal_text_is_claimed_once_even_if_it_arrives_late() {
        let events = Arc::new(SessionEvents::default());
        let e2 = events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            e2.record_refusal(2, "Connection refused");
        });
        let text = events.refusal_text(2, Duration::from_secs(2)).await;
        assert_eq!(text.as_deref(), Some("Connection refused"));
        assert_eq!(events.refusal_text(2, Duration::from_millis(10)).await, None);
        let msg = describe_refusal(&ChannelOpenFailure::ConnectFailed, text.as_deref());
        assert_eq!(msg, "the bastion could not connect to the target (Connection refused)");
    }
}
