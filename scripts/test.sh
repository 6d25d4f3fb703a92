#!/usr/bin/env bash
# The whole test suite: installs what it needs (idempotent), builds, runs the Rust
# tests and the conformance suite that drives a real `euca up` with real S3 clients.
# Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== import cycles between files (every crate)"
python3 scripts/check-import-cycles.py

scripts/install-test-deps.sh

echo "== build (release)"
cargo build --release --locked --bin euca

echo "== cargo test"
cargo test --release --locked --workspace

# --- fuzz (brief) ------------------------------------------------------------
# Every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 20; 0 skips):
# no panic, no allocation past the limits, round-trip properties. Long runs:
# scripts/fuzz.sh [seconds-per-target].
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  echo "== fuzz (${FUZZ_SECONDS:-20} s per target)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
# -----------------------------------------------------------------------------

echo "== conformance (real clients against euca up)"
export EUCA_BIN="$PWD/target/release/euca"
python3 -m pytest conformance -q -p no:cacheprovider "$@"

echo "== conformance again, the cloud as separate processes (euca clc, walrus --identity, sc --identity, cc)"
EUCA_LAYOUT=split python3 -m pytest conformance -q -p no:cacheprovider "$@"
