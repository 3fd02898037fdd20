//! The trust decision for an offered bastion host key, from the two files (no I/O here):
//!
//! 1. a line that cannot be parsed but applies to the bastion refuses (fix it rather than guess);
//! 2. `@revoked` in either file for the key (or for the CA of an offered certificate) refuses;
//! 3. the pin file (bastionctl's own) by instance id wins: its key is accepted, any other key is "changed";
//! 4. the user's `known_hosts`, read as OpenSSH does: a host certificate from an `@cert-authority` line's CA, else
//!    a plain line; the instance id (HostKeyAlias style) is looked up before the address;
//! 5. otherwise the key is unknown, and first trust ([`super::check`]) decides.

use std::net::SocketAddr;
use std::path::PathBuf;

use russh::keys::PublicKeyOrCertificate;

use super::cert::check_host_cert;
use super::known_hosts::{Entry, KnownHosts, Lookup, Marker};
use super::{fingerprint, known_hosts_name};

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
            match check_host_cert(cert, principal, now) {
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

#[cfg(test)]
mod tests;
