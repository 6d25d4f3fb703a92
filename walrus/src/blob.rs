//! Object bytes, through the `object_store` crate.
//!
//! Blobs are named by ids we generate (never by S3 keys): `blobs/<2 hex>/<32 hex>`.
//! The default store is `object_store`'s local filesystem with fsync on: a blob is
//! written to a staging file, fsynced, renamed and its directory fsynced before we
//! commit the metadata that points at it. Any `object_store` backend (S3, GCS, Azure)
//! can take its place; for those, durability is the remote store's own.
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
    WriteMultipart,
};
use rand::RngCore;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Writes to a remote store go in parts of this size (S3's smallest part is 5 MiB),
/// at most `WRITE_CONCURRENCY` in flight: memory per upload is bounded by
/// `WRITE_PART * (WRITE_CONCURRENCY + 1)`. A blob that ends before its first part
/// is full is sent in one PUT.
const WRITE_PART: usize = 8 << 20;
const WRITE_CONCURRENCY: usize = 2;
/// Read chunk size for local files.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no space left on the data device")]
    NoSpace,
    #[error("blob not found")]
    NotFound,
}

fn classify(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e if format!("{e:?}").contains("StorageFull")
            || e.to_string().contains("No space left") =>
        {
            BlobError::NoSpace
        }
        e => BlobError::Store(e),
    }
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local filesystem: reads bypass `object_store`'s small chunks.
    local_root: Option<PathBuf>,
    /// Local writes use `O_DIRECT` where chunks allow it (`[walrus] direct_writes`).
    direct: bool,
}

/// A length-preserving transformation of a blob's bytes (server-side encryption's
/// AES-CTR), run where the bytes are read or written: for the local store on its
/// blocking I/O thread, off the runtime.
pub type Transform = Box<dyn FnMut(Bytes) -> std::io::Result<Bytes> + Send>;

/// `url` without its query (which may carry a secret key), for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

pub fn new_blob_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn path_of(id: &str) -> StorePath {
    StorePath::from(format!("blobs/{}/{}", &id[..2.min(id.len())], id))
}

impl BlobStore {
    /// The default: a local directory, fsync on.
    pub fn local(root: PathBuf) -> Result<Self, BlobError> {
        std::fs::create_dir_all(&root)?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_fsync(true);
        Ok(Self {
            store: Arc::new(fs),
            local_root: Some(root),
            direct: true,
        })
    }

    /// Local writes with `O_DIRECT` where chunks allow it (the default) or always
    /// through the page cache. Remote stores have no say in it.
    pub fn with_direct_writes(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// Any other `object_store` backend.
    pub fn remote(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            direct: false,
        }
    }

    /// Starts a new blob.
    pub async fn create(&self) -> Result<BlobWriter, BlobError> {
        self.create_as(new_blob_id(), None).await
    }

    /// Starts a new blob whose bytes pass through the transform `make` returns for
    /// its id before they are stored.
    pub async fn create_transformed(
        &self,
        make: impl FnOnce(&str) -> std::io::Result<Transform>,
    ) -> Result<BlobWriter, BlobError> {
        let id = new_blob_id();
        let t = make(&id)?;
        self.create_as(id, Some(t)).await
    }

    /// Starts a blob under a given id (a copy from another store keeps its id).
    pub(crate) async fn create_with_id(&self, id: &str) -> Result<BlobWriter, BlobError> {
        self.create_as(id.to_string(), None).await
    }

    async fn create_as(&self, id: String, t: Option<Transform>) -> Result<BlobWriter, BlobError> {
        if let Some(root) = &self.local_root {
            let dest = root.join(path_of(&id).as_ref());
            return Ok(BlobWriter {
                id,
                size: 0,
                w: Some(Sink::Local(LocalWriter::start(dest, t, self.direct))),
                transform: None,
            });
        }
        Ok(BlobWriter {
            w: Some(Sink::Buffer {
                store: self.store.clone(),
                path: path_of(&id),
                chunks: Vec::new(),
                len: 0,
            }),
            id,
            size: 0,
            transform: t,
        })
    }

