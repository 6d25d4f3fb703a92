//! Chunks of a snapshot upload that a crash cut short are swept: after the
//! restart, deleting the failed snapshot leaves no chunk that no manifest
//! refers to, and the chunks of good snapshots stay intact.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use euca_sc::config::ScConfig;
use euca_sc::model::SnapshotState;
use euca_sc::nbd::ExportTable;
use euca_sc::service::StorageController;
use euca_sc::snapshot::{chunk_id, ChunkError, ChunkStore, MemChunks, SnapshotStore, StoredChunk};
use euca_sc::state::StateStore;
use euca_sc::store::FileVolumeStore;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 4 * MIB;

/// A chunk store that stops answering chunk PUTs after `limit` of them, as if
/// the process died in the middle of an upload, and counts the chunk listings
/// (one per sweep).
struct CrashingStore {
    inner: Arc<MemChunks>,
    puts: AtomicU64,
    limit: u64,
    listings: AtomicU64,
}

impl CrashingStore {
    fn new(inner: &Arc<MemChunks>, limit: u64) -> Arc<CrashingStore> {
        Arc::new(CrashingStore {
            inner: inner.clone(),
            puts: AtomicU64::new(0),
            limit,
            listings: AtomicU64::new(0),
        })
    }
}

#[async_trait::async_trait]
impl ChunkStore for CrashingStore {
    async fn has_chunk(&self, id: &str) -> Result<bool, ChunkError> {
        self.inner.has_chunk(id).await
    }
    async fn put_chunk(&self, id: &str, data: Bytes) -> Result<(), ChunkError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) >= self.limit {
            std::future::pending::<()>().await;
        }
        self.inner.put_chunk(id, data).await
    }
    async fn get_chunk(&self, id: &str) -> Result<Bytes, ChunkError> {
        self.inner.get_chunk(id).await
    }
    async fn delete_chunk(&self, id: &str) -> Result<(), ChunkError> {
        self.inner.delete_chunk(id).await
    }
    async fn put_manifest_bytes(&self, name: &str, body: Bytes) -> Result<(), ChunkError> {
        self.inner.put_manifest_bytes(name, body).await
    }
    async fn get_manifest_bytes(&self, name: &str) -> Result<Bytes, ChunkError> {
        self.inner.get_manifest_bytes(name).await
    }
    async fn delete_manifest(&self, id: &str) -> Result<(), ChunkError> {
        self.inner.delete_manifest(id).await
    }
    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        self.inner.list_chunks().await
    }
    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        self.inner.list_manifests().await
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open_sc(dir: &Path, chunks: Arc<dyn ChunkStore>, grace: u64) -> Arc<StorageController> {
    let cfg = ScConfig {
        data_dir: dir.to_path_buf(),
        orphan_chunk_grace_secs: grace,
        ..ScConfig::default()
    };
    StorageController::open(
        StateStore::open(&dir.join("sc.redb")).unwrap(),
        Arc::new(FileVolumeStore::new(dir.join("volumes")).unwrap()),
        chunks,
        ExportTable::new(),
        &cfg,
        "127.0.0.1:10809".parse().unwrap(),
        None,
    )
    .await
    .unwrap()
}

/// Fills chunk `index` of the volume file with `fill`.
fn write_chunk(dir: &Path, vol: &str, index: u64, fill: u8) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("volumes").join(format!("{vol}.img")))
        .unwrap();
    f.write_all_at(&vec![fill; CHUNK as usize], index * CHUNK)
        .unwrap();
    f.sync_all().unwrap();
}

