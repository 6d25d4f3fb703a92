"""`euca walrus` on its own, from a TOML config; `/_health`, `/_metrics`; admin CLI."""
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import euca_bin, free_port, parse_env_file, scrape_metrics


def _spawn(tmp_path, port, args):
    """Starts `euca ARGS…` and waits until it answers on `port`; returns the process."""
    log = open(tmp_path / "euca.log", "wb")
    p = subprocess.Popen([euca_bin(), *args], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=1)
            return p
        except Exception:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("euca did not come up: " + (tmp_path / "euca.log").read_text())


def test_walrus_alone_from_toml(tmp_path):
    port = free_port()
    cfg = tmp_path / "euca.toml"
    cfg.write_text(f'[walrus]\nlisten = "127.0.0.1:{port}"\nregion = "eu-central-1"\ninline_max_bytes = 0\n')
    data = tmp_path / "data"
    p = _spawn(tmp_path, port, ["walrus", "--config", str(cfg), "--data", str(data)])
    try:
        env = parse_env_file(data / "credentials" / "eucarc")
        assert env["AWS_DEFAULT_REGION"] == "eu-central-1"
        import boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-central-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="alone", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        assert s3.get_bucket_location(Bucket="alone")["LocationConstraint"] == "eu-central-1"
        s3.put_object(Bucket="alone", Key="k", Body=b"x" * 10)  # inline_max_bytes = 0: a blob
        assert s3.get_object(Bucket="alone", Key="k")["Body"].read() == b"x" * 10
        assert list((data / "walrus" / "blobs").rglob("*")), "the object went to a blob file"
        # A client signing for another region is refused.
        other = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                             aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                             config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        with pytest.raises(Exception) as e:
            other.list_buckets()
        assert "AuthorizationHeaderMalformed" in str(e.value)
    finally:
        p.terminate()
        p.wait(timeout=15)
    assert p.returncode == 0, "SIGTERM stops it cleanly"


def test_health_and_metrics(cloud, s3, bucket):
    assert urllib.request.urlopen(cloud.endpoint + "/_health").read() == b"ok\n"
    s3.put_object(Bucket=bucket, Key="m", Body=b"abc")
    text = scrape_metrics(cloud.endpoint + "/_metrics", cloud.data)
    assert re.search(r'^euca_http_requests_total\{endpoint="PutObject",service="walrus",status="200"\} [1-9]', text, re.M), text
    assert "walrus_received_bytes_total" in text


def test_admin_cli_accounts_and_keys(cloud):
    acct = cloud.new_account("cli-user")
    assert acct["ACCOUNT_ID"].isdigit() and len(acct["ACCOUNT_ID"]) == 12
    listing = cloud.euca("account", "list").stdout
    assert "cli-user" in listing and "admin" in listing
    s3 = cloud.boto3(access_key=acct["AWS_ACCESS_KEY_ID"], secret_key=acct["AWS_SECRET_ACCESS_KEY"])
    assert s3.list_buckets()["Buckets"] == []
    k2 = cloud.euca("key", "create", "cli-user").stdout
    new_key = dict(line.split("=", 1) for line in k2.split())
    assert new_key["AWS_ACCESS_KEY_ID"] in cloud.euca("key", "list", "cli-user").stdout
    cloud.euca("key", "disable", acct["AWS_ACCESS_KEY_ID"])
    with pytest.raises(Exception) as e:
        s3.list_buckets()
    assert "InvalidAccessKeyId" in str(e.value)
    s3b = cloud.boto3(access_key=new_key["AWS_ACCESS_KEY_ID"], secret_key=new_key["AWS_SECRET_ACCESS_KEY"])
    s3b.list_buckets()
    cloud.euca("account", "disable", "cli-user")
    with pytest.raises(Exception):
        s3b.list_buckets()
    assert cloud.euca("account", "create", "cli-user", check=False).returncode != 0, "duplicate account refused"


