//! `bastionctl proxy HOST PORT`, the ProxyCommand: ask the daemon for a channel to HOST:PORT, then copy stdin to the
//! socket and the socket to stdout. Stdout carries only tunnel bytes; progress and errors go to stderr.
//!
//! The daemon frames what it sends ([`control::Frame`]), so the proxy knows how the tunnel ended: the target closed
//! it (exit 0) or it broke, e.g. the bastion's sshd died or stopped answering keepalives (exit 1 with the reason).
//!
//! The copy loops are lean: stdin and stdout are non-blocking pipes ([`stdin`], [`stdout`]), each direction has one
//! buffer allocated once, and frames are decoded in place ([`control::FrameDecoder`]), so each chunk is one read and
//! one write. With `--fdpass` ([`fdpass`]) the proxy is not in the data path at all: it hands the socket to ssh and
//! exits.

mod fdpass;

use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{self, Poll};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

use crate::cli::StdoutError;
use crate::client::{self, DaemonError};
use crate::config::Config;
use crate::control::{self, FrameDecoder, MIN_VERSION, Op, Piece, Reply, Request};
use crate::progress_ui::ProgressUi;

/// Bound on the whole negotiation before the tunnel starts: the bastion's `start_timeout` plus this slack.
pub const NEGOTIATION_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes read from stdin per chunk (the socket to the daemon takes it in one write).
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Bytes read from the daemon's socket per chunk: several frames of one SSH packet each.
const DOWNLOAD_CHUNK: usize = 128 * 1024;

/// Runs the proxy until the tunnel ends. Returns an error (for a non-zero exit) when the daemon refuses or fails.
/// Progress lines go to `progress` (stderr, or nowhere with `--quiet`).
pub async fn run(cfg: &Config, host: &str, port: u16, progress: &mut ProgressUi) -> anyhow::Result<()> {
    let (rd, wr) = open(cfg, host, port, progress).await?;
    progress.finish();
    splice(rd, wr).await
}

/// Asks the daemon (starting one if none runs) for a framed tunnel to `host:port` and waits for it, under the
/// longest `start_timeout` plus [`NEGOTIATION_SLACK`] (`bastionctl forward` uses it too).
pub(crate) async fn open(
    cfg: &Config,
    host: &str,
    port: u16,
    progress: &mut ProgressUi,
) -> anyhow::Result<(Downstream, tokio::net::unix::OwnedWriteHalf)> {
    Ok(connect(cfg, host, port, true, DOWNLOAD_CHUNK, progress).await?.into_parts())
}

/// `proxy --fdpass`: negotiates, then passes the connected socket to ssh over stdout (ProxyUseFdpass) and returns.
/// Errors before the handover (refused target, bastion not starting) are printed by the caller like without
/// `--fdpass`; after it, a broken tunnel is a closed socket that ssh reports, and the daemon logs why.
pub async fn run_fdpass(cfg: &Config, host: &str, port: u16, progress: &mut ProgressUi) -> anyhow::Result<()> {
    // Checked first: without `ProxyUseFdpass yes` nothing could take the socket, so start nothing for it.
    fdpass::check_stdout()?;
    // A one-byte buffer: nothing past the `ok` line may be read here, it is ssh's.
    let negotiated = connect(cfg, host, port, false, 1, progress).await?;
    progress.finish();
    let stream = negotiated.io.into_inner().into_std().context("cannot take the tunnel socket")?;
    fdpass::send_to_stdout(stream)
}

/// A negotiated tunnel: the socket after `ok`, with whatever the buffer read past it.
struct Negotiated {
    io: BufReader<UnixStream>,
    framed: bool,
}

impl Negotiated {
    fn into_parts(self) -> (Downstream, tokio::net::unix::OwnedWriteHalf) {
        let buffered = self.io.buffer().to_vec();
        let (rd, wr) = self.io.into_inner().into_split();
        (Downstream { rd, buffered, framed: self.framed }, wr)
    }
}

/// The daemon-to-client half: the socket, the bytes already buffered, and whether they are framed.
pub(crate) struct Downstream {
    pub(crate) rd: tokio::net::unix::OwnedReadHalf,
    pub(crate) buffered: Vec<u8>,
    pub(crate) framed: bool,
}

