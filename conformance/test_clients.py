"""S3 API conformance driven by boto3 (a real client) against a running `euca up`.

Buckets, objects, metadata, ranges, conditionals, listings, batch delete, copy,
multipart, checksums.  ACL/anonymous/presigned/addressing tests live in
test_clients_access.py; the CLI clients (awscli, s3cmd, rclone) in test_clients_cli.py.
"""
import base64
import datetime as dt
import gzip
import hashlib
import os
import time
import urllib.parse
import zlib

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from helpers_clients import (MiB, bucket_exists, list_keys, md5_b64, md5_hex, nuke_bucket,
                             sha256_bytes, unique_name)


def err(excinfo):
    """(code, http status) of a botocore ClientError."""
    e = excinfo.value
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def put(s3, bucket, key, body=b"", **kw):
    return s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


# ---------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------

def test_bucket_create_head_list_delete(s3):
    name = unique_name("bk")
    try:
        r = s3.create_bucket(Bucket=name)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
        s3.head_bucket(Bucket=name)
        lb = s3.list_buckets()
        names = [b["Name"] for b in lb["Buckets"]]
        assert name in names
        entry = next(b for b in lb["Buckets"] if b["Name"] == name)
        assert isinstance(entry["CreationDate"], dt.datetime)
        age = dt.datetime.now(dt.timezone.utc) - entry["CreationDate"]
        assert abs(age.total_seconds()) < 600, entry["CreationDate"]
        assert lb["Owner"]["ID"]
        # Non-empty bucket can't be deleted.
        put(s3, name, "x", b"1")
        with pytest.raises(ClientError) as ei:
            s3.delete_bucket(Bucket=name)
        assert err(ei) == ("BucketNotEmpty", 409)
        s3.delete_object(Bucket=name, Key="x")
        r = s3.delete_bucket(Bucket=name)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert not bucket_exists(s3, name)
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        nuke_bucket(s3, name)


def test_create_bucket_location_constraint_and_get_location(cloud, s3, bucket):
    # Default bucket: us-east-1 is reported as an empty LocationConstraint.
    loc = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    if cloud.region == "us-east-1":
        assert loc in (None, "", "us-east-1")
    else:
        assert loc == cloud.region
    name = unique_name("loc")
    try:
        try:
            s3.create_bucket(Bucket=name,
                             CreateBucketConfiguration={"LocationConstraint": cloud.region})
        except ClientError as e:
            # AWS itself refuses an explicit "us-east-1" constraint; accept that answer only
            # for us-east-1, and then the bucket must not exist.
            assert cloud.region == "us-east-1", e
            assert e.response["Error"]["Code"] == "InvalidLocationConstraint", e
            assert not bucket_exists(s3, name)
            return
        s3.head_bucket(Bucket=name)
        loc = s3.get_bucket_location(Bucket=name)["LocationConstraint"]
        if cloud.region == "us-east-1":
            assert loc in (None, "", "us-east-1")
        else:
            assert loc == cloud.region
    finally:
        nuke_bucket(s3, name)


def test_get_bucket_versioning_off(s3, bucket):
    r = s3.get_bucket_versioning(Bucket=bucket)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "Status" not in r
    assert "MFADelete" not in r


def test_list_object_versions_unversioned(s3, bucket):
    keys = ["a", "b/c", "d e"]
    for k in keys:
        put(s3, bucket, k, k.encode())
    put(s3, bucket, "a", b"overwritten")  # overwrite: still one version in an unversioned bucket
    r = s3.list_object_versions(Bucket=bucket)
    versions = r.get("Versions", [])
    assert sorted(v["Key"] for v in versions) == sorted(keys)
    for v in versions:
        assert v["VersionId"] == "null"
        assert v["IsLatest"] is True
    sizes = {v["Key"]: v["Size"] for v in versions}
    assert sizes == {"a": len(b"overwritten"), "b/c": 3, "d e": 3}
    assert not r.get("DeleteMarkers")
    # The "null" version is addressable (rclone HEADs ?versionId=null when it sees one).
    assert s3.get_object(Bucket=bucket, Key="a", VersionId="null")["Body"].read() == \
        b"overwritten"
    assert s3.head_object(Bucket=bucket, Key="b/c", VersionId="null")["ContentLength"] == 3


# ---------------------------------------------------------------------------
# Objects: put/get/head/delete with metadata and content headers
# ---------------------------------------------------------------------------

