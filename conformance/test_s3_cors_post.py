"""CORS and browser POST uploads (issue 18 item 4).

CORS configuration through boto3 (put/get/delete_bucket_cors); preflights as a browser
sends them (OPTIONS, no credentials) with `requests`; actual requests with an `Origin`
get the matching rule's Access-Control-* headers. Browser POST uploads are driven by
`curl -F` (fields in order, file last) with a policy signed by boto3's
`generate_presigned_post` (SigV4) or by hand (SigV2), and the attacker's forms:
expired, tampered, wrongly signed, oversized, off-prefix, with an unlisted field,
anonymous on a private bucket. A refused upload stores nothing.
"""
import base64
import datetime
import hashlib
import hmac
import json
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

from helpers_clients import s3_error_code, xml_find_all
from helpers_raw import head_or_none
from test_s3_checksums import b64, raw_checksum

ORIGIN = "https://app.example.com"


def err(ei):
    e = ei.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"]


def account_s3(cloud, name):
    k = cloud.new_account(name)
    return cloud.boto3(access_key=k["AWS_ACCESS_KEY_ID"], secret_key=k["AWS_SECRET_ACCESS_KEY"])


RULES = [
    {"ID": "app", "AllowedOrigins": ["https://*.example.com"],
     "AllowedMethods": ["GET", "PUT", "POST"],
     "AllowedHeaders": ["Content-Type", "x-amz-*"],
     "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
]


# ---------------------------------------------------------------------------
# CORS configuration
# ---------------------------------------------------------------------------
def test_cors_configuration_round_trip(s3, bucket):
    with pytest.raises(ClientError) as ei:
        s3.get_bucket_cors(Bucket=bucket)
    assert err(ei) == ("NoSuchCORSConfiguration", 404)

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got == RULES

    # Replacing it replaces all rules.
    one = [{"AllowedOrigins": ["http://a.test"], "AllowedMethods": ["DELETE"]}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": one})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == one

    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as ei:
        s3.get_bucket_cors(Bucket=bucket)
    assert err(ei) == ("NoSuchCORSConfiguration", 404)
    # Deleting what is not there is still 204.
    s3.delete_bucket_cors(Bucket=bucket)


@pytest.mark.parametrize("rules, code", [
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}], "InvalidRequest"),
    ([{"AllowedOrigins": ["http://*.*.test"], "AllowedMethods": ["GET"]}], "InvalidRequest"),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]}],
     "InvalidRequest"),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101, "MalformedXML"),
])
def test_cors_configuration_validation(s3, bucket, rules, code):
    with pytest.raises(ClientError) as ei:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert err(ei) == (code, 400)
    with pytest.raises(ClientError) as ei:
        s3.get_bucket_cors(Bucket=bucket)
    assert err(ei) == ("NoSuchCORSConfiguration", 404)


def test_cors_configuration_is_the_owners(cloud, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    other = account_s3(cloud, "corsother")
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    for call in (lambda: other.get_bucket_cors(Bucket=bucket),
                 lambda: other.delete_bucket_cors(Bucket=bucket),
                 lambda: other.put_bucket_cors(
                     Bucket=bucket, CORSConfiguration={"CORSRules": RULES[1:]})):
        with pytest.raises(ClientError) as ei:
            call()
        assert err(ei) == ("AccessDenied", 403)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES


def test_cors_body_over_cap_is_refused(cloud, s3, bucket):
    rule = {"AllowedOrigins": ["https://" + "a" * 1000 + ".test"], "AllowedMethods": ["GET"]}
    with pytest.raises(ClientError) as ei:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule] * 90})
    assert err(ei) == ("MaxMessageLengthExceeded", 400)


# ---------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------
def preflight(cloud, bucket, key="obj", origin=ORIGIN, method="PUT", headers=None):
    h = {}
    if origin is not None:
        h["Origin"] = origin
    if method is not None:
        h["Access-Control-Request-Method"] = method
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    path = f"/{bucket}/{key}" if key else f"/{bucket}"
    return requests.options(cloud.endpoint + path, headers=h, timeout=30)


