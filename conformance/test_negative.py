"""Negative tests for Walrus: authentication, integrity headers, malformed input, key
and bucket names, header injection (reliability-anchors W-06, W-08..W-11, W-14).

Each request is built with botocore's signers, tampered with, and sent raw. After each
rejected request the good admin client checks that nothing was created or changed.
Every negative case is paired with a positive control (the untampered request must
succeed), so that a server that rejects everything cannot pass.
"""
import base64
import datetime
import hashlib
import os
import time
from pathlib import Path

import pytest

from helpers_raw import (STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD, assert_absent,
                         assert_content, bucket_exists, crc32_b64, flip_b64, flip_hex,
                         get_or_none, head_or_none, healthy, list_keys, md5_b64,
                         obj_path, parse_raw_response, presign_v2, presign_v4, qs,
                         query_get, query_replace, raw_exchange, send, serialize,
                         sha256_hex, sign_v2, sign_v4, snapshot_files,
                         streaming_put_v4, unsigned_trailer_body, unsigned_trailer_put,
                         utcnow)

UNKNOWN_AK = "AKIAUNKNOWNKEY000000"
UNKNOWN_SK = "c2VjcmV0LW9mLWFuLXVua25vd24ta2V5LTAwMDAwMDAw"


# ----------------------------------------------------------------------------
# local helpers
# ----------------------------------------------------------------------------
def expect(resp, status, codes):
    """status: int or tuple of ints; codes: str, iterable of str, or None (any)."""
    statuses = (status,) if isinstance(status, int) else tuple(status)
    if isinstance(codes, str):
        codes = {codes}
    assert resp.status in statuses and (codes is None or resp.code in codes), (
        f"expected HTTP {statuses} with <Code> in {codes}, got {resp!r}")


def expect_ok(resp):
    assert 200 <= resp.status < 300, f"positive control failed: {resp!r}"


def put_victim(s3, bucket, key="victim", size=1000, meta=None):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta or {})
    return data


def assert_server_ok(cloud, s3, bucket):
    assert healthy(cloud), "server not healthy after hostile input"
    s3.list_objects_v2(Bucket=bucket, MaxKeys=1)


# ----------------------------------------------------------------------------
# harness sanity: the raw SigV4 path works at all
# ----------------------------------------------------------------------------
def test_raw_v4_header_positive(cloud, s3, bucket):
    data = os.urandom(3000)
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "pos"), body=data,
                            headers={"x-amz-meta-color": "blue"}))
    expect_ok(r)
    assert r.header("ETag") == '"%s"' % hashlib.md5(data).hexdigest()
    g = send(cloud, sign_v4(cloud, "GET", obj_path(bucket, "pos")))
    assert g.status == 200 and g.body == data
    h = send(cloud, sign_v4(cloud, "HEAD", obj_path(bucket, "pos")))
    assert h.status == 200 and h.header("Content-Length") == str(len(data))
    assert h.header("x-amz-meta-color") == "blue"
    # UNSIGNED-PAYLOAD header auth is valid SigV4 too
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "pos2"), body=data,
                            payload_hash=UNSIGNED_PAYLOAD))
    expect_ok(r)
    assert_content(s3, bucket, "pos2", data)


# ----------------------------------------------------------------------------
# SigV4 header auth
# ----------------------------------------------------------------------------
def test_v4_flipped_signature(cloud, s3, bucket):
    data = os.urandom(2048)
    good = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data)
    bad = good.with_auth_signature(flip_hex(good.auth_signature()))
    expect(send(cloud, bad), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "k")
    # also on reads: no data leaks
    victim = put_victim(s3, bucket)
    g = sign_v4(cloud, "GET", obj_path(bucket, "victim"))
    r = send(cloud, g.with_auth_signature(flip_hex(g.auth_signature())))
    expect(r, 403, "SignatureDoesNotMatch")
    assert victim not in r.body
    # positive control
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "k", data)


@pytest.mark.parametrize("minutes", [16, -16])
def test_v4_clock_skew(cloud, s3, bucket, minutes):
    old = put_victim(s3, bucket)
    new = os.urandom(500)
    when = utcnow() + datetime.timedelta(minutes=minutes)
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "victim"), body=new, when=when))
    expect(r, 403, "RequestTimeTooSkewed")
    assert_content(s3, bucket, "victim", old)
    # positive control: 10 minutes of skew is within the 15-minute window
    when = utcnow() + datetime.timedelta(minutes=10 if minutes > 0 else -10)
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "victim"), body=new, when=when)))
    assert_content(s3, bucket, "victim", new)


def test_v4_unsigned_amz_meta_header(cloud, s3, bucket):
    old = put_victim(s3, bucket, meta={"orig": "1"})
    new = os.urandom(700)
    good = sign_v4(cloud, "PUT", obj_path(bucket, "victim"), body=new)
    bad = good.copy()
    bad.headers["x-amz-meta-evil"] = "injected"
    expect(send(cloud, bad), 403, {"AccessDenied", "SignatureDoesNotMatch"})
    assert_content(s3, bucket, "victim", old, metadata={"orig": "1"})
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "victim", new, metadata={})


def test_v4_host_not_signed(cloud, s3, bucket):
    data = os.urandom(300)
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data, drop_host=True)
    assert "host" not in req.get_header("Authorization").split("SignedHeaders=")[1].split(",")[0].split(";")
    expect(send(cloud, req), 403, {"AccessDenied", "SignatureDoesNotMatch"})
    assert_absent(s3, bucket, "k")
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data)))


