//! The daemon itself: its configuration, counters, store and swarm state.
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::http::Token;
use crate::origin::Origin;
use crate::store::{Entry, Store};
use crate::tracker::Swarm;
use crate::{CacheError, ImageId};
use euca_service::bearer::BearerClient;

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// This node's name in the cluster.
    pub node: String,
    /// The URL peers reach this daemon's piece server at.
    pub advertise_url: String,
    /// The tracker's base URL; `None` = fetch everything from the origin.
    pub tracker: Option<String>,
    /// Pieces in flight at once for one image.
    pub max_inflight: usize,
    /// Requests in flight to one peer.
    pub per_peer: usize,
    /// Origin requests in flight for an uplink seeder.
    pub origin_concurrency: usize,
    /// Origin requests in flight without a tracker.
    pub direct_concurrency: usize,
    /// Announce interval while fetching / while idle.
    pub announce_busy: Duration,
    pub announce_idle: Duration,
    /// How long a failing peer is avoided.
    pub blacklist: Duration,
    /// With no progress for this long, a node may fetch a missing piece from the
    /// origin itself (one at a time) even if it is not a seeder.
    pub stuck_after: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            node: "node".into(),
            advertise_url: "http://127.0.0.1:8776".into(),
            tracker: None,
            max_inflight: 8,
            per_peer: 3,
            origin_concurrency: 2,
            direct_concurrency: 2,
            announce_busy: Duration::from_millis(100),
            announce_idle: Duration::from_secs(3),
            blacklist: Duration::from_secs(30),
            stuck_after: Duration::from_secs(10),
        }
    }
}

/// Counters (also on `/_metrics`).
#[derive(Default)]
pub struct Stats {
    pub origin_bytes: AtomicU64,
    pub peer_bytes: AtomicU64,
    pub served_bytes: AtomicU64,
    pub corrupt_pieces: AtomicU64,
    pub failed_requests: AtomicU64,
    pub cache_hits: AtomicU64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub have: u32,
    pub pieces: u32,
    pub bytes: u64,
    pub size: u64,
    /// The fetch has ended (with `error` unless it succeeded).
    pub done: bool,
    pub error: Option<String>,
}

pub struct Daemon {
    pub(super) cfg: DaemonConfig,
    pub(super) store: Arc<Store>,
    pub(super) origin: Arc<dyn Origin>,
    pub(super) http: BearerClient,
    pub(super) jobs: Mutex<HashMap<ImageId, watch::Receiver<Progress>>>,
    /// The tracker's latest view per image being fetched.
    pub(super) swarms: Mutex<HashMap<ImageId, Swarm>>,
    /// Pieces each active fetch is taking from the origin (announced).
    pub(super) origin_inflight: Mutex<HashMap<ImageId, BTreeSet<u32>>>,
    pub(super) withdrawn: Mutex<Vec<ImageId>>,
    pub(super) tracker_ok: AtomicBool,
    pub(super) announce_now: Notify,
    pub(super) swarm_changed: Notify,
    pub stats: Stats,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Io(std::io::Error::other(e.to_string())))?
}

impl Daemon {
    pub fn new(
        cfg: DaemonConfig,
        store: Arc<Store>,
        origin: Arc<dyn Origin>,
        token: Token,
    ) -> Arc<Self> {
        let d = Arc::new(Daemon {
            tracker_ok: AtomicBool::new(cfg.tracker.is_some()),
            cfg,
            store,
            origin,
            http: BearerClient::new(token),
            jobs: Mutex::new(HashMap::new()),
            swarms: Mutex::new(HashMap::new()),
            origin_inflight: Mutex::new(HashMap::new()),
            withdrawn: Mutex::new(Vec::new()),
            announce_now: Notify::new(),
            swarm_changed: Notify::new(),
            stats: Stats::default(),
        });
        euca_service::registry::add_source(&d);
        d
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The URL peers reach this daemon at.
    pub fn advertise_url(&self) -> &str {
        &self.cfg.advertise_url
    }

    /// Withdraws `victims` from the tracker, then deletes them.
    pub(super) async fn drop_images(&self, victims: Vec<Arc<Entry>>) {
        if victims.is_empty() {
            return;
        }
        lock(&self.withdrawn).extend(victims.iter().map(|v| v.id.clone()));
        if self.cfg.tracker.is_some() {
            if let Err(e) = self.announce_once().await {
                tracing::warn!(error = %e, "could not tell the tracker about evicted images");
            }
        }
        for v in victims {
            tracing::info!(image = %v.id, "evicting");
            let store = self.store.clone();
            if let Err(e) = blocking(move || store.delete(&v)).await {
                tracing::warn!(error = %e, "eviction failed");
            }
        }
    }

    /// Explicit eviction (`euca cache evict`).
    pub async fn evict(&self, id: &ImageId) -> Result<(), CacheError> {
        let e = self.store.evict(id)?;
        self.drop_images(vec![e]).await;
        Ok(())
    }
}

impl euca_service::registry::MetricSource for Daemon {
    fn report(&self, out: &mut euca_service::registry::Scrape) {
        let s = &self.stats;
        for (name, help, v) in [
            (
                "euca_imagecache_origin_bytes_total",
                "Piece bytes fetched from the origin.",
                &s.origin_bytes,
            ),
            (
                "euca_imagecache_peer_bytes_total",
                "Piece bytes fetched from peers.",
                &s.peer_bytes,
            ),
            (
                "euca_imagecache_served_bytes_total",
                "Piece bytes served to peers.",
                &s.served_bytes,
            ),
            (
                "euca_imagecache_corrupt_pieces_total",
                "Pieces that failed verification.",
                &s.corrupt_pieces,
            ),
            (
                "euca_imagecache_failed_requests_total",
                "Piece requests that failed.",
                &s.failed_requests,
            ),
            (
                "euca_imagecache_cache_hits_total",
                "Fetches answered from the cache.",
                &s.cache_hits,
            ),
        ] {
            out.counter(name, help, &[], v.load(Ordering::Relaxed));
        }
        out.gauge(
            "euca_imagecache_used_bytes",
            "Bytes the cache holds.",
            &[],
            self.store.used() as i64,
        );
    }
}