def test_preflight(cloud, s3, bucket):
    r = preflight(cloud, bucket)
    assert r.status_code == 403 and s3_error_code(r.content) == "AccessForbidden"
    assert b"CORS is not enabled" in r.content

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    r = preflight(cloud, bucket, headers="content-type, X-Amz-Date")
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT, POST"
    assert r.headers["Access-Control-Allow-Headers"].lower() == "content-type, x-amz-date"
    assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in r.headers["Vary"]

    # The second rule allows any origin: answered with `*`.
    r = preflight(cloud, bucket, origin="http://elsewhere.test", method="HEAD")
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "HEAD"

    # A bucket-level preflight (the POST upload URL).
    r = preflight(cloud, bucket, key=None, method="POST")
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("kw", [
    {"origin": "https://example.com.evil.test"},
    {"origin": "http://app.example.com"},
    {"method": "DELETE"},
    {"headers": "authorization"},
    {"headers": "content-type, x-evil"},
])
def test_preflight_refused(cloud, s3, bucket, kw):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    r = preflight(cloud, bucket, **kw)
    assert r.status_code == 403, r.text
    assert s3_error_code(r.content) == "AccessForbidden"
    assert b"This CORS request is not allowed" in r.content
    assert "Access-Control-Allow-Origin" not in r.headers


def test_preflight_needs_origin_method_and_a_bucket(cloud, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    r = preflight(cloud, bucket, origin=None)
    assert r.status_code == 400 and s3_error_code(r.content) == "BadRequest"
    r = preflight(cloud, bucket, method=None)
    assert r.status_code == 400 and s3_error_code(r.content) == "BadRequest"
    r = preflight(cloud, bucket + "-missing")
    assert r.status_code == 404 and s3_error_code(r.content) == "NoSuchBucket"


# ---------------------------------------------------------------------------
# Actual requests
# ---------------------------------------------------------------------------
def test_actual_requests_get_cors_headers(cloud, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "obj"})
    missing = s3.generate_presigned_url("get_object",
                                        Params={"Bucket": bucket, "Key": "missing"})
    # No configuration: no headers.
    r = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    r = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
    assert "GET" in r.headers["Access-Control-Allow-Methods"]

    # Error answers carry them too.
    r = requests.get(missing, headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 404 and s3_error_code(r.content) == "NoSuchKey"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN

    # An origin no rule allows for GET, and no Origin at all: none.
    for h in ({"Origin": "https://evil.test"}, {}):
        r = requests.get(url, headers=h, timeout=30)
        assert r.status_code == 200
        assert not any(k.lower().startswith("access-control-") for k in r.headers), r.headers

    # boto3 (a signed request with an Origin header): the headers reach the client.
    def add_origin(request, **_):
        request.headers["Origin"] = ORIGIN
    s3o = cloud.boto3()
    s3o.meta.events.register("before-sign.s3.HeadObject", add_origin)
    h = s3o.head_object(Bucket=bucket, Key="obj")["ResponseMetadata"]["HTTPHeaders"]
    # HEAD is allowed by the `*` rule only.
    assert h["access-control-allow-origin"] == "*"


# ---------------------------------------------------------------------------
# Browser POST uploads
# ---------------------------------------------------------------------------
def curl_post(url, fields, data=b"payload", filename="upload.txt", after=()):
    """POSTs a multipart form with curl -F: FIELDS in order, then the file, then AFTER.
    Returns (status, headers (lower-case), body)."""
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / filename
        f.write_bytes(data)
        hdr = Path(td) / "h"
        body = Path(td) / "b"
        cmd = ["curl", "-sS", "--noproxy", "*", "-D", str(hdr), "-o", str(body),
               "--max-time", "120"]
        for k, v in fields:
            cmd += ["--form-string", f"{k}={v}"]
        cmd += ["-F", f"file=@{f};filename={filename}"]
        for k, v in after:
            cmd += ["--form-string", f"{k}={v}"]
        cmd.append(url)
        subprocess.run(cmd, check=True, timeout=130)
        raw = hdr.read_text(errors="replace")
        out = body.read_bytes() if body.exists() else b""
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    lines = blocks[-1].splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, out


@pytest.fixture()
def s3v4(cloud):
    """boto3 signs POST policies with SigV2 unless told otherwise."""
    return cloud.boto3(signature_version="s3v4")


def fields_as_parts(fields):
    """Form fields as `requests` multipart parts (no file name), in order."""
    return [(k, (None, v)) for k, v in fields]


def presigned_post(s3, bucket, key, fields=None, conditions=None, expires=600):
    p = s3.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions,
                                   ExpiresIn=expires)
    return p["url"], list(p["fields"].items())