def test_v4_signature_binds_method_path_query(cloud, s3, bucket):
    """A valid signature must not be reusable for another method, key or query."""
    victim = put_victim(s3, bucket)
    # GET signed, sent as DELETE
    g = sign_v4(cloud, "GET", obj_path(bucket, "victim"))
    expect(send(cloud, g.copy(method="DELETE")), 403, "SignatureDoesNotMatch")
    assert_content(s3, bucket, "victim", victim)
    # PUT signed for key "a", sent to key "victim" and to key "b"
    data = os.urandom(100)
    pa = sign_v4(cloud, "PUT", obj_path(bucket, "a"), body=data)
    expect(send(cloud, pa.copy(target=obj_path(bucket, "victim"))), 403, "SignatureDoesNotMatch")
    assert_content(s3, bucket, "victim", victim)
    expect(send(cloud, pa.copy(target=obj_path(bucket, "b"))), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "b")
    # query parameter changed / added after signing
    q = sign_v4(cloud, "GET", obj_path(bucket, "victim"), query=qs([("response-content-type", "a/b")]))
    r = send(cloud, q.copy(target=obj_path(bucket, "victim") + "?" + qs([("response-content-type", "c/d")])))
    expect(r, 403, "SignatureDoesNotMatch")
    r = send(cloud, g.copy(target=g.target + "?" + qs([("response-content-type", "c/d")])))
    expect(r, 403, "SignatureDoesNotMatch")
    # positive controls
    expect_ok(send(cloud, pa))
    assert_content(s3, bucket, "a", data)
    r = send(cloud, q)
    assert r.status == 200 and r.header("Content-Type") == "a/b", r


@pytest.mark.parametrize("value", ["present-value", ""], ids=["nonempty", "empty"])
def test_v4_signed_header_absent(cloud, s3, bucket, value):
    """A header named in SignedHeaders but missing from the request must be rejected,
    even when its signed value was empty (so 'missing == empty' would verify)."""
    data = os.urandom(300)
    good = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data,
                   headers={"x-amz-meta-note": value})
    assert "x-amz-meta-note" in good.get_header("Authorization")
    bad = good.copy()
    bad.del_header("x-amz-meta-note")
    expect(send(cloud, bad), 403, {"AccessDenied", "SignatureDoesNotMatch"})
    assert_absent(s3, bucket, "k")
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "k", data)


@pytest.mark.parametrize("what", ["region", "service", "date"])
def test_v4_wrong_credential_scope(cloud, s3, bucket, what):
    """The signature is self-consistent with the (wrong) scope it names; the server must
    still refuse it. AWS answers 400 AuthorizationHeaderMalformed for a wrong region."""
    data = os.urandom(300)
    kw = {"region": "us-west-2"} if what == "region" else \
         {"service": "ec2"} if what == "service" else \
         {"scope_date": (utcnow() - datetime.timedelta(days=1)).strftime("%Y%m%d")}
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data, **kw))
    assert not (200 <= r.status < 300), f"wrong {what} in scope accepted: {r!r}"
    assert (r.status == 403 and r.code in {"SignatureDoesNotMatch", "AccessDenied"}) or \
           (r.status == 400 and r.code in {"AuthorizationHeaderMalformed"}), r
    assert_absent(s3, bucket, "k")


# ----------------------------------------------------------------------------
# unknown access key, every auth mode
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["v4-header", "v4-query", "v4-streaming", "v4-trailer",
                                  "v2-header", "v2-query"])
def test_unknown_access_key(cloud, s3, bucket, mode):
    data = os.urandom(300)
    p = obj_path(bucket, "k")
    kw = dict(access_key=UNKNOWN_AK, secret_key=UNKNOWN_SK)
    if mode == "v4-header":
        req = sign_v4(cloud, "PUT", p, body=data, **kw)
    elif mode == "v4-query":
        req = presign_v4(cloud, "PUT", p, **kw)
        req.body = data
    elif mode == "v4-streaming":
        req = streaming_put_v4(cloud, bucket, "k", data, **kw)
    elif mode == "v4-trailer":
        body = unsigned_trailer_body(data)
        req = sign_v4(cloud, "PUT", p, body=body, payload_hash=STREAMING_UNSIGNED_TRAILER,
                      headers={"Content-Encoding": "aws-chunked",
                               "x-amz-decoded-content-length": str(len(data)),
                               "x-amz-trailer": "x-amz-checksum-crc32",
                               "Content-Length": str(len(body))}, **kw)
    elif mode == "v2-header":
        req = sign_v2(cloud, "PUT", p, body=data, **kw)
    else:
        req = presign_v2(cloud, "PUT", p, **kw)
        req.body = data
    expect(send(cloud, req), 403, "InvalidAccessKeyId")
    assert_absent(s3, bucket, "k")


