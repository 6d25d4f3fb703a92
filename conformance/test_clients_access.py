"""ACLs, anonymous access, presigned URLs, second accounts and addressing styles
(virtual-hosted, legacy /services/Walrus prefix), driven by boto3, curl and requests."""
import hashlib
import os
import urllib.parse

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers_clients import (curl, list_keys, nuke_bucket, s3_error_code, sha256_bytes,
                             unique_name, xml_find_all)

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


def err(excinfo):
    e = excinfo.value
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def grants(acl):
    """{(grantee id or group uri, permission)} of a Get*Acl response."""
    out = set()
    for g in acl["Grants"]:
        ge = g["Grantee"]
        out.add((ge.get("ID") or ge.get("URI") or ge.get("EmailAddress"), g["Permission"]))
    return out


def obj_url(cloud, bucket, key, prefix=""):
    return f"{cloud.endpoint}{prefix}/{bucket}/{urllib.parse.quote(key)}"


def s3_client(cloud, endpoint, access_key=None, secret_key=None, style="path", **cfg):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=cloud.region,
        aws_access_key_id=access_key or cloud.access_key,
        aws_secret_access_key=secret_key or cloud.secret_key,
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}, **cfg))


_acct_n = [0]


@pytest.fixture()
def other(cloud):
    """A second account: (creds dict, boto3 client, canonical id)."""
    _acct_n[0] += 1
    name = f"other{os.getpid()}x{_acct_n[0]}"
    creds = cloud.new_account(name)
    assert creds.get("AWS_ACCESS_KEY_ID") and creds.get("AWS_SECRET_ACCESS_KEY"), creds
    assert creds["AWS_ACCESS_KEY_ID"] != cloud.access_key
    client = cloud.boto3(access_key=creds["AWS_ACCESS_KEY_ID"],
                         secret_key=creds["AWS_SECRET_ACCESS_KEY"])
    canon = client.list_buckets()["Owner"]["ID"]
    assert canon
    if creds.get("CANONICAL_ID"):
        assert canon == creds["CANONICAL_ID"]
    return creds, client, canon


# ---------------------------------------------------------------------------
# ACLs
# ---------------------------------------------------------------------------

def test_bucket_acl_canned_and_policy(s3, bucket):
    owner = s3.list_buckets()["Owner"]["ID"]
    acl = s3.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"]["ID"] == owner
    assert grants(acl) == {(owner, "FULL_CONTROL")}

    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(owner, "FULL_CONTROL"),
                                                         (ALL_USERS, "READ")}
    s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(owner, "FULL_CONTROL"),
                                                         (AUTH_USERS, "READ")}
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(owner, "FULL_CONTROL")}

    # Full AccessControlPolicy body.
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy={
        "Owner": {"ID": owner},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": owner}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ_ACP"},
        ]})
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(owner, "FULL_CONTROL"),
                                                         (ALL_USERS, "READ_ACP")}

    # Canned ACL at creation time.
    name = unique_name("acl")
    try:
        s3.create_bucket(Bucket=name, ACL="public-read")
        assert (ALL_USERS, "READ") in grants(s3.get_bucket_acl(Bucket=name))
    finally:
        nuke_bucket(s3, name)


