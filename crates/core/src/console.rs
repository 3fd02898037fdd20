//! Host key fingerprints in an instance's console output (EC2 GetConsoleOutput). cloud-init prints
//!
//! ```text
//! -----BEGIN SSH HOST KEY FINGERPRINTS-----
//! 256 SHA256:Jx1...w root@ip-10-0-0-5 (ED25519)
//! -----END SSH HOST KEY FINGERPRINTS-----
//! -----BEGIN SSH HOST KEY KEYS-----
//! ssh-ed25519 AAAAC3Nz... root@ip-10-0-0-5
//! -----END SSH HOST KEY KEYS-----
//! ```
//!
//! Lines may carry a prefix (`ec2: `, a kernel timestamp, `cloud-init[123]: `), so markers and values are found
//! anywhere in a line. Only what is inside those blocks counts; MD5 fingerprints (old cloud-init) are ignored.

use ssh_key::PublicKey;

use crate::known_hosts::fingerprint;

const FINGERPRINTS: &str = "SSH HOST KEY FINGERPRINTS-----";
const KEYS: &str = "SSH HOST KEY KEYS-----";

/// The `SHA256:...` fingerprints found in the host key blocks of `text`, in order, without duplicates.
pub fn fingerprints(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut block: Option<&str> = None;
    for line in text.lines() {
        if line.contains("-----BEGIN ") {
            block = [FINGERPRINTS, KEYS].into_iter().find(|m| line.contains(m));
            continue;
        }
        if line.contains("-----END ") {
            block = None;
            continue;
        }
        let found = match block {
            Some(FINGERPRINTS) => line
                .split_whitespace()
                .find(|w| w.starts_with("SHA256:"))
                .map(str::to_string),
            Some(_) => key_in(line).map(|k| fingerprint(&k)),
            None => None,
        };
        if let Some(fp) = found.filter(|f| !out.contains(f)) {
            out.push(fp);
        }
    }
    out
}

/// A public key `type base64` anywhere in `line`.
fn key_in(line: &str) -> Option<PublicKey> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find_map(|w| PublicKey::from_openssh(&format!("{} {}", w[0], w[1])).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::PrivateKey;
    use ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PublicKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
            .public_key()
            .clone()
    }

    #[test]
    fn cloud_init_blocks_with_prefixes() {
        let (a, b) = (key(1), key(2));
        let text = format!(
            "[   10.1] cloud-init[812]: Cloud-init v. 23.1 finished\r\n\
             ec2: \r\n\
             ec2: #############################################################\r\n\
             ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n\
             ec2: 256 {fa} root@ip-10-0-0-5 (ED25519)\r\n\
             ec2: 2048 aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99 root@ip (RSA)\r\n\
             ec2: -----END SSH HOST KEY FINGERPRINTS-----\r\n\
             -----BEGIN SSH HOST KEY KEYS-----\n\
             {kb} root@ip-10-0-0-5\n\
             {ka} root@ip-10-0-0-5\n\
             -----END SSH HOST KEY KEYS-----\n\
             256 SHA256:outsideOfAnyBlock root@x (ED25519)\n",
            fa = fingerprint(&a),
            ka = a.to_openssh().unwrap(),
            kb = b.to_openssh().unwrap(),
        );
        assert_eq!(fingerprints(&text), vec![fingerprint(&a), fingerprint(&b)]);
    }

    #[test]
    fn nothing_without_blocks() {
        assert!(fingerprints("Linux version 6.1\nlogin: ").is_empty());
        assert!(fingerprints("").is_empty());
    }
}