# ----------------------------------------------------------------------------
# SigV4 presigned (query) auth
# ----------------------------------------------------------------------------
def test_v4_presigned_expired(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    new = os.urandom(400)
    put_req = presign_v4(cloud, "PUT", obj_path(bucket, "victim"), expires=1)
    put_req.body = new
    get_req = presign_v4(cloud, "GET", obj_path(bucket, "victim"), expires=1)
    ctl = presign_v4(cloud, "GET", obj_path(bucket, "victim"), expires=300)
    time.sleep(2.2)
    expect(send(cloud, put_req), 403, "AccessDenied")
    assert_content(s3, bucket, "victim", old)
    r = send(cloud, get_req)
    expect(r, 403, "AccessDenied")
    assert old not in r.body
    # positive controls: an unexpired URL works, for GET and PUT
    r = send(cloud, ctl)
    assert r.status == 200 and r.body == old, r
    put_ok = presign_v4(cloud, "PUT", obj_path(bucket, "victim"), expires=300)
    put_ok.body = new
    expect_ok(send(cloud, put_ok))
    assert_content(s3, bucket, "victim", new)


def test_v4_presigned_expires_over_one_week(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    req = presign_v4(cloud, "PUT", obj_path(bucket, "victim"), expires=604801)
    req.body = os.urandom(100)
    r = send(cloud, req)
    assert r.status in (400, 403), f"X-Amz-Expires=604801 not rejected: {r!r}"
    assert_content(s3, bucket, "victim", old)
    r = send(cloud, presign_v4(cloud, "GET", obj_path(bucket, "victim"), expires=604801))
    assert r.status in (400, 403) and old not in r.body, r
    # positive control: exactly one week is allowed
    r = send(cloud, presign_v4(cloud, "GET", obj_path(bucket, "victim"), expires=604800))
    assert r.status == 200 and r.body == old, r


def test_v4_presigned_not_yet_valid_and_bad_expires(cloud, s3, bucket):
    """A presigned URL dated in the future beyond the skew window, and X-Amz-Expires
    values outside 1..604800 or not integers, are refused."""
    old = put_victim(s3, bucket)
    p = obj_path(bucket, "victim")
    future = presign_v4(cloud, "PUT", p, expires=3600, when=utcnow() + datetime.timedelta(minutes=20))
    future.body = os.urandom(50)
    r = send(cloud, future)
    assert r.status == 403 and r.code in {"AccessDenied", "RequestTimeTooSkewed"}, r
    assert_content(s3, bucket, "victim", old)
    # X-Amz-Expires is part of the canonical query, so tampering it breaks the
    # signature; sign each odd value properly instead.
    for bad in ("0", "-5", "abc"):
        req = presign_v4(cloud, "PUT", p, expires=bad)
        req.body = os.urandom(50)
        r = send(cloud, req)
        assert r.status in (400, 403), f"X-Amz-Expires={bad} accepted: {r!r}"
        assert_content(s3, bucket, "victim", old)


def test_v4_query_credentials_bad_signature_no_auth_header(cloud, s3, bucket):
    """X-Amz-Credential etc. only in the query, no Authorization header: must verify
    (MinIO CVE-2026-41145 class)."""
    data = os.urandom(300)
    good = presign_v4(cloud, "PUT", obj_path(bucket, "k"))
    good.body = data
    sig = query_get(good.target, "X-Amz-Signature")
    bad = good.copy(target=query_replace(good.target, "X-Amz-Signature", flip_hex(sig)))
    assert bad.get_header("Authorization") is None
    expect(send(cloud, bad), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "k")
    # signature parameter missing altogether
    nosig = good.copy(target=query_replace(good.target, "X-Amz-Signature", None))
    r = send(cloud, nosig)
    assert r.status in (400, 403), f"presigned PUT without X-Amz-Signature accepted: {r!r}"
    assert_absent(s3, bucket, "k")
    # GET of an existing object with a bad query signature leaks nothing
    victim = put_victim(s3, bucket)
    g = presign_v4(cloud, "GET", obj_path(bucket, "victim"))
    gsig = query_get(g.target, "X-Amz-Signature")
    r = send(cloud, g.copy(target=query_replace(g.target, "X-Amz-Signature", flip_hex(gsig))))
    expect(r, 403, "SignatureDoesNotMatch")
    assert victim not in r.body
    # positive control
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "k", data)


def test_header_and_query_auth_together(cloud, s3, bucket):
    """Two individually valid signatures (presigned query + Authorization header):
    AWS refuses a request that carries more than one auth mechanism."""
    data = os.urandom(300)
    pre = presign_v4(cloud, "PUT", obj_path(bucket, "k"))
    path, _, query = pre.target.partition("?")
    both = sign_v4(cloud, "PUT", path, query=query, body=data)
    assert both.get_header("Authorization") and "X-Amz-Signature=" in both.target
    r = send(cloud, both)
    assert r.status in (400, 403), f"header+query auth accepted: {r!r}"
    assert_absent(s3, bucket, "k")
    # positive controls: each alone works
    pre.body = data
    expect_ok(send(cloud, pre))
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k2"), body=data)))


# ----------------------------------------------------------------------------
# STREAMING-AWS4-HMAC-SHA256-PAYLOAD (aws-chunked, signed chunks)
# ----------------------------------------------------------------------------
def test_v4_streaming_positive(cloud, s3, bucket):
    data = os.urandom(200 * 1024 + 17)
    r = send(cloud, streaming_put_v4(cloud, bucket, "k", data))
    expect_ok(r)
    assert_content(s3, bucket, "k", data)
    h = s3.head_object(Bucket=bucket, Key="k")
    assert h["ContentLength"] == len(data)
    assert h["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert "aws-chunked" not in (h.get("ContentEncoding") or "")


@pytest.mark.parametrize("bad_chunk,tamper,existing", [
    (0, "signature", False), (2, "signature", False), (-1, "signature", True),
    (1, "data", False)],
    ids=["first-sig", "middle-sig", "final-sig-overwrite", "chunk-data"])
def test_v4_streaming_bad_chunk(cloud, s3, bucket, bad_chunk, tamper, existing):
    data = os.urandom(200 * 1024 + 17)  # chunks: 64K, 64K, 64K, 8K+17, final 0
    old = put_victim(s3, bucket, "k") if existing else None
    req = streaming_put_v4(cloud, bucket, "k", data, bad_chunk=bad_chunk, tamper=tamper)
    expect(send(cloud, req), 403, "SignatureDoesNotMatch")
    if existing:
        assert_content(s3, bucket, "k", old)
    else:
        assert_absent(s3, bucket, "k")
    assert_server_ok(cloud, s3, bucket)


@pytest.mark.parametrize("mode", ["signed-chunks", "unsigned-trailer"])
@pytest.mark.parametrize("cut", ["mid-chunk", "before-final-chunk"])
def test_streaming_body_truncated_then_close(cloud, s3, bucket, mode, cut):
    """The client disappears part-way through an aws-chunked body: nothing is committed."""
    data = os.urandom(200 * 1024)
    if mode == "signed-chunks":
        req = streaming_put_v4(cloud, bucket, "k", data)
        final_len = len(b"0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n")
    else:
        req = unsigned_trailer_put(cloud, bucket, "k", data)
        final_len = len(b"0\r\nx-amz-checksum-crc32:" + crc32_b64(data).encode() + b"\r\n\r\n")
    raw = serialize(cloud, req)
    keep = len(raw) - len(req.body) + (len(req.body) // 2 if cut == "mid-chunk"
                                       else len(req.body) - final_len)
    out, err = raw_exchange(cloud, raw[:keep], shutdown_write=True)
    resp = parse_raw_response(out)
    assert resp is None or not (200 <= resp.status < 300), f"truncated upload acknowledged: {resp!r}"
    time.sleep(0.3)
    assert_absent(s3, bucket, "k")
    # positive control: the full request works
    expect_ok(send(cloud, req))
    assert_content(s3, bucket, "k", data)


def test_unsigned_trailer_missing_trailer(cloud, s3, bucket):
    data = os.urandom(100 * 1024)
    body = unsigned_trailer_body(data)
    body = body[: body.rindex(b"0\r\n")] + b"0\r\n\r\n"   # final chunk without the trailer
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=body,
                  payload_hash=STREAMING_UNSIGNED_TRAILER,
                  headers={"Content-Encoding": "aws-chunked",
                           "x-amz-decoded-content-length": str(len(data)),
                           "x-amz-trailer": "x-amz-checksum-crc32",
                           "Content-Length": str(len(body))})
    r = send(cloud, req)
    assert 400 <= r.status < 500, f"declared trailer missing, but accepted: {r!r}"
    assert_absent(s3, bucket, "k")


def test_v4_streaming_decoded_length_mismatch(cloud, s3, bucket):
    data = os.urandom(100 * 1024)
    req = streaming_put_v4(cloud, bucket, "k", data,
                           extra_headers={"x-amz-decoded-content-length": str(len(data) + 1)})
    r = send(cloud, req)
    assert 400 <= r.status < 500, f"decoded length mismatch accepted: {r!r}"
    assert_absent(s3, bucket, "k")


# ----------------------------------------------------------------------------
# STREAMING-UNSIGNED-PAYLOAD-TRAILER
# ----------------------------------------------------------------------------
def test_unsigned_trailer_positive(cloud, s3, bucket):
    data = os.urandom(150 * 1024 + 3)
    expect_ok(send(cloud, unsigned_trailer_put(cloud, bucket, "k", data)))
    assert_content(s3, bucket, "k", data)
    h = s3.head_object(Bucket=bucket, Key="k")
    assert h["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()


def test_unsigned_trailer_fabricated_signature(cloud, s3, bucket):
    """MinIO CVE-2026-40344 class: the unsigned-trailer mode must still verify the
    header signature."""
    data = os.urandom(100 * 1024)
    good = unsigned_trailer_put(cloud, bucket, "k", data)
    bad = good.with_auth_signature(sha256_hex(b"fabricated"))
    expect(send(cloud, bad), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "k")
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "k", data)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_unsigned_trailer_wrong_checksum(cloud, s3, bucket, existing):
    data = os.urandom(100 * 1024)
    old = put_victim(s3, bucket, "k") if existing else None
    req = unsigned_trailer_put(cloud, bucket, "k", data, checksum_b64=crc32_b64(data + b"x"))
    expect(send(cloud, req), 400, "BadDigest")
    if existing:
        assert_content(s3, bucket, "k", old)
    else:
        assert_absent(s3, bucket, "k")


# ----------------------------------------------------------------------------
# every handler verifies: multipart and copy
# ----------------------------------------------------------------------------
def test_multipart_and_copy_handlers_verify_signatures(cloud, s3, bucket):
    victim = put_victim(s3, bucket)
    p = obj_path(bucket, "mp")
    # CreateMultipartUpload with a bad signature creates no upload
    c = sign_v4(cloud, "POST", p, query="uploads")
    expect(send(cloud, c.with_auth_signature(flip_hex(c.auth_signature()))), 403, "SignatureDoesNotMatch")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = os.urandom(70 * 1024)
    q = qs([("partNumber", 1), ("uploadId", uid)])
    up = sign_v4(cloud, "PUT", p, query=q, body=part)
    expect(send(cloud, up.with_auth_signature(flip_hex(up.auth_signature()))), 403, "SignatureDoesNotMatch")
    # UploadPart via the signed-chunk streaming mode with a bad chunk
    sreq = streaming_put_v4(cloud, bucket, "mp", part, bad_chunk=1, query=q)
    expect(send(cloud, sreq), 403, "SignatureDoesNotMatch")
    # UploadPart with an unknown access key
    expect(send(cloud, sign_v4(cloud, "PUT", p, query=q, body=part, access_key=UNKNOWN_AK,
                               secret_key=UNKNOWN_SK)), 403, "InvalidAccessKeyId")
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid).get("Parts", []) == [], \
        "a part was stored from a rejected UploadPart"

    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part)["ETag"]
    body = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag>"
            f"</Part></CompleteMultipartUpload>").encode()
    cq = qs([("uploadId", uid)])
    comp = sign_v4(cloud, "POST", p, query=cq, body=body)
    expect(send(cloud, comp.with_auth_signature(flip_hex(comp.auth_signature()))), 403,
           "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "mp")
    ab = sign_v4(cloud, "DELETE", p, query=cq)
    expect(send(cloud, ab.with_auth_signature(flip_hex(ab.auth_signature()))), 403,
           "SignatureDoesNotMatch")
    assert len(s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]) == 1, \
        "upload aborted by a request with a bad signature"

    # CopyObject / UploadPartCopy with a bad signature
    cp = sign_v4(cloud, "PUT", obj_path(bucket, "copy"),
                 headers={"x-amz-copy-source": f"/{bucket}/victim"})
    expect(send(cloud, cp.with_auth_signature(flip_hex(cp.auth_signature()))), 403,
           "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "copy")
    cp2 = sign_v4(cloud, "PUT", p, query=qs([("partNumber", 2), ("uploadId", uid)]),
                  headers={"x-amz-copy-source": f"/{bucket}/victim"})
    expect(send(cloud, cp2.with_auth_signature(flip_hex(cp2.auth_signature()))), 403,
           "SignatureDoesNotMatch")
    assert len(s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]) == 1

    # positive controls: the same requests, correctly signed
    r = send(cloud, comp)
    assert r.status == 200 and b"<Error>" not in r.body, r
    assert_content(s3, bucket, "mp", part)
    expect_ok(send(cloud, cp))
    assert_content(s3, bucket, "copy", victim)


