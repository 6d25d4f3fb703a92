//! Content-addressed chunk storage for snapshots.
//!
//! A snapshot is a [`SnapshotManifest`] plus the chunks it lists. Chunks are keyed by
//! the SHA-256 of their bytes (64 lowercase hex), so two snapshots, or two chunks of
//! one snapshot, with the same bytes share one stored object; all-zero chunks are not
//! stored at all (`None` in the manifest). In Walrus the layout is
//! `chunks/<sha256hex>` and `snapshots/<snapshot-id>.json` in one bucket
//! (design.md, "Content addressing").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Chunk size of new snapshots.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest chunk size a manifest may declare.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Largest chunk size a manifest may declare (also the most a chunk GET reads).
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Manifest format written by this code.
pub const MANIFEST_FORMAT: u32 = 1;
/// Largest manifest we read (a 16 TiB volume at 4 MiB chunks is ~280 MB of JSON at
/// worst; anything near this limit should use bigger chunks).
const MAX_MANIFEST_BYTES: usize = 512 << 20;

/// What a snapshot is: its geometry and the chunk list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u32,
    pub snapshot_id: String,
    pub volume_id: String,
    /// Volume size in bytes at the time of the snapshot.
    pub size: u64,
    pub chunk_size: u64,
    /// SHA-256 hex per chunk index; `None` = all zeros (not stored). The last chunk
    /// is `size - (n-1) * chunk_size` bytes long, every other one `chunk_size`.
    pub chunks: Vec<Option<String>>,
}

impl SnapshotManifest {
    /// Number of chunks a volume of `size` bytes has at `chunk_size`.
    pub fn chunk_count_for(size: u64, chunk_size: u64) -> u64 {
        size.div_ceil(chunk_size)
    }

    /// Length in bytes of chunk `index` (the last may be short).
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index * self.chunk_size;
        self.size.saturating_sub(start).min(self.chunk_size)
    }

    /// Distinct chunk ids this manifest references.
    pub fn chunk_ids(&self) -> std::collections::HashSet<&str> {
        self.chunks.iter().flatten().map(|s| s.as_str()).collect()
    }

    /// Checks everything a reader relies on: format, geometry, chunk count and ids.
    pub fn validate(&self) -> Result<(), ChunkError> {
        let bad = |m: String| Err(ChunkError::InvalidManifest(m));
        if self.format != MANIFEST_FORMAT {
            return bad(format!("unknown manifest format {}", self.format));
        }
        validate_snapshot_id(&self.snapshot_id)?;
        if !self.chunk_size.is_power_of_two()
            || self.chunk_size < MIN_CHUNK_SIZE
            || self.chunk_size > MAX_CHUNK_SIZE
        {
            return bad(format!(
                "chunk size {} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]",
                self.chunk_size
            ));
        }
        let want = Self::chunk_count_for(self.size, self.chunk_size);
        if self.chunks.len() as u64 != want {
            return bad(format!(
                "{} chunks listed, size {} at chunk size {} needs {want}",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        for id in self.chunks.iter().flatten() {
            validate_chunk_id(id)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("chunk {id} is corrupt: its bytes hash to {actual}")]
    Corrupt { id: String, actual: String },
    #[error("invalid chunk id {0:?} (want 64 lowercase hex digits)")]
    InvalidId(String),
    #[error("invalid snapshot id {0:?}")]
    InvalidSnapshotId(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("chunk store: {0}")]
    S3(#[from] euca_s3::S3ClientError),
    #[error("chunk store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Where snapshot chunks and manifests live. Implementations must be safe to call
/// concurrently.
#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    async fn has_chunk(&self, sha256_hex: &str) -> Result<bool, ChunkError>;
    /// Stores `data` under its hash; storing an id that exists is harmless.
    async fn put_chunk(&self, sha256_hex: &str, data: Bytes) -> Result<(), ChunkError>;
    /// Verifies the SHA-256 of what it got; a mismatch is an error, never returned data.
    async fn get_chunk(&self, sha256_hex: &str) -> Result<Bytes, ChunkError>;
    async fn delete_chunk(&self, sha256_hex: &str) -> Result<(), ChunkError>;
    async fn put_manifest(&self, m: &SnapshotManifest) -> Result<(), ChunkError>;
    /// Reads and validates a manifest ([`SnapshotManifest::validate`], and its id is
    /// the one asked for).
    async fn get_manifest(&self, snapshot_id: &str) -> Result<SnapshotManifest, ChunkError>;
    async fn delete_manifest(&self, snapshot_id: &str) -> Result<(), ChunkError>;
    /// Every stored chunk, with when it was stored (`None` if unknown). Entries
    /// that are not chunk ids are left out.
    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError>;
    /// The snapshot id of every stored manifest. Entries that are not manifests
    /// are left out.
    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError>;
}

/// A chunk in a [`ChunkStore`] listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub id: String,
    /// When the chunk was last written, if the store says.
    pub stored_at: Option<std::time::SystemTime>,
}

pub use euca_aws::hash::sha256_hex;

/// A chunk id is exactly 64 lowercase hex digits.
pub fn validate_chunk_id(id: &str) -> Result<(), ChunkError> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ChunkError::InvalidId(id.into()))
    }
}

