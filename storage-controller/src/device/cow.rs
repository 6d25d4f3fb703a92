//! Crash-consistent cuts of a live volume (copy-on-write into a preserve file).
//!
//! [`VolumeDevice`] wraps the volume's device and is what gets exported. Every
//! mutation (write, trim, write-zeroes) holds the shared side of a gate for its whole
//! duration. [`VolumeDevice::begin_cut`] takes the gate exclusively, so every write
//! acknowledged before the call has completed, installs a [`Cut`] and releases it:
//! the cut is the device's content at that instant.
//!
//! While the cut is alive, a mutation that touches a chunk the snapshot has not read
//! yet first copies that chunk's current bytes into a sparse preserve file at the same
//! offset (an all-zero chunk is only marked). [`Cut::read_chunk`] then serves the
//! preserved copy, or reads the device and marks the chunk taken under the same
//! per-chunk lock, so a writer cannot slip in between. Per chunk the states are:
//!
//! ```text
//! UNTOUCHED --read_chunk--> TAKEN          (device bytes handed to the snapshot)
//! UNTOUCHED --mutation----> PRESERVED      (old bytes copied to the preserve file)
//! UNTOUCHED --mutation----> PRESERVED_ZERO (old bytes were all zero)
//! ```
//!
//! Invariant: while a chunk is UNTOUCHED no mutation has reached it since the cut,
//! because every mutation moves it out of UNTOUCHED (under its lock) before it runs.
//!
//! A mutation runs in the caller's task (no task is spawned per write, cut or no
//! cut): it owns the gate guard, and if the caller drops it before it finishes (a
//! closed NBD connection) the rest runs to completion in a task of its own, guard
//! held ([`FinishOnDrop`]), so a half-done write never runs outside the gate. A
//! failure to preserve never fails the guest's write: it poisons the cut, and the
//! snapshot upload fails instead.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::{RwLock, Semaphore};

use super::block::{BlockDevice, Extent};
use crate::snapshot::error::SnapshotError;
use crate::snapshot::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

const UNTOUCHED: u8 = 0;
const TAKEN: u8 = 1;
const PRESERVED: u8 = 2;
const PRESERVED_ZERO: u8 = 3;

/// Per-chunk locks are striped over this many mutexes.
const STRIPES: usize = 64;
/// Chunks copied to the preserve file at once (memory: this × [`COPY_PIECE`]).
const COPY_PARALLEL: usize = 4;
/// A preserve copy moves this much at a time.
const COPY_PIECE: u64 = 1 << 20;

/// The exported device of a volume: passes I/O to the wrapped device and takes
/// crash-consistent cuts for snapshots. Cloning shares the volume.
#[derive(Clone)]
pub struct VolumeDevice {
    inner: Arc<VolInner>,
}

struct VolInner {
    dev: Arc<dyn BlockDevice>,
    gate: Arc<RwLock<()>>,
    /// The active cut, if any. Weak, so a cut whose owner dropped it without
    /// [`VolumeDevice::end_cut`] stops costing writers anything.
    cut: Mutex<Weak<Cut>>,
    /// Serialises begin_cut/end_cut.
    cut_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for VolumeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeDevice")
            .field("size", &self.inner.dev.size())
            .field("cut_active", &self.cut_active())
            .finish()
    }
}

