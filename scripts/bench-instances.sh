#!/usr/bin/env bash
# Instances on this machine (`euca up`, its own NC, QEMU TCG, the tiny guest):
#   - RunInstances → state `running` (the CC placed it and the NC started QEMU), and
#     → `TG-BOOTED` on the console (the guest's init ran), for ROUNDS launches of a
#     cached image (the first launch fetches it into the node's cache; not counted);
#   - AttachVolume → the guest prints TG-HOTPLUG-ADD for the disk (console polled
#     every 50 ms).
#
#   scripts/bench-instances.sh [ROUNDS]     (default 3)
#
# EUCA_BIN=path/to/euca benches that binary; EUCA_GUEST_DIR names the tiny guest
# (default target/guest, built by tools/vm/build-tiny-guest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${EUCA_BIN:-}" ]; then
  cargo build --release --locked --bin euca
  export EUCA_BIN=$PWD/target/release/euca
fi
export EUCA_GUEST_DIR=${EUCA_GUEST_DIR:-$PWD/target/guest}
[ -s "$EUCA_GUEST_DIR/initramfs.gz" ] || tools/vm/build-tiny-guest.sh "$EUCA_GUEST_DIR"
cd conformance
python3 - "${1:-3}" <<'PY'
import sys, tempfile, time
from pathlib import Path
from conftest import Cloud, free_port
from helpers_ec2 import console, register_guest_image

rounds = int(sys.argv[1])
tmp = Path(tempfile.mkdtemp(prefix="euca-bench-inst-"))
cloud = Cloud(tmp / "data", free_port()).start()
try:
    ec2 = cloud.ec2()
    emi, _, _ = register_guest_image(cloud, tmp)
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]

    def launch():
        t0 = time.perf_counter()
        iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1,
                                InstanceType="m1.small")["Instances"][0]["InstanceId"]
        running = booted = None
        while booted is None:
            if running is None:
                s = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
                if s["State"]["Name"] == "running":
                    running = time.perf_counter() - t0
            if running is not None and "TG-BOOTED" in console(ec2, iid):
                booted = time.perf_counter() - t0
            if time.perf_counter() - t0 > 120:
                raise SystemExit(f"{iid} not booted in 120 s")
            time.sleep(0.05)
        return iid, running, booted

    iid, r, b = launch()
    print(f"first launch (image fetched into the node cache): running {r:.2f} s, TG-BOOTED {b:.2f} s")
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    rs, bs, atts = [], [], []
    for k in range(rounds):
        iid, r, b = launch()
        rs.append(r); bs.append(b)
        vol = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
        while "TG-HOTPLUG-READY" not in console(ec2, iid):
            time.sleep(0.05)
        seen = console(ec2, iid).count("TG-HOTPLUG-ADD")
        t0 = time.perf_counter()
        ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
        while console(ec2, iid).count("TG-HOTPLUG-ADD") == seen:
            if time.perf_counter() - t0 > 60:
                raise SystemExit("the guest never saw the volume")
            time.sleep(0.05)
        atts.append(time.perf_counter() - t0)
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
        ec2.delete_volume(VolumeId=vol)
    fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)
    print(f"cached image, {rounds} launches: running {fmt(rs)} s; TG-BOOTED {fmt(bs)} s")
    print(f"attach → guest sees the disk: {fmt(atts)} s")
finally:
    cloud.stop(timeout=60)
PY
