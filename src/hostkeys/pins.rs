//! The known_hosts-format file bastionctl manages: one bastion host key pinned per EC2 instance id, like OpenSSH's
//! `HostKeyAlias` (default `$XDG_STATE_HOME/bastionctl/known_hosts`, see [`default_path`]). Each pin is a comment
//! saying where it came from plus the key line: `i-0123... ssh-ed25519 AAAA...`. The directory is created 0700 and
//! the file written 0600, atomically (temp file + rename) under an advisory lock, so the daemon and
//! `bastionctl trust` never interleave.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::PublicKey;

use super::fingerprint;
use super::known_hosts::{KnownHosts, Lookup};

/// How long a pin waits for another process holding the file's lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from pinning.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The file, its directory or its lock could not be read or written.
    #[error("cannot update the pinned host keys in {path}: {source}", path = path.display())]
    Io {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another key is pinned for the instance and `replace` was not asked for.
    #[error(
        "{path}:{line} already pins {pinned} for {instance_id}, not the offered {offered}",
        path = path.display()
    )]
    Conflict {
        /// The pin file.
        path: PathBuf,
        /// The line of the existing pin.
        line: usize,
        /// The instance id.
        instance_id: String,
        /// The pinned key's fingerprint.
        pinned: String,
        /// The offered key's fingerprint.
        offered: String,
    },
}

/// `$XDG_STATE_HOME/bastionctl/known_hosts` (`~/.local/state/bastionctl/known_hosts`).
pub fn default_path() -> PathBuf {
    crate::paths::pinned_host_keys()
}

/// Pins `key` for `instance_id` in `path` and returns the key line's 1-based number. `source` says why it is
/// trusted (`console output`, `bastionctl trust`, `trust on first use`) and goes into the comment line above it.
/// An identical pin is kept as is. Another key pinned for the instance is a [`PinError::Conflict`] unless
/// `replace`, which drops every line pinning another key for it (and bastionctl's comment lines about it).
pub fn pin(path: &Path, instance_id: &str, key: &PublicKey, source: &str, replace: bool) -> Result<usize, PinError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PinError::Io { path: p, source }
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    let lock_path = path.with_extension("lock");
    let _lock =
        crate::lockfile::exclusive_within(&lock_path, LOCK_TIMEOUT).map_err(io(&lock_path))?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(path)(e)),
    };
    let kh = KnownHosts::parse(path, &text);
    match kh.lookup(instance_id, key.key_data()) {
        Lookup::Found(e) => return Ok(e.line),
        Lookup::Changed(e) if !replace => {
            return Err(PinError::Conflict {
                path: path.into(),
                line: e.line,
                instance_id: instance_id.into(),
                pinned: fingerprint(&e.key),
                offered: fingerprint(key),
            });
        }
        _ => {}
    }
    let stale: Vec<usize> =
        kh.entries().iter().filter(|e| e.marker.is_none() && e.applies_to(instance_id)).map(|e| e.line).collect();
    let ours = comment_prefix(instance_id);
    let mut out: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| !stale.contains(&(i + 1)) && !l.starts_with(&ours))
        .map(|(_, l)| l)
        .collect();
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let comment = format!("{ours}pinned {when} from {source}");
    let line = super::known_hosts_line(instance_id, key);
    out.push(&comment);
    out.push(&line);
    let number = out.len();
    write_atomically(path, &(out.join("\n") + "\n")).map_err(io(path))?;
    Ok(number)
}

/// bastionctl's comment line above a pin starts with this.
fn comment_prefix(instance_id: &str) -> String {
    format!("# {instance_id}: ")
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PublicKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32])).public_key().clone()
    }

    #[test]
    fn pins_keeps_replaces_and_refuses_conflicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/bastionctl/known_hosts");
        assert_eq!(pin(&path, "i-0abc", &key(1), "console output", false).expect("pin"), 2);
        assert_eq!(pin(&path, "i-0def", &key(2), "bastionctl trust", false).expect("pin"), 4);
        assert_eq!(pin(&path, "i-0abc", &key(1), "again", false).expect("same key"), 2, "kept as is");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        match pin(&path, "i-0abc", &key(3), "x", false) {
            Err(PinError::Conflict { line: 2, pinned, offered, .. }) => {
                assert_eq!((pinned, offered), (fingerprint(&key(1)), fingerprint(&key(3))));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let line = pin(&path, "i-0abc", &key(3), "bastionctl trust --replace", true).expect("replace");
        let kh = KnownHosts::load(&path).expect("load");
        assert!(matches!(kh.lookup("i-0abc", key(3).key_data()), Lookup::Found(e) if e.line == line));
        assert!(matches!(kh.lookup("i-0abc", key(1).key_data()), Lookup::Changed(_)), "old pin gone");
        assert!(matches!(kh.lookup("i-0def", key(2).key_data()), Lookup::Found(_)), "other pins kept");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("# i-0abc: ").count(), 1, "{text}");
    }
}
