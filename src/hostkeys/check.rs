//! Host key verification during the SSH handshake, pinned by EC2 instance id, and first trust for a key no file
//! knows yet. [`crate::ssh`] calls [`HostKeyCheck::verify`] from its russh handler.
//!
//! The files decide first ([`crate::hostkeys::verify::decide`]: `@revoked` anywhere refuses, bastionctl's pin by
//! instance id wins, then the config's `known_hosts` with OpenSSH's semantics). A key neither file knows gets first
//! trust, in this order: pinned automatically when its fingerprint is in the instance's console output (EC2
//! GetConsoleOutput, where cloud-init prints them); refused when the console lists other fingerprints; pinned when
//! the config opts into trust on first use; otherwise refused with the `bastionctl trust` command to run.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PublicKey, PublicKeyOrCertificate};

use super::console::{self, ConsoleSource};
use super::known_hosts::KnownHosts;
use super::verify::{Decision, HostNames, decide};
use super::{cert, fingerprint, known_hosts_line, pins};
use crate::ssh::SshError;

/// Bound on the GetConsoleOutput call made during a handshake.
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a key nobody knows yet may come to be trusted (from the bastion's config).
#[derive(Clone)]
pub struct FirstTrust {
    /// bastionctl's pin file (`[daemon] pinned_host_keys`).
    pub pins: PathBuf,
    /// Pin an unknown key without evidence (`trust_on_first_use`); never when the console contradicts it.
    pub trust_on_first_use: bool,
    /// The command that pins the key interactively, e.g. `bastionctl trust prod`.
    pub trust_command: String,
    /// Where the console output comes from; `None` skips the console check.
    pub console: Option<Arc<dyn ConsoleSource>>,
}

impl fmt::Debug for FirstTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstTrust")
            .field("pins", &self.pins)
            .field("trust_on_first_use", &self.trust_on_first_use)
            .field("trust_command", &self.trust_command)
            .field("console", &self.console.is_some())
            .finish()
    }
}

/// What a bastion's host key is checked against.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    /// The config's `known_hosts` file, read-only with OpenSSH's semantics. A missing file is an empty one.
    pub known_hosts: PathBuf,
    /// The bastion's EC2 instance id: the pin's name, looked up first.
    pub instance_id: String,
    /// The bastion's sshd address, looked up second in `known_hosts`.
    pub addr: SocketAddr,
    /// First trust and the pin file; `None` means only `known_hosts` counts.
    pub first_trust: Option<FirstTrust>,
}

impl HostKeyCheck {
    fn names(&self) -> HostNames {
        HostNames { instance_id: self.instance_id.clone(), addr: self.addr }
    }

    #[allow(clippy::result_large_err)] // see `verify`
    fn load(path: &std::path::Path) -> Result<KnownHosts, SshError> {
        KnownHosts::load(path).map_err(|e| SshError::KnownHosts { path: path.into(), reason: e.to_string() })
    }

    /// Whether the config's `known_hosts` has an `@cert-authority` line for this bastion (then the handshake asks
    /// for host certificates). An unreadable file says no here; [`HostKeyCheck::verify`] reports it.
    pub fn wants_certificates(&self) -> bool {
        let Ok(kh) = KnownHosts::load(&self.known_hosts) else { return false };
        self.names().lookups().iter().any(|(name, _)| kh.has_cert_authority_for(name))
    }

