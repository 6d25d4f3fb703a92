"""Blob stores for other Walruses: a second S3 server (a plain `euca walrus`, its own
redb and directory, one bucket for the blobs), or Azurite, Microsoft's Azure Blob
Storage emulator (one container for the blobs), each on a free loopback port.

    be = S3Backend(tmp_dir).start()     # or AzuriteBackend(tmp_dir).start()
    be.blob_url("fe")      # s3://blob-store/fe?endpoint=http://127.0.0.1:PORT&...
    be.bytes_under("fe")   # total size of the objects stored under that prefix
    be.read(key)           # one stored object's bytes
    be.stop()

The front ends get the backend's keys in the URL's query (a test's shortcut; an
operator puts them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or
AZURE_STORAGE_ACCOUNT_KEY, instead).
"""
import base64
import email.utils
import hashlib
import hmac
import http.client
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
from botocore.config import Config

from conftest import euca_bin, free_port, parse_env_file, wait_http

BUCKET = "blob-store"


class S3Backend:
    def __init__(self, root):
        self.root = Path(root)
        self.data = self.root / "s3-backend"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "s3-backend.log"
        self.proc = None

    def start(self, timeout=30):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [euca_bin(), "walrus", "--data", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        rc = self.data / "credentials" / "eucarc"
        wait_http(self.url + "/_health", self.proc, self.log_path, timeout, also=rc)
        env = parse_env_file(rc)
        self.ak, self.sk = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        self.s3().create_bucket(Bucket=BUCKET)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def s3(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.ak, aws_secret_access_key=self.sk,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))

    def blob_url(self, prefix):
        q = urllib.parse.urlencode({"endpoint": self.url, "region": "us-east-1",
                                    "access_key_id": self.ak, "secret_access_key": self.sk})
        return f"s3://{BUCKET}/{prefix}?{q}"

    def objects_under(self, prefix):
        """{key: size} of the backend's objects under `prefix/`."""
        out = {}
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                     Prefix=prefix + "/")
        for page in pages:
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    def bytes_under(self, prefix):
        return sum(self.objects_under(prefix).values())

    def read(self, key):
        return self.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()


# Azurite's one account and its published key (the emulator's documented defaults).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
CONTAINER = "blob-store"


def azurite_path():
    return shutil.which("azurite-blob")


class AzuriteBackend:
    """`azurite-blob` on a free port with its files under `root`, and one container.
    Requests of its own (create the container, list and read blobs) are signed
    with the account key (Shared Key)."""

    def __init__(self, root):
        self.root = Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.log_path = self.root / "azurite.log"
        self.proc = None

    def start(self, timeout=30):
        (self.root / "azurite").mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [azurite_path(), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--location", str(self.root / "azurite"), "--skipApiVersionCheck",
                 "--disableProductStyleUrl", "--silent"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                self._request("PUT", f"/{CONTAINER}", {"restype": "container"})
                return self
            except OSError as e:  # not listening yet
                if time.time() > deadline:
                    raise RuntimeError(f"azurite not up in {timeout}s") from e
                time.sleep(0.2)

    def stop(self):
        # SIGKILL: on SIGTERM it waits for idle keep-alive connections to close
        # (15 s), and its files are a test's scratch.
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _request(self, method, path, query=None):
        """One Shared Key signed request to `/<account><path>`; returns the body."""
        query = query or {}
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-version": "2021-08-06"}
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}{path}" + "".join(
            f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        # VERB, then eleven standard headers (all empty here), then the rest.
        to_sign = f"{method}\n" + "\n" * 11 + canonical_headers + resource
        mac = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256)
        headers["Authorization"] = \
            f"SharedKey {AZURITE_ACCOUNT}:{base64.b64encode(mac.digest()).decode()}"
        target = f"/{AZURITE_ACCOUNT}" + urllib.parse.quote(path)
        if query:
            target += "?" + urllib.parse.urlencode(query)
        # http.client, not urllib: urllib adds a Content-Type the signature lacks.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, target, body=b"" if method == "PUT" else None,
                         headers=headers)
            r = conn.getresponse()
            data = r.read()
            if r.status >= 300:
                raise RuntimeError(f"azurite: {method} {target}: {r.status} {data[:300]!r}")
            return data
        finally:
            conn.close()

    def blob_url(self, prefix):
        q = urllib.parse.urlencode({"account_name": AZURITE_ACCOUNT, "access_key": AZURITE_KEY,
                                    "endpoint": self.url})
        return f"az://{CONTAINER}/{prefix}?{q}"

    def objects_under(self, prefix):
        """{name: size} of the container's blobs under `prefix/`."""
        out, marker = {}, ""
        while True:
            q = {"restype": "container", "comp": "list", "prefix": prefix + "/"}
            if marker:
                q["marker"] = marker
            root = ET.fromstring(self._request("GET", f"/{CONTAINER}", q))
            for b in root.iter("Blob"):
                out[b.findtext("Name")] = int(b.findtext("Properties/Content-Length"))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return out

    def bytes_under(self, prefix):
        return sum(self.objects_under(prefix).values())

    def read(self, key):
        return self._request("GET", f"/{CONTAINER}/{key}")
