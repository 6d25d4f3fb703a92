"""Server-side encryption with boto3 and awscli: SSE-C (customer keys, never stored),
SSE-S3 (envelope encryption under the cloud master key) and bucket default
encryption. Checked as an attacker with the data directory would: the plaintext and
the customer's key appear in no file under it, the master key file is 0600, a
missing or wrong key gets nothing back.

One module cloud with `[walrus] sse_customer_keys_over_http = true` (the test
clients speak plain HTTP on loopback); the shared cloud, with the default, shows
that SSE-C over plain HTTP is refused."""
import base64
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import start_cloud, with_short_guest_shutdown
from helpers_clients import aws
from test_s3_cors_post import curl_post, presigned_post

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def sse_cloud():
    tmp = tempfile.mkdtemp(prefix="euca-sse-")
    cfg = Path(tmp) / "euca.toml"
    cfg.write_text(with_short_guest_shutdown(
        "[walrus]\nsse_customer_keys_over_http = true\nkms_key_ids = [\"app-key\"]\n"))
    c = start_cloud(tmp, ["--config", str(cfg)])
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def s3e(sse_cloud):
    return sse_cloud.boto3()


_n = [0]


def new_bucket(s3):
    _n[0] += 1
    name = f"sse-{os.getpid()}-{_n[0]}"
    s3.create_bucket(Bucket=name)
    return name


def err(call):
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def md5_b64(b):
    return base64.b64encode(hashlib.md5(b).digest()).decode()


