//! Target host names from clients (`proxy HOST PORT`, `forward`, the control socket): checked before anything else
//! looks at them (the target policy, a log line, the bastion).
//!
//! A target is an IP literal (IPv4 in dotted-decimal form; IPv6 with or without brackets) or a host name in
//! RFC 1123 syntax: labels of ASCII letters, digits and hyphens, not starting or ending with a hyphen, 1 to 63 bytes
//! each and at most 253 bytes in all. One trailing dot is allowed and dropped; letters are folded to lower case.
//!
//! A name that the bastion's resolver would read as an IPv4 address is refused rather than passed on: glibc's
//! `getaddrinfo` (what sshd uses for a direct-tcpip target) accepts the old `inet_aton` forms, so `010.0.0.1`
//! (octal), `0x0a000001` (hex) or `167772161` (one 32-bit number) would reach an address that the CIDR rules never
//! saw. RFC 1123 section 2.1 forbids such names anyway (the top-level label of a name is never all digits).

use std::fmt;
use std::net::IpAddr;

use crate::escape::Escaped;

/// Longest host name in bytes, without the trailing dot (RFC 1035 / RFC 1123).
pub const MAX_NAME: usize = 253;
/// Longest label in bytes.
pub const MAX_LABEL: usize = 63;

/// A checked, normalised target host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// An IP literal.
    Ip(IpAddr),
    /// A host name: lower case, no trailing dot.
    Name(String),
}

impl TargetHost {
    /// Checks and normalises `raw`. Errors: what is wrong with the name, with the offending part escaped.
    pub fn parse(raw: &str) -> Result<TargetHost, TargetError> {
        if raw.is_empty() {
            return Err(TargetError::Empty);
        }
        let unbracketed = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(inner) = unbracketed {
            return match inner.parse::<std::net::Ipv6Addr>() {
                Ok(ip) => Ok(TargetHost::Ip(IpAddr::V6(ip))),
                Err(_) => Err(TargetError::BadBracketed(quote(raw))),
            };
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(TargetHost::Ip(ip));
        }
        check_name(raw).map(TargetHost::Name)
    }
}

/// The form sent to the bastion and matched by the policy: an IPv6 address without brackets, a name in lower case.
impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => write!(f, "{ip}"),
            TargetHost::Name(n) => f.write_str(n),
        }
    }
}

/// Why a target name was refused. Every variant's text quotes the name escaped (no control character survives).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing was given.
    #[error("the target host is empty")]
    Empty,
    /// `[...]` around something that is not an IPv6 address.
    #[error("target `{0}`: brackets may only enclose an IPv6 address, e.g. [fd00::1]")]
    BadBracketed(String),
    /// Longer than [`MAX_NAME`] bytes.
    #[error("target host name `{name}` is {len} bytes long; a host name has at most {MAX_NAME}")]
    TooLong {
        /// The name, escaped and cut to its first 64 characters (as in every variant).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Two dots in a row, a leading dot, or only a dot.
    #[error("target host name `{0}` has an empty label (a leading dot or two dots in a row)")]
    EmptyLabel(String),
    /// A label over [`MAX_LABEL`] bytes.
    #[error("target host name `{name}`: the label `{label}` is {len} bytes long; a label has at most {MAX_LABEL}")]
    LabelTooLong {
        /// The name, escaped.
        name: String,
        /// The label, escaped.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character other than a letter, digit, hyphen or dot.
    #[error(
        "target host name `{name}` contains {what} at byte {at}: a host name has only letters, digits, hyphens \
         and dots"
    )]
    BadChar {
        /// The name, escaped.
        name: String,
        /// The character, described (`the control character \u{1b}`, `` `_` ``).
        what: String,
        /// Its byte offset.
        at: usize,
    },
    /// A label starting or ending with a hyphen.
    #[error("target host name `{name}`: the label `{label}` starts or ends with a hyphen")]
    Hyphen {
        /// The name, escaped.
        name: String,
        /// The label.
        label: String,
    },
    /// Digits in the last label, or an `inet_aton` numeric form.
    #[error(
        "target `{0}` is neither a host name nor an IPv4 address in dotted-decimal form (a.b.c.d, no leading \
         zeros); the last label of a host name is never all digits"
    )]
    Numeric(String),
}

/// The name part of [`TargetHost::parse`].
fn check_name(raw: &str) -> Result<String, TargetError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    let shown = || quote(raw);
    if let Some((at, c)) = raw.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
        let what = match c {
            c if crate::escape::is_unsafe(c) => format!("the unprintable character {}", Escaped(&c.to_string())),
            ' ' => "a space".into(),
            c => format!("`{c}`"),
        };
        return Err(TargetError::BadChar { name: shown(), what, at });
    }
    if name.len() > MAX_NAME {
        return Err(TargetError::TooLong { name: shown(), len: name.len() });
    }
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(TargetError::EmptyLabel(shown()));
    }
    for label in name.split('.') {
        if label.len() > MAX_LABEL {
            let cut = format!("{}...", &label[..16]);
            return Err(TargetError::LabelTooLong { name: shown(), label: cut, len: label.len() });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(TargetError::Hyphen { name: shown(), label: label.into() });
        }
    }
    if looks_numeric(name) {
        return Err(TargetError::Numeric(shown()));
    }
    Ok(name.to_ascii_lowercase())
}

