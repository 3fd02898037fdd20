//! Control connections: the accept loop (owner-only: the peer's uid is checked), then per connection: read the
//! request, answer it, and for `connect` splice the socket to a direct-tcpip channel until both directions are done.
//!
//! The splice: client to target is raw in every mode. Target to client is [`control::Frame`]s for a framed client
//! (the ProxyCommand), ending in `E` (the target sent EOF) or `X` (the tunnel broke), and raw otherwise (a client
//! that predates framing, or ssh itself holding a socket passed by `proxy --fdpass`): then a broken tunnel closes
//! the socket in both directions, which ssh reports, and the daemon logs why.
//!
//! No copy on our side in either direction: a read from the client is handed to russh whole (it slices the SSH
//! packets out of it), and the chunks received from the bastion go to the client as they are, all that queued up in
//! one writev. Backpressure comes from the socket (client side) and the channel window (bastion side). The same
//! splice serves the `[[forward]]` listeners' TCP connections (raw).

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use bastionctl_core::text::host_port;

use super::{Fleet, Shared, forwards, route};
use crate::config::Config;
use crate::control::{self, ErrorReply, MIN_VERSION, OkReply, Op, Reply, Request, VERSION};
use crate::error::Error;
use crate::escape::escape;
use crate::lifecycle::{Bastion, Lease};
use crate::policy::{TargetError, TargetHost};
use crate::progress::Message;
use crate::tunnel::{Channel, ChannelRx, ChannelTx};

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
    let early = Bytes::copy_from_slice(io.buffer());
    splice(io.get_ref(), early, channel, &lease, &target, framed).await;
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

/// Read size for the client-to-target direction. One read takes what the client has written so far (up to this), and
/// russh slices it into SSH packets without copying it. 256 KiB measured no better (fdpass upload 1.39–1.66 CPU-s/GiB
/// against 1.27 at 64 KiB): the buffers then outgrow malloc's small-chunk reuse.
pub const UPLOAD_CHUNK: usize = 64 * 1024;

/// A read is made only with at least this much room left in the upload buffer.
const UPLOAD_MIN_READ: usize = 16 * 1024;

/// At most this many received chunks (SSH packets) go to the client in one write: bytes, and chunks (each a frame
/// head and its data in the framed mode, within the kernel's limit of 1024 pieces per writev).
const DOWNLOAD_BATCH: usize = 256 * 1024;
const DOWNLOAD_BATCH_CHUNKS: usize = 64;

/// A channel's client: the control connection's Unix socket, or a `[[forward]]` listener's TCP connection. Both
/// directions work on a shared reference, by readiness and non-blocking calls, so the splice needs no split and no
/// buffer while the client is idle.
pub(crate) trait ClientSocket: AsRawFd + Sync {
    /// Waits until a read would not block.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Reads what is there into `buf`'s spare capacity (`WouldBlock` when nothing is).
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize>;
    /// Waits until a write would not block.
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Writes what fits of `bufs` (`WouldBlock` when nothing does).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
    /// The tunnel broke: make the client see an error rather than a clean end (nothing in a raw stream can say why).
    fn broke(&self);
}

macro_rules! client_socket {
    ($ty:ty, $broke:expr) => {
        impl ClientSocket for $ty {
            fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
                <$ty>::readable(self)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
                <$ty>::try_read_buf(self, buf)
            }
            fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
                <$ty>::writable(self)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
                <$ty>::try_write_vectored(self, bufs)
            }
            fn broke(&self) {
                let broke: fn(&$ty) = $broke;
                broke(self)
            }
        }
    };
}

// A Unix client (the proxy, or ssh holding a passed socket) sees both directions end at once.
client_socket!(UnixStream, |s| {
    let _ = nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Both);
});
// A TCP client (a `[[forward]]`) gets a reset when the socket is closed, as from a server that went away.
client_socket!(tokio::net::TcpStream, |s| drop(s.set_zero_linger()));

