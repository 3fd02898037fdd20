//! Splicing a client's socket to its direct-tcpip channel, both directions at once, until both are done.
//!
//! Client to target is raw in every mode. Target to client is [`control::Frame`]s for a framed client (the
//! ProxyCommand), ending in `E` (the target sent EOF) or `X` (the tunnel broke), and raw otherwise (a client that
//! predates framing, or ssh itself holding a socket passed by `proxy --fdpass`): then a broken tunnel closes the
//! socket in both directions, which ssh reports, and the daemon logs why.
//!
//! One buffer per direction, allocated once; reads sized to an SSH packet, so a chunk is one read and one write.
//! Backpressure comes from the socket (client side) and the channel window (bastion side).

use std::os::fd::AsRawFd;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tracing::{info, warn};

use crate::control::{self, ErrorReply};
use crate::lifecycle::Lease;
use crate::tunnel::BoxStream;

/// Bytes read from the client per chunk: an SSH packet's worth (OpenSSH's channel maximum packet is 32 KiB), which
/// the channel sends as one data message.
pub const UPLOAD_CHUNK: usize = 32 * 1024;

/// Bytes read from the channel per chunk (one read returns at most one received SSH packet).
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Splices until both directions are done (or one failed) and logs how the channel ended.
pub(super) async fn splice(io: &mut BufReader<UnixStream>, channel: BoxStream, lease: &Lease, target: &str, framed: bool) {
    let (down_res, up_res) = copy_both(io, channel, lease, target, framed).await;
    let up_bytes = match up_res {
        Some(Ok(n)) => n.to_string(),
        Some(Err(e)) => format!("failed ({e})"),
        None => "cut".into(),
    };
    match down_res {
        Ok((down, Ok(()))) => info!(%target, up = %up_bytes, down, framed, "channel closed"),
        Ok((down, Err(e))) => {
            warn!(%target, up = %up_bytes, down, framed, "tunnel broke: {}", e.message);
            if !framed {
                // Nothing in a raw stream can say why: close it both ways so the client's ssh sees the end now.
                let _ = nix::sys::socket::shutdown(io.get_ref().as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
        Err(Gone(e)) => info!(%target, up = %up_bytes, "client went away: {e}"),
    }
}

/// What the download direction ended with: bytes sent and how the channel ended, or the client gone.
type DownResult = Result<(u64, Result<(), ErrorReply>), Gone>;

/// Both copy directions; returns the download's result and the upload's (`None`: cut after a failed download).
async fn copy_both(
    io: &mut BufReader<UnixStream>,
    channel: BoxStream,
    lease: &Lease,
    target: &str,
    framed: bool,
) -> (DownResult, Option<std::io::Result<u64>>) {
    let buffered = io.buffer().to_vec();
    io.consume(buffered.len());
    let (sock_rd, mut sock_wr) = io.get_mut().split();
    let (mut ch_rd, mut ch_wr) = tokio::io::split(channel);
    let up = async {
        let mut from_client = BufReader::with_capacity(UPLOAD_CHUNK, (&buffered[..]).chain(sock_rd));
        let res = tokio::io::copy_buf(&mut from_client, &mut ch_wr).await;
        // EOF (or a broken client socket) from the client becomes EOF to the target.
        let _ = ch_wr.shutdown().await;
        res
    };
    let down = async {
        let head = if framed { 5 } else { 0 };
        let mut buf = vec![0u8; head + DOWNLOAD_CHUNK];
        let mut total: u64 = 0;
        let end: Result<(), ErrorReply> = loop {
            match ch_rd.read(&mut buf[head..]).await {
                Ok(0) if lease.ready.session.is_closed() => break Err(broken(lease, target, "its SSH session ended")),
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if framed {
                        buf[..5].copy_from_slice(&control::data_frame_head(n));
                    }
                    sock_wr.write_all(&buf[..head + n]).await.map_err(Gone)?;
                    total += n as u64;
                }
                Err(e) => break Err(broken(lease, target, &format!("reading the channel failed: {e}"))),
            }
        };
        match (&end, framed) {
            (Ok(()), true) => sock_wr.write_all(&[control::FRAME_END]).await.map_err(Gone)?,
            (Err(e), true) => sock_wr.write_all(&control::error_frame(e)).await.map_err(Gone)?,
            // Raw: EOF after a clean end; after a break the socket is shut both ways below.
            (_, false) => {}
        }
        let _ = sock_wr.shutdown().await;
        Ok::<_, Gone>((total, end))
    };
    tokio::pin!(up, down);
    tokio::select! {
        d = &mut down => {
            // After a clean end the client still may be sending; after a failure the channel is useless.
            let u = match &d { Ok((_, Ok(()))) => Some(up.await), _ => None };
            (d, u)
        }
        u = &mut up => (down.await, Some(u)),
    }
}

/// The client's socket failed while the daemon was writing to it.
struct Gone(std::io::Error);

fn broken(lease: &Lease, target: &str, why: &str) -> ErrorReply {
    ErrorReply {
        kind: "tunnel_broken".into(),
        message: format!("the tunnel to {target} through the bastion at {} broke: {why}", lease.ready.addr),
        hint: Some("run ssh again: bastionctl opens a new session to the bastion (the daemon log says more)".into()),
    }
}
