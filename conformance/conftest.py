"""Fixtures that start a real `euca up` for the conformance suite (or, with
EUCA_LAYOUT=split, the same cloud as separate clc/walrus/sc/cc processes). With
EUCA_WALRUS_META=postgres, the shared cloud's Walrus keeps its metadata in a
throwaway PostgreSQL (helpers_pg) and its blobs under `blob_url` (EUCA_WALRUS_BLOBS=s3:
in a second S3 server), the CLC and SC their records there too, and the S3 client
tests talk to a Walrus front end on the same stores: the cloud's own on even pytest-xdist
workers, a second one (a plain `euca walrus`) on odd workers and without xdist, so a
run spreads the suite across both (EUCA_S3_FRONT_END=a or b: every worker to that one).

The binary is taken from $EUCA_BIN, else target/release/euca, else target/debug/euca.
Each server gets a free loopback port and a temporary data directory, and is always
stopped (SIGTERM, then SIGKILL) when its fixture ends.
"""
import atexit
import functools
import gzip
import json
import random
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# awscli v2 is Debian's /usr/bin/aws (its own botocore on /usr/bin/python3); v1 is
# the PyPI awscli on the interpreter running pytest.
AWS_V2 = "/usr/bin/aws"


# scripts/test.sh runs the files on two pytest-xdist workers (--dist loadfile: a
# file runs on one worker; --no-loadscope-reorder: in the order below). The
# longest files go first so that neither worker is left with one at the end. The
# files that build the emulated cluster (network namespaces, bridges and nftables
# tables with fixed names) must never run at the same time: they hold a lock for
# as long as they run, and the two short ones go last, when the long one is done.
HOST_NETWORK_FILES = ("test_net_modes.py", "test_instances_netns.py", "test_net_up.py")
FIRST = ("test_net_modes.py", "test_clients_cli.py")
LAST = ("test_instances_netns.py", "test_net_up.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = Path(str(item.fspath)).name
        if name in FIRST:
            return FIRST.index(name)
        if name in LAST:
            return len(FIRST) + 1 + LAST.index(name)
        return len(FIRST)
    items.sort(key=rank)


@pytest.fixture(scope="module", autouse=True)
def host_network_lock(request):
    """Held for the whole module by the files that build the emulated cluster."""
    if Path(str(request.path)).name not in HOST_NETWORK_FILES:
        yield
        return
    import fcntl
    with open(Path(tempfile.gettempdir()) / "euca-conformance-host-network.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def euca_bin():
    env = os.environ.get("EUCA_BIN")
    if env:
        return env
    for p in (ROOT / "target/release/euca", ROOT / "target/debug/euca"):
        if p.exists():
            return str(p)
    raise RuntimeError("euca binary not built; run cargo build --release")


# Ports for the clouds under test come from below the kernel's ephemeral range
# (ip_local_port_range, 32768-60999 by default). A port the kernel picked for a
# bind to 0 is an ephemeral one, so any outgoing connection (the clients' own,
# thousands in test_limits) could take it before the cloud binds it: a CI run lost
# a cloud to "Address already in use" that way. Ports are never handed out twice.
# Under pytest-xdist (scripts/test.sh runs two workers) each worker draws from its
# own slice of the range, so two workers never hand out the same port.
_PORTS_GIVEN = set()


def _port_range(lo=20000, hi=32767):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")   # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return (lo, hi)
    i = int(worker[2:])
    size = (hi - lo + 1) // count
    return (lo + i * size, lo + (i + 1) * size - 1)


_PORT_RANGE = _port_range()


def wait_http(url, proc, log_path, timeout=30, also=None):
    """Waits until `url` answers (and the file `also`, if named, exists); raises
    with the tail of `log_path` if `proc` exits first or time runs out."""
    deadline = time.time() + timeout
    tail = lambda: Path(log_path).read_text(errors="replace")[-3000:]  # noqa: E731
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:2]} exited {proc.returncode}: {tail()}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            if also is None or Path(also).exists():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up in {timeout}s: {tail()}")


def stop_process(proc, sig=signal.SIGTERM, timeout=15):
    """Sends `sig` to `proc` if it still runs and waits for it; SIGKILL after
    `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port():
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        if port in _PORTS_GIVEN:
            continue
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
            with socket.socket(family) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    break
        else:
            _PORTS_GIVEN.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def parse_env_file(path):
    """Reads `export K=V` / `K=V` lines (values optionally single/double quoted)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            v = m.group(2).strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            out[m.group(1)] = v
    return out


