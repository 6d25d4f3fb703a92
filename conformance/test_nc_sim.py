"""`euca nc --simulate N` as a process: N simulated nodes on one listener, each
registered with a (fake, recording) CC under `<name>-sim<k>` at `<url>/sim/<k>`,
answering the NC API with the cluster token; and `euca nc`'s one-line errors."""
import http.server
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import euca_bin, free_port

TOKEN = "0123456789abcdef0123456789abcdef"


class FakeCC(http.server.BaseHTTPRequestHandler):
    seen = None  # list of (authorization, body) set per server

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(n))
        self.server.seen.append((self.path, self.headers.get("authorization"), body))
        zero = {"cores": 0, "memory_mib": 0, "disk_gib": 0}
        reply = json.dumps({"name": body["name"], "url": body["url"], "state": "UP",
                            "capacity": zero, "limit": zero, "free": zero,
                            "reserved": zero, "instances": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *a):
        pass


def call(method, url, token=TOKEN, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def spec(iid):
    return {"instance_id": iid, "account": "123456789012", "reservation_id": "r-00000001",
            "vm_type": {"name": "m1.small", "cores": 1, "memory_mib": 256, "disk_gib": 5},
            "root": {"kind": "image", "installed_id": "ab" * 32, "size": 1048576},
            "mac": "d2:00:00:00:00:07"}


@pytest.fixture()
def fake_cc():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeCC)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_simulated_nodes_register_and_answer(tmp_path, fake_cc):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    port = free_port()
    cc = f"http://127.0.0.1:{fake_cc.server_address[1]}"
    log = tmp_path / "nc.log"
    proc = subprocess.Popen(
        [euca_bin(), "nc", "--simulate", "3", "--name", "simt", "--cc", cc,
         "--token-file", tok, "--nc-listen", f"127.0.0.1:{port}", "--sim-delay-ms", "0",
         "--cores", "2", "--memory-mib", "1024", "--disk-gib", "20"],
        stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    try:
        assert proc.stdout.readline().startswith("euca: nc is up, simulating 3 nodes")
        deadline = time.time() + 20
        while len({b["name"] for _, _, b in fake_cc.seen}) < 3 and time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        regs = {b["name"]: b["url"] for _, _, b in fake_cc.seen}
        base = f"http://127.0.0.1:{port}"
        assert regs == {f"simt-sim{k}": f"{base}/sim/{k}" for k in range(3)}
        assert all(p == "/v1/nodes" and a == f"Bearer {TOKEN}" for p, a, _ in fake_cc.seen)

        st, rep = call("GET", regs["simt-sim2"] + "/v1/node")
        assert st == 200
        assert rep["name"] == "simt-sim2"
        assert rep["capacity"] == {"cores": 2, "memory_mib": 1024, "disk_gib": 20}
        st, err = call("GET", regs["simt-sim2"] + "/v1/node", token="not-the-token-at-all")
        assert st == 403 and err["error"]["code"] == "Forbidden"
        st, err = call("GET", f"{base}/sim/3/v1/node")
        assert st == 404

        st, r = call("PUT", regs["simt-sim1"] + "/v1/instances/i-0000abcd", body=spec("i-0000abcd"))
        assert st == 200 and r["state"] == "pending", r
        st, rep = call("GET", regs["simt-sim1"] + "/v1/node")
        assert [i["state"] for i in rep["instances"]] == ["running"]
        st, rep = call("GET", regs["simt-sim0"] + "/v1/node")
        assert rep["instances"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    assert rc == 0, log.read_text()


def test_one_line_errors(tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    cases = [
        (["nc", "--simulate", "2", "--nc-listen", f"127.0.0.1:{free_port()}"], "no cluster token"),
        (["nc", "--simulate", "0", "--token-file", str(tok)], "at least 1 node"),
        (["nc", "--token-file", str(tok), "--nc-listen", f"127.0.0.1:{free_port()}"], "[nc_cache]"),
        (["nc", "--simulate", "1", "--token-file", str(tok), "--cc", "ftp://x"], "http://"),
    ]
    for args, want in cases:
        r = subprocess.run([euca_bin(), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and want in lines[0], (args, r.stderr)
