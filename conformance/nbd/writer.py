"""Durability writer (N-03 / N-04): writes sequence-stamped blocks to an NBD URI
until the connection dies, reporting what was acknowledged as durable.

usage: /usr/bin/python3 writer.py URI NBLOCKS MODE OUT
  MODE flush: FLUSH every 8 writes; after each acknowledged FLUSH, append "D seq".
  MODE fua:   every write with FUA; after each acknowledged write, append "D seq".
OUT is appended to and flushed line by line ("D seq" = every write with a
sequence number <= seq is durable). Prints "READY" once connected.
"""
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(__file__))
from stamp import BLOCK, block_of, stamp  # noqa: E402

uri, nblocks, mode, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
h = nbd.NBD()
h.connect_uri(uri)
print("READY", flush=True)
log = open(out, "a", buffering=1)
seq = 0
try:
    while True:
        b = block_of(seq, nblocks)
        if mode == "fua":
            h.pwrite(stamp(b, seq), b * BLOCK, nbd.CMD_FLAG_FUA)
            log.write(f"D {seq}\n")
        else:
            h.pwrite(stamp(b, seq), b * BLOCK)
            if seq % 8 == 7:
                h.flush()
                log.write(f"D {seq}\n")
        seq += 1
except nbd.Error:
    pass
