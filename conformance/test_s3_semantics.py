"""S3 semantics clients notice (issue 10, items 1, 3, 6 and 7): keys in XML bodies come
through byte-exact, AWS's answers for edge cases, system buckets that cannot be
squatted, no existence oracle, and a property test over arbitrary keys.

Real clients (boto3, awscli, s3cmd) where a user would meet the behaviour; raw signed
requests (botocore's signers, sent verbatim) where no client can express the request.
"""
import datetime
import hashlib
import hmac
import json
import os
import re
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from conftest import start_cloud
from helpers_clients import aws, s3cmd
from helpers_raw import (RawReq, obj_path, presign_v4, qs, send, sha256_hex, sign_v4,
                         signing_key)


def err(ei):
    e = ei.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"]


def expect(resp, status, code):
    assert resp.status == status and resp.code == code, \
        f"expected HTTP {status} {code}, got {resp!r}"


def all_keys(s3, bucket):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def account_s3(cloud, name):
    k = cloud.new_account(name)
    return cloud.boto3(access_key=k["AWS_ACCESS_KEY_ID"], secret_key=k["AWS_SECRET_ACCESS_KEY"])


def nodes_s3(cloud):
    cfg = (cloud.data / "credentials" / "nc-cache.toml").read_text()
    ak = re.search(r'access_key = "([^"]+)"', cfg).group(1)
    sk = re.search(r'secret_key = "([^"]+)"', cfg).group(1)
    return cloud.boto3(access_key=ak, secret_key=sk)


# ---------------------------------------------------------------------------
# 1. Keys in XML request bodies are bytes
# ---------------------------------------------------------------------------
TRICKY = [" ", "_ ", "a\n", "\tb", "c\r\n"]
NEIGHBOURS = ["_", "a", "b", "c", "c\n", "\tb ", "  "]


def test_delete_objects_deletes_exactly_the_named_keys_boto3(s3, bucket):
    """boto3 escapes CR/LF as entities (&#xD; &#xA;); spaces and tabs are literal."""
    for k in TRICKY + NEIGHBOURS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode() + b"|body")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in TRICKY]})
    assert sorted(d["Key"] for d in r.get("Deleted", [])) == sorted(TRICKY), r
    assert not r.get("Errors"), r
    assert sorted(all_keys(s3, bucket)) == sorted(NEIGHBOURS)
    for k in NEIGHBOURS:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode() + b"|body"


def test_delete_objects_with_literal_cr_and_pretty_printed_xml(cloud, s3, bucket):
    """A body written by hand: indented, a literal CR/LF inside a key, entities. The
    indentation is structure; the text of every <Key> is the key, byte for byte."""
    keys = ["c\r\n", "x\r", " lead", "trail\t", "amp&<>"]
    survivors = ["c\n", "c", "x", "x\n", "lead", "trail", "amp"]
    for k in keys + survivors:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Delete>\r\n  <Quiet>true</Quiet>\r\n"
            "  <Object>\r\n    <Key>c\r\n</Key>\r\n  </Object>\r\n"
            "  <Object><Key>x&#13;</Key></Object>\n"
            "  <Object>\n    <Key> lead</Key>\n  </Object>\n"
            "  <Object><Key>trail&#x9;</Key></Object>\n"
            "  <Object><Key>amp&amp;&lt;&gt;</Key></Object>\n</Delete>\n").encode()
    md5 = __import__("base64").b64encode(hashlib.md5(body).digest()).decode()
    r = send(cloud, sign_v4(cloud, "POST", obj_path(bucket), "delete=", body=body,
                            headers={"Content-MD5": md5}))
    assert r.status == 200 and b"<Error>" not in r.body, r
    assert sorted(all_keys(s3, bucket)) == sorted(survivors)


def test_s3cmd_del_of_several_keys(cloud, s3, bucket):
    """`s3cmd del` of several keys sends one DeleteObjects (a batch of what it listed,
    keys written literally into the XML). s3cmd itself cannot name keys with a leading
    blank or a newline (its listing strips them, its URL parser stops at a newline), so
    this uses the trailing blanks it does keep; the survivors are kept by --exclude."""
    keys = ["_ ", "trail ", "x y ", "tab\t"]
    survivors = ["_", "trail", "x y", "x", "tab"]
    for k in keys + survivors:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    excludes = [a for k in survivors for a in ("--exclude", k)]
    r = s3cmd(cloud, "--debug", "del", "--recursive", "--force", *excludes, f"s3://{bucket}/")
    assert "?delete" in r.stderr  # one DeleteObjects, not a DELETE per key
    assert sorted(all_keys(s3, bucket)) == sorted(survivors)


