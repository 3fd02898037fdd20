//! [`HostKeyError`]: why a bastion's host key is refused, naming the file, line and key concerned and the command
//! that fixes it ([`HostKeyError::hint`]). [`crate::ssh::SshError::HostKey`] carries it out of the handshake.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A refused bastion host key, from [`super::check::HostKeyCheck::verify`].
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The bastion's host key is trusted nowhere: not pinned, not in the config's `known_hosts`, not vouched for by
    /// the console output, and trust on first use is off.
    #[error(
        "the host key of bastion {instance_id} at {addr} ({fingerprint}) is not trusted: it is not pinned and not in \
         {known_hosts}{console}; refusing to connect",
        known_hosts = known_hosts.display(),
        console = console.as_deref().map(|c| format!(", and {c}")).unwrap_or_default()
    )]
    Unknown {
        /// The bastion's sshd address.
        addr: SocketAddr,
        /// The bastion's EC2 instance id (the name keys are pinned under).
        instance_id: String,
        /// The user's `known_hosts` file that was searched (the config's `known_hosts`).
        known_hosts: PathBuf,
        /// The offered key's fingerprint, `SHA256:...`.
        fingerprint: String,
        /// The exact line that pins the key by instance id, `i-0123 ssh-ed25519 AAAA...`, for a `known_hosts` file.
        key_line: String,
        /// What the instance's console output said, e.g. `the console output shows no host key fingerprints`
        /// (`None` when it was not consulted).
        console: Option<String>,
        /// The command that pins the key after confirmation, e.g. `bastionctl trust prod` (`None` without a pin
        /// file).
        trust_command: Option<String>,
    },
    /// Another key is trusted for the bastion: pinned in bastionctl's file, or in the config's `known_hosts`.
    #[error(
        "the host key of bastion {name} CHANGED: {known_hosts}:{line} has {pinned_fingerprint}, but the bastion \
         offers {fingerprint}; refusing to connect",
        known_hosts = known_hosts.display()
    )]
    Changed {
        /// The file holding the trusted key (the pin file or the config's `known_hosts`).
        known_hosts: PathBuf,
        /// 1-based line number of the entry that no longer matches.
        line: usize,
        /// The name that matched that line (the instance id or the address).
        name: String,
        /// The offered key's fingerprint, `SHA256:...`.
        fingerprint: String,
        /// The fingerprint of the key on that line, `SHA256:...`.
        pinned_fingerprint: String,
        /// The command that replaces the pin after confirmation, e.g. `bastionctl trust prod --replace`.
        trust_command: Option<String>,
    },
    /// A `@revoked` line refuses the offered key (or the CA that signed its certificate).
    #[error(
        "the host key of the bastion ({fingerprint}) is REVOKED by {known_hosts}:{line}; refusing to connect",
        known_hosts = known_hosts.display()
    )]
    Revoked {
        /// The file with the `@revoked` line.
        known_hosts: PathBuf,
        /// Its 1-based line number.
        line: usize,
        /// The offered key's fingerprint, `SHA256:...`.
        fingerprint: String,
    },
    /// A `known_hosts`-format file (the config's, or the pin file) could not be read, has an unparsable line that
    /// applies to the bastion, or could not take a new pin.
    #[error("could not check {path}: {reason}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong, with the line when it is one (never key material).
        reason: String,
    },
}

impl HostKeyError {
    /// What the user should do about it: verify the key out of band, then the command or the file edit that fixes it.
    pub fn hint(&self) -> String {
        match self {
            HostKeyError::Unknown { known_hosts, fingerprint, key_line, trust_command, .. } => {
                let verify = format!(
                    "verify {fingerprint} out of band (`aws ec2 get-console-output`, between BEGIN and END SSH HOST KEY \
                     FINGERPRINTS, or the instance's /etc/ssh/*.pub)"
                );
                match trust_command {
                    Some(cmd) => format!(
                        "{verify}, then run `{cmd}` to pin it (or add this line to {}:\n  {key_line})",
                        known_hosts.display()
                    ),
                    None => format!("{verify}, then add this line to {}:\n  {key_line}", known_hosts.display()),
                }
            }
            HostKeyError::Changed { known_hosts, line, fingerprint, trust_command, .. } => {
                let how = match trust_command {
                    Some(cmd) => format!("run `{cmd} --replace` (or replace line {line} of {})", known_hosts.display()),
                    None => format!("replace line {line} of {}", known_hosts.display()),
                };
                format!(
                    "if the bastion was rebuilt, verify {fingerprint} out of band, then {how}; otherwise someone may be \
                     intercepting the connection"
                )
            }
            HostKeyError::Revoked { known_hosts, line, .. } => format!(
                "the key was revoked on purpose (line {line} of {}); ask the bastion's administrator for its new key",
                known_hosts.display()
            ),
            HostKeyError::File { path, .. } => format!("fix or remove the unreadable line in {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_command_the_file_and_the_line() {
        let unknown = HostKeyError::Unknown {
            addr: ([127, 0, 2, 1], 22).into(),
            instance_id: "i-1".into(),
            known_hosts: "/k".into(),
            fingerprint: "SHA256:abc".into(),
            key_line: "i-1 ssh-ed25519 AAAA".into(),
            console: Some("the console output shows no host key fingerprints".into()),
            trust_command: Some("bastionctl trust lab".into()),
        };
        let hint = unknown.hint();
        assert!(hint.contains("run `bastionctl trust lab` to pin it") && hint.contains("/k:\n  i-1 ssh-ed25519 AAAA"));
        assert!(unknown.to_string().contains("SHA256:abc") && unknown.to_string().contains("shows no host key"));
        let changed = HostKeyError::Changed {
            known_hosts: "/state/known_hosts".into(),
            line: 4,
            name: "i-1".into(),
            fingerprint: "SHA256:new".into(),
            pinned_fingerprint: "SHA256:old".into(),
            trust_command: Some("bastionctl trust lab".into()),
        };
        assert!(changed.to_string().contains("/state/known_hosts:4 has SHA256:old"), "{changed}");
        let hint = changed.hint();
        assert!(hint.contains("run `bastionctl trust lab --replace` (or replace line 4 of /state/known_hosts)"), "{hint}");
    }
}
