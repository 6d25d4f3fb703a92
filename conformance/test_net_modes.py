"""Instance networking in each of the four modes (issue 14), on the emulated cluster
with real `euca clc`, `euca cc` and two real `euca nc` nodes running tiny guests
(see helpers_net.py for the topology). Every guest takes its address by DHCP (the
kernel command line carries none) and prints `TG-LEASE ip=…`; the tests read that
and what DescribeInstances says, and drive guests with user-data scripts (the
guest's /init runs a `#!` user-data in the background, its output on the console).

- system: the site's DHCP server (wt-lan) gives the address; the node learns it on
  the tap and DescribeInstances reports it.
- static: the CC's DHCP gives the first addresses of its static range; the
  metadata service (routed by DHCP option 121) answers each guest about itself,
  forged headers or not.
- managed-novlan, managed: per-group subnets; same group reaches, another group
  does not until authorize names its group (or the port), and not again after
  revoke; an elastic IP reaches the instance from outside (wt-cloud) and moves on
  re-association, and from another instance (hairpin NAT) only when the group
  admits that instance's public address (a source group does not); the metadata service answers each guest about itself only, forged
  headers or not, and never hears a guest passing for another (with its address, or
  its MAC and address: the node's tap guard drops the frames); `dig @clc` resolves
  public, private and reverse names; in managed mode the two groups' frames cross
  the node link in different VXLAN VNIs.

Each test prints (and appends to $EUCA_NET_REPORT) one evidence line, which
scripts/net-check.sh shows."""
import ipaddress
import re
import subprocess
import time

import pytest

from helpers_ec2 import GUEST, console, register_guest_image, unique
from helpers_net import (ADDRS_PER_NET, DNS, LAN_FIRST, LAN_LAST, NET, STATIC_FIRST, VNI_BASE, NetTestbed,
                         dashed, dig, report, wait_line)
from helpers_netns import missing

_why = missing() or next((f"{t} is not installed" for t in ("nft", "dnsmasq", "tcpdump", "dig")
                          if subprocess.run(["which", t], capture_output=True).returncode),
                         None) or (None if (GUEST / "initramfs.gz").exists() else
                                   f"the tiny guest is not built in {GUEST}")
pytestmark = pytest.mark.skipif(_why is not None, reason=f"instance networking: {_why}")

LEASE = r"TG-LEASE ip=(\d+\.\d+\.\d+\.\d+)"


def probe_script(targets, marker, forge_as="", spoof=None):
    """User-data: print this guest's own metadata (plain, and with forged headers
    naming `forge_as`), then every change of HTTP reachability of `targets`.
    (`timeout` bounds wget: busybox 1.35's static wget crashes on -T.)
    With `spoof` (the address and MAC of another live instance), first try to pass
    for it (see SPOOF_SCRIPT)."""
    return f"""#!/bin/sh
md=http://169.254.169.254/latest/meta-data
me=$(timeout 5 wget -q -O - $md/instance-id)
forged=$(timeout 5 wget -q -O - --header 'X-Forwarded-For: {forge_as}' --header 'X-Real-IP: {forge_as}' $md/instance-id)
ud=$(timeout 5 wget -q -O - http://169.254.169.254/latest/user-data | grep -c {marker})
echo "NET-META me=$me forged=$forged userdata_lines=$ud"
{spoof_script(*spoof) if spoof else ""}
last=""
while :; do
  s=""
  for t in {' '.join(targets)}; do
    if timeout 2 wget -q -O /tmp/p http://$t/ 2>/dev/null; then s="$s $t=ok"; else s="$s $t=blocked"; fi
  done
  [ "$s" != "$last" ] && echo "NET-PROBE$s"
  last=$s
  sleep 0.3
done
"""


