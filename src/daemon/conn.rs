//! One control connection: read the request, answer it, and for `connect` splice the socket to a direct-tcpip
//! channel until both directions are done.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Shared, route, splice};
use crate::control::{self, ErrorReply, MIN_VERSION, OkReply, Op, Reply, Request, VERSION};
use crate::error::Error;
use crate::escape::escape;
use crate::lifecycle::Bastion;
use crate::target::{TargetError, TargetHost};

/// Bound on receiving the request line after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn handle(shared: Arc<Shared>, stream: UnixStream, _shutdown: CancellationToken) {
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

/// Runs `fut` while relaying the bastion's progress messages to the client. Messages sent before `fut` completed
/// but not yet relayed (the future often wins the race against the last ones) are relayed after it, in order.
async fn with_progress<T>(
    io: &mut BufReader<UnixStream>,
    bastion: &Bastion,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let mut rx = bastion.progress().subscribe();
    tokio::pin!(fut);
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            Ok(msg) = rx.recv() => {
                let _ = control::write_line(io, &Reply::Progress(msg)).await;
            }
        }
    };
    loop {
        match rx.try_recv() {
            Ok(msg) => {
                let _ = control::write_line(io, &Reply::Progress(msg)).await;
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
    let lease = with_progress(io, bastion, bastion.acquire()).await.map_err(|e| e.to_reply())?;
    let channel = lease.ready.session.open(&host.to_string(), port).await.map_err(Error::from)?;
    let target = format!("{host}:{port}");
    info!(bastion = %bastion.spec().name, %target, framed, "channel open");
    let ok = OkReply { framed, ..OkReply::default() };
    control::write_line(io, &Reply::Ok(ok)).await.map_err(|e| {
        Error::Aborted(format!("client went away before the tunnel started: {e}"))
    })?;
    // On daemon shutdown the splice keeps going: the daemon's drain grace period bounds it (the task is dropped).
    splice::splice(io, channel, &lease, &target, framed).await;
    drop(lease);
    Ok(())
}

async fn up(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let began = std::time::Instant::now();
    let ready = with_progress(io, bastion, bastion.up()).await.map_err(|e| e.to_reply())?;
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
    let msg = with_progress(io, bastion, bastion.down(force)).await.map_err(|e| e.to_reply())?;
    let _ = control::write_line(io, &Reply::Ok(OkReply { message: msg, ..OkReply::default() })).await;
    Ok(())
}

/// `start` (for `bastionctl trust`): the instance running and its address known, no session; the idle clock runs.
async fn start(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let reached = with_progress(io, bastion, bastion.start()).await.map_err(|e| e.to_reply())?;
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
