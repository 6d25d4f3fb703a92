"""EC2 images on the cloud controller with real clients: bundles made and uploaded
with `euca bundle-image` / `euca upload-bundle`, registered with awscli v2, awscli v1
and boto3, installed in the background (pending -> available | failed), kernel and
ramdisk images, launch permissions across accounts, deregistration, EBS images."""
import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import euca_bin
from helpers_ec2 import bundle_file, unique

def bundle(cloud, tmp_path, bucket, *extra, size=1 << 20):
    """Bundles `size` random bytes with the admin's eucarc and uploads the bundle
    to `bucket`; returns the ImageLocation."""
    src = tmp_path / unique("src")
    src.write_bytes(os.urandom(size))
    return bundle_file(cloud, tmp_path, bucket, src, *extra)


def wait_available(ec2, image_id):
    ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


def code(e):
    return e.value.response["Error"]["Code"]


def register_and_wait_failed(ec2, loc, name):
    """Registers `loc`, which must fail to install; returns the failed image."""
    image_id = ec2.register_image(ImageLocation=loc, Name=unique(name))["ImageId"]
    with pytest.raises(WaiterError):
        ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    img = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert img["State"] == "failed"
    return img


@pytest.fixture()
def other(cloud):
    acct = cloud.new_account(unique("imgother"))
    return acct, cloud.ec2(acct["AWS_ACCESS_KEY_ID"], acct["AWS_SECRET_ACCESS_KEY"])


def test_register_bundle_with_awscli_and_boto3_becomes_available(cloud, bucket, tmp_path):
    ec2 = cloud.ec2()
    loc = bundle(cloud, tmp_path, bucket)
    name = unique("awscli")
    r = cloud.aws_ec2("register-image", "--image-location", loc, "--name", name)
    image_id = json.loads(r.stdout)["ImageId"]
    assert image_id.startswith("emi-") and len(image_id) >= 12
    # Describable at once, pending or already done.
    first = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert first["State"] in ("pending", "available")
    img = wait_available(ec2, image_id)
    assert img["ImageId"] == image_id
    assert img["ImageLocation"] == loc
    assert img["Name"] == name
    assert img["ImageType"] == "machine"
    assert img["Architecture"] == "x86_64"
    assert img["Public"] is False
    assert img["RootDeviceType"] == "instance-store"
    assert img["RootDeviceName"] == "/dev/sda1"
    assert img["VirtualizationType"] == "hvm"
    assert img["Hypervisor"] == "kvm"
    assert img["OwnerId"].isdigit() and img["CreationDate"].endswith("Z")
    assert "StateReason" not in img

    # euca2ools lists with Owner=self, then ExecutableBy=self.
    assert image_id in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    assert image_id in [i["ImageId"] for i in ec2.describe_images(ExecutableUsers=["self"])["Images"]]
    assert image_id not in [i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"]]
    # Filters.
    by_name = ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}])["Images"]
    assert [i["ImageId"] for i in by_name] == [image_id]
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": [name]},
                                        {"Name": "state", "Values": ["failed"]}])["Images"] == []
    loc_match = ec2.describe_images(Filters=[{"Name": "manifest-location", "Values": [f"{bucket}/*"]}])
    assert image_id in [i["ImageId"] for i in loc_match["Images"]]

    # boto3 registers the same bundle under another name, and the name is unique.
    other_id = ec2.register_image(ImageLocation=loc, Name=unique("boto3"),
                                  Architecture="i386", Description="from boto3")["ImageId"]
    img2 = wait_available(ec2, other_id)
    assert img2["Architecture"] == "i386" and img2["Description"] == "from boto3"
    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=loc, Name=name)
    assert code(e) == "InvalidAMIName.Duplicate"
    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=loc, Name="has*star")
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=loc, Name=unique("arch"), Architecture="sparc")
    assert code(e) == "InvalidParameterValue"

    # awscli v1 sees it too.
    r = cloud.aws_ec2("describe-images", "--image-ids", image_id, v1=True)
    assert json.loads(r.stdout)["Images"][0]["State"] == "available"
    for i in (image_id, other_id):
        ec2.deregister_image(ImageId=i)


