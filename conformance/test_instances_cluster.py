"""Instances across a cluster of nodes, driven through the EC2 API (boto3) of a real
`euca up --no-node` whose CC places on nodes served by separate `euca nc --simulate`
processes (the NC protocol without QEMU, so counting tests need not boot dozens of
guests): GREEDY fills, ROUNDROBIN spreads (read from `euca nodes --json`),
concurrent launches never over-fill, MinCount is all or nothing, 50 instances get 50
distinct MACs from one locally-administered prefix, and a node stopped with SIGSTOP
goes DOWN while DescribeInstances keeps answering at once.

Booting real guests on real nodes is test_ec2_instances.py (all-in-one) and
test_instances_nc_restart.py (a separate `euca nc`, killed with -9)."""
import concurrent.futures
import json
import os
import signal
import subprocess
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Cloud, euca_bin, free_port
from helpers_ec2 import register_plain_image


def sim_nodes(cloud, tmp_path, n, cores, name, delay_ms=100):
    """Starts `euca nc --simulate n` registered with `cloud`'s CC; each node
    advertises `cores` cores, 1 GiB per core and 10 GiB per core, and takes
    `delay_ms` for each state change (pending → running, shutting-down →
    terminated)."""
    port = free_port()
    log = open(tmp_path / f"nc-{name}.log", "ab")
    p = subprocess.Popen(
        [euca_bin(), "nc", "--simulate", str(n), "--name", name,
         "--nc-listen", f"127.0.0.1:{port}",
         "--cc", f"http://127.0.0.1:{cloud.cc_port}",
         "--token-file", str(cloud.data / "cloud" / "cluster-token"),
         "--cores", str(cores), "--memory-mib", str(1024 * cores),
         "--disk-gib", str(10 * cores), "--sim-delay-ms", str(delay_ms)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        # UP and polled (a node's capacity is known from its first answered poll).
        up = [x for x in nodes(cloud) if x["name"].startswith(name + "-sim")
              and x["state"] == "UP" and x["capacity"]["cores"] == cores]
        if len(up) == n:
            return p
        assert p.poll() is None, (tmp_path / f"nc-{name}.log").read_text()
        time.sleep(0.2)
    p.kill()
    raise AssertionError(f"{n} simulated nodes did not come UP: {nodes(cloud)}")


def nodes(cloud):
    r = subprocess.run([euca_bin(), "nodes", "--json", "--data", str(cloud.data)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def counts(cloud, prefix):
    """Instances that hold capacity per node (nodes named prefix-sim*), by name."""
    out = {}
    for n in nodes(cloud):
        if n["name"].startswith(prefix + "-sim"):
            out[n["name"]] = len([i for i in n["instances"]
                                  if i["state"] not in ("terminated", "failed")])
    return out


def start(tmp_path, policy):
    cfg = tmp_path / "euca.toml"
    cfg.write_text(f'[cc]\npolicy = "{policy}"\npoll_interval_ms = 250\n')
    data = tmp_path / "data"
    return Cloud(data, free_port(), ["--no-node", "--config", str(cfg)]).start()


def wait_running(ec2, ids, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [i["State"]["Name"]
                  for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                  for i in r["Instances"]]
        if len(states) == len(ids) and all(s == "running" for s in states):
            return
        time.sleep(0.3)
    raise AssertionError(f"not all running: {states}")


def wait_free(cloud, prefix, cores):
    """Waits until the CC's view has `cores` free cores on nodes prefix-sim*."""
    deadline = time.time() + 30
    while time.time() < deadline:
        free = sum(n["free"]["cores"] for n in nodes(cloud) if n["name"].startswith(prefix + "-sim"))
        if free == cores:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {cores} free cores on {prefix}-sim*: {nodes(cloud)}")


def retire(cloud, proc, prefix):
    """Stops a simulated-node process and waits until the CC has its nodes DOWN,
    so later launches in the same cloud never land on them."""
    stop(proc)
    deadline = time.time() + 30
    while time.time() < deadline:
        if all(n["state"] == "DOWN" for n in nodes(cloud) if n["name"].startswith(prefix + "-sim")):
            return
        time.sleep(0.3)
    raise AssertionError(f"nodes {prefix}-sim* not DOWN: {nodes(cloud)}")


def stop(*procs):
    for p in procs:
        if p and p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.parametrize("policy,expect", [("GREEDY", [0, 0, 2, 2]),
                                           ("ROUNDROBIN", [1, 1, 1, 1])])
def test_placement_follows_the_policy(tmp_path, policy, expect):
    cloud = start(tmp_path, policy)
    sim = None
    try:
        sim = sim_nodes(cloud, tmp_path, 4, 2, "p")
        ec2 = cloud.ec2()
        emi = register_plain_image(cloud, tmp_path)
        ids = []
        for _ in range(4):  # one at a time: the policy decides each placement
            r = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m1.small")
            ids.append(r["Instances"][0]["InstanceId"])
        wait_running(ec2, ids)
        assert sorted(counts(cloud, "p").values()) == expect, counts(cloud, "p")
    finally:
        stop(sim)
        cloud.stop()


@pytest.fixture(scope="module")
def greedy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    cloud = start(tmp, "GREEDY")
    try:
        cloud.tmp = tmp
        cloud.emi = register_plain_image(cloud, tmp)
        yield cloud
    finally:
        cloud.stop()


def terminate_all(ec2):
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
           for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
        deadline = time.time() + 60
        while time.time() < deadline:
            left = [(i["InstanceId"], i["State"]["Name"], i.get("StateReason"))
                    for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                    for i in r["Instances"] if i["State"]["Name"] != "terminated"]
            if not left:
                return
            time.sleep(0.5)
        raise AssertionError(f"not terminated: {left}")


def test_concurrent_launches_never_overfill_and_min_count_is_all_or_nothing(greedy):
    sim = sim_nodes(greedy, greedy.tmp, 4, 2, "c")
    ec2 = greedy.ec2()
    try:
        # 8 slots (4 nodes x 2 cores); 12 launches at once: exactly 8 succeed.
        def launch(_):
            try:
                r = greedy.ec2().run_instances(ImageId=greedy.emi, MinCount=1, MaxCount=1,
                                               InstanceType="m1.small")
                return r["Instances"][0]["InstanceId"]
            except ClientError as e:
                return e.response["Error"]["Code"]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(launch, range(12)))
        ok = [r for r in results if r.startswith("i-")]
        assert len(ok) == 8, results
        assert all(r == "InsufficientInstanceCapacity" for r in results if not r.startswith("i-"))
        wait_running(ec2, ok)
        per = counts(greedy, "c")
        assert sorted(per.values()) == [2, 2, 2, 2], per
        # Full: a launch of MinCount 1 leaves nothing behind.
        before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                  for i in r["Instances"]}
        with pytest.raises(ClientError) as e:
            ec2.run_instances(ImageId=greedy.emi, MinCount=1, MaxCount=3, InstanceType="m1.small")
        assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        after = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                 for i in r["Instances"]}
        assert after == before
        # Free two slots; MinCount 3 does not fit and places none, MaxCount 5 of
        # MinCount 1 places the 2 that fit.
        ec2.terminate_instances(InstanceIds=ok[:2])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ok[:2],
                                                   WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        wait_free(greedy, "c", 2)
        with pytest.raises(ClientError) as e:
            ec2.run_instances(ImageId=greedy.emi, MinCount=3, MaxCount=3, InstanceType="m1.small")
        assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        r = ec2.run_instances(ImageId=greedy.emi, MinCount=1, MaxCount=5, InstanceType="m1.small")
        assert len(r["Instances"]) == 2
        wait_running(ec2, [i["InstanceId"] for i in r["Instances"]])
        assert sorted(counts(greedy, "c").values()) == [2, 2, 2, 2]
    finally:
        terminate_all(ec2)
        retire(greedy, sim, "c")


def test_fifty_instances_fifty_macs_from_one_prefix(greedy):
    sim = sim_nodes(greedy, greedy.tmp, 2, 25, "m")
    ec2 = greedy.ec2()
    try:
        r = ec2.run_instances(ImageId=greedy.emi, MinCount=50, MaxCount=50,
                              InstanceType="m1.small")
        ids = [i["InstanceId"] for i in r["Instances"]]
        assert len(set(ids)) == 50
        wait_running(ec2, ids)
        macs = [i["NetworkInterfaces"][0]["MacAddress"]
                for res in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                for i in res["Instances"]]
        assert len(macs) == 50 and len(set(macs)) == 50, macs
        assert len({m[:8] for m in macs}) == 1, "one per-cloud prefix"
        assert int(macs[0][:2], 16) & 0x03 == 0x02, "locally administered, unicast"
        # The nodes run the MACs the CLC gave.
        on_nodes = {i["mac"] for n in nodes(greedy) for i in n["instances"]
                    if i["instance_id"] in ids}
        assert on_nodes == set(macs)
    finally:
        terminate_all(ec2)
        retire(greedy, sim, "m")


def test_a_stopped_node_goes_down_and_describe_stays_prompt(greedy):
    a = sim_nodes(greedy, greedy.tmp, 1, 2, "s")
    b = None
    ec2 = greedy.ec2()
    try:
        r = ec2.run_instances(ImageId=greedy.emi, MinCount=2, MaxCount=2, InstanceType="m1.small")
        ids = [i["InstanceId"] for i in r["Instances"]]
        wait_running(ec2, ids)
        a.send_signal(signal.SIGSTOP)
        import boto3
        fast = boto3.client("ec2", endpoint_url=greedy.clc_url + "/", region_name=greedy.region,
                            aws_access_key_id=greedy.access_key,
                            aws_secret_access_key=greedy.secret_key,
                            config=Config(retries={"max_attempts": 1}, read_timeout=3,
                                          connect_timeout=3))
        deadline = time.time() + 30
        state = None
        while time.time() < deadline:
            # Answers (within the 3 s read timeout) while the node is hung.
            d = fast.describe_instances(InstanceIds=ids)
            assert len([i for res in d["Reservations"] for i in res["Instances"]]) == 2
            state = [n["state"] for n in nodes(greedy) if n["name"] == "s-sim0"]
            if state == ["DOWN"]:
                break
            time.sleep(0.5)
        assert state == ["DOWN"], state
        # Its instances are still reported, with the node's state as the reason.
        d = fast.describe_instances(InstanceIds=ids)
        insts = [i for res in d["Reservations"] for i in res["Instances"]]
        assert {i["InstanceId"] for i in insts} == set(ids)
        # A launch goes elsewhere when another node has room.
        b = sim_nodes(greedy, greedy.tmp, 1, 2, "t")
        r = ec2.run_instances(ImageId=greedy.emi, MinCount=1, MaxCount=1, InstanceType="m1.small")
        wait_running(ec2, [r["Instances"][0]["InstanceId"]])
        assert counts(greedy, "t") == {"t-sim0": 1}
        a.send_signal(signal.SIGCONT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if [n["state"] for n in nodes(greedy) if n["name"] == "s-sim0"] == ["UP"]:
                break
            time.sleep(0.3)
        assert [n["state"] for n in nodes(greedy) if n["name"] == "s-sim0"] == ["UP"]
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGCONT)
        terminate_all(ec2)
        stop(a, b)
