"""The storage controller through `euca up`: volumes made and attached with the
`euca volume` CLI, exported over NBD and used by the real clients (nbdinfo,
nbdcopy, qemu-img, qemu-io, nbdsh/python3-libnbd), durability under SIGKILL, and
snapshots kept in Walrus."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import euca_bin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "nbd"))
import stamp  # noqa: E402

SYS_PY = "/usr/bin/python3"  # Debian's python3-libnbd is importable only from here
MIB = 1 << 20


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            pytest.fail(f"{t} is not installed: run scripts/install-test-deps.sh")


def run(*args, timeout=120, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def vol(cloud, *args, check=True):
    r = cloud.euca("volume", *args, check=False)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def create(cloud, gib=1, snapshot=None):
    args = ["create"] + (["--size-gib", str(gib)] if gib else []) + (["--snapshot", snapshot] if snapshot else [])
    out = vol(cloud, *args).stdout.strip()
    assert re.fullmatch(r"vol-[0-9a-f]{8}", out), out
    return out


def attach(cloud, vid, node="127.0.0.1"):
    uri = vol(cloud, "attach", vid, "--node", node).stdout.strip()
    assert re.fullmatch(rf"nbd://127\.0\.0\.1:{cloud.nbd_port}/{vid}-[0-9a-f]{{32}}", uri), uri
    return uri


def describe(cloud, vid):
    return json.loads(vol(cloud, "describe", vid).stdout)


def nbdinfo_json(uri):
    r = run("nbdinfo", "--json", uri)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["exports"][0]


def test_volume_lifecycle_with_the_cli(cloud):
    need("nbdinfo")
    vid = create(cloud, 1)
    v = describe(cloud, vid)
    assert v["state"] == "available" and v["size"] == 1 << 30 and v["attachment"] is None
    assert vid in vol(cloud, "list").stdout
    uri = attach(cloud, vid)
    v = describe(cloud, vid)
    assert v["state"] == "in-use" and v["attachment"]["node"] == "127.0.0.1"
    assert v["attachment"]["uri"] == uri
    info = nbdinfo_json(uri)
    assert info["export-size"] == 1 << 30
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
        assert info[flag] is True, (flag, info)
    assert info["is_read_only"] is False
    # attached read-write at most once; not deletable while attached
    r = vol(cloud, "attach", vid, "--node", "127.0.0.1", check=False)
    assert r.returncode != 0 and "VolumeInUse" in r.stderr
    r = vol(cloud, "delete", vid, check=False)
    assert r.returncode != 0 and "VolumeInUse" in r.stderr
    vol(cloud, "detach", vid)
    assert run("nbdinfo", uri).returncode != 0, "export still reachable after detach"
    assert describe(cloud, vid)["state"] == "available"
    vol(cloud, "delete", vid)
    r = vol(cloud, "describe", vid, check=False)
    assert r.returncode != 0 and "InvalidVolume.NotFound" in r.stderr
    assert not (cloud.data / "sc" / "volumes" / f"{vid}.img").exists()


def test_bad_requests_get_ec2_errors(cloud):
    for args, code in [
        (["create", "--size-gib", "0"], "InvalidParameterValue"),
        (["create", "--size-gib", "100000"], "InvalidParameterValue"),
        (["create", "--snapshot", "snap-00000000"], "InvalidSnapshot.NotFound"),
        (["describe", "vol-../../etc"], "InvalidVolume.NotFound"),
        (["attach", "vol-00000000", "--node", "127.0.0.1"], "InvalidVolume.NotFound"),
    ]:
        r = vol(cloud, *args, check=False)
        assert r.returncode != 0 and code in r.stderr, (args, r.stderr)
    vid = create(cloud, 1)
    r = vol(cloud, "attach", vid, "--node", "not-an-ip", check=False)
    assert r.returncode != 0 and "InvalidParameterValue" in r.stderr
    vol(cloud, "delete", vid)


def test_api_refuses_unsigned_and_non_admin_callers(cloud):
    import urllib.error
    import urllib.request

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(cloud.sc_url + "/volumes", method="GET"))
    assert e.value.code == 403
    other = cloud.new_account("scoutsider")

    def signed(ak, sk, method, url):
        req = botocore.awsrequest.AWSRequest(method=method, url=url)
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ak, sk), "sc", cloud.region).add_auth(req)
        return urllib.request.Request(url, method=method, headers=dict(req.headers.items()))

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(signed(other["AWS_ACCESS_KEY_ID"], other["AWS_SECRET_ACCESS_KEY"], "POST",
                                      cloud.sc_url + "/volumes?size_gib=1"))
    assert e.value.code == 403 and b"AccessDenied" in e.value.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(signed(cloud.access_key, "wrong" + cloud.secret_key, "GET", cloud.sc_url + "/volumes"))
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    r = urllib.request.urlopen(signed(cloud.access_key, cloud.secret_key, "GET", cloud.sc_url + "/volumes"))
    assert isinstance(json.loads(r.read()), list)


def test_nbd_clients_read_and_write_a_volume(cloud, tmp_path):
    need("nbdinfo", "nbdcopy", "qemu-img", "qemu-io")
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    try:
        src = tmp_path / "src.img"
        src.write_bytes(os.urandom(64 * MIB))
        r = run("nbdcopy", "--connections=4", src, uri)
        assert r.returncode == 0, r.stderr
        out = tmp_path / "out.img"
        r = run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size == 1 << 30
        with open(out, "rb") as f:
            assert f.read(64 * MIB) == src.read_bytes()
            assert f.read(MIB) == bytes(MIB)
        r = run("nbdcopy", uri, tmp_path / "back.img")
        assert r.returncode == 0, r.stderr
        assert run("cmp", out, tmp_path / "back.img").returncode == 0
        # a sparse map: the first 64 MiB are data, the rest a hole
        r = run("nbdinfo", "--map", "--json", uri)
        assert r.returncode == 0, r.stderr
        extents = json.loads(r.stdout)
        assert extents[0]["offset"] == 0 and extents[0]["type"] & 1 == 0
        assert any(e["offset"] >= 64 * MIB and e["type"] & 1 for e in extents), extents
        # qemu's own client: pattern write, read back, flush, discard, zero
        r = run("qemu-io", "-f", "raw", "-c", "write -P 0xab 100M 1M", "-c", "flush",
                "-c", "read -P 0xab 100M 1M", "-c", "discard 200M 4M", "-c", "write -z 101M 64k",
                "-c", "read -P 0 101M 64k", uri)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
        r = run("qemu-img", "info", "--output=json", "-f", "raw", uri)
        assert r.returncode == 0 and json.loads(r.stdout)["virtual-size"] == 1 << 30, r.stderr
    finally:
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)


LIBNBD_CHECKS = r'''
import errno, sys, nbd
uri = sys.argv[1]
h = nbd.NBD(); h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION); h.connect_uri(uri)
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation")
assert h.get_block_size(nbd.SIZE_MINIMUM) == 1 and h.get_block_size(nbd.SIZE_MAXIMUM) >= 1 << 20
h.pwrite(b"\x11" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\x11" * 65536
h.zero(65536, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 0) == bytes(65536)
h.pwrite(b"\x22" * 1048576, 1048576); h.trim(1048576, 1048576)
seen = []
h.block_status(4 << 20, 0, lambda meta, off, ents, err: seen.extend(ents) or 0)
assert seen and seen[0] <= 4 << 20
h.cache(65536, 0)
# multi-conn: write on one handle, flush on a second, read on a third
a, b, c = nbd.NBD(), nbd.NBD(), nbd.NBD()
for x in (a, b, c): x.connect_uri(uri)
assert a.can_multi_conn()
a.pwrite(b"\x33" * 4096, 8192); b.flush()
assert c.pread(4096, 8192) == b"\x33" * 4096
# out of range: EINVAL for reads, ENOSPC for writes (strict checks off so the server sees them)
h.set_strict_mode(0)
size = h.get_size()
for fn, err in ((lambda: h.pread(4096, size), errno.EINVAL), (lambda: h.pwrite(b"x" * 4096, size - 100), errno.ENOSPC)):
    try:
        fn(); raise SystemExit("out-of-range request succeeded")
    except nbd.Error as e:
        assert e.errnum == err, (e.errnum, e.string)
h.shutdown()
print("OK")
'''


def test_libnbd_structured_replies_block_status_and_multi_conn(cloud, tmp_path):
    need("nbdinfo")
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    try:
        script = tmp_path / "checks.py"
        script.write_text(LIBNBD_CHECKS)
        r = run(SYS_PY, script, uri)
        assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
    finally:
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)


def test_export_is_reachable_only_from_the_attached_node(cloud):
    need("nbdinfo")
    vid = create(cloud, 1)
    uri = attach(cloud, vid, node="127.0.0.2")
    try:
        r = run("nbdinfo", uri)  # from 127.0.0.1
        assert r.returncode != 0, "another address opened the export"
        # from 127.0.0.2 it opens (libnbd cannot choose a source address; a raw
        # handshake can)
        import socket
        import struct
        s = socket.create_connection(("127.0.0.1", cloud.nbd_port), source_address=("127.0.0.2", 0))
        s.settimeout(5)
        assert s.recv(18)[:16] == b"NBDMAGICIHAVEOPT"
        s.sendall(struct.pack(">I", 1))  # fixed newstyle
        name = uri.rsplit("/", 1)[1].encode()
        payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        s.sendall(b"IHAVEOPT" + struct.pack(">II", 6, len(payload)) + payload)  # NBD_OPT_INFO
        magic, opt, rtype, ln = struct.unpack(">QIII", s.recv(20))
        assert rtype == 3, f"expected NBD_REP_INFO, got {rtype:#x}"  # not an error
        s.close()
        # a guessed name (the volume id alone) is unknown
        assert run("nbdinfo", f"nbd://127.0.0.1:{cloud.nbd_port}/{vid}").returncode != 0
    finally:
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)


def _durability_cycles(cloud, tmp_path, mode, cycles):
    need("nbdcopy")
    nblocks = 512
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    acked = -1
    log = tmp_path / f"{mode}.log"
    for cycle in range(cycles):
        w = subprocess.Popen([SYS_PY, HERE / "nbd" / "writer.py", uri, str(nblocks), mode, log],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert w.stdout.readline().strip() == "READY", w.stderr.read()
        time.sleep(0.6 + 0.3 * cycle)
        cloud.kill9()
        w.wait(timeout=30)
        t0 = time.time()
        cloud.start()
        restart = time.time() - t0
        assert restart < 10, f"restart took {restart:.1f}s"
        lines = [l.split() for l in log.read_text().splitlines() if l.startswith("D ")]
        assert lines, "the writer got nothing acknowledged"
        acked = int(lines[-1][1])
        # the export survived the restart: same URI, same node
        assert describe(cloud, vid)["attachment"]["uri"] == uri
        img = tmp_path / "dev.img"
        r = run("nbdcopy", uri, img)
        assert r.returncode == 0, r.stderr
        data = img.read_bytes()[: nblocks * stamp.BLOCK]
        expected = stamp.expected_min(acked, nblocks)
        for b in range(nblocks):
            got = stamp.parse(data[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b)
            if expected[b] is not None:
                assert got is not None and got >= expected[b], \
                    f"cycle {cycle}: block {b} holds seq {got}, but seq {expected[b]} was acknowledged durable"
        log.write_text("")
        # next cycle writes on top with fresh sequence numbers: clear the device
        r = run(SYS_PY, "-c", "import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); "
                "h.zero(h.get_size(), 0); h.flush()", uri)
        assert r.returncode == 0, r.stderr
    vol(cloud, "detach", vid)
    vol(cloud, "delete", vid)


def test_flushed_writes_survive_sigkill(fresh_cloud, tmp_path):
    """N-03: every block covered by an acknowledged FLUSH is intact after SIGKILL."""
    _durability_cycles(fresh_cloud, tmp_path, "flush", 3)


def test_fua_writes_survive_sigkill(fresh_cloud, tmp_path):
    """N-04: every acknowledged FUA write is intact after SIGKILL."""
    _durability_cycles(fresh_cloud, tmp_path, "fua", 2)


# ---- snapshots ---------------------------------------------------------------------

def snapshot(cloud, vid):
    r = cloud.euca("snapshot", "create", vid, "--wait", check=False)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"snap-[0-9a-f]{8}", sid), r.stdout
    d = json.loads(cloud.euca("snapshot", "describe", sid).stdout)
    assert d["state"] == "completed", d
    return sid, d["progress"]


def system_s3(cloud):
    """boto3 as the cloud's system account (owner of the snapshot bucket)."""
    r = cloud.euca("key", "create", "eucalyptus")
    k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))
    return cloud.boto3(access_key=k["AWS_ACCESS_KEY_ID"], secret_key=k["AWS_SECRET_ACCESS_KEY"])


