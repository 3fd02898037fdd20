//! [`SshError`]: everything that can go wrong between "the bastion has an address" and "a forwarded stream is open",
//! each variant carrying what the user needs to fix it ([`SshError::hint`]). No message ever contains private key
//! material or a passphrase: keys are named by file path or by their public SHA256 fingerprint only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bastionctl_core::text::host_port;

use crate::hostkeys::HostKeyError;

/// Errors from the SSH side: waiting for sshd, the handshake, host key checking, authentication and channels.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A wait ran past its deadline (the start deadline, or one of the per-step limits in [`crate::ssh`]).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for, e.g. `sshd at 127.0.2.1:22 to answer`.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// The TCP connection to the bastion's sshd failed.
    #[error("could not connect to sshd at {addr}: {source}")]
    Connect {
        /// The bastion's sshd address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The bastion's host key was refused: unknown, changed, revoked, or a `known_hosts` file that cannot be
    /// used. [`crate::hostkeys`] decides and says why ([`HostKeyError::hint`]).
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// The bastion accepted none of the keys offered.
    #[error("the bastion at {addr} refused public key login as {user:?}; tried: {}", tried.join(", "))]
    AuthFailed {
        /// The login user (from the bastion's config).
        user: String,
        /// The bastion's sshd address.
        addr: SocketAddr,
        /// What was offered, in order: identity file paths with fingerprints, `agent key SHA256:...`, and identity
        /// files that could not be used with the reason.
        tried: Vec<String>,
    },
    /// An identity file is passphrase-protected and ssh-agent does not hold its key.
    #[error("identity file {path} is encrypted and ssh-agent does not hold its key", path = path.display())]
    KeyEncrypted {
        /// The identity file.
        path: PathBuf,
    },
    /// An identity file is passphrase-protected and the `SSH_ASKPASS` program gave no passphrase that decrypts it.
    #[error("could not decrypt identity file {path}: {reason}", path = path.display())]
    KeyPassphrase {
        /// The identity file.
        path: PathBuf,
        /// Why (the program failed, was cancelled, or its passphrase was wrong); never the passphrase.
        reason: String,
    },
    /// An identity file could not be read or parsed.
    #[error("could not load identity file {path}: {reason}", path = path.display())]
    KeyLoad {
        /// The identity file.
        path: PathBuf,
        /// What went wrong (never key material).
        reason: String,
    },
    /// There was nothing to authenticate with: no identity files and no (usable) agent keys.
    #[error("no SSH identity to log in to the bastion with")]
    NoIdentities,
    /// The bastion refused the direct-tcpip channel.
    #[error("the bastion refused the channel to {}: {reason}", host_port(host, *port))]
    ChannelRefused {
        /// Target host, as given to the bastion.
        host: String,
        /// Target port.
        port: u16,
        /// The bastion's reason (the SSH reason code's meaning, plus sshd's text when it sent one).
        reason: String,
    },
    /// The session is gone.
    #[error("SSH session to the bastion closed: {0}")]
    Disconnected(String),
    /// Anything else the SSH library reported (algorithm negotiation, malformed packets, ...).
    #[error("SSH protocol error: {0}")]
    Protocol(String),
}

