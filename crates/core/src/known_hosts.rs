//! A `known_hosts` file read the way OpenSSH reads it (`sshd(8)`, "SSH_KNOWN_HOSTS FILE FORMAT"):
//!
//! `[@marker] hosts keytype base64 [comment]`, fields separated by any run of spaces or tabs; blank lines and lines
//! starting with `#` are ignored; the host field is matched by [`crate::pattern::field_matches`] (hashed entries,
//! comma lists, `[host]:port`, `*`/`?`, `!` negation); markers are `@cert-authority` (the key is a CA whose host
//! certificates are accepted) and `@revoked` (the key must never be accepted).
//!
//! A line that cannot be parsed is skipped, as OpenSSH does, unless its host field applies to the host being
//! checked: then [`KnownHosts::invalid_for`] reports it so the caller can refuse rather than guess.

use std::io;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use crate::pattern::field_matches;

/// The key's OpenSSH fingerprint, `SHA256:...` (what `ssh-keygen -lf` prints).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name OpenSSH writes in `known_hosts` for `host` on `port`: `host` for port 22, `[host]:port` otherwise.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The `known_hosts` line that pins `key` to `name` (normally the instance id): `i-0123 ssh-ed25519 AAAA...`.
pub fn known_hosts_line(name: &str, key: &PublicKey) -> String {
    let base64 = key
        .to_openssh()
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    format!("{name} {} {base64}", key.algorithm().as_str())
}

/// A line's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `@cert-authority`: the key signs host certificates for the hosts of the line.
    CertAuthority,
    /// `@revoked`: the key is refused for the hosts of the line, even if another line trusts it.
    Revoked,
}

/// One parsed key line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    /// The marker, if any.
    pub marker: Option<Marker>,
    /// The host field as written (patterns or one hashed name).
    pub hosts: String,
    /// The key (a CA key for `@cert-authority` lines).
    pub key: PublicKey,
}

impl Entry {
    /// Whether this line applies to `name`.
    pub fn applies_to(&self, name: &str) -> bool {
        field_matches(&self.hosts, name)
    }
}

/// A line that could not be parsed.
#[derive(Debug, Clone)]
pub struct InvalidLine {
    /// 1-based line number.
    pub line: usize,
    /// Its host field, when the line had one.
    pub hosts: Option<String>,
    /// Why it could not be parsed.
    pub reason: String,
}

/// What the plain-key lines of a file say about a name and an offered key.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// A line holds this key.
    Found(&'a Entry),
    /// Lines apply to the name, but none holds this key; the last of them.
    Changed(&'a Entry),
    /// No plain-key line applies to the name.
    NotFound,
}

/// A parsed `known_hosts` file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    entries: Vec<Entry>,
    invalid: Vec<InvalidLine>,
}

impl KnownHosts {
    /// Reads and parses `path`; a missing file is an empty one. Errors: the file exists but cannot be read.
    pub fn load(path: &Path) -> io::Result<KnownHosts> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(path, &text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(KnownHosts { path: path.into(), ..Default::default() }),
            Err(e) => Err(e),
        }
    }

    /// Parses `text`, the content of `path`.
    pub fn parse(path: &Path, text: &str) -> KnownHosts {
        let mut kh = KnownHosts { path: path.into(), ..Default::default() };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start_matches([' ', '\t']);
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(trimmed) {
                Ok((marker, hosts, key)) => kh.entries.push(Entry { line, marker, hosts, key }),
                Err((hosts, reason)) => kh.invalid.push(InvalidLine { line, hosts, reason }),
            }
        }
        kh
    }

    /// Every parsed key line, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first unparsable line whose host field applies to `name`.
    pub fn invalid_for(&self, name: &str) -> Option<&InvalidLine> {
        self.invalid.iter().find(|l| l.hosts.as_deref().is_some_and(|h| field_matches(h, name)))
    }

    /// The first `@revoked` line for `name` that holds `key` (or `ca`, the signer of an offered certificate).
    pub fn revoked(&self, name: &str, key: &KeyData, ca: Option<&KeyData>) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.marker == Some(Marker::Revoked)
                && e.applies_to(name)
                && (e.key.key_data() == key || ca.is_some_and(|ca| e.key.key_data() == ca))
        })
    }

    /// The plain-key lines for `name` against `key`, as OpenSSH's `check_key_in_hostkeys`: any line holding the key
    /// wins; otherwise any applicable line (of whatever key type) means the key changed.
    pub fn lookup(&self, name: &str, key: &KeyData) -> Lookup<'_> {
        let mut changed = None;
        for e in self.entries.iter().filter(|e| e.marker.is_none() && e.applies_to(name)) {
            if e.key.key_data() == key {
                return Lookup::Found(e);
            }
            changed = Some(e);
        }
        changed.map_or(Lookup::NotFound, Lookup::Changed)
    }

    /// The first `@cert-authority` line for `name` whose key is `ca`.
    pub fn cert_authority(&self, name: &str, ca: &KeyData) -> Option<&Entry> {
        self.entries.iter().find(|e| e.marker == Some(Marker::CertAuthority) && e.applies_to(name) && e.key.key_data() == ca)
    }

    /// Whether any `@cert-authority` line applies to `name` (then certificate host key algorithms are worth
    /// asking for).
    pub fn has_cert_authority_for(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.marker == Some(Marker::CertAuthority) && e.applies_to(name))
    }
}

type Parsed = (Option<Marker>, String, PublicKey);

/// Splits one non-comment line into marker, host field and key. Errors carry the host field when there was one.
fn parse_line(line: &str) -> Result<Parsed, (Option<String>, String)> {
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let mut first = fields.next().unwrap_or_default();
    let marker = match first {
        "@cert-authority" => Some(Marker::CertAuthority),
        "@revoked" => Some(Marker::Revoked),
        m if m.starts_with('@') => return Err((fields.next().map(str::to_string), format!("unknown marker `{m}`"))),
        _ => None,
    };
    if marker.is_some() {
        first = fields.next().ok_or((None, "a marker but no host field".to_string()))?;
    }
    let hosts = first.to_string();
    let (Some(algorithm), Some(base64)) = (fields.next(), fields.next()) else {
        return Err((Some(hosts), "no key type and key after the host field".into()));
    };
    match PublicKey::from_openssh(&format!("{algorithm} {base64}")) {
        Ok(key) => Ok((marker, hosts, key)),
        Err(e) => Err((Some(hosts), format!("unreadable {algorithm} key: {e}"))),
    }
}
