//! Target policy: which targets a client may name at all, which `host:port` a bastion may forward to, and the
//! config-time rule that no target list turns bastionctl into an open proxy to the internet.
//!
//! The name check ([`TargetHost::parse`]) comes first: a target host from a client (`proxy HOST PORT`, `forward`,
//! the control socket) is checked before anything else looks at it (the rules, a log line, the bastion). A target
//! is an IP literal (IPv4 in dotted-decimal form; IPv6 with or without brackets) or a host name in RFC 1123 syntax:
//! labels of ASCII letters, digits and hyphens, not starting or ending with a hyphen, 1 to 63 bytes each and at
//! most 253 bytes in all. One trailing dot is allowed and dropped; letters are folded to lower case.
//!
//! A name that the bastion's resolver would read as an IPv4 address is refused rather than passed on: glibc's
//! `getaddrinfo` (what sshd uses for a direct-tcpip target) accepts the old `inet_aton` forms, so `010.0.0.1`
//! (octal), `0x0a000001` (hex) or `167772161` (one 32-bit number) would reach an address that the CIDR rules never
//! saw. RFC 1123 section 2.1 forbids such names anyway (the top-level label of a name is never all digits).
//!
//! The rules ([`check`]): a bastion's allowed set ([`RuleSet`]) is its `targets` with `target_ports`, or, when
//! `targets` is not set, the CIDR blocks of the bastion's VPC (from DescribeVpcs) with `target_ports` (default
//! `[22]`).
//!
//! Open-proxy rule ([`refuse_open`], applied when the config is loaded):
//! - a CIDR block that contains public (non-private) addresses may be at most as wide as the largest AWS VPC block,
//!   /16 for IPv4 and /44 for IPv6. Wider public blocks are refused, unless written literally as `0.0.0.0/0` or
//!   `::/0`: forwarding anywhere must be asked for in so many words. Private ranges (RFC 1918, 100.64.0.0/10,
//!   loopback, link-local, fc00::/7) may be as wide as the user likes.
//! - a host-name pattern with a wildcard (`*`, `?`) must end in literal labels after its last wildcard label, and
//!   those labels must not be a public suffix (Mozilla's Public Suffix List: `com`, `co.uk`, `github.io`, ...).
//!   So `*.internal`, `*.corp.example.com` and `ip-10-*.ec2.internal` are fine; `*`, `*.*`, `db-*`, `*.com` and
//!   `*.co.uk` are refused. Names without wildcards are single hosts and always fine.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use wildmatch::WildMatch;

use crate::config::TargetRule;
use crate::escape::Escaped;

#[cfg(test)]
mod tests;

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

/// Widest IPv4 block with public addresses a config may allow without writing `0.0.0.0/0` (AWS's largest VPC block).
pub const MAX_PUBLIC_PREFIX_V4: u8 = 16;
/// Widest IPv6 block with public addresses a config may allow without writing `::/0` (largest BYOIP VPC block).
pub const MAX_PUBLIC_PREFIX_V6: u8 = 44;

/// Address ranges that are not reachable from the internet; blocks inside them may be any size.
const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
];

/// One bastion's allowed target set, with the name of where it came from (used in refusals).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// Where the rules come from: `targets`, or e.g. `VPC vpc-123 CIDR blocks`.
    pub source: String,
    /// The rules.
    pub rules: Vec<TargetRule>,
    /// Allowed target ports (`target_ports`).
    pub ports: Vec<u16>,
}

impl RuleSet {
    /// The configured `targets`.
    pub fn configured(rules: Vec<TargetRule>, ports: Vec<u16>) -> RuleSet {
        RuleSet { source: "targets".into(), rules, ports }
    }

    /// The default set: the CIDR blocks of VPC `vpc_id`.
    pub fn vpc(vpc_id: &str, blocks: Vec<IpNet>, ports: Vec<u16>) -> RuleSet {
        RuleSet {
            source: format!("VPC {vpc_id} CIDR blocks"),
            rules: blocks.into_iter().map(TargetRule::Cidr).collect(),
            ports,
        }
    }

    /// `VPC vpc-123 CIDR blocks [10.0.0.0/16]`: the set's name and its rules, as refusals quote it.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self.rules.iter().map(|r| r.to_string()).collect();
        format!("{} [{}]", self.source, list.join(", "))
    }
}

