"""Real command-line clients against a running `euca up`: awscli v1 (PyPI) and v2
(Debian /usr/bin/aws), s3cmd (SigV4 and SigV2), rclone; plus large multipart
round trips with each client (sha256 compared)."""
import hashlib
import json
import os
import sys

import pytest
from boto3.s3.transfer import TransferConfig

from helpers_clients import (MiB, aws, bucket_exists, curl, list_keys, make_tree,
                             multipart_etag_of_file, nuke_bucket, rclone, run, s3cmd,
                             sha256_bytes, sha256_file, tree_digest, unique_name, write_random_file)

AWS_VARIANTS = ["v1", "v2"]


@pytest.fixture()
def new_bucket_name(s3):
    """A fresh bucket name (not created); the bucket is removed afterwards if it exists."""
    name = unique_name("cli")
    yield name
    nuke_bucket(s3, name)


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


# ---------------------------------------------------------------------------
# awscli v1 / v2
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", AWS_VARIANTS)
def test_awscli_s3_basic(cloud, s3, new_bucket_name, tmp_path, variant):
    b = new_bucket_name
    r = aws(cloud, variant, "s3", "mb", f"s3://{b}")
    assert f"make_bucket: {b}" in r.stdout
    assert bucket_exists(s3, b)

    r = aws(cloud, variant, "s3", "ls")
    assert any(l.split()[-1] == b for l in lines(r.stdout)), r.stdout

    f = tmp_path / "file one.bin"
    data = os.urandom(300 * 1024 + 7)
    f.write_bytes(data)
    r = aws(cloud, variant, "s3", "cp", "--no-progress", str(f), f"s3://{b}/dir/f \u00e9.bin")
    assert "upload:" in r.stdout
    assert s3.get_object(Bucket=b, Key="dir/f \u00e9.bin")["Body"].read() == data

    r = aws(cloud, variant, "s3", "ls", f"s3://{b}/")
    assert "PRE dir/" in r.stdout, r.stdout
    r = aws(cloud, variant, "s3", "ls", f"s3://{b}/dir/")
    ls = lines(r.stdout)
    assert len(ls) == 1 and ls[0].endswith(f" {len(data)} f \u00e9.bin"), r.stdout
    r = aws(cloud, variant, "s3", "ls", "--recursive", f"s3://{b}")
    assert lines(r.stdout)[0].endswith(f" {len(data)} dir/f \u00e9.bin"), r.stdout

    out = tmp_path / "out.bin"
    r = aws(cloud, variant, "s3", "cp", "--no-progress", f"s3://{b}/dir/f \u00e9.bin", str(out))
    assert "download:" in r.stdout
    assert sha256_file(out) == sha256_bytes(data)

    # Server-side copy and move.
    aws(cloud, variant, "s3", "cp", "--no-progress", f"s3://{b}/dir/f \u00e9.bin",
        f"s3://{b}/copy+1.bin")
    aws(cloud, variant, "s3", "mv", "--no-progress", f"s3://{b}/copy+1.bin", f"s3://{b}/moved%.bin")
    assert sorted(list_keys(s3, b)) == ["dir/f \u00e9.bin", "moved%.bin"]
    assert s3.get_object(Bucket=b, Key="moved%.bin")["Body"].read() == data

    # Public upload, presign, empty file.
    aws(cloud, variant, "s3", "cp", "--no-progress", "--acl", "public-read", str(f),
        f"s3://{b}/x")
    status, _, body = curl(f"{cloud.endpoint}/{b}/x")
    assert status == 200 and body == data
    anon_out = tmp_path / "anon.bin"
    aws(cloud, variant, "s3", "cp", "--no-progress", "--no-sign-request", f"s3://{b}/x",
        str(anon_out))
    assert anon_out.read_bytes() == data
    r = aws(cloud, variant, "s3", "cp", "--no-progress", "--no-sign-request",
            f"s3://{b}/moved%.bin", str(tmp_path / "anon2.bin"), check=False)
    assert r.returncode != 0 and "403" in r.stderr, (r.stdout, r.stderr)
    r = aws(cloud, variant, "s3", "presign", "--expires-in", "300", f"s3://{b}/moved%.bin")
    status, _, body = curl(r.stdout.strip())
    assert status == 200 and body == data, body[:300]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    aws(cloud, variant, "s3", "cp", "--no-progress", str(empty), f"s3://{b}/empty")
    assert s3.head_object(Bucket=b, Key="empty")["ContentLength"] == 0
    aws(cloud, variant, "s3", "cp", "--no-progress", f"s3://{b}/empty", str(tmp_path / "e2"))
    assert (tmp_path / "e2").read_bytes() == b""
    r = aws(cloud, variant, "s3", "rm", f"s3://{b}/x")
    assert "delete:" in r.stdout
    assert "x" not in list_keys(s3, b)
    aws(cloud, variant, "s3", "rm", f"s3://{b}/empty")

    # rb refuses a non-empty bucket; --force empties it.
    r = aws(cloud, variant, "s3", "rb", f"s3://{b}", check=False)
    assert r.returncode != 0 and "BucketNotEmpty" in r.stderr, (r.stdout, r.stderr)
    r = aws(cloud, variant, "s3", "rm", "--recursive", f"s3://{b}")
    assert r.stdout.count("delete:") == 2, r.stdout
    assert list_keys(s3, b) == []
    r = aws(cloud, variant, "s3", "rb", f"s3://{b}")
    assert f"remove_bucket: {b}" in r.stdout
    assert not bucket_exists(s3, b)


