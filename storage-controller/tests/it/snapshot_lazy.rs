//! Volumes created from a snapshot: usable at once, fetch chunks on first touch, read
//! back identical, keep what they fetched across a reopen, never turn a bad chunk
//! into data.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use euca_sc::device::{BlockDevice, FileDevice, LazyDevice, VolumeDevice};
use euca_sc::snapshot::{
    finish_snapshot, ChunkStore, MemChunks, SnapshotError, SnapshotManifest, SnapshotProgress,
    SnapshotStore,
};
use rand::{rngs::StdRng, SeedableRng};

use crate::snapshot_common;
use snapshot_common::{random, read_all, write_all};

const CS: u64 = 4 << 20;
/// 8 chunks, the last one 2 MiB + 12 KiB.
const SIZE: u64 = 30 * (1 << 20) + 12288;

/// Source volume contents: chunk 0 random, 1 zero, 2 random, 3 = chunk 0, 4 a few
/// scattered blocks, 5 zero, 6 random, 7 (short) random.
fn source_image() -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut img = vec![0u8; SIZE as usize];
    let c = |i: u64| (i * CS) as usize..((i + 1) * CS).min(SIZE) as usize;
    let c0 = random(&mut rng, CS);
    img[c(0)].copy_from_slice(&c0);
    img[c(2)].copy_from_slice(&random(&mut rng, CS));
    img[c(3)].copy_from_slice(&c0);
    for k in [0u64, 77, 500, 1023] {
        let at = (4 * CS + k * 4096) as usize;
        img[at..at + 4096].copy_from_slice(&random(&mut rng, 4096));
    }
    img[c(6)].copy_from_slice(&random(&mut rng, CS));
    let n7 = SIZE - 7 * CS;
    img[c(7)].copy_from_slice(&random(&mut rng, n7));
    img
}

/// Writes the image to a fresh volume and snapshots it into `store`.
async fn make_snapshot(dir: &Path, store: &MemChunks, img: &[u8]) -> SnapshotManifest {
    let vol = VolumeDevice::new(Arc::new(
        FileDevice::create(&dir.join("src"), SIZE).unwrap(),
    ));
    for i in 0..SIZE.div_ceil(CS) {
        let range = (i * CS) as usize..((i + 1) * CS).min(SIZE) as usize;
        if img[range.clone()].iter().any(|&b| b != 0) {
            write_all(&vol, i * CS, &img[range]).await;
        }
    }
    let cut = vol.begin_cut(CS, &dir.join("src.preserve")).await.unwrap();
    let m = finish_snapshot(
        &vol,
        cut,
        store,
        "snap-lazy",
        "vol-src",
        &SnapshotProgress::new(),
    )
    .await
    .unwrap();
    assert_eq!(m.chunks.iter().filter(|c| c.is_none()).count(), 2);
    assert_eq!(store.puts(), 5, "chunk 3 duplicates chunk 0");
    m
}