def test_object_put_get_head_delete_with_headers(s3, bucket):
    raw = os.urandom(2000)
    body = gzip.compress(raw)
    expires = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    r = s3.put_object(
        Bucket=bucket, Key="dir/obj.bin", Body=body,
        ContentType="application/x-walrus-test",
        CacheControl="max-age=3600, must-revalidate",
        ContentDisposition='attachment; filename="obj.bin"',
        ContentEncoding="gzip",
        ContentLanguage="de-CH",
        Expires=expires,
        Metadata={"Color": "blue", "x-thing": "a b c", "empty": ""},
    )
    assert r["ETag"] == f'"{md5_hex(body)}"'

    for resp in (s3.head_object(Bucket=bucket, Key="dir/obj.bin"),
                 s3.get_object(Bucket=bucket, Key="dir/obj.bin")):
        assert resp["ETag"] == f'"{md5_hex(body)}"'
        assert resp["ContentLength"] == len(body)
        assert resp["ContentType"] == "application/x-walrus-test"
        assert resp["CacheControl"] == "max-age=3600, must-revalidate"
        assert resp["ContentDisposition"] == 'attachment; filename="obj.bin"'
        assert resp["ContentEncoding"] == "gzip"
        assert resp["ContentLanguage"] == "de-CH"
        assert resp.get("Expires") == expires or \
            resp.get("ExpiresString") == "Tue, 06 May 2031 07:08:09 GMT", resp
        assert resp["Metadata"] == {"color": "blue", "x-thing": "a b c", "empty": ""}
        age = dt.datetime.now(dt.timezone.utc) - resp["LastModified"]
        assert -600 < age.total_seconds() < 600
        if "Body" in resp:
            got = resp["Body"].read()
            assert sha256_bytes(got) == sha256_bytes(body)
            assert gzip.decompress(got) == raw

    r = s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert err(ei)[1] == 404
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert err(ei) == ("NoSuchKey", 404)
    # Deleting a missing key is not an error.
    r = s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_object_overwrite_and_empty_object(s3, bucket):
    put(s3, bucket, "k", b"first version")
    put(s3, bucket, "k", b"2nd")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"2nd"
    r = put(s3, bucket, "empty", b"")
    assert r["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    g = s3.get_object(Bucket=bucket, Key="empty")
    assert g["ContentLength"] == 0 and g["Body"].read() == b""
    # Default content type when none is given.
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentType"] in (
        "binary/octet-stream", "application/octet-stream")


def test_expect_100_continue_empty_body_then_reuse_connection(cloud, bucket):
    """botocore sends `Expect: 100-continue` for file-like bodies, empty ones included, and
    then reuses the keep-alive connection. The next request on that connection must not
    stall (awscli `s3 sync` of a tree containing an empty file hit ~30 s stalls)."""
    import io
    c = cloud.boto3(max_pool_connections=1, read_timeout=5, connect_timeout=5)
    t0 = time.time()
    for i in range(3):
        c.put_object(Bucket=bucket, Key=f"empty{i}", Body=io.BytesIO(b""))
        c.put_object(Bucket=bucket, Key=f"full{i}", Body=io.BytesIO(b"data%d" % i))
        c.put_object(Bucket=bucket, Key=f"full{i}", Body=io.BytesIO(b"data%d" % i))
    assert time.time() - t0 < 10
    for i in range(3):
        assert c.get_object(Bucket=bucket, Key=f"empty{i}")["Body"].read() == b""
        assert c.get_object(Bucket=bucket, Key=f"full{i}")["Body"].read() == b"data%d" % i


def test_keys_with_special_characters_roundtrip(s3, bucket):
    keys = ["sp ace", "plus+sign", "pct%41", "q?uery", "hash#tag", "amp&er=eq",
            "caf\u00e9/\u65e5\u672c\u8a9e", "tab\tkey", "semi;colon", "star*", "\U0001d11e",
            "a//double", "trailing/", "'quote\"", "back\\slash", "<angle>"]
    for i, k in enumerate(keys):
        put(s3, bucket, k, f"body-{i}".encode())
    assert sorted(list_keys(s3, bucket)) == sorted(keys)
    for i, k in enumerate(keys):
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == f"body-{i}".encode(), k


def test_dot_segment_keys_are_literal(s3, bucket):
    """Keys containing '.'/'..' path segments must not be normalized."""
    keys = {"a/../b": b"1", "../x": b"2", "a/./c": b"3", "./d": b"4", "b": b"5", "x": b"6",
            "a/c": b"7"}
    for k, v in keys.items():
        put(s3, bucket, k, v)
    assert sorted(list_keys(s3, bucket)) == sorted(keys)
    for k, v in keys.items():
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == v, k
        assert s3.head_object(Bucket=bucket, Key=k)["ContentLength"] == len(v)
    s3.delete_object(Bucket=bucket, Key="a/../b")
    assert sorted(list_keys(s3, bucket)) == sorted(set(keys) - {"a/../b"})
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == b"5"


