"""Snapshot chunks orphaned by a crash: `euca up` is SIGKILLed while a snapshot
uploads; after the restart, deleting the failed snapshot leaves no chunk in the
`euca-snapshots` bucket that no manifest references, and the chunks of good
snapshots are intact. (The sweep's grace period is set to 0 in the config: by
default only chunks older than an hour are swept.)"""
import hashlib
import json
import re
import time

from conftest import start_cloud
from test_volumes import SYS_PY, attach, create, need, run, system_s3, vol, write_chunk

MIB = 1 << 20
CHUNK = 4 * MIB


def bucket_state(s3):
    """(chunk ids, {snapshot id: manifest}) in the snapshot bucket."""
    chunks, manifests = set(), {}
    pages = s3.get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket="euca-snapshots", Prefix="chunks/"):
        chunks.update(o["Key"][len("chunks/"):] for o in page.get("Contents", []))
    for page in pages.paginate(Bucket="euca-snapshots", Prefix="snapshots/"):
        for o in page.get("Contents", []):
            m = json.loads(s3.get_object(Bucket="euca-snapshots", Key=o["Key"])["Body"].read())
            manifests[m["snapshot_id"]] = m
    return chunks, manifests


def describe_snapshot(cloud, sid):
    return json.loads(cloud.euca("snapshot", "describe", sid).stdout)


def test_chunks_of_a_snapshot_killed_mid_upload_are_swept(tmp_path):
    need("nbdcopy")
    cfg = tmp_path / "euca.toml"
    cfg.write_text("[sc]\norphan_chunk_grace_secs = 0\n")
    cloud = start_cloud(tmp_path, extra_args=["--config", str(cfg)])
    try:
        s3 = system_s3(cloud)
        vid = create(cloud, 1)
        uri = attach(cloud, vid)
        write_chunk(uri, 0, 1)
        write_chunk(uri, 1, 2)
        r = cloud.euca("snapshot", "create", vid, "--wait")
        good = r.stdout.strip().splitlines()[-1]
        assert describe_snapshot(cloud, good)["state"] == "completed"
        good_chunks, _ = bucket_state(s3)
        assert len(good_chunks) == 2

        # 200 more distinct chunks, so that the next upload takes a while.
        r = run(SYS_PY, "-c", "import nbd,sys\n"
                "h=nbd.NBD(); h.connect_uri(sys.argv[1]); c=int(sys.argv[2])\n"
                "for i in range(2, 202):\n"
                "    h.pwrite(i.to_bytes(4, 'big') * (c // 4), i * c)\n"
                "h.flush()", uri, CHUNK, timeout=300)
        assert r.returncode == 0, r.stderr
        r = cloud.euca("snapshot", "create", vid)
        failed = r.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"snap-[0-9a-f]{8}", failed), r.stdout
        deadline = time.time() + 120
        while True:
            d = describe_snapshot(cloud, failed)
            assert d["state"] == "pending", f"the upload ended before the kill: {d}"
            if d["progress"]["chunks_uploaded"] >= 3:
                break
            assert time.time() < deadline, d
            time.sleep(0.05)
        chunks, _ = bucket_state(s3)
        assert len(chunks - good_chunks) >= 3, "the upload stored chunks before the kill"
        cloud.kill9()
        cloud.start()

        # The start-up sweep (grace 0) may already have taken the orphans.
        _, manifests = bucket_state(s3)
        assert failed not in manifests
        d = describe_snapshot(cloud, failed)
        assert d["state"] == "error", d
        cloud.euca("snapshot", "delete", failed)
        r = cloud.euca("snapshot", "describe", failed, check=False)
        assert r.returncode != 0

        chunks, manifests = bucket_state(s3)
        referenced = {c for m in manifests.values() for c in m["chunks"] if c}
        assert chunks - referenced == set(), "chunks no manifest references are left"
        assert set(manifests) == {good}
        assert chunks == good_chunks
        for c in good_chunks:
            body = s3.get_object(Bucket="euca-snapshots", Key=f"chunks/{c}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == c and len(body) == CHUNK

        # The good snapshot still restores.
        v2 = create(cloud, None, snapshot=good)
        uri2 = attach(cloud, v2)
        out = tmp_path / "restored.img"
        r = run("nbdcopy", uri2, out)
        assert r.returncode == 0, r.stderr
        with open(out, "rb") as f:
            assert f.read(CHUNK) == bytes([1]) * CHUNK
            assert f.read(CHUNK) == bytes([2]) * CHUNK
            assert f.read(CHUNK) == bytes(CHUNK)
        vol(cloud, "detach", v2)
        vol(cloud, "delete", v2)
        vol(cloud, "detach", vid)
        vol(cloud, "delete", vid)
    finally:
        cloud.stop()
