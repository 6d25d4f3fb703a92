//! The transmission phase: request reader, concurrent execution, reply writer.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::burst::{self, BurstEnd, BurstSink, ReadSink, READ_BURST_MIN};
use super::error::{nbd_errno, NbdError};
use super::handshake::{drain, Negotiated};
use super::proto::*;
use super::shared::{wait_true, Shared};
use super::socket::{self, Unwatch};
use crate::device::BlockDevice;
use euca_durable::buffers;

const READ_BUFFER: usize = 128 << 10;
const WRITE_BUFFER: usize = 128 << 10;
/// Reply bodies up to this size are copied into the batch buffer; larger ones are
/// written straight from their buffer.
const COPY_LIMIT: usize = 16 << 10;
/// Most descriptors in one BLOCK_STATUS reply (the spec allows fewer than asked).
const MAX_DESCRIPTORS: usize = 1 << 16;

/// One reply frame (a simple reply or one structured chunk), written whole by the
/// writer task so frames of concurrent requests never interleave.
pub(crate) struct Frame {
    head: [u8; 32],
    head_len: usize,
    body: Bytes,
    /// Payload budget held until the frame is on the wire (read data).
    _budget: Option<Budget>,
}

/// Payload bytes a request holds: from its connection's bound and from the
/// server-wide budget. Dropping it gives both back.
struct Budget {
    _connection: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

impl Frame {
    /// A frame with nothing to send: wakes the writer for a carried remainder.
    fn empty() -> Frame {
        Frame::new(&[], Bytes::new())
    }

    fn len(&self) -> usize {
        self.head_len + self.body.len()
    }

    /// What is left of the frame after its first `sent` bytes went out (the
    /// payload budget goes with it).
    fn rest(mut self, sent: usize) -> Frame {
        let mut rest = if sent < self.head_len {
            Frame::new(&self.head[sent..self.head_len], self.body.clone())
        } else {
            Frame::new(&[], self.body.slice(sent - self.head_len..))
        };
        rest._budget = self._budget.take();
        rest
    }

    fn new(head: &[u8], body: Bytes) -> Frame {
        let mut h = [0u8; 32];
        let n = head.len().min(32);
        h[..n].copy_from_slice(&head[..n]);
        Frame {
            head: h,
            head_len: n,
            body,
            _budget: None,
        }
    }

    fn simple(cookie: u64, error: u32, data: Bytes) -> Frame {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&error.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        Frame::new(&h, data)
    }

    /// A structured chunk: 20-byte header, `prefix` (≤ 12 bytes), then `body`.
    fn chunk(cookie: u64, flags: u16, ty: u16, prefix: &[u8], body: Bytes) -> Frame {
        let mut f = Frame::chunk_head(cookie, flags, ty, prefix, body.len());
        f.body = body;
        f
    }

    /// A chunk's header and prefix, for a body of `body_len` bytes sent after it.
    fn chunk_head(cookie: u64, flags: u16, ty: u16, prefix: &[u8], body_len: usize) -> Frame {
        let mut h = [0u8; 32];
        let plen = prefix.len().min(12);
        let len = (plen + body_len) as u32;
        h[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&ty.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..20].copy_from_slice(&len.to_be_bytes());
        h[20..20 + plen].copy_from_slice(&prefix[..plen]);
        Frame::new(&h[..20 + plen], Bytes::new())
    }
}

/// Per-connection state shared with request tasks.
struct Ctx {
    device: Arc<dyn BlockDevice>,
    size: u64,
    structured: bool,
    base_allocation: bool,
    read_only: bool,
    tx: mpsc::UnboundedSender<Frame>,
    /// Reply bytes handed to the writer and not yet on the wire.
    queued: Arc<Queued>,
    /// The socket and the lock its sender holds while a frame is part-written,
    /// for replies to be sent where they are made (`None` under TLS).
    sending: Option<(Arc<OwnedFd>, SendLock)>,
    reply_timeout: std::time::Duration,
}

impl Ctx {
    /// Sends `frame`: a READ's data straight onto the socket when nobody is
    /// sending and the socket has room, else through the reply writer.
    ///
    /// Sending where the data was just read keeps its buffer in this core's
    /// cache: queued, a pipelined reader (nbdcopy keeps 64 READs in flight) had
    /// read up to 16 MiB ahead of the writer, whose copy into the socket then
    /// came from memory (on one connection, 3x the CPU of nbdkit's for that copy,
    /// and the read copy into those cold buffers 40 % more: BENCHMARKS.md).
    fn send(&self, frame: Frame) {
        let frame = match &self.sending {
            Some((fd, lock)) if frame.body.len() > COPY_LIMIT => {
                match lock.try_lock() {
                    // A carried remainder goes first: queue behind it.
                    Ok(mut carry) if carry.is_none() => {
                        match send_now(fd.as_raw_fd(), &frame) {
                            Ok(n) if n == frame.len() => return,
                            Ok(n) if n > 0 => {
                                // The writer finishes it before anything else.
                                let rest = frame.rest(n);
                                self.queued.add(rest.len());
                                *carry = Some(rest);
                                Frame::empty()
                            }
                            // No room (or an error the writer will meet too).
                            _ => frame,
                        }
                    }
                    _ => frame,
                }
            }
            _ => frame,
        };
        self.queued.add(frame.len());
        // Fails only if the writer is gone, in which case the connection is ending.
        let _ = self.tx.send(frame);
    }

