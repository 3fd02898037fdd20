#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers of untrusted input in bastionctl-core: the control
# socket's framing, the config file, known_hosts files and the console output an instance prints. Each target runs
# FUZZ_SECONDS (default 60; CI runs this; run it for hours before a release), starting from the seeds in
# crates/core/fuzz/seeds/ plus the repository's config files. The targets link only bastionctl-core (no AWS SDK,
# russh or hyper), so their build takes a minute or two. On a crash the input is copied to
# crates/core/fuzz/regressions/<target>/ (commit it: `cargo test -p bastionctl-core --test fuzz_regressions`
# replays it) and the script exits non-zero. FUZZ_SANITIZER=address adds AddressSanitizer (slower build).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz passes nightly-only flags (sancov passes, --cfg fuzzing); the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1
fuzz=crates/core/fuzz
work="${CARGO_TARGET_DIR:-$PWD/target}/fuzz-corpus"
targets=(control_read_line config_from_str known_hosts_parse console_fingerprints)
start=$(date +%s)
(cd "$fuzz" && cargo fuzz build --dev --sanitizer "$SANITIZER")
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - start )) s"
# One target: its corpus seeded, FUZZ_SECONDS of libFuzzer, a crash kept as a regression input. Prints one line.
fuzz_one() {
    local t=$1 artifacts="$work/artifacts/$1/"
    mkdir -p "$work/$t" "$fuzz/regressions/$t" "$artifacts"
    cp "$fuzz/seeds/$t/"* "$work/$t/"
    [ "$t" = config_from_str ] && cp tests/config/valid/*.toml tests/config/invalid/*.toml config/*.toml "$work/$t/"
    if (cd "$fuzz" && cargo fuzz run --dev --sanitizer "$SANITIZER" "$t" "$work/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$artifacts" \
        -print_final_stats=1 2>"$work/$t.log"); then
        echo "fuzz: $t: no crash in ${SECS} s ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$') runs, corpus $(find "$work/$t" -type f | wc -l) inputs)"
    else
        tail -30 "$work/$t.log" >&2
        for crash in "$artifacts"*; do
            [ -f "$crash" ] && cp "$crash" "$fuzz/regressions/$t/" && echo "fuzz: $t: crash kept as $fuzz/regressions/$t/$(basename "$crash")" >&2
        done
        return 1
    fi
}
# As many targets at a time as there are CPUs (each libFuzzer process is single-threaded), so that CI spends
# FUZZ_SECONDS × targets ÷ CPUs, not FUZZ_SECONDS × targets.
jobs=$(nproc)
status=0
pids=()
for t in "${targets[@]}"; do
    fuzz_one "$t" &
    pids+=("$!")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit $status
