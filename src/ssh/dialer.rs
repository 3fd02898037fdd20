//! [`SshDialer`]: from "the bastion has an address" to an authenticated [`RusshSession`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::handler::{ClientHandler, SessionEvents};
use super::{RusshSession, SshError, auth, banner};
use crate::hostkeys::check::{FirstTrust, HostKeyCheck};
use crate::progress::Progress;
use crate::tunnel::{Dialer, Session};

/// Limit for the TCP connect plus SSH handshake (key exchange and host key check), within the dial deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// When nothing has arrived from the bastion for this long, a keepalive is sent.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The session is closed once this many keepalives in a row went unanswered. russh counts the interval that finds
/// the limit exceeded too, so a silent bastion is noticed after (`KEEPALIVE_MAX` + 1) × [`KEEPALIVE_INTERVAL`] =
/// 15 s, and [`crate::tunnel::Session::is_closed`] turns true.
pub const KEEPALIVE_MAX: usize = 2;

/// The channel window we grant the bastion (bytes it may send before our next window adjust). russh's default.
pub const WINDOW_SIZE: u32 = 2 * 1024 * 1024;

/// The largest data packet we accept from the bastion; russh's (and OpenSSH's channel) default.
pub const MAX_PACKET_SIZE: u32 = 32 * 1024;

/// How to log in to a bastion; resolved from the bastion's config section.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Login user on the bastion (`user`, e.g. `ec2-user`).
    pub user: String,
    /// Private key files offered in this order (`identity_files`), each after its OpenSSH certificate
    /// `PATH-cert.pub` if present; encrypted ones through ssh-agent or `SSH_ASKPASS` ([`crate::ssh::askpass`]).
    pub identity_files: Vec<std::path::PathBuf>,
    /// Whether to offer ssh-agent's keys (`agent`), found through `SSH_AUTH_SOCK`.
    pub agent: bool,
    /// With the agent, offer only keys matching an identity file (`identities_only`, like OpenSSH's IdentitiesOnly).
    pub identities_only: bool,
    /// The `known_hosts` file the bastion's host key must be in (`known_hosts`).
    pub known_hosts: std::path::PathBuf,
}

/// The russh implementation of [`Dialer`].
#[derive(Debug, Clone)]
pub struct SshDialer {
    settings: SshSettings,
    config: Arc<russh::client::Config>,
    /// The configured `ciphers` (`None`: the default for this CPU).
    ciphers: Option<Vec<String>>,
    first_trust: Option<FirstTrust>,
}

impl SshDialer {
    /// A dialer logging in with `settings`, offering the default ciphers for this CPU ([`super::ciphers`]).
    pub fn new(settings: SshSettings) -> Self {
        SshDialer { settings, config: Arc::new(client_config(None)), ciphers: None, first_trust: None }
    }

    /// Offers these ciphers (OpenSSH names, validated by the config) in this order instead of the default.
    pub fn with_ciphers(mut self, ciphers: Option<&[String]>) -> Self {
        self.ciphers = ciphers.map(<[String]>::to_vec);
        self.config = Arc::new(client_config(ciphers));
        self
    }

    /// Also checks host keys against bastionctl's pin file and gives unknown keys first trust (console output,
    /// then trust on first use when configured). Without this only `known_hosts` counts.
    pub fn with_first_trust(mut self, first_trust: FirstTrust) -> Self {
        self.first_trust = Some(first_trust);
        self
    }

    /// The settings this dialer logs in with.
    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// Connects and verifies the host key, after sshd has answered.
    async fn handshake(
        &self,
        addr: SocketAddr,
        instance_id: &str,
        deadline: Instant,
        events: Arc<SessionEvents>,
    ) -> Result<russh::client::Handle<ClientHandler>, SshError> {
        let start = Instant::now();
        let until = deadline.min(start + HANDSHAKE_TIMEOUT);
        let timeout = |what: String| SshError::Timeout { what, after: until.saturating_duration_since(start) };
        let tcp = timeout_at(until, TcpStream::connect(addr))
            .await
            .map_err(|_| timeout(format!("a TCP connection to {addr}")))?
            .map_err(|source| SshError::Connect { addr, source })?;
        if let Err(e) = tcp.set_nodelay(self.config.nodelay) {
            tracing::debug!("set_nodelay: {e}");
        }
        let hostkey = HostKeyCheck {
            known_hosts: self.settings.known_hosts.clone(),
            instance_id: instance_id.to_string(),
            addr,
            first_trust: self.first_trust.clone(),
        };
        // Like OpenSSH, ask for a host certificate only when a `@cert-authority` line could vouch for it.
        let config = match hostkey.wants_certificates() {
            true => Arc::new(with_certificates(client_config(self.ciphers.as_deref()))),
            false => self.config.clone(),
        };
        let handler = ClientHandler { hostkey, events };
        timeout_at(until, russh::client::connect_stream(config, tcp, handler))
            .await
            .map_err(|_| timeout(format!("the SSH handshake with {addr}")))?
    }
}

/// The russh client configuration used for every bastion, with `ciphers` (or the default preference).
fn client_config(ciphers: Option<&[String]>) -> russh::client::Config {
    let mut config = russh::client::Config {
        nodelay: true,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAX_PACKET_SIZE,
        ..Default::default()
    };
    config.preferred.cipher = super::ciphers::preference(ciphers);
    config
}

/// `config` also advertising the certificate variant of every host key algorithm it accepts.
fn with_certificates(mut config: russh::client::Config) -> russh::client::Config {
    config.preferred.host_key_certificates = config.preferred.key.clone();
    config
}

#[async_trait::async_trait]
impl Dialer for SshDialer {
    async fn dial(
        &self,
        addr: SocketAddr,
        instance_id: &str,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Arc<dyn Session>, SshError> {
        progress.say(format!("waiting for sshd at {addr}"));
        let version = banner::wait_for_banner(addr, deadline).await?;
        tracing::debug!(%addr, "sshd answered: {version}");
        let events = Arc::new(SessionEvents::default());
        let mut handle = self.handshake(addr, instance_id, deadline, events.clone()).await?;
        tracing::debug!(%addr, user = %self.settings.user, "host key verified; logging in");
        auth::authenticate(&mut handle, &self.settings, addr, deadline).await?;
        tracing::info!(%addr, %instance_id, user = %self.settings.user, "SSH session to the bastion is up");
        Ok(Arc::new(RusshSession::new(handle, events, addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_notices_a_dead_bastion() {
        let c = client_config(None);
        assert!(c.nodelay);
        assert_eq!(c.inactivity_timeout, None);
        let notice = KEEPALIVE_INTERVAL * (KEEPALIVE_MAX as u32 + 1);
        assert!(notice <= Duration::from_secs(15), "{notice:?}");
    }

    #[tokio::test]
    async fn closed_port_times_out_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let dialer = SshDialer::new(SshSettings {
            user: "nobody".into(),
            identity_files: vec![],
            agent: false,
            identities_only: false,
            known_hosts: "/nonexistent/known_hosts".into(),
        });
        let progress = Progress::default();
        let mut rx = progress.subscribe();
        let err = match dialer.dial(addr, "i-1", Instant::now() + Duration::from_millis(400), &progress).await {
            Err(e) => e,
            Ok(_) => panic!("dialed a closed port"),
        };
        assert_eq!(err.kind(), "timeout", "{err}");
        assert_eq!(rx.try_recv().ok(), Some(format!("waiting for sshd at {addr}")));
    }
}
