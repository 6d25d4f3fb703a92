//! The CC API ([`euca_compute_proto::cc`]) and the image tracker on one listener:
//! `POST /v1/announce` and `/v1/claim` go to the tracker, everything else to the
//! cluster. The cluster token is checked before anything else (and before any
//! body is read); bodies are capped; errors are the internal APIs' JSON shape.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use euca_compute_proto::cc::CcEndpoint;
use euca_compute_proto::net::NetworkState;
use euca_compute_proto::{AttachSpec, LaunchRequest, NodeState, RegisterNode};
use euca_imagecache::http::{
    edge_error, full, json, read_json, read_json_capped, reply_error, status, Body, Edge,
};
use euca_imagecache::tracker::{Tracker, TrackerEndpoint};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::{CcError, Cluster};

/// `PUT /v1/network` carries the whole cluster's state (every instance's metadata):
/// its own, larger body cap.
pub const MAX_NETWORK_BODY: usize = 64 << 20;

/// Which API a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Tracker(TrackerEndpoint),
    Cc(CcEndpoint),
}

impl euca_service::Endpoint for Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Tracker(t) => t.name(),
            Route::Cc(c) => c.name(),
        }
    }
    fn routine(&self) -> bool {
        match self {
            Route::Tracker(t) => t.routine(),
            Route::Cc(c) => c.routine(),
        }
    }
}

/// The listener's API: the cluster and the tracker it hosts.
pub struct CcApi {
    pub cluster: Arc<Cluster>,
    pub tracker: Arc<Tracker>,
}

fn err(e: &CcError) -> Response<Body> {
    reply_error(e.status(), e.code(), &e.message())
}

fn answer<T: serde::Serialize>(r: Result<T, CcError>) -> Response<Body> {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => err(&e),
    }
}

impl CcApi {
    pub fn new(cluster: Arc<Cluster>, seeders_per_image: usize) -> Arc<Self> {
        let tracker = Tracker::new(cluster.token().clone(), seeders_per_image);
        Arc::new(CcApi { cluster, tracker })
    }

    /// Serves the API on `listener` until `shutdown`.
    /// (Boxed, and compiled here once: see `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        edge: Edge,
        shutdown: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        euca_service::registry::add_source(&self.tracker);
        euca_service::serve_api(listener, edge.listen, self, edge.metrics, shutdown)
    }

    async fn cc(&self, ep: CcEndpoint, req: Request<Incoming>) -> Response<Body> {
        if !self.cluster.token().admits(&req) {
            return status(StatusCode::FORBIDDEN, "missing or wrong cluster token");
        }
        let c = &self.cluster;
        match ep {
            CcEndpoint::Nodes => json(StatusCode::OK, &c.nodes()),
            CcEndpoint::Instances => json(StatusCode::OK, &c.instances()),
            CcEndpoint::RegisterNode => match read_json::<RegisterNode>(req).await {
                Ok(r) => answer(c.register(r).await),
                Err(resp) => resp,
            },
            CcEndpoint::Launch => match read_json::<LaunchRequest>(req).await {
                Ok(r) => answer(c.launch(r).await),
                Err(resp) => resp,
            },
            CcEndpoint::TerminateInstance(id) => answer(c.terminate(&id).await),
            CcEndpoint::RebootInstance(id) => answer(c.reboot(&id).await),
            CcEndpoint::ConsoleOutput(id) => answer(c.console(&id).await),
            CcEndpoint::AttachVolume { instance, volume } => {
                match read_json::<AttachSpec>(req).await {
                    Ok(s) if s.volume_id != volume => err(&CcError::BadRequest(
                        "the body's volume_id differs from the path's".into(),
                    )),
                    Ok(s) => answer(c.attach(&instance, &s).await),
                    Err(resp) => resp,
                }
            }
            CcEndpoint::DetachVolume { instance, volume } => {
                let force = req
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .any(|kv| kv == "force=true");
                answer(c.detach(&instance, &volume, force).await)
            }
            CcEndpoint::Network => json(StatusCode::OK, &c.net.status()),
            CcEndpoint::ApplyNetwork => {
                match read_json_capped::<NetworkState>(req, MAX_NETWORK_BODY).await {
                    Ok(s) => answer(c.net.apply(s).await),
                    Err(resp) => resp,
                }
            }
            CcEndpoint::Unknown => status(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

impl euca_service::Api for CcApi {
    type Endpoint = Route;
    type Body = Body;
    /// The listener keeps the name it had when it served only the tracker, so
    /// dashboards and alerts on `service="tracker"` keep working.
    fn service(&self) -> &'static str {
        "tracker"
    }
    fn route(&self, head: &http::request::Parts) -> Route {
        match (&head.method, head.uri.path()) {
            (&Method::POST, "/v1/announce") => Route::Tracker(TrackerEndpoint::Announce),
            (&Method::POST, "/v1/claim") => Route::Tracker(TrackerEndpoint::Claim),
            (m, p) => Route::Cc(CcEndpoint::parse(m, p)),
        }
    }
    async fn handle(
        self: Arc<Self>,
        ep: Route,
        req: Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Response<Body> {
        match ep {
            Route::Tracker(t) => Tracker::handle(self.tracker.clone(), t, req).await,
            Route::Cc(c) => self.cc(c, req).await,
        }
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        edge_error(e)
    }
    fn body(&self, bytes: bytes::Bytes) -> Body {
        full(bytes)
    }
}

impl euca_service::registry::MetricSource for Cluster {
    fn report(&self, out: &mut euca_service::registry::Scrape) {
        let mut by_state = [0i64; 5];
        {
            let v = self.lock();
            for e in &v.nodes {
                by_state[match e.state {
                    NodeState::Up => 0,
                    NodeState::Down => 1,
                    NodeState::Asleep => 2,
                    NodeState::Waking => 3,
                    NodeState::Pending => 4,
                }] += 1;
            }
        }
        for (k, s) in ["UP", "DOWN", "ASLEEP", "WAKING", "PENDING"]
            .iter()
            .enumerate()
        {
            out.gauge(
                "euca_cc_nodes",
                "Nodes by state.",
                &[("state", s)],
                by_state[k],
            );
        }
        let n = &self.counters;
        out.counter(
            "euca_cc_placements_total",
            "Instances placed on a node.",
            &[],
            n.placements.load(Ordering::Relaxed),
        );
        out.counter(
            "euca_cc_launch_failures_total",
            "Launches refused (not enough capacity, journal failure) and runs a node refused.",
            &[("reason", "capacity")],
            n.launch_refused.load(Ordering::Relaxed),
        );
        out.counter(
            "euca_cc_launch_failures_total",
            "Launches refused (not enough capacity, journal failure) and runs a node refused.",
            &[("reason", "node_refused")],
            n.run_failed.load(Ordering::Relaxed),
        );
        out.counter(
            "euca_cc_polls_total",
            "Node polls sent.",
            &[],
            n.polls.load(Ordering::Relaxed),
        );
        out.counter(
            "euca_cc_poll_misses_total",
            "Node polls unanswered in time.",
            &[],
            n.poll_misses.load(Ordering::Relaxed),
        );
    }
}