@pytest.mark.parametrize("variant", AWS_VARIANTS)
def test_awscli_s3_sync_tree(cloud, s3, new_bucket_name, tmp_path, variant):
    b = new_bucket_name
    aws(cloud, variant, "s3", "mb", f"s3://{b}")
    src = tmp_path / "src"
    want = make_tree(src)

    r = aws(cloud, variant, "s3", "sync", "--no-progress", str(src), f"s3://{b}/tree")
    assert r.stdout.count("upload:") == len(want), r.stdout
    assert sorted(list_keys(s3, b)) == sorted(f"tree/{k}" for k in want)
    for k, digest in want.items():
        assert sha256_bytes(s3.get_object(Bucket=b, Key=f"tree/{k}")["Body"].read()) == digest, k

    # Re-sync: nothing to do (sizes and LastModified agree).
    r = aws(cloud, variant, "s3", "sync", "--no-progress", str(src), f"s3://{b}/tree")
    assert "upload:" not in r.stdout, r.stdout

    # Download the tree.
    dst = tmp_path / "dst"
    r = aws(cloud, variant, "s3", "sync", "--no-progress", f"s3://{b}/tree", str(dst))
    assert r.stdout.count("download:") == len(want), r.stdout
    assert tree_digest(dst) == want

    # Change one file and delete another; sync --delete propagates exactly that.
    changed = "\u65e5\u672c/sub dir/\u00e9 + %.bin"
    (src / changed).write_bytes(b"changed content, different size")
    (src / "plus+sign.txt").unlink()
    r = aws(cloud, variant, "s3", "sync", "--no-progress", "--delete", str(src), f"s3://{b}/tree")
    assert r.stdout.count("upload:") == 1 and r.stdout.count("delete:") == 1, r.stdout
    assert s3.get_object(Bucket=b, Key=f"tree/{changed}")["Body"].read() == \
        b"changed content, different size"
    assert "tree/plus+sign.txt" not in list_keys(s3, b)

    r = aws(cloud, variant, "s3", "ls", "--recursive", f"s3://{b}/tree/")
    assert len(lines(r.stdout)) == len(want) - 1
    assert any(l.endswith(" tree/100%+ done.txt") for l in lines(r.stdout)), r.stdout

    r = aws(cloud, variant, "s3", "rm", "--recursive", f"s3://{b}/tree")
    assert r.stdout.count("delete:") == len(want) - 1
    assert list_keys(s3, b) == []
    aws(cloud, variant, "s3", "rb", f"s3://{b}")
    assert not bucket_exists(s3, b)


def test_generated_aws_config_is_self_sufficient(cloud, s3, bucket):
    """The generated AWS config sets endpoint_url: awscli v1 (which honours it) needs no
    --endpoint-url, and both the "euca" and "default" profiles work."""
    s3.put_object(Bucket=bucket, Key="cfg-check", Body=b"c")
    text = cloud.aws_config.read_text()
    assert "endpoint_url" in text, text
    for profile in ("euca", "default"):
        env = {**cloud.client_env(), "AWS_PROFILE": profile}
        r = run([sys.executable, "-m", "awscli", "s3", "ls", f"s3://{bucket}/"], env=env)
        assert r.stdout.rstrip().endswith(" 1 cfg-check"), (profile, r.stdout)


