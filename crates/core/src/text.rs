//! Text hygiene for what bastionctl prints and logs: secrets redacted, values quoted for a POSIX shell.

/// Replaces anything that looks like an AWS access key id (`AKIA…`/`ASIA…`, 20 chars) or a secret / session token
/// (a run of 40 or more base64 characters) with `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_secret(word) {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '/' | '+') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn looks_secret(word: &str) -> bool {
    let access_key = word.len() == 20
        && (word.starts_with("AKIA") || word.starts_with("ASIA"))
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let long_blob =
        word.len() >= 40 && word.chars().any(|c| c.is_ascii_digit()) && word.chars().any(|c| c.is_ascii_uppercase());
    access_key || long_blob
}

/// `scheme://user:pass@host` → `scheme://***@host`.
pub fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..host_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// `host:port` as messages show a target, with an IPv6 address in brackets (`[::1]:22`, as `SocketAddr` shows it
/// and `ssh -L` reads it), never `::1:22`.
pub fn host_port(host: impl std::fmt::Display, port: u16) -> String {
    let host = host.to_string();
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// `s` quoted for a POSIX shell when it needs it (`'…'`, with `'` written as `'\''`), as is otherwise.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./~:@%+=,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `Display` texts of `err` and of its sources, in order, a text equal to the one before it left out. Only
/// `Display` is used, never `Debug`, so no struct (and no credential) is dumped.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if out.last() != Some(&text) {
            out.push(text);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_redacted() {
        assert_eq!(redact_userinfo("http://u:secret@proxy:3128/x"), "http://***@proxy:3128/x");
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(redact_userinfo("proxy:3128/a@b"), "proxy:3128/a@b");
    }

    #[test]
    fn redacts_keys_and_secrets() {
        let s = redact("key AKIAIOSFODNN7EXAMPLE secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY9 ok");
        assert_eq!(s, "key <redacted> secret=<redacted> ok");
        assert_eq!(
            redact("InvalidInstanceID.NotFound: i-0123456789abcdef0"),
            "InvalidInstanceID.NotFound: i-0123456789abcdef0"
        );
    }

    #[test]
    fn error_chain_lists_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e =
            E("dispatch failure", Some(Box::new(E("io", Some(Box::new(E("io", Some(Box::new(E("refused", None))))))))));
        assert_eq!(error_chain(&e), ["dispatch failure", "io", "refused"]);
    }

    #[test]
    fn an_ipv6_host_is_bracketed_before_its_port() {
        assert_eq!(host_port("::1", 22), "[::1]:22");
        assert_eq!(host_port(std::net::IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1]), 5432), "[fd00::1]:5432");
        assert_eq!(host_port("10.0.16.5", 22), "10.0.16.5:22");
        assert_eq!(host_port("db.internal", 5432), "db.internal:5432");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/tmp/lab/b.toml"), "/tmp/lab/b.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
