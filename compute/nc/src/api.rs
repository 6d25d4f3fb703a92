//! The NC API (`euca_compute_proto::nc`) over `euca-service`'s serve loop.
//!
//! Every request must carry the cluster token; it is checked from the request head
//! before any body is read (403 otherwise). Bodies are capped at [`MAX_BODY`]
//! (413 past it; a `Content-Length` above it is refused unread). Errors are the
//! internal APIs' one shape, `{"error":{"code","message"}}`, with
//! [`NcError::status_code`].
//!
//! One listener serves either one node at its root (`/v1/…`), or many simulated
//! nodes, node `k` under `/sim/<k>` (`/sim/<k>/v1/…`), so `euca nc --simulate 1000`
//! needs one port.
use std::sync::Arc;

use bytes::Bytes;
use euca_compute_proto::nc::NcEndpoint;
use euca_imagecache::http::{json, reply_error, status, Body, Edge, Token};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::node::Node;
use crate::NcError;

/// Largest request body (an [`euca_compute_proto::InstanceSpec`] is a few KiB, user
/// data included: EC2 caps that at 16 KiB before base64).
pub const MAX_BODY: usize = 256 << 10;

/// The path prefix of simulated node `k`: `/sim/<k>`.
pub const SIM_PREFIX: &str = "/sim/";

/// The NC API for one node, or for many simulated ones.
pub struct NcApi {
    nodes: Vec<Arc<dyn Node>>,
    /// Whether nodes are addressed as `/sim/<k>` (else the one node is at `/`).
    prefixed: bool,
    token: Token,
}

/// A request's route: which node (index into the API's nodes) and which operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NcRoute {
    /// `None` when the path names no node this listener serves.
    pub node: Option<usize>,
    pub endpoint: NcEndpoint,
}

impl euca_service::Endpoint for NcRoute {
    fn name(&self) -> &'static str {
        match self.node {
            Some(_) => euca_service::Endpoint::name(&self.endpoint),
            None => "Unknown",
        }
    }
}

impl NcApi {
    /// One node, its API at the listener's root.
    pub fn new(node: Arc<dyn Node>, token: Token) -> Arc<NcApi> {
        Arc::new(NcApi {
            nodes: vec![node],
            prefixed: false,
            token,
        })
    }

    /// Many nodes on one listener, node `k` under `/sim/<k>`.
    pub fn simulated(nodes: Vec<Arc<dyn Node>>, token: Token) -> Arc<NcApi> {
        Arc::new(NcApi {
            nodes,
            prefixed: true,
            token,
        })
    }

    /// The path prefix of node `k` as a URL's path (empty for a single node).
    pub fn prefix(&self, k: usize) -> String {
        if self.prefixed {
            format!("{SIM_PREFIX}{k}")
        } else {
            String::new()
        }
    }

    /// Which node and operation a request is, from its method and path.
    pub fn route_path(&self, method: &http::Method, path: &str) -> NcRoute {
        let (node, rest) = if self.prefixed {
            match split_sim(path) {
                Some((k, rest)) if k < self.nodes.len() => (Some(k), rest),
                _ => (None, path),
            }
        } else {
            (Some(0), path)
        };
        let endpoint = match node {
            Some(_) => NcEndpoint::parse(method, rest),
            None => NcEndpoint::Unknown,
        };
        NcRoute { node, endpoint }
    }

