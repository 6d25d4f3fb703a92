//! The cache daemon, the tracker and the store together, on loopback, with an
//! in-memory origin that counts what it serves: piece verification against a
//! corrupting peer, a peer that disappears mid-piece, resume after a crash,
//! eviction around pinned images, the tracker being down, and origin load in a
//! swarm.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use euca_imagecache::daemon::{Daemon, DaemonConfig};
use euca_imagecache::http::{Edge, Token};
use euca_imagecache::manifest::{sha256_hex, ImageManifest, FORMAT, MIN_PIECE_SIZE};
use euca_imagecache::origin::Origin;
use euca_imagecache::store::Store;
use euca_imagecache::tracker::{Announce, HeldImage, Tracker};
use euca_imagecache::{CacheError, ImageId};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const PIECE: u64 = MIN_PIECE_SIZE;

fn token() -> Token {
    Token::new("test-cluster-token-0123456789").unwrap()
}

/// An image of `pieces` pieces (the last one short) of seeded random bytes.
fn image(pieces: u64, seed: u64) -> (Vec<u8>, ImageManifest) {
    let mut data = vec![0u8; (pieces * PIECE - 1000) as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let m = ImageManifest {
        format: FORMAT,
        name: format!("img{seed}"),
        size: data.len() as u64,
        piece_size: PIECE,
        sha256: sha256_hex(&data),
        pieces: data.chunks(PIECE as usize).map(sha256_hex).collect(),
    };
    (data, m)
}

/// The origin: images in memory; counts bytes served and peak concurrency, can
/// delay every piece, and can stop answering after a number of pieces.
#[derive(Default)]
struct MemOrigin {
    manifests: Mutex<HashMap<ImageId, Bytes>>,
    pieces: Mutex<HashMap<String, Bytes>>,
    bytes: AtomicU64,
    started: AtomicU64,
    inflight: AtomicUsize,
    peak: AtomicUsize,
    delay_ms: AtomicU64,
    /// Pieces answered before the origin hangs (u64::MAX = never hangs).
    limit: AtomicU64,
}

impl MemOrigin {
    fn new() -> Arc<Self> {
        let o = MemOrigin::default();
        o.limit.store(u64::MAX, Ordering::SeqCst);
        Arc::new(o)
    }
    fn add(&self, data: &[u8], m: &ImageManifest) -> ImageId {
        for (i, c) in data.chunks(PIECE as usize).enumerate() {
            self.pieces
                .lock()
                .unwrap()
                .insert(m.pieces[i].clone(), Bytes::copy_from_slice(c));
        }
        self.manifests
            .lock()
            .unwrap()
            .insert(m.id(), Bytes::from(m.to_bytes()));
        m.id()
    }
    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
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
        if self.started.fetch_add(1, Ordering::SeqCst) >= self.limit.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        let n = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        let b = self
            .pieces
            .lock()
            .unwrap()
            .get(sha)
            .cloned()
            .ok_or_else(|| CacheError::NotFound(sha.into()))?;
        self.bytes.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
}

struct Node {
    daemon: Arc<Daemon>,
    _stop: watch::Sender<bool>,
}

impl Node {
    fn data(&self, id: &ImageId) -> Vec<u8> {
        let h = self.daemon.store().hold(id).expect("image cached");
        assert!(h.is_complete());
        std::fs::read(h.data_path()).unwrap()
    }
    fn stat(&self, f: impl Fn(&euca_imagecache::daemon::Stats) -> &AtomicU64) -> u64 {
        f(&self.daemon.stats).load(Ordering::SeqCst)
    }
}

fn config(name: &str, url: String, tracker: Option<String>) -> DaemonConfig {
    DaemonConfig {
        node: name.into(),
        advertise_url: url,
        tracker,
        announce_busy: Duration::from_millis(100),
        announce_idle: Duration::from_millis(500),
        ..DaemonConfig::default()
    }
}

async fn node(
    name: &str,
    dir: &Path,
    quota: u64,
    origin: Arc<MemOrigin>,
    tracker: Option<String>,
) -> Node {
    let store = Store::open(dir, quota).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let daemon = Daemon::new(config(name, url, tracker), store, origin, token());
    let sock = dir.join("control.sock");
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock).unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(
        daemon
            .clone()
            .serve(listener, unix, token(), Edge::default(), rx),
    );
    Node { daemon, _stop: tx }
}

