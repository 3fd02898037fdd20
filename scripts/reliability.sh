#!/usr/bin/env bash
# Runs the fault tests (issue 4) with a fresh report directory, then renders docs/RELIABILITY.md from the rows they
# recorded. Exits non-zero if any fault test failed (the table is written anyway, with the failures marked).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
scripts/install-deps.sh || exit 1
export BASTIONCTL_REPORT_DIR="$PWD/target/reliability"
rm -rf "$BASTIONCTL_REPORT_DIR"
mkdir -p "$BASTIONCTL_REPORT_DIR"
tests=(--test faults_stream --test bad_input)
[ -f tests/faults_ec2.rs ] && tests+=(--test faults_ec2)
status=0
cargo test --locked "${tests[@]}" || status=1
# Case 15 (clock jumps) and issue 10's adopt and name_tag rows are lifecycle unit tests in virtual time.
cargo test --locked --lib -- lifecycle::tests::clock_jump lifecycle::tests::a_bastion_started_elsewhere \
  lifecycle::tests::name_tag_is_resolved_again || status=1
# Issue 10: `bastionctl trust` hands the bastion to the daemon.
cargo test --locked --test e2e_hostkeys -- trust_hands_the_bastion || status=1
cargo run --locked --quiet -p bastionctl-lab --bin bastionctl-lab -- report --out docs/RELIABILITY.md || exit 1
echo "wrote docs/RELIABILITY.md ($(grep -c '^| [^-c]' docs/RELIABILITY.md) rows)"
exit $status
