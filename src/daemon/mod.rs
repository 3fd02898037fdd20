//! The daemon: one [`Bastion`] actor per configured bastion ([`spawn_bastions`]) and what the connection tasks share;
//! [`serve`] (in `conn.rs`) accepts control connections on the Unix socket and serves them. Shutdown: cancel the
//! token; the accept loop stops, open connections get a grace period.

pub mod activation;
mod conn;
pub mod forwards;
pub mod route;
pub mod socket;

pub use conn::{DRAIN_GRACE, serve};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ec2::Ec2Api;
use crate::hostkeys::check::FirstTrust;
use crate::lifecycle::{Bastion, BastionSpec};
use crate::ssh::{SshDialer, SshSettings};

/// What the connection tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub bastions: Vec<Bastion>,
    /// Each bastion's allowed target set (configured, or its VPC's blocks once resolved) and Name tag lookups.
    pub routes: route::Routes,
}

/// The bastions' actors (in config order) and the EC2 client they share; the daemon looks up default targets
/// (a bastion's VPC blocks) and Name tags with it.
pub struct Fleet {
    /// One actor per `[[bastion]]`.
    pub bastions: Vec<Bastion>,
    /// The EC2 client.
    pub ec2: Arc<dyn Ec2Api>,
}

/// Builds one actor per bastion, each with its own SSH dialer from its config.
pub fn spawn_bastions(config: &Config, ec2: Arc<dyn Ec2Api>, shutdown: &CancellationToken) -> Fleet {
    let bastions = config
        .bastions
        .iter()
        .map(|b| {
            let settings = SshSettings {
                user: b.user.clone(),
                identity_files: b.identity_files(),
                agent: b.agent,
                identities_only: b.identities_only,
                known_hosts: b.known_hosts(),
            };
            let first_trust = FirstTrust {
                pins: config.pinned_host_keys(),
                trust_on_first_use: b.trust_on_first_use,
                trust_command: crate::hostkeys::trust_command(&config.source, &b.name()),
                console: Some(Arc::new(ec2.clone())),
            };
            let ciphers = b.cipher_names();
            let dialer = SshDialer::new(settings)
                .with_ciphers(ciphers.as_deref())
                .with_first_trust(first_trust)
                .with_channel_open_timeout(b.channel_open_timeout);
            let dialer = Arc::new(dialer);
            let holder = crate::lifecycle::lease::local_holder(&config.source);
            Bastion::spawn(BastionSpec::from_config(b, holder), ec2.clone(), dialer, shutdown.child_token())
        })
        .collect();
    Fleet { bastions, ec2 }
}