    /// Writes a small blob in one go.
    pub async fn put(&self, data: Bytes) -> Result<String, BlobError> {
        let mut w = self.create().await?;
        w.write(data).await?;
        w.finish().await
    }

    /// Streams `range` (or everything) of a blob.
    pub async fn read(
        &self,
        id: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        self.read_transformed(id, range, None).await
    }

    /// Streams `range` (or everything) of a blob through `t`.
    pub async fn read_transformed(
        &self,
        id: &str,
        range: Option<std::ops::Range<u64>>,
        t: Option<Transform>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(&path_of(id), opts)
            .await
            .map_err(classify)?;
        let r = res.range.clone();
        Ok(match (res.payload, t) {
            (GetResultPayload::File(file, _), t) => file_stream(file, r, t),
            (payload, t) => {
                let s = GetResult { payload, ..res }
                    .into_stream()
                    .map(|r| r.map_err(classify));
                match t {
                    None => s.boxed(),
                    Some(mut t) => s
                        .map(move |r| r.and_then(|b| t(b).map_err(BlobError::Io)))
                        .boxed(),
                }
            }
        })
    }

    pub async fn delete(&self, id: &str) -> Result<(), BlobError> {
        match self.store.delete(&path_of(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Server-side copy into a new blob (a hard link on the local store).
    pub async fn copy(&self, id: &str) -> Result<String, BlobError> {
        let new = new_blob_id();
        self.store
            .copy(&path_of(id), &path_of(&new))
            .await
            .map_err(classify)?;
        Ok(new)
    }

    /// Deletes every blob not in `referenced`, and leftover staging files; returns how
    /// many were removed. Run at startup, before any request is served. A store shared
    /// with other front ends passes `min_age`: a blob or staging file younger than that
    /// may be one another front end is writing, or has written and not yet committed,
    /// and stays (`referenced` must be read before the sweep starts).
    pub async fn sweep(
        &self,
        referenced: &std::collections::HashSet<String>,
        min_age: std::time::Duration,
    ) -> Result<usize, BlobError> {
        let now = std::time::SystemTime::now();
        let old_enough = move |modified: std::time::SystemTime| {
            now.duration_since(modified).unwrap_or_default() >= min_age
        };
        let mut removed = 0;
        let mut list = self.store.list(Some(&StorePath::from("blobs")));
        let mut doomed = Vec::new();
        while let Some(item) = list.next().await {
            let meta = item.map_err(classify)?;
            let id = meta.location.filename().unwrap_or_default().to_string();
            // Only our ids are blobs; anything else (staging files) is handled below.
            let is_blob = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            let modified = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(
                    meta.last_modified.timestamp_millis().max(0) as u64
                );
            if is_blob && !referenced.contains(&id) && old_enough(modified) {
                doomed.push((id, meta.location));
            }
        }
        // A copy is a hard link (object_store's local `copy`): the new name keeps the
        // source's mtime, so a blob copied a moment ago by another front end looks
        // old. Linking changes the inode's ctime: locally, the younger of the two
        // decides.
        if let Some(root) = &self.local_root {
            if !min_age.is_zero() {
                let root = root.clone();
                doomed = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::MetadataExt;
                    doomed
                        .into_iter()
                        .filter(|(_, loc)| {
                            match std::fs::metadata(root.join(loc.as_ref())) {
                                Ok(m) => {
                                    // Seconds and nanoseconds: the whole seconds alone
                                    // make a link look up to a second older than it is.
                                    let ctime = std::time::UNIX_EPOCH
                                        + std::time::Duration::new(
                                            m.ctime().max(0) as u64,
                                            m.ctime_nsec().clamp(0, 999_999_999) as u32,
                                        );
                                    old_enough(ctime)
                                }
                                // Gone already (another front end's sweep).
                                Err(_) => false,
                            }
                        })
                        .collect()
                })
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
            }
        }
        let doomed: Vec<String> = doomed.into_iter().map(|(id, _)| id).collect();
        for id in doomed {
            self.delete(&id).await?;
            removed += 1;
        }
        if let Some(root) = &self.local_root {
            // object_store stages local writes as `<name>#<n>`; a crash leaves them.
            let root = root.join("blobs");
            removed += tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
                let mut n = 0;
                let Ok(dirs) = std::fs::read_dir(&root) else {
                    return Ok(0);
                };
                for d in dirs {
                    let d = d?;
                    if !d.file_type()?.is_dir() {
                        continue;
                    }
                    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
                    for f in std::fs::read_dir(d.path())? {
                        let f = f?;
                        if !f.file_name().to_string_lossy().contains('#') {
                            continue;
                        }
                        // Another front end may rename or remove it meanwhile.
                        let old = match f.metadata() {
                            Ok(m) => m.modified().is_ok_and(old_enough),
                            Err(e) if gone(&e) => false,
                            Err(e) => return Err(e),
                        };
                        if old {
                            match std::fs::remove_file(f.path()) {
                                Ok(()) => n += 1,
                                Err(e) if gone(&e) => {}
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        }
        Ok(removed)
    }
}

/// Reads a local file in large chunks off the runtime (transformed there too).
fn file_stream(
    file: File,
    range: std::ops::Range<u64>,
    t: Option<Transform>,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    let file = Arc::new(file);
    let t = t.map(|t| Arc::new(std::sync::Mutex::new(t)));
    futures::stream::try_unfold((file, range.start, range.end), move |(file, pos, end)| {
        let t = t.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = ((end - pos) as usize).min(READ_CHUNK);
            let f = file.clone();
            let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                use std::io::{Read, Seek};
                // Read into the buffer's spare capacity: `read_to_end` never zeroes
                // it first (zeroing 1 MiB per chunk was 6 % of a large GET's CPU).
                // The descriptor is this stream's own, so its position is ours.
                let mut buf = Vec::with_capacity(len);
                (&*f).seek(std::io::SeekFrom::Start(pos))?;
                (&*f).take(len as u64).read_to_end(&mut buf)?;
                if buf.len() < len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shorter than recorded",
                    ));
                }
                match &t {
                    None => Ok(Bytes::from(buf)),
                    Some(t) => {
                        let mut t = t
                            .lock()
                            .map_err(|_| std::io::Error::other("blob transform poisoned"))?;
                        t(Bytes::from(buf))
                    }
                }
            })
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
            Ok(Some((buf, (file, pos + len as u64, end))))
        }
    })
    .boxed()
}

