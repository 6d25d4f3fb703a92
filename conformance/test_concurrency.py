"""Consistency under concurrency (reliability-anchors W-01, W-02, W-03), sized for CI.

W-01 read-after-write: PUT then immediately GET / HEAD / ListObjectsV2(prefix=key).
W-02 overwrite atomicity: writers and readers hammer one key with self-describing bodies;
     every read must be exactly one complete PUT; the final state is linearizable.
W-03 list-after-write: concurrent creation of 1000 keys (prefixes, non-ASCII, XML
     specials), paginated listing with and without delimiter, then delete half.
"""
import hashlib
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

RAW_ROUNDS = int(os.environ.get("WALRUS_RAW_ROUNDS", "200"))
OVERWRITE_SECONDS = float(os.environ.get("WALRUS_OVERWRITE_SECONDS", "10"))
LIST_KEYS = int(os.environ.get("WALRUS_LIST_KEYS", "1000"))


def _md5_etag(b):
    return '"%s"' % hashlib.md5(b).hexdigest()


# ----------------------------------------------------------------------------
# W-01
# ----------------------------------------------------------------------------
def test_read_after_write(cloud, s3, bucket):
    rnd = random.Random(1)
    mismatches = []
    for i in range(RAW_ROUNDS):
        key = f"raw/{i:05d}"
        # sizes 0 .. 256 KiB, with 0 and exact powers of two represented
        size = rnd.choice([0, 1, 4096, 65536, 262144]) if i % 10 == 0 else rnd.randint(0, 256 * 1024)
        body = rnd.randbytes(size)
        etag = _md5_etag(body)
        put = s3.put_object(Bucket=bucket, Key=key, Body=body)
        if put["ETag"] != etag:
            mismatches.append((key, "put-etag", put["ETag"], etag))
        got = s3.get_object(Bucket=bucket, Key=key)
        data = got["Body"].read()
        if data != body:
            mismatches.append((key, "get-body", len(data), size))
        if got["ETag"] != etag:
            mismatches.append((key, "get-etag", got["ETag"], etag))
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != size or head["ETag"] != etag:
            mismatches.append((key, "head", head["ContentLength"], head["ETag"], size, etag))
        lst = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        if [(o["Key"], o["Size"], o["ETag"]) for o in lst] != [(key, size, etag)]:
            mismatches.append((key, "list", [(o["Key"], o["Size"], o["ETag"]) for o in lst], size, etag))
    assert not mismatches, f"{len(mismatches)} read-after-write mismatches: {mismatches[:10]}"


# ----------------------------------------------------------------------------
# W-02
# ----------------------------------------------------------------------------
MAGIC = b"WALRUS-SELF-DESCRIBING-v1"


def _make_body(rnd, wid, seq):
    size = int(round(1024 * (4096 ** rnd.random())))  # 1 KiB .. 4 MiB, log-uniform
    payload = rnd.randbytes(size)
    hdr = b"%s w=%d s=%d n=%d h=%s\n" % (MAGIC, wid, seq, size,
                                       hashlib.sha256(payload).hexdigest().encode())
    return hdr + payload


def _check_body(body):
    """Returns (wid, seq) if the body is one complete self-describing body, else raises."""
    line, nl, payload = body.partition(b"\n")
    f = line.split(b" ")
    assert nl and f[0] == MAGIC and len(f) == 5, f"not a self-describing body: {body[:80]!r}"
    wid, seq, n, h = (x.split(b"=", 1)[1] for x in f[1:])
    assert int(n) == len(payload), f"truncated/extended body: header says {int(n)} B, got {len(payload)} B"
    assert hashlib.sha256(payload).hexdigest().encode() == h, "body payload does not match its embedded sha256 (mixed versions?)"
    return int(wid), int(seq)


