"""Instances on the emulated cluster: the cloud (`euca clc` + `euca walrus`), a
`euca cc` and four real `euca nc` (QEMU TCG, the tiny guest), each in its own
network namespace of scripts/testbed/cloud-netns.sh (see helpers_netns.py), driven
through the EC2 API with boto3:

- GREEDY fills nodes (2,2,0,0 on 2-core nodes), ROUNDROBIN spreads (1,1,1,1),
  read from `euca nodes --json`; every guest reaches `running` and prints TG-BOOTED;
- concurrent launches on a full cluster place exactly the free slots, the rest get
  InsufficientInstanceCapacity, no node runs more than its cores;
- `kill -9` of the CC at its named failpoints mid-launch: after the restart no
  instance is lost, none runs twice (QEMU processes counted per namespace), and the
  view is whole again within two polls;
- SIGSTOP of one `euca nc`: its node goes DOWN, its instances stay described, and
  DescribeInstances keeps answering (each call within 3 s); SIGCONT: UP again.

One topology for the module (the CC restarts to change policy or arm a failpoint;
its journal and the nodes' registrations survive that)."""
import concurrent.futures
import signal
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers_ec2 import GUEST, register_guest_image, unique, wait_console
from helpers_netns import Testbed, missing

_why = missing() or (None if (GUEST / "initramfs.gz").exists() else
                     f"the tiny guest is not built in {GUEST} (tools/vm/build-tiny-guest.sh; "
                     "scripts/test.sh builds it)")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"emulated cluster: {_why}")

POLL_MS = 500


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("netns"), nodes=4, cores=2, memory_mib=2048,
                 disk_gib=20, policy="GREEDY", poll_ms=POLL_MS)
    tb.short_guest_shutdown = True
    try:
        tb.up()
        tb.ec2 = tb.cloud.ec2()
        tb.emi, _, _ = register_guest_image(tb.cloud, tb.root)
        yield tb
    finally:
        tb.down()


def launch(bed, **kw):
    r = bed.ec2.run_instances(ImageId=bed.emi, MinCount=1, MaxCount=1,
                              InstanceType="m1.small", **kw)
    return r["Instances"][0]["InstanceId"]


def described(ec2, ids=None):
    kw = {"InstanceIds": ids} if ids else {}
    return {i["InstanceId"]: i for r in ec2.describe_instances(**kw)["Reservations"]
            for i in r["Instances"]}


def wait_running(bed, ids, timeout=180):
    deadline = time.time() + timeout
    states = {}
    while time.time() < deadline:
        states = {k: v["State"]["Name"] for k, v in described(bed.ec2, ids).items()}
        if len(states) == len(ids) and set(states.values()) == {"running"}:
            return
        assert "terminated" not in states.values(), states
        time.sleep(0.5)
    raise AssertionError(f"not all running: {states}")


def live(bed):
    """Instances not terminated, as the CLC describes them."""
    return {k for k, v in described(bed.ec2).items() if v["State"]["Name"] != "terminated"}


