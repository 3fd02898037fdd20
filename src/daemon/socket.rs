//! The control socket's file-system side: a 0700 directory owned by the user, a single-daemon lock, a 0600 socket.

use std::fs::{DirBuilder, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Errors preparing the socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The directory exists but is not private to this user.
    #[error("{dir} is owned by uid {owner} with mode {mode:o}; it must be owned by you (uid {me}) and not accessible to others")]
    Unsafe {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's uid.
        me: u32,
    },
    /// The directory path is a symbolic link or not a directory (e.g. planted in `/tmp` by another user).
    #[error("{dir} is a symbolic link or not a directory; refusing to use it (if you did not create it, another user may have: remove it, or set XDG_RUNTIME_DIR or [daemon] socket)")]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// Another daemon holds the lock.
    #[error(
        "another bastionctl daemon is already running for {socket} (lock {lock} is held): `bastionctl status` shows \
         its pid (stop it with `kill PID`), or if it runs under systemd, `systemctl --user stop bastionctl`"
    )]
    AlreadyRunning {
        /// The socket path.
        socket: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// File-system error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io { what, path: path.into(), source }
}

/// Creates the socket's directory with mode 0700 if missing, and checks an existing one is a real directory (not a
/// symbolic link), owned by this user and not group/world accessible. The check is on the directory itself
/// (`lstat`), so a link planted at `/tmp/bastionctl-<uid>` by another user is refused, not followed.
pub fn prepare_dir(socket: &Path) -> Result<PathBuf, SocketError> {
    let dir = socket.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    check_dir(&dir, true)?;
    Ok(dir)
}

/// The checks of [`prepare_dir`] on `dir`, creating it (0700) first when `create` is set.
/// Errors: [`SocketError::NotADirectory`], [`SocketError::Unsafe`], [`SocketError::Io`].
pub fn check_dir(dir: &Path, create: bool) -> Result<(), SocketError> {
    let dir = dir.to_path_buf();
    if create {
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err("cannot create", &dir))?;
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(io_err("cannot stat", &dir))?;
    if !meta.file_type().is_dir() {
        return Err(SocketError::NotADirectory { dir });
    }
    let me = nix::unistd::getuid().as_raw();
    let mode = meta.mode() & 0o777;
    if meta.uid() != me || mode & 0o077 != 0 {
        return Err(SocketError::Unsafe { dir, owner: meta.uid(), mode, me });
    }
    Ok(())
}

/// The lock file next to the socket (`control.sock.lock`).
pub fn lock_path(socket: &Path) -> PathBuf {
    crate::paths::with_suffix(socket, ".lock")
}

/// Takes the single-daemon lock (held until the returned file is dropped, i.e. for the daemon's life).
pub fn lock_daemon(socket: &Path) -> Result<File, SocketError> {
    let lock = lock_path(socket);
    match crate::lockfile::try_exclusive(&lock) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(SocketError::AlreadyRunning { socket: socket.into(), lock }),
        Err(e) => Err(SocketError::Io { what: "cannot lock", path: lock, source: e }),
    }
}

/// Prepares the directory, takes the lock, removes a stale socket file and binds a 0600 listener.
/// Returns the listener and the lock guard.
pub fn bind(socket: &Path) -> Result<(UnixListener, File), SocketError> {
    prepare_dir(socket)?;
    let lock = lock_daemon(socket)?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SocketError::Io { what: "cannot remove stale socket", path: socket.into(), source: e }),
    }
    let listener = UnixListener::bind(socket).map_err(io_err("cannot bind", socket))?;
    std::fs::set_permissions(socket, Permissions::from_mode(0o600)).map_err(io_err("cannot chmod", socket))?;
    Ok((listener, lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_0600_in_a_0700_dir_and_a_second_daemon_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("run/bastionctl/control.sock");
        let (_l, _lock) = bind(&sock).unwrap();
        let dir_mode = std::fs::metadata(sock.parent().unwrap()).unwrap().mode() & 0o777;
        let sock_mode = std::fs::metadata(&sock).unwrap().mode() & 0o777;
        assert_eq!((dir_mode, sock_mode), (0o700, 0o600));
        let second = bind(&sock).expect_err("a second daemon is refused");
        assert!(matches!(second, SocketError::AlreadyRunning { .. }), "{second}");
        let msg = second.to_string();
        assert!(msg.contains("bastionctl status") && msg.contains("systemctl --user stop bastionctl"), "{msg}");
    }

    #[test]
    fn a_symlink_to_a_private_dir_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        DirBuilder::new().mode(0o700).create(&real).unwrap();
        let link = tmp.path().join("bastionctl-0");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = prepare_dir(&link.join("control.sock")).unwrap_err();
        assert!(matches!(err, SocketError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
        assert!(prepare_dir(&dangling.join("control.sock")).is_err());
        assert!(!tmp.path().join("nowhere").exists(), "a dangling link is not followed to create its target");
        std::fs::write(tmp.path().join("file"), "").unwrap();
        assert!(prepare_dir(&tmp.path().join("file/control.sock")).is_err());
    }

    #[test]
    fn a_world_writable_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir.join("control.sock")).unwrap_err();
        assert!(matches!(err, SocketError::Unsafe { mode: 0o777, .. }), "{err}");
    }
}
