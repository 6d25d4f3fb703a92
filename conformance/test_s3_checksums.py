"""Flexible checksums (x-amz-checksum-*) on multipart uploads, as S3 does them, driven
with boto3 and the awscli: per-part checksums verified and listed, the composite
(`<b64>-N`) or full-object checksum derived and checked on Complete, and returned by
HEAD/GET with checksum mode and by GetObjectAttributes.

Every expected value is computed here independently of the server: zlib for CRC32,
hashlib for SHA-1/SHA-256, and a table-driven CRC below for CRC32C and CRC64NVME
(checked against the catalogue's check values). botocore computes CRC32C/CRC64NVME
only with awscrt; without it the test hands botocore the values computed here, which
it then sends as the x-amz-checksum-* header as it would its own.
"""
import base64
import hashlib
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from helpers_clients import MiB, aws, sha256_file

try:
    from botocore.compat import HAS_CRT
except ImportError:  # pragma: no cover - older botocore
    HAS_CRT = False


# -- independent checksum implementations --------------------------------------------

def _table(poly):
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c)
    return out


class _Crc:
    """A reflected CRC with all-ones init and final xor (CRC-32C, CRC-64/NVME)."""

    def __init__(self, poly, width):
        self.table = _table(poly)
        self.mask = (1 << width) - 1
        self.nbytes = width // 8

    def __call__(self, data, prev=None):
        """CRC of data; with `prev` (the CRC of what came before), of the concatenation."""
        t = self.table
        c = self.mask if prev is None else prev ^ self.mask
        for b in data:
            c = t[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ self.mask


_crc32c = _Crc(0x82F63B78, 32)
_crc64nvme = _Crc(0x9A6C9329AC4BC9B5, 64)
assert _crc32c(b"123456789") == 0xE3069283
assert _crc64nvme(b"123456789") == 0xAE8B14860A799888


def raw_checksum(alg, data, prev=None):
    """Raw digest bytes; for CRCs `prev` continues a previous raw CRC (full-object)."""
    if alg == "SHA1":
        return hashlib.sha1(data).digest()
    if alg == "SHA256":
        return hashlib.sha256(data).digest()
    p = None if prev is None else int.from_bytes(prev, "big")
    if alg == "CRC32":
        return zlib.crc32(data, 0 if p is None else p).to_bytes(4, "big")
    if alg == "CRC32C":
        return _crc32c(data, p).to_bytes(4, "big")
    if alg == "CRC64NVME":
        return _crc64nvme(data, p).to_bytes(8, "big")
    raise ValueError(alg)


def b64(raw):
    return base64.b64encode(raw).decode()


def composite(alg, part_raws):
    return f"{b64(raw_checksum(alg, b''.join(part_raws)))}-{len(part_raws)}"


def full_object(alg, parts):
    raw = None
    for p in parts:
        raw = raw_checksum(alg, p, raw)
    return b64(raw)


BOTOCORE_COMPUTES = {"CRC32", "SHA1", "SHA256"} | ({"CRC32C", "CRC64NVME"} if HAS_CRT else set())


def checksum_args(alg, data):
    """Arguments that make botocore send the part's checksum: its own, or ours."""
    if alg in BOTOCORE_COMPUTES:
        return {"ChecksumAlgorithm": alg}
    return {f"Checksum{alg}": b64(raw_checksum(alg, data))}


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


CASES = [
    ("CRC32", "COMPOSITE"),
    ("CRC32", "FULL_OBJECT"),
    ("CRC32C", "COMPOSITE"),
    ("CRC32C", "FULL_OBJECT"),
    ("CRC64NVME", "FULL_OBJECT"),
    ("SHA1", "COMPOSITE"),
    ("SHA256", "COMPOSITE"),
]


@pytest.mark.parametrize("alg,ctype", CASES)
def test_multipart_checksum(s3, bucket, alg, ctype):
    """Each algorithm and type: part checksums echoed and listed, the object checksum
    in the Complete result, on HEAD/GET with checksum mode and in GetObjectAttributes
    equal to the value computed here."""
    key = f"mp-{alg}-{ctype}"
    parts = [os.urandom(5 * MiB), os.urandom(1001)]
    part_raws = [raw_checksum(alg, p) for p in parts]
    expected = composite(alg, part_raws) if ctype == "COMPOSITE" else full_object(alg, parts)
    field = f"Checksum{alg}"

    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=alg,
                                    ChecksumType=ctype)
    assert up.get("ChecksumAlgorithm") == alg
    assert up.get("ChecksumType") == ctype
    uid = up["UploadId"]
    listed = []
    for n, (data, raw) in enumerate(zip(parts, part_raws), start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data,
                           **checksum_args(alg, data))
        assert r[field] == b64(raw), f"part {n}"
        listed.append({"PartNumber": n, "ETag": r["ETag"], field: r[field]})

    lp = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert lp["ChecksumAlgorithm"] == alg
    assert lp.get("ChecksumType") == ctype
    assert [p[field] for p in lp["Parts"]] == [b64(r) for r in part_raws]

    extra = {}
    if ctype == "FULL_OBJECT":
        # The client's own full-object checksum goes along, as SDKs send it.
        extra = {field: expected, "ChecksumType": "FULL_OBJECT"}
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": listed}, **extra)
    assert done[field] == expected
    assert done.get("ChecksumType") == ctype

    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head[field] == expected
    assert head["ChecksumType"] == ctype
    assert field not in s3.head_object(Bucket=bucket, Key=key)

    # GET with checksum mode: botocore validates a full-object CRC32 it can compute.
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got[field] == expected and got["ChecksumType"] == ctype
    assert got["Body"].read() == b"".join(parts)
    # A range is not the object: S3 gives no checksum for it.
    rng = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-99", ChecksumMode="ENABLED")
    assert field not in rng and rng["Body"].read() == parts[0][:100]
    if ctype == "COMPOSITE":
        # One part of a composite object: that part's checksum.
        p2 = s3.get_object(Bucket=bucket, Key=key, PartNumber=2, ChecksumMode="ENABLED")
        assert p2[field] == b64(part_raws[1]) and p2["Body"].read() == parts[1]

    attrs = s3.get_object_attributes(
        Bucket=bucket, Key=key,
        ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
    assert attrs["ETag"] == head["ETag"].strip('"')
    assert attrs["ObjectSize"] == sum(map(len, parts))
    assert attrs["StorageClass"] == "STANDARD"
    # Here S3 writes a composite without its "-N".
    assert attrs["Checksum"][field] == expected.split("-")[0]
    assert attrs["Checksum"]["ChecksumType"] == ctype
    op = attrs["ObjectParts"]
    assert op["TotalPartsCount"] == 2
    if ctype == "COMPOSITE":
        assert [(p["PartNumber"], p["Size"], p[field]) for p in op["Parts"]] == [
            (1, len(parts[0]), b64(part_raws[0])), (2, len(parts[1]), b64(part_raws[1]))]
        page = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"],
                                        MaxParts=1, PartNumberMarker=1)["ObjectParts"]
        assert [p["PartNumber"] for p in page["Parts"]] == [2]
        assert page["IsTruncated"] is False


