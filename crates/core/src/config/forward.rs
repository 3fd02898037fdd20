//! `[[forward]]`: named local listeners the daemon keeps open, each forwarding its connections to one `HOST:PORT`
//! through the bastion that allows it (the bastion starts on the first connection, not when the daemon starts).
//! Also the `HOST:PORT` syntax shared with `bastionctl forward`.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::Config;
use crate::policy;
use crate::policy::TargetHost;

/// One `[[forward]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// A short name for the log, e.g. `"orders-db"`. Must be unique.
    pub name: String,
    /// Local address and port to listen on, e.g. `"127.0.0.1:5432"`. Loopback unless you mean to share it.
    pub listen: Spanned<String>,
    /// Where each connection goes: `HOST:PORT` as the bastion sees it (`[IPv6]:PORT` for IPv6), e.g.
    /// `"orders.abc123.eu-west-1.rds.amazonaws.com:5432"`. Must be allowed by a bastion's `targets` and
    /// `target_ports`.
    pub target: Spanned<String>,
}

impl ForwardConfig {
    /// The listen address (validated at load time).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.get_ref().parse().expect("validated in Config::validate")
    }

    /// The target host and port (validated at load time).
    pub fn target(&self) -> (String, u16) {
        parse_host_port(self.target.get_ref()).expect("validated in Config::validate")
    }
}

/// Parses `HOST:PORT` (`[IPv6]:PORT` for IPv6). The host comes back without brackets.
///
/// Errors: what is wrong, with the expected form.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let form = "expected HOST:PORT, e.g. db.internal:5432 or [fd00::5]:5432";
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").ok_or_else(|| format!("`{s}`: {form}"))?,
        None => s.rsplit_once(':').filter(|(h, _)| !h.contains(':')).ok_or_else(|| format!("`{s}`: {form}"))?,
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host: {form}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => Err(format!("`{s}`: `{port}` is not a port (1-65535): {form}")),
    }
}

/// Checks the `[[forward]]` tables: `(key, span of the value, message)` for the first bad one.
pub(super) fn validate(cfg: &Config) -> Result<(), (String, std::ops::Range<usize>, String)> {
    let mut names = std::collections::HashMap::new();
    for (i, f) in cfg.forwards.iter().enumerate() {
        if f.name.trim().is_empty() {
            return Err((format!("forward[{i}].name"), f.listen.span(), "name is empty: write a short name such as \"db\"".into()));
        }
        super::validate::printable(&f.name, "write a short name such as \"db\"")
            .map_err(|msg| (format!("forward[{i}].name"), f.listen.span(), msg))?;
        if let Some(first) = names.insert(f.name.as_str(), i) {
            let msg = format!("forward[{i}] has the same name `{}` as forward[{first}]: give each its own", f.name);
            return Err((format!("forward[{i}].name"), f.listen.span(), msg));
        }
        if f.listen.get_ref().parse::<SocketAddr>().is_err() {
            let msg = format!("`{}` is not ADDRESS:PORT, e.g. \"127.0.0.1:5432\"", f.listen.get_ref());
            return Err((format!("forward[{i}].listen"), f.listen.span(), msg));
        }
        let (host, port) = parse_host_port(f.target.get_ref()).map_err(|m| (format!("forward[{i}].target"), f.target.span(), m))?;
        let target = TargetHost::parse(&host).map_err(|e| (format!("forward[{i}].target"), f.target.span(), e.to_string()))?;
        policy::check_config(cfg, &target, port).map_err(|m| {
            let msg = format!("{} is not allowed: {m}", crate::text::host_port(&host, port));
            (format!("forward[{i}].target"), f.target.span(), msg)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("db.internal:5432"), Ok(("db.internal".into(), 5432)));
        assert_eq!(parse_host_port("10.0.16.5:22"), Ok(("10.0.16.5".into(), 22)));
        assert_eq!(parse_host_port("[fd00::5]:5432"), Ok(("fd00::5".into(), 5432)));
        for bad in ["db.internal", "db:0", "db:99999", ":5432", "fd00::5:5432", "[fd00::5]5432", "db:x"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    fn cfg(extra: &str) -> Result<Config, String> {
        let text = format!(
            "[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\ntargets = [\"10.0.16.0/20\"]\ntarget_ports = [22]\n{extra}"
        );
        Config::from_str(&text, std::path::Path::new("/cfg.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_forward_to_a_port_not_in_target_ports_names_the_key_to_add() {
        let err = cfg("[[forward]]\nname = \"db\"\nlisten = \"127.0.0.1:5432\"\ntarget = \"10.0.16.9:5432\"\n").unwrap_err();
        assert!(err.contains("line 8,") && err.contains("forward[0].target"), "{err}");
        assert!(err.contains("add 5432 to target_ports"), "{err}");
        let ok = cfg("[[forward]]\nname = \"ssh\"\nlisten = \"127.0.0.1:2222\"\ntarget = \"10.0.16.9:22\"\n").unwrap();
        assert_eq!(ok.forwards[0].target(), ("10.0.16.9".into(), 22));
        assert_eq!(ok.forwards[0].listen_addr(), "127.0.0.1:2222".parse().unwrap());
        let err = cfg("[[forward]]\nname = \"x\"\nlisten = \"5432\"\ntarget = \"10.0.16.9:22\"\n").unwrap_err();
        assert!(err.contains("forward[0].listen"), "{err}");
    }
}
