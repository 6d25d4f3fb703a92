#!/usr/bin/env bash
# Small objects (4 KiB, 16 in flight), this build against an earlier one,
# alternating on the same machine so that its drift hits both alike:
#
#   EUCA_BEFORE=/path/to/euca scripts/bench-walrus-small-ab.sh [ROUNDS] [COUNT]
#
# Each round starts a fresh `euca up --no-node` of each build in turn (data in
# BENCH_DIR, default /var/tmp/euca-bench) and runs walrus-bench's small-put and
# small-get scenarios with COUNT objects (default 3000); ROUNDS defaults to 3.
# Prints walrus-bench's RESULT lines, labelled `new` and `before`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
COUNT=${2:-3000}
: "${EUCA_BEFORE:?set EUCA_BEFORE to the earlier euca binary}"
BENCH_DIR=${BENCH_DIR:-/var/tmp/euca-bench}
mkdir -p "$BENCH_DIR"
cargo build --release --locked --bin euca --bin walrus-bench
PID=
DATA=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  if [ -n "$DATA" ]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for _ in $(seq "$ROUNDS"); do
  for pair in "new:target/release/euca" "before:$EUCA_BEFORE"; do
    label=${pair%%:*} bin=${pair#*:}
    DATA=$(mktemp -d "$BENCH_DIR/small-ab.XXXX")
    p=$(port)
    "$bin" up --no-node --data "$DATA" --walrus-listen "127.0.0.1:$p" > "$DATA.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/_health" && break; sleep 0.2; done
    # shellcheck disable=SC1091
    . "$DATA/credentials/eucarc"
    target/release/walrus-bench --endpoint "http://127.0.0.1:$p" --access-key "$AWS_ACCESS_KEY_ID" \
      --secret-key "$AWS_SECRET_ACCESS_KEY" --label "$label" --scenarios small-put,small-get \
      --small-count "$COUNT" --bucket small | grep RESULT
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
    rm -rf "$DATA" "$DATA.log"; DATA=
  done
done
