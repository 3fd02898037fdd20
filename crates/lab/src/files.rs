//! The files the lab writes for the product and for the real `ssh` client: the bastionctl config, the ssh_config,
//! the known_hosts files, and empty AWS config files that keep every real profile out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every path and value that goes into the generated files.
#[derive(Debug, Clone)]
pub struct LabFiles {
    /// The lab's root directory.
    pub dir: PathBuf,
    /// The bastionctl config file.
    pub config: PathBuf,
    /// The ssh_config for the real `ssh` client.
    pub ssh_config: PathBuf,
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// The log file of a daemon auto-started by `bastionctl proxy`.
    pub daemon_log: PathBuf,
    /// The known_hosts file the daemon checks the bastion's key against.
    pub bastion_known_hosts: PathBuf,
    /// The known_hosts file of the real `ssh` client (private host and bastion).
    pub client_known_hosts: PathBuf,
    /// bastionctl's own pin file (`[daemon] pinned_host_keys`), empty at first.
    pub pinned_host_keys: PathBuf,
    /// The user's private key.
    pub identity: PathBuf,
    /// Script: the real `ssh` with the lab's ssh_config and environment (`lab-ssh private hostname`).
    pub lab_ssh: PathBuf,
    /// Script: `bastionctl --config <lab config>` with the lab's environment (`lab-bastionctl status`).
    pub lab_bastionctl: PathBuf,
    /// Empty file used as `AWS_CONFIG_FILE`.
    pub aws_config: PathBuf,
    /// Empty file used as `AWS_SHARED_CREDENTIALS_FILE`.
    pub aws_credentials: PathBuf,
}

impl LabFiles {
    /// The standard layout under `dir`; `identity` is the user's private key.
    pub fn new(dir: &Path, identity: PathBuf) -> LabFiles {
        LabFiles {
            dir: dir.to_path_buf(),
            config: dir.join("bastionctl.toml"),
            ssh_config: dir.join("ssh_config"),
            socket: dir.join("run/control.sock"),
            daemon_log: dir.join("daemon.log"),
            bastion_known_hosts: dir.join("bastion_known_hosts"),
            client_known_hosts: dir.join("client/known_hosts"),
            pinned_host_keys: dir.join("state/pinned_known_hosts"),
            identity,
            lab_ssh: dir.join("lab-ssh"),
            lab_bastionctl: dir.join("lab-bastionctl"),
            aws_config: dir.join("aws/config"),
            aws_credentials: dir.join("aws/credentials"),
        }
    }
}

/// Values for the bastionctl config.
#[derive(Debug, Clone)]
pub struct ProductConfig<'a> {
    /// moto's URL.
    pub endpoint_url: &'a str,
    /// The bastion's instance id.
    pub instance_id: &'a str,
    /// Login user on the bastion.
    pub user: &'a str,
    /// The bastion sshd's port.
    pub bastion_port: u16,
    /// The private host, the only allowed target.
    pub private_addr: std::net::Ipv4Addr,
    /// The private host's port, the only allowed target port.
    pub private_port: u16,
    /// Idle stop after this long.
    pub idle_timeout: Duration,
    /// Start deadline.
    pub start_timeout: Duration,
    /// Leave `targets` out (the daemon then allows the VPC's CIDR blocks).
    pub vpc_default_targets: bool,
    /// `lease_ttl`, when not the product's default.
    pub lease_ttl: Option<Duration>,
    /// More allowed target ports after the private host's sshd port.
    pub extra_target_ports: &'a [u16],
    /// TOML appended to the config (e.g. `[[forward]]` tables).
    pub extra_config: &'a str,
    /// More `targets` entries after the private host's `/32`.
    pub extra_targets: &'a [String],
    /// `ciphers` for the outer session, when set.
    pub ciphers: Option<&'a [String]>,
}

