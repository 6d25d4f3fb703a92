#!/usr/bin/env bash
# The SC's iSCSI target (`euca up`, a volume attached with --protocol iscsi to
# 127.0.0.1, CHAP on) against tgtd (thin-provisioned file LUN, no CHAP), in the
# same run on the same disk, through QEMU's libiscsi driver and libiscsi's own
# benchmark:
#   qemu-img bench, 256 KiB sequential writes then reads, queue depth 16, the
#     whole export once each (MiB/s, and the server's CPU seconds per GiB);
#   qemu-img bench, 4 KiB writes at queue depth 16 (sequential offsets: the tool
#     has no random mode), for BENCH_4K_OPS requests (default 100000);
#   iscsi-perf -r, 4 KiB random reads with 16 in flight for SECONDS.
# BENCH_4K_ROUNDS=N repeats the 4 KiB write row N times in all, alternating.
#
#   scripts/bench-iscsi.sh [SIZE_GIB] [SECONDS]      (defaults 2, 15)
#
# Root (tgtd). EUCA_BIN=path/to/euca benches that binary instead of building
# this checkout; BENCH_DIR moves the scratch directory. Each sequential pass starts
# with bench_pass_start (scripts/bench-lib.sh: page cache kept; COLD=1 drops it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
GIB=${1:-2}
SECS=${2:-15}
OPS4K=${BENCH_4K_OPS:-100000}
DIR=${BENCH_DIR:-/var/tmp/euca-iscsi-bench}
[ "$(id -u)" -eq 0 ] || { echo "bench-iscsi: must run as root (tgtd)" >&2; exit 1; }
need=()
command -v iscsi-perf >/dev/null || need+=(libiscsi-bin)
command -v tgtd >/dev/null || need+=(tgt)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1 \
  || { echo "bench-iscsi: QEMU's iSCSI driver is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
if [ -n "${EUCA_BIN:-}" ]; then
  EUCA=$EUCA_BIN
else
  cargo build --release --locked --bin euca
  EUCA=$PWD/target/release/euca
fi
rm -rf "$DIR"; mkdir -p "$DIR"
PIDS=()
CTL=
cleanup() {
  # tgtd ignores SIGTERM while it has targets.
  [ -n "$CTL" ] && tgtadm -C "$CTL" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== $(nproc) cores; ${GIB} GiB export; $(qemu-img --version | head -1); tgtd $(dpkg-query -W -f='${Version}' tgt); libiscsi $(dpkg-query -W -f='${Version}' libiscsi-bin)"

# --- the targets --------------------------------------------------------------------
SP=$(port); IP=$(port)
"$EUCA" up --data "$DIR/euca" --walrus-listen 127.0.0.1:$(port) --sc-listen 127.0.0.1:$SP \
  --nbd-listen 127.0.0.1:$(port) --iscsi-listen 127.0.0.1:$IP --cc-listen 127.0.0.1:$(port) \
  --clc-listen 127.0.0.1:$(port) --no-node > "$DIR/euca.log" 2>&1 &
EUCA_PID=$!; PIDS+=($EUCA_PID)
for _ in $(seq 100); do curl -sf http://127.0.0.1:$SP/_health >/dev/null && break; sleep 0.1; done
VOL=$("$EUCA" volume create --size-gib "$GIB" --data "$DIR/euca")
SC_URI=$("$EUCA" volume attach "$VOL" --node 127.0.0.1 --protocol iscsi --data "$DIR/euca")

TP=$(port); CTL=$(( (TP % 1000) + 100 ))
truncate -s ${GIB}G "$DIR/tgt.img"
tgtd -f -C $CTL --iscsi portal=127.0.0.1:$TP > "$DIR/tgtd.log" 2>&1 &
TGT_PID=$!; PIDS+=($TGT_PID)
for _ in $(seq 50); do tgtadm -C $CTL --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
TIQN=iqn.2026-12.bench.tgt:vol
tgtadm -C $CTL --lld iscsi --op new --mode target --tid 1 -T $TIQN
tgtadm -C $CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DIR/tgt.img"
tgtadm -C $CTL --lld iscsi --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
tgtadm -C $CTL --lld iscsi --op bind --mode target --tid 1 -I ALL
TGT_URI="iscsi://127.0.0.1:$TP/$TIQN/1"

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }   # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)

# 4 KiB writes at QD16: IOPS, and the CPU time per write of the server and of the
# client (qemu-img; when it is near its wall time, the client is the limit).
w4k() { # name uri pid
  local name=$1 uri=$2 pid=$3 t0 t1 c0 c1 client
  c0=$(cpu $pid); t0=$(date +%s.%N)
  /usr/bin/time -o "$DIR/time.out" -f '%U %S' qemu-img bench -w -f raw -d 16 -s 4K -c $OPS4K "$uri" >/dev/null 2>&1
  client=$(tail -1 "$DIR/time.out")
  t1=$(date +%s.%N); c1=$(cpu $pid)
  printf 'RESULT %-6s 4K writes      QD16  %8.0f IOPS  server CPU %5.1f us/op  client CPU %5.1f us/op  wall %5.1f us/op\n' "$name" \
    "$(echo "$OPS4K / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ * 1000000 / $OPS4K" | bc -l)" \
    "$(echo "($(echo "$client" | tr ' ' '+')) * 1000000 / $OPS4K" | bc -l)" "$(echo "($t1 - $t0) * 1000000 / $OPS4K" | bc -l)"
}

bench() { # name uri pid
  local name=$1 uri=$2 pid=$3 n=$(( GIB * 4096 ))
  for mode in write read; do
    local w=""; [ $mode = write ] && w=-w
    bench_pass_start
    local c0 t0 t1 c1
    c0=$(cpu $pid); t0=$(date +%s.%N)
    qemu-img bench $w -f raw -d 16 -s 256K -c $n "$uri" 2>&1 | grep -v warning >/dev/null
    t1=$(date +%s.%N); c1=$(cpu $pid)
    printf 'RESULT %-6s 256K seq %-5s QD16  %8.1f MiB/s  server CPU %5.2f s/GiB\n' "$name" $mode \
      "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)"
  done
  w4k "$name" "$uri" "$pid"
  # iscsi-perf prints its running rate, then "iops average N (… MB/s)" at the end.
  local iops
  iops=$(timeout $((SECS + 30)) iscsi-perf -r -b 8 -m 16 -t $SECS "$uri" 2>&1 \
    | tr '\r' '\n' | grep -oE '^iops average [0-9]+' | tail -1 | grep -oE '[0-9]+' || echo 0)
  printf 'RESULT %-6s 4K randread    QD16  %8d IOPS\n' "$name" "${iops:-0}"
}

bench euca "$SC_URI" $EUCA_PID
bench tgtd "$TGT_URI" $TGT_PID
# The 4 KiB write row moves by ±20 % run to run on a shared 2-core machine: more
# rounds, alternating, when BENCH_4K_ROUNDS asks for them.
for _ in $(seq 2 "${BENCH_4K_ROUNDS:-1}"); do
  w4k euca "$SC_URI" $EUCA_PID
  w4k tgtd "$TGT_URI" $TGT_PID
done