def api(cloud, variant, *args, **kw):
    r = aws(cloud, variant, "--output", "json", "s3api", *args, **kw)
    return json.loads(r.stdout) if r.stdout.strip() else {}


@pytest.mark.parametrize("variant", AWS_VARIANTS)
def test_awscli_s3api(cloud, s3, bucket, tmp_path, variant):
    f = tmp_path / "body.bin"
    data = os.urandom(12345)
    f.write_bytes(data)
    r = api(cloud, variant, "put-object", "--bucket", bucket, "--key", "api/k \u00e9",
            "--body", str(f), "--content-type", "application/x-api",
            "--metadata", "color=green,size=xl", "--cache-control", "no-cache")
    assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    h = api(cloud, variant, "head-object", "--bucket", bucket, "--key", "api/k \u00e9")
    assert h["ContentLength"] == len(data) and h["ContentType"] == "application/x-api"
    assert h["Metadata"] == {"color": "green", "size": "xl"}
    assert h["CacheControl"] == "no-cache"
    out = tmp_path / "out.bin"
    g = api(cloud, variant, "get-object", "--bucket", bucket, "--key", "api/k \u00e9",
            "--range", "bytes=10-19", str(out))
    assert g["ContentRange"] == f"bytes 10-19/{len(data)}"
    assert out.read_bytes() == data[10:20]
    api(cloud, variant, "get-object", "--bucket", bucket, "--key", "api/k \u00e9", str(out))
    assert sha256_file(out) == sha256_bytes(data)

    loc = api(cloud, variant, "get-bucket-location", "--bucket", bucket)
    assert loc.get("LocationConstraint") in (None, "", cloud.region)
    api(cloud, variant, "head-bucket", "--bucket", bucket)
    acl = api(cloud, variant, "get-bucket-acl", "--bucket", bucket)
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]

    api(cloud, variant, "copy-object", "--bucket", bucket, "--key", "api/copy",
        "--copy-source", f"{bucket}/api/k \u00e9")
    lst = api(cloud, variant, "list-objects-v2", "--bucket", bucket, "--prefix", "api/",
              "--delimiter", "/")
    assert sorted(o["Key"] for o in lst["Contents"]) == ["api/copy", "api/k \u00e9"]

    # '.' and '..' path segments are literal parts of keys.
    dot_keys = {"a/../b": b"dotdot-mid", "../x": b"dotdot-lead", "a/./c": b"dot-mid", "b": b"b"}
    for k, v in dot_keys.items():
        p = tmp_path / f"dk{len(v)}"
        p.write_bytes(v)
        api(cloud, variant, "put-object", "--bucket", bucket, "--key", k, "--body", str(p))
    lst = api(cloud, variant, "list-objects-v2", "--bucket", bucket)
    assert sorted(o["Key"] for o in lst["Contents"]) == \
        sorted(["api/copy", "api/k \u00e9", *dot_keys])
    for k, v in dot_keys.items():
        api(cloud, variant, "get-object", "--bucket", bucket, "--key", k, str(out))
        assert out.read_bytes() == v, k
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == v, k

    d = api(cloud, variant, "delete-objects", "--bucket", bucket, "--delete",
            json.dumps({"Objects": [{"Key": k} for k in dot_keys]}))
    assert sorted(x["Key"] for x in d["Deleted"]) == sorted(dot_keys)
    api(cloud, variant, "delete-object", "--bucket", bucket, "--key", "api/copy")
    assert list_keys(s3, bucket) == ["api/k \u00e9"]

    # Multipart through s3api.
    up = api(cloud, variant, "create-multipart-upload", "--bucket", bucket, "--key", "mp")
    uid = up["UploadId"]
    part = tmp_path / "part"
    part.write_bytes(b"p" * 1000)
    pr = api(cloud, variant, "upload-part", "--bucket", bucket, "--key", "mp", "--upload-id", uid,
             "--part-number", "1", "--body", str(part))
    lp = api(cloud, variant, "list-parts", "--bucket", bucket, "--key", "mp", "--upload-id", uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]] == \
        [(1, pr["ETag"], 1000)]
    c = api(cloud, variant, "complete-multipart-upload", "--bucket", bucket, "--key", "mp",
            "--upload-id", uid, "--multipart-upload",
            json.dumps({"Parts": [{"PartNumber": 1, "ETag": pr["ETag"]}]}))
    want = hashlib.md5(hashlib.md5(b"p" * 1000).digest()).hexdigest() + "-1"
    assert c["ETag"] == f'"{want}"'
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"p" * 1000


