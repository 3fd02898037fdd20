//! One control connection: read the request, answer it, and for `connect` splice the socket to a direct-tcpip
//! channel until both directions are done.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Shared;
use crate::control::{self, ErrorReply, OkReply, Op, Reply, Request, VERSION};
use crate::error::Error;
use crate::lifecycle::Bastion;
use crate::policy;

/// Bound on receiving the request line after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn handle(shared: Arc<Shared>, stream: UnixStream, shutdown: CancellationToken) {
    let mut io = BufReader::new(stream);
    let req: Request = match tokio::time::timeout(REQUEST_TIMEOUT, control::read_line(&mut io)).await {
        Ok(Ok(req)) => req,
        Ok(Err(control::FrameError::Closed)) => return,
        Ok(Err(e)) => return reply_error(&mut io, "bad_request", format!("bad request: {e}")).await,
        Err(_) => return reply_error(&mut io, "bad_request", "no request within 10 s".into()).await,
    };
    if req.v != VERSION {
        let msg = format!("protocol version {} is not supported (this daemon speaks {VERSION})", req.v);
        return reply_error(&mut io, "bad_request", msg).await;
    }
    debug!(?req.op, "request");
    let res = match req.op {
        Op::Connect { host, port } => connect(&shared, &mut io, &host, port, &shutdown).await,
        Op::Up { bastion } => up(&shared, &mut io, bastion.as_deref()).await,
        Op::Down { bastion, force } => down(&shared, &mut io, bastion.as_deref(), force).await,
        Op::Status => {
            let mut all = Vec::new();
            for b in &shared.bastions {
                all.push(b.status().await);
            }
            control::write_line(&mut io, &Reply::Status(all)).await.map_err(|e| debug!("client gone: {e}")).ok();
            Ok(())
        }
    };
    if let Err(e) = res {
        let _ = control::write_line(&mut io, &Reply::Error(e)).await;
    }
}

async fn reply_error(io: &mut BufReader<UnixStream>, kind: &str, message: String) {
    warn!("{message}");
    let reply = Reply::Error(ErrorReply { kind: kind.into(), message, hint: None });
    let _ = control::write_line(io, &reply).await;
}

fn find<'a>(shared: &'a Shared, name: Option<&str>) -> Result<&'a Bastion, Error> {
    let cfg = shared.config.bastion(name).map_err(Error::UnknownBastion)?;
    let name = cfg.name();
    Ok(shared.bastions.iter().find(|b| b.spec().name == name).expect("one actor per configured bastion"))
}

/// The first bastion whose targets allow `host:port`.
fn route<'a>(shared: &'a Shared, host: &str, port: u16) -> Result<&'a Bastion, Error> {
    let mut reasons = Vec::new();
    for b in &shared.bastions {
        match policy::check(&b.spec().rules, &b.spec().target_ports, host, port) {
            Ok(()) => return Ok(b),
            Err(why) => reasons.push(format!("bastion {}: {why}", b.spec().name)),
        }
    }
    Err(Error::NotAllowed {
        host: host.into(),
        port,
        config: shared.config.source.display().to_string(),
        detail: reasons.join("; "),
    })
}

/// Runs `fut` while relaying the bastion's progress messages to the client.
async fn with_progress<T>(
    io: &mut BufReader<UnixStream>,
    bastion: &Bastion,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let mut rx = bastion.progress().subscribe();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            Ok(msg) = rx.recv() => {
                let _ = control::write_line(io, &Reply::Progress(msg)).await;
            }
        }
    }
}

async fn connect(
    shared: &Shared,
    io: &mut BufReader<UnixStream>,
    host: &str,
    port: u16,
    shutdown: &CancellationToken,
) -> Result<(), ErrorReply> {
    let bastion = route(shared, host, port).inspect_err(|e| warn!("refused: {e}"))?;
    let lease = with_progress(io, bastion, bastion.acquire()).await?;
    let channel = lease.ready.session.open(host, port).await.map_err(Error::from)?;
    info!(bastion = %bastion.spec().name, target = %format!("{host}:{port}"), "channel open");
    control::write_line(io, &Reply::Ok(OkReply::default())).await.map_err(|e| {
        Error::Aborted(format!("client went away before the tunnel started: {e}"))
    })?;
    let mut channel = channel;
    let res = tokio::select! {
        r = tokio::io::copy_bidirectional(io, &mut channel) => r,
        _ = shutdown.cancelled() => {
            // Drain: keep forwarding until done or the daemon's grace period ends (the task is then dropped).
            tokio::io::copy_bidirectional(io, &mut channel).await
        }
    };
    match res {
        Ok((up, down)) => info!(target = %format!("{host}:{port}"), up, down, "channel closed"),
        Err(e) => {
            warn!(target = %format!("{host}:{port}"), "channel failed: {e}");
            let _ = io.get_mut().shutdown().await;
        }
    }
    drop(lease);
    Ok(())
}

async fn up(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let began = std::time::Instant::now();
    let ready = with_progress(io, bastion, bastion.up()).await?;
    let msg = format!(
        "bastion {} ({}) ready at {} in {:.1} s",
        bastion.spec().name,
        ready.instance_id,
        ready.addr,
        began.elapsed().as_secs_f64()
    );
    let reply = Reply::Ok(OkReply { message: msg, address: Some(ready.addr.to_string()) });
    let _ = control::write_line(io, &reply).await;
    Ok(())
}

async fn down(shared: &Shared, io: &mut BufReader<UnixStream>, name: Option<&str>, force: bool) -> Result<(), ErrorReply> {
    let bastion = find(shared, name)?;
    let msg = with_progress(io, bastion, bastion.down(force)).await?;
    let _ = control::write_line(io, &Reply::Ok(OkReply { message: msg, address: None })).await;
    Ok(())
}