/// The bastionctl config (format in docs/CONTRACTS.md).
pub fn product_config(f: &LabFiles, c: &ProductConfig<'_>) -> String {
    format!(
        "# bastionctl lab config (generated)\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = {endpoint}\n\n\
         [daemon]\nsocket = {socket}\nlog_file = {log}\npinned_host_keys = {pins}\n\n\
         [[bastion]]\nname = \"lab\"\ninstance_id = {id}\nuser = {user}\nport = {bport}\n\
         identity_files = [{identity}]\nagent = false\nknown_hosts = {kh}\n\
         idle_timeout = \"{idle}ms\"\nstart_timeout = \"{start}ms\"\n\
         {targets}target_ports = [{pport}]\n{lease}{extra}{ciphers}",
        endpoint = toml_str(c.endpoint_url),
        socket = toml_path(&f.socket),
        log = toml_path(&f.daemon_log),
        pins = toml_path(&f.pinned_host_keys),
        id = toml_str(c.instance_id),
        user = toml_str(c.user),
        bport = c.bastion_port,
        identity = toml_path(&f.identity),
        kh = toml_path(&f.bastion_known_hosts),
        idle = c.idle_timeout.as_millis(),
        start = c.start_timeout.as_millis(),
        targets = match c.vpc_default_targets {
            true => String::new(),
            false => {
                let extra = c.extra_targets.iter().map(|t| format!(", {}", toml_str(t))).collect::<String>();
                format!("targets = [\"{}/32\"{extra}]\n", c.private_addr)
            }
        },
        pport = std::iter::once(c.private_port).chain(c.extra_target_ports.iter().copied()).map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
        extra = c.extra_config,
        lease = c.lease_ttl.map(|t| format!("lease_ttl = \"{}ms\"\n", t.as_millis())).unwrap_or_default(),
        ciphers = match c.ciphers {
            Some(list) => format!("ciphers = [{}]\n", list.iter().map(|n| toml_str(n)).collect::<Vec<_>>().join(", ")),
            None => String::new(),
        },
    )
}

/// One `Host` block of an ssh_config.
pub struct HostBlock<'a> {
    /// The `Host` alias.
    pub alias: &'a str,
    /// `HostName`.
    pub host: String,
    /// `Port`.
    pub port: u16,
    /// Extra lines, e.g. `ProxyCommand ...`.
    pub extra: Vec<String>,
    /// Share one connection through a ControlMaster (`ControlMaster auto`, `ControlPersist yes`, socket in the
    /// lab dir) instead of `ControlMaster no`.
    pub control_master: bool,
}

/// The ssh_config: `private` (through bastionctl's ProxyCommand) and `private-fdpass` (the same with
/// ProxyUseFdpass), plus `bastion`, `private-direct`, `private-jump` (OpenSSH's own ProxyJump) and `private-jump-cm`
/// (ProxyJump through a ControlMaster held on the bastion) for comparisons.
pub fn ssh_config(f: &LabFiles, user: &str, blocks: &[HostBlock<'_>]) -> String {
    let mut out = String::from("# bastionctl lab ssh_config (generated); use with ssh -F\n");
    for b in blocks {
        let _ = write!(
            out,
            "\nHost {alias}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile \"{id}\"\n  \
             IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile \"{kh}\"\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  CheckHostIP no\n  UpdateHostKeys no\n  BatchMode yes\n",
            alias = b.alias,
            host = b.host,
            port = b.port,
            id = f.identity.display(),
            kh = f.client_known_hosts.display(),
        );
        match b.control_master {
            true => {
                let path = f.dir.join("cm-%C");
                let _ = writeln!(out, "  ControlMaster auto\n  ControlPath \"{}\"\n  ControlPersist yes", path.display());
            }
            false => out.push_str("  ControlMaster no\n  ControlPath none\n"),
        }
        for line in &b.extra {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

pub use bastionctl_core::text::shell_quote;

/// A shell script that runs `program` with the lab's environment (every inherited `AWS_*` variable,
/// `SSH_AUTH_SOCK` and `BASTIONCTL_CONFIG` removed first) and `fixed_args` before the caller's arguments.
pub fn wrapper_script(env: &[(String, String)], program: &str, fixed_args: &[String]) -> String {
    let mut out = String::from("#!/bin/sh\n# generated by the bastionctl lab\n");
    out.push_str("for v in $(env | sed -n 's/^\\(AWS_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset \"$v\"; done\n");
    out.push_str("unset SSH_AUTH_SOCK BASTIONCTL_CONFIG\n");
    for (k, v) in env {
        let _ = writeln!(out, "export {k}={}", shell_quote(v));
    }
    let args: Vec<String> = fixed_args.iter().map(|a| shell_quote(a)).collect();
    let _ = writeln!(out, "exec {} {} \"$@\"", shell_quote(program), args.join(" "));
    out
}