def marked(marker, size):
    """`size` bytes that repeat `marker` (so a grep of the disk finds any plaintext)."""
    return (marker * (size // len(marker) + 1))[:size]


def files_containing(root, needles):
    """Every file under `root` that contains one of `needles` (bytes)."""
    hits = []
    for p in Path(root).rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [(str(p), n) for n in needles if n in data]
    return hits


def ssec(key):
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_sse_c_round_trip_ranges_copies_and_refusals(sse_cloud, s3e, tmp_path):
    s3, b = s3e, new_bucket(s3e)
    key, wrong = os.urandom(32), os.urandom(32)
    marker = b"SSEC-PLAINTEXT-MARKER-" + os.urandom(6).hex().encode()
    big, small = marked(marker, 300 * 1024 + 7), marked(marker, 1000)

    for k, body in (("big", big), ("small", small)):
        r = s3.put_object(Bucket=b, Key=k, Body=body, **ssec(key))
        assert r["SSECustomerAlgorithm"] == "AES256"
        assert r["SSECustomerKeyMD5"] == md5_b64(key)
        # Not the plaintext's MD5 (that would let a lister confirm guesses).
        assert r["ETag"].strip('"') != hashlib.md5(body).hexdigest()
        g = s3.get_object(Bucket=b, Key=k, **ssec(key))
        assert g["Body"].read() == body
        assert g["SSECustomerKeyMD5"] == md5_b64(key) and g["ETag"] == r["ETag"]
    g = s3.get_object(Bucket=b, Key="big", Range="bytes=70001-250123", **ssec(key))
    assert g["Body"].read() == big[70001:250124]
    g = s3.get_object(Bucket=b, Key="big", Range="bytes=-5", **ssec(key))
    assert g["Body"].read() == big[-5:]
    h = s3.head_object(Bucket=b, Key="big", **ssec(key))
    assert h["ContentLength"] == len(big) and h["SSECustomerAlgorithm"] == "AES256"

    # No key: 400 InvalidRequest; a wrong key: 403; a key for a plain object: 400.
    assert err(lambda: s3.get_object(Bucket=b, Key="big")) == ("InvalidRequest", 400)
    assert err(lambda: s3.head_object(Bucket=b, Key="big"))[1] == 400
    assert err(lambda: s3.get_object(Bucket=b, Key="big", **ssec(wrong))) == ("AccessDenied", 403)
    assert err(lambda: s3.head_object(Bucket=b, Key="small", **ssec(wrong)))[1] == 403
    assert err(lambda: s3.get_object(Bucket=b, Key="big", IfMatch="x", **ssec(wrong)))[1] == 403
    s3.put_object(Bucket=b, Key="plain", Body=marked(marker, 6 * MiB))
    assert err(lambda: s3.get_object(Bucket=b, Key="plain", **ssec(key)))[1] == 400
    # A key whose MD5 is not the one sent is refused before anything is stored.
    bad_md5 = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
               "SSECustomerKeyMD5": md5_b64(wrong)}
    assert err(lambda: s3.put_object(Bucket=b, Key="x", Body=b"x", **bad_md5)) == ("InvalidArgument", 400)
    assert err(lambda: s3.put_object(Bucket=b, Key="x", Body=b"x", ServerSideEncryption="AES256",
                                     **ssec(key)))[1] == 400

    # Its attributes (checksums are of the plaintext) only with its key.
    # (botocore encodes the key itself only for GET/PUT-like operations.)
    def encoded(k):
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(k).decode(),
                "SSECustomerKeyMD5": md5_b64(k)}
    attrs = {"Bucket": b, "Key": "small", "ObjectAttributes": ["ObjectSize"]}
    assert err(lambda: s3.get_object_attributes(**attrs)) == ("InvalidRequest", 400)
    assert err(lambda: s3.get_object_attributes(**attrs, **encoded(wrong)))[1] == 403
    assert s3.get_object_attributes(**attrs, **encoded(key))["ObjectSize"] == len(small)

    # Copies re-encrypt to what the destination asks for.
    src = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}
    assert err(lambda: s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "big"}))[1] == 400
    assert err(lambda: s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "big"},
                                      CopySourceSSECustomerAlgorithm="AES256",
                                      CopySourceSSECustomerKey=wrong))[1] == 403
    r = s3.copy_object(Bucket=b, Key="to-s3", CopySource={"Bucket": b, "Key": "big"},
                       ServerSideEncryption="AES256", **src)
    assert r["ServerSideEncryption"] == "AES256"
    g = s3.get_object(Bucket=b, Key="to-s3")
    assert g["Body"].read() == big and g["ETag"].strip('"') == hashlib.md5(big).hexdigest()
    r = s3.copy_object(Bucket=b, Key="to-plain", CopySource={"Bucket": b, "Key": "small"}, **src)
    assert "ServerSideEncryption" not in r and "SSECustomerAlgorithm" not in r
    assert s3.get_object(Bucket=b, Key="to-plain")["Body"].read() == small
    key2 = os.urandom(32)
    s3.copy_object(Bucket=b, Key="rekeyed", CopySource={"Bucket": b, "Key": "big"},
                   **src, **ssec(key2))
    assert s3.get_object(Bucket=b, Key="rekeyed", **ssec(key2))["Body"].read() == big
    assert err(lambda: s3.get_object(Bucket=b, Key="rekeyed", **ssec(key)))[1] == 403

    # Multipart: every part under the same key, a part copied from a plain object,
    # ranges within and across parts.
    up = s3.create_multipart_upload(Bucket=b, Key="mp", **ssec(key))
    assert up["SSECustomerKeyMD5"] == md5_b64(key)
    uid = up["UploadId"]
    p1, p3 = marked(marker, 5 * MiB + 3), marked(marker[::-1], 1234)
    e1 = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=p1, **ssec(key))["ETag"]
    assert err(lambda: s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=2, Body=b"x"))[1] == 400
    assert err(lambda: s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=2, Body=b"x",
                                      **ssec(wrong)))[1] == 403
    e2 = s3.upload_part_copy(Bucket=b, Key="mp", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": b, "Key": "plain"},
                             CopySourceRange=f"bytes=0-{5 * MiB}", **ssec(key))["CopyPartResult"]["ETag"]
    p2 = marked(marker, 6 * MiB)[:5 * MiB + 1]
    e3 = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=3, Body=p3, **ssec(key))["ETag"]
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}]})
    whole = p1 + p2 + p3
    assert s3.get_object(Bucket=b, Key="mp", **ssec(key))["Body"].read() == whole
    for lo, hi in ((5 * MiB - 10, 5 * MiB + 20), (len(p1) + len(p2) - 3, len(whole) - 1), (17, 18)):
        g = s3.get_object(Bucket=b, Key="mp", Range=f"bytes={lo}-{hi}", **ssec(key))
        assert g["Body"].read() == whole[lo:hi + 1], (lo, hi)
    g = s3.get_object(Bucket=b, Key="mp", PartNumber=3, **ssec(key))
    assert g["Body"].read() == p3
    assert err(lambda: s3.get_object(Bucket=b, Key="mp"))[1] == 400

    # awscli (v2) uploads and downloads with its own SSE-C options.
    keyfile = tmp_path / "key.bin"
    keyfile.write_bytes(key)
    src_file, out = tmp_path / "in.bin", tmp_path / "out.bin"
    src_file.write_bytes(small)
    aws(sse_cloud, "v2", "s3", "cp", "--no-progress", str(src_file), f"s3://{b}/cli",
        "--sse-c", "AES256", "--sse-c-key", f"fileb://{keyfile}")
    aws(sse_cloud, "v2", "s3", "cp", "--no-progress", f"s3://{b}/cli", str(out),
        "--sse-c", "AES256", "--sse-c-key", f"fileb://{keyfile}")
    assert out.read_bytes() == small
    assert aws(sse_cloud, "v2", "s3", "cp", f"s3://{b}/cli", str(out), check=False).returncode != 0

    # Neither the plaintext nor the keys (raw, base64, or their MD5) are on disk.
    needles = [marker, marker[::-1], key, key2, base64.b64encode(key), base64.b64encode(key2),
               md5_b64(key).encode(), hashlib.md5(key).digest()]
    assert files_containing(sse_cloud.data, needles[2:]) == []
    hits = files_containing(sse_cloud.data, needles[:2])
    # Only the two plain objects ("plain", "to-plain") show it, each in its blob.
    assert all(Path(p).parent.parent.name == "blobs" for p, _ in hits), hits
    assert len(hits) == 2, hits


