#!/usr/bin/env bash
# net-check.sh — instance networking in each of the four modes, on the emulated
# cluster (scripts/testbed/cloud-netns.sh) with real `euca clc`, `euca cc`, two real
# `euca nc` nodes and tiny guests; prints one evidence line per mode, e.g.
#
#   net mode=managed-novlan lease=10.128.0.2 described=10.128.0.2 same_group=ok
#       other_group=blocked authorize=ok elastic_ip=ok metadata=ok spoof=blocked
#       hairpin=ok dns=ok eip_moved_in=0.4s
#
# (`managed` adds `vnis=…`, the VXLAN VNIs seen on the node links; `metadata` is
# `skip` in system mode only; `spoof` and `hairpin` are the managed modes'.)
# `lease` is what the guest printed after its own DHCP (never on its kernel command
# line), `described` what DescribeInstances says; a field that does not apply to a
# mode reads `skip`. The checks are conformance/test_net_modes.py's (the suite runs
# the same file); a mode whose test failed prints `FAILED`.
# Root; installs what it needs (nftables, dnsmasq-base, tcpdump, dnsutils, QEMU).
# Usage: scripts/net-check.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "net-check: must run as root (network namespaces)" >&2; exit 1; }

scripts/install-test-deps.sh
cargo build --release --locked --bin euca
export EUCA_BIN="$PWD/target/release/euca"
export EUCA_GUEST_DIR="${EUCA_GUEST_DIR:-$PWD/target/guest}"
if [ ! -s "$EUCA_GUEST_DIR/initramfs.gz" ] || [ tools/vm/build-tiny-guest.sh -nt "$EUCA_GUEST_DIR/initramfs.gz" ]; then
  tools/vm/build-tiny-guest.sh "$EUCA_GUEST_DIR"
fi

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
rc=0
EUCA_NET_REPORT="$report" python3 -m pytest -q -p no:cacheprovider \
  conformance/test_net_modes.py "$@" || rc=$?
echo "== net-check"
for mode in system static managed-novlan managed; do
  grep -E "^net mode=$mode " "$report" || echo "net mode=$mode FAILED"
done
exit "$rc"
