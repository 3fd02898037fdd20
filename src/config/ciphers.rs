//! `ciphers`: the outer session's cipher preference, in OpenSSH's names (`Ciphers` in ssh_config).
//!
//! Unset, bastionctl prefers AES-GCM when the CPU has AES instructions and chacha20-poly1305 otherwise (chosen by
//! the cipher benchmark in docs/BENCHMARKS.md); see [`crate::ssh::ciphers`].

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
}
