#!/usr/bin/env bash
# Benchmarks placement on the emulated cluster (scripts/testbed/cloud-netns.sh):
# `euca clc` + `euca walrus` in wt-cloud behind one shaped uplink, `euca cc` in
# wt-cc, NODES real `euca nc` (QEMU TCG, the tiny guest) in wt-node<i> — the
# topology of conformance/test_instances_netns.py (conformance/helpers_netns.py).
# For each policy and launch mode, on a fresh topology (empty node caches), COUNT
# instances are requested at once and it reports, per run, one line:
#   placement     instances per node (`euca nodes --json`), in the CC's node
#                 order (GREEDY's "first that fits": the order nodes registered in)
#   over          nodes running more guests than their cores (must be 0)
#   running_s     first RunInstances call -> every instance `running`
#   booted_s      first call -> every console shows TG-BOOTED
#   uplink_ratio  bytes the cloud sent on its uplink (tc/ip stats of wt-up-cl)
#                 during the launch / bytes of the images (machine image + kernel
#                 + ramdisk): 1.0 is each image byte crossing the uplink once
# Modes: batch (one RunInstances MaxCount=COUNT), threads (COUNT calls of 1 at once).
# The machine image is ROOT_MIB of random bytes (the tiny guest runs from its
# initramfs; a big random root disk makes the ratio mean something).
#
#   scripts/bench-instances-cluster.sh
# Env: NODES (4) CORES (8 per node; 1 per m1.small) COUNT (20) ROOT_MIB (64)
#      UPLINK_MBIT (200) NODE_MBIT (1000) POLICIES ("GREEDY ROUNDROBIN")
#      MODES ("batch threads") EUCA_BIN (target/release/euca)
#      EUCA_GUEST_DIR (target/guest) BENCH_DIR (/var/tmp) KEEP_LOGS (a directory)
# Needs root; builds nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export EUCA_BIN=${EUCA_BIN:-$ROOT/target/release/euca}
export EUCA_GUEST_DIR=${EUCA_GUEST_DIR:-$ROOT/target/guest}
[ "$(id -u)" -eq 0 ] || { echo "bench-instances-cluster: needs root" >&2; exit 1; }
[ -x "$EUCA_BIN" ] || { echo "bench-instances-cluster: no euca at $EUCA_BIN" >&2; exit 1; }
[ -s "$EUCA_GUEST_DIR/initramfs.gz" ] \
  || { echo "bench-instances-cluster: no tiny guest in $EUCA_GUEST_DIR" >&2; exit 1; }
echo "== $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); $("$EUCA_BIN" --version 2>/dev/null || echo euca)" >&2
exec python3 - "$ROOT" <<'EOF'
import concurrent.futures, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]) / "conformance"))
from botocore.exceptions import ClientError
from helpers_ec2 import GUEST, register_guest_image, wait_console
from helpers_netns import Testbed, missing

env = os.environ.get
NODES, CORES, COUNT = int(env("NODES", "4")), int(env("CORES", "8")), int(env("COUNT", "20"))
ROOT_MIB, UP, NODE = int(env("ROOT_MIB", "64")), int(env("UPLINK_MBIT", "200")), int(env("NODE_MBIT", "1000"))
POLICIES, MODES = env("POLICIES", "GREEDY ROUNDROBIN").split(), env("MODES", "batch threads").split()
why = missing()
if why:
    sys.exit(f"bench-instances-cluster: {why}")
kernel = GUEST / "vmlinux" if (GUEST / "vmlinux").exists() else GUEST / "vmlinuz"
image_bytes = (ROOT_MIB << 20) + kernel.stat().st_size + (GUEST / "initramfs.gz").stat().st_size
print(f"== {NODES} nodes x {CORES} cores, {COUNT} x m1.small; images {image_bytes / 2**20:.1f} MiB "
      f"(root {ROOT_MIB} MiB random); uplink {UP} Mbit/s, node links {NODE} Mbit/s", file=sys.stderr)


def uplink_tx():
    out = subprocess.run(["ip", "-n", "wt-cloud", "-s", "-j", "link", "show", "wt-up-cl"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def run(policy, mode):
    work = Path(tempfile.mkdtemp(prefix="euca-inst-bench.", dir=env("BENCH_DIR", "/var/tmp")))
    bed = Testbed(work, nodes=NODES, cores=CORES, memory_mib=CORES * 256 + 256,
                  disk_gib=CORES * 5 + 5, policy=policy, poll_ms=1000,
                  uplink_mbit=UP, node_mbit=NODE)
    try:
        bed.up()
        ec2 = bed.cloud.ec2()
        emi, _, _ = register_guest_image(bed.cloud, work, root=os.urandom(ROOT_MIB << 20))
        tx0, t0 = uplink_tx(), time.time()
        if mode == "batch":
            ids = [i["InstanceId"] for i in ec2.run_instances(
                ImageId=emi, MinCount=COUNT, MaxCount=COUNT, InstanceType="m1.small")["Instances"]]
        else:
            def one(_):
                try:
                    return bed.cloud.ec2().run_instances(
                        ImageId=emi, MinCount=1, MaxCount=1,
                        InstanceType="m1.small")["Instances"][0]["InstanceId"]
                except ClientError as e:
                    return e.response["Error"]["Code"]
            with concurrent.futures.ThreadPoolExecutor(COUNT) as pool:
                ids = list(pool.map(one, range(COUNT)))
            bad = [r for r in ids if not r.startswith("i-")]
            assert not bad, bad
        while True:
            st = [i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                  for i in r["Instances"]]
            if len(st) == COUNT and set(st) == {"running"}:
                break
            assert "terminated" not in st and time.time() - t0 < 900, st
            time.sleep(0.5)
        running = time.time() - t0
        for iid in ids:
            m = wait_console(ec2, iid, r"TG-BOOTED|Kernel panic.*", timeout=600)
            assert m.group(0) == "TG-BOOTED", f"{iid}: {m.group(0)}"
        booted = time.time() - t0
        tx = uplink_tx() - tx0
        per = [(name, len([x for x in n["instances"] if x["state"] == "running"]))
               for name, n in bed.nodes().items()]
        guests = bed.guests()
        twice = [k for k, v in guests.items() if len(v) != 1]
        over = sum(1 for i in range(1, NODES + 1)
                   if sum(1 for v in guests.values() if i in v) > CORES)
        assert not twice and sorted(guests) == sorted(ids), guests
        print(f"{policy} {mode} N={NODES} count={COUNT} placement={','.join(f'{k}:{c}' for k, c in per)} "
              f"over={over} running_s={running:.1f} booted_s={booted:.1f} "
              f"uplink_ratio={tx / image_bytes:.2f} uplink_mib={tx / 2**20:.1f}", flush=True)
    finally:
        bed.down()
        if env("KEEP_LOGS"):
            keep = Path(env("KEEP_LOGS")) / f"{policy}-{mode}"
            shutil.rmtree(keep, ignore_errors=True)
            keep.mkdir(parents=True)
            for f in work.glob("*.log"):
                shutil.copy(f, keep)
        shutil.rmtree(work, ignore_errors=True)


for p in POLICIES:
    for m in MODES:
        run(p, m)
EOF
