#!/usr/bin/env bash
# The cloud controller's EC2 Query API under load (`euca up`, one machine):
#   - store: one Describe page (scan + decode of 100 records) over 10 000 volume
#     records of one account, in process (clc-bench scan);
#   - signed calls/s and p50/p99 per call of DescribeAvailabilityZones with 1, 4
#     and 16 concurrent connections;
#   - DescribeVolumes walked 100 per page (MaxResults/NextToken) over the 10 000
#     records with 1 and 4 connections (skipped if this build lacks the action).
#
#   scripts/bench-clc.sh [SECONDS] [RECORDS]      (defaults 10, 10000)
#
# EUCA_BIN=path/to/euca benches that binary instead of building this checkout;
# BENCH_DIR moves the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
COUNT=${2:-10000}
DIR=${BENCH_DIR:-/var/tmp/euca-clc-bench}
cargo build --release --locked -p walrus-bench --bin clc-bench
BENCH=$PWD/target/release/clc-bench
if [ -n "${EUCA_BIN:-}" ]; then
  EUCA=$EUCA_BIN
else
  cargo build --release --locked --bin euca
  EUCA=$PWD/target/release/euca
fi
rm -rf "$DIR"; mkdir -p "$DIR"
EUCA_PID=
cleanup() { [ -n "$EUCA_PID" ] && kill "$EUCA_PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLC=$(port)
start() {
  rm -f "$DIR/euca/credentials/eucarc"
  "$EUCA" up --data "$DIR/euca" --walrus-listen 127.0.0.1:$(port) --sc-listen 127.0.0.1:$(port) \
    --nbd-listen 127.0.0.1:$(port) --iscsi-listen 127.0.0.1:$(port) --cc-listen 127.0.0.1:$(port) --clc-listen 127.0.0.1:$CLC \
    >> "$DIR/euca.log" 2>&1 &
  EUCA_PID=$!
  # `euca up` writes the eucarc once every service answers.
  for _ in $(seq 300); do [ -f "$DIR/euca/credentials/eucarc" ] && return; sleep 0.1; done
  echo "euca up did not start:" >&2; tail -20 "$DIR/euca.log" >&2; exit 1
}
stop() { kill "$EUCA_PID"; wait "$EUCA_PID" || true; EUCA_PID=; }

echo "== $(nproc) cores; $COUNT records; ${SECS}s per run"
start
# shellcheck disable=SC1091
source "$DIR/euca/credentials/eucarc"
stop
"$BENCH" fill --data "$DIR/euca" --account "$EC2_USER_ID" --count "$COUNT"
"$BENCH" scan --data "$DIR/euca" --account "$EC2_USER_ID" --page 100
start
URL=http://127.0.0.1:$CLC/
export RUST_LOG=warn
for c in 1 4 16; do
  "$BENCH" http --url "$URL" --action DescribeAvailabilityZones --page 0 --concurrency $c --seconds "$SECS"
done
for c in 1 4; do
  "$BENCH" http --url "$URL" --action DescribeVolumes --page 100 --concurrency $c --seconds "$SECS" \
    || echo "DescribeVolumes: not served by this build (skipped)"
done
stop