    /// The head of a READ's reply whose `len` bytes of data follow it.
    fn read_head(&self, r: &Request, len: usize) -> Frame {
        if self.structured {
            let at = r.offset.to_be_bytes();
            Frame::chunk_head(r.cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, &at, len)
        } else {
            Frame::simple(r.cookie, 0, Bytes::new())
        }
    }

    fn ok(&self, req: &Request) -> Frame {
        Frame::simple(req.cookie, 0, Bytes::new())
    }

    fn error(&self, req: &Request, errno: u32, msg: &'static str) -> Frame {
        if self.structured {
            let mut prefix = [0u8; 6];
            prefix[0..4].copy_from_slice(&errno.to_be_bytes());
            prefix[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
            Frame::chunk(
                req.cookie,
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                &prefix,
                Bytes::from_static(msg.as_bytes()),
            )
        } else {
            Frame::simple(req.cookie, errno, Bytes::new())
        }
    }

    /// Checks a request against the negotiated features and the export bounds.
    fn validate(&self, r: &Request) -> Result<(), (u32, &'static str)> {
        let allowed = match r.ty {
            CMD_READ if self.structured => CMD_FLAG_FUA | CMD_FLAG_DF,
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_CACHE => CMD_FLAG_FUA,
            CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            CMD_BLOCK_STATUS => CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
            _ => return Err((EINVAL, "unknown command")),
        };
        if r.flags & !allowed != 0 {
            return Err((EINVAL, "invalid flags for this command"));
        }
        if r.ty == CMD_BLOCK_STATUS && !self.base_allocation {
            return Err((EINVAL, "no metadata context negotiated"));
        }
        let writes = matches!(r.ty, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        if writes && self.read_only {
            return Err((EPERM, "export is read-only"));
        }
        if r.ty == CMD_FLUSH {
            return if r.offset == 0 && r.len == 0 {
                Ok(())
            } else {
                Err((EINVAL, "flush offset and length must be zero"))
            };
        }
        if r.len == 0 {
            return Err((EINVAL, "zero-length request"));
        }
        let in_bounds = r
            .offset
            .checked_add(u64::from(r.len))
            .is_some_and(|end| end <= self.size);
        if !in_bounds {
            return Err(if matches!(r.ty, CMD_WRITE | CMD_WRITE_ZEROES) {
                (ENOSPC, "request past the end of the export")
            } else {
                (EINVAL, "request past the end of the export")
            });
        }
        if r.ty == CMD_READ && r.len > MAX_PAYLOAD {
            return Err((EOVERFLOW, "read larger than the maximum payload"));
        }
        Ok(())
    }

    async fn execute(&self, r: &Request, payload: Option<Bytes>, budget: Option<Budget>) -> Frame {
        let fua = r.flags & CMD_FLAG_FUA != 0;
        let dev = &self.device;
        let done = match r.ty {
            CMD_READ => {
                return match dev.read(r.offset, r.len).await {
                    Ok(data) if data.len() == r.len as usize => {
                        let mut f = if self.structured {
                            Frame::chunk(
                                r.cookie,
                                REPLY_FLAG_DONE,
                                REPLY_TYPE_OFFSET_DATA,
                                &r.offset.to_be_bytes(),
                                data,
                            )
                        } else {
                            Frame::simple(r.cookie, 0, data)
                        };
                        f._budget = budget;
                        f
                    }
                    Ok(_) => self.error(r, EIO, "short read from device"),
                    Err(e) => self.device_error(r, "read", &e),
                };
            }
            CMD_WRITE => match payload {
                Some(data) => dev.write(r.offset, data, fua).await,
                None => return self.error(r, EIO, "missing payload"),
            },
            CMD_FLUSH => dev.flush().await,
            CMD_TRIM => match dev.trim(r.offset, u64::from(r.len)).await {
                Ok(()) if fua => dev.flush().await,
                other => other,
            },
            CMD_CACHE => dev.cache(r.offset, u64::from(r.len)).await,
            CMD_WRITE_ZEROES => {
                let may_punch = r.flags & CMD_FLAG_NO_HOLE == 0;
                if r.flags & CMD_FLAG_FAST_ZERO != 0 {
                    match dev
                        .write_zeroes_fast(r.offset, u64::from(r.len), may_punch, fua)
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => return self.error(r, ENOTSUP, "fast zero not possible"),
                        Err(e) => Err(e),
                    }
                } else {
                    dev.write_zeroes(r.offset, u64::from(r.len), may_punch, fua)
                        .await
                }
            }
            CMD_BLOCK_STATUS => {
                return match dev.extents(r.offset, u64::from(r.len)).await {
                    Ok(extents) => self.block_status(r, &extents),
                    Err(e) => self.device_error(r, "block status", &e),
                };
            }
            _ => return self.error(r, EINVAL, "unknown command"),
        };
        match done {
            Ok(()) => self.ok(r),
            Err(e) => self.device_error(r, "request", &e),
        }
    }

    fn device_error(&self, r: &Request, what: &'static str, e: &std::io::Error) -> Frame {
        tracing::debug!(cookie = r.cookie, ty = r.ty, error = %e, "NBD {what} failed");
        self.error(r, nbd_errno(e), "device error")
    }

    fn block_status(&self, r: &Request, extents: &[crate::device::Extent]) -> Frame {
        let req_one = r.flags & CMD_FLAG_REQ_ONE != 0;
        let mut remaining = u64::from(r.len);
        let mut descs: Vec<(u32, u32)> = Vec::new();
        for e in extents {
            if remaining == 0 {
                break;
            }
            let len = e.length.min(remaining);
            if len == 0 {
                continue;
            }
            remaining -= len;
            let flags = if e.hole { STATE_HOLE } else { 0 } | if e.zero { STATE_ZERO } else { 0 };
            // len <= remaining <= r.len, so it fits in u32, and so do merged sums.
            match descs.last_mut() {
                Some(last) if last.1 == flags => last.0 += len as u32,
                _ => {
                    if descs.len() == MAX_DESCRIPTORS || (req_one && !descs.is_empty()) {
                        break;
                    }
                    descs.push((len as u32, flags));
                }
            }
        }
        if descs.is_empty() {
            // Status 0 ("allocated, contents unknown") is always a safe answer.
            descs.push((r.len, 0));
        }
        let mut body = BytesMut::with_capacity(descs.len() * 8);
        for (len, flags) in &descs {
            body.put_u32(*len);
            body.put_u32(*flags);
        }
        Frame::chunk(
            r.cookie,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            &META_ID_BASE_ALLOCATION.to_be_bytes(),
            body.freeze(),
        )
    }
}

impl BurstSink for Ctx {
    fn takes(&self, req: &Request) -> bool {
        WriteBatch::takes(req) && self.validate(req).is_ok()
    }

