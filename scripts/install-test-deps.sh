#!/usr/bin/env bash
# Installs the real S3 clients and tools the test suite drives. Idempotent; fails loudly.
set -euo pipefail

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
[ -x /usr/bin/aws ] || need_apt+=(awscli)          # awscli v2 (Debian)
command -v curl >/dev/null || need_apt+=(curl)
# Build deps of euca-image (the `openssl` crate links the system OpenSSL).
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
# libFuzzer (built by the fuzz targets' libfuzzer-sys) needs a C++ compiler.
command -v c++ >/dev/null || need_apt+=(g++)
# NBD clients for the storage controller's tests (userspace: no kernel NBD here),
# nbdkit and fio for its benchmark, script(1) for the progress-display test.
command -v nbdinfo >/dev/null || need_apt+=(libnbd-bin)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_apt+=(python3-libnbd)
command -v nbdkit >/dev/null || need_apt+=(nbdkit)
command -v fio >/dev/null || need_apt+=(fio)
command -v script >/dev/null || need_apt+=(bsdutils)
# ip and tc: the emulated cluster (scripts/testbed/cloud-netns.sh) of
# conformance/test_instances_netns.py.
command -v tc >/dev/null && command -v ip >/dev/null || need_apt+=(iproute2)
# Instance networking (issue 14): nftables (the CC's router), dnsmasq (the CC's DHCP
# and the emulated LAN's; dnsmasq-base is the binary without Debian's service, which
# would take the host's port 53), tcpdump (VXLAN captures), dig (the CLC's DNS),
# busybox-static (fake instances' DHCP client in the router tests), conntrack (the
# CC's router deletes the tracked flows of a moved address).
command -v nft >/dev/null || need_apt+=(nftables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v dig >/dev/null || need_apt+=(dnsutils)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
# iSCSI initiators for the storage controller's iSCSI target (issue 17): libiscsi's
# tools (iscsi-ls, iscsi-inq, iscsi-readcapacity16, iscsi-test-cu). QEMU's iSCSI
# block driver (qemu-block-extra) comes with QEMU from backports, below.
command -v iscsi-inq >/dev/null || need_apt+=(libiscsi-bin)
# restic: a backup tool against an object-locked bucket (conformance/test_s3_more.py).
command -v restic >/dev/null || need_apt+=(restic)
# PostgreSQL server binaries (/usr/lib/postgresql/*/bin): Walrus's shared metadata
# backend (conformance/test_walrus_scaleout.py runs its own throwaway server with
# them, conformance/helpers_pg.py; the packaged cluster and service are not used).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# QEMU: qemu-img / qemu-io / qemu-nbd (qemu-utils) and qemu-system-x86_64 (the node
# controller's instances) must be one version. The machine image has qemu-utils 10
# from bookworm-backports and Debian's own 7.2 would downgrade it, so the backports
# suite is added to apt's sources (same mirror as the existing entries) and both
# packages come from it. cpio and lz4 build the tiny test guest (its kernel and
# busybox are downloaded with `apt-get download`, not installed).
add_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local mirror
  mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
           | grep -v security | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "install-test-deps: adding bookworm-backports from $mirror"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
  apt-get update -qq
}
need_qemu=()
command -v qemu-io >/dev/null || need_qemu+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null || need_qemu+=(qemu-system-x86)
# The iscsi:// protocol of qemu-img and qemu-io (block-iscsi.so).
ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1 || need_qemu+=(qemu-block-extra)
if [ ${#need_qemu[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  add_backports
  echo "install-test-deps: apt-get install -t bookworm-backports ${need_qemu[*]}"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_qemu[@]}"
fi
need_guest=()
command -v cpio >/dev/null || need_guest+=(cpio)
command -v lz4 >/dev/null || need_guest+=(lz4)
if [ ${#need_guest[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "install-test-deps: apt-get install ${need_guest[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_guest[@]}"
fi

PY=${PYTHON:-python3}
pip_pkgs=()
$PY -c 'import pytest' 2>/dev/null || pip_pkgs+=(pytest)
$PY -c 'import boto3' 2>/dev/null || pip_pkgs+=(boto3)
$PY -c 'import awscli' 2>/dev/null || pip_pkgs+=(awscli)      # awscli v1 (PyPI)
$PY -c 'import S3' 2>/dev/null || pip_pkgs+=(s3cmd)
$PY -c 'import requests' 2>/dev/null || pip_pkgs+=(requests)
$PY -c 'import hypothesis' 2>/dev/null || pip_pkgs+=(hypothesis)   # property tests
$PY -c 'import xdist' 2>/dev/null || pip_pkgs+=(pytest-xdist)   # two conformance workers
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  echo "install-test-deps: pip install ${pip_pkgs[*]}"
  $PY -m pip install -q "${pip_pkgs[@]}"
fi

# Azurite, Microsoft's Azure Storage emulator (npm): the `az://` blob store of
# conformance/test_walrus_scaleout.py. Node from Debian if there is none.
if ! command -v azurite-blob >/dev/null; then
  if ! command -v npm >/dev/null; then
    echo "install-test-deps: apt-get install nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  echo "install-test-deps: npm install -g azurite@3.37.0"
  npm install -g --no-fund --no-audit --loglevel=error azurite@3.37.0
fi

# cargo-fuzz (the fuzz targets' driver) is installed by scripts/fuzz.sh, its only
# user, which scripts/test.sh runs in the background: its build overlaps the tests.

# Fail loudly if anything is still missing.
for c in rclone /usr/bin/aws curl iscsi-inq iscsi-ls iscsi-readcapacity16 nbdinfo nbdcopy nbdsh nbdkit fio qemu-img qemu-io qemu-nbd qemu-system-x86_64 cpio lz4 script c++ azurite-blob; do command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }; done
$PY -c 'import pytest, boto3, awscli, S3, requests, hypothesis' || { echo "missing python test deps" >&2; exit 1; }
command -v s3cmd >/dev/null || { echo "missing: s3cmd on PATH" >&2; exit 1; }
/usr/bin/python3 -c 'import nbd' || { echo "missing: python3-libnbd for /usr/bin/python3" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
  || { echo "missing: PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2; exit 1; }
