"""Walrus scaled out: two `euca walrus` front ends (A and B) serve the same buckets
from one PostgreSQL metadata database (`[walrus] meta_url`) and one blob store,
each with its own --data directory and port, both authenticating through one
`euca clc` (services.toml). The blob store of the main pair, of the crash test and
of the migration is, in turn, a second S3 server (`[walrus] blob_url =
"s3://bucket/prefix?endpoint=..."`, a plain `euca walrus`) and Azurite, Microsoft's
Azure Blob Storage emulator (`blob_url = "az://container/prefix?endpoint=..."`):
helpers_blobs; the other tests share a directory (`blob_url = "file:///..."`).

What one front end acknowledges, the other serves at once: objects (inline and
blob), overwrites and deletes, multipart uploads whose parts went through either,
If-None-Match races between both, versioning, bucket names and owners. A front end
SIGKILLed mid-write loses nothing it acknowledged; one whose database is not there
refuses to start.

PostgreSQL is a throwaway server (helpers_pg); the module is skipped when its
binaries are missing (scripts/install-test-deps.sh installs them).
"""
import hashlib
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import (euca_bin, free_port, parse_env_file, set_cache_secs, stop_process,
                      wait_http)
from helpers_blobs import AzuriteBackend, S3Backend, azurite_path
from helpers_pg import SKIP_REASON, pg, pg_bin_dir  # noqa: F401 (pg: the fixture)
from helpers_raw import tree_bytes

pytestmark = pytest.mark.skipif(pg_bin_dir() is None, reason=SKIP_REASON)

KiB, MiB = 1024, 1024 * 1024
INLINE_MAX = 16 * KiB          # [walrus] inline_max_bytes default


def write_walrus_config(path, meta_url, blobs):
    """`blobs`: a shared directory, or a blob_url."""
    url = blobs if isinstance(blobs, str) else f"file://{Path(blobs).resolve()}"
    path.write_text(f'[walrus]\nmeta_url = "{meta_url}"\nblob_url = "{url}"\n')
    return path


class FrontEnd:
    """One `euca walrus --identity --config` process with its own data dir and port."""

    def __init__(self, root, name, config, services):
        self.name = name
        self.data = root / name
        self.config = config
        self.services = services
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / f"{name}.log"
        self.proc = None

    def spawn(self):
        with open(self.log_path, "ab") as log:
            # No services file: the front end keeps accounts and keys itself (in the
            # metadata database).
            identity = ["--identity", str(self.services)] if self.services else []
            self.proc = subprocess.Popen(
                [euca_bin(), "walrus", "--config", str(self.config), "--data", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}", *identity],
                stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout=30):
        wait_http(self.url + "/_health", self.proc, self.log_path, timeout)
        return self

    def start(self, timeout=30):
        return self.spawn().wait_ready(timeout)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        stop_process(self.proc, sig, timeout)
        self.proc = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class ScaleOut:
    """`euca clc` plus front ends A and B on one database and one blob store: the
    S3 server `backend` (under prefix `prefix`), or else a shared directory."""

    def __init__(self, root, meta_url, backend=None, prefix=None):
        self.root = root
        self.meta_url = meta_url
        self.clc_port = free_port()
        self.clc_url = f"http://127.0.0.1:{self.clc_port}"
        self.clc_dir = root / "clc"
        self.services = self.clc_dir / "credentials" / "services.toml"
        self.backend, self.prefix = backend, prefix or root.name
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        blobs = backend.blob_url(self.prefix) if backend else self.blobs
        self.config = write_walrus_config(root / "walrus.toml", meta_url, blobs)
        self.fe = {n: FrontEnd(root, n, self.config, self.services) for n in ("a", "b")}
        self.clc = None

    def start(self):
        log = self.root / "clc.log"
        with open(log, "ab") as f:
            self.clc = subprocess.Popen(
                [euca_bin(), "clc", "--data", str(self.clc_dir), "--listen",
                 f"127.0.0.1:{self.clc_port}", "--s3-url", self.fe["a"].url + "/"],
                stdout=f, stderr=subprocess.STDOUT)
        wait_http(self.clc_url + "/_health", self.clc, log)
        deadline = time.time() + 10
        while not self.services.exists() and time.time() < deadline:
            time.sleep(0.1)
        # No credential cache: a new account's key works at once on both front ends.
        set_cache_secs(self.services, 0, 0)
        self.eucarc = parse_env_file(self.clc_dir / "credentials" / "eucarc")
        # A first (it creates the schema), then B.
        self.fe["a"].start()
        self.fe["b"].start()
        return self

    def stop(self):
        for fe in self.fe.values():
            fe.stop()
        if self.clc and self.clc.poll() is None:
            self.clc.terminate()
            try:
                self.clc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.clc.kill()
                self.clc.wait()
        self.clc = None

    def blob_bytes(self):
        """Bytes in the blob store."""
        if self.backend:
            return self.backend.bytes_under(self.prefix)
        return tree_bytes(self.blobs)[0]

    def s3(self, name, ak=None, sk=None, **cfg):
        return boto3.client(
            "s3", endpoint_url=self.fe[name].url, region_name="us-east-1",
            aws_access_key_id=ak or self.eucarc["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=sk or self.eucarc["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=cfg.pop("connect_timeout", 5),
                          read_timeout=cfg.pop("read_timeout", 60), **cfg))

    def new_account(self, name):
        """(access key, secret key) of a new account, made on the CLC's data dir."""
        r = subprocess.run([euca_bin(), "account", "create", name, "--data", str(self.clc_dir)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))
        return k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module", params=["s3", "azure"])
