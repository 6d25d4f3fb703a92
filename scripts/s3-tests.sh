#!/usr/bin/env bash
# Runs an independent S3 conformance suite, a checkout of ceph/s3-tests (not part of
# this repository: fetch it yourself, any revision whose functional tests run under
# pytest), against a throwaway `euca walrus`:
#
#   scripts/s3-tests.sh /path/to/s3-tests [pytest args...]
#
# Starts Walrus on a free loopback port in a temporary directory (SSE-C allowed over
# plain HTTP there, as the suite talks HTTP; the suite's default SSE-KMS key ids
# testkey-1 and testkey-2 known), creates the suite's three accounts (main,
# alt, tenant), writes its s3tests.conf and runs the functional tests that AWS itself
# passes (`-m "not fails_on_aws"`; give `-m ...` yourself to choose otherwise), four
# at a time. The summary line is pytest's; README.md ("Independent S3 conformance")
# has the last figures and why each remaining failure fails. EUCA_BIN picks the binary
# (default target/release/euca); S3TESTS_PYTHON the interpreter (the suite needs
# boto3, pytest, pytest-xdist, isodate, pytz, python-dateutil, requests).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=${1:?usage: scripts/s3-tests.sh /path/to/s3-tests [pytest args...]}
shift
suite=$(cd "$suite" && pwd)
[ -d "$suite/s3tests_boto3/functional" ] || {
  echo "s3-tests.sh: $suite has no s3tests_boto3/functional (not an s3-tests checkout)" >&2
  exit 2
}
bin=${EUCA_BIN:-$here/target/release/euca}
[ -x "$bin" ] || { echo "s3-tests.sh: no euca binary at $bin (cargo build --release)" >&2; exit 2; }
py=${S3TESTS_PYTHON:-python3}
source "$here/scripts/bench-lib.sh"
dir=$(mktemp -d /tmp/euca-s3-tests.XXXXXX)
bench_cleanup_on_exit "$dir"

p=$(port)
printf '[walrus]\nsse_customer_keys_over_http = true\nkms_key_ids = ["testkey-1", "testkey-2"]\n' \
  > "$dir/walrus.toml"
"$bin" walrus --listen "127.0.0.1:$p" --data "$dir/data" --config "$dir/walrus.toml" \
  > "$dir/walrus.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  [ -f "$dir/data/credentials/eucarc" ] && curl -s -o /dev/null "http://127.0.0.1:$p/" && break
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$p/" || { cat "$dir/walrus.log" >&2; exit 1; }

section() {
  local who=$1 out
  out=$("$bin" account create "s3tests-$who" --data "$dir/data")
  val() { printf '%s\n' "$out" | sed -n "s/^$1=//p"; }
  printf '[s3 %s]\ndisplay_name = s3tests-%s\nuser_id = %s\nemail = %s@example.com\naccess_key = %s\nsecret_key = %s\n\n' \
    "$who" "$who" "$(val CANONICAL_ID)" "$who" "$(val AWS_ACCESS_KEY_ID)" "$(val AWS_SECRET_ACCESS_KEY)"
}
{
  printf '[DEFAULT]\nhost = 127.0.0.1\nport = %s\nis_secure = False\nssl_verify = False\n\n' "$p"
  printf '[fixtures]\nbucket prefix = s3t-{random}-\n\n'
  section main
  section alt
  section tenant
} > "$dir/s3tests.conf"

marks=(-m "not fails_on_aws")
for a in "$@"; do [ "$a" = -m ] && marks=(); done
cd "$suite"
S3TEST_CONF="$dir/s3tests.conf" "$py" -m pytest -q -p no:cacheprovider -n 4 -W ignore \
  "${marks[@]}" "$@" s3tests_boto3/functional/test_s3.py s3tests_boto3/functional/test_headers.py
