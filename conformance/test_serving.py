"""One serve loop for every service: `/_health` and `/_metrics` behave alike on the
Walrus, SC, tracker, node peer and cache control listeners (the same families after
one request each, the metrics token needed everywhere); internal APIs answer errors
in one JSON shape; S3 request ids are fresh per request and in the error body."""
import http.client
import json
import re
import socket
import urllib.error
import urllib.request

from conftest import scrape_metrics
from test_image_cache import NcCache

FAMILIES = (
    "# TYPE euca_http_requests_total counter",
    "# TYPE euca_http_request_duration_seconds histogram",
    "# TYPE euca_http_request_errors_total counter",
    "# TYPE euca_http_open_connections gauge",
)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self.path))


def get(target, path, method="GET", token=None):
    """(status, headers, body) of one request to a TCP port or a Unix socket path."""
    conn = (http.client.HTTPConnection("127.0.0.1", target, timeout=10)
            if isinstance(target, int) else UnixHTTPConnection(target))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_health_and_metrics_alike_on_every_listener(cloud, tmp_path):
    token = (cloud.data / "credentials" / "metrics-token").read_text().strip()
    node = NcCache(cloud, tmp_path, "serving-node")
    try:
        control = node.dir / "control.sock"
        # service label, listener, one API request and the endpoint it is.
        listeners = [
            ("walrus", cloud.port, "GET", "/", "ListBuckets", 403),
            ("sc", cloud.sc_port, "GET", "/volumes", "DescribeVolumes", 403),
            ("tracker", cloud.cc_port, "POST", "/v1/announce", "Announce", 403),
            ("peer", node.port, "GET", "/v1/images/" + "a" * 64 + "/pieces/0", "GetPiece", 403),
            ("cache-control", control, "GET", "/v1/images", "ListImages", 200),
        ]
        for service, target, method, path, endpoint, status in listeners:
            st, _, body = get(target, "/_health")
            assert (st, body) == (200, b"ok\n"), service
            st, headers, _ = get(target, "/_metrics")
            assert st == 401 and headers["WWW-Authenticate"] == 'Bearer realm="metrics"', service
            st, _, _ = get(target, "/_metrics", token=token[:-1] + ("0" if token[-1] != "0" else "1"))
            assert st == 401, service
            st, _, body = get(target, path, method=method)
            assert st == status, (service, st, body)
            if service not in ("walrus", "cache-control"):
                # The internal APIs' one error shape.
                err = json.loads(body)["error"]
                assert set(err) == {"code", "message"} and err["code"] and err["message"], body
        for service, target, _, _, endpoint, status in listeners:
            st, _, body = get(target, "/_metrics", token=token)
            assert st == 200, service
            text = body.decode()
            for family in FAMILIES:
                assert family in text, (service, family)
            line = f'euca_http_requests_total{{endpoint="{endpoint}",service="{service}",status="{status}"}} '
            assert line in text, (service, line)
            assert f'euca_http_requests_total{{endpoint="Health",service="{service}",status="200"}} ' in text
            assert f'euca_http_request_duration_seconds_count{{endpoint="{endpoint}",service="{service}"}} ' in text
            if status != 200:
                assert re.search(rf'^euca_http_request_errors_total\{{code="[A-Za-z.]+",endpoint="{endpoint}",'
                                 rf'service="{service}"\}} [1-9]', text, re.M), (service, text)
        # Each service's own families are in its process's registry (in `euca up`, one
        # process: every listener shows them all; split, each shows its own).
        for port, family in ((cloud.port, "walrus_sent_bytes_total"), (cloud.sc_port, "euca_sc_volumes"),
                             (cloud.cc_port, "euca_tracker_nodes")):
            text = scrape_metrics(f"http://127.0.0.1:{port}/_metrics", cloud.data)
            assert f"# TYPE {family} " in text, family
        text = scrape_metrics(f"http://127.0.0.1:{node.port}/_metrics", cloud.data)
        assert "# TYPE euca_imagecache_origin_bytes_total counter" in text
    finally:
        node.stop()


def test_s3_request_id_fresh_and_in_the_error_body(cloud):
    ids = []
    for _ in range(2):
        st, headers, body = get(cloud.port, "/no-such-bucket/key")
        assert st == 404 and b"<Code>NoSuchBucket</Code>" in body, body
        rid = headers["x-amz-request-id"]
        assert re.fullmatch(r"[0-9A-F]{16}", rid), rid
        assert f"<RequestId>{rid}</RequestId>" in body.decode(), body
        ids.append(rid)
    assert ids[0] != ids[1]
    # Walrus's headers are on the loop's own answers too.
    st, headers, body = get(cloud.port, "/_health")
    assert re.fullmatch(r"[0-9A-F]{16}", headers["x-amz-request-id"]) and headers["server"] == "Walrus"
    # The metrics refusal is an S3 error too, with its request id.
    st, headers, body = get(cloud.port, "/_metrics")
    assert st == 401 and f"<RequestId>{headers['x-amz-request-id']}</RequestId>" in body.decode()
    assert "<Code>AccessDenied</Code>" in body.decode()
