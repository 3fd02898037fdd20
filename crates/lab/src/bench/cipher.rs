//! The cipher micro benchmark: an in-process russh client and server over loopback TCP, one session per cipher,
//! pushing bytes through one channel. It measures what the outer session costs per byte with each cipher russh
//! offers (seal + open + russh's packet handling, both ends in this process), to choose the default preference
//! (`bastionctl::ssh::ciphers`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use russh::keys::PublicKeyOrCertificate;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, client};

use crate::Lab;

/// Figures for one cipher.
#[derive(Debug, Clone)]
pub struct CipherResult {
    /// OpenSSH name.
    pub name: String,
    /// Bytes per second through one channel.
    pub bytes_per_sec: f64,
    /// CPU seconds (this process, both ends) per GiB.
    pub cpu_per_gib: f64,
}

/// Measures every cipher of [`bastionctl_core::config::ciphers::SUPPORTED`] with `bytes` each (the best of `reps` runs).
pub async fn run_all(lab: &Lab, bytes: u64, reps: usize) -> anyhow::Result<Vec<CipherResult>> {
    let mut out = Vec::new();
    for name in bastionctl_core::config::ciphers::SUPPORTED {
        let mut best: Option<CipherResult> = None;
        for _ in 0..reps.max(1) {
            let r = run_one(lab, name, bytes).await.with_context(|| format!("cipher {name}"))?;
            if best.as_ref().is_none_or(|b| r.bytes_per_sec > b.bytes_per_sec) {
                best = Some(r);
            }
        }
        out.extend(best);
    }
    Ok(out)
}

/// CPU time of this whole process so far (user + system).
fn process_cpu() -> Duration {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    us(r.user_time()) + us(r.system_time())
}

async fn run_one(lab: &Lab, name: &str, bytes: u64) -> anyhow::Result<CipherResult> {
    let cipher = russh::cipher::Name::try_from(name).map_err(|()| anyhow::anyhow!("russh has no cipher {name}"))?;
    let host_key = russh::keys::load_secret_key(&lab.bastion_host_key().private, None)?;
    let user_key = russh::keys::load_secret_key(&lab.user_key().private, None)?;
    let mut sc = server::Config { inactivity_timeout: None, ..Default::default() };
    sc.keys.push(host_key);
    sc.preferred.cipher = std::borrow::Cow::Owned(vec![cipher]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let running = server::run_stream(Arc::new(sc), tcp, Sink).await?;
        running.await?;
        anyhow::Ok(())
    });
    let mut cc = client::Config { nodelay: true, ..Default::default() };
    cc.preferred.cipher = std::borrow::Cow::Owned(vec![cipher]);
    let mut session = client::connect(Arc::new(cc), addr, TrustAll).await?;
    let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(user_key), None);
    if !session.authenticate_publickey("bench", key).await?.success() {
        bail!("the in-process server refused the key");
    }
    let mut channel = session.channel_open_session().await?;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    channel.data(tokio::io::AsyncReadExt::take(tokio::io::repeat(0x5a), bytes)).await?;
    channel.eof().await?;
    // The server closes the channel once it has read everything up to our EOF.
    while let Some(msg) = channel.wait().await {
        if matches!(msg, ChannelMsg::Close) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu0).as_secs_f64();
    let _ = session.disconnect(russh::Disconnect::ByApplication, "done", "en").await;
    server.abort();
    let gib = bytes as f64 / f64::from(1u32 << 30);
    Ok(CipherResult { name: name.to_string(), bytes_per_sec: bytes as f64 / secs, cpu_per_gib: cpu / gib })
}

/// The server end: accepts any key and one session channel, discards data, closes the channel on EOF.
struct Sink;

impl server::Handler for Sink {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, _: &str, _: server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn data(&mut self, _: ChannelId, _: &[u8], _: &mut Session) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.close(channel)
    }
}

/// The client end of an in-process benchmark: the server is our own, in this process.
struct TrustAll;

impl client::Handler for TrustAll {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
