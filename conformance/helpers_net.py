"""Instance networking on the emulated cluster (issue 14), for
conformance/test_net_modes.py and scripts/net-check.sh.

The topology is helpers_netns' (scripts/testbed/cloud-netns.sh) plus its `net` step:
every node's LAN port on a bridge `wt-nb` (instance taps join it, or in managed mode
their VXLAN segments ride on it), and `wt-lan` (10.231.1.2), a host of the site's LAN
where system mode's DHCP server runs — a dnsmasq that is not ours and whose lease file
the cloud never reads.

    wt-cloud 10.231.0.1   euca clc (EC2 :8777, DNS :53), walrus; the "outside":
       |                  routes the public range to wt-cc
    wt-cc    10.231.1.1   euca cc; its router namespace (euca-<hash>) hangs off
       |                  wt-br0 (private side) and wt-cc (public side, 10.231.9.0/24)
    wt-node<i> on wt-nb   euca nc, QEMU guests
    wt-lan   10.231.1.2   the LAN's own DHCP server (system mode)
"""
import hashlib
import os
import subprocess
from pathlib import Path

from helpers_ec2 import wait_console
from helpers_netns import CLOUD_IP, NET, Testbed

PUBLIC_CIDR = f"{NET}.9.0/24"
PUBLIC_IPS = f"{NET}.9.10-{NET}.9.40"
PRIVATE_RANGE = "10.128.0.0/16"
ADDRS_PER_NET = 32
STATIC_FIRST, STATIC_LAST = 150, 159          # 10.231.1.150-159, the CC's (static)
LAN_FIRST, LAN_LAST = 100, 149                # 10.231.1.100-149, wt-lan's (system)
DNS = CLOUD_IP
VNI_BASE = 1000

REPORT = os.environ.get("EUCA_NET_REPORT")


def report(line):
    """One evidence line per mode (scripts/net-check.sh prints them)."""
    print(line)
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(line + "\n")


def router_netns(state_dir):
    """The CC's router namespace: named after its state dir."""
    real = os.path.realpath(state_dir)
    return "euca-" + hashlib.sha256(real.encode()).hexdigest()[:8]


def cc_config(mode):
    lines = ["", "[cc.net]", f'mode = "{mode}"']
    if mode in ("managed", "managed-novlan"):
        lines += [f'private_range = "{PRIVATE_RANGE}"', f"addrs_per_net = {ADDRS_PER_NET}",
                  f'public_cidr = "{PUBLIC_CIDR}"', f'public_ips = ["{PUBLIC_IPS}"]']
    if mode == "managed-novlan":
        lines += ['private_bridge = "wt-br0"']
    if mode == "managed":
        lines += ['underlay = "wt-br0"', f"vni_base = {VNI_BASE}"]
    if mode == "static":
        lines += [f'static_ips = ["{NET}.1.{STATIC_FIRST}-{NET}.1.{STATIC_LAST}"]',
                  f'static_subnet = "{NET}.1.0/24"', f'static_router = "{NET}.1.1"',
                  f'static_server_ip = "{NET}.1.3"', 'private_bridge = "wt-br0"']
    return "\n".join(lines) + "\n"


def nc_config(mode):
    if mode == "managed":
        return '[nc.net]\nunderlay = "wt-nb"\n'
    return '[nc.net]\nbridge = "wt-nb"\n'


class NetTestbed(Testbed):
    """The emulated cluster with instance networking in `mode`."""

    __test__ = False

    def __init__(self, root, mode, nodes=2):
        super().__init__(root, nodes=nodes, cores=2, memory_mib=2048, disk_gib=20,
                         policy="ROUNDROBIN", poll_ms=500)
        self.mode = mode
        self.lan = True
        self.clc_extra = f'dns_listen = "{DNS}:53"\n'
        self.cc_extra = cc_config(mode)
        self.nc_extra = nc_config(mode)
        self.lan_dhcp = None
        self.router = router_netns(self.root / "cc-data" / "cc")

    def up(self):
        super().up()
        subprocess.run(["ip", "route", "replace", PUBLIC_CIDR, "via", f"{NET}.0.2"],
                       check=True)
        if self.mode == "system":
            self.start_lan_dhcp()
        return self

    def start_lan_dhcp(self):
        """The site's DHCP server on wt-lan (not the cloud's)."""
        leases = self.root / "lan.leases"
        log = open(self.root / "lan-dnsmasq.log", "ab")
        self.lan_dhcp = subprocess.Popen(
            ["ip", "netns", "exec", "wt-lan", "dnsmasq", "--keep-in-foreground",
             "--port=0", "--no-resolv", "--no-hosts", "--bind-interfaces",
             "--interface=wt-lan0", "--log-dhcp", "--log-facility=-",
             f"--dhcp-range={NET}.1.{LAN_FIRST},{NET}.1.{LAN_LAST},255.255.255.0,1h",
             f"--dhcp-option=option:router,{NET}.1.1",
             f"--dhcp-leasefile={leases}", f"--pid-file={self.root / 'lan-dnsmasq.pid'}"],
            stdout=log, stderr=subprocess.STDOUT)

    def down(self):
        if self.lan_dhcp is not None:
            self.lan_dhcp.terminate()
            try:
                self.lan_dhcp.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.lan_dhcp.kill()
        try:
            super().down()
        finally:
            delete_netns(self.router)


def delete_netns(name):
    """Kills what runs in namespace `name` (the router's dnsmasq) and deletes it."""
    if not Path("/run/netns", name).exists():
        return
    r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (OSError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def node_logs(bed):
    """The tails of the CC's and the nodes' logs, for a failure message."""
    return "\n".join(f"--- {n}\n{bed.log(n, 1500)}" for n in ("cc", "node1", "node2"))


def wait_line(ec2, iid, pattern, timeout=90, after=0, bed=None):
    """helpers_ec2.wait_console with the testbed's logs on failure; returns (match,
    offset of the match's end in the whole console)."""
    logs = (lambda: node_logs(bed)) if bed is not None else None
    m = wait_console(ec2, iid, pattern, timeout=timeout, after=after, logs=logs)
    return m, m.end()


def dig(name, rtype="A"):
    r = subprocess.run(["dig", f"@{DNS}", "+short", "+time=2", "+tries=2", name, rtype],
                       capture_output=True, text=True, timeout=20)
    return r.stdout.split()


def dashed(ip):
    return "euca-" + ip.replace(".", "-")
