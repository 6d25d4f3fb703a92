"""Two cloud controllers (`euca clc`, each its own --data and port) on one PostgreSQL
database (`[clc] meta_url`): the same EC2 records and the same accounts and keys
through either; racing creates of one name across both have one winner; the
instance reconciler runs on one of them at a time (a lease in the database) and
moves to the other when its holder stops. And `euca migrate` of a whole
single-node cloud (EC2 records, volumes, objects) onto the database.

PostgreSQL is a throwaway server (helpers_pg); skipped without its binaries.
"""
import re
import subprocess
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Cloud, euca_bin, free_port, parse_env_file, stop_process, wait_http
from helpers_pg import SKIP_REASON, pg, pg_bin_dir  # noqa: F401 (pg: the fixture)

pytestmark = pytest.mark.skipif(pg_bin_dir() is None, reason=SKIP_REASON)


class Clc:
    def __init__(self, root, name, config):
        self.name, self.config = name, config
        self.data = root / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = root / f"{name}.log"
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [euca_bin(), "clc", "--config", str(self.config), "--data", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}", "--s3-url", "http://127.0.0.1:1/"],
                stdout=log, stderr=subprocess.STDOUT)
        rc = self.data / "credentials" / "eucarc"
        wait_http(self.url + "_health", self.proc, self.log_path, also=rc)
        self.eucarc = parse_env_file(rc)
        return self

    def stop(self):
        stop_process(self.proc)

    def ec2(self, ak=None, sk=None):
        return boto3.client("ec2", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ak or self.eucarc["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=sk or self.eucarc["AWS_SECRET_ACCESS_KEY"],
                            config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def clcs(pg, tmp_path_factory):
    root = tmp_path_factory.mktemp("clcs")
    url = pg.create_database("clcs")
    cfg = root / "euca.toml"
    cfg.write_text(f'[clc]\nmeta_url = "{url}"\ndns_listen = "off"\n')
    pair = [Clc(root, n, cfg) for n in ("clc-a", "clc-b")]
    try:
        for c in pair:
            c.start()
        yield pair
    finally:
        for c in pair:
            c.stop()


def test_records_and_keys_are_shared(clcs, pg):
    a, b = clcs
    # One admin (in the database), whichever CLC wrote the eucarc.
    assert a.eucarc["AWS_ACCESS_KEY_ID"] == b.eucarc["AWS_ACCESS_KEY_ID"]
    ea, eb = a.ec2(), b.ec2()
    made = ea.create_key_pair(KeyName="shared key")
    got = eb.describe_key_pairs(KeyNames=["shared key"])["KeyPairs"]
    assert [(k["KeyName"], k["KeyFingerprint"]) for k in got] == [
        ("shared key", made["KeyFingerprint"])]
    g = eb.create_security_group(GroupName="web", Description="d")["GroupId"]
    ea.authorize_security_group_ingress(GroupId=g, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    perms = eb.describe_security_groups(GroupIds=[g])["SecurityGroups"][0]["IpPermissions"]
    assert [(p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in perms] == [(80, "0.0.0.0/0")]
    ea.create_tags(Resources=[g], Tags=[{"Key": "tier", "Value": "front"}])
    tags = eb.describe_tags(Filters=[{"Name": "resource-id", "Values": [g]}])["Tags"]
    assert [(t["Key"], t["Value"]) for t in tags] == [("tier", "front")]
    eb.delete_key_pair(KeyName="shared key")
    assert ea.describe_key_pairs()["KeyPairs"] == []
    # An account made through A's identity API works on B at once.
    r = subprocess.run([euca_bin(), "account", "create", "erin", "--data", str(a.data)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))
    erin = (k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"])
    b.ec2(*erin).create_key_pair(KeyName="erins")
    assert [x["KeyName"] for x in a.ec2(*erin).describe_key_pairs()["KeyPairs"]] == ["erins"]
    assert ea.describe_key_pairs()["KeyPairs"] == []
    assert g not in [x["GroupId"] for x in a.ec2(*erin).describe_security_groups()["SecurityGroups"]]


def test_racing_creates_of_one_name_have_one_winner(clcs):
    for rnd in range(3):
        name = f"race-{rnd}"
        clients = [c.ec2() for c in clcs for _ in range(4)]
        results, start = [None] * len(clients), threading.Barrier(len(clients))

        def create(i):
            start.wait()
            try:
                clients[i].create_security_group(GroupName=name, Description="r")
                results[i] = "ok"
            except ClientError as e:
                results[i] = e.response["Error"]["Code"]

        ts = [threading.Thread(target=create, args=(i,)) for i in range(len(clients))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert results.count("ok") == 1, results
        assert set(results) - {"ok"} == {"InvalidGroup.Duplicate"}, results
        for c in clcs:
            groups = c.ec2().describe_security_groups(
                Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
            assert len(groups) == 1, (c.name, groups)


def test_one_reconciler_at_a_time_and_a_stopped_one_hands_over(clcs, pg):
    """Runs last in this file: it stops one of the pair."""
    def holder():
        rows = pg.psql("SELECT holder FROM clc_leases WHERE name = 'reconciler'", db="clcs")
        rows = [ln for ln in rows.splitlines() if ln.strip()]
        assert len(rows) <= 1, rows
        # host:data directory:id (the directory is the CLC's own, under its --data)
        return rows[0].split(":")[1] if rows else None

    by_dir = {str((c.data / "clc").resolve()): c for c in clcs}
    first = holder()
    assert first in by_dir, (first, list(by_dir))
    # It keeps it while it runs (renewed every pass; the other never takes it).
    time.sleep(2)
    assert holder() == first
    by_dir[first].stop()
    other = next(d for d in by_dir if d != first)
    # A stopped CLC gives the lease back: the other takes it at its next pass
    # (one second apart), not the lease's 10 s later.
    deadline = time.time() + 5
    while holder() != other and time.time() < deadline:
        time.sleep(0.2)
    assert holder() == other


def test_migrate_moves_a_whole_single_node_cloud(pg, tmp_path):
    """`euca migrate` of a stopped `euca up` directory: its accounts, EC2 records,
    Walrus and the storage controller's volume and snapshot records go to
    PostgreSQL (blobs to a shared directory); the same directory started on them
    then serves the key pair, the volume (its bytes still on the SC's disk), the
    snapshot (a new volume is made from it) and the object, under the old keys."""
    fast = {"Delay": 1, "MaxAttempts": 60}
    cfg = tmp_path / "euca.toml"
    cfg.write_text('[clc]\ndns_listen = "off"\n')
    cloud = Cloud(tmp_path / "data", free_port(), ["--config", str(cfg)]).start()
    try:
        ec2, s3 = cloud.ec2(), cloud.boto3()
        ec2.create_key_pair(KeyName="moved")
        vol = ec2.create_volume(AvailabilityZone=f"{cloud.region}a", Size=1)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=fast)
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=fast)
        s3.create_bucket(Bucket="moved")
        s3.put_object(Bucket="moved", Key="k", Body=b"moved bytes" * 100)
    finally:
        cloud.stop()
    url = pg.create_database("migrated")
    blobs = tmp_path / "blobs"
    r = subprocess.run([euca_bin(), "migrate", "--from", str(tmp_path / "data"),
                        "--to-meta", url, "--to-blobs", f"file://{blobs}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 volume and 1 snapshot records" in r.stderr, r.stderr
    assert "[sc] section" in r.stdout, r.stdout
    sc_dir = tmp_path / "data" / "sc"
    assert (sc_dir / "sc.redb.migrated").is_file() and not (sc_dir / "sc.redb").exists()
    assert pg.psql("SELECT kind, id FROM sc_records ORDER BY kind", db="migrated").split() \
        == [f"snapshots|{snap}", f"volumes|{vol}"]
    cfg.write_text(f'[clc]\ndns_listen = "off"\nmeta_url = "{url}"\n'
                   f'[walrus]\nmeta_url = "{url}"\nblob_url = "file://{blobs}"\n'
                   f'[sc]\nmeta_url = "{url}"\n')
    cloud.start()
    try:
        ec2, s3 = cloud.ec2(), cloud.boto3()
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["moved"]
        v = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
        assert v["State"] == "available" and v["Size"] == 1
        s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
        assert s["State"] == "completed" and s["VolumeId"] == vol
        restored = ec2.create_volume(AvailabilityZone=f"{cloud.region}a",
                                     SnapshotId=snap)["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[restored], WaiterConfig=fast)
        assert s3.get_object(Bucket="moved", Key="k")["Body"].read() == b"moved bytes" * 100
        # The new volume's record went to PostgreSQL too.
        assert int(pg.psql(f"SELECT count(*) FROM sc_records WHERE id = '{restored}'",
                           db="migrated")) == 1
    finally:
        cloud.stop()
