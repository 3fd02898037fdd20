//! Public key login to the bastion, the way OpenSSH's client does it without a terminal.
//!
//! Order: each identity file in config order (with its OpenSSH user certificate `PATH-cert.pub` first, when there
//! is one), then, unless `identities_only`, the other ssh-agent keys. An encrypted identity file is used through the
//! agent when the agent holds its key, else through `SSH_ASKPASS` ([`super::askpass`]), else it is reported with
//! the advice to `ssh-add` it. Keys are only ever named by path or public fingerprint; passphrases are never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::time::Instant;

use super::identity::{self, AgentPlainKeySigner, LocalSigner};
use super::session::ClientHandler;
use super::{SshError, SshSettings, askpass};
use crate::hostkeys::fingerprint;

/// Limit for each authentication round trip (one offered key, one agent request), within the dial deadline.
pub const AUTH_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times the `SSH_ASKPASS` program is asked for one key's passphrase (OpenSSH's NumberOfPasswordPrompts).
pub const PASSPHRASE_TRIES: usize = 3;

/// A connected ssh-agent and the keys it listed.
struct Agent {
    client: AgentClient<tokio::net::UnixStream>,
    keys: Vec<PublicKey>,
}

impl Agent {
    fn holds(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.key_data() == key.key_data())
    }
}

/// What was learned while going through the identities.
#[derive(Default)]
struct Attempts {
    /// Descriptions of everything offered or skipped, for [`SshError::AuthFailed`].
    tried: Vec<String>,
    /// Public keys already offered (not offered again from the agent).
    offered: Vec<PublicKey>,
    /// The first encrypted identity file that neither the agent nor `SSH_ASKPASS` could unlock.
    encrypted: Option<PathBuf>,
    /// The first encrypted identity file for which `SSH_ASKPASS` gave no working passphrase, and why.
    passphrase: Option<(PathBuf, String)>,
    /// The first identity file that could not be loaded at all.
    load_error: Option<(PathBuf, String)>,
}

/// Logs in as `settings.user`. Every round trip is under [`AUTH_STEP_TIMEOUT`] and `deadline`.
/// Errors, most actionable first: [`SshError::KeyPassphrase`] (`SSH_ASKPASS` gave no working passphrase),
/// [`SshError::KeyEncrypted`] (an encrypted file nothing could unlock), [`SshError::AuthFailed`] (keys were offered
/// and refused), [`SshError::KeyLoad`], [`SshError::NoIdentities`].
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(), SshError> {
    let mut a = Attempts::default();
    match offer_all(handle, settings, deadline, &mut a).await {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        // sshd hangs up after MaxAuthTries refused keys: that is a refusal, not a network problem.
        Err(SshError::Disconnected(why)) if !a.offered.is_empty() => {
            a.tried.push(format!("(then the bastion hung up: {why}; too many keys for its MaxAuthTries?)"));
            return Err(SshError::AuthFailed { user: settings.user.clone(), addr, tried: a.tried });
        }
        Err(e) => return Err(e),
    }
    if let Some((path, reason)) = a.passphrase {
        return Err(SshError::KeyPassphrase { path, reason });
    }
    if let Some(path) = a.encrypted {
        return Err(SshError::KeyEncrypted { path });
    }
    if !a.offered.is_empty() {
        return Err(SshError::AuthFailed { user: settings.user.clone(), addr, tried: a.tried });
    }
    if let Some((path, reason)) = a.load_error {
        return Err(SshError::KeyLoad { path, reason });
    }
    Err(SshError::NoIdentities)
}