def test_object_acl_canned_and_grants(s3, bucket, other):
    _, _, other_id = other
    owner = s3.list_buckets()["Owner"]["ID"]
    s3.put_object(Bucket=bucket, Key="o", Body=b"acl", ACL="public-read")
    acl = s3.get_object_acl(Bucket=bucket, Key="o")
    assert acl["Owner"]["ID"] == owner
    assert grants(acl) == {(owner, "FULL_CONTROL"), (ALL_USERS, "READ")}

    s3.put_object_acl(Bucket=bucket, Key="o", ACL="private")
    assert grants(s3.get_object_acl(Bucket=bucket, Key="o")) == {(owner, "FULL_CONTROL")}

    s3.put_object_acl(Bucket=bucket, Key="o", ACL="aws-exec-read")
    g = grants(s3.get_object_acl(Bucket=bucket, Key="o"))
    assert (owner, "FULL_CONTROL") in g
    assert not any(uri in (ALL_USERS, AUTH_USERS) for uri, _ in g), g

    s3.put_object_acl(Bucket=bucket, Key="o", GrantRead=f"id={other_id}",
                      GrantFullControl=f"id={owner}")
    assert grants(s3.get_object_acl(Bucket=bucket, Key="o")) == {
        (owner, "FULL_CONTROL"), (other_id, "READ")}

    s3.put_object_acl(Bucket=bucket, Key="o", GrantRead=f'uri="{ALL_USERS}"',
                      GrantFullControl=f'id="{owner}"')
    assert grants(s3.get_object_acl(Bucket=bucket, Key="o")) == {
        (owner, "FULL_CONTROL"), (ALL_USERS, "READ")}

    # Grant headers on PutObject.
    s3.put_object(Bucket=bucket, Key="g", Body=b"g", GrantRead=f"id={other_id}")
    assert (other_id, "READ") in grants(s3.get_object_acl(Bucket=bucket, Key="g"))

    # The body is unaffected by ACL changes.
    assert s3.get_object(Bucket=bucket, Key="o")["Body"].read() == b"acl"

    # A grant must name an account of this cloud (S3: 400 InvalidArgument), through
    # headers or a body, on objects, buckets and new objects alike; nothing changes.
    nobody = "0" * 64
    for call in (
        lambda: s3.put_object_acl(Bucket=bucket, Key="o", GrantRead=f"id={nobody}"),
        lambda: s3.put_bucket_acl(Bucket=bucket, GrantRead="id=_foo"),
        # S3's limit of 100 grants, even to an account that exists.
        lambda: s3.put_object_acl(Bucket=bucket, Key="o",
                                  GrantRead=",".join([f"id={other_id}"] * 101)),
        lambda: s3.put_object(Bucket=bucket, Key="n", Body=b"n", GrantRead=f"id={nobody}"),
        lambda: s3.put_object_acl(Bucket=bucket, Key="o", AccessControlPolicy={
            "Owner": {"ID": owner},
            "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": nobody}, "Permission": "READ"}]}),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert grants(s3.get_object_acl(Bucket=bucket, Key="o")) == {
        (owner, "FULL_CONTROL"), (ALL_USERS, "READ")}
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="n")
    # A grantee's display name is its account's, not what the request claimed.
    s3.put_object_acl(Bucket=bucket, Key="o", AccessControlPolicy={
        "Owner": {"ID": owner},
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": other_id, "DisplayName": "admin"},
                    "Permission": "READ"}]})
    [g] = s3.get_object_acl(Bucket=bucket, Key="o")["Grants"]
    assert g["Grantee"]["ID"] == other_id and g["Grantee"]["DisplayName"].startswith("other")