/// A blob being written. Dropping it without `finish` discards the staged data.
pub struct BlobWriter {
    pub id: String,
    size: u64,
    w: Option<Sink>,
    /// Applied before a remote store's writes (the local writer applies its own).
    transform: Option<Transform>,
}

enum Sink {
    Local(LocalWriter),
    /// A remote blob's first bytes, until they fill a part (or the blob ends).
    Buffer {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        chunks: Vec<Bytes>,
        len: usize,
    },
    Store(WriteMultipart),
}

impl BlobWriter {
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        self.size += data.len() as u64;
        let sink = self.w.as_mut().ok_or(BlobError::NotFound)?;
        if let Sink::Local(l) = sink {
            return l.write(data).await;
        }
        let data = match self.transform.as_mut() {
            Some(t) => t(data)?,
            None => data,
        };
        match sink {
            Sink::Local(_) => unreachable!("handled above"),
            Sink::Buffer {
                store,
                path,
                chunks,
                len,
            } => {
                *len += data.len();
                chunks.push(data);
                if *len >= WRITE_PART {
                    let upload = store.put_multipart(path).await.map_err(classify)?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, WRITE_PART);
                    for c in std::mem::take(chunks) {
                        w.put(c);
                    }
                    *sink = Sink::Store(w);
                }
                Ok(())
            }
            Sink::Store(w) => {
                w.wait_for_capacity(WRITE_CONCURRENCY)
                    .await
                    .map_err(classify)?;
                w.put(data);
                Ok(())
            }
        }
    }

    /// Durably publishes the blob; returns its id.
    pub async fn finish(mut self) -> Result<String, BlobError> {
        match self.w.take().ok_or(BlobError::NotFound)? {
            Sink::Local(l) => l.finish().await?,
            Sink::Buffer {
                store,
                path,
                chunks,
                ..
            } => {
                store
                    .put(&path, PutPayload::from_iter(chunks))
                    .await
                    .map_err(classify)?;
            }
            Sink::Store(w) => {
                w.finish().await.map_err(classify)?;
            }
        }
        Ok(self.id.clone())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn abort(mut self) {
        match self.w.take() {
            Some(Sink::Store(w)) => {
                let _ = w.abort().await;
            }
            Some(Sink::Local(l)) => l.abort().await,
            Some(Sink::Buffer { .. }) | None => {}
        }
    }
}

