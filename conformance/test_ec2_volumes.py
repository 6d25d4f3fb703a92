"""EC2 volumes and snapshots on the cloud controller, through the storage
controller, driven by boto3, awscli v2 and awscli v1: create, waiters, describe
(filters, Owner / RestorableBy, pages), volumes from snapshots, deletes and their
refusals, and accounts that see nothing of each other's."""
import json
import uuid

import pytest
from botocore.exceptions import ClientError

FAST = {"Delay": 1, "MaxAttempts": 60}


def zone(cloud):
    return f"{cloud.region}a"


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture()
def ec2(cloud):
    return cloud.ec2()


@pytest.fixture()
def other(cloud):
    """Another account's EC2 client."""
    a = cloud.new_account(f"vols-{uuid.uuid4().hex[:8]}")
    return a, cloud.ec2(a["AWS_ACCESS_KEY_ID"], a["AWS_SECRET_ACCESS_KEY"])


def test_volume_snapshot_lifecycle_boto3(cloud, ec2, other):
    v = ec2.create_volume(AvailabilityZone=zone(cloud), Size=1, VolumeType="gp2",
                          TagSpecifications=[{"ResourceType": "volume",
                                              "Tags": [{"Key": "Name", "Value": "conf vol"}]}])
    vid = v["VolumeId"]
    assert vid.startswith("vol-")
    assert v["Size"] == 1 and v["AvailabilityZone"] == zone(cloud)
    assert v["VolumeType"] == "standard" and v["Encrypted"] is False
    assert v["State"] in ("creating", "available")
    assert {"Key": "Name", "Value": "conf vol"} in v["Tags"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vid], WaiterConfig=FAST)
    if getattr(cloud, "pg_server", None) is not None:
        # On the scale-out engines the SC's record of it is in PostgreSQL.
        rows = cloud.pg_server.psql(
            f"SELECT sc, kind FROM sc_records WHERE id = '{vid}'")
        assert rows.split() == ["sc|volumes"], rows

    d = ec2.describe_volumes(VolumeIds=[vid])["Volumes"]
    assert len(d) == 1
    assert d[0]["State"] == "available" and d[0]["Attachments"] == []
    assert d[0]["Size"] == 1 and d[0]["CreateTime"]
    by_tag = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["conf vol"]}])
    assert vid in [x["VolumeId"] for x in by_tag["Volumes"]]
    none = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [vid]},
                                         {"Name": "status", "Values": ["in-use"]}])
    assert none["Volumes"] == []

    s = ec2.create_snapshot(VolumeId=vid, Description="conf snap")
    sid = s["SnapshotId"]
    assert sid.startswith("snap-") and s["VolumeId"] == vid
    assert s["State"] in ("pending", "completed") and s["VolumeSize"] == 1
    assert s["Description"] == "conf snap" and s["Encrypted"] is False
    me = s["OwnerId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    done = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert done["State"] == "completed" and done["Progress"] == "100%"
    assert done["OwnerId"] == me

    # Owner=self and RestorableBy=self together list it once.
    both = ec2.describe_snapshots(OwnerIds=["self"], RestorableByUserIds=["self"])
    assert [x["SnapshotId"] for x in both["Snapshots"]].count(sid) == 1
    for kw in ({"OwnerIds": ["self"]}, {"OwnerIds": [me]}):
        ids = [x["SnapshotId"] for x in ec2.describe_snapshots(**kw)["Snapshots"]]
        assert ids.count(sid) == 1, kw
    # RestorableBy names grantees, not the owner: euca2ools asks Owner=self, then
    # RestorableBy=self, and prints both lists whole, so an own snapshot answers
    # only the first (printed once).
    assert sid not in [x["SnapshotId"] for x in
                       ec2.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]]
    assert ec2.describe_snapshots(Filters=[{"Name": "owner-id", "Values": [me]},
                                           {"Name": "snapshot-id", "Values": [sid]}]
                                  )["Snapshots"][0]["SnapshotId"] == sid
    assert ec2.describe_snapshots(Filters=[{"Name": "owner-id", "Values": ["000000000000"]},
                                           {"Name": "snapshot-id", "Values": [sid]}]
                                  )["Snapshots"] == []

    # A volume from the snapshot: its size, and at least the snapshot's.
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone(cloud), SnapshotId="snap-00000000")
    assert code(e) == "InvalidSnapshot.NotFound"
    v2 = ec2.create_volume(AvailabilityZone=zone(cloud), SnapshotId=sid)
    assert v2["SnapshotId"] == sid and v2["Size"] == 1
    v3 = ec2.create_volume(AvailabilityZone=zone(cloud), SnapshotId=sid, Size=2)
    assert v3["Size"] == 2
    ec2.get_waiter("volume_available").wait(VolumeIds=[v2["VolumeId"], v3["VolumeId"]],
                                            WaiterConfig=FAST)
    assert ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [sid]}]
                                )["Volumes"].__len__() == 2

    # The other account sees none of it, and my ids are NotFound to it.
    acct, o = other
    assert o.describe_volumes()["Volumes"] == []
    assert o.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert sid not in [x["SnapshotId"] for x in o.describe_snapshots()["Snapshots"]]
    with pytest.raises(ClientError) as e:
        o.describe_volumes(VolumeIds=[vid])
    assert code(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        o.delete_volume(VolumeId=vid)
    assert code(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        o.describe_snapshots(SnapshotIds=[sid])
    assert code(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        o.create_volume(AvailabilityZone=zone(cloud), SnapshotId=sid)
    assert code(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        o.create_snapshot(VolumeId=vid)
    assert code(e) == "InvalidVolume.NotFound"

    # Shared with it (createVolumePermission), it may restore it, once listed.
    ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[acct["ACCOUNT_ID"]])
    perm = ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    assert perm["CreateVolumePermissions"] == [{"UserId": acct["ACCOUNT_ID"]}]
    ec2.create_tags(Resources=[sid], Tags=[{"Key": "owner-only", "Value": "secret"}])
    shared = o.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]
    assert [x["SnapshotId"] for x in shared] == [sid]
    assert shared[0]["OwnerId"] == me
    # Tags are the owner's: the grantee sees none and cannot filter on them.
    assert shared[0].get("Tags", []) == []
    assert o.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["owner-only"]}]
                                )["Snapshots"] == []
    assert o.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    ov = o.create_volume(AvailabilityZone=zone(cloud), SnapshotId=sid)
    with pytest.raises(ClientError) as e:
        o.delete_snapshot(SnapshotId=sid)
    assert code(e) == "InvalidSnapshot.NotFound"
    ec2.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={
        "Remove": [{"UserId": acct["ACCOUNT_ID"]}]})
    assert ec2.describe_snapshot_attribute(
        SnapshotId=sid, Attribute="createVolumePermission")["CreateVolumePermissions"] == []
    assert o.describe_snapshots()["Snapshots"] == []
    o.get_waiter("volume_available").wait(VolumeIds=[ov["VolumeId"]], WaiterConfig=FAST)
    o.delete_volume(VolumeId=ov["VolumeId"])

    # Deletes: the snapshot (volumes made from it keep working), then the volumes.
    ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[sid])
    assert code(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=sid)
    assert code(e) == "InvalidSnapshot.NotFound"
    for x in (vid, v2["VolumeId"], v3["VolumeId"]):
        ec2.delete_volume(VolumeId=x)
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[vid], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(VolumeIds=[vid])
    assert code(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.delete_volume(VolumeId=vid)
    assert code(e) == "InvalidVolume.NotFound"


def test_snapshot_of_a_registered_ebs_image_is_in_use(cloud, ec2):
    v = ec2.create_volume(AvailabilityZone=zone(cloud), Size=1)
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]], WaiterConfig=FAST)
    sid = ec2.create_snapshot(VolumeId=v["VolumeId"])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    try:
        img = ec2.register_image(Name=f"ebs-{uuid.uuid4().hex[:8]}", RootDeviceName="/dev/sda1",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                       "Ebs": {"SnapshotId": sid}}])
    except ClientError as e:
        if code_of(e) == "InvalidAction":
            img = None  # RegisterImage lands with the images work.
        else:
            raise
    if img is not None:
        with pytest.raises(ClientError) as e:
            ec2.delete_snapshot(SnapshotId=sid)
        assert code(e) == "InvalidSnapshot.InUse"
        ec2.deregister_image(ImageId=img["ImageId"])
    ec2.delete_snapshot(SnapshotId=sid)
    ec2.delete_volume(VolumeId=v["VolumeId"])


