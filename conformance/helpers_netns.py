"""The emulated cluster (scripts/testbed/cloud-netns.sh) with the cloud's real
processes in it, for conformance/test_instances_netns.py and
scripts/bench-instances-cluster.sh:

    wt-cloud  10.231.0.1  `euca clc` (EC2 API :8777) + `euca walrus --identity` (:8773)
       |  uplink veth wt-up-cl <-> wt-up-cc (shaped)
    wt-cc     10.231.1.1  `euca cc` (CC API + image tracker :8774), journal of its own
       |  bridge, one shaped veth per node
    wt-node<i> 10.231.1.<10+i>  `euca nc` (:8778; QEMU TCG guests, image cache)

The nodes run with the config `euca clc --tracker-url` writes
(<data>/credentials/nc-cache.toml): Walrus and the tracker at their namespace
addresses, so every byte between a node and the cloud crosses the veths (image
pieces from Walrus cross the uplink; NC polls and runs cross the node links).
No SC runs: these tests attach no volume.

The test process itself enters wt-cloud (its main thread, with setns(2); threads
and subprocesses it starts inherit it), so boto3, `euca upload-bundle` and
`euca nodes` reach the cloud at its namespace addresses like a client next to it;
`Testbed.down` returns it to the namespace it came from before tearing down."""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import Cloud, euca_bin, with_short_guest_shutdown

ROOT = Path(__file__).resolve().parent.parent
TESTBED = ROOT / "scripts" / "testbed" / "cloud-netns.sh"
NET = "10.231"
CLOUD_IP = f"{NET}.0.1"
CC_IP = f"{NET}.1.1"
ZONE = "wt-zone-1"
CLONE_NEWNET = 0x40000000


def node_ip(i):
    return f"{NET}.1.{10 + i}"


