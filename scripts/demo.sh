#!/usr/bin/env bash
# The demo: builds bastionctl, starts the local lab (moto EC2 + real sshd bastion and private host on loopback),
# runs `ssh` through the stopped bastion, and shows it start and then stop after the idle time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/bastionctl-lab" demo "$@"
