//! The user's configuration: the TOML schema, its defaults, validation, and where the file is found.
//!
//! Search order for the file: `--config PATH`, then `$BASTIONCTL_CONFIG` (both handled by clap in the CLI), then
//! `$XDG_CONFIG_HOME/bastionctl/config.toml` (`~/.config/bastionctl/config.toml`). Every error names the file, and
//! where the TOML parser can say so, the line, column and key.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::paths;

pub mod ciphers;
pub mod forward;
mod locate;
mod validate;

pub use forward::{ForwardConfig, parse_host_port};

use locate::parse_message;
#[cfg(test)]
use locate::{key_at, key_span, line_of};

/// Default `idle_timeout`: how long the bastion may sit with no open channel before it is stopped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default `start_timeout`: the bound on "stopped" to "sshd answers", measured real EC2 start-to-SSH is about 21 s.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default `lease_ttl`: how long this daemon's lease tag on a shared bastion stays valid without a refresh.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5 * 60);
/// Default `channel_open_timeout`: how long the bastion may take to confirm a channel, i.e. to connect to the target.
pub const DEFAULT_CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `watch_interval`: how often an idle daemon re-reads the instance state (one DescribeInstances).
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default SSH port of the bastion.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// A configuration error: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file at the path given (`--config`, `$BASTIONCTL_CONFIG`).
    #[error(
        "config file {path} does not exist: create it from config/bastionctl.example.toml, or pass --config PATH (or \
         set BASTIONCTL_CONFIG) to use another file"
    )]
    Missing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions, a directory, not UTF-8).
    // The I/O error is part of the message, not a `source`: anyhow's `{:#}` would print it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error from the read.
        error: std::io::Error,
    },
    /// No path given, and no file at the default location.
    #[error(
        "no config file: pass --config PATH, set BASTIONCTL_CONFIG, or create {default} (see config/bastionctl.example.toml)"
    )]
    NotFound {
        /// The default path that was searched.
        default: PathBuf,
    },
    /// The TOML is malformed or a value has the wrong type; the message carries line, column and key.
    #[error("invalid config file {path}:\n{message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and a snippet.
        message: String,
    },
    /// The TOML is well-formed but a value is not allowed.
    // The message may quote the file's value (a string can hold a newline or an escape sequence): escaped.
    #[error("invalid config file {path}, line {line}, key `{key}`: {}", crate::escape::Escaped(message))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the offending value.
        line: usize,
        /// Dotted key path, e.g. `bastion[0].instance_id`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// A bastion name on the command line (or in a request) that the config does not have: a usage error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no bastion named `{}` in {}; known: {}", crate::escape::Escaped(name), config.display(), known.join(", "))]
pub struct UnknownBastion {
    /// The name asked for, as given.
    pub name: String,
    /// The config file that was searched.
    pub config: PathBuf,
    /// The names it has, in order.
    pub known: Vec<String>,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS account access.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Local daemon settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The bastions, each with the targets it may reach. The first whose targets allow a connection serves it.
    #[serde(rename = "bastion", default)]
    pub bastions: Vec<BastionConfig>,
    /// Named forwards the daemon keeps listening (`[[forward]]`).
    #[serde(rename = "forward", default)]
    pub forwards: Vec<ForwardConfig>,
    /// The file this was loaded from (not a TOML key).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[aws]`: how to reach the EC2 API. Credentials always come from aws-config's default chain (environment, profile
/// files, SSO, IMDS); nothing secret belongs in this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Named profile from `~/.aws/config`; unset means `$AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// Region, e.g. `eu-west-1`; unset means the profile's or `$AWS_REGION`.
    pub region: Option<String>,
    /// Override of the EC2 endpoint (for a VPC endpoint or a local emulator), e.g. `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
}

/// `[daemon]`: where the control socket and the log of an auto-started daemon live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Control socket path; default `$XDG_RUNTIME_DIR/bastionctl/control.sock`.
    pub socket: Option<PathBuf>,
    /// Log file of a daemon that `bastionctl proxy` starts in the background; default
    /// `$XDG_STATE_HOME/bastionctl/daemon.log`.
    pub log_file: Option<PathBuf>,
    /// bastionctl's own known_hosts-format file where bastion host keys are pinned by instance id (the console
    /// output check, `bastionctl trust` and trust on first use write it); default
    /// `$XDG_STATE_HOME/bastionctl/known_hosts`.
    pub pinned_host_keys: Option<PathBuf>,
}

