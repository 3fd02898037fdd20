#!/usr/bin/env bash
# The test command: installs the test dependencies, runs every test of the workspace (unit, property, lab self-test,
# end-to-end), then fuzzes each parser of untrusted input for FUZZ_SECONDS (default 60; FUZZ_SECONDS=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --locked --workspace "$@"
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
    scripts/fuzz.sh
fi
