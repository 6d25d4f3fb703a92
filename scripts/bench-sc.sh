#!/usr/bin/env bash
# Exports one 4 GiB volume file from the storage controller (`euca up`, volume
# attached to 127.0.0.1), from `qemu-nbd` and from `nbdkit file`, in the same run on
# the same disk, and measures each with:
#   nbdcopy sequential write (file -> export) and read (export -> /dev/null),
#     with 1 and 4 connections;
#   fio's nbd engine, 4 KiB random reads and writes at queue depth 16;
# and the CPU time each server used per GiB moved by nbdcopy.
#
#   scripts/bench-sc.sh [SIZE_GIB] [FIO_SECONDS]      (defaults 4, 15)
#
# EUCA_BIN=path/to/euca benches that binary instead of building this checkout;
# EUCA_BEFORE=/path/to/euca also measures that (earlier) build in the same run;
# SKIP_PEER=1 leaves qemu-nbd and nbdkit out, PEER_FIRST=1 runs them first; BENCH_DIR
# moves the scratch directory.
# Before its timed passes each server's export is written once, untimed: the first
# passes after the source file is made ran up to 2-3x slower (CPU per GiB) than the
# same passes later, whichever server ran them (BENCHMARKS.md, 2026-12-06 NBD).
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-4}
SECS=${2:-15}
DIR=${BENCH_DIR:-/var/tmp/euca-sc-bench}
for t in nbdcopy nbdkit qemu-nbd fio; do
  command -v $t >/dev/null || { echo "missing $t: run scripts/install-test-deps.sh" >&2; exit 1; }
done
if [ -n "${EUCA_BIN:-}" ]; then
  EUCA=$EUCA_BIN
else
  cargo build --release --locked --bin euca
  EUCA=$PWD/target/release/euca
fi
rm -rf "$DIR"; mkdir -p "$DIR"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== $(nproc) cores; ${GIB} GiB export; $(qemu-nbd --version | head -1); $(nbdkit --version); $(nbdcopy --version | head -1); fio $(fio --version)"
head -c $((GIB << 30)) /dev/urandom > "$DIR/src.img"   # the data nbdcopy writes

# --- the servers -------------------------------------------------------------------
WP=$(port); SP=$(port); NP=$(port)
"$EUCA" up --data "$DIR/euca" --walrus-listen 127.0.0.1:$WP --sc-listen 127.0.0.1:$SP --nbd-listen 127.0.0.1:$NP --iscsi-listen 127.0.0.1:$(port) --cc-listen 127.0.0.1:$(port) --clc-listen 127.0.0.1:$(port) > "$DIR/euca.log" 2>&1 &
EUCA_PID=$!; PIDS+=($EUCA_PID)
for _ in $(seq 100); do curl -sf http://127.0.0.1:$SP/_health >/dev/null && break; sleep 0.1; done
VOL=$("$EUCA" volume create --size-gib "$GIB" --data "$DIR/euca")
SC_URI=$("$EUCA" volume attach "$VOL" --node 127.0.0.1 --data "$DIR/euca")

QP=$(port); truncate -s ${GIB}G "$DIR/qemu.img"
qemu-nbd -f raw -x vol -b 127.0.0.1 -p $QP -t -e 8 --discard=unmap "$DIR/qemu.img" &
QEMU_PID=$!; PIDS+=($QEMU_PID)
KP=$(port); truncate -s ${GIB}G "$DIR/nbdkit.img"
nbdkit -f -i 127.0.0.1 -p $KP -e vol file "$DIR/nbdkit.img" &
KIT_PID=$!; PIDS+=($KIT_PID)
sleep 1

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }   # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)

bench() { # name uri pid
  local name=$1 uri=$2 pid=$3
  nbdcopy --connections=4 "$DIR/src.img" "$uri"   # warm-up, untimed
  for c in 1 4; do
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local c0 t0 t1 c1
    c0=$(cpu $pid); t0=$(date +%s.%N)
    nbdcopy --connections=$c "$DIR/src.img" "$uri"
    nbdsh -u "$uri" -c 'h.flush()' 2>/dev/null || true
    t1=$(date +%s.%N); c1=$(cpu $pid)
    printf 'RESULT %-8s nbdcopy write  conns=%d  %8.1f MiB/s  server CPU %5.2f s/GiB\n' "$name" $c \
      "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    c0=$(cpu $pid); t0=$(date +%s.%N)
    nbdcopy --connections=$c "$uri" null:
    t1=$(date +%s.%N); c1=$(cpu $pid)
    printf 'RESULT %-8s nbdcopy read   conns=%d  %8.1f MiB/s  server CPU %5.2f s/GiB\n' "$name" $c \
      "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)"
  done
  for rw in randread randwrite; do
    local iops
    iops=$(fio --name=b --ioengine=nbd --uri="$uri" --rw=$rw --bs=4k --iodepth=16 --runtime=$SECS \
      --time_based --size=${GIB}G --output-format=json 2>/dev/null \
      | python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))')
    printf 'RESULT %-8s fio 4k %-9s QD16  %8d IOPS\n' "$name" $rw "$iops"
  done
}

peers() {
  if [ -z "${SKIP_PEER:-}" ]; then
    bench qemu-nbd "nbd://127.0.0.1:$QP/vol" $QEMU_PID
    bench nbdkit "nbd://127.0.0.1:$KP/vol" $KIT_PID
  fi
}
# PEER_FIRST=1: qemu-nbd and nbdkit go first (the first server of a run has measured
# slower on 4 GiB passes whichever it was: BENCHMARKS.md, 2026-12-07 morning).
if [ -n "${PEER_FIRST:-}" ]; then peers; fi
bench euca-sc "$SC_URI" $EUCA_PID
if [ -n "${EUCA_BEFORE:-}" ]; then
  WP2=$(port); SP2=$(port); NP2=$(port)
  "$EUCA_BEFORE" up --no-node --data "$DIR/before" --walrus-listen 127.0.0.1:$WP2 --sc-listen 127.0.0.1:$SP2 --nbd-listen 127.0.0.1:$NP2 --iscsi-listen 127.0.0.1:$(port) --cc-listen 127.0.0.1:$(port) --clc-listen 127.0.0.1:$(port) > "$DIR/before.log" 2>&1 &
  B_PID=$!; PIDS+=($B_PID)
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$SP2/_health >/dev/null && break; sleep 0.1; done
  VOL2=$("$EUCA_BEFORE" volume create --size-gib "$GIB" --data "$DIR/before")
  URI2=$("$EUCA_BEFORE" volume attach "$VOL2" --node 127.0.0.1 --data "$DIR/before")
  bench sc-before "$URI2" $B_PID
fi
if [ -z "${PEER_FIRST:-}" ]; then peers; fi