# Asks the metadata service who this guest is while passing for another instance:
# first with that instance's address as a second one (the source of the request, on
# this guest's own MAC), then with its MAC and address both (which the router alone
# would take for that instance: only the node's tap guard stops it); each time
# again with its own address. Restores its MAC, address and default route.
SPOOF_SCRIPT = r"""
me_ip=$(ip -4 addr show dev eth0 | awk '/inet /{print $2; exit}')
me_mac=$(cat /sys/class/net/eth0/address)
gw=$(route -n | awk '$1=="0.0.0.0"{print $2; exit}')
ip addr add @IP@/32 dev eth0
ip route add 169.254.169.254 via $gw src @IP@
second=$(timeout 3 wget -q -O - $md/instance-id)
ip route del 169.254.169.254
real=$(timeout 5 wget -q -O - $md/instance-id)
ip addr del @IP@/32 dev eth0
setmac() { ip link set eth0 address $1 || { ip link set eth0 down; ip link set eth0 address $1; ip link set eth0 up; }; }
setmac @MAC@
as_mac=$(cat /sys/class/net/eth0/address)
ip addr flush dev eth0
ip addr add @IP@/${me_ip#*/} dev eth0
ip route add default via $gw
both=$(timeout 3 wget -q -O - $md/instance-id)
setmac $me_mac
ip addr flush dev eth0
ip addr add $me_ip dev eth0
ip route add default via $gw
back=$(timeout 5 wget -q -O - $md/instance-id)
echo "NET-SPOOF second_addr=${second:-none} real=${real:-none} as_mac=$as_mac mac_and_addr=${both:-none} back=${back:-none}"
"""


def spoof_script(ip, mac):
    return SPOOF_SCRIPT.replace("@IP@", ip).replace("@MAC@", mac)


def launch(bed, group=None, user_data=None, count=1):
    kw = {}
    if group:
        kw["SecurityGroups"] = [group]
    if user_data:
        kw["UserData"] = user_data
    r = bed.ec2.run_instances(ImageId=bed.emi, MinCount=count, MaxCount=count,
                              InstanceType="m1.small", **kw)
    return [i["InstanceId"] for i in r["Instances"]]


def described(bed, iid):
    r = bed.ec2.describe_instances(InstanceIds=[iid])
    return r["Reservations"][0]["Instances"][0]


def wait_described(bed, iid, key, want=None, timeout=60):
    deadline = time.time() + timeout
    d = {}
    while time.time() < deadline:
        d = described(bed, iid)
        v = d.get(key)
        if v and (want is None or v == want):
            return v
        time.sleep(0.5)
    raise AssertionError(f"{iid}: {key} never became {want!r}: {d}")


def probe_state(bed, iid, target, want, after=0, timeout=30):
    """Waits until the guest `iid` reports `target=want`; returns the console offset."""
    _, end = wait_line(bed.ec2, iid, rf"NET-PROBE[^\n]* {re.escape(target)}={want}\b",
                       timeout=timeout, after=after, bed=bed)
    return end


def stays(bed, iid, target, want, secs=3):
    """Nothing but `target=want` shows for `secs` (a blocked path stays blocked)."""
    start = len(console(bed.ec2, iid))
    time.sleep(secs)
    text = console(bed.ec2, iid)[start:]
    other = "ok" if want == "blocked" else "blocked"
    assert f"{target}={other}" not in text, text


def cleanup(bed, ids):
    if ids:
        bed.ec2.terminate_instances(InstanceIds=ids)


def with_bed(tmp_path_factory, mode):
    bed = NetTestbed(tmp_path_factory.mktemp(mode.replace("-", "")), mode)
    try:
        bed.up()
        bed.ec2 = bed.cloud.ec2()
        bed.emi, _, _ = register_guest_image(bed.cloud, bed.root)
    except BaseException:
        bed.down()
        raise
    return bed


def lease_and_described(bed, iid):
    m, _ = wait_line(bed.ec2, iid, LEASE, timeout=120, bed=bed)
    lease = m.group(1)
    desc = wait_described(bed, iid, "PrivateIpAddress", lease)
    return lease, desc