impl VolumeDevice {
    pub fn new(dev: Arc<dyn BlockDevice>) -> Self {
        VolumeDevice {
            inner: Arc::new(VolInner {
                dev,
                gate: Arc::new(RwLock::new(())),
                cut: Mutex::new(Weak::new()),
                cut_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The wrapped device (I/O through it bypasses the cut: don't write to it).
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner.dev
    }

    /// The active cut, if one is in progress.
    pub fn current_cut(&self) -> Option<Arc<Cut>> {
        self.inner
            .cut
            .lock()
            .unwrap()
            .upgrade()
            .filter(|c| !c.ended.load(Ordering::SeqCst))
    }

    pub fn cut_active(&self) -> bool {
        self.current_cut().is_some()
    }

    /// Takes a crash-consistent cut: flushes the device, waits for every in-flight
    /// mutation to finish (new ones queue behind), flushes again, installs the cut,
    /// and returns. Writes acknowledged
    /// before this call are in the cut; writes issued after it returns are not.
    /// `preserve_path` must not exist: it is created as a sparse file of the
    /// volume's size (its directory must exist) and deleted when the cut ends. After
    /// a crash, stale preserve files are garbage. Fails if a cut is already active.
    pub async fn begin_cut(
        &self,
        chunk_size: u64,
        preserve_path: &Path,
    ) -> Result<Arc<Cut>, SnapshotError> {
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(SnapshotError::Invalid(format!(
                "chunk size {chunk_size} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"
            )));
        }
        // One begin/end at a time, so two callers can't both pass the check below.
        let _serial = self.inner.cut_lock.lock().await;
        if self.cut_active() {
            return Err(SnapshotError::CutActive);
        }
        let size = self.inner.dev.size();
        let path = preserve_path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            if let Err(e) = f.set_len(size) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(f)
        })
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating preserve file {}: {e}", preserve_path.display()),
            )
        })?;
        let n = size.div_ceil(chunk_size);
        let cut = Arc::new(Cut {
            dev: self.inner.dev.clone(),
            size,
            chunk_size,
            state: (0..n).map(|_| AtomicU8::new(UNTOUCHED)).collect(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            preserve: Arc::new(file),
            path: preserve_path.to_path_buf(),
            removed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            failed: Mutex::new(None),
            copy_sem: Semaphore::new(COPY_PARALLEL),
            chunks_preserved: AtomicU64::new(0),
            bytes_preserved: AtomicU64::new(0),
        });
        // Settle what was written so far (most of it, without stalling writers),
        // then again under the gate (little is left by then). The snapshot trusts
        // the device's extents to skip holes, and `SEEK_DATA` on data still in the
        // page cache, mid-writeback, is where filesystems have had races that report
        // a hole where data is; on settled extents it is reliable.
        self.inner.dev.flush().await?;
        // The cut instant: no mutation is running while we hold the gate.
        let _gate = self.inner.gate.write().await;
        self.inner.dev.flush().await?;
        let mut slot = self.inner.cut.lock().unwrap();
        *slot = Arc::downgrade(&cut);
        Ok(cut)
    }

    /// Ends the active cut: waits for in-flight mutations, removes the cut and
    /// deletes its preserve file. A no-op if no cut is active.
    pub async fn end_cut(&self) -> Result<(), SnapshotError> {
        let _serial = self.inner.cut_lock.lock().await;
        let cut = {
            let _gate = self.inner.gate.write().await;
            let mut slot = self.inner.cut.lock().unwrap();
            let cut = slot.upgrade();
            *slot = Weak::new();
            if let Some(c) = &cut {
                c.ended.store(true, Ordering::SeqCst);
            }
            cut
        };
        if let Some(cut) = cut {
            cut.remove_file()?;
        }
        Ok(())
    }

    /// Runs a mutation under the shared gate, after preserving the chunks of
    /// `[offset, offset+len)` for the active cut. It is polled in the caller's task;
    /// the future owns the guard and finishes in a task of its own only if the
    /// caller drops it half-way ([`FinishOnDrop`]).
    async fn mutate<T, F, Fut>(&self, offset: u64, len: u64, preserve: bool, op: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn BlockDevice>, Option<Arc<Cut>>) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
    {
        let gate = &self.inner.gate;
        // Uncontended (no cut being taken or ended) the guard is had without a
        // wait, so a write the page cache takes completes in the first poll.
        let guard = match gate.clone().try_read_owned() {
            Ok(g) => g,
            Err(_) => gate.clone().read_owned().await,
        };
        let cut = self.current_cut();
        let dev = self.inner.dev.clone();
        FinishOnDrop::new(async move {
            let _guard = guard;
            if preserve {
                if let Some(c) = &cut {
                    c.preserve_range(offset, len).await;
                }
            }
            op(dev, cut).await
        })
        .await
    }
}

/// A future that is polled by its caller and, if dropped before it completes,
/// is handed to the runtime to finish (so what it owns, e.g. a gate guard, is
/// released only when the work under it is done). Outside a runtime a dropped
/// future is just dropped.
struct FinishOnDrop<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> FinishOnDrop<F>
where
    F::Output: Send + 'static,
{
    fn new(fut: F) -> Self {
        FinishOnDrop {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            // Polled after it returned Ready: a caller bug; never completes again.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                drop(rt.spawn(fut));
            }
        }
    }
}

#[async_trait::async_trait]
impl BlockDevice for VolumeDevice {
    fn size(&self) -> u64 {
        self.inner.dev.size()
    }

    fn multi_conn_safe(&self) -> bool {
        self.inner.dev.multi_conn_safe()
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.inner.dev.read(offset, len).await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        let len = data.len() as u64;
        self.mutate(offset, len, true, move |dev, _| async move {
            dev.write(offset, data, fua).await
        })
        .await
    }