enum Msg {
    Data(Bytes),
    Finish,
}

/// The local filesystem writer: a staging file `<id>#w` beside its final name, written
/// on a blocking thread (`O_DIRECT` for the aligned chunks a request body yields,
/// write-behind through the page cache for the rest), then fsync, rename, fsync of the directory
/// (the same publish protocol as `object_store`'s local store with fsync on, which
/// serves every read, delete, copy and listing of these blobs).
struct LocalWriter {
    tx: tokio::sync::mpsc::Sender<Msg>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalWriter {
    fn start(dest: PathBuf, mut transform: Option<Transform>, direct: bool) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(2);
        let done = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = dest.parent().map(PathBuf::from).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            let tmp = PathBuf::from(format!("{}#w", dest.display()));
            let result = (|| {
                let file = File::create(&tmp)?;
                let mut f = if direct {
                    euca_durable::DirectWriter::new(file)
                } else {
                    euca_durable::DirectWriter::buffered(file)
                };
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Data(b) => {
                            let b = match transform.as_mut() {
                                Some(t) => t(b)?,
                                None => b,
                            };
                            f.write_chunk(&b)?;
                        }
                        Msg::Finish => {
                            let f = f.into_inner();
                            f.sync_data()?;
                            drop(f);
                            std::fs::rename(&tmp, &dest)?;
                            File::open(&dir)?.sync_all()?;
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            })();
            match result {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(std::io::Error::other("blob write abandoned"))
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        });
        Self {
            tx,
            done: Some(done),
        }
    }

    /// The writer thread's outcome (it ends on Finish, on error, or when abandoned).
    async fn outcome(&mut self) -> Result<(), BlobError> {
        match self.done.take() {
            Some(h) => match h.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(io_error(e)),
                Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
            },
            None => Err(BlobError::Io(std::io::Error::other(
                "blob writer already finished",
            ))),
        }
    }

    async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        if self.tx.send(Msg::Data(data)).await.is_err() {
            // The writer stopped early: its error says why.
            self.outcome().await?;
            return Err(BlobError::Io(std::io::Error::other("blob writer stopped")));
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), BlobError> {
        let _ = self.tx.send(Msg::Finish).await;
        self.outcome().await
    }

    async fn abort(self) {
        let Self { tx, done } = self;
        drop(tx);
        if let Some(h) = done {
            let _ = h.await;
        }
    }
}

fn io_error(e: std::io::Error) -> BlobError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        BlobError::NoSpace
    } else {
        BlobError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn messages_leave_the_query_out() {
        assert_eq!(redacted("s3://b/p?secret_access_key=s"), "s3://b/p?…");
        assert_eq!(redacted("s3://b/p"), "s3://b/p");
    }
}
