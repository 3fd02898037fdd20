//! cargo-fuzz target: [`bastionctl_core::fuzzing::control_read_line`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bastionctl_core::fuzzing::control_read_line(data));
