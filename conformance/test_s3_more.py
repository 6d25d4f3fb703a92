"""The rest of issue 18 with boto3 (and restic) on one cloud for the module: tagging
under bucket policies, ACLs and tags of a named version, the copy directives' exact
tokens, `x-amz-expiration`, DELETE ?object-lock, GetObjectAttributes, object
ownership controls, bucket logging (server access logs delivered to a target
bucket; flushed every second here) and restic against an object-locked bucket."""
import datetime
import json
import os
import re
import shutil
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import start_cloud
from helpers_raw import obj_path, send, sign_v4


@pytest.fixture(scope="module")
def mcloud(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3more")
    cfg = tmp / "euca.toml"
    cfg.write_text("[walrus]\naccess_log_flush_secs = 1\n")
    c = start_cloud(tmp, ["--config", str(cfg)])
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def ms3(mcloud):
    return mcloud.boto3()


_n = [0]


def new_bucket(s3, prefix="m", **kw):
    _n[0] += 1
    name = f"{prefix}{os.getpid()}-{_n[0]}"
    s3.create_bucket(Bucket=name, **kw)
    return name


@pytest.fixture(scope="module")
def stranger(mcloud):
    acct = mcloud.new_account(f"more{os.getpid()}")
    return mcloud.boto3(access_key=acct["AWS_ACCESS_KEY_ID"],
                        secret_key=acct["AWS_SECRET_ACCESS_KEY"])


def err(fn, *a, **kw):
    """Calls a boto3 operation that must fail; returns (HTTP status, error code)."""
    with pytest.raises(ClientError) as ei:
        fn(*a, **kw)
    r = ei.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def tags_of(s3, b, k, **kw):
    return {t["Key"]: t["Value"]
            for t in s3.get_object_tagging(Bucket=b, Key=k, **kw)["TagSet"]}


def until(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


# -- known gaps ----------------------------------------------------------------------

def test_tagging_obeys_bucket_policy(mcloud, ms3, stranger):
    b = new_bucket(ms3)
    ms3.put_object(Bucket=b, Key="k", Body=b"x", Tagging="a=1")
    ms3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObjectTagging",
         "Resource": f"arn:aws:s3:::{b}/*"},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjectTagging",
         "Resource": f"arn:aws:s3:::{b}/open/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObjectTagging",
         "Resource": f"arn:aws:s3:::{b}/closed"}]}))
    # The owner is refused by the explicit Deny, on put and on a versioned put alike.
    assert err(ms3.put_object_tagging, Bucket=b, Key="k",
               Tagging={"TagSet": [{"Key": "a", "Value": "2"}]}) == (403, "AccessDenied")
    assert tags_of(ms3, b, "k") == {"a": "1"}
    # Deleting tags is its own action: not denied.
    ms3.delete_object_tagging(Bucket=b, Key="k")
    assert tags_of(ms3, b, "k") == {}
    # A stranger: no ACL route to tags; the policy's Allow on open/ admits reading.
    ms3.put_object(Bucket=b, Key="open/t", Body=b"x", Tagging="s=1")
    ms3.put_object(Bucket=b, Key="closed", Body=b"x", Tagging="s=1")
    assert tags_of(stranger, b, "open/t") == {"s": "1"}
    assert err(stranger.get_object_tagging, Bucket=b, Key="closed") == (403, "AccessDenied")
    # Copying tags is reading them: the Deny holds for the owner's copy too, unless
    # the copy replaces them.
    assert err(ms3.get_object_tagging, Bucket=b, Key="closed") == (403, "AccessDenied")
    assert err(ms3.copy_object, Bucket=b, Key="closed-copy",
               CopySource={"Bucket": b, "Key": "closed"}) == (403, "AccessDenied")
    ms3.copy_object(Bucket=b, Key="closed-copy", CopySource={"Bucket": b, "Key": "closed"},
                    TaggingDirective="REPLACE", Tagging="r=1")
    assert tags_of(ms3, b, "closed-copy") == {"r": "1"}
    # A missing key under the Allow: the stranger may not list, so 403, not 404.
    assert err(stranger.get_object_tagging, Bucket=b, Key="open/none") == (403, "AccessDenied")
    ms3.delete_bucket_policy(Bucket=b)
    ms3.put_object_tagging(Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "3"}]})
    assert tags_of(ms3, b, "k") == {"a": "3"}


