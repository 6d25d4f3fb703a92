#!/usr/bin/env bash
# Walrus's own CPU per GiB on single-stream PUT and GET of one large object, this
# build against an earlier one, both servers up at once and alternated round by
# round so that the machine's drift hits both alike:
#
#   EUCA_BEFORE=/path/to/euca scripts/bench-walrus-cpu-ab.sh [ROUNDS] [MIB]
#
# ROUNDS defaults to 3, MIB (the object) to 2048. Each build runs one `euca up
# --no-node --net off` (data in BENCH_DIR, default /var/tmp/euca-bench); one untimed
# PUT + GET per server comes first (the first passes after start ran slower on the
# shared VM, whichever server ran them). Per round and server: walrus-bench's MiB/s
# and the server process's user + system CPU seconds per GiB moved (from
# /proc/PID/stat), labelled `new` and `before`. SCENARIOS=get times only GETs (of the
# object the untimed pass wrote: from the page cache after the first).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MIB=${2:-2048}
: "${EUCA_BEFORE:?set EUCA_BEFORE to the earlier euca binary}"
BENCH_DIR=${BENCH_DIR:-/var/tmp/euca-bench}
mkdir -p "$BENCH_DIR"
cargo build --release --locked --bin euca --bin walrus-bench
WORK=$(mktemp -d "$BENCH_DIR/cpu-ab.XXXX")
. scripts/bench-lib.sh
bench_cleanup_on_exit "$WORK"
declare -A PID ARGS
for pair in "new:target/release/euca" "before:$EUCA_BEFORE"; do
  label=${pair%%:*} bin=${pair#*:} p=$(port)
  "$bin" up --no-node --net off --data "$WORK/$label" --walrus-listen "127.0.0.1:$p" \
    --sc-listen "127.0.0.1:$(port)" --nbd-listen "127.0.0.1:$(port)" --iscsi-listen off \
    --cc-listen "127.0.0.1:$(port)" --clc-listen "127.0.0.1:$(port)" \
    --nc-listen "127.0.0.1:$(port)" > "$WORK/$label.log" 2>&1 &
  PID[$label]=$!; PIDS+=("$!")
  for _ in $(seq 150); do
    [ -s "$WORK/$label/credentials/eucarc" ] && curl -s -o /dev/null "http://127.0.0.1:$p/_health" && break
    sleep 0.2
  done
  # shellcheck disable=SC1090
  . "$WORK/$label/credentials/eucarc"
  ARGS[$label]="--endpoint http://127.0.0.1:$p --access-key $AWS_ACCESS_KEY_ID --secret-key $AWS_SECRET_ACCESS_KEY"
  # shellcheck disable=SC2086
  target/release/walrus-bench ${ARGS[$label]} --scenarios put,get --large-mib "$MIB" > /dev/null
done
for _ in $(seq "$ROUNDS"); do
  for scenario in ${SCENARIOS:-put get}; do
    for label in new before; do
      c0=$(cpu "${PID[$label]}")
      # shellcheck disable=SC2086
      line=$(target/release/walrus-bench ${ARGS[$label]} --label "$label" --scenarios "$scenario" \
        --large-mib "$MIB" | grep RESULT)
      c1=$(cpu "${PID[$label]}")
      printf '%s  server CPU %.2f s/GiB\n' "$line" "$(echo "($c1 - $c0) / $HZ / ($MIB / 1024)" | bc -l)"
    done
  done
done