/// Checks `host:port` against `set`. IP-literal hosts match CIDR rules only; host names match the `*`/`?` patterns
/// only (case-insensitive), so a name can never smuggle in an address outside the CIDR blocks. `host` has been
/// checked by [`TargetHost::parse`] (RFC 1123 syntax, numeric look-alikes refused), so a pattern sees only a
/// normalised name.
///
/// Errors: a sentence naming the rule set that did not match, e.g. `8.8.8.8 matches none of VPC vpc-1 CIDR blocks
/// [10.0.0.0/16]`.
pub fn check(set: &RuleSet, host: &TargetHost, port: u16) -> Result<(), String> {
    let matched = match host {
        TargetHost::Ip(ip) => set.rules.iter().find(|r| matches!(r, TargetRule::Cidr(n) if n.contains(ip))),
        TargetHost::Name(name) => {
            set.rules.iter().find(|r| matches!(r, TargetRule::Pattern(p) if WildMatch::new(p).matches(name)))
        }
    };
    let Some(rule) = matched else {
        if set.rules.is_empty() {
            return Err(format!("{host} matches nothing: {} is empty", set.source));
        }
        let is_name = matches!(host, TargetHost::Name(_));
        let names_need_patterns = is_name && !set.rules.iter().any(|r| matches!(r, TargetRule::Pattern(_)));
        let note =
            if names_need_patterns { " (a host name needs a pattern such as *.internal in `targets`)" } else { "" };
        return Err(format!("{host} matches none of {}{note}", set.describe()));
    };
    if !set.ports.contains(&port) {
        let list: Vec<String> = set.ports.iter().map(|p| p.to_string()).collect();
        return Err(format!(
            "{host} matches `{rule}` of {} but port {port} is not in target_ports [{}]: add {port} to target_ports",
            set.source,
            list.join(", ")
        ));
    }
    Ok(())
}

/// Whether `host:port` may be forwarded, as far as the config alone can tell: a bastion whose `targets` allow it,
/// or one without `targets` (its VPC's CIDR blocks, known only to the daemon) whose `target_ports` allow the port.
/// The proxy and `forward` ask it first, so a refused target starts no daemon and binds no listener.
///
/// Errors: why each bastion refuses, as the daemon would say it, each ending with the key to change.
pub fn check_config(cfg: &crate::config::Config, host: &TargetHost, port: u16) -> Result<(), String> {
    let mut reasons = Vec::new();
    for b in &cfg.bastions {
        match &b.targets {
            Some(_) => match check(&RuleSet::configured(b.target_rules(), b.target_ports.clone()), host, port) {
                Ok(()) => return Ok(()),
                Err(why) => reasons.push(format!("bastion {}: {why}", b.name())),
            },
            None if b.target_ports.contains(&port) => return Ok(()),
            None => reasons.push(format!(
                "bastion {}: port {port} is not in target_ports {:?}: add {port} to target_ports",
                b.name(),
                b.target_ports
            )),
        }
    }
    Err(reasons.join("; "))
}

/// Refuses a `targets` entry that would open the proxy to the internet (see the module docs for the rule). `raw`
/// is the entry as written (the literal `0.0.0.0/0` / `::/0` opt-in is checked on it), `rule` its parsed form.
///
/// Errors: what is wrong and what to write instead.
pub fn refuse_open(raw: &str, rule: &TargetRule) -> Result<(), String> {
    match rule {
        TargetRule::Cidr(net) => refuse_open_cidr(raw.trim(), net),
        TargetRule::Pattern(p) => refuse_open_pattern(p),
    }
}

fn refuse_open_cidr(raw: &str, net: &IpNet) -> Result<(), String> {
    if raw == "0.0.0.0/0" || raw == "::/0" {
        return Ok(());
    }
    let private = PRIVATE_RANGES.iter().any(|r| r.parse::<IpNet>().is_ok_and(|p| p.contains(net)));
    let max = match net {
        IpNet::V4(_) => MAX_PUBLIC_PREFIX_V4,
        IpNet::V6(_) => MAX_PUBLIC_PREFIX_V6,
    };
    if private || net.prefix_len() >= max {
        return Ok(());
    }
    let all = if matches!(net, IpNet::V4(_)) { "0.0.0.0/0" } else { "::/0" };
    Err(format!(
        "`{raw}` covers public internet addresses and is wider than /{max} (the largest VPC block): list your \
         networks' blocks instead, or write `{all}` if you really mean to forward to anywhere"
    ))
}

fn refuse_open_pattern(p: &str) -> Result<(), String> {
    let wild = |label: &str| label.contains(['*', '?']);
    let labels: Vec<&str> = p.split('.').collect();
    let Some(last_wild) = labels.iter().rposition(|l| wild(l)) else { return Ok(()) };
    let suffix = labels[last_wild + 1..].join(".");
    let example = "e.g. `*.internal` or `*.corp.example.com`";
    if suffix.is_empty() {
        return Err(format!(
            "`{p}` would match names anywhere on the internet: a pattern must end in literal labels ({example})"
        ));
    }
    if psl::suffix(suffix.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == suffix.as_bytes()) {
        return Err(format!(
            "`{p}` would match every name under the public suffix `{suffix}`: put your own domain after the \
             wildcard ({example})"
        ));
    }
    Ok(())
}
