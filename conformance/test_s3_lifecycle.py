"""Bucket lifecycle with boto3 on a cloud whose lifecycle "day" is one second and whose
worker runs every second ([walrus] lifecycle_day_secs / lifecycle_interval_secs):
expiration by prefix, noncurrent versions beyond the newest N, lone delete markers,
incomplete multipart uploads, a locked version left alone, and the configuration's
errors and owner-only access."""
import datetime
import time

import pytest
from botocore.exceptions import ClientError

from conftest import start_cloud


@pytest.fixture(scope="module")
def lc_cloud(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    cfg = tmp / "euca.toml"
    cfg.write_text("[walrus]\nlifecycle_interval_secs = 1\nlifecycle_day_secs = 1\n")
    c = start_cloud(tmp, ["--config", str(cfg)])
    try:
        yield c
    finally:
        c.stop()


def until(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def keys(s3, b):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", []))


def version_ids(s3, b, key):
    r = s3.list_object_versions(Bucket=b, Prefix=key)
    return ([v["VersionId"] for v in r.get("Versions", []) if v["Key"] == key],
            [m["VersionId"] for m in r.get("DeleteMarkers", []) if m["Key"] == key])


def rule(rid, prefix="", **actions):
    return {"ID": rid, "Filter": {"Prefix": prefix}, "Status": "Enabled", **actions}


def test_expiration_by_prefix_and_aborted_uploads(lc_cloud):
    s3 = lc_cloud.boto3()
    b = "lc-plain"
    s3.create_bucket(Bucket=b)
    for k in ("tmp/a", "tmp/b", "keep/c"):
        s3.put_object(Bucket=b, Key=k, Body=b"x")
    up = s3.create_multipart_upload(Bucket=b, Key="big")["UploadId"]
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        rule("tmp", "tmp/", Expiration={"Days": 2}),
        rule("mpu", "", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 2})]})
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert {r["ID"] for r in got} == {"tmp", "mpu"}
    until("tmp/ expired", lambda: keys(s3, b) == ["keep/c"])
    until("upload aborted", lambda: not s3.list_multipart_uploads(Bucket=b).get("Uploads"))
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=b, Key="big", UploadId=up)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    time.sleep(2)
    assert keys(s3, b) == ["keep/c"]
    s3.delete_bucket_lifecycle(Bucket=b)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=b)
    assert e.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"


def test_noncurrent_versions_and_lone_markers(lc_cloud):
    s3 = lc_cloud.boto3()
    b = "lc-versions"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=b, Key="n", Body=bytes([i]))["VersionId"] for i in range(3)]
    s3.put_object(Bucket=b, Key="m", Body=b"m")
    s3.delete_object(Bucket=b, Key="m")
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        rule("n-old", "n", NoncurrentVersionExpiration={"NoncurrentDays": 2, "NewerNoncurrentVersions": 1}),
        rule("m-old", "m", NoncurrentVersionExpiration={"NoncurrentDays": 2}),
        rule("markers", Expiration={"ExpiredObjectDeleteMarker": True})]})
    # n keeps its current version and the newest noncurrent one.
    until("n trimmed", lambda: version_ids(s3, b, "n") == ([ids[2], ids[1]], []))
    # m's only object version expires, then its marker is alone and goes too.
    until("m gone", lambda: version_ids(s3, b, "m") == ([], []))
    assert s3.get_object(Bucket=b, Key="n")["Body"].read() == b"\x02"


def test_locked_versions_stay_and_configuration_errors(lc_cloud):
    s3 = lc_cloud.boto3()
    b = "lc-locked"
    s3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    locked = s3.put_object(Bucket=b, Key="k", Body=b"keep", ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate=soon)["VersionId"]
    plain = s3.put_object(Bucket=b, Key="j", Body=b"j1")["VersionId"]
    s3.put_object(Bucket=b, Key="k", Body=b"newer")
    s3.put_object(Bucket=b, Key="j", Body=b"j2")
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        rule("old", NoncurrentVersionExpiration={"NoncurrentDays": 1})]})
    until("j's old version expired", lambda: plain not in version_ids(s3, b, "j")[0])
    time.sleep(2)
    assert s3.get_object(Bucket=b, Key="k", VersionId=locked)["Body"].read() == b"keep"

    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            rule("t", Transitions=[{"Days": 1, "StorageClass": "GLACIER"}])]})
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            rule("z", Expiration={"Days": 0})]})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    other = lc_cloud.new_account("lc-stranger")
    s = lc_cloud.boto3(access_key=other["AWS_ACCESS_KEY_ID"], secret_key=other["AWS_SECRET_ACCESS_KEY"])
    for call in (lambda: s.get_bucket_lifecycle_configuration(Bucket=b),
                 lambda: s.delete_bucket_lifecycle(Bucket=b),
                 lambda: s.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={
                     "Rules": [rule("x", Expiration={"Days": 1})]})):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]] == ["old"]

    # A rule in S3's older form (<Rule><Prefix>, no Filter) comes back in that form; a
    # rule put without an ID gets one. A transition's bad date is the client's error.
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"Prefix": "logs/", "Status": "Enabled", "Expiration": {"Days": 3}},
        {"ID": "f", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert got[0]["Prefix"] == "logs/" and "Filter" not in got[0] and len(got[0]["ID"]) > 0
    assert got[1]["Filter"] == {"Prefix": "tmp/"} and "Prefix" not in got[1] and got[1]["ID"] == "f"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            rule("t", Transitions=[{"Date": "20220120", "StorageClass": "GLACIER"}])]})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