# ----------------------------------------------------------------------------
# SigV2
# ----------------------------------------------------------------------------
def test_v2_header_flipped_signature(cloud, s3, bucket):
    data = os.urandom(300)
    good = sign_v2(cloud, "PUT", obj_path(bucket, "k"), body=data)
    auth = good.get_header("Authorization")
    assert auth.startswith("AWS ")
    ak, _, sig = auth[4:].partition(":")
    bad = good.copy()
    bad.set_header("Authorization", f"AWS {ak}:{flip_b64(sig)}")
    expect(send(cloud, bad), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "k")
    expect_ok(send(cloud, good))
    assert_content(s3, bucket, "k", data)
    g = send(cloud, sign_v2(cloud, "GET", obj_path(bucket, "k")))
    assert g.status == 200 and g.body == data, g


def test_v2_presigned(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    exp_get = presign_v2(cloud, "GET", obj_path(bucket, "victim"), expires=1)
    exp_put = presign_v2(cloud, "PUT", obj_path(bucket, "victim"), expires=1)
    exp_put.body = os.urandom(100)
    time.sleep(2.2)
    r = send(cloud, exp_get)
    expect(r, 403, "AccessDenied")
    assert old not in r.body
    expect(send(cloud, exp_put), 403, "AccessDenied")
    assert_content(s3, bucket, "victim", old)
    # bad signature, not expired
    ok = presign_v2(cloud, "GET", obj_path(bucket, "victim"), expires=300)
    sig = query_get(ok.target, "Signature")
    from urllib.parse import quote, unquote
    bad_sig = quote(flip_b64(unquote(sig)), safe="")
    r = send(cloud, ok.copy(target=query_replace(ok.target, "Signature", bad_sig)))
    expect(r, 403, "SignatureDoesNotMatch")
    assert old not in r.body
    # positive control
    r = send(cloud, ok)
    assert r.status == 200 and r.body == old, r


def test_v2_header_clock_skew(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    for minutes in (16, -16):
        req = sign_v2(cloud, "PUT", obj_path(bucket, "victim"), body=os.urandom(50),
                      when=utcnow() + datetime.timedelta(minutes=minutes))
        expect(send(cloud, req), 403, "RequestTimeTooSkewed")
        assert_content(s3, bucket, "victim", old)
    new = os.urandom(60)
    expect_ok(send(cloud, sign_v2(cloud, "PUT", obj_path(bucket, "victim"), body=new,
                                  when=utcnow() - datetime.timedelta(minutes=10))))
    assert_content(s3, bucket, "victim", new)


# ----------------------------------------------------------------------------
# malformed Authorization, other accounts, disabled credentials
# ----------------------------------------------------------------------------
def test_malformed_authorization_header(cloud, s3, bucket):
    good = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=b"data")
    ak = cloud.access_key
    date8 = good.get_header("X-Amz-Date")[:8]
    variants = [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 ",
        f"AWS4-HMAC-SHA256 Credential={ak}/{date8}/{cloud.region}/s3/aws4_request",
        f"AWS4-HMAC-SHA256 Credential={ak}/{date8}/{cloud.region}/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=",
        f"AWS4-HMAC-SHA256 Credential={ak}, SignedHeaders=host, Signature={'0' * 64}",
        f"AWS4-HMAC-SHA512 Credential={ak}/{date8}/{cloud.region}/s3/aws4_request, "
        f"SignedHeaders=host, Signature={'0' * 64}",
        "Bearer abc.def.ghi",
        f"AWS {ak}",
        f"AWS {ak}:",
        "AWS :",
        "garbage !!",
    ]
    for v in variants:
        bad = good.copy()
        bad.set_header("Authorization", v)
        r = send(cloud, bad)
        assert r.status in (400, 403) and r.code, f"Authorization {v!r}: {r!r}"
        assert_absent(s3, bucket, "k")
    expect_ok(send(cloud, good))


_acct_n = [0]


def _new_account(cloud):
    _acct_n[0] += 1
    name = f"neg{os.getpid()}x{_acct_n[0]}x{int(time.time() * 1000) % 100000}"
    acct = cloud.new_account(name)
    assert acct.get("AWS_ACCESS_KEY_ID") and acct.get("AWS_SECRET_ACCESS_KEY"), acct
    return name, acct["AWS_ACCESS_KEY_ID"], acct["AWS_SECRET_ACCESS_KEY"]


def test_other_account_cannot_touch_private_bucket(cloud, s3, bucket):
    """A correctly signed request from another account is authenticated but must not
    be authorised on a private bucket it does not own."""
    victim = put_victim(s3, bucket)
    _, ak, sk = _new_account(cloud)
    kw = dict(access_key=ak, secret_key=sk)
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "intruder"), body=b"x", **kw))
    expect(r, 403, "AccessDenied")
    assert_absent(s3, bucket, "intruder")
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "victim"), body=b"x", **kw))
    expect(r, 403, "AccessDenied")
    r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket, "victim"), **kw))
    expect(r, 403, "AccessDenied")
    assert victim not in r.body
    r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket), **kw))
    expect(r, 403, "AccessDenied")
    assert b"victim" not in r.body
    r = send(cloud, sign_v4(cloud, "DELETE", obj_path(bucket, "victim"), **kw))
    expect(r, 403, "AccessDenied")
    r = send(cloud, sign_v4(cloud, "DELETE", obj_path(bucket), **kw))
    expect(r, 403, "AccessDenied")
    body = b'<Delete><Object><Key>victim</Key></Object></Delete>'
    r = send(cloud, sign_v4(cloud, "POST", obj_path(bucket), query="delete", body=body,
                            headers={"Content-MD5": md5_b64(body)}, **kw))
    assert r.status == 403 or (r.status == 200 and b"<Deleted>" not in r.body), r
    r = send(cloud, sign_v2(cloud, "GET", obj_path(bucket, "victim"), **kw))
    expect(r, 403, "AccessDenied")
    assert_content(s3, bucket, "victim", victim)
    assert bucket_exists(s3, bucket)
    # positive control: the other account's credentials work on its own bucket
    own = f"own-{bucket}"[:63]
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(own), **kw)))
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(own, "k"), body=b"mine", **kw)))
    r = send(cloud, sign_v4(cloud, "GET", obj_path(own, "k"), **kw))
    assert r.status == 200 and r.body == b"mine", r
    send(cloud, sign_v4(cloud, "DELETE", obj_path(own, "k"), **kw))
    send(cloud, sign_v4(cloud, "DELETE", obj_path(own), **kw))


