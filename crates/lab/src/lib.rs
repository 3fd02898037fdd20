//! The local lab: a small world built from real parts, loopback only, for the e2e tests, the demo and benchmarks.
//!
//! - moto's EC2 server on a free port of 127.0.0.1, seeded with a VPC, subnets, security groups and a stopped
//!   bastion instance whose Elastic IP is a loopback address ([`LabOptions::bastion_addr`], 127.0.2.1);
//! - an "instance agent" that runs a real OpenSSH sshd on that address only while moto says the instance is
//!   running (after [`LabOptions::boot_delay`]), and kills it when the instance stops;
//! - a real sshd as the private host on [`LabOptions::private_addr`] (127.0.3.1);
//! - keys from `ssh-keygen`, a bastionctl config and an ssh_config for the real `ssh` client.
//!
//! Everything lives in one temp dir (kept when `BASTIONCTL_LAB_KEEP=1`); every child process is killed through
//! its own handle when the [`Lab`] drops. Nothing in the host's namespace dials outside 127.0.0.0/8.

mod agent;
pub mod bench;
mod cmd;
mod ec2xml;
mod users;
pub mod faults;
mod files;
pub mod front;
mod hostkeys;
pub mod keys;
pub mod moto;
pub mod net;
mod observe;
pub mod proc;
pub mod report;
pub mod sshd;
pub mod watchdog;
pub mod world;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;

pub use cmd::DaemonGuard;
pub use files::LabFiles;
pub use users::OtherUser;
pub use front::{Ec2Front, Fault};
pub use hostkeys::ConsoleFingerprints;

use agent::Agent;
use files::{HostBlock, ProductConfig, shell_quote};
use keys::KeyPair;
use moto::Moto;
use proc::Proc;
use sshd::SshdSpec;
use world::World;

/// How the lab is built.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The `bastionctl` binary used in the ProxyCommand and by [`Lab::start_daemon`].
    pub bastionctl: PathBuf,
    /// `idle_timeout` written into the bastionctl config.
    pub idle_timeout: Duration,
    /// How long the bastion "boots": the agent starts sshd this long after moto first says `running`.
    pub boot_delay: Duration,
    /// `start_timeout` written into the bastionctl config.
    pub start_timeout: Duration,
    /// Write the bastion's host key into the daemon's known_hosts file, pinned under the instance id. When false
    /// the file exists but is empty, so the daemon must refuse the bastion.
    pub trust_bastion_key: bool,
    /// The Elastic IP, and so the bastion sshd's listen address (loopback).
    pub bastion_addr: Ipv4Addr,
    /// The private host's listen address (loopback).
    pub private_addr: Ipv4Addr,
    /// Put an [`Ec2Front`] (fault injection, held states) between the product and moto: the config's
    /// `endpoint_url` and the lab environment's `AWS_ENDPOINT_URL` then point to it. Default false.
    pub ec2_front: bool,
    /// Leave `targets` out of the bastionctl config, so the daemon falls back to the CIDR blocks of the bastion's
    /// VPC; the lab then also associates `<private_addr>/24` with the VPC (moto accepts a loopback block), so the
    /// private host is inside the VPC without anything dialling 10.x. Default false (`targets = ["<private>/32"]`).
    pub vpc_default_targets: bool,
    /// `lease_ttl` written into the bastionctl config (default: unset, the product's default).
    pub lease_ttl: Option<Duration>,
    /// Run the bastion's idle watchdog script in the instance agent (see [`watchdog`]). Default none.
    pub watchdog: Option<watchdog::WatchdogOptions>,
    /// `ClientAliveInterval` (seconds) and `ClientAliveCountMax` for the bastion sshd. Default none (sshd's: off).
    pub bastion_client_alive: Option<(u32, u32)>,
    /// Target ports allowed besides the private host's sshd port (e.g. a test's TCP service). Default none.
    pub extra_target_ports: Vec<u16>,
    /// TOML appended to the bastionctl config, e.g. `[[forward]]` tables. Default empty.
    pub extra_config: String,
    /// Entries of `targets` after the private host's `/32` (e.g. host-name patterns). Default none.
    pub extra_targets: Vec<String>,
    /// Host names the real `ssh` reaches the private host by, each with its own `Host` block (`HostName` the name
    /// itself, the ProxyCommand through bastionctl) and the private host's key under `[name]:port` in the
    /// client's known_hosts. For targets the daemon resolves by EC2 Name tag. Default none.
    pub name_hosts: Vec<String>,
    /// The outer session's cipher list: written as `ciphers` into the bastionctl config and as `Ciphers` for the
    /// jump host in the ssh_config, so that the bastionctl and `ssh -J` routes use the same outer cipher. `None`
    /// leaves both at their defaults.
    pub outer_ciphers: Option<Vec<String>>,
    /// With [`LabOptions::outer_ciphers`], only set OpenSSH's `Ciphers` and leave the bastionctl config alone
    /// (for benchmarking a bastionctl build that predates the `ciphers` key). Default false.
    pub outer_ciphers_ssh_only: bool,
}

