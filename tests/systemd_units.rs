//! The shipped systemd user units: `systemd-analyze --user verify` accepts both with no warning, and the service's
//! sandbox leaves writable exactly the directories the daemon writes by default, named so that every systemd
//! version reads them the same way.
//!
//! `systemd-analyze verify` needs no running systemd (it works in a container whose PID 1 is not systemd) but a
//! user manager's `%t` needs `XDG_RUNTIME_DIR`, and it checks that `ExecStart=` exists: the test gives it a home
//! whose `~/.cargo/bin/bastionctl` is the built binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");

fn unit(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd").join(name)
}

/// `(key, value)` of every `Key=value` line of a unit file, in order (comments and sections left out).
fn directives(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values<'a>(d: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    d.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn systemd_analyze_verifies_both_units_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let runtime = tmp.path().join("run");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    std::os::unix::fs::symlink(BASTIONCTL, home.join(".cargo/bin/bastionctl")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(unit("bastionctl.socket"))
        .arg(unit("bastionctl.service"))
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .expect("systemd-analyze is missing: scripts/install-deps.sh installs Debian's `systemd` package");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed ({}):\n{said}", out.status);
    // Unknown keys, bad values and missing commands are warnings with exit status 0: none is allowed either.
    let bastionctl_lines: Vec<&str> = said.lines().filter(|l| l.contains("bastionctl")).collect();
    assert!(bastionctl_lines.is_empty(), "systemd-analyze warns about the units:\n{said}");
}

#[test]
fn the_socket_unit_is_the_daemons_default_socket_private_to_the_user() {
    let d = directives(&unit("bastionctl.socket"));
    assert_eq!(values(&d, "ListenStream"), ["%t/bastionctl/control.sock"]);
    assert_eq!(values(&d, "SocketMode"), ["0600"]);
    assert_eq!(values(&d, "DirectoryMode"), ["0700"]);
    // %t is XDG_RUNTIME_DIR in a user manager: the daemon's default socket must be the same file.
    let runtime = dirs::runtime_dir();
    if let Some(rt) = runtime {
        assert_eq!(bastionctl::paths::default_socket_path(), rt.join("bastionctl/control.sock"));
    }
}

#[test]
fn the_service_names_the_directories_it_writes_literally() {
    let d = directives(&unit("bastionctl.service"));
    // %S and StateDirectory= mean ~/.config in a user unit before systemd 254 (Debian 12 ships 252).
    for (k, v) in &d {
        assert!(!k.starts_with("StateDirectory"), "{k}={v}: its path depends on the systemd version");
        assert!(!v.contains("%S"), "{k}={v}: %S is ~/.config in a user unit before systemd 254");
    }
    let home = "/home/someone";
    let expand = |v: &str| v.trim_start_matches('-').replace("%h", home).replace("%t", "/run/user/1000");
    let writable: Vec<String> = values(&d, "ReadWritePaths").iter().flat_map(|v| v.split_whitespace()).map(expand).collect();
    // What the daemon writes by default, for a user whose HOME is `home` and XDG_STATE_HOME unset.
    let state = format!("{home}/.local/state/bastionctl");
    for needed in [state.as_str(), "/run/user/1000/bastionctl"] {
        assert!(writable.iter().any(|w| w == needed), "{needed} is not in ReadWritePaths {writable:?}");
    }
    // A ReadWritePaths= entry without `-` that does not exist fails the unit (226/NAMESPACE): the state directory
    // is created outside the sandbox first.
    let pre = values(&d, "ExecStartPre");
    assert!(
        pre.iter().any(|c| c.starts_with('+') && c.contains("mkdir -p") && expand(c).contains(&state)),
        "no ExecStartPre=+mkdir -p of the state directory: {pre:?}"
    );
    // The product's defaults agree with the unit: the pin file and the log live in that state directory.
    if std::env::var_os("XDG_STATE_HOME").is_none() {
        let real_state = bastionctl::paths::home().join(".local/state/bastionctl");
        assert_eq!(bastionctl::paths::state_dir(), real_state);
        assert_eq!(bastionctl::hostkeys::pins::default_path().parent(), Some(real_state.as_path()));
    }
}