@pytest.mark.parametrize("what", ["account", "key"])
def test_disabled_credentials_rejected(cloud, s3, bucket, what):
    name, ak, sk = _new_account(cloud)
    kw = dict(access_key=ak, secret_key=sk)
    own = f"dis-{bucket}"[:63]
    # positive control before disabling
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(own), **kw)))
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(own, "k"), body=b"before", **kw)))
    if what == "account":
        cloud.euca("account", "disable", name)
    else:
        cloud.euca("key", "disable", ak)
    for req in (sign_v4(cloud, "PUT", obj_path(own, "k"), body=b"after", **kw),
                sign_v4(cloud, "PUT", obj_path(own, "new"), body=b"after", **kw),
                sign_v2(cloud, "PUT", obj_path(own, "k"), body=b"after", **kw)):
        r = send(cloud, req)
        assert r.status == 403 and r.code in {"InvalidAccessKeyId", "AccessDenied"}, \
            f"{what} disabled but request accepted: {r!r}"
    pre = presign_v4(cloud, "GET", obj_path(own, "k"), **kw)
    r = send(cloud, pre)
    assert r.status == 403 and b"before" not in r.body, r
    # nothing changed (checked by the admin, who can read everything or at least HEAD)
    if what == "account":
        cloud.euca("account", "enable", name)
    r = send(cloud, sign_v4(cloud, "GET", obj_path(own, "k"), **kw)) if what == "account" else None
    if r is not None:
        assert r.status == 200 and r.body == b"before", f"object changed or re-enable failed: {r!r}"
        r = send(cloud, sign_v4(cloud, "GET", obj_path(own, "new"), **kw))
        expect(r, 404, "NoSuchKey")


