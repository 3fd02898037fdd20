//! The outer session's cipher preference: the configured `ciphers` (OpenSSH names, checked by
//! [`crate::config::ciphers`]) or the default chosen by the measured cipher benchmark (docs/BENCHMARKS.md):
//! AES-GCM first where the CPU has AES instructions (AES-NI and carry-less multiply on x86-64, the AES extension on
//! aarch64), chacha20-poly1305 first otherwise.

use std::borrow::Cow;

use russh::cipher;

/// Default order on a CPU with AES instructions.
const WITH_AES: &[cipher::Name] =
    &[cipher::AES_128_GCM, cipher::AES_256_GCM, cipher::CHACHA20_POLY1305, cipher::AES_256_CTR, cipher::AES_128_CTR];

/// Default order without them (software AES is slower than chacha20-poly1305 and not constant-time).
const WITHOUT_AES: &[cipher::Name] =
    &[cipher::CHACHA20_POLY1305, cipher::AES_128_GCM, cipher::AES_256_GCM, cipher::AES_256_CTR, cipher::AES_128_CTR];

/// Whether this CPU has hardware AES (and the GHASH multiply AES-GCM needs).
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The preference list: `configured` (OpenSSH names, already validated) or the default for this CPU.
/// Names the SSH library does not know are skipped with a warning (config validation keeps them out).
pub fn preference(configured: Option<&[String]>) -> Cow<'static, [cipher::Name]> {
    match configured {
        None if cpu_has_aes() => Cow::Borrowed(WITH_AES),
        None => Cow::Borrowed(WITHOUT_AES),
        Some(names) => Cow::Owned(
            names
                .iter()
                .filter_map(|n| {
                    cipher::Name::try_from(n.as_str())
                        .inspect_err(|()| tracing::warn!("cipher {n} is not implemented; skipped"))
                        .ok()
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_the_config_accepts_is_implemented() {
        for name in crate::config::ciphers::SUPPORTED {
            assert!(cipher::Name::try_from(*name).is_ok(), "{name}");
        }
        let names: Vec<String> = crate::config::ciphers::SUPPORTED.iter().map(|s| s.to_string()).collect();
        assert_eq!(preference(Some(&names)).len(), names.len());
    }

    #[test]
    fn configured_order_is_kept_and_the_default_follows_the_cpu() {
        let names = vec!["chacha20-poly1305@openssh.com".to_string(), "aes256-gcm@openssh.com".to_string()];
        assert_eq!(&*preference(Some(&names)), &[cipher::CHACHA20_POLY1305, cipher::AES_256_GCM]);
        let first = preference(None)[0];
        assert_eq!(first, if cpu_has_aes() { cipher::AES_128_GCM } else { cipher::CHACHA20_POLY1305 });
    }
}
