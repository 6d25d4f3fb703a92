//! Crash-consistent cuts: a snapshot taken under a running writer contains every
//! write acked before the call and no write issued after it returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use euca_sc::device::{BlockDevice, FileDevice, LazyDevice, VolumeDevice};
use euca_sc::snapshot::{
    finish_snapshot, ChunkError, ChunkStore, MemChunks, SnapshotError, SnapshotProgress,
    SnapshotStore, StoredChunk,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

const BLOCK: u64 = 4096;
const VOL: u64 = 16 << 20;
const CHUNK: u64 = 64 << 10;
const WRITERS: u64 = 4;

/// A 4 KiB block stamped with its write's sequence number and block index; the rest
/// is a pattern derived from both, so a torn or misplaced block is detected.
fn stamp(seq: u64, block: u64) -> Bytes {
    let mut v = Vec::with_capacity(BLOCK as usize);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    let mut x =
        (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ block.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) | 1;
    while (v.len() as u64) < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

/// The sequence number in a block (0 = never written); panics on a torn block.
fn decode(buf: &[u8], block: u64) -> u64 {
    if buf.iter().all(|&b| b == 0) {
        return 0;
    }
    let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let b = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    assert_eq!(b, block, "block {block} holds data of block {b}");
    assert!(
        buf == &stamp(seq, block)[..],
        "block {block} is torn (seq {seq})"
    );
    seq
}

/// Phases of the snapshot call, as seen by writers.
const BEFORE: u8 = 0;
const CALLING: u8 = 1;
const RETURNED: u8 = 2;

#[derive(Clone, Copy, Debug)]
struct Rec {
    seq: u64,
    block: u64,
    issued: u8,
    acked: u8,
}

/// A chunk store that answers slowly, so writers run while the upload is going.
struct SlowStore(Arc<MemChunks>);

#[async_trait::async_trait]
impl ChunkStore for SlowStore {
    async fn has_chunk(&self, id: &str) -> Result<bool, ChunkError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.has_chunk(id).await
    }
    async fn put_chunk(&self, id: &str, data: Bytes) -> Result<(), ChunkError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.put_chunk(id, data).await
    }
    async fn get_chunk(&self, id: &str) -> Result<Bytes, ChunkError> {
        self.0.get_chunk(id).await
    }
    async fn delete_chunk(&self, id: &str) -> Result<(), ChunkError> {
        self.0.delete_chunk(id).await
    }
    async fn put_manifest_bytes(&self, name: &str, body: Bytes) -> Result<(), ChunkError> {
        self.0.put_manifest_bytes(name, body).await
    }
    async fn get_manifest_bytes(&self, name: &str) -> Result<Bytes, ChunkError> {
        self.0.get_manifest_bytes(name).await
    }
    async fn delete_manifest(&self, id: &str) -> Result<(), ChunkError> {
        self.0.delete_manifest(id).await
    }
    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        self.0.list_chunks().await
    }
    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        self.0.list_manifests().await
    }
}

