"""Installed images and the node image cache, through the real binary and real processes:
`euca image install` of the euca2ools fixture bundle, two `euca nc-cache` daemons on the
tracker `euca up` runs (the second node gets every piece from the first, not from Walrus),
warm hits, pins, eviction, refusals, and the nodes' read-only key."""
import hashlib
import os
import re
import shlex
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, euca_bin, free_port, scrape_metrics

FIX = ROOT / "image-tools" / "tests" / "fixtures"
BUNDLE = FIX / "bundle-1MiB-parts"


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run(*args, env=None, check=True):
    r = subprocess.run([euca_bin(), *map(str, args)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RUST_BACKTRACE": "0", **(env or {})})
    if check:
        assert r.returncode == 0, f"euca {args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def metrics(node):
    text = scrape_metrics(f"http://127.0.0.1:{node.port}/_metrics", node.cloud.data)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^euca_imagecache_(\w+) (\d+)$", text, re.M)}


class NcCache:
    def __init__(self, cloud, tmp_path, name):
        self.cloud = cloud
        self.dir = tmp_path / name
        self.port = free_port()
        self.log = tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(
            [euca_bin(), "nc-cache", "--config", cloud.data / "credentials" / "nc-cache.toml",
             "--dir", self.dir, "--listen", f"127.0.0.1:{self.port}", "--node", name],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_health", timeout=1)
                if (self.dir / "control.sock").exists():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nc-cache {name} did not start:\n{self.log.read_text()}")

    def cache(self, *args, check=True):
        return run("cache", "--dir", self.dir, *args, check=check)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def installed(cloud):
    """The fixture bundle uploaded and installed once; returns the image id."""
    env = cloud.eucarc
    run("upload-bundle", "-b", "cache-fixture", "-m", BUNDLE / "fixture.img.manifest.xml", env=env)
    r = run("image", "install", "cache-fixture/fixture.img.manifest.xml", "--data", cloud.data,
            "-k", FIX / "keys" / "cloud-pk.pem", "-c", FIX / "keys" / "user-cert.pem")
    image_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", image_id), r.stdout
    assert "3145728 bytes" in r.stderr, r.stderr
    return image_id


def test_installed_fixture_reaches_two_nodes_crossing_walrus_once(cloud, installed, tmp_path):
    want = sha256(FIX / "input" / "fixture.img")
    n1, n2 = NcCache(cloud, tmp_path, "node1"), NcCache(cloud, tmp_path, "node2")
    try:
        r = n1.cache("fetch", installed)
        assert sha256(r.stdout.strip()) == want
        assert "\r" not in r.stderr and "fetching" not in r.stderr
        r = n2.cache("fetch", installed)
        assert sha256(r.stdout.strip()) == want
        m1, m2 = metrics(n1), metrics(n2)
        assert m1["origin_bytes_total"] == 3145728 and m1["peer_bytes_total"] == 0, m1
        assert m2["origin_bytes_total"] == 0 and m2["peer_bytes_total"] == 3145728, m2
        assert m1["served_bytes_total"] == 3145728, m1
        # Warm: answered from disk, no traffic.
        r = n2.cache("fetch", installed)
        assert sha256(r.stdout.strip()) == want
        m2b = metrics(n2)
        assert m2b["cache_hits_total"] == 1
        assert (m2b["origin_bytes_total"], m2b["peer_bytes_total"]) == (0, 3145728)
        # The same install again stores nothing new and yields the same id.
        again = run("image", "install", "cache-fixture/fixture.img.manifest.xml", "--data", cloud.data,
                    "-k", FIX / "keys" / "cloud-pk.pem", "-c", FIX / "keys" / "user-cert.pem")
        assert again.stdout.strip() == installed and "(0 new)" in again.stderr
        # Pins hold against eviction; listing shows them.
        n2.cache("pin", installed, "i-0123abcd")
        assert "i-0123abcd" in n2.cache("list").stdout
        r = n2.cache("evict", installed, check=False)
        assert r.returncode != 0 and "pinned" in r.stderr, r.stderr
        n2.cache("unpin", installed, "i-0123abcd")
        n2.cache("evict", installed)
        assert installed not in n2.cache("list").stdout
        # Evicted images are refetched (from the peer again), with progress on a terminal
        # (a pty made by `script`); the fetches above, on a pipe, drew nothing.
        cmd = " ".join(shlex.quote(str(a)) for a in (euca_bin(), "cache", "--dir", n2.dir, "fetch", installed))
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "RUST_BACKTRACE": "0"})
        assert r.returncode == 0 and "fetching  " in r.stdout and "100%" in r.stdout, r.stdout + r.stderr
        assert sha256(n2.dir / "images" / installed / "data") == want
        assert metrics(n2)["origin_bytes_total"] == 0
        # Restart keeps the cache: a hit right away, no traffic.
        n1.stop()
        n1 = NcCache(cloud, tmp_path, "node1")
        r = n1.cache("fetch", installed)
        assert sha256(r.stdout.strip()) == want
        m1 = metrics(n1)
        assert m1["cache_hits_total"] == 1 and m1["origin_bytes_total"] == 0, m1
    finally:
        n1.stop()
        n2.stop()


def test_install_refuses_a_bundle_the_signer_did_not_sign(cloud, tmp_path):
    run("upload-bundle", "-b", "cache-unsigned", "-m", BUNDLE / "fixture.img.manifest.xml", env=cloud.eucarc)
    # Default signer: the admin's certificate, which did not sign the fixture.
    r = run("image", "install", "cache-unsigned/fixture.img.manifest.xml", "--data", cloud.data,
            "-k", FIX / "keys" / "cloud-pk.pem", check=False)
    assert r.returncode != 0 and "signature" in r.stderr.lower(), r.stderr
    r = run("image", "install", "cache-unsigned/nothing.manifest.xml", "--data", cloud.data, check=False)
    # The system account may read the bundle's objects but not list the user's bucket,
    # so a missing manifest is 403 to it, as on S3 (no existence oracle).
    assert r.returncode != 0 and "AccessDenied" in r.stderr, r.stderr
    r = run("image", "install", "no-manifest-here", "--data", cloud.data, check=False)
    assert r.returncode != 0 and "BUCKET/PREFIX.manifest.xml" in r.stderr, r.stderr


def test_install_streams_and_stores_no_image_from_a_bad_part(cloud):
    """The install streams the parts through the unbundler into pieces, with nothing
    staged on the cloud's disk; a part that fails its SHA-1 (or is gone) fails the
    install with the part named, and no image manifest is stored for it."""
    import json
    creds = json.loads((cloud.data / "cloud" / "system.json").read_text())
    system = cloud.boto3(access_key=creds["access_key"], secret_key=creds["secret_key"])
    user = cloud.boto3()

    def images():
        r = system.list_objects_v2(Bucket="euca-images", Prefix="images/")
        return sorted(o["Key"] for o in r.get("Contents", []))

    run("upload-bundle", "-b", "cache-bad", "-m", BUNDLE / "fixture.img.manifest.xml", env=cloud.eucarc)
    install = ("image", "install", "cache-bad/fixture.img.manifest.xml", "--data", cloud.data,
               "-k", FIX / "keys" / "cloud-pk.pem", "-c", FIX / "keys" / "user-cert.pem")
    before = images()
    # Part 2 of 4 with one byte flipped: same length, wrong SHA-1.
    good = (BUNDLE / "fixture.img.part.02").read_bytes()
    user.put_object(Bucket="cache-bad", Key="fixture.img.part.02", ACL="aws-exec-read",
                    Body=good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    r = run(*install, check=False)
    assert r.returncode != 0, r.stdout
    assert "part 2 (fixture.img.part.02) digest mismatch" in r.stderr, r.stderr
    assert images() == before
    # The part gone: the system account may not list the user's bucket, so S3 answers 403.
    user.delete_object(Bucket="cache-bad", Key="fixture.img.part.02")
    r = run(*install, check=False)
    assert r.returncode != 0 and "part 2 (fixture.img.part.02)" in r.stderr, r.stderr
    assert images() == before
    # Restored, it installs; nothing was ever staged under the cloud's directory.
    user.put_object(Bucket="cache-bad", Key="fixture.img.part.02", ACL="aws-exec-read", Body=good)
    r = run(*install)
    image_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", image_id) and "3145728 bytes" in r.stderr, r.stderr
    assert images() == sorted(set(before) | {f"images/{image_id}.json"})
    assert not (cloud.data / "cloud" / "install").exists()


def test_install_that_cannot_store_a_piece_fails_cleanly(cloud, tmp_path):
    """A piece upload refused mid-install (a bucket policy denies the cloud's own
    account) ends the install with that error, promptly, without an image; the
    same install succeeds once the policy is gone."""
    import json
    creds = json.loads((cloud.data / "cloud" / "system.json").read_text())
    system = cloud.boto3(access_key=creds["access_key"], secret_key=creds["secret_key"])
    img = tmp_path / "fresh.img"
    # 12 new pieces (none can be in the store yet): more than the install queues, so
    # the unbundler is still writing when the first upload is refused.
    img.write_bytes(os.urandom(48 << 20))
    run("bundle-image", "-i", img, "-d", tmp_path / "b", "-r", "x86_64", env=cloud.eucarc)
    run("upload-bundle", "-b", "cache-deny", "-m", tmp_path / "b" / "fresh.img.manifest.xml",
        env=cloud.eucarc)
    install = ("image", "install", "cache-deny/fresh.img.manifest.xml", "--data", cloud.data)
    deny = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::euca-images/chunks/*"}]}
    system.put_bucket_policy(Bucket="euca-images", Policy=json.dumps(deny))
    try:
        r = run(*install, check=False)
        assert r.returncode != 0 and "AccessDenied" in r.stderr, r.stderr
    finally:
        system.delete_bucket_policy(Bucket="euca-images")
    r = run(*install)
    image_id = r.stdout.strip()
    assert f"{48 << 20} bytes" in r.stderr and "(12 new)" in r.stderr, r.stderr
    r = system.get_object(Bucket="euca-images", Key=f"images/{image_id}.json")
    assert hashlib.sha256(r["Body"].read()).hexdigest() == image_id


def test_cache_commands_refuse_bad_input_and_a_missing_daemon(tmp_path):
    r = run("cache", "--dir", tmp_path, "fetch", "../../etc/passwd", check=False)
    assert r.returncode != 0 and "invalid image id" in r.stderr, r.stderr
    r = run("cache", "--dir", tmp_path, "fetch", "a" * 64, check=False)
    assert r.returncode != 0 and "is euca nc-cache running" in r.stderr, r.stderr
    r = run("cache", "--dir", tmp_path, "pin", "a" * 64, "../x", check=False)
    assert r.returncode != 0 and "invalid holder" in r.stderr, r.stderr


def test_an_unknown_image_fails_cleanly(cloud, tmp_path):
    n = NcCache(cloud, tmp_path, "node-x")
    try:
        r = n.cache("fetch", "b" * 64, check=False)
        assert r.returncode != 0 and "not found" in r.stderr.lower(), r.stderr
        assert n.cache("list").stdout.count("\n") == 1  # header only
    finally:
        n.stop()


def test_nodes_key_reads_images_only(cloud, installed):
    import boto3
    from botocore.exceptions import ClientError
    cfg = (cloud.data / "credentials" / "nc-cache.toml").read_text()
    ak = re.search(r'access_key = "([^"]+)"', cfg).group(1)
    sk = re.search(r'secret_key = "([^"]+)"', cfg).group(1)
    s3 = cloud.boto3(access_key=ak, secret_key=sk)
    body = s3.get_object(Bucket="euca-images", Key=f"images/{installed}.json")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == installed
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="euca-images", Key=f"images/{installed}.json", Body=b"{}")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="cache-fixture", Key="fixture.img.part.00")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
