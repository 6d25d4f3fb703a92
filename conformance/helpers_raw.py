"""Raw-HTTP helpers shared by test_negative.py, test_crash.py and test_concurrency.py.

Requests are signed with botocore's own signers (S3SigV4Auth, S3SigV4QueryAuth,
HmacV1Auth, HmacV1QueryAuth) on a botocore AWSRequest, can then be tampered with,
and are sent with http.client (or a raw socket) so that nothing is "fixed up" on
the way. Only 127.0.0.1 is ever contacted.
"""
import base64
import contextlib
import datetime
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlsplit

from botocore.auth import (HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth,
                           S3SigV4QueryAuth)
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

SIGV4_TS = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------
def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def md5_b64(b):
    return base64.b64encode(hashlib.md5(b).digest()).decode()


def crc32_b64(b):
    return base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode()


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def obj_path(bucket, key=None):
    """Path-style request path, URI-encoded the way S3 canonicalises it (once, '/' kept)."""
    p = "/" + quote(bucket, safe="")
    if key is not None:
        p += "/" + quote(key, safe="/~")
    return p


def qs(params):
    """Encodes [(k, v)] / {k: v} as an already-canonical query string.

    v=None gives a bare sub-resource ("uploads"); values are encoded with
    uppercase hex and %20 for space, so the string can be signed verbatim.
    """
    if isinstance(params, dict):
        params = list(params.items())
    parts = []
    for k, v in params:
        k = quote(str(k), safe="-_.~")
        parts.append(k if v is None else f"{k}={quote(str(v), safe='-_.~')}")
    return "&".join(parts)


def flip_hex(sig):
    """Changes the last hex digit of a signature (stays valid hex)."""
    last = sig[-1]
    return sig[:-1] + ("0" if last != "0" else "1")


def flip_b64(sig):
    """Changes the first character of a base64 signature (stays valid base64)."""
    c = sig[0]
    return ("B" if c != "B" else "C") + sig[1:]


def s3_code(body):
    m = re.search(rb"<Code>\s*([^<]*?)\s*</Code>", body or b"")
    return m.group(1).decode() if m else None


# --------------------------------------------------------------------------
# responses and sending
# --------------------------------------------------------------------------
@dataclass
class Resp:
    status: int
    reason: str
    headers: list  # [(name, value)]
    body: bytes = b""
    raw_head: bytes = b""

    @property
    def code(self):
        return s3_code(self.body)

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def __repr__(self):
        b = self.body[:600]
        return f"<HTTP {self.status} {self.reason} code={self.code} body={b!r}>"


@dataclass
class RawReq:
    method: str
    target: str  # path + ("?" + query)
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def copy(self, **kw):
        d = dict(method=self.method, target=self.target, headers=dict(self.headers), body=self.body)
        d.update(kw)
        return RawReq(**d)

    def set_header(self, name, value):
        self.del_header(name)
        self.headers[name] = value

    def del_header(self, name):
        for k in [k for k in self.headers if k.lower() == name.lower()]:
            del self.headers[k]

    def get_header(self, name):
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def auth_signature(self):
        m = re.search(r"Signature=([0-9a-fA-F]+)", self.get_header("Authorization") or "")
        return m.group(1) if m else None

    def with_auth_signature(self, sig):
        r = self.copy()
        auth = r.get_header("Authorization")
        r.set_header("Authorization", re.sub(r"Signature=[0-9a-fA-F]+", "Signature=" + sig, auth))
        return r


def send(cloud, req, timeout=60, add_content_length=True):
    """Sends a RawReq verbatim with http.client; returns Resp."""
    conn = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=timeout)
    try:
        conn.putrequest(req.method, req.target, skip_host=True, skip_accept_encoding=True)
        names = {k.lower() for k in req.headers}
        if "host" not in names:
            conn.putheader("Host", f"127.0.0.1:{cloud.port}")
        for k, v in req.headers.items():
            conn.putheader(k, v)
        body = req.body or b""
        if add_content_length and "content-length" not in names and (
                body or req.method in ("PUT", "POST")):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