def v2_form(cloud, bucket, conditions, expires_in=600, secret=None, extra=()):
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
    doc = {"expiration": exp.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
           "conditions": [{"bucket": bucket}, *conditions]}
    policy = base64.b64encode(json.dumps(doc).encode()).decode()
    sig = base64.b64encode(hmac.new((secret or cloud.secret_key).encode(), policy.encode(),
                                    hashlib.sha1).digest()).decode()
    return [("AWSAccessKeyId", cloud.access_key), ("policy", policy), ("signature", sig),
            *extra]


def test_post_upload_sigv4(cloud, s3, bucket, s3v4):
    data = b"form upload \x00\xff" * 1000
    url, fields = presigned_post(
        s3v4, bucket, "uploads/${filename}",
        fields={"Content-Type": "text/plain", "x-amz-meta-color": "blue",
                "success_action_status": "201"},
        conditions=[{"Content-Type": "text/plain"}, {"x-amz-meta-color": "blue"},
                    {"success_action_status": "201"},
                    ["content-length-range", 1, 1 << 20]])
    # A field after the file is ignored (it is not in the policy).
    status, headers, body = curl_post(url, fields, data, filename="a b.txt",
                                      after=[("acl", "public-read-write")])
    assert status == 201, body
    assert xml_find_all(body, "Key") == ["uploads/a b.txt"]
    assert xml_find_all(body, "Bucket") == [bucket]
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    assert xml_find_all(body, "ETag") == [etag]
    assert headers["etag"] == etag
    o = s3.get_object(Bucket=bucket, Key="uploads/a b.txt")
    assert o["Body"].read() == data
    assert o["ContentType"] == "text/plain"
    assert o["Metadata"] == {"color": "blue"}
    assert o["ETag"] == etag
    # A browser upload declares no checksum: it gets S3's default, CRC64NVME.
    h = s3.head_object(Bucket=bucket, Key="uploads/a b.txt", ChecksumMode="ENABLED")
    assert h["ChecksumCRC64NVME"] == b64(raw_checksum("CRC64NVME", data))
    assert h["ChecksumType"] == "FULL_OBJECT"
    # Private by default.
    grants = s3.get_object_acl(Bucket=bucket, Key="uploads/a b.txt")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]


def test_post_upload_large_streams_to_blob(cloud, s3, bucket, s3v4):
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: past inline storage
    url, fields = presigned_post(s3v4, bucket, "big.bin")
    before = blob_files(cloud)
    status, headers, body = curl_post(url, fields, data)
    assert status == 204, body
    assert blob_files(cloud) - before, "the file went to a new blob"
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    assert headers["etag"] == etag
    o = s3.get_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert o["Body"].read() == data and o["ETag"] == etag
    assert o["ChecksumCRC64NVME"] == b64(raw_checksum("CRC64NVME", data))


