//! Target policy: which `host:port` a bastion may forward to, and the config-time rule that no target list turns
//! bastionctl into an open proxy to the internet.
//!
//! A bastion's allowed set ([`RuleSet`]) is its `targets` with `target_ports`, or, when `targets` is not set, the
//! CIDR blocks of the bastion's VPC (from DescribeVpcs) with `target_ports` (default `[22]`).
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

use ipnet::IpNet;
use wildmatch::WildMatch;

use crate::config::TargetRule;
use crate::target::TargetHost;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_target;

    fn check(set: &RuleSet, host: &str, port: u16) -> Result<(), String> {
        super::check(set, &TargetHost::parse(host).unwrap(), port)
    }

    fn set(list: &[&str], ports: &[u16]) -> RuleSet {
        RuleSet::configured(list.iter().map(|s| parse_target(s).unwrap()).collect(), ports.to_vec())
    }

    #[test]
    fn the_config_alone_decides_configured_targets_and_the_ports_of_vpc_bastions() {
        let path = std::path::Path::new("/cfg.toml");
        let two = concat!(
            "[[bastion]]\nname = \"a\"\ninstance_id = \"i-0123456789abcdef0\"\ntargets = [\"10.0.16.0/20\"]\n",
            "[[bastion]]\nname = \"b\"\ninstance_id = \"i-0123456789abcdef1\"\ntargets = [\"*.internal\"]\n",
        );
        let cfg = crate::config::Config::from_str(two, path).unwrap();
        let host = |h: &str| TargetHost::parse(h).unwrap();
        assert_eq!(check_config(&cfg, &host("10.0.16.5"), 22), Ok(()));
        assert_eq!(check_config(&cfg, &host("db.internal"), 22), Ok(()));
        let why = check_config(&cfg, &host("8.8.8.8"), 22).unwrap_err();
        assert!(why.starts_with("bastion a: ") && why.contains("; bastion b: "), "{why}");
        let ports = check_config(&cfg, &host("10.0.16.5"), 5432).unwrap_err();
        assert!(ports.contains("add 5432 to target_ports"), "{ports}");
        // A bastion without `targets` allows its VPC's blocks, which only the daemon can look up; the port it can tell.
        let vpc = format!("{two}[[bastion]]\nname = \"c\"\ninstance_id = \"i-0123456789abcdef2\"\n");
        let cfg = crate::config::Config::from_str(&vpc, path).unwrap();
        assert_eq!(check_config(&cfg, &host("8.8.8.8"), 22), Ok(()));
        assert!(check_config(&cfg, &host("8.8.8.8"), 80).unwrap_err().contains("bastion c: port 80"));
    }

    #[test]
    fn cidr_rules_match_ip_literals_inside_the_block_only() {
        let r = set(&["10.0.16.0/20"], &[22]);
        assert!(check(&r, "10.0.16.10", 22).is_ok());
        assert!(check(&r, "10.0.31.255", 22).is_ok());
        let err = check(&r, "10.0.32.1", 22).unwrap_err();
        assert!(err.contains("none of targets [10.0.16.0/20]"), "{err}");
        assert!(check(&r, "8.8.8.8", 22).is_err());
    }

    #[test]
    fn ports_are_checked_and_named() {
        let err = check(&set(&["10.0.16.0/20"], &[22]), "10.0.16.10", 5432).unwrap_err();
        assert!(err.contains("5432") && err.contains("target_ports"), "{err}");
        assert!(check(&set(&["10.0.16.0/20"], &[22, 5432]), "10.0.16.10", 5432).is_ok());
    }

    #[test]
    fn patterns_match_names_not_addresses() {
        let r = set(&["*.internal", "db-?"], &[22]);
        assert!(check(&r, "web.internal", 22).is_ok());
        assert!(check(&r, "WEB.Internal", 22).is_ok());
        assert!(check(&r, "db-1", 22).is_ok());
        assert!(check(&r, "db-12", 22).is_err());
        assert!(check(&r, "10.0.16.10", 22).is_err());
        assert!(check(&set(&["*"], &[22]), "1.2.3.4", 22).is_err(), "a name pattern never admits an IP literal");
    }

    #[test]
    fn empty_rules_allow_nothing() {
        assert!(check(&set(&[], &[22]), "10.0.16.10", 22).unwrap_err().contains("targets is empty"));
    }

    #[test]
    fn the_vpc_default_set_is_named_in_refusals() {
        let vpc =
            RuleSet::vpc("vpc-123", vec!["10.0.0.0/16".parse().unwrap(), "100.64.0.0/20".parse().unwrap()], vec![22]);
        assert!(check(&vpc, "10.0.200.1", 22).is_ok());
        assert!(check(&vpc, "100.64.15.1", 22).is_ok());
        let err = check(&vpc, "10.1.0.1", 22).unwrap_err();
        assert_eq!(err, "10.1.0.1 matches none of VPC vpc-123 CIDR blocks [10.0.0.0/16, 100.64.0.0/20]");
        let err = check(&vpc, "10.0.0.5", 5432).unwrap_err();
        assert!(err.contains("of VPC vpc-123 CIDR blocks") && err.contains("target_ports [22]"), "{err}");
        let err = check(&vpc, "db.internal", 22).unwrap_err();
        assert!(err.contains("needs a pattern"), "{err}");
    }

    fn open(raw: &str) -> Result<(), String> {
        refuse_open(raw, &parse_target(raw).unwrap())
    }

    #[test]
    fn nothing_is_open_to_the_internet_unless_written_as_0_0_0_0_slash_0() {
        for ok in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "100.64.0.0/10",
            "127.0.3.0/24",
            "fd00::/8",
            "203.0.113.0/24",
            "198.51.100.7",
            "52.1.0.0/16",
            "2600:1f18:abcd:ef00::/56",
        ] {
            assert!(open(ok).is_ok(), "{ok} should be accepted: {:?}", open(ok));
        }
        for bad in ["0.0.0.0/1", "128.0.0.0/1", "8.0.0.0/8", "52.0.0.0/15", "10.0.0.0/0", "2000::/3", "::/1"] {
            let err = open(bad).unwrap_err();
            assert!(err.contains("public internet") && err.contains("/0"), "{bad}: {err}");
        }
    }

    #[test]
    fn host_patterns_must_end_in_a_private_literal_domain() {
        for ok in ["*.internal", "*.corp.example.com", "ip-10-*.ec2.internal", "db.example.com", "db-1", "com"] {
            assert!(open(ok).is_ok(), "{ok} should be accepted: {:?}", open(ok));
        }
        for bad in ["*", "*.*", "db-*", "db-?", "*.com", "*e.com", "*.co.uk", "*.github.io", "web.*"] {
            assert!(open(bad).is_err(), "{bad} should be refused");
        }
        assert!(open("*.com").unwrap_err().contains("public suffix `com`"));
        assert!(open("*.*").unwrap_err().contains("end in literal labels"));
    }
}
