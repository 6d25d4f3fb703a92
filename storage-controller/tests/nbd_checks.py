#!/usr/bin/python3
"""libnbd-driven checks of the euca NBD server, run by tests/it/nbd_libnbd.rs.

Usage: /usr/bin/python3 nbd_checks.py CHECK ARGS...
Each check raises (non-zero exit) on failure and prints "ok CHECK" on success.
Must run under Debian's /usr/bin/python3 (python3-libnbd lives there).
"""

import errno
import socket
import sys

import nbd

MIB = 1 << 20


def connect(uri, meta=False, sr=True):
    h = nbd.NBD()
    h.set_request_structured_replies(sr)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


def expect_error(fn, want_errno, what):
    """fn() must fail with want_errno reported by the server (not by libnbd)."""
    try:
        fn()
    except nbd.Error as e:
        assert e.errnum == want_errno, "%s: errno %s (%s), want %s" % (
            what, e.errnum, e.string, errno.errorcode[want_errno])
        # Client-side refusals don't say "command failed".
        assert "command failed" in e.string or "server" in e.string, \
            "%s: not a server error: %s" % (what, e.string)
        return e
    raise AssertionError("%s: succeeded, expected %s" % (what, errno.errorcode[want_errno]))


def extents(h, offset, length, flags=0):
    out = []

    def cb(metacontext, off, entries, err):
        assert metacontext == nbd.CONTEXT_BASE_ALLOCATION, metacontext
        assert off == offset, (off, offset)
        for i in range(0, len(entries), 2):
            out.append((entries[i], entries[i + 1]))
        return 0

    h.block_status(length, offset, cb, flags)
    return out


def flags_at(ext, offset, pos):
    """Status flags of the extent covering pos (ext starts at offset)."""
    at = offset
    for length, flags in ext:
        if at <= pos < at + length:
            return flags
        at += length
    raise AssertionError("position %d not covered by %r" % (pos, ext))


def check_structured_read(uri):
    h = connect(uri)
    assert h.get_structured_replies_negotiated(), "structured replies not negotiated"
    assert h.can_df()
    data = bytes(range(256)) * 4096  # 1 MiB
    h.pwrite(data, 3 * MIB)
    assert h.pread(len(data), 3 * MIB) == data
    chunks = []

    def chunk(buf, off, status, err):
        chunks.append((off, len(buf), status))
        return 0

    got = h.pread_structured(65536, 3 * MIB + 4096, chunk, nbd.CMD_FLAG_DF)
    assert bytes(got) == data[4096:4096 + 65536]
    assert chunks == [(3 * MIB + 4096, 65536, nbd.READ_DATA)], chunks
    # An error on a structured read still leaves the connection usable.
    h.set_strict_mode(0)
    expect_error(lambda: h.pread(4096, h.get_size()), errno.EINVAL, "read past end")
    assert h.pread(16, 3 * MIB) == data[:16]
    h.shutdown()


def check_simple_replies(uri):
    h = connect(uri, sr=False)
    assert not h.get_structured_replies_negotiated()
    assert not h.can_df()
    data = b"\x5a" * 65536
    h.pwrite(data, MIB)
    assert h.pread(65536, MIB) == data
    h.set_strict_mode(0)
    expect_error(lambda: h.pread(4096, h.get_size() - 1024), errno.EINVAL, "simple read past end")
    expect_error(lambda: h.pwrite(b"x" * 4096, h.get_size() - 1024), errno.ENOSPC, "simple write past end")
    assert h.pread(65536, MIB) == data
    h.flush()
    h.shutdown()


