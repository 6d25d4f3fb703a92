//! Bursts: a run of WRITEs received and written, or of READs read and answered,
//! on one blocking-pool thread. Write bursts first; read bursts ([`run_reads`])
//! take the same socket hand-over.
//!
//! A sequential writer (nbdcopy, `qemu-img convert`) sends WRITE after WRITE. The
//! async path receives each payload on a runtime thread and has it copied into the
//! page cache on a blocking-pool thread (ext4 has no non-blocking buffered writes),
//! so both copies touch a payload that is in another core's cache. Here, once such a
//! WRITE arrives on a plain socket, one blocking-pool thread takes the socket's
//! reading side for as long as WRITEs keep coming: it receives each payload into one
//! buffer it keeps and copies it into the page cache at once, on the same core
//! (what a thread-per-connection server such as nbdkit does). Its replies go
//! straight onto the socket, together, each time it is about to wait for the client
//! (and when it ends) — unless the reply writer is sending at that moment, in which
//! case they are queued for it: waking the runtime's writer task for every run of
//! replies cost as much as the copies saved. It hands the connection back to the async reader at the first request that is not
//! such a WRITE, when the next header is not already there, after
//! [`MAX_BURST_BYTES`], when the payload is slow to come ([`PAYLOAD_WAIT`]), or when
//! the device cannot write without awaiting (a snapshot cut is being taken).
//!
//! What a client can hold this way is bounded: bursts (of either kind) run only
//! while a server-wide permit is free ([`super::shared::MAX_BURSTS`]); each holds
//! one buffer of at most 1 MiB and waits for a payload at most [`PAYLOAD_WAIT`] (a
//! header at most [`NEXT_WAIT`]) before giving its thread back; a read burst's
//! replies wait for room on the socket at most the reply timeout, as the reply
//! writer's do.
//!
//! The async reader is parked on the burst meanwhile, so only one side reads the
//! socket at a time; the reply writer keeps the sending side. The burst holds a
//! share of the reading side's descriptor, so a burst that outlives its
//! connection's task (aborted at shutdown) never touches a reused descriptor
//! number. The runtime stops watching the socket for bytes while a burst runs
//! ([`super::socket`]), or every segment arriving would wake its event loop.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::proto::{Request, REQUEST_HEADER_LEN};
use super::socket::{recv_raw, send_vectored};
use euca_durable::buffers;

/// A burst gives its thread back after this many payload bytes (the async reader
/// then starts another if the WRITEs go on).
const MAX_BURST_BYTES: usize = 64 << 20;
/// Longest a burst waits for the next request after applying a WRITE.
const NEXT_WAIT: Duration = Duration::from_millis(2);
/// Longest a burst waits for the rest of a payload before handing it to the async
/// reader, which waits without holding a thread.
const PAYLOAD_WAIT: Duration = Duration::from_millis(50);

/// How a burst ended, for the async reader to go on from.
pub(super) enum BurstEnd {
    /// The next request's header: `.1` bytes of it have been read (0 to all 28).
    Header([u8; REQUEST_HEADER_LEN], usize),
    /// A WRITE the burst did not apply: its payload so far (possibly whole).
    Write(Request, Vec<u8>),
    /// The client closed the connection (a payload cut short is not applied).
    Eof,
    /// The export, the server or the reply writer is stopping.
    Stopped,
    Failed(io::Error),
}

/// What a burst needs from its connection.
pub(super) trait BurstSink {
    /// Whether `req` is a WRITE that a burst may take (validated; no FUA; small
    /// enough for the burst's buffer). Anything else ends the burst.
    fn takes(&self, req: &Request) -> bool;
    /// Writes the payload on this thread; `None` if the device cannot now.
    fn write_here(&self, req: &Request, data: &[u8]) -> Option<io::Result<()>>;
    /// Sends (or queues for the reply writer) the replies to applied WRITEs.
    /// `Err`: the socket failed.
    fn reply(&self, done: &mut Vec<(Request, io::Result<()>)>) -> io::Result<()>;
}

/// Runs a burst from `first`, whose payload starts with `pre` (what the async
/// reader's buffer held of it; nothing beyond it). `room`: the largest payload
/// [`BurstSink::takes`] accepts.
pub(super) fn run(
    fd: RawFd,
    sink: &dyn BurstSink,
    first: Request,
    pre: &[u8],
    room: usize,
    stops: &[watch::Receiver<bool>],
) -> BurstEnd {
    // One pooled buffer for the whole burst: each payload lands where the last one
    // was, in memory this core has just touched.
    let mut buf = buffers::take(room.max(first.len as usize));
    buf.extend_from_slice(pre);
    // Replies of applied WRITEs, sent before the burst waits and when it ends.
    let mut done = Vec::new();
    let end = burst(fd, sink, first, &mut buf, &mut done, stops);
    let replied = sink.reply(&mut done);
    if buf.capacity() > 0 {
        drop(buffers::freeze(buf));
    }
    match replied {
        Err(e) if !matches!(end, BurstEnd::Eof | BurstEnd::Stopped) => BurstEnd::Failed(e),
        _ => end,
    }
}