# ---------------------------------------------------------------------------
# Range requests
# ---------------------------------------------------------------------------

def test_range_gets(s3, bucket):
    data = os.urandom(1000)
    put(s3, bucket, "r", data)

    def rng(spec):
        r = s3.get_object(Bucket=bucket, Key="r", Range=spec)
        return r["ResponseMetadata"]["HTTPStatusCode"], r.get("ContentRange"), \
            r["ContentLength"], r["Body"].read()

    assert rng("bytes=0-9") == (206, "bytes 0-9/1000", 10, data[0:10])
    assert rng("bytes=10-19") == (206, "bytes 10-19/1000", 10, data[10:20])
    assert rng("bytes=999-999") == (206, "bytes 999-999/1000", 1, data[999:])
    assert rng("bytes=990-") == (206, "bytes 990-999/1000", 10, data[990:])
    assert rng("bytes=0-") == (206, "bytes 0-999/1000", 1000, data)
    assert rng("bytes=-7") == (206, "bytes 993-999/1000", 7, data[-7:])
    assert rng("bytes=-5000") == (206, "bytes 0-999/1000", 1000, data)
    assert rng("bytes=500-5000") == (206, "bytes 500-999/1000", 500, data[500:])
    h = s3.head_object(Bucket=bucket, Key="r", Range="bytes=100-199")
    assert h["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert h["ContentLength"] == 100 and h["ContentRange"] == "bytes 100-199/1000"
    assert h.get("AcceptRanges") == "bytes"

    for bad in ("bytes=1000-", "bytes=2000-3000"):
        with pytest.raises(ClientError) as ei:
            s3.get_object(Bucket=bucket, Key="r", Range=bad)
        assert err(ei) == ("InvalidRange", 416), bad


# ---------------------------------------------------------------------------
# Conditional requests
# ---------------------------------------------------------------------------

def test_conditional_get_and_head(s3, bucket):
    put(s3, bucket, "c", b"conditional body")
    h = s3.head_object(Bucket=bucket, Key="c")
    etag, lm = h["ETag"], h["LastModified"]
    past = lm - dt.timedelta(days=1)
    future = lm + dt.timedelta(days=1)
    time.sleep(2.1)
    after = lm + dt.timedelta(seconds=1)  # later than LastModified, but not in the future

    def get(**kw):
        r = s3.get_object(Bucket=bucket, Key="c", **kw)
        return r["ResponseMetadata"]["HTTPStatusCode"], r["Body"].read()

    ok = (200, b"conditional body")
    assert get(IfMatch=etag) == ok
    assert get(IfNoneMatch='"0123456789abcdef0123456789abcdef"') == ok
    assert get(IfModifiedSince=past) == ok
    assert get(IfUnmodifiedSince=future) == ok
    assert get(IfUnmodifiedSince=lm) == ok

    def status(fn, **kw):
        try:
            r = fn(Bucket=bucket, Key="c", **kw)
            return r["ResponseMetadata"]["HTTPStatusCode"], None
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]

    for kw in ({"IfMatch": '"0123456789abcdef0123456789abcdef"'},
               {"IfUnmodifiedSince": past}):
        assert status(s3.get_object, **kw) == (412, "PreconditionFailed"), kw
        assert status(s3.head_object, **kw)[0] == 412, kw

    for kw in ({"IfNoneMatch": etag}, {"IfModifiedSince": after},
               {"IfModifiedSince": lm}):
        assert status(s3.get_object, **kw)[0] == 304, kw
        assert status(s3.head_object, **kw)[0] == 304, kw

    # RFC 7232 precedence (as documented for S3): If-Match true + If-Unmodified-Since
    # false -> 200; If-None-Match false + If-Modified-Since true -> 304.
    assert get(IfMatch=etag, IfUnmodifiedSince=past) == ok
    assert status(s3.get_object, IfNoneMatch=etag, IfModifiedSince=past)[0] == 304


