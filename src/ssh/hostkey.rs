//! Host key verification against a `known_hosts` file, pinned by EC2 instance id.
//!
//! A bastion's public address can move to another instance (Elastic IPs are reassigned), so the instance id is the
//! name looked up first, like OpenSSH's `HostKeyAlias`; the address (`127.0.2.1` for port 22, `[127.0.2.1]:2222`
//! otherwise) is the fallback so an existing `known_hosts` keeps working. A key that matches neither is refused,
//! never learned silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey, PublicKeyBase64};

use super::SshError;

/// What a bastion's host key is checked against.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    /// The `known_hosts` file (from the bastion's config). A missing file means every key is unknown.
    pub known_hosts: PathBuf,
    /// The bastion's EC2 instance id, the first name looked up.
    pub instance_id: String,
    /// The bastion's sshd address, the second name looked up.
    pub addr: SocketAddr,
}

impl HostKeyCheck {
    /// Accepts `key` if the first of the instance id and the address that has an entry of the key's type holds
    /// exactly this key. Errors: [`SshError::HostKeyChanged`] (an entry of that type holds another key),
    /// [`SshError::HostKeyUnknown`] (no entry of that type), [`SshError::KnownHosts`] (unparsable entry).
    #[allow(clippy::result_large_err)] // refusals are rare and carry the line for the user to add
    pub fn verify(&self, key: &PublicKey) -> Result<(), SshError> {
        let ip = self.addr.ip().to_string();
        for (host, port) in [(self.instance_id.as_str(), 22), (ip.as_str(), self.addr.port())] {
            match russh::keys::check_known_hosts_path(host, port, key, &self.known_hosts) {
                Ok(true) => {
                    tracing::debug!(name = %known_hosts_name(host, port), "host key matches {}", self.known_hosts.display());
                    return Ok(());
                }
                Ok(false) => continue,
                Err(russh::keys::Error::KeyChanged { line }) => {
                    return Err(SshError::HostKeyChanged {
                        known_hosts: self.known_hosts.clone(),
                        line: file_line(&self.known_hosts, line),
                        name: known_hosts_name(host, port),
                        fingerprint: fingerprint(key),
                    });
                }
                Err(e) => {
                    return Err(SshError::KnownHosts { path: self.known_hosts.clone(), reason: e.to_string() });
                }
            }
        }
        Err(SshError::HostKeyUnknown {
            addr: self.addr,
            instance_id: self.instance_id.clone(),
            known_hosts: self.known_hosts.clone(),
            fingerprint: fingerprint(key),
            key_line: known_hosts_line(&self.instance_id, key),
        })
    }
}

/// The 1-based line of `path` that russh calls line `counted`: russh 0.65 does not count `#` comment lines.
fn file_line(path: &Path, counted: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else { return counted };
    text.split_inclusive('\n')
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .nth(counted.saturating_sub(1))
        .map_or(counted, |(i, _)| i + 1)
}

/// The name OpenSSH writes in `known_hosts` for `host` on `port`: `host` for port 22, `[host]:port` otherwise.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The `known_hosts` line that pins `key` to `name` (normally the instance id): `i-0123 ssh-ed25519 AAAA...`.
pub fn known_hosts_line(name: &str, key: &PublicKey) -> String {
    format!("{name} {} {}", key.algorithm().as_str(), key.public_key_base64())
}

/// The key's OpenSSH fingerprint, `SHA256:...` (what `ssh-keygen -lf` prints).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    /// A deterministic Ed25519 key for tests (no RNG needed).
    fn test_key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn check(dir: &tempfile::TempDir, port: u16) -> HostKeyCheck {
        HostKeyCheck {
            known_hosts: dir.path().join("known_hosts"),
            instance_id: "i-0abc".to_string(),
            addr: SocketAddr::from(([127, 0, 2, 1], port)),
        }
    }

    fn write(c: &HostKeyCheck, lines: &[String]) {
        std::fs::write(&c.known_hosts, lines.join("\n") + "\n").expect("write known_hosts");
    }

    #[test]
    fn instance_id_line_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = check(&dir, 2222);
        let key = test_key(1).public_key().clone();
        write(
            &c,
            &[
                "# comment".to_string(),
                known_hosts_line("i-other", &test_key(2).public_key().clone()),
                known_hosts_line("i-0abc", &key),
            ],
        );
        c.verify(&key).expect("accepted");
    }

    #[test]
    fn address_port_line_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = test_key(1).public_key().clone();
        let c = check(&dir, 2222);
        write(&c, &[known_hosts_line("[127.0.2.1]:2222", &key)]);
        c.verify(&key).expect("accepted by [addr]:port");
        // The same line does not match the address on another port; port 22 uses the bare address.
        let c22 = HostKeyCheck { addr: SocketAddr::from(([127, 0, 2, 1], 22)), ..c.clone() };
        assert!(matches!(c22.verify(&key), Err(SshError::HostKeyUnknown { .. })));
        write(&c22, &[known_hosts_line("other,127.0.2.1", &key)]);
        c22.verify(&key).expect("accepted by bare address in a comma list");
    }

    #[test]
    fn changed_key_reports_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = check(&dir, 2222);
        let old = test_key(1).public_key().clone();
        let new = test_key(3).public_key().clone();
        write(&c, &["# header".to_string(), known_hosts_line("somewhere", &old), known_hosts_line("i-0abc", &old)]);
        match c.verify(&new) {
            Err(SshError::HostKeyChanged { line, name, fingerprint: fp, .. }) => {
                assert_eq!(line, 3);
                assert_eq!(name, "i-0abc");
                assert_eq!(fp, fingerprint(&new));
            }
            other => panic!("expected HostKeyChanged, got {other:?}"),
        }
    }

    #[test]
    fn instance_id_entry_wins_over_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = check(&dir, 2222);
        let good = test_key(1).public_key().clone();
        let evil = test_key(4).public_key().clone();
        // The address line would accept `evil`, but the instance id says otherwise.
        write(&c, &[known_hosts_line("[127.0.2.1]:2222", &evil), known_hosts_line("i-0abc", &good)]);
        assert!(matches!(c.verify(&evil), Err(SshError::HostKeyChanged { line: 2, .. })));
    }

    #[test]
    fn missing_file_is_unknown_and_says_what_to_add() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = check(&dir, 22);
        let key = test_key(5).public_key().clone();
        let err = c.verify(&key).expect_err("unknown");
        let hint = err.hint().unwrap_or_default();
        let SshError::HostKeyUnknown { key_line, fingerprint: fp, .. } = err else {
            panic!("expected HostKeyUnknown, got {err:?}");
        };
        assert!(key_line.starts_with("i-0abc ssh-ed25519 AAAA"), "{key_line}");
        assert!(fp.starts_with("SHA256:"));
        assert!(hint.contains(key_line.as_str()));
        // The suggested line really is accepted once added.
        write(&c, std::slice::from_ref(&key_line));
        c.verify(&key).expect("accepted after adding the suggested line");
    }

    #[test]
    fn other_hosts_keys_do_not_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = check(&dir, 2222);
        let key = test_key(1).public_key().clone();
        write(&c, &[known_hosts_line("127.0.2.1", &key), known_hosts_line("i-0abcd", &key)]);
        assert!(matches!(c.verify(&key), Err(SshError::HostKeyUnknown { .. })));
    }
}
