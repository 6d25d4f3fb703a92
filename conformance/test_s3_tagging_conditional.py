"""Conditional writes (If-None-Match: * / If-Match on PutObject, CopyObject and
CompleteMultipartUpload) and tagging (objects and buckets), driven with boto3 and the
awscli as a user would, plus what an attacker or a careless client sends: racing
writers, a write whose condition fails before its body is sent, over-limit tag sets,
a stranger's account, a forged signature.
"""
import json
import os
import socket
import threading
import time

import pytest
from botocore.exceptions import ClientError

from helpers_clients import aws
from helpers_raw import (obj_path, parse_raw_response, raw_exchange, send, serialize,
                         sign_v4)

MiB = 1024 * 1024


def err(fn, *a, **kw):
    """Calls a boto3 operation that must fail; returns (HTTP status, error code)."""
    with pytest.raises(ClientError) as ei:
        fn(*a, **kw)
    r = ei.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def body_of(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


_acct_n = [0]


@pytest.fixture()
def stranger(cloud):
    """A boto3 client of another account (authenticated, owns nothing here)."""
    _acct_n[0] += 1
    acct = cloud.new_account(f"tag{os.getpid()}x{_acct_n[0]}x{int(time.time() * 1000) % 100000}")
    return cloud.boto3(access_key=acct["AWS_ACCESS_KEY_ID"],
                       secret_key=acct["AWS_SECRET_ACCESS_KEY"])


# -- conditional writes ----------------------------------------------------------------

def test_put_if_none_match_creates_only_once(s3, bucket):
    r = s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert err(s3.put_object, Bucket=bucket, Key="k", Body=b"second",
               IfNoneMatch="*") == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "k") == b"first"
    # Without the condition it is an ordinary overwrite.
    s3.put_object(Bucket=bucket, Key="k", Body=b"third")
    assert body_of(s3, bucket, "k") == b"third"


def test_if_none_match_racing_writers_exactly_one_wins(cloud, bucket):
    n = 16
    clients = [cloud.boto3() for _ in range(n)]
    bodies = [f"writer {i} ".encode() * (1000 + i) for i in range(n)]
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

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [i for i, r in enumerate(results) if r[0] == 200]
    losers = [r for r in results if r[0] != 200]
    assert len(winners) == 1, results
    assert losers == [(412, "PreconditionFailed")] * (n - 1), results
    w = winners[0]
    got = clients[0].get_object(Bucket=bucket, Key="race")
    assert got["Body"].read() == bodies[w]
    assert got["ETag"] == results[w][1]


def test_put_if_match(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    assert err(s3.put_object, Bucket=bucket, Key="k", Body=b"bad",
               IfMatch='"0123456789abcdef0123456789abcdef"') == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "k") == b"v1"
    etag2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)["ETag"]
    assert body_of(s3, bucket, "k") == b"v2"
    # The old ETag no longer matches: a compare-and-swap loser.
    assert err(s3.put_object, Bucket=bucket, Key="k", Body=b"v3",
               IfMatch=etag) == (412, "PreconditionFailed")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v3", IfMatch=etag2)
    assert body_of(s3, bucket, "k") == b"v3"
    # As in S3: If-Match on a key with no object is 404 NoSuchKey, and nothing is made.
    assert err(s3.put_object, Bucket=bucket, Key="absent", Body=b"x",
               IfMatch=etag2) == (404, "NoSuchKey")
    assert err(s3.head_object, Bucket=bucket, Key="absent")[0] == 404