    /// Serves the API on `listener` with `edge`'s limits until `shutdown`.
    /// (Boxed, and compiled here once: see `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        edge: Edge,
        shutdown: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        euca_service::serve_api(listener, edge.listen, self, edge.metrics, shutdown)
    }

    async fn dispatch(&self, route: NcRoute, req: Request<Incoming>) -> Response<Body> {
        // The token, from the head only: nothing of the body is read before this.
        if !self.token.admits(&req) {
            return status(StatusCode::FORBIDDEN, "missing or wrong cluster token");
        }
        let (Some(k), ep) = (route.node, route.endpoint) else {
            return status(StatusCode::NOT_FOUND, "no such node");
        };
        let Some(node) = self.nodes.get(k) else {
            return status(StatusCode::NOT_FOUND, "no such node");
        };
        match ep {
            NcEndpoint::Node => {
                let report = node.report();
                json(StatusCode::OK, &report)
            }
            NcEndpoint::RunInstance(id) => {
                let spec: euca_compute_proto::InstanceSpec = match read_body(req).await {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                if spec.instance_id != id {
                    return nc_error(&NcError::BadRequest(format!(
                        "the path names {id} but the spec is for {}",
                        spec.instance_id
                    )));
                }
                reply(node.run(spec).await)
            }
            NcEndpoint::TerminateInstance(id) => reply(node.terminate(&id).await),
            NcEndpoint::RebootInstance(id) => reply(node.reboot(&id).await),
            NcEndpoint::ConsoleOutput(id) => reply(node.console(&id).await),
            NcEndpoint::AttachVolume { instance, volume } => {
                let spec: euca_compute_proto::AttachSpec = match read_body(req).await {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                if spec.volume_id != volume {
                    return nc_error(&NcError::BadRequest(format!(
                        "the path names {volume} but the spec is for {}",
                        spec.volume_id
                    )));
                }
                reply(node.attach(&instance, spec).await)
            }
            NcEndpoint::DetachVolume { instance, volume } => {
                let force = match force_param(req.uri().query()) {
                    Ok(f) => f,
                    Err(e) => return nc_error(&e),
                };
                reply(node.detach(&instance, &volume, force).await)
            }
            NcEndpoint::Unknown => status(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

/// `/sim/<k>/rest` → `(k, "/rest")`; `k` is decimal digits only.
fn split_sim(path: &str) -> Option<(usize, &str)> {
    let after = path.strip_prefix(SIM_PREFIX)?;
    let end = after.find('/').unwrap_or(after.len());
    let digits = &after[..end];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &after[end..]))
}

/// The detach call's `force` query parameter (`true`/`false`, default false).
fn force_param(query: Option<&str>) -> Result<bool, NcError> {
    let mut force = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("force", "true")) => force = true,
            Some(("force", "false")) => force = false,
            Some(("force", v)) => {
                return Err(NcError::BadRequest(format!(
                    "force must be true or false, not {v:?}"
                )))
            }
            _ => {}
        }
    }
    Ok(force)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes (413 past it, 400 if not the
/// expected JSON). Called only after the token was checked.
async fn read_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    use euca_service::body::{read_capped, BodyError};
    let (parts, body) = req.into_parts();
    let bytes = read_capped(&parts.headers, body, MAX_BODY)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => status(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
            BodyError::Read(_) => status(StatusCode::BAD_REQUEST, &e.to_string()),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| status(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")))
}

/// An [`NcError`] in the one JSON error shape.
pub fn nc_error(e: &NcError) -> Response<Body> {
    let (code, name) = e.status_code();
    if code >= 500 {
        tracing::warn!(error = %e, "nc api: internal error");
    }
    reply_error(code, name, &e.to_string())
}

fn reply<T: serde::Serialize>(r: Result<T, NcError>) -> Response<Body> {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => nc_error(&e),
    }
}

impl euca_service::Api for NcApi {
    type Endpoint = NcRoute;
    type Body = Body;
    fn service(&self) -> &'static str {
        "nc"
    }
    fn route(&self, head: &http::request::Parts) -> NcRoute {
        self.route_path(&head.method, head.uri.path())
    }
    async fn handle(
        self: Arc<Self>,
        route: NcRoute,
        req: Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Response<Body> {
        self.dispatch(route, req).await
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        euca_imagecache::http::edge_error(e)
    }
    fn body(&self, bytes: Bytes) -> Body {
        euca_imagecache::http::full(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_paths() {
        assert_eq!(split_sim("/sim/7/v1/node"), Some((7, "/v1/node")));
        assert_eq!(split_sim("/sim/999"), Some((999, "")));
        assert_eq!(split_sim("/sim//v1/node"), None);
        assert_eq!(split_sim("/sim/-1/v1/node"), None);
        assert_eq!(split_sim("/sim/+1/v1/node"), None);
        assert_eq!(split_sim("/sim/1x/v1/node"), None);
        assert_eq!(split_sim("/sim/99999999999999999999/v1/node"), None);
        assert_eq!(split_sim("/v1/node"), None);
    }

    #[test]
    fn force_values() {
        assert!(!force_param(None).unwrap());
        assert!(force_param(Some("force=true")).unwrap());
        assert!(!force_param(Some("force=false")).unwrap());
        assert!(force_param(Some("x=1&force=true")).unwrap());
        assert!(force_param(Some("force=yes")).is_err());
    }
}
