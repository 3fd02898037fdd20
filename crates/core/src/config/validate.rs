//! Checks on a parsed config that the types alone cannot express; each error names file, line and key.

use super::locate::{key_span, line_of};
use super::{Config, ConfigError, parse_target, valid_instance_id};

/// The longest `lease_ttl` accepted: a lease outlives a daemon that died by up to this much.
pub const MAX_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Config {
    /// Validates `self`, parsed from `text` (for line numbers).
    pub(super) fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let invalid = |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
            path: self.source.clone(),
            line: line_of(text, span.start),
            key,
            message,
        };
        // For values that carry no span of their own: the line of the key (or of the `[[bastion]]` header).
        let invalid_at = |key: String, message: String| ConfigError::Invalid {
            path: self.source.clone(),
            line: key_span(text, &key).map_or(1, |s| line_of(text, s.start)),
            key,
            message,
        };
        if self.bastions.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.source.clone(),
                line: 1,
                key: "bastion".into(),
                message: "no [[bastion]] table: add one with instance_id or name_tag (see config/bastionctl.example.toml)"
                    .into(),
            });
        }
        if let Some(url) = &self.aws.endpoint_url
            && let Err(why) = check_endpoint_url(url)
        {
            return Err(invalid_at("aws.endpoint_url".into(), why));
        }
        let mut names = std::collections::HashMap::new();
        for (i, b) in self.bastions.iter().enumerate() {
            match (&b.instance_id, &b.name_tag) {
                (Some(a), Some(_)) => {
                    return Err(invalid(a.span(), format!("bastion[{i}].instance_id"),
                        "set either instance_id or name_tag, not both".into()));
                }
                (None, None) => {
                    return Err(invalid_at(
                        format!("bastion[{i}]"),
                        "set instance_id = \"i-...\" or name_tag = \"...\" to say which EC2 instance is the bastion"
                            .into(),
                    ));
                }
                (Some(id), None) if !valid_instance_id(id.get_ref()) => {
                    return Err(invalid(id.span(), format!("bastion[{i}].instance_id"),
                        format!("`{}` is not an EC2 instance id (expected i- followed by 8 or 17 hex digits)", id.get_ref())));
                }
                _ => {}
            }
            if let Some(first) = names.insert(b.name(), i) {
                let message = format!(
                    "bastion[{i}] has the same name `{}` as bastion[{first}]: give each a distinct `name = \"...\"`",
                    b.name()
                );
                // Point at whatever produced the name: `name`, else `instance_id` / `name_tag`.
                return Err(match (&b.name, &b.instance_id, &b.name_tag) {
                    (Some(_), _, _) => invalid_at(format!("bastion[{i}].name"), message),
                    (None, Some(id), _) => invalid(id.span(), format!("bastion[{i}].instance_id"), message),
                    (None, None, Some(tag)) => invalid(tag.span(), format!("bastion[{i}].name_tag"), message),
                    (None, None, None) => invalid_at(format!("bastion[{i}]"), message),
                });
            }
            for (key, value) in [
                ("idle_timeout", b.idle_timeout),
                ("start_timeout", b.start_timeout),
                ("channel_open_timeout", b.channel_open_timeout),
            ] {
                if value.is_zero() {
                    return Err(invalid_at(
                        format!("bastion[{i}].{key}"),
                        format!("{key} must be longer than zero, e.g. \"15m\" or \"90s\""),
                    ));
                }
            }
            if b.lease_ttl < std::time::Duration::from_secs(1) || b.lease_ttl > MAX_LEASE_TTL {
                return Err(invalid_at(
                    format!("bastion[{i}].lease_ttl"),
                    "lease_ttl must be from 1s to 24h (a dead daemon's lease keeps the bastion up that long); the \
                     default is \"5m\""
                        .into(),
                ));
            }
            if b.lease_refresh.is_some_and(|r| r.is_zero() || r >= b.lease_ttl) {
                return Err(invalid_at(
                    format!("bastion[{i}].lease_refresh"),
                    "lease_refresh must be longer than zero and shorter than lease_ttl (default: a third of it), so \
                     the lease is renewed before it expires"
                        .into(),
                ));
            }
            if let Some(name) = &b.name
                && name.trim().is_empty()
            {
                return Err(invalid_at(
                    format!("bastion[{i}].name"),
                    "name is empty: write a short name such as \"prod\", or remove the key to use the instance id"
                        .into(),
                ));
            }
            if b.port == 0 {
                return Err(invalid_at(
                    format!("bastion[{i}].port"),
                    "port 0 is not a port: write the bastion's sshd port (1-65535), or remove the key for 22".into(),
                ));
            }
            if let Some(j) = b.target_ports.iter().position(|&p| p == 0) {
                return Err(invalid_at(
                    format!("bastion[{i}].target_ports[{j}]"),
                    "port 0 is not a port: list target ports from 1 to 65535, e.g. [22]".into(),
                ));
            }
            if b.targets.as_ref().is_some_and(|t| t.is_empty()) {
                return Err(invalid_at(
                    format!("bastion[{i}].targets"),
                    "targets = [] allows nothing: remove the key to use the VPC's CIDR blocks, or list CIDR blocks/patterns"
                        .into(),
                ));
            }
            if b.ciphers.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(invalid_at(
                    format!("bastion[{i}].ciphers"),
                    "ciphers = [] offers nothing: remove the key for the default, or list OpenSSH cipher names".into(),
                ));
            }
            for (j, c) in b.ciphers.iter().flatten().enumerate() {
                if let Err(msg) = super::ciphers::check(c.get_ref()) {
                    return Err(invalid(c.span(), format!("bastion[{i}].ciphers[{j}]"), msg));
                }
            }
            for (j, t) in b.targets.iter().flatten().enumerate() {
                if let Err(msg) = parse_target(t.get_ref()).and_then(|r| crate::policy::refuse_open(t.get_ref(), &r)) {
                    return Err(invalid(t.span(), format!("bastion[{i}].targets[{j}]"), msg));
                }
            }
        }
        super::forward::validate(self).map_err(|(key, span, msg)| invalid(span, key, msg))?;
        Ok(())
    }
}

/// An EC2 endpoint must be an absolute `http` or `https` URL with a host.
fn check_endpoint_url(s: &str) -> Result<(), String> {
    let example = "write it as https://HOST[:PORT], e.g. https://ec2.eu-west-1.amazonaws.com or http://127.0.0.1:5000";
    match url::Url::parse(s) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Err(format!("`{s}` has the scheme `{}`, not http or https: {example}", u.scheme()))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err(format!("`{s}` has no host: {example}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("`{s}` is not a URL ({e}): {example}")),
    }
}