/// Snapshot ids become object keys and file names: 1–128 of `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn validate_snapshot_id(id: &str) -> Result<(), ChunkError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ChunkError::InvalidSnapshotId(id.into()))
    }
}

/// Checks that `data` hashes to `id`.
pub fn verify_chunk(id: &str, data: &[u8]) -> Result<(), ChunkError> {
    let actual = sha256_hex(data);
    if actual == id {
        Ok(())
    } else {
        Err(ChunkError::Corrupt {
            id: id.into(),
            actual,
        })
    }
}

/// Hash check of a (up to 64 MiB) chunk on the blocking pool, off the async workers.
async fn verify_chunk_blocking(id: &str, data: Bytes) -> Result<Bytes, ChunkError> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || verify_chunk(&id, &data).map(|()| data))
        .await
        .map_err(|e| ChunkError::Io(std::io::Error::other(format!("hash task failed: {e}"))))?
}

fn parse_manifest(snapshot_id: &str, bytes: &[u8]) -> Result<SnapshotManifest, ChunkError> {
    let m: SnapshotManifest = serde_json::from_slice(bytes)
        .map_err(|e| ChunkError::InvalidManifest(format!("{snapshot_id}: {e}")))?;
    if m.snapshot_id != snapshot_id {
        return Err(ChunkError::InvalidManifest(format!(
            "asked for {snapshot_id}, manifest says {}",
            m.snapshot_id
        )));
    }
    m.validate()?;
    Ok(m)
}

/// Chunks and manifests in a Walrus bucket, through the project's S3 client.
pub struct WalrusChunks {
    s3: euca_s3::S3Client,
    bucket: String,
    /// Set once the bucket is known to exist (it is created before the first
    /// write, so the SC can start before Walrus serves).
    bucket_ready: tokio::sync::OnceCell<()>,
}

impl WalrusChunks {
    pub fn new(s3: euca_s3::S3Client, bucket: impl Into<String>) -> Self {
        WalrusChunks {
            s3,
            bucket: bucket.into(),
            bucket_ready: tokio::sync::OnceCell::new(),
        }
    }