async fn read_blocks(dev: &dyn BlockDevice) -> Vec<u64> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < VOL {
        let buf = dev.read(off, 1 << 20).await.unwrap();
        for (k, blk) in buf.chunks(BLOCK as usize).enumerate() {
            out.push(decode(blk, off / BLOCK + k as u64));
        }
        off += 1 << 20;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_cut_under_running_writer_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileDevice::create(&dir.path().join("vol"), VOL).unwrap();
    let vol = VolumeDevice::new(Arc::new(file));
    let seq = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));

    // Each writer owns the blocks b with b % WRITERS == k and has one write in
    // flight at a time, so the writes to one block are totally ordered by seq.
    let mut writers = Vec::new();
    for k in 0..WRITERS {
        let (vol, seq, phase, stop) = (vol.clone(), seq.clone(), phase.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(k);
            let mut recs = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let block = rng.random_range(0..VOL / BLOCK / WRITERS) * WRITERS + k;
                let s = seq.fetch_add(1, Ordering::SeqCst) + 1;
                let issued = phase.load(Ordering::SeqCst);
                // Odd writers send two blocks at a time as one batch (what the
                // NBD and iSCSI servers do with writes that arrive together).
                let other = rng.random_range(0..VOL / BLOCK / WRITERS) * WRITERS + k;
                let second = (k % 2 == 1 && other != block)
                    .then(|| (other, seq.fetch_add(1, Ordering::SeqCst) + 1));
                match second {
                    None => vol.write(block * BLOCK, stamp(s, block), false).await,
                    Some((b2, s2)) => {
                        vol.write_batch(vec![
                            (block * BLOCK, stamp(s, block)),
                            (b2 * BLOCK, stamp(s2, b2)),
                        ])
                        .await
                    }
                }
                .unwrap();
                let acked = phase.load(Ordering::SeqCst);
                recs.push(Rec {
                    seq: s,
                    block,
                    issued,
                    acked,
                });
                if let Some((b2, s2)) = second {
                    recs.push(Rec {
                        seq: s2,
                        block: b2,
                        issued,
                        acked,
                    });
                }
            }
            recs
        }));
    }

    while seq.load(Ordering::SeqCst) < 3000 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    phase.store(CALLING, Ordering::SeqCst);
    let cut = vol
        .begin_cut(CHUNK, &dir.path().join("vol.preserve"))
        .await
        .unwrap();
    phase.store(RETURNED, Ordering::SeqCst);
    let seq_at_cut = seq.load(Ordering::SeqCst);
    assert!(vol.cut_active());

    let mem = Arc::new(MemChunks::new());
    let store = SlowStore(mem.clone());
    let progress = SnapshotProgress::new();
    let preserve_path = cut.preserve_path().to_path_buf();
    let watch_cut = cut.clone();
    let manifest = finish_snapshot(&vol, cut, &store, "snap-cut", "vol-cut", &progress)
        .await
        .unwrap();
    let preserved = watch_cut.chunks_preserved();
    drop(watch_cut);
    assert!(!vol.cut_active());
    assert!(!preserve_path.exists(), "preserve file left behind");
    let seq_after_upload = seq.load(Ordering::SeqCst);

    // Keep writing a little after the upload, then stop.
    while seq.load(Ordering::SeqCst) < seq_after_upload + 1000 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut recs: Vec<Rec> = Vec::new();
    for w in writers {
        recs.extend(w.await.unwrap());
    }
    let report = progress.report();
    eprintln!(
        "writes: {} total, {} before the cut, {} during the upload; \
         chunks preserved by writers: {preserved}; progress {report:?}",
        recs.len(),
        seq_at_cut,
        seq_after_upload - seq_at_cut
    );
    // The test only means something if writers really raced the upload.
    assert!(
        seq_after_upload - seq_at_cut > 200,
        "too few writes during the upload"
    );
    assert!(preserved > 0, "no chunk was ever copied-on-write");
    assert_eq!(report.chunks_done, report.chunks_total);
    assert_eq!(report.chunks_total, VOL / CHUNK);

    // Read the snapshot back through a volume created from it.
    let mut by_block: HashMap<u64, Vec<Rec>> = HashMap::new();
    for r in &recs {
        by_block.entry(r.block).or_default().push(*r);
    }
    let stored = mem.get_manifest("snap-cut").await.unwrap();
    assert_eq!(stored, manifest);
    let base = FileDevice::create(&dir.path().join("restored"), VOL).unwrap();
    let restored = LazyDevice::open(
        Arc::new(base),
        manifest,
        mem.clone() as Arc<dyn ChunkStore>,
        &dir.path().join("restored.presence"),
    )
    .await
    .unwrap();
    let snap = read_blocks(&restored).await;
    let live = read_blocks(&vol).await;

    let (mut changed_after, mut in_flight_in) = (0, 0);
    for block in 0..VOL / BLOCK {
        let mut writes = by_block.remove(&block).unwrap_or_default();
        writes.sort_by_key(|r| r.seq);
        let got = snap[block as usize];
        // Every write acked before the call: the last of them must be the value,
        // unless a later write that was issued before the call returned replaced it.
        let last_acked = writes
            .iter()
            .filter(|r| r.acked == BEFORE)
            .map(|r| r.seq)
            .max()
            .unwrap_or(0);
        let concurrent: Vec<u64> = writes
            .iter()
            .filter(|r| r.acked != BEFORE && r.issued != RETURNED)
            .map(|r| r.seq)
            .collect();
        let after: Vec<u64> = writes
            .iter()
            .filter(|r| r.issued == RETURNED)
            .map(|r| r.seq)
            .collect();
        assert!(
            !after.contains(&got),
            "block {block}: the snapshot holds write {got}, issued after the cut returned"
        );
        assert!(
            got == last_acked || concurrent.contains(&got),
            "block {block}: snapshot has {got}; last write acked before the cut was \
             {last_acked}; concurrent writes {concurrent:?}"
        );
        if concurrent.contains(&got) {
            in_flight_in += 1;
        }
        // The live volume has every write.
        let last = writes.last().map(|r| r.seq).unwrap_or(0);
        assert_eq!(live[block as usize], last, "live block {block}");
        if last != got {
            changed_after += 1;
        }
    }
    eprintln!("blocks changed after the cut: {changed_after}; concurrent writes in the cut: {in_flight_in}");
    assert!(
        changed_after > 100,
        "writers barely changed the volume after the cut"
    );
}