def check_block_status(uri):
    h = connect(uri, meta=True)
    assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    size = h.get_size()
    ext = extents(h, 0, size)
    assert sum(l for l, _ in ext) == size, ext
    assert ext == [(size, nbd.STATE_HOLE | nbd.STATE_ZERO)], "fresh volume must be one hole: %r" % ext

    h.pwrite(b"\x01" * MIB, 0)
    h.pwrite(b"\x02" * MIB, 4 * MIB)
    ext = extents(h, 0, 8 * MIB)
    assert flags_at(ext, 0, 0) == 0
    assert flags_at(ext, 0, MIB - 1) == 0
    assert flags_at(ext, 0, 2 * MIB) == nbd.STATE_HOLE | nbd.STATE_ZERO
    assert flags_at(ext, 0, 4 * MIB) == 0
    assert flags_at(ext, 0, 6 * MIB) == nbd.STATE_HOLE | nbd.STATE_ZERO

    # Trim punches a hole.
    h.trim(MIB, 0)
    ext = extents(h, 0, 4 * MIB)
    assert flags_at(ext, 0, 0) == nbd.STATE_HOLE | nbd.STATE_ZERO, ext
    # Zero (holes allowed) punches too and reads back as zeroes.
    h.zero(MIB, 4 * MIB)
    ext = extents(h, 4 * MIB, MIB)
    assert ext == [(MIB, nbd.STATE_HOLE | nbd.STATE_ZERO)], ext
    assert h.pread(MIB, 4 * MIB) == bytes(MIB)

    # REQ_ONE: exactly one extent, within the request.
    h.pwrite(b"\x03" * 4096, 8 * MIB)
    one = extents(h, 8 * MIB, 2 * MIB, nbd.CMD_FLAG_REQ_ONE)
    assert len(one) == 1 and 0 < one[0][0] <= 2 * MIB and one[0][1] == 0, one
    one = extents(h, 8 * MIB + 4096, 2 * MIB, nbd.CMD_FLAG_REQ_ONE)
    assert len(one) == 1 and one[0][1] == nbd.STATE_HOLE | nbd.STATE_ZERO, one
    # Unaligned query ends exactly where asked.
    ext = extents(h, 8 * MIB + 100, 1000)
    assert sum(l for l, _ in ext) <= 1000 and ext[0][1] == 0, ext
    h.set_strict_mode(0)
    expect_error(lambda: extents(h, size - 512, 4096), errno.EINVAL, "block status past end")
    h.shutdown()


