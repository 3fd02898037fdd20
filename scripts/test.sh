#!/usr/bin/env bash
# The test command: installs the test dependencies, then runs every test (unit, lab self-test, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --locked --workspace "$@"
