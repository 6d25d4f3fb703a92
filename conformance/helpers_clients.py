"""Helpers for the real-client conformance tests (test_clients*.py).

Everything here drives third-party clients (boto3, awscli v1/v2, s3cmd, rclone, curl,
requests) against a running `euca up`; nothing talks to anything but 127.0.0.1.
"""
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

MiB = 1024 * 1024

# awscli v1 from PyPI runs on the interpreter running pytest; awscli v2 is Debian's
# /usr/bin/aws (its own botocore, running on /usr/bin/python3).
AWS_CLIS = {
    "v1": [sys.executable, "-m", "awscli"],
    "v2": ["/usr/bin/aws"],
}


class CmdError(AssertionError):
    pass


def run(cmd, env=None, timeout=600, check=True, cwd=None, input=None, text=True):
    """Runs a client command; on failure raises with the command line and its output."""
    t0 = time.time()
    r = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, input=input,
                       capture_output=True, text=text, timeout=timeout)
    r.elapsed = time.time() - t0
    if check and r.returncode != 0:
        out = r.stdout if text else r.stdout.decode(errors="replace")
        err = r.stderr if text else r.stderr.decode(errors="replace")
        raise CmdError(
            f"command failed (rc={r.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-3000:]}")
    return r


# -- awscli ------------------------------------------------------------------

def aws(cloud, variant, *args, check=True, timeout=600, cwd=None):
    """Runs `aws ARGS` with awscli v1 or v2 using the cloud's generated config files."""
    cmd = [*AWS_CLIS[variant], "--endpoint-url", cloud.endpoint, *args]
    return run(cmd, env=cloud.client_env(), check=check, timeout=timeout, cwd=cwd)


# -- s3cmd -------------------------------------------------------------------

def s3cmd(cloud, *args, sigv2=False, check=True, timeout=600, cwd=None):
    exe = shutil.which("s3cmd") or "s3cmd"
    cmd = [exe, "-c", str(cloud.s3cfg), "--no-progress"]
    if sigv2:
        cmd.append("--signature-v2")
    cmd += list(args)
    return run(cmd, env=cloud.client_env(), check=check, timeout=timeout, cwd=cwd)


# -- rclone ------------------------------------------------------------------

def rclone(cloud, *args, check=True, timeout=600, cwd=None, text=True):
    cmd = ["rclone", "--config", str(cloud.rclone_conf), "--retries", "1",
           "--low-level-retries", "1", *args]
    return run(cmd, env=cloud.client_env(), check=check, timeout=timeout, cwd=cwd, text=text)


# -- curl --------------------------------------------------------------------

def curl(url, *extra, method=None, headers=None, upload=None, resolve=None, timeout=120):
    """Fetches URL with curl; returns (status, headers dict (lowercase keys), body bytes)."""
    with tempfile.TemporaryDirectory() as td:
        hdr = Path(td) / "h"
        body = Path(td) / "b"
        cmd = ["curl", "-sS", "--noproxy", "*", "-D", str(hdr), "-o", str(body),
               "--max-time", str(timeout)]
        if method:
            cmd += ["-X", method]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if upload is not None:
            cmd += ["-T", str(upload)]
        if resolve:
            cmd += ["--resolve", resolve]
        cmd += list(extra)
        cmd.append(url)
        run(cmd, text=True, timeout=timeout + 10)
        raw = hdr.read_text(errors="replace")
        data = body.read_bytes() if body.exists() else b""
    # Keep the last response block (after any 100 Continue).
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    last = blocks[-1].splitlines() if blocks else []
    status = int(last[0].split()[1]) if last else 0
    hdrs = {}
    for line in last[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, data


def s3_error_code(body):
    """Returns <Code> of an S3 XML error body (None if it is not one)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    tag = root.tag.split("}")[-1]
    if tag != "Error":
        return None
    for child in root:
        if child.tag.split("}")[-1] == "Code":
            return child.text
    return None


def xml_find_all(body, name):
    """Texts of all elements named NAME (namespace-agnostic)."""
    root = ET.fromstring(body)
    return [e.text for e in root.iter() if e.tag.split("}")[-1] == name]


# -- data --------------------------------------------------------------------

def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path, bufsize=4 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def md5_hex(b):
    return hashlib.md5(b).hexdigest()


def md5_b64(b):
    return base64.b64encode(hashlib.md5(b).digest()).decode()


def write_random_file(path, size, chunk=4 * MiB):
    """Writes SIZE random bytes to PATH in chunks; returns the file's sha256."""
    h = hashlib.sha256()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            b = os.urandom(min(chunk, left))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def multipart_etag_of_file(path, part_size):
    """S3 multipart ETag (without quotes) for PATH uploaded in PART_SIZE parts."""
    digests = []
    with open(path, "rb") as f:
        while True:
            b = f.read(part_size)
            if not b:
                break
            digests.append(hashlib.md5(b).digest())
    return hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"


# File names (relative, '/'-separated) for the sync trees: spaces, '+', '%', unicode.
TREE_NAMES = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "a+b c.txt",
    "percent%.txt",
    "percent%20literal.txt",
    "100%+ done.txt",
    "caf\u00e9.txt",
    "\u65e5\u672c/\u8a9e.txt",
    "\u65e5\u672c/sub dir/\u00e9 + %.bin",
    "dir one/nested file.txt",
    "dir one/deeper/x+y/z%41.txt",
    "paren (1).txt",
    "tilde~name.txt",
    "empty.txt",
]


def make_tree(root, names=TREE_NAMES):
    """Creates files under ROOT (distinct content each; empty.txt is empty).

    Returns {relative posix path: sha256}."""
    root = Path(root)
    out = {}
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        data = b"" if name == "empty.txt" else (f"{i}:{name}\n".encode() + os.urandom(100 + 37 * i))
        p.write_bytes(data)
        out[name] = sha256_bytes(data)
    return out


def tree_digest(root):
    """{relative posix path: sha256} for every file under ROOT."""
    root = Path(root)
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def list_keys(s3, bucket, prefix=""):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def bucket_exists(s3, name):
    from botocore.exceptions import ClientError
    try:
        s3.head_bucket(Bucket=name)
        return True
    except ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def nuke_bucket(s3, name):
    """Best-effort removal of a bucket and everything in it."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=o["Key"])
        for u in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=name)
    except Exception:
        pass


_name_n = [0]


def unique_name(prefix="c"):
    """A fresh, DNS-compatible bucket name."""
    _name_n[0] += 1
    return f"{prefix}{os.getpid()}-{_name_n[0]}-{int(time.time() * 1000) % 1000000}"