def test_create_upload_checksum_type_rules(s3, bucket):
    """CRC64NVME is full-object only, SHA1/SHA256 composite only; a type needs an
    algorithm; without a type CRC64NVME is full-object and the others composite."""
    for alg, ctype in [("CRC64NVME", "COMPOSITE"), ("SHA256", "FULL_OBJECT"),
                       ("SHA1", "FULL_OBJECT")]:
        with pytest.raises(ClientError) as e:
            s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm=alg,
                                       ChecksumType=ctype)
        assert error_code(e) == "InvalidRequest", (alg, ctype)
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumType="FULL_OBJECT")
    assert error_code(e) == "InvalidRequest"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    for alg, ctype in [("CRC64NVME", "FULL_OBJECT"), ("CRC32", "COMPOSITE"),
                       ("SHA256", "COMPOSITE")]:
        up = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm=alg)
        assert up.get("ChecksumType") == ctype, alg
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=up["UploadId"])


def test_part_checksum_refused_stores_nothing(s3, bucket):
    """A part whose checksum does not match its bytes is BadDigest; a part without the
    upload's algorithm is InvalidRequest; neither leaves a part behind."""
    key = "bad-part"
    data = os.urandom(64 * 1024)
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")[
        "UploadId"]
    wrong = b64(hashlib.sha256(data + b"x").digest())
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=data,
                       ChecksumSHA256=wrong)
    assert error_code(e) == "BadDigest"
    # botocore adds its default CRC32 here: not the upload's SHA256.
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=data)
    assert error_code(e) == "InvalidRequest"
    assert "sha256" in e.value.response["Error"]["Message"]
    assert s3.list_parts(Bucket=bucket, Key=key, UploadId=uid).get("Parts", []) == []
    # The right checksum is taken.
    r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=data,
                       ChecksumAlgorithm="SHA256")
    assert r["ChecksumSHA256"] == b64(hashlib.sha256(data).digest())
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)