/// Longest part of a refused name quoted in its error, in characters.
const QUOTE_MAX: usize = 64;

/// `raw` escaped for an error message, cut to [`QUOTE_MAX`] characters.
fn quote(raw: &str) -> String {
    match raw.char_indices().nth(QUOTE_MAX) {
        Some((at, _)) => format!("{}...", Escaped(&raw[..at])),
        None => Escaped(raw).to_string(),
    }
}

/// True when the last label is all digits, or every label is a number as `inet_aton` reads them (decimal, octal
/// `0...`, hex `0x...`), e.g. `1.2.3`, `0x7f.1`, `0x0a000001`.
fn looks_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let number = |l: &str| match l.strip_prefix("0x").or_else(|| l.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => l.bytes().all(|b| b.is_ascii_digit()),
    };
    name.split('.').count() <= 4 && name.split('.').all(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        TargetHost::parse(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}")).to_string()
    }

    fn refused(raw: &str) -> String {
        match TargetHost::parse(raw) {
            Ok(t) => panic!("{raw:?} accepted as {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ip_literals_with_and_without_brackets() {
        assert_eq!(ok("10.0.16.10"), "10.0.16.10");
        assert_eq!(ok("fd00::1"), "fd00::1");
        assert_eq!(ok("[fd00::1]"), "fd00::1");
        assert_eq!(ok("[::ffff:10.0.0.1]"), "::ffff:10.0.0.1");
        assert_eq!(TargetHost::parse("[::1]").unwrap(), TargetHost::Ip("::1".parse().unwrap()));
        assert!(refused("[10.0.0.1]").contains("brackets may only enclose an IPv6"));
        assert!(refused("[web]").contains("brackets"));
        assert!(refused("[fd00::1").contains("`[`"));
        assert!(refused("fe80::1%eth0").contains("`:`"), "zone ids are not taken");
    }

    #[test]
    fn names_are_folded_and_lose_one_trailing_dot() {
        assert_eq!(ok("Web.Internal."), "web.internal");
        assert_eq!(ok("ip-10-0-16-10.ec2.internal"), "ip-10-0-16-10.ec2.internal");
        assert_eq!(ok("db-1"), "db-1");
        assert_eq!(ok("3com.example"), "3com.example");
        assert!(refused("web.internal..").contains("empty label"));
        assert!(refused(".").contains("empty label"));
        assert!(refused(".web").contains("empty label"));
        assert!(refused("a..b").contains("empty label"));
    }

    #[test]
    fn lengths_are_limited_per_label_and_in_all() {
        let label63 = "a".repeat(63);
        assert_eq!(ok(&format!("{label63}.internal")), format!("{label63}.internal"));
        let err = refused(&format!("{}.internal", "a".repeat(64)));
        assert!(err.contains("64 bytes long; a label has at most 63"), "{err}");
        let name253 = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(ok(&name253), name253);
        assert_eq!(ok(&format!("{name253}.")), name253, "the trailing dot does not count");
        let err = refused(&format!("{name253}b"));
        assert!(err.contains("254 bytes long; a host name has at most 253"), "{err}");
        assert!(refused(&"x".repeat(70_000)).len() < 200, "the message quotes a bounded part of the name");
        assert!(refused(&format!("{}_", "x".repeat(70_000))).len() < 300, "also for a bad character");
    }

    #[test]
    fn bad_characters_are_named_and_escaped() {
        let err = refused("web\ninfo forged line");
        assert!(err.contains("the unprintable character \\n at byte 3") && !err.contains('\n'), "{err}");
        let err = refused("db\x1b[2J");
        assert!(err.contains("\\u{1b}") && !err.contains('\x1b'), "{err}");
        assert!(refused("my_host").contains("`_` at byte 2"));
        assert!(refused("a b").contains("a space"));
        assert!(refused("wéb.internal").contains("`é`"));
        assert!(refused("web\0").contains("\\u{0}"));
        assert!(refused("host:22").contains("`:`"));
        assert!(refused("-web").contains("starts or ends with a hyphen"));
        assert!(refused("web-.internal").contains("label `web-`"));
        assert_eq!(refused(""), "the target host is empty");
    }

    #[test]
    fn numeric_forms_that_resolvers_read_as_addresses_are_refused() {
        for raw in ["010.0.0.1", "10.0.0.01", "167772161", "0x0a000001", "0x7f.1", "1.2.3", "10.0.0", "1.2.3.4.5", "web.1"] {
            let err = refused(raw);
            assert!(err.contains("neither a host name nor an IPv4 address"), "{raw}: {err}");
        }
        assert_eq!(ok("0xdb.internal"), "0xdb.internal");
        assert_eq!(ok("1.2.3.x"), "1.2.3.x");
    }
}