def chunk_objects(s3):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="euca-snapshots", Prefix="chunks/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def write_chunk(uri, index, fill, chunk=4 * MIB):
    r = run(SYS_PY, "-c", "import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); "
            "i,f=int(sys.argv[2]),int(sys.argv[3]); h.pwrite(bytes([f])*int(sys.argv[4]), i*int(sys.argv[4])); h.flush()",
            uri, index, fill, chunk)
    assert r.returncode == 0, r.stderr


def test_snapshots_store_only_changed_nonzero_chunks_and_restore(fresh_cloud, tmp_path):
    need("nbdcopy")
    cloud = fresh_cloud
    s3 = system_s3(cloud)
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    for i, fill in ((0, 1), (10, 2), (200, 3)):
        write_chunk(uri, i, fill)
    sid1, p1 = snapshot(cloud, vid)
    assert p1["chunks_total"] == 256 and p1["chunks_zero"] == 253, p1
    assert p1["chunks_uploaded"] == 3 and p1["bytes_uploaded"] == 12 * MIB, p1
    chunks = chunk_objects(s3)
    assert len(chunks) == 3 and sum(chunks.values()) == 12 * MIB, chunks
    manifest = json.loads(s3.get_object(Bucket="euca-snapshots", Key=f"snapshots/{sid1}.json")["Body"].read())
    assert manifest["chunk_size"] == 4 * MIB and len(manifest["chunks"]) == 256
    assert sum(c is not None for c in manifest["chunks"]) == 3

    write_chunk(uri, 10, 9)  # one chunk changes
    sid2, p2 = snapshot(cloud, vid)
    assert p2["chunks_uploaded"] == 1 and p2["bytes_uploaded"] == 4 * MIB and p2["chunks_reused"] == 2, p2
    assert len(chunk_objects(s3)) == 4

    # a volume from the first snapshot reads back what the volume held then
    v2 = create(cloud, None, snapshot=sid1)
    assert describe(cloud, v2)["size"] == 1 << 30
    uri2 = attach(cloud, v2)
    out = tmp_path / "restored.img"
    r = run("nbdcopy", uri2, out)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        for i in range(256):
            want = {0: 1, 10: 2, 200: 3}.get(i, 0)
            assert f.read(4 * MIB) == bytes([want]) * (4 * MIB), f"chunk {i}"
    # deleting snapshot 1 keeps the old chunk 10: volume v2 (not yet fully
    # pulled) still needs it, also after a restart of the cloud
    vol(cloud, "detach", v2)
    cloud.euca("snapshot", "delete", sid1)
    assert len(chunk_objects(s3)) == 3 + 1, "a chunk v2 still needs was deleted"
    cloud.stop()
    cloud.start()
    uri2 = attach(cloud, v2)
    r = run("nbdcopy", uri2, out)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        f.seek(10 * 4 * MIB)
        assert f.read(4 * MIB) == bytes([2]) * (4 * MIB)
    # deleting v2 then lets the old chunk go; deleting snapshot 2 empties the store
    vol(cloud, "detach", v2)
    vol(cloud, "delete", v2)
    assert len(chunk_objects(s3)) == 3
    cloud.euca("snapshot", "delete", sid2)
    assert chunk_objects(s3) == {}
    vol(cloud, "detach", vid)
    vol(cloud, "delete", vid)


