#!/usr/bin/env bash
# Times `euca image install` (a bundle in Walrus becomes an installed image: pieces
# and an image manifest in Walrus) against `euca unbundle` of the same bundle from
# local files, in one run on the same disk. Issue 16's goal: install <= 1.2 x unbundle.
#
#   scripts/bench-image-install.sh [SIZE_MIB]     (default 2048)
#
# The image is half incompressible data and half zeros in alternating 1 MiB blocks
# (as scripts/bench-image-tools.sh). A fresh `euca up --no-node --net off` on free
# loopback ports serves Walrus; the bundle is made with `euca bundle-image` and
# uploaded with `euca upload-bundle` (not timed). Reported per step: wall seconds,
# peak RSS of the client process, and for the install the largest size the cloud's
# install staging directory (<data>/cloud/install) reached, sampled every 0.1 s.
# BENCH_DIR (default /var/tmp/euca-install-bench) must be on the disk to measure.
# EUCA=/path/to/euca measures that build instead of target/release/euca.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2048}
DIR=${BENCH_DIR:-/var/tmp/euca-install-bench}
if [ -z "${EUCA:-}" ]; then
  cargo build --release --locked --bin euca
  EUCA=$PWD/target/release/euca
fi
rm -rf "$DIR"; mkdir -p "$DIR"
. scripts/bench-lib.sh
bench_cleanup_on_exit "$DIR"

python3 - "$DIR/disk.img" "$SIZE" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(os.urandom(1 << 20) if i % 2 == 0 else bytes(1 << 20))
PY

WP=$(port)
"$EUCA" up --data "$DIR/data" --no-node --net off --walrus-listen "127.0.0.1:$WP" \
  --sc-listen "127.0.0.1:$(port)" --nbd-listen "127.0.0.1:$(port)" --iscsi-listen off \
  --cc-listen "127.0.0.1:$(port)" --clc-listen "127.0.0.1:$(port)" \
  --nc-listen "127.0.0.1:$(port)" > "$DIR/up.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 300); do
  [ -s "$DIR/data/credentials/eucarc" ] && curl -sf -o /dev/null "http://127.0.0.1:$WP/_health" && break
  sleep 0.1
done
[ -s "$DIR/data/credentials/eucarc" ] || { echo "euca up did not start:" >&2; tail "$DIR/up.log" >&2; exit 1; }

# CPU seconds (user + system) the cloud's process has used so far.
cloud_cpu() { echo "$(cpu "${PIDS[0]}") / $HZ" | bc -l | xargs printf '%.2f'; }
t() { # label command...: wall seconds, throughput, the command's CPU and peak RSS, the cloud's CPU
  local label=$1 c0 c1; shift
  c0=$(cloud_cpu)
  /usr/bin/time -f "%e %U %S %M" -o "$DIR/time" "$@" > "$DIR/out" 2> "$DIR/err" \
    || { echo "$label failed:" >&2; cat "$DIR/err" >&2; exit 1; }
  c1=$(cloud_cpu)
  read -r secs user sys kb < "$DIR/time"
  printf 'RESULT %-18s %6.2f s %7.1f MiB/s  CPU %5.2f s  peak RSS %4d MiB  cloud CPU %5.2f s\n' "$label" \
    "$secs" "$(echo "$SIZE / $secs" | bc -l)" "$(echo "$user + $sys" | bc -l)" "$((kb / 1024))" \
    "$(echo "$c1 - $c0" | bc -l)"
}

echo "== $(nproc) cores; image ${SIZE} MiB (half random, half zeros); $("$EUCA" --version 2>/dev/null || echo euca)"
# shellcheck disable=SC1091
( . "$DIR/data/credentials/eucarc"
  "$EUCA" bundle-image -i "$DIR/disk.img" -p disk.img -d "$DIR/bundle" -r x86_64 > /dev/null
  "$EUCA" upload-bundle -b bench -m "$DIR/bundle/disk.img.manifest.xml" > /dev/null )
sync
mkdir -p "$DIR/unbundled"
t "euca unbundle" "$EUCA" unbundle -m "$DIR/bundle/disk.img.manifest.xml" \
  -k "$DIR/data/cloud/cloud-pk.pem" -c "$DIR/data/credentials/admin-cert.pem" -d "$DIR/unbundled"
cmp "$DIR/disk.img" "$DIR/unbundled/disk.img"
rm -rf "$DIR/unbundled"; sync

STAGE=$DIR/data/cloud/install
( peak=0; while :; do
    s=$(du -sb "$STAGE" 2>/dev/null | awk '{print $1}' || true); s=${s:-0}
    [ "$s" -gt "$peak" ] && peak=$s && echo "$peak" > "$DIR/stage-peak"
    sleep 0.1
  done ) &
SAMPLER=$!; PIDS+=("$SAMPLER")
t "euca image install" "$EUCA" image install bench/disk.img.manifest.xml --data "$DIR/data"
kill "$SAMPLER" 2>/dev/null || true
echo "RESULT install staging peak $(( $(cat "$DIR/stage-peak" 2>/dev/null || echo 0) / 1048576 )) MiB"
sed 's/^/   /' "$DIR/err"
WANT=$(sha256sum "$DIR/disk.img" | awk '{print $1}')
grep -q "sha256 $WANT" "$DIR/err" || { echo "installed image's sha256 is not the source's ($WANT)" >&2; exit 1; }
echo "installed image sha256 matches the source"
