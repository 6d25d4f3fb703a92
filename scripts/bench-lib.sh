# Sourced by the bench scripts: what each of them needs around the measurement.
#
#   bench_setup DIR             sets EUCA (EUCA_BIN, or this checkout's release build),
#                               empties DIR and cleans up on exit (below)
#   bench_cleanup_on_exit DIR   kill every pid in PIDS, wait, remove DIR (on EXIT)
#   port                        a free loopback TCP port
#   cpu PID                     the process's user + system CPU so far, in ticks
#   HZ                          ticks per second
#   ctxsw PID                   context switches of the process's live threads so far
#   busy                        the whole machine's busy CPU so far, in ticks
#   bench_pass_start            what every timed pass starts with (below)
#   bench_flush URI             an NBD FLUSH on URI (nbdsh; fails loudly)
#   bench_volume BIN NAME GIB PROTOCOL
#                               `BIN up` (no node, no networking) on DIR/NAME with one
#                               volume of GIB attached over PROTOCOL (nbd or iscsi) to
#                               127.0.0.1; sets URI and PID (DIR: the caller's)

PIDS=()
BENCH_CLEANUP_DIR=
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$BENCH_CLEANUP_DIR" ]; then rm -rf "$BENCH_CLEANUP_DIR"; fi
}
bench_cleanup_on_exit() { BENCH_CLEANUP_DIR=$1; trap bench_cleanup EXIT; }
bench_setup() {
  if [ -n "${EUCA_BIN:-}" ]; then EUCA=$EUCA_BIN; else
    cargo build --release --locked --bin euca; EUCA=$PWD/target/release/euca; fi
  rm -rf "$1"; mkdir -p "$1"
  bench_cleanup_on_exit "$1"
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }   # whole machine: user nice system irq softirq

# Before a timed pass: dirty pages are written back, so no pass pays for the one
# before it; the page cache is kept, so the pass neither reads the disk nor makes the
# kernel allocate page cache. COLD=1 drops the page cache too (root).
#
# Why kept: on the benchmark host (a Firecracker VM whose balloon does free page
# reporting) memory left free for ~2 s is handed back to the host, and the guest
# pays a host page fault the next time it uses each such page. A pass that
# allocates gigabytes of page cache after a drop then costs 0.04 or 0.2-0.5 CPU s/GiB
# more depending only on whether it is still running ~2 s after the drop: a 4 GiB
# read slower than 2 s paid it every time and a faster one never (BENCHMARKS.md,
# 2026-12-07, "free page reporting"). Passes on cached files measure the servers.
bench_pass_start() {
  sync
  if [ "${COLD:-0}" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# nbdsh's Python module (python3-libnbd) is only in /usr/bin's python3.
bench_flush() { PATH=/usr/bin:$PATH nbdsh -u "$1" -c 'h.flush()'; }

bench_volume() {
  local sp; sp=$(port)
  "$1" up --no-node --net off --data "$DIR/$2" --walrus-listen "127.0.0.1:$(port)" \
    --sc-listen "127.0.0.1:$sp" --nbd-listen "127.0.0.1:$(port)" \
    --iscsi-listen "$([ "$4" = iscsi ] && echo "127.0.0.1:$(port)" || echo off)" \
    --cc-listen "127.0.0.1:$(port)" --clc-listen "127.0.0.1:$(port)" \
    --nc-listen "127.0.0.1:$(port)" > "$DIR/$2.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sp/_health" >/dev/null && break; sleep 0.1; done
  local vol; vol=$("$1" volume create --size-gib "$3" --data "$DIR/$2")
  URI=$("$1" volume attach "$vol" --node 127.0.0.1 --protocol "$4" --data "$DIR/$2")
}
