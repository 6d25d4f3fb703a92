//! A test [`Api`] and a raw HTTP/1.1 client shared by the serve-loop tests.
#![allow(dead_code)]
use bytes::Bytes;
use euca_service::{
    render, serve_api, Api, Ctx, EdgeError, Endpoint, ListenOptions, MetricsAccess, ServiceConfig,
};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

#[derive(Clone, Copy, Debug)]
pub enum TestEndpoint {
    Fast,
    Slow,
    Missing,
}

impl Endpoint for TestEndpoint {
    fn name(&self) -> &'static str {
        match self {
            TestEndpoint::Fast => "Fast",
            TestEndpoint::Slow => "Slow",
            TestEndpoint::Missing => "Missing",
        }
    }
}

pub struct TestApi {
    pub name: &'static str,
    pub gate: Arc<Semaphore>,
    pub arrived: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Api for TestApi {
    type Endpoint = TestEndpoint;
    type Body = Full<Bytes>;
    fn service(&self) -> &'static str {
        self.name
    }
    fn route(&self, head: &http::request::Parts) -> TestEndpoint {
        match head.uri.path() {
            "/fast" => TestEndpoint::Fast,
            "/slow" => TestEndpoint::Slow,
            _ => TestEndpoint::Missing,
        }
    }
    async fn handle(
        self: Arc<Self>,
        ep: TestEndpoint,
        _req: Request<Incoming>,
        cx: Ctx,
    ) -> Response<Full<Bytes>> {
        match ep {
            TestEndpoint::Fast => {
                let mut r = Response::new(Full::new(Bytes::from(cx.request_id)));
                // What the loop says of the connection (TLS or not), for the tests to see.
                let tls = if cx.peer.tls { "true" } else { "false" };
                r.headers_mut()
                    .insert("x-peer-tls", http::HeaderValue::from_static(tls));
                r
            }
            TestEndpoint::Slow => {
                let _ = self.arrived.send(());
                let _p = self.gate.acquire().await;
                Response::new(Full::new(Bytes::from_static(b"slow done")))
            }
            TestEndpoint::Missing => render::json_error(404, "NoSuchThing", "nothing here"),
        }
    }
    fn render_error(&self, e: &EdgeError, _cx: &Ctx) -> Response<Full<Bytes>> {
        render::json_error(e.status, e.code, e.message)
    }
    fn body(&self, bytes: Bytes) -> Full<Bytes> {
        Full::new(bytes)
    }
}

pub struct Server {
    pub gate: Arc<Semaphore>,
    pub arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn start<L: euca_service::Listener>(listener: L, name: &'static str, token: &str) -> Server {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let api = Arc::new(TestApi {
        name,
        gate: gate.clone(),
        arrived: tx,
    });
    let (stop, rx) = watch::channel(false);
    let opts = ListenOptions::new("ignored", 16, &ServiceConfig::default());
    let task = tokio::spawn(serve_api(
        listener,
        opts,
        api,
        MetricsAccess::token(token),
        rx,
    ));
    Server {
        gate,
        arrived,
        stop,
        task,
    }
}

/// One request on a keep-alive connection; the whole response as text.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    auth: &str,
) -> String {
    request_raw(s, &format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n")).await
}

/// Sends `req` as is and reads one response (up to its content-length, or EOF).
pub async fn request_raw<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &str) -> String {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answered")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}