def test_response_header_overrides(s3, bucket):
    put(s3, bucket, "o", b"override me", ContentType="text/plain")
    r = s3.get_object(
        Bucket=bucket, Key="o",
        ResponseContentType="application/x-overridden",
        ResponseContentDisposition='attachment; filename="x.txt"',
        ResponseCacheControl="no-cache",
        ResponseContentLanguage="fr",
        ResponseContentEncoding="identity",
        ResponseExpires=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )
    assert r["Body"].read() == b"override me"
    assert r["ContentType"] == "application/x-overridden"
    assert r["ContentDisposition"] == 'attachment; filename="x.txt"'
    assert r["CacheControl"] == "no-cache"
    assert r["ContentLanguage"] == "fr"
    assert r["ContentEncoding"] == "identity"
    assert r.get("ExpiresString") == "Wed, 02 Jan 2030 03:04:05 GMT" or \
        r.get("Expires") == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), r
    # The stored object is unchanged.
    assert s3.head_object(Bucket=bucket, Key="o")["ContentType"] == "text/plain"


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------

LIST_KEYS = ["a/1", "a/2", "a/b/3", "b/1", "b/2", "c", "d", "e/f/g", "e/h"]


@pytest.fixture()
def listed_bucket(s3, bucket):
    for k in LIST_KEYS:
        put(s3, bucket, k, k.encode())
    return bucket


def test_list_objects_v2_prefix_delimiter(s3, listed_bucket):
    b = listed_bucket
    r = s3.list_objects_v2(Bucket=b)
    assert [o["Key"] for o in r["Contents"]] == LIST_KEYS
    assert r["KeyCount"] == len(LIST_KEYS) and r["IsTruncated"] is False
    for o in r["Contents"]:
        assert o["Size"] == len(o["Key"])
        assert o["ETag"] == f'"{md5_hex(o["Key"].encode())}"'
        assert o.get("StorageClass", "STANDARD") == "STANDARD"

    r = s3.list_objects_v2(Bucket=b, Prefix="a/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2", "a/b/3"]
    assert r["Prefix"] == "a/"

    r = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["c", "d"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/", "e/"]
    assert r["KeyCount"] == 5 and r["Delimiter"] == "/"

    r = s3.list_objects_v2(Bucket=b, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]

    r = s3.list_objects_v2(Bucket=b, Prefix="e/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["e/h"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["e/f/"]

    r = s3.list_objects_v2(Bucket=b, Prefix="zzz")
    assert "Contents" not in r and r["KeyCount"] == 0

    # A non-'/' delimiter.
    r = s3.list_objects_v2(Bucket=b, Delimiter="2")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a/2", "b/2"]
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/b/3", "b/1", "c", "d", "e/f/g", "e/h"]


def test_list_objects_v2_pagination_start_after(s3, listed_bucket):
    b = listed_bucket
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=b, MaxKeys=2, **kw)
        pages += 1
        assert r["MaxKeys"] == 2 and r["KeyCount"] == len(r.get("Contents", []))
        assert r["KeyCount"] <= 2
        seen += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            assert "NextContinuationToken" not in r
            break
        token = r["NextContinuationToken"]
        assert pages < 20
    assert seen == LIST_KEYS
    assert pages == 5

    # With a delimiter, common prefixes count toward max-keys.
    entries, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=b, MaxKeys=2, Delimiter="/", **kw)
        page = [o["Key"] for o in r.get("Contents", [])] + \
               [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        assert len(page) <= 2 and r["KeyCount"] == len(page)
        entries += sorted(page)
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert entries == ["a/", "b/", "c", "d", "e/"]

    r = s3.list_objects_v2(Bucket=b, StartAfter="a/b/3")
    assert [o["Key"] for o in r["Contents"]] == LIST_KEYS[3:]
    assert r["StartAfter"] == "a/b/3"
    r = s3.list_objects_v2(Bucket=b, StartAfter="b")  # not itself a key
    assert [o["Key"] for o in r["Contents"]] == LIST_KEYS[3:]
    r = s3.list_objects_v2(Bucket=b, StartAfter="c", MaxKeys=1)
    assert [o["Key"] for o in r["Contents"]] == ["d"] and r["IsTruncated"] is True
    r2 = s3.list_objects_v2(Bucket=b, StartAfter="c", MaxKeys=1,
                            ContinuationToken=r["NextContinuationToken"])
    assert [o["Key"] for o in r2["Contents"]] == ["e/f/g"]
    r = s3.list_objects_v2(Bucket=b, StartAfter="zzz")
    assert "Contents" not in r

    # The boto3 paginator agrees.
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=b, PaginationConfig={"PageSize": 3}):
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert keys == LIST_KEYS


