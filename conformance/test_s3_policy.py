"""Bucket policies and the public access block (issue 18 item 3), driven by boto3,
awscli and unsigned curl: what a policy allows and denies (explicit Deny beats the
ACLs and the owner), its condition keys (aws:SourceIp, aws:SecureTransport,
s3:prefix, aws:PrincipalAccount), who may manage it, malformed documents, and the
four public access block settings."""
import json
import os
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from helpers_clients import AWS_CLIS, aws, curl, list_keys, run, s3_error_code, xml_find_all

_acct_n = [0]


def err(excinfo):
    e = excinfo.value
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def url(cloud, bucket, key=""):
    return f"{cloud.endpoint}/{bucket}/{urllib.parse.quote(key)}"


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def stmt(effect, principal, action, resource, condition=None, sid=None):
    s = {"Effect": effect, "Principal": principal, "Action": action, "Resource": resource}
    if condition:
        s["Condition"] = condition
    if sid:
        s["Sid"] = sid
    return s


@pytest.fixture()
def pbucket(s3, bucket):
    """A bucket whose policy and public access block are removed before the bucket
    fixture empties and deletes it (a test's Deny would stop that)."""
    yield bucket
    s3.delete_bucket_policy(Bucket=bucket)
    s3.delete_public_access_block(Bucket=bucket)


@pytest.fixture()
def other(cloud):
    """A second account: (account id, boto3 client)."""
    _acct_n[0] += 1
    creds = cloud.new_account(f"pol{os.getpid()}x{_acct_n[0]}")
    client = cloud.boto3(access_key=creds["AWS_ACCESS_KEY_ID"],
                         secret_key=creds["AWS_SECRET_ACCESS_KEY"])
    assert creds.get("ACCOUNT_ID"), creds
    return creds["ACCOUNT_ID"], client


