"""Volumes attached over iSCSI (`euca volume attach --protocol iscsi`) through
`euca up`, used by real initiators: libiscsi's tools and QEMU's libiscsi driver
(qemu-io, qemu-img). Per-attachment CHAP, only the attached node's address, a
snapshot cut under a running iSCSI writer, a volume restored from it served over
iSCSI (lazily: the restored volume pulls its chunks from Walrus on first read),
and SYNCHRONIZE CACHE'd writes surviving SIGKILL of the cloud."""
import json
import re
import sys
import time
from pathlib import Path


from conftest import euca_bin
from helpers_iscsi import IscsiWriter, read_image
from test_volumes import create, describe, run, vol

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "nbd"))
import stamp  # noqa: E402



def attach_iscsi(cloud, vid, node="127.0.0.1"):
    uri = vol(cloud, "attach", vid, "--node", node, "--protocol", "iscsi").stdout.strip()
    m = re.fullmatch(rf"iscsi://(node-[0-9a-f]{{16}})%([0-9a-f]{{32}})@127\.0\.0\.1:{cloud.iscsi_port}"
                     rf"/iqn\.2026-12\.sc\.euca:({vid}-[0-9a-f]{{32}})/0", uri)
    assert m, uri
    return uri


def test_iscsi_attachment_chap_node_and_detach(cloud):
    vid = create(cloud, 1)
    uri = attach_iscsi(cloud, vid)
    d = describe(cloud, vid)
    a = d["attachment"]
    assert (a["protocol"], a["uri"], d["state"]) == ("iscsi", uri, "in-use"), d
    user, secret = re.match(r"iscsi://([^%]+)%([^@]+)@", uri).groups()
    assert a["chap"] == {"user": user, "secret": secret}
    # the initiator's view: LUN 0, 1 GiB of 512-byte blocks, thin provisioned
    inq = run("iscsi-inq", uri)
    assert inq.returncode == 0 and "Peripheral Device Type:DIRECT_ACCESS" in inq.stdout, inq
    cap = run("iscsi-readcapacity16", uri)
    assert cap.returncode == 0, cap.stderr
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in cap.stdout and "Total size:1073741824" in cap.stdout, cap.stdout
    assert re.search(r"LBPME:\s*1", cap.stdout), cap.stdout
    # discovery from the node lists the target; with qemu-io, bytes round-trip
    target = uri.rsplit("/", 2)[1]
    ls = run("iscsi-ls", "-s", f"iscsi://{user}%{secret}@127.0.0.1:{cloud.iscsi_port}")
    assert ls.returncode == 0 and target in ls.stdout, ls
    w = run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", "-c", "flush", uri)
    assert w.returncode == 0, w.stderr
    r = run("qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 64k", "-c", "read -P 0 0 1M", uri)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    # a wrong secret, no secret, or another attachment's user: refused
    for bad in (uri.replace(f"%{secret}@", "%" + "0" * 32 + "@"),
                uri.replace(f"{user}%{secret}@", ""),
                uri.replace(f"{user}%", "node-0000000000000000%")):
        r = run("iscsi-inq", bad)
        assert r.returncode != 0, f"logged in with {bad}"
    # the NBD server does not offer an iSCSI attachment (its name alone is not enough)
    r = run("nbdinfo", f"nbd://127.0.0.1:{cloud.nbd_port}/{target.split(':', 1)[1]}")
    assert r.returncode != 0, "an iSCSI attachment opened over NBD"
    # detach: the session ends, the target is gone
    vol(cloud, "detach", vid)
    assert run("iscsi-inq", uri).returncode != 0
    assert describe(cloud, vid)["state"] == "available"
    vol(cloud, "delete", vid)


