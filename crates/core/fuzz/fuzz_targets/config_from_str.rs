//! cargo-fuzz target: [`bastionctl_core::fuzzing::config_from_str`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bastionctl_core::fuzzing::config_from_str(data));
