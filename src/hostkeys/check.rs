//! Is this the bastion's host key? One place answers it: the SSH handshake ([`HostKeyCheck::verify`], called from
//! [`crate::ssh`]'s russh handler), `bastionctl trust` ([`decide`]) and `bastionctl doctor` ([`vouching`]).
//!
//! The files decide first ([`decide`], no I/O), pinned by EC2 instance id:
//!
//! 1. a line that cannot be parsed but applies to the bastion refuses (fix it rather than guess);
//! 2. `@revoked` in either file for the key (or for the CA of an offered certificate) refuses;
//! 3. the pin file (bastionctl's own) by instance id wins: its key is accepted, any other key is "changed";
//! 4. the user's `known_hosts`, read as OpenSSH does: a host certificate from an `@cert-authority` line's CA, else
//!    a plain line; the instance id (HostKeyAlias style) is looked up before the address;
//! 5. otherwise the key is unknown.
//!
//! An unknown key gets first trust, in this order: pinned automatically when its fingerprint is in the instance's
//! console output (EC2 GetConsoleOutput, where cloud-init prints them); refused when the console lists other
//! fingerprints; pinned when the config opts into trust on first use; otherwise refused with the `bastionctl trust`
//! command to run.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PublicKey, PublicKeyOrCertificate};

use super::console::{self, ConsoleSource};
use super::known_hosts::{Entry, KnownHosts, Lookup, Marker};
use super::{HostKeyError, cert, fingerprint, known_hosts_line, known_hosts_name, pins};

/// Bound on the GetConsoleOutput call made during a handshake.
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

// ---- the files (no I/O) ----

/// The names a bastion is known by.
#[derive(Debug, Clone)]
pub struct HostNames {
    /// The EC2 instance id (the pin's name, like OpenSSH's `HostKeyAlias`).
    pub instance_id: String,
    /// The sshd address.
    pub addr: SocketAddr,
}

impl HostNames {
    /// `(known_hosts name, certificate principal)` pairs, in lookup order: the instance id, then the address
    /// (`127.0.2.1` on port 22, `[127.0.2.1]:2222` otherwise, with principal `127.0.2.1`).
    pub fn lookups(&self) -> Vec<(String, String)> {
        lookups(&self.instance_id, Some(self.addr))
    }
}

/// The lookups of [`HostNames::lookups`], without the address when it is not known yet.
fn lookups(instance_id: &str, addr: Option<SocketAddr>) -> Vec<(String, String)> {
    let mut out = vec![(instance_id.to_ascii_lowercase(), instance_id.to_string())];
    if let Some(addr) = addr {
        let ip = addr.ip().to_string();
        out.push((known_hosts_name(&ip, addr.port()), ip));
    }
    out
}

/// What the files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accepted; the text says by what (`/path:3 (pinned)`), for the log.
    Trusted(String),
    /// A `@revoked` line refuses it.
    Revoked {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// Another key is trusted for the bastion.
    Changed {
        /// The file holding the other key.
        path: PathBuf,
        /// Its 1-based line.
        line: usize,
        /// The name that line matched.
        name: String,
        /// Fingerprint of the key on that line.
        pinned: String,
        /// Whether it is bastionctl's pin file (else the user's known_hosts).
        in_pin_file: bool,
    },
    /// An unparsable line applies to the bastion.
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither file knows it.
    Unknown,
}

/// Decides on `offered` for `names` from `pins` (bastionctl's file, if any) and `user` (the config's
/// `known_hosts`), at `now` (Unix seconds, for certificate validity).
pub fn decide(
    offered: &PublicKeyOrCertificate,
    names: &HostNames,
    pins: Option<&KnownHosts>,
    user: &KnownHosts,
    now: u64,
) -> Decision {
    let key = offered.public_key();
    let cert = offered.certificate();
    let ca = cert.map(|c| c.signature_key());
    let lookups = names.lookups();
    let files: Vec<&KnownHosts> = pins.into_iter().chain([user]).collect();
    for kh in &files {
        for (name, _) in &lookups {
            if let Some(bad) = kh.invalid_for(name) {
                return Decision::Invalid { path: kh.path.clone(), line: bad.line, reason: bad.reason.clone() };
            }
            if let Some(e) = kh.revoked(name, key.key_data(), ca) {
                return Decision::Revoked { path: kh.path.clone(), line: e.line };
            }
        }
    }
    if let Some(pins) = pins {
        match pins.lookup(&lookups[0].0, key.key_data()) {
            Lookup::Found(e) => return Decision::Trusted(format!("{}:{} (pinned)", pins.path.display(), e.line)),
            Lookup::Changed(e) => return changed(pins, e, &lookups[0].0, true),
            Lookup::NotFound => {}
        }
    }
    if let (Some(cert), Some(ca)) = (cert, ca) {
        for (name, principal) in &lookups {
            let Some(e) = user.cert_authority(name, ca) else { continue };
            match cert::check_host_cert(cert, principal, now) {
                Ok(()) => {
                    return Decision::Trusted(format!(
                        "{}:{} (host certificate signed by this @cert-authority, principal {principal})",
                        user.path.display(),
                        e.line
                    ));
                }
                // As OpenSSH does, an unacceptable certificate falls back to its plain key.
                Err(why) => tracing::info!("host certificate refused for {principal}: {why}; checking its plain key"),
            }
        }
    }
    for (name, _) in &lookups {
        match user.lookup(name, key.key_data()) {
            Lookup::Found(e) => return Decision::Trusted(format!("{}:{}", user.path.display(), e.line)),
            Lookup::Changed(e) => return changed(user, e, name, false),
            Lookup::NotFound => {}
        }
    }
    Decision::Unknown
}

