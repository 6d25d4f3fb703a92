#!/usr/bin/env bash
# The whole test suite: installs what it needs (idempotent), builds, runs the Rust
# tests and the conformance suite that drives a real `euca up` with real S3 clients.
# Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# Section headers carry the seconds since the start (where the time budget goes).
START=$SECONDS
section() { echo "== $* [t+$((SECONDS - START))s]"; }

section "import cycles between files (every crate)"
python3 scripts/check-import-cycles.py

scripts/install-test-deps.sh

# One cargo run builds the binaries and every test binary (as `cargo test` would):
# both cores stay busy to the end instead of idling while `euca` links alone.
section "build (release: binaries and tests)"
cargo build --release --locked --workspace --bins --tests

# The tiny guest instances boot (Debian's cloud kernel + a busybox initramfs, built
# from packages by tools/vm/build-tiny-guest.sh; kept in target/ between runs).
# Built before `cargo test`: the NC's QEMU tests boot it too, and must boot this
# checkout's guest, not one left elsewhere on the machine.
export EUCA_GUEST_DIR="${EUCA_GUEST_DIR:-$PWD/target/guest}"
if [ ! -s "$EUCA_GUEST_DIR/initramfs.gz" ] || [ ! -s "$EUCA_GUEST_DIR/vmlinux" ] \
   || [ tools/vm/build-tiny-guest.sh -nt "$EUCA_GUEST_DIR/initramfs.gz" ]; then
  section "tiny guest (tools/vm/build-tiny-guest.sh $EUCA_GUEST_DIR)"
  tools/vm/build-tiny-guest.sh "$EUCA_GUEST_DIR" \
    || { apt-get update -qq && tools/vm/build-tiny-guest.sh "$EUCA_GUEST_DIR"; }
fi

section "cargo test"
cargo test --release --locked --workspace

# --- fuzz (brief) ------------------------------------------------------------
# Every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 10, a smoke run
# that keeps the suite in its time budget; 0 skips): no panic, no allocation past
# the limits, round-trip properties. Long runs: scripts/fuzz.sh [seconds-per-target].
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  section "fuzz (${FUZZ_SECONDS:-10} s per target)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi
# -----------------------------------------------------------------------------

# conformance/test_instances_netns.py (root: the emulated cluster in network
# namespaces, real `euca nc` nodes with QEMU) runs here only, not in the split pass
# below: it starts the split processes itself.
section "conformance (real clients against euca up)"
export EUCA_BIN="$PWD/target/release/euca"
python3 -m pytest conformance -q -p no:cacheprovider --durations=15 "$@"

# The split layout changes how services find each other and authenticate (remote
# identity, the CLC alone, the SC and the CC as their own processes), not what
# Walrus or the SC do with bytes: it reruns the files that cross those seams.
section "conformance again, the cloud as separate processes (euca clc, walrus --identity, sc --identity, cc)"
EUCA_LAYOUT=split python3 -m pytest -q -p no:cacheprovider \
  conformance/test_split_layout.py conformance/test_identity_service.py \
  conformance/test_clients.py conformance/test_clients_access.py \
  conformance/test_volumes.py conformance/test_sc_query.py conformance/test_service.py \
  conformance/test_ec2_basics.py conformance/test_ec2_volumes.py \
  conformance/test_ec2_images.py conformance/test_image_cache.py "$@"
section "done"
