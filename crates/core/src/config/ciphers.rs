//! `ciphers`: the outer session's cipher preference, in OpenSSH's names (`Ciphers` in ssh_config).
//!
//! Unset, bastionctl prefers AES-GCM when the CPU has AES instructions and chacha20-poly1305 otherwise (chosen by
//! the cipher benchmark in docs/BENCHMARKS.md): [`default_order`].

/// The cipher names bastionctl's SSH library implements, in OpenSSH's spelling. CBC modes and 3DES are left out on
/// purpose (OpenSSH disables them by default too).
pub const SUPPORTED: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];

/// Default order on a CPU with AES instructions: AES-GCM measured fastest there (docs/BENCHMARKS.md).
const WITH_AES: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
];

/// Default order without them: software AES is slower than chacha20-poly1305 and not constant-time.
const WITHOUT_AES: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
];

/// Whether this CPU has hardware AES and the carry-less multiply AES-GCM needs (AES-NI + PCLMULQDQ on x86-64, the
/// AES extension + PMULL on aarch64).
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

/// The cipher preference when `ciphers` is unset, for this CPU.
pub fn default_order() -> &'static [&'static str] {
    if cpu_has_aes() { WITH_AES } else { WITHOUT_AES }
}

/// Checks one `ciphers` entry; the error says what to write instead.
pub fn check(name: &str) -> Result<(), String> {
    if SUPPORTED.contains(&name) {
        return Ok(());
    }
    let hint = match name {
        "aes128-gcm" | "aes256-gcm" | "chacha20-poly1305" => format!(" (OpenSSH's name is `{name}@openssh.com`)"),
        _ if name.ends_with("-cbc") || name == "3des-cbc" => " (CBC ciphers are not offered)".to_string(),
        _ => String::new(),
    };
    Err(format!("`{name}` is not a cipher bastionctl offers{hint}; use OpenSSH names from: {}", SUPPORTED.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_openssh_names() {
        assert!(check("aes256-gcm@openssh.com").is_ok());
        assert!(check("chacha20-poly1305@openssh.com").is_ok());
        let e = check("aes256-gcm").unwrap_err();
        assert!(e.contains("`aes256-gcm@openssh.com`"), "{e}");
        let e = check("aes256-cbc").unwrap_err();
        assert!(e.contains("CBC") && e.contains("aes128-ctr"), "{e}");
        assert!(check("").is_err());
    }

    #[test]
    fn defaults_are_offered_names_and_follow_the_cpu() {
        assert!(default_order().iter().all(|n| check(n).is_ok()));
        let first = if cpu_has_aes() { "aes128-gcm@openssh.com" } else { "chacha20-poly1305@openssh.com" };
        assert_eq!(default_order()[0], first);
    }
}
