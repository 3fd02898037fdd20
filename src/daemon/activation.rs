//! systemd socket activation: the control socket bound by `bastionctl.socket` and handed to the daemon as fd 3
//! (`LISTEN_FDS=1`, `LISTEN_PID=<our pid>`, read by the `listenfd` crate), or, when the daemon was started any other
//! way, a socket it binds itself ([`super::socket::bind`]).

use std::fs::File;
use std::path::Path;

use tokio::net::UnixListener;
use tracing::warn;

use super::socket::{self, SocketError};

/// Where the control socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Passed by systemd: systemd owns the file, the daemon must not remove it.
    Systemd,
    /// Bound by this daemon: it removes the file when it exits.
    Bound,
}

/// The daemon's listener for `socket` (the config's control socket path), with the single-daemon lock (held for
/// the daemon's life) and where it came from. An inherited socket is taken as it is (systemd set its mode and
/// directory); one whose path differs from `socket` is served but logged, since clients look at `socket`.
///
/// Errors: [`SocketError`] from preparing, locking or binding; an inherited fd that is not a listening Unix socket.
pub fn listen(socket: &Path) -> Result<(UnixListener, File, Origin), SocketError> {
    let io = |what: &'static str| move |source| SocketError::Io { what, path: socket.into(), source };
    let mut fds = listenfd::ListenFd::from_env();
    let inherited = fds.take_unix_listener(0).map_err(io("cannot use the socket passed by systemd (LISTEN_FDS) for"))?;
    let Some(std_listener) = inherited else {
        let (listener, lock) = socket::bind(socket)?;
        return Ok((listener, lock, Origin::Bound));
    };
    std_listener.set_nonblocking(true).map_err(io("cannot set non-blocking mode on the inherited socket"))?;
    let listener = UnixListener::from_std(std_listener).map_err(io("cannot register the inherited socket"))?;
    let bound = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    if bound.as_deref() != Some(socket) {
        warn!(
            "systemd passed a socket at {} but clients use {} (the config's [daemon] socket): set ListenStream={} in a \
             drop-in for bastionctl.socket",
            bound.as_deref().map_or("<unnamed>".into(), |p| p.display().to_string()),
            socket.display(),
            socket.display()
        );
    }
    let lock = socket::lock_daemon(socket)?;
    Ok((listener, lock, Origin::Systemd))
}
