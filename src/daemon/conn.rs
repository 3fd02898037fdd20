//! Control connections: the accept loop (owner-only: the peer's uid is checked), then per connection: read the
//! request, answer it, and for `connect` splice the socket to a direct-tcpip channel until both directions are done.
//!
//! The splice: client to target is raw in every mode. Target to client is [`control::Frame`]s for a framed client
//! (the ProxyCommand), ending in `E` (the target sent EOF) or `X` (the tunnel broke), and raw otherwise (a client
//! that predates framing, or ssh itself holding a socket passed by `proxy --fdpass`): then a broken tunnel closes
//! the socket in both directions, which ssh reports, and the daemon logs why.
//!
//! One buffer per direction, allocated once; reads sized to an SSH packet, so a chunk is one read and one write.
//! Backpressure comes from the socket (client side) and the channel window (bastion side).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Fleet, Shared, forwards, route};
use bastionctl_core::text::host_port;

use crate::config::Config;
use crate::control::{self, ErrorReply, MIN_VERSION, OkReply, Op, Reply, Request, VERSION};
use crate::error::Error;
use crate::escape::escape;
use crate::lifecycle::{Bastion, Lease};
use crate::policy::{TargetError, TargetHost};
use crate::progress::Message;
use crate::tunnel::BoxStream;

/// How long open channels may drain after shutdown is requested before the daemon exits anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Bound on receiving the request line after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` and the `[[forward]]` listeners until `shutdown` is cancelled, then waits up to
/// [`DRAIN_GRACE`] for open connections.
pub async fn serve(
    config: Config,
    fleet: Fleet,
    listener: UnixListener,
    forwards: Vec<forwards::Bound>,
    shutdown: CancellationToken,
) {
    let routes = route::Routes::new(&config.bastions, fleet.ec2);
    let shared = Arc::new(Shared { config, bastions: fleet.bastions, routes });
    let tracker = TaskTracker::new();
    for bound in forwards {
        tokio::spawn(forwards::serve(shared.clone(), bound, tracker.clone(), shutdown.clone()));
    }
    let me = nix::unistd::getuid().as_raw();
    let mut next_id: u64 = 0;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        next_id += 1;
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a control connection from another user (uid {})", cred.uid());
                tracker.spawn(refuse(stream, me));
                continue;
            }
            Err(e) => {
                warn!("refused a control connection whose peer cannot be identified: {e}");
                continue;
            }
        }
        let shared = shared.clone();
        let token = shutdown.clone();
        tracker.spawn(handle(shared, stream, token).instrument(info_span!("conn", id = next_id)));
    }
    // Stop accepting: new clients get "connection refused" at once instead of waiting in the backlog.
    drop(listener);
    tracker.close();
    info!(open = tracker.len(), "shutting down; draining open connections for up to {}s", DRAIN_GRACE.as_secs());
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "drain grace period over; closing the remaining connections");
    }
}