/// Connects to (or starts) the daemon, asks for `host:port` and waits for `ok` under the negotiation bound.
async fn connect(
    cfg: &Config,
    host: &str,
    port: u16,
    framed: bool,
    buf: usize,
    progress: &mut ProgressUi,
) -> anyhow::Result<Negotiated> {
    // Checked here too (the daemon checks every request), so a bad name fails before a daemon is started for it.
    let host = crate::policy::TargetHost::parse(host)?;
    check_policy(cfg, &host, port)?;
    for b in cfg.bastions.iter().filter(|b| serves(cfg, b, &host, port)) {
        check_identities(cfg, b)?;
    }
    let stream = client::connect_or_spawn(cfg).await?;
    let mut io = BufReader::with_capacity(buf, stream);
    // Version 1: a newer proxy still works with an older daemon that is still running.
    let req = Request { v: MIN_VERSION, op: Op::Connect { host: host.to_string(), port, framed } };
    control::write_line(io.get_mut(), &req).await.context("cannot send the request to the daemon")?;
    let longest = cfg.bastions.iter().map(|b| b.start_timeout).max().unwrap_or_default() + NEGOTIATION_SLACK;
    let framed = tokio::time::timeout(longest, negotiate(&mut io, progress))
        .await
        .with_context(|| format!("the daemon gave no answer within {}s", longest.as_secs()))??;
    Ok(Negotiated { io, framed })
}

/// The target policy as far as the config alone decides it (`targets`, `target_ports`), checked before a daemon is
/// started or a listener bound. A refusal has the message and hint the daemon would answer with.
pub(crate) fn check_policy(cfg: &Config, host: &crate::policy::TargetHost, port: u16) -> Result<(), DaemonError> {
    crate::policy::check_config(cfg, host, port).map_err(|detail| {
        let refusal = crate::error::Error::NotAllowed {
            host: host.to_string(),
            port,
            config: cfg.source.display().to_string(),
            detail,
        };
        DaemonError::from(refusal.to_reply())
    })
}

/// Whether bastion `b` alone would be allowed to forward `host:port` by the config.
fn serves(cfg: &Config, b: &crate::config::BastionConfig, host: &crate::policy::TargetHost, port: u16) -> bool {
    let mut one = cfg.clone();
    one.bastions = vec![b.clone()];
    crate::policy::check_config(&one, host, port).is_ok()
}

/// Refuses, before any daemon or EC2 work, a bastion whose `identity_files` cannot log in: a listed file that does
/// not exist while nothing else could (no other identity file there, and no ssh-agent: `agent = false` or no
/// `SSH_AUTH_SOCK`). With another key source a missing file is only skipped at login, as OpenSSH does.
pub(crate) fn check_identities(cfg: &Config, b: &crate::config::BastionConfig) -> Result<(), DaemonError> {
    let files = b.identity_files();
    let agent = b.agent && std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty());
    let Some(missing) = files.iter().find(|p| !p.exists()) else { return Ok(()) };
    if agent || files.iter().any(|p| p.exists()) {
        tracing::warn!("identity file {} of bastion {} does not exist; skipped", missing.display(), b.name());
        return Ok(());
    }
    let reason = format!(
        "no such file (bastion {}, identity_files in {}), and no ssh-agent to use instead",
        crate::escape::escape(&b.name()),
        cfg.source.display()
    );
    let e = crate::error::Error::from(crate::ssh::SshError::KeyLoad { path: missing.clone(), reason });
    Err(DaemonError::from(e.to_reply()))
}

/// Reads replies until `ok` (tunnel starts; returns whether the daemon frames its bytes) or `error` (a
/// [`DaemonError`]); progress goes to `progress`.
async fn negotiate<R: AsyncBufRead + Unpin>(rd: &mut R, progress: &mut ProgressUi) -> anyhow::Result<bool> {
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
async fn splice(down: Downstream, mut wr: tokio::net::unix::OwnedWriteHalf) -> anyhow::Result<()> {
    let upload = tokio::spawn(async move {
        let mut stdin = BufReader::with_capacity(UPLOAD_CHUNK, stdin());
        tokio::io::copy_buf(&mut stdin, &mut wr).await?;
        wr.shutdown().await
    });
    let mut stdout = Stdout { out: stdout(), failed: None };
    let res = match down.framed {
        true => copy_frames(&down.buffered[..], down.rd, &mut stdout).await,
        false => {
            let mut rd = BufReader::with_capacity(DOWNLOAD_CHUNK, (&down.buffered[..]).chain(down.rd));
            tokio::io::copy_buf(&mut rd, &mut stdout).await.map(drop).context("the tunnel broke while receiving")
        }
    };
    let flushed = stdout.flush().await;
    // A write to stdout that failed is the failure, whatever the copy made of it (the tunnel is fine).
    if let Some(e) = stdout.failed.take() {
        return Err(StdoutError(e).into());
    }
    res?;
    flushed.context("cannot flush stdout")?;
    if upload.is_finished()
        && let Ok(Err(e)) = upload.await
    {
        // The far end closed first and our last writes had nowhere to go: not an error for the user's ssh.
        tracing::debug!("upload ended with {e}");
    }
    Ok(())
}

/// Our stdin: a non-blocking pipe when it is one. ssh gives a ProxyCommand two pipes: those are made non-blocking
/// and driven by the reactor (tokio's pipe types), so a chunk costs one read or write system call and no hand-off to
/// a blocking thread (what `tokio::io::stdin()` / `stdout()` do for every call). Anything else (a terminal, a file,
/// a socket) falls back to tokio's stdin (the same for [`stdout`]).
fn stdin() -> Box<dyn AsyncRead + Send + Unpin> {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)));
    match pipe {
        Ok(p) => Box::new(p),
        Err(e) => {
            tracing::debug!("stdin is not a pipe ({e}); using blocking reads");
            Box::new(tokio::io::stdin())
        }
    }
}