    async fn writable(&self) -> Result<(), ChunkError> {
        self.bucket_ready
            .get_or_try_init(|| self.ensure_bucket())
            .await
            .map(|_| ())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist (succeeds if we already own it).
    pub async fn ensure_bucket(&self) -> Result<(), ChunkError> {
        Ok(self.s3.create_bucket(&self.bucket).await?)
    }

    fn chunk_key(id: &str) -> String {
        format!("chunks/{id}")
    }

    fn manifest_key(snapshot_id: &str) -> String {
        format!("snapshots/{snapshot_id}.json")
    }

    /// Lists `prefix`; a bucket that does not exist yet holds nothing.
    async fn list(&self, prefix: &str) -> Result<Vec<euca_s3::ObjectInfo>, ChunkError> {
        match self.s3.list_objects(&self.bucket, prefix).await {
            Ok(v) => Ok(v),
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl ChunkStore for WalrusChunks {
    async fn has_chunk(&self, sha256_hex: &str) -> Result<bool, ChunkError> {
        validate_chunk_id(sha256_hex)?;
        Ok(self
            .s3
            .head(&self.bucket, &Self::chunk_key(sha256_hex))
            .await?
            .is_some())
    }

    async fn put_chunk(&self, sha256_hex: &str, data: Bytes) -> Result<(), ChunkError> {
        validate_chunk_id(sha256_hex)?;
        self.writable().await?;
        self.s3
            .put_bytes(&self.bucket, &Self::chunk_key(sha256_hex), data)
            .await?;
        Ok(())
    }

    async fn get_chunk(&self, sha256_hex: &str) -> Result<Bytes, ChunkError> {
        validate_chunk_id(sha256_hex)?;
        let data = match self
            .s3
            .get_bytes(
                &self.bucket,
                &Self::chunk_key(sha256_hex),
                MAX_CHUNK_SIZE as usize,
            )
            .await
        {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                return Err(ChunkError::NotFound(format!("chunk {sha256_hex}")))
            }
            Err(e) => return Err(e.into()),
        };
        verify_chunk_blocking(sha256_hex, data).await
    }

    async fn delete_chunk(&self, sha256_hex: &str) -> Result<(), ChunkError> {
        validate_chunk_id(sha256_hex)?;
        match self
            .s3
            .delete(&self.bucket, &Self::chunk_key(sha256_hex))
            .await
        {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn put_manifest(&self, m: &SnapshotManifest) -> Result<(), ChunkError> {
        m.validate()?;
        let body = serde_json::to_vec(m)
            .map_err(|e| ChunkError::InvalidManifest(format!("encoding: {e}")))?;
        self.writable().await?;
        self.s3
            .put_bytes(
                &self.bucket,
                &Self::manifest_key(&m.snapshot_id),
                Bytes::from(body),
            )
            .await?;
        Ok(())
    }

    async fn get_manifest(&self, snapshot_id: &str) -> Result<SnapshotManifest, ChunkError> {
        validate_snapshot_id(snapshot_id)?;
        let bytes = match self
            .s3
            .get_bytes(
                &self.bucket,
                &Self::manifest_key(snapshot_id),
                MAX_MANIFEST_BYTES,
            )
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(ChunkError::NotFound(format!("snapshot {snapshot_id}")))
            }
            Err(e) => return Err(e.into()),
        };
        parse_manifest(snapshot_id, &bytes)
    }

    async fn delete_manifest(&self, snapshot_id: &str) -> Result<(), ChunkError> {
        validate_snapshot_id(snapshot_id)?;
        match self
            .s3
            .delete(&self.bucket, &Self::manifest_key(snapshot_id))
            .await
        {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        Ok(self
            .list("chunks/")
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = o.key.strip_prefix("chunks/")?;
                validate_chunk_id(id).ok()?;
                Some(StoredChunk {
                    id: id.to_string(),
                    stored_at: o.last_modified.map(std::time::SystemTime::from),
                })
            })
            .collect())
    }

    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        Ok(self
            .list("snapshots/")
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = o.key.strip_prefix("snapshots/")?.strip_suffix(".json")?;
                validate_snapshot_id(id).ok()?;
                Some(id.to_string())
            })
            .collect())
    }
}

/// An in-memory [`ChunkStore`] for tests. It counts what reaches it, verifies the id
/// of every chunk put, and can corrupt a stored chunk on purpose.
#[derive(Default)]
pub struct MemChunks {
    chunks: Mutex<HashMap<String, Bytes>>,
    /// When each chunk was put (or set by [`MemChunks::set_stored_at`]).
    stored_at: Mutex<HashMap<String, std::time::SystemTime>>,
    manifests: Mutex<HashMap<String, Vec<u8>>>,
    gets: Mutex<HashMap<String, u64>>,
    puts: AtomicU64,
    bytes_put: AtomicU64,
    has_calls: AtomicU64,
}