/// Bound on telling a refused peer why before closing its connection.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells a peer of another uid that this daemon is not theirs, then closes the connection. Nothing the peer sent is
/// read except to discard it (closing a Unix socket with unread data would reset the connection before the peer
/// reads the reply).
async fn refuse(mut stream: tokio::net::UnixStream, me: u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reply = crate::control::Reply::Error(crate::control::ErrorReply {
        kind: "forbidden".into(),
        message: format!("this bastionctl daemon serves uid {me} only; run your own daemon with your own socket"),
        hint: None,
    });
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        crate::control::write_line(&mut stream, &reply).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

async fn handle(shared: Arc<Shared>, stream: UnixStream, _shutdown: CancellationToken) {
    let mut io = BufReader::new(stream);
    let req: Request = match tokio::time::timeout(REQUEST_TIMEOUT, control::read_line(&mut io)).await {
        Ok(Ok(req)) => req,
        Ok(Err(control::FrameError::Closed)) => return,
        Ok(Err(e)) => return reply_error(&mut io, "bad_request", format!("bad request: {e}")).await,
        Err(_) => return reply_error(&mut io, "bad_request", "no request within 10 s".into()).await,
    };
    if !(MIN_VERSION..=VERSION).contains(&req.v) {
        let msg = format!(
            "protocol version {} is not supported (this daemon speaks {MIN_VERSION} to {VERSION}); if the client is \
             newer, restart the daemon so both are the same bastionctl",
            req.v
        );
        return reply_error(&mut io, "bad_request", msg).await;
    }
    let res = match req.op {
        // The host is checked before it is logged, matched against the policy or sent to the bastion.
        Op::Connect { host, port, framed } => match TargetHost::parse(&host) {
            Ok(host) => {
                debug!(%host, port, framed, "connect request");
                connect(&shared, &mut io, &host, port, framed).await
            }
            Err(e) => Err(bad_target(e)),
        },
        Op::Up { bastion } => up(&shared, &mut io, bastion.as_deref()).await,
        Op::Start { bastion } => start(&shared, &mut io, bastion.as_deref()).await,
        Op::Down { bastion, force } => down(&shared, &mut io, bastion.as_deref(), force).await,
        Op::Status => {
            let mut all = Vec::new();
            for b in &shared.bastions {
                all.push(b.status().await);
            }
            let sent = match req.v {
                1 => {
                    let v1: Vec<serde_json::Value> = all.iter().map(|s| s.to_v1()).collect();
                    control::write_line(&mut io, &serde_json::json!({ "status": v1 })).await
                }
                _ => control::write_line(&mut io, &Reply::Status(all)).await,
            };
            sent.map_err(|e| debug!("client gone: {e}")).ok();
            Ok(())
        }
    };
    if let Err(e) = res {
        let _ = control::write_line(&mut io, &Reply::Error(e)).await;
    }
}

/// A refused target name: logged and answered with the reason (the name in it is escaped).
fn bad_target(e: TargetError) -> ErrorReply {
    warn!("refused: {e}");
    ErrorReply {
        kind: "bad_target".into(),
        message: e.to_string(),
        hint: Some("give ssh the target as an IP address or a host name (letters, digits, hyphens, dots)".into()),
    }
}

/// Answers a request that could not be read. `message` may quote the client's bytes (serde's errors do): it is
/// escaped before it is logged or sent.
async fn reply_error(io: &mut BufReader<UnixStream>, kind: &str, message: String) {
    let message = escape(&message).into_owned();
    warn!("{message}");
    let reply = Reply::Error(ErrorReply { kind: kind.into(), message, hint: None });
    let _ = control::write_line(io, &reply).await;
}

fn find<'a>(shared: &'a Shared, name: Option<&str>) -> Result<&'a Bastion, Error> {
    let cfg = shared.config.bastion(name).map_err(Error::UnknownBastion)?;
    let name = cfg.name();
    Ok(shared.bastions.iter().find(|b| b.spec().name == name).expect("one actor per configured bastion"))
}

/// Which progress messages a request relays: a request whose `ok` reply carries the result (`up`, `down`, `start`)
/// leaves out the outcome lines ([`Message::outcome`]), which would only say it a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// Phases and outcomes (`connect`: the proxy has no result line of its own).
    All,
    /// Phases only.
    Phases,
}

/// Runs `fut` while relaying the bastion's progress messages (as `relay` says) to the client. Messages sent before
/// `fut` completed but not yet relayed (the future often wins the race against the last ones) are relayed after it,
/// in order.
async fn with_progress<T>(
    io: &mut BufReader<UnixStream>,
    bastion: &Bastion,
    relay: Relay,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let mut rx = bastion.progress().subscribe();
    let wanted = |msg: &Message| relay == Relay::All || !msg.outcome;
    tokio::pin!(fut);
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            Ok(msg) = rx.recv() => {
                if wanted(&msg) {
                    let _ = control::write_line(io, &Reply::Progress(msg.text)).await;
                }
            }
        }
    };
    loop {
        match rx.try_recv() {
            Ok(msg) if !wanted(&msg) => continue,
            Ok(msg) => {
                let _ = control::write_line(io, &Reply::Progress(msg.text)).await;
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break out,
        }
    }
}

async fn connect(
    shared: &Shared,
    io: &mut BufReader<UnixStream>,
    host: &TargetHost,
    port: u16,
    framed: bool,
) -> Result<(), ErrorReply> {
    let route::Route { bastion, host } =
        route::route(shared, host, port).await.inspect_err(|e| warn!("refused: {e}")).map_err(|e| e.to_reply())?;
    let lease = with_progress(io, bastion, Relay::All, bastion.acquire()).await.map_err(|e| e.to_reply())?;
    let channel = lease.open(&host.to_string(), port).await.map_err(Error::from)?;
    let target = host_port(&host, port);
    info!(bastion = %bastion.spec().name, %target, framed, "channel open");
    let ok = OkReply { framed, ..OkReply::default() };
    control::write_line(io, &Reply::Ok(ok)).await.map_err(|e| {
        Error::Aborted(format!("client went away before the tunnel started: {e}"))
    })?;
    // On daemon shutdown the splice keeps going: the daemon's drain grace period bounds it (the task is dropped).
    splice(io, channel, &lease, &target, framed).await;
    drop(lease);
    Ok(())
}