    async fn write_batch(&self, writes: Vec<(u64, Bytes)>) -> io::Result<()> {
        // One gate guard for the batch; each range is preserved for the cut (if
        // one is being taken) before any of the batch is written.
        self.mutate(0, 0, false, move |dev, cut| async move {
            if let Some(c) = &cut {
                for (offset, data) in &writes {
                    c.preserve_range(*offset, data.len() as u64).await;
                }
            }
            dev.write_batch(writes).await
        })
        .await
    }

    fn read_here(
        &self,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
        wait: bool,
    ) -> Option<io::Result<()>> {
        // Reads take no gate (as `read`).
        self.inner.dev.read_here(offset, len, buf, wait)
    }

    fn write_here(&self, offset: u64, data: &[u8]) -> Option<io::Result<()>> {
        // Under the gate like every mutation, and only while no cut needs ranges
        // preserved (that awaits the cut's copies).
        let _guard = self.inner.gate.try_read().ok()?;
        if self.current_cut().is_some() {
            return None;
        }
        self.inner.dev.write_here(offset, data)
    }

    async fn flush(&self) -> io::Result<()> {
        self.inner.dev.flush().await
    }

    async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(offset, len, true, move |dev, _| async move {
            dev.trim(offset, len).await
        })
        .await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<()> {
        self.mutate(offset, len, true, move |dev, _| async move {
            dev.write_zeroes(offset, len, may_punch, fua).await
        })
        .await
    }

    async fn write_zeroes_fast(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<bool> {
        // Preserving chunks is not cheap: while a cut still needs any chunk in the
        // range, decline (the client falls back to a normal write-zeroes).
        self.mutate(offset, len, false, move |dev, cut| async move {
            if cut.is_some_and(|c| c.needs_preserve(offset, len)) {
                return Ok(false);
            }
            dev.write_zeroes_fast(offset, len, may_punch, fua).await
        })
        .await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.dev.extents(offset, len).await
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.dev.cache(offset, len).await
    }
}

/// A crash-consistent view of a volume, readable chunk by chunk while the volume
/// keeps taking writes. Obtain with [`VolumeDevice::begin_cut`].
pub struct Cut {
    dev: Arc<dyn BlockDevice>,
    size: u64,
    chunk_size: u64,
    state: Vec<AtomicU8>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    preserve: Arc<File>,
    path: PathBuf,
    removed: AtomicBool,
    ended: AtomicBool,
    /// Set when preserving a chunk failed: the cut can no longer be trusted.
    failed: Mutex<Option<String>>,
    copy_sem: Semaphore,
    chunks_preserved: AtomicU64,
    bytes_preserved: AtomicU64,
}

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut")
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("preserve", &self.path)
            .finish()
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = self.remove_file();
    }
}