def terminate(bed, ids):
    """Terminates `ids` and waits until their QEMUs are gone from every node and
    the CC counts nothing for them."""
    if not ids:
        return
    bed.ec2.terminate_instances(InstanceIds=list(ids))
    bed.ec2.get_waiter("instance_terminated").wait(
        InstanceIds=list(ids), WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    deadline = time.time() + 60
    while time.time() < deadline and set(ids) & set(bed.guests()):
        time.sleep(0.3)
    assert not set(ids) & set(bed.guests()), bed.guests()
    bed.wait_view("the terminated instances freed", lambda v: not any(
        x["instance_id"] in ids and x["state"] not in ("terminated", "failed", "shutoff")
        for n in v.values() for x in n["instances"]))


def placed_on(view):
    """{instance id: node name} for instances holding capacity in the CC's view."""
    return {x["instance_id"]: name for name, n in view.items() for x in n["instances"]
            if x["state"] not in ("terminated", "failed", "shutoff")}


def check_one_guest_each(bed, ids):
    """Each of `ids` runs as exactly one QEMU, on the node the CC places it on, and
    no node runs more guests than its cores."""
    guests = bed.guests()
    where = placed_on(bed.nodes())
    for iid in ids:
        assert len(guests.get(iid, [])) == 1, (iid, guests)
        assert f"node{guests[iid][0]}" == where.get(iid), (iid, guests, where)
    per_node = {}
    for iid, nodes in guests.items():
        for i in nodes:
            per_node[i] = per_node.get(i, 0) + 1
    assert all(c <= bed.cores for c in per_node.values()), per_node
    for name, n in bed.nodes().items():
        assert n["free"]["cores"] >= 0 and n["free"]["memory_mib"] >= 0, (name, n)


def test_greedy_fills_nodes_and_every_guest_boots(bed):
    assert live(bed) == set()
    ids = [launch(bed) for _ in range(4)]  # one at a time: the policy decides each
    try:
        wait_running(bed, ids)
        assert sorted(bed.counts(), reverse=True) == [2, 2, 0, 0], bed.counts()
        check_one_guest_each(bed, ids)
        for iid in ids:
            wait_console(bed.ec2, iid, r"TG-BOOTED")
    finally:
        terminate(bed, ids)
    assert bed.counts() == [0, 0, 0, 0]


def test_roundrobin_spreads_and_concurrent_launches_fill_exactly(bed):
    bed.stop("cc")
    bed.start_cc(policy="ROUNDROBIN")
    bed.wait_nodes_up()
    ids = [launch(bed) for _ in range(4)]
    wait_running(bed, ids)
    assert bed.counts() == [1, 1, 1, 1]
    for iid in ids:
        wait_console(bed.ec2, iid, r"TG-BOOTED")

    # 4 slots left; 7 separate RunInstances at once: exactly 4 are placed.
    def one(_):
        try:
            return bed.cloud.ec2().run_instances(
                ImageId=bed.emi, MinCount=1, MaxCount=1,
                InstanceType="m1.small")["Instances"][0]["InstanceId"]
        except ClientError as e:
            return e.response["Error"]["Code"]
    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        results = list(pool.map(one, range(7)))
    more = [r for r in results if r.startswith("i-")]
    try:
        assert len(more) == 4, results
        assert [r for r in results if not r.startswith("i-")] == \
            ["InsufficientInstanceCapacity"] * 3, results
        wait_running(bed, more)
        assert bed.counts() == [2, 2, 2, 2]
        check_one_guest_each(bed, ids + more)
    finally:
        # The first four stay for the crash tests below (instances that must
        # survive a CC restart).
        terminate(bed, more)


@pytest.mark.parametrize("point", ["cc.after_reserve", "cc.after_nc_run"])
def test_kill9_of_the_cc_mid_launch_loses_nothing_and_places_once(bed, point):
    before = bed.guests()
    assert all(len(v) == 1 for v in before.values()), before
    pids = qemu_pids(bed)
    known = live(bed)
    try:
        crash_and_restart(bed, point, before, pids, known)
    finally:
        bed.ensure_cc()


def crash_and_restart(bed, point, before, pids, known):
    bed.stop("cc")
    bed.start_cc(failpoint=point)
    bed.wait_nodes_up()
    token = unique("crash")
    with pytest.raises(ClientError) as e:
        launch(bed, ClientToken=token)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.value.response
    cc = bed.procs["cc"]
    cc.wait(timeout=10)
    assert cc.returncode == -signal.SIGKILL, "killed at its failpoint"
    # after_reserve: no node was asked; after_nc_run: one was, once.
    started = {}
    deadline = time.time() + 10
    while time.time() < deadline:
        started = {k: v for k, v in bed.guests().items() if k not in before}
        if point == "cc.after_reserve" or started:
            break
        time.sleep(0.2)
    assert len(started) == (0 if point == "cc.after_reserve" else 1), started
    assert all(len(v) == 1 for v in started.values()), started

    # The CC comes back; its view (every node UP and answering polls of this
    # process — `last_seen` starts empty — with every guest on its node) is whole
    # within two polls of its start (plus what starting and one poll may take).
    t0 = time.time()
    bed.start_cc()
    bed.wait_view("the rebuilt view", lambda v: all(
        v.get(f"node{i}", {}).get("state") == "UP" and v[f"node{i}"]["last_seen"]
        for i in range(1, bed.n + 1))
        and all(placed_on(v).get(iid) == f"node{n[0]}" for iid, n in before.items()),
        timeout=30)
    rebuilt = time.time() - t0
    assert rebuilt < 2 * POLL_MS / 1000 + 2, f"view rebuilt in {rebuilt:.1f} s"

    # The interrupted launch finishes (the CLC re-drives it, the CC keeps its
    # placement): one new instance, running once.
    deadline = time.time() + 60
    while time.time() < deadline and not live(bed) - known:
        time.sleep(0.3)
    new = live(bed) - known
    assert len(new) == 1, (new, known)
    iid = new.pop()
    assert set(started) <= {iid}, (started, iid)
    try:
        wait_running(bed, [iid])
        wait_console(bed.ec2, iid, r"TG-BOOTED")
        # The client's retry with its token gets that same instance.
        assert launch(bed, ClientToken=token) == iid
        check_one_guest_each(bed, sorted(known | {iid}))
        # No guest lost: the same QEMU processes still run every older instance.
        assert {k: v for k, v in qemu_pids(bed).items() if k != iid} == pids
        assert live(bed) == known | {iid}
    finally:
        terminate(bed, [iid])


def qemu_pids(bed):
    """{instance id: QEMU pid} from each node's instance directories."""
    running = bed.guests()
    out = {}
    for i in range(1, bed.n + 1):
        for f in (bed.root / f"node{i}" / "instances").glob("*/qemu.pid"):
            if f.parent.name in running:
                out[f.parent.name] = int(f.read_text().strip())
    return out


def test_a_stopped_nc_goes_down_and_describe_stays_prompt(bed):
    view = bed.nodes()
    busy = [name for name, n in view.items() if placed_on({name: n})]
    if busy:
        victim = busy[0]
    else:  # run alone: give one node a guest first
        iid = launch(bed)
        wait_running(bed, [iid])
        victim = placed_on(bed.nodes())[iid]
    mine = sorted(i for i, n in placed_on(bed.nodes()).items() if n == victim)
    import boto3
    c = bed.cloud
    fast = boto3.client("ec2", endpoint_url=c.clc_url + "/", region_name=c.region,
                        aws_access_key_id=c.access_key, aws_secret_access_key=c.secret_key,
                        config=Config(retries={"max_attempts": 1}, read_timeout=3,
                                      connect_timeout=3))
    proc = bed.procs[victim]
    proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.time() + 30
        state = None
        while time.time() < deadline:
            # Each call answers within the 3 s read timeout while the node hangs.
            d = described(fast, mine)
            assert set(d) == set(mine)
            state = bed.nodes()[victim]["state"]
            if state == "DOWN":
                break
            time.sleep(0.3)
        assert state == "DOWN"
        # Its instances are still reported: by the CC and by DescribeInstances.
        down = bed.nodes()[victim]
        assert down["state"] == "DOWN" and sorted(placed_on({victim: down})) == mine
        for _ in range(3):
            d = described(fast, mine)
            assert {k: v["State"]["Name"] for k, v in d.items()} == dict.fromkeys(mine, "running")
        # The other nodes are unaffected.
        assert [n["state"] for name, n in bed.nodes().items() if name != victim] == ["UP"] * 3
    finally:
        proc.send_signal(signal.SIGCONT)
    bed.wait_view(f"{victim} UP again", lambda v: v[victim]["state"] == "UP"
                  and sorted(placed_on({victim: v[victim]})) == mine, timeout=30)
    wait_running(bed, mine)
