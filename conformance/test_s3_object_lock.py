"""Object lock with boto3, tried as an attacker would: a version under COMPLIANCE
retention cannot be deleted or have its retention shortened by anyone, the owner
included; GOVERNANCE yields only to the owner's explicit bypass; a legal hold holds
until lifted; an overwrite adds a version and the locked one stays; versioning cannot
be suspended; a bucket without object lock refuses lock headers."""
import datetime

import pytest
from botocore.exceptions import ClientError


def code(e):
    return e.value.response["Error"]["Code"]


def denied(call):
    with pytest.raises(ClientError) as e:
        call()
    return code(e)


@pytest.fixture()
def locked_bucket(s3):
    name = f"lock-{datetime.datetime.now().strftime('%H%M%S%f')}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_retention_and_legal_hold_hold(cloud, s3, locked_bucket, bucket):
    b = locked_bucket
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert denied(lambda: s3.put_bucket_versioning(
        Bucket=b, VersioningConfiguration={"Status": "Suspended"})) == "InvalidBucketState"

    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    vc = s3.put_object(Bucket=b, Key="k", Body=b"compliance", ObjectLockMode="COMPLIANCE",
                       ObjectLockRetainUntilDate=soon)["VersionId"]
    h = s3.head_object(Bucket=b, Key="k", VersionId=vc)
    assert h["ObjectLockMode"] == "COMPLIANCE" and abs((h["ObjectLockRetainUntilDate"] - soon).total_seconds()) < 1
    r = s3.get_object_retention(Bucket=b, Key="k", VersionId=vc)["Retention"]
    assert r["Mode"] == "COMPLIANCE"
    # Nobody deletes it or weakens its retention, bypass or not.
    for bypass in (False, True):
        assert denied(lambda: s3.delete_object(Bucket=b, Key="k", VersionId=vc,
                                               BypassGovernanceRetention=bypass)) == "AccessDenied"
    assert denied(lambda: s3.put_object_retention(
        Bucket=b, Key="k", VersionId=vc, BypassGovernanceRetention=True,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})) == "AccessDenied"
    assert denied(lambda: s3.put_object_retention(
        Bucket=b, Key="k", VersionId=vc,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon - datetime.timedelta(minutes=5)})) == "AccessDenied"
    d = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "k", "VersionId": vc}]})
    assert [(e["Code"], e["Key"], e["VersionId"]) for e in d.get("Errors", [])] == [("AccessDenied", "k", vc)]
    # An overwrite and a plain delete only add versions; the locked bytes stay.
    s3.put_object(Bucket=b, Key="k", Body=b"newer")
    s3.delete_object(Bucket=b, Key="k")
    assert s3.get_object(Bucket=b, Key="k", VersionId=vc)["Body"].read() == b"compliance"

    # Governance: the owner's explicit bypass, and only that, removes it.
    vg = s3.put_object(Bucket=b, Key="g", Body=b"gov", ObjectLockMode="GOVERNANCE",
                       ObjectLockRetainUntilDate=soon)["VersionId"]
    assert denied(lambda: s3.delete_object(Bucket=b, Key="g", VersionId=vg)) == "AccessDenied"
    # Changing the mode, even to the stricter COMPLIANCE, is a change governance guards.
    assert denied(lambda: s3.put_object_retention(
        Bucket=b, Key="g", VersionId=vg,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon})) == "AccessDenied"
    assert s3.get_object_retention(Bucket=b, Key="g", VersionId=vg)["Retention"]["Mode"] == "GOVERNANCE"
    other = cloud.new_account("lock-stranger")
    s = cloud.boto3(access_key=other["AWS_ACCESS_KEY_ID"], secret_key=other["AWS_SECRET_ACCESS_KEY"])
    assert denied(lambda: s.delete_object(Bucket=b, Key="g", VersionId=vg,
                                          BypassGovernanceRetention=True)) == "AccessDenied"
    assert denied(lambda: s.put_object_legal_hold(Bucket=b, Key="g", VersionId=vg,
                                                  LegalHold={"Status": "OFF"})) == "AccessDenied"
    s3.delete_object(Bucket=b, Key="g", VersionId=vg, BypassGovernanceRetention=True)

    # Legal hold: no retention, still undeletable until lifted.
    vh = s3.put_object(Bucket=b, Key="h", Body=b"hold", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.get_object_legal_hold(Bucket=b, Key="h", VersionId=vh)["LegalHold"]["Status"] == "ON"
    assert denied(lambda: s3.delete_object(Bucket=b, Key="h", VersionId=vh,
                                           BypassGovernanceRetention=True)) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=b, Key="h", VersionId=vh, LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=b, Key="h", VersionId=vh)

    # A default retention applies to new objects.
    s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    vd = s3.put_object(Bucket=b, Key="d", Body=b"d")["VersionId"]
    assert s3.head_object(Bucket=b, Key="d", VersionId=vd)["ObjectLockMode"] == "GOVERNANCE"

    for days in (0, -1):
        assert denied(lambda: s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": days}}})) == "InvalidArgument"

    # Reading a lock where the bucket has none is 400, as S3 answers.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    assert denied(lambda: s3.get_object_retention(Bucket=bucket, Key="plain")) == "InvalidRequest"
    assert denied(lambda: s3.get_object_legal_hold(Bucket=bucket, Key="plain")) == "InvalidRequest"
    # Lock headers on a bucket without object lock are refused; enabling it needs versioning.
    assert denied(lambda: s3.put_object(Bucket=bucket, Key="x", Body=b"x", ObjectLockLegalHoldStatus="ON")) == "InvalidRequest"
    assert denied(lambda: s3.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})) == "InvalidBucketState"