def test_if_none_match_other_than_star_is_not_implemented(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    assert err(s3.put_object, Bucket=bucket, Key="k", Body=b"v2",
               IfNoneMatch=etag) == (501, "NotImplemented")
    assert err(s3.put_object, Bucket=bucket, Key="new", Body=b"v2",
               IfNoneMatch=etag) == (501, "NotImplemented")
    assert body_of(s3, bucket, "k") == b"v1"
    assert err(s3.head_object, Bucket=bucket, Key="new")[0] == 404


def test_refused_write_is_answered_before_its_body(cloud, s3, bucket):
    """A 1 GiB PUT whose If-None-Match already fails gets its 412 from the headers
    alone: the client never has to send the body."""
    s3.put_object(Bucket=bucket, Key="big", Body=b"exists")
    req = sign_v4(cloud, "PUT", obj_path(bucket, "big"),
                  headers={"If-None-Match": "*", "Content-Length": str(1024 * MiB)},
                  payload_hash="UNSIGNED-PAYLOAD")
    raw, e = raw_exchange(cloud, serialize(cloud, req.copy(body=b"")), timeout=20,
                          read_until_close=False)
    resp = parse_raw_response(raw)
    assert resp is not None, (raw, e)
    assert (resp.status, resp.code) == (412, "PreconditionFailed"), resp
    assert body_of(s3, bucket, "big") == b"exists"


class SlowPut:
    """A signed PUT whose body is sent in two halves, so that another request can
    change the key after the write's condition was first checked (at its headers) and
    before it commits (after its body)."""

    def __init__(self, cloud, bucket, key, body, headers):
        self.body = body
        req = sign_v4(cloud, "PUT", obj_path(bucket, key),
                      headers=dict(headers, **{"Content-Length": str(len(body))}),
                      payload_hash="UNSIGNED-PAYLOAD")
        self.sock = socket.create_connection(("127.0.0.1", cloud.port), timeout=30)
        self.sock.sendall(serialize(cloud, req.copy(body=b"")) + body[: len(body) // 2])

    def finish(self):
        try:
            self.sock.sendall(self.body[len(self.body) // 2:])
            out = b""
            while True:
                resp = parse_raw_response(out)
                if resp is not None and resp.header("content-length") is not None \
                        and len(resp.body) >= int(resp.header("content-length")):
                    return resp
                chunk = self.sock.recv(65536)
                if not chunk:
                    return parse_raw_response(out)
                out += chunk
        finally:
            self.sock.close()


def test_conditions_are_decided_at_commit(cloud, s3, bucket):
    """The authoritative check is the commit's: a write whose condition held when it
    started, but not when its body had arrived, is refused and stores nothing."""
    # If-None-Match: another writer created the key meanwhile; the first to finish wins.
    slow = SlowPut(cloud, bucket, "k", b"slow writer " * 1000, {"If-None-Match": "*"})
    time.sleep(0.3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"fast writer")
    r = slow.finish()
    assert (r.status, r.code) == (412, "PreconditionFailed"), r
    assert body_of(s3, bucket, "k") == b"fast writer"

    # If-Match: the object changed meanwhile -> 412; it was deleted meanwhile -> 409.
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    slow = SlowPut(cloud, bucket, "k", b"compare and swap " * 1000, {"If-Match": etag})
    time.sleep(0.3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"changed")
    r = slow.finish()
    assert (r.status, r.code) == (412, "PreconditionFailed"), r
    assert body_of(s3, bucket, "k") == b"changed"

    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    slow = SlowPut(cloud, bucket, "k", b"compare and swap " * 1000, {"If-Match": etag})
    time.sleep(0.3)
    s3.delete_object(Bucket=bucket, Key="k")
    r = slow.finish()
    assert (r.status, r.code) == (409, "ConditionalRequestConflict"), r
    assert err(s3.head_object, Bucket=bucket, Key="k")[0] == 404

    # The positive control: undisturbed, the same slow conditional write succeeds.
    slow = SlowPut(cloud, bucket, "k", b"alone " * 1000, {"If-None-Match": "*"})
    r = slow.finish()
    assert r.status == 200, r
    assert body_of(s3, bucket, "k") == b"alone " * 1000


def test_copy_destination_conditions(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    dst_etag = s3.put_object(Bucket=bucket, Key="dst", Body=b"dest")["ETag"]
    src = {"Bucket": bucket, "Key": "src"}
    assert err(s3.copy_object, Bucket=bucket, Key="dst", CopySource=src,
               IfNoneMatch="*") == (412, "PreconditionFailed")
    assert err(s3.copy_object, Bucket=bucket, Key="dst", CopySource=src,
               IfMatch='"0123456789abcdef0123456789abcdef"') == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "dst") == b"dest"
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=src, IfMatch=dst_etag)
    assert body_of(s3, bucket, "dst") == b"source"
    s3.copy_object(Bucket=bucket, Key="fresh", CopySource=src, IfNoneMatch="*")
    assert body_of(s3, bucket, "fresh") == b"source"


def _upload(s3, bucket, key, data):
    u = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p = s3.upload_part(Bucket=bucket, Key=key, UploadId=u, PartNumber=1, Body=data)
    return u, {"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]}


def test_complete_if_none_match(s3, bucket):
    u, parts = _upload(s3, bucket, "mp", b"multipart body")
    # Someone else creates the key while the upload is in progress.
    s3.put_object(Bucket=bucket, Key="mp", Body=b"came first")
    assert err(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=u,
               MultipartUpload=parts, IfNoneMatch="*") == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "mp") == b"came first"
    # As in S3, the upload remains and can still be completed (here unconditionally).
    ups = [x["UploadId"] for x in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert u in ups
    assert len(s3.list_parts(Bucket=bucket, Key="mp", UploadId=u)["Parts"]) == 1
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=u, MultipartUpload=parts)
    assert body_of(s3, bucket, "mp") == b"multipart body"

    # On a key nobody took, the conditional complete succeeds.
    u2, parts2 = _upload(s3, bucket, "mp2", b"second")
    s3.complete_multipart_upload(Bucket=bucket, Key="mp2", UploadId=u2,
                                 MultipartUpload=parts2, IfNoneMatch="*")
    assert body_of(s3, bucket, "mp2") == b"second"


def test_complete_if_match(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="mp", Body=b"old")["ETag"]
    u, parts = _upload(s3, bucket, "mp", b"new")
    assert err(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=u,
               MultipartUpload=parts,
               IfMatch='"0123456789abcdef0123456789abcdef"') == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "mp") == b"old"
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=u, MultipartUpload=parts,
                                 IfMatch=etag)
    assert body_of(s3, bucket, "mp") == b"new"


# -- object tagging ----------------------------------------------------------------------

def tagset(d):
    return {"TagSet": [{"Key": k, "Value": v} for k, v in d.items()]}


def tags_of(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_object_tagging_round_trip(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert tags_of(s3, bucket, "k") == {}
    assert "TagCount" not in s3.head_object(Bucket=bucket, Key="k")
    tags = {"project": "walrus", " spaced key ": "", "ключ": "значение", "a+b=c.d:e/f@g_h-i": "1"}
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset(tags))
    assert tags_of(s3, bucket, "k") == tags
    assert s3.head_object(Bucket=bucket, Key="k")["TagCount"] == 4
    assert s3.get_object(Bucket=bucket, Key="k")["TagCount"] == 4
    # A put replaces the whole set.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"only": "one"}))
    assert tags_of(s3, bucket, "k") == {"only": "one"}
    r = s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert tags_of(s3, bucket, "k") == {}
    assert body_of(s3, bucket, "k") == b"x"
    # Overwriting an object drops its tags.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"a": "1"}))
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert tags_of(s3, bucket, "k") == {}
    assert err(s3.get_object_tagging, Bucket=bucket, Key="nope") == (404, "NoSuchKey")
    assert err(s3.put_object_tagging, Bucket=bucket, Key="nope",
               Tagging=tagset({"a": "1"})) == (404, "NoSuchKey")


def test_tagging_header_on_put_multipart_and_copy(s3, bucket):
    s3.put_object(Bucket=bucket, Key="p", Body=b"x", Tagging="a=1&b=x%20y&c=")
    assert tags_of(s3, bucket, "p") == {"a": "1", "b": "x y", "c": ""}
    assert s3.head_object(Bucket=bucket, Key="p")["TagCount"] == 3

    u = s3.create_multipart_upload(Bucket=bucket, Key="m", Tagging="team=storage")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=u, PartNumber=1, Body=b"mp")
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=u, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert tags_of(s3, bucket, "m") == {"team": "storage"}

    src = {"Bucket": bucket, "Key": "p"}
    s3.copy_object(Bucket=bucket, Key="c1", CopySource=src)
    assert tags_of(s3, bucket, "c1") == {"a": "1", "b": "x y", "c": ""}
    s3.copy_object(Bucket=bucket, Key="c2", CopySource=src, TaggingDirective="COPY",
                   Tagging="ignored=1")
    assert tags_of(s3, bucket, "c2") == {"a": "1", "b": "x y", "c": ""}
    s3.copy_object(Bucket=bucket, Key="c3", CopySource=src, TaggingDirective="REPLACE",
                   Tagging="new=tag")
    assert tags_of(s3, bucket, "c3") == {"new": "tag"}
    s3.copy_object(Bucket=bucket, Key="c4", CopySource=src, TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "c4") == {}
    assert err(s3.copy_object, Bucket=bucket, Key="c5", CopySource=src,
               TaggingDirective="MERGE")[1] == "InvalidArgument"


def test_tagging_with_awscli(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="cli", Body=b"x")
    aws(cloud, "v1", "s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli",
        "--tagging", json.dumps(tagset({"env": "test", "owner": "cli user"})))
    out = aws(cloud, "v1", "s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli")
    got = {t["Key"]: t["Value"] for t in json.loads(out.stdout)["TagSet"]}
    assert got == {"env": "test", "owner": "cli user"}
    assert tags_of(s3, bucket, "cli") == got


@pytest.mark.parametrize("tags,code", [
    ({f"k{i}": "v" for i in range(11)}, "InvalidTag"),
    ({"k" * 129: "v"}, "InvalidTag"),
    ({"k": "v" * 257}, "InvalidTag"),
    ({"aws:reserved": "v"}, "InvalidTag"),
    ({"bad#char": "v"}, "InvalidTag"),
])
def test_object_tag_limits(s3, bucket, tags, code):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"keep": "me"}))
    assert err(s3.put_object_tagging, Bucket=bucket, Key="k",
               Tagging=tagset(tags)) == (400, code)
    assert tags_of(s3, bucket, "k") == {"keep": "me"}


