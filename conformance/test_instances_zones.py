"""Two cluster controllers, two availability zones, driven through the EC2 API
(boto3) of a real `euca up --no-node` (its CC serves the CLC's zone, us-east-1a)
that names a second, separate `euca cc` (zone us-east-1b) in `[[clc.clusters]]`.
Each CC has its own `euca nc --simulate 2`, advertising different capacities so
DescribeAvailabilityZones `verbose` shows which CC each zone's figures come from.

Checked: both zones listed (and the verbose capacity lines per zone), a launch
with Placement.AvailabilityZone lands on that zone's nodes (read from each CC's
`euca nodes`), a launch without goes to the first zone with room, an unknown zone
is InvalidParameterValue, a volume of one zone does not attach to an instance of
the other (InvalidVolume.ZoneMismatch), and a CLC that names a CC for a zone the
CC is not configured for gets it refused (nothing placed)."""
import json
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Cloud, euca_bin, free_port
from helpers_ec2 import register_plain_image
from test_instances_cluster import stop, terminate_all, wait_running

ZONE_A = "us-east-1a"
ZONE_B = "us-east-1b"
# A zone the CLC routes to CC B, whose [cc] zone says us-east-1b.
ZONE_WRONG = "us-east-1c"


def nodes_of(cc_url, token_file):
    r = subprocess.run([euca_bin(), "nodes", "--json", "--cc", cc_url,
                        "--token-file", str(token_file)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def live(cc_url, token_file):
    """Instance ids holding capacity on the CC's nodes."""
    return {i["instance_id"] for n in nodes_of(cc_url, token_file) for i in n["instances"]
            if i["state"] not in ("terminated", "failed")}


def sim(tmp, name, cc_url, token_file, cores):
    port = free_port()
    log = open(tmp / f"nc-{name}.log", "ab")
    p = subprocess.Popen(
        [euca_bin(), "nc", "--simulate", "2", "--name", name,
         "--nc-listen", f"127.0.0.1:{port}", "--cc", cc_url,
         "--token-file", str(token_file),
         "--cores", str(cores), "--memory-mib", str(1024 * cores),
         "--disk-gib", str(10 * cores)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        up = [n for n in nodes_of(cc_url, token_file)
              if n["state"] == "UP" and n["capacity"]["cores"] == cores]
        if len(up) == 2:
            return p
        assert p.poll() is None, (tmp / f"nc-{name}.log").read_text()
        time.sleep(0.2)
    p.kill()
    raise AssertionError(f"{name}: nodes not UP: {nodes_of(cc_url, token_file)}")


@pytest.fixture(scope="module")
def zones(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zones")
    token = tmp / "cluster-token"
    token.write_text("zones-test-cluster-token-0123456789\n")
    token.chmod(0o600)
    cc_b_port = free_port()
    cc_b_url = f"http://127.0.0.1:{cc_b_port}"
    (tmp / "cc-b.toml").write_text(
        f'[cc]\nzone = "{ZONE_B}"\npoll_interval_ms = 250\n')
    cc_b_log = open(tmp / "cc-b.log", "ab")
    cc_b = subprocess.Popen(
        [euca_bin(), "cc", "--config", str(tmp / "cc-b.toml"),
         "--listen", f"127.0.0.1:{cc_b_port}", "--token-file", str(token),
         "--data", str(tmp / "data-b")],
        stdout=cc_b_log, stderr=subprocess.STDOUT)
    cfg = tmp / "euca.toml"
    cfg.write_text(
        f'[cc]\npoll_interval_ms = 250\ntoken_file = "{token}"\n'
        f'[[clc.clusters]]\nzone = "{ZONE_B}"\nurl = "{cc_b_url}"\ntoken_file = "{token}"\n'
        f'[[clc.clusters]]\nzone = "{ZONE_WRONG}"\nurl = "{cc_b_url}"\ntoken_file = "{token}"\n')
    cloud = Cloud(tmp / "data", free_port(), ["--no-node", "--config", str(cfg)])
    procs = [cc_b]
    try:
        cloud.start()
        cloud.token = token
        cloud.cc_a = f"http://127.0.0.1:{cloud.cc_port}"
        cloud.cc_b = cc_b_url
        # Zone A's nodes: 2 cores each; zone B's: 4 cores each.
        procs.append(sim(tmp, "za", cloud.cc_a, token, 2))
        procs.append(sim(tmp, "zb", cc_b_url, token, 4))
        cloud.emi = register_plain_image(cloud, tmp)
        yield cloud
    finally:
        stop(*reversed(procs))
        cloud.stop()


def test_both_zones_are_listed_with_their_own_capacity(zones):
    ec2 = zones.ec2()
    got = ec2.describe_availability_zones()["AvailabilityZones"]
    names = [z["ZoneName"] for z in got]
    assert names == [ZONE_A, ZONE_B, ZONE_WRONG], got
    assert all(z["State"] == "available" and z["RegionName"] == "us-east-1" for z in got)
    assert len({z["ZoneId"] for z in got}) == 3
    one = ec2.describe_availability_zones(ZoneNames=[ZONE_B])["AvailabilityZones"]
    assert [z["ZoneName"] for z in one] == [ZONE_B]
    # verbose: each zone's item followed by its CC's capacity lines (m1.small is
    # 1 core: zone A's two 2-core nodes hold 4, zone B's two 4-core nodes 8).
    terminate_all(ec2)
    items = ec2.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    rows = [(z["ZoneName"], z["State"]) for z in items]
    small = {}
    zone = None
    for name, state in rows:
        if not name.startswith("|-"):
            zone = name
        elif name == "|- m1.small":
            small[zone] = state.split()
    assert small[ZONE_A][:3] == ["0004", "/", "0004"], rows
    assert small[ZONE_B][:3] == ["0008", "/", "0008"], rows


def test_placement_picks_the_zone(zones):
    ec2 = zones.ec2()
    a = ec2.run_instances(ImageId=zones.emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
                          Placement={"AvailabilityZone": ZONE_A})["Instances"][0]
    b = ec2.run_instances(ImageId=zones.emi, MinCount=2, MaxCount=2, InstanceType="m1.small",
                          Placement={"AvailabilityZone": ZONE_B})["Instances"]
    b_ids = [i["InstanceId"] for i in b]
    assert a["Placement"]["AvailabilityZone"] == ZONE_A
    assert all(i["Placement"]["AvailabilityZone"] == ZONE_B for i in b)
    wait_running(ec2, [a["InstanceId"], *b_ids])
    on_a, on_b = live(zones.cc_a, zones.token), live(zones.cc_b, zones.token)
    assert a["InstanceId"] in on_a and a["InstanceId"] not in on_b
    assert set(b_ids) <= on_b and not set(b_ids) & on_a
    desc = ec2.describe_instances(
        Filters=[{"Name": "availability-zone", "Values": [ZONE_B]}])["Reservations"]
    assert {i["InstanceId"] for r in desc for i in r["Instances"]} == set(b_ids)
    terminate_all(ec2)


def test_without_placement_the_first_zone_with_room(zones):
    ec2 = zones.ec2()
    # Zone A (first) has room for 4 m1.small: a plain launch goes there.
    r = ec2.run_instances(ImageId=zones.emi, MinCount=1, MaxCount=1, InstanceType="m1.small")
    first = r["Instances"][0]
    assert first["Placement"]["AvailabilityZone"] == ZONE_A
    # 6 at once do not fit in zone A (3 left) but do in zone B (8).
    r = ec2.run_instances(ImageId=zones.emi, MinCount=6, MaxCount=6, InstanceType="m1.small")
    six = [i["InstanceId"] for i in r["Instances"]]
    assert {i["Placement"]["AvailabilityZone"] for i in r["Instances"]} == {ZONE_B}
    wait_running(ec2, [first["InstanceId"], *six])
    assert set(six) <= live(zones.cc_b, zones.token)
    terminate_all(ec2)


def test_unknown_zone_is_invalid_parameter_value(zones):
    ec2 = zones.ec2()
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=zones.emi, MinCount=1, MaxCount=1,
                          Placement={"AvailabilityZone": "us-east-1q"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "us-east-1q" in e.value.response["Error"]["Message"]
    after = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
             for i in r["Instances"]}
    assert after == before


def test_a_volume_attaches_only_in_its_zone(zones):
    ec2 = zones.ec2()
    i = ec2.run_instances(ImageId=zones.emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
                          Placement={"AvailabilityZone": ZONE_B})["Instances"][0]["InstanceId"]
    wait_running(ec2, [i])
    vol = ec2.create_volume(AvailabilityZone=ZONE_A, Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=vol, InstanceId=i, Device="/dev/sdf")
    assert e.value.response["Error"]["Code"] == "InvalidVolume.ZoneMismatch"
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available"
    # A volume in zone B: created there (zone B is a real zone for volumes too).
    vb = ec2.create_volume(AvailabilityZone=ZONE_B, Size=1)
    assert vb["AvailabilityZone"] == ZONE_B
    terminate_all(ec2)
    ec2.delete_volume(VolumeId=vol)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vb["VolumeId"]],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ec2.delete_volume(VolumeId=vb["VolumeId"])


def test_a_cc_configured_for_another_zone_refuses(zones):
    ec2 = zones.ec2()
    before = live(zones.cc_b, zones.token)
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=zones.emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
                          Placement={"AvailabilityZone": ZONE_WRONG})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert ZONE_B in e.value.response["Error"]["Message"]
    assert live(zones.cc_b, zones.token) == before
    left = [i for r in ec2.describe_instances(
        Filters=[{"Name": "availability-zone", "Values": [ZONE_WRONG]}])["Reservations"]
        for i in r["Instances"]]
    assert left == []


def test_euca_up_refuses_a_cc_zone_other_than_the_clcs(tmp_path):
    cfg = tmp_path / "euca.toml"
    cfg.write_text(f'[clc]\nzone = "{ZONE_A}"\n[cc]\nzone = "{ZONE_B}"\n')
    cloud = Cloud(tmp_path / "data", free_port(), ["--no-node", "--config", str(cfg)])
    with pytest.raises(RuntimeError) as e:
        cloud.start()
    assert "[cc] zone" in str(e.value) and ZONE_B in str(e.value)
    cloud.stop()