def test_other_xml_bodies_accept_pretty_printed_xml(cloud, s3, bucket):
    """CompleteMultipartUpload, PutBucketAcl and CreateBucketConfiguration with
    indentation and CRLF line ends (regression guard for the exact-text parser)."""
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"x" * 10)["ETag"]
    body = (f"<CompleteMultipartUpload>\r\n  <Part>\r\n    <PartNumber>\r\n 1 </PartNumber>\r\n"
            f"    <ETag>\r\n {etag} </ETag>\r\n  </Part>\r\n</CompleteMultipartUpload>\r\n").encode()
    r = send(cloud, sign_v4(cloud, "POST", obj_path(bucket, "mp"), qs({"uploadId": up}), body=body))
    assert r.status == 200 and b"<ETag>" in r.body, r
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"x" * 10

    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    acl = (f"<AccessControlPolicy>\n  <Owner>\n    <ID> {owner} </ID>\n  </Owner>\n  <AccessControlList>\n"
           f"    <Grant>\n      <Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">\n"
           f"        <ID>{owner}</ID>\n      </Grantee>\n      <Permission>\n FULL_CONTROL\n </Permission>\n    </Grant>\n"
           f"    <Grant>\n      <Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"Group\">\n"
           f"        <URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>\n      </Grantee>\n"
           f"      <Permission>READ</Permission>\n    </Grant>\n  </AccessControlList>\n</AccessControlPolicy>\n").encode()
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket), "acl=", body=acl))
    assert r.status == 200, r
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {g["Permission"] for g in grants} == {"FULL_CONTROL", "READ"}, grants

    name = f"{bucket}-loc"[:63]
    cfg = (f"<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
           f"  <LocationConstraint>\n    {cloud.region}\n  </LocationConstraint>\n</CreateBucketConfiguration>\n").encode()
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(name), body=cfg))
    assert r.status == 200, r
    s3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------------------