impl LabOptions {
    /// Defaults (idle 3 s, boot delay 500 ms, start timeout 60 s, key trusted, 127.0.2.1 and 127.0.3.1) with the
    /// given `bastionctl` binary.
    pub fn new(bastionctl: impl Into<PathBuf>) -> LabOptions {
        LabOptions {
            bastionctl: bastionctl.into(),
            idle_timeout: Duration::from_secs(3),
            boot_delay: Duration::from_millis(500),
            start_timeout: Duration::from_secs(60),
            trust_bastion_key: true,
            bastion_addr: Ipv4Addr::new(127, 0, 2, 1),
            private_addr: Ipv4Addr::new(127, 0, 3, 1),
            ec2_front: false,
            vpc_default_targets: false,
            lease_ttl: None,
            watchdog: None,
            bastion_client_alive: None,
            extra_target_ports: Vec::new(),
            extra_config: String::new(),
            extra_targets: Vec::new(),
            name_hosts: Vec::new(),
            outer_ciphers: None,
            outer_ciphers_ssh_only: false,
        }
    }
}

/// A running lab. Dropping it stops the daemon it can find on its socket, both sshds, the agent and moto.
#[derive(Debug)]
pub struct Lab {
    opts: LabOptions,
    name: String,
    user: String,
    files: LabFiles,
    user_key: KeyPair,
    bastion_host_key: KeyPair,
    private_host_key: KeyPair,
    bastion: SshdSpec,
    private: SshdSpec,
    world: World,
    ec2: aws_sdk_ec2::Client,
    // Drop order: the daemon is stopped in `Drop::drop`, then the agent (bastion sshd), the private sshd, moto,
    // and last the directory.
    agent: Agent,
    private_sshd: Proc,
    front: Option<Ec2Front>,
    moto: Moto,
    _tmp: Option<tempfile::TempDir>,
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Builds the lab: temp dir, keys, moto with the seeded world (bastion stopped), the private host's sshd, the
    /// agent, and the config files. Returns once all of it is ready.
    pub async fn start(opts: LabOptions) -> anyhow::Result<Lab> {
        anyhow::ensure!(
            opts.bastion_addr.is_loopback() && opts.private_addr.is_loopback(),
            "the lab only uses 127.0.0.0/8 addresses"
        );
        let tmp = tempfile::Builder::new().prefix("bastionctl-lab-").tempdir().context("cannot create temp dir")?;
        let (tmp, dir) = if std::env::var("BASTIONCTL_LAB_KEEP").as_deref() == Ok("1") {
            let p = tmp.keep();
            eprintln!("bastionctl lab: keeping {}", p.display());
            (None, p)
        } else {
            let p = tmp.path().to_path_buf();
            (Some(tmp), p)
        };
        for sub in ["bastion", "private", "client", "aws", "run"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The daemon insists on a private directory for its control socket.
        for private in [&dir, &dir.join("run")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o700))?;
        }
        let name = format!("lab{}-{}", std::process::id(), LAB_SEQ.fetch_add(1, Ordering::Relaxed));
        let user = current_user()?;