impl SshError {
    /// A short stable name for the error class, for JSON status and exit decisions: `timeout`, `connect`, `host_key`,
    /// `auth`, `key`, `channel`, `disconnected` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            SshError::Timeout { .. } => "timeout",
            SshError::Connect { .. } => "connect",
            SshError::HostKey(_) => "host_key",
            SshError::AuthFailed { .. } | SshError::NoIdentities => "auth",
            SshError::KeyEncrypted { .. } | SshError::KeyPassphrase { .. } | SshError::KeyLoad { .. } => "key",
            SshError::ChannelRefused { .. } => "channel",
            SshError::Disconnected(_) => "disconnected",
            SshError::Protocol(_) => "protocol",
        }
    }

    /// What the user should do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SshError::Timeout { .. } => {
                "check that the bastion's security group allows SSH from this machine and that sshd is running; \
                 raise start_timeout if the instance boots slowly"
                    .to_string()
            }
            SshError::Connect { .. } => "check the bastion's address, port and security group".to_string(),
            SshError::HostKey(e) => e.hint(),
            SshError::AuthFailed { user, .. } => format!(
                "make sure the bastion's ~{user}/.ssh/authorized_keys holds one of these keys, \
                 or set identity_files / agent in the bastion's config"
            ),
            SshError::KeyEncrypted { path } => format!(
                "run `ssh-add {}` (bastionctl runs without a terminal, so it cannot ask for the passphrase \
                 unless SSH_ASKPASS is set and DISPLAY is set or SSH_ASKPASS_REQUIRE=force)",
                path.display()
            ),
            SshError::KeyPassphrase { path, .. } => {
                format!("check the passphrase, or run `ssh-add {}` and set agent = true", path.display())
            }
            SshError::KeyLoad { .. } => "fix the path in identity_files or regenerate the key".to_string(),
            SshError::NoIdentities => {
                "set identity_files in the bastion's config, or start ssh-agent (SSH_AUTH_SOCK) with agent = true"
                    .to_string()
            }
            SshError::ChannelRefused { .. } => {
                "check that the target is reachable from the bastion and that its sshd allows TCP forwarding \
                 (AllowTcpForwarding, PermitOpen)"
                    .to_string()
            }
            SshError::Disconnected(_) => "retry; bastionctl dials a new session".to_string(),
            SshError::Protocol(_) => return None,
        })
    }
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        use russh::Error as E;
        match e {
            E::Disconnect | E::HUP | E::SendError | E::RecvError => SshError::Disconnected(e.to_string()),
            E::KeepaliveTimeout => SshError::Disconnected("the bastion stopped answering keepalives".to_string()),
            E::InactivityTimeout => SshError::Disconnected("inactivity timeout".to_string()),
            E::IO(io) => SshError::Disconnected(format!("connection error: {io}")),
            other => SshError::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<SshError> {
        let addr: SocketAddr = ([127, 0, 2, 1], 22).into();
        vec![
            SshError::Timeout { what: "x".into(), after: Duration::from_secs(1) },
            SshError::Connect { addr, source: std::io::ErrorKind::ConnectionRefused.into() },
            SshError::HostKey(HostKeyError::Unknown {
                addr,
                instance_id: "i-1".into(),
                known_hosts: "/k".into(),
                fingerprint: "SHA256:abc".into(),
                key_line: "i-1 ssh-ed25519 AAAA".into(),
                console: None,
                trust_command: None,
            }),
            SshError::HostKey(HostKeyError::Changed {
                known_hosts: "/k".into(),
                line: 3,
                name: "i-1".into(),
                fingerprint: "f".into(),
                pinned_fingerprint: "p".into(),
                trust_command: None,
            }),
            SshError::HostKey(HostKeyError::File { path: "/k".into(), reason: "bad".into() }),
            SshError::AuthFailed { user: "ec2-user".into(), addr, tried: vec!["/id (SHA256:x)".into()] },
            SshError::KeyEncrypted { path: "/home/u/.ssh/id_ed25519".into() },
            SshError::KeyLoad { path: "/id".into(), reason: "missing".into() },
            SshError::NoIdentities,
            SshError::ChannelRefused { host: "10.0.0.5".into(), port: 22, reason: "connect failed".into() },
            SshError::Disconnected("gone".into()),
            SshError::HostKey(HostKeyError::Revoked { known_hosts: "/k".into(), line: 2, fingerprint: "f".into() }),
            SshError::KeyPassphrase { path: "/id".into(), reason: "wrong".into() },
        ]
    }

    #[test]
    fn every_actionable_error_has_a_hint() {
        for e in all() {
            let hint = e.hint();
            assert!(hint.as_deref().is_some_and(|h| !h.is_empty()), "{e} has no hint");
            assert!(!e.kind().is_empty());
        }
    }

    #[test]
    fn hints_say_what_to_do() {
        let e = &all()[2];
        let hint = e.hint().unwrap_or_default();
        assert!(hint.contains("i-1 ssh-ed25519 AAAA") && hint.contains("/k") && hint.contains("SHA256:abc"));
        assert_eq!(e.kind(), "host_key");
        let hint = all()[3].hint().unwrap_or_default();
        assert!(hint.contains("line 3 of /k"), "{hint}");
        let hint = all()[6].hint().unwrap_or_default();
        assert!(hint.contains("ssh-add /home/u/.ssh/id_ed25519"), "{hint}");
        assert_eq!(all()[6].kind(), "key");
        assert!(all()[8].hint().unwrap_or_default().contains("identity_files"));
        assert!(all()[5].to_string().contains("/id (SHA256:x)"));
    }
}