def _admin_call(cloud, access_key, secret_key, method, path, base=None, service="iam"):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=(base or cloud.clc_url) + path, data=b"")
    SigV4Auth(Credentials(access_key, secret_key), service, cloud.region).add_auth(req)
    r = urllib.request.Request(req.url, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_admin_api_only_for_admin(cloud):
    """The account API is the cloud controller's, for the admin account only."""
    other = cloud.new_account("not-admin")
    assert _admin_call(cloud, other["AWS_ACCESS_KEY_ID"], other["AWS_SECRET_ACCESS_KEY"], "POST", "/_admin/accounts/sneaky") == 403
    assert _admin_call(cloud, cloud.access_key, cloud.secret_key, "GET", "/_admin/accounts") == 200
    assert "sneaky" not in cloud.euca("account", "list").stdout
    # Anonymous:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(cloud.clc_url + "/_admin/accounts")
    assert e.value.code == 403
    # Walrus no longer serves it: to S3 it is a key path like any other.
    assert _admin_call(cloud, cloud.access_key, cloud.secret_key, "GET", "/_admin/accounts",
                       base=cloud.endpoint, service="s3") in (400, 403, 404)
    assert _admin_call(cloud, cloud.access_key, cloud.secret_key, "POST", "/_admin/accounts/sneaky2",
                       base=cloud.endpoint, service="s3") != 200
    assert "sneaky2" not in cloud.euca("account", "list").stdout


def test_slow_headers_are_cut_off_and_others_still_served(tmp_path):
    """A client that trickles its request head is disconnected after the header
    timeout, while a normal client is served meanwhile (slowloris)."""
    import socket

    port = free_port()
    cfg = tmp_path / "euca.toml"
    cfg.write_text("[walrus]\nheader_timeout_secs = 1\n")
    data = tmp_path / "data"
    p = _spawn(tmp_path, port, ["up", "--config", str(cfg), "--data", str(data), "--walrus-listen", f"127.0.0.1:{port}",
                                   "--sc-listen", f"127.0.0.1:{free_port()}", "--nbd-listen", f"127.0.0.1:{free_port()}",
                                   "--iscsi-listen", f"127.0.0.1:{free_port()}",
                                   "--cc-listen", f"127.0.0.1:{free_port()}",
                                   "--clc-listen", f"127.0.0.1:{free_port()}"])
    try:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /_health HTTP/1.1\r\nHo")
        t0 = time.time()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=2).read() == b"ok\n"
        assert time.time() - t0 < 1.0
        time.sleep(2.5)
        for s in slow:
            s.settimeout(2)
            try:
                s.sendall(b"st: x\r\n\r\n")
                got = s.recv(100)
            except OSError:
                got = b""
            # Either closed (b"") or answered with a timeout status, never served.
            assert not got.startswith(b"HTTP/1.1 200"), got
            s.close()
    finally:
        p.terminate()
        p.wait(timeout=15)


def test_sc_alone_from_toml(tmp_path):
    """`euca sc` with its own [sc] section: the API answers health and metrics, the
    admin CLI finds it through the eucarc, and the NBD URI uses the configured port."""
    wport, sport, nport = free_port(), free_port(), free_port()
    cfg = tmp_path / "euca.toml"
    cfg.write_text(f'[walrus]\nlisten = "127.0.0.1:{wport}"\n'
                   f'[sc]\nlisten = "127.0.0.1:{sport}"\nnbd_listen = "127.0.0.1:{nport}"\n'
                   f'iscsi_listen = "127.0.0.1:{free_port()}"\nmax_volume_gib = 2\n')
    data = tmp_path / "data"
    p = _spawn(tmp_path, sport, ["sc", "--config", str(cfg), "--data", str(data)])
    try:
        env = parse_env_file(data / "credentials" / "eucarc")
        assert env["EUCA_SC_URL"] == f"http://127.0.0.1:{sport}/"

        def euca(*args):
            r = subprocess.run([euca_bin(), *args, "--data", str(data)], capture_output=True, text=True, timeout=60)
            return r

        r = euca("volume", "create", "--size-gib", "3")
        assert r.returncode != 0 and "above the limit of 2 GiB" in r.stderr
        vid = euca("volume", "create", "--size-gib", "2").stdout.strip()
        uri = euca("volume", "attach", vid, "--node", "127.0.0.1").stdout.strip()
        assert uri.startswith(f"nbd://127.0.0.1:{nport}/{vid}-"), uri
        r = subprocess.run(["nbdinfo", "--size", uri], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == str(2 << 30), r.stderr
        metrics = scrape_metrics(f"http://127.0.0.1:{sport}/_metrics", data)
        assert 'euca_sc_volumes{state="in-use"} 1' in metrics, metrics
    finally:
        p.terminate()
        p.wait(timeout=20)
    assert p.returncode == 0, (tmp_path / "euca.log").read_text()[-2000:]
