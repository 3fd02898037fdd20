//! cargo-fuzz target: [`bastionctl_core::fuzzing::console_fingerprints`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bastionctl_core::fuzzing::console_fingerprints(data));