        let (moto, user_key, bastion_host_key, private_host_key) = tokio::try_join!(
            Moto::start(&dir),
            keys::generate(dir.join("client/id_ed25519"), format!("{user}@{name}-client")),
            keys::generate(dir.join("bastion/host_ed25519"), format!("{name}-bastion-host")),
            keys::generate(dir.join("private/host_ed25519"), format!("{name}-private-host")),
        )?;
        let ec2 = moto.client();
        let world = world::seed(&ec2, &name, opts.bastion_addr).await.context("cannot seed moto")?;
        if opts.vpc_default_targets {
            world::associate_vpc_cidr(&ec2, &world.vpc_id, opts.private_addr, 24).await?;
        }

        let mut private = SshdSpec {
            role: "private".into(),
            dir: dir.join("private"),
            addr: opts.private_addr,
            port: 0,
            host_key: private_host_key.private.clone(),
            authorized_key: user_key.public.clone(),
            log_level: "VERBOSE",
        };
        let private_sshd = sshd::spawn_on_free_port(&mut private).await?;
        let bastion = SshdSpec {
            role: "bastion".into(),
            dir: dir.join("bastion"),
            addr: opts.bastion_addr,
            port: net::free_port(opts.bastion_addr)?,
            host_key: bastion_host_key.private.clone(),
            authorized_key: user_key.public.clone(),
            log_level: "DEBUG1",
        };
        bastion.write_files()?;
        if let Some((interval, count)) = opts.bastion_client_alive {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(bastion.config_path())?;
            writeln!(f, "ClientAliveInterval {interval}\nClientAliveCountMax {count}")?;
        }
        let watchdog = match &opts.watchdog {
            Some(w) => Some(watchdog::WatchdogFiles::new(&bastion.dir, w.clone())?),
            None => None,
        };

