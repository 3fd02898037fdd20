//! Key pairs for the lab, made by the real `ssh-keygen` (ed25519, no passphrase).

use std::path::PathBuf;

use anyhow::{Context, bail};
use tokio::process::Command;

/// A generated key pair on disk.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key line, `ssh-ed25519 AAAA... comment`.
    pub public: String,
}

impl KeyPair {
    /// The public key without its comment: `ssh-ed25519 AAAA...`, the form used in known_hosts lines.
    pub fn public_no_comment(&self) -> String {
        self.public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    /// The base64 body of the public key, which also appears in any file holding the private key.
    pub fn public_base64(&self) -> &str {
        self.public.split_whitespace().nth(1).unwrap_or_default()
    }
}

/// Runs `ssh-keygen -t ed25519 -N '' -f path`; `path` must not exist yet.
pub async fn generate(path: PathBuf, comment: String) -> anyhow::Result<KeyPair> {
    let path = path.as_path();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("cannot run ssh-keygen (install openssh-client)")?;
    if !out.status.success() {
        bail!("ssh-keygen failed for {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let public = std::fs::read_to_string(format!("{}.pub", path.display()))
        .with_context(|| format!("cannot read {}.pub", path.display()))?
        .trim()
        .to_string();
    Ok(KeyPair { private: path.to_path_buf(), public })
}