/// Offers the identity files in order, then the agent's other keys; `Ok(true)` when logged in.
async fn offer_all(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let mut agent = if settings.agent { connect_agent(deadline, a).await? } else { None };
    for path in &settings.identity_files {
        if offer_file(handle, settings, path, agent.as_mut(), deadline, a).await? {
            return Ok(true);
        }
    }
    let Some(agent) = agent.as_mut() else { return Ok(false) };
    for key in agent.keys.clone() {
        if a.offered.iter().any(|k| k.key_data() == key.key_data()) {
            continue;
        }
        if settings.identities_only {
            tracing::debug!("identities_only: not offering agent key {}", fingerprint(&key));
            continue;
        }
        if offer_agent_key(handle, settings, agent, key, None, deadline, a).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Connects to the agent at `SSH_AUTH_SOCK` and lists its keys; `None` (with the reason in `a.tried`) when there is
/// no usable agent.
async fn connect_agent(deadline: Instant, a: &mut Attempts) -> Result<Option<Agent>, SshError> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        tracing::debug!("agent = true but SSH_AUTH_SOCK is not set; skipping ssh-agent");
        return Ok(None);
    }
    let mut client = match step(deadline, "ssh-agent to answer", AgentClient::connect_env()).await? {
        Ok(client) => client,
        Err(e) => {
            a.tried.push(format!("ssh-agent (unreachable: {e})"));
            return Ok(None);
        }
    };
    let keys = match step(deadline, "ssh-agent to list keys", client.request_identities()).await? {
        Ok(ids) => ids.iter().map(|id| id.public_key().into_owned()).collect::<Vec<_>>(),
        Err(e) => {
            a.tried.push(format!("ssh-agent (could not list keys: {e})"));
            return Ok(None);
        }
    };
    tracing::debug!("ssh-agent holds {} key(s)", keys.len());
    Ok(Some(Agent { client, keys }))
}

/// Offers one identity file: loaded from disk, through the agent, or decrypted with `SSH_ASKPASS`.
async fn offer_file(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    path: &Path,
    agent: Option<&mut Agent>,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => return offer_key(handle, settings, path, key, deadline, a).await,
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!("cannot use identity file {}: {reason}", path.display());
            a.tried.push(format!("{} (could not load: {reason})", path.display()));
            a.load_error.get_or_insert((path.to_path_buf(), reason));
            return Ok(false);
        }
    }
    let public = identity::encrypted_public_key(path);
    if let (Some(agent), Some(public)) = (agent, &public)
        && agent.holds(public)
    {
        tracing::debug!("{} is encrypted; ssh-agent holds its key", path.display());
        return offer_agent_key(handle, settings, agent, public.clone(), Some(path), deadline, a).await;
    }
    match askpass::program() {
        Some(program) => unlock_with_askpass(handle, settings, path, &program, deadline, a).await,
        None => {
            a.tried.push(format!("{} (encrypted; not in ssh-agent, and SSH_ASKPASS is not usable)", path.display()));
            a.encrypted.get_or_insert(path.to_path_buf());
            Ok(false)
        }
    }
}

/// Asks `program` for the passphrase of `path` up to [`PASSPHRASE_TRIES`] times and offers the decrypted key.
async fn unlock_with_askpass(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    path: &Path,
    program: &Path,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let mut reason = String::new();
    for _ in 0..PASSPHRASE_TRIES {
        let passphrase = match askpass::ask(program, path, deadline).await {
            Ok(p) => p,
            Err(why) => {
                reason = why;
                break;
            }
        };
        match russh::keys::load_secret_key(path, Some(passphrase.as_str())) {
            Ok(key) => {
                tracing::debug!("{} decrypted with the passphrase from SSH_ASKPASS", path.display());
                return offer_key(handle, settings, path, key, deadline, a).await;
            }
            Err(_) => reason = format!("the passphrase from SSH_ASKPASS program {} is wrong", program.display()),
        }
    }
    tracing::warn!("cannot decrypt identity file {}: {reason}", path.display());
    a.tried.push(format!("{} (encrypted; {reason})", path.display()));
    a.passphrase.get_or_insert((path.to_path_buf(), reason));
    Ok(false)
}

/// Offers a key loaded from `path`: its certificate first when there is one, then the plain key.
async fn offer_key(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    path: &Path,
    key: PrivateKey,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let public = key.public_key().clone();
    let key = Arc::new(key);
    let hashes = signature_hashes(handle, &public, deadline).await?;
    if let Some((cert_path, cert)) = identity::certificate_for(path, Some(&public)) {
        for &hash in &hashes {
            let description = with_hash(cert_description(&cert_path, &cert), hash);
            let user = settings.user.clone();
            let mut signer = LocalSigner(key.clone());
            let login = handle.authenticate_certificate_with(user, cert.clone(), hash, &mut signer);
            if judge(step(deadline, LOGIN, login).await?, &description, a)? {
                return Ok(true);
            }
        }
    }
    a.offered.push(public.clone());
    for hash in hashes {
        let description = with_hash(format!("{} ({})", path.display(), fingerprint(&public)), hash);
        let user = settings.user.clone();
        let login = handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash));
        let result = step(deadline, LOGIN, login).await??;
        tracing::debug!("offered {description}: {}", if result.success() { "accepted" } else { "refused" });
        a.tried.push(description);
        if result.success() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Offers one key held by the agent (with the certificate beside `path`, when there is one).
