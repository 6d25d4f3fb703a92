//! HTTP plumbing shared by the daemon and the tracker: every listener (TCP, and
//! the control socket) is served by `euca-service`'s one loop (connection caps,
//! per-source caps, idle close, `/_health`, `/_metrics`; see [`Edge`]); the
//! JSON replies in the internal APIs' one error shape. The cluster bearer token
//! and its client are `euca_service::bearer`'s.
//!
//! Peers and the tracker authenticate every request with the cluster token
//! (`Authorization: Bearer <token>`, compared in constant time). The daemon's
//! control API (`euca cache …`) is served on a Unix socket in the cache directory
//! (mode 0600), so it is authenticated by file permissions.
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::CacheError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// An error in the internal APIs' one shape (`{"error":{"code","message"}}`),
/// with the error's status.
pub fn error(e: &CacheError) -> Response<Body> {
    reply_error(e.status(), e.code(), &e.to_string())
}

/// An error of the HTTP layer itself (bad path, missing token), coded by status.
pub fn status(code: StatusCode, msg: &str) -> Response<Body> {
    let name = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::PAYLOAD_TOO_LARGE => "TooLarge",
        _ => "InternalError",
    };
    reply_error(code.as_u16(), name, msg)
}

/// The one JSON error renderer of the cache's APIs (tracker, peer, control).
pub fn reply_error(status: u16, code: &str, message: &str) -> Response<Body> {
    euca_service::render::json_error(status, code, message)
        .map(|b| b.map_err(|e: Infallible| match e {}).boxed())
}

/// A success without content: `{"ok":"<what>"}`.
pub fn done(what: &str) -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "ok": what }))
}

/// The cluster token (it moved to `euca-service`, beside the client that
/// sends it; re-exported for the cache's users).
pub use euca_service::bearer::Token;

/// How a TCP listener (tracker, piece server) is served: its connection limits
/// and the shared rules of `euca-service`, and who may read `/_metrics`.
#[derive(Clone, Debug)]
pub struct Edge {
    pub listen: euca_service::ListenOptions,
    pub metrics: euca_service::MetricsAccess,
}

impl Edge {
    pub fn new(
        name: &'static str,
        max_connections: usize,
        cfg: &euca_service::ServiceConfig,
        metrics: euca_service::MetricsAccess,
    ) -> Self {
        let mut listen = euca_service::ListenOptions::new(name, max_connections, cfg);
        listen.header_timeout = Duration::from_secs(10);
        Edge { listen, metrics }
    }
}

/// A cache API's error for the serve loop's own answers (metrics refused).
pub fn edge_error(e: &euca_service::EdgeError) -> Response<Body> {
    reply_error(e.status, e.code, e.message)
}

impl Default for Edge {
    /// Default caps (1024 connections, 64 per address), metrics closed.
    fn default() -> Self {
        Edge::new(
            "http",
            1024,
            &euca_service::ServiceConfig::default(),
            euca_service::MetricsAccess::Closed,
        )
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Reads a JSON request body (at most 4 MiB: 413 past it); a bad one becomes a
/// 400 reply. Call it only after the cluster token was checked.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    read_json_capped(req, 4 << 20).await
}

/// [`read_json`] with another cap, for the few bodies that are larger by design.
pub async fn read_json_capped<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    cap: usize,
) -> Result<T, Response<Body>> {
    use euca_service::body::{read_capped, BodyError};
    let (parts, body) = req.into_parts();
    let body = read_capped(&parts.headers, body, cap)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => status(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
            BodyError::Read(_) => status(StatusCode::BAD_REQUEST, &e.to_string()),
        })?;
    serde_json::from_slice(&body)
        .map_err(|e| status(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")))
}
