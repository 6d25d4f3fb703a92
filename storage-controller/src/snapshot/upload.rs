//! Uploading a cut as content-addressed chunks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::StreamExt;
use serde::Serialize;

use euca_chunks::{chunk_id, put_chunk_if_absent, ChunkStore};

use super::error::SnapshotError;
use super::manifest::{validate_snapshot_id, SnapshotManifest, SnapshotStore, MANIFEST_FORMAT};
use crate::device::cow::{is_zero, Cut};

/// Chunks being read, hashed or uploaded at once (memory: this × chunk size).
pub const UPLOAD_PARALLEL: usize = 4;

/// Live counters of one snapshot upload; share it (e.g. in an `Arc`) with whoever
/// reports progress. Every chunk ends up counted in exactly one of `chunks_zero`,
/// `chunks_reused` and `chunks_uploaded`, and in `chunks_done`.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    pub chunks_total: AtomicU64,
    pub chunks_done: AtomicU64,
    /// All-zero chunks (not stored).
    pub chunks_zero: AtomicU64,
    /// Chunks the store already had (or that an earlier chunk of this snapshot
    /// uploaded).
    pub chunks_reused: AtomicU64,
    pub chunks_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

/// A plain copy of [`SnapshotProgress`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProgressReport {
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub chunks_zero: u64,
    pub chunks_reused: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
}

impl SnapshotProgress {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn report(&self) -> ProgressReport {
        ProgressReport {
            chunks_total: self.chunks_total.load(Ordering::Relaxed),
            chunks_done: self.chunks_done.load(Ordering::Relaxed),
            chunks_zero: self.chunks_zero.load(Ordering::Relaxed),
            chunks_reused: self.chunks_reused.load(Ordering::Relaxed),
            chunks_uploaded: self.chunks_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
        }
    }

    /// 0–100, as EC2's `Progress` shows it. 100 only once every chunk is done (the
    /// manifest may still be being written).
    pub fn percent(&self) -> u8 {
        let total = self.chunks_total.load(Ordering::Relaxed);
        let done = self.chunks_done.load(Ordering::Relaxed);
        if total == 0 {
            return if done == 0 { 0 } else { 100 };
        }
        (done.min(total) * 100 / total) as u8
    }
}

/// Uploads the cut as snapshot `snapshot_id` and writes its manifest last (so a
/// manifest's existence means every chunk it lists is stored). For each chunk: known
/// zero (hole) → nothing read or stored; read it, all zeros → `None`; else SHA-256
/// (on the blocking pool), then `has_chunk` → reuse, else `put_chunk`. At most
/// [`UPLOAD_PARALLEL`] chunks are in flight. `size` and `chunk_size` must be the
/// cut's. On error nothing is rolled back: chunks already stored stay (they are
/// content-addressed and reusable; a later snapshot or a sweep accounts for them),
/// and no manifest is written.
pub async fn upload_snapshot(
    cut: &Cut,
    store: &dyn ChunkStore,
    snapshot_id: &str,
    volume_id: &str,
    size: u64,
    chunk_size: u64,
    progress: &SnapshotProgress,
) -> Result<SnapshotManifest, SnapshotError> {
    validate_snapshot_id(snapshot_id)?;
    if size != cut.size() || chunk_size != cut.chunk_size() {
        return Err(SnapshotError::Invalid(format!(
            "upload of {size} bytes at chunk size {chunk_size} asked for a cut of {} bytes at chunk size {}",
            cut.size(),
            cut.chunk_size()
        )));
    }
    let n = cut.chunk_count();
    progress.chunks_total.store(n, Ordering::Relaxed);
    // Ids stored (or being stored) by this upload, so duplicate chunks within one
    // snapshot are sent once.
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let seen = &seen;

    let mut results = futures::stream::iter(0..n)
        .map(|i| async move {
            let id = upload_chunk(cut, store, i, seen, progress).await?;
            progress.chunks_done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, SnapshotError>((i, id))
        })
        .buffer_unordered(UPLOAD_PARALLEL);

    let mut chunks: Vec<Option<String>> = vec![None; n as usize];
    while let Some(r) = results.next().await {
        let (i, id) = r?;
        chunks[i as usize] = id;
    }
    drop(results);
    if let Some(why) = cut.failure() {
        return Err(SnapshotError::Invalid(format!(
            "the volume's cut became unusable: {why}"
        )));
    }

    let manifest = SnapshotManifest {
        format: MANIFEST_FORMAT,
        snapshot_id: snapshot_id.to_string(),
        volume_id: volume_id.to_string(),
        size,
        chunk_size,
        chunks,
    };
    manifest.validate()?;
    store.put_manifest(&manifest).await?;
    Ok(manifest)
}

async fn upload_chunk(
    cut: &Cut,
    store: &dyn ChunkStore,
    i: u64,
    seen: &Mutex<HashSet<String>>,
    progress: &SnapshotProgress,
) -> Result<Option<String>, SnapshotError> {
    let Some(data) = cut.take_chunk(i).await? else {
        progress.chunks_zero.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    let (data, id) = tokio::task::spawn_blocking(move || {
        let id = if is_zero(&data) {
            None
        } else {
            Some(chunk_id(&data))
        };
        (data, id)
    })
    .await
    .map_err(|e| std::io::Error::other(format!("hash task failed: {e}")))?;
    let Some(id) = id else {
        progress.chunks_zero.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    let first = seen.lock().unwrap().insert(id.clone());
    let len = data.len() as u64;
    if !first || !put_chunk_if_absent(store, &id, data).await? {
        progress.chunks_reused.fetch_add(1, Ordering::Relaxed);
        return Ok(Some(id));
    }
    progress.chunks_uploaded.fetch_add(1, Ordering::Relaxed);
    progress.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
    Ok(Some(id))
}
