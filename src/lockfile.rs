//! Advisory locks on files (flock(2), through std's `File::lock`): the single-daemon lock next to the control
//! socket, the lock that lets racing proxies start one daemon, and the lock around writes of the pin file.
//! A lock is held while the returned [`File`] lives.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`exclusive_within`] tries again.
const RETRY: Duration = Duration::from_millis(20);

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

/// Takes the lock on `path` (created 0600 if missing) if it is free: `Ok(None)` when another process holds it.
pub fn try_exclusive(path: &Path) -> io::Result<Option<File>> {
    let f = open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the lock on `path`, waiting for it as long as it takes (for a blocking thread, e.g. `spawn_blocking`).
pub fn exclusive(path: &Path) -> io::Result<File> {
    let f = open(path)?;
    f.lock()?;
    Ok(f)
}

/// Takes the lock on `path`, waiting up to `timeout`; then an error that names the file.
pub fn exclusive_within(path: &Path, timeout: Duration) -> io::Result<File> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(f) = try_exclusive(path)? {
            return Ok(f);
        }
        if Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} stayed locked by another process for {timeout:?}", path.display()),
            ));
        }
        std::thread::sleep(RETRY);
    }
}

/// Whether another process holds the lock on an existing `path` (the probe takes a free lock and releases it at once).
pub fn is_held(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().write(true).open(path) else {
        return false;
    };
    matches!(f.try_lock(), Err(TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!is_held(&path), "no file, no lock");
        let held = try_exclusive(&path).unwrap().expect("free");
        // flock locks belong to the open file description, so a second open in this process contends like another
        // process would.
        assert!(is_held(&path));
        assert!(try_exclusive(&path).unwrap().is_none());
        let err = exclusive_within(&path, Duration::from_millis(60)).unwrap_err();
        assert!(err.to_string().contains("x.lock"), "{err}");
        drop(held);
        assert!(!is_held(&path));
        assert!(exclusive_within(&path, Duration::from_millis(60)).is_ok());
    }
}