    fn write_here(&self, req: &Request, data: &[u8]) -> Option<std::io::Result<()>> {
        self.device.write_here(req.offset, data)
    }

    fn reply(&self, done: &mut Vec<(Request, std::io::Result<()>)>) -> std::io::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let n = done.len();
        let frames = done.drain(..).map(|(req, result)| match result {
            Ok(()) => self.ok(&req),
            Err(e) => self.device_error(&req, "write", &e),
        });
        // Straight onto the socket when the reply writer is not sending (it
        // holds `sending` from the first byte of a run of frames to the last, so
        // frames never interleave): no wake-up of the runtime per run of replies.
        let sending = self.sending.as_ref().and_then(|(fd, lock)| {
            let guard = lock.try_lock().ok().filter(|carry| carry.is_none())?;
            Some((fd.as_raw_fd(), guard))
        });
        let Some((fd, _guard)) = sending else {
            frames.for_each(|f| self.send(f));
            return Ok(());
        };
        let mut out = Vec::with_capacity(n * 16);
        for f in frames {
            out.extend_from_slice(&f.head[..f.head_len]);
            out.extend_from_slice(&f.body);
        }
        burst::send_all(fd, &out, self.reply_timeout)
    }
}

impl ReadSink for Ctx {
    fn takes_read(&self, req: &Request) -> bool {
        req.ty == CMD_READ
            && (READ_BURST_MIN..=READ_BURST_MAX).contains(&req.len)
            && self.validate(req).is_ok()
    }

    fn read_here(
        &self,
        req: &Request,
        buf: &mut Vec<u8>,
        wait: bool,
    ) -> Option<std::io::Result<()>> {
        self.device
            .read_here(req.offset, req.len as usize, buf, wait)
    }

