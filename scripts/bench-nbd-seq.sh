#!/usr/bin/env bash
# Sequential nbdcopy passes, the storage controller against `nbdkit file`, alternating
# the two servers so that disk and page-cache drift hits both alike (what
# scripts/bench-sc.sh cannot do, running each server's passes in a block).
#
#   scripts/bench-nbd-seq.sh read|write [CONNS] [ROUNDS] [SIZE_GIB]   (defaults 4 2 2)
#
# Each export is filled once (a write pass onto the new, sparse volume, printed as
# "<name>+new"); then each round, every pass started by bench_pass_start
# (scripts/bench-lib.sh: page cache kept; COLD=1 drops it): `nbdcopy --connections=CONNS <export> null:` (read) or a copy of a random
# file onto the export followed by a FLUSH (write). Prints MiB/s, the server's CPU
# seconds per GiB, the whole machine's busy CPU seconds per GiB (client, server, the
# kernel's write-back threads and interrupts: what page-cache writes cost after the
# server has returned) and the context switches per GiB of the server's threads still
# alive after the pass (nbdkit's per-connection threads are gone by then: its count is
# not comparable). EUCA_BIN=path/to/euca benches that binary instead of building;
# EUCA_BEFORE=path/to/another/euca adds that build as a third server ("before") in
# every round, for an A/B of two builds in the same run. One untimed pass over each
# export comes first: the first pass after the fill ran up to 2-3x slower (CPU per
# GiB) than the later ones, whichever server ran it (BENCHMARKS.md, 2026-12-06 NBD).
# WARMUP=0 leaves that pass out, PEER_FIRST=1 runs nbdkit first in every round, and
# NBDCOPY_ARGS adds flags to the timed nbdcopy runs (e.g. --requests=8). PERF=DIR
# records `perf record -g` of each server over its timed passes (DIR/<name>.data, the
# last round's).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?read or write}; CONNS=${2:-4}; ROUNDS=${3:-2}; GIB=${4:-2}
DIR=${BENCH_DIR:-/var/tmp/euca-nbd-seq}
. scripts/bench-lib.sh
bench_setup "$DIR"

bench_volume "$EUCA" euca "$GIB" nbd
SERVERS=("euca-sc $URI $PID")
if [ -n "${EUCA_BEFORE:-}" ]; then
  bench_volume "$EUCA_BEFORE" before "$GIB" nbd; SERVERS+=("before $URI $PID")
fi
KP=$(port); truncate -s "${GIB}G" "$DIR/nbdkit.img"
nbdkit -f -i 127.0.0.1 -p "$KP" -e vol file "$DIR/nbdkit.img" &
KIT_PID=$!; PIDS+=("$KIT_PID")
KIT_URI="nbd://127.0.0.1:$KP/vol"
if [ -n "${PEER_FIRST:-}" ]; then SERVERS=("nbdkit $KIT_URI $KIT_PID" "${SERVERS[@]}")
else SERVERS+=("nbdkit $KIT_URI $KIT_PID"); fi
sleep 1
head -c $((GIB << 30)) /dev/urandom > "$DIR/src.img"

pass() { # name uri pid
  bench_pass_start
  local c0 t0 t1 c1 x0 x1
  local rec=
  if [ -n "${PERF:-}" ] && [ -n "${TIMED:-}" ]; then
    perf record -q -g -p "$3" -o "$PERF/$1.data" > /dev/null 2>&1 & rec=$!; sleep 0.5
  fi
  c0=$(cpu "$3"); x0=$(ctxsw "$3"); s0=$(busy); t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  if [ "$MODE" = read ]; then nbdcopy ${NBDCOPY_ARGS:-} --connections="$CONNS" "$2" null:
  else nbdcopy ${NBDCOPY_ARGS:-} --connections="$CONNS" "$DIR/src.img" "$2"; bench_flush "$2"; fi
  t1=$(date +%s.%N); c1=$(cpu "$3"); x1=$(ctxsw "$3"); s1=$(busy)
  if [ -n "$rec" ]; then kill -INT "$rec"; wait "$rec" || true; fi
  printf 'RESULT %-8s %s conns=%d %8.1f MiB/s  server CPU %5.2f s/GiB  all CPUs %5.2f s/GiB  %6d switches/GiB\n' \
    "$1" "$MODE" "$CONNS" "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" \
    "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)" "$(echo "($s1 - $s0) / $HZ / $GIB" | bc -l)" \
    "$(( (x1 - x0) / GIB ))"
}
echo "== $(nproc) cores; ${GIB} GiB; $(nbdkit --version); $(nbdcopy --version | head -1)"
# The fill: a write pass onto each new (sparse) export, printed as "<name>+new".
for s in "${SERVERS[@]}"; do read -r n u p <<< "$s"; MODE=write pass "$n+new" "$u" "$p"; done
if [ "${WARMUP:-1}" != 0 ]; then
  for s in "${SERVERS[@]}"; do read -r n u p <<< "$s"; pass "$n" "$u" "$p" > /dev/null; done
fi
TIMED=1
for _ in $(seq "$ROUNDS"); do
  for s in "${SERVERS[@]}"; do read -r n u p <<< "$s"; pass "$n" "$u" "$p"; done
done