async fn wait_completed(sc: &StorageController, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sc.describe_snapshot(id).unwrap();
        match s.state {
            SnapshotState::Completed => return,
            SnapshotState::Error => panic!("snapshot {id} failed: {:?}", s.error),
            SnapshotState::Pending => {}
        }
        assert!(Instant::now() < deadline, "snapshot {id} did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every chunk id any stored manifest refers to.
async fn referenced(store: &MemChunks) -> HashSet<String> {
    let mut out = HashSet::new();
    for id in store.list_manifests().await.unwrap() {
        let m = store.get_manifest(&id).await.unwrap();
        out.extend(m.chunk_ids().into_iter().map(String::from));
    }
    out
}

/// A good snapshot of chunks 0-1, then a second one (chunks 0-1 and 2-9) whose
/// upload "crashes" after 3 new chunks. Returns (volume, good snapshot, its
/// chunks, failed snapshot, the chunks the failed upload stored).
fn crash_mid_upload(
    dir: &Path,
    store: &Arc<MemChunks>,
) -> (String, String, HashSet<String>, String, HashSet<String>) {
    let rt = runtime();
    let crashing = CrashingStore::new(store, 2 + 3);
    let out = rt.block_on(async {
        let sc = open_sc(dir, crashing, 0).await;
        let v = sc.create_volume(Some(1), None).await.unwrap();
        write_chunk(dir, &v.id, 0, 1);
        write_chunk(dir, &v.id, 1, 2);
        let good = sc.create_snapshot(&v.id).await.unwrap();
        wait_completed(&sc, &good.id).await;
        let good_chunks = store.chunk_ids();
        assert_eq!(good_chunks.len(), 2);

        for i in 2..10 {
            write_chunk(dir, &v.id, i, 10 + i as u8);
        }
        let failed = sc.create_snapshot(&v.id).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.chunk_count() < 2 + 3 {
            assert!(
                Instant::now() < deadline,
                "the upload did not store 3 chunks"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let partial: HashSet<String> = store
            .chunk_ids()
            .difference(&good_chunks)
            .cloned()
            .collect();
        assert_eq!(partial.len(), 3);
        (v.id, good.id, good_chunks, failed.id, partial)
    });
    // The "crash": every task stops where it is, nothing is cleaned up.
    rt.shutdown_timeout(Duration::from_secs(10));
    out
}

#[test]
fn chunks_of_an_upload_cut_short_by_a_crash_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemChunks::new());
    let (vol, good, good_chunks, failed, partial) = crash_mid_upload(dir.path(), &store);
    assert!(!store.has_manifest(&failed));

    let rt = runtime();
    rt.block_on(async {
        let sc = open_sc(dir.path(), store.clone(), 0).await;
        let s = sc.describe_snapshot(&failed).unwrap();
        assert_eq!(s.state, SnapshotState::Error, "{s:?}");
        sc.delete_snapshot(&failed).await.unwrap();

        let left = store.chunk_ids();
        let refs = referenced(&store).await;
        let orphans: Vec<&String> = left.difference(&refs).collect();
        assert!(
            orphans.is_empty(),
            "chunks no manifest refers to: {orphans:?}"
        );
        assert!(
            partial.is_disjoint(&left),
            "the failed upload's chunks are gone"
        );
        assert_eq!(left, good_chunks, "the good snapshot's chunks are all kept");
        for id in &good_chunks {
            // get_chunk checks the SHA-256: the bytes are intact.
            let data = store.get_chunk(id).await.unwrap();
            assert_eq!(&chunk_id(&data), id);
        }
        let m = store.get_manifest(&good).await.unwrap();
        assert_eq!(m.volume_id, vol);

        // The volume can still be snapshotted, and its chunks all come back.
        let again = sc.create_snapshot(&vol).await.unwrap();
        wait_completed(&sc, &again.id).await;
        assert_eq!(store.chunk_count(), 2 + 8);
    });
}

#[test]
fn orphaned_chunks_younger_than_the_grace_period_are_kept_until_they_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemChunks::new());
    let (_vol, _good, good_chunks, failed, partial) = crash_mid_upload(dir.path(), &store);

    let rt = runtime();
    let counted = CrashingStore::new(&store, u64::MAX);
    rt.block_on(async {
        let sc = open_sc(dir.path(), counted.clone(), 3600).await;
        sc.delete_snapshot(&failed).await.unwrap();
        // Stored moments ago: possibly another writer's, not swept yet.
        assert!(partial.is_subset(&store.chunk_ids()));
        let stats = sc.sweep_orphan_chunks().await.unwrap();
        assert_eq!((stats.deleted, stats.too_young), (0, 3), "{stats:?}");
        // Three sweeps list the chunks, one at a time (each holds the chunk lock):
        // the one the SC starts when it opens, the one deleting a failed snapshot
        // runs, and the one above; all saw them young and kept them. Once all
        // three have listed, the chunks aged below are the next sweep's to delete
        // (a late opening sweep deleted them first once in CI).
        let deadline = Instant::now() + Duration::from_secs(30);
        while counted.listings.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the opening sweep did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Once older than the grace period, they go; the good chunks stay.
        let old = SystemTime::now() - Duration::from_secs(7200);
        for id in store.chunk_ids() {
            store.set_stored_at(&id, old);
        }
        let stats = sc.sweep_orphan_chunks().await.unwrap();
        assert_eq!((stats.deleted, stats.referenced), (3, 2), "{stats:?}");
        assert_eq!(store.chunk_ids(), good_chunks);
    });
}
