#!/usr/bin/env bash
# Benchmarks Walrus against s3s-fs (the nearest Rust peer) in one run, on the same
# data disk, with the project's own load generator (walrus-bench).
#
#   scripts/bench-walrus.sh [--large-mib N] [--small-count N]
#
# BENCH_DIR (default /var/tmp/euca-bench) must be on the disk to measure.
# EUCA_BEFORE=/path/to/euca also measures that (earlier) build in the same run;
# SKIP_PEER=1 leaves s3s-fs out.
# BENCH_PG=1 also measures Walrus with its metadata in PostgreSQL (a throwaway server
# in BENCH_DIR, fsync on, as the postgres user): one `euca up` front end, then two
# `euca walrus` front ends on one database and one blob directory driven at once;
# with the PostgreSQL statements and commits per request (pg_stat_statements).
# BENCH_BLOBS=s3 (with BENCH_PG=1) also measures large objects through one front end
# whose blobs go to a second S3 server (blob_url = "s3://…", a plain `euca walrus` on
# the same disk): small objects are inline in the metadata and never reach it.
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
PG_DATA=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_DATA" ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true; fi
  wait 2>/dev/null || true
  rm -rf "$BENCH_DIR"
}
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

if [ -n "${BENCH_PG:-}" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_PORT=$(port)
  PG_DATA="$BENCH_DIR/pg/data"
  mkdir -p "$BENCH_DIR/pg"; chown postgres: "$BENCH_DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust -U postgres --no-locale -E UTF8 >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$BENCH_DIR/pg/log" -w \
    -o "-p $PG_PORT -k $BENCH_DIR/pg -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements" start >/dev/null
  psql_q() { runuser -u postgres -- "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "${2:-postgres}" -c "$1"; }
  # Statements run (BEGIN and COMMIT included) and transactions committed, from
  # pg_stat_statements (exact once each statement ends).
  stmts() { psql_q "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$1'"; }
  commits() { psql_q "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$1' AND s.query = 'COMMIT'"; }
  per_put() { awk -v a="$1" -v b="$2" -v n="$SMALL" 'BEGIN {printf "%.2f", (b-a)/n}'; }
  psql_q "CREATE EXTENSION pg_stat_statements" >/dev/null
  echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), fsync on, synchronous_commit on"

  # One front end (euca up), metadata in PostgreSQL, blobs in a blob_url directory.
  psql_q "CREATE DATABASE walrus1" >/dev/null
  printf '[walrus]\nmeta_url = "postgres://postgres@127.0.0.1:%s/walrus1"\nblob_url = "file://%s/blobs1"\n' \
    "$PG_PORT" "$BENCH_DIR" > "$BENCH_DIR/pg1.toml"
  wp=$(port)
  target/release/euca up --no-node --config "$BENCH_DIR/pg1.toml" --data "$BENCH_DIR/walrus" \
    --walrus-listen "127.0.0.1:$wp" > "$BENCH_DIR/walrus-pg.log" 2>&1 &
  wpid=$!; PIDS+=("$wpid")
  wait_http "http://127.0.0.1:$wp/_health"
  # shellcheck disable=SC1091
  . "$BENCH_DIR/walrus/credentials/eucarc"
  b=(target/release/walrus-bench --endpoint "http://127.0.0.1:$wp" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY")
  "${b[@]}" --label walrus-pg --scenarios put,get --large-mib "$LARGE_MIB" --bucket large
  c0=$(commits walrus1); s0=$(stmts walrus1)
  "${b[@]}" --label walrus-pg --scenarios small-put --small-count "$SMALL" --bucket small
  c1=$(commits walrus1); s1=$(stmts walrus1)
  "${b[@]}" --label walrus-pg --scenarios small-get --small-count "$SMALL" --bucket small
  s2=$(stmts walrus1)
  echo "RESULT walrus-pg pg-statements-per-small-put $(per_put "$s0" "$s1")"
  echo "RESULT walrus-pg pg-commits-per-small-put $(per_put "$c0" "$c1")"
  echo "RESULT walrus-pg pg-statements-per-small-get $(per_put "$s1" "$s2")"
  kill "$wpid"; wait "$wpid" 2>/dev/null || true
  rm -rf "$BENCH_DIR/walrus" "$BENCH_DIR/blobs1"

  if [ "${BENCH_BLOBS:-}" = s3 ]; then
    # The blob store: a plain `euca walrus` with a bucket for the blobs.
    bp=$(port)
    target/release/euca walrus --data "$BENCH_DIR/blob-backend" --listen "127.0.0.1:$bp" \
      > "$BENCH_DIR/blob-backend.log" 2>&1 &
    bpid=$!; PIDS+=("$bpid")
    wait_http "http://127.0.0.1:$bp/_health"
    for _ in $(seq 100); do [ -s "$BENCH_DIR/blob-backend/credentials/eucarc" ] && break; sleep 0.1; done
    # shellcheck disable=SC1091
    . "$BENCH_DIR/blob-backend/credentials/eucarc"
    AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
      python3 -c 'import boto3,sys; boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket="blob-store")' \
      "http://127.0.0.1:$bp"
    psql_q "CREATE DATABASE walrus3" >/dev/null
    printf '[walrus]\nmeta_url = "postgres://postgres@127.0.0.1:%s/walrus3"\nblob_url = "s3://blob-store/fe?endpoint=http://127.0.0.1:%s&region=us-east-1"\n' \
      "$PG_PORT" "$bp" > "$BENCH_DIR/pg3.toml"
    wp=$(port)
    target/release/euca up --no-node --config "$BENCH_DIR/pg3.toml" --data "$BENCH_DIR/walrus" \
      --walrus-listen "127.0.0.1:$wp" > "$BENCH_DIR/walrus-pg-s3.log" 2>&1 &
    wpid=$!; PIDS+=("$wpid")
    wait_http "http://127.0.0.1:$wp/_health"
    # shellcheck disable=SC1091
    . "$BENCH_DIR/walrus/credentials/eucarc"
    target/release/walrus-bench --endpoint "http://127.0.0.1:$wp" --access-key "$AWS_ACCESS_KEY_ID" \
      --secret-key "$AWS_SECRET_ACCESS_KEY" --label walrus-pg-s3blobs --scenarios put,get,rangeget \
      --large-mib "$LARGE_MIB" --bucket large
    kill "$wpid" "$bpid"; wait "$wpid" "$bpid" 2>/dev/null || true
    rm -rf "$BENCH_DIR/walrus" "$BENCH_DIR/blob-backend"
  fi

  # Two front ends (euca walrus --identity) on one database and one blob directory,
  # driven at once: each gets half the objects in a bucket of its own.
  psql_q "CREATE DATABASE walrus2" >/dev/null
  printf '[walrus]\nmeta_url = "postgres://postgres@127.0.0.1:%s/walrus2"\nblob_url = "file://%s/blobs2"\n' \
    "$PG_PORT" "$BENCH_DIR" > "$BENCH_DIR/pg2.toml"
  cp_=$(port); fa=$(port); fb=$(port)
  target/release/euca clc --data "$BENCH_DIR/clc" --listen "127.0.0.1:$cp_" \
    --s3-url "http://127.0.0.1:$fa/" > "$BENCH_DIR/clc.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$cp_/_health"
  for _ in $(seq 100); do [ -s "$BENCH_DIR/clc/credentials/services.toml" ] && break; sleep 0.1; done
  for f in "a $fa" "b $fb"; do
    read -r name p <<< "$f"
    target/release/euca walrus --config "$BENCH_DIR/pg2.toml" --data "$BENCH_DIR/fe-$name" \
      --listen "127.0.0.1:$p" --identity "$BENCH_DIR/clc/credentials/services.toml" > "$BENCH_DIR/fe-$name.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$p/_health"
  done
  # shellcheck disable=SC1091
  . "$BENCH_DIR/clc/credentials/eucarc"
  both() { # scenario
    local half=$(( SMALL / 2 )) name port bench=()
    for f in "a $fa" "b $fb"; do
      read -r name port <<< "$f"
      target/release/walrus-bench --endpoint "http://127.0.0.1:$port" --access-key "$AWS_ACCESS_KEY_ID" \
        --secret-key "$AWS_SECRET_ACCESS_KEY" --label "walrus-pg-2fe-$name" --scenarios "$1" \
        --small-count "$half" --large-mib "$LARGE_MIB" --bucket "two-$name" &
      bench+=($!)
    done
    wait "${bench[@]}"
  }
  both put
  c0=$(commits walrus2); s0=$(stmts walrus2)
  both small-put
  c1=$(commits walrus2); s1=$(stmts walrus2)
  both small-get
  echo "RESULT walrus-pg-2fe pg-statements-per-small-put $(per_put "$s0" "$s1")"
  echo "RESULT walrus-pg-2fe pg-commits-per-small-put $(per_put "$c0" "$c1")"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
fi
[ -z "${SKIP_PEER:-}" ] || exit 0

# s3s-fs on the same disk
SP=$(port)
mkdir -p "$BENCH_DIR/s3s-fs"
"$S3SFS" --host 127.0.0.1 --port "$SP" --access-key AKBENCH --secret-key SKBENCHSECRET "$BENCH_DIR/s3s-fs" > "$BENCH_DIR/s3s.log" 2>&1 &
SPID=$!; PIDS+=("$SPID")
wait_http "http://127.0.0.1:$SP/"
run_one s3s-fs "$SPID" "http://127.0.0.1:$SP" AKBENCH SKBENCHSECRET
