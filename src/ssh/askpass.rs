//! Passphrases for encrypted identity files through an `SSH_ASKPASS` program, with OpenSSH's rules.
//!
//! bastionctl has no terminal (it runs under `ProxyCommand` or as a daemon), so, like `ssh` without a tty, it asks
//! only through `SSH_ASKPASS`: when that is set and either a display is there (`DISPLAY` or `WAYLAND_DISPLAY`) or
//! `SSH_ASKPASS_REQUIRE=force`; `SSH_ASKPASS_REQUIRE=never` turns it off. The program gets the prompt as its only
//! argument and prints the passphrase on stdout. The passphrase is never logged and is zeroed when dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How long one askpass program may take (a person typing into a dialog), within the dial deadline.
pub const ASKPASS_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest passphrase read from the program, in bytes; anything longer is cut here.
const MAX_PASSPHRASE: u64 = 4096;

/// The askpass program to run, if OpenSSH's rules allow one; `var` reads an environment variable.
pub fn program_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    let program = var("SSH_ASKPASS").filter(|v| !v.is_empty())?;
    let require = var("SSH_ASKPASS_REQUIRE").map(|v| v.to_string_lossy().to_ascii_lowercase());
    let allowed = match require.as_deref() {
        Some("never") => false,
        Some("force") => true,
        _ => set("DISPLAY") || set("WAYLAND_DISPLAY"),
    };
    allowed.then(|| PathBuf::from(program))
}

/// [`program_from`] on this process's environment.
pub fn program() -> Option<PathBuf> {
    program_from(|name| std::env::var_os(name))
}

/// Runs `program PROMPT` and returns the first line of its stdout. `Err` says why there is no passphrase (the
/// program failed, was cancelled or took too long); it never contains what the program printed.
pub async fn ask(program: &Path, key: &Path, deadline: Instant) -> Result<Zeroizing<String>, String> {
    let prompt = format!("Enter passphrase for key '{}': ", key.display());
    let mut child = Command::new(program)
        .arg(&prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run SSH_ASKPASS program {}: {e}", program.display()))?;
    let mut stdout = child.stdout.take().ok_or("askpass stdout is not piped")?.take(MAX_PASSPHRASE);
    let read = async {
        let mut out = Zeroizing::new(Vec::new());
        stdout.read_to_end(&mut out).await.map_err(|e| format!("cannot read from {}: {e}", program.display()))?;
        let status = child.wait().await.map_err(|e| format!("cannot wait for {}: {e}", program.display()))?;
        Ok::<_, String>((status, out))
    };
    let until = deadline.min(Instant::now() + ASKPASS_TIMEOUT);
    let (status, out) = tokio::time::timeout_at(until, read)
        .await
        .map_err(|_| format!("SSH_ASKPASS program {} gave no passphrase in time", program.display()))??;
    if !status.success() {
        return Err(format!("SSH_ASKPASS program {} exited with {status} (cancelled?)", program.display()));
    }
    let line = out.split(|&b| b == b'\n' || b == b'\r').next().unwrap_or_default();
    let text = std::str::from_utf8(line).map_err(|_| "the passphrase from SSH_ASKPASS is not UTF-8".to_string())?;
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn openssh_rules_decide_whether_to_ask() {
        let p = |vars: &[(&str, &str)]| program_from(env(vars));
        assert_eq!(p(&[]), None);
        assert_eq!(p(&[("DISPLAY", ":0")]), None, "no program");
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap")]), None, "no display, not forced");
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap"), ("DISPLAY", ":0")]), Some("/bin/ap".into()));
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap"), ("WAYLAND_DISPLAY", "w")]), Some("/bin/ap".into()));
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap"), ("DISPLAY", "")]), None, "empty DISPLAY");
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap"), ("SSH_ASKPASS_REQUIRE", "force")]), Some("/bin/ap".into()));
        assert_eq!(
            p(&[("SSH_ASKPASS", "/bin/ap"), ("SSH_ASKPASS_REQUIRE", "prefer"), ("DISPLAY", ":0")]),
            Some("/bin/ap".into())
        );
        assert_eq!(p(&[("SSH_ASKPASS", "/bin/ap"), ("SSH_ASKPASS_REQUIRE", "never"), ("DISPLAY", ":0")]), None);
        assert_eq!(p(&[("SSH_ASKPASS", ""), ("SSH_ASKPASS_REQUIRE", "force")]), None);
    }

    #[tokio::test]
    async fn reads_the_first_line_and_passes_the_prompt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("askpass");
        let seen = dir.path().join("prompt");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\nprintf 'pass word\\nrest\\n'\n", seen.display()),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = ask(&script, Path::new("/k/id"), deadline).await.expect("asked");
        assert_eq!(got.as_str(), "pass word");
        assert_eq!(std::fs::read_to_string(&seen).expect("prompt"), "Enter passphrase for key '/k/id': ");

        std::fs::write(&script, "#!/bin/sh\necho secret-not-shown\nexit 1\n").expect("write");
        let err = ask(&script, Path::new("/k/id"), deadline).await.expect_err("cancelled");
        assert!(err.contains("exited with") && !err.contains("secret-not-shown"), "{err}");
        let err = ask(Path::new("/nonexistent/askpass"), Path::new("/k/id"), deadline).await.expect_err("missing");
        assert!(err.contains("cannot run SSH_ASKPASS program /nonexistent/askpass"), "{err}");
    }
}