def scrape_metrics(url, data_dir, timeout=5):
    """GETs a `/_metrics` URL with the bearer token `euca up` wrote under `data_dir`."""
    token = (Path(data_dir) / "credentials" / "metrics-token").read_text().strip()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(req, timeout=timeout).read().decode()


def _awscli_data_dir(v1):
    """The botocore data directory (service models, waiters) of awscli v1 or v2."""
    if v1:
        import botocore
        return Path(botocore.__file__).parent / "data"
    with open(AWS_V2) as f:
        interpreter = f.readline().removeprefix("#!").split()
    r = subprocess.run([*interpreter, "-c", "import awscli.botocore as b; print(b.__file__)"],
                       capture_output=True, text=True, timeout=60)
    return Path(r.stdout.strip()).parent / "data" if r.returncode == 0 else None


# Seconds between two polls of an `aws ec2 wait` (the CLIs' own models say 15).
WAITER_DELAY = 1


@functools.cache
def fast_waiters(v1):
    """An AWS_DATA_PATH directory for awscli v1 or v2 that holds that client's own
    EC2 waiter models, the same acceptors and the same overall deadline, polling
    every WAITER_DELAY s instead of every 15 s: an `aws ec2 wait instance-running`
    still checks what the CLI checks, but answers within a second of the state
    change instead of up to 15 s later (most of an instance test's time went there).
    The directory is searched before the client's own data (botocore's loader).
    None when the client's models are not found (the waits are just slower)."""
    data = _awscli_data_dir(v1)
    models = sorted((data / "ec2").glob("*/waiters-2.json*")) if data else []
    if not models:
        import warnings
        warnings.warn(f"no EC2 waiter models for awscli {'v1' if v1 else 'v2'} under {data}: "
                      "aws ec2 wait polls every 15 s")
        return None
    out = Path(tempfile.mkdtemp(prefix="euca-aws-waiters-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    for src in models:
        raw = src.read_bytes()
        model = json.loads(gzip.decompress(raw) if src.suffix == ".gz" else raw)
        for w in model["waiters"].values():
            w["maxAttempts"] = -(-w["delay"] * w["maxAttempts"] // WAITER_DELAY)
            w["delay"] = WAITER_DELAY
        dst = out / "ec2" / src.parent.name / "waiters-2.json"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(json.dumps(model))
    return str(out)


class Cloud:
    """A running `euca up`: endpoint, admin credentials and client config paths."""

    def __init__(self, data_dir, port, extra_args=()):
        self.data = Path(data_dir)
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.extra_args = list(extra_args)
        self.sc_port = free_port()
        self.nbd_port = free_port()
        self.iscsi_port = free_port()
        self.cc_port = free_port()
        self.clc_port = free_port()
        self.nc_port = free_port()
        self.nc_url = f"http://127.0.0.1:{self.nc_port}"
        self.sc_url = f"http://127.0.0.1:{self.sc_port}"
        self.clc_url = f"http://127.0.0.1:{self.clc_port}"
        self.proc = None
        self.log_path = self.data.parent / f"euca-{port}.log"
        # Where Walrus keeps blob files (`blobs/` below it): its data directory
        # unless [walrus] blob_url says otherwise.
        self.blob_root = self.data / "walrus"

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [euca_bin(), "up", "--data", str(self.data),
             "--walrus-listen", f"127.0.0.1:{self.port}",
             "--sc-listen", f"127.0.0.1:{self.sc_port}",
             "--nbd-listen", f"127.0.0.1:{self.nbd_port}",
             "--iscsi-listen", f"127.0.0.1:{self.iscsi_port}",
             "--cc-listen", f"127.0.0.1:{self.cc_port}",
             "--clc-listen", f"127.0.0.1:{self.clc_port}",
             "--nc-listen", f"127.0.0.1:{self.nc_port}", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"euca up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(self.endpoint + "/_health", timeout=1).read()
                urllib.request.urlopen(self.sc_url + "/_health", timeout=1).read()
                if (self.data / "credentials" / "eucarc").exists():
                    self._load_creds()
                    return self
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"euca up not ready in {timeout}s:\n{self.log()}")

    def _load_creds(self):
        cred = self.data / "credentials"
        self.eucarc = parse_env_file(cred / "eucarc")
        self.access_key = self.eucarc["AWS_ACCESS_KEY_ID"]
        self.secret_key = self.eucarc["AWS_SECRET_ACCESS_KEY"]
        self.region = self.eucarc.get("AWS_DEFAULT_REGION", "us-east-1")
        self.s3cfg = cred / "s3cfg"
        self.rclone_conf = cred / "rclone.conf"
        self.aws_config = cred / "aws" / "config"
        self.aws_credentials = cred / "aws" / "credentials"

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def use_walrus_front_end(self, url, directory):
        """Points this cloud's S3 clients (boto3, raw HTTP, `eucarc`'s S3 URLs, and
        copies under `directory` of its client configs with the S3 endpoint replaced) at another
        Walrus front end on the same stores; EC2 endpoints in them, the CLC, the SC
        and `euca` commands stay on this cloud."""
        old = self.endpoint
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("s3cfg", "rclone_conf", "aws_config", "aws_credentials"):
            src = getattr(self, name)
            dst = directory / src.name if src.parent.name != "aws" else \
                directory / "aws" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_text()
            # s3cfg names the host without the scheme.
            text = text.replace(old, url).replace(old.split("//", 1)[1], url.split("//", 1)[1])
            dst.write_text(text)
            dst.chmod(0o600)
            setattr(self, name, dst)
        self.eucarc = {k: v.replace(old, url) for k, v in self.eucarc.items()}
        self.endpoint = url
        self.port = int(url.rsplit(":", 1)[1])

    # -- helpers ---------------------------------------------------------
    def euca(self, *args, check=True):
        """Runs an admin subcommand of the euca binary against this cloud."""
        r = subprocess.run([euca_bin(), *args, "--data", str(self.data)],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"euca {' '.join(args)} failed: {r.stderr}")
        return r

    def new_account(self, name):
        """Creates an account; returns dict with ACCOUNT_ID, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY."""
        r = self.euca("account", "create", name)
        return dict(re.findall(r"^([A-Z_]+)=(\S+)$", r.stdout, re.M))

    def boto3(self, service="s3", access_key=None, secret_key=None, **config_kw):
        import boto3
        from botocore.config import Config
        cfg = Config(s3={"addressing_style": config_kw.pop("addressing_style", "path")},
                     retries={"max_attempts": 1}, **config_kw)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, config=cfg)

    def ec2(self, access_key=None, secret_key=None, **config_kw):
        """A boto3 EC2 client on the cloud controller (no retries: a test sees the
        first answer)."""
        import boto3
        from botocore.config import Config
        cfg = Config(retries={"max_attempts": 1}, **config_kw)
        return boto3.client("ec2", endpoint_url=self.clc_url + "/", region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, config=cfg)

    def aws_ec2(self, *args, v1=False, env=None, check=True):
        """Runs `aws ec2 ARGS --output json` (v2: Debian's /usr/bin/aws, which needs
        --endpoint-url; v1: the PyPI awscli, as `python3 -m awscli`) with the admin's
        config and waiters that poll every second (`fast_waiters`); returns the
        CompletedProcess (stdout parsed by the caller)."""
        cmd = ([sys.executable, "-m", "awscli"] if v1 else [AWS_V2])
        cmd += ["--endpoint-url", self.clc_url + "/", "--output", "json", "ec2", *args]
        base = self.client_env()
        waiters = fast_waiters(v1)
        if waiters:
            base["AWS_DATA_PATH"] = waiters
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={**base, **(env or {})})
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
        return r

    def client_env(self):
        """Environment for CLI clients: AWS config files, no CA bundle override."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_CONFIG_FILE": str(self.aws_config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_credentials),
            "AWS_PROFILE": "euca",
        })
        return env


def set_cache_secs(services, positive, negative):
    """Sets how long the services started with `--identity services` cache
    credentials (the keys `cache_secs`, `negative_cache_secs` of services.toml)."""
    text = services.read_text()
    text = re.sub(r"(?m)^(cache_secs|negative_cache_secs) = .*\n", "", text)
    services.write_text(text + f"cache_secs = {positive}\nnegative_cache_secs = {negative}\n")


class SplitCloud(Cloud):
    """The same cloud as four processes sharing one data directory: `euca clc`
    (identity), `euca walrus --identity`, `euca sc --identity --s3-url` and `euca cc`.
    Chosen for every fixture by EUCA_LAYOUT=split. `proc` is Walrus's process."""

    def start(self, timeout=30):
        services = self.data / "credentials" / "services.toml"
        specs = [
            ("clc", ["clc", "--listen", f"127.0.0.1:{self.clc_port}",
                     "--s3-url", self.endpoint + "/", "--sc-url", self.sc_url + "/",
                     "--tracker-url", f"http://127.0.0.1:{self.cc_port}"],
             self.clc_url + "/_health"),
            ("walrus", ["walrus", "--listen", f"127.0.0.1:{self.port}", "--identity", str(services)],
             self.endpoint + "/_health"),
            ("sc", ["sc", "--listen", f"127.0.0.1:{self.sc_port}", "--nbd-listen",
                    f"127.0.0.1:{self.nbd_port}", "--iscsi-listen", f"127.0.0.1:{self.iscsi_port}",
                    "--identity", str(services), "--s3-url",
                    self.endpoint + "/"], self.sc_url + "/_health"),
            ("cc", ["cc", "--listen", f"127.0.0.1:{self.cc_port}"],
             f"http://127.0.0.1:{self.cc_port}/_health"),
        ]
        self.procs = []
        log = open(self.log_path, "ab")
        for name, args, health in specs:
            p = subprocess.Popen(
                [euca_bin(), *args, "--data", str(self.data), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
            )
            self.procs.append(p)
            if name == "walrus":
                self.proc = p
            deadline = time.time() + timeout
            while True:
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"euca {name} exited:\n{self.log()}")
                try:
                    urllib.request.urlopen(health, timeout=1).read()
                    if name != "clc" or services.exists():
                        if name == "clc":
                            # The whole suite expects a disabled key to stop at once:
                            # no credential cache here (test_split_layout tests it).
                            set_cache_secs(services, 0, 0)
                        break
                except Exception:
                    pass
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"euca {name} not ready in {timeout}s:\n{self.log()}")
                time.sleep(0.1)
        self._load_creds()
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        for p in reversed(getattr(self, "procs", [])):
            if p.poll() is None:
                p.send_signal(sig)
        for p in reversed(getattr(self, "procs", [])):
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        self.proc = None