async fn up(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let began = std::time::Instant::now();
    let ready = with_progress(io, bastion, Relay::Phases, bastion.up()).await.map_err(|e| e.to_reply())?;
    let msg = format!(
        "bastion {} ({}) ready at {} in {:.1} s",
        bastion.spec().name,
        ready.instance_id,
        ready.addr,
        began.elapsed().as_secs_f64()
    );
    let reply = Reply::Ok(OkReply {
        message: msg,
        address: Some(ready.addr.to_string()),
        instance_id: Some(ready.instance_id),
        framed: false,
    });
    let _ = control::write_line(io, &reply).await;
    Ok(())
}

async fn down(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>, force: bool) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let msg = with_progress(io, bastion, Relay::Phases, bastion.down(force)).await.map_err(|e| e.to_reply())?;
    let _ = control::write_line(io, &Reply::Ok(OkReply { message: msg, ..OkReply::default() })).await;
    Ok(())
}

/// `start` (for `bastionctl trust`): the instance running and its address known, no session; the idle clock runs.
async fn start(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let reached = with_progress(io, bastion, Relay::Phases, bastion.start()).await.map_err(|e| e.to_reply())?;
    let spec = bastion.spec();
    let msg = format!(
        "bastion {} ({}) is running at {}; this daemon stops it after {} with no channel",
        spec.name,
        reached.instance_id,
        reached.addr,
        humantime::format_duration(spec.idle_timeout)
    );
    let reply = Reply::Ok(OkReply {
        message: msg,
        address: Some(reached.addr.to_string()),
        instance_id: Some(reached.instance_id),
        framed: false,
    });
    let _ = control::write_line(io, &reply).await;
    Ok(())
}

/// Bytes read from the client per chunk: an SSH packet's worth (OpenSSH's channel maximum packet is 32 KiB), which
/// the channel sends as one data message.
pub const UPLOAD_CHUNK: usize = 32 * 1024;

/// Bytes read from the channel per chunk (one read returns at most one received SSH packet).
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Splices until both directions are done (or one failed) and logs how the channel ended.
async fn splice(io: &mut BufReader<UnixStream>, channel: BoxStream, lease: &Lease, target: &str, framed: bool) {
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
        let res = copy_up(&buffered, sock_rd, &mut ch_wr).await;
        // EOF (or a broken client socket) from the client becomes EOF to the target.
        let _ = ch_wr.shutdown().await;
        res
    };
    let down = async {
        let head = if framed { 5 } else { 0 };
        // Capacity, not zeroed memory: an idle channel's buffer stays untouched (not resident) until data arrives.
        let mut buf: Vec<u8> = Vec::with_capacity(head + DOWNLOAD_CHUNK);
        let mut total: u64 = 0;
        let end: Result<(), ErrorReply> = loop {
            buf.clear();
            buf.extend_from_slice(&[0u8; 5][..head]);
            match ch_rd.read_buf(&mut buf).await {
                Ok(0) if lease.session_closed() => break Err(broken(lease, target, "its SSH session ended")),
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if framed {
                        buf[..5].copy_from_slice(&control::data_frame_head(n));
                    }
                    sock_wr.write_all(&buf).await.map_err(Gone)?;
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

/// Client to channel: first what the daemon had already read past the request line, then the socket until EOF.
/// One chunk buffer with an SSH packet's capacity, filled through `read_buf`: never zeroed, so an idle channel's
/// buffer stays untouched (not resident).
async fn copy_up<R, W>(buffered: &[u8], mut from: R, to: &mut W) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    to.write_all(buffered).await?;
    let mut total = buffered.len() as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(UPLOAD_CHUNK);
    loop {
        buf.clear();
        match from.read_buf(&mut buf).await? {
            0 => return Ok(total),
            n => {
                to.write_all(&buf).await?;
                total += n as u64;
            }
        }
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