def post_ssec(cloud, bucket, key, ckey, change=None):
    """A browser POST form for KEY with SSE-C fields for CKEY (CHANGE: fields replaced,
    or dropped where None), every field covered by the policy."""
    f = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
         "x-amz-server-side-encryption-customer-key": base64.b64encode(ckey).decode(),
         "x-amz-server-side-encryption-customer-key-MD5": md5_b64(ckey)}
    for k, v in (change or {}).items():
        if v is None:
            f.pop(k)
        else:
            f[k] = v
    return presigned_post(cloud.boto3(signature_version="s3v4"), bucket, key, fields=f,
                          conditions=[{k: v} for k, v in f.items()])


def test_sse_c_needs_tls_by_default(cloud, s3, bucket):
    key = os.urandom(32)
    assert err(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", **ssec(key))) == \
        ("InvalidRequest", 400)
    # A browser POST form's SSE-C fields too.
    url, fields = post_ssec(cloud, bucket, "posted", key)
    status, _, body = curl_post(url, fields, b"x")
    body = body if isinstance(body, str) else body.decode()
    assert status == 400 and "InvalidRequest" in body, (status, body)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert err(lambda: s3.get_object(Bucket=bucket, Key="k", **ssec(key))) == ("InvalidRequest", 400)


def test_sse_s3_bucket_default_and_master_key(sse_cloud, s3e):
    s3, b = s3e, new_bucket(s3e)
    marker = b"SSES3-PLAINTEXT-MARKER-" + os.urandom(6).hex().encode()
    body = marked(marker, 2 * MiB + 5)
    r = s3.put_object(Bucket=b, Key="k", Body=body, ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256"
    assert r["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    g = s3.get_object(Bucket=b, Key="k", Range="bytes=1000000-1500000")
    assert g["ServerSideEncryption"] == "AES256" and g["Body"].read() == body[1000000:1500001]
    assert s3.head_object(Bucket=b, Key="k")["ServerSideEncryption"] == "AES256"
    # A read that names an encryption is refused, as S3 refuses it (only SSE-C keys
    # go with reads); HEAD's error has no body, so only its status tells.
    def add_sse(request, **_):
        request.headers["x-amz-server-side-encryption"] = "AES256"
    s3.meta.events.register("before-sign.s3", add_sse)
    try:
        assert err(lambda: s3.get_object(Bucket=b, Key="k")) == ("InvalidArgument", 400)
        assert err(lambda: s3.head_object(Bucket=b, Key="k"))[1] == 400
    finally:
        s3.meta.events.unregister("before-sign.s3", add_sse)

    # Bucket default: none yet; then applied to PUTs, copies and multipart uploads
    # that name no encryption; owner only; deleted, new writes are plain again.
    assert err(lambda: s3.get_bucket_encryption(Bucket=b)) == \
        ("ServerSideEncryptionConfigurationNotFoundError", 404)
    # A plain object, with a marker of its own.
    plain = marked(b"SSES3-PLAIN-MARKER-" + os.urandom(6).hex().encode(), 40000)
    s3.put_object(Bucket=b, Key="plain", Body=plain)
    rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration=rule)
    got = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]
    assert got["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    other = sse_cloud.new_account(f"sse{os.getpid()}")
    o = sse_cloud.boto3(access_key=other["AWS_ACCESS_KEY_ID"], secret_key=other["AWS_SECRET_ACCESS_KEY"])
    assert err(lambda: o.get_bucket_encryption(Bucket=b)) == ("AccessDenied", 403)
    assert err(lambda: o.delete_bucket_encryption(Bucket=b)) == ("AccessDenied", 403)
    assert err(lambda: o.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration=rule)) == \
        ("AccessDenied", 403)

    small = marked(marker, 100)  # small enough to be inlined if it were plain
    assert s3.put_object(Bucket=b, Key="d", Body=small)["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=b, Key="d")["Body"].read() == small
    # A browser POST upload gets the default too.
    url, fields = presigned_post(sse_cloud.boto3(signature_version="s3v4"), b, "posted")
    status, headers, _ = curl_post(url, fields, small)
    assert status == 204 and headers["x-amz-server-side-encryption"] == "AES256"
    assert s3.get_object(Bucket=b, Key="posted")["Body"].read() == small
    # A form with SSE-C fields stores the object under the customer's key (the bucket
    # default does not apply); a key whose MD5 is not the one sent, or an algorithm
    # alone, is refused and nothing is stored.
    ckey = os.urandom(32)
    url, fields = post_ssec(sse_cloud, b, "posted-c", ckey)
    status, headers, body = curl_post(url, fields, small)
    assert status == 204, (status, body)
    assert headers["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
    assert headers["x-amz-server-side-encryption-customer-key-md5"] == md5_b64(ckey)
    assert "x-amz-server-side-encryption" not in headers
    assert err(lambda: s3.get_object(Bucket=b, Key="posted-c"))[1] == 400
    assert err(lambda: s3.get_object(Bucket=b, Key="posted-c", **ssec(os.urandom(32))))[1] == 403
    assert s3.get_object(Bucket=b, Key="posted-c", **ssec(ckey))["Body"].read() == small
    for bad in ({"x-amz-server-side-encryption-customer-key-MD5": md5_b64(os.urandom(32))},
                {"x-amz-server-side-encryption-customer-key": None,
                 "x-amz-server-side-encryption-customer-key-MD5": None},
                # A KMS key id beside an SSE-C key, as with headers.
                {"x-amz-server-side-encryption-aws-kms-key-id": "aws/s3"}):
        url, fields = post_ssec(sse_cloud, b, "posted-bad", ckey, bad)
        status, _, body = curl_post(url, fields, small)
        body = body if isinstance(body, str) else body.decode()
        assert status == 400 and "InvalidArgument" in body, (status, body)
    assert err(lambda: s3.head_object(Bucket=b, Key="posted-bad"))[1] == 404
    r = s3.copy_object(Bucket=b, Key="copied", CopySource={"Bucket": b, "Key": "plain"})
    assert r["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=b, Key="copied")["Body"].read() == plain
    up = s3.create_multipart_upload(Bucket=b, Key="mp")
    assert up["ServerSideEncryption"] == "AES256"
    p1, p2 = marked(marker, 5 * MiB), marked(marker, 77)
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                                      PartNumber=n, Body=p)["ETag"]}
             for n, p in ((1, p1), (2, p2))]
    # An SSE-C key on the completion of an upload that is not SSE-C is refused; the
    # upload stays and completes without it.
    assert err(lambda: s3.complete_multipart_upload(
        Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts},
        **ssec(os.urandom(32)))) == ("InvalidRequest", 400)
    done = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    assert done["ServerSideEncryption"] == "AES256"
    g = s3.get_object(Bucket=b, Key="mp", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 3}")
    assert g["Body"].read() == (p1 + p2)[5 * MiB - 3:5 * MiB + 4]
    # The plain object, copied onto itself asking for encryption, is encrypted.
    s3.copy_object(Bucket=b, Key="plain", CopySource={"Bucket": b, "Key": "plain"},
                   ServerSideEncryption="AES256")
    h = s3.head_object(Bucket=b, Key="plain")
    assert h["ServerSideEncryption"] == "AES256" and h["ETag"].strip('"') == hashlib.md5(plain).hexdigest()

    r = aws(sse_cloud, "v2", "--output", "json", "s3api", "get-bucket-encryption", "--bucket", b)
    assert "AES256" in r.stdout
    s3.delete_bucket_encryption(Bucket=b)
    assert err(lambda: s3.get_bucket_encryption(Bucket=b))[1] == 404
    assert "ServerSideEncryption" not in s3.put_object(Bucket=b, Key="after", Body=b"x")

    # Versioning keeps each version's own encryption.
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="v", Body=small, ServerSideEncryption="AES256")["VersionId"]
    s3.put_object(Bucket=b, Key="v", Body=b"second")
    g = s3.get_object(Bucket=b, Key="v", VersionId=v1)
    assert g["Body"].read() == small and g["ServerSideEncryption"] == "AES256"

    # At rest: no plaintext anywhere (but the plain object's blob, which its
    # encrypted copy onto itself frees a little later); the master key: 32 bytes, 0600.
    assert files_containing(sse_cloud.data, [marker]) == []
    assert len(files_containing(sse_cloud.data, [plain[:40]])) <= 1
    masters = list(Path(sse_cloud.data).rglob("sse-master.key"))
    assert len(masters) == 1
    assert stat.S_IMODE(masters[0].stat().st_mode) == 0o600 and masters[0].stat().st_size == 32


