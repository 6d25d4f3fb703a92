//! The local blob store: publish protocol, ranged reads, abort, start-up sweep.
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashSet;
use walrus::blob::BlobStore;

async fn read_all(store: &BlobStore, id: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut s = store.read(id, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            v.extend(files(&e.path()));
        } else {
            v.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn write_read_abort_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path().to_path_buf()).unwrap();
    // 20 MiB in uneven chunks crosses several write-behind windows and read chunks.
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut w = store.create().await.unwrap();
    for c in data.chunks(300_001) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    assert_eq!(w.size(), data.len() as u64);
    let id = w.finish().await.unwrap();
    assert_eq!(read_all(&store, &id, None).await, data);
    assert_eq!(
        read_all(&store, &id, Some(5..(3 << 20) + 7)).await,
        &data[5..(3 << 20) + 7]
    );

    // An aborted writer leaves no file behind.
    let mut w = store.create().await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.abort().await;
    assert_eq!(files(dir.path()).len(), 1, "{:?}", files(dir.path()));

    // A copy is an independent blob with the same bytes.
    let copy = store.copy(&id).await.unwrap();
    assert_eq!(read_all(&store, &copy, Some(0..10)).await, &data[..10]);

    // The sweep keeps referenced blobs and removes the rest and staging leftovers.
    let orphan = store.put(Bytes::from_static(b"orphan")).await.unwrap();
    let staging = dir
        .path()
        .join("blobs")
        .join(&id[..2])
        .join(format!("{id}#w"));
    std::fs::write(&staging, b"crash leftover").unwrap();
    let keep: HashSet<String> = [id.clone()].into();
    let removed = store.sweep(&keep, std::time::Duration::ZERO).await.unwrap();
    assert_eq!(removed, 3, "copy, orphan and staging file");
    assert_eq!(files(dir.path()), vec![id.clone()]);
    assert!(store.read(&orphan, None).await.is_err());
    store.delete(&id).await.unwrap();
    store.delete(&id).await.unwrap(); // idempotent
    assert!(files(dir.path()).is_empty());
}

/// A store shared by several front ends sweeps only what is older than `min_age`: an
/// old blob nobody references goes; a copy made a moment ago from an old blob (a hard
/// link, which keeps the source's mtime) stays, as does a fresh staging file.
#[tokio::test(flavor = "multi_thread")]
async fn shared_sweep_spares_young_blobs_and_fresh_copies() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path().to_path_buf()).unwrap();
    let path = |id: &str| dir.path().join("blobs").join(&id[..2]).join(id);
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let age = |id: &str| {
        std::fs::File::options()
            .write(true)
            .open(path(id))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    };
    let old = store.put(Bytes::from_static(b"old orphan")).await.unwrap();
    let source = store.put(Bytes::from_static(b"copied")).await.unwrap();
    age(&old);
    age(&source);
    // The ctime of an inode changes with its mtime: wait, so the link below is what
    // makes the copy's ctime new, not the set_modified above.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before_copy = std::time::SystemTime::now();
    let copy = store.copy(&source).await.unwrap();
    let young = store
        .put(Bytes::from_static(b"young orphan"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(path(&copy)).unwrap().modified().unwrap(),
        two_hours_ago,
        "a copy is a hard link with the source's mtime"
    );
    let staging = dir
        .path()
        .join("blobs")
        .join(&old[..2])
        .join(format!("{old}#9"));
    std::fs::write(&staging, b"another front end's PUT").unwrap();
    let keep: HashSet<String> = [source.clone()].into();
    let removed = store
        .sweep(&keep, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        removed, 0,
        "the old orphan's inode was touched too (set_modified)"
    );
    // Once the ctime is old enough as well, only the orphans go. Simulated by a
    // min_age that puts the cut-off half a second before the copy was made: after the
    // old orphan's ctime (1.1 s before the copy), before every newer file's, however
    // long the steps above took.
    let min_age = before_copy.elapsed().unwrap() + std::time::Duration::from_millis(500);
    let removed = store.sweep(&keep, min_age).await.unwrap();
    assert_eq!(removed, 1, "only the old orphan: {:?}", files(dir.path()));
    assert!(!path(&old).exists());
    assert!(path(&copy).exists() && path(&young).exists() && staging.exists());
    assert!(path(&source).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn aligned_chunks_skip_the_page_cache_unless_direct_writes_are_off() {
    use euca_durable::{buffers::AlignedBuf, DIRECT_ALIGN};
    // /var/tmp, not a /tmp that may be a tmpfs refusing O_DIRECT.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let chunk = (256 << 10) - DIRECT_ALIGN;
    let mut resident = Vec::new();
    for direct in [true, false] {
        let store = BlobStore::local(dir.path().to_path_buf())
            .unwrap()
            .with_direct_writes(direct);
        let mut w = store.create().await.unwrap();
        for i in 0..32u8 {
            let mut a = AlignedBuf::take(chunk);
            a.extend_from_slice(&vec![i; chunk]);
            w.write(a.freeze()).await.unwrap();
        }
        let id = w.finish().await.unwrap();
        let path = dir.path().join("blobs").join(&id[..2]).join(&id);
        let file = std::fs::File::open(&path).unwrap();
        resident.push(euca_durable::cached_pages(&file).unwrap());
        let back = read_all(&store, &id, None).await;
        assert_eq!(back.len(), 32 * chunk);
        assert!(back
            .chunks(chunk)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    }
    let pages = 32 * chunk / 4096;
    assert_eq!(resident, [0, pages], "pages cached: direct, then buffered");
}
