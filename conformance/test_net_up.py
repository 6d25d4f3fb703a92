"""Instance networking out of the box: `euca up` as root runs managed-novlan on a
private bridge inside the cloud's router namespace (issue 14). One guest, one
machine: it takes its address by DHCP, DescribeInstances says the same, the
metadata service answers it, the public address it got at launch reaches it from
this host once its group lets port 80 in, and the CLC's DNS names it."""
import os
import subprocess
import time
import urllib.request

import pytest

from helpers_ec2 import GUEST, unique, wait_console
from helpers_net import dashed
from test_net_modes import LEASE, wait_described

pytestmark = [
    pytest.mark.skipif(not (GUEST / "initramfs.gz").exists(),
                       reason=f"the tiny guest is not built in {GUEST}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="euca up runs networking only as root"),
]


class Bed:
    def __init__(self, ec2, emi):
        self.ec2, self.emi = ec2, emi

    def log(self, name, n=0):
        return ""


def test_up_managed_novlan_out_of_the_box(cloud, guest_image):
    ec2 = cloud.ec2()
    emi, _, _ = guest_image
    g = unique("up-net")
    ec2.create_security_group(GroupName=g, Description=g)
    r = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m1.small",
                          SecurityGroups=[g])
    iid = r["Instances"][0]["InstanceId"]
    bed = Bed(ec2, emi)
    try:
        m = wait_console(ec2, iid, LEASE, timeout=120)
        lease = m.group(1)
        assert wait_described(bed, iid, "PrivateIpAddress", lease) == lease
        m = wait_console(ec2, iid, r"TG-META instance-id=(\S+)")
        assert m.group(1) == iid
        public = wait_described(bed, iid, "PublicIpAddress")
        assert public.startswith("100.64."), public
        ec2.authorize_security_group_ingress(GroupName=g, IpProtocol="tcp", FromPort=80,
                                             ToPort=80, CidrIp="0.0.0.0/0")
        deadline, page = time.time() + 30, None
        while time.time() < deadline:
            try:
                page = urllib.request.urlopen(f"http://{public}/", timeout=2).read().decode()
                if iid in page:
                    break
            except OSError as e:
                page = e
            time.sleep(0.3)
        assert iid in str(page), page
        d = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert d["PrivateDnsName"] == f"{dashed(lease)}.eucalyptus.internal"
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(cloud.dns_port), "+short", "+time=2",
                              d["PrivateDnsName"]], capture_output=True, text=True).stdout
        assert out.split() == [lease], out
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
