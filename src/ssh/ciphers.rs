//! The outer session's cipher preference in russh's terms: the configured `ciphers` or the default for this CPU,
//! both in OpenSSH names from [`crate::config::ciphers`] (AES-GCM first with AES instructions, chacha20-poly1305
//! otherwise, as measured by the cipher benchmark in docs/BENCHMARKS.md).

use std::borrow::Cow;

use russh::cipher;

use crate::config::ciphers::default_order;

/// The preference list: `configured` (OpenSSH names, already validated) or the default for this CPU. Names the SSH
/// library does not know are skipped with a warning (config validation keeps them out).
pub fn preference(configured: Option<&[String]>) -> Cow<'static, [cipher::Name]> {
    let names: Vec<&str> = match configured {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => default_order().to_vec(),
    };
    Cow::Owned(
        names
            .into_iter()
            .filter_map(|n| {
                cipher::Name::try_from(n).inspect_err(|()| tracing::warn!("cipher {n} is not implemented; skipped")).ok()
            })
            .collect(),
    )
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
        assert_eq!(preference(None).len(), default_order().len());
        assert_eq!(preference(None)[0].as_ref(), default_order()[0]);
    }
}