# ----------------------------------------------------------------------------
# anonymous access, unknown keys/buckets
# ----------------------------------------------------------------------------
def test_anonymous_requests_to_private_bucket(cloud, s3, bucket):
    victim = put_victim(s3, bucket)
    r = send(cloud, _anon("PUT", obj_path(bucket, "anon"), os.urandom(100)))
    expect(r, 403, "AccessDenied")
    assert_absent(s3, bucket, "anon")
    r = send(cloud, _anon("PUT", obj_path(bucket, "victim"), b"overwritten"))
    expect(r, 403, "AccessDenied")
    assert_content(s3, bucket, "victim", victim)
    r = send(cloud, _anon("GET", obj_path(bucket, "victim")))
    expect(r, 403, "AccessDenied")
    assert victim not in r.body
    r = send(cloud, _anon("GET", obj_path(bucket)))
    expect(r, 403, "AccessDenied")
    assert b"victim" not in r.body
    r = send(cloud, _anon("DELETE", obj_path(bucket, "victim")))
    expect(r, 403, "AccessDenied")
    assert_content(s3, bucket, "victim", victim)


def _anon(method, path, body=b""):
    from helpers_raw import RawReq
    return RawReq(method, path, {}, body)


def test_unknown_key_and_bucket(cloud, s3, bucket):
    r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket, "no-such-key")))
    expect(r, 404, "NoSuchKey")
    r = send(cloud, sign_v4(cloud, "HEAD", obj_path(bucket, "no-such-key")))
    assert r.status == 404 and r.body == b"", r
    nb = bucket + "-missing"
    r = send(cloud, sign_v4(cloud, "GET", obj_path(nb, "k")))
    expect(r, 404, "NoSuchBucket")
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(nb, "k"), body=b"data"))
    expect(r, 404, "NoSuchBucket")
    assert not bucket_exists(s3, nb)


# ----------------------------------------------------------------------------
# integrity headers
# ----------------------------------------------------------------------------
def test_content_md5(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    new = os.urandom(1000)
    p = obj_path(bucket, "victim")
    r = send(cloud, sign_v4(cloud, "PUT", p, body=new, headers={"Content-MD5": md5_b64(new + b"!")}))
    expect(r, 400, "BadDigest")
    assert_content(s3, bucket, "victim", old)
    for bad in ("not-base64!!", base64.b64encode(b"short").decode(), ""):
        r = send(cloud, sign_v4(cloud, "PUT", p, body=new, headers={"Content-MD5": bad}))
        expect(r, 400, "InvalidDigest")
        assert_content(s3, bucket, "victim", old)
    # wrong MD5 on a new key: nothing created
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=new,
                            headers={"Content-MD5": md5_b64(b"other")}))
    expect(r, 400, "BadDigest")
    assert_absent(s3, bucket, "k")
    # positive control
    expect_ok(send(cloud, sign_v4(cloud, "PUT", p, body=new, headers={"Content-MD5": md5_b64(new)})))
    assert_content(s3, bucket, "victim", new)


def test_x_amz_content_sha256_mismatch(cloud, s3, bucket):
    old = put_victim(s3, bucket)
    new = os.urandom(1000)
    p = obj_path(bucket, "victim")
    # correctly signed over the claimed hash, but the body is different
    r = send(cloud, sign_v4(cloud, "PUT", p, body=new, payload_hash=sha256_hex(new + b"!")))
    expect(r, 400, "XAmzContentSHA256Mismatch")
    assert_content(s3, bucket, "victim", old)
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=new,
                            payload_hash=sha256_hex(b"")))
    expect(r, 400, "XAmzContentSHA256Mismatch")
    assert_absent(s3, bucket, "k")


# ----------------------------------------------------------------------------
# XML bodies
# ----------------------------------------------------------------------------
def _delete_body(keys, doctype=""):
    objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return (f'<?xml version="1.0" encoding="UTF-8"?>{doctype}'
            f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{objs}</Delete>').encode()


def _post_delete(cloud, bucket, body):
    return send(cloud, sign_v4(cloud, "POST", obj_path(bucket), query="delete", body=body,
                               headers={"Content-MD5": md5_b64(body),
                                        "Content-Type": "application/xml"}))


def test_complete_multipart_malformed_xml(cloud, s3, bucket):
    data = os.urandom(2000)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=data)["ETag"]
    p = obj_path(bucket, "mp")
    q = qs([("uploadId", uid)])
    for body in (
        f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}".encode(),
        b"this is not xml at all",
        (f'<?xml version="1.0"?><!DOCTYPE CompleteMultipartUpload [<!ENTITY e "{etag}">]>'
         f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&e;</ETag></Part>"
         f"</CompleteMultipartUpload>").encode(),
    ):
        r = send(cloud, sign_v4(cloud, "POST", p, query=q, body=body))
        expect(r, 400, "MalformedXML")
        assert_absent(s3, bucket, "mp")
    # positive control: the same upload completes with well-formed XML
    body = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag>"
            f"</Part></CompleteMultipartUpload>").encode()
    r = send(cloud, sign_v4(cloud, "POST", p, query=q, body=body))
    assert r.status == 200 and b"<Error>" not in r.body, r
    assert_content(s3, bucket, "mp", data)


