#!/usr/bin/env bash
# Benchmarks the node image cache (euca nc-cache + the euca cc tracker) on an
# emulated cluster: Walrus in namespace wt-cloud behind one shaped uplink
# (UPLINK_MBIT), N nodes behind a non-blocking switch (NODE_MBIT per node), built
# by the shared testbed script cloud-netns.sh.  For each N and mode, N empty
# caches fetch one IMAGE_MIB random image at the same moment, and it reports:
#   uplink_ratio  bytes the cloud sent on its uplink / image bytes (1.0 is ideal:
#                 each byte crosses the uplink once, the nodes share the rest)
#   seconds       start of the fetches -> the last one verified complete
# Modes: peer   (tracker + peer fetch: line "peer-fetch N=..")
#        direct (--no-tracker: every node reads Walrus: line "direct N=..")
# After each run node1 fetches again (warm: served from its cache, no uplink
# traffic).  KILL=1 adds "peer-fetch-kill" at N=4: node2's daemon is killed -9
# once the nodes together hold half of all the bytes; the others must finish.
# Every node's image is checked against the source's sha256.  Each run also prints
# where the machine's CPU went while the nodes fetched ("cpu N=..": /proc/stat over
# the fetch window, all cores), and PERF=file records `perf record -a -g` over it
# (over the last run's window when several N are given).
#
#   scripts/bench-image-cache.sh [N...]        (default: 2 4 8; 16 when asked)
# Env: IMAGE_MIB (256) UPLINK_MBIT (200) NODE_MBIT (1000) MODES ("peer direct")
#      KILL (0) KEEP_LOGS (a directory to copy the process logs to) EUCA_BIN (target/release/euca) TESTBED
#      (scripts/testbed/cloud-netns.sh) BENCH_DIR (/var/tmp).  Needs root; builds nothing.
set -euo pipefail
unset RUST_BACKTRACE
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TESTBED=${TESTBED:-"$ROOT/scripts/testbed/cloud-netns.sh"}
EUCA=${EUCA_BIN:-$ROOT/target/release/euca}
IMAGE_MIB=${IMAGE_MIB:-256} UPLINK_MBIT=${UPLINK_MBIT:-200} NODE_MBIT=${NODE_MBIT:-1000}
MODES=${MODES:-"peer direct"} KILL=${KILL:-0}
[ $# -gt 0 ] || set -- 2 4 8

die() { echo "bench-image-cache: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc)"
[ -f "$TESTBED" ] || die "testbed script not found at $TESTBED (set TESTBED=/path/to/cloud-netns.sh)"
TESTBED=$(cd "$(dirname "$TESTBED")" && pwd)/$(basename "$TESTBED")
[ -x "$EUCA" ] || die "no euca binary at $EUCA (cargo build --release -p euca, or set EUCA_BIN)"
for n in "$@"; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$n'"; done
for t in curl sha256sum awk ip tc; do command -v $t >/dev/null || die "missing $t"; done

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/euca-imgcache-bench.XXXXXX")
LOGS=$WORK/logs DATA=$WORK/cloud
mkdir -p "$LOGS"
PIDS=() NODE_IP=() RUN=setup IMAGE_ID=""

tb() { bash "$TESTBED" "$@"; }
cpu_ticks() { awk '/^cpu / {print $2 + $3, $4, $7 + $8, $5 + $6, $9}' /proc/stat; }
cpu_share() { # n "user sys irq idle steal" (before) "..." (after): shares of all cores' time
  awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { split(a, x); split(b, y); t = 0
    for (i = 1; i <= 5; i++) { d[i] = y[i] - x[i]; t += d[i] }
    if (t <= 0) t = 1
    printf "cpu N=%d busy=%.0f%% user=%.0f%% sys=%.0f%% irq+softirq=%.0f%% idle+iowait=%.0f%% steal=%.0f%%\n",
      n, 100 * (t - d[4]) / t, 100 * d[1] / t, 100 * d[2] / t, 100 * d[3] / t, 100 * d[4] / t, 100 * d[5] / t }'
}
inns() { local h=$1; shift; bash "$TESTBED" exec "$h" "$@"; }   # run in HOST's namespace
now() { date +%s.%N; }
note() { echo "== $*" >&2; }

stop_all() {   # our daemons first, then the testbed (which kills leftovers by PID)
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  tb down >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$? f
  set +e
  if [ $rc -ne 0 ]; then
    echo "bench-image-cache: FAILED in run '$RUN' (exit $rc); log tails:" >&2
    for f in $(ls -tr "$LOGS"); do
      echo "---- $f" >&2; tail -n 12 "$LOGS/$f" | cut -c1-300 >&2
    done
  fi
  stop_all
  if [ -n "${KEEP_LOGS:-}" ]; then
    rm -rf "$KEEP_LOGS"; cp -r "$LOGS" "$KEEP_LOGS" && echo "logs kept in $KEEP_LOGS" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {   # NAME HOST cmd...: background, log to $LOGS/$RUN-NAME.log, pid in LAST
  local name=$1 host=$2; shift 2
  inns "$host" "$@" >"$LOGS/$RUN-$name.log" 2>&1 &
  LAST=$!; PIDS+=("$LAST")
}
wait_for() {  # WHAT PID SECONDS cmd...: poll cmd every 100 ms while PID lives
  local what=$1 pid=$2 secs=$3 k; shift 3
  for ((k = 0; k < secs * 10; k++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "$what exited before it was up"
    sleep 0.1
  done
  die "$what not up after ${secs}s"
}
is_up() { grep -q "is up" "$1"; }
uplink_tx() { inns cloud cat /sys/class/net/wt-up-cl/statistics/tx_bytes; }
metric_sum() {  # NAME-REGEX NODE...: a counter summed over the nodes' /_metrics,
  local re=$1 i urls=(); shift   # read with one curl from the first node's namespace
  for i in "$@"; do urls+=("http://${NODE_IP[i]}:8776/_metrics"); done
  { inns "node$1" curl -s -m 1 "${urls[@]}" 2>/dev/null || true; } \
    | awk -v re="^euca_imagecache_(${re})_total " '$0 ~ re {s += $2} END {print s + 0}'
}

# --- the source image, and the target ---------------------------------------------
IMG_BYTES=$((IMAGE_MIB << 20))
head -c "$IMG_BYTES" /dev/urandom >"$WORK/bench.img"
SRC_SHA=$(sha256sum "$WORK/bench.img" | awk '{print $1}')
CLOUD_IP=$(tb addr cloud) CC_IP=$(tb addr cc)
awk -v b="$IMG_BYTES" -v u="$UPLINK_MBIT" 'BEGIN {
  gu = b * 8 / (0.956 * u * 1e6)
  printf "target: image %d MiB, uplink %d Mbit/s: G/U = %.1f s; peer-fetch target <= 1.15*G/U+2 = %.1f s\n",
         b / 1048576, u, gu, 1.15 * gu + 2 }'
note "$(nproc) cores; node links ${NODE_MBIT} Mbit/s; $("$EUCA" --version 2>/dev/null || echo euca); work dir $WORK"

# --- the cloud: euca up in wt-cloud; the image bundled, uploaded, installed once ----
start_cloud() {
  rm -f "$DATA/credentials/nc-cache.toml"
  start cloud cloud "$EUCA" up --data "$DATA" --walrus-listen "$CLOUD_IP:8773" \
    --sc-listen 127.0.0.1:8775 --nbd-listen 127.0.0.1:10809 --cc-listen 127.0.0.1:8774
  wait_for "euca up" "$LAST" 60 is_up "$LOGS/$RUN-cloud.log"
  wait_for "euca up (health)" "$LAST" 30 inns cloud curl -sf "http://$CLOUD_IP:8773/_health"
  wait_for "euca up (configs)" "$LAST" 30 test -s "$DATA/credentials/nc-cache.toml" -a -s "$DATA/credentials/eucarc"
}
install_image() {  # not measured; Walrus keeps the image in $DATA across bring-ups
  local t0; t0=$(now)
  inns cloud bash -c 'source "$1/credentials/eucarc" &&
      "$2" bundle-image -i "$3" -p bench -d "$4" -r x86_64 &&
      "$2" upload-bundle -b bench -m "$4/bench.manifest.xml"' \
    _ "$DATA" "$EUCA" "$WORK/bench.img" "$WORK/bundle" >"$LOGS/$RUN-bundle.log" 2>&1 \
    || die "bundle-image/upload-bundle failed"
  rm -rf "$WORK/bundle"
  IMAGE_ID=$(inns cloud "$EUCA" image install bench/bench.manifest.xml --data "$DATA" \
             2>"$LOGS/$RUN-install.log") || die "image install failed"
  [[ "$IMAGE_ID" =~ ^[0-9a-f]{64}$ ]] || die "image install printed '$IMAGE_ID', not an image id"
  note "installed image $IMAGE_ID ($(awk -v t="$(now)" -v s="$t0" 'BEGIN {printf "%.1f", t - s}') s, not measured)"
}

# --- one run: N nodes, one mode ------------------------------------------------------
run() {  # N MODE(peer|direct) [KILL_NODE]
  local n=$1 mode=$2 victim=${3:-0} i label tx0 tx1 t0 last=0 ok=0 want=$1
  label=$([ "$mode" = direct ] && echo direct || echo peer-fetch)
  [ "$victim" = 0 ] || { label=peer-fetch-kill; want=$((n - 1)); }
  RUN="$label-n$n"
  note "$RUN: testbed up ($n nodes)"
  tb up "$n" "$UPLINK_MBIT" "$NODE_MBIT" >"$LOGS/$RUN-testbed.log" 2>&1 || die "testbed up failed"
  start_cloud
  [ -n "$IMAGE_ID" ] || install_image
  local tracker_arg=(--no-tracker)
  if [ "$mode" = peer ]; then
    start cc cc "$EUCA" cc --listen "$CC_IP:8774" --token-file "$DATA/cloud/cluster-token"
    wait_for "euca cc" "$LAST" 30 is_up "$LOGS/$RUN-cc.log"
    tracker_arg=()
  fi
  local -a DPID FPID
  local C=$WORK/cache/$RUN
  NODE_IP=()
  for ((i = 1; i <= n; i++)); do NODE_IP[i]=$(tb addr "node$i"); done
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$C"
    sed -e "s|^s3_url = .*|s3_url = \"http://$CLOUD_IP:8773/\"|" -e '/^tracker = /d' \
      "$DATA/credentials/nc-cache.toml" >"$C/node$i.toml"
    [ "$mode" = peer ] && echo "tracker = \"http://$CC_IP:8774\"" >>"$C/node$i.toml"
    start "nc$i" "node$i" "$EUCA" nc-cache --config "$C/node$i.toml" --dir "$C/node$i" \
      --listen "${NODE_IP[i]}:8776" --node "node$i" ${tracker_arg[@]+"${tracker_arg[@]}"}
    DPID[i]=$LAST
  done
  for ((i = 1; i <= n; i++)); do wait_for "nc-cache node$i" "${DPID[i]}" 30 is_up "$LOGS/$RUN-nc$i.log"; done

  # --- the measurement ---
  local perf_pid="" cpu0; cpu0=$(cpu_ticks)
  if [ -n "${PERF:-}" ]; then perf record -a -g -F 499 -o "$PERF" 2>/dev/null & perf_pid=$!; fi
  tx0=$(uplink_tx); t0=$(now)
  for ((i = 1; i <= n; i++)); do
    ( r=0; inns "node$i" "$EUCA" cache --dir "$C/node$i" fetch "$IMAGE_ID" \
        >"$WORK/path$i" 2>"$LOGS/$RUN-fetch$i.log" || r=$?
      now >"$WORK/end$i"; echo "$r" >"$WORK/rc$i" ) &
    FPID[i]=$!
  done
  if [ "$victim" != 0 ]; then   # kill -9 the victim's daemon at 50% of all bytes held
    local held=0 goal=$((n * IMG_BYTES / 2))
    while kill -0 "${FPID[victim]}" 2>/dev/null; do
      held=$(metric_sum 'origin_bytes|peer_bytes' $(seq 1 "$n"))
      [ "$held" -ge "$goal" ] && break
      sleep 0.1
    done
    kill -9 "${DPID[victim]}" 2>/dev/null || true
    wait "${DPID[victim]}" 2>/dev/null || true
    note "$RUN: killed node$victim's daemon at $held of $((n * IMG_BYTES)) bytes held"
  fi
  for ((i = 1; i <= n; i++)); do wait "${FPID[i]}" || true; done
  tx1=$(uplink_tx)
  [ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
  cpu_share "$n" "$cpu0" "$(cpu_ticks)"

  # --- checks ---
  for ((i = 1; i <= n; i++)); do
    [ "$i" = "$victim" ] && continue
    local rc; rc=$(cat "$WORK/rc$i")
    [ "$rc" = 0 ] || { echo "node$i: fetch exited $rc: $(tail -n 2 "$LOGS/$RUN-fetch$i.log")" >&2; continue; }
    local path; path=$(cat "$WORK/path$i")
    [ -f "$path" ] || { echo "node$i: fetch printed '$path', not a file" >&2; continue; }
    [ "$(sha256sum "$path" | awk '{print $1}')" = "$SRC_SHA" ] \
      || { echo "node$i: $path does NOT match the source image's sha256" >&2; continue; }
    ok=$((ok + 1))
    last=$(awk -v a="$last" -v b="$(cat "$WORK/end$i")" 'BEGIN {print (b > a) ? b : a}')
  done
  local ids; ids=$(seq 1 "$n" | grep -vx "$victim" | tr '\n' ' ')
  note "$RUN: origin bytes $(metric_sum origin_bytes $ids), peer bytes $(metric_sum peer_bytes $ids), served $(metric_sum served_bytes $ids)"
  awk -v l="$label" -v n="$n" -v d=$((tx1 - tx0)) -v b="$IMG_BYTES" -v t0="$t0" -v t1="$last" \
      -v k="$victim" -v ok="$ok" -v want="$want" 'BEGIN {
    printf "%s N=%d uplink_ratio=%.2f seconds=%.1f", l, n, d / b, t1 - t0
    if (k != 0) printf " survivors_ok=%d/%d", ok, want
    printf "\n" }'
  [ "$ok" = "$want" ] || die "$RUN: only $ok of $want nodes have a verified image"

  # --- warm re-fetch on node1: from its own cache ---
  local w0 w1 s; w0=$(uplink_tx); s=$(now)
  inns node1 "$EUCA" cache --dir "$C/node1" fetch "$IMAGE_ID" >/dev/null 2>>"$LOGS/$RUN-fetch1.log" \
    || die "warm re-fetch on node1 failed"
  t0=$(now); w1=$(uplink_tx)
  awk -v n="$n" -v s="$s" -v t="$t0" -v d=$((w1 - w0)) -v l="$label" \
    'BEGIN {printf "warm N=%d seconds=%.3f uplink_bytes=%d after=%s\n", n, t - s, d, l}'
  [ $((w1 - w0)) -le 16384 ] || echo "WARNING: warm re-fetch moved $((w1 - w0)) bytes over the uplink" >&2

  stop_all
  rm -rf "$C" "$WORK"/path* "$WORK"/end* "$WORK"/rc*
}

T0=$(now)
for n in "$@"; do
  for m in $MODES; do
    case "$m" in peer|direct) run "$n" "$m" ;; *) die "unknown mode '$m' (peer|direct)" ;; esac
  done
done
[ "$KILL" != 1 ] || run 4 peer 2
RUN=done
note "total $(awk -v t="$(now)" -v s="$T0" 'BEGIN {printf "%.0f", t - s}') s"