def test_iscsi_target_only_for_the_attached_node(cloud):
    vid = create(cloud, 1)
    uri = attach_iscsi(cloud, vid, node="127.0.0.2")
    try:
        # from 127.0.0.1, with the right CHAP secret: no such target, and discovery
        # lists nothing
        assert run("iscsi-inq", uri).returncode != 0, "another address logged in"
        creds = uri.split("@", 1)[0]
        ls = run("iscsi-ls", "-s", f"{creds}@127.0.0.1:{cloud.iscsi_port}")
        # the discovery session itself is open to anyone: it succeeds, and the
        # filtering (not a failed login) is what hides the target
        assert ls.returncode == 0, ls.stderr
        assert vid not in ls.stdout, ls.stdout
    finally:
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)


def test_iscsi_snapshot_cut_under_a_writer_and_lazy_restore(cloud, tmp_path):
    nblocks = 1024
    vid = create(cloud, 1)
    uri = attach_iscsi(cloud, vid)
    w = IscsiWriter(uri, nblocks)
    deadline = time.time() + 60
    while w.acked < 50:
        assert w.error is None and time.time() < deadline, w.error
        time.sleep(0.05)
    acked_before = w.acked
    r = run(euca_bin(), "snapshot", "create", vid, "--data", cloud.data)
    issued_after = w.issued
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip().splitlines()[-1]
    time.sleep(0.5)
    last = w.stop()
    assert w.error is None, w.error
    assert 0 <= acked_before <= issued_after < last, (acked_before, issued_after, last)
    deadline = time.time() + 120
    while json.loads(cloud.euca("snapshot", "describe", sid).stdout)["state"] == "pending":
        assert time.time() < deadline
        time.sleep(0.2)
    # the restored volume, over iSCSI: every write acknowledged before the cut,
    # none issued after it returned
    v2 = create(cloud, None, snapshot=sid)
    uri2 = attach_iscsi(cloud, v2)
    data = read_image(uri2, tmp_path / "cut.img")[: nblocks * stamp.BLOCK]
    must = stamp.expected_min(acked_before, nblocks)
    for b in range(nblocks):
        got = stamp.parse(data[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b)
        if must[b] is not None:
            assert got is not None and got >= must[b], f"block {b}: seq {got} < acked-before-cut {must[b]}"
        if got is not None:
            assert got <= issued_after, f"block {b}: seq {got} was issued after the snapshot returned"
    # the live volume went on past the cut
    live = read_image(uri, tmp_path / "live.img")
    b = stamp.block_of(last, nblocks)
    assert stamp.parse(live[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b) == last
    for v in (v2, vid):
        vol(cloud, "detach", v)
        vol(cloud, "delete", v)
    cloud.euca("snapshot", "delete", sid)


def test_iscsi_synchronized_writes_survive_sigkill(fresh_cloud, tmp_path):
    """SYNCHRONIZE CACHE every 8 writes; SIGKILL of the cloud mid-run: every block
    a synchronized write reached holds it (or a later write) after the restart."""
    cloud = fresh_cloud
    nblocks = 512
    vid = create(cloud, 1)
    uri = attach_iscsi(cloud, vid)
    for cycle in range(2):
        w = IscsiWriter(uri, nblocks, sync_every=8)
        deadline = time.time() + 60
        while w.synced < 40 + 40 * cycle:
            assert w.error is None and time.time() < deadline, w.error
            time.sleep(0.05)
        cloud.kill9()
        synced = w.synced
        w.stop(kill=True)
        cloud.start()
        # same target, same credentials after the restart
        assert describe(cloud, vid)["attachment"]["uri"] == uri
        data = read_image(uri, tmp_path / "after.img")[: nblocks * stamp.BLOCK]
        expected = stamp.expected_min(synced, nblocks)
        for b in range(nblocks):
            if expected[b] is None:
                continue
            got = stamp.parse(data[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b)
            assert got is not None and got >= expected[b], \
                f"cycle {cycle}: block {b} holds seq {got}, but seq {expected[b]} was synchronized"
        # the next cycle starts from zeros
        z = run("qemu-io", "-f", "raw", "-c", f"write -z 0 {nblocks * stamp.BLOCK}", "-c", "flush", uri)
        assert z.returncode == 0, z.stderr
    vol(cloud, "detach", vid)
    vol(cloud, "delete", vid)
