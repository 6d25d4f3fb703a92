//! Garbage rules. Chunks are shared by every manifest of their bucket, so:
//!
//! - a chunk is garbage only if no manifest **of that bucket** names it (the
//!   manifests of other buckets never count: a bucket is swept on its own), and it
//!   was stored before a cutoff (the caller's grace period; a chunk whose store
//!   time is unknown is never garbage);
//! - a manifest that cannot be read or parsed stops the collection before anything
//!   is deleted (what it names is unknown); one deleted since the listing names
//!   nothing;
//! - deleting a manifest deletes it first, then those of its chunks that nothing
//!   else keeps, so a crash leaves unreferenced chunks, never a manifest with
//!   missing chunks.
//!
//! A writer checks for a chunk ([`crate::put_chunk_if_absent`]) before its manifest
//! names it, so a collection must not run while a writer uploads into the same
//! bucket (e.g. uploads hold a shared lock, collections an exclusive one); the
//! cutoff is a second guard, for writers the caller cannot exclude.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::error::ChunkError;
use crate::store::ChunkStore;

/// What [`sweep_unreferenced`] found.
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

/// What [`delete_manifest_and_chunks`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStats {
    pub chunks_deleted: u64,
    pub chunks_kept: u64,
}

/// Deletes every chunk of `store` that no manifest in the store and no id in
/// `also_keep` references, and that was stored before `stored_before`.
/// `chunks_of(name, bytes)` parses a manifest into the chunk ids it names; an
/// error from it (or from reading a manifest) fails the sweep before anything is
/// deleted.
pub async fn sweep_unreferenced<S, F>(
    store: &S,
    also_keep: &HashSet<String>,
    stored_before: SystemTime,
    chunks_of: F,
) -> Result<SweepStats, ChunkError>
where
    S: ChunkStore + ?Sized,
    F: Fn(&str, &[u8]) -> Result<Vec<String>, ChunkError> + Send + Sync,
{
    // Chunks first: a chunk stored after this listing is not looked at, so a
    // manifest written after the manifests are read cannot be missed for it.
    let chunks = store.list_chunks().await?;
    let mut keep = also_keep.clone();
    for name in store.list_manifests().await? {
        match store.get_manifest_bytes(&name).await {
            Ok(body) => keep.extend(chunks_of(&name, &body)?),
            // Deleted since it was listed: it keeps nothing.
            Err(ChunkError::NotFound(_)) => {}
            Err(e) => return Err(e),
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

/// Deletes manifest `name`, then each of `chunks` (the ones it names) that is not
/// in `keep`. `keep` must hold every chunk any other manifest of the bucket names,
/// including ones still being written and any a caller still reads from.
pub async fn delete_manifest_and_chunks<'a, S>(
    store: &S,
    name: &str,
    chunks: impl IntoIterator<Item = &'a str>,
    keep: &HashSet<String>,
) -> Result<DeleteStats, ChunkError>
where
    S: ChunkStore + ?Sized,
{
    let chunks: HashSet<&str> = chunks.into_iter().collect();
    store.delete_manifest(name).await?;
    let mut stats = DeleteStats::default();
    for id in chunks {
        if keep.contains(id) {
            stats.chunks_kept += 1;
        } else {
            store.delete_chunk(id).await?;
            stats.chunks_deleted += 1;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::key::chunk_id;
    use crate::mem::MemChunks;

    /// Test manifests: chunk ids, one per line.
    fn lines(_name: &str, body: &[u8]) -> Result<Vec<String>, ChunkError> {
        let text =
            std::str::from_utf8(body).map_err(|e| ChunkError::InvalidManifest(e.to_string()))?;
        let ids: Vec<String> = text.lines().map(String::from).collect();
        for id in &ids {
            crate::key::validate_chunk_id(id)?;
        }
        Ok(ids)
    }

    async fn put(s: &MemChunks, data: &[u8], age: Duration) -> String {
        let id = chunk_id(data);
        s.put_chunk(&id, Bytes::copy_from_slice(data))
            .await
            .unwrap();
        s.set_stored_at(&id, SystemTime::now() - age);
        id
    }

    #[tokio::test]
    async fn only_old_chunks_no_manifest_of_the_bucket_names_are_garbage() {
        let hour = Duration::from_secs(3600);
        let (a, b) = (MemChunks::new(), MemChunks::new());
        let named = put(&a, b"named", hour).await;
        let orphan = put(&a, b"orphan", hour).await;
        let young = put(&a, b"young", Duration::ZERO).await;
        let kept = put(&a, b"kept by the caller", hour).await;
        // Named only by a manifest of another bucket: garbage in this one.
        let elsewhere = put(&a, b"elsewhere", hour).await;
        put(&b, b"elsewhere", hour).await;
        b.put_manifest_bytes("m-b", Bytes::from(elsewhere.clone()))
            .await
            .unwrap();
        a.put_manifest_bytes("m-a", Bytes::from(named.clone()))
            .await
            .unwrap();

        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let keep = HashSet::from([kept.clone()]);
        let stats = sweep_unreferenced(&a, &keep, cutoff, lines).await.unwrap();
        assert_eq!(
            stats,
            SweepStats {
                deleted: 2,
                too_young: 1,
                undated: 0,
                referenced: 2
            }
        );
        assert_eq!(a.chunk_ids(), HashSet::from([named, young, kept]));
        assert!(!a.contains(&orphan) && !a.contains(&elsewhere));
        assert!(b.contains(&elsewhere), "the other bucket is not touched");
    }

    #[tokio::test]
    async fn an_unreadable_manifest_stops_the_sweep() {
        let s = MemChunks::new();
        let orphan = put(&s, b"orphan", Duration::from_secs(3600)).await;
        s.put_manifest_bytes("bad", Bytes::from_static(b"not a chunk id"))
            .await
            .unwrap();
        let r = sweep_unreferenced(&s, &HashSet::new(), SystemTime::now(), lines).await;
        assert!(matches!(r, Err(ChunkError::InvalidId(_))), "{r:?}");
        assert!(s.contains(&orphan), "nothing is deleted");
        // Once the manifest is gone, the orphan goes.
        s.delete_manifest("bad").await.unwrap();
        let stats = sweep_unreferenced(&s, &HashSet::new(), SystemTime::now(), lines)
            .await
            .unwrap();
        assert_eq!(stats.deleted, 1);
        assert!(!s.contains(&orphan));
    }

    #[tokio::test]
    async fn deleting_a_manifest_keeps_shared_chunks() {
        let s = MemChunks::new();
        let hour = Duration::from_secs(3600);
        let (x, y) = (put(&s, b"x", hour).await, put(&s, b"y", hour).await);
        s.put_manifest_bytes("m", Bytes::from(format!("{x}\n{y}\n{x}")))
            .await
            .unwrap();
        let stats = delete_manifest_and_chunks(&s, "m", [x.as_str(), y.as_str(), x.as_str()], &{
            HashSet::from([y.clone()])
        })
        .await
        .unwrap();
        assert_eq!(
            stats,
            DeleteStats {
                chunks_deleted: 1,
                chunks_kept: 1
            }
        );
        assert!(!s.has_manifest("m"));
        assert_eq!(s.chunk_ids(), HashSet::from([y]));
    }
}