def test_snapshot_is_a_consistent_cut_under_a_running_writer(cloud, tmp_path):
    need("nbdcopy")
    nblocks = 2048
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    r = run(SYS_PY, HERE / "nbd" / "snapwriter.py", uri, nblocks, "--",
            euca_bin(), "snapshot", "create", vid, "--data", cloud.data, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0, res["stderr"]
    sid = res["stdout"].strip()
    a, i, last = res["acked_before"], res["issued_after"], res["last"]
    assert 0 <= a <= i < last, res  # writes were going on before, during and after
    deadline = time.time() + 120
    while json.loads(cloud.euca("snapshot", "describe", sid).stdout)["state"] == "pending":
        assert time.time() < deadline
        time.sleep(0.2)
    v2 = create(cloud, None, snapshot=sid)
    uri2 = attach(cloud, v2)
    out = tmp_path / "cut.img"
    assert run("nbdcopy", uri2, out).returncode == 0
    data = out.read_bytes()[: nblocks * stamp.BLOCK]
    must = stamp.expected_min(a, nblocks)
    newest = 0
    for b in range(nblocks):
        got = stamp.parse(data[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b)
        if must[b] is not None:
            assert got is not None and got >= must[b], f"block {b}: seq {got} < acked-before-cut {must[b]}"
        if got is not None:
            assert got <= i, f"block {b}: seq {got} was issued after the snapshot call returned ({i})"
            newest = max(newest, got)
    # and the live volume went on: it holds the writes made after the cut
    live = tmp_path / "live.img"
    assert run("nbdcopy", uri, live).returncode == 0
    b = stamp.block_of(last, nblocks)
    assert stamp.parse(live.read_bytes()[b * stamp.BLOCK:(b + 1) * stamp.BLOCK], b) == last
    for v in (v2, vid):
        vol(cloud, "detach", v)
        vol(cloud, "delete", v)
    cloud.euca("snapshot", "delete", sid)


def test_a_second_cloud_on_the_same_data_dir_is_refused(cloud, tmp_path):
    """Volume files (and the SC's state) are held under locks: a second process
    pointed at the same data directory exits with an error and the first goes on."""
    from conftest import Cloud, free_port
    vid = create(cloud, 1)
    other = Cloud(cloud.data, free_port())
    with pytest.raises(RuntimeError) as e:
        other.start(timeout=15)
    assert "exited with" in str(e.value)
    other.stop()
    assert describe(cloud, vid)["state"] == "available"
    vol(cloud, "delete", vid)


def test_nbd_tls_with_the_clouds_certificates(tmp_path):
    """With `nbd_tls = "required"` every node must STARTTLS: the attach URI is
    nbds://, libnbd and qemu connect with the CA `euca up` wrote into
    credentials/nbd-tls/, and a client without TLS is refused."""
    need("nbdinfo", "nbdcopy", "qemu-img")
    from conftest import start_cloud
    cfg = tmp_path / "euca.toml"
    cfg.write_text('[sc]\nnbd_tls = "required"\n')
    cloud = start_cloud(tmp_path, ["--config", str(cfg)])
    try:
        vid = create(cloud, 1)
        uri = vol(cloud, "attach", vid, "--node", "127.0.0.1").stdout.strip()
        assert uri.startswith(f"nbds://127.0.0.1:{cloud.nbd_port}/{vid}-"), uri
        certs = cloud.data / "credentials" / "nbd-tls"
        assert (certs / "ca-cert.pem").exists()
        r = run("nbdinfo", f"{uri}?tls-certificates={certs}")
        assert r.returncode == 0 and "with TLS" in r.stdout, r.stdout + r.stderr
        assert run("nbdinfo", uri.replace("nbds://", "nbd://", 1)).returncode != 0, "plain NBD accepted"
        src = tmp_path / "src.img"
        src.write_bytes(os.urandom(8 * MIB))
        assert run("nbdcopy", src, f"{uri}?tls-certificates={certs}").returncode == 0
        host, export = uri[len("nbds://"):].split("/", 1)
        h, port = host.rsplit(":", 1)
        out = tmp_path / "out.img"
        r = run("qemu-img", "convert", "-O", "raw",
                "--object", f"tls-creds-x509,id=tls0,dir={certs},endpoint=client",
                "--image-opts", f"driver=nbd,host={h},port={port},export={export},tls-creds=tls0", out)
        assert r.returncode == 0, r.stderr
        with open(out, "rb") as f:
            assert f.read(8 * MIB) == src.read_bytes()
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)
    finally:
        cloud.stop()