    fn send_read(&self, req: &Request, data: std::io::Result<&[u8]>) -> std::io::Result<()> {
        let (head, body) = match data {
            Ok(data) => (self.read_head(req, data.len()), data),
            Err(e) => (self.device_error(req, "read", &e), &[][..]),
        };
        let Some((fd, lock)) = &self.sending else {
            return Err(std::io::Error::other("read burst without a socket"));
        };
        let fd = fd.as_raw_fd();
        // Frames never interleave: the reply writer holds the lock from the first
        // byte of a run of frames to the last, and what it left carried goes first.
        let mut carry = lock.blocking_lock();
        if let Some(rest) = carry.take() {
            let n = rest.len();
            burst::send_all_vectored(
                fd,
                &[&rest.head[..rest.head_len], &rest.body],
                self.reply_timeout,
            )?;
            self.queued.sub(n);
        }
        let parts = [&head.head[..head.head_len], &head.body[..], body];
        burst::send_all_vectored(fd, &parts, self.reply_timeout)
    }
}

/// What makes the reader stop taking requests.
struct Stop {
    export: watch::Receiver<bool>,
    server: watch::Receiver<bool>,
    writer: watch::Receiver<bool>,
}

impl Stop {
    fn receivers(&self) -> Vec<watch::Receiver<bool>> {
        vec![
            self.export.clone(),
            self.server.clone(),
            self.writer.clone(),
        ]
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = wait_true(&mut self.export) => {}
            _ = wait_true(&mut self.server) => {}
            _ = wait_true(&mut self.writer) => {}
        }
    }
}

/// Runs transmission until the client disconnects, the export is removed or the
/// server stops. In-flight requests always finish (and their replies are sent
/// within the grace period) before the connection closes.
///
/// `rd` and `wr`: the connection's two sides. `socket`: the socket's descriptor
/// when they read and write it directly (no TLS), so that runs of WRITEs can be
/// received on a blocking thread ([`burst`]) and replies sent where they are made.
pub(crate) async fn run<R, W>(
    rd: R,
    wr: W,
    socket: Option<Arc<OwnedFd>>,
    neg: Negotiated,
    shared: &Shared,
    server_stop: watch::Receiver<bool>,
) -> Result<(), NbdError>
where
    R: AsyncRead + Unwatch + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.cfg;
    let Negotiated {
        entry,
        close_rx,
        structured,
        base_allocation,
        ..
    } = neg;
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let (tx, rx) = mpsc::unbounded_channel();
    let (failed_tx, failed_rx) = watch::channel(false);
    let send_lock: SendLock = Arc::new(tokio::sync::Mutex::new(None));
    let queued = Arc::new(Queued::default());
    let mut writer = tokio::spawn(write_frames(
        wr,
        rx,
        failed_tx,
        cfg.reply_timeout,
        send_lock.clone(),
        queued.clone(),
    ));
    let ctx = Arc::new(Ctx {
        device: entry.export.device.clone(),
        size: entry.export.device.size(),
        structured,
        base_allocation,
        read_only: entry.export.read_only,
        tx,
        queued,
        sending: socket.clone().map(|fd| (fd, send_lock)),
        reply_timeout: cfg.reply_timeout,
    });
    // `stop.export` is this connection's registration on the export.
    let mut stop = Stop {
        export: close_rx,
        server: server_stop,
        writer: failed_rx,
    };
    let slots = Arc::new(Semaphore::new(cfg.max_in_flight));
    // No connection may hold more than a quarter of the server's budget (but
    // always one maximal request), so one client cannot stall all the others.
    let per_connection = cfg
        .max_in_flight_bytes
        .min((cfg.memory_budget / 4).max(MAX_PAYLOAD as usize));
    let budget = Budgets {
        connection: Arc::new(Semaphore::new(per_connection)),
        connection_total: per_connection,
        server: shared.memory.clone(),
        server_total: cfg.memory_budget,
    };

    let mut batch = WriteBatch::default();
    let bursts = socket.map(|fd| Bursts {
        fd,
        permits: shared.bursts.clone(),
        transmitting: shared.transmitting.clone(),
    });
    let _counted = shared.transmitting.enter();
    let result = read_requests(
        &mut rd,
        &ctx,
        &mut stop,
        &slots,
        &budget,
        &mut batch,
        bursts.as_ref(),
    )
    .await;
    // Writes received whole are applied (and answered) however reading ended.
    batch.submit(&ctx).await;

    // Wait for every in-flight device operation; their replies are queued by then.
    let _all = slots.acquire_many(cfg.max_in_flight as u32).await;
    drop(ctx);
    if tokio::time::timeout(cfg.shutdown_grace, &mut writer)
        .await
        .is_err()
    {
        tracing::warn!("NBD client not reading replies; dropping the connection");
        writer.abort();
    }
    drop(rd);
    // Dropping the export registration last lets ExportTable::remove return only
    // once this connection is fully closed.
    drop(stop);
    result
}

/// WRITEs (no FUA, up to [`BATCH_WRITE_MAX`]) that arrived together, received
/// whole and not yet applied: they go to the device as one
/// [`BlockDevice::write_batch`] once no further request header can be read
/// without waiting (or the batch is full), so a device that must leave the
/// runtime to write does it once for all of them. For sequential 256 KiB writes
/// on 4 connections that is a third of the context switches and ~10 % less CPU
/// than one blocking-pool job per WRITE (BENCHMARKS.md).
#[derive(Default)]
struct WriteBatch {
    /// Each WRITE's request and what it holds until it is answered.
    cmds: Vec<(Request, OwnedSemaphorePermit, Option<Budget>)>,
    writes: Vec<(u64, Bytes)>,
    bytes: usize,
}

