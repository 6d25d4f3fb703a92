"""Bucket versioning with real clients: boto3 (versions, delete markers, GET/HEAD/DELETE/
copy by version id, ListObjectVersions paging with markers and delimiters, DeleteObjects
with version ids), awscli, and rclone's `--s3-versions`; the owner-only configuration
and what a stranger sees."""
import pytest
from botocore.exceptions import ClientError

from helpers_clients import aws, rclone


def code(e):
    return e.value.response["Error"]["Code"]


def versions(s3, bucket, **kw):
    r = s3.list_object_versions(Bucket=bucket, **kw)
    return ([(v["Key"], v["VersionId"], v["IsLatest"]) for v in r.get("Versions", [])],
            [(m["Key"], m["VersionId"], m["IsLatest"]) for m in r.get("DeleteMarkers", [])])


def empty_versioned(s3, bucket):
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])


@pytest.fixture()
def vbucket(s3, bucket):
    yield bucket
    empty_versioned(s3, bucket)


def test_versions_markers_and_restores(s3, vbucket):
    b = vbucket
    s3.put_object(Bucket=b, Key="k", Body=b"before")          # the null version
    assert s3.get_bucket_versioning(Bucket=b).get("Status") is None
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"two")["VersionId"]
    assert len({v1, v2, "null"}) == 3
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"two"
    for v, body in [(v1, b"one"), ("null", b"before"), (v2, b"two")]:
        g = s3.get_object(Bucket=b, Key="k", VersionId=v)
        assert g["Body"].read() == body and g["VersionId"] == v
        assert s3.head_object(Bucket=b, Key="k", VersionId=v)["ContentLength"] == len(body)
    vs, ms = versions(s3, b)
    assert vs == [("k", v2, True), ("k", v1, False), ("k", "null", False)] and ms == []

    # A delete leaves a marker: the key is gone from listings and GETs, not its versions.
    d = s3.delete_object(Bucket=b, Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k")
    assert code(e) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId=marker)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    assert s3.list_objects_v2(Bucket=b).get("KeyCount") == 0
    assert s3.get_object(Bucket=b, Key="k", VersionId=v1)["Body"].read() == b"one"
    vs, ms = versions(s3, b)
    assert ms == [("k", marker, True)] and [v[1] for v in vs] == [v2, v1, "null"]

    # Removing the marker brings v2 back; removing v2 brings v1 back.
    d = s3.delete_object(Bucket=b, Key="k", VersionId=marker)
    assert d["DeleteMarker"] is True and d["VersionId"] == marker
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"two"
    s3.delete_object(Bucket=b, Key="k", VersionId=v2)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"one"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId=v2)
    assert code(e) == "NoSuchVersion"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId="../etc")
    assert code(e) == "InvalidArgument"

    # Restoring an old version: copy it onto its own key (a new latest version).
    c = s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k", "VersionId": "null"})
    assert c["CopySourceVersionId"] == "null" and c["VersionId"] not in (v1, "null")
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"before"

    # Suspended: writes replace the null version, older versions stay. As in S3, the
    # PUT's answer names no version; GET and HEAD name the null one.
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    assert "VersionId" not in s3.put_object(Bucket=b, Key="k", Body=b"s1")
    assert "VersionId" not in s3.put_object(Bucket=b, Key="k", Body=b"s2")
    assert s3.head_object(Bucket=b, Key="k")["VersionId"] == "null"
    vs, _ = versions(s3, b)
    assert [v[1] for v in vs].count("null") == 1 and v1 in [v[1] for v in vs]
    assert s3.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read() == b"s2"


def test_listing_pages_markers_and_delimiter(s3, vbucket):
    b = vbucket
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    keys = ["a", "dir/x", "dir/y", "z"]
    for k in keys:
        for i in range(3):
            s3.put_object(Bucket=b, Key=k, Body=f"{k}{i}".encode())
    s3.delete_object(Bucket=b, Key="z")
    whole_v, whole_m = versions(s3, b)
    assert len(whole_v) == 12 and len(whole_m) == 1
    # Paging two at a time with the markers boto3 follows gives the same entries.
    seen = []
    for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=b, PaginationConfig={"PageSize": 2}):
        assert len(page.get("Versions", [])) + len(page.get("DeleteMarkers", [])) <= 2
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        seen += [(m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])]
    assert sorted(seen) == sorted([(k, v) for k, v, _ in whole_v + whole_m])
    # Delimiter: dir/ rolls up.
    r = s3.list_object_versions(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in r["Versions"]} == {"a", "z"}
    r = s3.list_object_versions(Bucket=b, Prefix="dir/", MaxKeys=4)
    assert r["IsTruncated"] and len(r["Versions"]) == 4
    r2 = s3.list_object_versions(Bucket=b, Prefix="dir/", KeyMarker=r["NextKeyMarker"],
                                 VersionIdMarker=r["NextVersionIdMarker"])
    assert len(r2["Versions"]) == 2 and not r2["IsTruncated"]


def test_delete_objects_with_versions_and_a_strangers_view(cloud, s3, vbucket):
    b = vbucket
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=b, Key="m", Body=bytes([i]))["VersionId"] for i in range(3)]
    r = s3.delete_objects(Bucket=b, Delete={"Objects": [
        {"Key": "m", "VersionId": ids[0]}, {"Key": "m"}]})
    deleted = {(d["Key"], d.get("VersionId"), d.get("DeleteMarker")) for d in r["Deleted"]}
    assert ("m", ids[0], None) in deleted
    assert any(d.get("DeleteMarker") and d.get("DeleteMarkerVersionId") for d in r["Deleted"])
    vs, ms = versions(s3, b)
    assert [v[1] for v in vs] == [ids[2], ids[1]] and len(ms) == 1

    other = cloud.new_account("versions-stranger")
    s = cloud.boto3(access_key=other["AWS_ACCESS_KEY_ID"], secret_key=other["AWS_SECRET_ACCESS_KEY"])
    for call in (lambda: s.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"}),
                 lambda: s.get_bucket_versioning(Bucket=b),
                 lambda: s.list_object_versions(Bucket=b),
                 lambda: s.get_object(Bucket=b, Key="m", VersionId=ids[1]),
                 lambda: s.delete_object(Bucket=b, Key="m", VersionId=ids[1])):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert s3.get_object(Bucket=b, Key="m", VersionId=ids[1])["Body"].read() == b"\x01"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"})
    assert code(e) == "NotImplemented"


def test_awscli_and_rclone_see_versions(cloud, s3, vbucket, tmp_path):
    b = vbucket
    aws(cloud, "v2", "s3api", "put-bucket-versioning", "--bucket", b,
        "--versioning-configuration", "Status=Enabled")
    bodies = [b"first version\n", b"second version\n"]
    for body in bodies:
        s3.put_object(Bucket=b, Key="f.txt", Body=body)
    out = aws(cloud, "v2", "s3api", "list-object-versions", "--bucket", b, "--query",
              "Versions[].VersionId", "--output", "text").stdout.split()
    assert len(out) == 2 and "null" not in out
    # rclone lists old versions as name-vYYYY-MM-DD-HHMMSS-sss.ext and copies them.
    ls = rclone(cloud, "ls", "--s3-versions", f"euca:{b}").stdout
    names = sorted(line.split()[-1] for line in ls.splitlines())
    assert len(names) == 2 and "f.txt" in names, ls
    old = next(n for n in names if n != "f.txt")
    rclone(cloud, "copyto", "--s3-versions", f"euca:{b}/{old}", str(tmp_path / "old.txt"))
    assert (tmp_path / "old.txt").read_bytes() == bodies[0]