/// One `[[bastion]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BastionConfig {
    /// Short name used by `up`/`down`/`status`; default: the instance id or the Name tag.
    pub name: Option<String>,
    /// EC2 instance id, e.g. `i-0123456789abcdef0`. Exactly one of `instance_id` and `name_tag` is required.
    pub instance_id: Option<Spanned<String>>,
    /// Value of the instance's `Name` tag, looked up with DescribeInstances.
    pub name_tag: Option<Spanned<String>>,
    /// SSH user on the bastion, e.g. `ec2-user` (Amazon Linux) or `ubuntu`.
    #[serde(default = "default_user")]
    pub user: String,
    /// SSH port of the bastion.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Private key files to offer, in order (`~` is expanded). Encrypted keys must be loaded into ssh-agent.
    #[serde(default)]
    pub identity_files: Vec<PathBuf>,
    /// Also offer the keys of the ssh-agent at `$SSH_AUTH_SOCK`.
    #[serde(default = "default_true")]
    pub agent: bool,
    /// Offer only agent keys whose public half matches one of `identity_files` (OpenSSH's IdentitiesOnly).
    #[serde(default)]
    pub identities_only: bool,
    /// The user's own known_hosts file, an extra (read-only) source of trust read with OpenSSH's semantics: the
    /// bastion's key under its instance id (like OpenSSH's HostKeyAlias) or its address (`[addr]:port` when the port
    /// is not 22), `@cert-authority` and `@revoked` lines. Default `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Pin a host key nothing vouches for on first contact. Off by default: first trust then needs the key's
    /// fingerprint in the instance's console output, or `bastionctl trust`.
    #[serde(default)]
    pub trust_on_first_use: bool,
    /// Stop the bastion after no channel has been open for this long, e.g. `"15m"`.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Give up when the bastion is not answering SSH this long after the demand, e.g. `"5m"`.
    #[serde(default = "default_start", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long the bastion's sshd may take to open a channel, i.e. to connect to the target host and port, before
    /// the connection fails with "open timed out" (like OpenSSH's `ConnectTimeout` for the hop), e.g. `"20s"`. A
    /// target that drops packets (down, or a security group that does not let the bastion in) fails after this.
    #[serde(default = "default_channel_open", with = "humantime_serde")]
    pub channel_open_timeout: Duration,
    /// While the daemon idles (no session to this bastion), re-read the instance state this often, with ±20 %
    /// jitter, to notice a bastion started elsewhere (the console, the AWS CLI, another tool). `"0s"` turns it off.
    /// One DescribeInstances per bastion per interval: mind the account's EC2 API rate limits with many users.
    #[serde(default = "default_watch", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How long this daemon's lease tag (`bastionctl:lease:<holder>`) on the instance stays valid, e.g. `"5m"`.
    /// Other daemons do not stop the bastion while it is valid; a crashed or sleeping holder's lease blocks for at
    /// most this long.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often the lease is written anew while held; default a third of `lease_ttl`.
    #[serde(default, with = "humantime_serde")]
    pub lease_refresh: Option<Duration>,
    /// Also stop a bastion this daemon did not start (found `running` at startup or by the watch) once it has had
    /// no channel for `idle_timeout`. Default true: a bastion someone started by hand and forgot costs money and
    /// leaves port 22 open; set false for a bastion that others run on purpose and that must stay up.
    #[serde(default = "default_true")]
    pub adopt: bool,
    /// Connect to this address instead of the Elastic IP / public IP that EC2 reports.
    pub address: Option<IpAddr>,
    /// Where it may forward to: CIDR blocks (`10.0.16.0/20`) and host-name patterns with `*` and `?`
    /// (`*.internal`). Unset means the CIDR blocks of the bastion's VPC, found with DescribeVpcs; an empty list is a
    /// config error. Validated against [`crate::policy::refuse_open`]: nothing is open to the internet unless
    /// written `0.0.0.0/0`. Read it through [`BastionConfig::target_rules`].
    #[serde(default)]
    pub targets: Option<Vec<Spanned<String>>>,
    /// Target ports that are allowed.
    #[serde(default = "default_ports")]
    pub target_ports: Vec<u16>,
    /// Resolve a host name that `targets` allows through the EC2 `Name` tag of the running instances in the
    /// bastion's VPC: one match is replaced by its private IP (which `targets` must allow too), none passes the name
    /// on to the bastion's resolver, several are an error. Default true; false always passes names on unchanged.
    #[serde(default = "default_true")]
    pub resolve_name_tags: bool,
    /// The outer SSH session's ciphers in order of preference, in OpenSSH's names (like ssh_config's `Ciphers`),
    /// e.g. `["chacha20-poly1305@openssh.com"]`. Unset: AES-GCM first when the CPU has AES instructions,
    /// chacha20-poly1305 first otherwise. See [`ciphers::SUPPORTED`].
    #[serde(default)]
    pub ciphers: Option<Vec<Spanned<String>>>,
}