def raw_exchange(cloud, data, shutdown_write=False, timeout=10, read_until_close=True):
    """Writes raw bytes on a fresh TCP connection and returns everything read back
    (until EOF or timeout). Returns (bytes, error) where error is a reset/timeout note."""
    s = socket.create_connection(("127.0.0.1", cloud.port), timeout=timeout)
    out = b""
    err = None
    try:
        try:
            s.sendall(data)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:  # server may reset mid-send on oversized input
            err = f"send: {e!r}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                err = "timeout"
                break
            except OSError as e:
                err = f"recv: {e!r}"
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    finally:
        s.close()
    return out, err


def parse_raw_response(data):
    """Parses the first HTTP response in raw bytes; returns Resp or None."""
    if not data.startswith(b"HTTP/"):
        return None
    head, sep, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
    r = Resp(status, reason, headers, b"", raw_head=head)
    cl = r.header("content-length")
    r.body = rest[: int(cl)] if cl and cl.isdigit() else rest
    return r


def serialize(cloud, req, content_length=None):
    """RawReq -> raw HTTP/1.1 bytes (Host added if missing; Content-Length from body
    unless content_length given or a Content-Length header is already present)."""
    lines = [f"{req.method} {req.target} HTTP/1.1"]
    names = {k.lower() for k in req.headers}
    if "host" not in names:
        lines.append(f"Host: 127.0.0.1:{cloud.port}")
    for k, v in req.headers.items():
        lines.append(f"{k}: {v}")
    if "content-length" not in names:
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif req.body or req.method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(req.body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (req.body or b"")


def healthy(cloud, timeout=5):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", cloud.port, timeout=timeout)
        conn.request("GET", "/_health")
        st = conn.getresponse().status
        conn.close()
        return st == 200
    except OSError:
        return False


# --------------------------------------------------------------------------
# signing
# --------------------------------------------------------------------------
def _creds(cloud, access_key, secret_key):
    return Credentials(access_key or cloud.access_key, secret_key or cloud.secret_key)


@contextlib.contextmanager
def signing_time(when):
    """Makes botocore's SigV4 signers use `when` (naive UTC datetime) as 'now'."""
    if when is None:
        yield
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            yield


class TweakableV4(S3SigV4Auth):
    """S3SigV4Auth with knobs for building bad (but self-consistent) signatures."""

    def __init__(self, credentials, service, region, payload_hash=None, drop_host=False,
                 scope_date=None):
        super().__init__(credentials, service, region)
        self._payload_hash = payload_hash
        self._drop_host = drop_host
        self._scope_date = scope_date

    def payload(self, request):
        if self._payload_hash is not None:
            return self._payload_hash
        return super().payload(request)

    def headers_to_sign(self, request):
        m = super().headers_to_sign(request)
        if self._drop_host and "host" in m:
            del m["host"]
        return m

    def _date(self, request):
        return self._scope_date or request.context["timestamp"][0:8]

    def scope(self, request):
        return "/".join([self.credentials.access_key, self.credential_scope(request)])

    def credential_scope(self, request):
        return "/".join([self._date(request), self._region_name, self._service_name, "aws4_request"])

    def signature(self, string_to_sign, request):
        k = signing_key(self.credentials.secret_key, self._date(request),
                        self._region_name, self._service_name)
        return hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()


def signing_key(secret, date8, region, service):
    def h(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()
    return h(h(h(h(("AWS4" + secret).encode(), date8), region), service), "aws4_request")


def _url(cloud, path, query):
    return cloud.endpoint + path + ("?" + query if query else "")


def _target(url):
    p = urlsplit(url)
    return p.path + ("?" + p.query if p.query else "")


def sign_v4(cloud, method, path, query="", headers=None, body=b"", *, payload_hash=None,
            access_key=None, secret_key=None, region=None, service="s3", when=None,
            drop_host=False, scope_date=None):
    """Header-signed SigV4 request (x-amz-content-sha256 = sha256(body) unless
    payload_hash is given). Returns RawReq with exactly the signed headers."""
    hdrs = {"Host": f"127.0.0.1:{cloud.port}"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=_url(cloud, path, query), headers=hdrs, data=body)
    signer = TweakableV4(_creds(cloud, access_key, secret_key), service, region or cloud.region,
                         payload_hash=payload_hash, drop_host=drop_host, scope_date=scope_date)
    with signing_time(when):
        signer.add_auth(req)
    return RawReq(method, _target(req.url), dict(req.headers.items()), body)


def presign_v4(cloud, method, path, query="", expires=3600, *, access_key=None,
               secret_key=None, region=None, service="s3", when=None, headers=None):
    """SigV4 query-string (presigned) request; only Host (plus `headers`) is signed."""
    hdrs = {"Host": f"127.0.0.1:{cloud.port}"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=_url(cloud, path, query), headers=hdrs)
    signer = S3SigV4QueryAuth(_creds(cloud, access_key, secret_key), service,
                              region or cloud.region, expires=expires)
    with signing_time(when):
        signer.add_auth(req)
    return RawReq(method, _target(req.url), dict(hdrs))


class _DatedV1(HmacV1Auth):
    def __init__(self, credentials, when=None):
        super().__init__(credentials)
        self._when = when

    def _get_date(self):
        if self._when is None:
            return super()._get_date()
        ts = self._when.replace(tzinfo=datetime.timezone.utc).timestamp()
        return email.utils.formatdate(ts, usegmt=True)


def sign_v2(cloud, method, path, query="", headers=None, body=b"", *, access_key=None,
            secret_key=None, when=None):
    """SigV2 (HmacV1, 'Authorization: AWS AK:sig') header-signed request; `when`
    (naive UTC datetime) sets the signed Date header."""
    hdrs = {"Host": f"127.0.0.1:{cloud.port}"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=_url(cloud, path, query), headers=hdrs, data=body)
    _DatedV1(_creds(cloud, access_key, secret_key), when).add_auth(req)
    return RawReq(method, _target(req.url), dict(req.headers.items()), body)


def presign_v2(cloud, method, path, query="", expires=3600, *, access_key=None,
               secret_key=None):
    """SigV2 presigned URL (AWSAccessKeyId / Expires / Signature)."""
    req = AWSRequest(method=method, url=_url(cloud, path, query), headers={})
    HmacV1QueryAuth(_creds(cloud, access_key, secret_key), expires=expires).add_auth(req)
    # HmacV1QueryAuth leaves a Date header (= Expires) on the request; do not send it.
    return RawReq(method, _target(req.url), {"Host": f"127.0.0.1:{cloud.port}"})


def query_replace(target, name, value):
    """Replaces (or removes, value=None) one query parameter in a target, keeping order."""
    path, _, q = target.partition("?")
    out = []
    for p in q.split("&") if q else []:
        k = p.partition("=")[0]
        if k == name:
            if value is not None:
                out.append(f"{k}={value}")
        else:
            out.append(p)
    return path + ("?" + "&".join(out) if out else "")


def query_get(target, name):
    q = target.partition("?")[2]
    for p in q.split("&"):
        k, _, v = p.partition("=")
        if k == name:
            return v
    return None


# --------------------------------------------------------------------------
# aws-chunked bodies
# --------------------------------------------------------------------------
def chunk_list(data, chunk_size):
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]


def signed_chunked_body(data, chunk_size, seed_sig, timestamp, scope, key,
                        bad_chunk=None, tamper="signature"):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD body. bad_chunk (index, -1 = final) gets a
    wrong signature (tamper='signature') or altered data with the original
    signature (tamper='data')."""
    chunks = chunk_list(data, chunk_size)
    if bad_chunk is not None and bad_chunk < 0:
        bad_chunk = len(chunks) + bad_chunk
    prev = seed_sig
    out = []
    for i, c in enumerate(chunks):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, prev,
                         EMPTY_SHA256, sha256_hex(c)])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        sent_sig, sent_data = sig, c
        if i == bad_chunk:
            if tamper == "signature":
                sent_sig = flip_hex(sig)
            else:
                assert c, "cannot tamper data of the empty final chunk"
                sent_data = bytes([c[0] ^ 0xFF]) + c[1:]
        out.append(f"{len(sent_data):x};chunk-signature={sent_sig}\r\n".encode() + sent_data + b"\r\n")
        prev = sig
    return b"".join(out)


def streaming_put_v4(cloud, bucket, key, data, chunk_size=65536, bad_chunk=None,
                     tamper="signature", access_key=None, secret_key=None, extra_headers=None,
                     query=""):
    """Builds a complete STREAMING-AWS4-HMAC-SHA256-PAYLOAD PutObject RawReq."""
    when = utcnow().replace(microsecond=0)
    ts = when.strftime(SIGV4_TS)
    region = cloud.region
    # chunk signatures have a fixed length, so the encoded length is known upfront
    enc_len = len(signed_chunked_body(data, chunk_size, "0" * 64, ts, "s", b"k"))
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(enc_len),
    }
    headers.update(extra_headers or {})
    req = sign_v4(cloud, "PUT", obj_path(bucket, key), query=query, headers=headers,
                  payload_hash=STREAMING_PAYLOAD, when=when, access_key=access_key,
                  secret_key=secret_key)
    seed = req.auth_signature()
    scope = f"{ts[:8]}/{region}/s3/aws4_request"
    k = signing_key(secret_key or cloud.secret_key, ts[:8], region, "s3")
    req.body = signed_chunked_body(data, chunk_size, seed, ts, scope, k, bad_chunk, tamper)
    assert len(req.body) == enc_len
    return req


def unsigned_trailer_body(data, chunk_size=65536, checksum_b64=None):
    out = []
    for c in chunk_list(data, chunk_size)[:-1]:
        out.append(f"{len(c):x}\r\n".encode() + c + b"\r\n")
    cs = checksum_b64 if checksum_b64 is not None else crc32_b64(data)
    out.append(b"0\r\nx-amz-checksum-crc32:" + cs.encode() + b"\r\n\r\n")
    return b"".join(out)


def unsigned_trailer_put(cloud, bucket, key, data, checksum_b64=None, chunk_size=65536):
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER PutObject with an x-amz-checksum-crc32 trailer
    (the format current boto3/awscli send)."""
    body = unsigned_trailer_body(data, chunk_size, checksum_b64)
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
        "Content-Length": str(len(body)),
    }
    return sign_v4(cloud, "PUT", obj_path(bucket, key), headers=headers, body=body,
                   payload_hash=STREAMING_UNSIGNED_TRAILER)


