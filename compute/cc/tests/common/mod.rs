//! A small in-memory fake of the NC API for the CC's tests: several nodes behind
//! one listener (`http://addr/n/<k>`), each with an advertised capacity, the
//! instances it was asked to run, and a mode (normal, refusing runs with 503, or
//! hanging every request).
#![allow(dead_code)]
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use euca_cc::config::{CcConfig, Policy, StaticNode};
use euca_cc::Cluster;
use euca_compute_proto::nc::NcEndpoint;
use euca_compute_proto::*;
use euca_imagecache::http::Token;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub const TOKEN: &str = "test-cluster-token-0123456789";

pub fn token() -> Token {
    Token::new(TOKEN).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Runs answered 503 (the node is "unreachable" for launches); polls work.
    RefuseRuns,
    /// Every request hangs (a SIGSTOPped node).
    Hang,
}

pub struct FakeNode {
    pub capacity: Resources,
    pub instances: BTreeMap<String, InstanceReport>,
    /// Accepted run calls per instance id.
    pub runs: HashMap<String, u32>,
    pub mode: Mode,
    /// Requests received (answered or not).
    pub requests: u64,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub nodes: Arc<Vec<Mutex<FakeNode>>>,
}

impl Fake {
    pub async fn start(n: usize, capacity: Resources) -> Fake {
        let nodes: Vec<Mutex<FakeNode>> = (0..n)
            .map(|_| {
                Mutex::new(FakeNode {
                    capacity,
                    instances: BTreeMap::new(),
                    runs: HashMap::new(),
                    mode: Mode::Normal,
                    requests: 0,
                })
            })
            .collect();
        let nodes = Arc::new(nodes);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ns = nodes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let ns = ns.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(ns.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Fake { addr, nodes }
    }

    pub fn url(&self, k: usize) -> String {
        format!("http://{}/n/{k}", self.addr)
    }

    pub fn set_mode(&self, k: usize, m: Mode) {
        self.nodes[k].lock().unwrap().mode = m;
    }

    /// Requests node `k` received so far.
    pub fn requests(&self, k: usize) -> u64 {
        self.nodes[k].lock().unwrap().requests
    }

    pub fn runs(&self, k: usize, id: &str) -> u32 {
        self.nodes[k]
            .lock()
            .unwrap()
            .runs
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Instances each node holds.
    pub fn counts(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.lock().unwrap().instances.len())
            .collect()
    }

    /// A CC config over these nodes (fast polls, a fresh state dir).
    pub fn config(&self, policy: Policy, state_dir: &std::path::Path) -> CcConfig {
        CcConfig {
            policy,
            poll_interval_ms: 100,
            poll_timeout_ms: 300,
            nodes: (0..self.nodes.len())
                .map(|k| StaticNode {
                    name: format!("n{k}"),
                    url: self.url(k),
                })
                .collect(),
            state_dir: Some(state_dir.to_path_buf()),
            ..CcConfig::default()
        }
    }
}

fn reply(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())))
        .unwrap()
}

fn refuse(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &serde_json::json!({"error": {"code": code, "message": code}}),
    )
}

