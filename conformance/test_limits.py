"""Resource limits at the edge of every listener `euca up` opens (issue 10, items 2 and 7):
anonymous bodies are not buffered, a flood of idle connections on the SC API and the
tracker cannot take Walrus' descriptors, idle keep-alive connections from one address
(or many) do not starve authenticated clients, and /_metrics needs the metrics token.

Bounded in count and time, loopback only (source addresses from 127.0.0.0/8)."""
import functools
import resource
import select
import selectors
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import euca_bin, free_port, start_cloud

GIB = 1 << 30


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raise_own_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def patient_boto3(cloud):
    """Admin client with generous timeouts and no retries: it either works or fails."""
    return cloud.boto3(connect_timeout=10, read_timeout=10)


def http_get(sock, path="/_health"):
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())


def read_status(sock):
    """The status code of the first response on `sock`, or None if it was closed."""
    buf = b""
    while b"\r\n" not in buf:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        buf += chunk
    return int(buf.split(b" ", 2)[1])


def drain_response(sock):
    """Reads one small response (headers + content-length body); True if 200."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        rest += chunk
    return head.startswith(b"HTTP/1.1 200")


def keepalive_flood(port, sources, wait=5.0):
    """Opens one connection from each address in `sources` at once, sends each a
    keep-alive `GET /_health`, and waits up to `wait` s for the answers. Returns the
    sockets still open and how many were served (200), refused (503 or closed) and
    left hanging."""
    sel = selectors.DefaultSelector()  # epoll: more than FD_SETSIZE sockets
    state = {}
    for src in sources:
        s = socket.socket()
        s.setblocking(False)
        s.bind((src, 0))
        s.connect_ex(("127.0.0.1", port))
        state[s] = b""
        sel.register(s, selectors.EVENT_WRITE)
    served, refused = set(), set()
    deadline = time.time() + wait
    while time.time() < deadline and len(served) + len(refused) < len(state):
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE:
                try:
                    http_get(s)
                except OSError:
                    refused.add(s)
                    sel.unregister(s)
                    continue
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                refused.add(s)
                sel.unregister(s)
                continue
            state[s] += data
            if state[s].startswith(b"HTTP/1.1 503"):
                refused.add(s)
                sel.unregister(s)
            elif state[s].endswith(b"\r\n\r\nok\n"):
                served.add(s)
                sel.unregister(s)
    sel.close()
    hanging = len(state) - len(served) - len(refused)
    for s in refused:
        s.close()
    return [s for s in state if s not in refused], len(served), len(refused), hanging


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def round_trip(cloud, bucket, key, data):
    s3 = patient_boto3(cloud)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# ---- 2: no body read before authorization; every buffered body capped ---------------

def test_anonymous_large_bodies_are_not_buffered(tmp_path):
    cloud = start_cloud(tmp_path)
    try:
        s3 = cloud.boto3()
        s3.create_bucket(Bucket="limits")
        up = s3.create_multipart_upload(Bucket="limits", Key="mp")["UploadId"]
        time.sleep(0.5)
        idle = rss_kib(cloud.proc.pid)
        targets = [
            (cloud.clc_port, "POST", "/_admin/accounts/intruder"),
            (cloud.clc_port, "POST", "/_admin/accounts/intruder2/keys"),
            (cloud.port, "POST", "/limits?delete"),
            (cloud.port, "POST", f"/limits/mp?uploadId={up}"),
            (cloud.port, "PUT", "/limits?acl"),
            (cloud.sc_port, "POST", "/volumes?size_gib=1"),
            (cloud.cc_port, "POST", "/v1/announce"),
        ]
        conns = []
        for port, method, path in targets:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            head = (f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                    f"content-type: application/xml\r\ncontent-length: {GIB}\r\n\r\n").encode()
            conns.append({"sock": s, "pending": head, "sent": 0, "status": "open", "what": (port, path)})
        chunk = bytes(256 << 10)
        peak = idle
        deadline = time.time() + 90
        while time.time() < deadline and any(c["status"] == "open" for c in conns):
            open_c = [c for c in conns if c["status"] == "open"]
            r, w, _ = select.select([c["sock"] for c in open_c], [c["sock"] for c in open_c], [], 0.5)
            for c in open_c:
                s = c["sock"]
                if s in r:
                    try:
                        data = s.recv(65536)
                    except (ConnectionResetError, BrokenPipeError):
                        data = b""
                    c["status"] = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else "closed"
                    continue
                if s in w:
                    if not c["pending"]:
                        if c["sent"] >= GIB:
                            continue
                        c["pending"] = chunk
                    try:
                        n = s.send(c["pending"])
                    except (ConnectionResetError, BrokenPipeError):
                        c["status"] = "closed"
                        continue
                    c["sent"] += n
                    c["pending"] = c["pending"][n:]
            peak = max(peak, rss_kib(cloud.proc.pid))
            # On a server that buffers, stop before it eats the machine.
            assert peak - idle < 64 << 10, f"RSS grew by {(peak - idle) >> 10} MiB: {conns}"
        close_all(c["sock"] for c in conns)
        for c in conns:
            assert c["status"] in (401, 403, "closed"), c
            # Only what the kernel's socket buffers held before the answer.
            assert c["sent"] < 64 << 20, c
        assert peak - idle < 64 << 10
        # Nothing was created by the anonymous admin calls.
        assert "intruder" not in cloud.euca("account", "list").stdout
    finally:
        cloud.stop()


def test_oversized_xml_body_is_max_message_length_exceeded(cloud, bucket):
    """An authorized caller's XML body past its cap (4 MiB for Complete) gets S3's error."""
    from botocore.exceptions import ClientError
    s3 = patient_boto3(cloud)
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    parts = [{"PartNumber": i % 10000 + 1, "ETag": '"' + "0" * 32 + '"'} for i in range(60000)]
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=up,
                                     MultipartUpload={"Parts": parts})
    assert ei.value.response["Error"]["Code"] == "MaxMessageLengthExceeded"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=up)


# ---- 7: descriptors: SC API + tracker floods cannot starve Walrus ---------------------

def test_idle_floods_on_sc_and_tracker_leave_walrus_working(tmp_path, monkeypatch):
    raise_own_nofile(4000)
    cfg = tmp_path / "euca.toml"
    cfg.write_text("[walrus]\nmax_connections = 128\n")

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    monkeypatch.setattr(subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=limited))
    cloud = start_cloud(tmp_path, ["--config", str(cfg)])
    monkeypatch.undo()
    socks = []
    try:
        s3 = patient_boto3(cloud)
        s3.create_bucket(Bucket="fds")
        # 3000 connections, 50 per source address, half to the SC API, half to the
        # tracker; non-blocking, so those the kernel cannot queue just stay pending.
        for i in range(3000):
            src = f"127.0.1.{10 + i // 50}"
            port = cloud.sc_port if i % 2 else cloud.cc_port
            s = socket.socket()
            s.setblocking(False)
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        time.sleep(2)
        for i in range(3):
            data = f"still serving {i}".encode() * 1000
            assert round_trip(cloud, "fds", f"k{i}", data) == data
        r = urllib.request.urlopen(cloud.endpoint + "/_health", timeout=10)
        assert r.status == 200
    finally:
        close_all(socks)
        log = cloud.log()
        cloud.stop()
    assert "Too many open files" not in log, log


# ---- 7: idle keep-alive connections do not starve users ---------------------------------

def test_idle_keepalive_flood_from_one_address(tmp_path):
    raise_own_nofile(3000)
    cloud = start_cloud(tmp_path)
    socks = []
    try:
        s3 = patient_boto3(cloud)
        s3.create_bucket(Bucket="flood")
        socks, served, refused, hanging = keepalive_flood(cloud.port, ["127.0.0.3"] * 1025)
        # Nobody hangs; the address keeps at most its cap (64) open: its oldest idle
        # connections were closed to admit the new ones.
        assert served > 0 and hanging == 0, (served, refused, hanging)
        time.sleep(1)
        still_open = 0
        for s in socks:
            s.setblocking(False)
            try:
                still_open += s.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        assert still_open <= 64, still_open
        # Authenticated requests from another address are served.
        for i in range(3):
            data = b"x" * (1000 + i)
            assert round_trip(cloud, "flood", f"k{i}", data) == data
        # The flooding address is answered (or refused with 503, or closed), not left hanging.
        s = socket.socket()
        s.settimeout(10)
        s.bind(("127.0.0.3", 0))
        s.connect(("127.0.0.1", cloud.port))
        try:
            http_get(s)
            status = read_status(s)
        except (ConnectionResetError, BrokenPipeError):
            status = None
        except socket.timeout:
            pytest.fail("a connection past the per-source cap hung")
        finally:
            s.close()
        assert status in (200, 503, None), status
    finally:
        close_all(socks)
        cloud.stop()


def test_idle_keepalive_flood_from_many_addresses(tmp_path):
    raise_own_nofile(3000)
    cloud = start_cloud(tmp_path)
    socks = []
    try:
        s3 = patient_boto3(cloud)
        s3.create_bucket(Bucket="flood")
        # 1100 idle keep-alive connections (more than the 1024 cap), 55 per address.
        socks, served, _, _ = keepalive_flood(
            cloud.port, [f"127.0.2.{10 + i // 55}" for i in range(1100)])
        assert served > 0
        for i in range(3):
            data = b"y" * (2000 + i)
            assert round_trip(cloud, "flood", f"k{i}", data) == data
    finally:
        close_all(socks)
        cloud.stop()


# ---- 7: /_metrics needs the token on every port -----------------------------------------

def metrics_status(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_metrics_need_the_token_on_every_port(tmp_path):
    (tmp_path / "closed").mkdir()
    (tmp_path / "public").mkdir()
    cloud = start_cloud(tmp_path / "closed")
    nc = None
    try:
        assert metrics_status(cloud.endpoint + "/_metrics")[0] in (401, 403)
        token_file = cloud.data / "credentials" / "metrics-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        port = free_port()
        nc = subprocess.Popen(
            [euca_bin(), "nc-cache", "--config",
             str(cloud.data / "credentials" / "nc-cache.toml"), "--dir", str(tmp_path / "cache"),
             "--listen", f"127.0.0.1:{port}", "--node", "n1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        ports = {"walrus": cloud.port, "sc": cloud.sc_port, "tracker": cloud.cc_port, "pieces": port}
        for name, p in ports.items():
            url = f"http://127.0.0.1:{p}/_metrics"
            assert metrics_status(url)[0] in (401, 403), name
            assert metrics_status(url, token[:-1] + ("0" if token[-1] != "0" else "1"))[0] in (401, 403), name
            status, text = metrics_status(url, token)
            assert status == 200 and "# TYPE" in text, (name, status)
            assert urllib.request.urlopen(f"http://127.0.0.1:{p}/_health", timeout=5).status == 200
    finally:
        if nc:
            nc.terminate()
            nc.wait(timeout=15)
        cloud.stop()

    cfg = tmp_path / "public.toml"
    cfg.write_text("[service]\nmetrics_public = true\n")
    cloud = start_cloud(tmp_path / "public", ["--config", str(cfg)])
    try:
        for p in (cloud.port, cloud.sc_port, cloud.cc_port):
            status, text = metrics_status(f"http://127.0.0.1:{p}/_metrics")
            assert status == 200 and "# TYPE" in text
    finally:
        cloud.stop()


def test_json_body_past_its_cap_is_413(cloud):
    """The tracker reads a JSON body only after the cluster token, and at most 4 MiB:
    a longer one is refused (413) from its Content-Length, before it is sent."""
    token = (cloud.data / "cloud" / "cluster-token").read_text().strip()
    s = socket.create_connection(("127.0.0.1", cloud.cc_port), timeout=10)
    try:
        s.sendall((f"POST /v1/announce HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
                   f"content-type: application/json\r\ncontent-length: {5 << 20}\r\n\r\n").encode())
        assert read_status(s) == 413
    finally:
        s.close()
