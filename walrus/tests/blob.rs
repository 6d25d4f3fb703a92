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
