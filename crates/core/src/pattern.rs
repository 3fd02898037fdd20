//! The host field of a `known_hosts` line, matched the way OpenSSH does (`match_maybe_hashed` and
//! `match_hostname` in OpenSSH's `hostfile.c` / `match.c`):
//!
//! - a hashed field `|1|<base64 salt>|<base64 HMAC-SHA1(salt, name)>` stands for exactly one name;
//! - otherwise a comma list of patterns with `*` (any run of characters) and `?` (one character), compared
//!   case-insensitively; `[host]:port` is plain text inside a pattern;
//! - a pattern starting with `!` negates: if it matches, the whole line does not apply, whatever else matches.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use wildmatch::WildMatch;

/// The prefix of a hashed host field.
const HASH_MAGIC: &str = "|1|";

/// Whether the host field `field` applies to `name` (already lower case, e.g. `i-0abc` or `[127.0.2.1]:2222`).
pub fn field_matches(field: &str, name: &str) -> bool {
    if let Some(rest) = field.strip_prefix(HASH_MAGIC) {
        return hashed_matches(rest, name);
    }
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if WildMatch::new(&pattern.to_ascii_lowercase()).matches(&name) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `salt|hash` (both base64) against HMAC-SHA1 keyed with the salt over `name`, compared in constant time.
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (Base64::decode_vec(salt), Base64::decode_vec(hash)) else {
        return false;
    };
    match Hmac::<Sha1>::new_from_slice(&salt) {
        Ok(mac) => mac.chain_update(name.as_bytes()).verify_slice(&hash).is_ok(),
        Err(_) => false,
    }
}

/// The hashed host field for `name` with `salt`, as `ssh-keygen -H` writes it (for tests and tools).
pub fn hash_name(name: &str, salt: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("{HASH_MAGIC}{}|{}", Base64::encode_string(salt), Base64::encode_string(&hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_comma_lists() {
        assert!(field_matches("i-0abc", "i-0abc"));
        assert!(!field_matches("i-0abc", "i-0abcd"));
        assert!(field_matches("other,i-0abc,third", "i-0abc"));
        assert!(field_matches("[127.0.2.1]:2222", "[127.0.2.1]:2222"));
        assert!(!field_matches("[127.0.2.1]:2222", "127.0.2.1"));
        assert!(field_matches("Bastion.Example.COM", "bastion.example.com"), "case-insensitive");
    }

    #[test]
    fn wildcards() {
        assert!(field_matches("i-*", "i-0abc"));
        assert!(field_matches("127.0.2.?", "127.0.2.1"));
        assert!(!field_matches("127.0.2.?", "127.0.2.10"));
        assert!(field_matches("[127.0.2.*]:2222", "[127.0.2.1]:2222"));
        assert!(!field_matches("[127.0.2.*]:2222", "[127.0.2.1]:22"));
        assert!(field_matches("*", "anything"));
    }

    #[test]
    fn negation_wins_over_any_positive_match() {
        assert!(!field_matches("i-*,!i-0bad", "i-0bad"));
        assert!(!field_matches("!i-0bad,i-*", "i-0bad"), "order does not matter");
        assert!(field_matches("i-*,!i-0bad", "i-0good"));
        assert!(!field_matches("!i-0bad", "i-0good"), "a negation alone matches nothing");
    }

    #[test]
    fn hashed_entries() {
        let field = hash_name("[127.0.2.1]:2222", b"0123456789abcdefghij");
        assert!(field.starts_with("|1|"));
        assert!(field_matches(&field, "[127.0.2.1]:2222"));
        assert!(!field_matches(&field, "127.0.2.1"));
        assert!(!field_matches("|1|not base64|x", "127.0.2.1"));
        assert!(!field_matches("|1|", "127.0.2.1"));
    }
}
