"""Instances on a node that goes DOWN, and DescribeInstanceStatus, through boto3
against a real `euca up --no-node` with a simulated node (`euca nc --simulate`,
SIGSTOPped to make it DOWN):

- a pending instance on a node that goes DOWN stays `pending` (never re-placed:
  the node may be running it), with stateReason `Server.NodeDown`, and its
  system status check `impaired`; it goes on once the node answers again;
- a terminate on a DOWN node leaves the instance `shutting-down`; it finishes
  (`terminated`) when the node returns;
- DescribeInstanceStatus honours IncludeAllInstances and the status filters."""
import signal
import time

from conftest import free_port  # noqa: F401  (the cloud fixtures' module)
from helpers_ec2 import poll_until as until, register_plain_image
from test_instances_cluster import nodes, sim_nodes, start, stop


def states(ec2, ids):
    return {i["InstanceId"]: (i["State"]["Name"], (i.get("StateReason") or {}).get("Code"))
            for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
            for i in r["Instances"]}


def statuses(ec2, **kw):
    out = {}
    for s in ec2.describe_instance_status(**kw)["InstanceStatuses"]:
        out[s["InstanceId"]] = (s["InstanceState"]["Name"], s["SystemStatus"]["Status"],
                                s["InstanceStatus"]["Status"])
    return out


def node_state(cloud, name):
    return [n["state"] for n in nodes(cloud) if n["name"] == name]


def test_pending_and_terminate_on_a_down_node_and_status_checks(tmp_path):
    cloud = start(tmp_path, "GREEDY")
    sim = None
    try:
        # Each state change on the node takes 3 s: the launch is still pending
        # on the node when it is stopped.
        sim = sim_nodes(cloud, tmp_path, 1, 6, "d", delay_ms=3000)
        ec2 = cloud.ec2()
        emi = register_plain_image(cloud, tmp_path)
        r = ec2.run_instances(ImageId=emi, MinCount=3, MaxCount=3, InstanceType="m1.small")
        ids = [i["InstanceId"] for i in r["Instances"]]
        sim.send_signal(signal.SIGSTOP)
        until("the node DOWN", lambda: node_state(cloud, "d-sim0") == ["DOWN"])
        # Pending, kept there, with the node's state as the reason.
        until("NodeDown reasons", lambda: all(
            v == ("pending", "Server.NodeDown") for v in states(ec2, ids).values()))
        st = statuses(ec2, InstanceIds=ids, IncludeAllInstances=True)
        assert all(v[1] == "impaired" for v in st.values()), st
        assert statuses(ec2, InstanceIds=ids) == {}, "not running: listed only with IncludeAllInstances"
        # A terminate while the node is DOWN: shutting-down until it returns.
        t = ec2.terminate_instances(InstanceIds=[ids[0]])
        assert t["TerminatingInstances"][0]["CurrentState"]["Name"] == "shutting-down"
        time.sleep(3)
        assert states(ec2, [ids[0]])[ids[0]][0] == "shutting-down"
        # Nothing was placed again meanwhile: the DOWN node still holds the
        # three (reported, or reserved until it reports them; m1.small is 1 core).
        (n,) = [n for n in nodes(cloud) if n["name"] == "d-sim0"]
        held = [i["instance_id"] for i in n["instances"]
                if i["state"] not in ("terminated", "failed")]
        assert set(held) <= set(ids), n
        assert len(held) + n["reserved"]["cores"] == 3, n
        sim.send_signal(signal.SIGCONT)
        until("the node UP", lambda: node_state(cloud, "d-sim0") == ["UP"])
        until("terminated after the node returned",
              lambda: states(ec2, [ids[0]])[ids[0]][0] == "terminated", timeout=60)
        until("the others running", lambda: all(
            states(ec2, ids)[i] == ("running", None) for i in ids[1:]), timeout=60)
        # Status checks and their filters.
        st = statuses(ec2)
        assert st == {i: ("running", "ok", "ok") for i in ids[1:]}, st
        st = statuses(ec2, IncludeAllInstances=True)
        assert st[ids[0]] == ("terminated", "not-applicable", "not-applicable"), st
        st = statuses(ec2, IncludeAllInstances=True,
                      Filters=[{"Name": "instance-status.status", "Values": ["ok"]}])
        assert sorted(st) == sorted(ids[1:]), st
        st = statuses(ec2, IncludeAllInstances=True,
                      Filters=[{"Name": "instance-state-name", "Values": ["terminated"]}])
        assert list(st) == [ids[0]], st
        st = statuses(ec2, IncludeAllInstances=True,
                      Filters=[{"Name": "system-status.status", "Values": ["impaired"]}])
        assert st == {}, st
        st = statuses(ec2, IncludeAllInstances=True,
                      Filters=[{"Name": "event.code", "Values": ["system-reboot"]}])
        assert st == {}, st
        st = statuses(ec2, Filters=[{"Name": "availability-zone",
                                     "Values": [r["Instances"][0]["Placement"]["AvailabilityZone"]]}])
        assert sorted(st) == sorted(ids[1:]), st
        # Pages (of 5, boto3's smallest) are full while more match: the
        # terminated one does not take a slot without IncludeAllInstances.
        more = ec2.run_instances(ImageId=emi, MinCount=3, MaxCount=3, InstanceType="m1.small")
        more_ids = [i["InstanceId"] for i in more["Instances"]]
        until("running", lambda: all(
            states(ec2, more_ids)[i][0] == "running" for i in more_ids), timeout=60)
        page = ec2.describe_instance_status(MaxResults=5)
        assert len(page["InstanceStatuses"]) == 5, page
        rest = ec2.describe_instance_status(MaxResults=5, NextToken=page["NextToken"]) \
            if page.get("NextToken") else {"InstanceStatuses": []}
        got = [s["InstanceId"] for s in page["InstanceStatuses"] + rest["InstanceStatuses"]]
        assert sorted(got) == sorted(ids[1:] + more_ids), got
    finally:
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGCONT)
        stop(sim)
        cloud.stop()