impl MemChunks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chunk PUTs received (including re-puts of an existing id).
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// Chunk bytes received by PUTs.
    pub fn bytes_put(&self) -> u64 {
        self.bytes_put.load(Ordering::SeqCst)
    }

    pub fn has_calls(&self) -> u64 {
        self.has_calls.load(Ordering::SeqCst)
    }

    /// GETs of one chunk id (successful or not).
    pub fn gets_of(&self, id: &str) -> u64 {
        self.gets.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    /// All chunk GETs.
    pub fn gets(&self) -> u64 {
        self.gets.lock().unwrap().values().sum()
    }

    /// Number of distinct chunks stored.
    pub fn chunk_count(&self) -> usize {
        self.chunks.lock().unwrap().len()
    }

    /// Bytes of all stored chunks.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks
            .lock()
            .unwrap()
            .values()
            .map(|b| b.len() as u64)
            .sum()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.chunks.lock().unwrap().contains_key(id)
    }

    pub fn has_manifest(&self, snapshot_id: &str) -> bool {
        self.manifests.lock().unwrap().contains_key(snapshot_id)
    }

    /// Flips one byte of a stored chunk (test hook). Returns false if absent.
    pub fn corrupt(&self, id: &str) -> bool {
        let mut chunks = self.chunks.lock().unwrap();
        match chunks.get_mut(id) {
            Some(data) => {
                let mut v = data.to_vec();
                let mid = v.len() / 2;
                if let Some(b) = v.get_mut(mid) {
                    *b ^= 0x5a;
                }
                *data = Bytes::from(v);
                true
            }
            None => false,
        }
    }

    /// Changes when a chunk counts as stored (test hook for ages).
    pub fn set_stored_at(&self, id: &str, at: std::time::SystemTime) {
        self.stored_at.lock().unwrap().insert(id.into(), at);
    }

    /// Ids of all stored chunks.
    pub fn chunk_ids(&self) -> std::collections::HashSet<String> {
        self.chunks.lock().unwrap().keys().cloned().collect()
    }

    /// Stores raw bytes under an id without any check (test hook, e.g. to repair a
    /// chunk corrupted by [`MemChunks::corrupt`]).
    pub fn insert_raw(&self, id: &str, data: Bytes) {
        self.chunks.lock().unwrap().insert(id.into(), data);
    }
}