def missing():
    """Why the emulated cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in ("ip", "tc", "qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class NetnsCloud(Cloud):
    """The cloud in wt-cloud as the shared test helpers expect it (endpoint,
    clc_url, credentials, `euca`); started and stopped by its Testbed."""

    def __init__(self, data):
        super().__init__(data, 8773)
        self.endpoint = f"http://{CLOUD_IP}:8773"
        self.clc_url = f"http://{CLOUD_IP}:8777"
        self.log_path = self.data.parent / "cloud.log"

    def start(self, timeout=30):
        raise RuntimeError("started by its Testbed")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        pass


class Testbed:
    """The topology and the processes in it. `up()` builds everything and waits
    until every node is UP with its capacity; `down()` (always call it) stops the
    processes, leaves the namespace and removes the topology, killing by PID
    whatever still runs in it (the guests' QEMUs: an NC that stops leaves them)."""

    __test__ = False  # not a pytest class

    def __init__(self, root, nodes=4, cores=2, memory_mib=2048, disk_gib=20,
                 policy="GREEDY", poll_ms=500, uplink_mbit=1000, node_mbit=1000):
        self.root = Path(root)
        self.n = nodes
        self.cores, self.memory_mib, self.disk_gib = cores, memory_mib, disk_gib
        self.policy, self.poll_ms = policy, poll_ms
        self.uplink_mbit, self.node_mbit = uplink_mbit, node_mbit
        self.data = self.root / "data"
        self.token_file = self.data / "cloud" / "cluster-token"
        self.cc_url = f"http://{CC_IP}:8774"
        self.cloud = NetnsCloud(self.data)
        self.procs = {}
        self._home_ns = None
        # Instance networking (helpers_net.NetTestbed sets these): the testbed's
        # `net` step (node bridges, the LAN host), and TOML appended to the CLC's,
        # the CC's and every node's config.
        self.lan = False
        self.clc_extra = ""
        self.cc_extra = ""
        self.nc_extra = ""
        # True: the nodes give a guest conftest.GUEST_SHUTDOWN_SECS to power off
        # (the tiny guest never does) instead of the default 5 s.
        self.short_guest_shutdown = False

    # -- the topology ----------------------------------------------------
    def tb(self, *args):
        r = subprocess.run(["bash", str(TESTBED), *map(str, args)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"cloud-netns.sh {' '.join(map(str, args))}: {r.stderr}")
        return r.stdout

    def _enter(self):
        self._home_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open("/run/netns/wt-cloud", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def _leave(self):
        if self._home_ns is not None:
            try:
                _setns(self._home_ns)
            finally:
                os.close(self._home_ns)
                self._home_ns = None

    def up(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.tb("up", self.n, self.uplink_mbit, self.node_mbit)
        if self.lan:
            self.tb("net")
        self._enter()
        self.start_cloud()
        self.start_cc()
        for i in range(1, self.n + 1):
            self.start_node(i)
        self.wait_nodes_up()
        return self

    def down(self):
        for name in list(self.procs):
            self.stop(name)
        self._leave()
        self.tb("down")

    # -- processes ---------------------------------------------------------
    def spawn(self, name, ns, args, env=None):
        log = open(self.root / f"{name}.log", "ab")
        # `ip netns exec` gives the process a mount namespace of its own, so a
        # namespace it names (`ip netns add`, as the CC does for its router) would
        # be seen by it alone: with instance networking, enter the network
        # namespace only.
        enter = (["nsenter", f"--net=/run/netns/{ns}"] if self.lan
                 else ["ip", "netns", "exec", ns])
        p = subprocess.Popen([*enter, euca_bin(), *map(str, args)],
                             stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "RUST_LOG": "info", **(env or {})})
        self.procs[name] = p
        return p

    def log(self, name, n=3000):
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGCONT)
        p.send_signal(sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def wait_health(self, name, url, timeout=30):
        p = self.procs[name]
        deadline = time.time() + timeout
        while time.time() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"euca {name} exited {p.returncode}:\n{self.log(name)}")
            try:
                urllib.request.urlopen(url + "/_health", timeout=1).read()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"euca {name} not healthy in {timeout}s:\n{self.log(name)}")

    def start_cloud(self):
        cfg = self.root / "clc.toml"
        cfg.write_text(f'[clc]\nzone = "{ZONE}"\n{self.clc_extra}\n[[clc.clusters]]\n'
                       f'zone = "{ZONE}"\nurl = "{self.cc_url}"\n'
                       f'token_file = "{self.token_file}"\n')
        self.spawn("clc", "wt-cloud", [
            "clc", "--data", self.data, "--config", cfg, "--listen", f"{CLOUD_IP}:8777",
            "--s3-url", f"http://{CLOUD_IP}:8773/", "--tracker-url", self.cc_url])
        self.wait_health("clc", self.cloud.clc_url)
        services = self.data / "credentials" / "services.toml"
        deadline = time.time() + 30
        while not (services.exists() and (self.data / "credentials" / "nc-cache.toml").exists()):
            assert time.time() < deadline, self.log("clc")
            time.sleep(0.1)
        self.spawn("walrus", "wt-cloud", [
            "walrus", "--data", self.data, "--identity", services,
            "--listen", f"{CLOUD_IP}:8773"])
        self.wait_health("walrus", self.cloud.endpoint)
        self.cloud._load_creds()

    def start_cc(self, policy=None, failpoint=None):
        """(Re)starts `euca cc` in wt-cc with `policy` (default: the current one)
        and, if given, EUCA_FAILPOINT; its journal survives restarts."""
        self.policy = policy or self.policy
        cfg = self.root / "cc.toml"
        cfg.write_text(f'[cc]\npolicy = "{self.policy}"\npoll_interval_ms = {self.poll_ms}\n'
                       f'poll_timeout_ms = {self.poll_ms}\n' + self.cc_extra)
        env = {"EUCA_FAILPOINT": failpoint} if failpoint else {}
        self.spawn("cc", "wt-cc", [
            "cc", "--config", cfg, "--listen", f"{CC_IP}:8774", "--token-file",
            self.token_file, "--data", self.root / "cc-data"], env=env)
        self.wait_health("cc", self.cc_url)

    def node_config(self, i):
        """The node's config: what the CLC wrote for nodes, plus `nc_extra`."""
        base = self.data / "credentials" / "nc-cache.toml"
        if not self.nc_extra and not self.short_guest_shutdown:
            return base
        text = base.read_text()
        if self.short_guest_shutdown:
            text = with_short_guest_shutdown(text)
        cfg = self.root / f"node{i}.toml"
        cfg.write_text(text + "\n" + self.nc_extra.format(i=i))
        return cfg

    def start_node(self, i):
        self.spawn(f"node{i}", f"wt-node{i}", [
            "nc", "--config", self.node_config(i),
            "--dir", self.root / f"node{i}", "--nc-listen", f"{node_ip(i)}:8778",
            "--name", f"node{i}", "--cores", self.cores, "--memory-mib", self.memory_mib,
            "--disk-gib", self.disk_gib])

    # -- the CC's view -----------------------------------------------------
    def nodes(self):
        """`euca nodes --json` (run from wt-cloud, through the uplink), by name."""
        r = subprocess.run([euca_bin(), "nodes", "--json", "--cc", self.cc_url,
                            "--token-file", str(self.token_file)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"euca nodes: {r.stderr}")
        return {n["name"]: n for n in json.loads(r.stdout)}

    def counts(self):
        """Instances holding capacity per node (`euca nodes`), in node order."""
        view = self.nodes()
        return [len([x for x in view[f"node{i}"]["instances"]
                     if x["state"] not in ("terminated", "failed", "shutoff")])
                if f"node{i}" in view else 0
                for i in range(1, self.n + 1)]

    def wait_view(self, what, pred, timeout=60):
        deadline = time.time() + timeout
        view = None
        while time.time() < deadline:
            try:
                view = self.nodes()
            except RuntimeError:
                view = None
            if view is not None and pred(view):
                return view
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(view)[:3000]}")

    def wait_nodes_up(self, timeout=60):
        def ok(v):
            for i in range(1, self.n + 1):
                p = self.procs.get(f"node{i}")
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"node{i} exited:\n{self.log(f'node{i}')}")
            return all(v.get(f"node{i}", {}).get("state") == "UP"
                       and v[f"node{i}"]["capacity"]["cores"] == self.cores
                       for i in range(1, self.n + 1))
        try:
            return self.wait_view("every node UP", ok, timeout)
        except AssertionError as e:
            # What the CC and the missing nodes said: a CI failure is read there.
            view = {}
            try:
                view = self.nodes()
            except RuntimeError:
                pass
            missing = [i for i in range(1, self.n + 1)
                       if view.get(f"node{i}", {}).get("state") != "UP"]
            logs = "".join(f"\n--- node{i} log ---\n{self.log(f'node{i}', 2000)}"
                           for i in missing[:3])
            raise AssertionError(f"{e}\n--- cc log ---\n{self.log('cc', 2000)}{logs}") from None

    # -- what really runs on the nodes ---------------------------------------
    def guests(self):
        """{instance id: [node numbers]} from the QEMU processes found in each
        node's namespace (`ip netns pids`). QEMU's -daemonize forks twice, and
        until the first two exit a starting guest is up to three processes: only
        the daemon counts, not a QEMU whose parent is the NC or a QEMU of the
        same instance."""
        out = {}
        for i in range(1, self.n + 1):
            r = subprocess.run(["ip", "netns", "pids", f"wt-node{i}"],
                               capture_output=True, text=True, timeout=10)
            nc = self.procs.get(f"node{i}")
            qemus = {}
            for pid in r.stdout.split():
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                if argv and b"qemu-system" in argv[0] and b"-name" in argv:
                    ppid = stat.rsplit(")", 1)[1].split()[1]
                    qemus[pid] = (argv[argv.index(b"-name") + 1].decode(), ppid)
            for pid, (iid, ppid) in qemus.items():
                if nc is not None and ppid == str(nc.pid):
                    continue
                if qemus.get(ppid, (None,))[0] == iid:
                    continue
                out.setdefault(iid, []).append(i)
        return out

    def ensure_cc(self):
        """Starts the CC again if it is not running (a test that failed between
        its kill and its restart leaves the next one a cluster)."""
        p = self.procs.get("cc")
        if p is None or p.poll() is not None:
            self.start_cc()