fn burst(
    fd: RawFd,
    sink: &dyn BurstSink,
    first: Request,
    buf: &mut Vec<u8>,
    done: &mut Vec<(Request, io::Result<()>)>,
    stops: &[watch::Receiver<bool>],
) -> BurstEnd {
    let stopping = || stops.iter().any(|s| *s.borrow());
    let mut low = LowWater { fd, at: 1 };
    let mut req = first;
    let mut total = 0usize;
    loop {
        let len = req.len as usize;
        // (A no-op: `takes` bounds every length by the buffer's room.)
        buf.reserve(len.saturating_sub(buf.len()));
        let deadline = Instant::now() + PAYLOAD_WAIT;
        while buf.len() < len {
            match recv(fd, buf, len) {
                Ok(0) => return BurstEnd::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stopping() {
                        return BurstEnd::Stopped;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return BurstEnd::Write(req, std::mem::take(buf));
                    }
                    low.set(len - buf.len());
                    if let Err(e) = sink.reply(done).and_then(|()| wait_readable(fd, left)) {
                        return BurstEnd::Failed(e);
                    }
                }
                Err(e) => return BurstEnd::Failed(e),
            }
        }
        match sink.write_here(&req, buf) {
            None => return BurstEnd::Write(req, std::mem::take(buf)),
            Some(result) => done.push((req, result)),
        }
        buf.clear();
        total += len;
        if total >= MAX_BURST_BYTES || stopping() {
            return BurstEnd::Header([0; REQUEST_HEADER_LEN], 0);
        }
        let hdr = match next_header(fd, &mut low, &stopping, || sink.reply(done)) {
            Ok(hdr) => hdr,
            Err(end) => return end,
        };
        match Request::decode(&hdr) {
            Ok(next) if sink.takes(&next) => req = next,
            _ => return BurstEnd::Header(hdr, REQUEST_HEADER_LEN),
        }
    }
}

/// The next request header, if it comes within [`NEXT_WAIT`]; `before_wait` runs
/// each time it is about to wait. `Err`: how the burst ends.
fn next_header(
    fd: RawFd,
    low: &mut LowWater,
    stopping: &dyn Fn() -> bool,
    mut before_wait: impl FnMut() -> io::Result<()>,
) -> Result<[u8; REQUEST_HEADER_LEN], BurstEnd> {
    let mut hdr = [0u8; REQUEST_HEADER_LEN];
    let mut have = 0;
    let deadline = Instant::now() + NEXT_WAIT;
    while have < REQUEST_HEADER_LEN {
        match recv_slice(fd, &mut hdr[have..]) {
            Ok(0) => return Err(BurstEnd::Eof),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || stopping() {
                    return Err(BurstEnd::Header(hdr, have));
                }
                low.set(REQUEST_HEADER_LEN - have);
                if let Err(e) = before_wait().and_then(|()| wait_readable(fd, left)) {
                    return Err(BurstEnd::Failed(e));
                }
            }
            Err(e) => return Err(BurstEnd::Failed(e)),
        }
    }
    Ok(hdr)
}

/// What a read burst needs from its connection.
pub(super) trait ReadSink {
    /// Whether `req` is a READ that a read burst may take (validated; at least
    /// [`READ_BURST_MIN`] bytes, at most the burst's buffer).
    fn takes_read(&self, req: &Request) -> bool;
    /// [`BlockDevice::read_here`](crate::device::BlockDevice::read_here) of `req`.
    fn read_here(&self, req: &Request, buf: &mut Vec<u8>, wait: bool) -> Option<io::Result<()>>;
    /// Puts the reply to `req` (its data, or the error) on the socket, waiting for
    /// room and for the reply writer to finish a frame it is sending. `Err`: the
    /// socket failed.
    fn send_read(&self, req: &Request, data: io::Result<&[u8]>) -> io::Result<()>;
}

/// READs of at least this size may run as a read burst; smaller ones (random
/// reads) are cheaper on the async path, which reads many headers at once.
pub(super) const READ_BURST_MIN: u32 = 64 << 10;

/// Runs a read burst from `first`, a READ that follows the connection's last READ
/// in the volume: each READ read and answered on this thread in turn, the thread
/// waiting for the disk when a READ goes on from where the last one ended (the
/// kernel's read-ahead keeps the disk busy: out of order on the blocking pool the
/// same stream read cold at two thirds of nbdkit's rate), and the socket taking
/// the reply straight from the buffer just read into. Any other request, or a
/// READ elsewhere that is not in the page cache, goes back to the async reader
/// (which runs such READs concurrently on the blocking pool). `room`: the
/// largest READ [`ReadSink::takes_read`] accepts.
pub(super) fn run_reads(
    fd: RawFd,
    sink: &dyn ReadSink,
    first: Request,
    room: usize,
    stops: &[watch::Receiver<bool>],
) -> BurstEnd {
    let mut buf = buffers::take(room.max(first.len as usize));
    let end = read_burst(fd, sink, first, &mut buf, stops);
    if buf.capacity() > 0 {
        drop(buffers::freeze(buf));
    }
    end
}