#[async_trait::async_trait]
impl ChunkStore for MemChunks {
    async fn has_chunk(&self, sha256_hex: &str) -> Result<bool, ChunkError> {
        validate_chunk_id(sha256_hex)?;
        self.has_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.chunks.lock().unwrap().contains_key(sha256_hex))
    }

    async fn put_chunk(&self, sha256_hex: &str, data: Bytes) -> Result<(), ChunkError> {
        validate_chunk_id(sha256_hex)?;
        let data = verify_chunk_blocking(sha256_hex, data).await?;
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.bytes_put
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        self.chunks.lock().unwrap().insert(sha256_hex.into(), data);
        self.stored_at
            .lock()
            .unwrap()
            .insert(sha256_hex.into(), std::time::SystemTime::now());
        Ok(())
    }

    async fn get_chunk(&self, sha256_hex: &str) -> Result<Bytes, ChunkError> {
        validate_chunk_id(sha256_hex)?;
        *self
            .gets
            .lock()
            .unwrap()
            .entry(sha256_hex.into())
            .or_default() += 1;
        let data = self
            .chunks
            .lock()
            .unwrap()
            .get(sha256_hex)
            .cloned()
            .ok_or_else(|| ChunkError::NotFound(format!("chunk {sha256_hex}")))?;
        verify_chunk_blocking(sha256_hex, data).await
    }

    async fn delete_chunk(&self, sha256_hex: &str) -> Result<(), ChunkError> {
        validate_chunk_id(sha256_hex)?;
        self.chunks.lock().unwrap().remove(sha256_hex);
        self.stored_at.lock().unwrap().remove(sha256_hex);
        Ok(())
    }

    async fn put_manifest(&self, m: &SnapshotManifest) -> Result<(), ChunkError> {
        m.validate()?;
        let body = serde_json::to_vec(m)
            .map_err(|e| ChunkError::InvalidManifest(format!("encoding: {e}")))?;
        self.manifests
            .lock()
            .unwrap()
            .insert(m.snapshot_id.clone(), body);
        Ok(())
    }

    async fn get_manifest(&self, snapshot_id: &str) -> Result<SnapshotManifest, ChunkError> {
        validate_snapshot_id(snapshot_id)?;
        let body = self
            .manifests
            .lock()
            .unwrap()
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| ChunkError::NotFound(format!("snapshot {snapshot_id}")))?;
        parse_manifest(snapshot_id, &body)
    }

    async fn delete_manifest(&self, snapshot_id: &str) -> Result<(), ChunkError> {
        validate_snapshot_id(snapshot_id)?;
        self.manifests.lock().unwrap().remove(snapshot_id);
        Ok(())
    }

    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        let at = self.stored_at.lock().unwrap();
        let mut v: Vec<StoredChunk> = self
            .chunks
            .lock()
            .unwrap()
            .keys()
            .map(|id| StoredChunk {
                id: id.clone(),
                stored_at: at.get(id).copied(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        let mut v: Vec<String> = self.manifests.lock().unwrap().keys().cloned().collect();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(size: u64, chunk_size: u64, chunks: Vec<Option<String>>) -> SnapshotManifest {
        SnapshotManifest {
            format: MANIFEST_FORMAT,
            snapshot_id: "snap-0123abcd".into(),
            volume_id: "vol-1".into(),
            size,
            chunk_size,
            chunks,
        }
    }

    #[test]
    fn ids_and_manifests_are_validated() {
        let id = sha256_hex(b"x");
        assert!(validate_chunk_id(&id).is_ok());
        assert!(validate_chunk_id(&id.to_uppercase()).is_err());
        assert!(validate_chunk_id(&id[1..]).is_err());
        assert!(validate_chunk_id("../../etc/passwd").is_err());
        assert!(validate_snapshot_id("snap-1").is_ok());
        assert!(validate_snapshot_id("../x").is_err());
        assert!(validate_snapshot_id("").is_err());

        let cs = 1 << 20;
        assert!(manifest(3 * cs + 1, cs, vec![None; 4]).validate().is_ok());
        assert!(manifest(3 * cs + 1, cs, vec![None; 3]).validate().is_err());
        assert!(manifest(3 * cs, cs, vec![None; 4]).validate().is_err());
        assert!(manifest(0, cs, vec![]).validate().is_ok());
        assert!(manifest(3 * 4096, 4096, vec![None; 3]).validate().is_err());
        assert!(manifest(3 * 98304, 98304, vec![None; 3])
            .validate()
            .is_err());
        let mut m = manifest(cs, cs, vec![Some("zz".into())]);
        assert!(m.validate().is_err());
        m.chunks[0] = Some(id);
        assert!(m.validate().is_ok());
        m.format = 2;
        assert!(m.validate().is_err());
    }

    #[tokio::test]
    async fn mem_store_verifies_and_counts() {
        let s = MemChunks::new();
        let data = Bytes::from(vec![3u8; 1000]);
        let id = sha256_hex(&data);
        assert!(s
            .put_chunk(&sha256_hex(b"other"), data.clone())
            .await
            .is_err());
        assert_eq!(s.puts(), 0);
        s.put_chunk(&id, data.clone()).await.unwrap();
        assert!(s.has_chunk(&id).await.unwrap());
        assert_eq!(s.get_chunk(&id).await.unwrap(), data);
        assert!(s.corrupt(&id));
        assert!(matches!(
            s.get_chunk(&id).await,
            Err(ChunkError::Corrupt { .. })
        ));
        assert_eq!(s.gets_of(&id), 2);

        let m = manifest(1 << 20, 1 << 20, vec![Some(id)]);
        s.put_manifest(&m).await.unwrap();
        assert_eq!(s.get_manifest("snap-0123abcd").await.unwrap(), m);
        assert!(matches!(
            s.get_manifest("snap-other").await,
            Err(ChunkError::NotFound(_))
        ));
        // A manifest stored under the wrong name is refused.
        s.manifests
            .lock()
            .unwrap()
            .insert("snap-x".into(), serde_json::to_vec(&m).unwrap());
        assert!(s.get_manifest("snap-x").await.is_err());
    }
}
