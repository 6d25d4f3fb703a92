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
# cargo-nextest (on the machine with the toolchain) runs every test binary's tests
# side by side, both cores busy (cargo test runs the binaries one after another:
# ~20 s more). nextest runs no doctests: the only ones (euca-image's) are compiled
# and run at idle priority beside the conformance tests, and reported at the end.
doc_pid=
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --locked --workspace --no-fail-fast --status-level fail \
    --final-status-level slow
  doc_log=$(mktemp)
  nice -n 19 cargo test --release --locked -p euca-image --doc >"$doc_log" 2>&1 &
  doc_pid=$!
else
  cargo test --release --locked --workspace
fi

# --- fuzz (brief, in the background) -----------------------------------------
# Every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 10, a smoke run;
# 0 skips): no panic, no allocation past the limits, round-trip properties. Long
# runs: scripts/fuzz.sh [seconds-per-target]. Its instrumented build (about three
# minutes of both cores) runs at idle priority beside the conformance tests, which
# leave more than half of the two cores idle (they wait on guests, clients and
# timeouts); its result is reported, and fails the run, at the end.
fuzz_pid=
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  fuzz_log=$(mktemp)
  section "fuzz (${FUZZ_SECONDS:-10} s per target) started in the background: $fuzz_log"
  setsid nice -n 19 scripts/fuzz.sh "${FUZZ_SECONDS:-10}" >"$fuzz_log" 2>&1 &
  fuzz_pid=$!
  trap '[ -n "$fuzz_pid" ] && kill -- -"$fuzz_pid" 2>/dev/null; rm -f "$fuzz_log"; [ -n "$doc_pid" ] && kill "$doc_pid" 2>/dev/null; true' EXIT
fi
# -----------------------------------------------------------------------------

# The conformance files run on two pytest-xdist workers, one file at a time per
# worker (in the order conformance/conftest.py sets), each with its own clouds.
XDIST=(-n "${CONFORMANCE_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)

# conformance/test_instances_netns.py (root: the emulated cluster in network
# namespaces, real `euca nc` nodes with QEMU) runs here only, not in the split pass
# below: it starts the split processes itself.
section "conformance (real clients against euca up)"
export EUCA_BIN="$PWD/target/release/euca"
python3 -m pytest conformance -q -p no:cacheprovider "${XDIST[@]}" --durations=15 "$@"

# The split layout changes how services find each other and authenticate (remote
# identity, the CLC alone, the SC and the CC as their own processes), not what
# Walrus or the SC do with bytes: it reruns the files that cross those seams.
section "conformance again, the cloud as separate processes (euca clc, walrus --identity, sc --identity, cc)"
EUCA_LAYOUT=split python3 -m pytest -q -p no:cacheprovider "${XDIST[@]}" \
  conformance/test_split_layout.py conformance/test_identity_service.py \
  conformance/test_clients.py conformance/test_clients_access.py \
  conformance/test_volumes.py conformance/test_sc_query.py conformance/test_service.py \
  conformance/test_ec2_basics.py conformance/test_ec2_volumes.py \
  conformance/test_ec2_images.py conformance/test_image_cache.py "$@"
# The scale-out engines: Walrus's metadata, the CLC's and SC's records and the accounts in
# PostgreSQL (a throwaway server per worker, conformance/helpers_pg.py), Walrus's
# blobs in a second S3 server (blob_url = "s3://...", a plain `euca walrus`:
# conformance/helpers_blobs.py), and the S3 client tests of one worker talk to the
# cloud's own Walrus, the other's to a second front end on the same stores (a plain
# `euca walrus`), while the CLC and the SC use the cloud's own (conftest.py). The
# files whose outcome depends on the stores' rules rerun there (test_walrus_scaleout.py and test_clc_scaleout.py, two front
# ends on one database, run in the first pass); test_ec2_images.py's installs take
# their leases in the database (its kill -9 test needs a private cloud: first pass);
# test_ec2_volumes.py's volumes and snapshots are the SC's records there ([sc]
# meta_url; its awscli runs, the same requests, stay in the first pass).
section "conformance again, on PostgreSQL and a second S3 server ([walrus] meta_url, blob_url; [clc], [sc] meta_url), S3 clients on both front ends"
EUCA_WALRUS_META=postgres EUCA_WALRUS_BLOBS=s3 python3 -m pytest -q -p no:cacheprovider "${XDIST[@]}" \
  conformance/test_clients.py conformance/test_clients_access.py \
  conformance/test_concurrency.py conformance/test_s3_semantics.py \
  conformance/test_s3_versioning.py conformance/test_s3_tagging_conditional.py \
  conformance/test_s3_object_lock.py conformance/test_ec2_basics.py \
  conformance/test_ec2_keys_groups_tags.py conformance/test_ec2_images.py \
  conformance/test_ec2_volumes.py \
  --deselect conformance/test_ec2_images.py::test_images_survive_kill9_and_an_interrupted_install_is_failed \
  --deselect conformance/test_ec2_volumes.py::test_awscli \
  "$@"
if [ -n "$doc_pid" ]; then
  section "doctests (euca-image, run in the background)"
  doc_rc=0
  wait "$doc_pid" || doc_rc=$?
  doc_pid=
  grep -E "test result|FAILED|error" "$doc_log" || true
  [ "$doc_rc" = 0 ] || { cat "$doc_log"; echo "doctests: FAILED (exit $doc_rc)" >&2; exit 1; }
  rm -f "$doc_log"
fi
if [ -n "$fuzz_pid" ]; then
  section "fuzz (waiting for the background run)"
  fuzz_rc=0
  wait "$fuzz_pid" || fuzz_rc=$?
  fuzz_pid=
  cat "$fuzz_log"
  rm -f "$fuzz_log"
  [ "$fuzz_rc" = 0 ] || { echo "fuzz: FAILED (exit $fuzz_rc)" >&2; exit 1; }
fi
section "done"