def check_zero_no_hole(uri):
    h = connect(uri, meta=True)
    assert h.can_zero() and h.can_fast_zero()
    h.pwrite(b"\xff" * MIB, 0)
    h.zero(MIB, 0, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(MIB, 0) == bytes(MIB)
    ext = extents(h, 0, MIB)
    assert all(f & nbd.STATE_HOLE == 0 for _, f in ext), "NO_HOLE zero left a hole: %r" % ext
    # NO_HOLE on a hole allocates it.
    h.zero(MIB, 4 * MIB, nbd.CMD_FLAG_NO_HOLE)
    ext = extents(h, 4 * MIB, MIB)
    assert all(f & nbd.STATE_HOLE == 0 for _, f in ext), ext
    assert h.pread(MIB, 4 * MIB) == bytes(MIB)
    # FAST_ZERO: cheap on a sparse file (hole punching), so it succeeds.
    h.pwrite(b"\xee" * MIB, 2 * MIB)
    h.zero(MIB, 2 * MIB, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(MIB, 2 * MIB) == bytes(MIB)
    h.pwrite(b"\xee" * 65536, 2 * MIB)
    try:
        h.zero(65536, 2 * MIB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    except nbd.Error as e:
        # ENOTSUP is the only acceptable failure for FAST_ZERO.
        assert e.errnum == errno.ENOTSUP, e
    else:
        assert h.pread(65536, 2 * MIB) == bytes(65536)
    h.shutdown()


def check_fua(uri):
    h = connect(uri)
    assert h.can_fua() and h.can_flush() and h.can_trim()
    data = b"fua!" * 16384
    h.pwrite(data, 0, nbd.CMD_FLAG_FUA)
    assert h.pread(len(data), 0) == data
    h.zero(65536, MIB, nbd.CMD_FLAG_FUA)
    h.trim(65536, 2 * MIB, nbd.CMD_FLAG_FUA)
    h.flush()
    # FUA is accepted on any command.
    h.set_strict_mode(0)
    assert h.pread(16, 0, nbd.CMD_FLAG_FUA) == data[:16]
    h.shutdown()


def check_multi_conn(uri):
    hs = [connect(uri) for _ in range(3)]
    assert all(h.can_multi_conn() for h in hs)
    data = b"multi-conn" * 6554
    hs[0].pwrite(data, 5 * MIB)
    hs[1].flush()
    assert hs[2].pread(len(data), 5 * MIB) == data
    for h in hs:
        h.shutdown()


def check_cache(uri):
    h = connect(uri)
    assert h.can_cache()
    h.cache(4 * MIB, 0)
    h.cache(MIB, h.get_size() - MIB)
    h.set_strict_mode(0)
    expect_error(lambda: h.cache(4096, h.get_size()), errno.EINVAL, "cache past end")
    h.shutdown()


def check_list(uri, expected, hidden):
    expected = set(expected.split(","))
    hidden = set(hidden.split(",")) if hidden else set()
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(uri)
    names = {}

    def cb(name, desc):
        names[name] = desc
        return 0

    h.opt_list(cb)
    assert set(names) == expected, "LIST gave %r, want %r" % (sorted(names), sorted(expected))
    assert not (set(names) & hidden)
    for n in names:
        assert names[n] == "test volume " + n, names
    # Hidden exports are refused exactly like nonexistent ones.
    for n in hidden:
        h.set_export_name(n)
        try:
            h.opt_info()
        except nbd.Error as e:
            assert e.errnum == errno.ENOENT, e  # NBD_REP_ERR_UNKNOWN
        else:
            raise AssertionError("INFO on hidden export %s succeeded" % n)
    h.opt_abort()


def check_info(uri):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_full_info(True)
    h.connect_uri(uri)
    h.opt_info()
    assert h.get_size() == 64 * MIB, h.get_size()
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 1
    assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
    assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MIB
    assert h.get_export_description().startswith("test volume"), h.get_export_description()
    assert h.get_canonical_export_name() == h.get_export_name()
    assert not h.is_read_only()
    h.opt_go()
    assert h.pread(512, 0) == bytes(512)
    h.shutdown()


def check_unknown_export(host_port, good):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri("nbd://%s/" % host_port)
    h.set_export_name("vol-does-not-exist")
    try:
        h.opt_go()
    except nbd.Error as e:
        assert e.errnum == errno.ENOENT, e  # NBD_REP_ERR_UNKNOWN
    else:
        raise AssertionError("GO to a nonexistent export succeeded")
    assert h.aio_is_negotiating(), "connection must stay in negotiation after ERR_UNKNOWN"
    h.set_export_name(good)
    h.opt_go()
    h.pwrite(b"retry", 0)
    assert h.pread(5, 0) == b"retry"
    h.shutdown()


def check_refused(uri):
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
    except nbd.Error as e:
        assert e.errnum == errno.ENOENT, e  # NBD_REP_ERR_UNKNOWN
    else:
        raise AssertionError("restricted export opened from the wrong address")


def check_allowed_from(src, host, port, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect((host, int(port)))
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_socket(s.detach())
    h.pwrite(b"from " + src.encode(), 0)
    assert h.pread(5 + len(src), 0) == b"from " + src.encode()
    h.shutdown()


def check_bounds(uri):
    h = connect(uri)
    h.set_strict_mode(0)
    size = h.get_size()
    expect_error(lambda: h.pread(4096, size), errno.EINVAL, "read at end")
    expect_error(lambda: h.pread(4096, size - 512), errno.EINVAL, "read across end")
    expect_error(lambda: h.pread(512, (1 << 64) - 256), errno.EINVAL, "read offset overflow")
    expect_error(lambda: h.pwrite(b"x" * 4096, size - 512), errno.ENOSPC, "write across end")
    expect_error(lambda: h.pwrite(b"x" * 512, (1 << 64) - 256), errno.ENOSPC, "write offset overflow")
    expect_error(lambda: h.zero(4096, size), errno.ENOSPC, "zero past end")
    expect_error(lambda: h.trim(4096, size), errno.EINVAL, "trim past end")
    # Still usable, nothing written at the end.
    assert h.pread(512, size - 512) == bytes(512)
    h.shutdown()


def check_oversized(uri):
    h = connect(uri)
    h.set_strict_mode(0)
    expect_error(lambda: h.pread(32 * MIB + 4096, 0), errno.EOVERFLOW, "oversized read")
    # Requests without payload may exceed the maximum payload.
    h.zero(48 * MIB, 0)
    h.trim(48 * MIB, 0)
    h.cache(48 * MIB, 0)
    assert h.pread(512, 0) == bytes(512)
    h.shutdown()


def check_read_only(uri):
    h = connect(uri)
    assert h.is_read_only()
    assert not h.can_trim() and not h.can_zero()
    h.set_strict_mode(0)
    expect_error(lambda: h.pwrite(b"x" * 512, 0), errno.EPERM, "write to read-only")
    expect_error(lambda: h.trim(512, 0), errno.EPERM, "trim on read-only")
    expect_error(lambda: h.zero(512, 0), errno.EPERM, "zero on read-only")
    assert h.pread(512, 0) == bytes(512)
    h.flush()
    h.shutdown()


CHECKS = {
    name[len("check_"):]: fn
    for name, fn in globals().items()
    if name.startswith("check_") and callable(fn)
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        sys.exit("usage: nbd_checks.py {%s} ARGS..." % ",".join(sorted(CHECKS)))
    CHECKS[sys.argv[1]](*sys.argv[2:])
    print("ok", sys.argv[1])
