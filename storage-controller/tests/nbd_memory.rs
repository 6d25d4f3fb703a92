//! The NBD server's memory is bounded server-wide, not only per connection:
//! many connections pipelining the largest READs (then WRITEs) make the server
//! hold at most its memory budget (256 MiB by default) in payloads, and every
//! reply still arrives, with the right bytes.
//!
//! This file holds one test on purpose: the server runs in this process, and the
//! test reads the process's peak resident set (`VmHWM`), which other tests
//! running at the same time would disturb.

mod nbd_common;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use euca_sc::device::{BlockDevice, Extent, FileDevice};
use nbd_common::*;

const MIB: u64 = 1 << 20;
/// The largest request NBD clients send (and this server accepts).
const REQ: u32 = 32 << 20;
const CONNECTIONS: usize = 16;
/// READs each connection sends before reading any reply.
const PIPELINED: usize = 4;
const FILE_SIZE: u64 = 64 * MIB;
/// The server's default budget, plus what is not reply data: runtime and thread
/// stacks, per-connection buffers, the clients' 256 KiB read buffers.
const DEFAULT_BUDGET: u64 = 256 * MIB;
const SLACK: u64 = 128 * MIB;

/// The volume, with WRITEs held at a gate until the test opens it, so that
/// payloads pile up in the server as far as it lets them.
struct Gated {
    inner: FileDevice,
    waiting: AtomicU64,
    /// Closed = open gate.
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl BlockDevice for Gated {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn multi_conn_safe(&self) -> bool {
        self.inner.multi_conn_safe()
    }
    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.inner.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.write(offset, data, fua).await
    }
    async fn flush(&self) -> io::Result<()> {
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.trim(offset, len).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64, punch: bool, fua: bool) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, punch, fua).await
    }
    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.extents(offset, len).await
    }
}

/// Opens the gate once the WRITEs waiting at it have stopped growing for a
/// second (every payload the server was willing to take has arrived).
fn open_gate_when_settled(dev: &Gated) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        let n = dev.waiting.load(Ordering::SeqCst);
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{} WRITEs were waiting at the gate", last.0);
    dev.gate.close();
}

/// The byte at `offset` of the test volume.
fn byte_at(offset: u64) -> u8 {
    let x = (offset / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> (8 * (offset % 8))) as u8
}

fn fill(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_at(offset + i as u64);
    }
}

/// `VmHWM` (peak resident set) of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// Resets `VmHWM` to the current resident set (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .expect("open /proc/self/clear_refs");
    f.write_all(b"5").expect("reset VmHWM");
}

/// One client: opens the export, sends all its READs at once, then reads the
/// replies (in whatever order they come) through a small buffer, checking every
/// byte. Returns the number of replies checked.
fn client(server_addr: std::net::SocketAddr, id: usize) -> usize {
    let mut raw = open_export(connect(server_addr), "vol");
    raw.s
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let offsets: Vec<u64> = (0..PIPELINED)
        .map(|i| ((id + i) % 2) as u64 * u64::from(REQ))
        .collect();
    for (i, off) in offsets.iter().enumerate() {
        raw.request(0, CMD_READ, i as u64, *off, REQ, &[]);
    }
    let mut seen = [false; PIPELINED];
    let mut buf = vec![0u8; 256 << 10];
    let mut want = vec![0u8; 256 << 10];
    for _ in 0..PIPELINED {
        let (err, cookie) = raw.simple_reply();
        assert_eq!(err, 0, "connection {id}: READ {cookie} failed");
        let i = usize::try_from(cookie).expect("cookie");
        assert!(
            i < PIPELINED && !seen[i],
            "connection {id}: unexpected cookie {cookie}"
        );
        seen[i] = true;
        let mut pos = offsets[i];
        let end = pos + u64::from(REQ);
        while pos < end {
            let n = buf.len().min((end - pos) as usize);
            raw.s.read_exact(&mut buf[..n]).expect("read reply data");
            fill(&mut want[..n], pos);
            assert!(
                buf[..n] == want[..n],
                "connection {id}: wrong data at offset {pos}"
            );
            pos += n as u64;
        }
    }
    seen.iter().filter(|s| **s).count()
}

