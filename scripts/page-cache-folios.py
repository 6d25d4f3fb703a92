#!/usr/bin/python3
"""How much of each file is in the page cache, and in folios of which sizes.

    scripts/page-cache-folios.py FILE...        (root: reads /proc/kpageflags)

Prints one line per file: resident MiB, then the share of the resident bytes held
in folios of each size (shares under 0.5 % left out). The benchmarks use it to show
that every server's file starts a pass in the same state: on ext4 with large folios
(Linux 6.16+), a 4 KiB write into a cached 2 MiB folio walks all 512 of its buffer
heads, so the same server does 4 KiB random writes ~2-4x slower on a file that a
sequential read left in 2 MiB folios than on one left in 4 KiB folios
(BENCHMARKS.md, 2026-12-07).

How: mmap the file read-only, ask mincore(2) which pages are resident, touch only
those (no I/O), and read each one's frame from /proc/self/pagemap and its flags from
/proc/kpageflags; a folio is a head frame and the compound-tail frames after it.
"""
import collections
import ctypes
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
KPF_COMPOUND_TAIL = 1 << 16
PM_PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def folios(path):
    """(resident pages, Counter of folio size in pages -> count)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, collections.Counter()
        pages = (size + PAGE - 1) // PAGE
        base = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(base, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            resident = [i for i in range(pages) if vec[i] & 1]
            for i in resident:
                ctypes.c_char.from_address(base + i * PAGE).value  # map it: no I/O
            hist, run = collections.Counter(), 0
            with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
                for i in resident:
                    pm.seek((base // PAGE + i) * 8)
                    (entry,) = struct.unpack("<Q", pm.read(8))
                    if not entry & PM_PRESENT:
                        continue
                    kf.seek((entry & PFN_MASK) * 8)
                    (flags,) = struct.unpack("<Q", kf.read(8))
                    if flags & KPF_COMPOUND_TAIL and run:
                        run += 1
                        continue
                    if run:
                        hist[run] += 1
                    run = 1
            if run:
                hist[run] += 1
            return len(resident), hist
        finally:
            libc.munmap(base, size)
    finally:
        os.close(fd)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    for path in sys.argv[1:]:
        resident, hist = folios(path)
        total = sum(k * v for k, v in hist.items()) or 1
        shares = " ".join(f"{k * PAGE >> 10}K:{100 * k * v / total:.0f}%"
                          for k, v in sorted(hist.items()) if 100 * k * v / total >= 0.5)
        print(f"{path}: {resident * PAGE >> 20} MiB resident; folios {shares or '-'}")


if __name__ == "__main__":
    main()