def _two_parts(s3, bucket, key, alg="CRC32", ctype="COMPOSITE"):
    parts = [os.urandom(5 * MiB), os.urandom(300)]
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=alg,
                                     ChecksumType=ctype)["UploadId"]
    listed = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data,
                           ChecksumAlgorithm=alg)
        listed.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{alg}": r[f"Checksum{alg}"]})
    return uid, parts, listed


def test_complete_checks_part_and_object_checksums(s3, bucket):
    """Complete refuses a part listed without its checksum (InvalidRequest) or with a
    wrong one (InvalidPart), and an object checksum that does not match (BadDigest);
    the upload survives each refusal and then completes."""
    key = "complete-checks"
    uid, parts, listed = _two_parts(s3, bucket, key)

    def complete(plist, **kw):
        return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                            MultipartUpload={"Parts": plist}, **kw)

    omitted = [listed[0], {k: v for k, v in listed[1].items() if k != "ChecksumCRC32"}]
    with pytest.raises(ClientError) as e:
        complete(omitted)
    assert error_code(e) == "InvalidRequest"
    assert "part 2" in e.value.response["Error"]["Message"]

    wrong = [dict(listed[0], ChecksumCRC32=b64(b"\0\0\0\0")), listed[1]]
    with pytest.raises(ClientError) as e:
        complete(wrong)
    assert error_code(e) == "InvalidPart"

    with pytest.raises(ClientError) as e:
        complete(listed, ChecksumCRC32=b64(b"\1\2\3\4"))
    assert error_code(e) == "BadDigest"

    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key=key)
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert len(s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]) == 2

    expected = composite("CRC32", [raw_checksum("CRC32", p) for p in parts])
    # The right composite (here given with its "-N") is accepted.
    done = complete(listed, ChecksumCRC32=expected)
    assert done["ChecksumCRC32"] == expected
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts)


def test_complete_full_object_checksum_header(s3, bucket):
    """A full-object upload: a wrong whole-object CRC in the Complete request is
    BadDigest, the right one (what a client computes over the file) is accepted."""
    key = "full-object"
    uid, parts, listed = _two_parts(s3, bucket, key, "CRC32", "FULL_OBJECT")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": listed},
                                     ChecksumCRC32=b64(b"\1\2\3\4"), ChecksumType="FULL_OBJECT")
    assert error_code(e) == "BadDigest"
    whole = b64(zlib.crc32(b"".join(parts)).to_bytes(4, "big"))
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": listed},
                                        ChecksumCRC32=whole, ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC32"] == whole and done["ChecksumType"] == "FULL_OBJECT"


