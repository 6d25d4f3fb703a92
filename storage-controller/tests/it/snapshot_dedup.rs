//! Dedup: zero chunks are never stored, unchanged chunks are not uploaded again, and
//! the bytes that reach the store are exactly the chunks that had to.

use std::sync::Arc;

use bytes::Bytes;
use euca_sc::device::{BlockDevice, FileDevice, VolumeDevice};
use euca_sc::snapshot::{
    chunk_id, delete_snapshot, finish_snapshot, referenced_chunks, ChunkStore, MemChunks,
    SnapshotManifest, SnapshotProgress, SnapshotStore, DEFAULT_CHUNK_SIZE,
};
use rand::{rngs::StdRng, SeedableRng};

use crate::snapshot_common;
use snapshot_common::{random, read_all, write_all};

const CS: u64 = DEFAULT_CHUNK_SIZE;
const VOL: u64 = 64 << 20;

async fn snapshot(
    dir: &std::path::Path,
    vol: &VolumeDevice,
    store: &dyn ChunkStore,
    id: &str,
) -> (SnapshotManifest, SnapshotProgress) {
    let progress = SnapshotProgress::new();
    let cut = vol
        .begin_cut(CS, &dir.join(format!("{id}.preserve")))
        .await
        .unwrap();
    let m = finish_snapshot(vol, cut, store, id, "vol-1", &progress)
        .await
        .unwrap();
    (m, progress)
}

fn some_positions(m: &SnapshotManifest) -> Vec<usize> {
    m.chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_some())
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_zero_and_unchanged_chunks_are_not_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let vol = VolumeDevice::new(Arc::new(
        FileDevice::create(&dir.path().join("vol"), VOL).unwrap(),
    ));
    let c1 = random(&mut rng, CS);
    let c5 = random(&mut rng, CS);
    let c9_head = random(&mut rng, 4096);
    write_all(&vol, CS, &c1).await;
    write_all(&vol, 5 * CS, &c5).await;
    write_all(&vol, 9 * CS, &c9_head).await;
    // Allocated zeros (not holes): must be detected by content, not by extents.
    vol.write_zeroes(12 * CS, CS, false, false).await.unwrap();
    vol.write(14 * CS + 8192, Bytes::from(vec![0u8; 65536]), false)
        .await
        .unwrap();
    vol.flush().await.unwrap();
    let ext = vol.extents(12 * CS, CS).await.unwrap();
    assert!(!ext[0].hole, "allocated zeros reported as a hole: {ext:?}");

    let store = MemChunks::new();
    let (m1, p1) = snapshot(dir.path(), &vol, &store, "snap-1").await;
    assert_eq!(m1.chunks.len(), 16);
    assert_eq!(some_positions(&m1), vec![1, 5, 9]);
    assert_eq!(store.puts(), 3);
    assert_eq!(store.bytes_put(), 3 * CS);
    assert_eq!(store.chunk_count(), 3);
    assert_eq!(store.stored_bytes(), 3 * CS);
    let r = p1.report();
    assert_eq!(
        (
            r.chunks_total,
            r.chunks_done,
            r.chunks_zero,
            r.chunks_reused,
            r.chunks_uploaded
        ),
        (16, 16, 13, 0, 3)
    );
    assert_eq!(r.bytes_uploaded, 3 * CS);
    assert_eq!(p1.percent(), 100);
    // What reached the store is the volume's bytes.
    assert_eq!(
        store
            .get_chunk(m1.chunks[1].as_ref().unwrap())
            .await
            .unwrap(),
        c1
    );
    let mut c9 = c9_head.clone();
    c9.resize(CS as usize, 0);
    assert_eq!(m1.chunks[9].as_deref(), Some(chunk_id(&c9).as_str()));
    assert_eq!(store.get_manifest("snap-1").await.unwrap(), m1);

    // Change one chunk: only it is uploaded.
    vol.write(5 * CS + 4096, Bytes::from(vec![0xabu8; 4096]), false)
        .await
        .unwrap();
    let (m2, p2) = snapshot(dir.path(), &vol, &store, "snap-2").await;
    assert_eq!(store.puts(), 4);
    assert_eq!(store.bytes_put(), 4 * CS);
    let r = p2.report();
    assert_eq!(
        (
            r.chunks_zero,
            r.chunks_reused,
            r.chunks_uploaded,
            r.bytes_uploaded
        ),
        (13, 2, 1, CS)
    );
    let diff: Vec<usize> = (0..16).filter(|&i| m1.chunks[i] != m2.chunks[i]).collect();
    assert_eq!(diff, vec![5]);

    // An identical second volume: nothing uploaded.
    let vol2 = VolumeDevice::new(Arc::new(
        FileDevice::create(&dir.path().join("vol2"), VOL).unwrap(),
    ));
    for i in some_positions(&m2) {
        let data = read_all(&vol, i as u64 * CS, CS).await;
        write_all(&vol2, i as u64 * CS, &data).await;
    }
    let (m3, p3) = snapshot(dir.path(), &vol2, &store, "snap-3").await;
    assert_eq!(store.puts(), 4, "identical volume uploaded chunks");
    assert_eq!(store.bytes_put(), 4 * CS);
    assert_eq!(m3.chunks, m2.chunks);
    assert_eq!(p3.report().chunks_reused, 3);
    assert_eq!(store.chunk_count(), 4);

    // Deleting snap-1 removes only the chunk no other snapshot uses (old chunk 5).
    let keep = referenced_chunks([&m2, &m3]);
    let stats = delete_snapshot(&store, "snap-1", &keep).await.unwrap();
    assert_eq!((stats.chunks_deleted, stats.chunks_kept), (1, 2));
    assert!(!store.has_manifest("snap-1"));
    assert!(!store.contains(m1.chunks[5].as_ref().unwrap()));
    assert_eq!(store.chunk_count(), 3);
    for id in m2.chunks.iter().flatten() {
        store.get_chunk(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_duplicate_chunks_within_a_snapshot_are_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    // 10 MiB + 12 KiB: the last chunk is short.
    let size = 10 * (1 << 20) + 12288;
    let cs = 1u64 << 20;
    let vol = VolumeDevice::new(Arc::new(
        FileDevice::create(&dir.path().join("vol"), size).unwrap(),
    ));
    let a = random(&mut rng, cs);
    for i in [0u64, 3, 4, 7] {
        write_all(&vol, i * cs, &a).await;
    }
    let tail = random(&mut rng, 12288);
    write_all(&vol, 10 * cs, &tail).await;

    let store = MemChunks::new();
    let progress = SnapshotProgress::new();
    let cut = vol.begin_cut(cs, &dir.path().join("p")).await.unwrap();
    let m = finish_snapshot(&vol, cut, &store, "snap-dup", "vol-1", &progress)
        .await
        .unwrap();
    assert_eq!(m.chunks.len(), 11);
    assert_eq!(m.chunk_len(10), 12288);
    assert_eq!(m.chunks[10].as_deref(), Some(chunk_id(&tail).as_str()));
    assert_eq!(store.puts(), 2);
    assert_eq!(store.bytes_put(), cs + 12288);
    let r = progress.report();
    assert_eq!(
        (r.chunks_uploaded, r.chunks_reused, r.chunks_zero),
        (2, 3, 6)
    );
}