def test_acl_and_tagging_of_a_named_version(ms3, stranger):
    b = new_bucket(ms3)
    ms3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = ms3.put_object(Bucket=b, Key="k", Body=b"one")["VersionId"]
    v2 = ms3.put_object(Bucket=b, Key="k", Body=b"two")["VersionId"]
    r = ms3.put_object_tagging(Bucket=b, Key="k", VersionId=v1,
                               Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
    assert r["VersionId"] == v1
    assert tags_of(ms3, b, "k", VersionId=v1) == {"old": "yes"}
    assert tags_of(ms3, b, "k") == {}
    assert tags_of(ms3, b, "k", VersionId=v2) == {}
    ms3.put_object_tagging(Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "cur", "Value": "1"}]})
    assert tags_of(ms3, b, "k", VersionId=v1) == {"old": "yes"}
    ms3.delete_object_tagging(Bucket=b, Key="k", VersionId=v1)
    assert tags_of(ms3, b, "k", VersionId=v1) == {}
    assert tags_of(ms3, b, "k") == {"cur": "1"}
    # ACL of the old version: public-read there only.
    ms3.put_object_acl(Bucket=b, Key="k", VersionId=v1, ACL="public-read")
    grants = ms3.get_object_acl(Bucket=b, Key="k", VersionId=v1)["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") for g in grants)
    grants = ms3.get_object_acl(Bucket=b, Key="k")["Grants"]
    assert not any(g["Grantee"].get("URI", "").endswith("/AllUsers") for g in grants)
    assert stranger.get_object(Bucket=b, Key="k", VersionId=v1)["Body"].read() == b"one"
    assert err(stranger.get_object, Bucket=b, Key="k") == (403, "AccessDenied")
    # A version that does not exist: 404 NoSuchVersion to the owner, 403 to a stranger.
    missing = "0" * 31 + "1"
    assert err(ms3.get_object_tagging, Bucket=b, Key="k", VersionId=missing) == \
        (404, "NoSuchVersion")
    assert err(ms3.put_object_acl, Bucket=b, Key="k", VersionId=missing, ACL="private") == \
        (404, "NoSuchVersion")
    assert err(stranger.get_object_acl, Bucket=b, Key="k", VersionId=missing) == \
        (403, "AccessDenied")
    assert err(stranger.put_object_tagging, Bucket=b, Key="k", VersionId=v1,
               Tagging={"TagSet": []}) == (403, "AccessDenied")


def test_copy_directives_exact_tokens(ms3):
    b = new_bucket(ms3)
    ms3.put_object(Bucket=b, Key="src", Body=b"x", Metadata={"m": "1"}, Tagging="t=1")
    src = {"Bucket": b, "Key": "src"}
    for kw in ({"MetadataDirective": "copy"}, {"MetadataDirective": "Replace"},
               {"TaggingDirective": "replace"}, {"TaggingDirective": "Copy"},
               {"MetadataDirective": "REPLACE2"}):
        assert err(ms3.copy_object, Bucket=b, Key="dst", CopySource=src, **kw) == \
            (400, "InvalidArgument"), kw
    ms3.copy_object(Bucket=b, Key="dst", CopySource=src, MetadataDirective="REPLACE",
                    Metadata={"m": "2"}, TaggingDirective="REPLACE", Tagging="t=2")
    h = ms3.head_object(Bucket=b, Key="dst")
    assert h["Metadata"] == {"m": "2"}
    assert tags_of(ms3, b, "dst") == {"t": "2"}


