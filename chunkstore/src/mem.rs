//! [`MemChunks`]: an in-memory [`ChunkStore`] for tests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::ChunkError;
use crate::key::{validate_chunk_id, validate_manifest_name, verify_chunk_blocking};
use crate::store::{ChunkStore, StoredChunk};

/// An in-memory [`ChunkStore`] for tests. It counts what reaches it, verifies the id
/// of every chunk put, and can corrupt a stored chunk on purpose.
#[derive(Default)]
pub struct MemChunks {
    chunks: Mutex<HashMap<String, Bytes>>,
    /// When each chunk was put (or set by [`MemChunks::set_stored_at`]).
    stored_at: Mutex<HashMap<String, SystemTime>>,
    manifests: Mutex<HashMap<String, Bytes>>,
    gets: Mutex<HashMap<String, u64>>,
    puts: AtomicU64,
    bytes_put: AtomicU64,
    has_calls: AtomicU64,
}

/// Test double: a poisoned lock (a panicking test thread) is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        lock(&self.gets).get(id).copied().unwrap_or(0)
    }

    /// All chunk GETs.
    pub fn gets(&self) -> u64 {
        lock(&self.gets).values().sum()
    }

    /// Number of distinct chunks stored.
    pub fn chunk_count(&self) -> usize {
        lock(&self.chunks).len()
    }

    /// Bytes of all stored chunks.
    pub fn stored_bytes(&self) -> u64 {
        lock(&self.chunks).values().map(|b| b.len() as u64).sum()
    }

    pub fn contains(&self, id: &str) -> bool {
        lock(&self.chunks).contains_key(id)
    }

    pub fn has_manifest(&self, name: &str) -> bool {
        lock(&self.manifests).contains_key(name)
    }

    /// Flips one byte of a stored chunk (test hook). Returns false if absent.
    pub fn corrupt(&self, id: &str) -> bool {
        let mut chunks = lock(&self.chunks);
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
    pub fn set_stored_at(&self, id: &str, at: SystemTime) {
        lock(&self.stored_at).insert(id.into(), at);
    }

    /// Ids of all stored chunks.
    pub fn chunk_ids(&self) -> HashSet<String> {
        lock(&self.chunks).keys().cloned().collect()
    }

    /// Stores raw bytes under an id without any check (test hook, e.g. to repair a
    /// chunk corrupted by [`MemChunks::corrupt`]).
    pub fn insert_raw(&self, id: &str, data: Bytes) {
        lock(&self.chunks).insert(id.into(), data);
    }
}

#[async_trait::async_trait]
impl ChunkStore for MemChunks {
    async fn has_chunk(&self, id: &str) -> Result<bool, ChunkError> {
        validate_chunk_id(id)?;
        self.has_calls.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.chunks).contains_key(id))
    }

    async fn put_chunk(&self, id: &str, data: Bytes) -> Result<(), ChunkError> {
        validate_chunk_id(id)?;
        let data = verify_chunk_blocking(id, data).await?;
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.bytes_put
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        lock(&self.chunks).insert(id.into(), data);
        lock(&self.stored_at).insert(id.into(), SystemTime::now());
        Ok(())
    }

    async fn get_chunk(&self, id: &str) -> Result<Bytes, ChunkError> {
        validate_chunk_id(id)?;
        *lock(&self.gets).entry(id.into()).or_default() += 1;
        let data = lock(&self.chunks)
            .get(id)
            .cloned()
            .ok_or_else(|| ChunkError::NotFound(format!("chunk {id}")))?;
        verify_chunk_blocking(id, data).await
    }

    async fn delete_chunk(&self, id: &str) -> Result<(), ChunkError> {
        validate_chunk_id(id)?;
        lock(&self.chunks).remove(id);
        lock(&self.stored_at).remove(id);
        Ok(())
    }

    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        let at = lock(&self.stored_at);
        let mut v: Vec<StoredChunk> = lock(&self.chunks)
            .keys()
            .map(|id| StoredChunk {
                id: id.clone(),
                stored_at: at.get(id).copied(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn put_manifest_bytes(&self, name: &str, body: Bytes) -> Result<(), ChunkError> {
        validate_manifest_name(name)?;
        lock(&self.manifests).insert(name.into(), body);
        Ok(())
    }

    async fn get_manifest_bytes(&self, name: &str) -> Result<Bytes, ChunkError> {
        validate_manifest_name(name)?;
        lock(&self.manifests)
            .get(name)
            .cloned()
            .ok_or_else(|| ChunkError::NotFound(format!("manifest {name}")))
    }

    async fn delete_manifest(&self, name: &str) -> Result<(), ChunkError> {
        validate_manifest_name(name)?;
        lock(&self.manifests).remove(name);
        Ok(())
    }

    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        let mut v: Vec<String> = lock(&self.manifests).keys().cloned().collect();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::chunk_id;
    use crate::store::put_chunk_if_absent;

    #[tokio::test]
    async fn verifies_counts_and_puts_once() {
        let s = MemChunks::new();
        let data = Bytes::from(vec![3u8; 1000]);
        let id = chunk_id(&data);
        assert!(s
            .put_chunk(&chunk_id(b"other"), data.clone())
            .await
            .is_err());
        assert_eq!(s.puts(), 0);
        assert!(put_chunk_if_absent(&s, &id, data.clone()).await.unwrap());
        assert!(!put_chunk_if_absent(&s, &id, data.clone()).await.unwrap());
        assert_eq!(s.puts(), 1);
        assert_eq!(s.has_calls(), 2);
        assert_eq!(s.get_chunk(&id).await.unwrap(), data);
        assert!(s.corrupt(&id));
        assert!(matches!(
            s.get_chunk(&id).await,
            Err(ChunkError::Corrupt { .. })
        ));
        assert_eq!(s.gets_of(&id), 2);
        assert!(matches!(
            s.get_chunk(&chunk_id(b"absent")).await,
            Err(ChunkError::NotFound(_))
        ));
        assert!(matches!(
            s.get_chunk("chunks/../x").await,
            Err(ChunkError::InvalidId(_))
        ));

        s.put_manifest_bytes("m-1", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(&s.get_manifest_bytes("m-1").await.unwrap()[..], b"{}");
        assert!(matches!(
            s.get_manifest_bytes("m-2").await,
            Err(ChunkError::NotFound(_))
        ));
        assert!(matches!(
            s.put_manifest_bytes("../m", Bytes::new()).await,
            Err(ChunkError::InvalidName(_))
        ));
        assert_eq!(s.list_manifests().await.unwrap(), vec!["m-1".to_string()]);
        s.delete_manifest("m-1").await.unwrap();
        assert!(s.list_manifests().await.unwrap().is_empty());
    }
}