def test_sse_kms_keys_the_cloud_keeps(sse_cloud, s3e):
    """SSE-KMS with Walrus as its own key service: `aws/s3` (no key id) and the
    configured `app-key`; an unknown id is KMS.NotFoundException; a key id without
    aws:kms is refused; the bucket default may name a key; multipart uploads, ranges
    and copies work; nothing is stored in the clear."""
    s3, b = s3e, new_bucket(s3e)
    marker = b"SSEKMS-PLAINTEXT-MARKER-" + os.urandom(6).hex().encode()
    body = marked(marker, 300 * 1024 + 11)
    r = s3.put_object(Bucket=b, Key="d", Body=body, ServerSideEncryption="aws:kms")
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == "aws/s3"
    # As in S3, an SSE-KMS object's ETag is not its MD5.
    assert r["ETag"].strip('"') != hashlib.md5(body).hexdigest()
    r = s3.put_object(Bucket=b, Key="k", Body=body, ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="app-key")
    assert r["SSEKMSKeyId"] == "app-key"
    g = s3.get_object(Bucket=b, Key="k", Range="bytes=1000-200000")
    assert g["ServerSideEncryption"] == "aws:kms" and g["SSEKMSKeyId"] == "app-key"
    assert g["Body"].read() == body[1000:200001]
    assert s3.head_object(Bucket=b, Key="d")["SSEKMSKeyId"] == "aws/s3"
    assert err(lambda: s3.put_object(Bucket=b, Key="x", Body=b"x", ServerSideEncryption="aws:kms",
                                     SSEKMSKeyId="nobody-key")) == ("KMS.NotFoundException", 400)
    assert err(lambda: s3.put_object(Bucket=b, Key="x", Body=b"x",
                                     SSEKMSKeyId="app-key")) == ("InvalidArgument", 400)
    assert err(lambda: s3.put_object(Bucket=b, Key="x", Body=b"x", ServerSideEncryption="AES256",
                                     SSEKMSKeyId="app-key")) == ("InvalidArgument", 400)
    assert err(lambda: s3.head_object(Bucket=b, Key="x"))[1] == 404
    # An SSE-C key is no key for it.
    assert err(lambda: s3.get_object(Bucket=b, Key="k", **ssec(os.urandom(32))))[1] == 400

    # The bucket default names the key; writes that name none get it, multipart too.
    default = {"Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "app-key"}}]}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration=default)
    got = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]
    assert got["Rules"][0]["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == "app-key"
    unknown = {"Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "nobody-key"}}]}
    assert err(lambda: s3.put_bucket_encryption(
        Bucket=b, ServerSideEncryptionConfiguration=unknown)) == ("KMS.NotFoundException", 400)
    assert s3.put_object(Bucket=b, Key="p", Body=body)["SSEKMSKeyId"] == "app-key"
    up = s3.create_multipart_upload(Bucket=b, Key="mp")
    assert up["ServerSideEncryption"] == "aws:kms" and up["SSEKMSKeyId"] == "app-key"
    p1, p2 = marked(marker, 5 * MiB), marked(marker, 99)
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                                      PartNumber=n, Body=p)["ETag"]}
             for n, p in ((1, p1), (2, p2))]
    done = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    assert done["SSEKMSKeyId"] == "app-key"
    g = s3.get_object(Bucket=b, Key="mp", Range=f"bytes={5 * MiB - 5}-{5 * MiB + 5}")
    assert g["Body"].read() == (p1 + p2)[5 * MiB - 5:5 * MiB + 6]
    # A copy re-encrypts as its destination says: here to SSE-S3.
    c = s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "d"},
                       ServerSideEncryption="AES256")
    assert c["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=b, Key="c")["Body"].read() == body
    s3.delete_bucket_encryption(Bucket=b)
    assert files_containing(sse_cloud.data, [marker]) == []