def test_list_objects_v1_markers(s3, listed_bucket):
    b = listed_bucket
    r = s3.list_objects(Bucket=b)
    assert [o["Key"] for o in r["Contents"]] == LIST_KEYS
    assert r["IsTruncated"] is False
    # v1 always returns Owner.
    owner = s3.list_buckets()["Owner"]["ID"]
    assert all(o["Owner"]["ID"] == owner for o in r["Contents"])

    seen, marker = [], None
    for _ in range(20):
        r = s3.list_objects(Bucket=b, MaxKeys=2, **({"Marker": marker} if marker else {}))
        got = [o["Key"] for o in r.get("Contents", [])]
        assert len(got) <= 2
        seen += got
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or got[-1]
    assert seen == LIST_KEYS

    r = s3.list_objects(Bucket=b, Marker="b/1")
    assert [o["Key"] for o in r["Contents"]] == LIST_KEYS[4:]
    assert r["Marker"] == "b/1"

    # With a delimiter, NextMarker is returned when truncated.
    entries, marker = [], None
    for _ in range(20):
        r = s3.list_objects(Bucket=b, MaxKeys=2, Delimiter="/",
                            **({"Marker": marker} if marker else {}))
        page = [o["Key"] for o in r.get("Contents", [])] + \
               [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        assert len(page) <= 2
        entries += sorted(page)
        if not r["IsTruncated"]:
            break
        assert r.get("NextMarker"), r
        marker = r["NextMarker"]
    assert entries == ["a/", "b/", "c", "d", "e/"]

    r = s3.list_objects(Bucket=b, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]


def test_list_fetch_owner(s3, listed_bucket):
    owner = s3.list_buckets()["Owner"]["ID"]
    r = s3.list_objects_v2(Bucket=listed_bucket)
    assert all("Owner" not in o for o in r["Contents"])
    r = s3.list_objects_v2(Bucket=listed_bucket, FetchOwner=True)
    assert all(o["Owner"]["ID"] == owner for o in r["Contents"])


ENC_KEYS = ["sp ace/\u00e9+x%y", "\u65e5\u672c/\u8a9e", "a&b=c", "plain", "tab\there", "x+y"]


def test_list_encoding_type_url(s3, bucket):
    for k in ENC_KEYS:
        put(s3, bucket, k, b"x")
    # Explicit EncodingType: botocore hands back the raw (encoded) values.
    for call in ("list_objects_v2", "list_objects"):
        r = getattr(s3, call)(Bucket=bucket, EncodingType="url")
        assert r.get("EncodingType") == "url"
        raw = [o["Key"] for o in r["Contents"]]
        assert sorted(urllib.parse.unquote_plus(k) for k in raw) == sorted(ENC_KEYS), raw
        for k in raw:
            assert k.isascii() and " " not in k and "\t" not in k, raw
        enc = dict(zip([urllib.parse.unquote_plus(k) for k in raw], raw))
        assert "+" not in enc["x+y"], enc  # '+' must be percent-encoded
        r = getattr(s3, call)(Bucket=bucket, EncodingType="url", Delimiter="/")
        prefixes = [p["Prefix"] for p in r["CommonPrefixes"]]
        assert sorted(urllib.parse.unquote_plus(p) for p in prefixes) == \
            sorted(["sp ace/", "\u65e5\u672c/"]), prefixes
        assert all(p.isascii() and " " not in p for p in prefixes)
    # Default: botocore asks for url encoding itself and decodes; keys come back intact.
    assert sorted(list_keys(s3, bucket)) == sorted(ENC_KEYS)
    r = s3.list_objects_v2(Bucket=bucket, Prefix="sp ace/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["sp ace/\u00e9+x%y"]


def test_list_strict_utf8_byte_order(s3, bucket):
    keys = ["A", "Z", "a", "z", "~", "a-b", "a/b", "a0", "\u00e9", "\u00ff", "\u0100",
            "\u65e5\u672c", "\uff61", "\U0001d11e", "\U0001f600x", "ab", "a b"]
    for k in keys:
        put(s3, bucket, k, b"o")
    expected = sorted(keys, key=lambda k: k.encode("utf-8"))
    # U+FF61 (EF BD A1) sorts before U+1D11E (F0 9D 84 9E) in UTF-8 (not in UTF-16).
    assert expected.index("\uff61") < expected.index("\U0001d11e")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == expected
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == expected
    # Same order across small pages (continuation tokens/markers past non-ASCII keys).
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=bucket, MaxKeys=3, **kw)
        seen += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert seen == expected
    seen, marker = [], None
    while True:
        r = s3.list_objects(Bucket=bucket, MaxKeys=4, **({"Marker": marker} if marker else {}))
        got = [o["Key"] for o in r.get("Contents", [])]
        seen += got
        if not r["IsTruncated"]:
            break
        marker = got[-1]
    assert seen == expected
    r = s3.list_objects_v2(Bucket=bucket, StartAfter="\u00ff")
    assert [o["Key"] for o in r["Contents"]] == expected[expected.index("\u00ff") + 1:]


# ---------------------------------------------------------------------------
# DeleteObjects
# ---------------------------------------------------------------------------

def test_delete_objects_batch_and_quiet(s3, bucket):
    keys = [f"k{i}" for i in range(6)] + ["sp ace", "\u00e9\u65e5"]
    for k in keys:
        put(s3, bucket, k, b"d")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "k0"}, {"Key": "k1"}, {"Key": "sp ace"}, {"Key": "never-existed"}]})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sorted(d["Key"] for d in r.get("Deleted", [])) == \
        sorted(["k0", "k1", "sp ace", "never-existed"])
    assert not r.get("Errors")
    assert sorted(list_keys(s3, bucket)) == sorted(["k2", "k3", "k4", "k5", "\u00e9\u65e5"])

    r = s3.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": [
        {"Key": "k2"}, {"Key": "k3"}, {"Key": "\u00e9\u65e5"}]})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert not r.get("Deleted")
    assert not r.get("Errors")
    assert sorted(list_keys(s3, bucket)) == ["k4", "k5"]

    # Many keys at once.
    many = [f"m/{i:04d}" for i in range(150)]
    for k in many:
        put(s3, bucket, k, b"")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in many]})
    assert len(r["Deleted"]) == 150
    assert sorted(list_keys(s3, bucket)) == ["k4", "k5"]


