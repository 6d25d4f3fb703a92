#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ from what real clients send.

botocore builds and signs each request exactly as it would for a server, and a
`before-send` hook captures it instead of sending it. Request heads (request line +
headers, as on the wire) seed `aws_auth`; XML bodies seed `s3_xml`. The keys are
the fuzz targets' fixed test credentials (fuzz/src/lib.rs). The other targets' seeds
(aws-chunked bodies signed with the aws_chunked target's signer, EC2 form bodies, NBD
messages, the euca2ools fixture manifests from ../shared/fixtures/euca-bundle or
$EUCA_BUNDLE_FIXTURES) are written here too.
Usage: python3 fuzz/seeds/gen_seeds.py   (overwrites the seeds it writes)
"""
import hashlib
import os
import sys
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
AK, SK = "AKIDFUZZEXAMPLE", "fuzz/secret+key"
ENDPOINT = "http://127.0.0.1:8773"


class Captured(Exception):
    pass


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def head_bytes(req):
    u = urlsplit(req.url)
    target = (u.path or "/") + (("?" + u.query) if u.query else "")
    lines = [f"{req.method} {target} HTTP/1.1", f"Host: {u.netloc}"]
    for k, v in req.headers.items():
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client(sig="s3v4"):
    c = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        region_name="us-east-1",
        config=Config(signature_version=sig, s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}),
    )
    return c


def capture(c, op, **kw):
    got = {}

    def hook(request, **_):
        got["req"] = request
        return AWSResponse(request.url, 200, {}, None)

    c.meta.events.register("before-send", hook)
    try:
        getattr(c, op)(**kw)
    except Exception:
        pass  # the fake response does not parse; the request is what we want
    c.meta.events.unregister("before-send", hook)
    return got["req"]


def body_of(req):
    b = req.body
    if b is None:
        return b""
    if hasattr(b, "read"):
        b = b.read()
    return b if isinstance(b, bytes) else b.encode()


def main():
    v4 = client()
    cases = {
        "delete-objects": ("delete_objects", dict(Bucket="b", Delete={"Objects": [
            {"Key": " "}, {"Key": "_ "}, {"Key": "a\n"}, {"Key": "\tb"}, {"Key": "c\r\n"},
            {"Key": "k&<>\"'é"}], "Quiet": True})),
        "complete-multipart": ("complete_multipart_upload", dict(
            Bucket="b", Key="big file", UploadId="upl-1", MultipartUpload={"Parts": [
                {"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'},
                {"PartNumber": 2, "ETag": '"fedcba9876543210fedcba9876543210"'}]})),
        "put-bucket-acl": ("put_bucket_acl", dict(Bucket="b", AccessControlPolicy={
            "Owner": {"ID": "owner-canonical-id", "DisplayName": "owner"},
            "Grants": [
                {"Grantee": {"Type": "CanonicalUser", "ID": "owner-canonical-id"},
                 "Permission": "FULL_CONTROL"},
                {"Grantee": {"Type": "Group",
                             "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                 "Permission": "READ"}]})),
        "create-bucket-config": ("create_bucket", dict(
            Bucket="b", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})),
        "put-object": ("put_object", dict(Bucket="b", Key="dir/a key+é~", Body=b"hello")),
        "list-v2": ("list_objects_v2", dict(Bucket="b", Prefix="a b/é", Delimiter="/",
                                            MaxKeys=0, StartAfter="x&y=z")),
        "get-range": ("get_object", dict(Bucket="b", Key="k%2F?x", Range="bytes=0-9")),
        "upload-part": ("upload_part", dict(Bucket="b", Key="k", UploadId="u", PartNumber=3,
                                            Body=b"part")),
    }
    for name, (op, kw) in cases.items():
        req = capture(v4, op, **kw)
        write("aws_auth", f"boto3-v4-{name}", head_bytes(req))
        body = body_of(req)
        if body.lstrip().startswith(b"<"):
            write("s3_xml", f"boto3-{name}.xml", body)
    v2 = client("s3")
    for name in ("put-object", "delete-objects", "list-v2"):
        op, kw = cases[name]
        write("aws_auth", f"boto3-v2-{name}", head_bytes(capture(v2, op, **kw)))
    for sig, tag in (("s3v4", "v4"), ("s3", "v2")):
        url = client(sig).generate_presigned_url(
            "get_object", Params={"Bucket": "b", "Key": "a key/é"}, ExpiresIn=3600)
        u = urlsplit(url)
        head = f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n"
        write("aws_auth", f"boto3-presigned-{tag}", head.encode())
    other_seeds()
    print("seeds written under", os.path.normpath(ROOT))


def chunk_signing_key():
    import hmac

    def h(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()
    k = h(("AWS4" + SK).encode(), "20261203")
    for part in ("us-east-1", "s3", "aws4_request"):
        k = h(k, part)
    return k


def chunked(data, sizes, signed, trailers):
    """An aws-chunked body as SDKs frame it, signed with the aws_chunked target's signer."""
    import hmac
    key, prev = chunk_signing_key(), "0" * 64
    scope = "20261203T000000Z\n20261203/us-east-1/s3/aws4_request\n"
    empty = hashlib.sha256(b"").hexdigest()
    out, at = b"", 0
    for n in sizes + [0]:
        piece = data[at:at + n]
        at += n
        line = b"%x" % len(piece)
        if signed:
            sts = f"AWS4-HMAC-SHA256-PAYLOAD\n{scope}{prev}\n{empty}\n{hashlib.sha256(piece).hexdigest()}"
            prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            line += b";chunk-signature=" + prev.encode()
        out += line + b"\r\n" + piece + (b"\r\n" if piece else b"")
    canon = "".join(f"{k}:{v}\n" for k, v in trailers)
    for k, v in trailers:
        out += f"{k}:{v}\r\n".encode()
    if signed and trailers:
        sts = f"AWS4-HMAC-SHA256-TRAILER\n{scope}{prev}\n{hashlib.sha256(canon.encode()).hexdigest()}"
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"x-amz-trailer-signature:{sig}\r\n".encode()
    return out + b"\r\n"


