# Sourced by the bench scripts: what each of them needs around the measurement.
#
#   bench_cleanup_on_exit DIR   kill every pid in PIDS, wait, remove DIR (on EXIT)
#   port                        a free loopback TCP port
#   cpu PID                     the process's user + system CPU so far, in ticks
#   HZ                          ticks per second
#   ctxsw PID                   context switches of the process's live threads so far

PIDS=()
BENCH_CLEANUP_DIR=
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$BENCH_CLEANUP_DIR" ]; then rm -rf "$BENCH_CLEANUP_DIR"; fi
}
bench_cleanup_on_exit() { BENCH_CLEANUP_DIR=$1; trap bench_cleanup EXIT; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
