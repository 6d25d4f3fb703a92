#!/usr/bin/env bash
# The cluster controller at scale: `euca cc` polling N simulated nodes (`euca nc
# --simulate N`, a separate process) every second, then
#   - the CC's CPU (user+sys from /proc over SECONDS, in cores) while idle-polling
#     and while answering Describe calls;
#   - GET /v1/instances and GET /v1/nodes latency (p50/p99/max) from one client,
#     with INSTANCES instances placed across the nodes first.
#
#   scripts/bench-cc.sh [NODES] [SECONDS] [INSTANCES]     (defaults 1000, 20, 2000)
#
# EUCA_BIN=path/to/euca benches that binary instead of building this checkout;
# BENCH_DIR moves the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-1000}
SECS=${2:-20}
INSTANCES=${3:-2000}
DIR=${BENCH_DIR:-/var/tmp/euca-cc-bench}
if [ -n "${EUCA_BIN:-}" ]; then
  EUCA=$EUCA_BIN
else
  cargo build --release --locked --bin euca
  EUCA=$PWD/target/release/euca
fi
rm -rf "$DIR"; mkdir -p "$DIR/data/cloud"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/data/cloud/cluster-token"
CC=$(port); NC=$(port)
RUST_LOG=warn "$EUCA" cc --data "$DIR/data" --listen 127.0.0.1:$CC >> "$DIR/cc.log" 2>&1 &
CC_PID=$!; PIDS+=("$CC_PID")
RUST_LOG=warn "$EUCA" nc --simulate "$NODES" --name bench --nc-listen 127.0.0.1:$NC \
  --cc http://127.0.0.1:$CC --token-file "$DIR/data/cloud/cluster-token" \
  --cores 4 --memory-mib 8192 --disk-gib 100 >> "$DIR/nc.log" 2>&1 &
PIDS+=("$!")
python3 - "$CC" "$CC_PID" "$DIR/data/cloud/cluster-token" "$NODES" "$SECS" "$INSTANCES" <<'PY'
import json, os, sys, time, urllib.request
port, pid, token_file, nodes, secs, instances = sys.argv[1:]
nodes, secs, instances = int(nodes), int(secs), int(instances)
token = open(token_file).read().strip()
base = f"http://127.0.0.1:{port}"
hz = os.sysconf("SC_CLK_TCK")

def call(method, path, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())

def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz

deadline = time.time() + 120
while time.time() < deadline:
    try:
        up = [n for n in call("GET", "/v1/nodes") if n["state"] == "UP" and n["capacity"]["cores"] > 0]
        if len(up) == nodes:
            break
    except Exception:
        pass
    time.sleep(0.5)
else:
    sys.exit(f"only {len(up)} of {nodes} nodes UP")
print(f"nodes UP: {nodes} (registered and polled every 1 s)")
vm = {"name": "m1.small", "cores": 1, "memory_mib": 256, "disk_gib": 5}
spec = lambda i: {"instance_id": f"i-{i:08x}", "account": "000000000001",
                  "reservation_id": f"r-{i:08x}", "vm_type": vm,
                  "root": {"kind": "image", "installed_id": "0" * 64, "size": 1 << 20},
                  "mac": f"d2:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"}
t0 = time.time()
for start in range(0, instances, 100):
    n = min(100, instances - start)
    call("POST", "/v1/launch", {"min_count": n,
                                "instances": [spec(start + k) for k in range(n)]}, timeout=120)
print(f"placed {instances} instances in {time.time() - t0:.1f} s (launches of 100)")
time.sleep(3)
c0, w0 = cpu(), time.time()
time.sleep(secs)
idle = (cpu() - c0) / (time.time() - w0)
print(f"CC CPU polling {nodes} nodes at 1 s: {idle:.3f} cores ({secs} s)")
for path in ("/v1/instances", "/v1/nodes"):
    lat = []
    c0, w0 = cpu(), time.time()
    while time.time() - w0 < secs:
        t = time.perf_counter()
        got = call("GET", path)
        lat.append((time.perf_counter() - t) * 1000)
    busy = (cpu() - c0) / (time.time() - w0)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"GET {path}: {len(got)} items, {len(lat)} calls, p50 {q(0.5):.1f} ms, "
          f"p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms; CC CPU {busy:.3f} cores")
PY
