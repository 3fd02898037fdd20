//! `bastionctl proxy HOST PORT`, the ProxyCommand: ask the daemon for a channel to HOST:PORT, then copy stdin to the
//! socket and the socket to stdout. Stdout carries only tunnel bytes; progress and errors go to stderr.
//!
//! The daemon frames what it sends ([`control::Frame`]), so the proxy knows how the tunnel ended: the target closed
//! it (exit 0) or it broke, e.g. the bastion's sshd died or stopped answering keepalives (exit 1 with the reason).

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::client::{self, DaemonError};
use crate::config::Config;
use crate::control::{self, Frame, MIN_VERSION, Op, Reply, Request};
use crate::progress_ui::ProgressUi;

/// Bound on the whole negotiation before the tunnel starts: the bastion's `start_timeout` plus this slack.
pub const NEGOTIATION_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the proxy until the tunnel ends. Returns an error (for a non-zero exit) when the daemon refuses or fails.
/// Progress lines go to `progress` (stderr, or nowhere with `--quiet`).
pub async fn run(cfg: &Config, host: &str, port: u16, progress: &mut ProgressUi) -> anyhow::Result<()> {
    let (rd, wr, framed) = open(cfg, host, port, progress).await?;
    progress.finish();
    splice(rd, wr, framed).await
}

/// Asks the daemon (starting one if none runs) for a tunnel to `host:port` and waits for it, under the longest
/// `start_timeout` plus [`NEGOTIATION_SLACK`]. Returns the socket's halves and whether the daemon frames its bytes.
pub(crate) async fn open(
    cfg: &Config,
    host: &str,
    port: u16,
    progress: &mut ProgressUi,
) -> anyhow::Result<(BufReader<tokio::net::unix::OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf, bool)> {
    // Checked here too (the daemon checks every request), so a bad name fails before a daemon is started for it.
    let host = crate::target::TargetHost::parse(host)?;
    let stream = client::connect_or_spawn(cfg).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let req = Request { v: MIN_VERSION, op: Op::Connect { host: host.to_string(), port, framed: true } };
    control::write_line(&mut wr, &req).await.context("cannot send the request to the daemon")?;
    let longest = cfg.bastions.iter().map(|b| b.start_timeout).max().unwrap_or_default() + NEGOTIATION_SLACK;
    let framed = tokio::time::timeout(longest, negotiate(&mut rd, progress))
        .await
        .with_context(|| format!("the daemon gave no answer within {}s", longest.as_secs()))??;
    Ok((rd, wr, framed))
}

/// Reads replies until `ok` (tunnel starts; returns whether the daemon frames its bytes) or `error` (a
/// [`DaemonError`]); progress goes to `progress`.
async fn negotiate<R>(rd: &mut R, progress: &mut ProgressUi) -> anyhow::Result<bool>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    loop {
        let reply: Reply = control::read_line(rd).await.context("the daemon closed the connection")?;
        match reply {
            Reply::Progress(msg) => progress.show(&msg),
            Reply::Ok(ok) => return Ok(ok.framed),
            Reply::Error(e) => return Err(DaemonError::from(e).into()),
            Reply::Status(_) => bail!("the daemon sent a status report instead of opening the tunnel"),
        }
    }
}

/// Copies both ways until the daemon's side ends. A stdin EOF is passed on as a write shutdown (EOF to the target).
/// Returns an error when the tunnel broke (framed: an error frame, or the socket ending without an end frame).
async fn splice(
    mut rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    framed: bool,
) -> anyhow::Result<()> {
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut wr).await?;
        wr.shutdown().await
    });
    let mut stdout = tokio::io::stdout();
    let down = match framed {
        true => copy_frames(&mut rd, &mut stdout).await,
        false => tokio::io::copy_buf(&mut rd, &mut stdout).await.map(drop).context("the tunnel broke while receiving"),
    };
    let _ = stdout.flush().await;
    down?;
    if upload.is_finished() {
        if let Ok(Err(e)) = upload.await {
            // The far end closed first and our last writes had nowhere to go: not an error for the user's ssh.
            tracing::debug!("upload ended with {e}");
        }
    }
    Ok(())
}

/// Copies data frames to `out` until the end frame; an error frame or a cut stream is an error saying why.
pub(crate) async fn copy_frames<R, W>(rd: &mut R, out: &mut W) -> anyhow::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    loop {
        match control::read_frame(rd).await {
            Ok(Frame::Data(n)) => {
                let copied = tokio::io::copy_buf(&mut (&mut *rd).take(u64::from(n)), out)
                    .await
                    .context("cannot write the tunnel's bytes to stdout")?;
                if copied < u64::from(n) {
                    bail!("the daemon closed the tunnel in the middle of a frame; see the daemon's log");
                }
            }
            Ok(Frame::End) => return Ok(()),
            Ok(Frame::Error(e)) => return Err(DaemonError::from(e).into()),
            Err(control::FrameError::Closed) => {
                bail!("the daemon closed the tunnel without ending it (did the daemon exit? see its log)")
            }
            Err(e) => return Err(e).context("the tunnel broke while receiving"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ErrorReply, data_frame_head, error_frame};

    #[tokio::test]
    async fn frames_reach_stdout_and_the_end_decides_the_outcome() {
        let mut wire = data_frame_head(5).to_vec();
        wire.extend_from_slice(b"hello");
        let mut clean = wire.clone();
        clean.push(control::FRAME_END);
        let mut out = Vec::new();
        copy_frames(&mut BufReader::new(&clean[..]), &mut out).await.unwrap();
        assert_eq!(out, b"hello");

        let mut broken = wire.clone();
        let e = ErrorReply { kind: "tunnel_broken".into(), message: "the session ended".into(), hint: Some("retry".into()) };
        broken.extend_from_slice(&error_frame(&e));
        let err = copy_frames(&mut BufReader::new(&broken[..]), &mut Vec::new()).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "the session ended\n  hint: retry");

        let err = copy_frames(&mut BufReader::new(&wire[..]), &mut Vec::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("without ending it"), "{err:#}");
        let err = copy_frames(&mut BufReader::new(&wire[..7]), &mut Vec::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("middle of a frame"), "{err:#}");
    }
}
