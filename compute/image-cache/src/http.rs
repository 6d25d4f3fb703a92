//! HTTP plumbing shared by the daemon and the tracker: every listener (TCP, and
//! the control socket) is served by `euca-service`'s one loop (connection caps,
//! per-source caps, idle close, `/_health`, `/_metrics`; see [`Edge`]); the
//! cluster bearer token, JSON replies in the internal APIs' one error shape, and
//! a small client with size limits and timeouts.
//!
//! Peers and the tracker authenticate every request with the cluster token
//! (`Authorization: Bearer <token>`, compared in constant time). The daemon's
//! control API (`euca cache …`) is served on a Unix socket in the cache directory
//! (mode 0600), so it is authenticated by file permissions.
use std::convert::Infallible;
use std::sync::Arc;
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

/// The shared secret of a cluster's nodes and tracker.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    pub fn new(s: &str) -> Result<Self, CacheError> {
        let s = s.trim();
        if s.len() < 16 {
            return Err(CacheError::Config(
                "the cluster token must be at least 16 characters".into(),
            ));
        }
        Ok(Token(s.into()))
    }

    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether the request carries this token (constant-time compare).
    pub fn admits<B>(&self, req: &Request<B>) -> bool {
        let got = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        euca_aws::constant_time_eq(got.as_bytes(), self.0.as_bytes())
    }
}

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
    use euca_service::body::{read_capped, BodyError};
    let (parts, body) = req.into_parts();
    let body = read_capped(&parts.headers, body, 4 << 20)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => status(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
            BodyError::Read(_) => status(StatusCode::BAD_REQUEST, &e.to_string()),
        })?;
    serde_json::from_slice(&body)
        .map_err(|e| status(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")))
}

/// Why a call failed: it took too long (the peer may just be busy), or it failed
/// outright (refused, reset, cut short, oversized).
#[derive(Debug)]
pub enum CallError {
    TimedOut(Duration),
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::TimedOut(t) => write!(f, "timed out after {t:?}"),
            CallError::Failed(m) => f.write_str(m),
        }
    }
}

/// The client for peers and the tracker: `euca-service`'s HTTP client with the
/// cluster token on every request.
#[derive(Clone)]
pub struct HttpClient {
    client: euca_service::client::HttpClient,
    token: Token,
}

impl HttpClient {
    pub fn new(token: Token) -> Self {
        HttpClient {
            client: euca_service::client::HttpClient::new(Duration::from_secs(2)),
            token,
        }
    }

    /// Sends a request and reads a body of at most `max` bytes, all within
    /// `timeout`. Non-2xx statuses are returned, not turned into errors.
    pub async fn call(
        &self,
        method: http::Method,
        url: &str,
        body: Option<Bytes>,
        max: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", self.token.header());
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| CallError::Failed(e.to_string()))?;
        use euca_service::client::ExchangeError;
        self.client
            .exchange(req, max, timeout)
            .await
            .map_err(|e| match e {
                ExchangeError::TimedOut(t) => CallError::TimedOut(t),
                other => CallError::Failed(other.to_string()),
            })
    }
}