@pytest.mark.parametrize("alg", ["SHA256", "CRC64NVME"])
def test_single_put_checksum_returned(s3, bucket, alg):
    """A single PUT's checksum comes back with checksum mode (type FULL_OBJECT) and in
    GetObjectAttributes; CRC64NVME is verified like the others."""
    data = os.urandom(100 * 1024 + 3)
    field = f"Checksum{alg}"
    value = b64(raw_checksum(alg, data))
    if alg == "CRC64NVME":
        bad = b64(raw_checksum(alg, data + b"!"))
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key="one", Body=data, ChecksumCRC64NVME=bad)
        assert error_code(e) == "BadDigest"
    r = s3.put_object(Bucket=bucket, Key="one", Body=data, **checksum_args(alg, data))
    assert r[field] == value
    head = s3.head_object(Bucket=bucket, Key="one", ChecksumMode="ENABLED")
    assert head[field] == value and head["ChecksumType"] == "FULL_OBJECT"
    attrs = s3.get_object_attributes(Bucket=bucket, Key="one",
                                     ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"])
    assert attrs["Checksum"] == {field: value, "ChecksumType": "FULL_OBJECT"}
    assert "ObjectParts" not in attrs and attrs["ObjectSize"] == len(data)
    with pytest.raises(ClientError) as e:
        s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=["Colour"])
    assert error_code(e) == "InvalidArgument"


def test_put_without_a_checksum_gets_crc64nvme(cloud, s3, bucket):
    """As S3 now does: an object PUT without any checksum gets a CRC64NVME computed by
    the server (returned by the PUT, by HEAD/GET with checksum mode and in
    GetObjectAttributes, type FULL_OBJECT); a PUT that declares one keeps only its own."""
    plain = cloud.boto3(request_checksum_calculation="when_required")
    for n, data in enumerate([b"", b"123456789", os.urandom(3 * MiB + 5)]):
        key = f"default-{n}"
        value = b64(raw_checksum("CRC64NVME", data))
        r = plain.put_object(Bucket=bucket, Key=key, Body=data)
        assert r["ResponseMetadata"]["HTTPHeaders"]["x-amz-checksum-crc64nvme"] == value, n
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == value and head["ChecksumType"] == "FULL_OBJECT"
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == data and got["ChecksumCRC64NVME"] == value
        attrs = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["Checksum"])
        assert attrs["Checksum"] == {"ChecksumCRC64NVME": value, "ChecksumType": "FULL_OBJECT"}
    data = b"declared"
    r = s3.put_object(Bucket=bucket, Key="declared", Body=data, ChecksumAlgorithm="CRC32")
    head = s3.head_object(Bucket=bucket, Key="declared", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == b64(raw_checksum("CRC32", data))
    assert "ChecksumCRC64NVME" not in head and "ChecksumCRC64NVME" not in r


def test_multipart_without_an_algorithm_gets_a_full_object_crc64nvme(cloud, s3, bucket):
    """An upload created without an algorithm whose parts declare no checksum: each
    part (UploadPart and UploadPartCopy) gets a CRC64NVME, listed by ListParts, and
    the object the full-object CRC64NVME of the whole, as S3 now does. A part that
    declares another checksum leaves the object without one."""
    plain = cloud.boto3(request_checksum_calculation="when_required")
    src = os.urandom(5 * MiB + 7)
    plain.put_object(Bucket=bucket, Key="copy-src", Body=src)
    first, last = os.urandom(5 * MiB), os.urandom(4099)
    up = plain.create_multipart_upload(Bucket=bucket, Key="mp-default")
    uid = up["UploadId"]
    assert "ChecksumAlgorithm" not in up
    r1 = plain.upload_part(Bucket=bucket, Key="mp-default", UploadId=uid, PartNumber=1, Body=first)
    r2 = plain.upload_part_copy(Bucket=bucket, Key="mp-default", UploadId=uid, PartNumber=2,
                                CopySource={"Bucket": bucket, "Key": "copy-src"})
    r3 = plain.upload_part(Bucket=bucket, Key="mp-default", UploadId=uid, PartNumber=3, Body=last)
    listed = plain.list_parts(Bucket=bucket, Key="mp-default", UploadId=uid)["Parts"]
    assert [p.get("ChecksumCRC64NVME") for p in listed] == [
        b64(raw_checksum("CRC64NVME", d)) for d in (first, src, last)]
    parts = [{"PartNumber": 1, "ETag": r1["ETag"]},
             {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]},
             {"PartNumber": 3, "ETag": r3["ETag"]}]
    plain.complete_multipart_upload(Bucket=bucket, Key="mp-default", UploadId=uid,
                                    MultipartUpload={"Parts": parts})
    want = full_object("CRC64NVME", [first, src, last])
    head = s3.head_object(Bucket=bucket, Key="mp-default", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == want and head["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="mp-default")["Body"].read()
    assert got == first + src + last

    up = plain.create_multipart_upload(Bucket=bucket, Key="mp-mixed")
    uid = up["UploadId"]
    r1 = plain.upload_part(Bucket=bucket, Key="mp-mixed", UploadId=uid, PartNumber=1, Body=first,
                           ChecksumCRC32=b64(raw_checksum("CRC32", first)))
    r2 = plain.upload_part(Bucket=bucket, Key="mp-mixed", UploadId=uid, PartNumber=2, Body=last)
    plain.complete_multipart_upload(
        Bucket=bucket, Key="mp-mixed", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["ETag"]},
                                   {"PartNumber": 2, "ETag": r2["ETag"]}]})
    head = s3.head_object(Bucket=bucket, Key="mp-mixed", ChecksumMode="ENABLED")
    assert not any(k.startswith("Checksum") for k in head), head