def other_seeds():
    data = b"hello world, " * 20
    crc = [("x-amz-checksum-crc32", "DUoRhQ==")]
    # aws_chunked: byte 0 = mode (1 signed, 2 trailer, 4 round trip), byte 1 = split seed.
    write("aws_chunked", "unsigned-trailer", b"\x02\x07" + chunked(data, [100, 100, 60], False, crc))
    write("aws_chunked", "signed", b"\x01\x03" + chunked(data, [128, 132], True, []))
    write("aws_chunked", "signed-trailer", b"\x03\x05" + chunked(data, [200, 60], True, crc))
    write("aws_chunked", "roundtrip", b"\x07\x09" + data)
    # form_query: EC2-style form bodies and S3 query strings.
    write("form_query", "ec2-form", b"Action=RunInstances&ImageId=emi-12345678&MinCount=1&MaxCount=1"
          b"&UserData=SGVsbG8%3D&TagSpecification.1.Tag.1.Value=a+b%20c&Version=2016-11-15")
    write("form_query", "s3-query", b"list-type=2&prefix=a%20b%2F%C3%A9&delimiter=%2F&max-keys=0"
          b"&encoding-type=url&continuation-token=&acl&x=%zz%&=v")
    # nbd_decode: a READ request header, an INFO/GO payload, a SET_META_CONTEXT payload.
    import struct
    write("nbd_decode", "read-request", struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 4096, 512))
    write("nbd_decode", "go-payload", struct.pack(">I", 3) + b"vol" + struct.pack(">HHH", 2, 1, 3))
    q = b"base:allocation"
    write("nbd_decode", "meta-payload", struct.pack(">I", 3) + b"vol" + struct.pack(">I", 1)
          + struct.pack(">I", len(q)) + q)
    # bundle_manifest: the euca2ools fixture manifests.
    fx = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                      "shared", "fixtures", "euca-bundle")
    fx = os.environ.get("EUCA_BUNDLE_FIXTURES", fx)
    for b in ("bundle-default", "bundle-1MiB-parts"):
        path = os.path.join(fx, b, "fixture.img.manifest.xml")
        if os.path.exists(path):
            with open(path, "rb") as f:
                write("bundle_manifest", f"euca2ools-{b}.xml", f.read())
    # s3_xml: what s3cmd and awscli send (pretty-printed and with a declaration).
    write("s3_xml", "s3cmd-delete.xml", b'<?xml version="1.0" encoding="UTF-8"?>\n<Delete>'
          b"<Object><Key>dir/a b.txt</Key></Object><Object><Key>x&amp;y</Key></Object></Delete>")
    write("s3_xml", "pretty-complete.xml", b'<?xml version="1.0" encoding="UTF-8"?>\n'
          b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\n'
          b"  <Part>\n    <PartNumber>1</PartNumber>\n    <ETag>\"a54357aff0632cce46d942af68356b38\"</ETag>\n"
          b"  </Part>\n</CompleteMultipartUpload>\n")
    write("s3_xml", "acl-xsi.xml", b'<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
          b"<Owner><ID>owner-canonical-id</ID></Owner><AccessControlList><Grant>"
          b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
          b"<ID>owner-canonical-id</ID><DisplayName>owner</DisplayName></Grantee>"
          b"<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>")


if __name__ == "__main__":
    sys.exit(main())