def test_object_tag_limits_at_the_edge_and_duplicates(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    edge = {f"k{i}": "v" for i in range(9)}
    edge["é" * 128] = "ü" * 256  # characters count, not bytes
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset(edge))
    assert tags_of(s3, bucket, "k") == edge
    dup = {"TagSet": [{"Key": "same", "Value": "1"}, {"Key": "same", "Value": "2"}]}
    assert err(s3.put_object_tagging, Bucket=bucket, Key="k", Tagging=dup) == (400, "InvalidTag")
    # The header form: 11 tags, a reserved key, a repeated key; nothing is stored.
    eleven = "&".join(f"k{i}=v" for i in range(11))
    for bad, code in ((eleven, "InvalidTag"), ("aws%3Ax=1", "InvalidTag"),
                      ("a=1&a=2", "InvalidArgument")):
        assert err(s3.put_object, Bucket=bucket, Key="h", Body=b"x", Tagging=bad) == (400, code)
        assert err(s3.create_multipart_upload, Bucket=bucket, Key="h",
                   Tagging=bad) == (400, code)
    assert err(s3.head_object, Bucket=bucket, Key="h")[0] == 404
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_oversized_tagging_body_is_refused(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    body = b"<Tagging><TagSet>" + b"<Tag><Key>k</Key><Value>v</Value></Tag>" * 10000 + \
        b"</TagSet></Tagging>"
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), "tagging", body=body))
    assert (r.status, r.code) == (400, "MaxMessageLengthExceeded"), r
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), "tagging",
                            body=b"<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>"))
    assert (r.status, r.code) == (400, "MalformedXML"), r
    assert tags_of(s3, bucket, "k") == {}