        let files = LabFiles::new(&dir, user_key.private.clone());
        let front = match opts.ec2_front {
            true => Some(Ec2Front::start(&moto.url()).await.context("cannot start the EC2 front")?),
            false => None,
        };
        let agent = Agent::spawn(ec2.clone(), world.instance_id.clone(), bastion.clone(), opts.boot_delay, watchdog);
        let lab = Lab {
            opts,
            name,
            user,
            files,
            user_key,
            bastion_host_key,
            private_host_key,
            bastion,
            private,
            world,
            ec2,
            agent,
            private_sshd,
            front,
            moto,
            _tmp: tmp,
        };
        lab.write_files()?;
        Ok(lab)
    }

    fn write_files(&self) -> anyhow::Result<()> {
        let f = &self.files;
        std::fs::write(&f.aws_config, "")?;
        std::fs::write(&f.aws_credentials, "")?;
        let pinned = match self.opts.trust_bastion_key {
            true => format!("{} {}\n", self.world.instance_id, self.bastion_host_key.public_no_comment()),
            false => String::new(),
        };
        std::fs::write(&f.bastion_known_hosts, pinned)?;
        let mut client_known_hosts = format!(
            "[{}]:{} {}\n[{}]:{} {}\n",
            self.private.addr,
            self.private.port,
            self.private_host_key.public_no_comment(),
            self.bastion.addr,
            self.bastion.port,
            self.bastion_host_key.public_no_comment(),
        );
        for name in &self.opts.name_hosts {
            let key = self.private_host_key.public_no_comment();
            client_known_hosts.push_str(&format!("[{name}]:{} {key}\n", self.private.port));
        }
        std::fs::write(&f.client_known_hosts, client_known_hosts)?;
        let product = ProductConfig {
            endpoint_url: &self.ec2_endpoint_url(),
            instance_id: &self.world.instance_id,
            user: &self.user,
            bastion_port: self.bastion.port,
            private_addr: self.private.addr,
            private_port: self.private.port,
            idle_timeout: self.opts.idle_timeout,
            start_timeout: self.opts.start_timeout,
            vpc_default_targets: self.opts.vpc_default_targets,
            lease_ttl: self.opts.lease_ttl,
            extra_target_ports: &self.opts.extra_target_ports,
            extra_config: &self.opts.extra_config,
            extra_targets: &self.opts.extra_targets,
            ciphers: self.opts.outer_ciphers.as_deref().filter(|_| !self.opts.outer_ciphers_ssh_only),
        };
        std::fs::write(&f.config, files::product_config(f, &product))?;
        let proxy = |fdpass: &str| {
            format!(
                "ProxyCommand {} --config {} proxy{fdpass} %h %p",
                shell_quote(&self.opts.bastionctl.display().to_string()),
                shell_quote(&f.config.display().to_string()),
            )
        };
        let jump_ciphers: Vec<String> =
            self.opts.outer_ciphers.iter().map(|c| format!("Ciphers {}", c.join(","))).collect();
        let private = |alias, extra| HostBlock {
            alias,
            host: self.private.addr.to_string(),
            port: self.private.port,
            extra,
            control_master: false,
        };
        let bastion = |alias, control_master| HostBlock {
            alias,
            host: self.bastion.addr.to_string(),
            port: self.bastion.port,
            extra: jump_ciphers.clone(),
            control_master,
        };
        let names = self.opts.name_hosts.iter().map(|name| HostBlock {
            alias: name,
            host: name.clone(),
            port: self.private.port,
            extra: vec![proxy("")],
            control_master: false,
        });
        let blocks: Vec<HostBlock<'_>> = [
            private("private", vec![proxy("")]),
            private("private-fdpass", vec![proxy(" --fdpass"), "ProxyUseFdpass yes".into()]),
            bastion("bastion", false),
            bastion("bastion-cm", true),
            private("private-direct", vec![]),
            private("private-jump", vec!["ProxyJump bastion".into()]),
            private("private-jump-cm", vec!["ProxyJump bastion-cm".into()]),
        ]
        .into_iter()
        .chain(names)
        .collect();
        std::fs::write(&f.ssh_config, files::ssh_config(f, &self.user, &blocks))?;
        let env = self.env();
        let ssh_args = vec!["-F".to_string(), f.ssh_config.display().to_string()];
        write_script(&f.lab_ssh, &files::wrapper_script(&env, "ssh", &ssh_args))?;
        let ctl_args = vec!["--config".to_string(), f.config.display().to_string()];
        let ctl = self.opts.bastionctl.display().to_string();
        write_script(&f.lab_bastionctl, &files::wrapper_script(&env, &ctl, &ctl_args))?;
        Ok(())
    }

    /// The options the lab was built with.
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }

    /// The lab's unique name (also the prefix of the bastion's `Name` tag).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    /// All generated paths (config, ssh_config, socket, logs, known_hosts, identity).
    pub fn files(&self) -> &LabFiles {
        &self.files
    }

    /// The login user on both sshds (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's key pair (private key in the client directory, never in a fixture).
    pub fn user_key(&self) -> &KeyPair {
        &self.user_key
    }

    /// The bastion's host key pair.
    pub fn bastion_host_key(&self) -> &KeyPair {
        &self.bastion_host_key
    }

    /// What was created in moto (ids, Elastic IP).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The bastion instance id.
    pub fn instance_id(&self) -> &str {
        &self.world.instance_id
    }

    /// Launches a running instance tagged `Name=<name>` with the private IP `ip` (loopback) in the lab's VPC, for
    /// the daemon's Name tag lookups (see [`world::run_named_instance`]). Returns its id.
    pub async fn add_named_instance(&self, name: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
        world::run_named_instance(&self.ec2, &self.world, name, ip).await
    }

    /// An EC2 client for the lab's moto (its requests are not counted as the product's).
    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// moto's URL, `http://127.0.0.1:<port>`.
    pub fn moto_url(&self) -> String {
        self.moto.url()
    }

    /// The EC2 front, when [`LabOptions::ec2_front`] is set.
    pub fn front(&self) -> Option<&Ec2Front> {
        self.front.as_ref()
    }

    /// The EC2 endpoint the product uses: the front's URL when there is one, else moto's.
    pub fn ec2_endpoint_url(&self) -> String {
        self.front.as_ref().map_or_else(|| self.moto.url(), Ec2Front::url)
    }

    /// The bastion sshd's address and port (the Elastic IP).
    pub fn bastion_addr(&self) -> std::net::SocketAddr {
        self.bastion.socket_addr()
    }

    /// The private host's address and port.
    pub fn private_addr(&self) -> std::net::SocketAddr {
        self.private.socket_addr()
    }
}

fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn current_user() -> anyhow::Result<String> {
    let uid = nix::unistd::geteuid();
    Ok(nix::unistd::User::from_uid(uid)?.with_context(|| format!("no passwd entry for uid {uid}"))?.name)
}
