#!/usr/bin/env bash
# The benchmark (docs/BENCHMARKS.md): builds release binaries, runs every route side by side in a lab of its own and
# writes the markdown table with the machine's description to docs/BENCHMARKS.md.
#
#   scripts/bench.sh                 # full run: 25 warm connects, 3 × 1 GiB each way per route, ...
#   scripts/bench.sh --smoke         # tiny sizes, debug build (what CI runs, via tests/bench_smoke.rs)
#   scripts/bench.sh -- --reps 5     # extra arguments for `bastionctl-lab bench`
#
# Run it as root (the CPU figures need a cgroup per route) on a quiet machine; it prints the load average before
# and after. Set BASTIONCTL_BIN to benchmark another bastionctl build (e.g. an older one) with this benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
profile=release
args=()
for a in "$@"; do
    case "$a" in
        --smoke) profile=debug; args+=(--smoke) ;;
        --) ;;
        *) args+=("$a") ;;
    esac
done
target="${CARGO_TARGET_DIR:-target}"
flags=(--locked -p bastionctl --bin bastionctl -p bastionctl-lab --bin bastionctl-lab)
[ "$profile" = release ] && flags+=(--release)
cargo build "${flags[@]}"
out=()
[ "$profile" = release ] && out=(--out docs/BENCHMARKS.md)
exec "$target/$profile/bastionctl-lab" --bastionctl "${BASTIONCTL_BIN:-$target/$profile/bastionctl}" bench "${out[@]}" "${args[@]}"
