//! `bastionctl proxy HOST PORT`, the ProxyCommand: ask the daemon for a channel to HOST:PORT, then copy stdin to the
//! socket and the socket to stdout. Stdout carries only tunnel bytes; progress and errors go to stderr.

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::client;
use crate::config::Config;
use crate::control::{self, Op, Reply, Request, VERSION};

/// Bound on the whole negotiation before the tunnel starts: the bastion's `start_timeout` plus this slack.
pub const NEGOTIATION_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the proxy until the tunnel ends. Returns an error (for a non-zero exit) when the daemon refuses or fails.
pub async fn run(cfg: &Config, host: &str, port: u16) -> anyhow::Result<()> {
    let stream = client::connect_or_spawn(cfg).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let req = Request { v: VERSION, op: Op::Connect { host: host.into(), port } };
    control::write_line(&mut wr, &req).await.context("cannot send the request to the daemon")?;
    let longest = cfg.bastions.iter().map(|b| b.start_timeout).max().unwrap_or_default() + NEGOTIATION_SLACK;
    tokio::time::timeout(longest, negotiate(&mut rd))
        .await
        .with_context(|| format!("the daemon gave no answer within {}s", longest.as_secs()))??;
    splice(rd, wr).await
}

/// Reads replies until `ok` (tunnel starts) or `error`; progress goes to stderr.
async fn negotiate(rd: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> anyhow::Result<()> {
    loop {
        let reply: Reply = control::read_line(rd).await.context("the daemon closed the connection")?;
        match reply {
            Reply::Progress(msg) => eprintln!("bastionctl: {msg}"),
            Reply::Ok(_) => return Ok(()),
            Reply::Error(e) => {
                let hint = e.hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default();
                bail!("{}{hint}", e.message);
            }
            Reply::Status(_) => bail!("the daemon sent a status report instead of opening the tunnel"),
        }
    }
}

/// Copies both ways until the daemon's side ends. A stdin EOF is passed on as a write shutdown (EOF to the target).
async fn splice(
    mut rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
) -> anyhow::Result<()> {
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut wr).await?;
        wr.shutdown().await
    });
    let mut stdout = tokio::io::stdout();
    let down = tokio::io::copy_buf(&mut rd, &mut stdout).await;
    let _ = stdout.flush().await;
    down.context("the tunnel broke while receiving")?;
    if upload.is_finished() {
        if let Ok(Err(e)) = upload.await {
            // The far end closed first and our last writes had nowhere to go: not an error for the user's ssh.
            tracing::debug!("upload ended with {e}");
        }
    }
    Ok(())
}