/// WRITEs of at most this size are batched.
const BATCH_WRITE_MAX: u32 = 1 << 20;
/// READs of at most this size may run as a read burst.
const READ_BURST_MAX: u32 = 1 << 20;
/// A batch is sent once it holds this many WRITEs or bytes.
const BATCH_MAX_WRITES: usize = 32;
const BATCH_MAX_BYTES: usize = 4 << 20;

impl WriteBatch {
    fn takes(req: &Request) -> bool {
        req.ty == CMD_WRITE && req.flags & CMD_FLAG_FUA == 0 && req.len <= BATCH_WRITE_MAX
    }

    fn full(&self) -> bool {
        self.cmds.len() >= BATCH_MAX_WRITES || self.bytes >= BATCH_MAX_BYTES
    }

    /// Applies the batch and queues its replies: at once when the device takes it
    /// without waiting, else in a task of its own.
    async fn submit(&mut self, ctx: &Arc<Ctx>) {
        if self.cmds.is_empty() {
            return;
        }
        self.bytes = 0;
        let cmds = std::mem::take(&mut self.cmds);
        let writes = std::mem::take(&mut self.writes);
        let ctx = ctx.clone();
        let mut handled = Box::pin(async move {
            let done = AssertUnwindSafe(ctx.device.write_batch(writes))
                .catch_unwind()
                .await;
            for (req, slot, held) in cmds {
                drop(held);
                ctx.send(match &done {
                    Ok(Ok(())) => ctx.ok(&req),
                    Ok(Err(e)) => ctx.device_error(&req, "write", e),
                    Err(_) => {
                        tracing::error!(cookie = req.cookie, "NBD write batch panicked");
                        ctx.error(&req, EIO, "internal error")
                    }
                });
                drop(slot);
            }
        });
        if futures::poll!(handled.as_mut()).is_pending() {
            tokio::spawn(handled);
        }
    }
}

/// Where write bursts may run: the socket's descriptor and the server's permits.
struct Bursts {
    fd: Arc<OwnedFd>,
    permits: Arc<Semaphore>,
    transmitting: Arc<super::shared::Transmitting>,
}