impl Cut {
    /// Volume size at the cut.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    pub fn chunk_count(&self) -> u64 {
        self.state.len() as u64
    }

    pub fn preserve_path(&self) -> &Path {
        &self.path
    }

    /// Chunks copied to the preserve file so far (including all-zero ones, which are
    /// only marked).
    pub fn chunks_preserved(&self) -> u64 {
        self.chunks_preserved.load(Ordering::SeqCst)
    }

    /// Bytes written to the preserve file so far.
    pub fn bytes_preserved(&self) -> u64 {
        self.bytes_preserved.load(Ordering::SeqCst)
    }

    /// Why the cut became unusable, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }

    fn chunk_len(&self, i: u64) -> u64 {
        (self.size - i * self.chunk_size).min(self.chunk_size)
    }

    fn stripe(&self, i: u64) -> &tokio::sync::Mutex<()> {
        &self.stripes[(i % STRIPES as u64) as usize]
    }

    fn chunk_range(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        let end = offset.saturating_add(len).min(self.size);
        if len == 0 || offset >= end {
            return 0..0;
        }
        offset / self.chunk_size..(end - 1) / self.chunk_size + 1
    }

    fn needs_preserve(&self, offset: u64, len: u64) -> bool {
        !self.ended.load(Ordering::SeqCst)
            && self
                .chunk_range(offset, len)
                .any(|i| self.state[i as usize].load(Ordering::SeqCst) == UNTOUCHED)
    }

    fn remove_file(&self) -> io::Result<()> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(io::Error::other("snapshot cut has ended"));
        }
        if let Some(why) = self.failure() {
            return Err(io::Error::other(format!(
                "snapshot cut is unusable: preserving a chunk failed: {why}"
            )));
        }
        Ok(())
    }

    /// Called by a mutation of `[offset, offset+len)` before it runs: copies every
    /// chunk in the range the snapshot still needs.
    async fn preserve_range(&self, offset: u64, len: u64) {
        for i in self.chunk_range(offset, len) {
            if self.ended.load(Ordering::SeqCst) {
                return;
            }
            if self.state[i as usize].load(Ordering::SeqCst) != UNTOUCHED {
                continue;
            }
            let _lock = self.stripe(i).lock().await;
            if self.state[i as usize].load(Ordering::SeqCst) != UNTOUCHED {
                continue;
            }
            match self.copy_chunk(i).await {
                Ok(new_state) => {
                    self.chunks_preserved.fetch_add(1, Ordering::SeqCst);
                    self.state[i as usize].store(new_state, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(chunk = i, error = %e, path = %self.path.display(),
                        "snapshot: preserving a chunk failed; the snapshot will fail");
                    let mut failed = self.failed.lock().unwrap();
                    if failed.is_none() {
                        *failed = Some(format!("chunk {i}: {e}"));
                    }
                    // The chunk stays UNTOUCHED and the write goes ahead; readers
                    // check `failed` under this same lock and refuse.
                }
            }
        }
    }

    /// Copies chunk `i` from the device to the preserve file, piece by piece,
    /// skipping all-zero pieces (the file is sparse). Returns the new state.
    async fn copy_chunk(&self, i: u64) -> io::Result<u8> {
        let _permit = self
            .copy_sem
            .acquire()
            .await
            .map_err(|_| io::Error::other("semaphore closed"))?;
        let start = i * self.chunk_size;
        let len = self.chunk_len(i);
        if range_reads_zero(&*self.dev, start, len).await? {
            return Ok(PRESERVED_ZERO);
        }
        let mut any = false;
        let mut pos = start;
        while pos < start + len {
            let n = COPY_PIECE.min(start + len - pos);
            let data = self.dev.read(pos, n as u32).await?;
            let file = self.preserve.clone();
            let wrote = tokio::task::spawn_blocking(move || -> io::Result<bool> {
                if is_zero(&data) {
                    return Ok(false);
                }
                file.write_all_at(&data, pos)?;
                Ok(true)
            })
            .await
            .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))??;
            if wrote {
                any = true;
                self.bytes_preserved.fetch_add(n, Ordering::SeqCst);
            }
            pos += n;
        }
        Ok(if any { PRESERVED } else { PRESERVED_ZERO })
    }

    /// The snapshot's view of chunk `i` (the last chunk may be shorter than the chunk
    /// size). A chunk read from the live device can be read only once (after that,
    /// writers no longer preserve it); preserved chunks can be read again.
    pub async fn read_chunk(&self, i: u64) -> io::Result<Bytes> {
        let len = self.chunk_len_checked(i)?;
        Ok(match self.take(i, false).await? {
            Some(data) => data,
            None => Bytes::from(vec![0u8; len as usize]),
        })
    }

    /// Like [`Cut::read_chunk`], but `None` when the chunk is known to read as zeros
    /// (preserved as zero, or the device reports it as a hole/zero extent), without
    /// reading it. `Some` data may still be all zeros.
    pub async fn take_chunk(&self, i: u64) -> io::Result<Option<Bytes>> {
        self.chunk_len_checked(i)?;
        self.take(i, true).await
    }

    fn chunk_len_checked(&self, i: u64) -> io::Result<u64> {
        if i >= self.chunk_count() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("chunk {i} is past the end ({} chunks)", self.chunk_count()),
            ));
        }
        Ok(self.chunk_len(i))
    }

    async fn take(&self, i: u64, zero_hint: bool) -> io::Result<Option<Bytes>> {
        let start = i * self.chunk_size;
        let len = self.chunk_len(i);
        let _lock = self.stripe(i).lock().await;
        self.check_usable()?;
        match self.state[i as usize].load(Ordering::SeqCst) {
            UNTOUCHED => {
                let data = if zero_hint && range_reads_zero(&*self.dev, start, len).await? {
                    None
                } else {
                    Some(self.dev.read(start, len as u32).await?)
                };
                self.state[i as usize].store(TAKEN, Ordering::SeqCst);
                Ok(data)
            }
            PRESERVED => {
                let file = self.preserve.clone();
                let data = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                    let mut buf = BytesMut::zeroed(len as usize);
                    file.read_exact_at(&mut buf, start)?;
                    Ok(buf.freeze())
                })
                .await
                .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))??;
                Ok(Some(data))
            }
            PRESERVED_ZERO => Ok(if zero_hint {
                None
            } else {
                Some(Bytes::from(vec![0u8; len as usize]))
            }),
            _ => Err(io::Error::other(format!(
                "chunk {i} of the cut was already read from the live volume"
            ))),
        }
    }
}