fn default_user() -> String {
    "ec2-user".into()
}
fn default_port() -> u16 {
    DEFAULT_SSH_PORT
}
fn default_true() -> bool {
    true
}
fn default_idle() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_start() -> Duration {
    DEFAULT_START_TIMEOUT
}
fn default_channel_open() -> Duration {
    DEFAULT_CHANNEL_OPEN_TIMEOUT
}
fn default_lease_ttl() -> Duration {
    DEFAULT_LEASE_TTL
}
fn default_watch() -> Duration {
    DEFAULT_WATCH_INTERVAL
}
fn default_ports() -> Vec<u16> {
    vec![22]
}

/// How a bastion's instance is identified in EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRef {
    /// A literal instance id.
    Id(String),
    /// The value of the `Name` tag.
    NameTag(String),
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceRef::Id(id) => f.write_str(id),
            InstanceRef::NameTag(n) => write!(f, "Name={n}"),
        }
    }
}

/// One rule of a bastion's allowed target set.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetRule {
    /// An address block; matches IP-literal targets inside it.
    Cidr(IpNet),
    /// A host-name pattern with `*` and `?`; matches host-name targets (case-insensitive).
    Pattern(String),
}

impl fmt::Display for TargetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetRule::Cidr(n) => write!(f, "{n}"),
            TargetRule::Pattern(p) => f.write_str(p),
        }
    }
}

/// The largest config file read (1 MiB): a config is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// Errors: [`ConfigError::Missing`] when there is no file, [`ConfigError::Read`] when it cannot be read, [`ConfigError::Parse`] / [`ConfigError::Invalid`]
    /// naming file, line and key.
    /// A file longer than [`MAX_CONFIG_BYTES`] (say `--config /dev/zero`) is refused after reading that much.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read = || -> std::io::Result<String> {
            let mut text = String::new();
            std::fs::File::open(path)?.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
            if text.len() as u64 > MAX_CONFIG_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("longer than {} KiB, which no bastionctl config is; is this the right file?", MAX_CONFIG_BYTES / 1024),
                ));
            }
            Ok(text)
        };
        let text = read().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing { path: path.into() },
            _ => ConfigError::Read { path: path.into(), error },
        })?;
        Config::from_str(&text, path)
    }

    /// Loads `explicit` if given, else the default path (`$XDG_CONFIG_HOME/bastionctl/config.toml`).
    /// An empty `explicit` (`BASTIONCTL_CONFIG=`) counts as not given, as an empty variable does for OpenSSH and
    /// the AWS CLI.
    pub fn load_default(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
            return Config::load(p);
        }
        let default = paths::default_config_path();
        if !default.exists() {
            return Err(ConfigError::NotFound { default });
        }
        Config::load(&default)
    }

    /// Parses and validates TOML `text`; `path` is used in errors and to resolve nothing else.
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: parse_message(text, &e) })?;
        cfg.source = path.to_path_buf();
        cfg.validate(text)?;
        Ok(cfg)
    }

    /// Finds a bastion by its [`BastionConfig::name`]; `None` picks the first. Errors list the known names.
    pub fn bastion(&self, name: Option<&str>) -> Result<&BastionConfig, UnknownBastion> {
        match name {
            None => Ok(&self.bastions[0]),
            Some(n) => self.bastions.iter().find(|b| b.name() == n).ok_or_else(|| UnknownBastion {
                name: n.to_string(),
                config: self.source.clone(),
                known: self.bastions.iter().map(|b| b.name()).collect(),
            }),
        }
    }

    /// The control socket path: `[daemon] socket`, else the per-user default (see [`paths::default_socket_path`]).
    pub fn socket_path(&self) -> PathBuf {
        self.daemon.socket.as_deref().map(expand_tilde).unwrap_or_else(paths::default_socket_path)
    }

    /// bastionctl's pin file: `[daemon] pinned_host_keys`, else `$XDG_STATE_HOME/bastionctl/known_hosts`.
    pub fn pinned_host_keys(&self) -> PathBuf {
        self.daemon.pinned_host_keys.as_deref().map(expand_tilde).unwrap_or_else(crate::paths::pinned_host_keys)
    }

    /// The log file of an auto-started daemon: `[daemon] log_file`, else `$XDG_STATE_HOME/bastionctl/daemon.log`.
    pub fn log_file(&self) -> PathBuf {
        self.daemon.log_file.as_deref().map(expand_tilde).unwrap_or_else(paths::default_log_path)
    }
}