def cloud_class():
    return SplitCloud if os.environ.get("EUCA_LAYOUT") == "split" else Cloud


def start_cloud(tmp_root, extra_args=()):
    data = Path(tmp_root) / "data"
    return cloud_class()(data, free_port(), extra_args).start()


# The tiny guest powers off on the ACPI power button once its acpid runs, but a
# guest stopped or terminated earlier in its boot ignores it and waits out the
# node's whole grace (5 s by default) before the node kills QEMU. The test nodes
# give it one second (the same path, powerdown then kill); test_instances_nc_restart's
# `euca up` keeps the default (it tests that stopping the cloud stops its guests).
GUEST_SHUTDOWN_SECS = 1


def with_short_guest_shutdown(nc_toml):
    """A node's TOML config (`nc_toml`, maybe with an [nc] table) with [nc]
    shutdown_timeout_secs = GUEST_SHUTDOWN_SECS."""
    line = f"shutdown_timeout_secs = {GUEST_SHUTDOWN_SECS}"
    out, n = re.subn(r"(?m)^\[nc\][ \t]*$", f"[nc]\n{line}", nc_toml, count=1)
    return out if n else f"{nc_toml}\n[nc]\n{line}\n"


class WalrusFrontEnd:
    """A running plain `euca walrus --config CONFIG --data DIR` (accounts and keys in
    its metadata database when CONFIG names one)."""

    def __init__(self, root, config):
        self.data = root / "walrus-b"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / f"walrus-b-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [euca_bin(), "walrus", "--config", str(config), "--data", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self):
        stop_process(self.proc)