/// True if the device reports `[offset, offset+len)` as reading zeros throughout.
pub(crate) async fn range_reads_zero(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u64,
) -> io::Result<bool> {
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let ext = dev.extents(pos, end - pos).await?;
        if ext.is_empty() {
            return Ok(false);
        }
        for e in ext {
            if !e.zero || e.length == 0 {
                return Ok(false);
            }
            pos = pos.saturating_add(e.length);
            if pos >= end {
                break;
            }
        }
    }
    Ok(true)
}

/// True if every byte is zero.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(16);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap()) == 0)
        && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory device whose writes wait for a permit before they apply.
    struct GatedDev {
        data: Mutex<Vec<u8>>,
        release: Semaphore,
    }

    #[async_trait::async_trait]
    impl BlockDevice for GatedDev {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn multi_conn_safe(&self) -> bool {
            true
        }
        async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
            let d = self.data.lock().unwrap();
            let o = offset as usize;
            Ok(Bytes::copy_from_slice(&d[o..o + len as usize]))
        }
        async fn write(&self, offset: u64, data: Bytes, _fua: bool) -> io::Result<()> {
            let permit = self.release.acquire().await.map_err(io::Error::other)?;
            permit.forget();
            let o = offset as usize;
            self.data.lock().unwrap()[o..o + data.len()].copy_from_slice(&data);
            Ok(())
        }
        async fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        async fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
            Ok(())
        }
        async fn write_zeroes(&self, _o: u64, _l: u64, _p: bool, _f: bool) -> io::Result<()> {
            Ok(())
        }
        async fn extents(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
            Ok(vec![Extent {
                length: len,
                hole: false,
                zero: false,
            }])
        }
    }

    /// A write whose caller goes away half-way (a closed NBD connection) still
    /// completes, and a cut taken meanwhile waits for it: the cut holds its bytes.
    #[tokio::test]
    async fn a_dropped_write_completes_before_the_next_cut() {
        let dev = Arc::new(GatedDev {
            data: Mutex::new(vec![0u8; 2 * MIN_CHUNK_SIZE as usize]),
            release: Semaphore::new(0),
        });
        let vol = VolumeDevice::new(dev.clone());
        let mut write = Box::pin(vol.write(4096, Bytes::from(vec![7u8; 8192]), false));
        assert!(futures::poll!(write.as_mut()).is_pending());
        drop(write);
        assert_eq!(dev.data.lock().unwrap()[4096], 0, "nothing applied yet");

        let dir = tempfile::tempdir().unwrap();
        let preserve = dir.path().join("preserve");
        let taking = vol.begin_cut(MIN_CHUNK_SIZE, &preserve);
        let release = async {
            tokio::task::yield_now().await;
            dev.release.add_permits(1);
        };
        let (cut, ()) = tokio::join!(taking, release);
        let cut = cut.unwrap();
        assert!(dev.data.lock().unwrap()[4096..4096 + 8192]
            .iter()
            .all(|&b| b == 7));
        let chunk = cut.read_chunk(0).await.unwrap();
        assert!(chunk[4096..4096 + 8192].iter().all(|&b| b == 7));
        assert!(chunk[..4096].iter().all(|&b| b == 0));
        drop(cut);
        vol.end_cut().await.unwrap();
    }

    /// With no cut, a write the device completes at once completes in the
    /// caller's first poll: no task in between.
    #[tokio::test]
    async fn a_write_without_a_cut_completes_in_the_first_poll() {
        let dev = Arc::new(GatedDev {
            data: Mutex::new(vec![0u8; MIN_CHUNK_SIZE as usize]),
            release: Semaphore::new(1),
        });
        let vol = VolumeDevice::new(dev.clone());
        let mut write = Box::pin(vol.write(0, Bytes::from_static(b"abc"), false));
        assert!(futures::poll!(write.as_mut()).is_ready());
        assert_eq!(&dev.data.lock().unwrap()[..3], b"abc");
    }
}
