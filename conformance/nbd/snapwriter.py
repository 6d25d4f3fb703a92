"""Writes sequence-stamped blocks while a snapshot is taken from another thread.

usage: /usr/bin/python3 snapwriter.py URI NBLOCKS -- SNAPSHOT-COMMAND...
Prints one JSON line: {"acked_before": A, "issued_after": I, "last": L, "stdout": ...}
where A is the last write acknowledged before the snapshot command started and
I the last write issued before it returned: the snapshot must hold every write
<= A and none > I.
"""
import json
import os
import subprocess
import sys
import threading
import time

import nbd

sys.path.insert(0, os.path.dirname(__file__))
from stamp import BLOCK, block_of, stamp  # noqa: E402

uri, nblocks = sys.argv[1], int(sys.argv[2])
cmd = sys.argv[sys.argv.index("--") + 1:]
h = nbd.NBD()
h.connect_uri(uri)
state = {"issued": -1, "acked": -1}
stop = threading.Event()
result = {}


def snap():
    time.sleep(0.5)
    result["acked_before"] = state["acked"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    result["issued_after"] = state["issued"]
    result["rc"] = r.returncode
    result["stdout"] = r.stdout
    result["stderr"] = r.stderr
    time.sleep(0.5)
    stop.set()


t = threading.Thread(target=snap)
t.start()
seq = 0
while not stop.is_set():
    b = block_of(seq, nblocks)
    state["issued"] = seq
    h.pwrite(stamp(b, seq), b * BLOCK)
    state["acked"] = seq
    seq += 1
t.join()
h.flush()
result["last"] = seq - 1
print(json.dumps(result), flush=True)
