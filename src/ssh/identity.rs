//! Identity files on disk: the public half of an encrypted key, the OpenSSH user certificate beside a key
//! (`PATH-cert.pub`), and signing with a local key for certificate logins. Nothing here logs or returns key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::agent::AgentIdentity;
use russh::keys::signature::Signer as _;
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::private::KeypairData;
use russh::keys::{Certificate, HashAlg, PrivateKey, PublicKey};

use crate::paths::with_suffix;

/// The OpenSSH user certificate for the key in `path`, at `PATH-cert.pub` (OpenSSH's convention), when that file
/// exists, parses and certifies `public` (when known). A certificate that cannot be used is logged and skipped.
pub fn certificate_for(path: &Path, public: Option<&PublicKey>) -> Option<(PathBuf, Certificate)> {
    let cert_path = with_suffix(path, "-cert.pub");
    if !cert_path.exists() {
        return None;
    }
    let cert = match Certificate::read_file(&cert_path) {
        Ok(cert) => cert,
        Err(e) => {
            tracing::warn!("ignoring certificate {}: {e}", cert_path.display());
            return None;
        }
    };
    if let Some(public) = public
        && cert.public_key() != public.key_data()
    {
        tracing::warn!(
            "ignoring certificate {}: it certifies another key than {}",
            cert_path.display(),
            path.display()
        );
        return None;
    }
    Some((cert_path, cert))
}

/// The public key of an encrypted identity file: OpenSSH-format files carry it in the clear; otherwise `PATH.pub`.
pub fn encrypted_public_key(path: &Path) -> Option<PublicKey> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(key) = PrivateKey::from_openssh(text.as_bytes())
    {
        return Some(key.public_key().clone());
    }
    russh::keys::load_public_key(with_suffix(path, ".pub")).ok()
}

/// Signs certificate logins with a key loaded from disk, the way an agent would ([`russh::Signer`]), so RSA
/// certificates can use `rsa-sha2-256`/`-512`.
pub struct LocalSigner(pub Arc<PrivateKey>);

impl LocalSigner {
    fn sign(&self, hash_alg: Option<HashAlg>, mut data: Vec<u8>) -> Result<Vec<u8>, russh::keys::Error> {
        let signature = match self.0.key_data() {
            KeypairData::Rsa(rsa) => (rsa, hash_alg).try_sign(&data),
            _ => self.0.try_sign(&data),
        }
        .map_err(russh::keys::ssh_key::Error::from)?;
        let blob = signature.encode_vec().map_err(russh::keys::ssh_key::Error::from)?;
        blob.encode(&mut data).map_err(russh::keys::ssh_key::Error::from)?;
        Ok(data)
    }
}

impl russh::Signer for LocalSigner {
    type Error = russh::AgentAuthError;

    #[allow(clippy::manual_async_fn)]
    fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        to_sign: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        let signed = self.sign(hash_alg, to_sign).map_err(russh::AgentAuthError::Key);
        async move { signed }
    }
}

/// Signs certificate logins through ssh-agent with the certificate's plain key: OpenSSH's agent finds a key by the
/// plain public key only, not by a certificate it was not given.
pub struct AgentPlainKeySigner<'a> {
    /// The connected agent.
    pub agent: &'a mut russh::keys::agent::client::AgentClient<tokio::net::UnixStream>,
    /// The plain public key the agent holds.
    pub key: PublicKey,
}

impl russh::Signer for AgentPlainKeySigner<'_> {
    type Error = russh::AgentAuthError;

    #[allow(clippy::manual_async_fn)]
    fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        to_sign: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        let plain = AgentIdentity::from(self.key.clone());
        async move { Ok(self.agent.sign_request(&plain, hash_alg, to_sign).await?) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_path_follows_openssh() {
        assert_eq!(certificate_for(Path::new("/nonexistent/id"), None).map(|(p, _)| p), None);
    }
}