def test_expiration_header_and_object_lock_delete(mcloud, ms3):
    b = new_bucket(ms3)
    ms3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "short rule", "Filter": {"Prefix": "exp/"}, "Status": "Enabled",
         "Expiration": {"Days": 3}},
        {"ID": "long", "Filter": {"Prefix": "exp/"}, "Status": "Enabled",
         "Expiration": {"Days": 30}},
        {"ID": "off", "Filter": {"Prefix": ""}, "Status": "Disabled",
         "Expiration": {"Days": 1}}]})
    before = datetime.datetime.now(datetime.timezone.utc)
    put = ms3.put_object(Bucket=b, Key="exp/a", Body=b"x")
    exp = put["Expiration"]
    m = re.fullmatch(r'expiry-date="([^"]+)", rule-id="([^"]+)"', exp)
    assert m, exp
    assert m.group(2) == "short%20rule"
    when = datetime.datetime.strptime(m.group(1), "%a, %d %b %Y %H:%M:%S GMT").replace(
        tzinfo=datetime.timezone.utc)
    # Three days on, rounded up to the next midnight UTC.
    assert (when.hour, when.minute, when.second) == (0, 0, 0)
    assert before + datetime.timedelta(days=3) <= when <= before + datetime.timedelta(days=4)
    assert ms3.head_object(Bucket=b, Key="exp/a")["Expiration"] == exp
    assert ms3.get_object(Bucket=b, Key="exp/a")["Expiration"] == exp
    copied = ms3.copy_object(Bucket=b, Key="exp/c", CopySource={"Bucket": b, "Key": "exp/a"})
    assert 'rule-id="short%20rule"' in copied["Expiration"]
    up = ms3.create_multipart_upload(Bucket=b, Key="exp/m")["UploadId"]
    etag = ms3.upload_part(Bucket=b, Key="exp/m", UploadId=up, PartNumber=1, Body=b"m")["ETag"]
    done = ms3.complete_multipart_upload(Bucket=b, Key="exp/m", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert 'rule-id="short%20rule"' in done["Expiration"]
    other = ms3.put_object(Bucket=b, Key="keep", Body=b"x")
    assert "Expiration" not in other
    assert "Expiration" not in ms3.head_object(Bucket=b, Key="keep")
    # DELETE ?object-lock is no S3 operation: 405, and the lock stays.
    lb = new_bucket(ms3, ObjectLockEnabledForBucket=True)
    r = send(mcloud, sign_v4(mcloud, "DELETE", obj_path(lb), "object-lock"))
    assert (r.status, r.code) == (405, "MethodNotAllowed"), r
    cfg = ms3.get_object_lock_configuration(Bucket=lb)["ObjectLockConfiguration"]
    assert cfg["ObjectLockEnabled"] == "Enabled"


# -- GetObjectAttributes -------------------------------------------------------------

def test_get_object_attributes(ms3, stranger):
    b = new_bucket(ms3)
    ms3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = ms3.put_object(Bucket=b, Key="small", Body=b"hello", ChecksumAlgorithm="SHA256")
    a = ms3.get_object_attributes(Bucket=b, Key="small",
                                  ObjectAttributes=["ETag", "Checksum", "ObjectSize",
                                                    "StorageClass"])
    assert a["ETag"] == v1["ETag"].strip('"')
    assert a["ObjectSize"] == 5
    assert a["StorageClass"] == "STANDARD"
    assert a["Checksum"]["ChecksumSHA256"] == v1["ChecksumSHA256"]
    assert a["VersionId"] == v1["VersionId"]
    # A multipart object with composite CRC32 checksums, three parts, paged two at a time.
    part = 5 * 1024 * 1024
    up = ms3.create_multipart_upload(Bucket=b, Key="big", ChecksumAlgorithm="CRC32")
    parts = []
    for n in (1, 2, 3):
        body = bytes([n]) * (part if n < 3 else 1000)
        p = ms3.upload_part(Bucket=b, Key="big", UploadId=up["UploadId"], PartNumber=n,
                            Body=body, ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": n, "ETag": p["ETag"], "ChecksumCRC32": p["ChecksumCRC32"]})
    ms3.complete_multipart_upload(Bucket=b, Key="big", UploadId=up["UploadId"],
                                  MultipartUpload={"Parts": parts})
    a = ms3.get_object_attributes(Bucket=b, Key="big", ObjectAttributes=["ObjectParts",
                                                                        "ObjectSize"],
                                  MaxParts=2)
    op = a["ObjectParts"]
    assert op["TotalPartsCount"] == 3 and op["IsTruncated"] is True
    assert [p["PartNumber"] for p in op["Parts"]] == [1, 2]
    assert [p["ChecksumCRC32"] for p in op["Parts"]] == [p["ChecksumCRC32"] for p in parts[:2]]
    assert op["Parts"][0]["Size"] == part
    a = ms3.get_object_attributes(Bucket=b, Key="big", ObjectAttributes=["ObjectParts"],
                                  PartNumberMarker=op["NextPartNumberMarker"])
    assert [(p["PartNumber"], p["Size"]) for p in a["ObjectParts"]["Parts"]] == [(3, 1000)]
    assert a["ObjectParts"]["IsTruncated"] is False
    # An older version by id, then a missing one.
    ms3.put_object(Bucket=b, Key="small", Body=b"hello again")
    a = ms3.get_object_attributes(Bucket=b, Key="small", VersionId=v1["VersionId"],
                                  ObjectAttributes=["ObjectSize"])
    assert a["ObjectSize"] == 5
    assert err(ms3.get_object_attributes, Bucket=b, Key="small", VersionId="0" * 31 + "1",
               ObjectAttributes=["ObjectSize"]) == (404, "NoSuchVersion")
    # Who may not read it may not read its attributes; a policy Deny on the
    # attributes action refuses the owner.
    assert err(stranger.get_object_attributes, Bucket=b, Key="small",
               ObjectAttributes=["ETag"]) == (403, "AccessDenied")
    ms3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObjectAttributes",
         "Resource": f"arn:aws:s3:::{b}/small"}]}))
    assert err(ms3.get_object_attributes, Bucket=b, Key="small",
               ObjectAttributes=["ETag"]) == (403, "AccessDenied")
    assert ms3.get_object(Bucket=b, Key="small")["Body"].read() == b"hello again"
    ms3.delete_bucket_policy(Bucket=b)
    assert err(ms3.get_object_attributes, Bucket=b, Key="small",
               ObjectAttributes=["Bogus"]) == (400, "InvalidArgument")