def test_delete_objects_malformed_and_doctype(cloud, s3, bucket):
    d1 = put_victim(s3, bucket, "d1")
    d2 = put_victim(s3, bucket, "d2")
    bodies = {
        "truncated": b'<?xml version="1.0"?><Delete><Object><Key>d1</Key></Object',
        "garbage": b"\x00\xff garbage",
        "doctype-internal-entity": _delete_body(["&v;"], '<!DOCTYPE Delete [<!ENTITY v "d1">]>'),
        "doctype-xxe": _delete_body(["&x;", "d2"],
                                    '<!DOCTYPE Delete [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
    }
    for name, body in bodies.items():
        r = _post_delete(cloud, bucket, body)
        assert r.status == 400 and r.code == "MalformedXML", f"{name}: {r!r}"
        assert b"root:" not in r.body
        assert_content(s3, bucket, "d1", d1)
        assert_content(s3, bucket, "d2", d2)


def test_delete_objects_1001_keys(cloud, s3, bucket):
    d1 = put_victim(s3, bucket, "d1")
    d2 = put_victim(s3, bucket, "d2")
    keys = ["d1", "d2"] + [f"nokey-{i:04d}" for i in range(999)]
    r = _post_delete(cloud, bucket, _delete_body(keys))
    expect(r, 400, "MalformedXML")
    assert_content(s3, bucket, "d1", d1)
    assert_content(s3, bucket, "d2", d2)
    # positive control: 1000 keys is the limit and works
    r = _post_delete(cloud, bucket, _delete_body(keys[:1000]))
    assert r.status == 200 and b"<Error>" not in r.body, r
    assert head_or_none(s3, bucket, "d1") is None and head_or_none(s3, bucket, "d2") is None


def test_create_bucket_malformed_xml(cloud, s3):
    name = f"malformed-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    for body in (b"<CreateBucketConfiguration><LocationConstraint>us-east-1",
                 b"garbage<<>>",
                 b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                 b"<CreateBucketConfiguration><LocationConstraint>&e;</LocationConstraint>"
                 b"</CreateBucketConfiguration>"):
        r = send(cloud, sign_v4(cloud, "PUT", obj_path(name), body=body))
        expect(r, 400, "MalformedXML")
        assert not bucket_exists(s3, name)
    # positive control: empty body creates it
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(name))))
    assert bucket_exists(s3, name)
    s3.delete_bucket(Bucket=name)


# ----------------------------------------------------------------------------
# malformed HTTP
# ----------------------------------------------------------------------------
def _assert_rejected_or_closed(raw, err, allowed=(400, 431)):
    resp = parse_raw_response(raw)
    if resp is None:
        assert raw == b"", f"non-HTTP reply {raw[:200]!r}"
        return None
    assert resp.status in allowed, f"expected {allowed} or close, got {resp!r} (err={err})"
    return resp


@pytest.mark.parametrize("kind", ["one-100KiB-header", "2000-headers"])
def test_oversized_headers(cloud, s3, bucket, kind):
    data = os.urandom(100)
    hdrs = {"x-amz-meta-big": "a" * (100 * 1024)} if kind.startswith("one") else \
           {f"x-amz-meta-h{i}": "v" for i in range(2000)}
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=data, headers=hdrs)
    req.headers["Connection"] = "close"
    raw, err = raw_exchange(cloud, serialize(cloud, req), shutdown_write=False, timeout=10,
                            read_until_close=False)
    _assert_rejected_or_closed(raw, err)
    time.sleep(0.2)
    assert_absent(s3, bucket, "k")
    assert_server_ok(cloud, s3, bucket)


def test_content_length_shorter_than_body(cloud, s3, bucket):
    body = b"abcdefghij"
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=body,
                  headers={"Content-MD5": md5_b64(body)})
    req.set_header("Content-Length", "5")
    req.headers["Connection"] = "close"
    raw, err = raw_exchange(cloud, serialize(cloud, req), shutdown_write=False, timeout=5)
    resp = parse_raw_response(raw)
    assert resp is not None, f"no response (err={err})"
    assert resp.status == 400 and resp.code in {"BadDigest", "XAmzContentSHA256Mismatch"}, resp
    assert_absent(s3, bucket, "k")
    assert_server_ok(cloud, s3, bucket)


@pytest.mark.parametrize("payload", ["unsigned", "sha-of-sent-bytes"])
def test_content_length_longer_than_body_then_close(cloud, s3, bucket, payload):
    sent = b"abcde"
    ph = UNSIGNED_PAYLOAD if payload == "unsigned" else sha256_hex(sent)
    req = sign_v4(cloud, "PUT", obj_path(bucket, "k"), body=sent, payload_hash=ph)
    req.set_header("Content-Length", "10")
    raw, err = raw_exchange(cloud, serialize(cloud, req), shutdown_write=True)
    resp = parse_raw_response(raw)
    assert resp is None or not (200 <= resp.status < 300), f"truncated body acknowledged: {resp!r}"
    time.sleep(0.3)
    assert_absent(s3, bucket, "k")
    assert_server_ok(cloud, s3, bucket)


def test_bad_content_length_and_smuggling(cloud, s3, bucket):
    # Content-Length: -1
    req = sign_v4(cloud, "PUT", obj_path(bucket, "neg"), body=b"", payload_hash=UNSIGNED_PAYLOAD)
    req.set_header("Content-Length", "-1")
    raw, err = raw_exchange(cloud, serialize(cloud, req), shutdown_write=False, timeout=5)
    _assert_rejected_or_closed(raw, err, allowed=(400,))
    # garbage request line
    raw, err = raw_exchange(cloud, b"\x16\x03\x01GARBAGE / NOT-HTTP\r\n\r\n",
                            shutdown_write=False, timeout=5)
    _assert_rejected_or_closed(raw, err, allowed=(400,))
    time.sleep(0.2)
    assert_absent(s3, bucket, "neg")
    assert_server_ok(cloud, s3, bucket)


def test_content_length_with_transfer_encoding(cloud, s3, bucket):
    """Content-Length together with Transfer-Encoding: chunked is the classic
    request-smuggling shape; it must be refused (400 or close), not executed.
    The client keeps its side open and waits, so the outcome does not depend on how
    fast the server notices a half-close."""
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    req = sign_v4(cloud, "PUT", obj_path(bucket, "te"), body=chunked, payload_hash=UNSIGNED_PAYLOAD)
    req.set_header("Content-Length", str(len(chunked)))
    req.set_header("Transfer-Encoding", "chunked")
    req.headers["Connection"] = "close"
    raw, err = raw_exchange(cloud, serialize(cloud, req), shutdown_write=False, timeout=5)
    _assert_rejected_or_closed(raw, err, allowed=(400, 501))  # S3 answers 501 NotImplemented to Transfer-Encoding
    time.sleep(0.2)
    assert_absent(s3, bucket, "te")
    assert_server_ok(cloud, s3, bucket)