def test_stranger_cannot_read_or_change_tags(s3, stranger, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tagset({"secret": "tag"}))
    assert err(stranger.get_object_tagging, Bucket=bucket, Key="k") == (403, "AccessDenied")
    assert err(stranger.put_object_tagging, Bucket=bucket, Key="k",
               Tagging=tagset({"pwned": "1"})) == (403, "AccessDenied")
    assert err(stranger.delete_object_tagging, Bucket=bucket, Key="k") == (403, "AccessDenied")
    # A missing key answers the same as an existing one to who may not list the bucket.
    assert err(stranger.get_object_tagging, Bucket=bucket, Key="nope") == (403, "AccessDenied")
    # Grants on the object and the bucket (READ, WRITE) do not extend to tags.
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read")
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    try:
        assert stranger.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
        assert err(stranger.get_object_tagging, Bucket=bucket, Key="k") == (403, "AccessDenied")
        assert err(stranger.put_object_tagging, Bucket=bucket, Key="k",
                   Tagging=tagset({"pwned": "1"})) == (403, "AccessDenied")
        # The stranger's own object in the bucket: its owner may tag it, and so may
        # the bucket's owner.
        stranger.put_object(Bucket=bucket, Key="theirs", Body=b"y", Tagging="by=stranger")
        assert tags_of(stranger, bucket, "theirs") == {"by": "stranger"}
        s3.put_object_tagging(Bucket=bucket, Key="theirs", Tagging=tagset({"by": "owner"}))
        assert tags_of(stranger, bucket, "theirs") == {"by": "owner"}
    finally:
        s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert tags_of(s3, bucket, "k") == {"secret": "tag"}


