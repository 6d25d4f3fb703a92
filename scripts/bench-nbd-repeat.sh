#!/usr/bin/env bash
# One storage controller volume read back-to-back and after writes: does a pass
# depend on the one before it? One `euca up` with one GIB volume (default 4) filled
# with random data; then two 1-connection `nbdcopy` reads, and ROUNDS times (default
# 4) a 1- and a 4-connection write (each followed by a FLUSH) and again two reads.
# Each pass starts with bench_pass_start (scripts/bench-lib.sh: page cache kept;
# COLD=1 drops it). Prints MiB/s and the server's CPU s/GiB of each read.
#
#   scripts/bench-nbd-repeat.sh [ROUNDS] [SIZE_GIB]
#
# EUCA_BIN=path/to/euca benches that binary instead of building this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}; GIB=${2:-4}
DIR=${BENCH_DIR:-/var/tmp/euca-nbd-repeat}
. scripts/bench-lib.sh
bench_setup "$DIR"
bench_volume "$EUCA" euca "$GIB" nbd
head -c $((GIB << 30)) /dev/urandom > "$DIR/src.img"
read_pass() {
  bench_pass_start
  local c0 t0 t1 c1
  c0=$(cpu "$PID"); t0=$(date +%s.%N)
  nbdcopy --connections=1 "$URI" null:
  t1=$(date +%s.%N); c1=$(cpu "$PID")
  printf 'RESULT %-22s read conns=1 %8.1f MiB/s  server CPU %5.2f s/GiB\n' "$1" \
    "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)"
}
nbdcopy --connections=4 "$DIR/src.img" "$URI"
read_pass "first"; read_pass "second"
for i in $(seq "$ROUNDS"); do
  for c in 1 4; do
    bench_pass_start; nbdcopy --connections=$c "$DIR/src.img" "$URI"
    bench_flush "$URI"
  done
  read_pass "after writes $i, first"; read_pass "after writes $i, second"
done
