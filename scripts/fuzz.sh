#!/usr/bin/env bash
# The manual, long-running fuzzer: fuzzes bastionctl's parsers of untrusted input with cargo-fuzz (libFuzzer +
# AddressSanitizer): the control socket's framing (control_read_line) and the config parser (config_from_str), each for
# FUZZ_SECONDS (default 60; run it for hours before a release). Not run in CI: its sanitizer build compiles
# aws-sdk-ec2 and took over 36 min on 2 cores. CI runs the property tests of the same parsers instead,
# tests/prop_inputs.rs (`cargo test --test prop_inputs`, about 60 s), whose shrunk failures are kept in
# tests/prop_inputs.proptest-regressions. Exits non-zero on a crash; the crashing input is left in
# fuzz/artifacts/<target>/. To keep it as a regression test, copy it to fuzz/regressions/<target>/ (replayed here
# first, and by `cargo test --test bad_input`).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECONDS:-60}"
if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz from crates.io (about 2 min on 2 cores)"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sancov); the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1
corpus=fuzz/corpus
mkdir -p "$corpus/control_read_line" "$corpus/config_from_str"
cp tests/config/valid/*.toml tests/config/invalid/*.toml config/*.toml "$corpus/config_from_str/"
printf '{"v":1,"op":"connect","host":"10.0.16.10","port":22,"framed":true}\n' >"$corpus/control_read_line/connect"
printf '{"v":1,"op":"status"}\n{"progress":"starting"}\n{"ok":{"message":"","framed":true}}\nD\0\0\0\3abcE' \
    >"$corpus/control_read_line/replies"
printf '{"error":{"kind":"k","message":"m","hint":"h"}}\nX\0\0\0\2{}' >"$corpus/control_read_line/error"
for target in control_read_line config_from_str; do
    mkdir -p "fuzz/regressions/$target"
    echo "== fuzzing $target for ${SECS}s"
    start=$(date +%s)
    (cd fuzz && cargo fuzz run "$target" "../$corpus/$target" "../fuzz/regressions/$target" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
    echo "== $target: no crash ($(( $(date +%s) - start )) s including the build)"
done
