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
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
pip_pkgs=()
$PY -c 'import pytest' 2>/dev/null || pip_pkgs+=(pytest)
$PY -c 'import boto3' 2>/dev/null || pip_pkgs+=(boto3)
$PY -c 'import awscli' 2>/dev/null || pip_pkgs+=(awscli)      # awscli v1 (PyPI)
$PY -c 'import S3' 2>/dev/null || pip_pkgs+=(s3cmd)
$PY -c 'import requests' 2>/dev/null || pip_pkgs+=(requests)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  echo "install-test-deps: pip install ${pip_pkgs[*]}"
  $PY -m pip install -q "${pip_pkgs[@]}"
fi

# Fail loudly if anything is still missing.
for c in rclone /usr/bin/aws curl; do command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }; done
$PY -c 'import pytest, boto3, awscli, S3, requests' || { echo "missing python test deps" >&2; exit 1; }
command -v s3cmd >/dev/null || { echo "missing: s3cmd on PATH" >&2; exit 1; }
