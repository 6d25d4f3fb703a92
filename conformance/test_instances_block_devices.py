"""Block device mappings at launch other than the root, through boto3 against a
real `euca up --no-node` whose CC places on `euca nc --simulate` nodes (the NC
protocol without QEMU: the node reports launch volumes attached once the guest
"runs"). Checked: an `Ebs.VolumeSize` and an `Ebs.SnapshotId` mapping each make a
volume per instance, in the instance's zone, in-use and attached to it, listed
in DescribeInstances' blockDeviceMapping; DeleteOnTermination (default true)
deletes it at terminate, false leaves it available; NoDevice and
VirtualName=ephemeral0 create nothing; bad mappings are refused with nothing
launched."""
import time

import pytest
from botocore.exceptions import ClientError

from helpers_ec2 import register_plain_image
from test_instances_cluster import sim_nodes, start, stop, wait_running

FAST = {"Delay": 1, "MaxAttempts": 120}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bdm")
    c = start(tmp, "GREEDY")
    sim = None
    try:
        sim = sim_nodes(c, tmp, 2, 2, "bd")
        c.emi = register_plain_image(c, tmp)
        yield c
    finally:
        stop(sim)
        c.stop()


def instance(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def ids(ec2):
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]}


def volume(ec2, vid):
    try:
        return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return None


def test_launch_volumes_are_made_attached_and_deleted_on_termination(cloud):
    ec2 = cloud.ec2()
    src = ec2.create_volume(AvailabilityZone="us-east-1a", Size=2)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[src], WaiterConfig=FAST)
    snap = ec2.create_snapshot(VolumeId=src)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    r = ec2.run_instances(
        ImageId=cloud.emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "VolumeType": "standard"}},
            {"DeviceName": "/dev/sdg", "Ebs": {"SnapshotId": snap,
                                              "DeleteOnTermination": False}},
            {"DeviceName": "/dev/sdh", "NoDevice": ""},
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        ])
    iid = r["Instances"][0]["InstanceId"]
    wait_running(ec2, [iid])
    # Attached once the node reports the disks (the reconciler's next pass).
    deadline = time.time() + 30
    while True:
        bdm = {m["DeviceName"]: m["Ebs"] for m in instance(ec2, iid)["BlockDeviceMappings"]}
        if all(e["Status"] == "attached" for e in bdm.values()) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert sorted(bdm) == ["/dev/sdf", "/dev/sdg"], bdm
    assert all(e["Status"] == "attached" for e in bdm.values()), bdm
    assert bdm["/dev/sdf"]["DeleteOnTermination"] is True
    assert bdm["/dev/sdg"]["DeleteOnTermination"] is False
    f, g = volume(ec2, bdm["/dev/sdf"]["VolumeId"]), volume(ec2, bdm["/dev/sdg"]["VolumeId"])
    assert (f["Size"], f["State"], f["AvailabilityZone"]) == (1, "in-use", "us-east-1a")
    assert (g["Size"], g["SnapshotId"], g["State"]) == (2, snap, "in-use")
    for v, dev in ((f, "/dev/sdf"), (g, "/dev/sdg")):
        att = v["Attachments"][0]
        assert (att["InstanceId"], att["Device"], att["State"]) == (iid, dev, "attached")
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=FAST)
    deadline = time.time() + 30
    while volume(ec2, f["VolumeId"]) is not None and time.time() < deadline:
        time.sleep(0.3)
    assert volume(ec2, f["VolumeId"]) is None, "DeleteOnTermination volume deleted"
    ec2.get_waiter("volume_available").wait(VolumeIds=[g["VolumeId"]], WaiterConfig=FAST)
    for v in (g["VolumeId"], src):
        ec2.delete_volume(VolumeId=v)
    ec2.delete_snapshot(SnapshotId=snap)


@pytest.mark.parametrize("mapping,code", [
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "VolumeType": "fast"}},
     "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "VirtualName": "scratch"}, "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": "snap-00000000"}},
     "InvalidSnapshot.NotFound"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 0}}, "InvalidParameterValue"),
    ({"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}},
     "InvalidParameterValue"),
    ({"DeviceName": "bogus", "Ebs": {"VolumeSize": 1}}, "InvalidParameterValue"),
])
def test_bad_mappings_launch_nothing(cloud, mapping, code):
    ec2 = cloud.ec2()
    before = ids(ec2)
    vols = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=cloud.emi, MinCount=1, MaxCount=1,
                          InstanceType="m1.small", BlockDeviceMappings=[mapping])
    assert e.value.response["Error"]["Code"] == code
    assert ids(ec2) == before
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == vols