def test_post_upload_sigv2_redirect_and_acl(cloud, s3, bucket):
    conds = [["starts-with", "$key", "v2/"], {"acl": "public-read"},
             ["starts-with", "$success_action_redirect", "http://app.example.com/"],
             ["starts-with", "$Content-Type", ""]]
    form = v2_form(cloud, bucket, conds, extra=[
        ("key", "v2/${filename}"), ("acl", "public-read"),
        ("success_action_redirect", "http://app.example.com/done?x=1"),
        ("Content-Type", "image/png"), ("x-ignore-me", "whatever")])
    status, headers, body = curl_post(cloud.endpoint + "/" + bucket, form, b"png!",
                                      filename="pic.png")
    assert status == 303, body
    loc = urlsplit(headers["location"])
    assert (loc.scheme, loc.netloc, loc.path) == ("http", "app.example.com", "/done")
    q = parse_qs(loc.query)
    assert q["x"] == ["1"] and q["bucket"] == [bucket] and q["key"] == ["v2/pic.png"]
    assert q["etag"] == ['"' + hashlib.md5(b"png!").hexdigest() + '"']
    o = s3.get_object(Bucket=bucket, Key="v2/pic.png")
    assert o["Body"].read() == b"png!" and o["ContentType"] == "image/png"
    # The form's canned ACL: anyone may read it.
    r = requests.get(f"{cloud.endpoint}/{bucket}/v2/pic.png", timeout=30)
    assert r.status_code == 200 and r.content == b"png!"


def test_post_success_action_status_200(cloud, s3, bucket):
    # boto3's default: a SigV2 policy (AWSAccessKeyId, signature).
    url, fields = presigned_post(s3, bucket, "s200", fields={"success_action_status": "200"},
                                 conditions=[{"success_action_status": "200"}])
    assert "signature" in dict(fields) and "x-amz-signature" not in dict(fields)
    status, _, body = curl_post(url, fields)
    assert status == 200 and body == b""


def test_post_gets_cors_headers(cloud, s3, bucket, s3v4):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    url, fields = presigned_post(s3v4, bucket, "corspost")
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "f"
        f.write_bytes(b"x")
        cmd = ["curl", "-sS", "--noproxy", "*", "-D", "-", "-o", "/dev/null",
               "-H", f"Origin: {ORIGIN}"]
        for k, v in fields:
            cmd += ["--form-string", f"{k}={v}"]
        cmd += ["-F", f"file=@{f}", url]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert " 204" in out.splitlines()[0]
    assert f"access-control-allow-origin: {ORIGIN}" in out.lower()


# -- the attacker's forms: refused, nothing stored ---------------------------
def refused(s3, bucket, key, result, status, code, message=None):
    st, _, body = result
    assert st == status, body
    assert s3_error_code(body) == code, body
    if message:
        assert message.encode() in body, body
    assert head_or_none(s3, bucket, key) is None


def test_post_expired_policy(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "late", expires=-60)
    refused(s3, bucket, "late", curl_post(url, fields), 403, "AccessDenied",
            "Policy expired")
    form = v2_form(cloud, bucket, [{"key": "late"}], expires_in=-60,
                   extra=[("key", "late")])
    refused(s3, bucket, "late", curl_post(cloud.endpoint + "/" + bucket, form), 403,
            "AccessDenied", "Policy expired")


def test_post_tampered_policy(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "safe/${filename}")
    f = dict(fields)
    doc = json.loads(base64.b64decode(f["policy"]))
    doc["conditions"] = [c for c in doc["conditions"]
                         if not (isinstance(c, list) and c[0] == "starts-with")]
    doc["conditions"].append(["starts-with", "$key", ""])
    f["policy"] = base64.b64encode(json.dumps(doc).encode()).decode()
    f["key"] = "elsewhere"
    refused(s3, bucket, "elsewhere", curl_post(url, list(f.items())), 403,
            "SignatureDoesNotMatch")


def test_post_wrong_signature(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "wrong")
    f = dict(fields)
    sig = f["x-amz-signature"]
    f["x-amz-signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    refused(s3, bucket, "wrong", curl_post(url, list(f.items())), 403,
            "SignatureDoesNotMatch")
    # V2 signed with another secret.
    form = v2_form(cloud, bucket, [{"key": "wrong"}], secret="not-the-secret",
                   extra=[("key", "wrong")])
    refused(s3, bucket, "wrong", curl_post(cloud.endpoint + "/" + bucket, form), 403,
            "SignatureDoesNotMatch")
    # An unknown key id.
    form = [(k, "AKIDNOTKNOWN" if k == "AWSAccessKeyId" else v) for k, v in form]
    refused(s3, bucket, "wrong", curl_post(cloud.endpoint + "/" + bucket, form), 403,
            "InvalidAccessKeyId")