def code_of(e):
    return e.response["Error"]["Code"]


def test_refusals(cloud, ec2):
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone="nowhere-1z", Size=1)
    assert code(e) == "InvalidZone.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone(cloud))
    assert code(e) == "MissingParameter"
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone(cloud), Size=0)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(VolumeIds=["vol-00000000"])
    assert code(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.delete_volume(VolumeId="vol-00000000")
    assert code(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.create_snapshot(VolumeId="vol-00000000")
    assert code(e) == "InvalidVolume.NotFound"
    # A snapshot must be completed, and a volume may not be smaller than it.
    v = ec2.create_volume(AvailabilityZone=zone(cloud), Size=2)
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ec2.describe_volumes(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert code(e) == "InvalidParameterValue"
    sid = ec2.create_snapshot(VolumeId=v["VolumeId"])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone(cloud), SnapshotId=sid, Size=1)
    assert code(e) == "InvalidParameterValue"
    ec2.delete_snapshot(SnapshotId=sid)
    ec2.delete_volume(VolumeId=v["VolumeId"])


def test_client_token_is_idempotent(cloud, ec2):
    token = uuid.uuid4().hex
    a = ec2.create_volume(AvailabilityZone=zone(cloud), Size=1, ClientToken=token)
    b = ec2.create_volume(AvailabilityZone=zone(cloud), Size=1, ClientToken=token)
    assert a["VolumeId"] == b["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone(cloud), Size=2, ClientToken=token)
    assert code(e) == "IdempotentParameterMismatch"
    c = ec2.create_volume(AvailabilityZone=zone(cloud), Size=1, ClientToken=uuid.uuid4().hex)
    assert c["VolumeId"] != a["VolumeId"]
    for v in (a, c):
        ec2.delete_volume(VolumeId=v["VolumeId"])


def test_pages_of_five_over_seven_volumes(cloud, other):
    _, o = other
    made = [o.create_volume(AvailabilityZone=zone(cloud), Size=1)["VolumeId"] for _ in range(7)]
    seen, token, pages = [], None, 0
    while True:
        kw = {"MaxResults": 5}
        if token:
            kw["NextToken"] = token
        r = o.describe_volumes(**kw)
        pages += 1
        seen += [v["VolumeId"] for v in r["Volumes"]]
        token = r.get("NextToken")
        if not token:
            break
        assert pages < 5
    assert pages == 2
    assert sorted(seen) == sorted(made) and len(seen) == 7
    # The paginator agrees.
    flat = [v["VolumeId"] for p in o.get_paginator("describe_volumes").paginate(
        PaginationConfig={"PageSize": 5}) for v in p["Volumes"]]
    assert sorted(flat) == sorted(made)
    for v in made:
        o.delete_volume(VolumeId=v)
    assert o.describe_volumes()["Volumes"] == []


@pytest.mark.parametrize("v1", [False, True], ids=["awscli2", "awscli1"])
def test_awscli(cloud, v1):
    run = lambda *a: json.loads(cloud.aws_ec2(*a, v1=v1).stdout or "{}")  # noqa: E731
    v = run("create-volume", "--availability-zone", zone(cloud), "--size", "1",
            "--tag-specifications", "ResourceType=volume,Tags=[{Key=cli,Value=yes}]")
    vid = v["VolumeId"]
    assert v["Size"] == 1 and {"Key": "cli", "Value": "yes"} in v["Tags"]
    cloud.aws_ec2("wait", "volume-available", "--volume-ids", vid, v1=v1)
    d = run("describe-volumes", "--volume-ids", vid)["Volumes"][0]
    assert d["State"] == "available" and d["Attachments"] == []
    s = run("create-snapshot", "--volume-id", vid, "--description", "cli snap")
    sid = s["SnapshotId"]
    cloud.aws_ec2("wait", "snapshot-completed", "--snapshot-ids", sid, v1=v1)
    mine = run("describe-snapshots", "--owner-ids", "self", "--restorable-by-user-ids", "self",
               "--filters", "Name=description,Values=cli snap")["Snapshots"]
    assert [x["SnapshotId"] for x in mine].count(sid) == 1
    assert mine[0]["State"] == "completed" and mine[0]["Progress"] == "100%"
    v2 = run("create-volume", "--availability-zone", zone(cloud), "--snapshot-id", sid)
    assert v2["SnapshotId"] == sid and v2["Size"] == 1
    r = cloud.aws_ec2("delete-volume", "--volume-id", "vol-00000000", v1=v1, check=False)
    assert r.returncode != 0 and "InvalidVolume.NotFound" in r.stderr
    r = cloud.aws_ec2("create-volume", "--availability-zone", "nowhere-1z", "--size", "1",
                      v1=v1, check=False)
    assert r.returncode != 0 and "InvalidZone.NotFound" in r.stderr
    cloud.aws_ec2("delete-snapshot", "--snapshot-id", sid, v1=v1)
    for x in (vid, v2["VolumeId"]):
        cloud.aws_ec2("delete-volume", "--volume-id", x, v1=v1)
    cloud.aws_ec2("wait", "volume-deleted", "--volume-ids", vid, v1=v1)
