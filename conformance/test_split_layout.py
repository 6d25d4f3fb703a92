"""The cloud as separate processes against one identity service: `euca clc` (the
identity store and its API), `euca walrus --identity`, `euca sc --identity --s3-url`
(no Walrus of its own) and `euca cc`, each with its own data directory and ports.

Walrus and the SC hold no identity database: every signature is checked with a
credential fetched from the CLC (cached: by default 30 s for a key found, 5 s for
one not found; here 5 s and 2 s, set in services.toml)."""
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import euca_bin, free_port, parse_env_file, set_cache_secs, wait_http

# The RemoteIdentity cache lifetimes (identity/src/remote.rs), with slack.
NEGATIVE_TTL = 2
POSITIVE_TTL = 5


class Split:
    """Four processes: clc, walrus, sc, cc."""

    def __init__(self, root):
        self.root = root
        self.ports = {n: free_port() for n in ("clc", "walrus", "sc", "nbd", "cc")}
        self.url = {n: f"http://127.0.0.1:{self.ports[n]}" for n in ("clc", "walrus", "sc", "cc")}
        self.dirs = {n: root / n for n in ("clc", "walrus", "sc", "cc")}
        self.procs = {}

    def spawn(self, name, args, health):
        log = self.root / f"{name}.log"
        p = subprocess.Popen([euca_bin(), *args], stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.procs[name] = p
        wait_http(health, p, log)
        return p

    def start(self):
        services = self.dirs["clc"] / "credentials" / "services.toml"
        self.spawn("clc", ["clc", "--data", self.dirs["clc"], "--listen", f"127.0.0.1:{self.ports['clc']}",
                           "--s3-url", self.url["walrus"] + "/", "--sc-url", self.url["sc"] + "/"],
                   self.url["clc"] + "/_health")
        deadline = time.time() + 10
        while not services.exists() and time.time() < deadline:
            time.sleep(0.1)
        # Short caches, so the test of their expiry is quick (defaults: 30 s and 5 s).
        set_cache_secs(services, POSITIVE_TTL, NEGATIVE_TTL)
        self.spawn("walrus", ["walrus", "--data", self.dirs["walrus"], "--listen",
                              f"127.0.0.1:{self.ports['walrus']}", "--identity", services],
                   self.url["walrus"] + "/_health")
        self.spawn("sc", ["sc", "--data", self.dirs["sc"], "--listen", f"127.0.0.1:{self.ports['sc']}",
                          "--nbd-listen", f"127.0.0.1:{self.ports['nbd']}", "--iscsi-listen", "off",
                          "--identity", services,
                          "--s3-url", self.url["walrus"] + "/"],
                   self.url["sc"] + "/_health")
        self.spawn("cc", ["cc", "--data", self.dirs["cc"], "--listen", f"127.0.0.1:{self.ports['cc']}",
                          "--token-file", self.dirs["clc"] / "cloud" / "cluster-token"],
                   self.url["cc"] + "/_health")
        self.eucarc = parse_env_file(self.dirs["clc"] / "credentials" / "eucarc")
        self.services = dict(re.findall(r'^(\w+) = "(.*)"$', services.read_text(), re.M))
        return self

    def stop(self, name=None):
        for n, p in list(self.procs.items()):
            if name and n != name:
                continue
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            del self.procs[n]

    def euca(self, *args, check=True):
        r = subprocess.run([euca_bin(), *map(str, args), "--data", str(self.dirs["clc"])],
                           capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def s3(self, ak=None, sk=None):
        return boto3.client("s3", endpoint_url=self.url["walrus"], region_name="us-east-1",
                            aws_access_key_id=ak or self.eucarc["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=sk or self.eucarc["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    s = Split(tmp_path_factory.mktemp("split"))
    try:
        yield s.start()
    finally:
        s.stop()


def error_code(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def test_each_process_keeps_its_own_state(split):
    # Only the CLC has an identity database; Walrus and the SC have none.
    assert (split.dirs["clc"] / "identity.redb").exists()
    for n in ("walrus", "sc", "cc"):
        assert not (split.dirs[n] / "identity.redb").exists(), n
    assert (split.dirs["walrus"] / "walrus").is_dir()
    assert not (split.dirs["sc"] / "walrus").exists(), "the SC runs without a Walrus of its own"
    assert (split.dirs["clc"] / "credentials" / "services.toml").stat().st_mode & 0o777 == 0o600
    assert split.eucarc["EUCA_CLC_URL"].rstrip("/") == split.url["clc"]


def test_s3_round_trip_with_the_admin_key(split):
    s3 = split.s3()
    s3.create_bucket(Bucket="split-rt")
    body = bytes(range(256)) * 4099
    s3.put_object(Bucket="split-rt", Key="k/ø", Body=body)
    assert s3.get_object(Bucket="split-rt", Key="k/ø")["Body"].read() == body
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="split-rt")["Contents"]] == ["k/ø"]
    s3.delete_object(Bucket="split-rt", Key="k/ø")
    s3.delete_bucket(Bucket="split-rt")
    # Walrus no longer serves the account API.
    assert error_code(lambda: s3.get_object(Bucket="_admin", Key="accounts")) in (
        "NoSuchBucket", "InvalidBucketName", "AccessDenied")


def test_awscli_round_trip(split, tmp_path):
    if shutil.which("aws") is None:
        pytest.fail("aws CLI missing: run scripts/install-test-deps.sh")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path),
           "AWS_ACCESS_KEY_ID": split.eucarc["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": split.eucarc["AWS_SECRET_ACCESS_KEY"],
           "AWS_DEFAULT_REGION": "us-east-1"}
    src = tmp_path / "f"
    src.write_bytes(b"split layout\n" * 1000)
    aws = ["aws", "--endpoint-url", split.url["walrus"], "s3"]
    for args in (["mb", "s3://split-cli"], ["cp", str(src), "s3://split-cli/f"],
                 ["cp", "s3://split-cli/f", str(tmp_path / "g")], ["rm", "s3://split-cli/f"],
                 ["rb", "s3://split-cli"]):
        r = subprocess.run(aws + args, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (args, r.stderr)
    assert (tmp_path / "g").read_bytes() == src.read_bytes()


def sc_status(split, ak, sk):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="GET", url=split.url["sc"] + "/volumes")
    SigV4Auth(Credentials(ak, sk), "sc", "us-east-1").add_auth(req)
    r = urllib.request.Request(req.url, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_new_key_works_and_disabled_key_stops_within_the_ttl(split):
    name = "splituser"
    out = split.euca("account", "create", name).stdout
    k = dict(re.findall(r"^([A-Z_]+)=(\S+)$", out, re.M))
    s3 = split.s3(k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"])
    # A key created on the CLC authenticates at Walrus at once or, if Walrus had
    # cached it as unknown, after the negative TTL.
    deadline = time.time() + NEGATIVE_TTL + 10
    while True:
        code = error_code(s3.list_buckets)
        if code is None or time.time() > deadline:
            break
        time.sleep(0.5)
    assert code is None, code
    s3.create_bucket(Bucket="split-user")
    assert s3.list_buckets()["Buckets"][0]["Name"] == "split-user"
    # The SC authenticates through the same service: the admin is served there, this
    # account (known to the CLC, not the admin) refused.
    assert split.euca("volume", "list").returncode == 0
    assert sc_status(split, k["AWS_ACCESS_KEY_ID"], k["AWS_SECRET_ACCESS_KEY"]) == 403
    assert sc_status(split, "AKIENOSUCHKEY0000000", "x" * 40) == 403
    # Disabled on the CLC: refused at Walrus once the cached credential expires.
    split.euca("key", "disable", k["AWS_ACCESS_KEY_ID"])
    deadline = time.time() + POSITIVE_TTL + 15
    while True:
        code = error_code(s3.list_buckets)
        if code is not None or time.time() > deadline:
            break
        time.sleep(1)
    assert code == "InvalidAccessKeyId", code


def test_volume_nbd_and_snapshot_land_in_walrus(split, tmp_path):
    for t in ("qemu-io",):
        if shutil.which(t) is None:
            pytest.fail(f"{t} missing: run scripts/install-test-deps.sh")
    vid = split.euca("volume", "create", "--size-gib", "1").stdout.strip()
    assert re.fullmatch(r"vol-[0-9a-f]{8}", vid), vid
    uri = split.euca("volume", "attach", vid, "--node", "127.0.0.1").stdout.strip()
    assert uri.startswith(f"nbd://127.0.0.1:{split.ports['nbd']}/{vid}-"), uri
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 8M 1M", "-c", "flush",
                        "-c", "read -P 0x5a 8M 1M", uri], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    r = split.euca("snapshot", "create", vid, "--wait")
    sid = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"snap-[0-9a-f]{8}", sid), r.stdout
    d = json.loads(split.euca("snapshot", "describe", sid).stdout)
    assert d["state"] == "completed", d
    # The chunks are objects in the separate Walrus, owned by the system account.
    sys_s3 = split.s3(split.services["access_key"], split.services["secret_key"])
    keys = [o["Key"] for page in sys_s3.get_paginator("list_objects_v2").paginate(Bucket="euca-snapshots")
            for o in page.get("Contents", [])]
    assert any(k.startswith("chunks/") for k in keys), keys
    assert any(sid in k for k in keys), keys
    # A volume restored from the snapshot reads the pattern back.
    v2 = split.euca("volume", "create", "--snapshot", sid).stdout.strip()
    uri2 = split.euca("volume", "attach", v2, "--node", "127.0.0.1").stdout.strip()
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 8M 1M", "-c", "read -P 0 0 1M", uri2],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    for v in (vid, v2):
        split.euca("volume", "detach", v)
        split.euca("volume", "delete", v)
    split.euca("snapshot", "delete", sid)


def test_tracker_answers_with_the_cluster_token(split):
    token = (split.dirs["clc"] / "cloud" / "cluster-token").read_text().strip()
    body = json.dumps({"node": "n1", "url": "http://127.0.0.1:1", "interval_ms": 1000,
                       "images": []}).encode()
    req = urllib.request.Request(split.url["cc"] + "/v1/announce", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code in (401, 403), "no token, no answer"
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
        json.loads(r.read())


def test_identity_api_is_for_the_system_account_only(split):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def get(path, ak, sk):
        req = AWSRequest(method="GET", url=split.url["clc"] + path)
        SigV4Auth(Credentials(ak, sk), "iam", "us-east-1").add_auth(req)
        r = urllib.request.Request(req.url, headers=dict(req.headers.items()))
        try:
            with urllib.request.urlopen(r, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, None

    sys_k = (split.services["access_key"], split.services["secret_key"])
    admin = (split.eucarc["AWS_ACCESS_KEY_ID"], split.eucarc["AWS_SECRET_ACCESS_KEY"])
    status, cred = get(f"/_identity/v1/keys/{admin[0]}", *sys_k)
    assert status == 200 and cred["secret_access_key"] == admin[1] and cred["account"] == "admin"
    assert get("/_identity/v1/keys/AKIENOSUCHKEY0000000", *sys_k)[0] == 404
    status, acct = get("/_identity/v1/accounts/eucalyptus", *sys_k)
    assert status == 200 and len(acct["canonical_id"]) == 64
    # The admin (or anyone else) gets 403 alike for a key that exists and one that does not.
    assert get(f"/_identity/v1/keys/{admin[0]}", *admin)[0] == 403
    assert get("/_identity/v1/keys/AKIENOSUCHKEY0000000", *admin)[0] == 403
    # And the system account may not manage accounts.
    assert get("/_admin/accounts", *sys_k)[0] == 403


def test_identity_service_down_is_503_not_unknown_key(split):
    """Last: stops the CLC. A key Walrus has not cached cannot be checked: a
    retryable 503, not InvalidAccessKeyId; a cached one keeps working."""
    s3 = split.s3()
    s3.list_buckets()  # the admin key is cached now
    split.stop("clc")
    s3.list_buckets()
    unknown = split.s3("AKIEUNCACHED00000000", "x" * 40)
    try:
        unknown.list_buckets()
        code, status = None, 200
    except ClientError as e:
        code, status = e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    assert (code, status) == ("ServiceUnavailable", 503)
