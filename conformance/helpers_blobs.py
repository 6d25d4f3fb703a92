"""A second S3 server to keep another Walrus's blobs: a plain `euca walrus` (its own
redb and directory) on a free loopback port, with one bucket for the blobs.

    be = S3Backend(tmp_dir).start()
    be.blob_url("fe")      # s3://blob-store/fe?endpoint=http://127.0.0.1:PORT&...
    be.bytes_under("fe")   # total size of the objects stored under that prefix
    be.stop()

The front ends get the backend's keys in the URL's query (a test's shortcut; an
operator puts them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead).
"""
import signal
import subprocess
import urllib.parse
import urllib.request
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
