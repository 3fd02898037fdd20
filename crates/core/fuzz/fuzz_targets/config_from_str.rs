//! The config parser on arbitrary text: `Config::from_str` must return a config or an error naming the file, never
//! panic; a config it accepts must be usable by what the daemon calls at start-up.
#![no_main]

use std::path::Path;

use bastionctl_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
