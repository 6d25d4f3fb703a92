"""Sequence-stamped 4 KiB blocks, shared by the writers (run with /usr/bin/python3,
where python3-libnbd lives) and the checks in the test suite.

A block holds: magic, block index, sequence number, CRC-32 of those, then filler
derived from the sequence number. Write `seq` goes to block `block_of(seq)`.
"""
import struct
import zlib

BLOCK = 4096
MAGIC = b"EUCASTMP"


def block_of(seq, nblocks):
    return (seq * 7919) % nblocks


def stamp(index, seq):
    head = MAGIC + struct.pack(">QQ", index, seq)
    crc = zlib.crc32(head)
    filler = (struct.pack(">Q", seq) * (BLOCK // 8))[: BLOCK - len(head) - 4]
    return head + struct.pack(">I", crc) + filler


def parse(block, index):
    """Returns the block's sequence number, None for an all-zero block; raises
    ValueError for anything else (torn, misplaced or corrupt)."""
    if block == bytes(len(block)):
        return None
    head = block[:24]
    if head[:8] != MAGIC:
        raise ValueError(f"block {index}: no stamp")
    (crc,) = struct.unpack(">I", block[24:28])
    if zlib.crc32(head) != crc:
        raise ValueError(f"block {index}: bad crc")
    idx, seq = struct.unpack(">QQ", head[8:24])
    if idx != index:
        raise ValueError(f"block {index}: holds block {idx}'s stamp")
    if block != stamp(idx, seq):
        raise ValueError(f"block {index}: filler does not match seq {seq}")
    return seq


def expected_min(last_acked, nblocks):
    """For each block, the highest seq <= last_acked written to it (or None)."""
    out = [None] * nblocks
    for s in range(last_acked + 1):
        out[block_of(s, nblocks)] = s
    return out