    /// Accepts or refuses `offered` (see the module doc). Errors: [`SshError::HostKeyRevoked`],
    /// [`SshError::HostKeyChanged`] (with both fingerprints and the line), [`SshError::HostKeyUnknown`] (with the
    /// `bastionctl trust` command), [`SshError::KnownHosts`] (unreadable file or line, or a pin that cannot be
    /// written).
    #[allow(clippy::result_large_err)] // refusals are rare and carry what the user needs
    pub async fn verify(&self, offered: &PublicKeyOrCertificate) -> Result<(), SshError> {
        let user = Self::load(&self.known_hosts)?;
        let pins = match &self.first_trust {
            Some(t) => Some(Self::load(&t.pins)?),
            None => None,
        };
        let key = offered.public_key();
        let trust_command = self.first_trust.as_ref().map(|t| t.trust_command.clone());
        match decide(offered, &self.names(), pins.as_ref(), &user, cert::unix_now()) {
            Decision::Trusted(by) => {
                tracing::debug!(instance_id = %self.instance_id, "host key {} trusted by {by}", fingerprint(&key));
                Ok(())
            }
            Decision::Revoked { path, line } => {
                Err(SshError::HostKeyRevoked { known_hosts: path, line, fingerprint: fingerprint(&key) })
            }
            Decision::Changed { path, line, name, pinned, .. } => Err(SshError::HostKeyChanged {
                known_hosts: path,
                line,
                name,
                fingerprint: fingerprint(&key),
                pinned_fingerprint: pinned,
                trust_command,
            }),
            Decision::Invalid { path, line, reason } => {
                Err(SshError::KnownHosts { path, reason: format!("line {line} applies to this bastion but {reason}") })
            }
            Decision::Unknown => self.first_trust(&key).await,
        }
    }

    /// First trust for a key no file knows.
    async fn first_trust(&self, key: &PublicKey) -> Result<(), SshError> {
        let fp = fingerprint(key);
        let unknown = |console: Option<String>| SshError::HostKeyUnknown {
            addr: self.addr,
            instance_id: self.instance_id.clone(),
            known_hosts: self.known_hosts.clone(),
            fingerprint: fp.clone(),
            key_line: known_hosts_line(&self.instance_id, key),
            console,
            trust_command: self.first_trust.as_ref().map(|t| t.trust_command.clone()),
        };
        let Some(t) = &self.first_trust else { return Err(unknown(None)) };
        let (listed, said) = match &t.console {
            Some(ec2) => self.console_fingerprints(ec2.as_ref()).await,
            None => (Vec::new(), None),
        };
        if listed.contains(&fp) {
            let line = self.pin(t, key, "the console output (GetConsoleOutput)").await?;
            tracing::info!(instance_id = %self.instance_id, "host key {fp} matches the console output; pinned at {}:{line}", t.pins.display());
            return Ok(());
        }
        if !listed.is_empty() {
            return Err(unknown(Some(format!("the console output lists {}, not this key", listed.join(", ")))));
        }
        if t.trust_on_first_use {
            let line = self.pin(t, key, "trust on first use").await?;
            tracing::warn!(instance_id = %self.instance_id, "trusting host key {fp} on first use (trust_on_first_use = true); pinned at {}:{line}", t.pins.display());
            return Ok(());
        }
        Err(unknown(said.or_else(|| Some("the console output shows no host key fingerprints".into()))))
    }

    /// The fingerprints in the console output, and what to tell the user when there are none for a reason.
    async fn console_fingerprints(&self, ec2: &dyn ConsoleSource) -> (Vec<String>, Option<String>) {
        match tokio::time::timeout(CONSOLE_TIMEOUT, ec2.console_output(&self.instance_id)).await {
            Ok(Ok(Some(text))) => (console::fingerprints(&text), None),
            Ok(Ok(None)) => (Vec::new(), Some("EC2 has no console output for it yet".into())),
            Ok(Err(e)) => {
                tracing::warn!(instance_id = %self.instance_id, "cannot read the console output: {e}");
                (Vec::new(), Some(format!("its console output could not be read ({e})")))
            }
            Err(_) => (Vec::new(), Some(format!("GetConsoleOutput gave no answer within {CONSOLE_TIMEOUT:?}"))),
        }
    }

    async fn pin(&self, t: &FirstTrust, key: &PublicKey, source: &'static str) -> Result<usize, SshError> {
        let (path, id, key) = (t.pins.clone(), self.instance_id.clone(), key.clone());
        let res = tokio::task::spawn_blocking(move || pins::pin(&path, &id, &key, source, false)).await;
        match res {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(SshError::KnownHosts { path: t.pins.clone(), reason: e.to_string() }),
            Err(e) => Err(SshError::KnownHosts { path: t.pins.clone(), reason: format!("pinning failed: {e}") }),
        }
    }
}

#[cfg(test)]
mod tests;