def test_awscli_cp_multipart_crc32(cloud, s3, bucket, tmp_path):
    """`aws s3 cp --checksum-algorithm CRC32` of 20 MiB (multipart, awscli v1: Debian's
    awscli v2 2.9 has no such option) stores the CRC32 checksum S3 would; downloads
    with both awscli versions, checksum validation on, return the same bytes."""
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MiB)
    src.write_bytes(data)
    aws(cloud, "v1", "s3", "cp", "--no-progress", "--checksum-algorithm", "CRC32",
        str(src), f"s3://{bucket}/big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB: it was multipart
    ctype = head["ChecksumType"]
    if ctype == "FULL_OBJECT":
        assert head["ChecksumCRC32"] == b64(zlib.crc32(data).to_bytes(4, "big"))
    else:
        assert ctype == "COMPOSITE"
        sizes = [p["Size"] for p in s3.get_object_attributes(
            Bucket=bucket, Key="big.bin", ObjectAttributes=["ObjectParts"])["ObjectParts"]["Parts"]]
        assert sum(sizes) == len(data)
        offs = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        raws = [raw_checksum("CRC32", data[a:b]) for a, b in zip(offs, offs[1:])]
        assert head["ChecksumCRC32"] == composite("CRC32", raws)
    want = hashlib.sha256(data).hexdigest()
    for variant in ("v1", "v2"):
        out = tmp_path / f"back-{variant}.bin"
        aws(cloud, variant, "s3", "cp", "--no-progress", f"s3://{bucket}/big.bin", str(out))
        assert sha256_file(out) == want, variant
        out2 = tmp_path / f"api-{variant}.bin"
        r = aws(cloud, variant, "--output", "json", "s3api", "get-object", "--bucket", bucket,
                "--key", "big.bin", "--checksum-mode", "ENABLED", str(out2))
        assert sha256_file(out2) == want, variant
        assert head["ChecksumCRC32"] in r.stdout, variant