# -- object ownership ----------------------------------------------------------------

def owner_id(s3):
    return s3.list_buckets()["Owner"]["ID"]


def allow_put_to_all(s3, b):
    s3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{b}/*"}]}))


def test_ownership_controls(ms3, stranger):
    me, them = owner_id(ms3), owner_id(stranger)
    # The default (no setting): ObjectWriter, ACLs as always.
    plain = new_bucket(ms3)
    assert err(ms3.get_bucket_ownership_controls, Bucket=plain) == \
        (404, "OwnershipControlsNotFoundError")
    ms3.put_object(Bucket=plain, Key="pub", Body=b"p", ACL="public-read")
    assert stranger.get_object(Bucket=plain, Key="pub")["Body"].read() == b"p"
    # Enforcing on a bucket whose ACL grants others is refused.
    ms3.put_bucket_acl(Bucket=plain, ACL="public-read")
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert err(ms3.put_bucket_ownership_controls, Bucket=plain,
               OwnershipControls=enforced) == (400, "InvalidBucketAclWithObjectOwnership")
    ms3.put_bucket_acl(Bucket=plain, ACL="private")
    # Only the owner may read or change the setting.
    assert err(stranger.put_bucket_ownership_controls, Bucket=plain,
               OwnershipControls=enforced) == (403, "AccessDenied")
    ms3.put_bucket_ownership_controls(Bucket=plain, OwnershipControls=enforced)
    assert ms3.get_bucket_ownership_controls(Bucket=plain)["OwnershipControls"] == enforced
    assert err(stranger.get_bucket_ownership_controls, Bucket=plain) == (403, "AccessDenied")
    # ACLs off: the object's public-read grant no longer admits the stranger, and
    # ACL changes are refused; reading ACLs still works.
    assert err(stranger.get_object, Bucket=plain, Key="pub") == (403, "AccessDenied")
    assert err(ms3.put_object_acl, Bucket=plain, Key="pub", ACL="private") == \
        (400, "AccessControlListNotSupported")
    assert err(ms3.put_bucket_acl, Bucket=plain, ACL="private") == \
        (400, "AccessControlListNotSupported")
    assert err(ms3.put_object, Bucket=plain, Key="x", Body=b"x", ACL="private") == \
        (400, "AccessControlListNotSupported")
    shown = ms3.get_object_acl(Bucket=plain, Key="pub")
    assert [(g["Grantee"].get("ID"), g["Permission"]) for g in shown["Grants"]] == \
        [(me, "FULL_CONTROL")]
    ms3.delete_bucket_ownership_controls(Bucket=plain)
    assert err(ms3.get_bucket_ownership_controls, Bucket=plain) == \
        (404, "OwnershipControlsNotFoundError")
    assert stranger.get_object(Bucket=plain, Key="pub")["Body"].read() == b"p"

    # Created enforced: the bucket owner owns what anyone writes.
    enf = new_bucket(ms3, ObjectOwnership="BucketOwnerEnforced")
    assert ms3.get_bucket_ownership_controls(Bucket=enf)["OwnershipControls"] == enforced
    allow_put_to_all(ms3, enf)
    stranger.put_object(Bucket=enf, Key="theirs", Body=b"t")
    stranger.put_object(Bucket=enf, Key="full", Body=b"t", ACL="bucket-owner-full-control")
    assert err(stranger.put_object, Bucket=enf, Key="pub", Body=b"t", ACL="public-read") == \
        (400, "AccessControlListNotSupported")
    for k in ("theirs", "full"):
        assert ms3.get_object_acl(Bucket=enf, Key=k)["Owner"]["ID"] == me
    # The writer, not owning it, cannot read it back (no ACL route).
    assert err(stranger.get_object, Bucket=enf, Key="theirs") == (403, "AccessDenied")
    assert err(ms3.create_bucket, Bucket=f"bad{os.getpid()}", ACL="public-read",
               ObjectOwnership="BucketOwnerEnforced") == \
        (400, "InvalidBucketAclWithObjectOwnership")

    # BucketOwnerPreferred: bucket-owner-full-control hands the object over.
    pref = new_bucket(ms3, ObjectOwnership="BucketOwnerPreferred")
    allow_put_to_all(ms3, pref)
    stranger.put_object(Bucket=pref, Key="given", Body=b"g", ACL="bucket-owner-full-control")
    stranger.put_object(Bucket=pref, Key="kept", Body=b"k")
    assert ms3.get_object_acl(Bucket=pref, Key="given")["Owner"]["ID"] == me
    assert stranger.get_object_acl(Bucket=pref, Key="kept")["Owner"]["ID"] == them
    assert err(ms3.put_bucket_ownership_controls, Bucket=pref, OwnershipControls={
        "Rules": [{"ObjectOwnership": "bucketownerenforced"}]}) == (400, "MalformedXML")


# -- bucket logging ------------------------------------------------------------------

LOG_LINE = re.compile(
    r'^(?P<owner>\S+) (?P<bucket>\S+) \[(?P<time>[^\]]+)\] (?P<ip>\S+) (?P<requester>\S+) '
    r'(?P<rid>\S+) (?P<op>\S+) (?P<key>\S+) "(?P<uri>[^"]*)" (?P<status>\d+) (?P<error>\S+) '
    r'(?P<sent>\S+) (?P<size>\S+) (?P<total>\d+) (?P<turn>\d+) "(?P<referer>[^"]*)" '
    r'"(?P<agent>[^"]*)" (?P<version>\S+) ')


def log_records(s3, b, prefix):
    out = []
    for o in s3.list_objects_v2(Bucket=b, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=b, Key=o["Key"])["Body"].read().decode()
        for line in body.splitlines():
            m = LOG_LINE.match(line)
            assert m, line
            out.append(m.groupdict())
    return out


def test_bucket_logging(mcloud, ms3, stranger):
    me, them = owner_id(ms3), owner_id(stranger)
    src, tgt = new_bucket(ms3, "src"), new_bucket(ms3, "tgt")
    assert "LoggingEnabled" not in ms3.get_bucket_logging(Bucket=src)
    status = {"LoggingEnabled": {"TargetBucket": tgt, "TargetPrefix": "logs/"}}
    assert err(stranger.put_bucket_logging, Bucket=src, BucketLoggingStatus=status) == \
        (403, "AccessDenied")
    # Targets the source's owner does not own, or that do not exist, are refused.
    theirs = new_bucket(stranger, "theirs")
    assert err(ms3.put_bucket_logging, Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": theirs, "TargetPrefix": "x/"}}) == \
        (400, "InvalidTargetBucketForLogging")
    assert err(ms3.put_bucket_logging, Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": f"none{os.getpid()}", "TargetPrefix": "x/"}}) == \
        (400, "InvalidTargetBucketForLogging")
    ms3.put_bucket_logging(Bucket=src, BucketLoggingStatus=status)
    got = ms3.get_bucket_logging(Bucket=src)["LoggingEnabled"]
    assert (got["TargetBucket"], got["TargetPrefix"]) == (tgt, "logs/")

    ms3.put_object(Bucket=src, Key="a b", Body=b"0123456789")
    assert ms3.get_object(Bucket=src, Key="a b", Range="bytes=0-3")["Body"].read() == b"0123"
    assert err(ms3.head_object, Bucket=src, Key="missing")[0] == 404
    assert err(stranger.get_object, Bucket=src, Key="a b") == (403, "AccessDenied")
    ms3.list_objects_v2(Bucket=src)
    # Refused before authentication (a wrong secret), and anonymous: no requester.
    forger = mcloud.boto3(access_key=mcloud.access_key, secret_key="not-the-secret")
    assert err(forger.get_object, Bucket=src, Key="a b") == (403, "SignatureDoesNotMatch")
    from botocore import UNSIGNED
    anon = mcloud.boto3(signature_version=UNSIGNED)
    assert err(anon.get_object, Bucket=src, Key="a b") == (403, "AccessDenied")

    def delivered():
        # Every record, the three refused GETs included (the last requests made): a
        # flush may deliver the first records before the last ones are queued.
        recs = log_records(ms3, tgt, "logs/")
        refused = {(r["requester"], r["error"]) for r in recs
                   if r["op"] == "REST.GET.OBJECT" and r["status"] == "403"}
        return recs if len(recs) >= 7 and len(refused) >= 3 else None
    recs = until("access logs delivered", delivered)
    keys = [o["Key"] for o in ms3.list_objects_v2(Bucket=tgt, Prefix="logs/")["Contents"]]
    assert all(re.fullmatch(r"logs/\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-F]{16}", k)
               for k in keys), keys
    # The log objects belong to the target bucket's owner.
    assert ms3.get_object_acl(Bucket=tgt, Key=keys[0])["Owner"]["ID"] == me
    by_op = {}
    for r in recs:
        assert (r["owner"], r["bucket"]) == (me, src)
        by_op.setdefault(r["op"], []).append(r)
    put = by_op["REST.PUT.OBJECT"][0]
    assert (put["key"], put["status"], put["requester"], put["size"]) == \
        ("a%20b", "200", me, "10")
    assert put["uri"].startswith("PUT /") and put["uri"].endswith(" HTTP/1.1")
    assert "Boto3" in put["agent"] or "Botocore" in put["agent"], put["agent"]
    gets = by_op["REST.GET.OBJECT"]
    ok = next(g for g in gets if g["status"] == "206")
    assert (ok["sent"], ok["size"], ok["error"]) == ("4", "10", "-")
    denied = {(g["requester"], g["error"]) for g in gets if g["status"] == "403"}
    assert denied == {(them, "AccessDenied"), ("-", "SignatureDoesNotMatch"),
                      ("-", "AccessDenied")}, denied
    head = by_op["REST.HEAD.OBJECT"][0]
    assert (head["status"], head["error"], head["key"]) == ("404", "NoSuchKey", "missing")
    assert by_op["REST.GET.BUCKET"][0]["key"] == "-"

    # Partitioned keys, then logging off.
    ms3.put_bucket_logging(Bucket=src, BucketLoggingStatus={"LoggingEnabled": {
        "TargetBucket": tgt, "TargetPrefix": "p/",
        "TargetObjectKeyFormat": {"PartitionedPrefix": {"PartitionDateSource": "EventTime"}}}})
    ms3.head_object(Bucket=src, Key="a b")
    pkeys = until("partitioned log", lambda: [
        o["Key"] for o in ms3.list_objects_v2(Bucket=tgt, Prefix="p/").get("Contents", [])])
    assert re.fullmatch(rf"p/\d+/{ms3.meta.region_name}/{src}/\d{{4}}/\d\d/\d\d/"
                        r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-F]{16}", pkeys[0]), pkeys
    ms3.put_bucket_logging(Bucket=src, BucketLoggingStatus={})
    assert "LoggingEnabled" not in ms3.get_bucket_logging(Bucket=src)


# -- restic against an object-locked bucket ------------------------------------------

@pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed "
                    "(scripts/install-test-deps.sh installs it)")
def test_restic_against_locked_bucket(mcloud, ms3, tmp_path):
    b = new_bucket(ms3, "restic", ObjectLockEnabledForBucket=True)
    ms3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {"a.txt": b"hello restic\n", "sub/b.bin": os.urandom(300_000),
             "sub/empty": b""}
    for name, data in files.items():
        (src / name).write_bytes(data)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": mcloud.access_key,
           "AWS_SECRET_ACCESS_KEY": mcloud.secret_key,
           "AWS_DEFAULT_REGION": mcloud.region,
           "RESTIC_REPOSITORY": f"s3:{mcloud.endpoint}/{b}",
           "RESTIC_PASSWORD": "correct horse", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}

    def restic(*args):
        r = subprocess.run(["restic", *args], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"restic {args}: {r.stdout}\n{r.stderr}"
        return r.stdout

    restic("init")
    restic("backup", "--host", "test", str(src))
    restic("check")
    out = tmp_path / "out"
    restic("restore", "latest", "--target", str(out))
    for name, data in files.items():
        assert (out / src.relative_to("/") / name).read_bytes() == data, name
    # The lock holds: a pack file's version cannot be deleted by the owner without
    # bypass (restic's own deletes of lock files, without a version id, only add
    # delete markers).
    packs = [o for o in ms3.list_object_versions(Bucket=b, Prefix="data/").get("Versions", [])]
    assert packs
    p = packs[0]
    assert err(ms3.delete_object, Bucket=b, Key=p["Key"], VersionId=p["VersionId"]) == \
        (403, "AccessDenied")
    assert ms3.head_object(Bucket=b, Key=p["Key"], VersionId=p["VersionId"])["ContentLength"] > 0
    restic("check", "--read-data")
