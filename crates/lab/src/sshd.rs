//! A real OpenSSH `sshd` as a fixture: generated config, the user's public key only, stderr kept in a log file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::time::Instant;

use super::net::{self, POLL_INTERVAL};
use super::proc::Proc;

/// How long a spawned sshd may take to print its banner.
pub const SSHD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The sshd binary; an absolute path because sshd re-executes itself.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Where and how one sshd fixture runs. All files live in `dir`.
#[derive(Debug, Clone)]
pub struct SshdSpec {
    /// What it plays, used in file names and errors, e.g. `bastion`.
    pub role: String,
    /// The fixture's directory: config, host key, authorized_keys, log.
    pub dir: PathBuf,
    /// Listen address (loopback).
    pub addr: Ipv4Addr,
    /// Listen port.
    pub port: u16,
    /// The host private key file.
    pub host_key: PathBuf,
    /// The user's public key line, the only entry of authorized_keys.
    pub authorized_key: String,
    /// sshd's `LogLevel`: `DEBUG1` logs each direct-tcpip request, but also sends debug lines to clients, which
    /// the real `ssh` prints on its stderr.
    pub log_level: &'static str,
}

impl SshdSpec {
    /// The generated `sshd_config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// The log file that collects sshd's stderr over all of its runs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// `addr:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }

    /// Writes `authorized_keys` and `sshd_config` into `dir`.
    pub fn write_files(&self) -> anyhow::Result<()> {
        let authorized = self.dir.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", self.authorized_key))?;
        let config = format!(
            "# bastionctl lab: {role} sshd\n\
             ListenAddress {addr}:{port}\n\
             HostKey {host_key}\n\
             PidFile none\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             AllowTcpForwarding yes\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             MaxStartups 1000\n\
             MaxSessions 200\n\
             LogLevel {log_level}\n",
            role = self.role,
            addr = self.addr,
            port = self.port,
            host_key = self.host_key.display(),
            authorized = authorized.display(),
            log_level = self.log_level,
        );
        std::fs::write(self.config_path(), config)?;
        Ok(())
    }
}

/// Runs `sshd -D -e -f <config>` and waits for its `SSH-2.0-` banner. Fails if sshd exits first (for example
/// because the port was taken) or no banner comes within [`SSHD_READY_TIMEOUT`].
pub async fn spawn(spec: &SshdSpec) -> anyhow::Result<Proc> {
    ensure_privsep_dir()?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(spec.log_path())?;
    let child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(spec.config_path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {SSHD} (install openssh-server)"))?;
    let mut proc = Proc::new(child, format!("{} sshd", spec.role));
    let deadline = Instant::now() + SSHD_READY_TIMEOUT;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} sshd on {} exited with {status}; see {}",
                spec.role,
                spec.socket_addr(),
                spec.log_path().display()
            );
        }
        if net::read_ssh_banner(spec.socket_addr()).await.is_ok() {
            // The banner may come from another process holding the port; only a live child counts.
            if proc.exited().is_none() {
                return Ok(proc);
            }
        }
        if Instant::now() >= deadline {
            bail!("{} sshd on {} sent no banner within {SSHD_READY_TIMEOUT:?}", spec.role, spec.socket_addr());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`spawn`], on a fresh port of `spec.addr` each try: for fixtures whose port nobody has been told yet.
pub async fn spawn_on_free_port(spec: &mut SshdSpec) -> anyhow::Result<Proc> {
    let mut last = None;
    for _ in 0..5 {
        spec.port = net::free_port(spec.addr)?;
        spec.write_files()?;
        match spawn(spec).await {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// A root sshd needs its privilege-separation directory `/run/sshd`.
fn ensure_privsep_dir() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() && !Path::new("/run/sshd").exists() {
        std::fs::create_dir_all("/run/sshd").context("cannot create /run/sshd for sshd's privilege separation")?;
    }
    Ok(())
}