def test_system_mode_lan_dhcp(tmp_path_factory):
    bed = with_bed(tmp_path_factory, "system")
    ids = []
    try:
        ids = launch(bed)
        lease, desc = lease_and_described(bed, ids[0])
        last = int(lease.rsplit(".", 1)[1])
        assert lease.startswith(f"{NET}.1.") and LAN_FIRST <= last <= LAN_LAST, lease
        assert desc == lease
        dns = "ok" if dig(f"{dashed(lease)}.eucalyptus.internal") == [lease] else "fail"
        report(f"net mode=system lease={lease} described={desc} same_group=skip "
               f"other_group=skip authorize=skip elastic_ip=skip metadata=skip hairpin=skip dns={dns}")
        assert dns == "ok"
    finally:
        cleanup(bed, ids)
        bed.down()


# Static mode's guests ask the metadata service (routed to the CC's router namespace
# by DHCP option 121) about themselves, plainly and forging the other guest's
# address in headers (the two take the range's first two addresses).
STATIC_META = f"""#!/bin/sh
md=http://169.254.169.254/latest/meta-data
mine=$(ip -4 addr show dev eth0 | awk '/inet /{{split($2, a, "/"); print a[1]; exit}}')
other={NET}.1.{STATIC_FIRST}; [ "$mine" = "$other" ] && other={NET}.1.{STATIC_FIRST + 1}
me=$(timeout 5 wget -q -O - $md/instance-id)
forged=$(timeout 5 wget -q -O - --header "X-Forwarded-For: $other" --header "X-Real-IP: $other" $md/instance-id)
ud=$(timeout 5 wget -q -O - http://169.254.169.254/latest/user-data | grep -c NET-META)
echo "NET-META me=$me forged=$forged userdata_lines=$ud"
"""


def test_static_mode_cc_dhcp(tmp_path_factory):
    bed = with_bed(tmp_path_factory, "static")
    ids = []
    try:
        ids = launch(bed, user_data=STATIC_META, count=2)
        leases = {}
        for iid in ids:
            leases[iid], desc = lease_and_described(bed, iid)
            assert leases[iid] == desc, (iid, leases[iid], desc)
        first, second = f"{NET}.1.{STATIC_FIRST}", f"{NET}.1.{STATIC_FIRST + 1}"
        assert sorted(leases.values()) == [first, second], leases
        # Metadata: each guest is itself, forged headers naming the other or not.
        for iid in ids:
            m, _ = wait_line(bed.ec2, iid, r"NET-META me=(\S*) forged=(\S*) userdata_lines=(\d+)",
                             bed=bed)
            assert m.group(1) == iid and m.group(2) == iid, (iid, m.group(0))
            assert int(m.group(3)) >= 1, m.group(0)
        metadata = "ok"
        lease = first
        desc = described(bed, next(i for i in ids if leases[i] == first))["PrivateIpAddress"]
        dns = "ok" if dig(f"{dashed(lease)}.eucalyptus.internal") == [lease] else "fail"
        report(f"net mode=static lease={lease} described={desc} same_group=skip "
               f"other_group=skip authorize=skip elastic_ip=skip metadata={metadata} hairpin=skip dns={dns}")
        assert dns == "ok"
    finally:
        cleanup(bed, ids)
        bed.down()


