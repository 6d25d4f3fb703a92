//! The snapshot manifest, and snapshots in a content-addressed chunk store.
//!
//! A snapshot is a [`SnapshotManifest`] plus the chunks it lists, in a
//! [`ChunkStore`] of the `euca-chunks` crate (which owns the key layout, hashing,
//! digest checks and garbage rules). Chunks are keyed by the SHA-256 of their
//! bytes, so two snapshots, or two chunks of one snapshot, with the same bytes
//! share one stored object; all-zero chunks are not stored at all (`None` in the
//! manifest). In Walrus the layout is `chunks/<sha256hex>` and
//! `snapshots/<snapshot-id>.json` in the snapshot bucket.

use bytes::Bytes;
use euca_chunks::{validate_chunk_id, ChunkError, ChunkStore, WalrusChunks};
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
/// Where snapshot manifests live in the snapshot bucket.
pub const MANIFEST_PREFIX: &str = "snapshots/";

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

/// Snapshot ids become object keys and file names: 1–128 of `[A-Za-z0-9._-]`, not
/// starting with a dot (the chunk store's manifest-name rule).
pub fn validate_snapshot_id(id: &str) -> Result<(), ChunkError> {
    euca_chunks::validate_manifest_name(id)
}

/// Parses and validates stored manifest bytes ([`SnapshotManifest::validate`], and
/// its id is the one asked for).
pub fn parse_manifest(snapshot_id: &str, bytes: &[u8]) -> Result<SnapshotManifest, ChunkError> {
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

/// The chunk ids a stored manifest names, for the chunk store's sweep
/// ([`euca_chunks::sweep_unreferenced`]): an unparsable manifest is an error.
pub fn manifest_chunk_refs(snapshot_id: &str, bytes: &[u8]) -> Result<Vec<String>, ChunkError> {
    let m = parse_manifest(snapshot_id, bytes)?;
    Ok(m.chunk_ids().into_iter().map(String::from).collect())
}

/// The snapshot bucket in Walrus: `chunks/<sha256>` and `snapshots/<id>.json`.
pub fn walrus_store(s3: euca_s3::S3Client, bucket: impl Into<String>) -> WalrusChunks {
    WalrusChunks::new(s3, bucket, MANIFEST_PREFIX).with_max_manifest_bytes(MAX_MANIFEST_BYTES)
}

/// Snapshot manifests in any [`ChunkStore`], typed.
#[async_trait::async_trait]
pub trait SnapshotStore {
    /// Validates and stores a manifest (after the chunks it names).
    async fn put_manifest(&self, m: &SnapshotManifest) -> Result<(), ChunkError>;
    /// Reads and validates a manifest ([`parse_manifest`]).
    async fn get_manifest(&self, snapshot_id: &str) -> Result<SnapshotManifest, ChunkError>;
}

#[async_trait::async_trait]
impl<S: ChunkStore + ?Sized> SnapshotStore for S {
    async fn put_manifest(&self, m: &SnapshotManifest) -> Result<(), ChunkError> {
        m.validate()?;
        let body = serde_json::to_vec(m)
            .map_err(|e| ChunkError::InvalidManifest(format!("encoding: {e}")))?;
        self.put_manifest_bytes(&m.snapshot_id, Bytes::from(body))
            .await
    }

    async fn get_manifest(&self, snapshot_id: &str) -> Result<SnapshotManifest, ChunkError> {
        validate_snapshot_id(snapshot_id)?;
        let bytes = match self.get_manifest_bytes(snapshot_id).await {
            Err(ChunkError::NotFound(_)) => {
                return Err(ChunkError::NotFound(format!("snapshot {snapshot_id}")))
            }
            other => other?,
        };
        parse_manifest(snapshot_id, &bytes)
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
        let id = euca_chunks::chunk_id(b"x");
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
    async fn manifests_round_trip_and_are_checked_on_read() {
        let s = euca_chunks::MemChunks::new();
        let data = Bytes::from(vec![3u8; 1000]);
        let id = euca_chunks::chunk_id(&data);
        s.put_chunk(&id, data).await.unwrap();
        let m = manifest(1 << 20, 1 << 20, vec![Some(id.clone())]);
        s.put_manifest(&m).await.unwrap();
        assert_eq!(s.get_manifest("snap-0123abcd").await.unwrap(), m);
        assert!(matches!(
            s.get_manifest("snap-other").await,
            Err(ChunkError::NotFound(_))
        ));
        assert_eq!(
            manifest_chunk_refs("snap-0123abcd", &serde_json::to_vec(&m).unwrap()).unwrap(),
            vec![id]
        );
        // A manifest stored under the wrong name is refused.
        s.put_manifest_bytes("snap-x", Bytes::from(serde_json::to_vec(&m).unwrap()))
            .await
            .unwrap();
        assert!(matches!(
            s.get_manifest("snap-x").await,
            Err(ChunkError::InvalidManifest(_))
        ));
        assert!(manifest_chunk_refs("snap-x", &serde_json::to_vec(&m).unwrap()).is_err());
        // So is an invalid one.
        s.put_manifest_bytes("snap-y", Bytes::from_static(b"{"))
            .await
            .unwrap();
        assert!(s.get_manifest("snap-y").await.is_err());
    }
}
