#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each (default 300) and fails
# if any finds a panic, an allocation past the limits or a hang.
# Usage: scripts/fuzz.sh [seconds-per-target] [target ...]
#   FUZZ_JOBS=N              targets run at once (default: number of CPUs)
#   FUZZ_SANITIZER=address   build with ASan (default none: 2-3x the executions/s;
#                            the code under test is safe Rust, so panics, overflow
#                            and allocation limits are what there is to find)
#   FUZZ_WORK=DIR            where grown corpora are kept between runs (default
#                            fuzz/target/corpus; the committed seeds in fuzz/corpus/
#                            are read, never written)
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# A finding leaves its input in fuzz/artifacts/TARGET/; replay it with
#   fuzz/target/<host>/release/TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-300}
shift || true
# cargo-fuzz runs on stable Rust with RUSTC_BOOTSTRAP=1: no nightly toolchain needed.
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: cargo install cargo-fuzz --locked --version 0.13.2"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing after its install (is ~/.cargo/bin on PATH?)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
jobs=${FUZZ_JOBS:-$(nproc)}
work=${FUZZ_WORK:-$PWD/target/corpus}
host=$(rustc -vV | sed -n 's/^host: //p')
bin=$PWD/target/$host/release

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

start=$(date +%s)
# Debug assertions and overflow checks on (-a): arithmetic overflow is a finding.
cargo metadata --locked --format-version 1 >/dev/null   # fuzz/Cargo.lock is current
cargo fuzz build -s "${FUZZ_SANITIZER:-none}" -a
echo "fuzz: instrumented build $(( $(date +%s) - start )) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() {
  local t=$1 seeds=()
  [ -d "corpus/$t" ] && seeds=("corpus/$t")
  mkdir -p "$work/$t" "artifacts/$t"
  # Limits: no single allocation over 64 MiB, RSS under 1 GiB, no input over 10 s.
  if "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" \
      -rss_limit_mb=1024 -malloc_limit_mb=64 -timeout=10 -max_len=16384 \
      -print_final_stats=1 "$work/$t" "${seeds[@]}" >"$logs/$t" 2>&1; then
    local runs rate
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t" | tail -1)
    echo "fuzz: $t ok: $runs runs, $rate exec/s"
  else
    echo "fuzz: $t FAILED; end of its log:"
    tail -n 40 "$logs/$t"
    touch "$logs/$t.failed"
  fi
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$t" &
done
wait
echo "fuzz: total $(( $(date +%s) - start )) s"
failed=$(find "$logs" -name '*.failed' -printf '%f ' | sed 's/\.failed / /g')
if [ -n "$failed" ]; then
  echo "fuzz: findings in $failed(inputs in fuzz/artifacts/)" >&2
  exit 1
fi