# ---------------------------------------------------------------------------
# CopyObject
# ---------------------------------------------------------------------------

def test_copy_object_metadata_directives(s3, bucket):
    body = os.urandom(4321)
    put(s3, bucket, "src key \u00e9", body, ContentType="text/x-src",
        Metadata={"origin": "src"}, CacheControl="no-store")
    src = {"Bucket": bucket, "Key": "src key \u00e9"}

    r = s3.copy_object(Bucket=bucket, Key="copy1", CopySource=src)
    assert r["CopyObjectResult"]["ETag"] == f'"{md5_hex(body)}"'
    assert isinstance(r["CopyObjectResult"]["LastModified"], dt.datetime)
    h = s3.head_object(Bucket=bucket, Key="copy1")
    assert h["ContentType"] == "text/x-src" and h["Metadata"] == {"origin": "src"}
    assert h["CacheControl"] == "no-store"
    assert sha256_bytes(s3.get_object(Bucket=bucket, Key="copy1")["Body"].read()) == \
        sha256_bytes(body)

    r = s3.copy_object(Bucket=bucket, Key="copy2", CopySource=src, MetadataDirective="COPY")
    h = s3.head_object(Bucket=bucket, Key="copy2")
    assert h["ContentType"] == "text/x-src" and h["Metadata"] == {"origin": "src"}

    r = s3.copy_object(Bucket=bucket, Key="copy3", CopySource=src,
                       MetadataDirective="REPLACE", ContentType="application/x-new",
                       Metadata={"new": "yes"})
    assert r["CopyObjectResult"]["ETag"] == f'"{md5_hex(body)}"'
    h = s3.head_object(Bucket=bucket, Key="copy3")
    assert h["ContentType"] == "application/x-new" and h["Metadata"] == {"new": "yes"}
    assert "CacheControl" not in h
    assert s3.get_object(Bucket=bucket, Key="copy3")["Body"].read() == body

    # Copy onto itself with REPLACE updates metadata in place.
    s3.copy_object(Bucket=bucket, Key="copy1", CopySource={"Bucket": bucket, "Key": "copy1"},
                   MetadataDirective="REPLACE", Metadata={"v": "2"}, ContentType="text/v2")
    h = s3.head_object(Bucket=bucket, Key="copy1")
    assert h["Metadata"] == {"v": "2"} and h["ContentType"] == "text/v2"
    assert s3.get_object(Bucket=bucket, Key="copy1")["Body"].read() == body

    # Source is untouched.
    h = s3.head_object(Bucket=bucket, Key="src key \u00e9")
    assert h["Metadata"] == {"origin": "src"}

    # Cross-bucket copy.
    other = unique_name("cp")
    try:
        s3.create_bucket(Bucket=other)
        s3.copy_object(Bucket=other, Key="x/y", CopySource=src)
        assert s3.get_object(Bucket=other, Key="x/y")["Body"].read() == body
    finally:
        nuke_bucket(s3, other)

    with pytest.raises(ClientError) as ei:
        s3.copy_object(Bucket=bucket, Key="c4", CopySource={"Bucket": bucket, "Key": "nope"})
    assert err(ei) == ("NoSuchKey", 404)