def test_anonymous_access_public_vs_private(cloud, s3, bucket, tmp_path):
    body = os.urandom(3000)
    s3.put_object(Bucket=bucket, Key="pub lic/\u00e9.bin", Body=body, ACL="public-read",
                  ContentType="application/x-pub")
    s3.put_object(Bucket=bucket, Key="private.bin", Body=b"secret")

    status, hdrs, data = curl(obj_url(cloud, bucket, "pub lic/\u00e9.bin"))
    assert status == 200
    assert sha256_bytes(data) == sha256_bytes(body)
    assert hdrs.get("content-type") == "application/x-pub"
    assert hdrs.get("etag", "").strip('"') == hashlib.md5(body).hexdigest()
    status, hdrs, data = curl(obj_url(cloud, bucket, "pub lic/\u00e9.bin"), "-I")
    assert status == 200 and hdrs.get("content-length") == "3000"

    status, hdrs, data = curl(obj_url(cloud, bucket, "private.bin"))
    assert status == 403, data
    assert s3_error_code(data) == "AccessDenied", data
    assert "secret" not in data.decode(errors="replace")
    assert "xml" in hdrs.get("content-type", ""), hdrs

    # Anonymous writes are refused and store nothing.
    up = tmp_path / "anon-upload.txt"
    up.write_bytes(b"anon")
    status, _, data = curl(obj_url(cloud, bucket, "anon.txt"), upload=up)
    assert status == 403 and s3_error_code(data) == "AccessDenied", data
    assert "anon.txt" not in list_keys(s3, bucket)

    # Listing: private bucket refused, public-read bucket allowed.
    status, _, data = curl(f"{cloud.endpoint}/{bucket}/?list-type=2")
    assert status == 403 and s3_error_code(data) == "AccessDenied", data
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    status, _, data = curl(f"{cloud.endpoint}/{bucket}/?list-type=2")
    assert status == 200, data
    assert sorted(xml_find_all(data, "Key")) == sorted(["private.bin", "pub lic/\u00e9.bin"])
    # Bucket READ does not make private objects readable.
    status, _, data = curl(obj_url(cloud, bucket, "private.bin"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"

    # Missing object in a public bucket: 404 NoSuchKey (READ on bucket allows listing).
    status, _, data = curl(obj_url(cloud, bucket, "missing"))
    assert status == 404 and s3_error_code(data) == "NoSuchKey", data

    # Making the object private again revokes anonymous access.
    s3.put_object_acl(Bucket=bucket, Key="pub lic/\u00e9.bin", ACL="private")
    status, _, data = curl(obj_url(cloud, bucket, "pub lic/\u00e9.bin"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"


# ---------------------------------------------------------------------------
# Presigned URLs
# ---------------------------------------------------------------------------

def test_presigned_get_and_put_with_curl(cloud, s3, bucket, tmp_path):
    body = os.urandom(50000)
    key = "pre signed/\u65e5\u672c+%.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/x-orig")
    # botocore presigns with SigV2 by default for us-east-1; ask for SigV4 explicitly.
    s3 = cloud.boto3(signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                    ExpiresIn=600)
    assert "X-Amz-Signature=" in url
    status, hdrs, data = curl(url)
    assert status == 200, data
    assert sha256_bytes(data) == sha256_bytes(body)
    assert hdrs.get("content-type") == "text/x-orig"

    # Response header overrides through the presigned query string.
    url = s3.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": key, "ResponseContentType": "application/x-over",
        "ResponseContentDisposition": "attachment; filename=\"d.bin\"",
        "ResponseCacheControl": "private, max-age=5"}, ExpiresIn=600)
    status, hdrs, data = curl(url)
    assert status == 200 and data == body
    assert hdrs.get("content-type") == "application/x-over"
    assert hdrs.get("content-disposition") == 'attachment; filename="d.bin"'
    assert hdrs.get("cache-control") == "private, max-age=5"

    # A tampered URL is rejected.
    bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    status, _, data = curl(bad)
    assert status == 403 and s3_error_code(data) in ("SignatureDoesNotMatch", "AccessDenied"), data
    other_key = url.replace(urllib.parse.quote(key.split("/")[0]), "other", 1)
    status, _, data = curl(other_key)
    assert status == 403, data

    # Presigned PUT with curl -T.
    up = tmp_path / "up.bin"
    up_body = os.urandom(123457)
    up.write_bytes(up_body)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "put by curl"},
                                    ExpiresIn=600)
    status, hdrs, data = curl(url, upload=up)
    assert status == 200, data
    assert hdrs.get("etag", "").strip('"') == hashlib.md5(up_body).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="put by curl")["Body"].read()
    assert sha256_bytes(got) == sha256_bytes(up_body)


def test_presigned_sigv2_get_and_put(cloud, bucket, s3, tmp_path):
    v2 = cloud.boto3(signature_version="s3")
    s3.put_object(Bucket=bucket, Key="v2 key", Body=b"v2 body")
    url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "v2 key"},
                                    ExpiresIn=600)
    assert "Signature=" in url and "AWSAccessKeyId=" in url
    status, _, data = curl(url)
    assert (status, data) == (200, b"v2 body"), data
    up = tmp_path / "v2.bin"
    up.write_bytes(b"uploaded v2")
    url = v2.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "v2 put"},
                                    ExpiresIn=600)
    status, _, data = curl(url, upload=up)
    assert status == 200, data
    assert s3.get_object(Bucket=bucket, Key="v2 put")["Body"].read() == b"uploaded v2"


def test_sigv2_header_auth_boto3(cloud, bucket, s3):
    v2 = cloud.boto3(signature_version="s3")
    v2.put_object(Bucket=bucket, Key="k v2/\u00e9", Body=b"signed v2", Metadata={"a": "b"})
    g = v2.get_object(Bucket=bucket, Key="k v2/\u00e9")
    assert g["Body"].read() == b"signed v2" and g["Metadata"] == {"a": "b"}
    assert "k v2/\u00e9" in list_keys(v2, bucket)


# ---------------------------------------------------------------------------
# Second account
# ---------------------------------------------------------------------------

