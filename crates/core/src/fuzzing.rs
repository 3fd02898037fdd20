//! The bodies of the fuzz targets (`crates/core/fuzz`, run in CI by `scripts/fuzz.sh`), one per parser of untrusted
//! input. Each takes arbitrary bytes and panics only when an invariant breaks, so the same function serves the
//! fuzzer and the replay of kept crash inputs (`tests/fuzz_regressions.rs`).

use std::path::Path;

use tokio::io::{AsyncReadExt, BufReader};

use crate::config::Config;
use crate::console;
use crate::control::{self, Frame, Reply, Request};
use crate::known_hosts::{KnownHosts, Lookup, known_hosts_line};

/// A fuzz target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets, by name: the folder names under `crates/core/fuzz/regressions/`.
pub const TARGETS: [Target; 4] = [
    ("control_read_line", control_read_line),
    ("config_from_str", config_from_str),
    ("known_hosts_parse", known_hosts_parse),
    ("console_fingerprints", console_fingerprints),
];

/// The control socket's framing: `read_line` (requests and replies) and `read_frame` (the framed tunnel) return a
/// value or an error, never panic, and never read past what they announce.
pub fn control_read_line(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut r = BufReader::with_capacity(64, data);
        while control::read_line::<_, Request>(&mut r).await.is_ok() {}
        let mut r = BufReader::new(data);
        while control::read_line::<_, Reply>(&mut r).await.is_ok() {}
        let mut r = BufReader::new(data);
        while let Ok(frame) = control::read_frame(&mut r).await {
            if let Frame::Data(n) = frame {
                assert!(n as usize <= control::MAX_FRAME, "a data frame over MAX_FRAME was accepted");
                let mut skip = (&mut r).take(u64::from(n));
                if tokio::io::copy(&mut skip, &mut tokio::io::sink()).await.is_err() {
                    break;
                }
            }
        }
    });
}

/// The config parser: a config or an error that names the file; an accepted config is usable by what the daemon
/// calls at start-up.
pub fn config_from_str(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/fuzz/config.toml");
    match Config::from_str(text, path) {
        Ok(cfg) => {
            for b in &cfg.bastions {
                let _ = (b.name(), b.instance_ref(), b.identity_files(), b.known_hosts(), b.target_rules());
                assert!(cfg.bastion(Some(&b.name())).is_ok());
            }
            let _ = (cfg.socket_path(), cfg.log_file());
        }
        Err(e) => assert!(e.to_string().contains("/fuzz/config.toml"), "error does not name the file: {e}"),
    }
}

/// The known_hosts parser: any text parses (bad lines are kept aside, as OpenSSH skips them); every entry's line
/// number is a line of the text; lookups of every entry's own key by a name it applies to find it.
pub fn known_hosts_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let kh = KnownHosts::parse(Path::new("/fuzz/known_hosts"), &text);
    let lines = text.lines().count();
    for e in kh.entries() {
        assert!((1..=lines).contains(&e.line), "entry line {} outside 1..={lines}", e.line);
        let _ = kh.invalid_for(&e.hosts);
        if e.marker.is_none() && !e.hosts.starts_with('|') && !e.hosts.contains(['*', '?', '!', ',', '[']) {
            let name = e.hosts.to_ascii_lowercase();
            assert!(matches!(kh.lookup(&name, e.key.key_data()), Lookup::Found(_)), "{name} does not find its own key");
        }
        // A line written the way bastionctl pins reads back as the same key.
        let again = KnownHosts::parse(Path::new("/fuzz/pin"), &known_hosts_line("i-0fuzz", &e.key));
        assert!(matches!(again.lookup("i-0fuzz", e.key.key_data()), Lookup::Found(_)), "a pin line does not read back");
    }
}

/// The console-output fingerprint parser (text the instance itself prints): any text gives a list of distinct
/// `SHA256:` fingerprints.
pub fn console_fingerprints(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let found = console::fingerprints(&text);
    for (i, fp) in found.iter().enumerate() {
        assert!(fp.starts_with("SHA256:"), "not a SHA256 fingerprint: {fp:?}");
        assert!(!found[..i].contains(fp), "duplicate fingerprint {fp}");
    }
}
