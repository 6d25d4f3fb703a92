"""`euca up` that cannot start leaves nothing behind: as root its cluster
controller builds the cloud's router namespace before the node controller
binds its port, and a taken port must not strand that namespace (nor its veth
and nftables rules) on the host."""
import os
import socket
import subprocess

import pytest

from conftest import Cloud, free_port
from helpers_net import router_netns


@pytest.mark.skipif(os.geteuid() != 0, reason="euca up builds a router namespace only as root")
def test_a_cloud_that_fails_to_start_removes_its_router_namespace(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        c = Cloud(tmp_path / "data", free_port())
        c.nc_port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with 1"):
            c.start(timeout=60)
    finally:
        taken.close()
    log = c.log_path.read_text(errors="replace")
    ns = router_netns(c.data / "cc")
    # The router was built before the failure, so this checks its removal.
    assert f"netns={ns}" in log, log
    assert "binding the NC API" in log and "Address already in use" in log, log
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert ns not in listed, f"{ns} left behind:\n{listed}"
