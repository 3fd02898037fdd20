//! Checks on a parsed config that the types alone cannot express; each error names file, line and key.

use std::path::Path;

use ipnet::IpNet;

use super::locate::{key_span, line_of};
use super::{AwsConfig, BastionConfig, Config, ConfigError, parse_target, valid_instance_id};

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
        check_aws(&self.aws).map_err(|(key, why)| invalid_at(key.into(), why))?;
        if let Some(socket) = &self.daemon.socket {
            check_socket(socket).map_err(|why| invalid_at("daemon.socket".into(), why))?;
        }
        let files = [
            ("log_file", &self.daemon.log_file, "\"~/.local/state/bastionctl/daemon.log\""),
            ("pinned_host_keys", &self.daemon.pinned_host_keys, "\"~/.local/state/bastionctl/known_hosts\""),
        ];
        for (key, path, example) in files {
            if let Some(path) = path {
                check_path(key, path, example).map_err(|why| invalid_at(format!("daemon.{key}"), why))?;
            }
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
            check_text(b).map_err(|(key, why)| invalid_at(format!("bastion[{i}].{key}"), why))?;
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
            if b.target_ports.is_empty() {
                return Err(invalid_at(
                    format!("bastion[{i}].target_ports"),
                    "target_ports = [] allows no port, so nothing could be forwarded: list the ports, e.g. [22, 5432], \
                     or remove the key for [22]"
                        .into(),
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
                let checked = parse_target(t.get_ref())
                    .and_then(|r| crate::policy::refuse_open(t.get_ref(), &r))
                    .and_then(|()| check_network(t.get_ref()));
                if let Err(msg) = checked {
                    return Err(invalid(t.span(), format!("bastion[{i}].targets[{j}]"), msg));
                }
            }
        }
        super::forward::validate(self).map_err(|(key, span, msg)| invalid(span, key, msg))?;
        Ok(())
    }
}

/// `[aws]`: `(key, message)` for a profile, region or endpoint the SDK would take as it is and fail on later.
fn check_aws(aws: &AwsConfig) -> Result<(), (&'static str, String)> {
    if let Some(profile) = &aws.profile {
        if profile.trim().is_empty() {
            let why = "profile is empty: write a profile name from ~/.aws/config, or remove the key to use \
                       $AWS_PROFILE or the default profile";
            return Err(("aws.profile", why.into()));
        }
        printable(profile, "write the profile's name as ~/.aws/config has it").map_err(|why| ("aws.profile", why))?;
    }
    if let Some(region) = &aws.region {
        if region.trim().is_empty() {
            let why = "region is empty: write the bastion's region, e.g. \"eu-west-1\", or remove the key to use \
                       $AWS_REGION or the profile's region";
            return Err(("aws.region", why.into()));
        }
        if !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            let why =
                format!("`{region}` is not an AWS region (lowercase letters, digits and -): write e.g. \"eu-west-1\"");
            return Err(("aws.region", why));
        }
    }
    if let Some(url) = &aws.endpoint_url {
        check_endpoint_url(url).map_err(|why| ("aws.endpoint_url", why))?;
    }
    Ok(())
}

/// The longest control socket path, in bytes: `sun_path` holds 108 bytes on Linux, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

/// The control socket must be absolute (or `~/...`), see [`check_path`], and fit in `sun_path`
/// ([`MAX_SOCKET_PATH`]), or the daemon could not bind it.
fn check_socket(path: &Path) -> Result<(), String> {
    check_path("socket", path, "\"/run/user/1000/bastionctl/control.sock\" or \"~/.cache/bastionctl/control.sock\"")?;
    let len = super::expand_tilde(path).as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "`{}` is {len} bytes long{}; a Unix socket path has at most {MAX_SOCKET_PATH} bytes (sun_path holds 108 \
             with the terminating NUL): write a shorter path, or remove the key for the default",
            path.display(),
            if path.starts_with("~") { " with ~ expanded" } else { "" },
        ));
    }
    Ok(())
}

