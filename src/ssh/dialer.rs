//! [`SshDialer`]: from "the bastion has an address" to an authenticated [`RusshSession`], in the order of
//! [`Dialer::dial`]: wait until sshd answers with an `SSH-2.0-` version line ([`wait_for_banner`]), run the SSH
//! handshake on that same connection (the host key check is [`crate::hostkeys::check`]), then log in
//! ([`super::auth`]).
//!
//! A freshly started instance refuses or drops connections for a while, and something other than sshd may answer
//! first; only a real `SSH-2.0-` line counts as ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::session::{ClientHandler, SessionEvents};
use super::{RusshSession, SshError, auth};
use crate::hostkeys::check::{FirstTrust, HostKeyCheck};
use crate::progress::Progress;
use crate::tunnel::{Dialer, Session};

/// Pause between two probes of a bastion that is not answering yet.
pub const BANNER_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Limit for one probe (TCP connect plus reading the version line), so a black-holed SYN does not eat the deadline.
pub const BANNER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest version line accepted (RFC 4253 allows 255 bytes including CR LF).
const MAX_BANNER_LINE: usize = 255;

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
    /// Limit for each channel open of the sessions it dials (`channel_open_timeout`).
    channel_open_timeout: Duration,
}

impl SshDialer {
    /// A dialer logging in with `settings`, offering the default ciphers for this CPU ([`super::ciphers`]).
    pub fn new(settings: SshSettings) -> Self {
        SshDialer {
            settings,
            config: Arc::new(client_config(None)),
            ciphers: None,
            first_trust: None,
            channel_open_timeout: super::session::CHANNEL_OPEN_TIMEOUT,
        }
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

    /// Bounds each channel open (the bastion connecting to the target) by `limit` instead of
    /// [`super::session::CHANNEL_OPEN_TIMEOUT`].
    pub fn with_channel_open_timeout(mut self, limit: Duration) -> Self {
        self.channel_open_timeout = limit;
        self
    }

    /// The settings this dialer logs in with.
    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// Runs the SSH handshake on the connection that brought sshd's banner and verifies the host key.
    async fn handshake(
        &self,
        banner: Banner,
        instance_id: &str,
        deadline: Instant,
        events: Arc<SessionEvents>,
    ) -> Result<russh::client::Handle<ClientHandler>, SshError> {
        let addr = banner.addr;
        let start = Instant::now();
        let until = deadline.min(start + HANDSHAKE_TIMEOUT);
        let timeout = |what: String| SshError::Timeout { what, after: until.saturating_duration_since(start) };
        if let Err(e) = banner.stream.set_nodelay(self.config.nodelay) {
            tracing::debug!("set_nodelay: {e}");
        }
        // russh reads sshd's version line itself: what the probe read is replayed before the rest of the stream.
        let (rd, wr) = banner.stream.into_split();
        let tcp = tokio::io::join(std::io::Cursor::new(banner.read).chain(rd), wr);
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

/// sshd's answer: its version line, on a connection kept open for the handshake (a second connection would cost
/// sshd another fork and the bastion another round trip).
#[derive(Debug)]
pub struct Banner {
    /// The version line without its line ending, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
    pub line: String,
    /// Where sshd answered.
    pub addr: SocketAddr,
    stream: TcpStream,
    /// Everything read from `stream` so far (the version line and whatever came with it).
    read: Vec<u8>,
}

/// Waits until sshd at `addr` sends its version line, giving up at `deadline` with [`SshError::Timeout`].
/// Lines starting with `SSH-1.99-` (a server that also speaks 2.0) count as ready too.
pub async fn wait_for_banner(addr: SocketAddr, deadline: Instant) -> Result<Banner, SshError> {
    let start = Instant::now();
    loop {
        let probe_deadline = deadline.min(Instant::now() + BANNER_PROBE_TIMEOUT);
        let last = match timeout_at(probe_deadline, probe(addr)).await {
            Ok(Ok(banner)) if is_ssh2(&banner.line) => return Ok(banner),
            Ok(Ok(banner)) => {
                format!("not an SSH-2.0 server: {:?}", banner.line.chars().take(60).collect::<String>())
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        tracing::debug!(%addr, "sshd not ready: {last}");
        let next = Instant::now() + BANNER_RETRY_INTERVAL;
        if next >= deadline {
            return Err(SshError::Timeout {
                what: format!("sshd at {addr} to answer (last: {last})"),
                after: deadline.saturating_duration_since(start),
            });
        }
        tokio::time::sleep_until(next).await;
    }
}

fn is_ssh2(line: &str) -> bool {
    line.starts_with("SSH-2.0-") || line.starts_with("SSH-1.99-")
}

/// Connects once and reads the first line (up to `\n`, EOF or [`MAX_BANNER_LINE`] bytes).
async fn probe(addr: SocketAddr) -> std::io::Result<Banner> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 64];
    loop {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            if buf.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without a banner"));
            }
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.contains(&b'\n') || buf.len() >= MAX_BANNER_LINE {
            break;
        }
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()).min(MAX_BANNER_LINE);
    let line = String::from_utf8_lossy(&buf[..end]).trim_end_matches('\r').to_string();
    Ok(Banner { line, addr, stream, read: buf })
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
        let banner = wait_for_banner(addr, deadline).await?;
        tracing::debug!(%addr, "sshd answered: {}", banner.line);
        let events = Arc::new(SessionEvents::default());
        let mut handle = self.handshake(banner, instance_id, deadline, events.clone()).await?;
        tracing::debug!(%addr, user = %self.settings.user, "host key verified; logging in");
        auth::authenticate(&mut handle, &self.settings, addr, deadline).await?;
        tracing::info!(%addr, %instance_id, user = %self.settings.user, "SSH session to the bastion is up");
        Ok(Arc::new(RusshSession::new(handle, events, addr, self.channel_open_timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

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
        assert_eq!(rx.try_recv().ok().map(|m| m.text), Some(format!("waiting for sshd at {addr}")));
    }

    // ---- waiting for the banner ----

    async fn serve(banner: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(banner).await;
                // Keep the connection open a little like sshd waiting for the client's version.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(s);
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn ready_when_sshd_answers() {
        let addr = serve(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n").await;
        let banner = wait_for_banner(addr, Instant::now() + Duration::from_secs(5)).await.expect("ready");
        assert_eq!(banner.line, "SSH-2.0-OpenSSH_9.2p1 Debian");
        assert_eq!(banner.read, b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", "kept for the handshake to read again");
    }

    #[tokio::test]
    async fn waits_for_a_late_listener() {
        // Reserve a port, free it, and start listening on it only after a while.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let listener = TcpListener::bind(addr).await.expect("rebind");
            let (mut s, _) = listener.accept().await.expect("accept");
            let _ = s.write_all(b"SSH-2.0-late\n").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let start = std::time::Instant::now();
        let banner = wait_for_banner(addr, Instant::now() + Duration::from_secs(10)).await.expect("ready");
        assert_eq!(banner.line, "SSH-2.0-late");
        assert!(start.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn non_ssh_banner_keeps_waiting_then_times_out() {
        let addr = serve(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let start = std::time::Instant::now();
        let err = wait_for_banner(addr, Instant::now() + Duration::from_millis(900)).await.expect_err("timeout");
        assert!(start.elapsed() >= Duration::from_millis(600), "gave up early: {:?}", start.elapsed());
        match &err {
            SshError::Timeout { what, .. } => {
                assert!(what.contains(&addr.to_string()) && what.contains("not an SSH-2.0 server"), "{what}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.kind(), "timeout");
    }

    #[tokio::test]
    async fn silent_server_times_out_at_the_deadline() {
        // Accepts (via the backlog) but never writes.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let start = std::time::Instant::now();
        let err = wait_for_banner(addr, Instant::now() + Duration::from_millis(500)).await.expect_err("timeout");
        assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "overran the deadline: {:?}", start.elapsed());
        drop(listener);
    }
}
