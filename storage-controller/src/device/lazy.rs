//! A volume created from a snapshot, usable at once, that pulls chunks from the
//! chunk store on first touch.
//!
//! The volume's bytes live in a local base device (a fresh sparse file). A presence
//! map file records which snapshot chunks have been copied into it: a 64-byte header
//! binding it to the manifest, then one byte per chunk (0 absent, 1 present). All-zero
//! chunks are present from the start (the fresh base already reads zero there).
//!
//! A fetch writes the chunk into the base, flushes the base, and only then marks the
//! chunk present and `fdatasync`s the map, so a crash can leave a fetched chunk
//! unmarked (it is fetched again) but never a chunk marked present without its data.
//! Every read, write, trim or write-zeroes first makes the chunks it touches present,
//! so a guest's write can never be overwritten by a late fetch. Concurrent requests
//! for one chunk share one fetch. A failed fetch is an I/O error (EIO to an NBD
//! client), never zeros.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};

use super::block::{BlockDevice, Extent};
use super::cow::range_reads_zero;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::manifest::SnapshotManifest;
use euca_chunks::{chunk_id, ChunkStore};

const MAGIC: &[u8; 8] = b"EUCALAZY";
const MAP_VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
/// Chunk fetches in flight at once per volume (memory: this × chunk size).
const FETCH_PARALLEL: usize = 4;
/// Most extents one `extents` call reports.
const MAX_EXTENTS: usize = 4096;

type FetchResult = Option<Result<(), String>>;

/// A volume backed by a local base device that fills itself from a snapshot.
#[derive(Clone)]
pub struct LazyDevice {
    inner: Arc<LazyInner>,
}

struct LazyInner {
    base: Arc<dyn BlockDevice>,
    manifest: SnapshotManifest,
    store: Arc<dyn ChunkStore>,
    present: Vec<AtomicBool>,
    present_count: AtomicU64,
    map: Arc<File>,
    map_path: PathBuf,
    /// Fetches in flight, by chunk index (single flight).
    inflight: Mutex<HashMap<u64, watch::Receiver<FetchResult>>>,
    fetch_sem: Semaphore,
}

impl std::fmt::Debug for LazyDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, t) = self.chunks_present();
        f.debug_struct("LazyDevice")
            .field("snapshot", &self.inner.manifest.snapshot_id)
            .field("presence", &self.inner.map_path)
            .field("chunks_present", &p)
            .field("chunks_total", &t)
            .finish()
    }
}