async fn offer_agent_key(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    agent: &mut Agent,
    key: PublicKey,
    path: Option<&Path>,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let hashes = signature_hashes(handle, &key, deadline).await?;
    if let Some((cert_path, cert)) = path.and_then(|p| identity::certificate_for(p, Some(&key))) {
        for &hash in &hashes {
            let description = with_hash(format!("{} via ssh-agent", cert_description(&cert_path, &cert)), hash);
            let user = settings.user.clone();
            let mut signer = AgentPlainKeySigner { agent: &mut agent.client, key: key.clone() };
            let login = handle.authenticate_certificate_with(user, cert.clone(), hash, &mut signer);
            if judge(step(deadline, LOGIN, login).await?, &description, a)? {
                return Ok(true);
            }
        }
    }
    a.offered.push(key.clone());
    for hash in hashes {
        let description = match path {
            Some(p) => format!("{} ({}) via ssh-agent", p.display(), fingerprint(&key)),
            None => format!("agent key {}", fingerprint(&key)),
        };
        let user = settings.user.clone();
        let login = handle.authenticate_publickey_with(user, key.clone(), hash, &mut agent.client);
        if judge(step(deadline, LOGIN, login).await?, &with_hash(description, hash), a)? {
            return Ok(true);
        }
    }
    Ok(false)
}

const LOGIN: &str = "the bastion to answer a login";

/// Records the outcome of a signer-based login attempt; `Ok(true)` when logged in.
fn judge(
    result: Result<AuthResult, russh::AgentAuthError>,
    description: &str,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    match result {
        Ok(r) => {
            tracing::debug!("offered {description}: {}", if r.success() { "accepted" } else { "refused" });
            a.tried.push(description.to_string());
            Ok(r.success())
        }
        Err(russh::AgentAuthError::Send(_)) => Err(SshError::Disconnected("closed during login".into())),
        Err(russh::AgentAuthError::Key(e)) => {
            a.tried.push(format!("{description} (could not sign: {e})"));
            Ok(false)
        }
    }
}

/// `PATH-cert.pub (certificate "ID" for SHA256:...)`.
fn cert_description(path: &Path, cert: &Certificate) -> String {
    let key = PublicKey::new(cert.public_key().clone(), "");
    format!("{} (certificate {:?} for {})", path.display(), cert.key_id(), fingerprint(&key))
}

/// The signature hashes to try for `key`, best first: `[None]` for non-RSA keys; for RSA the best one the server
/// lists in `server-sig-algs`, then `rsa-sha2-256` after `rsa-sha2-512`, because OpenSSH lists every hash it knows
/// there even when its `PubkeyAcceptedAlgorithms` allows only one (`None` alone means legacy `ssh-rsa`).
async fn signature_hashes(
    handle: &Handle<ClientHandler>,
    key: &PublicKey,
    deadline: Instant,
) -> Result<Vec<Option<HashAlg>>, SshError> {
    if !key.algorithm().is_rsa() {
        return Ok(vec![None]);
    }
    let best = step(deadline, "the bastion's signature algorithms", handle.best_supported_rsa_hash()).await??;
    Ok(match best.flatten() {
        Some(HashAlg::Sha512) => vec![Some(HashAlg::Sha512), Some(HashAlg::Sha256)],
        other => vec![other],
    })
}

/// `description` naming the RSA signature algorithm, when one was chosen.
fn with_hash(description: String, hash: Option<HashAlg>) -> String {
    match hash {
        Some(HashAlg::Sha512) => format!("{description} as rsa-sha2-512"),
        Some(HashAlg::Sha256) => format!("{description} as rsa-sha2-256"),
        _ => description,
    }
}

/// Runs one round trip under [`AUTH_STEP_TIMEOUT`] and `deadline`.
async fn step<T>(deadline: Instant, what: &str, fut: impl Future<Output = T>) -> Result<T, SshError> {
    let start = Instant::now();
    let until = deadline.min(start + AUTH_STEP_TIMEOUT);
    tokio::time::timeout_at(until, fut)
        .await
        .map_err(|_| SshError::Timeout { what: what.to_string(), after: until.saturating_duration_since(start) })
}
