//! Volume snapshots: taking them (a crash-consistent cut of a live volume, uploaded
//! to Walrus as content-addressed chunks), deleting them and sweeping what failed
//! uploads left. The block-device layers they work with live in [`crate::device`]:
//! [`VolumeDevice`] (cuts, copy-before-write) and
//! [`LazyDevice`](crate::device::LazyDevice) (a volume restored from a snapshot,
//! filled on first touch).
//!
//! - [`upload`]: [`upload_snapshot`] reads a cut chunk by chunk and stores the
//!   non-zero chunks the store lacks, then the manifest; [`SnapshotProgress`] counts.
//! - [`chunks`]: the manifest, the [`ChunkStore`] trait, [`WalrusChunks`] (S3) and
//!   [`MemChunks`] (tests).
//! - [`error`]: [`SnapshotError`].
//!
//! Wiring (the storage controller's service):
//!
//! ```text
//! volume open:        dev = VolumeDevice::new(Arc::new(FileDevice::open(..)?) or LazyDevice)
//!                     export dev over NBD
//! CreateSnapshot:     cut = dev.begin_cut(DEFAULT_CHUNK_SIZE, preserve_path).await?   // the cut instant
//!                     reply "pending"; spawn:
//!                       finish_snapshot(&dev, cut, &*store, snap_id, vol_id, &progress).await
//! DescribeSnapshots:  progress.percent()
//! CreateVolume(snap): m = store.get_manifest(snap_id).await?;
//!                     base = FileDevice::create(path, size >= m.size)?;
//!                     lazy = LazyDevice::open(Arc::new(base), m, store, presence_path).await?;
//!                     dev = VolumeDevice::new(Arc::new(lazy.clone())); optionally spawn lazy.fill_all()
//! DeleteSnapshot:     delete_snapshot(&*store, snap_id, &referenced_chunks(others)).await
//! ```

pub mod chunks;
pub mod error;
pub mod upload;

use std::collections::HashSet;
use std::sync::Arc;

use crate::device::{Cut, VolumeDevice};

pub use chunks::{
    sha256_hex, validate_chunk_id, validate_snapshot_id, ChunkError, ChunkStore, MemChunks,
    SnapshotManifest, StoredChunk, WalrusChunks, DEFAULT_CHUNK_SIZE, MANIFEST_FORMAT,
    MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
pub use error::SnapshotError;
pub use upload::{upload_snapshot, ProgressReport, SnapshotProgress, UPLOAD_PARALLEL};

/// Uploads `cut` (see [`upload_snapshot`]) and then ends it on `vol`, whatever the
/// outcome, so the preserve file is always removed.
pub async fn finish_snapshot(
    vol: &VolumeDevice,
    cut: Arc<Cut>,
    store: &dyn ChunkStore,
    snapshot_id: &str,
    volume_id: &str,
    progress: &SnapshotProgress,
) -> Result<SnapshotManifest, SnapshotError> {
    let result = upload_snapshot(
        &cut,
        store,
        snapshot_id,
        volume_id,
        cut.size(),
        cut.chunk_size(),
        progress,
    )
    .await;
    drop(cut);
    let ended = vol.end_cut().await;
    let manifest = result?;
    ended?;
    Ok(manifest)
}

/// Every chunk id the given manifests reference.
pub fn referenced_chunks<'a>(
    manifests: impl IntoIterator<Item = &'a SnapshotManifest>,
) -> HashSet<String> {
    manifests
        .into_iter()
        .flat_map(|m| m.chunks.iter().flatten().cloned())
        .collect()
}

/// What [`delete_snapshot`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStats {
    pub chunks_deleted: u64,
    pub chunks_kept: u64,
}

/// Deletes a snapshot: its manifest first (so a crash leaves unreferenced chunks,
/// never a manifest with missing chunks), then each of its chunks that is not in
/// `keep`.
///
/// Chunks are shared between snapshots, so `keep` must hold every chunk referenced
/// by any other snapshot, including ones still uploading and the manifests of
/// volumes still filling lazily ([`referenced_chunks`]). An upload that is running
/// may have found a chunk present (`has_chunk`) that this is about to delete: the
/// caller must not run a delete concurrently with any upload into the same store
/// (e.g. uploads hold a shared lock, deletes an exclusive one).
pub async fn delete_snapshot(
    store: &dyn ChunkStore,
    snapshot_id: &str,
    keep: &HashSet<String>,
) -> Result<DeleteStats, SnapshotError> {
    let manifest = store.get_manifest(snapshot_id).await?;
    store.delete_manifest(snapshot_id).await?;
    let mut stats = DeleteStats::default();
    for id in manifest.chunk_ids() {
        if keep.contains(id) {
            stats.chunks_kept += 1;
        } else {
            store.delete_chunk(id).await?;
            stats.chunks_deleted += 1;
        }
    }
    Ok(stats)
}

/// What [`sweep_orphan_chunks`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Chunks that no manifest referenced, deleted.
    pub deleted: u64,
    /// Unreferenced chunks kept because they were stored after the cutoff.
    pub too_young: u64,
    /// Unreferenced chunks kept because the store does not say when they were stored.
    pub undated: u64,
    /// Chunks a manifest referenced.
    pub referenced: u64,
}

/// Deletes every chunk of `store` that no manifest in the store and no manifest
/// in `also_keep` references, and that was stored before `stored_before`. Such
/// chunks are left by uploads that ended without a manifest (a crash, an error):
/// [`upload_snapshot`] writes its manifest last and rolls nothing back.
///
/// A manifest that cannot be read makes the sweep fail before anything is
/// deleted (what it references is unknown). An upload that is running has no
/// manifest yet, so the caller must not sweep while any upload into the same
/// store runs (the same exclusion as [`delete_snapshot`]); `stored_before` is a
/// second guard, for writers the caller cannot exclude.
pub async fn sweep_orphan_chunks(
    store: &dyn ChunkStore,
    also_keep: &HashSet<String>,
    stored_before: std::time::SystemTime,
) -> Result<SweepStats, SnapshotError> {
    // Chunks first: a chunk stored after this listing is not looked at, so a
    // manifest written after the manifests are read cannot be missed for it.
    let chunks = store.list_chunks().await?;
    let mut keep = also_keep.clone();
    for id in store.list_manifests().await? {
        match store.get_manifest(&id).await {
            Ok(m) => keep.extend(m.chunk_ids().into_iter().map(String::from)),
            // Deleted since it was listed: it keeps nothing.
            Err(ChunkError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut stats = SweepStats::default();
    for c in chunks {
        if keep.contains(&c.id) {
            stats.referenced += 1;
            continue;
        }
        match c.stored_at {
            None => stats.undated += 1,
            Some(at) if at >= stored_before => stats.too_young += 1,
            Some(_) => {
                store.delete_chunk(&c.id).await?;
                stats.deleted += 1;
            }
        }
    }
    Ok(stats)
}
