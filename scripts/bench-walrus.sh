#!/usr/bin/env bash
# Benchmarks Walrus against s3s-fs (the nearest Rust peer) in one run, on the same
# data disk, with the project's own load generator (walrus-bench).
#
#   scripts/bench-walrus.sh [--large-mib N] [--small-count N]
#
# BENCH_DIR (default /var/tmp/euca-bench) must be on the disk to measure.
# EUCA_BEFORE=/path/to/euca also measures that (earlier) build in the same run;
# SKIP_PEER=1 leaves s3s-fs out.
# Installs s3s-fs 0.14.1 with cargo if it is not on PATH or in /opt/s3s-fs/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
LARGE_MIB=2048
SMALL=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --large-mib) LARGE_MIB=$2; shift 2 ;;
    --small-count) SMALL=$2; shift 2 ;;
    *) echo "unknown arg $1" >&2; exit 2 ;;
  esac
done
BENCH_DIR=${BENCH_DIR:-/var/tmp/euca-bench}
S3SFS=$(command -v s3s-fs || true)
[ -n "$S3SFS" ] || S3SFS=/opt/s3s-fs/bin/s3s-fs
if [ ! -x "$S3SFS" ]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root /opt/s3s-fs
fi
cargo build --release --locked --bin euca --bin walrus-bench
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$BENCH_DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# Peak RSS of a process since the last reset (VmHWM), in MiB.
hwm() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
reset_hwm() { echo 5 > "/proc/$1/clear_refs"; }

run_one() { # label pid endpoint ak sk
  local label=$1 pid=$2 ep=$3 ak=$4 sk=$5
  local b=(target/release/walrus-bench --endpoint "$ep" --access-key "$ak" --secret-key "$sk" --label "$label")
  "${b[@]}" --scenarios put,get,mpput,rangeget --large-mib "$LARGE_MIB" --bucket large
  "${b[@]}" --scenarios small-put,small-get --small-count "$SMALL" --bucket small
  reset_hwm "$pid"
  "${b[@]}" --scenarios concurrent-put --concurrent 16 --concurrent-mib 256 --bucket conc
  echo "RESULT $label peak-rss-16x256MiB-put $(hwm "$pid") MiB"
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, $(uname -r); data disk: $(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}')"
target/release/walrus-bench --endpoint http://127.0.0.1:1 --access-key x --secret-key x --scenarios md5 --label machine

# Walrus (and, with EUCA_BEFORE=/path/to/euca, an earlier build of it in the same run)
walrus_run() { # label binary
  local label=$1 bin=$2 wp wpid
  wp=$(port)
  "$bin" up --data "$BENCH_DIR/walrus" --walrus-listen "127.0.0.1:$wp" > "$BENCH_DIR/walrus.log" 2>&1 &
  wpid=$!; PIDS+=("$wpid")
  wait_http "http://127.0.0.1:$wp/_health"
  # shellcheck disable=SC1091
  . "$BENCH_DIR/walrus/credentials/eucarc"
  run_one "$label" "$wpid" "http://127.0.0.1:$wp" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
  kill "$wpid"; wait "$wpid" 2>/dev/null || true
  rm -rf "$BENCH_DIR/walrus"
}
walrus_run walrus target/release/euca
if [ -n "${EUCA_BEFORE:-}" ]; then walrus_run walrus-before "$EUCA_BEFORE"; fi
[ -z "${SKIP_PEER:-}" ] || exit 0

# s3s-fs on the same disk
SP=$(port)
mkdir -p "$BENCH_DIR/s3s-fs"
"$S3SFS" --host 127.0.0.1 --port "$SP" --access-key AKBENCH --secret-key SKBENCHSECRET "$BENCH_DIR/s3s-fs" > "$BENCH_DIR/s3s.log" 2>&1 &
SPID=$!; PIDS+=("$SPID")
wait_http "http://127.0.0.1:$SP/"
run_one s3s-fs "$SPID" "http://127.0.0.1:$SP" AKBENCH SKBENCHSECRET