async fn read_requests<R>(
    rd: &mut BufReader<R>,
    ctx: &Arc<Ctx>,
    stop: &mut Stop,
    slots: &Arc<Semaphore>,
    budget: &Budgets,
    batch: &mut WriteBatch,
    bursts: Option<&Bursts>,
) -> Result<(), NbdError>
where
    R: AsyncRead + Unwatch + Unpin,
{
    let mut headers = Headers::default();
    // A WRITE a burst handed back unapplied, and what it had received of it.
    let mut resumed: Option<(Request, Vec<u8>)> = None;
    // Where the last READ ended: a READ from there may start a read burst.
    let mut read_end: Option<u64> = None;
    loop {
        let (req, received) = match resumed.take() {
            Some((req, received)) => (req, Some(received)),
            None => {
                let read = tokio::select! {
                    biased;
                    _ = stop.wait() => return Ok(()),
                    r = headers.read(rd) => r,
                };
                match read {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                let req = Request::decode(&headers.hdr).map_err(NbdError::BadRequestMagic)?;
                (req, None)
            }
        };
        headers.direct = req.ty == CMD_WRITE && req.len >= LARGE_WRITE;
        if !WriteBatch::takes(&req) {
            // Anything else goes after the WRITEs before it have been sent on.
            batch.submit(ctx).await;
        }
        match req.ty {
            CMD_DISC => return Ok(()),
            CMD_WRITE if req.len > MAX_PAYLOAD => {
                // Draining up to 4 GiB is not worth it: refuse, then hard disconnect
                // (allowed for payloads above 32 MiB).
                ctx.send(ctx.error(&req, EINVAL, "write larger than the maximum payload"));
                return Err(NbdError::OversizedWrite(req.len));
            }
            _ => {}
        }
        if let Err((errno, msg)) = ctx.validate(&req) {
            tracing::debug!(
                cookie = req.cookie,
                ty = req.ty,
                errno,
                msg,
                "NBD request refused"
            );
            if req.ty == CMD_WRITE {
                // Skip the payload without buffering it (at most MAX_PAYLOAD bytes).
                drain(rd, u64::from(req.len)).await?;
            }
            ctx.send(ctx.error(&req, errno, msg));
            continue;
        }
        // What the request's buffer holds: its length rounded up to the pool's size
        // class (validated requests are at most 32 MiB, so this fits).
        let cost = if matches!(req.ty, CMD_READ | CMD_WRITE) {
            u32::try_from(buffers::footprint(req.len as usize)).unwrap_or(u32::MAX)
        } else {
            0
        };
        let mut acquiring = Box::pin(acquire(slots, budget, cost));
        let permits = match futures::poll!(acquiring.as_mut()) {
            std::task::Poll::Ready(p) => p,
            std::task::Poll::Pending => {
                // What the batch holds may be what this request waits for.
                batch.submit(ctx).await;
                tokio::select! {
                    biased;
                    _ = stop.wait() => return Ok(()),
                    p = acquiring => p,
                }
            }
        };
        let Some((slot, held)) = permits else {
            return Ok(());
        };
        let follows = req.ty == CMD_READ && Some(req.offset) == read_end;
        if req.ty == CMD_READ {
            read_end = req.offset.checked_add(u64::from(req.len));
        }
        if let (Some(b), None) = (bursts, &received) {
            if let Some(end) = try_burst(b, rd, ctx, stop, batch, &req, follows).await? {
                drop((slot, held));
                read_end = None;
                match end {
                    BurstEnd::Header(hdr, have) => {
                        headers.hdr = hdr;
                        headers.have = have;
                        headers.direct = true;
                    }
                    BurstEnd::Write(req, received) => resumed = Some((req, received)),
                    BurstEnd::Eof | BurstEnd::Stopped => return Ok(()),
                    BurstEnd::Failed(e) => return Err(e.into()),
                }
                continue;
            }
        }
        if req.ty == CMD_READ {
            tokio::select! {
                biased;
                _ = stop.wait() => return Ok(()),
                _ = ctx.queued.room() => {}
            }
        }
        let payload = if req.ty == CMD_WRITE {
            // A payload cut short (disconnect, stop) is dropped unapplied.
            let data = tokio::select! {
                biased;
                _ = stop.wait() => return Ok(()),
                d = read_payload(rd, req.len, received) => d?,
            };
            Some(data)
        } else {
            None
        };
        if let (true, Some(data)) = (WriteBatch::takes(&req), &payload) {
            batch.bytes += data.len();
            batch.writes.push((req.offset, data.clone()));
            batch.cmds.push((req, slot, held));
            if batch.full() || !headers.ready(rd) {
                batch.submit(ctx).await;
            }
            continue;
        }
        let ctx = ctx.clone();
        let mut handled = Box::pin(async move {
            let frame = match AssertUnwindSafe(ctx.execute(&req, payload, held))
                .catch_unwind()
                .await
            {
                Ok(f) => f,
                Err(_) => {
                    tracing::error!(
                        cookie = req.cookie,
                        ty = req.ty,
                        "NBD request handler panicked"
                    );
                    ctx.error(&req, EIO, "internal error")
                }
            };
            ctx.send(frame);
            // Released only after the reply is queued: draining the slots means
            // every reply is in the writer's queue.
            drop(slot);
        });
        // A request that completes without waiting (a read served from the page
        // cache) is answered right here; one that has to wait (disk I/O on the
        // blocking pool) goes on in its own task while the next request is read.
        if futures::poll!(handled.as_mut()).is_pending() {
            tokio::spawn(handled);
        }
    }
}

/// Runs `req` and the requests after it as a [`burst`] if a server-wide permit is
/// free and either `req` is a WRITE a write burst takes, the device can write on
/// a blocking thread now and the read buffer holds nothing past `req`'s payload,
/// or `req` is a READ a read burst takes that `follows` the connection's last
/// READ, enough connections transmit ([`Transmitting`](super::shared::Transmitting)),
/// the device can read on a blocking thread and the read buffer is empty; `None`
/// if not.
async fn try_burst<R: AsyncRead + Unwatch + Unpin>(
    bursts: &Bursts,
    rd: &mut BufReader<R>,
    ctx: &Arc<Ctx>,
    stop: &Stop,
    batch: &mut WriteBatch,
    req: &Request,
    follows: bool,
) -> Result<Option<BurstEnd>, NbdError> {
    // Writing or reading nothing is a no-op that says whether the device can.
    let write = WriteBatch::takes(req)
        && rd.buffer().len() <= req.len as usize
        && ctx.device.write_here(req.offset, &[]).is_some();
    let read = !write
        && bursts.transmitting.read_bursts()
        && follows
        && rd.buffer().is_empty()
        && ctx.takes_read(req)
        && ctx
            .device
            .read_here(req.offset, 0, &mut Vec::new(), false)
            .is_some();
    if !write && !read {
        return Ok(None);
    }
    let Ok(permit) = bursts.permits.clone().try_acquire_owned() else {
        return Ok(None);
    };
    // The WRITEs before this one go first.
    batch.submit(ctx).await;
    let pre = rd.buffer().to_vec();
    std::pin::Pin::new(&mut *rd).consume(pre.len());
    let (fd, sink, first, stops) = (bursts.fd.clone(), ctx.clone(), *req, stop.receivers());
    // The runtime stops watching the socket for bytes while the burst reads it:
    // each arrival would wake its event loop for nothing.
    rd.get_mut().unwatch();
    let end = tokio::task::spawn_blocking(move || {
        let fd = fd.as_raw_fd();
        let end = if write {
            let room = BATCH_WRITE_MAX as usize;
            burst::run(fd, &*sink, first, &pre, room, &stops)
        } else {
            burst::run_reads(fd, &*sink, first, READ_BURST_MAX as usize, &stops)
        };
        drop(permit);
        end
    })
    .await;
    let rewatched = rd.get_mut().rewatch();
    let end = end.map_err(|e| std::io::Error::other(format!("NBD write burst failed: {e}")))?;
    // Reading goes on (and needs the socket watched) unless the burst ended it.
    if !matches!(end, BurstEnd::Eof | BurstEnd::Stopped) {
        rewatched?;
    }
    Ok(Some(end))
}

/// WRITE payloads of at least this size are followed by a header read alone.
const LARGE_WRITE: u32 = 64 << 10;

/// Reads request headers: through the read buffer, except after a large WRITE,
/// when the next header is read alone from the stream, so that the next large
/// payload is read straight into its own buffer instead of being copied out of
/// the read buffer (8 % of the CPU of a sequential write).
#[derive(Default)]
struct Headers {
    hdr: [u8; REQUEST_HEADER_LEN],
    /// Bytes of `hdr` already read from the stream by [`Headers::ready`].
    have: usize,
    /// The last request was a large WRITE.
    direct: bool,
    /// What [`Headers::ready`] met, returned by the next [`Headers::read`].
    error: Option<std::io::Error>,
}

impl Headers {
    async fn read<R: AsyncRead + Unpin>(&mut self, rd: &mut BufReader<R>) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.have > 0 || (self.direct && rd.buffer().is_empty()) {
            rd.get_mut().read_exact(&mut self.hdr[self.have..]).await?;
        } else {
            rd.read_exact(&mut self.hdr).await?;
        }
        self.have = 0;
        Ok(())
    }

    /// Whether the next header can be read without waiting: it is in the read
    /// buffer, or the stream has it right now (one non-blocking read).
    fn ready<R: AsyncRead + Unpin>(&mut self, rd: &mut BufReader<R>) -> bool {
        if !rd.buffer().is_empty() {
            // `have` is 0 here: bytes are read alone only from an empty buffer.
            return rd.buffer().len() >= REQUEST_HEADER_LEN;
        }
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        if !self.direct && self.have == 0 {
            return matches!(
                std::pin::Pin::new(rd).poll_fill_buf(&mut cx),
                std::task::Poll::Ready(Ok(b)) if b.len() >= REQUEST_HEADER_LEN
            );
        }
        let mut rest = tokio::io::ReadBuf::new(&mut self.hdr[self.have..]);
        match std::pin::Pin::new(rd.get_mut()).poll_read(&mut cx, &mut rest) {
            std::task::Poll::Ready(Ok(())) => {
                self.have += rest.filled().len();
                self.have == REQUEST_HEADER_LEN
            }
            std::task::Poll::Ready(Err(e)) => {
                self.error = Some(e);
                false
            }
            std::task::Poll::Pending => false,
        }
    }
}