def test_kernel_and_ramdisk_bundles_and_a_machine_image_naming_them(cloud, bucket, tmp_path):
    ec2 = cloud.ec2()
    kloc = bundle(cloud, tmp_path, bucket, "--kernel", "true")
    rloc = bundle(cloud, tmp_path, bucket, "--ramdisk", "true")
    eki = ec2.register_image(ImageLocation=kloc, Name=unique("kernel"))["ImageId"]
    eri = ec2.register_image(ImageLocation=rloc, Name=unique("ramdisk"))["ImageId"]
    assert eki.startswith("eki-") and eri.startswith("eri-")
    assert wait_available(ec2, eki)["ImageType"] == "kernel"
    assert wait_available(ec2, eri)["ImageType"] == "ramdisk"
    kernels = ec2.describe_images(Filters=[{"Name": "image-type", "Values": ["kernel"]}])["Images"]
    assert eki in [i["ImageId"] for i in kernels] and eri not in [i["ImageId"] for i in kernels]

    mloc = bundle(cloud, tmp_path, bucket)
    r = cloud.aws_ec2("register-image", "--image-location", mloc, "--name", unique("pv"),
                      "--kernel-id", eki, "--ramdisk-id", eri)
    emi = json.loads(r.stdout)["ImageId"]
    img = wait_available(ec2, emi)
    assert (img["KernelId"], img["RamdiskId"]) == (eki, eri)
    assert img["VirtualizationType"] == "paravirtual"
    attr = ec2.describe_image_attribute(ImageId=emi, Attribute="kernel")
    assert attr["KernelId"]["Value"] == eki
    by_kernel = ec2.describe_images(Filters=[{"Name": "kernel-id", "Values": [eki]}])["Images"]
    assert [i["ImageId"] for i in by_kernel] == [emi]

    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=mloc, Name=unique("nokernel"), KernelId="eki-00000000")
    assert code(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=mloc, Name=unique("wrongkind"), KernelId=eri)
    assert code(e) == "InvalidParameterValue"
    for i in (emi, eki, eri):
        ec2.deregister_image(ImageId=i)


def test_tampered_manifest_fails_with_state_reason_and_missing_one_is_refused(cloud, s3, bucket, tmp_path):
    ec2 = cloud.ec2()
    loc = bundle(cloud, tmp_path, bucket)
    key = loc.split("/", 1)[1]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    tampered = body.replace(b"<architecture>x86_64</architecture>", b"<architecture>i386</architecture>")
    assert tampered != body
    s3.put_object(Bucket=bucket, Key=key, Body=tampered, ACL="aws-exec-read")
    img = register_and_wait_failed(ec2, loc, "tampered")
    image_id = img["ImageId"]
    assert img["StateReason"]["Code"] == "Client.InvalidManifest"
    assert "signature" in img["StateReason"]["Message"].lower(), img["StateReason"]
    failed = ec2.describe_images(Filters=[{"Name": "state", "Values": ["failed"]}])["Images"]
    assert image_id in [i["ImageId"] for i in failed]
    ec2.deregister_image(ImageId=image_id)

    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation=f"{bucket}/nothing-here.manifest.xml", Name=unique("missing"))
    assert code(e) == "InvalidManifest"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        ec2.register_image(ImageLocation="not-a-manifest", Name=unique("bad"))
    assert code(e) == "InvalidParameterValue"


def test_a_bundle_for_another_key_fails_without_saying_which_check(cloud, bucket, tmp_path):
    """A bundle whose AES key is wrapped for some other certificate than the cloud's
    (here the user's own) fails with one message for every failure after the key
    unwrap: the user chose the wrapped key, so a stateReason that told padding
    errors from later ones would be a padding oracle on the cloud's RSA key."""
    ec2 = cloud.ec2()
    loc = bundle(cloud, tmp_path, bucket, "--ec2cert", cloud.eucarc["EC2_CERT"])
    img = register_and_wait_failed(ec2, loc, "wrongkey")
    assert img["StateReason"] == {
        "Code": "Client.InvalidManifest",
        "Message": "the bundle does not decrypt and verify with the cloud's key (wrong "
                   "ec2_encrypted_key, or corrupt contents)"}, img["StateReason"]
    ec2.deregister_image(ImageId=img["ImageId"])