# ----------------------------------------------------------------------------
# keys and bucket names
# ----------------------------------------------------------------------------
TRAVERSAL_KEYS = ["../../etc/passwd", "a/../b", "b", "a//b", "a/b", "./x", "x",
                  "%2e%2e/x", "../x", "..", "a/./b", "/lead", "trail/", "sp ace ",
                  "xml<&>\"'"]


def test_keys_are_literal_no_traversal(cloud, s3, bucket):
    passwd = Path("/etc/passwd")
    passwd_before = (passwd.read_bytes(), passwd.stat().st_mtime_ns) if passwd.exists() else None
    parent = cloud.data.parent
    outside_before = snapshot_files(parent, exclude={cloud.data.name, cloud.log_path.name})
    tmp_probe = [parent.parent / "etc" / "passwd", parent / "etc" / "passwd", parent / "x",
                 parent / "b", cloud.data.parent.parent / "x"]
    probe_before = {p: p.exists() for p in tmp_probe}

    contents = {}
    for k in TRAVERSAL_KEYS:
        contents[k] = f"content of {k!r} ".encode() + os.urandom(16)
        r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, k), body=contents[k]))
        expect_ok(r)
    for k in TRAVERSAL_KEYS:
        r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket, k)))
        assert r.status == 200 and r.body == contents[k], f"GET {k!r}: {r!r}"
    listed = list_keys(s3, bucket)
    assert set(listed) == set(TRAVERSAL_KEYS), (
        f"missing {set(TRAVERSAL_KEYS) - set(listed)}, extra {set(listed) - set(TRAVERSAL_KEYS)}")
    for k in TRAVERSAL_KEYS:
        assert listed[k]["Size"] == len(contents[k])

    outside_after = snapshot_files(parent, exclude={cloud.data.name, cloud.log_path.name})
    assert outside_after == outside_before, f"files created outside data dir: {outside_after - outside_before}"
    for p, existed in probe_before.items():
        assert p.exists() == existed, f"{p} appeared"
    if passwd_before is not None:
        assert (passwd.read_bytes(), passwd.stat().st_mtime_ns) == passwd_before, "/etc/passwd changed"

    # deleting 'a/../b' removes only that key
    expect_ok(send(cloud, sign_v4(cloud, "DELETE", obj_path(bucket, "a/../b"))))
    assert get_or_none(s3, bucket, "b") == contents["b"]
    r = send(cloud, sign_v4(cloud, "GET", obj_path(bucket, "a/../b")))
    expect(r, 404, "NoSuchKey")


@pytest.mark.parametrize("unit", ["ascii", "two-byte-utf8"])
def test_key_length_limit(cloud, s3, bucket, unit):
    ok_key = "k" * 1024 if unit == "ascii" else "é" * 512
    bad_key = ok_key + "a"
    assert len(ok_key.encode()) == 1024 and len(bad_key.encode()) == 1025
    r = send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, bad_key), body=b"x"))
    expect(r, 400, "KeyTooLongError")
    assert ok_key + "a" not in list_keys(s3, bucket)
    expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(bucket, ok_key), body=b"ok")))
    assert get_or_none(s3, bucket, ok_key) == b"ok"
    assert set(list_keys(s3, bucket)) == {ok_key}


INVALID_BUCKETS = ["ab", "a" * 64, "UpperCase-bucket", "under_score", "192.168.5.4",
                   "dots..dots", "-leading-dash", "trailing-dash-", ".leading-dot",
                   "trailing-dot.", "sp ace"]


def test_invalid_bucket_names(cloud, s3):
    before = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for name in INVALID_BUCKETS:
        r = send(cloud, sign_v4(cloud, "PUT", obj_path(name)))
        assert r.status == 400 and r.code == "InvalidBucketName", f"{name!r}: {r!r}"
    after = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    assert after == before, f"buckets created: {after - before}"
    # positive control: 3- and 63-character valid names
    for name in (f"v{os.getpid() % 10}x", ("v" + str(os.getpid()) + "-" * 70)[:62] + "z"):
        assert len(name) in (3, 63)
        expect_ok(send(cloud, sign_v4(cloud, "PUT", obj_path(name))))
        assert bucket_exists(s3, name)
        s3.delete_bucket(Bucket=name)


# ----------------------------------------------------------------------------
# response header injection
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("nl", ["\r\n", "\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("param", ["response-content-disposition", "response-content-type",
                                   "response-cache-control", "response-content-language",
                                   "response-expires", "response-content-encoding"])
def test_response_override_header_injection(cloud, s3, bucket, param, nl):
    data = put_victim(s3, bucket)
    value = f"attachment; filename=a{nl}X-Injected: yes{nl}Set-Cookie: injected=1"
    req = sign_v4(cloud, "GET", obj_path(bucket, "victim"), query=qs([(param, value)]),
                  headers={"Connection": "close"})
    raw, err = raw_exchange(cloud, serialize(cloud, req), timeout=10)
    resp = parse_raw_response(raw)
    assert resp is not None, f"no response (err={err})"
    assert resp.status in (200, 400), resp
    head_lines = [ln.strip().lower() for ln in resp.raw_head.replace(b"\r\n", b"\n").split(b"\n")]
    injected = [ln for ln in head_lines if ln.startswith(b"x-injected") or ln.startswith(b"set-cookie")]
    assert not injected, f"header injection via {param}: {resp.raw_head!r}"
    if resp.status == 200:
        assert resp.body == data
    # positive control: a benign override is reflected
    benign = "Thu, 01 Dec 1994 16:00:00 GMT" if param == "response-expires" else "benign-value"
    req = sign_v4(cloud, "GET", obj_path(bucket, "victim"), query=qs([(param, benign)]))
    r = send(cloud, req)
    assert r.status == 200 and r.body == data, r
    hdr = {"response-content-disposition": "Content-Disposition",
           "response-content-type": "Content-Type",
           "response-cache-control": "Cache-Control",
           "response-content-language": "Content-Language",
           "response-expires": "Expires",
           "response-content-encoding": "Content-Encoding"}[param]
    assert r.header(hdr) == benign, f"{param} override not applied: {r.headers}"
