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
# Each measurement is taken ROUNDS times (default 5) per server, the servers taking
# turns pass by pass and each round starting with the next server, so none always
# runs first or right after the same one; each row prints every pass and the
# median per server. On this 2-core host a fixed order ranked the servers by their
# position at 4 GiB, which outruns the kernel's dirty-page limits (BENCHMARKS.md,
# 2026-12-07). Before any timed pass every server's export is written once, untimed
# (the first passes after the source file is made ran up to 2-3x slower).
#
# Every pass starts with bench_pass_start (scripts/bench-lib.sh): dirty pages written
# back, page cache kept (COLD=1 drops it), so the passes measure the servers rather
# than this VM's host page faults. Every fio pass also starts from the same
# page-cache state for every server: the export written once more by nbdcopy
# (untimed), so the whole file is cached in the folios those 256 KiB writes make.
# ext4's large folios make 4 KiB random writes 2-4x slower into a file a sequential
# read from disk left in 2 MiB folios than into one in 256 KiB or 4 KiB folios, for
# every server alike; without this, the server whose read pass came last carried that
# state into the fio rows (BENCHMARKS.md, 2026-12-07). The first round prints each
# file's state (scripts/page-cache-folios.py).
#
# EUCA_BIN=path/to/euca benches that binary instead of building this checkout;
# EUCA_BEFORE=/path/to/euca also measures that (earlier) build in the same run;
# SKIP_PEER=1 leaves qemu-nbd and nbdkit out; ROWS=copy or ROWS=fio runs only the
# nbdcopy or the fio rows; PERF=DIR records `perf record -g` of each server over its
# fio passes (DIR/<server>-<rw>.data, the last round's); BENCH_DIR moves the scratch
# directory.
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-4}
SECS=${2:-15}
DIR=${BENCH_DIR:-/var/tmp/euca-sc-bench}
for t in nbdcopy nbdkit qemu-nbd fio; do
  command -v $t >/dev/null || { echo "missing $t: run scripts/install-test-deps.sh" >&2; exit 1; }
done
. scripts/bench-lib.sh
bench_setup "$DIR"

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

NAMES=(euca-sc); URIS=("$SC_URI"); SPIDS=($EUCA_PID); FILES=("$DIR/euca/sc/volumes/$VOL.img")
if [ -z "${SKIP_PEER:-}" ]; then
  NAMES+=(qemu-nbd nbdkit); URIS+=("nbd://127.0.0.1:$QP/vol" "nbd://127.0.0.1:$KP/vol"); SPIDS+=($QEMU_PID $KIT_PID)
  FILES+=("$DIR/qemu.img" "$DIR/nbdkit.img")
fi
if [ -n "${EUCA_BEFORE:-}" ]; then
  WP2=$(port); SP2=$(port); NP2=$(port)
  "$EUCA_BEFORE" up --no-node --data "$DIR/before" --walrus-listen 127.0.0.1:$WP2 --sc-listen 127.0.0.1:$SP2 --nbd-listen 127.0.0.1:$NP2 --iscsi-listen 127.0.0.1:$(port) --cc-listen 127.0.0.1:$(port) --clc-listen 127.0.0.1:$(port) > "$DIR/before.log" 2>&1 &
  B_PID=$!; PIDS+=($B_PID)
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$SP2/_health >/dev/null && break; sleep 0.1; done
  VOL2=$("$EUCA_BEFORE" volume create --size-gib "$GIB" --data "$DIR/before")
  NAMES+=(sc-before); URIS+=("$("$EUCA_BEFORE" volume attach "$VOL2" --node 127.0.0.1 --data "$DIR/before")"); SPIDS+=($B_PID)
  FILES+=("$DIR/before/sc/volumes/$VOL2.img")