def managed(bed, mode):
    ec2 = bed.ec2
    g1, g2 = unique("net-a"), unique("net-b")
    for g in (g1, g2):
        ec2.create_security_group(GroupName=g, Description=g)
    ids = []
    try:
        # A (g1) serves its id on port 80 (the guest's httpd).
        a = launch(bed, g1)[0]
        ids.append(a)
        a_ip = wait_described(bed, a, "PrivateIpAddress")
        a_lease, _ = wait_line(ec2, a, LEASE, timeout=120, bed=bed)
        assert a_lease.group(1) == a_ip
        # An elastic IP on A: C reaches it from inside too (hairpin) once A's group
        # admits C's public address.
        eip = ec2.allocate_address()["PublicIp"]
        ec2.associate_address(PublicIp=eip, InstanceId=a)
        # B (g1, same group) and C (g2) probe A; B first tries to pass for A.
        a_mac = described(bed, a)["NetworkInterfaces"][0]["MacAddress"]
        b = launch(bed, g1, probe_script([a_ip], "NET-META", a_ip, spoof=(a_ip, a_mac)))[0]
        c = launch(bed, g2, probe_script([a_ip, eip], "NET-META", a_ip))[0]
        ids += [b, c]
        b_ip = wait_described(bed, b, "PrivateIpAddress")
        c_ip = wait_described(bed, c, "PrivateIpAddress")
        for iid, ip in ((b, b_ip), (c, c_ip)):
            m, _ = wait_line(ec2, iid, LEASE, timeout=120, bed=bed)
            assert m.group(1) == ip, (iid, m.group(1), ip)
        net = {iid: ipaddress.ip_interface(f"{ip}/{32 - ADDRS_PER_NET.bit_length() + 1}").network
               for iid, ip in ((a, a_ip), (b, b_ip), (c, c_ip))}
        assert net[a] == net[b] != net[c], net

        # Metadata: each guest sees itself, forged headers or not, and its user-data.
        for iid in (b, c):
            m, _ = wait_line(ec2, iid, r"NET-META me=(\S*) forged=(\S*) userdata_lines=(\d+)",
                             bed=bed)
            assert m.group(1) == iid and m.group(2) == iid, m.group(0)
            assert int(m.group(3)) >= 1, m.group(0)
        m, _ = wait_line(ec2, a, r"TG-META instance-id=(\S+)", bed=bed)
        assert m.group(1) == a
        metadata = "ok"

        # B passing for A (A's address on B's MAC, then A's MAC and address): the
        # metadata service never hears it; with its own address it is B again.
        m, _ = wait_line(ec2, b, r"NET-SPOOF second_addr=(\S*) real=(\S*) as_mac=(\S*) "
                         r"mac_and_addr=(\S*) back=(\S*)", bed=bed)
        assert m.groups() == ("none", b, a_mac.lower(), "none", b), m.group(0)
        spoof = "blocked"

        # Same group: reachable; other group: blocked until authorized.
        probe_state(bed, b, a_ip, "ok", timeout=60)
        same_group = "ok"
        # C's probe line: "NET-PROBE <a_ip>=… <eip>=…".
        def c_sees(private, public, after):
            _, end = wait_line(ec2, c, rf"NET-PROBE {re.escape(a_ip)}={private} "
                               rf"{re.escape(eip)}={public}\b", timeout=30, after=after, bed=bed)
            return end
        off = c_sees("blocked", "blocked", 0)
        stays(bed, c, a_ip, "blocked")
        other_group = "blocked"

        # A source group admits private-address traffic only (as in EC2): C reaches
        # A, not A's elastic IP (hairpin NAT shows C's traffic from C's public
        # address) ...
        by_group = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                    "UserIdGroupPairs": [{"GroupName": g2}]}
        ec2.authorize_security_group_ingress(GroupName=g1, IpPermissions=[by_group])
        off = c_sees("ok", "blocked", off)
        # ... until A's group admits C's PUBLIC address too; revoked, neither.
        c_pub = wait_described(bed, c, "PublicIpAddress")
        by_public = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                     "IpRanges": [{"CidrIp": f"{c_pub}/32"}]}
        ec2.authorize_security_group_ingress(GroupName=g1, IpPermissions=[by_public])
        off = c_sees("ok", "ok", off)
        # A saw C's public address: the router's tracked flow from C to the elastic
        # IP answers from A's private address to C's public one.
        flows = subprocess.run(["ip", "netns", "exec", bed.router, "conntrack", "-L", "-p", "tcp",
                                "--orig-src", c_ip, "--orig-dst", eip],
                               capture_output=True, text=True).stdout
        assert f"src={a_ip} dst={c_pub} " in flows, flows
        hairpin = "ok"
        ec2.revoke_security_group_ingress(GroupName=g1, IpPermissions=[by_group, by_public])
        off = c_sees("blocked", "blocked", off)
        # ... or the port from anywhere, which the outside needs too.
        ec2.authorize_security_group_ingress(GroupName=g1, IpProtocol="tcp", FromPort=80,
                                             ToPort=80, CidrIp="0.0.0.0/0")
        off = c_sees("ok", "ok", off)
        authorize = "ok"

        # Elastic IP: reachable from outside (this process is in wt-cloud), moves.
        assert wait_described(bed, a, "PublicIpAddress", eip) == eip
        serves(eip, a)
        ec2.associate_address(PublicIp=eip, InstanceId=b)
        wait_described(bed, b, "PublicIpAddress", eip)
        moved = serves(eip, b)
        assert not described(bed, a).get("PublicIpAddress") == eip
        elastic_ip = "ok"

        # DNS: public, private and reverse names.
        pub_name, priv_name = f"{dashed(eip)}.eucalyptus.localhost", f"{dashed(b_ip)}.eucalyptus.internal"
        d = described(bed, b)
        assert d.get("PublicDnsName") == pub_name and d.get("PrivateDnsName") == priv_name, d
        assert dig(pub_name) == [eip] and dig(priv_name) == [b_ip]
        ptr_pub, ptr_priv = dig_reverse(eip), dig_reverse(b_ip)
        assert ptr_pub == [pub_name + "."] and ptr_priv == [priv_name + "."], (ptr_pub, ptr_priv)
        dns = "ok"

        vni = "skip"
        if mode == "managed":
            vnis = capture_vnis(bed)
            assert len(vnis) >= 2 and all(v >= VNI_BASE for v in vnis), vnis
            vni = ",".join(map(str, sorted(vnis)))
        report(f"net mode={mode} lease={a_ip} described={a_ip} same_group={same_group} "
               f"other_group={other_group} authorize={authorize} elastic_ip={elastic_ip} "
               f"metadata={metadata} spoof={spoof} hairpin={hairpin} dns={dns}"
               + (f" vnis={vni}" if mode == "managed" else "")
               + f" eip_moved_in={moved:.1f}s")
    finally:
        cleanup(bed, ids)


