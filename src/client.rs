//! The client end of the control socket: connect (starting a background daemon when none answers) and exchange
//! request/reply lines. Used by `proxy`, `up`, `down` and `status`.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::config::Config;
use crate::daemon::socket;
use crate::lockfile;

/// Bound on one connect to the control socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a freshly spawned daemon may take to accept on its socket.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between connect attempts while the spawned daemon comes up.
const SPAWN_POLL: Duration = Duration::from_millis(10);

/// Connects to the daemon at `path`. `Ok(None)` means no daemon is listening (no socket file, or nobody accepts).
pub async fn try_connect(path: &Path) -> anyhow::Result<Option<UnixStream>> {
    match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(s)) => check_server_uid(path, s).map(Some),
        Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => Ok(None),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot connect to the daemon's socket {}", path.display())),
        Err(_) => bail!("the daemon at {} did not accept within {:?}; is it stuck? check its log", path.display(), CONNECT_TIMEOUT),
    }
}

/// Refuses a socket served by a process of another uid (a socket planted by another user must not see our
/// traffic).
fn check_server_uid(path: &Path, s: UnixStream) -> anyhow::Result<UnixStream> {
    let me = nix::unistd::getuid().as_raw();
    let uid = s.peer_cred().with_context(|| format!("cannot identify the process serving {}", path.display()))?.uid();
    if uid != me {
        bail!(
            "the control socket {} is served by uid {uid}, not by you (uid {me}); refusing to use it: remove it if it \
             is not yours, or set [daemon] socket in the config",
            path.display()
        );
    }
    Ok(s)
}

/// Connects to the daemon for `cfg`, starting `bastionctl daemon` in the background first if none runs. Concurrent
/// callers serialise on a lock file, so racing proxies start one daemon.
pub async fn connect_or_spawn(cfg: &Config) -> anyhow::Result<UnixStream> {
    let path = cfg.socket_path();
    if let Some(s) = try_connect(&path).await? {
        return Ok(s);
    }
    socket::prepare_dir(&path)?;
    let lock_file = spawn_lock_path(&path);
    let lock = {
        let lock_file = lock_file.clone();
        tokio::task::spawn_blocking(move || lockfile::exclusive(&lock_file)).await?
    }
    .with_context(|| format!("cannot lock {}", lock_file.display()))?;
    // Someone else may have started it while we waited for the lock.
    if let Some(s) = try_connect(&path).await? {
        return Ok(s);
    }
    if let Some(s) = wait_for_draining_daemon(&path).await? {
        return Ok(s);
    }
    let log = cfg.log_file();
    let mut child = spawn_daemon(cfg, &log)?;
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    let stream = loop {
        if let Some(s) = try_connect(&path).await? {
            break s;
        }
        if let Some(status) = child.try_wait()? {
            if daemon_lock_held(&path) {
                bail!("{}; retry in a moment", shutting_down(&path));
            }
            bail!("the background daemon exited ({status}) before it was ready; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("the background daemon did not open {} within {:?}; see {}", path.display(), SPAWN_TIMEOUT, log.display());
        }
        tokio::time::sleep(SPAWN_POLL).await;
    };
    drop(lock);
    Ok(stream)
}

/// A daemon that is draining after SIGTERM no longer accepts but keeps its single-daemon lock until it exits, so a
/// daemon started now would fail. Waits for the lock to be released, up to the drain grace period plus
/// [`SPAWN_TIMEOUT`] (a restart during a long transfer must not fail every new ssh); `Some` when a daemon accepts
/// meanwhile.
async fn wait_for_draining_daemon(path: &Path) -> anyhow::Result<Option<UnixStream>> {
    let limit = crate::daemon::DRAIN_GRACE + SPAWN_TIMEOUT;
    let deadline = Instant::now() + limit;
    while daemon_lock_held(path) {
        if let Some(s) = try_connect(path).await? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            bail!("{} and did not exit within {limit:?}; retry in a moment", shutting_down(path));
        }
        tokio::time::sleep(SPAWN_POLL * 4).await;
    }
    Ok(None)
}

fn shutting_down(path: &Path) -> String {
    format!("a bastionctl daemon is shutting down (it holds {})", socket::lock_path(path).display())
}

/// Whether a daemon holds the single-daemon lock of `socket` (the probe takes and at once releases a free lock).
fn daemon_lock_held(socket: &Path) -> bool {
    lockfile::is_held(&socket::lock_path(socket))
}

fn spawn_lock_path(socket: &Path) -> PathBuf {
    crate::paths::with_suffix(socket, ".spawn")
}

/// Starts `<this exe> --config <file> daemon` detached (own process group, stdin closed, output to `log`).
fn spawn_daemon(cfg: &Config, log: &Path) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("cannot open {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the bastionctl executable")?;
    let config = std::path::absolute(&cfg.source).unwrap_or_else(|_| cfg.source.clone());
    let child = std::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("cannot start the background daemon")?;
    tracing::info!(pid = child.id(), log = %log.display(), "started a background daemon");
    Ok(child)
}

/// An error the daemon answered with, kept typed so that the CLI can choose its exit status by [`DaemonError::kind`].
/// Displays as the message, then the hint on its own line.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct DaemonError {
    /// The error class ([`crate::error::Error::kind`]).
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl From<crate::control::ErrorReply> for DaemonError {
    fn from(e: crate::control::ErrorReply) -> Self {
        DaemonError { kind: e.kind, message: e.message, hint: e.hint }
    }
}
