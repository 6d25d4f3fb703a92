"""The identity service (the CLC listener) served like every service: `/_health`,
`/_metrics` behind the token, the per-endpoint request families and the internal
APIs' JSON errors; and `euca clc` keeping the cache times of an existing
services.toml when it rewrites the file on start."""
import json
import re
import subprocess
import time
import tomllib

from conftest import euca_bin, free_port, scrape_metrics, set_cache_secs
from test_serving import get


def test_clc_listener_has_the_endpoint_families(cloud):
    port = int(cloud.clc_url.rsplit(":", 1)[1])
    st, _, body = get(port, "/_health")
    assert (st, body) == (200, b"ok\n")
    st, headers, _ = get(port, "/_metrics")
    assert st == 401 and headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    # A lookup (unsigned: refused in the JSON error shape).
    st, _, body = get(port, "/_identity/v1/keys/AKIENOSUCHKEY0000000")
    assert st == 403, body
    err = json.loads(body)["error"]
    assert set(err) == {"code", "message"} and err["code"], body
    # The identity routes share the cloud controller's listener with the EC2 API.
    assert cloud.ec2().describe_regions()["Regions"]
    text = scrape_metrics(cloud.clc_url + "/_metrics", cloud.data)
    assert re.search(r'^euca_http_requests_total\{endpoint="LookupKey",service="clc",'
                     r'status="403"\} [1-9]', text, re.M), text
    assert 'euca_http_requests_total{endpoint="Health",service="clc",status="200"} ' in text
    assert re.search(r'^euca_http_request_errors_total\{code="[A-Za-z.]+",endpoint="LookupKey",'
                     r'service="clc"\} [1-9]', text, re.M), text
    assert re.search(r'^euca_http_requests_total\{endpoint="Ec2Query",service="clc",'
                     r'status="200"\} [1-9]', text, re.M), text


def run_clc(data, port, log):
    """Starts `euca clc` (its output in a fresh `log`), waits until it has written
    its files; returns the process."""
    p = subprocess.Popen([euca_bin(), "clc", "--data", data, "--listen", f"127.0.0.1:{port}"],
                         stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"euca clc exited {p.returncode}: {log.read_text()[-3000:]}")
        if "euca: clc is up" in log.read_text():
            return p
        time.sleep(0.1)
    p.kill()
    p.wait()
    raise RuntimeError(f"euca clc not up: {log.read_text()[-3000:]}")


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_services_file_keeps_its_cache_times(tmp_path):
    data, port = tmp_path / "clc", free_port()
    services = data / "credentials" / "services.toml"
    stop(run_clc(data, port, tmp_path / "clc1.log"))
    first = tomllib.loads(services.read_text())
    assert (first["cache_secs"], first["negative_cache_secs"]) == (30, 5)
    set_cache_secs(services, 120, 7)
    stop(run_clc(data, port, tmp_path / "clc2.log"))
    kept = tomllib.loads(services.read_text())
    assert (kept["cache_secs"], kept["negative_cache_secs"]) == (120, 7)
    assert kept["access_key"] == first["access_key"] and kept["identity_url"] == first["identity_url"]
    # A file that does not parse is replaced (with the defaults).
    services.write_text("cache_secs = [not toml\n")
    stop(run_clc(data, port, tmp_path / "clc3.log"))
    fresh = tomllib.loads(services.read_text())
    assert (fresh["cache_secs"], fresh["negative_cache_secs"]) == (30, 5)
    assert fresh["access_key"] == first["access_key"]