def test_launch_permissions_across_accounts(cloud, bucket, tmp_path, other):
    ec2 = cloud.ec2()
    acct, ec2b = other
    loc = bundle(cloud, tmp_path, bucket)
    image_id = ec2.register_image(ImageLocation=loc, Name=unique("shared"))["ImageId"]
    wait_available(ec2, image_id)

    # Another account sees none of it, and cannot register a bundle it may not read.
    def hidden():
        with pytest.raises(ClientError) as e:
            ec2b.describe_images(ImageIds=[image_id])
        assert code(e) == "InvalidAMIID.NotFound"
        assert image_id not in [i["ImageId"] for i in ec2b.describe_images()["Images"]]
        assert image_id not in [i["ImageId"] for i in ec2b.describe_images(ExecutableUsers=["self"])["Images"]]
    hidden()
    for call in (lambda: ec2b.deregister_image(ImageId=image_id),
                 lambda: ec2b.modify_image_attribute(ImageId=image_id, LaunchPermission={
                     "Add": [{"Group": "all"}]}),
                 lambda: ec2b.describe_image_attribute(ImageId=image_id, Attribute="description")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2b.register_image(ImageLocation=loc, Name=unique("stolen"))
    assert code(e) == "InvalidManifest"

    # Launch permission for the other account (current form, boto3).
    ec2.modify_image_attribute(ImageId=image_id,
                               LaunchPermission={"Add": [{"UserId": acct["ACCOUNT_ID"]}]})
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == [{"UserId": acct["ACCOUNT_ID"]}]
    seen = ec2b.describe_images(ExecutableUsers=["self"])["Images"]
    assert image_id in [i["ImageId"] for i in seen]
    assert ec2b.describe_images(ImageIds=[image_id])["Images"][0]["OwnerId"] != acct["ACCOUNT_ID"]
    assert image_id not in [i["ImageId"] for i in ec2b.describe_images(Owners=["self"])["Images"]]
    # A grantee may look but not change or remove it.
    with pytest.raises(ClientError) as e:
        ec2b.deregister_image(ImageId=image_id)
    assert code(e) == "AuthFailure"
    # Removal (legacy form through awscli v1: Attribute, OperationType, UserId.N).
    cloud.aws_ec2("modify-image-attribute", "--image-id", image_id, "--attribute", "launchPermission",
                  "--operation-type", "remove", "--user-ids", acct["ACCOUNT_ID"], v1=True)
    hidden()

    # Public (Group=all), then reset.
    cloud.aws_ec2("modify-image-attribute", "--image-id", image_id,
                  "--launch-permission", "Add=[{Group=all}]")
    img = ec2b.describe_images(ImageIds=[image_id])["Images"][0]
    assert img["Public"] is True
    pub = ec2b.describe_images(Filters=[{"Name": "is-public", "Values": ["true"]}])["Images"]
    assert image_id in [i["ImageId"] for i in pub]
    ec2.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"] == []
    hidden()

    ec2.modify_image_attribute(ImageId=image_id, Description={"Value": "described"})
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="description")["Description"]["Value"] == "described"
    with pytest.raises(ClientError) as e:
        ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": "not-an-id"}]})
    assert code(e) == "InvalidParameterValue"
    ec2.deregister_image(ImageId=image_id)


def test_deregister_removes_it(cloud, bucket, tmp_path):
    ec2 = cloud.ec2()
    loc = bundle(cloud, tmp_path, bucket)
    image_id = ec2.register_image(ImageLocation=loc, Name=unique("gone"))["ImageId"]
    wait_available(ec2, image_id)
    r = cloud.aws_ec2("deregister-image", "--image-id", image_id)
    assert r.returncode == 0
    with pytest.raises(ClientError) as e:
        ec2.describe_images(ImageIds=[image_id])
    assert code(e) == "InvalidAMIID.NotFound"
    assert image_id not in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId=image_id)
    assert code(e) == "InvalidAMIID.NotFound"


def test_pagination_and_tags_filter(cloud, bucket, tmp_path):
    ec2 = cloud.ec2()
    loc = bundle(cloud, tmp_path, bucket)
    ids = [ec2.register_image(ImageLocation=loc, Name=unique("page"))["ImageId"] for _ in range(3)]
    seen, token, pages = [], None, 0
    while pages < 50:
        kw = {"Owners": ["self"], "MaxResults": 1}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_images(**kw)
        seen += [i["ImageId"] for i in r["Images"]]
        pages += 1
        token = r.get("NextToken")
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    for i in ids:
        wait_available(ec2, i)
        ec2.deregister_image(ImageId=i)


def _create_volume_works(ec2, zone):
    try:
        v = ec2.create_volume(AvailabilityZone=zone, Size=1)
    except ClientError as e:
        if code_of(e) == "InvalidAction":
            return None
        raise
    return v


