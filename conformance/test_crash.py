"""SIGKILL during concurrent PUTs and multipart uploads (reliability-anchors W-04).

Several client threads stream PUTs (1 KiB..8 MiB, random bytes) and 3-part multipart
uploads (5 MiB, 5 MiB, 1 KiB), plus some overwrites and deletes of keys they wrote
before, logging which requests were acknowledged (2xx received). Each thread owns its
keys, so the operations on one key are sequential. After a random 2-3 s the server is
SIGKILLed and restarted on the same data dir. Then, for every key:
  * after the last acknowledged operation, the key holds exactly that operation's
    result (bytes with the right SHA-256, or absent after a delete), or the result of
    the one later, unacknowledged operation ("absent or complete and correct");
  * the listing shows exactly the objects that exist, with their sizes;
  * no temp/orphan blobs remain: bytes under data/walrus <= live objects + live
    multipart parts + redb files + 1 MiB.
Cycles accumulate on the same data dir (WALRUS_CRASH_CYCLES, default 3).
"""
import hashlib
import os
import random
import threading
import time

from botocore.exceptions import ClientError

from helpers_raw import list_keys, tree_bytes

CYCLES = int(os.environ.get("WALRUS_CRASH_CYCLES", "3"))
WORKERS = 3
KiB, MiB = 1024, 1024 * 1024
PART_SIZES = (5 * MiB, 5 * MiB, 1 * KiB)


def _log_uniform(rnd, lo, hi):
    return int(round(lo * (hi / lo) ** rnd.random()))


class Op:
    __slots__ = ("key", "kind", "size", "sha", "acked", "error", "t_err")

    def __init__(self, key, kind, size=None, sha=None, acked=False):
        self.key, self.kind, self.size, self.sha = key, kind, size, sha
        self.acked = acked
        self.error = None
        self.t_err = None

    def state(self):
        """What the key holds if this operation took effect: None (absent) or (sha, size)."""
        return None if self.kind == "delete" else (self.sha, self.size)

    def __repr__(self):
        return f"<{self.kind} {self.key} {self.size}B acked={self.acked} err={self.error}>"


def _worker(client, bucket, cycle, wid, stop, history, present, ops_out, seed):
    """present: this worker's keys that currently exist (known state)."""
    rnd = random.Random(seed)
    i = 0
    while not stop.is_set():
        i += 1
        r = rnd.random()
        mine = sorted(present)
        try:
            if r < 0.15 and mine:
                key = rnd.choice(mine)
                op = Op(key, "delete")
                present.discard(key)  # unknown until acked
                history[key].append(op)
                ops_out.append(op)
                client.delete_object(Bucket=bucket, Key=key)
                op.acked = True
            elif r < 0.35 and mine:
                key = rnd.choice(mine)
                size = _log_uniform(rnd, KiB, 8 * MiB)
                body = rnd.randbytes(size)
                op = Op(key, "overwrite", size, hashlib.sha256(body).hexdigest())
                present.discard(key)
                history[key].append(op)
                ops_out.append(op)
                client.put_object(Bucket=bucket, Key=key, Body=body)
                op.acked = True
                present.add(key)
            elif r < 0.55:
                key = f"w{wid}/c{cycle}/{i:05d}"
                parts = [rnd.randbytes(n) for n in PART_SIZES]
                op = Op(key, "multipart", sum(PART_SIZES), hashlib.sha256(b"".join(parts)).hexdigest())
                history[key] = [op]
                ops_out.append(op)
                uid = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                done = []
                for n, body in enumerate(parts, 1):
                    et = client.upload_part(Bucket=bucket, Key=key, UploadId=uid,
                                            PartNumber=n, Body=body)["ETag"]
                    done.append({"PartNumber": n, "ETag": et})
                client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                                 MultipartUpload={"Parts": done})
                op.acked = True
                present.add(key)
            else:
                key = f"w{wid}/c{cycle}/{i:05d}"
                size = _log_uniform(rnd, KiB, 8 * MiB)
                body = rnd.randbytes(size)
                op = Op(key, "put", size, hashlib.sha256(body).hexdigest())
                history[key] = [op]
                ops_out.append(op)
                client.put_object(Bucket=bucket, Key=key, Body=body)
                op.acked = True
                present.add(key)
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            op.error = repr(e)[:300]
            op.t_err = time.monotonic()
            if stop.is_set():
                return
            time.sleep(0.05)


def _read_state(s3, bucket, key):
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return (hashlib.sha256(body).hexdigest(), len(body))


