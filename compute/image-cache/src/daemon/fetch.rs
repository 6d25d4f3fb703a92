//! The fetch scheduler: which piece to take from which peer or the origin, and
//! the tracker client (announces, origin claims).
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use http::{Method, StatusCode};
use tokio::sync::watch;

use super::state::{blocking, lock, Daemon, Progress};
use crate::manifest::ImageManifest;
use crate::store::{Entry, Hold};
use crate::tracker::{
    decode_bitfield, Announce, AnnounceReply, Claim, ClaimReply, HeldImage, Swarm,
};
use crate::{CacheError, ImageId};
use euca_service::bearer::CallError;

type PieceFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (u32, Source, Result<Bytes, CacheError>)> + Send>,
>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    Peer(String),
    Origin,
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Peer(u) => u.clone(),
            Source::Origin => "origin".into(),
        }
    }
}

impl Daemon {
    /// Makes sure `id` is cached and complete; joins a fetch already running.
    /// Progress is published on the returned channel; the last value has `done`.
    pub fn start_fetch(self: &Arc<Self>, id: &ImageId) -> watch::Receiver<Progress> {
        if let Some(h) = self.store.hold(id) {
            if h.is_complete() {
                h.touch();
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                let size = h.manifest.size;
                let n = h.manifest.piece_count();
                let (_tx, rx) = watch::channel(Progress {
                    have: n,
                    pieces: n,
                    bytes: size,
                    size,
                    done: true,
                    error: None,
                });
                return rx;
            }
        }
        let mut jobs = lock(&self.jobs);
        if let Some(rx) = jobs.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Progress::default());
        jobs.insert(id.clone(), rx.clone());
        drop(jobs);
        let me = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let result = me.clone().run_fetch(&id, &tx).await;
            if let Err(e) = &result {
                tracing::warn!(image = %id, error = %e, "fetch failed");
            }
            lock(&me.jobs).remove(&id);
            lock(&me.swarms).remove(&id);
            lock(&me.origin_inflight).remove(&id);
            tx.send_modify(|p| {
                p.done = true;
                p.error = result.err().map(|e| e.to_string());
            });
            me.announce_now.notify_one();
        });
        rx
    }

    /// [`Self::start_fetch`] and wait for the end.
    pub async fn fetch(self: &Arc<Self>, id: &ImageId) -> Result<(), CacheError> {
        let mut rx = self.start_fetch(id);
        let p = rx
            .wait_for(|p| p.done)
            .await
            .map_err(|_| CacheError::Io(std::io::Error::other("fetch task vanished")))?
            .clone();
        match p.error {
            Some(msg) => Err(CacheError::Fetch(msg)),
            None => Ok(()),
        }
    }

    async fn open_entry(&self, id: &ImageId) -> Result<Hold, CacheError> {
        if let Some(h) = self.store.hold(id) {
            return Ok(h);
        }
        let bytes = self.origin.manifest(id).await?;
        let manifest = ImageManifest::from_bytes(id, &bytes)?;
        let store = self.store.clone();
        let (hold, victims) = blocking(move || store.create(manifest, &bytes)).await?;
        self.drop_images(victims).await;
        Ok(hold)
    }
    async fn run_fetch(
        self: Arc<Self>,
        id: &ImageId,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), CacheError> {
        let entry = self.open_entry(id).await?;
        let m = entry.manifest.clone();
        let publish = |e: &Entry| {
            tx.send_modify(|p| {
                p.have = e.have_count();
                p.pieces = m.piece_count();
                p.bytes = e.bytes_held();
                p.size = m.size;
            })
        };
        publish(&entry);
        let mut missing: BTreeSet<u32> = entry.missing().into_iter().collect();
        let mut inflight: HashMap<u32, Source> = HashMap::new();
        let mut load: HashMap<Source, usize> = HashMap::new();
        let mut avoid: HashMap<String, Instant> = HashMap::new();
        // Peers that sent a bad piece or failed outright (not merely slow): what
        // they hold does not stop the tracker granting those pieces from Walrus.
        let mut distrust: std::collections::HashSet<String> = Default::default();
        let mut tasks: FuturesUnordered<PieceFuture> = FuturesUnordered::new();
        let mut last_progress = Instant::now();
        if self.cfg.tracker.is_some() && !missing.is_empty() {
            // Be known before choosing sources.
            let _ = self.announce_once().await;
        }
        while !missing.is_empty() || !tasks.is_empty() {
            let now = Instant::now();
            avoid.retain(|_, until| *until > now);
            let swarm = lock(&self.swarms).get(id).cloned();
            let direct = self.cfg.tracker.is_none() || !self.tracker_ok.load(Ordering::Acquire);
            let plan = Plan::new(&m, swarm.as_ref(), &avoid);
            // Peers first: the rarest piece some peer holds, from its least busy holder.
            while inflight.len() < self.cfg.max_inflight {
                let candidates = missing
                    .iter()
                    .copied()
                    .filter(|i| !inflight.contains_key(i));
                let Some((index, url)) = plan.peer_pick(candidates, &load, self.cfg.per_peer)
                else {
                    break;
                };
                let src = Source::Peer(url);
                inflight.insert(index, src.clone());
                *load.entry(src.clone()).or_default() += 1;
                let me = self.clone();
                let (id2, m2) = (id.clone(), m.clone());
                tasks.push(Box::pin(async move {
                    let r = me.get_piece(&id2, &m2, index, &src).await;
                    (index, src, r)
                }) as PieceFuture);
            }
            // Then the origin: without a tracker, anything (capped); as an uplink
            // seeder, pieces of its share no peer holds, each granted by the tracker.
            let stuck = last_progress.elapsed() > self.cfg.stuck_after;
            let cap = if direct {
                self.cfg.direct_concurrency
            } else if stuck && plan.share.is_none() {
                1
            } else {
                self.cfg.origin_concurrency
            };
            let origin_load = *load.get(&Source::Origin).unwrap_or(&0);
            let room = cap
                .saturating_sub(origin_load)
                .min(self.cfg.max_inflight.saturating_sub(inflight.len()));
            if room > 0 {
                let open = || {
                    missing
                        .iter()
                        .copied()
                        .filter(|i| !inflight.contains_key(i))
                };
                let mut wanted: Vec<u32> = open()
                    .filter(|i| direct || stuck || plan.origin_may(*i))
                    .take(room)
                    .collect();
                if wanted.is_empty() && plan.share.is_some() {
                    // Own share done: help with any piece nobody holds or fetches
                    // (the tracker's claims keep it to one node per piece), so the
                    // uplink stays busy until the last piece.
                    wanted = open().filter(|i| plan.unclaimed(*i)).take(room).collect();
                }
                let granted = if direct || stuck || wanted.is_empty() {
                    wanted
                } else {
                    let bad = avoid
                        .keys()
                        .filter(|u| distrust.contains(*u))
                        .cloned()
                        .collect();
                    self.claim(id, wanted, bad).await
                };
                for index in granted {
                    inflight.insert(index, Source::Origin);
                    *load.entry(Source::Origin).or_default() += 1;
                    lock(&self.origin_inflight)
                        .entry(id.clone())
                        .or_default()
                        .insert(index);
                    let me = self.clone();
                    let (id2, m2) = (id.clone(), m.clone());
                    tasks.push(Box::pin(async move {
                        let r = me.get_piece(&id2, &m2, index, &Source::Origin).await;
                        (index, Source::Origin, r)
                    }) as PieceFuture);
                }
            }
            if tasks.is_empty() {
                // Nothing to do until the tracker tells us more.
                if !direct {
                    self.announce_now.notify_one();
                }
                tokio::select! {
                    _ = self.swarm_changed.notified() => {}
                    _ = tokio::time::sleep(self.cfg.announce_busy) => {}
                }
                continue;
            }
            tokio::select! {
                Some((index, src, result)) = tasks.next() => {
                    inflight.remove(&index);
                    if let Some(l) = load.get_mut(&src) { *l = l.saturating_sub(1); }
                    if src == Source::Origin {
                        if let Some(s) = lock(&self.origin_inflight).get_mut(id) { s.remove(&index); }
                    }
                    match result {
                        Ok(bytes) => {
                            let (len, e2) = (bytes.len() as u64, entry.clone());
                            blocking(move || Ok(e2.write_piece(index, &bytes)?)).await?;
                            let counter = match src { Source::Origin => &self.stats.origin_bytes, Source::Peer(_) => &self.stats.peer_bytes };
                            counter.fetch_add(len, Ordering::Relaxed);
                            missing.remove(&index);
                            last_progress = Instant::now();
                            publish(&entry);
                            self.announce_now.notify_one();
                        }
                        Err(e) => {
                            self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                            let corrupt = matches!(e, CacheError::PieceCorrupt { .. });
                            if corrupt { self.stats.corrupt_pieces.fetch_add(1, Ordering::Relaxed); }
                            tracing::warn!(image = %id, piece = index, source = %src.name(), error = %e, "piece fetch failed");
                            match &src {
                                Source::Peer(url) => {
                                    let d = if corrupt { Duration::from_secs(3600) } else if matches!(e, CacheError::NotFound(_)) { Duration::from_secs(2) } else { self.cfg.blacklist };
                                    avoid.insert(url.clone(), Instant::now() + d);
                                    if corrupt || matches!(e, CacheError::Peer { .. }) {
                                        distrust.insert(url.clone());
                                    }
                                }
                                Source::Origin => {
                                    if matches!(e, CacheError::NotFound(_)) { return Err(e); }
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            }
                        }
                    }
                }
                _ = self.swarm_changed.notified() => {}
                _ = tokio::time::sleep(self.cfg.announce_busy) => {}
            }
        }
        let e2 = entry.clone();
        blocking(move || Ok(e2.finish()?)).await?;
        entry.touch();
        publish(&entry);
        tracing::info!(image = %id, "image complete");
        Ok(())
    }

    /// Fetches and verifies one piece from `src`.
    async fn get_piece(
        &self,
        id: &ImageId,
        m: &Arc<ImageManifest>,
        index: u32,
        src: &Source,
    ) -> Result<Bytes, CacheError> {
        let (_, len) = m.piece_range(index);
        let bytes = match src {
            Source::Origin => self.origin.piece(&m.pieces[index as usize]).await?,
            Source::Peer(url) => {
                // max(4 s, 2 s per MiB), as Kraken/Dragonfly-style piece timeouts.
                let timeout = Duration::from_secs((2 * len.div_ceil(1 << 20)).max(4));
                let u = format!("{url}/v1/images/{id}/pieces/{index}");
                let (st, body) = self
                    .http
                    .call(Method::GET, &u, None, len as usize, timeout)
                    .await
                    .map_err(|e| match e {
                        CallError::TimedOut(_) => CacheError::PeerTimeout { peer: url.clone() },
                        CallError::Failed(message) => CacheError::Peer {
                            peer: url.clone(),
                            message,
                        },
                    })?;
                if st == StatusCode::NOT_FOUND {
                    return Err(CacheError::NotFound(format!("piece {index} at {url}")));
                }
                if !st.is_success() {
                    return Err(CacheError::Peer {
                        peer: url.clone(),
                        message: format!("HTTP {st}"),
                    });
                }
                body
            }
        };
        let (m2, b2) = (m.clone(), bytes.clone());
        let ok = tokio::task::spawn_blocking(move || m2.check_piece(index, &b2))
            .await
            .unwrap_or(false);
        if ok {
            Ok(bytes)
        } else {
            Err(CacheError::PieceCorrupt {
                index,
                source_name: src.name(),
            })
        }
    }

    /// Asks the tracker for permission to fetch `pieces` from the origin.
    async fn claim(&self, id: &ImageId, pieces: Vec<u32>, avoid: Vec<String>) -> Vec<u32> {
        let Some(tracker) = &self.cfg.tracker else {
            return pieces;
        };
        let c = Claim {
            node: self.cfg.node.clone(),
            image: id.clone(),
            pieces,
            avoid,
        };
        let body = Bytes::from(serde_json::to_vec(&c).unwrap_or_default());
        let url = format!("{}/v1/claim", tracker.trim_end_matches('/'));
        match self
            .http
            .call(
                Method::POST,
                &url,
                Some(body),
                1 << 20,
                Duration::from_secs(2),
            )
            .await
        {
            Ok((st, b)) if st.is_success() => serde_json::from_slice::<ClaimReply>(&b)
                .map(|r| r.granted)
                .unwrap_or_default(),
            other => {
                tracing::warn!(result = ?other.map(|(s, _)| s), "claim refused or failed");
                // The next announce decides whether the tracker is down.
                self.announce_now.notify_one();
                Vec::new()
            }
        }
    }

    fn announcement(&self, interval: Duration) -> Announce {
        let inflight = lock(&self.origin_inflight).clone();
        let images = self
            .store
            .entries()
            .iter()
            .map(|e| HeldImage {
                id: e.id.clone(),
                pieces: e.manifest.piece_count(),
                have: hex::encode(e.bitfield()),
                complete: e.is_complete(),
                origin_inflight: inflight
                    .get(&e.id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect();
        Announce {
            node: self.cfg.node.clone(),
            url: self.cfg.advertise_url.clone(),
            interval_ms: interval.as_millis() as u64,
            images,
            removed: lock(&self.withdrawn).clone(),
        }
    }

    fn interval(&self) -> Duration {
        if lock(&self.jobs).is_empty() {
            self.cfg.announce_idle
        } else {
            self.cfg.announce_busy
        }
    }

    /// One announce; updates the swarm views (or marks the tracker down).
    pub async fn announce_once(&self) -> Result<(), CacheError> {
        let Some(tracker) = &self.cfg.tracker else {
            return Ok(());
        };
        let a = self.announcement(self.interval());
        let sent_removed = a.removed.len();
        let body = Bytes::from(serde_json::to_vec(&a).unwrap_or_default());
        let url = format!("{}/v1/announce", tracker.trim_end_matches('/'));
        let result = self
            .http
            .call(
                Method::POST,
                &url,
                Some(body),
                16 << 20,
                Duration::from_secs(2),
            )
            .await;
        let reply = match result {
            Ok((st, b)) if st.is_success() => serde_json::from_slice::<AnnounceReply>(&b)
                .map_err(|e| CacheError::Tracker(format!("bad reply: {e}"))),
            Ok((st, b)) => Err(CacheError::Tracker(format!(
                "HTTP {st}: {}",
                String::from_utf8_lossy(&b)
            ))),
            Err(e) => Err(CacheError::Tracker(e.to_string())),
        };
        match reply {
            Ok(r) => {
                if !self.tracker_ok.swap(true, Ordering::AcqRel) {
                    tracing::info!("tracker reachable again");
                }
                {
                    let mut w = lock(&self.withdrawn);
                    let n = sent_removed.min(w.len());
                    w.drain(..n);
                }
                *lock(&self.swarms) = r.images;
                self.swarm_changed.notify_waiters();
                Ok(())
            }
            Err(e) => {
                if self.tracker_ok.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "tracker unreachable; fetching from the origin directly");
                }
                self.swarm_changed.notify_waiters();
                Err(e)
            }
        }
    }

    /// Announces periodically (and soon after every new piece, at most every
    /// 50 ms) until `shutdown`.
    pub async fn announce_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.cfg.tracker.is_none() {
            return;
        }
        loop {
            let _ = self.announce_once().await;
            let wait = if self.tracker_ok.load(Ordering::Acquire) {
                self.interval()
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.announce_now.notified() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = crate::http::stopped(&mut shutdown) => return,
            }
        }
    }
}

