"""A node controller that dies leaves its guests running, and the restarted one
adopts them: `kill -9` of a separate `euca nc` (real QEMU, the tiny guest) keeps
the same QEMU process; after the restart the console keeps growing and attach,
detach and terminate work. That cloud exports EBS volumes over iSCSI (`[clc]
volume_protocol = "iscsi"`): the hot attach goes through QEMU's libiscsi driver
with the attachment's CHAP secret (the other guest tests use NBD). And stopping
`euca up` powers its own node's guests off.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Cloud, euca_bin, free_port, with_short_guest_shutdown
from helpers_ec2 import GUEST, console, register_guest_image, wait_console

pytestmark = pytest.mark.skipif(not (GUEST / "initramfs.gz").exists(),
                                reason=f"the tiny guest is not built in {GUEST} "
                                       "(tools/vm/build-tiny-guest.sh; scripts/test.sh builds it)")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def wait_state(ec2, iid, name, timeout=120):
    deadline = time.time() + timeout
    s = None
    while time.time() < deadline:
        s = state(ec2, iid)["State"]["Name"]
        if s == name:
            return
        time.sleep(0.5)
    raise AssertionError(f"{iid} is {s}, not {name}")


class Node:
    """A separate `euca nc` (real QEMU) joined to `cloud` through the config
    `euca up` writes for more nodes (a guest gets conftest.GUEST_SHUTDOWN_SECS to
    power off)."""

    def __init__(self, cloud, tmp_path):
        self.cloud = cloud
        self.dir = tmp_path / "node"
        self.port = free_port()
        self.log = tmp_path / "nc.log"
        self.proc = None

    def start(self):
        config = self.dir.parent / "nc.toml"
        config.write_text(with_short_guest_shutdown(
            (self.cloud.data / "credentials" / "nc-cache.toml").read_text()))
        self.proc = subprocess.Popen(
            [euca_bin(), "nc", "--config", str(config),
             "--dir", str(self.dir), "--nc-listen", f"127.0.0.1:{self.port}", "--name", "n1",
             "--cores", "2", "--memory-mib", "2048", "--disk-gib", "20"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            r = self.cloud.euca("nodes", check=False)
            if r.returncode == 0 and any(l.split()[:2] == ["n1", "UP"] for l in r.stdout.splitlines()):
                return self
            time.sleep(0.3)
        raise AssertionError(f"node n1 not UP:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def test_kill_9_of_the_nc_keeps_the_guest_and_the_restarted_nc_adopts_it(tmp_path):
    cfg = tmp_path / "euca.toml"
    cfg.write_text('[clc]\nvolume_protocol = "iscsi"\n')
    cloud = Cloud(tmp_path / "data", free_port(), ["--no-node", "--config", str(cfg)]).start()
    node = Node(cloud, tmp_path)
    iid = None
    pid = None
    try:
        node.start()
        ec2 = cloud.ec2()
        emi, _, _ = register_guest_image(cloud, tmp_path)
        iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1,
                                InstanceType="m1.small")["Instances"][0]["InstanceId"]
        wait_state(ec2, iid, "running")
        wait_console(ec2, iid, r"TG-HOTPLUG-READY")
        inst_dir = node.dir / "instances" / iid
        pid = int((inst_dir / "qemu.pid").read_text().strip())
        assert alive(pid)

        node.stop(signal.SIGKILL)
        assert alive(pid), "the guest dies with its NC"
        # The cloud still describes it (its node goes DOWN, the instance is kept).
        assert state(ec2, iid)["State"]["Name"] in ("running", "pending")

        node.start()
        wait_state(ec2, iid, "running")
        assert int((inst_dir / "qemu.pid").read_text().strip()) == pid
        assert alive(pid)
        before = console(ec2, iid)
        assert "TG-BOOTED" in before

        # Attach and detach work on the adopted guest; the console keeps growing.
        zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
        vol = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
        wait_console(ec2, iid, r"TG-DISK \S+ .*readback='TG-WRITE", after=len(before))
        ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol],
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        # over iSCSI, and the CHAP secret reached QEMU over QMP, never its command line
        att = json.loads(cloud.euca("volume", "describe", vol).stdout)["attachment"]
        assert att["protocol"] == "iscsi" and att["uri"].startswith("iscsi://"), att
        assert att["chap"]["secret"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ec2.detach_volume(VolumeId=vol)
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        wait_console(ec2, iid, r"TG-HOTPLUG-REMOVE", after=len(before))

        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid],
                                                   WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        deadline = time.time() + 30
        while alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(pid)
        assert not (inst_dir / "root.qcow2").exists()
        ec2.delete_volume(VolumeId=vol)
    finally:
        node.stop()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        cloud.stop()


def test_stopping_euca_up_stops_its_guests(tmp_path):
    cloud = Cloud(tmp_path / "data", free_port()).start()
    pid = None
    try:
        ec2 = cloud.ec2()
        emi, _, _ = register_guest_image(cloud, tmp_path)
        iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1,
                                InstanceType="m1.small")["Instances"][0]["InstanceId"]
        wait_state(ec2, iid, "running")
        wait_console(ec2, iid, r"TG-BOOTED")
        pid = int((cloud.data / "nc" / "instances" / iid / "qemu.pid").read_text().strip())
        assert alive(pid)
        cloud.stop(timeout=60)
        assert not alive(pid)
    finally:
        cloud.stop()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