def _verify(s3, bucket, history):
    """Checks every key against its operation log; then collapses each log into one
    acknowledged 'observed' operation, so later cycles must keep what was seen."""
    present = {}
    problems = []
    for key, ops in history.items():
        last = max((n for n, op in enumerate(ops) if op.acked), default=-1)
        allowed = [ops[last].state() if last >= 0 else None]
        allowed += [op.state() for op in ops[last + 1:]]
        actual = _read_state(s3, bucket, key)
        if actual not in allowed:
            def fmt(st):
                return "absent" if st is None else f"{st[1]}B sha {st[0][:12]}"
            problems.append(f"{key}: holds {fmt(actual)}, allowed {[fmt(a) for a in allowed]}; "
                            f"ops {ops}")
        if actual is not None:
            present[key] = actual[1]
        observed = Op(key, "observed", acked=True)
        if actual is None:
            observed.kind = "delete"
        else:
            observed.sha, observed.size = actual
        history[key] = [observed]
    return present, problems


def test_sigkill_during_puts(fresh_cloud):
    cloud = fresh_cloud
    s3 = cloud.boto3()
    bucket = "crash-test"
    s3.create_bucket(Bucket=bucket)
    history = {}                      # key -> [Op], each key written by one worker only
    present_by_worker = [set() for _ in range(WORKERS)]
    seed = int(os.environ.get("WALRUS_CRASH_SEED", str(int(time.time()))))
    print(f"WALRUS_CRASH_SEED={seed}")
    master = random.Random(seed)

    for cycle in range(CYCLES):
        clients = [cloud.boto3(connect_timeout=5, read_timeout=30) for _ in range(WORKERS)]
        stop = threading.Event()
        cycle_ops = [[] for _ in range(WORKERS)]
        threads = [threading.Thread(target=_worker, daemon=True,
                                    args=(clients[w], bucket, cycle, w, stop, history,
                                          present_by_worker[w], cycle_ops[w], master.random()))
                   for w in range(WORKERS)]
        for t in threads:
            t.start()
        time.sleep(master.uniform(2.0, 3.0))
        t_kill = time.monotonic()
        cloud.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "client thread hung after SIGKILL"
        new = [op for ops in cycle_ops for op in ops]

        # requests that failed while the server was still alive are server errors
        early = [op for op in new if op.error and op.t_err < t_kill]
        assert not early, f"cycle {cycle}: requests failed before the kill: {early[:5]}"
        acked = sum(op.acked for op in new)
        assert acked > 0, f"cycle {cycle}: nothing acknowledged in the write window: {new[:5]}"

        t0 = time.monotonic()
        cloud.start()
        ready = time.monotonic() - t0
        assert ready < 10, f"server took {ready:.1f}s to become ready after SIGKILL"

        s3 = cloud.boto3(read_timeout=60)
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        assert bucket in names, f"cycle {cycle}: bucket lost after SIGKILL+restart (have {names})"
        unacked = [op for op in new if not op.acked]
        present, problems = _verify(s3, bucket, history)
        assert not problems, f"cycle {cycle}: " + "\n".join(problems[:20])

        listed = {k: o["Size"] for k, o in list_keys(s3, bucket).items()}
        assert listed == present, (
            f"cycle {cycle}: listing differs from readable objects: "
            f"listed-not-readable {sorted(set(listed) - set(present))[:10]}, "
            f"readable-not-listed {sorted(set(present) - set(listed))[:10]}, "
            f"size mismatches {[(k, listed[k], present[k]) for k in listed if k in present and listed[k] != present[k]][:10]}")

        for w in range(WORKERS):
            present_by_worker[w].clear()
            present_by_worker[w].update(k for k in present if k.startswith(f"w{w}/"))
        kinds = {}
        for op in new:
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
        print(f"cycle {cycle}: {len(new)} ops {kinds}, {acked} acked, unacked {[(op.kind, op.key) for op in unacked]}, "
              f"{len(present)} objects / {sum(present.values())} B live, restart {ready:.2f}s")
        _check_no_orphans(cloud, s3, bucket, listed, cycle)


def _check_no_orphans(cloud, s3, bucket, listed, cycle):
    """Bytes under data/walrus must be accounted for by live objects, live multipart
    parts and the redb index (+1 MiB slack). Startup sweeps may run in the background,
    so allow a few seconds."""
    root = cloud.data / "walrus"
    assert root.is_dir(), f"expected object data under {root}"
    parts_bytes = 0
    for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        for p in s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", []):
            parts_bytes += p["Size"]
    live = sum(listed.values())
    deadline = time.time() + 10
    while True:
        other, redb, files = tree_bytes(root, exclude_suffixes=(".redb",))
        budget = live + parts_bytes + MiB
        if other <= budget or time.time() > deadline:
            break
        time.sleep(0.5)
    print(f"  data/walrus: {other} B + {redb} B redb; budget {budget} B")
    biggest = sorted(files, key=lambda f: -f[1])[:8]
    assert other <= budget, (
        f"cycle {cycle}: {other} bytes under {root} (excluding {redb} B of *.redb) but only "
        f"{live} B of objects + {parts_bytes} B of multipart parts are live (+1 MiB slack): "
        f"orphaned temp/blob files left after restart; largest files: {biggest}")
    assert other + redb >= live, (
        f"cycle {cycle}: only {other + redb} bytes under {root} for {live} B of live objects: "
        f"object data is stored elsewhere, so this check measures the wrong directory")