# ---------------------------------------------------------------------------
# Multipart
# ---------------------------------------------------------------------------

def test_multipart_upload_complete(s3, bucket):
    key = "mp/obj \u00e9"
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 123)]
    c = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-mp",
                                   Metadata={"m": "p"})
    uid = c["UploadId"]
    assert uid and c["Key"] == key and c["Bucket"] == bucket

    ups = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in ups.get("Uploads", [])] == [(key, uid)]

    etags = []
    for i, d in enumerate(parts_data, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=d)
        assert r["ETag"] == f'"{md5_hex(d)}"'
        etags.append(r["ETag"])
    # Re-uploading a part replaces it.
    r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=3, Body=parts_data[2])
    assert r["ETag"] == etags[2]

    lp = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]] == \
        [(i, etags[i - 1], len(parts_data[i - 1])) for i in (1, 2, 3)]
    lp = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid, MaxParts=2)
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2] and lp["IsTruncated"] is True
    lp2 = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid,
                        PartNumberMarker=lp["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in lp2["Parts"]] == [3]

    # Not visible before completion.
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key=key)
    assert err(ei)[1] == 404

    r = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    assert r["ETag"] == f'"{expected}-3"'
    assert r["Key"] == key and r["Bucket"] == bucket

    h = s3.head_object(Bucket=bucket, Key=key)
    assert h["ETag"] == f'"{expected}-3"'
    assert h["ContentLength"] == sum(map(len, parts_data))
    assert h["ContentType"] == "application/x-mp" and h["Metadata"] == {"m": "p"}
    whole = b"".join(parts_data)
    assert sha256_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == \
        sha256_bytes(whole)
    # Range across a part boundary.
    g = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert g["Body"].read() == whole[5 * MiB - 10:5 * MiB + 10]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert [o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == \
        [f'"{expected}-3"']


def test_multipart_sparse_part_numbers_and_upload_listing(s3, bucket):
    # Part numbers need not be contiguous; only the listed parts make the object.
    key = "sparse"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p2, p5, p9 = os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=5, Body=p5)
    e9 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=9, Body=p9)["ETag"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key=key,
                                                   UploadId=uid)["Parts"]] == [2, 5, 9]
    r = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 9, "ETag": e9}]})
    expected = hashlib.md5(hashlib.md5(p2).digest() + hashlib.md5(p9).digest()).hexdigest()
    assert r["ETag"] == f'"{expected}-2"'
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sha256_bytes(got) == sha256_bytes(p2 + p9)

    # ListMultipartUploads: prefix and pagination by key/upload-id markers.
    uploads = {}
    for k in ("u/a", "u/b", "u/b", "u/c", "v/d"):
        uploads.setdefault(k, []).append(
            s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"])
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="u/")
    assert sorted((u["Key"], u["UploadId"]) for u in r["Uploads"]) == \
        sorted((k, i) for k, ids in uploads.items() if k.startswith("u/") for i in ids)
    assert [u["Key"] for u in r["Uploads"]] == ["u/a", "u/b", "u/b", "u/c"]
    seen, km, um = [], None, None
    for _ in range(10):
        kw = {"KeyMarker": km, "UploadIdMarker": um} if km else {}
        r = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **kw)
        seen += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
        assert len(r.get("Uploads", [])) <= 2
        if not r["IsTruncated"]:
            break
        km, um = r["NextKeyMarker"], r["NextUploadIdMarker"]
    assert sorted(seen) == sorted((k, i) for k, ids in uploads.items() for i in ids)
    assert len(seen) == 5
    r = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["u/", "v/"], r
    assert not r.get("Uploads"), r
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="u/", Delimiter="/")
    assert len(r.get("Uploads", [])) == 4 and not r.get("CommonPrefixes"), r
    for k, ids in uploads.items():
        for i in ids:
            s3.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=i)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_multipart_abort(s3, bucket):
    key = "aborted"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    uid2 = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    assert uid2 != uid
    ups = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted(u["UploadId"] for u in ups) == sorted([uid, uid2])

    r = s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call, kw in ((s3.list_parts, {}),
                     (s3.upload_part, {"PartNumber": 2, "Body": b"y"}),
                     (s3.complete_multipart_upload, {"MultipartUpload": {"Parts": [
                         {"PartNumber": 1, "ETag": f'"{md5_hex(b"x" * 1000)}"'}]}}),
                     (s3.abort_multipart_upload, {})):
        with pytest.raises(ClientError) as ei:
            call(Bucket=bucket, Key=key, UploadId=uid, **kw)
        assert err(ei) == ("NoSuchUpload", 404), call
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid2]
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid2)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key=key)
    assert err(ei)[1] == 404


