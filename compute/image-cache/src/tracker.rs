//! The tracker, served by the cluster controller: soft state only.
//!
//! Every cache daemon announces, every few hundred milliseconds while it is
//! fetching and every few seconds otherwise, the images it holds with a presence
//! bitfield each (a full statement: images it no longer lists are dropped, and
//! `removed` withdraws one at once). A node that misses three announce intervals
//! (plus a second) is forgotten. The reply names, for every image the node is
//! still fetching, the other holders with their bitfields, and whether this node
//! is one of the image's *uplink seeders*: at most `seeders_per_image` nodes that
//! want the image may fetch from Walrus, each only the pieces whose index is its
//! share modulo the number of seeders. Everyone else fetches only from peers. A
//! seeder that completes or disappears hands its place to another node that still
//! wants the image, so a piece crosses the uplink about once.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::http::{json, read_json, status, Body, Edge, Token};
use crate::ImageId;

/// Most peers named per image in a reply.
pub const MAX_PEERS: usize = 50;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Announce {
    /// A stable name of the node (unique in the cluster).
    pub node: String,
    /// Base URL of the node's piece server, e.g. `http://10.0.0.5:8776`.
    pub url: String,
    /// When this node will announce next, at the latest.
    pub interval_ms: u64,
    pub images: Vec<HeldImage>,
    #[serde(default)]
    pub removed: Vec<ImageId>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HeldImage {
    pub id: ImageId,
    pub pieces: u32,
    /// Presence bitfield, hex (bit i = piece i, most significant bit first).
    pub have: String,
    pub complete: bool,
    /// Pieces this node is fetching from Walrus right now.
    #[serde(default)]
    pub origin_inflight: Vec<u32>,
}

/// A seeder asks to fetch `pieces` of `image` from Walrus; the tracker grants
/// each piece to one node at a time, so shares that changed under a node's feet
/// never make two nodes fetch the same piece.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Claim {
    pub node: String,
    pub image: ImageId,
    pub pieces: Vec<u32>,
    /// Peer URLs the claimant found failing or corrupt: what they hold does not
    /// count (so a bad peer cannot starve a seeder).
    #[serde(default)]
    pub avoid: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ClaimReply {
    pub granted: Vec<u32>,
}

/// How long a granted claim holds if the piece does not show up.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AnnounceReply {
    /// Per image the announcer is still fetching.
    pub images: HashMap<ImageId, Swarm>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Swarm {
    pub peers: Vec<PeerInfo>,
    /// `(seeders, index)`: this node may fetch from Walrus the pieces `p` with
    /// `p % seeders == index`. `None`: peers only.
    pub origin_share: Option<(u32, u32)>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PeerInfo {
    pub node: String,
    pub url: String,
    pub have: String,
    pub complete: bool,
    #[serde(default)]
    pub origin_inflight: Vec<u32>,
}

struct Holding {
    have: String,
    complete: bool,
    origin_inflight: Vec<u32>,
}

#[derive(Default)]
struct SwarmState {
    holders: HashMap<String, Holding>,
    /// Nodes allowed to fetch from Walrus, in the order they got the role.
    seeders: Vec<String>,
    /// Pieces granted for a fetch from Walrus: piece → (node, until).
    claims: HashMap<u32, (String, Instant)>,
}

struct NodeRec {
    url: String,
    expires: Instant,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeRec>,
    swarms: HashMap<ImageId, SwarmState>,
    announces: u64,
}

/// The tracker's state and request handling.
pub struct Tracker {
    state: Mutex<State>,
    seeders_per_image: usize,
    token: Token,
}

impl Tracker {
    pub fn new(token: Token, seeders_per_image: usize) -> Arc<Self> {
        Arc::new(Tracker {
            state: Mutex::new(State::default()),
            seeders_per_image: seeders_per_image.max(1),
            token,
        })
    }

    /// Applies an announce and answers it.
    pub fn announce(&self, a: Announce) -> AnnounceReply {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.announces += 1;
        let interval = Duration::from_millis(a.interval_ms.clamp(50, 60_000));
        st.nodes.insert(
            a.node.clone(),
            NodeRec {
                url: a.url.clone(),
                expires: now + interval * 3 + Duration::from_secs(1),
            },
        );
        // Forget expired nodes everywhere.
        let expired: Vec<String> = st
            .nodes
            .iter()
            .filter(|(_, r)| r.expires < now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &expired {
            st.nodes.remove(n);
            tracing::info!(node = %n, "tracker: node expired");
        }
        let listed: std::collections::HashSet<&ImageId> = a.images.iter().map(|i| &i.id).collect();
        for (id, sw) in st.swarms.iter_mut() {
            for n in &expired {
                sw.holders.remove(n);
            }
            if !listed.contains(id) || a.removed.contains(id) {
                sw.holders.remove(&a.node);
            }
        }
        for img in &a.images {
            if a.removed.contains(&img.id) {
                continue;
            }
            st.swarms.entry(img.id.clone()).or_default().holders.insert(
                a.node.clone(),
                Holding {
                    have: img.have.clone(),
                    complete: img.complete,
                    origin_inflight: img.origin_inflight.clone(),
                },
            );
        }
        st.swarms.retain(|_, sw| !sw.holders.is_empty());
        for sw in st.swarms.values_mut() {
            let holders = &sw.holders;
            // A claim ends when its piece shows up, its node goes, or it times out.
            sw.claims.retain(|p, (n, until)| {
                *until > now && holders.get(n).is_some_and(|h| !has_bit(&h.have, *p))
            });
        }
        let k = self.seeders_per_image;
        let mut reply = AnnounceReply::default();
        let State { nodes, swarms, .. } = &mut *st;
        for img in a.images.iter().filter(|i| !i.complete) {
            let Some(sw) = swarms.get_mut(&img.id) else {
                continue;
            };
            // Seeders: wanting nodes only; fill free places, the announcer first.
            let holders = &sw.holders;
            sw.seeders
                .retain(|n| holders.get(n).is_some_and(|h| !h.complete));
            if sw.seeders.len() < k && !sw.seeders.contains(&a.node) {
                sw.seeders.push(a.node.clone());
            }
            let mut wanting: Vec<&String> = holders
                .iter()
                .filter(|(n, h)| !h.complete && !sw.seeders.contains(n))
                .map(|(n, _)| n)
                .collect();
            wanting.sort();
            for n in wanting {
                if sw.seeders.len() >= k {
                    break;
                }
                sw.seeders.push(n.clone());
            }
            let origin_share = sw
                .seeders
                .iter()
                .position(|n| *n == a.node)
                .map(|i| (sw.seeders.len() as u32, i as u32));
            let mut peers: Vec<PeerInfo> = sw
                .holders
                .iter()
                .filter(|(n, _)| **n != a.node)
                .filter_map(|(n, h)| {
                    nodes.get(n).map(|r| PeerInfo {
                        node: n.clone(),
                        url: r.url.clone(),
                        have: h.have.clone(),
                        complete: h.complete,
                        origin_inflight: h.origin_inflight.clone(),
                    })
                })
                .collect();
            if peers.len() > MAX_PEERS {
                use rand::seq::SliceRandom;
                peers.shuffle(&mut rand::rng());
                peers.truncate(MAX_PEERS);
            }
            reply.images.insert(
                img.id.clone(),
                Swarm {
                    peers,
                    origin_share,
                },
            );
        }
        reply
    }

    /// Grants the pieces no live node holds or has been granted, to a seeder.
    pub fn claim(&self, c: Claim) -> ClaimReply {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { nodes, swarms, .. } = &mut *st;
        let Some(sw) = swarms.get_mut(&c.image) else {
            return ClaimReply::default();
        };
        if !sw.seeders.contains(&c.node) {
            return ClaimReply::default();
        }
        let held: Vec<&str> = sw
            .holders
            .iter()
            .filter(|(node, _)| !nodes.get(*node).is_some_and(|r| c.avoid.contains(&r.url)))
            .map(|(_, h)| h.have.as_str())
            .collect();
        let mut granted = Vec::new();
        for p in c.pieces {
            let taken = sw
                .claims
                .get(&p)
                .is_some_and(|(who, until)| *until > now && *who != c.node);
            let held = held.iter().any(|h| has_bit(h, p));
            if !taken && !held {
                sw.claims.insert(p, (c.node.clone(), now + CLAIM_TTL));
                granted.push(p);
            }
        }
        ClaimReply { granted }
    }

    /// Handles one HTTP request (`POST /v1/announce`, `POST /v1/claim`).
    pub async fn handle(
        self: Arc<Self>,
        ep: TrackerEndpoint,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if !self.token.admits(&req) {
            return status(StatusCode::FORBIDDEN, "missing or wrong cluster token");
        }
        match ep {
            TrackerEndpoint::Announce => match read_json::<Announce>(req).await {
                Ok(a) => json(StatusCode::OK, &self.announce(a)),
                Err(resp) => resp,
            },
            TrackerEndpoint::Claim => match read_json::<Claim>(req).await {
                Ok(c) => json(StatusCode::OK, &self.claim(c)),
                Err(resp) => resp,
            },
            TrackerEndpoint::Unknown => status(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// Serves the tracker on `listener` with `edge`'s limits until `shutdown`.
    /// (Boxed, and compiled here once: see `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        edge: Edge,
        shutdown: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        euca_service::registry::add_source(&self);
        euca_service::serve_api(listener, edge.listen, self, edge.metrics, shutdown)
    }
}

/// The tracker's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerEndpoint {
    Announce,
    Claim,
    Unknown,
}

impl euca_service::Endpoint for TrackerEndpoint {
    fn name(&self) -> &'static str {
        match self {
            TrackerEndpoint::Announce => "Announce",
            TrackerEndpoint::Claim => "Claim",
            TrackerEndpoint::Unknown => "Unknown",
        }
    }
    fn routine(&self) -> bool {
        *self == TrackerEndpoint::Announce
    }
}

impl euca_service::Api for Tracker {
    type Endpoint = TrackerEndpoint;
    type Body = Body;
    fn service(&self) -> &'static str {
        "tracker"
    }
    fn route(&self, head: &http::request::Parts) -> TrackerEndpoint {
        match (&head.method, head.uri.path()) {
            (&Method::POST, "/v1/announce") => TrackerEndpoint::Announce,
            (&Method::POST, "/v1/claim") => TrackerEndpoint::Claim,
            _ => TrackerEndpoint::Unknown,
        }
    }
    async fn handle(
        self: Arc<Self>,
        ep: TrackerEndpoint,
        req: Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Response<Body> {
        Tracker::handle(self, ep, req).await
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        crate::http::edge_error(e)
    }
    fn body(&self, bytes: bytes::Bytes) -> Body {
        crate::http::full(bytes)
    }
}

impl euca_service::registry::MetricSource for Tracker {
    fn report(&self, out: &mut euca_service::registry::Scrape) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        out.counter(
            "euca_tracker_announces_total",
            "Announces received.",
            &[],
            st.announces,
        );
        out.gauge(
            "euca_tracker_nodes",
            "Nodes known.",
            &[],
            st.nodes.len() as i64,
        );
        out.gauge(
            "euca_tracker_images",
            "Images with a swarm.",
            &[],
            st.swarms.len() as i64,
        );
    }
}

/// Whether bit `i` is set in a hex bitfield.
pub fn has_bit(hex_bits: &str, i: u32) -> bool {
    hex_bits
        .as_bytes()
        .get(i as usize / 4)
        .and_then(|c| (*c as char).to_digit(16))
        .is_some_and(|nibble| nibble & (8 >> (i % 4)) != 0)
}

/// Decodes a hex bitfield into a presence vector of `n` pieces (missing bits = absent).
pub fn decode_bitfield(hex_bits: &str, n: u32) -> Vec<bool> {
    let bytes = hex::decode(hex_bits).unwrap_or_default();
    (0..n as usize)
        .map(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &ImageId, have: &str, complete: bool) -> HeldImage {
        HeldImage {
            id: id.clone(),
            pieces: 8,
            have: have.into(),
            complete,
            origin_inflight: vec![],
        }
    }

    fn ann(node: &str, images: Vec<HeldImage>) -> Announce {
        Announce {
            node: node.into(),
            url: format!("http://{node}"),
            interval_ms: 1000,
            images,
            removed: vec![],
        }
    }

    #[test]
    fn at_most_k_seeders_and_handover() {
        let t = Tracker::new(Token::new("0123456789abcdef").unwrap(), 2);
        let id = ImageId::parse(&"a".repeat(64)).unwrap();
        let r1 = t.announce(ann("n1", vec![held(&id, "00", false)]));
        assert_eq!(r1.images[&id].origin_share, Some((1, 0)));
        let r2 = t.announce(ann("n2", vec![held(&id, "00", false)]));
        assert_eq!(r2.images[&id].origin_share, Some((2, 1)));
        let r3 = t.announce(ann("n3", vec![held(&id, "00", false)]));
        assert_eq!(r3.images[&id].origin_share, None);
        assert_eq!(r3.images[&id].peers.len(), 2);
        // n1 completes: n3 takes its place.
        t.announce(ann("n1", vec![held(&id, "ff", true)]));
        let r3 = t.announce(ann("n3", vec![held(&id, "00", false)]));
        assert!(r3.images[&id].origin_share.is_some());
        // n2 withdraws the image: it is no longer named as a peer.
        let mut a = ann("n2", vec![]);
        a.removed.push(id.clone());
        t.announce(a);
        let r3 = t.announce(ann("n3", vec![held(&id, "00", false)]));
        assert!(r3.images[&id].peers.iter().all(|p| p.node != "n2"));
        assert_eq!(decode_bitfield("a0", 4), vec![true, false, true, false]);
        assert!(has_bit("a0", 0) && !has_bit("a0", 1) && has_bit("a0", 2) && !has_bit("a0", 9));
    }

    #[test]
    fn claims_grant_each_piece_to_one_seeder() {
        let t = Tracker::new(Token::new("0123456789abcdef").unwrap(), 2);
        let id = ImageId::parse(&"b".repeat(64)).unwrap();
        for n in ["n1", "n2", "n3"] {
            t.announce(ann(n, vec![held(&id, "00", false)]));
        }
        let c = |node: &str, pieces: Vec<u32>| {
            t.claim(Claim {
                node: node.into(),
                image: id.clone(),
                pieces,
                avoid: vec![],
            })
            .granted
        };
        assert_eq!(c("n1", vec![2, 3]), vec![2, 3]);
        assert_eq!(c("n2", vec![3, 4]), vec![4]);
        assert_eq!(c("n3", vec![5]), Vec::<u32>::new(), "not a seeder");
        // Once n1 holds piece 2, nobody is granted it again.
        t.announce(ann("n1", vec![held(&id, "20", false)]));
        assert_eq!(c("n2", vec![2]), Vec::<u32>::new());
        // … unless n2 found n1 failing.
        let avoid = vec!["http://n1".to_string()];
        let r = t.claim(Claim {
            node: "n2".into(),
            image: id.clone(),
            pieces: vec![2],
            avoid,
        });
        assert_eq!(r.granted, vec![2]);
    }
}