def backend(request, tmp_path_factory):
    """The blob store front ends keep their blobs in: the second S3 server, then
    Azurite."""
    if request.param == "azure":
        if azurite_path() is None:
            pytest.skip("azurite-blob is not installed (scripts/install-test-deps.sh: npm)")
        be = AzuriteBackend(tmp_path_factory.mktemp("azurite"))
    else:
        be = S3Backend(tmp_path_factory.mktemp("s3backend"))
    be.kind = request.param
    try:
        yield be.start()
    finally:
        be.stop()


@pytest.fixture(scope="module")
def so(pg, backend, tmp_path_factory):
    # A database per blob store: metadata naming blobs the other store holds would
    # be of no use.
    url = pg.url if backend.kind == "s3" else pg.create_database(f"so_{backend.kind}")
    s = ScaleOut(tmp_path_factory.mktemp("scaleout"), url, backend, "so")
    try:
        yield s.start()
    finally:
        s.stop()


_n = [0]


def new_bucket(s3, prefix="so"):
    _n[0] += 1
    name = f"{prefix}-{_n[0]}-{int(time.time() * 1000) % 1000000}"
    s3.create_bucket(Bucket=name)
    return name


def err(fn, *a, **kw):
    """(HTTP status, error code) of a boto3 call that must fail."""
    with pytest.raises(ClientError) as ei:
        fn(*a, **kw)
    r = ei.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def listing(s3, bucket):
    """{key: size} of the bucket, every page."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def body(s3, bucket, key, **kw):
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def md5(b):
    return hashlib.md5(b).hexdigest()


# -- objects -----------------------------------------------------------------------

@pytest.mark.parametrize("key,size", [
    ("  lead and trail spaces  ", 11),                    # inline
    (" ünïcødé/ключ 文件 ✓ ", 20 * MiB),                   # a blob, one PUT
    ("plain/tiny", 1),
], ids=["inline-spaces", "blob-20MiB-unicode", "tiny"])
def test_put_on_a_is_served_by_b_and_delete_on_b_is_seen_by_a(so, key, size):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    data = random.Random(size).randbytes(size)
    blobs_before = so.blob_bytes()
    etag = a.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
    assert etag == f'"{md5(data)}"'
    if size > INLINE_MAX:
        # The bytes are in the blob store (the second S3 server).
        assert so.blob_bytes() - blobs_before >= size
    got = b.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    h = b.head_object(Bucket=bucket, Key=key)
    assert (h["ContentLength"], h["ETag"]) == (size, etag)
    assert listing(b, bucket) == {key: size}
    b.delete_object(Bucket=bucket, Key=key)
    assert err(a.get_object, Bucket=bucket, Key=key) == (404, "NoSuchKey")
    assert err(a.head_object, Bucket=bucket, Key=key)[0] == 404
    assert listing(a, bucket) == {}
    a.delete_bucket(Bucket=bucket)
    assert err(b.head_bucket, Bucket=bucket)[0] == 404


def test_overwrites_alternate_between_front_ends(so):
    """Each front end serves the other's latest write (no stale copy), through
    inline -> blob -> inline changes of the same key."""
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(b)
    rnd = random.Random(7)
    for i, size in enumerate((100, 3 * MiB, 5, 64 * KiB, 0)):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        data = rnd.randbytes(size)
        etag = writer.put_object(Bucket=bucket, Key="k", Body=data)["ETag"]
        assert body(reader, bucket, "k") == data, i
        assert reader.head_object(Bucket=bucket, Key="k")["ETag"] == etag, i
        # And the writer itself, after the other front end has read it.
        assert body(writer, bucket, "k") == data, i


def test_awscli_upload_on_a_download_and_remove_on_b(so, tmp_path):
    if shutil.which("aws") is None:
        pytest.fail("aws CLI missing: run scripts/install-test-deps.sh")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path),
           "AWS_ACCESS_KEY_ID": so.eucarc["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": so.eucarc["AWS_SECRET_ACCESS_KEY"],
           "AWS_DEFAULT_REGION": "us-east-1"}

    def aws(fe, *args):
        r = subprocess.run(["aws", "--endpoint-url", so.fe[fe].url, "s3", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (fe, args, r.stdout, r.stderr)
        return r.stdout

    bucket = new_bucket(so.s3("a"), "socli")
    src = tmp_path / "src"
    src.write_bytes(random.Random(3).randbytes(12 * MiB + 5))   # multipart (8 MiB parts)
    aws("a", "cp", str(src), f"s3://{bucket}/dir/f.bin")
    assert re.search(rf"\s{12 * MiB + 5}\s+dir/f\.bin$", aws("b", "ls", "--recursive", f"s3://{bucket}/"),
                     re.M)
    aws("b", "cp", f"s3://{bucket}/dir/f.bin", str(tmp_path / "dst"))
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    aws("b", "rm", f"s3://{bucket}/dir/f.bin")
    assert listing(so.s3("a"), bucket) == {}


def test_blob_store_holds_encrypted_and_copied_blobs(so):
    """On the S3 blob store: an SSE-S3 object written through A reads back through B
    (one master key, kept in the store), its bytes there are not the plaintext; a
    server-side copy through B is a blob of its own there, which outlives its
    source. (Freed blobs go after a 30 s grace: not waited for here.)"""
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    data = random.Random(5).randbytes(3 * MiB)
    before = so.backend.objects_under(so.prefix)
    a.put_object(Bucket=bucket, Key="secret", Body=data, ServerSideEncryption="AES256")
    added = {k: v for k, v in so.backend.objects_under(so.prefix).items() if k not in before}
    blob_keys = [k for k in added if "/blobs/" in k]
    assert len(blob_keys) == 1 and added[blob_keys[0]] == len(data), added
    stored = so.backend.read(blob_keys[0])
    assert stored != data and data[:4096] not in stored
    assert f"{so.prefix}/sse-master.key" in so.backend.objects_under(so.prefix)
    got = b.get_object(Bucket=bucket, Key="secret")
    assert got["Body"].read() == data and got["ServerSideEncryption"] == "AES256"
    # A ranged read decrypts from the middle.
    r = b.get_object(Bucket=bucket, Key="secret", Range="bytes=1000000-1000099")
    assert r["Body"].read() == data[1000000:1000100]
    plain = random.Random(6).randbytes(2 * MiB)
    a.put_object(Bucket=bucket, Key="src", Body=plain)
    b.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert body(a, bucket, "dst") == plain
    blobs = lambda: sorted(v for k, v in so.backend.objects_under(so.prefix).items()  # noqa: E731
                           if "/blobs/" in k and k not in before)
    assert blobs() == sorted([len(data), len(plain), len(plain)])
    for key in ("src", "secret"):
        b.delete_object(Bucket=bucket, Key=key)
    assert body(a, bucket, "dst") == plain


# -- multipart ---------------------------------------------------------------------

def test_multipart_parts_through_both_front_ends(so):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    key = " mp/ünï "
    rnd = random.Random(11)
    p1, p2 = rnd.randbytes(5 * MiB), rnd.randbytes(MiB + 7)
    uid = a.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    e1 = a.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = b.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    assert (e1, e2) == (f'"{md5(p1)}"', f'"{md5(p2)}"')
    parts = b.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [
        (1, len(p1), e1), (2, len(p2), e2)]
    ups = b.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in ups] == [(key, uid)]
    r = a.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    want_etag = '"%s-2"' % hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest()
    assert r["ETag"] == want_etag
    for s3 in (a, b):
        got = s3.get_object(Bucket=bucket, Key=key)
        assert (got["Body"].read(), got["ETag"]) == (p1 + p2, want_etag)
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert listing(b, bucket) == {key: len(p1) + len(p2)}


def test_multipart_aborted_on_b_is_gone_on_a(so):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    uid = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    a.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"x" * MiB)
    b.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    assert err(a.upload_part, Bucket=bucket, Key="k", UploadId=uid, PartNumber=2,
               Body=b"y")[1] == "NoSuchUpload"
    assert err(a.list_parts, Bucket=bucket, Key="k", UploadId=uid)[1] == "NoSuchUpload"
    assert a.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert listing(a, bucket) == {}


# -- conditional writes ------------------------------------------------------------

@pytest.mark.parametrize("rnd", range(3))
def test_if_none_match_race_across_front_ends_has_one_winner(so, rnd):
    n = 16
    clients = [so.s3("a" if i % 2 == 0 else "b") for i in range(n)]
    bucket = new_bucket(clients[0], "sorace")
    # Even writers send inline-sized bodies, odd ones blobs.
    bodies = [f"writer {i} round {rnd} ".encode() * (100 if i % 2 == 0 else 5000) for i in range(n)]
    results = [None] * n
    start = threading.Barrier(n)

    def writer(i):
        start.wait()
        try:
            r = clients[i].put_object(Bucket=bucket, Key="race", Body=bodies[i], IfNoneMatch="*")
            results[i] = (r["ResponseMetadata"]["HTTPStatusCode"], r["ETag"])
        except ClientError as e:
            results[i] = (e.response["ResponseMetadata"]["HTTPStatusCode"],
                          e.response["Error"]["Code"])
        except Exception as e:  # noqa: BLE001 - recorded and asserted on below
            results[i] = (None, repr(e))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [i for i, r in enumerate(results) if r and r[0] == 200]
    assert len(winners) == 1, results
    losers = [r for i, r in enumerate(results) if i not in winners]
    assert all(r in ((412, "PreconditionFailed"), (409, "ConditionalRequestConflict"))
               for r in losers), results
    w = winners[0]
    for fe in ("a", "b"):
        got = so.s3(fe).get_object(Bucket=bucket, Key="race")
        assert (got["Body"].read(), got["ETag"]) == (bodies[w], results[w][1]), fe


def test_if_match_compare_and_swap_across_front_ends(so):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    e1 = a.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    e2 = b.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=e1)["ETag"]
    # A must see that e1 is no longer current.
    assert err(a.put_object, Bucket=bucket, Key="k", Body=b"v3",
               IfMatch=e1) == (412, "PreconditionFailed")
    assert err(a.put_object, Bucket=bucket, Key="k", Body=b"v3",
               IfNoneMatch="*") == (412, "PreconditionFailed")
    a.put_object(Bucket=bucket, Key="k", Body=b"v3", IfMatch=e2)
    assert body(b, bucket, "k") == b"v3"


# -- versioning --------------------------------------------------------------------

def test_versioning_enabled_on_a_applies_to_puts_on_b(so):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a)
    a.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert b.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    v1 = b.put_object(Bucket=bucket, Key="doc", Body=b"first")["VersionId"]
    v2 = b.put_object(Bucket=bucket, Key="doc", Body=b"second " * 5000)["VersionId"]
    assert v1 and v2 and v1 != v2 and "null" not in (v1, v2)
    vs = a.list_object_versions(Bucket=bucket)["Versions"]
    assert sorted((v["VersionId"], v["IsLatest"]) for v in vs if v["Key"] == "doc") == sorted(
        [(v1, False), (v2, True)])
    assert body(a, bucket, "doc") == b"second " * 5000
    assert body(a, bucket, "doc", VersionId=v1) == b"first"
    # A delete marker made on A hides the key on B; the versions stay readable.
    marker = a.delete_object(Bucket=bucket, Key="doc")
    assert marker.get("DeleteMarker") is True
    assert err(b.get_object, Bucket=bucket, Key="doc")[0] == 404
    r = b.list_object_versions(Bucket=bucket)
    assert [(m["VersionId"], m["IsLatest"]) for m in r.get("DeleteMarkers", [])] == [
        (marker["VersionId"], True)]
    assert body(b, bucket, "doc", VersionId=v2) == b"second " * 5000


# -- buckets and owners ------------------------------------------------------------

def test_buckets_and_their_owners_are_shared(so):
    a, b = so.s3("a"), so.s3("b")
    bucket = new_bucket(a, "soown")
    assert bucket in [x["Name"] for x in b.list_buckets()["Buckets"]]
    b.head_bucket(Bucket=bucket)
    ak, sk = so.new_account(f"so{int(time.time() * 1000) % 10000000}")
    other_a, other_b = so.s3("a", ak, sk), so.s3("b", ak, sk)
    # The name is taken on A: another account cannot have it on B.
    assert err(other_b.create_bucket, Bucket=bucket) == (409, "BucketAlreadyExists")
    assert err(other_b.put_object, Bucket=bucket, Key="k", Body=b"x")[0] == 403
    theirs = new_bucket(other_b, "sotheirs")
    assert theirs in [x["Name"] for x in other_a.list_buckets()["Buckets"]]
    assert theirs not in [x["Name"] for x in a.list_buckets()["Buckets"]]
    assert bucket not in [x["Name"] for x in other_a.list_buckets()["Buckets"]]
    # Deleted on B, the name is free on A for the other account.
    b.delete_bucket(Bucket=bucket)
    assert err(a.head_bucket, Bucket=bucket)[0] == 404
    other_a.create_bucket(Bucket=bucket)
    assert bucket in [x["Name"] for x in other_b.list_buckets()["Buckets"]]
    assert err(a.put_object, Bucket=bucket, Key="k", Body=b"x")[0] == 403


def test_create_bucket_race_between_accounts_on_both_front_ends(so):
    ak, sk = so.new_account(f"sorace{int(time.time() * 1000) % 10000000}")
    for round_ in range(4):
        name = f"sobr-{round_}-{int(time.time() * 1000) % 1000000}"
        # Accounts and front ends swap every round.
        admin_fe, other_fe = ("a", "b") if round_ % 2 == 0 else ("b", "a")
        clients = {"admin": so.s3(admin_fe), "other": so.s3(other_fe, ak, sk)}
        results = {}
        start = threading.Barrier(2)

        def create(who):
            start.wait()
            try:
                clients[who].create_bucket(Bucket=name)
                results[who] = 200
            except ClientError as e:
                results[who] = (e.response["ResponseMetadata"]["HTTPStatusCode"],
                                e.response["Error"]["Code"])

        threads = [threading.Thread(target=create, args=(w,)) for w in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [w for w, r in results.items() if r == 200]
        assert len(winners) == 1, results
        loser = "other" if winners[0] == "admin" else "admin"
        assert results[loser] == (409, "BucketAlreadyExists"), results
        keys = {"admin": (None, None), "other": (ak, sk)}
        for fe in ("a", "b"):
            names = {w: [x["Name"] for x in so.s3(fe, *keys[w]).list_buckets()["Buckets"]]
                     for w in keys}
            assert name in names[winners[0]] and name not in names[loser], (fe, results)


# -- starting ----------------------------------------------------------------------

def test_two_front_ends_starting_together_on_a_new_database(so, pg, tmp_path):
    """Both create the schema at once on an empty database; both come up and share it."""
    url = pg.create_database(f"fresh{int(time.time() * 1000) % 1000000}")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    cfg = write_walrus_config(tmp_path / "walrus.toml", url, blobs)
    fes = [FrontEnd(tmp_path, n, cfg, so.services) for n in ("c", "d")]
    try:
        for fe in fes:
            fe.spawn()
        for fe in fes:
            fe.wait_ready()
        cl = [boto3.client("s3", endpoint_url=fe.url, region_name="us-east-1",
                           aws_access_key_id=so.eucarc["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=so.eucarc["AWS_SECRET_ACCESS_KEY"],
                           config=Config(s3={"addressing_style": "path"},
                                         retries={"max_attempts": 1}))
              for fe in fes]
        cl[0].create_bucket(Bucket="fresh")
        cl[1].put_object(Bucket="fresh", Key="k", Body=b"hello")
        assert body(cl[0], "fresh", "k") == b"hello"
        # A separate database: the module's buckets are not here.
        assert [x["Name"] for x in cl[1].list_buckets()["Buckets"]] == ["fresh"]
    finally:
        for fe in fes:
            fe.stop()


def test_front_ends_without_an_identity_service_share_accounts_in_the_database(pg, tmp_path):
    """Two `euca walrus` from the same TOML, different --data, no --identity: accounts
    and keys live in the metadata database, so each accepts what the other made, and
    a key disabled through one is refused by the other as soon as the database's
    notification arrives (each process caches the keys it found)."""
    url = pg.create_database(f"ids{int(time.time() * 1000) % 1000000}")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    cfg = write_walrus_config(tmp_path / "walrus.toml", url, blobs)
    fes = [FrontEnd(tmp_path, n, cfg, None) for n in ("e", "f")]
    try:
        for fe in fes:
            fe.spawn()
        for fe in fes:
            fe.wait_ready()
        rc = {fe.name: parse_env_file(fe.data / "credentials" / "eucarc") for fe in fes}
        e, f = fes

        def client(fe, ak, sk):
            return boto3.client("s3", endpoint_url=fe.url, region_name="us-east-1",
                                aws_access_key_id=ak, aws_secret_access_key=sk,
                                config=Config(s3={"addressing_style": "path"},
                                              retries={"max_attempts": 1}))

        admin_e = (rc["e"]["AWS_ACCESS_KEY_ID"], rc["e"]["AWS_SECRET_ACCESS_KEY"])
        admin_f = (rc["f"]["AWS_ACCESS_KEY_ID"], rc["f"]["AWS_SECRET_ACCESS_KEY"])
        client(e, *admin_e).create_bucket(Bucket="shared-admin")
        # E's admin key works on F, and F's admin is the same account (it owns the bucket).
        assert "shared-admin" in [b["Name"] for b in client(f, *admin_e).list_buckets()["Buckets"]]
        assert "shared-admin" in [b["Name"] for b in client(f, *admin_f).list_buckets()["Buckets"]]
        # An account made through E's identity API works on F at once.
        r = subprocess.run([euca_bin(), "account", "create", "carol", "--data", str(e.data)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))
        carol = (k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"])
        client(f, *carol).create_bucket(Bucket="carols")
        assert [b["Name"] for b in client(e, *carol).list_buckets()["Buckets"]] == ["carols"]
        # Disabled through F's identity API: E refuses it as soon as the database's
        # notification reaches E's credential cache (milliseconds; 5 s allowed for
        # a loaded machine), and from then on.
        r = subprocess.run([euca_bin(), "account", "disable", "carol", "--data", str(f.data)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 5
        while True:
            try:
                client(e, *carol).list_buckets()
            except ClientError as x:
                assert x.response["ResponseMetadata"]["HTTPStatusCode"] == 403
                break
            assert time.monotonic() < deadline, "E still accepts the disabled key"
            time.sleep(0.05)
        for _ in range(3):
            assert err(client(e, *carol).list_buckets)[0] == 403
    finally:
        for fe in fes:
            fe.stop()


def test_front_end_without_its_database_exits_with_an_error(so, tmp_path):
    dead = free_port()      # nothing listens there
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    cfg = write_walrus_config(tmp_path / "walrus.toml",
                              f"postgres://postgres@127.0.0.1:{dead}/walrus", blobs)
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            [euca_bin(), "walrus", "--config", str(cfg), "--data", str(tmp_path / "data"),
             "--listen", f"127.0.0.1:{free_port()}", "--identity", str(so.services)],
            capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("euca walrus with an unreachable meta_url did not exit within 30 s")
    assert r.returncode != 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines, r.stdout
    # The last line is the error, on one line, naming the database.
    assert re.match(r"^euca[\w-]*: ", lines[-1]), r.stderr
    assert re.search(r"postgres|database|meta_url", lines[-1], re.I), r.stderr
    assert "walrus is up" not in r.stdout


def test_front_end_without_its_blob_store_exits_with_an_error(so, tmp_path):
    """An S3 blob store that does not answer: a one-line error within seconds (the
    start-up sweep lists it), not minutes of retries; its secret key is not shown."""
    url = (f"s3://blob-store/x?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
           "&access_key_id=AK&secret_access_key=TOPSECRET")
    cfg = write_walrus_config(tmp_path / "walrus.toml", so.meta_url, url)
    try:
        r = subprocess.run(
            [euca_bin(), "walrus", "--config", str(cfg), "--data", str(tmp_path / "data"),
             "--listen", f"127.0.0.1:{free_port()}", "--identity", str(so.services)],
            capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("euca walrus with an unreachable blob store did not exit within 60 s")
    assert r.returncode != 0, r.stdout + r.stderr
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert re.match(r"^euca[\w-]*: .*blob", last), r.stderr
    assert "TOPSECRET" not in r.stdout + r.stderr
    assert "walrus is up" not in r.stdout


# -- crash -------------------------------------------------------------------------

def _size(rnd):
    if rnd.random() < 0.3:
        return rnd.randint(0, INLINE_MAX)                       # inline
    return int(INLINE_MAX * (2 * MiB / INLINE_MAX) ** rnd.random())   # blob, up to 2 MiB


def test_sigkill_of_one_front_end_loses_nothing_acknowledged(pg, backend, tmp_path):
    """8 writers, even ones through A and odd ones through B; A is SIGKILLed mid-run.
    B keeps serving writes; every acknowledged object reads back exactly through B,
    an unacknowledged one is absent or exact; A restarted on the same dirs serves it all."""
    so = ScaleOut(tmp_path, pg.create_database(f"crash{int(time.time() * 1000) % 1000000}"),
                  backend, "crash")
    try:
        so.start()
        bucket = new_bucket(so.s3("a"), "socrash")
        n = 8
        seed = int(time.time())
        print(f"seed={seed}")
        clients = [so.s3("a" if w % 2 == 0 else "b", read_timeout=30) for w in range(n)]
        attempted = {}      # key -> md5 of its body (each key written once)
        acked = {}          # key -> md5, for 200 answers
        errors = []         # (worker, key, monotonic time, error)
        bad_etags = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w):
            rnd = random.Random(seed * 100 + w)
            i = 0
            while not stop.is_set():
                i += 1
                key = f"w{w}/{i:05d}"
                data = rnd.randbytes(_size(rnd))
                with lock:
                    attempted[key] = md5(data)
                try:
                    r = clients[w].put_object(Bucket=bucket, Key=key, Body=data)
                    with lock:
                        if r["ResponseMetadata"]["HTTPStatusCode"] == 200:
                            acked[key] = md5(data)
                        if r["ETag"] != f'"{md5(data)}"':
                            bad_etags.append((key, r["ETag"], md5(data)))
                except Exception as e:  # noqa: BLE001 - every failure is recorded
                    with lock:
                        errors.append((w, key, time.monotonic(), repr(e)[:300]))
                    time.sleep(0.05)

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(n)]
        for t in threads:
            t.start()
        # Kill once both front ends have acknowledged a fair number of PUTs.
        deadline = time.time() + 60
        while time.time() < deadline:
            with lock:
                na = sum(1 for k in acked if int(k[1:k.index("/")]) % 2 == 0)
                nb = len(acked) - na
            if na >= 30 and nb >= 10:
                break
            time.sleep(0.05)
        time.sleep(random.Random(seed).uniform(0, 0.5))
        t_kill = time.monotonic()
        so.fe["a"].kill9()
        time.sleep(1.5)             # B's writers go on with A dead
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "writer hung after SIGKILL"

        early = [e for e in errors if e[2] < t_kill]
        assert not early, f"PUTs failed before the kill: {early[:5]}"
        on_b = [e for e in errors if e[0] % 2 == 1]
        assert not on_b, f"PUTs through B failed after A was killed: {on_b[:5]}"
        assert len(acked) >= 40, f"too few PUTs acknowledged: {len(acked)}"
        assert not bad_etags, bad_etags[:5]

        def check_all(s3, fe):
            listed = listing(s3, bucket)
            problems = []
            for key, want in attempted.items():
                try:
                    got = md5(body(s3, bucket, key))
                except ClientError as e:
                    if e.response["Error"]["Code"] != "NoSuchKey":
                        raise
                    got = None
                if key in acked and got != want:
                    problems.append(f"{fe}: acknowledged {key}: {got} != {want}")
                elif key not in acked and got not in (None, want):
                    problems.append(f"{fe}: unacknowledged {key} holds other bytes")
                if (got is not None) != (key in listed):
                    problems.append(f"{fe}: {key} readable={got is not None} listed={key in listed}")
            assert set(listed) <= set(attempted), set(listed) - set(attempted)
            assert not problems, "\n".join(problems[:20])

        check_all(so.s3("b"), "b")
        so.fe["a"].start()
        check_all(so.s3("a"), "a")
        so.s3("a").put_object(Bucket=bucket, Key="after-restart", Body=b"back")
        assert body(so.s3("b"), bucket, "after-restart") == b"back"
    finally:
        so.stop()


# -- migrating a single-node cloud ---------------------------------------------------

def test_migrate_moves_a_single_node_walrus_onto_postgres_and_s3(pg, backend, tmp_path):
    """`euca migrate` takes a stopped single-node Walrus (redb, local blobs, its
    accounts) onto PostgreSQL and the S3 blob store: two front ends then serve every
    object, version, upload in progress and encrypted object with the old keys."""
    one = FrontEnd(tmp_path, "single", tmp_path / "none.toml", None)
    (tmp_path / "none.toml").write_text("")
    one.start()
    rc = parse_env_file(one.data / "credentials" / "eucarc")
    admin = (rc["AWS_ACCESS_KEY_ID"], rc["AWS_SECRET_ACCESS_KEY"])

    def client(url, ak, sk):
        return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id=ak, aws_secret_access_key=sk,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))

    s3 = client(one.url, *admin)
    rnd = random.Random(42)
    objects = {}                                    # (bucket, key) -> bytes
    s3.create_bucket(Bucket="mig")
    for key, size in (("  spaced key  ", 100), ("ünï/文件 ✓", 3 * MiB), ("big", 20 * MiB),
                      ("empty", 0)):
        objects[("mig", key)] = rnd.randbytes(size)
        s3.put_object(Bucket="mig", Key=key, Body=objects[("mig", key)])
    secret = rnd.randbytes(MiB + 3)
    s3.put_object(Bucket="mig", Key="secret", Body=secret, ServerSideEncryption="AES256")
    objects[("mig", "secret")] = secret
    p1, p2 = rnd.randbytes(5 * MiB), rnd.randbytes(1000)
    uid = s3.create_multipart_upload(Bucket="mig", Key="mp")["UploadId"]
    parts = [s3.upload_part(Bucket="mig", Key="mp", UploadId=uid, PartNumber=n, Body=b)["ETag"]
             for n, b in ((1, p1), (2, p2))]
    s3.complete_multipart_upload(Bucket="mig", Key="mp", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(parts)]})
    objects[("mig", "mp")] = p1 + p2
    mp_etag = s3.head_object(Bucket="mig", Key="mp")["ETag"]
    # An upload still in progress, to be completed after the move.
    open_uid = s3.create_multipart_upload(Bucket="mig", Key="later")["UploadId"]
    q1 = rnd.randbytes(5 * MiB)
    e1 = s3.upload_part(Bucket="mig", Key="later", UploadId=open_uid, PartNumber=1, Body=q1)["ETag"]
    s3.create_bucket(Bucket="mig-versions")
    s3.put_bucket_versioning(Bucket="mig-versions", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="mig-versions", Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket="mig-versions", Key="doc", Body=b"two" * 10000)["VersionId"]
    # Another account's bucket.
    r = subprocess.run([euca_bin(), "account", "create", "dave", "--data", str(one.data)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))
    dave = (k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"])
    client(one.url, *dave).create_bucket(Bucket="daves")
    client(one.url, *dave).put_object(Bucket="daves", Key="d", Body=b"dave's")

    meta_url = pg.create_database(f"mig{int(time.time() * 1000) % 1000000}")
    blob_url = backend.blob_url("mig")

    def migrate():
        return subprocess.run([euca_bin(), "migrate", "--from", str(one.data), "--to-meta",
                               meta_url, "--to-blobs", blob_url],
                              capture_output=True, text=True, timeout=300)

    # Refused while the cloud runs (its databases are open), with nothing moved.
    r = migrate()
    assert r.returncode != 0 and "stop" in r.stderr.splitlines()[-1], r.stderr
    one.stop()
    r = migrate()
    assert r.returncode == 0, r.stdout + r.stderr
    # Ours and the cloud's images bucket; 7 blobs: 2 objects, 1 SSE, 2 parts, 1 part
    # in progress, a 30000-byte version (the rest are inline).
    assert re.search(r"migrated 4 buckets, .* 7 blobs \(", r.stdout), r.stdout
    assert "the SSE-S3 master key" in r.stdout and "TOP" not in r.stdout
    assert backend.bytes_under("mig") >= 20 * MiB + 3 * MiB + 5 * MiB
    # Again into the same database: refused, nothing merged.
    again = migrate()
    assert again.returncode != 0 and "empty database" in again.stderr, again.stderr

    cfg = write_walrus_config(tmp_path / "walrus.toml", meta_url, blob_url)
    fes = [FrontEnd(tmp_path, n, cfg, None) for n in ("m1", "m2")]
    try:
        for fe in fes:
            fe.start()
        for fe in fes:
            c = client(fe.url, *admin)
            for (b, key), data in objects.items():
                assert body(c, b, key) == data, (fe.name, key)
            assert c.head_object(Bucket="mig", Key="mp")["ETag"] == mp_etag
            assert c.get_object(Bucket="mig", Key="secret")["ServerSideEncryption"] == "AES256"
            assert sorted(x["Name"] for x in c.list_buckets()["Buckets"]) == ["mig", "mig-versions"]
            assert body(client(fe.url, *dave), "daves", "d") == b"dave's"
            assert err(c.get_object, Bucket="daves", Key="d")[0] == 403
        m1, m2 = (client(fe.url, *admin) for fe in fes)
        # The upload in progress completes on the new engines.
        e2 = m1.upload_part(Bucket="mig", Key="later", UploadId=open_uid, PartNumber=2,
                            Body=b"tail")["ETag"]
        m2.complete_multipart_upload(Bucket="mig", Key="later", UploadId=open_uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                                                {"PartNumber": 2, "ETag": e2}]})
        assert body(m1, "mig", "later") == q1 + b"tail"
        # Old versions keep their order under a new one.
        v3 = m2.put_object(Bucket="mig-versions", Key="doc", Body=b"three")["VersionId"]
        vs = m1.list_object_versions(Bucket="mig-versions")["Versions"]
        assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v3, True), (v2, False),
                                                                 (v1, False)]
        assert body(m1, "mig-versions", "doc", VersionId=v1) == b"one"
    finally:
        for fe in fes:
            fe.stop()
