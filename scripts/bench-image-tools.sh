#!/usr/bin/env bash
# Bundles and unbundles one image with `euca bundle-image` / `euca unbundle` and, in
# the same run on the same file, with the tool pipelines euca2ools drives:
#   tar | pigz | openssl enc -aes-128-cbc | split      and the reverse (gunzip).
#
#   scripts/bench-image-tools.sh [SIZE_MIB]     (default 2048)
#
# The image is half incompressible data and half zeros, in alternating 1 MiB blocks,
# like a filesystem image with free space. Installs pigz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2048}
DIR=${BENCH_DIR:-/var/tmp/euca-image-bench}
command -v pigz >/dev/null || { apt-get update -qq && apt-get install -y -qq pigz; }
cargo build --release --locked --bin euca
EUCA=$PWD/target/release/euca
FIX=$PWD/image-tools/tests/fixtures/keys
rm -rf "$DIR"; mkdir -p "$DIR"; trap 'rm -rf "$DIR"' EXIT
python3 - "$DIR/disk.img" "$SIZE" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(os.urandom(1 << 20) if i % 2 == 0 else bytes(1 << 20))
PY
sync
t() { # label command...: prints wall seconds and peak RSS
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$DIR/time" "$@" > /dev/null
  read -r secs kb < "$DIR/time"
  printf 'RESULT %-28s %7.2f s  %7.1f MiB/s  peak RSS %5d MiB\n' "$label" "$secs" "$(echo "$SIZE / $secs" | bc -l)" "$((kb / 1024))"
}
echo "== $(nproc) cores; image ${SIZE} MiB (half random, half zeros); $(pigz --version 2>&1); $(openssl version)"
KEY=00112233445566778899aabbccddeeff; IV=0f0e0d0c0b0a09080706050403020100
mkdir -p "$DIR/ours" "$DIR/peer" "$DIR/out-ours" "$DIR/out-peer"
t "euca bundle-image" "$EUCA" bundle-image -i "$DIR/disk.img" -d "$DIR/ours" -u 123456789012 \
  -c "$FIX/user-cert.pem" -k "$FIX/user-pk.pem" --ec2cert "$FIX/cloud-cert.pem"
t "tar|pigz|openssl|split" bash -c "cd '$DIR' && tar -cf - disk.img | pigz -6 | openssl enc -aes-128-cbc -K $KEY -iv $IV | split -b 10485760 -d -a 3 - peer/disk.img.part."
t "euca unbundle" "$EUCA" unbundle -m "$DIR/ours/disk.img.manifest.xml" -k "$FIX/cloud-pk.pem" -c "$FIX/user-cert.pem" -d "$DIR/out-ours"
t "cat|openssl -d|gunzip|tar" bash -c "cat '$DIR'/peer/disk.img.part.* | openssl enc -d -aes-128-cbc -K $KEY -iv $IV | gunzip | tar -xf - -C '$DIR/out-peer'"
t "cat|openssl -d|pigz -d|tar" bash -c "cat '$DIR'/peer/disk.img.part.* | openssl enc -d -aes-128-cbc -K $KEY -iv $IV | pigz -d | tar -xf - -C '$DIR/out-peer'"
cmp "$DIR/disk.img" "$DIR/out-ours/disk.img" && cmp "$DIR/disk.img" "$DIR/out-peer/disk.img" && echo "outputs identical"