async fn handle(
    nodes: Arc<Vec<Mutex<FakeNode>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return Ok(refuse(StatusCode::FORBIDDEN, "Forbidden"));
    }
    let path = req.uri().path().to_string();
    let mut segs = path.trim_start_matches('/').splitn(3, '/');
    let (Some("n"), Some(k), Some(rest)) = (segs.next(), segs.next(), segs.next()) else {
        return Ok(refuse(StatusCode::NOT_FOUND, "NotFound"));
    };
    let Some(node) = k.parse::<usize>().ok().and_then(|k| nodes.get(k)) else {
        return Ok(refuse(StatusCode::NOT_FOUND, "NotFound"));
    };
    let mode = {
        let mut n = node.lock().unwrap();
        n.requests += 1;
        n.mode
    };
    if mode == Mode::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let ep = NcEndpoint::parse(req.method(), &format!("/{rest}"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut n = node.lock().unwrap();
    Ok(match ep {
        NcEndpoint::Node => reply(
            StatusCode::OK,
            &NodeReport {
                name: format!("fake{k}"),
                capacity: n.capacity,
                instances: n.instances.values().cloned().collect(),
            },
        ),
        NcEndpoint::RunInstance(id) => {
            if n.mode == Mode::RefuseRuns {
                return Ok(refuse(StatusCode::SERVICE_UNAVAILABLE, "Unavailable"));
            }
            let Ok(spec) = serde_json::from_slice::<InstanceSpec>(&body) else {
                return Ok(refuse(StatusCode::BAD_REQUEST, "BadRequest"));
            };
            *n.runs.entry(id.clone()).or_default() += 1;
            // A later run of a terminated id (a start after a stop) replaces its
            // tombstone, as the real node does.
            if n.instances.get(&id).is_some_and(|r| {
                r.state == NodeInstanceState::Terminated && r.incarnation < spec.incarnation
            }) {
                n.instances.remove(&id);
            }
            let r = n.instances.entry(id).or_insert_with(|| InstanceReport {
                instance_id: spec.instance_id.clone(),
                account: spec.account.clone(),
                reservation_id: spec.reservation_id.clone(),
                vm_type: spec.vm_type.clone(),
                state: NodeInstanceState::Running,
                reason: None,
                mac: spec.mac.clone(),
                launched_at: now_rfc3339(),
                volumes: vec![],
                learned_ip: None,
                incarnation: spec.incarnation,
            });
            reply(StatusCode::OK, &r.clone())
        }
        NcEndpoint::TerminateInstance(id) => match n.instances.get_mut(&id) {
            Some(r) => {
                r.state = NodeInstanceState::Terminated;
                reply(StatusCode::OK, &r.clone())
            }
            None => refuse(StatusCode::NOT_FOUND, codes::INSTANCE_NOT_FOUND),
        },
        _ => refuse(StatusCode::NOT_FOUND, "NotFound"),
    })
}

pub fn small() -> VmType {
    VmType {
        name: "m1.small".into(),
        cores: 1,
        memory_mib: 256,
        disk_gib: 1,
    }
}

/// Two m1.small per node.
pub fn two_slots() -> Resources {
    Resources {
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
    }
}

pub fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        account: "000000000001".into(),
        reservation_id: "r-00000001".into(),
        vm_type: small(),
        root: RootDisk::Image(CachedImage {
            installed_id: "a".repeat(64),
            size: 1 << 20,
        }),
        kernel: None,
        ramdisk: None,
        mac: "d0:0d:00:00:00:01".into(),
        user_data: None,
        public_key: None,
        volumes: vec![],
        nic: None,
        incarnation: 0,
    }
}

pub fn launch(ids: &[&str], min: u32) -> LaunchRequest {
    LaunchRequest {
        min_count: min,
        instances: ids.iter().map(|i| spec(i)).collect(),
        node: None,
        zone: None,
    }
}

/// Waits (bounded) until `f` holds on the cluster's nodes.
pub async fn wait_nodes(c: &Cluster, what: &str, f: impl Fn(&[NodeView]) -> bool) {
    for _ in 0..200 {
        if f(&c.nodes()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}; nodes: {:#?}", c.nodes());
}

/// Starts a cluster and waits until every node has answered a poll.
pub async fn cluster(cfg: CcConfig) -> Arc<Cluster> {
    let c = Cluster::start(cfg, token()).await.unwrap();
    wait_nodes(&c, "every node polled", |ns| {
        ns.iter().all(|n| n.last_seen.is_some())
    })
    .await;
    c
}

/// Placements per node name, in node order.
pub fn per_node(reply: &LaunchReply, nodes: usize) -> Vec<usize> {
    (0..nodes)
        .map(|k| {
            let name = format!("n{k}");
            reply.placed.iter().filter(|p| p.node == name).count()
        })
        .collect()
}
