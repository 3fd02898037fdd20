//! The daemon: accepts control connections on the Unix socket and serves them from one [`Bastion`] actor per
//! configured bastion. Shutdown: cancel the token; the accept loop stops, open connections get a grace period.

mod conn;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::ec2::Ec2Api;
use crate::lifecycle::{Bastion, BastionSpec};
use crate::ssh::{SshDialer, SshSettings};

/// How long open channels may drain after shutdown is requested before the daemon exits anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What the connection tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub bastions: Vec<Bastion>,
}

/// Builds one actor per bastion, each with its own SSH dialer from its config.
pub fn spawn_bastions(config: &Config, ec2: Arc<dyn Ec2Api>, shutdown: &CancellationToken) -> Vec<Bastion> {
    config
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
            let dialer = Arc::new(SshDialer::new(settings));
            Bastion::spawn(BastionSpec::from(b), ec2.clone(), dialer, shutdown.child_token())
        })
        .collect()
}

/// Serves `listener` until `shutdown` is cancelled, then waits up to [`DRAIN_GRACE`] for open connections.
pub async fn serve(config: Config, bastions: Vec<Bastion>, listener: UnixListener, shutdown: CancellationToken) {
    let shared = Arc::new(Shared { config, bastions });
    let tracker = TaskTracker::new();
    let me = nix::unistd::getuid().as_raw();
    let mut next_id: u64 = 0;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        next_id += 1;
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a control connection from another user");
                continue;
            }
            Err(e) => {
                warn!("refused a control connection whose peer cannot be identified: {e}");
                continue;
            }
        }
        let shared = shared.clone();
        let token = shutdown.clone();
        tracker.spawn(conn::handle(shared, stream, token).instrument(info_span!("conn", id = next_id)));
    }
    tracker.close();
    info!(open = tracker.len(), "shutting down; draining open connections for up to {}s", DRAIN_GRACE.as_secs());
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "drain grace period over; closing the remaining connections");
    }
}