/// Our stdout: a non-blocking pipe when it is one.
fn stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)));
    match pipe {
        Ok(p) => Box::new(p),
        Err(e) => {
            tracing::debug!("stdout is not a pipe ({e}); using blocking writes");
            Box::new(tokio::io::stdout())
        }
    }
}

/// Our stdout for the tunnel's bytes, remembering the first write error (tokio's blocking stdout reports a write's
/// error on a later write or the flush), so that a full disk is told as stdout's failure, not the tunnel's.
struct Stdout {
    out: Box<dyn AsyncWrite + Send + Unpin>,
    failed: Option<std::io::Error>,
}

impl Stdout {
    fn check<T>(&mut self, res: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match res {
            Poll::Ready(Err(e)) => {
                let kind = e.kind();
                self.failed.get_or_insert(e);
                Poll::Ready(Err(kind.into()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.out).poll_write(cx, buf);
        self.check(res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.out).poll_flush(cx);
        self.check(res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.out).poll_shutdown(cx);
        self.check(res)
    }
}

/// Copies the payloads of data frames to `out` until the end frame; an error frame or a cut stream is an error
/// saying why. `first` holds bytes already read from the socket. One buffer, decoded in place.
pub(crate) async fn copy_frames<R, W>(first: &[u8], mut rd: R, out: &mut W) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; DOWNLOAD_CHUNK];
    let mut chunk: &[u8] = first;
    loop {
        while let Some(piece) = decoder.next(&mut chunk).context("the tunnel broke while receiving")? {
            match piece {
                Piece::Data(data) => out.write_all(data).await.context("cannot write the tunnel's bytes to stdout")?,
                Piece::End => return Ok(()),
                Piece::Error(e) => return Err(DaemonError::from(e).into()),
            }
        }
        let n = rd.read(&mut buf).await.context("the tunnel broke while receiving")?;
        if n == 0 {
            match decoder.mid_frame() {
                true => bail!("the daemon closed the tunnel in the middle of a frame; see the daemon's log"),
                false => bail!("the daemon closed the tunnel without ending it (did the daemon exit? see its log)"),
            }
        }
        chunk = &buf[..n];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ErrorReply, data_frame_head, error_frame};

    async fn frames(wire: &[u8], split: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let (first, rest) = wire.split_at(split.min(wire.len()));
        copy_frames(first, rest, out).await
    }

    #[tokio::test]
    async fn frames_reach_stdout_and_the_end_decides_the_outcome() {
        let mut wire = data_frame_head(5).to_vec();
        wire.extend_from_slice(b"hello");
        let mut clean = wire.clone();
        clean.push(control::FRAME_END);
        for split in [0, 3, 7, clean.len()] {
            let mut out = Vec::new();
            frames(&clean, split, &mut out).await.unwrap();
            assert_eq!(out, b"hello");
        }

        let mut broken = wire.clone();
        let e = ErrorReply { kind: "tunnel_broken".into(), message: "the session ended".into(), hint: Some("retry".into()) };
        broken.extend_from_slice(&error_frame(&e));
        let err = frames(&broken, 2, &mut Vec::new()).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "the session ended\n  hint: retry");

        let err = frames(&wire, 0, &mut Vec::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("without ending it"), "{err:#}");
        let err = frames(&wire[..7], 0, &mut Vec::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("middle of a frame"), "{err:#}");
    }
}