/// A file the config names (`key`) must be absolute, or `~/...`: a relative path would name a different file in
/// each working directory (the daemon's, systemd's, each shell's), so `bastionctl proxy` run elsewhere would not find
/// the daemon's socket or the pins. `example` is an absolute path to suggest.
fn check_path(key: &str, path: &Path, example: &str) -> Result<(), String> {
    let instead = format!("write an absolute path such as {example}, or remove the key for the default");
    if path.as_os_str().is_empty() {
        return Err(format!("{key} is empty: {instead}"));
    }
    let under_home = path.strip_prefix("~").is_ok_and(|rest| !rest.as_os_str().is_empty());
    if !path.is_absolute() && !under_home {
        return Err(format!(
            "`{}` is a relative path, which each process would resolve from its own working directory: {instead}",
            path.display()
        ));
    }
    Ok(())
}

/// A bastion's strings that are printed (`name`, the Name tag it may default to) or sent as they are (`user`,
/// `identity_files`): `(key under bastion[i], message)` for one that is empty or carries a control character.
fn check_text(b: &BastionConfig) -> Result<(), (String, String)> {
    if let Some(name) = &b.name {
        printable(name, "write a short name such as \"prod\"").map_err(|why| ("name".into(), why))?;
    }
    if let Some(tag) = &b.name_tag {
        if tag.get_ref().trim().is_empty() {
            let why = "name_tag is empty: write the value of the instance's Name tag, or use instance_id = \"i-...\"";
            return Err(("name_tag".into(), why.into()));
        }
        printable(tag.get_ref(), "write the Name tag's value as EC2 shows it").map_err(|why| ("name_tag".into(), why))?;
    }
    if b.user.trim().is_empty() {
        let why = "user is empty: write the bastion's login user, e.g. \"ec2-user\" (Amazon Linux) or \"ubuntu\", or \
                   remove the key for ec2-user";
        return Err(("user".into(), why.into()));
    }
    printable(&b.user, "write the login user, e.g. \"ec2-user\"").map_err(|why| ("user".into(), why))?;
    if let Some(j) = b.identity_files.iter().position(|p| p.as_os_str().is_empty()) {
        let why = "an empty path: write the private key's file, e.g. \"~/.ssh/id_ed25519\", or remove the entry";
        return Err((format!("identity_files[{j}]"), why.into()));
    }
    if let Some(path) = &b.known_hosts {
        check_path("known_hosts", path, "\"~/.ssh/known_hosts\"").map_err(|why| ("known_hosts".into(), why))?;
    }
    Ok(())
}

/// `Err` when `s` has a control or invisible character (see [`crate::escape::is_unsafe`]), which would reach a
/// terminal, a log line or a request as it is; `instead` says what to write.
pub(super) fn printable(s: &str, instead: &str) -> Result<(), String> {
    match s.chars().any(crate::escape::is_unsafe) {
        true => Err(format!("`{s}` contains a control or invisible character: {instead}")),
        false => Ok(()),
    }
}

/// A CIDR block must be written as its network: `10.0.16.5/20` is a typo for either `10.0.16.0/20` or `10.0.16.5`,
/// and taking it silently as the block could allow far more than was meant.
fn check_network(raw: &str) -> Result<(), String> {
    let Ok(net) = raw.parse::<IpNet>() else { return Ok(()) };
    if net.addr() == net.network() {
        return Ok(());
    }
    let (block, host) = (net.trunc(), net.addr());
    Err(format!(
        "`{raw}` has host bits set: the /{len} block it lies in is `{block}`; write `{block}` for the block, or \
         `{host}` for the one host",
        len = net.prefix_len()
    ))
}

/// An EC2 endpoint must be an absolute `http` or `https` URL with a host.
fn check_endpoint_url(s: &str) -> Result<(), String> {
    let example = "write it as https://HOST[:PORT], e.g. https://ec2.eu-west-1.amazonaws.com or http://127.0.0.1:5000";
    // The URL parser drops tabs and newlines and percent-encodes other control characters: refuse them first.
    printable(s, example)?;
    match url::Url::parse(s) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Err(format!("`{s}` has the scheme `{}`, not http or https: {example}", u.scheme()))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err(format!("`{s}` has no host: {example}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("`{s}` is not a URL ({e}): {example}")),
    }
}