def test_second_account_isolation_and_acl_grant(cloud, s3, bucket, other):
    creds, o3, other_id = other
    owner = s3.list_buckets()["Owner"]["ID"]
    assert other_id != owner
    s3.put_object(Bucket=bucket, Key="k", Body=b"admin data")
    s3.put_object(Bucket=bucket, Key="k2", Body=b"admin data 2")

    def denied(fn, **kw):
        with pytest.raises(ClientError) as ei:
            fn(**kw)
        code, status = err(ei)
        assert status == 403, (fn, code, status)
        assert code in ("AccessDenied", "403"), (fn, code)

    denied(o3.list_objects_v2, Bucket=bucket)
    denied(o3.list_objects, Bucket=bucket)
    denied(o3.get_object, Bucket=bucket, Key="k")
    denied(o3.head_object, Bucket=bucket, Key="k")
    denied(o3.put_object, Bucket=bucket, Key="intruder", Body=b"x")
    denied(o3.delete_object, Bucket=bucket, Key="k")
    # DeleteObjects: refused as a whole (403) or per key (Errors: AccessDenied).
    try:
        r = o3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
        assert not r.get("Deleted"), r
        assert [(e["Key"], e["Code"]) for e in r.get("Errors", [])] == [("k", "AccessDenied")], r
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    denied(o3.get_bucket_acl, Bucket=bucket)
    denied(o3.put_bucket_acl, Bucket=bucket, ACL="public-read")
    denied(o3.delete_bucket, Bucket=bucket)
    assert sorted(list_keys(s3, bucket)) == ["k", "k2"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"admin data"

    # The other account's bucket list doesn't show admin's buckets, and vice versa.
    ob = unique_name("ob")
    try:
        o3.create_bucket(Bucket=ob)
        o_names = [b["Name"] for b in o3.list_buckets()["Buckets"]]
        assert o_names == [ob]
        assert bucket not in o_names
        acl = o3.get_bucket_acl(Bucket=ob)
        assert acl["Owner"]["ID"] == other_id
        # Bucket names are global.
        with pytest.raises(ClientError) as ei:
            o3.create_bucket(Bucket=bucket)
        assert err(ei) == ("BucketAlreadyExists", 409)

        # Admin grants READ on the bucket (keeping its own FULL_CONTROL).
        s3.put_bucket_acl(Bucket=bucket, GrantRead=f"id={other_id}",
                          GrantFullControl=f"id={owner}")
        assert sorted(list_keys(o3, bucket)) == ["k", "k2"]
        denied(o3.get_object, Bucket=bucket, Key="k")  # object ACL still private
        denied(o3.put_object, Bucket=bucket, Key="intruder", Body=b"x")  # READ only

        s3.put_object_acl(Bucket=bucket, Key="k", GrantRead=f"id={other_id}",
                          GrantFullControl=f"id={owner}")
        g = o3.get_object(Bucket=bucket, Key="k")
        assert g["Body"].read() == b"admin data"
        denied(o3.get_object, Bucket=bucket, Key="k2")
        denied(o3.delete_object, Bucket=bucket, Key="k")

        # WRITE on the bucket lets the other account create objects.
        s3.put_bucket_acl(Bucket=bucket, GrantRead=f"id={other_id}",
                          GrantWrite=f"id={other_id}", GrantFullControl=f"id={owner}")
        # (Classic ACL model: the uploader owns the object; it grants the bucket owner
        # access with the bucket-owner-full-control canned ACL.)
        o3.put_object(Bucket=bucket, Key="from-other", Body=b"hello",
                      ACL="bucket-owner-full-control")
        acl = s3.get_object_acl(Bucket=bucket, Key="from-other")
        assert acl["Owner"]["ID"] == other_id
        assert grants(acl) == {(other_id, "FULL_CONTROL"), (owner, "FULL_CONTROL")}
        assert s3.get_object(Bucket=bucket, Key="from-other")["Body"].read() == b"hello"
        assert sorted(list_keys(s3, bucket)) == ["from-other", "k", "k2"]
        # The bucket owner may delete objects in its bucket whoever owns them.
        s3.delete_object(Bucket=bucket, Key="from-other")
        assert sorted(list_keys(s3, bucket)) == ["k", "k2"]
    finally:
        nuke_bucket(o3, ob)


# ---------------------------------------------------------------------------
# Addressing: virtual-hosted style and the legacy /services/Walrus prefix
# ---------------------------------------------------------------------------

def test_virtual_hosted_anonymous_public_object(cloud, s3, bucket):
    body = os.urandom(777)
    s3.put_object(Bucket=bucket, Key="v h/obj.bin", Body=body, ACL="public-read")
    s3.put_object(Bucket=bucket, Key="priv", Body=b"p")
    port = cloud.port
    for domain in ("s3.localhost", "localhost"):
        host = f"{bucket}.{domain}"
        status, _, data = curl(f"http://{host}:{port}/v%20h/obj.bin",
                               resolve=f"{host}:{port}:127.0.0.1")
        assert status == 200, (domain, data)
        assert sha256_bytes(data) == sha256_bytes(body)
        status, _, data = curl(f"http://{host}:{port}/priv", resolve=f"{host}:{port}:127.0.0.1")
        assert status == 403 and s3_error_code(data) == "AccessDenied", (domain, data)

    # Same through `requests` with an explicit Host header to 127.0.0.1.
    sess = requests.Session()
    sess.trust_env = False
    r = sess.get(f"http://127.0.0.1:{port}/v%20h/obj.bin",
                 headers={"Host": f"{bucket}.s3.localhost:{port}"}, timeout=30)
    assert r.status_code == 200 and r.content == body
    # Host without the port also works.
    r = sess.get(f"http://127.0.0.1:{port}/v%20h/obj.bin",
                 headers={"Host": f"{bucket}.s3.localhost"}, timeout=30)
    assert r.status_code == 200 and r.content == body


def test_virtual_hosted_presigned(cloud, s3, bucket, tmp_path):
    port = cloud.port
    vs3 = s3_client(cloud, f"http://s3.localhost:{port}", style="virtual",
                    signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="vk \u00e9", Body=b"virtual body")
    host = f"{bucket}.s3.localhost"
    resolve = f"{host}:{port}:127.0.0.1"

    url = vs3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "vk \u00e9"},
                                     ExpiresIn=600)
    assert url.startswith(f"http://{host}:{port}/"), url
    status, _, data = curl(url, resolve=resolve)
    assert (status, data) == (200, b"virtual body"), data

    up = tmp_path / "v.bin"
    up.write_bytes(b"put via vhost")
    url = vs3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "vput"},
                                     ExpiresIn=600)
    status, _, data = curl(url, upload=up, resolve=resolve)
    assert status == 200, data
    assert s3.get_object(Bucket=bucket, Key="vput")["Body"].read() == b"put via vhost"

    url = vs3.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket},
                                     ExpiresIn=600)
    status, _, data = curl(url, resolve=resolve)
    assert status == 200, data
    keys = xml_find_all(data, "Key")
    if "encoding-type=url" in url:  # botocore adds it to list requests
        keys = [urllib.parse.unquote_plus(k) for k in keys]
    assert sorted(keys) == ["vk \u00e9", "vput"]