fn read_burst(
    fd: RawFd,
    sink: &dyn ReadSink,
    first: Request,
    buf: &mut Vec<u8>,
    stops: &[watch::Receiver<bool>],
) -> BurstEnd {
    let stopping = || stops.iter().any(|s| *s.borrow());
    let mut low = LowWater { fd, at: 1 };
    let (mut req, mut wait) = (first, true);
    let mut total = 0usize;
    loop {
        let len = req.len as usize;
        let data = match sink.read_here(&req, buf, wait) {
            Some(Ok(())) if buf.len() >= len => Ok(&buf[..len]),
            // Not in memory (or not readable here): the async reader takes it.
            None | Some(Ok(())) => return BurstEnd::Header(req.encode(), REQUEST_HEADER_LEN),
            Some(Err(e)) => Err(e),
        };
        if let Err(e) = sink.send_read(&req, data) {
            return BurstEnd::Failed(e);
        }
        total += len;
        if total >= MAX_BURST_BYTES || stopping() {
            return BurstEnd::Header([0; REQUEST_HEADER_LEN], 0);
        }
        let hdr = match next_header(fd, &mut low, &stopping, || Ok(())) {
            Ok(hdr) => hdr,
            Err(end) => return end,
        };
        match Request::decode(&hdr) {
            Ok(next) if sink.takes_read(&next) => {
                wait = Some(next.offset) == req.offset.checked_add(u64::from(req.len));
                req = next;
            }
            _ => return BurstEnd::Header(hdr, REQUEST_HEADER_LEN),
        }
    }
}

/// The socket's receive low-water mark (`SO_RCVLOWAT`) during a burst: before it
/// waits, the bytes it waits for (the rest of a payload, or of a header), so the
/// kernel signals the socket once that much has arrived rather than at every
/// segment. Each signal wakes the burst, and is paid by the sending client too.
/// Back to 1 when the burst ends: the async reader reads the same socket, and the
/// mark is the socket's, whatever descriptor sets it.
struct LowWater {
    fd: RawFd,
    at: usize,
}

impl LowWater {
    fn set(&mut self, n: usize) {
        let n = n.clamp(1, i32::MAX as usize);
        if n == self.at {
            return;
        }
        let v = n as libc::c_int;
        // SAFETY: a plain int option on a socket we hold.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.at = n;
        }
    }
}

impl Drop for LowWater {
    fn drop(&mut self) {
        self.set(1);
    }
}

/// One non-blocking read into `buf`'s spare capacity, up to `len` bytes in all.
fn recv(fd: RawFd, buf: &mut Vec<u8>, len: usize) -> io::Result<usize> {
    let filled = buf.len();
    let spare = &mut buf.spare_capacity_mut()[..len - filled];
    // SAFETY: spare capacity is valid for `spare.len()` bytes of writes.
    let n = unsafe { recv_raw(fd, spare.as_mut_ptr().cast(), spare.len())? };
    // SAFETY: `n <= spare.len()` bytes after `filled` were initialised by recv.
    unsafe { buf.set_len(filled + n) };
    Ok(n)
}

/// One non-blocking read into `out`.
fn recv_slice(fd: RawFd, out: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `out` is valid for `out.len()` bytes of writes.
    unsafe { recv_raw(fd, out.as_mut_ptr().cast(), out.len()) }
}

/// Sends all of `bytes` on `fd`, waiting for room at most `stall` at a time.
pub(super) fn send_all(fd: RawFd, bytes: &[u8], stall: Duration) -> io::Result<()> {
    send_all_vectored(fd, &[bytes], stall)
}

/// Sends all of `parts`, in order, on `fd`, waiting for room at most `stall` at a
/// time.
pub(super) fn send_all_vectored(fd: RawFd, parts: &[&[u8]], stall: Duration) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        let iov: Vec<IoSlice<'_>> = parts[first..].iter().map(|p| IoSlice::new(p)).collect();
        match send_vectored(fd, &iov) {
            Ok(mut n) => {
                while n > 0 && first < parts.len() {
                    let take = n.min(parts[first].len());
                    parts[first] = &parts[first][take..];
                    n -= take;
                    if parts[first].is_empty() {
                        first += 1;
                    }
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = stall.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
                // SAFETY: one pollfd, valid for the call.
                let rc = unsafe { libc::poll(&mut p, 1, ms) };
                if rc == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client took no reply bytes in time",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `fd` has bytes (or an error or hang-up) or `limit` passes.
fn wait_readable(fd: RawFd, limit: Duration) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_micros().div_ceil(1000).clamp(1, 1000) as libc::c_int;
    // SAFETY: one pollfd, valid for the call.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
