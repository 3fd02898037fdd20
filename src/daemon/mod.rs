//! The daemon: accepts control connections on the Unix socket and serves them from one [`Bastion`] actor per
//! configured bastion. Shutdown: cancel the token; the accept loop stops, open connections get a grace period.

pub mod activation;
mod conn;
pub mod forwards;
pub mod route;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::ec2::Ec2Api;
use crate::hostkeys::check::FirstTrust;
use crate::lifecycle::{Bastion, BastionSpec};
use crate::ssh::{SshDialer, SshSettings};

/// How long open channels may drain after shutdown is requested before the daemon exits anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

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
            let dialer =
                Arc::new(SshDialer::new(settings).with_ciphers(ciphers.as_deref()).with_first_trust(first_trust));
            let holder = crate::lifecycle::lease::local_holder(&config.source);
            Bastion::spawn(BastionSpec::from_config(b, holder), ec2.clone(), dialer, shutdown.child_token())
        })
        .collect();
    Fleet { bastions, ec2 }
}

/// Serves `listener` and the `[[forward]]` listeners until `shutdown` is cancelled, then waits up to
/// [`DRAIN_GRACE`] for open connections.
pub async fn serve(
    config: Config,
    fleet: Fleet,
    listener: UnixListener,
    forwards: Vec<forwards::Bound>,
    shutdown: CancellationToken,
) {
    let routes = route::Routes::new(&config.bastions, fleet.ec2);
    let shared = Arc::new(Shared { config, bastions: fleet.bastions, routes });
    let tracker = TaskTracker::new();
    for bound in forwards {
        tokio::spawn(forwards::serve(shared.clone(), bound, tracker.clone(), shutdown.clone()));
    }
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
                warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a control connection from another user (uid {})", cred.uid());
                tracker.spawn(refuse(stream, me));
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
    // Stop accepting: new clients get "connection refused" at once instead of waiting in the backlog.
    drop(listener);
    tracker.close();
    info!(open = tracker.len(), "shutting down; draining open connections for up to {}s", DRAIN_GRACE.as_secs());
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "drain grace period over; closing the remaining connections");
    }
}

/// Bound on telling a refused peer why before closing its connection.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells a peer of another uid that this daemon is not theirs, then closes the connection. Nothing the peer sent is
/// read except to discard it (closing a Unix socket with unread data would reset the connection before the peer
/// reads the reply).
async fn refuse(mut stream: tokio::net::UnixStream, me: u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reply = crate::control::Reply::Error(crate::control::ErrorReply {
        kind: "forbidden".into(),
        message: format!("this bastionctl daemon serves uid {me} only; run your own daemon with your own socket"),
        hint: None,
    });
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        crate::control::write_line(&mut stream, &reply).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}
