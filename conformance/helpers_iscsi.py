"""A sequence-stamped writer over iSCSI for the volume tests: QEMU's libiscsi
driver (`qemu-io` reading commands from a pipe), one write in flight at a time.

Write `seq` puts `stamp(block_of(seq), seq)` (conformance/nbd/stamp.py) at its
block; every `sync_every` writes it sends `flush` (SYNCHRONIZE CACHE). Commands
run quiet; qemu-io's next prompt says the command finished.
`acked` is the last write acknowledged, `synced` the last write covered by an
acknowledged flush, `issued` the last write sent."""
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbd"))
from stamp import BLOCK, block_of, stamp  # noqa: E402

PROMPT = b"qemu-io> "


class IscsiWriter:
    def __init__(self, uri, nblocks, sync_every=0):
        self.uri, self.nblocks, self.sync_every = uri, nblocks, sync_every
        self.issued = self.acked = self.synced = -1
        self.error = None
        self._stop = threading.Event()
        self._dir = tempfile.TemporaryDirectory(prefix="iscsi-writer-")
        self._p = subprocess.Popen(["qemu-io", "-f", "raw", uri], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _answer(self):
        """Reads up to qemu-io's next prompt, which it prints once the command
        before it finished; returns what came before the prompt. (qemu-io takes
        one command per read of its input, so commands go one at a time.)"""
        buf = b""
        while not buf.endswith(PROMPT):
            chunk = os.read(self._p.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"qemu-io ended: {buf.decode(errors='replace')}")
            buf += chunk
        return buf[: -len(PROMPT)].decode(errors="replace")

    def _do(self, cmd):
        """Runs one quiet command; any output but QEMU's warning that a password
        in the URI is deprecated (the URI is the form libiscsi's tools take too)
        is its failure."""
        self._p.stdin.write(cmd.encode() + b"\n")
        self._p.stdin.flush()
        out = [l for l in self._answer().splitlines() if l.strip() and "warning:" not in l]
        if out:
            raise RuntimeError(f"{cmd!r}: {' '.join(out)}")

    def _run(self):
        src = Path(self._dir.name) / "block"
        seq = 0
        try:
            self._answer()  # the first prompt: the device is open
            while not self._stop.is_set():
                b = block_of(seq, self.nblocks)
                src.write_bytes(stamp(b, seq))
                self.issued = seq
                self._do(f"write -q -s {src} {b * BLOCK} {BLOCK}")
                self.acked = seq
                if self.sync_every and (seq + 1) % self.sync_every == 0:
                    self._do("flush")
                    self.synced = seq
                seq += 1
        except (RuntimeError, OSError, ValueError) as e:
            self.error = str(e)

    def stop(self, kill=False):
        """Stops after the write in flight (or at once with `kill`) and returns
        the last write acknowledged."""
        self._stop.set()
        if kill:
            self._p.kill()
        else:
            self._t.join(timeout=60)
            try:
                self._p.stdin.close()
            except OSError:
                pass
        try:
            self._p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._p.kill()
            self._p.wait()
        self._t.join(timeout=30)
        self._dir.cleanup()
        return self.acked


def read_image(uri, out):
    """The whole device at `uri` into file `out` (qemu-img over libiscsi)."""
    r = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return Path(out).read_bytes()