/// Splices `sock` to `channel` until both directions are done (or one failed) and logs how the channel ended.
/// `early` is what the daemon had already read from the client past its request.
pub(crate) async fn splice<S: ClientSocket>(
    sock: &S,
    early: Bytes,
    channel: Channel,
    lease: &Lease,
    target: &str,
    framed: bool,
) {
    let (down_res, up_res) = copy_both(sock, early, channel, lease, target, framed).await;
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
                sock.broke();
            }
        }
        Err(Gone(e)) => info!(%target, up = %up_bytes, "client went away: {e}"),
    }
}

/// What the download direction ended with: bytes sent and how the channel ended, or the client gone.
type DownResult = Result<(u64, Result<(), ErrorReply>), Gone>;

/// Both copy directions; returns the download's result and the upload's (`None`: cut after a failed download).
async fn copy_both<S: ClientSocket>(
    sock: &S,
    early: Bytes,
    channel: Channel,
    lease: &Lease,
    target: &str,
    framed: bool,
) -> (DownResult, Option<std::io::Result<u64>>) {
    let Channel { mut rx, mut tx } = channel;
    let up = async {
        let res = copy_up(sock, early, tx.as_mut()).await;
        // EOF (or a broken client socket) from the client becomes EOF to the target.
        let _ = tx.eof().await;
        res
    };
    let down = async {
        let total = copy_down(sock, &mut rx, framed).await?;
        let end = if lease.session_closed() { Err(broken(lease, target, "its SSH session ended")) } else { Ok(()) };
        match (&end, framed) {
            (Ok(()), true) => write_all(sock, &mut [IoSlice::new(&[control::FRAME_END])]).await.map_err(Gone)?,
            (Err(e), true) => write_all(sock, &mut [IoSlice::new(&control::error_frame(e))]).await.map_err(Gone)?,
            (Ok(()), false) => {}
            // Raw, after a break: no EOF first, which a client would take for a finished stream; the caller makes
            // the client see the break ([`ClientSocket::broke`]).
            (Err(_), false) => return Ok((total, end)),
        }
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Write);
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
/// A buffer is taken only once the client has sent something (an idle channel holds none); each read is frozen
/// and handed to the channel whole, and the buffer's space comes back once the session has sent it.
async fn copy_up<S: ClientSocket>(sock: &S, early: Bytes, tx: &mut dyn ChannelTx) -> std::io::Result<u64> {
    let mut total = early.len() as u64;
    if !early.is_empty() {
        tx.send(early).await?;
    }
    let mut buf = BytesMut::new();
    loop {
        sock.readable().await?;
        if buf.capacity() < UPLOAD_MIN_READ {
            buf.reserve(UPLOAD_CHUNK);
        }
        match sock.try_read_buf(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                tx.send(buf.split().freeze()).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Channel to client until the channel ends: each write takes every chunk already received (up to
/// [`DOWNLOAD_BATCH`]), with a frame head before each in the framed mode. Returns the tunnel bytes written.
async fn copy_down<S: ClientSocket>(sock: &S, rx: &mut ChannelRx, framed: bool) -> Result<u64, Gone> {
    let mut total: u64 = 0;
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.next().await {
        let mut len = first.len();
        chunks.push(first);
        while len < DOWNLOAD_BATCH && chunks.len() < DOWNLOAD_BATCH_CHUNKS {
            match rx.next().now_or_never() {
                Some(Some(more)) => {
                    len += more.len();
                    chunks.push(more);
                }
                _ => break,
            }
        }
        chunks.retain(|c| !c.is_empty());
        let heads: Vec<[u8; 5]> =
            if framed { chunks.iter().map(|c| control::data_frame_head(c.len())).collect() } else { Vec::new() };
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunks.len() * 2);
        for (i, c) in chunks.iter().enumerate() {
            if let Some(head) = heads.get(i) {
                slices.push(IoSlice::new(head));
            }
            slices.push(IoSlice::new(c));
        }
        write_all(sock, &mut slices).await.map_err(Gone)?;
        total += len as u64;
        chunks.clear();
    }
    Ok(total)
}

/// Writes every byte of `bufs` to the client.
async fn write_all<S: ClientSocket>(sock: &S, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match sock.try_write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests;
