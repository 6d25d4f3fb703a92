"""Instances end to end with real clients (boto3, awscli v2 waiters) and the tiny
guest: register kernel/ramdisk/machine images, run -> instance-running -> the
console shows TG-BOOTED -> attach a volume -> volume-in-use -> the guest writes a
marker to it (TG-DISK) -> detach -> volume-available -> a second instance (launched
with the first, booting meanwhile) attaches it and reads the first marker
(before='...') -> terminate both -> instance-terminated. Also the EC2 error codes of RunInstances and the shapes
DescribeInstances answers.

Needs a cloud whose `euca up` runs a CC and an NC (QEMU, TCG): the guest is in
EUCA_GUEST_DIR (default target/guest: vmlinux or vmlinuz, initramfs.gz)."""
import json
import re
import time

import pytest
from botocore.exceptions import ClientError

from helpers_ec2 import GUEST, console, poll_until, unique, wait_console

pytestmark = pytest.mark.skipif(not (GUEST / "initramfs.gz").exists(),
                                reason=f"the tiny guest is not built in {GUEST} "
                                       "(tools/vm/build-tiny-guest.sh; scripts/test.sh builds it)")


def code(e):
    return e.value.response["Error"]["Code"]


def aws_wait(cloud, what, *args):
    r = cloud.aws_ec2("wait", what, *args, check=False)
    assert r.returncode == 0, f"aws ec2 wait {what} {args}: {r.stderr}"


def run_one(ec2, emi, **kw):
    r = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m1.small", **kw)
    return r["Instances"][0]["InstanceId"], r


def test_run_attach_write_detach_read_from_a_second_instance(cloud, guest_image):
    emi, eki, eri = guest_image
    ec2 = cloud.ec2()
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    first, r = run_one(ec2, emi)
    second = None
    try:
        # The second boots while the first does its part (under TCG a boot is
        # most of the time here); it gets the volume only once the first let go.
        second, _ = run_one(ec2, emi)
        assert r["ReservationId"].startswith("r-")
        inst = r["Instances"][0]
        assert inst["State"] == {"Code": 0, "Name": "pending"}
        assert (inst["KernelId"], inst["RamdiskId"]) == (eki, eri)
        assert inst["Placement"]["AvailabilityZone"] == zone
        assert [g["GroupName"] for g in r["Groups"]] == ["default"]
        aws_wait(cloud, "instance-running", "--instance-ids", first)
        d = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
        assert d["State"] == {"Code": 16, "Name": "running"}
        assert d["LaunchTime"] and d["InstanceType"] == "m1.small"
        mac = d["NetworkInterfaces"][0]["MacAddress"]
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac), mac
        assert int(mac[:2], 16) & 0x03 == 0x02, "locally administered unicast"
        wait_console(ec2, first, r"TG-BOOTED")

        vol = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        a = ec2.attach_volume(VolumeId=vol, InstanceId=first, Device="/dev/sdf")
        assert a["State"] == "attaching"
        # in-use at once; attached once the node confirms.
        assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "in-use"
        aws_wait(cloud, "volume-in-use", "--volume-ids", vol)
        wrote = wait_console(ec2, first, r"TG-DISK \S+ .*wrote='(TG-WRITE [^']*)'").group(1)
        att = poll_until(f"{vol} attached", lambda: [
            x for x in ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"]
            if x["State"] == "attached"], timeout=30)
        assert att[0]["InstanceId"] == first, att

        d = ec2.detach_volume(VolumeId=vol)
        assert d["State"] == "detaching"
        aws_wait(cloud, "volume-available", "--volume-ids", vol)

        aws_wait(cloud, "instance-running", "--instance-ids", second)
        wait_console(ec2, second, r"TG-BOOTED")
        ec2.attach_volume(VolumeId=vol, InstanceId=second, Device="/dev/sdg")
        aws_wait(cloud, "volume-in-use", "--volume-ids", vol)
        before = wait_console(ec2, second, r"TG-DISK \S+ .*before='([^']*)'").group(1)
        assert wrote in before, (wrote, before)
    finally:
        ids = [i for i in (first, second) if i]
        t = ec2.terminate_instances(InstanceIds=ids)
        for item in t["TerminatingInstances"]:
            assert item["CurrentState"]["Name"] in ("shutting-down", "terminated")
        aws_wait(cloud, "instance-terminated", "--instance-ids", *ids)
    # Terminated instances stay describable; the attached volume is free again.
    d = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    assert d["State"] == {"Code": 48, "Name": "terminated"}
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ec2.delete_volume(VolumeId=vol)


