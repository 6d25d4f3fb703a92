//! `CacheImages`: the node image cache as the instances' image source — fetch,
//! pin per instance (the cache refuses to evict a pinned image), unpin.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use euca_imagecache::daemon::{Daemon, DaemonConfig};
use euca_imagecache::http::Token;
use euca_imagecache::manifest::{sha256_hex, FORMAT, MIN_PIECE_SIZE};
use euca_imagecache::origin::Origin;
use euca_imagecache::store::Store;
use euca_imagecache::{CacheError, ImageId, ImageManifest};
use euca_nc::hypervisor::CacheImages;
use euca_nc::node::ImageSource;
use euca_nc::NcError;

#[derive(Default)]
struct MemOrigin {
    manifests: Mutex<HashMap<ImageId, Bytes>>,
    pieces: Mutex<HashMap<String, Bytes>>,
}

#[async_trait::async_trait]
impl Origin for MemOrigin {
    async fn manifest(&self, id: &ImageId) -> Result<Bytes, CacheError> {
        self.manifests
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| CacheError::NotFound(id.to_string()))
    }
    async fn piece(&self, sha: &str) -> Result<Bytes, CacheError> {
        self.pieces
            .lock()
            .unwrap()
            .get(sha)
            .cloned()
            .ok_or_else(|| CacheError::NotFound(sha.into()))
    }
}

fn pins(store: &Store, id: &ImageId) -> Vec<String> {
    store
        .list()
        .into_iter()
        .find(|s| &s.id == id)
        .map(|s| s.pins)
        .unwrap_or_default()
}

#[tokio::test]
async fn fetch_pin_and_release() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(3 * MIN_PIECE_SIZE - 7))
        .map(|i| (i % 251) as u8)
        .collect();
    let m = ImageManifest {
        format: FORMAT,
        name: "root.img".into(),
        size: data.len() as u64,
        piece_size: MIN_PIECE_SIZE,
        sha256: sha256_hex(&data),
        pieces: data
            .chunks(MIN_PIECE_SIZE as usize)
            .map(sha256_hex)
            .collect(),
    };
    let origin = Arc::new(MemOrigin::default());
    for (i, c) in data.chunks(MIN_PIECE_SIZE as usize).enumerate() {
        origin
            .pieces
            .lock()
            .unwrap()
            .insert(m.pieces[i].clone(), Bytes::copy_from_slice(c));
    }
    let id = m.id();
    origin
        .manifests
        .lock()
        .unwrap()
        .insert(id.clone(), Bytes::from(m.to_bytes()));
    let store = Store::open(&tmp.path().join("cache"), 1 << 30).unwrap();
    let token = Token::new("test-cluster-token-0123456789").unwrap();
    let daemon = Daemon::new(DaemonConfig::default(), store.clone(), origin, token);
    let images = CacheImages::new(daemon);

    let p = images.acquire(id.as_str(), "i-00000001").await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data, "the image's bytes");
    images.acquire(id.as_str(), "i-00000002").await.unwrap();
    assert_eq!(pins(&store, &id), ["i-00000001", "i-00000002"]);
    assert!(matches!(store.evict(&id), Err(CacheError::Pinned(_))));

    images.release(id.as_str(), "i-00000001").await.unwrap();
    images.release(id.as_str(), "i-00000001").await.unwrap(); // idempotent
    assert_eq!(pins(&store, &id), ["i-00000002"]);
    images.release(id.as_str(), "i-00000002").await.unwrap();
    assert!(pins(&store, &id).is_empty());
    assert!(store.evict(&id).is_ok(), "evictable once unpinned");

    // Unknown and malformed ids.
    let unknown = "ab".repeat(32);
    assert!(images.acquire(&unknown, "i-00000003").await.is_err());
    assert!(matches!(
        images.acquire("../etc/passwd", "i-00000003").await,
        Err(NcError::BadRequest(_))
    ));
}