async fn tracker() -> (Arc<Tracker>, String) {
    let t = Tracker::new(token(), 2);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    tokio::spawn(t.clone().serve(l, Edge::default(), rx));
    (t, url)
}

/// Announces a fake peer holding every piece of `m`, for a long time.
fn announce_fake_peer(t: &Tracker, name: &str, url: &str, m: &ImageManifest) {
    let n = m.piece_count() as usize;
    t.announce(Announce {
        node: name.into(),
        url: url.into(),
        interval_ms: 60_000,
        images: vec![HeldImage {
            id: m.id(),
            pieces: n as u32,
            have: hex::encode(vec![0xffu8; n.div_ceil(8)]),
            complete: true,
            origin_inflight: vec![],
        }],
        removed: vec![],
    });
}

/// A raw HTTP server answering every request with `respond(request_len)`,
/// counting requests.
async fn fake_peer<F>(respond: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let (c2, respond) = (count.clone(), Arc::new(respond));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let (c3, respond) = (c2.clone(), respond.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                c3.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&respond(&req)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_peer_is_detected_avoided_and_the_image_is_right() {
    let (data, m) = image(16, 1);
    let origin = MemOrigin::new();
    let id = origin.add(&data, &m);
    let (t, turl) = tracker().await;
    // Serves the right length of wrong bytes for every piece.
    let (evil, evil_requests) = fake_peer(move |_| {
        let body = vec![0x5au8; PIECE as usize];
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    })
    .await;
    announce_fake_peer(&t, "evil", &evil, &m);
    let dir = tempfile::tempdir().unwrap();
    let n = node("n1", dir.path(), 1 << 30, origin.clone(), Some(turl)).await;
    n.daemon.fetch(&id).await.unwrap();
    assert_eq!(n.data(&id), data);
    let bad = evil_requests.load(Ordering::SeqCst) as u64;
    assert!(bad >= 1, "the corrupting peer was never asked");
    // Every answer it gave was caught (a request cut by its closing the connection
    // counts as a failure, not as a piece).
    let corrupt = n.stat(|s| &s.corrupt_pieces);
    assert!(
        corrupt >= 1 && corrupt <= bad,
        "{corrupt} corrupt of {bad} requests"
    );
    assert!(n.stat(|s| &s.failed_requests) >= corrupt);
    // Avoided after its first answers: never more than one pipeline (3) of requests.
    assert!(bad <= 3, "corrupting peer asked {bad} times");
    assert_eq!(
        origin.bytes(),
        m.size,
        "the rest came from the origin, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_disappears_mid_piece_is_replaced() {
    let (data, m) = image(8, 2);
    let origin = MemOrigin::new();
    let id = origin.add(&data, &m);
    let (t, turl) = tracker().await;
    let half = data[..(PIECE / 2) as usize].to_vec();
    let (gone, asked) = fake_peer(move |_| {
        let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {PIECE}\r\n\r\n").into_bytes();
        r.extend_from_slice(&half);
        r
    })
    .await;
    announce_fake_peer(&t, "flaky", &gone, &m);
    let dir = tempfile::tempdir().unwrap();
    let n = node("n1", dir.path(), 1 << 30, origin.clone(), Some(turl)).await;
    n.daemon.fetch(&id).await.unwrap();
    assert_eq!(n.data(&id), data);
    assert!(asked.load(Ordering::SeqCst) >= 1);
    assert!(n.stat(|s| &s.failed_requests) >= 1);
    assert_eq!(
        n.stat(|s| &s.corrupt_pieces),
        0,
        "a cut body is a failure, not a piece"
    );
    assert_eq!(origin.bytes(), m.size);
}

#[test]
fn a_restarted_daemon_resumes_from_disk() {
    let (data, m) = image(20, 3);
    let origin = MemOrigin::new();
    let id = origin.add(&data, &m);
    let dir = tempfile::tempdir().unwrap();
    // First life: the origin answers 9 pieces, then hangs; the daemon is killed
    // (its runtime dropped) once those are on disk.
    origin.limit.store(9, Ordering::SeqCst);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (o1, d1) = (origin.clone(), dir.path().to_path_buf());
    let id1 = id.clone();
    rt.block_on(async move {
        let n = node("n1", &d1, 1 << 30, o1, None).await;
        let _ = n.daemon.start_fetch(&id1);
        for _ in 0..500 {
            if n.daemon
                .store()
                .hold(&id1)
                .is_some_and(|h| h.have_count() == 9)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n.daemon.store().hold(&id1).unwrap().have_count(), 9);
        std::mem::forget(n);
    });
    rt.shutdown_background();
    assert_eq!(origin.bytes(), 9 * PIECE);
    // Damage one piece the presence map claims: the restart must re-verify it.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("images").join(id.as_str()).join("data"))
            .unwrap();
        let have = std::fs::read(dir.path().join("images").join(id.as_str()).join("have")).unwrap();
        let claimed = have.iter().position(|b| *b == 1).unwrap() as u64;
        f.write_all_at(b"rot", claimed * PIECE + 7).unwrap();
    }
    origin.limit.store(u64::MAX, Ordering::SeqCst);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let n = node("n1", dir.path(), 1 << 30, origin.clone(), None).await;
        assert_eq!(n.daemon.store().hold(&id).unwrap().have_count(), 8);
        n.daemon.fetch(&id).await.unwrap();
        assert_eq!(n.data(&id), data);
    });
    // 9 before the crash, 12 after: the image plus the one damaged piece.
    assert!(
        origin.bytes() <= m.size + PIECE,
        "{} > {}",
        origin.bytes(),
        m.size + PIECE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_never_touches_a_pinned_image_and_withdraws_first() {
    let origin = MemOrigin::new();
    let imgs: Vec<(Vec<u8>, ImageManifest, ImageId)> = (10..14)
        .map(|s| {
            let (d, m) = image(8, s);
            let id = origin.add(&d, &m);
            (d, m, id)
        })
        .collect();
    let size = imgs[0].1.size;
    let (t, turl) = tracker().await;
    let dir = tempfile::tempdir().unwrap();
    // Room for two and a half images: the third fetch must evict.
    let n = node("n1", dir.path(), size * 5 / 2, origin.clone(), Some(turl)).await;
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| imgs[i].2.clone());
    n.daemon.fetch(&a).await.unwrap();
    n.daemon.store().set_pin(&a, "i-aaaa", true).unwrap();
    n.daemon.fetch(&b).await.unwrap();
    assert!(matches!(
        n.daemon.evict(&a).await,
        Err(CacheError::Pinned(_))
    ));
    n.daemon.fetch(&c).await.unwrap();
    let held: Vec<ImageId> = n.daemon.store().list().into_iter().map(|s| s.id).collect();
    assert!(
        held.contains(&a) && held.contains(&c) && !held.contains(&b),
        "{held:?}"
    );
    assert_eq!(n.data(&a), imgs[0].0);
    // The tracker no longer names n1 for b.
    let r = t.announce(Announce {
        node: "probe".into(),
        url: "http://127.0.0.1:9".into(),
        interval_ms: 1000,
        images: vec![HeldImage {
            id: b.clone(),
            pieces: 8,
            have: "00".into(),
            complete: false,
            origin_inflight: vec![],
        }],
        removed: vec![],
    });
    assert!(r.images[&b].peers.iter().all(|p| p.node != "n1"));
    // Both held images pinned: a fourth does not fit, and nothing is dropped.
    n.daemon.store().set_pin(&c, "i-cccc", true).unwrap();
    let err = n.daemon.fetch(&d).await.unwrap_err();
    assert!(err.to_string().contains("cache full"), "{err}");
    assert_eq!(n.data(&a), imgs[0].0);
    assert_eq!(n.data(&c), imgs[2].0);
    // Unpinned, it can go.
    n.daemon.store().set_pin(&c, "i-cccc", false).unwrap();
    n.daemon.fetch(&d).await.unwrap();
    assert_eq!(n.data(&d), imgs[3].0);
    assert_eq!(n.data(&a), imgs[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_tracker_down_nodes_complete_from_the_origin_with_a_cap() {
    let (data, m) = image(24, 4);
    let origin = MemOrigin::new();
    origin.delay_ms.store(5, Ordering::SeqCst);
    let id = origin.add(&data, &m);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = node("n1", d1.path(), 1 << 30, origin.clone(), Some(dead.clone())).await;
    let n2 = node("n2", d2.path(), 1 << 30, origin.clone(), Some(dead)).await;
    let (r1, r2) = tokio::join!(n1.daemon.fetch(&id), n2.daemon.fetch(&id));
    r1.unwrap();
    r2.unwrap();
    assert_eq!(n1.data(&id), data);
    assert_eq!(n2.data(&id), data);
    let cap = DaemonConfig::default().direct_concurrency;
    assert!(
        origin.peak.load(Ordering::SeqCst) <= 2 * cap,
        "peak {}",
        origin.peak.load(Ordering::SeqCst)
    );
    assert_eq!(origin.bytes(), 2 * m.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_takes_each_piece_from_the_origin_about_once() {
    let (data, m) = image(32, 5);
    let origin = MemOrigin::new();
    origin.delay_ms.store(10, Ordering::SeqCst);
    let id = origin.add(&data, &m);
    let (_t, turl) = tracker().await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(
            node(
                &format!("n{i}"),
                d.path(),
                1 << 30,
                origin.clone(),
                Some(turl.clone()),
            )
            .await,
        );
    }
    let results = futures::future::join_all(nodes.iter().map(|n| n.daemon.fetch(&id))).await;
    for (r, n) in results.into_iter().zip(&nodes) {
        r.unwrap();
        assert_eq!(n.data(&id), data);
    }
    let peer: u64 = nodes.iter().map(|n| n.stat(|s| &s.peer_bytes)).sum();
    assert!(
        origin.bytes() <= m.size + 2 * PIECE,
        "origin sent {} for {}",
        origin.bytes(),
        m.size
    );
    assert!(peer >= 3 * m.size - 2 * PIECE, "peers sent {peer}");
    // Warm: a second request is answered from disk, with no traffic at all.
    let before = (origin.bytes(), nodes[0].stat(|s| &s.peer_bytes));
    nodes[0].daemon.fetch(&id).await.unwrap();
    assert_eq!((origin.bytes(), nodes[0].stat(|s| &s.peer_bytes)), before);
    assert_eq!(nodes[0].stat(|s| &s.cache_hits), 1);
}

async fn status_of(
    token: &str,
    method: http::Method,
    url: &str,
    body: Option<Bytes>,
) -> (u16, Bytes) {
    let client = euca_service::bearer::BearerClient::new(Token::new(token).unwrap());
    let (st, b) = client
        .call(method, url, body, 1 << 20, Duration::from_secs(2))
        .await
        .unwrap();
    (st.as_u16(), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_the_tracker_refuse_requests_without_the_cluster_token() {
    let (_t, turl) = tracker().await;
    let wrong = "some-other-token-000000";
    let announce = format!("{turl}/v1/announce");
    let (st, _) = status_of(
        wrong,
        http::Method::POST,
        &announce,
        Some(Bytes::from_static(b"{}")),
    )
    .await;
    assert_eq!(st, 403);
    let (data, m) = image(4, 6);
    let origin = MemOrigin::new();
    let id = origin.add(&data, &m);
    let dir = tempfile::tempdir().unwrap();
    let n = node("n1", dir.path(), 1 << 30, origin, None).await;
    n.daemon.fetch(&id).await.unwrap();
    let piece = format!("{}/v1/images/{id}/pieces/0", n.daemon.advertise_url());
    assert_eq!(
        status_of(wrong, http::Method::GET, &piece, None).await.0,
        403
    );
    let (st, body) = status_of(
        "test-cluster-token-0123456789",
        http::Method::GET,
        &piece,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(&body[..], &data[..PIECE as usize]);
}
