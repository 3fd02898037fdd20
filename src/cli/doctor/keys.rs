//! The doctor's SSH-side checks: the identity files and ssh-agent can be loaded (no connection is made), and the
//! bastion's host key is pinned under its instance id. Keys are named by path and SHA256 fingerprint only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PublicKey};

use super::Report;
use crate::config::{BastionConfig, Config};
use crate::hostkeys::check::vouching;
use crate::hostkeys::fingerprint;
use crate::hostkeys::known_hosts::{KnownHosts, Marker};

/// Bound on connecting to ssh-agent and listing its keys.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One PASS/FAIL per identity file, one for the agent when it is used, and a FAIL when no key at all is usable.
pub(super) async fn check_identities(r: &mut Report, name: &str, b: &BastionConfig) {
    let mut usable = 0;
    let mut encrypted: Vec<(String, Option<PublicKey>)> = Vec::new();
    let mut files: Vec<PublicKey> = Vec::new();
    for path in b.identity_files() {
        let shown = path.display().to_string();
        match russh::keys::load_secret_key(&path, None) {
            Ok(key) => {
                usable += 1;
                files.push(key.public_key().clone());
                r.pass(format!(
                    "bastion {name}: identity file {shown} loads ({} {})",
                    key.algorithm(),
                    fingerprint(key.public_key())
                ));
            }
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let public = encrypted_public_key(&path);
                files.extend(public.clone());
                encrypted.push((shown, public));
            }
            Err(e) => r.fail(
                format!("bastion {name}: identity file {shown} cannot be loaded: {e}"),
                format!("correct identity_files in the config, or create the key: ssh-keygen -t ed25519 -f {shown}"),
            ),
        }
    }
    let agent_keys = if b.agent { agent_keys(r, name).await } else { Vec::new() };
    for (shown, public) in encrypted {
        let in_agent = public.as_ref().is_some_and(|p| agent_keys.iter().any(|k| k.key_data() == p.key_data()));
        if in_agent {
            usable += 1;
            r.pass(format!("bastion {name}: identity file {shown} is encrypted and its key is in ssh-agent"));
        } else {
            r.fail(
                format!("bastion {name}: identity file {shown} is encrypted and ssh-agent does not hold its key"),
                format!("ssh-add {shown} (bastionctl runs without a terminal and cannot ask for the passphrase)"),
            );
        }
    }
    let offered_from_agent =
        agent_keys.iter().filter(|k| !b.identities_only || files.iter().any(|f| f.key_data() == k.key_data())).count();
    if usable == 0 && offered_from_agent == 0 {
        r.fail(
            format!("bastion {name}: no usable SSH key (identity files and ssh-agent give none)"),
            "set identity_files to a key the bastion accepts, or `ssh-add` one with agent = true",
        );
    }
}

/// The agent's keys; prints a PASS/FAIL line for the agent itself. No line when `SSH_AUTH_SOCK` is unset.
async fn agent_keys(r: &mut Report, name: &str) -> Vec<PublicKey> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        r.skip(format!("bastion {name}: ssh-agent (SSH_AUTH_SOCK is not set)"));
        return Vec::new();
    }
    let list = async {
        let mut agent = AgentClient::connect_env().await.map_err(|e| e.to_string())?;
        agent.request_identities().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(AGENT_TIMEOUT, list).await {
        Ok(Ok(ids)) => {
            let keys: Vec<PublicKey> = ids.iter().map(|i| i.public_key().into_owned()).collect();
            r.pass(format!("bastion {name}: ssh-agent answers and holds {} key(s)", keys.len()));
            keys
        }
        Ok(Err(e)) => {
            r.fail(
                format!("bastion {name}: ssh-agent at $SSH_AUTH_SOCK: {e}"),
                "start ssh-agent and export SSH_AUTH_SOCK, or set agent = false",
            );
            Vec::new()
        }
        Err(_) => {
            r.fail(format!("bastion {name}: ssh-agent did not answer within {AGENT_TIMEOUT:?}"), "restart ssh-agent");
            Vec::new()
        }
    }
}

/// The public key of an encrypted identity file: OpenSSH-format files carry it in the clear; otherwise `PATH.pub`.
fn encrypted_public_key(path: &Path) -> Option<PublicKey> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(key) = PrivateKey::from_openssh(text.as_bytes())
    {
        return Some(key.public_key().clone());
    }
    russh::keys::load_public_key(crate::paths::with_suffix(path, ".pub")).ok()
}

/// PASS when a line vouches for the bastion's key ([`vouching`]: a key pinned for `instance_id` in bastionctl's pin
/// file, or a key or `@cert-authority` line for the instance id or `addr` in the configured known_hosts, as the
/// daemon checks); otherwise FAIL with the trust command, unless trust on first use is on.
pub(super) fn check_pin(
    r: &mut Report,
    cfg: &Config,
    name: &str,
    b: &BastionConfig,
    instance_id: &str,
    addr: Option<SocketAddr>,
) {
    let mut files = Vec::new();
    for path in [cfg.pinned_host_keys(), b.known_hosts()] {
        match KnownHosts::load(&path) {
            Ok(kh) => files.push(kh),
            Err(e) => {
                return r.fail(
                    format!("bastion {name}: cannot read {}: {e}", path.display()),
                    format!("make {} readable by you", path.display()),
                );
            }
        }
    }
    if let Some((kh, e)) = vouching(instance_id, addr, Some(&files[0]), &files[1]) {
        let what = match e.marker {
            Some(Marker::CertAuthority) => format!(
                "host certificates for {} trusted by a @cert-authority line",
                e.hosts
            ),
            _ => format!("host key of {instance_id} pinned"),
        };
        return r.pass(format!(
            "bastion {name}: {what} in {} line {} ({})",
            kh.path.display(),
            e.line,
            fingerprint(&e.key)
        ));
    }
    if b.trust_on_first_use {
        return r.pass(format!(
            "bastion {name}: no host key pinned for {instance_id} yet; trust_on_first_use pins the first one"
        ));
    }
    r.fail(
        format!(
            "bastion {name}: no host key pinned for {instance_id} in {} or {}",
            cfg.pinned_host_keys().display(),
            b.known_hosts().display()
        ),
        format!(
            "{} (compares the bastion's key with its console output, then pins it); the daemon also pins it by itself \
             when the key matches the console output",
            crate::hostkeys::trust_command(&cfg.source, name)
        ),
    );
}