async fn open_lazy(
    dir: &Path,
    name: &str,
    base_size: u64,
    m: &SnapshotManifest,
    store: &Arc<MemChunks>,
) -> LazyDevice {
    let base_path = dir.join(name);
    let base = if base_path.exists() {
        FileDevice::open(&base_path).unwrap()
    } else {
        FileDevice::create(&base_path, base_size).unwrap()
    };
    LazyDevice::open(
        Arc::new(base),
        m.clone(),
        store.clone() as Arc<dyn ChunkStore>,
        &dir.join(format!("{name}.presence")),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_volume_from_snapshot_reads_back_identical_and_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let img = source_image();
    let store = Arc::new(MemChunks::new());
    let m = make_snapshot(dir.path(), &store, &img).await;
    let id = |i: usize| m.chunks[i].clone().unwrap();

    // The new volume is 4 MiB bigger than the snapshot.
    let lazy = open_lazy(dir.path(), "v1", SIZE + CS, &m, &store).await;
    assert_eq!(lazy.size(), SIZE + CS);
    assert_eq!(lazy.chunks_present(), (2, 8));
    assert_eq!(store.gets(), 0, "opening fetched something");

    // Extents: chunks not fetched yet are data, zero chunks are holes.
    let ext = lazy.extents(0, 2 * CS).await.unwrap();
    assert_eq!(ext[0].length, CS);
    assert!(!ext[0].hole && !ext[0].zero);
    assert!(ext[1].hole && ext[1].zero);

    // One small read fetches exactly one chunk.
    let got = lazy.read(2 * CS + 100 * 1024, 4096).await.unwrap();
    let at = (2 * CS + 100 * 1024) as usize;
    assert_eq!(&got[..], &img[at..at + 4096]);
    assert_eq!(store.gets(), 1);
    assert_eq!(store.gets_of(&id(2)), 1);
    assert_eq!(lazy.chunks_present(), (3, 8));

    // Concurrent readers of one chunk share a single fetch.
    let mut tasks = Vec::new();
    for k in 0..8u64 {
        let lazy = lazy.clone();
        tasks.push(tokio::spawn(async move {
            lazy.read(6 * CS + k * 300_000, 65536).await.unwrap()
        }));
    }
    for (k, t) in tasks.into_iter().enumerate() {
        let at = (6 * CS + k as u64 * 300_000) as usize;
        assert_eq!(&t.await.unwrap()[..], &img[at..at + 65536]);
    }
    assert_eq!(store.gets_of(&id(6)), 1);
    assert_eq!(store.gets(), 2);

    // The whole device, byte for byte (the extra 4 MiB reads as zero).
    let all = read_all(&lazy, 0, SIZE + CS).await;
    assert!(all[..SIZE as usize] == img[..], "restored volume differs");
    assert!(all[SIZE as usize..].iter().all(|&b| b == 0));
    // Each stored chunk fetched once per chunk that uses it (chunk 0 and 3 share).
    assert_eq!(store.gets(), 6);
    assert_eq!(store.gets_of(&id(0)), 2);
    assert!(lazy.is_complete());
    // Present chunks delegate extents to the base.
    assert!(!lazy.extents(0, CS).await.unwrap()[0].hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_writes_stay_local_and_presence_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let img = source_image();
    let store = Arc::new(MemChunks::new());
    let m = make_snapshot(dir.path(), &store, &img).await;

    let lazy = open_lazy(dir.path(), "v2", SIZE, &m, &store).await;
    // A write into a chunk not fetched yet: the rest of the chunk is the snapshot's.
    let patch = vec![0xeeu8; 8192];
    lazy.write(2 * CS + 8192, Bytes::from(patch.clone()), true)
        .await
        .unwrap();
    assert_eq!(store.gets(), 1);
    let mut want = img.clone();
    let at = (2 * CS + 8192) as usize;
    want[at..at + 8192].copy_from_slice(&patch);
    assert_eq!(
        read_all(&lazy, 2 * CS, CS).await,
        want[(2 * CS) as usize..(3 * CS) as usize]
    );
    // Trim of a zero chunk and of a fetched chunk.
    lazy.trim(5 * CS, CS).await.unwrap();
    lazy.read(6 * CS, 4096).await.unwrap();
    lazy.flush().await.unwrap();
    assert_eq!(lazy.chunks_present(), (4, 8));
    let gets = store.gets();
    assert_eq!(gets, 2);

    // The snapshot is untouched: same manifest, same chunk bytes, and another
    // volume from it sees the original data.
    assert_eq!(store.get_manifest("snap-lazy").await.unwrap(), m);
    let other = open_lazy(dir.path(), "v3", SIZE, &m, &store).await;
    assert_eq!(
        read_all(&other, 2 * CS, CS).await,
        img[(2 * CS) as usize..(3 * CS) as usize]
    );
    let gets = gets + 1;
    assert_eq!(store.gets(), gets);

    // Reopen: fetched chunks stay present and are not fetched again; the write is
    // still there.
    drop(lazy);
    let lazy = open_lazy(dir.path(), "v2", SIZE, &m, &store).await;
    assert_eq!(lazy.chunks_present(), (4, 8));
    assert_eq!(
        read_all(&lazy, 2 * CS, CS).await,
        want[(2 * CS) as usize..(3 * CS) as usize]
    );
    read_all(&lazy, 6 * CS, CS).await;
    assert_eq!(
        store.gets(),
        gets,
        "reopened volume refetched a present chunk"
    );
    // Background fill pulls the rest, once each.
    lazy.fill_all().await.unwrap();
    assert!(lazy.is_complete());
    assert_eq!(store.gets(), gets + 4);
    assert!(read_all(&lazy, 0, SIZE).await == want);

    // A presence map of another manifest, or a missing map over a used base, is
    // refused.
    drop(lazy);
    let mut m2 = m.clone();
    m2.volume_id = "vol-other".into();
    let base = FileDevice::open(&dir.path().join("v2")).unwrap();
    let err = LazyDevice::open(
        Arc::new(base),
        m2,
        store.clone() as Arc<dyn ChunkStore>,
        &dir.path().join("v2.presence"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid(_)), "{err}");
    let base = FileDevice::open(&dir.path().join("v2")).unwrap();
    let err = LazyDevice::open(
        Arc::new(base),
        m.clone(),
        store.clone() as Arc<dyn ChunkStore>,
        &dir.path().join("v2.other-presence"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    // A base smaller than the snapshot is refused.
    let small = FileDevice::create(&dir.path().join("small"), SIZE - 1).unwrap();
    assert!(LazyDevice::open(
        Arc::new(small),
        m.clone(),
        store.clone() as Arc<dyn ChunkStore>,
        &dir.path().join("small.presence"),
    )
    .await
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_batched_writes_fetch_the_rest_of_their_chunks_first() {
    // Two writes as one batch into chunks not fetched yet: each chunk is the
    // snapshot's around the new bytes.
    let dir = tempfile::tempdir().unwrap();
    let img = source_image();
    let store = Arc::new(MemChunks::new());
    let m = make_snapshot(dir.path(), &store, &img).await;
    let lazy = open_lazy(dir.path(), "v4", SIZE, &m, &store).await;
    let (a, b) = (CS + 4096, 3 * CS + 12288);
    lazy.write_batch(vec![
        (a, Bytes::from(vec![0xa1u8; 4096])),
        (b, Bytes::from(vec![0xb2u8; 8192])),
    ])
    .await
    .unwrap();
    let mut want = img.clone();
    want[a as usize..a as usize + 4096].fill(0xa1);
    want[b as usize..b as usize + 8192].fill(0xb2);
    for chunk in [1, 3] {
        assert_eq!(
            read_all(&lazy, chunk * CS, CS).await,
            want[(chunk * CS) as usize..((chunk + 1) * CS) as usize],
            "chunk {chunk}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_corrupt_or_missing_chunk_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = source_image();
    let store = Arc::new(MemChunks::new());
    let m = make_snapshot(dir.path(), &store, &img).await;
    let id2 = m.chunks[2].clone().unwrap();
    let good = store.get_chunk(&id2).await.unwrap();
    assert!(store.corrupt(&id2));

    let lazy = open_lazy(dir.path(), "v4", SIZE, &m, &store).await;
    let err = lazy.read(2 * CS, 4096).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(lazy
        .write(2 * CS, Bytes::from(vec![1u8; 4096]), false)
        .await
        .is_err());
    assert!(lazy.fill_all().await.is_err());
    assert_eq!(lazy.chunks_present().0 + 1, 8, "everything else filled");
    // Nothing was written to the base for that chunk, and it is still absent after
    // a reopen.
    assert!(lazy.base().extents(2 * CS, CS).await.unwrap()[0].hole);
    drop(lazy);
    let lazy = open_lazy(dir.path(), "v4", SIZE, &m, &store).await;
    assert_eq!(lazy.chunks_present(), (7, 8));

    // A missing chunk is an error too.
    store.delete_chunk(&id2).await.unwrap();
    assert!(lazy.read(2 * CS, 4096).await.is_err());

    // Once the store has the right bytes again, the read succeeds.
    store.insert_raw(&id2, good);
    let got = read_all(&lazy, 2 * CS, CS).await;
    assert!(got == img[(2 * CS) as usize..(3 * CS) as usize]);
    assert!(lazy.is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_lazy_volume_reuses_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let img = source_image();
    let store = Arc::new(MemChunks::new());
    let m = make_snapshot(dir.path(), &store, &img).await;
    let lazy = open_lazy(dir.path(), "v5", SIZE, &m, &store).await;
    let vol = VolumeDevice::new(Arc::new(lazy.clone()));
    let cut = vol
        .begin_cut(CS, &dir.path().join("v5.preserve"))
        .await
        .unwrap();
    let m2 = finish_snapshot(
        &vol,
        cut,
        &*store,
        "snap-lazy-2",
        "vol-5",
        &SnapshotProgress::new(),
    )
    .await
    .unwrap();
    assert_eq!(m2.chunks, m.chunks);
    assert_eq!(store.puts(), 5, "nothing new uploaded");
}