/// Where a request's payload bytes come from.
struct Budgets {
    connection: Arc<Semaphore>,
    connection_total: usize,
    /// Shared by every connection of the server.
    server: Arc<Semaphore>,
    server_total: usize,
}

/// Takes a request slot, then `cost` bytes from the connection's bound, then from
/// the server's budget (always in this order, and nothing else is waited for
/// while holding them, so no two waiters can each hold what the other needs).
/// A cost above a budget takes all of it (not reached: both are at least the
/// largest request).
async fn acquire(
    slots: &Arc<Semaphore>,
    budget: &Budgets,
    cost: u32,
) -> Option<(OwnedSemaphorePermit, Option<Budget>)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    if cost == 0 {
        return Some((slot, None));
    }
    let take = |total: usize| u32::try_from(total).map_or(cost, |t| cost.min(t));
    let connection = budget
        .connection
        .clone()
        .acquire_many_owned(take(budget.connection_total))
        .await
        .ok()?;
    let server = budget
        .server
        .clone()
        .acquire_many_owned(take(budget.server_total))
        .await
        .ok()?;
    Some((
        slot,
        Some(Budget {
            _connection: connection,
            _server: server,
        }),
    ))
}

/// A WRITE's payload, in a pooled buffer (a fresh one costs a page fault per 4 KiB
/// before the copy from the socket can land in it). What the read buffer already
/// holds is copied from there; the rest is read from the socket straight into the
/// payload, not through the read buffer.
///
/// `received`: what a burst had already read of it (the read buffer holds none).
async fn read_payload<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    len: u32,
    received: Option<Vec<u8>>,
) -> std::io::Result<Bytes> {
    let len = len as usize;
    let mut buf = received.unwrap_or_else(|| buffers::take(len));
    let buffered = rd.buffer().len().min(len);
    buf.extend_from_slice(&rd.buffer()[..buffered]);
    std::pin::Pin::new(&mut *rd).consume(buffered);
    crate::wire::fill(rd.get_mut(), &mut buf, len).await?;
    Ok(buffers::freeze(buf))
}