def test_public_read_policy_anonymous_get(cloud, s3, pbucket, tmp_path):
    s3.put_object(Bucket=pbucket, Key="site/index.html", Body=b"<h1>hi</h1>")
    # Private before the policy.
    status, _, data = curl(url(cloud, pbucket, "site/index.html"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=pbucket)
    assert err(e) == ("NoSuchBucketPolicy", 404)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy_status(Bucket=pbucket)
    assert err(e) == ("NoSuchBucketPolicy", 404)

    policy = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{pbucket}/site/*",
                      sid="PublicRead"))
    s3.put_bucket_policy(Bucket=pbucket, Policy=policy)
    # Stored as given, byte for byte.
    assert s3.get_bucket_policy(Bucket=pbucket)["Policy"] == policy
    assert s3.get_bucket_policy_status(Bucket=pbucket)["PolicyStatus"]["IsPublic"] is True

    status, _, data = curl(url(cloud, pbucket, "site/index.html"))
    assert status == 200 and data == b"<h1>hi</h1>"
    # Outside the statement's prefix: still private.
    s3.put_object(Bucket=pbucket, Key="secret.txt", Body=b"s")
    status, _, data = curl(url(cloud, pbucket, "secret.txt"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    # GetObject but not ListBucket: a missing key is AccessDenied, not NoSuchKey.
    status, _, data = curl(url(cloud, pbucket, "site/missing.html"))
    assert status == 403 and s3_error_code(data) == "AccessDenied", data
    # The owner (who may list) still gets NoSuchKey.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="site/missing.html")
    assert err(e) == ("NoSuchKey", 404)
    # Anonymous PUT, DELETE and listing are refused and change nothing.
    up = tmp_path / "x"
    up.write_bytes(b"defaced")
    status, _, data = curl(url(cloud, pbucket, "site/index.html"), upload=up)
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    status, _, data = curl(url(cloud, pbucket, "site/index.html"), method="DELETE")
    assert status == 403
    status, _, data = curl(f"{cloud.endpoint}/{pbucket}?list-type=2")
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    assert s3.get_object(Bucket=pbucket, Key="site/index.html")["Body"].read() == b"<h1>hi</h1>"
    # A forged signature is not anonymous: refused, not served by the public policy.
    status, _, data = curl(url(cloud, pbucket, "site/index.html"), headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDFORGED00000000000/20260101/"
                         f"{cloud.region}/s3/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
        "x-amz-date": "20260101T000000Z", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert status == 403, data
    assert s3_error_code(data) != "NoSuchKey"

    # Deleting the policy makes the object private again.
    s3.delete_bucket_policy(Bucket=pbucket)
    status, _, _ = curl(url(cloud, pbucket, "site/index.html"))
    assert status == 403
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=pbucket)
    assert err(e) == ("NoSuchBucketPolicy", 404)


def test_deny_by_source_ip_holds_for_the_owner(cloud, s3, pbucket):
    s3.put_object(Bucket=pbucket, Key="k", Body=b"v")
    arn = f"arn:aws:s3:::{pbucket}/*"
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", "s3:GetObject", arn, {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}})))
    assert s3.get_bucket_policy_status(Bucket=pbucket)["PolicyStatus"]["IsPublic"] is False
    for call in (lambda: s3.get_object(Bucket=pbucket, Key="k"),
                 lambda: s3.head_object(Bucket=pbucket, Key="k"),
                 lambda: s3.copy_object(Bucket=pbucket, Key="k2",
                                        CopySource={"Bucket": pbucket, "Key": "k"})):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e)[1] == 403
    # Other actions are not denied; a missing key is AccessDenied too (Deny first).
    s3.put_object(Bucket=pbucket, Key="k", Body=b"v2")
    assert "k" in list_keys(s3, pbucket)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="nope")
    assert err(e) == ("AccessDenied", 403)
    # The owner may still read and replace its policy although it denies the owner.
    assert "127.0.0.1/32" in s3.get_bucket_policy(Bucket=pbucket)["Policy"]

    # NotIpAddress: deny everyone not in 10.0.0.0/8 (the test client is 127.0.0.1).
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", "s3:GetObject", arn, {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}})))
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="k")
    assert err(e) == ("AccessDenied", 403)
    # ... and deny everyone not on loopback: the owner reads again.
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", "s3:GetObject", arn,
             {"NotIpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}})))
    assert s3.get_object(Bucket=pbucket, Key="k")["Body"].read() == b"v2"

    # aws:SecureTransport: this listener is plain HTTP, so a TLS-only policy refuses.
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", "s3:*", [f"arn:aws:s3:::{pbucket}", arn],
             {"Bool": {"aws:SecureTransport": "false"}})))
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="k")
    assert err(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=pbucket)
    assert err(e) == ("AccessDenied", 403)
    # Per-key decision in a multi-object delete: every key refused, nothing deleted.
    r = s3.delete_objects(Bucket=pbucket, Delete={"Objects": [{"Key": "k"}]})
    assert [x["Code"] for x in r.get("Errors", [])] == ["AccessDenied"], r
    s3.delete_bucket_policy(Bucket=pbucket)
    assert s3.get_object(Bucket=pbucket, Key="k")["Body"].read() == b"v2"


def test_prefix_condition_on_list_for_another_account(cloud, s3, pbucket, other):
    acct, o = other
    for k in ("home/a", "home/b", "etc/passwd"):
        s3.put_object(Bucket=pbucket, Key=k, Body=b"x")
    with pytest.raises(ClientError) as e:
        o.list_objects_v2(Bucket=pbucket, Prefix="home/")
    assert err(e) == ("AccessDenied", 403)
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Allow", {"AWS": acct}, "s3:ListBucket", f"arn:aws:s3:::{pbucket}",
             {"StringLike": {"s3:prefix": "home/*"}}),
        stmt("Allow", {"AWS": f"arn:aws:iam::{acct}:root"}, "s3:GetObject",
             f"arn:aws:s3:::{pbucket}/home/*")))
    assert s3.get_bucket_policy_status(Bucket=pbucket)["PolicyStatus"]["IsPublic"] is False
    got = o.list_objects_v2(Bucket=pbucket, Prefix="home/")
    assert sorted(c["Key"] for c in got["Contents"]) == ["home/a", "home/b"]
    for prefix in ("etc/", ""):
        with pytest.raises(ClientError) as e:
            o.list_objects_v2(Bucket=pbucket, Prefix=prefix)
        assert err(e) == ("AccessDenied", 403)
    assert o.get_object(Bucket=pbucket, Key="home/a")["Body"].read() == b"x"
    with pytest.raises(ClientError) as e:
        o.get_object(Bucket=pbucket, Key="etc/passwd")
    assert err(e) == ("AccessDenied", 403)
    # It may list the bucket (with a prefix): a missing key is NoSuchKey to it... but
    # only under a prefix ListBucket covers; the missing-key rule asks ListBucket
    # without a prefix, which the condition refuses: AccessDenied.
    with pytest.raises(ClientError) as e:
        o.get_object(Bucket=pbucket, Key="home/missing")
    assert err(e) == ("AccessDenied", 403)
    # Not allowed to write, nor to touch the policy (no grant: 403).
    with pytest.raises(ClientError) as e:
        o.put_object(Bucket=pbucket, Key="home/c", Body=b"y")
    assert err(e) == ("AccessDenied", 403)
    for call in (lambda: o.get_bucket_policy(Bucket=pbucket),
                 lambda: o.delete_bucket_policy(Bucket=pbucket),
                 lambda: o.put_bucket_policy(Bucket=pbucket, Policy=doc(
                     stmt("Allow", "*", "s3:*", f"arn:aws:s3:::{pbucket}/*")))):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)
    assert acct in s3.get_bucket_policy(Bucket=pbucket)["Policy"]


def test_policy_apis_are_the_owners(cloud, s3, pbucket, other):
    acct, o = other
    s3.put_object(Bucket=pbucket, Key="k", Body=b"v")
    # Even a policy granting another account every action does not let it manage the
    # policy: S3 answers 405 to a permitted caller outside the owner's account.
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Allow", {"AWS": acct}, "s3:*", [f"arn:aws:s3:::{pbucket}", f"arn:aws:s3:::{pbucket}/*"])))
    assert o.get_object(Bucket=pbucket, Key="k")["Body"].read() == b"v"
    for call in (lambda: o.get_bucket_policy(Bucket=pbucket),
                 lambda: o.delete_bucket_policy(Bucket=pbucket),
                 lambda: o.put_bucket_policy(Bucket=pbucket, Policy=doc(
                     stmt("Allow", "*", "s3:*", f"arn:aws:s3:::{pbucket}/*")))):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("MethodNotAllowed", 405)
    # Anonymous: 403.
    status, _, data = curl(f"{cloud.endpoint}/{pbucket}?policy")
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    status, _, data = curl(f"{cloud.endpoint}/{pbucket}?policy", method="DELETE")
    assert status == 403
    assert acct in s3.get_bucket_policy(Bucket=pbucket)["Policy"]
    # The owner denying itself everything can still read, replace and delete the policy.
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", "s3:*", [f"arn:aws:s3:::{pbucket}", f"arn:aws:s3:::{pbucket}/*"])))
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="k")
    assert err(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=pbucket)
    assert err(e) == ("AccessDenied", 403)
    assert '"Deny"' in s3.get_bucket_policy(Bucket=pbucket)["Policy"]
    s3.delete_bucket_policy(Bucket=pbucket)
    assert s3.get_object(Bucket=pbucket, Key="k")["Body"].read() == b"v"


def test_explicit_deny_beats_acl_grants(cloud, s3, pbucket, other):
    acct, o = other
    s3.put_object(Bucket=pbucket, Key="pub", Body=b"p", ACL="public-read")
    s3.put_bucket_acl(Bucket=pbucket, ACL="public-read-write")
    status, _, _ = curl(url(cloud, pbucket, "pub"))
    assert status == 200
    assert o.get_object(Bucket=pbucket, Key="pub")["Body"].read() == b"p"
    o.put_object(Bucket=pbucket, Key="from-other", Body=b"o")
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             f"arn:aws:s3:::{pbucket}/*",
             {"StringNotEquals": {"aws:PrincipalAccount": "never-this-account"}}),
    ))
    status, _, data = curl(url(cloud, pbucket, "pub"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    for call in (lambda: o.get_object(Bucket=pbucket, Key="pub"),
                 lambda: o.put_object(Bucket=pbucket, Key="x", Body=b"x"),
                 lambda: o.delete_object(Bucket=pbucket, Key="from-other"),
                 lambda: s3.get_object(Bucket=pbucket, Key="pub")):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)
    # The bucket ACL still lets anyone list (ListBucket is not denied).
    status, _, data = curl(f"{cloud.endpoint}/{pbucket}?list-type=2")
    assert status == 200 and sorted(xml_find_all(data, "Key")) == ["from-other", "pub"]


def test_malformed_policies(cloud, s3, pbucket):
    arn = f"arn:aws:s3:::{pbucket}"
    bad = {
        "not json": "Policies must be valid JSON and the first byte must be '{'",
        '{"Statement": [': "This policy contains invalid Json",
        "{}": "Missing required field Statement",
        doc(stmt("Allow", "*", "s3:GetObject", "arn:aws:s3:::some-other-bucket/*")):
            "Policy has invalid resource",
        doc(stmt("Allow", "*", "s3:GetObject", "*")): "Policy has invalid resource",
        doc(stmt("Allow", "*", "s3:NoSuchThing", arn + "/*")): "Policy has invalid action",
        doc(stmt("Allow", "*", "s3:GetObject", arn)):
            "Action does not apply to any resource(s) in statement",
        doc(stmt("Allow", {"AWS": "not an account"}, "s3:GetObject", arn + "/*")):
            "Invalid principal in policy",
        doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": arn + "/*"}):
            "Missing required field Principal",
        doc(stmt("Maybe", "*", "s3:GetObject", arn + "/*")): None,
        doc(stmt("Allow", "*", "s3:GetObject", arn + "/*", {"IpAddress": {"aws:SourceIp": "x"}})):
            None,
        doc(stmt("Allow", "*", "s3:GetObject", arn + "/*", {"StringSorta": {"a": "b"}})): None,
    }
    for text, message in bad.items():
        with pytest.raises(ClientError) as e:
            s3.put_bucket_policy(Bucket=pbucket, Policy=text)
        assert err(e) == ("MalformedPolicy", 400), text
        if message:
            assert e.value.response["Error"]["Message"] == message, text
    # Over 20 KiB: refused before it is stored.
    big = doc(stmt("Allow", "*", "s3:GetObject", arn + "/*", sid="x" * (21 * 1024)))
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket=pbucket, Policy=big)
    assert err(e) == ("MalformedPolicy", 400)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=pbucket)
    assert err(e) == ("NoSuchBucketPolicy", 404)


def test_public_access_block(cloud, s3, pbucket, other):
    acct, o = other
    with pytest.raises(ClientError) as e:
        s3.get_public_access_block(Bucket=pbucket)
    assert err(e) == ("NoSuchPublicAccessBlockConfiguration", 404)
    s3.put_object(Bucket=pbucket, Key="was-public", Body=b"w", ACL="public-read")
    status, _, _ = curl(url(cloud, pbucket, "was-public"))
    assert status == 200

    cfg = {"BlockPublicAcls": True, "IgnorePublicAcls": False,
           "BlockPublicPolicy": True, "RestrictPublicBuckets": False}
    s3.put_public_access_block(Bucket=pbucket, PublicAccessBlockConfiguration=cfg)
    assert s3.get_public_access_block(Bucket=pbucket)["PublicAccessBlockConfiguration"] == cfg
    # BlockPublicAcls: public canned ACLs and grants are refused on every write path.
    for call in (lambda: s3.put_object(Bucket=pbucket, Key="p", Body=b"x", ACL="public-read"),
                 lambda: s3.put_object_acl(Bucket=pbucket, Key="was-public", ACL="public-read"),
                 lambda: s3.put_bucket_acl(Bucket=pbucket, ACL="public-read"),
                 lambda: s3.put_object(Bucket=pbucket, Key="p", Body=b"x",
                                       GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'),
                 lambda: s3.create_multipart_upload(Bucket=pbucket, Key="p", ACL="authenticated-read"),
                 lambda: s3.copy_object(Bucket=pbucket, Key="p", ACL="public-read",
                                        CopySource={"Bucket": pbucket, "Key": "was-public"})):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)
    assert "p" not in list_keys(s3, pbucket)
    s3.put_object(Bucket=pbucket, Key="p", Body=b"x", ACL="private")
    # An existing public ACL still works (BlockPublicAcls only blocks setting one).
    status, _, _ = curl(url(cloud, pbucket, "was-public"))
    assert status == 200
    # BlockPublicPolicy: a public policy is refused; a restricted one is fine.
    public = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{pbucket}/*"))
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket=pbucket, Policy=public)
    assert err(e) == ("AccessDenied", 403)
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{pbucket}/*",
             {"StringEquals": {"aws:PrincipalAccount": acct}})))
    assert s3.get_bucket_policy_status(Bucket=pbucket)["PolicyStatus"]["IsPublic"] is False
    assert o.get_object(Bucket=pbucket, Key="p")["Body"].read() == b"x"

    # IgnorePublicAcls: the public object is no longer readable anonymously.
    s3.put_public_access_block(Bucket=pbucket, PublicAccessBlockConfiguration={
        "IgnorePublicAcls": True})
    got = s3.get_public_access_block(Bucket=pbucket)["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": False, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
    status, _, data = curl(url(cloud, pbucket, "was-public"))
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    assert s3.get_object(Bucket=pbucket, Key="was-public")["Body"].read() == b"w"

    # RestrictPublicBuckets: a public policy only serves the owner's account.
    s3.put_public_access_block(Bucket=pbucket, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    s3.put_bucket_policy(Bucket=pbucket, Policy=public)
    assert s3.get_bucket_policy_status(Bucket=pbucket)["PolicyStatus"]["IsPublic"] is True
    status, _, _ = curl(url(cloud, pbucket, "p"))
    assert status == 403
    with pytest.raises(ClientError) as e:
        o.get_object(Bucket=pbucket, Key="p")
    assert err(e) == ("AccessDenied", 403)
    assert s3.get_object(Bucket=pbucket, Key="p")["Body"].read() == b"x"
    s3.delete_public_access_block(Bucket=pbucket)
    status, _, data = curl(url(cloud, pbucket, "p"))
    assert status == 200 and data == b"x"
    with pytest.raises(ClientError) as e:
        s3.get_public_access_block(Bucket=pbucket)
    assert err(e) == ("NoSuchPublicAccessBlockConfiguration", 404)

    # Strangers may not read or change the block.
    for call in (lambda: o.get_public_access_block(Bucket=pbucket),
                 lambda: o.put_public_access_block(Bucket=pbucket,
                                                   PublicAccessBlockConfiguration=cfg),
                 lambda: o.delete_public_access_block(Bucket=pbucket),
                 lambda: o.get_bucket_policy_status(Bucket=pbucket)):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)


@pytest.mark.parametrize("variant", sorted(AWS_CLIS))
def test_awscli_policy_round_trip(cloud, s3, pbucket, tmp_path, variant):
    s3.put_object(Bucket=pbucket, Key="a.txt", Body=b"A")
    f = tmp_path / "policy.json"
    policy = doc(stmt("Allow", {"AWS": "*"}, "s3:GetObject", f"arn:aws:s3:::{pbucket}/*"))
    f.write_text(policy)
    aws(cloud, variant, "s3api", "put-bucket-policy", "--bucket", pbucket,
        "--policy", f"file://{f}")
    r = aws(cloud, variant, "s3api", "get-bucket-policy", "--bucket", pbucket, "--output", "json")
    assert json.loads(r.stdout)["Policy"] == policy
    r = aws(cloud, variant, "s3api", "get-bucket-policy-status", "--bucket", pbucket,
            "--output", "json")
    assert json.loads(r.stdout)["PolicyStatus"]["IsPublic"] is True
    status, _, data = curl(url(cloud, pbucket, "a.txt"))
    assert status == 200 and data == b"A"
    f.write_text('{"Statement": "nope"}')
    r = aws(cloud, variant, "s3api", "put-bucket-policy", "--bucket", pbucket,
            "--policy", f"file://{f}", check=False)
    assert r.returncode != 0 and "MalformedPolicy" in r.stderr, r.stderr
    aws(cloud, variant, "s3api", "delete-bucket-policy", "--bucket", pbucket)
    r = aws(cloud, variant, "s3api", "get-bucket-policy", "--bucket", pbucket, check=False)
    assert r.returncode != 0 and "NoSuchBucketPolicy" in r.stderr, r.stderr


def test_request_header_conditions_and_cross_account_writes(cloud, s3, pbucket, other, tmp_path):
    acct, o = other
    arn = f"arn:aws:s3:::{pbucket}/*"
    # Another account may write only when it hands the bucket owner full control;
    # nobody may write a public-read object; anonymous callers may drop files in inbox/.
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Allow", {"AWS": acct}, "s3:PutObject", arn,
             {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}),
        stmt("Deny", "*", "s3:PutObject", arn,
             {"StringEqualsIgnoreCase": {"s3:x-amz-acl": ["public-read", "public-read-write"]}}),
        stmt("Allow", "*", "s3:PutObject", f"arn:aws:s3:::{pbucket}/inbox/*"),
    ))
    with pytest.raises(ClientError) as e:
        o.put_object(Bucket=pbucket, Key="from-other", Body=b"o")
    assert err(e) == ("AccessDenied", 403)
    o.put_object(Bucket=pbucket, Key="from-other", Body=b"o", ACL="bucket-owner-full-control")
    assert s3.get_object(Bucket=pbucket, Key="from-other")["Body"].read() == b"o"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=pbucket, Key="pub", Body=b"p", ACL="public-read")
    assert err(e) == ("AccessDenied", 403)
    s3.put_object(Bucket=pbucket, Key="pub", Body=b"p", ACL="private")
    # Unsigned curl PUT into inbox/ works; elsewhere it does not.
    up = tmp_path / "drop"
    up.write_bytes(b"dropped")
    status, _, data = curl(url(cloud, pbucket, "inbox/drop"), upload=up)
    assert status == 200, data
    assert s3.get_object(Bucket=pbucket, Key="inbox/drop")["Body"].read() == b"dropped"
    status, _, data = curl(url(cloud, pbucket, "elsewhere"), upload=up)
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    assert "elsewhere" not in list_keys(s3, pbucket)
    # ... and not with a public ACL even in inbox/ (the Deny wins).
    status, _, data = curl(url(cloud, pbucket, "inbox/pub"), upload=up,
                           headers={"x-amz-acl": "public-read"})
    assert status == 403 and s3_error_code(data) == "AccessDenied"
    assert "inbox/pub" not in list_keys(s3, pbucket)


def test_bucket_level_denies(cloud, s3, pbucket):
    s3.put_object(Bucket=pbucket, Key="k", Body=b"v")
    s3.put_bucket_policy(Bucket=pbucket, Policy=doc(
        stmt("Deny", "*", ["s3:ListBucket", "s3:ListBucketMultipartUploads",
                           "s3:GetBucketAcl", "s3:GetBucketLocation"],
             f"arn:aws:s3:::{pbucket}")))
    for call in (lambda: s3.list_objects_v2(Bucket=pbucket),
                 lambda: s3.list_objects(Bucket=pbucket),
                 lambda: s3.head_bucket(Bucket=pbucket),
                 lambda: s3.list_multipart_uploads(Bucket=pbucket),
                 lambda: s3.get_bucket_acl(Bucket=pbucket),
                 lambda: s3.get_bucket_location(Bucket=pbucket)):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e)[1] == 403
    # The object itself stays readable; with listing denied a missing key is 403.
    assert s3.get_object(Bucket=pbucket, Key="k")["Body"].read() == b"v"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=pbucket, Key="missing")
    assert err(e) == ("AccessDenied", 403)


def test_block_public_acls_on_recreate(cloud, s3, pbucket):
    if cloud.region != "us-east-1":
        pytest.skip("re-creating an owned bucket replaces its ACL only in us-east-1")
    s3.put_public_access_block(Bucket=pbucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True})
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=pbucket, ACL="public-read")
    assert err(e) == ("AccessDenied", 403)
    acl = s3.get_bucket_acl(Bucket=pbucket)
    assert not any(g["Grantee"].get("URI") for g in acl["Grants"]), acl


def control_client(cloud, creds, monkeypatch):
    """boto3's S3 Control client for an account. S3 Control puts the account id in
    front of the endpoint's host (`<id>.localhost`), which a wildcard DNS name
    resolves on a real site: here `*.localhost` is sent to loopback."""
    import socket
    real = socket.getaddrinfo

    def resolve(host, *a, **k):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *a, **k)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    endpoint = cloud.endpoint.replace("127.0.0.1", "localhost")
    import boto3
    from botocore.config import Config
    return boto3.client("s3control", endpoint_url=endpoint, region_name=cloud.region,
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 1}))


_LOCALHOST_RESOLVER = """
import socket
_real = socket.getaddrinfo
def _resolve(host, *a, **k):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real(host, *a, **k)
socket.getaddrinfo = _resolve
"""


@pytest.mark.parametrize("variant", sorted(AWS_CLIS))
def test_awscli_s3control_account_block(cloud, variant, tmp_path):
    """`aws s3control` (v1 and v2) on the account-level block. The CLI sends each
    request to `<account id>.<endpoint host>`, as S3 Control's endpoint rules say (no
    setting turns that off), so a site needs a wildcard DNS name for the endpoint;
    here `*.localhost` is sent to loopback by a `sitecustomize` in the CLI's Python
    (both CLIs are Python programs), the test's stand-in for that DNS entry."""
    _acct_n[0] += 1
    a = cloud.new_account(f"pabcli{os.getpid()}x{_acct_n[0]}")
    b = cloud.new_account(f"pabcli{os.getpid()}x{_acct_n[0]}b")
    (tmp_path / "sitecustomize.py").write_text(_LOCALHOST_RESOLVER)
    env = {**cloud.client_env(), "AWS_ACCESS_KEY_ID": a["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": a["AWS_SECRET_ACCESS_KEY"], "PYTHONPATH": str(tmp_path)}
    endpoint = cloud.endpoint.replace("127.0.0.1", "localhost")
    cli = [*AWS_CLIS[variant], "--endpoint-url", endpoint, "--output", "json", "s3control"]
    ida = a["ACCOUNT_ID"]
    r = run([*cli, "get-public-access-block", "--account-id", ida], env=env, check=False)
    assert r.returncode != 0 and "NoSuchPublicAccessBlockConfiguration" in r.stderr, r.stderr
    cfg = {"BlockPublicAcls": True, "IgnorePublicAcls": False,
           "BlockPublicPolicy": True, "RestrictPublicBuckets": False}
    run([*cli, "put-public-access-block", "--account-id", ida,
         "--public-access-block-configuration", json.dumps(cfg)], env=env)
    r = run([*cli, "get-public-access-block", "--account-id", ida], env=env)
    assert json.loads(r.stdout)["PublicAccessBlockConfiguration"] == cfg
    # Another account's id with these keys: refused, as for a missing block.
    r = run([*cli, "get-public-access-block", "--account-id", b["ACCOUNT_ID"]], env=env,
            check=False)
    assert r.returncode != 0 and "AccessDenied" in r.stderr, r.stderr
    # The block holds: a public ACL on a new bucket of the account is refused.
    bucket = f"pabcli-{os.getpid()}-{_acct_n[0]}-{variant}"
    s = cloud.boto3(access_key=a["AWS_ACCESS_KEY_ID"], secret_key=a["AWS_SECRET_ACCESS_KEY"])
    s.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert err(e) == ("AccessDenied", 403)
    run([*cli, "delete-public-access-block", "--account-id", ida], env=env)
    r = run([*cli, "get-public-access-block", "--account-id", ida], env=env, check=False)
    assert r.returncode != 0 and "NoSuchPublicAccessBlockConfiguration" in r.stderr, r.stderr
    s.put_bucket_acl(Bucket=bucket, ACL="public-read")


def test_account_public_access_block(cloud, monkeypatch):
    """S3 Control's account-level block (boto3 `s3control`): only the account itself
    may read or change it; it holds on all the account's buckets, existing and new,
    on top of their own blocks, and on no other account's."""
    _acct_n[0] += 1
    a = cloud.new_account(f"pab{os.getpid()}x{_acct_n[0]}a")
    b = cloud.new_account(f"pab{os.getpid()}x{_acct_n[0]}b")
    sa = cloud.boto3(access_key=a["AWS_ACCESS_KEY_ID"], secret_key=a["AWS_SECRET_ACCESS_KEY"])
    sb = cloud.boto3(access_key=b["AWS_ACCESS_KEY_ID"], secret_key=b["AWS_SECRET_ACCESS_KEY"])
    ca, cb = control_client(cloud, a, monkeypatch), control_client(cloud, b, monkeypatch)
    ida, idb = a["ACCOUNT_ID"], b["ACCOUNT_ID"]
    ba, bb = f"pab-a-{os.getpid()}-{_acct_n[0]}", f"pab-b-{os.getpid()}-{_acct_n[0]}"
    for s, name in ((sa, ba), (sb, bb)):
        s.create_bucket(Bucket=name)
        s.put_object(Bucket=name, Key="pub", Body=b"public", ACL="public-read")
        assert curl(url(cloud, name, "pub"))[0] == 200

    with pytest.raises(ClientError) as e:
        ca.get_public_access_block(AccountId=ida)
    assert err(e) == ("NoSuchPublicAccessBlockConfiguration", 404)
    # Another account (and its own id in the header, with a's keys) gets 403 alike,
    # whether the block exists or not.
    for client, acct in ((cb, ida), (ca, idb)):
        with pytest.raises(ClientError) as e:
            client.get_public_access_block(AccountId=acct)
        assert err(e) == ("AccessDenied", 403)
        with pytest.raises(ClientError) as e:
            client.put_public_access_block(AccountId=acct, PublicAccessBlockConfiguration={
                "IgnorePublicAcls": True})
        assert err(e) == ("AccessDenied", 403)

    cfg = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
           "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    ca.put_public_access_block(AccountId=ida, PublicAccessBlockConfiguration=cfg)
    assert ca.get_public_access_block(AccountId=ida)["PublicAccessBlockConfiguration"] == cfg
    with pytest.raises(ClientError) as e:
        cb.delete_public_access_block(AccountId=ida)
    assert err(e) == ("AccessDenied", 403)
    # The blocks live on the system bucket euca-accounts: not even the system
    # account may delete it, nor the cloud's other buckets (empty ones included).
    creds = json.loads((cloud.data / "cloud" / "system.json").read_text())
    system = cloud.boto3(access_key=creds["access_key"], secret_key=creds["secret_key"])
    system_buckets = {b["Name"] for b in system.list_buckets()["Buckets"]
                      if b["Name"].startswith("euca-")}
    assert "euca-accounts" in system_buckets
    for name in sorted(system_buckets):
        with pytest.raises(ClientError) as e:
            system.delete_bucket(Bucket=name)
        assert err(e) == ("AccessDenied", 403), name
        system.head_bucket(Bucket=name)
    # A bucket of its own outside the reserved prefix it may delete.
    system.create_bucket(Bucket=ba + "-sys")
    system.delete_bucket(Bucket=ba + "-sys")
    # The bucket has no block of its own: the account's holds.
    with pytest.raises(ClientError) as e:
        sa.get_public_access_block(Bucket=ba)
    assert err(e) == ("NoSuchPublicAccessBlockConfiguration", 404)
    status, _, data = curl(url(cloud, ba, "pub"))
    assert status == 403 and s3_error_code(data) == "AccessDenied", data
    assert sa.get_object(Bucket=ba, Key="pub")["Body"].read() == b"public"
    for call in (lambda: sa.put_object(Bucket=ba, Key="p", Body=b"x", ACL="public-read"),
                 lambda: sa.put_bucket_acl(Bucket=ba, ACL="public-read"),
                 lambda: sa.create_bucket(Bucket=ba + "-new", ACL="public-read"),
                 lambda: sa.put_bucket_policy(Bucket=ba, Policy=doc(
                     stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{ba}/*")))):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)
    # A bucket made after the block is covered too.
    sa.create_bucket(Bucket=ba + "-new")
    sa.put_object(Bucket=ba + "-new", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        sa.put_object_acl(Bucket=ba + "-new", Key="k", ACL="public-read")
    assert err(e) == ("AccessDenied", 403)
    # Another account's buckets are not.
    assert curl(url(cloud, bb, "pub"))[0] == 200
    sb.put_object(Bucket=bb, Key="p2", Body=b"y", ACL="public-read")

    # Only RestrictPublicBuckets: a public policy serves the account alone.
    ca.put_public_access_block(AccountId=ida, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    got = ca.get_public_access_block(AccountId=ida)["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": False, "IgnorePublicAcls": False,
                   "BlockPublicPolicy": False, "RestrictPublicBuckets": True}
    sa.put_bucket_policy(Bucket=ba, Policy=doc(
        stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{ba}/*")))
    sa.put_bucket_acl(Bucket=ba, ACL="private")
    sa.put_object_acl(Bucket=ba, Key="pub", ACL="private")
    status, _, _ = curl(url(cloud, ba, "pub"))
    assert status == 403
    with pytest.raises(ClientError) as e:
        sb.get_object(Bucket=ba, Key="pub")
    assert err(e) == ("AccessDenied", 403)

    ca.delete_public_access_block(AccountId=ida)
    with pytest.raises(ClientError) as e:
        ca.get_public_access_block(AccountId=ida)
    assert err(e) == ("NoSuchPublicAccessBlockConfiguration", 404)
    status, _, data = curl(url(cloud, ba, "pub"))
    assert status == 200 and data == b"public"
    # Deleting again is fine (204), as in S3.
    ca.delete_public_access_block(AccountId=ida)
    sa.delete_bucket_policy(Bucket=ba)
    for s, name in ((sa, ba), (sa, ba + "-new"), (sb, bb)):
        for k in list_keys(s, name):
            s.delete_object(Bucket=name, Key=k)
        s.delete_bucket(Bucket=name)