@pytest.mark.parametrize("size", [2048, 3 << 20])
def test_post_over_content_length_range(cloud, s3, bucket, size, s3v4):
    url, fields = presigned_post(s3v4, bucket, "big",
                                 conditions=[["content-length-range", 1, 1024]])
    refused(s3, bucket, "big", curl_post(url, fields, b"z" * size), 400, "EntityTooLarge")
    refused(s3, bucket, "big", curl_post(url, fields, b""), 400, "EntityTooSmall")
    # Within the range: stored.
    assert curl_post(url, fields, b"z" * 1024)[0] == 204
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == 1024


def blob_files(cloud):
    if cloud.blob_root is None:
        pytest.skip("the blobs are in a remote store (EUCA_WALRUS_BLOBS=s3)")
    return {p for p in cloud.blob_root.rglob("*") if p.is_file() and "blobs" in p.parts}


def test_post_over_range_leaves_no_blob(cloud, s3, bucket, s3v4):
    """A file refused mid-stream (past inline size, so already in a new blob) leaves
    neither an object nor a blob or staging file behind."""
    url, fields = presigned_post(s3v4, bucket, "partial",
                                 conditions=[["content-length-range", 0, 1 << 20]])
    before = blob_files(cloud)
    refused(s3, bucket, "partial", curl_post(url, fields, b"q" * (3 << 20)), 400,
            "EntityTooLarge")
    deadline = time.time() + 10
    while blob_files(cloud) - before and time.time() < deadline:
        time.sleep(0.2)  # the abort removes the staging file just after the answer
    assert not blob_files(cloud) - before


def test_post_key_outside_starts_with(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "user/alice/${filename}")
    f = [(k, "user/bob/x" if k == "key" else v) for k, v in fields]
    refused(s3, bucket, "user/bob/x", curl_post(url, f), 403, "AccessDenied",
            "Invalid according to Policy")


def test_post_policy_for_another_bucket(cloud, s3, bucket, s3v4):
    other = bucket + "-b"
    s3.create_bucket(Bucket=other)
    try:
        url, fields = presigned_post(s3v4, other, "moved")
        refused(s3, bucket, "moved", curl_post(cloud.endpoint + "/" + bucket, fields), 403,
                "AccessDenied", "Policy Condition failed")
    finally:
        s3.delete_bucket(Bucket=other)


def test_post_extra_field_not_in_policy(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "extra")
    refused(s3, bucket, "extra", curl_post(url, fields + [("acl", "public-read")]), 403,
            "AccessDenied", "Extra input fields: acl")
    refused(s3, bucket, "extra",
            curl_post(url, fields + [("x-amz-meta-sneaky", "1")]), 403,
            "AccessDenied", "Extra input fields")


def test_post_anonymous(cloud, s3, bucket):
    url = cloud.endpoint + "/" + bucket
    refused(s3, bucket, "anon", curl_post(url, [("key", "anon")]), 403, "AccessDenied")
    # Another account's signed policy does not grant it either.
    other = account_s3(cloud, "postother")
    ourl, ofields = presigned_post(other, bucket, "anon")
    refused(s3, bucket, "anon", curl_post(ourl, ofields), 403, "AccessDenied")
    # A bucket that grants WRITE to everyone takes anonymous forms (S3's rule).
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    status, _, body = curl_post(url, [("key", "anon")], b"hi")
    assert status == 204, body
    assert s3.get_object(Bucket=bucket, Key="anon")["Body"].read() == b"hi"