#[test]
fn pipelined_large_requests_on_many_connections_stay_within_the_server_budget() {
    let server = TestServer::start();
    let path = server.path("vol");
    {
        let mut f = std::fs::File::create(&path).expect("create volume file");
        let mut piece = vec![0u8; MIB as usize];
        for i in 0..FILE_SIZE / MIB {
            fill(&mut piece, i * MIB);
            f.write_all(&piece).expect("write volume file");
        }
        f.sync_all().expect("sync volume file");
    }
    let dev = Arc::new(Gated {
        inner: FileDevice::open(&path).expect("open volume"),
        waiting: AtomicU64::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    server.add_device("vol", dev.clone(), None, false);
    // Warm up: one connection, one read, so the runtime, the blocking pool and
    // the page cache are set up before the baseline is taken.
    assert_eq!(
        std::thread::scope(|s| s.spawn(|| client_one(server.addr)).join().unwrap()),
        1
    );

    reset_peak_rss();
    let base = peak_rss();
    let replies: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|id| {
                let addr = server.addr;
                s.spawn(move || client(addr, id))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let grown = peak_rss().saturating_sub(base);
    eprintln!("peak RSS grew by {} MiB", grown / MIB);
    assert_eq!(replies, CONNECTIONS * PIPELINED, "every READ got its reply");
    assert!(
        grown < DEFAULT_BUDGET + SLACK,
        "peak RSS grew by {} MiB with {CONNECTIONS} connections x {PIPELINED} pipelined \
         32 MiB READs; the server budget is {} MiB (+{} MiB slack)",
        grown / MIB,
        DEFAULT_BUDGET / MIB,
        SLACK / MIB
    );

    reset_peak_rss();
    let base = peak_rss();
    let replies: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|id| {
                let addr = server.addr;
                s.spawn(move || writer(addr, id))
            })
            .collect();
        open_gate_when_settled(&dev);
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let grown = peak_rss().saturating_sub(base);
    eprintln!("peak RSS grew by {} MiB (writes)", grown / MIB);
    assert_eq!(
        replies,
        CONNECTIONS * PIPELINED,
        "every WRITE got its reply"
    );
    assert!(
        grown < DEFAULT_BUDGET + SLACK,
        "peak RSS grew by {} MiB with {CONNECTIONS} connections x {PIPELINED} pipelined \
         32 MiB WRITEs; the server budget is {} MiB (+{} MiB slack)",
        grown / MIB,
        DEFAULT_BUDGET / MIB,
        SLACK / MIB
    );
    // The writes landed: the volume still holds the pattern.
    assert_eq!(client(server.addr, 1), PIPELINED);
    server.stop();
}

/// One client sending all its WRITEs (the test pattern again, so the volume's
/// content does not change) before reading any reply; the payload is produced
/// in small pieces so that only the server holds whole requests.
fn writer(server_addr: std::net::SocketAddr, id: usize) -> usize {
    let mut raw = open_export(connect(server_addr), "vol");
    raw.s
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut piece = vec![0u8; 256 << 10];
    for i in 0..PIPELINED {
        let mut pos = ((id + i) % 2) as u64 * u64::from(REQ);
        raw.request(0, CMD_WRITE, i as u64, pos, REQ, &[]);
        let end = pos + u64::from(REQ);
        while pos < end {
            fill(&mut piece, pos);
            raw.s.write_all(&piece).expect("send WRITE payload");
            pos += piece.len() as u64;
        }
    }
    let mut seen = [false; PIPELINED];
    for _ in 0..PIPELINED {
        let (err, cookie) = raw.simple_reply();
        assert_eq!(err, 0, "connection {id}: WRITE {cookie} failed");
        let i = usize::try_from(cookie).expect("cookie");
        assert!(
            i < PIPELINED && !seen[i],
            "connection {id}: unexpected cookie {cookie}"
        );
        seen[i] = true;
    }
    PIPELINED
}

/// One READ of the largest size on one connection, checked.
fn client_one(addr: std::net::SocketAddr) -> usize {
    let mut raw = open_export(connect(addr), "vol");
    let data = raw.read_at(7, 0, REQ);
    let mut want = vec![0u8; REQ as usize];
    fill(&mut want, 0);
    assert!(data == want, "warm-up READ returned wrong data");
    1
}
