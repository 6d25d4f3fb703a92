//! HTTP plumbing shared by the daemon and the tracker: TCP listeners served by
//! `euca-service` (connection caps, per-source caps, idle close; see [`Edge`]), a
//! plain hyper HTTP/1.1 accept loop for the control socket, the cluster bearer
//! token, JSON replies and a small client with size limits and timeouts.
//!
//! Peers and the tracker authenticate every request with the cluster token
//! (`Authorization: Bearer <token>`, compared in constant time). The daemon's
//! control API (`euca cache …`) is served on a Unix socket in the cache directory
//! (mode 0600), so it is authenticated by file permissions.
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// An error as `{"error": "..."}` with the error's status.
pub fn error(e: &CacheError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &serde_json::json!({ "error": e.to_string() }))
}

pub fn status(code: StatusCode, msg: &str) -> Response<Body> {
    json(code, &serde_json::json!({ "error": msg }))
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

    /// The `/_metrics` answer: the text, or 401 without the metrics token.
    pub fn metrics_reply<B>(
        &self,
        req: &Request<B>,
        text: impl FnOnce() -> String,
    ) -> Response<Body> {
        if self.metrics.allows(req.headers()) {
            return Response::new(full(text()));
        }
        let mut r = status(
            StatusCode::UNAUTHORIZED,
            "metrics need Authorization: Bearer <the metrics token>",
        );
        r.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_static(euca_service::MetricsAccess::CHALLENGE),
        );
        r
    }
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

/// Serves HTTP/1.1 on a TCP listener with `edge`'s limits until `shutdown`.
pub async fn serve_tcp<F, Fut>(
    listener: tokio::net::TcpListener,
    edge: &Edge,
    handler: F,
    shutdown: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    euca_service::serve(
        listener,
        edge.listen.clone(),
        move |req, _peer| handler(req),
        shutdown,
    )
    .await
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A local listener served by [`serve`] (the control API's Unix socket; TCP
/// listeners go through [`serve_tcp`] and its limits).
pub trait Listener: Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        Ok(self.accept().await?.0)
    }
}

/// Serves HTTP/1.1 connections from `listener` until `shutdown` turns true.
pub async fn serve<L, F, Fut>(listener: L, handler: F, mut shutdown: watch::Receiver<bool>)
where
    L: Listener,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            s = listener.accept_one() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let h = handler.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
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

/// A keep-alive HTTP client for peers and the tracker.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Token,
}

impl HttpClient {
    pub fn new(token: Token) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        HttpClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(conn),
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
        let fut = async {
            let mut req = Request::builder()
                .method(method)
                .uri(url)
                .header("authorization", self.token.header());
            if body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| e.to_string())?;
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let expected = resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if expected.is_some_and(|n| n > max as u64) {
                return Err(format!("response of {expected:?} bytes is over {max}"));
            }
            let bytes = http_body_util::Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if expected.is_some_and(|n| n != bytes.len() as u64) {
                return Err("response body shorter than its Content-Length".into());
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::TimedOut(timeout))?
            .map_err(CallError::Failed)
    }
}
