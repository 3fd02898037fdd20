//! Bastion host keys: which key a bastion may present, and how a key comes to be trusted.
//!
//! - [`pins`]: bastionctl's own known_hosts-format file, one key pinned per EC2 instance id (like OpenSSH's
//!   `HostKeyAlias`), so a moved Elastic IP changes nothing and a rebuilt bastion (new key) is refused;
//! - [`known_hosts`] + [`pattern`]: the user's `known_hosts`, read with OpenSSH's semantics (hashed names,
//!   `[host]:port`, comma lists, `*`/`?`, `!`, tabs, `@revoked`, `@cert-authority`), and [`cert`] for host
//!   certificates;
//! - [`console`]: the fingerprints cloud-init prints to the instance's console, the first-trust evidence;
//! - [`check`]: whether a key is the bastion's: the files first ([`check::decide`]: the precedence between the
//!   two), then first trust (console output, then trust on first use when configured). The SSH handshake calls
//!   [`check::HostKeyCheck::verify`], which refuses with a [`HostKeyError`] naming the file, line and key and the
//!   `bastionctl trust` command that fixes it; the interactive side is `bastionctl trust`.

pub mod cert;
pub mod check;
pub mod console;
mod error;
pub mod pins;

use std::path::Path;

pub use bastionctl_core::known_hosts::{self, fingerprint, known_hosts_line, known_hosts_name};
pub use bastionctl_core::pattern;
pub use error::HostKeyError;

/// The command that (re-)trusts bastion `bastion`: `bastionctl [--config PATH] trust NAME`, with `--config` when the
/// config is not at the default location, quoted for a POSIX shell when needed.
pub fn trust_command(config: &Path, bastion: &str) -> String {
    let quote = bastionctl_core::text::shell_quote;
    let config_arg = match config == crate::paths::default_config_path() || config.as_os_str().is_empty() {
        true => String::new(),
        false => format!(" --config {}", quote(&config.display().to_string())),
    };
    format!("bastionctl{config_arg} trust {}", quote(bastion))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_safe() {
        let text = "[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\ntargets = [\"10.0.0.0/16\"]\n";
        let cfg = crate::config::Config::from_str(text, Path::new("/c.toml")).expect("valid");
        assert!(!cfg.bastions[0].trust_on_first_use, "trust on first use is opt-in");
        assert_eq!(cfg.pinned_host_keys(), pins::default_path());
        assert!(crate::paths::pinned_host_keys().ends_with("bastionctl/known_hosts"));
        let text = format!("[daemon]\npinned_host_keys = \"/p/kh\"\n{text}trust_on_first_use = true\n");
        let cfg = crate::config::Config::from_str(&text, Path::new("/c.toml")).expect("valid");
        assert!(cfg.bastions[0].trust_on_first_use);
        assert_eq!(cfg.pinned_host_keys(), Path::new("/p/kh"));
    }

    #[test]
    fn trust_command_names_the_config_when_not_default() {
        assert_eq!(trust_command(&crate::paths::default_config_path(), "prod"), "bastionctl trust prod");
        assert_eq!(trust_command(Path::new("/tmp/lab/b.toml"), "lab"), "bastionctl --config /tmp/lab/b.toml trust lab");
        assert_eq!(trust_command(Path::new("/tmp/my dir/b.toml"), "a b"), "bastionctl --config '/tmp/my dir/b.toml' trust 'a b'");
    }
}
