//! A second user of the lab's bastion: another home, config, control socket, pin file and log, so a second daemon
//! (another holder of leases) shares the one instance with the lab's own. Same login user on the bastion, since the
//! lab's sshds run as the current user.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use super::files::{self, LabFiles, ProductConfig};
use super::{DaemonGuard, Lab};
use bastionctl_core::control::BastionStatus;

/// Another user of the lab's bastion.
#[derive(Debug, Clone)]
pub struct OtherUser {
    /// Short name, e.g. `b`.
    pub name: String,
    /// Its home directory (`HOME`), under the lab's directory.
    pub home: PathBuf,
    /// Its files: config, socket, log, pins (same layout as the lab's own).
    pub files: LabFiles,
}

impl OtherUser {
    /// Its foreground daemon's log.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home.join("daemon-foreground.log")).unwrap_or_default()
    }
}

impl Lab {
    /// Creates another user `name` of the same bastion, with its own `idle_timeout` and `lease_ttl` (unset: the
    /// product's default).
    pub fn other_user(&self, name: &str, idle: Duration, lease_ttl: Option<Duration>) -> anyhow::Result<OtherUser> {
        let home = self.dir().join("users").join(name);
        std::fs::create_dir_all(home.join("run"))?;
        for private in [&home, &home.join("run")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o700))?;
        }
        let files = LabFiles::new(&home, self.files().identity.clone());
        std::fs::copy(&self.files().bastion_known_hosts, &files.bastion_known_hosts)
            .context("cannot copy the bastion's pinned host key")?;
        let product = ProductConfig {
            endpoint_url: &self.ec2_endpoint_url(),
            instance_id: self.instance_id(),
            user: self.user(),
            bastion_port: self.bastion_addr().port(),
            private_addr: match self.private_addr().ip() {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => anyhow::bail!("the lab's private host is IPv4"),
            },
            private_port: self.private_addr().port(),
            idle_timeout: idle,
            start_timeout: self.options().start_timeout,
            vpc_default_targets: false,
            lease_ttl,
            extra_target_ports: &[],
            extra_config: "",
            extra_targets: &[],
            ciphers: None,
        };
        std::fs::write(&files.config, files::product_config(&files, &product))?;
        Ok(OtherUser { name: name.into(), home, files })
    }

    /// `bastionctl --config <its config> <args>` as `user`: its HOME, the lab's AWS environment; killed on drop.
    pub fn bastionctl_as<I, S>(&self, user: &OtherUser, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.options().bastionctl);
        cmd.arg("--config").arg(&user.files.config).args(args);
        self.apply_env(&mut cmd);
        cmd.env("HOME", &user.home).env("XDG_STATE_HOME", user.home.join("state"));
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Starts `user`'s foreground daemon and waits until its socket accepts.
    pub async fn start_daemon_as(&self, user: &OtherUser) -> anyhow::Result<DaemonGuard> {
        let log: &Path = &user.home.join("daemon-foreground.log");
        self.spawn_daemon(self.bastionctl_as(user, ["daemon"]), &user.files.socket, log).await
    }

    /// `bastionctl status --json` as `user`, parsed.
    pub async fn status_as(&self, user: &OtherUser) -> anyhow::Result<Vec<BastionStatus>> {
        let out = self.bastionctl_as(user, ["status", "--json"]).output().await?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("status --json as {} printed {:?}", user.name, String::from_utf8_lossy(&out.stdout)))
    }
}