def test_upload_part_copy_managed_and_explicit(s3, bucket):
    src = os.urandom(12 * MiB + 17)
    put(s3, bucket, "big src", src)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                         max_concurrency=2)
    s3.copy({"Bucket": bucket, "Key": "big src"}, bucket, "big copy", Config=cfg)
    h = s3.head_object(Bucket=bucket, Key="big copy")
    assert h["ContentLength"] == len(src)
    assert h["ETag"].strip('"').endswith("-3"), h["ETag"]  # was really a multipart copy
    assert sha256_bytes(s3.get_object(Bucket=bucket, Key="big copy")["Body"].read()) == \
        sha256_bytes(src)

    # Explicit UploadPartCopy with ranges, mixed with a normal part.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mixed")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="mixed", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "big src"},
                             CopySourceRange=f"bytes=100-{100 + 5 * MiB - 1}")
    assert r1["CopyPartResult"]["ETag"] == f'"{md5_hex(src[100:100 + 5 * MiB])}"'
    mid = os.urandom(5 * MiB)
    r2 = s3.upload_part(Bucket=bucket, Key="mixed", UploadId=uid, PartNumber=2, Body=mid)
    r3 = s3.upload_part_copy(Bucket=bucket, Key="mixed", UploadId=uid, PartNumber=3,
                             CopySource={"Bucket": bucket, "Key": "big src"},
                             CopySourceRange="bytes=0-9")
    s3.complete_multipart_upload(Bucket=bucket, Key="mixed", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": r2["ETag"]},
                  {"PartNumber": 3, "ETag": r3["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket=bucket, Key="mixed")["Body"].read()
    assert sha256_bytes(got) == sha256_bytes(src[100:100 + 5 * MiB] + mid + src[0:10])


def test_managed_upload_download_fileobj(s3, bucket, tmp_path):
    from helpers_clients import write_random_file, sha256_file, multipart_etag_of_file
    p = tmp_path / "f.bin"
    digest = write_random_file(p, 11 * MiB + 5)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(p), bucket, "managed", Config=cfg)
    h = s3.head_object(Bucket=bucket, Key="managed")
    assert h["ETag"] == f'"{multipart_etag_of_file(p, 5 * MiB)}"'
    out = tmp_path / "out.bin"
    s3.download_file(bucket, "managed", str(out), Config=cfg)  # ranged GETs
    assert sha256_file(out) == digest


# ---------------------------------------------------------------------------
# Checksums and Content-MD5
# ---------------------------------------------------------------------------

def crc32_b64(b):
    return base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode()


def sha256_b64(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


@pytest.mark.parametrize("algo", ["CRC32", "SHA256"])
def test_flexible_checksums(s3, bucket, algo):
    body = os.urandom(70000)
    want = crc32_b64(body) if algo == "CRC32" else sha256_b64(body)
    field = "Checksum" + algo
    r = s3.put_object(Bucket=bucket, Key="ck", Body=body, ChecksumAlgorithm=algo)
    assert r.get(field) == want, r
    g = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert g.get(field) == want, {k: v for k, v in g.items() if k != "Body"}
    assert g["Body"].read() == body
    h = s3.head_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert h.get(field) == want


def test_content_md5(s3, bucket):
    body = b"the real body"
    r = s3.put_object(Bucket=bucket, Key="good", Body=body, ContentMD5=md5_b64(body))
    assert r["ETag"] == f'"{md5_hex(body)}"'
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ContentMD5=md5_b64(b"other body"))
    assert err(ei) == ("BadDigest", 400)
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="bad")
    assert err(ei)[1] == 404
    assert list_keys(s3, bucket) == ["good"]
    # A bad digest must not clobber an existing object either.
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="good", Body=b"new", ContentMD5=md5_b64(b"x"))
    assert err(ei) == ("BadDigest", 400)
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == body