# --------------------------------------------------------------------------
# checks through the good admin client
# --------------------------------------------------------------------------
def get_or_none(s3, bucket, key):
    """Object bytes, or None if the key does not exist (404)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


def head_or_none(s3, bucket, key):
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


def assert_absent(s3, bucket, key):
    assert head_or_none(s3, bucket, key) is None, f"object {key!r} exists but must not"
    keys = list_keys(s3, bucket, prefix=key)
    assert key not in keys, f"object {key!r} is listed but must not be"


def assert_content(s3, bucket, key, data, metadata=None):
    got = get_or_none(s3, bucket, key)
    assert got is not None, f"object {key!r} missing"
    assert got == data, (f"object {key!r} changed: {len(got)} bytes sha {sha256_hex(got)[:12]} "
                         f"!= expected {len(data)} bytes sha {sha256_hex(data)[:12]}")
    if metadata is not None:
        h = s3.head_object(Bucket=bucket, Key=key)
        assert h.get("Metadata", {}) == metadata, f"metadata of {key!r} changed: {h.get('Metadata')}"


def list_keys(s3, bucket, prefix=""):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def bucket_exists(s3, name):
    return name in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}


def tree_bytes(root, exclude_suffixes=()):
    """(total bytes, bytes of excluded files, list of files) under root."""
    total = excluded = 0
    files = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                sz = p.lstat().st_size
            except OSError:
                continue
            if any(n.endswith(s) for s in exclude_suffixes):
                excluded += sz
            else:
                total += sz
            files.append((str(p), sz))
    return total, excluded, files


def snapshot_files(root, exclude=()):
    """Set of relative paths under root, skipping the given top-level names."""
    root = Path(root)
    out = set()
    for dirpath, dirnames, names in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in exclude]
            names = [n for n in names if n not in exclude]
        for n in list(names) + list(dirnames):
            out.add(str(rel / n))
    return out