def test_overwrite_atomicity(cloud, bucket):
    key = "hot-key"
    n_writers = n_readers = 4
    writers = [cloud.boto3(read_timeout=60) for _ in range(n_writers)]
    readers = [cloud.boto3(read_timeout=60) for _ in range(n_readers)]
    final_client = cloud.boto3()
    started = {}   # (wid, seq) -> (md5 etag, size, t_start)
    acked = {}     # (wid, seq) -> t_ack
    errors = []
    stop = threading.Event()
    reads = [0]
    lock = threading.Lock()

    # an initial version so readers never see 404
    rnd0 = random.Random(99)
    b0 = _make_body(rnd0, 99, 0)
    started[(99, 0)] = (_md5_etag(b0), len(b0), time.monotonic())
    writers[0].put_object(Bucket=bucket, Key=key, Body=b0)
    acked[(99, 0)] = time.monotonic()

    def writer(wid):
        rnd = random.Random(wid)
        seq = 0
        while not stop.is_set():
            seq += 1
            body = _make_body(rnd, wid, seq)
            t0 = time.monotonic()
            started[(wid, seq)] = (_md5_etag(body), len(body), t0)
            try:
                r = writers[wid].put_object(Bucket=bucket, Key=key, Body=body)
            except Exception as e:  # noqa: BLE001
                errors.append(f"writer {wid} seq {seq}: {e!r}"[:300])
                continue
            acked[(wid, seq)] = time.monotonic()
            if r["ETag"] != _md5_etag(body):
                errors.append(f"writer {wid} seq {seq}: PUT ETag {r['ETag']} != md5")

    def reader(rid):
        c = readers[rid]
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 4 == 0:
                    h = c.head_object(Bucket=bucket, Key=key)
                    sizes = {(e, s) for (e, s, _) in list(started.values())}
                    if (h["ETag"], h["ContentLength"]) not in sizes:
                        errors.append(f"reader {rid}: HEAD ETag/length {h['ETag']}/{h['ContentLength']} "
                                      f"matches no PUT")
                    continue
                g = c.get_object(Bucket=bucket, Key=key)
                body = g["Body"].read()
                ident = _check_body(body)
                if ident not in started:
                    errors.append(f"reader {rid}: body of never-started PUT {ident}")
                elif started[ident][0] != _md5_etag(body):
                    errors.append(f"reader {rid}: body {ident} differs from what was sent")
                if g["ETag"] != _md5_etag(body):
                    errors.append(f"reader {rid}: GET ETag {g['ETag']} does not match the body returned "
                                  f"({ident})")
                if g["ContentLength"] != len(body):
                    errors.append(f"reader {rid}: Content-Length {g['ContentLength']} != {len(body)}")
                with lock:
                    reads[0] += 1
            except AssertionError as e:
                errors.append(f"reader {rid}: {e}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"reader {rid}: {e!r}"[:300])

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(n_writers)]
    threads += [threading.Thread(target=reader, args=(r,), daemon=True) for r in range(n_readers)]
    for t in threads:
        t.start()
    time.sleep(OVERWRITE_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "worker thread hung"

    print(f"overwrite: {len(acked)} acked PUTs, {reads[0]} verified GETs")
    assert not errors, f"{len(errors)} errors, first: {errors[:10]}"
    assert reads[0] > 10 and len(acked) > 10, f"too little traffic: {reads[0]} reads, {len(acked)} writes"

    body = final_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    final = _check_body(body)
    assert final in acked, f"final object {final} was never acknowledged"
    # linearizability of the final state: no acked PUT may have *started* after the
    # final version's PUT was acknowledged
    later = [k for k, t_ack in acked.items() if started[k][2] > acked[final]]
    assert not later, (f"final object {final} (acked at {acked[final]:.3f}) lost to nothing, but "
                       f"{len(later)} acked PUTs started after it, e.g. {later[:3]}")


# ----------------------------------------------------------------------------
# W-03
# ----------------------------------------------------------------------------
def _make_keys(n):
    keys = []
    forms = [
        lambda i: f"top-{i:04d}",
        lambda i: f"dir{i % 7}/file-{i:04d}",
        lambda i: f"dir{i % 7}/sub{i % 3}/f{i:04d}",
        lambda i: f"ünïcödé/{i:04d}",
        lambda i: f"日本語/キー{i:04d}",
        lambda i: f"emoji/\U0001F600{i:04d}",
        lambda i: f"Zeta{i:04d}",
        lambda i: f"sp ace/{i:04d} x",
        lambda i: f"sym/{i:04d}+&<>'\"%=",
        lambda i: f"a/b/c/d/{i:04d}",
        lambda i: f"\u00e9-nfc-{i:04d}",
        lambda i: f"e\u0301-nfd-{i:04d}",
        lambda i: f"{i:04d}",
        lambda i: f"dir{i % 7}/",
        lambda i: f"tr\u00e4il/{i:04d}/",
    ]
    seen = set()
    i = 0
    while len(keys) < n:
        k = forms[i % len(forms)](i)
        if k not in seen:
            seen.add(k)
            keys.append(k)
        i += 1
    return keys


def _utf8_sorted(xs):
    return sorted(xs, key=lambda k: k.encode("utf-8"))


def _list_all(s3, bucket, delimiter=None, prefix="", max_keys=100):
    """Paginates ListObjectsV2 by hand; returns (entries in order, pages)."""
    entries = []
    pages = 0
    token = None
    while True:
        kw = dict(Bucket=bucket, MaxKeys=max_keys, Prefix=prefix)
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        pages += 1
        contents = [("key", o["Key"]) for o in r.get("Contents", [])]
        prefixes = [("prefix", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        page = contents + prefixes
        assert len(page) <= max_keys, f"page {pages} has {len(page)} entries > MaxKeys {max_keys}"
        assert r["KeyCount"] == len(page), f"KeyCount {r['KeyCount']} != {len(page)} entries"
        assert [k for _, k in contents] == _utf8_sorted(k for _, k in contents), \
            f"page {pages} Contents not in UTF-8 byte order"
        entries += sorted(page, key=lambda e: e[1].encode("utf-8"))
        if not r.get("IsTruncated"):
            assert not r.get("NextContinuationToken"), "NextContinuationToken on the last page"
            break
        token = r.get("NextContinuationToken")
        assert token, "IsTruncated without NextContinuationToken"
        assert page, "empty truncated page"
        assert pages < 1000, "pagination does not terminate"
    return entries, pages


def _check_listing(s3, bucket, expected_keys):
    exp = _utf8_sorted(expected_keys)
    entries, pages = _list_all(s3, bucket)
    got = [k for _, k in entries]
    dups = {k for k in got if got.count(k) > 1} if len(set(got)) != len(got) else set()
    assert not dups, f"duplicates across pages: {sorted(dups)[:10]}"
    assert set(got) == set(exp), (f"missing {sorted(set(exp) - set(got))[:10]}, "
                                  f"extra {sorted(set(got) - set(exp))[:10]}")
    assert got == exp, "listing not in strict UTF-8 byte order across pages"
    assert pages == max(1, -(-len(exp) // 100)), f"{pages} pages for {len(exp)} keys at MaxKeys=100"

    # delimiter "/" at the top level
    entries, _ = _list_all(s3, bucket, delimiter="/")
    exp_keys = {k for k in exp if "/" not in k}
    exp_prefixes = {k.split("/", 1)[0] + "/" for k in exp if "/" in k}
    got_keys = [k for t, k in entries if t == "key"]
    got_prefixes = [k for t, k in entries if t == "prefix"]
    assert len(got_prefixes) == len(set(got_prefixes)), f"CommonPrefixes repeated: {got_prefixes}"
    assert len(got_keys) == len(set(got_keys)), "keys repeated with delimiter"
    assert set(got_keys) == exp_keys, (f"delimiter listing keys: missing {sorted(exp_keys - set(got_keys))[:10]}, "
                                       f"extra {sorted(set(got_keys) - exp_keys)[:10]}")
    assert set(got_prefixes) == exp_prefixes, (f"CommonPrefixes: expected {sorted(exp_prefixes)}, "
                                               f"got {sorted(got_prefixes)}")
    names = [k for _, k in entries]
    assert names == _utf8_sorted(names), "delimiter listing not in UTF-8 byte order across pages"

    # delimiter under a nested prefix
    for pfx in ("dir3/", "日本語/"):
        entries, _ = _list_all(s3, bucket, delimiter="/", prefix=pfx)
        sub = [k for k in exp if k.startswith(pfx)]
        e_keys = {k for k in sub if "/" not in k[len(pfx):]}
        e_pfx = {pfx + k[len(pfx):].split("/", 1)[0] + "/" for k in sub if "/" in k[len(pfx):]}
        assert {k for t, k in entries if t == "key"} == e_keys, f"prefix {pfx!r}: keys differ"
        assert {k for t, k in entries if t == "prefix"} == e_pfx, f"prefix {pfx!r}: CommonPrefixes differ"


def test_list_after_write_and_delete(cloud, bucket):
    keys = _make_keys(LIST_KEYS)
    assert len(set(keys)) == len(keys)
    n_threads = 4
    clients = [cloud.boto3() for _ in range(n_threads)]
    shards = [keys[i::n_threads] for i in range(n_threads)]

    def create(i):
        for k in shards[i]:
            clients[i].put_object(Bucket=bucket, Key=k, Body=k.encode("utf-8"))
        return len(shards[i])

    with ThreadPoolExecutor(n_threads) as ex:
        assert sum(ex.map(create, range(n_threads))) == len(keys)

    s3 = clients[0]
    _check_listing(s3, bucket, keys)

    # delete every other key (in byte order), concurrently
    ordered = _utf8_sorted(keys)
    doomed, kept = ordered[::2], ordered[1::2]
    dshards = [doomed[i::n_threads] for i in range(n_threads)]

    def delete(i):
        for k in dshards[i]:
            clients[i].delete_object(Bucket=bucket, Key=k)

    with ThreadPoolExecutor(n_threads) as ex:
        list(ex.map(delete, range(n_threads)))

    _check_listing(s3, bucket, kept)
    # spot-check content of survivors and absence of the deleted
    for k in kept[::50]:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode("utf-8")
    for k in doomed[::50]:
        try:
            s3.head_object(Bucket=bucket, Key=k)
            raise AssertionError(f"deleted key {k!r} still readable")
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # remove the rest with DeleteObjects (non-ASCII and XML-special keys in the body)
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in kept]})
    assert not r.get("Errors"), f"DeleteObjects errors: {r['Errors'][:5]}"
    assert {d["Key"] for d in r.get("Deleted", [])} == set(kept), "DeleteObjects reported other keys"
    _check_listing(s3, bucket, [])