fn changed(kh: &KnownHosts, e: &Entry, name: &str, in_pin_file: bool) -> Decision {
    Decision::Changed {
        path: kh.path.clone(),
        line: e.line,
        name: name.to_string(),
        pinned: fingerprint(&e.key),
        in_pin_file,
    }
}

/// What will vouch for the bastion's key before the key is seen, in [`decide`]'s order: a key pinned for its
/// instance id in `pins`, then a key line or an `@cert-authority` line for one of its names (the instance id, then
/// `addr` when known) in `user`. `None`: neither file knows the bastion, so first trust will decide. This is what
/// `bastionctl doctor` reports; the handshake itself runs [`decide`] on the offered key.
pub fn vouching<'a>(
    instance_id: &str,
    addr: Option<SocketAddr>,
    pins: Option<&'a KnownHosts>,
    user: &'a KnownHosts,
) -> Option<(&'a KnownHosts, &'a Entry)> {
    let names = lookups(instance_id, addr);
    let plain = |kh: &'a KnownHosts, name: &str| {
        kh.entries()
            .iter()
            .find(|e| e.marker.is_none() && e.applies_to(name))
            .map(|e| (kh, e))
    };
    let ca = |kh: &'a KnownHosts, name: &str| {
        kh.entries()
            .iter()
            .find(|e| e.marker == Some(Marker::CertAuthority) && e.applies_to(name))
            .map(|e| (kh, e))
    };
    pins.and_then(|p| plain(p, &names[0].0)).or_else(|| {
        names
            .iter()
            .find_map(|(name, _)| ca(user, name).or_else(|| plain(user, name)))
    })
}

// ---- the handshake: the files, then first trust ----

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
    fn load(path: &std::path::Path) -> Result<KnownHosts, HostKeyError> {
        KnownHosts::load(path).map_err(|e| HostKeyError::File { path: path.into(), reason: e.to_string() })
    }

    /// Whether the config's `known_hosts` has an `@cert-authority` line for this bastion (then the handshake asks
    /// for host certificates). An unreadable file says no here; [`HostKeyCheck::verify`] reports it.
    pub fn wants_certificates(&self) -> bool {
        let Ok(kh) = KnownHosts::load(&self.known_hosts) else { return false };
        self.names().lookups().iter().any(|(name, _)| kh.has_cert_authority_for(name))
    }

    /// Accepts or refuses `offered`: the files ([`decide`]), then first trust (see the module doc). Errors:
    /// [`HostKeyError::Revoked`], [`HostKeyError::Changed`] (with both fingerprints and the line),
    /// [`HostKeyError::Unknown`] (with the `bastionctl trust` command), [`HostKeyError::File`] (unreadable file or
    /// line, or a pin that cannot be written).
    #[allow(clippy::result_large_err)] // refusals are rare and carry what the user needs
    pub async fn verify(&self, offered: &PublicKeyOrCertificate) -> Result<(), HostKeyError> {
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
                Err(HostKeyError::Revoked { known_hosts: path, line, fingerprint: fingerprint(&key) })
            }
            Decision::Changed { path, line, name, pinned, .. } => Err(HostKeyError::Changed {
                known_hosts: path,
                line,
                name,
                fingerprint: fingerprint(&key),
                pinned_fingerprint: pinned,
                trust_command,
            }),
            Decision::Invalid { path, line, reason } => {
                Err(HostKeyError::File { path, reason: format!("line {line} applies to this bastion but {reason}") })
            }
            Decision::Unknown => self.first_trust(&key).await,
        }
    }

    /// First trust for a key no file knows.
    async fn first_trust(&self, key: &PublicKey) -> Result<(), HostKeyError> {
        let fp = fingerprint(key);
        let unknown = |console: Option<String>| HostKeyError::Unknown {
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

    async fn pin(&self, t: &FirstTrust, key: &PublicKey, source: &'static str) -> Result<usize, HostKeyError> {
        let (path, id, key) = (t.pins.clone(), self.instance_id.clone(), key.clone());
        let res = tokio::task::spawn_blocking(move || pins::pin(&path, &id, &key, source, false)).await;
        match res {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(HostKeyError::File { path: t.pins.clone(), reason: e.to_string() }),
            Err(e) => Err(HostKeyError::File { path: t.pins.clone(), reason: format!("pinning failed: {e}") }),
        }
    }
}

#[cfg(test)]
mod tests;