fn header(manifest: &SnapshotManifest) -> Result<[u8; HEADER_LEN as usize], SnapshotError> {
    let json = serde_json::to_vec(manifest)
        .map_err(|e| SnapshotError::Invalid(format!("encoding manifest: {e}")))?;
    let digest = hex::decode(chunk_id(&json)).expect("hex of a digest");
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&MAP_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&manifest.chunk_size.to_le_bytes());
    h[24..32].copy_from_slice(&(manifest.chunks.len() as u64).to_le_bytes());
    h[32..64].copy_from_slice(&digest);
    Ok(h)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn open_map(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Loads an existing map, or `None` if there is none.
fn load_map(
    path: &Path,
    want_header: &[u8; HEADER_LEN as usize],
    n: usize,
) -> Result<Option<(File, Vec<u8>)>, SnapshotError> {
    let file = match open_map(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len != HEADER_LEN + n as u64 {
        return Err(SnapshotError::Invalid(format!(
            "presence map {} is {len} bytes, expected {}",
            path.display(),
            HEADER_LEN + n as u64
        )));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    if buf[..HEADER_LEN as usize] != want_header[..] {
        return Err(SnapshotError::Invalid(format!(
            "presence map {} belongs to another snapshot manifest",
            path.display()
        )));
    }
    let bits = buf.split_off(HEADER_LEN as usize);
    if bits.iter().any(|&b| b > 1) {
        return Err(SnapshotError::Invalid(format!(
            "presence map {} is corrupt",
            path.display()
        )));
    }
    Ok(Some((file, bits)))
}

/// Writes a new map durably: temp file, fdatasync, rename, fsync the directory.
fn create_map(path: &Path, header: &[u8], bits: &[u8]) -> io::Result<File> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all_at(header, 0)?;
    f.write_all_at(bits, HEADER_LEN)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(f)
}

impl LazyDevice {
    /// Opens (or starts) a volume from `manifest` on `base`, whose size must be at
    /// least the snapshot's (anything past it reads as the base does: zeros on a
    /// fresh file). The presence map at `presence_path` is created if absent; in that
    /// case the base must read as zeros throughout (a fresh sparse file), which is
    /// checked, so a lost map can't cause chunks to be fetched over a guest's writes.
    /// If the map exists it must belong to this exact manifest.
    pub async fn open(
        base: Arc<dyn BlockDevice>,
        manifest: SnapshotManifest,
        store: Arc<dyn ChunkStore>,
        presence_path: &Path,
    ) -> Result<Self, SnapshotError> {
        manifest.validate()?;
        if base.size() < manifest.size {
            return Err(SnapshotError::Invalid(format!(
                "base device is {} bytes, snapshot {} is {}",
                base.size(),
                manifest.snapshot_id,
                manifest.size
            )));
        }
        let n = manifest.chunks.len();
        let hdr = header(&manifest)?;
        let path = presence_path.to_path_buf();
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || load_map(&path, &hdr, n))
                .await
                .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))??
        };
        let (map, bits) = match loaded {
            Some(found) => found,
            None => {
                if !range_reads_zero(&*base, 0, base.size()).await? {
                    return Err(SnapshotError::Invalid(format!(
                        "no presence map at {} and the base device is not empty: \
                         refusing to fill it from snapshot {}",
                        path.display(),
                        manifest.snapshot_id
                    )));
                }
                let bits: Vec<u8> = manifest
                    .chunks
                    .iter()
                    .map(|c| u8::from(c.is_none()))
                    .collect();
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    create_map(&path, &hdr, &bits).map(|f| (f, bits))
                })
                .await
                .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))??
            }
        };
        let present: Vec<AtomicBool> = bits.iter().map(|&b| AtomicBool::new(b == 1)).collect();
        let count = bits.iter().filter(|&&b| b == 1).count() as u64;
        Ok(LazyDevice {
            inner: Arc::new(LazyInner {
                base,
                manifest,
                store,
                present,
                present_count: AtomicU64::new(count),
                map: Arc::new(map),
                map_path: path,
                inflight: Mutex::new(HashMap::new()),
                fetch_sem: Semaphore::new(FETCH_PARALLEL),
            }),
        })
    }

    pub fn manifest(&self) -> &SnapshotManifest {
        &self.inner.manifest
    }

    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        &self.inner.base
    }

    pub fn presence_path(&self) -> &Path {
        &self.inner.map_path
    }

    /// (chunks present locally, chunks in the snapshot); zero chunks count as present.
    pub fn chunks_present(&self) -> (u64, u64) {
        (
            self.inner.present_count.load(Ordering::SeqCst),
            self.inner.present.len() as u64,
        )
    }

    /// True once every chunk is local: the base alone is the volume from then on
    /// (the presence map may be deleted and the base used as a plain volume).
    pub fn is_complete(&self) -> bool {
        let (p, t) = self.chunks_present();
        p == t
    }

    /// Fetches every chunk still missing, a few at a time. A chunk that fails does
    /// not stop the others; the first error is returned at the end, and calling it
    /// again retries what is still missing.
    pub async fn fill_all(&self) -> io::Result<()> {
        let missing: Vec<u64> = (0..self.inner.present.len() as u64)
            .filter(|&i| !self.inner.is_present(i))
            .collect();
        let mut s = futures::stream::iter(missing)
            .map(|i| self.inner.clone().ensure_chunk(i))
            .buffer_unordered(FETCH_PARALLEL);
        let mut first_err = None;
        while let Some(r) = s.next().await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn ensure_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let cs = self.inner.manifest.chunk_size;
        let n = self.inner.present.len() as u64;
        let end = offset.saturating_add(len).min(self.inner.manifest.size);
        if len == 0 || offset >= end {
            return Ok(());
        }
        let first = offset / cs;
        let last = ((end - 1) / cs).min(n - 1);
        let missing: Vec<u64> = (first..=last)
            .filter(|&i| !self.inner.is_present(i))
            .collect();
        match missing.len() {
            0 => Ok(()),
            1 => self.inner.clone().ensure_chunk(missing[0]).await,
            _ => {
                let results = futures::future::join_all(
                    missing
                        .into_iter()
                        .map(|i| self.inner.clone().ensure_chunk(i)),
                )
                .await;
                results.into_iter().collect()
            }
        }
    }
}

impl LazyInner {
    fn is_present(&self, i: u64) -> bool {
        self.present
            .get(i as usize)
            .is_none_or(|p| p.load(Ordering::SeqCst))
    }