def dig_reverse(ip):
    r = subprocess.run(["dig", f"@{DNS}", "+short", "+time=2", "-x", ip],
                       capture_output=True, text=True, timeout=20)
    return r.stdout.split()


def serves(ip, want, timeout=30):
    """Waits until http://ip/ is the guest `want`'s page (its httpd serves
    `instance-id=<id>`): the address may be mapped, or moved, a moment after the
    EC2 call answers. Returns the seconds that took."""
    import urllib.request
    start = time.time()
    last = None
    while time.time() < start + timeout:
        try:
            page = urllib.request.urlopen(f"http://{ip}/", timeout=2).read().decode().strip()
            last = page
            if page.removeprefix("instance-id=") == want:
                return time.time() - start
        except Exception as e:  # not yet mapped
            last = e
        time.sleep(0.2)
    raise AssertionError(f"http://{ip}/ never served {want}: {last}")


def capture_vnis(bed, secs=4):
    """VNIs seen on every node link (wt-p<i> in wt-cc) while the probes run."""
    vnis = set()
    procs = [subprocess.Popen(["ip", "netns", "exec", "wt-cc", "timeout", str(secs), "tcpdump",
                               "-nn", "-l", "-i", f"wt-p{i}", "udp", "port", "4789"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in range(1, bed.n + 1)]
    for p in procs:
        out, _ = p.communicate(timeout=secs + 10)
        vnis |= {int(v) for v in re.findall(r"vni (\d+)", out)}
    return vnis


@pytest.mark.parametrize("mode", ["managed-novlan", "managed"])
def test_managed_modes(tmp_path_factory, mode):
    bed = with_bed(tmp_path_factory, mode)
    try:
        managed(bed, mode)
    finally:
        bed.down()
