"""The NBD server's memory is bounded for the whole server: 16 connections to
`euca up`, each pipelining four 32 MiB READs before reading any reply, keep the
process's resident set within the default budget (256 MiB) plus slack, and
every reply carries the right bytes."""
import socket
import struct
import threading
import time

from test_volumes import SYS_PY, attach, create, run, vol

MIB = 1 << 20
REQ = 32 * MIB
CONNECTIONS = 16
PIPELINED = 4
BUDGET = 256 * MIB
SLACK = 128 * MIB


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def recv_exact(s, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        assert k, "server closed the connection"
        got += k
    return bytes(buf)


def open_export(port, name):
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    assert recv_exact(s, 18)[:16] == b"NBDMAGICIHAVEOPT"
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    payload = struct.pack(">I", len(name)) + name.encode() + struct.pack(">H", 0)
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(payload)) + payload)  # NBD_OPT_GO
    while True:
        _magic, _opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, length)
        if rtype == 1:  # ACK
            return s
        assert rtype & 0x80000000 == 0, f"GO refused: {rtype:#x}"


def client(port, name, expected, errors, i):
    try:
        s = open_export(port, name)
        offsets = [((i + k) % 2) * REQ for k in range(PIPELINED)]
        for k, off in enumerate(offsets):
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, k, off, REQ))
        seen = set()
        piece = 1 << 20
        for _ in range(PIPELINED):
            magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
            assert magic == 0x67446698 and err == 0 and cookie not in seen, (magic, err, cookie)
            seen.add(cookie)
            want = expected[offsets[cookie] // REQ]
            for p in range(0, REQ, piece):
                if recv_exact(s, piece) != want[p:p + piece]:
                    raise AssertionError(f"connection {i}: wrong data in reply {cookie} at {p}")
        s.close()
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(f"connection {i}: {e!r}")


def test_pipelined_32mib_reads_on_16_connections_stay_within_the_budget(fresh_cloud):
    cloud = fresh_cloud
    vid = create(cloud, 1)
    uri = attach(cloud, vid)
    name = uri.rsplit("/", 1)[1]
    expected = [bytes([(7 * k + j) % 251 for j in range(256)]) * (REQ // 256) for k in (1, 2)]
    r = run(SYS_PY, "-c", "import nbd,sys\n"
            "h=nbd.NBD(); h.connect_uri(sys.argv[1]); n=int(sys.argv[2])\n"
            "for k in (1, 2):\n"
            "    h.pwrite(bytes([(7*k+j) % 251 for j in range(256)]) * (n // 256), (k-1) * n)\n"
            "h.flush()", uri, REQ, timeout=300)
    assert r.returncode == 0, r.stderr

    pid = cloud.proc.pid
    time.sleep(0.5)
    base = rss(pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors = []
    threads = [threading.Thread(target=client, args=(cloud.nbd_port, name, expected, errors, i))
               for i in range(CONNECTIONS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        done.set()
        sampler.join()
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert errors == [], errors
    grown = peak[0] - base
    print(f"euca RSS grew by {grown // MIB} MiB")
    assert grown < BUDGET + SLACK, \
        f"euca's RSS grew by {grown // MIB} MiB (budget {BUDGET // MIB} MiB + {SLACK // MIB} MiB slack)"
    vol(cloud, "detach", vid)
    vol(cloud, "delete", vid)