def test_legacy_services_walrus_prefix(cloud, s3, bucket, tmp_path):
    prefix = "/services/Walrus"
    ls3 = s3_client(cloud, cloud.endpoint + prefix, signature_version="s3v4")
    assert bucket in [b["Name"] for b in ls3.list_buckets()["Buckets"]]
    body = os.urandom(4096)
    ls3.put_object(Bucket=bucket, Key="legacy/k \u00e9", Body=body, Metadata={"via": "legacy"})
    # Same object seen through the normal endpoint and through the prefix.
    g = s3.get_object(Bucket=bucket, Key="legacy/k \u00e9")
    assert g["Body"].read() == body and g["Metadata"] == {"via": "legacy"}
    assert ls3.get_object(Bucket=bucket, Key="legacy/k \u00e9")["Body"].read() == body
    assert ls3.head_object(Bucket=bucket, Key="legacy/k \u00e9")["ContentLength"] == 4096
    assert list_keys(ls3, bucket) == ["legacy/k \u00e9"]
    # Bucket lifecycle through the prefix.
    name = unique_name("leg")
    try:
        ls3.create_bucket(Bucket=name)
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        ls3.delete_bucket(Bucket=name)
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        nuke_bucket(s3, name)
    # Anonymous curl on a public object through the prefix.
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public legacy", ACL="public-read")
    status, _, data = curl(obj_url(cloud, bucket, "pub", prefix=prefix))
    assert (status, data) == (200, b"public legacy"), data
    status, _, data = curl(obj_url(cloud, bucket, "legacy/k \u00e9", prefix=prefix))
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    # Presigned through the prefix.
    url = ls3.generate_presigned_url("get_object",
                                     Params={"Bucket": bucket, "Key": "legacy/k \u00e9"},
                                     ExpiresIn=600)
    assert prefix in url
    status, _, data = curl(url)
    assert status == 200 and data == body