def test_post_form_limits(cloud, s3, bucket, s3v4):
    url, fields = presigned_post(s3v4, bucket, "limits")
    refused(s3, bucket, "limits", curl_post(url, fields + [("x-ignore-pad", "p" * 21000)]),
            400, "MaxPostPreDataLengthExceeded")
    # Many tiny fields (they cost almost no field bytes): capped by number.
    many = [(f"x-ignore-{i}", (None, "")) for i in range(1001)]
    r = requests.post(url, files=list(fields_as_parts(fields)) + many + [("file", ("f", b"x"))],
                      timeout=60)
    assert r.status_code == 400 and s3_error_code(r.content) == "InvalidArgument", r.text
    # The same form without them is fine (requests is a client too).
    r = requests.post(url, files=list(fields_as_parts(fields)) + [("file", ("f", b"x"))],
                      timeout=60)
    assert r.status_code == 204, r.text
    s3.delete_object(Bucket=bucket, Key="limits")
    # No file part at all.
    r = requests.post(url, files={k: (None, v) for k, v in fields}, timeout=30)
    assert r.status_code == 400 and s3_error_code(r.content) == "InvalidArgument"
    # Not a form.
    r = requests.post(url, data=b"key=limits", timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 412 and s3_error_code(r.content) == "PreconditionFailed"
    assert head_or_none(s3, bucket, "limits") is None


def test_virtual_host_addressing(cloud, s3, bucket, s3v4):
    """The bucket named by Host: preflight, POST upload and its CORS headers."""
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    host = f"{bucket}.s3.localhost:{cloud.port}"
    r = requests.options(cloud.endpoint + "/obj", timeout=30, headers={
        "Host": host, "Origin": ORIGIN, "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN, r.text
    url, fields = presigned_post(s3v4, bucket, "vh")
    r = requests.post(cloud.endpoint + "/", headers={"Host": host, "Origin": ORIGIN},
                      files=fields_as_parts(fields) + [("file", ("f", b"v"))], timeout=30)
    assert r.status_code == 204, r.text
    assert r.headers["Location"] == f"http://{host}/vh"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert s3.get_object(Bucket=bucket, Key="vh")["Body"].read() == b"v"


def test_post_field_names_and_operators_are_case_insensitive(cloud, s3, bucket):
    conds = [["StArTs-WiTh", "$KeY", "ci/"], {"AcL": "private"}]
    form = v2_form(cloud, bucket, conds, extra=[("kEy", "ci/x"), ("aCl", "private")])
    form = [("AwSaCcEsSkEyId" if k == "AWSAccessKeyId" else k, v) for k, v in form]
    status, _, body = curl_post(cloud.endpoint + "/" + bucket, form, b"ci")
    assert status == 204, body
    assert s3.get_object(Bucket=bucket, Key="ci/x")["Body"].read() == b"ci"
    # Values are not: a condition on `Private` does not hold for `private`.
    form = v2_form(cloud, bucket, [["starts-with", "$key", "ci/"], {"acl": "Private"}],
                   extra=[("key", "ci/y"), ("acl", "private")])
    refused(s3, bucket, "ci/y", curl_post(cloud.endpoint + "/" + bucket, form), 403,
            "AccessDenied", "Policy Condition failed")


def test_post_tagging_field(cloud, s3, bucket, s3v4):
    tagging = ("<Tagging><TagSet><Tag><Key>team</Key><Value>web</Value></Tag>"
               "</TagSet></Tagging>")
    url, fields = presigned_post(s3v4, bucket, "tagged", fields={"tagging": tagging},
                                 conditions=[{"tagging": tagging}])
    status, _, body = curl_post(url, fields, b"t")
    assert status == 204, body
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [
        {"Key": "team", "Value": "web"}]
    bad = "<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>"
    url, fields = presigned_post(s3v4, bucket, "badtag", fields={"tagging": bad},
                                 conditions=[{"tagging": bad}])
    refused(s3, bucket, "badtag", curl_post(url, fields, b"t"), 400, "MalformedXML")


def test_post_bucket_policy_that_denies(cloud, s3, bucket, s3v4):
    """A valid form whose signer a bucket policy denies s3:PutObject is refused."""
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                       "Resource": f"arn:aws:s3:::{bucket}/denied/*"}]}))
    try:
        url, fields = presigned_post(s3v4, bucket, "denied/x")
        refused(s3, bucket, "denied/x", curl_post(url, fields), 403, "AccessDenied")
        url, fields = presigned_post(s3v4, bucket, "open/x")
        assert curl_post(url, fields)[0] == 204
    finally:
        s3.delete_bucket_policy(Bucket=bucket)