/// Who holds what, from the tracker's view, minus avoided peers.
struct Plan {
    /// (peer url, presence) of every peer not being avoided.
    peers: Vec<(String, Vec<bool>)>,
    /// Pieces some peer is fetching from the origin right now.
    coming: BTreeSet<u32>,
    share: Option<(u32, u32)>,
}

impl Plan {
    fn new(m: &ImageManifest, swarm: Option<&Swarm>, avoid: &HashMap<String, Instant>) -> Plan {
        let n = m.piece_count();
        let mut plan = Plan {
            peers: Vec::new(),
            coming: BTreeSet::new(),
            share: swarm.and_then(|s| s.origin_share),
        };
        if let Some(s) = swarm {
            for p in &s.peers {
                plan.coming.extend(p.origin_inflight.iter().copied());
                if !avoid.contains_key(&p.url) {
                    plan.peers
                        .push((p.url.clone(), decode_bitfield(&p.have, n)));
                }
            }
        }
        plan
    }

    fn holders(&self, i: u32) -> impl Iterator<Item = &String> + '_ {
        self.peers
            .iter()
            .filter(move |(_, have)| have.get(i as usize).copied().unwrap_or(false))
            .map(|(u, _)| u)
    }

    /// The rarest candidate some non-busy peer holds, and the least busy holder.
    fn peer_pick(
        &self,
        candidates: impl Iterator<Item = u32>,
        load: &HashMap<Source, usize>,
        per_peer: usize,
    ) -> Option<(u32, String)> {
        let busy = |u: &String| *load.get(&Source::Peer(u.clone())).unwrap_or(&0);
        let mut best: Option<(usize, u64, u32, String)> = None;
        for i in candidates {
            let holders: Vec<&String> = self.holders(i).collect();
            let usable = holders.iter().filter(|u| busy(u) < per_peer);
            let Some(peer) = usable.min_by_key(|u| (busy(u), rand::random::<u16>())) else {
                continue;
            };
            let key = (holders.len(), rand::random::<u64>());
            if best.as_ref().is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some((key.0, key.1, i, (*peer).clone()));
            }
        }
        best.map(|(_, _, i, u)| (i, u))
    }

    /// Whether this node, as an uplink seeder, should take piece `i` from the origin.
    fn origin_may(&self, i: u32) -> bool {
        match self.share {
            Some((k, idx)) => k > 0 && i % k == idx && self.unclaimed(i),
            None => false,
        }
    }

    /// No usable peer holds piece `i` and none is fetching it from the origin.
    fn unclaimed(&self, i: u32) -> bool {
        !self.coming.contains(&i) && self.holders(i).next().is_none()
    }
}