def test_dot_segment_keys_boto3_and_cli_listing(cloud, s3, bucket, tmp_path):
    """'..'-segment keys written by boto3 show up literally in `aws s3 ls` (v2) too."""
    keys = {"a/../b": b"1", "../x": b"2", "b": b"3"}
    for k, v in keys.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    r = aws(cloud, "v2", "s3", "ls", "--recursive", f"s3://{bucket}")
    listed = sorted(l.split(None, 3)[3] for l in lines(r.stdout))
    assert listed == sorted(keys), r.stdout


# ---------------------------------------------------------------------------
# s3cmd (SigV4 default, and SigV2)
# ---------------------------------------------------------------------------

SIG = pytest.mark.parametrize("sigv2", [False, True], ids=["sigv4", "sigv2"])


@SIG
def test_s3cmd_basic(cloud, s3, new_bucket_name, tmp_path, sigv2):
    b = new_bucket_name
    r = s3cmd(cloud, "mb", f"s3://{b}", sigv2=sigv2)
    assert f"s3://{b}/" in r.stdout and "created" in r.stdout
    assert bucket_exists(s3, b)

    f = tmp_path / "s3cmd file.bin"
    data = os.urandom(200 * 1024 + 3)
    f.write_bytes(data)
    s3cmd(cloud, "put", str(f), f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    assert s3.get_object(Bucket=b, Key="dir/f \u00e9+.bin")["Body"].read() == data

    r = s3cmd(cloud, "ls", f"s3://{b}/dir/", sigv2=sigv2)
    assert f"s3://{b}/dir/f \u00e9+.bin" in r.stdout and str(len(data)) in r.stdout, r.stdout
    r = s3cmd(cloud, "ls", sigv2=sigv2)
    assert f"s3://{b}" in r.stdout
    r = s3cmd(cloud, "la", sigv2=sigv2)
    assert f"DIR  s3://{b}/dir/" in r.stdout, r.stdout
    r = s3cmd(cloud, "ls", "--recursive", f"s3://{b}", sigv2=sigv2)
    assert lines(r.stdout)[0].endswith(f"s3://{b}/dir/f \u00e9+.bin"), r.stdout

    out = tmp_path / "out.bin"
    s3cmd(cloud, "get", f"s3://{b}/dir/f \u00e9+.bin", str(out), sigv2=sigv2)
    assert sha256_file(out) == sha256_bytes(data)

    r = s3cmd(cloud, "info", f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    assert hashlib.md5(data).hexdigest() in r.stdout, r.stdout
    assert str(len(data)) in r.stdout
    assert "*anon*" not in r.stdout

    # Not public yet.
    url = f"{cloud.endpoint}/{b}/dir/f%20%C3%A9%2B.bin"
    status, _, _ = curl(url)
    assert status == 403
    r = s3cmd(cloud, "setacl", "--acl-public", f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    r = s3cmd(cloud, "info", f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    assert "*anon*: READ" in r.stdout, r.stdout
    status, _, body = curl(url)
    assert status == 200 and body == data
    s3cmd(cloud, "setacl", "--acl-private", f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    assert curl(url)[0] == 403

    # s3cmd signurl makes a SigV2 query-string URL.
    r = s3cmd(cloud, "signurl", f"s3://{b}/dir/f \u00e9+.bin", "+600", sigv2=sigv2)
    status, _, body = curl(r.stdout.strip())
    assert status == 200 and body == data, (r.stdout, body[:300])

    r = s3cmd(cloud, "info", f"s3://{b}", sigv2=sigv2)
    assert f"s3://{b}/" in r.stdout

    # Server-side copy.
    s3cmd(cloud, "cp", f"s3://{b}/dir/f \u00e9+.bin", f"s3://{b}/copy%.bin", sigv2=sigv2)
    assert s3.get_object(Bucket=b, Key="copy%.bin")["Body"].read() == data

    r = s3cmd(cloud, "rb", f"s3://{b}", sigv2=sigv2, check=False)
    assert r.returncode != 0  # not empty
    s3cmd(cloud, "del", f"s3://{b}/dir/f \u00e9+.bin", sigv2=sigv2)
    s3cmd(cloud, "del", f"s3://{b}/copy%.bin", sigv2=sigv2)
    assert list_keys(s3, b) == []
    r = s3cmd(cloud, "rb", f"s3://{b}", sigv2=sigv2)
    assert "removed" in r.stdout
    assert not bucket_exists(s3, b)


@SIG
def test_s3cmd_sync_tree(cloud, s3, bucket, tmp_path, sigv2):
    src = tmp_path / "src"
    want = make_tree(src)
    r = s3cmd(cloud, "sync", f"{src}/", f"s3://{bucket}/tree/", sigv2=sigv2)
    assert sorted(list_keys(s3, bucket)) == sorted(f"tree/{k}" for k in want), r.stdout
    for k, digest in want.items():
        assert sha256_bytes(s3.get_object(Bucket=bucket, Key=f"tree/{k}")["Body"].read()) == \
            digest, k
    r = s3cmd(cloud, "sync", f"{src}/", f"s3://{bucket}/tree/", sigv2=sigv2)
    assert "upload:" not in r.stdout, r.stdout

    dst = tmp_path / "dst"
    dst.mkdir()
    s3cmd(cloud, "sync", f"s3://{bucket}/tree/", f"{dst}/", sigv2=sigv2)
    assert tree_digest(dst) == want

    r = s3cmd(cloud, "del", "--recursive", "--force", f"s3://{bucket}/tree/", sigv2=sigv2)
    assert list_keys(s3, bucket) == []


# ---------------------------------------------------------------------------
# rclone
# ---------------------------------------------------------------------------

def test_rclone(cloud, s3, new_bucket_name, tmp_path):
    b = new_bucket_name
    rclone(cloud, "mkdir", f"euca:{b}")
    assert bucket_exists(s3, b)
    r = rclone(cloud, "lsd", "euca:")
    assert b in r.stdout.split(), r.stdout

    f = tmp_path / "one file.bin"
    data = os.urandom(150 * 1024 + 1)
    f.write_bytes(data)
    rclone(cloud, "copy", str(f), f"euca:{b}/dir")
    assert s3.get_object(Bucket=b, Key="dir/one file.bin")["Body"].read() == data

    r = rclone(cloud, "ls", f"euca:{b}")
    assert lines(r.stdout) == [f"{len(data):>9} dir/one file.bin"], r.stdout
    r = rclone(cloud, "lsf", f"euca:{b}")
    assert lines(r.stdout) == ["dir/"], r.stdout
    r = rclone(cloud, "lsf", "-R", "--files-only", f"euca:{b}")
    assert lines(r.stdout) == ["dir/one file.bin"], r.stdout
    r = rclone(cloud, "cat", f"euca:{b}/dir/one file.bin", text=False)
    assert r.stdout == data
    r = rclone(cloud, "md5sum", f"euca:{b}/dir")
    assert lines(r.stdout) == [f"{hashlib.md5(data).hexdigest()}  one file.bin"], r.stdout

    src = tmp_path / "src"
    want = make_tree(src)
    rclone(cloud, "sync", str(src), f"euca:{b}/tree")
    assert sorted(list_keys(s3, b, "tree/")) == sorted(f"tree/{k}" for k in want)
    rclone(cloud, "check", str(src), f"euca:{b}/tree")  # exit 0: no differences
    for k, digest in want.items():
        assert sha256_bytes(s3.get_object(Bucket=b, Key=f"tree/{k}")["Body"].read()) == digest, k

    dst = tmp_path / "dst"
    rclone(cloud, "copy", f"euca:{b}/tree", str(dst))
    assert tree_digest(dst) == want

    # Changes are detected by check and fixed by sync.
    (src / "with space.txt").write_bytes(b"changed")
    (src / "caf\u00e9.txt").unlink()
    r = rclone(cloud, "check", str(src), f"euca:{b}/tree", check=False)
    assert r.returncode != 0
    rclone(cloud, "sync", str(src), f"euca:{b}/tree")
    rclone(cloud, "check", str(src), f"euca:{b}/tree")
    assert "tree/caf\u00e9.txt" not in list_keys(s3, b)
    assert s3.get_object(Bucket=b, Key="tree/with space.txt")["Body"].read() == b"changed"

    rclone(cloud, "deletefile", f"euca:{b}/dir/one file.bin")
    assert "dir/one file.bin" not in list_keys(s3, b)
    rclone(cloud, "delete", f"euca:{b}")
    assert list_keys(s3, b) == []
    rclone(cloud, "rmdir", f"euca:{b}")
    assert not bucket_exists(s3, b)


def test_rclone_v2_auth(cloud, s3, bucket, tmp_path):
    """rclone with SigV2 request signing (--s3-v2-auth)."""
    f = tmp_path / "v2 file+%.bin"
    data = os.urandom(70000)
    f.write_bytes(data)
    rclone(cloud, "--s3-v2-auth", "copy", str(f), f"euca:{bucket}/v2")
    assert s3.get_object(Bucket=bucket, Key="v2/v2 file+%.bin")["Body"].read() == data
    r = rclone(cloud, "--s3-v2-auth", "lsf", "-R", "--files-only", f"euca:{bucket}")
    assert lines(r.stdout) == ["v2/v2 file+%.bin"], r.stdout
    r = rclone(cloud, "--s3-v2-auth", "cat", f"euca:{bucket}/v2/v2 file+%.bin", text=False)
    assert r.stdout == data
    rclone(cloud, "--s3-v2-auth", "deletefile", f"euca:{bucket}/v2/v2 file+%.bin")
    assert list_keys(s3, bucket) == []


# ---------------------------------------------------------------------------
# Large multipart round trips, one per client
# ---------------------------------------------------------------------------

def _check_roundtrip(s3, bucket, key, src, downloaded, part_size):
    h = s3.head_object(Bucket=bucket, Key=key)
    assert h["ContentLength"] == src.stat().st_size
    assert h["ETag"].strip('"') == multipart_etag_of_file(src, part_size), h["ETag"]
    assert sha256_file(downloaded) == sha256_file(src)


def test_large_multipart_boto3_200mib(s3, bucket, tmp_path):
    src = tmp_path / "big.bin"
    write_random_file(src, 200 * MiB)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                         max_concurrency=4)
    s3.upload_file(str(src), bucket, "big/boto3.bin", Config=cfg)
    out = tmp_path / "down.bin"
    s3.download_file(bucket, "big/boto3.bin", str(out), Config=cfg)
    _check_roundtrip(s3, bucket, "big/boto3.bin", src, out, 8 * MiB)


def test_large_multipart_awscli_v2_200mib(cloud, s3, bucket, tmp_path):
    src = tmp_path / "big.bin"
    write_random_file(src, 200 * MiB)
    aws(cloud, "v2", "s3", "cp", "--no-progress", str(src), f"s3://{bucket}/big/awsv2.bin")
    out = tmp_path / "down.bin"
    aws(cloud, "v2", "s3", "cp", "--no-progress", f"s3://{bucket}/big/awsv2.bin", str(out))
    _check_roundtrip(s3, bucket, "big/awsv2.bin", src, out, 8 * MiB)  # awscli default chunk


def test_multipart_awscli_v1_20mib(cloud, s3, bucket, tmp_path):
    src = tmp_path / "mid.bin"
    write_random_file(src, 20 * MiB + 12345)
    aws(cloud, "v1", "s3", "cp", "--no-progress", str(src), f"s3://{bucket}/mid/awsv1.bin")
    out = tmp_path / "down.bin"
    aws(cloud, "v1", "s3", "cp", "--no-progress", f"s3://{bucket}/mid/awsv1.bin", str(out))
    _check_roundtrip(s3, bucket, "mid/awsv1.bin", src, out, 8 * MiB)


@SIG
def test_multipart_s3cmd_20mib(cloud, s3, bucket, tmp_path, sigv2):
    src = tmp_path / "mid.bin"
    write_random_file(src, 20 * MiB + 999)
    s3cmd(cloud, "put", "--multipart-chunk-size-mb=5", str(src), f"s3://{bucket}/mid/s3cmd.bin",
          sigv2=sigv2)
    out = tmp_path / "down.bin"
    s3cmd(cloud, "get", f"s3://{bucket}/mid/s3cmd.bin", str(out), sigv2=sigv2)
    _check_roundtrip(s3, bucket, "mid/s3cmd.bin", src, out, 5 * MiB)


def test_multipart_rclone_20mib(cloud, s3, bucket, tmp_path):
    src = tmp_path / "mid.bin"
    write_random_file(src, 20 * MiB + 4321)
    rclone(cloud, "copyto", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M",
           str(src), f"euca:{bucket}/mid/rclone.bin")
    out = tmp_path / "down.bin"
    rclone(cloud, "copyto", f"euca:{bucket}/mid/rclone.bin", str(out))
    _check_roundtrip(s3, bucket, "mid/rclone.bin", src, out, 5 * MiB)
