//! Public key login to the bastion: identity files first (in config order), then ssh-agent keys.
//!
//! bastionctl runs without a terminal (as a daemon, or under `ProxyCommand`), so it never asks for a passphrase: an
//! encrypted identity file is usable only through an agent that holds its key. Keys are only ever named by path or
//! public fingerprint.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::time::Instant;

use super::handler::ClientHandler;
use super::hostkey::fingerprint;
use super::{SshError, SshSettings};

/// Limit for each authentication round trip (one offered key, one agent request), within the dial deadline.
pub const AUTH_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What was learned while going through the identity files.
#[derive(Default)]
struct Attempts {
    /// Descriptions of everything offered or skipped, for [`SshError::AuthFailed`].
    tried: Vec<String>,
    /// Public keys already offered (not offered again from the agent).
    offered: Vec<PublicKey>,
    /// Public keys of the identity files (for `identities_only`).
    allowed: Vec<PublicKey>,
    /// Encrypted identity files and their public key when known; cleared when the agent holds the key.
    encrypted: Vec<(PathBuf, Option<PublicKey>)>,
    /// The first identity file that could not be loaded at all.
    load_error: Option<(PathBuf, String)>,
}

/// Logs in as `settings.user`. Every round trip is under [`AUTH_STEP_TIMEOUT`] and `deadline`.
/// Errors, most actionable first: [`SshError::KeyEncrypted`] (an encrypted file the agent does not cover),
/// [`SshError::AuthFailed`] (keys were offered and refused), [`SshError::KeyLoad`], [`SshError::NoIdentities`].
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
    if let Some((path, _)) = a.encrypted.into_iter().next() {
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

/// Offers the identity files, then the agent's keys; `Ok(true)` when logged in.
async fn offer_all(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    for path in &settings.identity_files {
        if try_identity_file(handle, settings, path, deadline, a).await? {
            return Ok(true);
        }
    }
    if settings.agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        return try_agent(handle, settings, deadline, a).await;
    }
    if settings.agent {
        tracing::debug!("agent = true but SSH_AUTH_SOCK is not set; skipping ssh-agent");
    }
    Ok(false)
}

/// Offers one identity file; `Ok(true)` when logged in.
async fn try_identity_file(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    path: &Path,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let key = match russh::keys::load_secret_key(path, None) {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let public = encrypted_public_key(path);
            if let Some(p) = &public {
                a.allowed.push(p.clone());
            }
            a.tried.push(format!("{} (encrypted; needs ssh-agent)", path.display()));
            a.encrypted.push((path.to_path_buf(), public));
            return Ok(false);
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!("cannot use identity file {}: {reason}", path.display());
            a.tried.push(format!("{} (could not load: {reason})", path.display()));
            a.load_error.get_or_insert((path.to_path_buf(), reason));
            return Ok(false);
        }
    };
    let public = key.public_key().clone();
    let description = format!("{} ({})", path.display(), fingerprint(&public));
    a.allowed.push(public.clone());
    a.offered.push(public);
    let hash = rsa_hash(handle, &key, deadline).await?;
    let user = settings.user.clone();
    let result = step(
        deadline,
        "the bastion to answer a login",
        handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)),
    )
    .await??;
    tracing::debug!("offered {description}: {}", if result.success() { "accepted" } else { "refused" });
    a.tried.push(description);
    Ok(result.success())
}

/// Offers the agent's keys (only those of the identity files with `identities_only`); `Ok(true)` when logged in.
async fn try_agent(
    handle: &mut Handle<ClientHandler>,
    settings: &SshSettings,
    deadline: Instant,
    a: &mut Attempts,
) -> Result<bool, SshError> {
    let mut agent = match step(deadline, "ssh-agent to answer", AgentClient::connect_env()).await? {
        Ok(agent) => agent,
        Err(e) => {
            a.tried.push(format!("ssh-agent (unreachable: {e})"));
            return Ok(false);
        }
    };
    let identities = match step(deadline, "ssh-agent to list keys", agent.request_identities()).await? {
        Ok(ids) => ids,
        Err(e) => {
            a.tried.push(format!("ssh-agent (could not list keys: {e})"));
            return Ok(false);
        }
    };
    if identities.is_empty() {
        a.tried.push("ssh-agent (no keys)".to_string());
    }
    for identity in identities {
        let key = identity.public_key().into_owned();
        let same = |k: &PublicKey| k.key_data() == key.key_data();
        a.encrypted.retain(|(_, p)| !p.as_ref().is_some_and(same));
        if a.offered.iter().any(same) {
            continue;
        }
        if settings.identities_only && !a.allowed.iter().any(same) {
            tracing::debug!("identities_only: skipping agent key {}", fingerprint(&key));
            continue;
        }
        let hash = if key.algorithm().is_rsa() { best_rsa_hash(handle, deadline).await? } else { None };
        a.offered.push(key.clone());
        let description = format!("agent key {}", fingerprint(&key));
        let user = settings.user.clone();
        let result = step(
            deadline,
            "the bastion to answer a login",
            handle.authenticate_publickey_with(user, key, hash, &mut agent),
        )
        .await?;
        let result = match result {
            Ok(r) => r,
            Err(russh::AgentAuthError::Send(_)) => return Err(SshError::Disconnected("closed during login".into())),
            Err(russh::AgentAuthError::Key(e)) => {
                a.tried.push(format!("{description} (agent could not sign: {e})"));
                continue;
            }
        };
        a.tried.push(description);
        if result.success() {
            return Ok(true);
        }
        if let AuthResult::Failure { remaining_methods, .. } = &result {
            tracing::debug!("agent key refused; server offers {remaining_methods:?}");
        }
    }
    Ok(false)
}

/// The public key of an encrypted identity file: OpenSSH-format files carry it in the clear; otherwise `PATH.pub`.
fn encrypted_public_key(path: &Path) -> Option<PublicKey> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(key) = PrivateKey::from_openssh(text.as_bytes())
    {
        return Some(key.public_key().clone());
    }
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
}

async fn rsa_hash(
    handle: &Handle<ClientHandler>,
    key: &PrivateKey,
    deadline: Instant,
) -> Result<Option<HashAlg>, SshError> {
    if key.algorithm().is_rsa() { best_rsa_hash(handle, deadline).await } else { Ok(None) }
}

/// The best RSA signature hash the server accepts (`rsa-sha2-512` / `-256`), `None` meaning legacy `ssh-rsa`.
async fn best_rsa_hash(handle: &Handle<ClientHandler>, deadline: Instant) -> Result<Option<HashAlg>, SshError> {
    Ok(step(deadline, "the bastion's signature algorithms", handle.best_supported_rsa_hash()).await??.flatten())
}

/// Runs one round trip under [`AUTH_STEP_TIMEOUT`] and `deadline`.
async fn step<T>(deadline: Instant, what: &str, fut: impl Future<Output = T>) -> Result<T, SshError> {
    let start = Instant::now();
    let until = deadline.min(start + AUTH_STEP_TIMEOUT);
    tokio::time::timeout_at(until, fut)
        .await
        .map_err(|_| SshError::Timeout { what: what.to_string(), after: until.saturating_duration_since(start) })
}
