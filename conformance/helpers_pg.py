"""A throwaway PostgreSQL server for a test: its own cluster in a temporary
directory, on a free loopback port, trust authentication, removed when stopped.

    pg = start_postgres()      # or the module-scoped `pg` fixture
    pg.url                     # postgres://postgres@127.0.0.1:PORT/walrus
    pg.psql("select 1")
    pg.stop()

The server binaries are the newest /usr/lib/postgresql/*/bin (Debian's
`postgresql` package; scripts/install-test-deps.sh installs it), or $EUCA_PG_BIN.
initdb and postgres refuse to run as root: as root they run as the `postgres` user.
fsync stays on (tests SIGKILL the servers that use this database).
"""
import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port


def pg_bin_dir():
    """The directory of the newest PostgreSQL server binaries, or None."""
    env = os.environ.get("EUCA_PG_BIN")
    cands = [env] if env else glob.glob("/usr/lib/postgresql/*/bin")

    def version(d):
        m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", d + "/")
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)

    ok = [d for d in cands
          if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "psql"))]
    return max(ok, key=version) if ok else None


SKIP_REASON = ("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, postgres): "
               "run scripts/install-test-deps.sh")


def _server_user():
    """(uid, gid) to run initdb/postgres as: `postgres` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no `postgres` user to run the server as")
    return pw.pw_uid, pw.pw_gid


class Postgres:
    """A running throwaway server. `url` names database `dbname` as user postgres."""

    def __init__(self, dbname="walrus", port=None):
        self.bin = pg_bin_dir()
        if self.bin is None:
            raise RuntimeError(SKIP_REASON)
        self.dbname = dbname
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"postgres://postgres@{self.host}:{self.port}/{dbname}"
        self.owner = _server_user()
        # Under the system temp dir, not pytest's tmp_path (0700, root's): the
        # server user must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="euca-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.sock.mkdir()
        self.log_path = self.base / "postgres.log"
        if self.owner:
            for p in (self.base, self.sock):
                os.chown(p, *self.owner)
        self.proc = None
        atexit.register(self.stop)

    def _run_as(self):
        if not self.owner:
            return {}
        return {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C"})
        return env

    def start(self, timeout=60):
        r = subprocess.run(
            [f"{self.bin}/initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres",
             "--no-sync", "--no-locale", "-E", "UTF8"],
            cwd=self.base, env=self._env(), capture_output=True, text=True, timeout=120,
            **self._run_as())
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed ({r.returncode}): {r.stdout}{r.stderr}")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [f"{self.bin}/postgres", "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200"],
            cwd=self.base, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **self._run_as())
        log.close()
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                out = self.log()
                self.stop()
                raise RuntimeError(f"postgres exited with {self.proc_rc}:\n{out}")
            r = subprocess.run([f"{self.bin}/pg_isready", "-q", "-h", self.host, "-p", str(self.port),
                                "-U", "postgres", "-d", "postgres"], env=self._env(), timeout=30)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                out = self.log()
                self.stop()
                raise RuntimeError(f"postgres not ready in {timeout}s:\n{out}")
            time.sleep(0.1)
        self.create_database(self.dbname)
        return self

    def create_database(self, name):
        """Creates another database on this server; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"', db="postgres")
        return f"postgres://postgres@{self.host}:{self.port}/{name}"

    @property
    def proc_rc(self):
        return self.proc.returncode if self.proc else None

    def psql(self, sql, db=None):
        """Runs one SQL command with psql; returns its unaligned, tuples-only stdout."""
        r = subprocess.run(
            [f"{self.bin}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", db or self.dbname,
             "-c", sql],
            env=self._env(), capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def pids(self):
        """Pids of the processes running from this cluster's data directory (the
        postmaster and its children, found by their parent)."""
        if not self.proc:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if int(d.name) == self.proc.pid or ppid == self.proc.pid:
                out.append(int(d.name))
        return out

    def stop(self, timeout=15):
        """Immediate shutdown (SIGQUIT: no checkpoint), then removes the directory."""
        if self.proc and self.proc.poll() is None:
            children = [p for p in self.pids() if p != self.proc.pid]
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # Children exit with the postmaster; wait for them, then force.
            deadline = time.time() + timeout
            while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
                time.sleep(0.05)
            for p in children:
                try:
                    if Path(f"/proc/{p}/comm").read_text().strip() == "postgres":
                        os.kill(p, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        if self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def start_postgres(dbname="walrus"):
    return Postgres(dbname).start()


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL for the module; skips when no server binaries exist."""
    if pg_bin_dir() is None:
        pytest.skip(SKIP_REASON)
    p = start_postgres()
    try:
        yield p
    finally:
        p.stop()