fi
ROUNDS=${ROUNDS:-5}
N=${#NAMES[@]}
OUT=$DIR/passes   # row <tab> server <tab> value [<tab> CPU s/GiB]

for k in $(seq 0 $((N - 1))); do nbdcopy --connections=4 "$DIR/src.img" "${URIS[$k]}"; done   # warm-up, untimed

copy() { # row conns server-index: one timed nbdcopy pass
  local row=$1 c=$2 k=$3 c0 t0 t1 c1 mibs cpus
  bench_pass_start
  c0=$(cpu ${SPIDS[$k]}); t0=$(date +%s.%N)
  if [ "$row" = write ]; then
    nbdcopy --connections=$c "$DIR/src.img" "${URIS[$k]}"
    bench_flush "${URIS[$k]}"
  else
    nbdcopy --connections=$c "${URIS[$k]}" null:
  fi
  t1=$(date +%s.%N); c1=$(cpu ${SPIDS[$k]})
  mibs=$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l); cpus=$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)
  printf 'PASS   %-9s nbdcopy %-5s conns=%d  %8.1f MiB/s  server CPU %5.2f s/GiB\n' "${NAMES[$k]}" $row $c "$mibs" "$cpus"
  printf 'nbdcopy %s conns=%d\t%s\t%s\t%s\n' $row $c "${NAMES[$k]}" "$mibs" "$cpus" >> "$OUT"
}

STATES=0
fio_pass() { # rw server-index: one fio run, from the same page-cache state for all
  local rw=$1 k=$2 iops rec=
  bench_pass_start
  nbdcopy --connections=4 "$DIR/src.img" "${URIS[$k]}"
  bench_flush "${URIS[$k]}"
  if [ $STATES -lt $N ]; then
    echo "STATE  ${NAMES[$k]}: $(python3 scripts/page-cache-folios.py "${FILES[$k]}" 2>&1)"; STATES=$((STATES + 1))
  fi
  if [ -n "${PERF:-}" ]; then   # the server's profile of its last pass of each fio row
    perf record -q -g -p "${SPIDS[$k]}" -o "$PERF/${NAMES[$k]}-$rw.data" > /dev/null 2>&1 & rec=$!; sleep 0.3
  fi
  iops=$(fio --name=b --ioengine=nbd --uri="${URIS[$k]}" --rw=$rw --bs=4k --iodepth=16 --runtime=$SECS \
    --time_based --size=${GIB}G --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))')
  if [ -n "$rec" ]; then kill -INT "$rec"; wait "$rec" || true; fi
  printf 'PASS   %-9s fio 4k %-9s QD16  %8d IOPS\n' "${NAMES[$k]}" $rw "$iops"
  printf 'fio 4k %s QD16\t%s\t%s\n' $rw "${NAMES[$k]}" "$iops" >> "$OUT"
}

turns() { # command args...: ROUNDS rounds, every server once per round, rotating who starts
  local r j
  for r in $(seq 0 $((ROUNDS - 1))); do
    for j in $(seq 0 $((N - 1))); do "$@" $(((r + j) % N)); done
  done
}

ROWS=${ROWS:-copy fio}
if [[ " $ROWS " == *" copy "* ]]; then
  for c in 1 4; do
    turns copy write $c
    turns copy read $c
  done
fi
if [[ " $ROWS " == *" fio "* ]]; then
  turns fio_pass randread
  turns fio_pass randwrite
fi

python3 - "$OUT" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, server, *vals = line.rstrip("\n").split("\t")
    rows.setdefault(row, {}).setdefault(server, []).append([float(v) for v in vals])
for row, servers in rows.items():
    for server, passes in servers.items():
        med = [statistics.median(p[i] for p in passes) for i in range(len(passes[0]))]
        if len(med) == 2:
            print(f"RESULT {server:<9} {row:<20} median {med[0]:8.1f} MiB/s  server CPU {med[1]:5.2f} s/GiB"
                  f"  ({len(passes)} passes)")
        else:
            print(f"RESULT {server:<9} {row:<20} median {med[0]:8.0f} IOPS  ({len(passes)} passes)")
PYEOF