impl BastionConfig {
    /// The bastion's display name: `name`, else the instance id, else the Name tag.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.instance_ref() {
            InstanceRef::Id(id) | InstanceRef::NameTag(id) => id,
        }
    }

    /// Which instance this is (validated: exactly one of `instance_id`, `name_tag` is set).
    pub fn instance_ref(&self) -> InstanceRef {
        match (&self.instance_id, &self.name_tag) {
            (Some(id), _) => InstanceRef::Id(id.get_ref().clone()),
            (None, Some(tag)) => InstanceRef::NameTag(tag.get_ref().clone()),
            (None, None) => unreachable!("validated in Config::validate"),
        }
    }

    /// The identity files with `~` expanded.
    pub fn identity_files(&self) -> Vec<PathBuf> {
        self.identity_files.iter().map(|p| expand_tilde(p)).collect()
    }

    /// The known_hosts file with `~` expanded; default `~/.ssh/known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.known_hosts.as_deref().map(expand_tilde).unwrap_or_else(|| paths::home().join(".ssh/known_hosts"))
    }

    /// How often the lease is refreshed: `lease_refresh`, else a third of `lease_ttl`.
    pub fn lease_refresh(&self) -> Duration {
        self.lease_refresh.unwrap_or(self.lease_ttl / 3)
    }

    /// The configured `ciphers` (validated at load time), or `None` for the default preference.
    pub fn cipher_names(&self) -> Option<Vec<String>> {
        self.ciphers.as_ref().map(|list| list.iter().map(|c| c.get_ref().clone()).collect())
    }

    /// The parsed target rules (validated at load time); empty when `targets` is unset (the VPC default).
    pub fn target_rules(&self) -> Vec<TargetRule> {
        self.targets.iter().flatten().filter_map(|t| parse_target(t.get_ref()).ok()).collect()
    }
}

/// Parses one `targets` entry: a CIDR block (or a bare IP, taken as /32 or /128) or a host-name pattern.
pub fn parse_target(s: &str) -> Result<TargetRule, String> {
    if s.trim().is_empty() {
        return Err("an empty target: write a CIDR block (e.g. 10.0.16.0/20) or a host-name pattern (e.g. *.internal)"
            .into());
    }
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(TargetRule::Cidr(net.trunc()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(TargetRule::Cidr(IpNet::from(ip)));
    }
    if s.contains('/') || s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("`{s}` is not a valid CIDR block (expected e.g. 10.0.16.0/20)"));
    }
    let ok = s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?' | '_'));
    if !ok {
        return Err(format!("`{s}` is neither a CIDR block nor a host-name pattern (letters, digits, - . * ?)"));
    }
    // Targets arrive without a trailing dot and with no empty label, so such a pattern could never match.
    if let Some(bare) = s.strip_suffix('.') {
        return Err(format!(
            "`{s}` ends with a dot and would never match (host names are compared without the root dot): write `{bare}`"
        ));
    }
    if let Some(rest) = s.strip_prefix('.') {
        return Err(format!("`{s}` starts with a dot and would never match: write `*.{rest}` for the names under it"));
    }
    if s.contains("..") {
        return Err(format!("`{s}` has an empty label (`..`) and would never match: write it with single dots"));
    }
    Ok(TargetRule::Pattern(s.to_ascii_lowercase()))
}

pub(super) fn valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Replaces a leading `~/` with the home directory.
pub fn expand_tilde(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => paths::home().join(rest),
        Err(_) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests;