/// Held by whoever is putting frames on the socket (the reply writer from the
/// first byte of a run of frames to the last, so frames never interleave); holds
/// the rest of a frame someone else sent in part, which the writer sends first.
type SendLock = Arc<tokio::sync::Mutex<Option<Frame>>>;

/// Most reply bytes a connection may have waiting for its reply writer (the socket
/// being full) before its reader stops starting READs. Reading further ahead only
/// fills buffers that have gone cold in the cache by the time the socket takes
/// them: with 64 READs in flight on each of 4 connections, both copies (page cache
/// into the buffer, buffer into the socket) cost 1.6-2.8x nbdkit's, and the whole
/// machine 0.48-0.50 CPU s/GiB against 0.38-0.44 with this bound (BENCHMARKS.md,
/// 2026-12-07). About one large READ: 1 and 4 MiB did no better. READs already
/// waiting for the disk on the blocking pool (or larger than what is read inline)
/// are not counted until their replies are queued: their concurrency is what keeps
/// a disk busy.
const READ_AHEAD: usize = 256 << 10;

/// Reply bytes queued for a connection's writer (counted when queued, uncounted
/// once the writer has put them out: onto the socket, or for small frames into its
/// batch, sent before it next waits for frames), and a wake-up for a reader
/// waiting for them to drain. A client that reads no replies stalls the writer
/// until its reply timeout fails the connection, which stops the reader too.
#[derive(Default)]
struct Queued {
    bytes: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Queued {
    fn add(&self, n: usize) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        // Saturating: a miscount must never leave a reader waiting for good.
        let before = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(n)))
            .unwrap_or_default();
        if before.saturating_sub(n) <= READ_AHEAD {
            self.drained.notify_waiters();
        }
    }

    /// Waits until at most [`READ_AHEAD`] bytes are queued.
    async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.bytes.load(std::sync::atomic::Ordering::Relaxed) <= READ_AHEAD {
                return;
            }
            drained.await;
        }
    }
}

/// Sends what of `frame` the socket takes now, without waiting; the bytes sent.
fn send_now(fd: std::os::fd::RawFd, frame: &Frame) -> std::io::Result<usize> {
    let head = IoSlice::new(&frame.head[..frame.head_len]);
    socket::send_vectored(fd, &[head, IoSlice::new(&frame.body)])
}

async fn write_frames<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    failed: watch::Sender<bool>,
    stall: std::time::Duration,
    sending: SendLock,
    queued: Arc<Queued>,
) {
    let mut out = Out {
        w: wr,
        buf: Vec::with_capacity(WRITE_BUFFER),
        stall,
    };
    let result: std::io::Result<()> = async {
        while let Some(frame) = rx.recv().await {
            let mut carry = sending.lock().await;
            if let Some(rest) = carry.take() {
                let n = rest.len();
                out.put(rest).await?;
                queued.sub(n);
            }
            let n = frame.len();
            out.put(frame).await?;
            queued.sub(n);
            while let Ok(frame) = rx.try_recv() {
                let n = frame.len();
                out.put(frame).await?;
                queued.sub(n);
            }
            out.flush().await?;
            queued.sub(0);
        }
        out.w.shutdown().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "NBD reply write failed");
        failed.send_replace(true);
    }
}

/// Reply output: small frames are batched in `buf`; a frame with a large body
/// goes out in one `writev` together with whatever is batched, without copying
/// the body. Every socket write must make progress within `stall`.
struct Out<W> {
    w: W,
    buf: Vec<u8>,
    stall: std::time::Duration,
}

/// `fut`, or `TimedOut` if it takes longer than `limit`.
async fn within<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client took no reply bytes in time",
        ))
    })
}

impl<W: AsyncWrite + Unpin> Out<W> {
    async fn put(&mut self, frame: Frame) -> std::io::Result<()> {
        self.buf.extend_from_slice(&frame.head[..frame.head_len]);
        if frame.body.len() <= COPY_LIMIT {
            self.buf.extend_from_slice(&frame.body);
            if self.buf.len() >= WRITE_BUFFER {
                self.write_buf().await?;
            }
            return Ok(());
        }
        let mut head: &[u8] = &self.buf;
        let mut body: &[u8] = &frame.body;
        while !head.is_empty() || !body.is_empty() {
            let n = within(
                self.stall,
                self.w
                    .write_vectored(&[IoSlice::new(head), IoSlice::new(body)]),
            )
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.buf.clear();
        Ok(())
    }

    async fn write_buf(&mut self) -> std::io::Result<()> {
        let mut rest: &[u8] = &self.buf;
        while !rest.is_empty() {
            let n = within(self.stall, self.w.write(rest)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        self.buf.clear();
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.write_buf().await?;
        }
        within(self.stall, self.w.flush()).await
    }
}