    /// Makes chunk `i` present, fetching it once however many callers ask.
    async fn ensure_chunk(self: Arc<Self>, i: u64) -> io::Result<()> {
        if self.is_present(i) {
            return Ok(());
        }
        let mut rx = {
            let mut inflight = self.inflight.lock().unwrap();
            // Checked again under the lock: a fetch marks present before it leaves
            // the map, so "absent and not in flight" here means nobody has it.
            if self.is_present(i) {
                return Ok(());
            }
            match inflight.get(&i) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(i, rx.clone());
                    // A task of its own: a reader that goes away must not cancel a
                    // fetch others wait on.
                    let me = self.clone();
                    tokio::spawn(async move {
                        let r = me.fetch(i).await;
                        if r.is_ok() {
                            me.present[i as usize].store(true, Ordering::SeqCst);
                            me.present_count.fetch_add(1, Ordering::SeqCst);
                        }
                        me.inflight.lock().unwrap().remove(&i);
                        // Let go of the device before waking anyone, so a caller
                        // that drops it next really closes the base.
                        drop(me);
                        let _ = tx.send(Some(r.map_err(|e| e.to_string())));
                    });
                    rx
                }
            }
        };
        let outcome = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| io::Error::other(format!("fetch of chunk {i} was abandoned")))?
            .clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(msg)) => Err(io::Error::other(msg)),
            None => unreachable!("waited for Some"),
        }
    }

    /// Fetches chunk `i` into the base and marks it present durably.
    async fn fetch(&self, i: u64) -> io::Result<()> {
        let _permit = self
            .fetch_sem
            .acquire()
            .await
            .map_err(|_| io::Error::other("semaphore closed"))?;
        let m = &self.manifest;
        let Some(id) = &m.chunks[i as usize] else {
            return Err(io::Error::other(format!(
                "chunk {i} of {} is zero but not marked present",
                m.snapshot_id
            )));
        };
        let fail = |what: String| {
            tracing::error!(snapshot = %m.snapshot_id, chunk = i, id = %id, "{what}");
            io::Error::other(format!(
                "snapshot {} chunk {i} ({id}): {what}",
                m.snapshot_id
            ))
        };
        let data: Bytes = self
            .store
            .get_chunk(id)
            .await
            .map_err(|e| fail(format!("fetch failed: {e}")))?;
        let want = m.chunk_len(i);
        if data.len() as u64 != want {
            return Err(fail(format!("got {} bytes, expected {want}", data.len())));
        }
        self.base.write(i * m.chunk_size, data, false).await?;
        self.base.flush().await?;
        let map = self.map.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            map.write_all_at(&[1], HEADER_LEN + i)?;
            map.sync_data()
        })
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))??;
        Ok(())
    }
}

fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if e.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.hole == e.hole && last.zero == e.zero {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}

#[async_trait::async_trait]
impl BlockDevice for LazyDevice {
    fn size(&self) -> u64 {
        self.inner.base.size()
    }

    fn multi_conn_safe(&self) -> bool {
        self.inner.base.multi_conn_safe()
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.ensure_range(offset, len as u64).await?;
        self.inner.base.read(offset, len).await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        self.ensure_range(offset, data.len() as u64).await?;
        self.inner.base.write(offset, data, fua).await
    }

    async fn write_batch(&self, writes: Vec<(u64, Bytes)>) -> io::Result<()> {
        for (offset, data) in &writes {
            self.ensure_range(*offset, data.len() as u64).await?;
        }
        self.inner.base.write_batch(writes).await
    }

    async fn flush(&self) -> io::Result<()> {
        self.inner.base.flush().await
    }

    async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.ensure_range(offset, len).await?;
        self.inner.base.trim(offset, len).await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<()> {
        self.ensure_range(offset, len).await?;
        self.inner
            .base
            .write_zeroes(offset, len, may_punch, fua)
            .await
    }

    async fn write_zeroes_fast(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<bool> {
        // Fetching a chunk first is not fast.
        let cs = self.inner.manifest.chunk_size;
        let end = offset.saturating_add(len);
        if len > 0 && (offset / cs..=(end - 1) / cs).any(|i| !self.inner.is_present(i)) {
            return Ok(false);
        }
        self.inner
            .base
            .write_zeroes_fast(offset, len, may_punch, fua)
            .await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let inner = &self.inner;
        let cs = inner.manifest.chunk_size;
        let end = offset.saturating_add(len).min(inner.base.size());
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end && out.len() < MAX_EXTENTS {
            let i = pos / cs;
            let present = inner.is_present(i);
            // The run of chunks sharing this presence, clipped to the request.
            let mut j = i + 1;
            while j * cs < end && inner.is_present(j) == present {
                j += 1;
            }
            let stop = (j * cs).min(end);
            if !present {
                push_extent(
                    &mut out,
                    Extent {
                        length: stop - pos,
                        hole: false,
                        zero: false,
                    },
                );
                pos = stop;
                continue;
            }
            let ext = inner.base.extents(pos, stop - pos).await?;
            if ext.is_empty() {
                return Err(io::Error::other("base device reported no extents"));
            }
            for e in ext {
                let length = e.length.min(stop - pos);
                push_extent(&mut out, Extent { length, ..e });
                pos += length;
                if pos >= stop {
                    break;
                }
            }
        }
        if out.is_empty() && len > 0 {
            // Past the end: nothing to describe; report zeros like a hole.
            out.push(Extent {
                length: len,
                hole: true,
                zero: true,
            });
        }
        Ok(out)
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        // The prefetch hint is exactly what a lazy volume wants.
        self.ensure_range(offset, len).await?;
        self.inner.base.cache(offset, len).await
    }
}