def test_run_instances_refusals(cloud, guest_image):
    emi, _, _ = guest_image
    ec2 = cloud.ec2()
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId="emi-0000dead", MinCount=1, MaxCount=1)
    assert code(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m9.nope")
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, KeyName=unique("nokey"))
    assert code(e) == "InvalidKeyPair.NotFound"
    with pytest.raises(ClientError) as e:
        # 25: past the capacity of any machine this runs on (a core per m1.small),
        # within the 29 addresses of a group's subnet (managed-novlan's default
        # /27), so capacity is what refuses it.
        ec2.run_instances(ImageId=emi, MinCount=25, MaxCount=25)
    assert code(e) == "InsufficientInstanceCapacity"
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(InstanceIds=["i-0000dead"])
    assert code(e) == "InvalidInstanceID.NotFound"
    # Nothing of the refused launches is left.
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"] if i["ImageId"] == emi]
    assert all(s in ("terminated", "shutting-down") for s in states), states


def test_stop_of_an_instance_store_instance_is_unsupported(cloud, guest_image):
    emi, _, _ = guest_image
    ec2 = cloud.ec2()
    token = unique("tok")
    iid, r = run_one(ec2, emi, ClientToken=token)
    try:
        again = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
                                  ClientToken=token)
        assert again["ReservationId"] == r["ReservationId"]
        with pytest.raises(ClientError) as e:
            ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=2, InstanceType="m1.small",
                              ClientToken=token)
        assert code(e) == "IdempotentParameterMismatch"
        with pytest.raises(ClientError) as e:
            ec2.stop_instances(InstanceIds=[iid])
        assert code(e) == "UnsupportedOperation"
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        aws_wait(cloud, "instance-terminated", "--instance-ids", iid)
    out = json.loads(cloud.aws_ec2("describe-instances", "--instance-ids", iid).stdout)
    assert out["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"


def test_ebs_root_stop_then_start_boots_again(cloud, guest_image):
    """An EBS-root instance (root volume from a snapshot image, the tiny guest's
    kernel and ramdisk) on the real node: run -> running -> TG-BOOTED -> stop ->
    instance-stopped -> start -> running -> the console shows a second boot ->
    terminate -> instance-terminated, and its DeleteOnTermination root goes."""
    _, eki, eri = guest_image
    ec2 = cloud.ec2()
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    vol = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap],
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ec2.delete_volume(VolumeId=vol)
    ami = ec2.register_image(Name=unique("tg-ebs"), RootDeviceName="/dev/sda1",
                             KernelId=eki, RamdiskId=eri, Architecture="x86_64",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                   "Ebs": {"SnapshotId": snap,
                                                           "DeleteOnTermination": True}}]
                             )["ImageId"]
    iid, r = run_one(ec2, ami)
    assert r["Instances"][0]["RootDeviceType"] == "ebs"
    root = None
    try:
        aws_wait(cloud, "instance-running", "--instance-ids", iid)
        wait_console(ec2, iid, r"TG-BOOTED")
        d = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        root = d["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        s = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
        assert s["CurrentState"]["Name"] == "stopping", s
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        assert ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]["State"] == "in-use"
        s = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
        assert s["CurrentState"]["Name"] == "pending", s
        aws_wait(cloud, "instance-running", "--instance-ids", iid)
        # Two boots in the console: the second is the started one.
        text = [""]

        def booted_twice():
            text[0] = console(ec2, iid)
            return text[0].count("TG-BOOTED") >= 2
        poll_until(f"a second TG-BOOTED on {iid}", booted_twice, timeout=120, interval=0.5,
                   detail=lambda: text[0][-4000:])
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        aws_wait(cloud, "instance-terminated", "--instance-ids", iid)
    if root:
        poll_until(f"the root {root} deleted at terminate", lambda: not ec2.describe_volumes(
            Filters=[{"Name": "volume-id", "Values": [root]}])["Volumes"], timeout=60)


def test_a_launch_volume_reaches_the_guest_and_is_deleted_at_terminate(cloud, guest_image):
    """A non-root BlockDeviceMapping: the volume is made at launch, the guest sees
    the disk (the node gives QEMU launch volumes as it starts the guest, so the
    kernel lists it at boot: the only 1 GiB virtio disk), terminate deletes it
    (DeleteOnTermination defaults to true for launch volumes)."""
    emi, _, _ = guest_image
    ec2 = cloud.ec2()
    iid, _ = run_one(ec2, emi, BlockDeviceMappings=[
        {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}])
    try:
        aws_wait(cloud, "instance-running", "--instance-ids", iid)
        wait_console(ec2, iid, r"TG-BOOTED")
        # 1 GiB = 2097152 sectors; the root (vda) and ephemeral (vdb) disks differ.
        wait_console(ec2, iid, r"\[vd[c-z]\] 2097152 512-byte logical blocks")
        bdm = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
            "BlockDeviceMappings"]
        vol = [m["Ebs"]["VolumeId"] for m in bdm if m["DeviceName"] == "/dev/sdf"][0]
        assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "in-use"
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
    aws_wait(cloud, "instance-terminated", "--instance-ids", iid)
    deadline = time.time() + 30
    left = True
    while left and time.time() < deadline:
        try:
            ec2.describe_volumes(VolumeIds=[vol])
            time.sleep(0.5)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidVolume.NotFound"
            left = False
    assert not left, f"{vol} not deleted at terminate"
