//! Per-user file locations, following the XDG base directory spec (through the `dirs` crate).

use std::path::{Path, PathBuf};

/// The user's home directory (`$HOME`); `/` if it cannot be found.
pub fn home() -> PathBuf {
    dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"))
}

/// `$XDG_CONFIG_HOME/bastionctl/config.toml`, i.e. `~/.config/bastionctl/config.toml` by default.
pub fn default_config_path() -> PathBuf {
    dirs::config_dir().unwrap_or_else(|| home().join(".config")).join("bastionctl/config.toml")
}

/// The per-user runtime directory for the control socket: `$XDG_RUNTIME_DIR/bastionctl`, or
/// `/tmp/bastionctl-<uid>` when `XDG_RUNTIME_DIR` is unset (the daemon creates it 0700; an existing one must be a real
/// directory, not a symbolic link, owned by the user and closed to others: see `bastionctl::daemon::socket::prepare_dir`).
pub fn runtime_dir() -> PathBuf {
    match dirs::runtime_dir() {
        Some(d) => d.join("bastionctl"),
        None => std::env::temp_dir().join(format!("bastionctl-{}", nix::unistd::getuid())),
    }
}

/// Default control socket: `<runtime_dir>/control.sock`.
pub fn default_socket_path() -> PathBuf {
    runtime_dir().join("control.sock")
}

/// `$XDG_STATE_HOME/bastionctl`, i.e. `~/.local/state/bastionctl` by default.
pub fn state_dir() -> PathBuf {
    dirs::state_dir().unwrap_or_else(|| home().join(".local/state")).join("bastionctl")
}

/// bastionctl's own host key pins (known_hosts format, one key per instance id):
/// `$XDG_STATE_HOME/bastionctl/known_hosts`.
pub fn pinned_host_keys() -> PathBuf {
    state_dir().join("known_hosts")
}

/// Default log file of a daemon started in the background by `bastionctl proxy`.
pub fn default_log_path() -> PathBuf {
    state_dir().join("daemon.log")
}

/// `path` with `suffix` appended to its last component: `id_ed25519` + `-cert.pub`, `control.sock` + `.lock`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_goes_on_the_last_component() {
        assert_eq!(
            with_suffix(Path::new("/h/.ssh/id_rsa"), "-cert.pub"),
            Path::new("/h/.ssh/id_rsa-cert.pub")
        );
        assert_eq!(
            with_suffix(Path::new("/run/b/control.sock"), ".lock"),
            Path::new("/run/b/control.sock.lock")
        );
    }
}
