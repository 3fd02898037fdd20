//! Target policy: which `host:port` a bastion may forward to, from its `targets` and `target_ports`.

use std::net::IpAddr;

use wildmatch::WildMatch;

use crate::config::TargetRule;

/// Checks `host:port` against `rules` and `ports`. IP-literal hosts match CIDR rules only; host names match the
/// `*`/`?` patterns only (case-insensitive), so a name can never smuggle in an address outside the CIDR blocks.
///
/// Errors: a sentence naming the rules that did not match.
pub fn check(rules: &[TargetRule], ports: &[u16], host: &str, port: u16) -> Result<(), String> {
    let host_l = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let matched = match host_l.parse::<IpAddr>() {
        Ok(ip) => rules.iter().find(|r| matches!(r, TargetRule::Cidr(n) if n.contains(&ip))),
        Err(_) => rules.iter().find(|r| matches!(r, TargetRule::Pattern(p) if WildMatch::new(p).matches(&host_l))),
    };
    let Some(rule) = matched else {
        let list: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        return Err(if list.is_empty() {
            "this bastion has no `targets`".into()
        } else {
            format!("{host} matches none of targets [{}]", list.join(", "))
        });
    };
    if !ports.contains(&port) {
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        return Err(format!("{host} matches `{rule}` but port {port} is not in target_ports [{}]", list.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_target;

    fn rules(list: &[&str]) -> Vec<TargetRule> {
        list.iter().map(|s| parse_target(s).unwrap()).collect()
    }

    #[test]
    fn cidr_rules_match_ip_literals_inside_the_block_only() {
        let r = rules(&["10.0.16.0/20"]);
        assert!(check(&r, &[22], "10.0.16.10", 22).is_ok());
        assert!(check(&r, &[22], "10.0.31.255", 22).is_ok());
        let err = check(&r, &[22], "10.0.32.1", 22).unwrap_err();
        assert!(err.contains("10.0.16.0/20"), "{err}");
        assert!(check(&r, &[22], "8.8.8.8", 22).is_err());
    }

    #[test]
    fn ports_are_checked_and_named() {
        let r = rules(&["10.0.16.0/20"]);
        let err = check(&r, &[22], "10.0.16.10", 5432).unwrap_err();
        assert!(err.contains("5432") && err.contains("target_ports"), "{err}");
        assert!(check(&r, &[22, 5432], "10.0.16.10", 5432).is_ok());
    }

    #[test]
    fn patterns_match_names_not_addresses() {
        let r = rules(&["*.internal", "db-?"]);
        assert!(check(&r, &[22], "web.internal", 22).is_ok());
        assert!(check(&r, &[22], "WEB.Internal", 22).is_ok());
        assert!(check(&r, &[22], "db-1", 22).is_ok());
        assert!(check(&r, &[22], "db-12", 22).is_err());
        assert!(check(&r, &[22], "10.0.16.10", 22).is_err());
        let star = rules(&["*"]);
        assert!(check(&star, &[22], "1.2.3.4", 22).is_err(), "a name pattern never admits an IP literal");
    }

    #[test]
    fn empty_rules_allow_nothing() {
        assert!(check(&[], &[22], "10.0.16.10", 22).unwrap_err().contains("no `targets`"));
    }
}