def code_of(e):
    return e.response["Error"]["Code"]


def test_ebs_image_from_a_snapshot(cloud):
    ec2 = cloud.ec2()
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"] \
        if _zones_work(ec2) else f"{cloud.region}a"
    v = _create_volume_works(ec2, zone)
    if v is None:
        pytest.skip("CreateVolume is not implemented on this branch (InvalidAction)")
    ec2.get_waiter("volume_available").wait(VolumeIds=[v["VolumeId"]],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    snap = ec2.create_snapshot(VolumeId=v["VolumeId"])
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap["SnapshotId"]],
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    image_id = ec2.register_image(Name=unique("ebs"), RootDeviceName="/dev/sda1", BlockDeviceMappings=[
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap["SnapshotId"]}}])["ImageId"]
    img = wait_available(ec2, image_id)
    assert img["RootDeviceType"] == "ebs"
    assert img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snap["SnapshotId"]
    assert img["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 1
    ec2.deregister_image(ImageId=image_id)
    ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
    ec2.delete_volume(VolumeId=v["VolumeId"])


def _zones_work(ec2):
    try:
        ec2.describe_availability_zones()
        return True
    except ClientError:
        return False


def test_an_account_without_a_certificate_gets_a_failed_image(cloud, tmp_path, other):
    """Only accounts with a signing certificate on the cloud (today the admin's,
    made by `euca up`) can have bundles installed: another account may register
    its own bundle, which then fails with a stateReason saying why."""
    acct, ec2b = other
    env = {**os.environ, **cloud.eucarc, "AWS_ACCESS_KEY_ID": acct["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": acct["AWS_SECRET_ACCESS_KEY"]}
    env.pop("AWS_CA_BUNDLE", None)
    b = cloud.boto3(access_key=acct["AWS_ACCESS_KEY_ID"], secret_key=acct["AWS_SECRET_ACCESS_KEY"])
    bucket = unique("otherbundles")
    b.create_bucket(Bucket=bucket)
    img = tmp_path / "other.img"
    img.write_bytes(os.urandom(1 << 16))
    r = subprocess.run([euca_bin(), "bundle-image", "-i", str(img), "-d", str(tmp_path / "ob")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([euca_bin(), "upload-bundle", "-b", bucket, "-m",
                        str(tmp_path / "ob" / "other.img.manifest.xml")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    image_id = ec2b.register_image(ImageLocation=f"{bucket}/other.img.manifest.xml",
                                   Name=unique("nocert"))["ImageId"]
    with pytest.raises(WaiterError):
        ec2b.get_waiter("image_available").wait(ImageIds=[image_id],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    img = ec2b.describe_images(ImageIds=[image_id])["Images"][0]
    assert img["State"] == "failed"
    assert "certificate" in img["StateReason"]["Message"], img["StateReason"]
    ec2b.deregister_image(ImageId=image_id)
    for o in b.list_objects_v2(Bucket=bucket).get("Contents", []):
        b.delete_object(Bucket=bucket, Key=o["Key"])
    b.delete_bucket(Bucket=bucket)


def test_images_survive_kill9_and_an_interrupted_install_is_failed(fresh_cloud, tmp_path):
    cloud = fresh_cloud
    s3 = cloud.boto3()
    s3.create_bucket(Bucket="bundles")
    ec2 = cloud.ec2()
    done = ec2.register_image(ImageLocation=bundle(cloud, tmp_path, "bundles"), Name="done")["ImageId"]
    wait_available(ec2, done)
    ec2.modify_image_attribute(ImageId=done, LaunchPermission={"Add": [{"Group": "all"}]})
    before = ec2.describe_images(ImageIds=[done])["Images"]
    cut = ec2.register_image(ImageLocation=bundle(cloud, tmp_path, "bundles", size=8 << 20),
                             Name="cut")["ImageId"]
    cloud.kill9()
    cloud.start()
    ec2 = cloud.ec2()
    assert ec2.describe_images(ImageIds=[done])["Images"] == before
    img = ec2.describe_images(ImageIds=[cut])["Images"][0]
    # Finished before the kill, or marked failed at start-up: never pending forever.
    assert img["State"] in ("available", "failed"), img
    if img["State"] == "failed":
        assert "interrupted" in img["StateReason"]["Message"], img["StateReason"]
