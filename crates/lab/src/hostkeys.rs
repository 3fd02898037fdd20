//! Host keys in the lab: the console output cloud-init would print for the bastion, with the fixture's REAL
//! fingerprints (from `ssh-keygen -l`), served through the [`super::Ec2Front`]'s GetConsoleOutput; and rebuilding the
//! bastion with a new host key.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::Lab;
use super::keys;

/// What the bastion's console output shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleFingerprints {
    /// cloud-init's blocks with the bastion host key's real fingerprint and key.
    Real,
    /// A boot log without any host key block.
    None,
    /// cloud-init's blocks with the fingerprint of another key.
    Wrong,
}

/// A boot log line for realism (what precedes cloud-init's blocks on EC2).
const BOOT_LOG: &str = "[    0.000000] Linux version 6.1.0-18-cloud-amd64\n\
                        [   14.204117] cloud-init[613]: Cloud-init v. 22.4.2 running 'modules:final'\n";

impl Lab {
    /// bastionctl's pin file in the lab (`[daemon] pinned_host_keys` of the lab config).
    pub fn pinned_host_keys(&self) -> PathBuf {
        self.files.pinned_host_keys.clone()
    }

    /// The console text for `which`: the fixture's real fingerprint, none, or another key's.
    pub async fn console_text(&self, which: ConsoleFingerprints) -> anyhow::Result<String> {
        let (pub_file, pub_line) = match which {
            ConsoleFingerprints::None => return Ok(format!("{BOOT_LOG}login: ")),
            ConsoleFingerprints::Real => {
                (PathBuf::from(format!("{}.pub", self.bastion_host_key.private.display())), self.bastion_host_key.public.clone())
            }
            ConsoleFingerprints::Wrong => {
                let path = self.files.dir.join(format!("bastion/impostor_{}", std::process::id()));
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(format!("{}.pub", path.display()));
                let k = keys::generate(path.clone(), "root@impostor".into()).await?;
                (PathBuf::from(format!("{}.pub", path.display())), k.public)
            }
        };
        let out = Command::new("ssh-keygen").arg("-l").arg("-f").arg(&pub_file).output().await;
        let out = out.context("cannot run ssh-keygen (run scripts/install-deps.sh)")?;
        if !out.status.success() {
            bail!("ssh-keygen -l -f {}: {}", pub_file.display(), String::from_utf8_lossy(&out.stderr));
        }
        // `256 SHA256:... comment (ED25519)`, the line cloud-init prints, with the comment as cloud-init has it.
        let listed = String::from_utf8_lossy(&out.stdout);
        let mut words: Vec<&str> = listed.split_whitespace().collect();
        anyhow::ensure!(words.len() >= 4, "unexpected ssh-keygen -l output: {listed}");
        let kind = words.pop().unwrap_or_default();
        let fp_line = format!("{} {} root@ip-10-0-0-5 {kind}", words[0], words[1]);
        let key_line: Vec<&str> = pub_line.split_whitespace().take(2).collect();
        Ok(format!(
            "{BOOT_LOG}ec2: \nec2: #############################################################\n\
             ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: {fp_line}\nec2: -----END SSH HOST KEY FINGERPRINTS-----\n\
             ec2: #############################################################\n\
             -----BEGIN SSH HOST KEY KEYS-----\n{} root@ip-10-0-0-5\n-----END SSH HOST KEY KEYS-----\n",
            key_line.join(" ")
        ))
    }

    /// Makes GetConsoleOutput of the bastion answer with [`Lab::console_text`] of `which`. Needs
    /// [`super::LabOptions::ec2_front`] (moto's own answer is a fixed fake log without fingerprints).
    pub async fn serve_console(&self, which: ConsoleFingerprints) -> anyhow::Result<()> {
        let text = self.console_text(which).await?;
        let front = self.front.as_ref().context("serving console output needs LabOptions::ec2_front = true")?;
        front.set_console_output(self.instance_id(), text);
        Ok(())
    }

    /// "Rebuilds" the bastion: a new host key at the same path, used from the bastion sshd's next start on. The
    /// instance must be stopped (its sshd not running), or a running sshd may still serve the old key.
    pub async fn rebuild_bastion_host_key(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.bastion_sshd_running(), "stop the bastion before rebuilding its host key");
        let path = self.bastion_host_key.private.clone();
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let _ = std::fs::remove_file(format!("{}.pub", path.display()));
        self.bastion_host_key = keys::generate(path, format!("{}-bastion-host-rebuilt", self.name)).await?;
        Ok(())
    }
}
