//! What a service hands the serve loop: an [`Api`] that parses a request head
//! into a typed endpoint (an enum per API, named after its operations), then
//! handles it. The loop answers `/_health` and `/_metrics` itself, gives every
//! request an id, and keeps the request metrics and the access log per endpoint.
use crate::registry;
use crate::serve::{serve, ListenOptions, Listener, Peer};
use crate::MetricsAccess;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use rand::RngCore;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// One operation of an API (an enum per API).
pub trait Endpoint: Send + 'static {
    /// The operation's name, e.g. `GetObject` (labels metrics and the access log).
    fn name(&self) -> &'static str;
    /// A routine call made every second or so by another service (a CC's poll, a
    /// tracker announce): its successful answers go to the access log at debug
    /// level, so a cluster's heartbeat does not drown the log. Metrics count it.
    fn routine(&self) -> bool {
        false
    }
}

/// Put on an error response by the API's renderer: the error code (e.g.
/// `NoSuchKey`) for `euca_http_request_errors_total`.
#[derive(Clone, Debug)]
pub struct ErrorCode(pub String);

/// What the request is, for the handler: its id and who sent it.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Random, unique per request (16 uppercase hex digits).
    pub request_id: String,
    pub peer: Peer,
}

/// An error the loop itself answers with (in the API's error form).
#[derive(Clone, Copy, Debug)]
pub struct EdgeError {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

/// `/_metrics` without the metrics token.
pub const METRICS_REFUSED: EdgeError = EdgeError {
    status: 401,
    code: "AccessDenied",
    message: "Metrics need Authorization: Bearer <the metrics token>.",
};

/// A service's HTTP API.
pub trait Api: Send + Sync + Sized + 'static {
    type Endpoint: Endpoint;
    type Body: Body<Data = Bytes> + Send + Unpin + 'static;
    /// The service's name (`service` label, access log).
    fn service(&self) -> &'static str;
    /// Which operation the request is (from its head only).
    fn route(&self, head: &http::request::Parts) -> Self::Endpoint;
    /// Runs it. Error responses come from the API's one renderer, which puts an
    /// [`ErrorCode`] in the response's extensions.
    fn handle(
        self: Arc<Self>,
        endpoint: Self::Endpoint,
        req: Request<Incoming>,
        cx: Ctx,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
    /// An error the loop answers with, in the API's error form.
    fn render_error(&self, e: &EdgeError, cx: &Ctx) -> Response<Self::Body>;
    /// A plain body (health, metrics text).
    fn body(&self, bytes: Bytes) -> Self::Body;
    /// Called on every response, the loop's own included (e.g. to send the
    /// request id in the API's header).
    fn finish(&self, _resp: &mut Response<Self::Body>, _cx: &Ctx) {}
}

/// A fresh request id: 8 random bytes as 16 uppercase hex digits.
pub fn request_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Serves `api` on `listener` (through [`serve`]) until `shutdown`; then drains.
///
/// Boxed, and called from a function of the service's own crate, as every
/// long-running entry point (open, serve) is: Rust compiles an async function's
/// body in the crate that polls it, and this generic one where it is instantiated,
/// so called from a binary (`euca`, each test binary) it made that binary compile
/// the whole service again; called from the service's crate, the service is compiled
/// there, once.
pub fn serve_api<L: Listener, A: Api>(
    listener: L,
    opts: ListenOptions,
    api: Arc<A>,
    metrics: MetricsAccess,
    shutdown: watch::Receiver<bool>,
) -> BoxFuture<'static, ()>
where
    <A::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serving(listener, opts, api, metrics, shutdown).boxed()
}

async fn serving<L: Listener, A: Api>(
    listener: L,
    mut opts: ListenOptions,
    api: Arc<A>,
    metrics: MetricsAccess,
    shutdown: watch::Receiver<bool>,
) where
    <A::Body as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    opts.name = api.service();
    let metrics = Arc::new(metrics);
    serve(
        listener,
        opts,
        move |req, peer| one_request(api.clone(), metrics.clone(), req, peer),
        shutdown,
    )
    .await
}

async fn one_request<A: Api>(
    api: Arc<A>,
    metrics: Arc<MetricsAccess>,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<A::Body> {
    let started = Instant::now();
    let cx = Ctx {
        request_id: request_id(),
        peer,
    };
    let method = req.method().clone();
    let service = api.service();
    let mut routine = false;
    let (endpoint, resp) = if method == Method::GET && req.uri().path() == "/_health" {
        (
            "Health",
            text(&*api, "text/plain", Bytes::from_static(b"ok\n")),
        )
    } else if method == Method::GET && req.uri().path() == "/_metrics" {
        let r = if metrics.allows(req.headers()) {
            text(
                &*api,
                "text/plain; version=0.0.4",
                Bytes::from(registry::render()),
            )
        } else {
            let mut r = api.render_error(&METRICS_REFUSED, &cx);
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(MetricsAccess::CHALLENGE),
            );
            r
        };
        ("Metrics", r)
    } else {
        let (parts, body) = req.into_parts();
        let ep = api.route(&parts);
        let name = ep.name();
        routine = ep.routine();
        let resp = api
            .clone()
            .handle(ep, Request::from_parts(parts, body), cx.clone())
            .await;
        (name, resp)
    };
    let mut resp = resp;
    api.finish(&mut resp, &cx);
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let m = registry::http();
    let status_s = status.to_string();
    m.requests
        .with_label_values(&[service, endpoint, &status_s])
        .inc();
    m.duration
        .with_label_values(&[service, endpoint])
        .observe(elapsed.as_secs_f64());
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.as_str());
    if let Some(code) = code.or((status >= 400).then_some(status_s.as_str())) {
        m.errors.with_label_values(&[service, endpoint, code]).inc();
    }
    let bytes = resp.body().size_hint().exact();
    macro_rules! access {
        ($level:ident) => {
            tracing::$level!(
                target: "access",
                service,
                endpoint,
                method = %method,
                status,
                bytes,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                client = %cx.peer.client,
                request_id = %cx.request_id,
            )
        };
    }
    if routine && status < 400 {
        access!(debug);
    } else {
        access!(info);
    }
    resp
}

fn text<A: Api>(api: &A, content_type: &'static str, b: Bytes) -> Response<A::Body> {
    let mut r = Response::new(api.body(b));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
