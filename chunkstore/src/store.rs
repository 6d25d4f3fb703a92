//! The [`ChunkStore`] trait and put-if-absent.

use bytes::Bytes;

use crate::error::ChunkError;

/// One bucket of chunks and manifests. Implementations must be safe to call
/// concurrently, and check ids ([`crate::validate_chunk_id`]) and names
/// ([`crate::validate_manifest_name`]) before they touch anything.
#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    async fn has_chunk(&self, id: &str) -> Result<bool, ChunkError>;
    /// Stores `data` under `id` (which the caller computed with
    /// [`crate::chunk_id`]); storing an id that exists is harmless. See
    /// [`put_chunk_if_absent`] to skip the upload of a stored chunk.
    async fn put_chunk(&self, id: &str, data: Bytes) -> Result<(), ChunkError>;
    /// Verifies the SHA-256 of what it got; a mismatch is
    /// [`ChunkError::Corrupt`], never returned data.
    async fn get_chunk(&self, id: &str) -> Result<Bytes, ChunkError>;
    /// Deleting a chunk that is not there succeeds.
    async fn delete_chunk(&self, id: &str) -> Result<(), ChunkError>;
    /// Every stored chunk, with when it was stored (`None` if unknown). Entries
    /// that are not chunk ids are left out.
    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError>;
    /// Stores manifest `name`'s bytes (written after the chunks it names).
    async fn put_manifest_bytes(&self, name: &str, body: Bytes) -> Result<(), ChunkError>;
    /// Manifest `name`'s bytes; [`ChunkError::NotFound`] if there is none.
    async fn get_manifest_bytes(&self, name: &str) -> Result<Bytes, ChunkError>;
    /// Deleting a manifest that is not there succeeds.
    async fn delete_manifest(&self, name: &str) -> Result<(), ChunkError>;
    /// The name of every stored manifest. Entries that are not manifests are left
    /// out.
    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError>;
}

/// A chunk in a [`ChunkStore`] listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub id: String,
    /// When the chunk was last written, if the store says.
    pub stored_at: Option<std::time::SystemTime>,
}

/// Stores `data` under `id` unless the store already has that chunk (a HEAD, then
/// a PUT only if it is missing). Returns whether it uploaded.
///
/// A chunk found present may be deleted by a garbage collection of the same bucket
/// before the caller's manifest names it: callers exclude collections while they
/// upload (see [`crate::gc`]).
pub async fn put_chunk_if_absent(
    store: &(impl ChunkStore + ?Sized),
    id: &str,
    data: Bytes,
) -> Result<bool, ChunkError> {
    if store.has_chunk(id).await? {
        return Ok(false);
    }
    store.put_chunk(id, data).await?;
    Ok(true)
}