fn pattern(byte: u8, len: u64) -> Bytes {
    Bytes::from(vec![byte; len as usize])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_place_wait_out_a_cut() {
    // `write_here` (a protocol server's write on its own blocking thread) bypasses
    // the copy-before-write: it must refuse while a cut is active, so that such
    // writes go the awaiting way and the cut still holds the old bytes.
    let dir = tempfile::tempdir().unwrap();
    let file = FileDevice::create(&dir.path().join("vol"), 4 * CHUNK).unwrap();
    let vol = VolumeDevice::new(Arc::new(file));
    assert!(matches!(vol.write_here(0, &[0x11; 4096]), Some(Ok(()))));
    let cut = vol.begin_cut(CHUNK, &dir.path().join("p")).await.unwrap();
    assert!(vol.write_here(0, &[]).is_none(), "probe during a cut");
    assert!(vol.write_here(0, &[0x22; 4096]).is_none());
    vol.write(0, pattern(0x22, 4096), false).await.unwrap();
    let old = cut.read_chunk(0).await.unwrap();
    assert!(
        old[..4096].iter().all(|&b| b == 0x11),
        "the cut lost the old bytes"
    );
    drop(cut);
    vol.end_cut().await.unwrap();
    assert!(matches!(vol.write_here(0, &[0x33; 4096]), Some(Ok(()))));
    assert!(vol.read(0, 4096).await.unwrap().iter().all(|&b| b == 0x33));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_cut_copy_on_write_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileDevice::create(&dir.path().join("vol"), 8 * CHUNK).unwrap();
    let vol = VolumeDevice::new(Arc::new(file));
    // Chunk 0: 0x11, chunk 1: 0x22 (first half), chunks 2..: zero.
    vol.write(0, pattern(0x11, CHUNK), false).await.unwrap();
    vol.write(CHUNK, pattern(0x22, CHUNK / 2), false)
        .await
        .unwrap();
    vol.write(4 * CHUNK, pattern(0x44, CHUNK), false)
        .await
        .unwrap();

    let ppath = dir.path().join("p");
    assert!(matches!(
        vol.begin_cut(4096, &ppath).await,
        Err(SnapshotError::Invalid(_))
    ));
    let cut = vol.begin_cut(CHUNK, &ppath).await.unwrap();
    assert!(ppath.exists());
    assert!(matches!(
        vol.begin_cut(CHUNK, &dir.path().join("q")).await,
        Err(SnapshotError::CutActive)
    ));

    // After the cut: overwrite part of chunk 0, write into zero chunk 2, trim chunk
    // 1, write-zeroes chunk 4 (all while the snapshot has read none of them).
    vol.write(100, pattern(0x99, 5000), true).await.unwrap();
    vol.write(2 * CHUNK + 7, pattern(0x77, 10), false)
        .await
        .unwrap();
    vol.trim(CHUNK, CHUNK).await.unwrap();
    vol.write_zeroes(4 * CHUNK, CHUNK, true, false)
        .await
        .unwrap();
    // Fast zero declines while the cut still needs the chunk.
    assert!(!vol
        .write_zeroes_fast(5 * CHUNK, CHUNK, true, false)
        .await
        .unwrap());
    assert_eq!(cut.chunks_preserved(), 4);
    // Copies go in whole pieces (a chunk here), all-zero ones are only marked.
    assert_eq!(cut.bytes_preserved(), 3 * CHUNK);

    // The live volume has the new data.
    let live0 = vol.read(0, CHUNK as u32).await.unwrap();
    assert_eq!(live0[100], 0x99);
    assert!(vol.read(CHUNK, 4096).await.unwrap().iter().all(|&b| b == 0));

    // The cut has the old data; preserved chunks can be read twice.
    for _ in 0..2 {
        assert_eq!(cut.read_chunk(0).await.unwrap(), pattern(0x11, CHUNK));
    }
    let c1 = cut.read_chunk(1).await.unwrap();
    assert!(c1[..CHUNK as usize / 2].iter().all(|&b| b == 0x22));
    assert!(c1[CHUNK as usize / 2..].iter().all(|&b| b == 0));
    assert_eq!(
        cut.take_chunk(2).await.unwrap(),
        None,
        "chunk 2 was zero at the cut"
    );
    assert_eq!(cut.read_chunk(4).await.unwrap(), pattern(0x44, CHUNK));

    // A chunk read from the live device is taken: later writes don't preserve it
    // and it cannot be read again.
    assert!(cut.read_chunk(3).await.unwrap().iter().all(|&b| b == 0));
    vol.write(3 * CHUNK, pattern(0x33, 4096), false)
        .await
        .unwrap();
    assert_eq!(cut.chunks_preserved(), 4);
    assert!(cut.read_chunk(3).await.is_err());
    // Chunk 6 is a hole: take_chunk says zero without reading.
    assert_eq!(cut.take_chunk(6).await.unwrap(), None);
    assert!(vol
        .write_zeroes_fast(6 * CHUNK, CHUNK, true, false)
        .await
        .unwrap());
    assert!(cut.read_chunk(8).await.is_err(), "past the end");

    vol.end_cut().await.unwrap();
    assert!(!ppath.exists());
    assert!(cut.read_chunk(5).await.is_err(), "cut has ended");
    drop(cut);

    // A cut dropped without end_cut ends too, and removes its file.
    let cut2 = vol.begin_cut(CHUNK, &ppath).await.unwrap();
    vol.write(0, pattern(0x55, 4096), false).await.unwrap();
    assert_eq!(cut2.chunks_preserved(), 1);
    drop(cut2);
    assert!(!vol.cut_active());
    assert!(!ppath.exists());
    let cut3 = vol.begin_cut(CHUNK, &ppath).await.unwrap();
    assert_eq!(cut3.read_chunk(0).await.unwrap()[0], 0x55);
    vol.end_cut().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_preserve_file_must_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileDevice::create(&dir.path().join("vol"), 4 * CHUNK).unwrap();
    let vol = VolumeDevice::new(Arc::new(file));
    let ppath = dir.path().join("p");
    std::fs::write(&ppath, b"someone else's").unwrap();
    assert!(matches!(
        vol.begin_cut(CHUNK, &ppath).await,
        Err(SnapshotError::Io(_))
    ));
    assert_eq!(std::fs::read(&ppath).unwrap(), b"someone else's");
    assert!(!vol.cut_active());
}