# 3. AWS's answers where clients notice
# ---------------------------------------------------------------------------
def sign_v4_with_date_header(cloud, method, path, sign_date=True):
    """SigV4 with the time in `Date` (RFC 1123) and no X-Amz-Date, as AWS allows."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    host = f"127.0.0.1:{cloud.port}"
    headers = {"host": host, "date": now.strftime("%a, %d %b %Y %H:%M:%S GMT"),
               "x-amz-content-sha256": sha256_hex(b"")}
    signed = sorted(h for h in headers if sign_date or h != "date")
    canonical = "\n".join([method, path, "", *[f"{h}:{headers[h]}" for h in signed], "",
                           ";".join(signed), headers["x-amz-content-sha256"]])
    scope = f"{amz[:8]}/{cloud.region}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, sha256_hex(canonical.encode())])
    sig = hmac.new(signing_key(cloud.secret_key, amz[:8], cloud.region, "s3"), sts.encode(),
                   hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={cloud.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return RawReq(method, path, headers)


def test_sigv4_with_date_header_and_no_x_amz_date(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="d", Body=b"dated")
    r = send(cloud, sign_v4_with_date_header(cloud, "GET", obj_path(bucket, "d")))
    assert r.status == 200 and r.body == b"dated", r
    # The time must be covered by the signature; and some time must be given.
    expect(send(cloud, sign_v4_with_date_header(cloud, "GET", obj_path(bucket, "d"), sign_date=False)),
           403, "AccessDenied")
    req = sign_v4_with_date_header(cloud, "GET", obj_path(bucket, "d"))
    del req.headers["date"]
    expect(send(cloud, req), 403, "AccessDenied")


def test_presigned_expiry_bounds(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="p", Body=b"presigned")
    ok = send(cloud, presign_v4(cloud, "GET", obj_path(bucket, "p"), expires=60))
    assert ok.status == 200 and ok.body == b"presigned", ok
    expect(send(cloud, presign_v4(cloud, "GET", obj_path(bucket, "p"), expires=0)), 403, "AccessDenied")
    for bad in (-1, 604801):
        expect(send(cloud, presign_v4(cloud, "GET", obj_path(bucket, "p"), expires=bad)),
               400, "AuthorizationQueryParametersError")


def test_create_bucket_again_by_its_owner_in_us_east_1(cloud, s3, bucket):
    assert cloud.region == "us-east-1"
    s3.put_object(Bucket=bucket, Key="kept", Body=b"still here")
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert len(s3.get_bucket_acl(Bucket=bucket)["Grants"]) == 2
    r = s3.create_bucket(Bucket=bucket)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"still here"
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"], grants  # reset to private
    # awscli too; another account still gets 409 BucketAlreadyExists.
    aws(cloud, "v1", "s3api", "create-bucket", "--bucket", bucket)
    other = account_s3(cloud, f"mb{os.getpid()}")
    with pytest.raises(ClientError) as ei:
        other.create_bucket(Bucket=bucket)
    assert err(ei) == ("BucketAlreadyExists", 409)


def test_create_bucket_again_elsewhere_is_409(tmp_path):
    cfg = tmp_path / "euca.toml"
    cfg.write_text('[walrus]\nregion = "eu-west-1"\n')
    c = start_cloud(tmp_path, ["--config", str(cfg)])
    try:
        s3 = c.boto3()
        conf = {"LocationConstraint": "eu-west-1"}
        s3.create_bucket(Bucket="again", CreateBucketConfiguration=conf)
        with pytest.raises(ClientError) as ei:
            s3.create_bucket(Bucket="again", CreateBucketConfiguration=conf)
        assert err(ei) == ("BucketAlreadyOwnedByYou", 409)
    finally:
        c.stop()


def test_max_keys_zero_lists_nothing_and_is_not_truncated(s3, bucket):
    for k in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    v1 = s3.list_objects(Bucket=bucket, MaxKeys=0)
    assert "Contents" not in v1 and v1["IsTruncated"] is False, v1
    v2 = s3.list_objects_v2(Bucket=bucket, MaxKeys=0)
    assert "Contents" not in v2 and v2["IsTruncated"] is False and v2["KeyCount"] == 0, v2


def test_repeated_complete_multipart_upload(s3, bucket):
    part = os.urandom(5 * 1024 * 1024)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = []
    for n, body in ((1, part), (2, b"tail")):
        e = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": e})
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                         MultipartUpload={"Parts": parts})
    before = s3.head_object(Bucket=bucket, Key="mp")
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                         MultipartUpload={"Parts": parts})
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert again["ETag"] == first["ETag"] and again["Key"] == "mp"
    after = s3.head_object(Bucket=bucket, Key="mp")
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == part + b"tail"
    # Another part list is not the completed upload.
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                     MultipartUpload={"Parts": parts[:1]})
    assert err(ei) == ("NoSuchUpload", 404)


def test_repeated_complete_returns_the_same_checksum(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mpc", ChecksumAlgorithm="SHA256")["UploadId"]
    parts = []
    for n, body in ((1, os.urandom(5 * 1024 * 1024)), (2, b"tail")):
        r = s3.upload_part(Bucket=bucket, Key="mpc", UploadId=up, PartNumber=n, Body=body,
                           ChecksumAlgorithm="SHA256")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mpc", UploadId=up,
                                         MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mpc", UploadId=up,
                                         MultipartUpload={"Parts": parts})
    assert first["ChecksumSHA256"].endswith("-2"), first
    assert (again["ETag"], again["ChecksumSHA256"]) == (first["ETag"], first["ChecksumSHA256"])


def test_upload_part_copy_range_past_the_end(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=bytes(range(100)))
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    src = {"Bucket": bucket, "Key": "src"}
    for rng in ("bytes=0-100", "bytes=50-1000", "bytes=100-100"):
        with pytest.raises(ClientError) as ei:
            s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1,
                                CopySource=src, CopySourceRange=rng)
        assert err(ei) == ("InvalidRange", 416), rng
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="dst", UploadId=up)
    # Positive control: the last byte exactly.
    s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1,
                        CopySource=src, CopySourceRange="bytes=90-99")
    assert [p["Size"] for p in s3.list_parts(Bucket=bucket, Key="dst", UploadId=up)["Parts"]] == [10]
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=up)


def test_options_preflight_is_answered_before_authentication(cloud, bucket):
    bogus_auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=NOPE/20200101/us-east-1/s3/aws4_request, "
                                   "SignedHeaders=host, Signature=00"}
    for extra in ({}, bogus_auth):
        r = send(cloud, RawReq("OPTIONS", obj_path(bucket, "k"), dict(extra)))
        expect(r, 400, "BadRequest")
        assert b"Insufficient information. Origin request header needed." in r.body, r
        cors = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT", **extra}
        for path in (obj_path(bucket), obj_path(bucket, "k")):
            r = send(cloud, RawReq("OPTIONS", path, dict(cors)))
            expect(r, 403, "AccessForbidden")
            assert b"CORSResponse: CORS is not enabled for this bucket." in r.body, r
        expect(send(cloud, RawReq("OPTIONS", obj_path(bucket + "-none", "k"), dict(cors))), 404, "NoSuchBucket")


# ---------------------------------------------------------------------------
# 7. System names and the existence oracle
# ---------------------------------------------------------------------------
def test_system_buckets_cannot_be_squatted(fresh_cloud):
    cloud = fresh_cloud
    nodes = nodes_s3(cloud)
    mallory = account_s3(cloud, "mallory")
    for name in ("euca-snapshots", "euca-images"):
        with pytest.raises(ClientError) as ei:
            nodes.create_bucket(Bucket=name)
        assert err(ei) == ("AccessDenied", 403), name
        with pytest.raises(ClientError) as ei:
            mallory.create_bucket(Bucket=name)
        assert err(ei) == ("BucketAlreadyExists", 409), name
    with pytest.raises(ClientError) as ei:
        mallory.create_bucket(Bucket="euca-backups")
    assert err(ei) == ("InvalidBucketName", 400)
    # The nodes' key writes nothing, not even where an ACL would let anyone write.
    admin = cloud.boto3()
    admin.create_bucket(Bucket="open-to-all", ACL="public-read-write")
    for call in (lambda: nodes.create_bucket(Bucket="nodes-own"),
                 lambda: nodes.put_object(Bucket="open-to-all", Key="k", Body=b"x"),
                 lambda: nodes.create_multipart_upload(Bucket="open-to-all", Key="k")):
        with pytest.raises(ClientError) as ei:
            call()
        assert err(ei) == ("AccessDenied", 403)
    assert "Contents" not in admin.list_objects_v2(Bucket="open-to-all")
    # Snapshots still work (they store into the system bucket).
    vid = cloud.euca("volume", "create", "--size-gib", "1").stdout.strip()
    r = cloud.euca("snapshot", "create", vid, "--wait", check=False)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip().splitlines()[-1]
    assert json.loads(cloud.euca("snapshot", "describe", sid).stdout)["state"] == "completed"


def test_missing_keys_are_403_without_list_permission(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="exists", Body=b"secret")
    eve = account_s3(cloud, f"eve{os.getpid()}")
    own = f"{bucket}-eve"[:63]
    eve.create_bucket(Bucket=own)
    try:
        for key in ("exists", "missing"):
            for call in (lambda: eve.head_object(Bucket=bucket, Key=key),
                         lambda: eve.get_object(Bucket=bucket, Key=key),
                         lambda: eve.get_object_acl(Bucket=bucket, Key=key),
                         lambda: eve.copy_object(Bucket=own, Key="c", CopySource={"Bucket": bucket, "Key": key})):
                with pytest.raises(ClientError) as ei:
                    call()
                assert err(ei)[1] == 403 and err(ei)[0] in ("AccessDenied", "403"), (key, err(ei))
            up = eve.create_multipart_upload(Bucket=own, Key="m")["UploadId"]
            with pytest.raises(ClientError) as ei:
                eve.upload_part_copy(Bucket=own, Key="m", UploadId=up, PartNumber=1,
                                     CopySource={"Bucket": bucket, "Key": key})
            assert err(ei) == ("AccessDenied", 403), key
            eve.abort_multipart_upload(Bucket=own, Key="m", UploadId=up)
        # Whoever may list the bucket learns nothing new from a 404.
        s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
        with pytest.raises(ClientError) as ei:
            eve.get_object(Bucket=bucket, Key="missing")
        assert err(ei) == ("NoSuchKey", 404)
        with pytest.raises(ClientError) as ei:
            s3.get_object(Bucket=bucket, Key="missing")
        assert err(ei) == ("NoSuchKey", 404)
    finally:
        eve.delete_bucket(Bucket=own)


# ---------------------------------------------------------------------------
# 6. Property: any key S3 allows round-trips and deletes only itself
# ---------------------------------------------------------------------------
# Characters outside XML 1.0 (C0 controls but tab, LF and CR; U+FFFE, U+FFFF). S3 writes
# them as character references (&#x1;) in XML listings, which XML 1.0 parsers such as
# expat (botocore's) refuse, so clients list such keys with encoding-type=url (botocore
# always asks for it) and delete them with Quiet responses, as against AWS.
XML10_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
ENTITY = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|lt|gt|amp|quot|apos);")
NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def xml_text(s):
    """Decodes the text of an element as written by Walrus (no CDATA, any char ref)."""
    def one(m):
        e = m.group(1)
        if e.startswith("#x"):
            return chr(int(e[2:], 16))
        if e.startswith("#"):
            return chr(int(e[1:]))
        return NAMED[e]
    return ENTITY.sub(one, s)


# Keys every run tries, besides the generated ones.
EXAMPLES = [" ", "_ ", "a\n", "\tb", "c\r\n", "\r", "\x00", "\x01 x", "\ufffe", "%2F+?&#;",
            "\U0001F600" * 256, ".", "..", "a/./b", "a/../b", "/", "//a/"]


def fit_key(k):
    """At most 1024 bytes of UTF-8, never empty."""
    b = k.encode()[:1024]
    return b.decode(errors="ignore") or "k"


def test_any_key_round_trips_and_deletes_only_itself(cloud, s3, bucket):
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    chars = st.one_of(st.sampled_from(list(" \t\r\n\x00\x01\x0b\x1f\x7f/.%+?&#=;<>\"'\\~*")),
                      st.characters(exclude_categories=("Cs",)))
    keys = st.text(chars, min_size=1, max_size=400).map(fit_key)
    other = f"{bucket}-copy"[:63]
    s3.create_bucket(Bucket=other)
    seen = []

    @hyp.settings(max_examples=int(os.environ.get("EUCA_PROPERTY_EXAMPLES", "100")), deadline=None,
                  database=None, suppress_health_check=list(hyp.HealthCheck))
    @hyp.given(keys)
    def check(key):
        seen.append(key)
        body = key.encode() + b"|v"
        near = {fit_key(n) for n in (key.strip(), key.replace("\r\n", "\n"), key.replace("\r", "\n"),
                                     key[:-1], key + " ", "_" + key)} - {key}
        for k in sorted(near):
            s3.put_object(Bucket=bucket, Key=k, Body=b"neighbour")
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        # ListObjectsV2 with encoding-type=url (boto3 asks for it and decodes).
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]]
        assert key in listed and all(k.startswith(key) for k in listed), listed
        # ... and without: the key as XML text, control characters as references.
        r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket), qs({"list-type": "2", "prefix": key})))
        assert r.status == 200, r
        raw = [xml_text(k) for k in re.findall(r"<Key>(.*?)</Key>", r.body.decode(), re.S)]
        assert key in raw, (key, r.body[:300])
        if not XML10_ILLEGAL.search(key):
            tree = ET.fromstring(r.body)
            ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
            assert key in [e.text for e in tree.iter(ns + "Key")]
        # CopyObject, then the copy reads back.
        s3.copy_object(Bucket=other, Key=key, CopySource={"Bucket": bucket, "Key": key})
        assert s3.get_object(Bucket=other, Key=key)["Body"].read() == body
        # DeleteObjects removes the key and nothing else.
        for b in (bucket, other):
            d = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": key}], "Quiet": True})
            assert not d.get("Errors"), d
        assert sorted(all_keys(s3, bucket)) == sorted(near)
        assert all_keys(s3, other) == []
        d = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in near], "Quiet": True})
        assert not d.get("Errors") and all_keys(s3, bucket) == [], d

    for k in EXAMPLES:
        check = hyp.example(k)(check)
    try:
        check()
    finally:
        s3.delete_bucket(Bucket=other)
    assert len(seen) >= 20 and set(EXAMPLES) <= set(seen)