def test_copy_does_not_hand_tags_to_a_reader(s3, stranger, bucket):
    """A stranger who may read a tagged object (public-read) may not copy its tags into
    their own bucket (that would read them); copying without them is fine."""
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public", ACL="public-read",
                  Tagging="classification=secret")
    mine = f"{bucket}-s"[:63]
    stranger.create_bucket(Bucket=mine)
    try:
        src = {"Bucket": bucket, "Key": "pub"}
        assert err(stranger.copy_object, Bucket=mine, Key="c", CopySource=src) == \
            (403, "AccessDenied")
        assert err(stranger.head_object, Bucket=mine, Key="c")[0] == 404
        stranger.copy_object(Bucket=mine, Key="c", CopySource=src, TaggingDirective="REPLACE",
                             Tagging="mine=1")
        assert tags_of(stranger, mine, "c") == {"mine": "1"}
        assert stranger.get_object(Bucket=mine, Key="c")["Body"].read() == b"public"
        # An untagged public object copies as before.
        s3.put_object(Bucket=bucket, Key="plain", Body=b"p", ACL="public-read")
        stranger.copy_object(Bucket=mine, Key="p", CopySource={"Bucket": bucket, "Key": "plain"})
        assert tags_of(stranger, mine, "p") == {}
    finally:
        for k in ("c", "p"):
            stranger.delete_object(Bucket=mine, Key=k)
        stranger.delete_bucket(Bucket=mine)


def test_forged_signature_changes_no_tags(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    body = b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), "tagging", body=body)
    sig = req.auth_signature()
    forged = req.with_auth_signature(("0" if sig[0] != "0" else "1") + sig[1:])
    r = send(cloud, forged)
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch"), r
    assert tags_of(s3, bucket, "k") == {}
    # The positive control: the same request correctly signed is accepted.
    assert send(cloud, req).status == 200
    assert tags_of(s3, bucket, "k") == {"a": "b"}


# -- bucket tagging ----------------------------------------------------------------------

def test_bucket_tagging(s3, stranger, bucket):
    assert err(s3.get_bucket_tagging, Bucket=bucket) == (404, "NoSuchTagSet")
    fifty = {f"key{i}": f"value {i}" for i in range(50)}
    r = s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset(fifty))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert {t["Key"]: t["Value"] for t in got} == fifty
    assert [t["Key"] for t in got] == list(fifty)
    fifty_one = dict(fifty, extra="1")
    assert err(s3.put_bucket_tagging, Bucket=bucket,
               Tagging=tagset(fifty_one)) == (400, "InvalidTag")
    assert err(s3.put_bucket_tagging, Bucket=bucket,
               Tagging=tagset({"aws:cloudformation:stack": "x"})) == (400, "InvalidTag")
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    # Owner only, for reading as for changing.
    assert err(stranger.get_bucket_tagging, Bucket=bucket) == (403, "AccessDenied")
    assert err(stranger.put_bucket_tagging, Bucket=bucket,
               Tagging=tagset({"a": "b"})) == (403, "AccessDenied")
    assert err(stranger.delete_bucket_tagging, Bucket=bucket) == (403, "AccessDenied")
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    r = s3.delete_bucket_tagging(Bucket=bucket)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert err(s3.get_bucket_tagging, Bucket=bucket) == (404, "NoSuchTagSet")
    # Bucket tags are not object tags: objects stay untagged.
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"cost-center": "42"}))
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert tags_of(s3, bucket, "k") == {}
    assert err(s3.get_bucket_tagging, Bucket="no-such-bucket-tagging-test")[1] == "NoSuchBucket"
