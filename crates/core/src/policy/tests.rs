//! The name check and the rules of [`super`].

use super::*;
use crate::config::parse_target;

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
