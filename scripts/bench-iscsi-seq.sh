#!/usr/bin/env bash
# Sequential 256 KiB writes (QD16, `qemu-img bench` through QEMU's libiscsi driver)
# onto an iSCSI volume whose blocks are already allocated, alternating two builds so
# that disk and page-cache drift hits both alike (scripts/bench-iscsi.sh measures
# the first write onto a new volume, against tgtd).
#
#   scripts/bench-iscsi-seq.sh [SIZE_GIB] [ROUNDS]      (defaults 4 3)
#
# Each build gets its own `euca up` and volume, filled once (printed as "+new");
# then each round one pass per build, each started by bench_pass_start
# (scripts/bench-lib.sh: page cache kept; COLD=1 drops it). Prints
# MiB/s and the server's CPU seconds per GiB. EUCA_BIN=path/to/euca benches that
# binary instead of building this checkout; EUCA_BEFORE=path/to/another/euca adds
# that build ("before") to every round.
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-4}; ROUNDS=${2:-3}
DIR=${BENCH_DIR:-/var/tmp/euca-iscsi-seq}
. scripts/bench-lib.sh
bench_setup "$DIR"

bench_volume "$EUCA" euca "$GIB" iscsi; SERVERS=("euca-sc $URI $PID")
if [ -n "${EUCA_BEFORE:-}" ]; then bench_volume "$EUCA_BEFORE" before "$GIB" iscsi; SERVERS+=("before $URI $PID"); fi

pass() { # name uri pid
  bench_pass_start
  local c0 t0 t1 c1
  c0=$(cpu "$3"); t0=$(date +%s.%N)
  qemu-img bench -w -f raw -d 16 -s 256K -c $(( GIB * 4096 )) "$2" 2>&1 | grep -v warning > /dev/null
  t1=$(date +%s.%N); c1=$(cpu "$3")
  printf 'RESULT %-12s 256K seq write QD16 %8.1f MiB/s  server CPU %5.2f s/GiB\n' "$1" \
    "$(echo "$GIB * 1024 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) / $HZ / $GIB" | bc -l)"
}
echo "== $(nproc) cores; ${GIB} GiB; $(qemu-img --version | head -1)"
for s in "${SERVERS[@]}"; do read -r n u p <<< "$s"; pass "$n+new" "$u" "$p"; done
for _ in $(seq "$ROUNDS"); do
  for s in "${SERVERS[@]}"; do read -r n u p <<< "$s"; pass "$n" "$u" "$p"; done
done
