//! cargo-fuzz target: [`bastionctl_core::fuzzing::known_hosts_parse`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bastionctl_core::fuzzing::known_hosts_parse(data));
