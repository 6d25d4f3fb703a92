//! Volume snapshots: taking them (a crash-consistent cut of a live volume, uploaded
//! to Walrus as content-addressed chunks), deleting them and sweeping what failed
//! uploads left. The block-device layers they work with live in [`crate::device`]:
//! [`VolumeDevice`] (cuts, copy-before-write) and
//! [`LazyDevice`](crate::device::LazyDevice) (a volume restored from a snapshot,
//! filled on first touch).
//!
//! - [`upload`]: [`upload_snapshot`] reads a cut chunk by chunk and stores the
//!   non-zero chunks the store lacks, then the manifest; [`SnapshotProgress`] counts.
//! - [`manifest`]: the [`SnapshotManifest`], typed manifest access on any chunk
//!   store ([`SnapshotStore`]) and the snapshot bucket in Walrus ([`walrus_store`]).
//!   Chunks themselves (key layout, hashing, verified reads, the garbage rules) are
//!   the `euca-chunks` crate's, shared with installed images.
//! - [`error`]: the [`SnapshotError`] type.
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

pub mod error;
pub mod manifest;
pub mod upload;

use std::collections::HashSet;
use std::sync::Arc;

use crate::device::{Cut, VolumeDevice};

pub use error::SnapshotError;
pub use euca_chunks::{
    chunk_id, validate_chunk_id, ChunkError, ChunkStore, DeleteStats, MemChunks, StoredChunk,
    SweepStats, WalrusChunks,
};
pub use manifest::{
    manifest_chunk_refs, parse_manifest, validate_snapshot_id, walrus_store, SnapshotManifest,
    SnapshotStore, DEFAULT_CHUNK_SIZE, MANIFEST_FORMAT, MANIFEST_PREFIX, MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
};
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
    Ok(
        euca_chunks::delete_manifest_and_chunks(store, snapshot_id, manifest.chunk_ids(), keep)
            .await?,
    )
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
    Ok(
        euca_chunks::sweep_unreferenced(store, also_keep, stored_before, manifest_chunk_refs)
            .await?,
    )
}
