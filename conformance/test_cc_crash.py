"""`euca cc` killed at its named failpoints on the launch path (EUCA_FAILPOINT, a
real SIGKILL of the real binary) loses no instance and never places one twice;
`euca nc --simulate 2` is its pair of nodes (the NC protocol without QEMU, at
http://<listen>/sim/<k>, listed in the CC's config as n0 and n1); `euca nodes`
lists what the CC sees."""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import euca_bin, free_port
from helpers_ec2 import poll_until

TOKEN = "conformance-cluster-token-0123456789"


class SimNodes:
    """`euca nc --simulate n`: n simulated NCs behind one listener at /sim/<k>,
    each advertising 2 cores, 2 GiB, 20 GiB; not registered with any CC (the CC's
    config lists them)."""

    def __init__(self, root, n):
        self.n = n
        self.port = free_port()
        self.token_file = root / "nc-token"
        self.token_file.write_text(TOKEN)
        os.chmod(self.token_file, 0o600)
        self.log = root / "nc.log"
        self.proc = subprocess.Popen(
            [euca_bin(), "nc", "--simulate", str(n), "--name", "crash",
             "--nc-listen", f"127.0.0.1:{self.port}", "--token-file", str(self.token_file),
             "--cores", "2", "--memory-mib", "2048", "--disk-gib", "20",
             "--sim-delay-ms", "50"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                self.node(n - 1)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, k):
        return f"http://127.0.0.1:{self.port}/sim/{k}"

    def node(self, k):
        """Node k's own report (GET /v1/node on the NC API)."""
        req = urllib.request.Request(self.url(k) + "/v1/node",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def holders(self, iid):
        """(node index, launched_at) of every node that runs `iid`."""
        return [(k, i["launched_at"]) for k in range(self.n)
                for i in self.node(k)["instances"] if i["instance_id"] == iid]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cc:
    """`euca cc` on a data dir with a config naming the simulated nodes."""

    def __init__(self, root, sim, n):
        self.root = root
        self.data = root / "data"
        (self.data / "cloud").mkdir(parents=True, exist_ok=True)
        self.token_file = self.data / "cloud" / "cluster-token"
        self.token_file.write_text(TOKEN)
        os.chmod(self.token_file, 0o600)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        nodes = ", ".join(f'{{name = "n{k}", url = "{sim.url(k)}"}}' for k in range(n))
        self.config = root / "cc.toml"
        self.config.write_text(
            f'[cc]\npolicy = "GREEDY"\npoll_interval_ms = 200\npoll_timeout_ms = 500\n'
            f'state_dir = "{root / "state"}"\nnodes = [{nodes}]\n')
        self.proc = None
        self.log = root / "cc.log"

    def start(self, failpoint=None):
        env = dict(os.environ)
        env.pop("EUCA_FAILPOINT", None)
        if failpoint:
            env["EUCA_FAILPOINT"] = failpoint
        self.proc = subprocess.Popen(
            [euca_bin(), "cc", "--config", str(self.config), "--data", str(self.data),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(self.url + "/_health", timeout=1).read()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("euca cc did not come up: " + self.log.read_text()[-3000:])

    def call(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def wait(self, what, pred, timeout=20):
        return poll_until(what, pred, timeout, interval=0.1,
                          detail=lambda: f"log: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spec(iid):
    return {"instance_id": iid, "account": "000000000001", "reservation_id": "r-0000abcd",
            "vm_type": {"name": "m1.small", "cores": 1, "memory_mib": 256, "disk_gib": 1},
            "root": {"kind": "image", "installed_id": "a" * 64, "size": 1048576},
            "mac": "d0:0d:12:34:56:78"}


@pytest.fixture
def rig(tmp_path):
    sim = SimNodes(tmp_path, 2)
    cc = Cc(tmp_path, sim, 2)
    yield sim, cc
    cc.stop()
    sim.stop()


def polled(cc):
    return all(n["last_seen"] for n in cc.call("GET", "/v1/nodes"))


@pytest.mark.parametrize("point", ["cc.after_reserve", "cc.after_nc_run"])
def test_kill9_at_failpoint_loses_nothing_places_once(rig, point):
    sim, cc = rig
    cc.start(failpoint=point)
    cc.wait("nodes polled", lambda: polled(cc))
    iid = "i-0badf00d"
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        cc.call("POST", "/v1/launch", {"min_count": 1, "instances": [spec(iid)]})
    cc.proc.wait(10)
    assert cc.proc.returncode == -9, "killed by its failpoint"
    # after_reserve: no node was asked; after_nc_run: n0 was (and runs it).
    before = sim.holders(iid)
    assert [k for k, _ in before] == ([] if point == "cc.after_reserve" else [0])
    cc.start()
    # The placement survived: it is listed at once and ends up run exactly once.
    listed = cc.call("GET", "/v1/instances")
    assert [(p["instance_id"], p["node"]) for p in listed] == [(iid, "n0")], listed
    cc.wait("the instance reported", lambda: any(
        p["report"] for p in cc.call("GET", "/v1/instances") if p["instance_id"] == iid))
    once = sim.holders(iid)
    assert [k for k, _ in once] == [0], once
    # A run the node had already taken is the same instance (same launch time).
    assert before in ([], once)
    # The same launch again (the CLC repeating its call) answers the same node.
    r = cc.call("POST", "/v1/launch", {"min_count": 1, "instances": [spec(iid)]})
    assert r["placed"] == [{"instance_id": iid, "node": "n0"}]
    time.sleep(0.5)  # a few polls: nothing re-sent elsewhere
    assert sim.holders(iid) == once
    nodes = cc.call("GET", "/v1/nodes")
    assert nodes[0]["reserved"]["cores"] == 0 and nodes[0]["free"]["cores"] == 1


def test_euca_nodes_table_and_json(rig):
    sim, cc = rig
    cc.start()
    cc.wait("nodes polled", lambda: polled(cc))
    r = cc.call("POST", "/v1/launch", {"min_count": 1, "instances": [spec("i-00000001")]})
    assert r["placed"][0]["node"] == "n0"
    cc.wait("reported", lambda: cc.call("GET", "/v1/nodes")[0]["instances"])
    args = [euca_bin(), "nodes", "--cc", cc.url, "--token-file", str(cc.token_file)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "CORES", "MEM(MiB)", "DISK(GiB)", "INSTANCES"]
    assert lines[1].split() == ["n0", "UP", "1/2", "1792/2048", "19/20", "1"], out.stdout
    assert lines[2].split() == ["n1", "UP", "2/2", "2048/2048", "20/20", "0"], out.stdout
    out = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=30)
    views = json.loads(out.stdout)
    assert [v["name"] for v in views] == ["n0", "n1"]
    assert views[0]["instances"][0]["instance_id"] == "i-00000001"
    # A wrong token: a one-line error and exit 1.
    bad = cc.root / "bad-token"
    bad.write_text("not-the-cluster-token-000")
    out = subprocess.run(args[:-1] + [str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "Forbidden" in out.stderr and len(out.stderr.splitlines()) == 1


class SimUrls:
    """Simulated nodes (`euca nc --simulate 1`, one process each, so one can be
    SIGSTOPped alone), not registering: the CC's config names them n0, n1."""

    def __init__(self, root, token_file, n):
        self.procs, self.urls = [], []
        for k in range(n):
            port = free_port()
            log = open(root / f"sim{k}.log", "ab")
            self.procs.append(subprocess.Popen(
                [euca_bin(), "nc", "--simulate", "1", "--name", f"s{k}",
                 "--token-file", str(token_file), "--nc-listen", f"127.0.0.1:{port}",
                 "--sim-delay-ms", "0", "--cores", "2", "--memory-mib", "2048",
                 "--disk-gib", "20"],
                stdout=log, stderr=subprocess.STDOUT))
            self.urls.append(f"http://127.0.0.1:{port}/sim/0")

    def url(self, k):
        return self.urls[k]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_kill9_while_a_node_is_down_keeps_its_instances_and_places_nothing(tmp_path):
    """The CC is killed -9 while n0 is DOWN (its simulated node SIGSTOPped) and
    restarted: n0's instances are still listed (n0 DOWN), nothing is placed again,
    and once n0 answers (SIGCONT) it is UP with the same instances."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    sims = SimUrls(tmp_path, token_file, 2)
    cc = None
    try:
        cc = Cc(tmp_path, sims, 2)
        cc.start()
        cc.wait("nodes polled", lambda: polled(cc))
        r = cc.call("POST", "/v1/launch",
                    {"min_count": 2, "instances": [spec("i-00000a01"), spec("i-00000a02")]})
        assert [p["node"] for p in r["placed"]] == ["n0", "n0"], r
        r = cc.call("POST", "/v1/launch", {"min_count": 1, "instances": [spec("i-00000b01")]})
        assert [p["node"] for p in r["placed"]] == ["n1"], r

        def running():
            return {p["instance_id"]: (p["node"], p["node_state"], p["report"]["state"])
                    for p in cc.call("GET", "/v1/instances") if p["report"]}
        want = {"i-00000a01": ("n0", "UP", "running"), "i-00000a02": ("n0", "UP", "running"),
                "i-00000b01": ("n1", "UP", "running")}
        cc.wait("all running", lambda: running() == want)
        sims.procs[0].send_signal(signal.SIGSTOP)
        cc.wait("n0 DOWN", lambda: cc.call("GET", "/v1/nodes")[0]["state"] == "DOWN")
        cc.proc.kill()
        cc.proc.wait(10)
        cc.start()
        down = dict(want, **{i: ("n0", "DOWN", "running") for i in ("i-00000a01", "i-00000a02")})
        cc.wait("n0's instances listed, n0 DOWN", lambda: running() == down)
        # Nothing placed again: n1 holds only its own; a terminate of one of n0's
        # answers "unavailable" rather than "no such instance".
        nodes = cc.call("GET", "/v1/nodes")
        assert [i["instance_id"] for i in nodes[1]["instances"]] == ["i-00000b01"], nodes
        assert nodes[1]["reserved"]["cores"] == 0, nodes
        with pytest.raises(urllib.error.HTTPError) as e:
            cc.call("POST", "/v1/instances/i-00000a01/terminate")
        assert e.value.code == 503, e.value.read()
        sims.procs[0].send_signal(signal.SIGCONT)
        cc.wait("n0 UP with its instances", lambda: running() == want)
        assert cc.call("GET", "/v1/nodes")[0]["state"] == "UP"
    finally:
        if cc:
            cc.stop()
        sims.stop()
