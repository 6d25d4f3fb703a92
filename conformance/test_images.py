"""Image bundles through the `euca` binary: credentials written by `euca up`, and
`euca unbundle` / `euca-unbundle` on bundles made by the real euca2ools 3.4.1."""
import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, euca_bin

FIX = ROOT / "image-tools" / "tests" / "fixtures"


def sha1(p):
    return hashlib.sha1(Path(p).read_bytes()).hexdigest()


def test_up_writes_bundling_credentials(cloud):
    env = cloud.eucarc
    for k in ("EC2_CERT", "EC2_PRIVATE_KEY", "EUCALYPTUS_CERT"):
        assert Path(env[k]).exists(), k
    assert env["EC2_USER_ID"].isdigit() and len(env["EC2_USER_ID"]) == 12
    assert oct(os.stat(env["EC2_PRIVATE_KEY"]).st_mode & 0o777) == "0o600"
    cloud_key = cloud.data / "cloud" / "cloud-pk.pem"
    assert oct(os.stat(cloud_key).st_mode & 0o777) == "0o600"
    # The user's certificate is issued by the cloud certificate.
    r = subprocess.run(["openssl", "verify", "-CAfile", env["EUCALYPTUS_CERT"], env["EC2_CERT"]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # The cloud certificate's key is the cloud's private key.
    mod = lambda args: subprocess.run(["openssl", *args, "-noout", "-modulus"], capture_output=True, text=True).stdout
    assert mod(["x509", "-in", env["EUCALYPTUS_CERT"]]) == mod(["rsa", "-in", str(cloud_key)])


def test_unbundle_euca2ools_fixture_with_cloud_and_user_keys(tmp_path):
    expected = sha1(FIX / "input" / "fixture.img")
    for bundle, key in (("bundle-default", "user-pk.pem"), ("bundle-1MiB-parts", "cloud-pk.pem")):
        out = tmp_path / bundle
        r = subprocess.run([euca_bin(), "unbundle", "-m", str(FIX / bundle / "fixture.img.manifest.xml"),
                            "-k", str(FIX / "keys" / key), "-c", str(FIX / "keys" / "user-cert.pem"),
                            "-d", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sha1(out / "fixture.img") == expected


def test_euca_unbundle_name_and_refusals(tmp_path):
    link = tmp_path / "euca-unbundle"
    link.symlink_to(euca_bin())
    src = tmp_path / "b"
    shutil.copytree(FIX / "bundle-1MiB-parts", src)
    env = {**os.environ, "EC2_PRIVATE_KEY": str(FIX / "keys" / "user-pk.pem"),
           "EC2_CERT": str(FIX / "keys" / "user-cert.pem")}
    r = subprocess.run([str(link), "-m", str(src / "fixture.img.manifest.xml"), "-d", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert sha1(tmp_path / "o" / "fixture.img") == sha1(FIX / "input" / "fixture.img")
    # A tampered part: a clear error naming the part, nothing under the final name.
    part = src / "fixture.img.part.02"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    r = subprocess.run([str(link), "-m", str(src / "fixture.img.manifest.xml"), "-d", str(tmp_path / "o2")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "part" in r.stderr.lower() and "fixture.img.part.02" in r.stderr, r.stderr
    assert not (tmp_path / "o2" / "fixture.img").exists()
    # The wrong key.
    other = tmp_path / "other-pk.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True, capture_output=True)
    env["EC2_PRIVATE_KEY"] = str(other)
    shutil.copy(FIX / "bundle-1MiB-parts" / "fixture.img.part.02", part)
    r = subprocess.run([str(link), "-m", str(src / "fixture.img.manifest.xml"), "-d", str(tmp_path / "o3")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "key" in r.stderr.lower(), r.stderr
    assert not (tmp_path / "o3" / "fixture.img").exists()


def test_upload_download_delete_bundle(cloud, s3, tmp_path):
    """euca upload-bundle puts the parts and then the manifest where euca2ools does,
    with the aws-exec-read ACL; download-bundle brings them back; delete-bundle
    removes them."""
    env = {**os.environ, **{k: v for k, v in cloud.eucarc.items()}}
    env.pop("AWS_CA_BUNDLE", None)
    src = FIX / "bundle-1MiB-parts"
    parts = sorted(p.name for p in src.iterdir() if ".part." in p.name)
    r = subprocess.run([euca_bin(), "upload-bundle", "-b", "imgbucket/some/prefix", "-m",
                        str(src / "fixture.img.manifest.xml")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="imgbucket")["Contents"])
    assert keys == sorted([f"some/prefix/{p}" for p in parts] + ["some/prefix/fixture.img.manifest.xml"])
    for k in keys:
        grants = s3.get_object_acl(Bucket="imgbucket", Key=k)["Grants"]
        # aws-exec-read: the owner's FULL_CONTROL plus READ for the cloud's system account.
        assert {g["Permission"] for g in grants} == {"FULL_CONTROL", "READ"}, grants
    body = s3.get_object(Bucket="imgbucket", Key="some/prefix/fixture.img.part.01")["Body"].read()
    assert body == (src / "fixture.img.part.01").read_bytes()

    link = tmp_path / "euca-download-bundle"
    link.symlink_to(euca_bin())
    dl = tmp_path / "dl"
    r = subprocess.run([str(link), "-b", "imgbucket/some/prefix", "-p", "fixture.img", "-d", str(dl)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for p in parts + ["fixture.img.manifest.xml"]:
        assert (dl / p).read_bytes() == (src / p).read_bytes(), p
    r = subprocess.run([euca_bin(), "unbundle", "-m", str(dl / "fixture.img.manifest.xml"),
                        "-k", str(FIX / "keys" / "cloud-pk.pem"), "-c", str(FIX / "keys" / "user-cert.pem"),
                        "-d", str(tmp_path / "img")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sha1(tmp_path / "img" / "fixture.img") == sha1(FIX / "input" / "fixture.img")

    r = subprocess.run([euca_bin(), "delete-bundle", "-b", "imgbucket/some/prefix", "-p", "fixture.img"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert s3.list_objects_v2(Bucket="imgbucket").get("Contents", []) == []
    s3.delete_bucket(Bucket="imgbucket")


def test_bundle_image_with_up_credentials_then_upload_and_unbundle(cloud, tmp_path):
    """Right after `euca up`, with only the eucarc: euca-bundle-image works, the bundle
    passes the independent checker (verify.py, openssl CLI) with the user's and the
    cloud's keys, and it travels through Walrus and opens again."""
    env = {**os.environ, **cloud.eucarc}
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        for i in range(5):
            f.write(os.urandom(1 << 20))
    link = tmp_path / "euca-bundle-image"
    link.symlink_to(euca_bin())
    out = tmp_path / "bundle"
    r = subprocess.run([str(link), "-i", str(img), "-d", str(out), "--part-size", "1048576",
                        "-B", "ami=sda1,root=/dev/sda1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "MiB/s" not in r.stderr, "progress drawn on a pipe"
    manifest = out / "disk.img.manifest.xml"
    assert manifest.exists()
    for key in (cloud.eucarc["EC2_PRIVATE_KEY"], str(cloud.data / "cloud" / "cloud-pk.pem")):
        v = subprocess.run(["python3", str(FIX / "verify.py"), str(manifest), key, cloud.eucarc["EC2_CERT"], str(out)],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    r = subprocess.run([euca_bin(), "upload-bundle", "-b", "bundled", "-m", str(manifest)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    dl = tmp_path / "dl"
    r = subprocess.run([euca_bin(), "download-bundle", "-b", "bundled", "-p", "disk.img", "-d", str(dl)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([euca_bin(), "unbundle", "-m", str(dl / "disk.img.manifest.xml"),
                        "-k", str(cloud.data / "cloud" / "cloud-pk.pem"), "-d", str(tmp_path / "img")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert sha1(tmp_path / "img" / "disk.img") == sha1(img)
    subprocess.run([euca_bin(), "delete-bundle", "-b", "bundled", "-p", "disk.img"], check=True,
                   capture_output=True, env=env)


def test_progress_is_drawn_on_a_terminal_only(cloud, tmp_path):
    """Long operations show bytes, rate and ETA on a terminal (here a pty made by
    `script`), and nothing of it when their output is a pipe."""
    env = {**os.environ, **cloud.eucarc}
    img = tmp_path / "disk.img"
    img.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "b"

    def on_tty(*args):
        cmd = " ".join(shlex.quote(str(a)) for a in args)
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    shown = on_tty(euca_bin(), "bundle-image", "-i", img, "-d", out, "--part-size", 1 << 20)
    assert "bundling  " in shown and "3.0 MiB / 3.0 MiB  100%" in shown and "/s  done in" in shown, shown
    shown = on_tty(euca_bin(), "upload-bundle", "-b", "progress", "-m", out / "disk.img.manifest.xml")
    assert "uploading  " in shown and "100%" in shown, shown
    assert "uploaded progress/disk.img.part" not in shown  # per-part lines give way to the bar
    shown = on_tty(euca_bin(), "unbundle", "-m", out / "disk.img.manifest.xml",
                   "-k", cloud.data / "cloud" / "cloud-pk.pem", "-d", tmp_path / "img")
    assert "unbundling  " in shown and "100%" in shown, shown
    assert sha1(tmp_path / "img" / "disk.img") == sha1(img)

    r = subprocess.run([euca_bin(), "download-bundle", "-b", "progress", "-p", "disk.img",
                        "-d", tmp_path / "dl"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "downloading" not in r.stderr and "\r" not in r.stderr + r.stdout
    assert r.stdout.count("downloaded ") == len(list(out.glob("disk.img.part.*"))) + 1  # + manifest