def start_walrus_front_end(root, config):
    fe = WalrusFrontEnd(root, config)
    try:
        wait_http(fe.url + "/_health", fe.proc, fe.log_path,
                  also=fe.data / "credentials" / "s3cfg")
    except BaseException:
        fe.stop()
        raise
    return fe


@pytest.fixture(scope="session")
def cloud():
    """One shared cloud for tests that only need a running server."""
    tmp = tempfile.mkdtemp(prefix="euca-conf-")
    extra = []
    dns_port = None
    pg_server = blob_backend = None
    if cloud_class() is Cloud:  # the split layout runs no node
        # Its own port for the CLC's dynamic DNS (default 127.0.0.1:8753), which
        # the clouds of two test workers would otherwise both want.
        dns_port = free_port()
        cfg = Path(tmp) / "euca.toml"
        text = f'[clc]\ndns_listen = "127.0.0.1:{dns_port}"\n'
        if os.environ.get("EUCA_WALRUS_META") == "postgres":
            # Walrus's metadata and the CLC's records in a throwaway PostgreSQL,
            # Walrus's blobs in a directory of their own, or (EUCA_WALRUS_BLOBS=s3)
            # in a second S3 server: the scale-out engines under the same client tests.
            from helpers_pg import start_postgres
            pg_server = start_postgres()
            blobs = Path(tmp) / "shared-blobs"
            blob_url = f"file://{blobs}"
            if os.environ.get("EUCA_WALRUS_BLOBS") == "s3":
                from helpers_blobs import S3Backend
                try:
                    blob_backend = S3Backend(tmp).start()
                except BaseException:
                    pg_server.stop()
                    raise
                blob_url, blobs = blob_backend.blob_url("cloud"), None
            walrus = f'[walrus]\nmeta_url = "{pg_server.url}"\nblob_url = "{blob_url}"\n'
            text += f'meta_url = "{pg_server.url}"\n'      # [clc]: its records too
            text += walrus
            text += f'[sc]\nmeta_url = "{pg_server.url}"\n'  # the volume records
            (Path(tmp) / "walrus-b.toml").write_text(walrus)
        cfg.write_text(with_short_guest_shutdown(text))
        extra = ["--config", str(cfg)]
    try:
        c = start_cloud(tmp, extra)
    except BaseException:
        if pg_server is not None:
            pg_server.stop()
        if blob_backend is not None:
            blob_backend.stop()
        raise
    c.dns_port = dns_port
    c.pg_server = pg_server
    front_end_b = None
    try:
        if pg_server is not None:
            c.blob_root = blobs
            # Walrus and the CLC really are on PostgreSQL: they made their schemas there.
            assert int(pg_server.psql("SELECT count(*) FROM walrus_schema_migrations")) >= 1
            assert int(pg_server.psql("SELECT count(*) FROM clc_schema_migrations")) >= 1
            assert int(pg_server.psql("SELECT count(*) FROM sc_schema_migrations")) >= 1
        if blob_backend is not None:
            # And its blobs really go to the second S3 server.
            s3, before = c.boto3(), blob_backend.bytes_under("cloud")
            s3.create_bucket(Bucket="blob-store-check")
            s3.put_object(Bucket="blob-store-check", Key="k", Body=b"b" * (1 << 20))
            assert blob_backend.bytes_under("cloud") - before >= 1 << 20
            s3.delete_object(Bucket="blob-store-check", Key="k")
            s3.delete_bucket(Bucket="blob-store-check")
        if pg_server is not None and s3_front_end() == "b":
            # A second front end (a plain `euca walrus`) on the same database and blob
            # store serves this worker's S3 client tests, while the CLC, the SC and
            # image installs use the first: the buckets, objects and bundles the tests
            # make through one are used through the other.
            front_end_b = start_walrus_front_end(Path(tmp), Path(tmp) / "walrus-b.toml")
            a = c.boto3()
            a.create_bucket(Bucket="front-end-check")
            a.put_object(Bucket="front-end-check", Key="k", Body=b"written through A")
            c.use_walrus_front_end(front_end_b.url, Path(tmp) / "clients-b")
            b = c.boto3()
            assert b.get_object(Bucket="front-end-check", Key="k")["Body"].read() \
                == b"written through A"
            b.delete_object(Bucket="front-end-check", Key="k")
            b.delete_bucket(Bucket="front-end-check")
        yield c
    finally:
        if front_end_b is not None:
            front_end_b.stop()
        c.stop()
        if pg_server is not None:
            pg_server.stop()
        if blob_backend is not None:
            blob_backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def s3_front_end():
    """Which Walrus front end this worker's S3 clients use on the scale-out engines:
    EUCA_S3_FRONT_END if set, else the cloud's own ("a") on even xdist workers and a
    second one ("b") on odd workers and without xdist."""
    chosen = os.environ.get("EUCA_S3_FRONT_END")
    if chosen:
        return chosen
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return "a" if worker.startswith("gw") and int(worker[2:]) % 2 == 0 else "b"


@pytest.fixture(scope="session")
def guest_image(cloud, tmp_path_factory):
    """(emi, eki, eri) of the tiny guest on the shared cloud, registered once for
    every test that boots it there (helpers_ec2.register_guest_image)."""
    from helpers_ec2 import register_guest_image  # it imports this module
    return register_guest_image(cloud, tmp_path_factory.mktemp("guest"))


@pytest.fixture()
def fresh_cloud(tmp_path):
    """A private cloud for tests that kill or restart the server."""
    c = start_cloud(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture()
def s3(cloud):
    return cloud.boto3()


_bucket_n = [0]


@pytest.fixture()
def bucket(s3):
    """A new empty bucket, removed (with its objects) after the test."""
    _bucket_n[0] += 1
    name = f"t{os.getpid()}-{_bucket_n[0]}-{int(time.time() * 1000) % 100000}"
    s3.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=o["Key"])
        for u in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=name)
    except Exception:
        pass
