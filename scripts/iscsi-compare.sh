#!/usr/bin/env bash
# iscsi-compare.sh — libiscsi's conformance suite (iscsi-test-cu, every family and
# suite, destructive tests allowed) against the SC's iSCSI target and against tgtd
# on the same machine in the same run; prints one summary line for each:
#
#   iscsi-test-cu target=euca passed=… failed=… total=… timed_out_suites=…
#   iscsi-test-cu target=tgtd passed=… failed=… total=… timed_out_suites=…
#
# Each suite (ALL.Read10, iSCSI.iSCSITMF, …) runs in its own iscsi-test-cu with a
# 60 s limit, so a suite that hangs a target is counted (its tests as not passed)
# and the run goes on. Failed tests are listed in $ISCSI_COMPARE_KEEP/<target>.log
# when ISCSI_COMPARE_KEEP names a directory.
#
# Root (tgtd); installs what it needs (libiscsi-bin, tgt). Both serve a 256 MiB
# sparse file on 127.0.0.1 (tgtd on a private portal and control port, with
# thin_provisioning=1 so it offers UNMAP as ours does).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "iscsi-compare: must run as root (tgtd)" >&2; exit 1; }
need=()
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v tgtd >/dev/null || need+=(tgt)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d)
tgt_pid=
ctl=
cleanup() {
  if [ -n "$tgt_pid" ]; then
    # tgtd ignores SIGTERM while it has targets: delete them, then stop it.
    tgtadm -C "$ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    kill "$tgt_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$tgt_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$tgt_pid" 2>/dev/null || true
    wait "$tgt_pid" 2>/dev/null || true
  fi
  if [ -n "${ISCSI_COMPARE_KEEP:-}" ]; then mkdir -p "$ISCSI_COMPARE_KEEP"; cp "$work"/*.log "$ISCSI_COMPARE_KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Every family.suite iscsi-test-cu knows.
iscsi-test-cu -l | grep -E '^[A-Za-z]+\.[A-Za-z0-9]+$' > "$work/suites"

# The loop both targets get: URL in $1, the log on stdout.
cat > "$work/suites.sh" <<EOF
while read -r s; do
  echo "=== suite \$s"
  timeout 60 iscsi-test-cu -d -s --test="\$s" "\$1" 2>&1
  rc=\$?
  [ \$rc -eq 124 ] && echo "=== TIMEOUT \$s"
done < "$work/suites"
EOF

summary() { # name logfile
  awk -v n="$1" '
    $1 == "tests" { total += $2; passed += $4; failed += $5 }
    /^=== TIMEOUT/ { to++ }
    END { printf "iscsi-test-cu target=%s passed=%d failed=%d total=%d timed_out_suites=%d\n", n, passed, failed, total, to }' "$2"
}

# Ours: the target runs inside the test binary (storage-controller/tests/it/iscsi_clients.rs).
ISCSI_TARGET_CMD="sh $work/suites.sh \"\$1\"" \
  cargo test --release --locked -p euca-sc --test it iscsi_clients::iscsi_test_cu_summary \
  -- --ignored --nocapture > "$work/euca.log" 2>&1 || { tail -30 "$work/euca.log"; exit 1; }

# tgtd on a free port with a private control socket; LUN 1 is the disk (LUN 0 is
# tgt's controller).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ctl=$(( (port % 1000) + 100 ))
truncate -s 256M "$work/lun.img"
iqn=iqn.2026-12.test.tgt:vol1
tgtd -f -C "$ctl" --iscsi portal=127.0.0.1:"$port" > "$work/tgtd.out" 2>&1 &
tgt_pid=$!
for _ in $(seq 50); do tgtadm -C "$ctl" --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/lun.img"
tgtadm -C "$ctl" --lld iscsi --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL
sh "$work/suites.sh" "iscsi://127.0.0.1:$port/$iqn/1" > "$work/tgtd.log" 2>&1 || true

summary euca "$work/euca.log"
summary tgtd "$work/tgtd.log"
