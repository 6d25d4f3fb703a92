//! The serve loop with an [`Api`]: drain on shutdown, `/_health` and `/_metrics`
//! answered for every API, request ids, the access log, the Unix-socket listener.
use bytes::Bytes;
use euca_service::{
    render, serve_api, Api, Ctx, EdgeError, Endpoint, ListenOptions, MetricsAccess, ServiceConfig,
};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

#[derive(Clone, Copy, Debug)]
enum TestEndpoint {
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

struct TestApi {
    name: &'static str,
    gate: Arc<Semaphore>,
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
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
            TestEndpoint::Fast => Response::new(Full::new(Bytes::from(cx.request_id))),
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

struct Server {
    gate: Arc<Semaphore>,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start<L: euca_service::Listener>(listener: L, name: &'static str, token: &str) -> Server {
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
async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str, auth: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n");
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

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[tokio::test]
async fn shutdown_drains_in_flight_and_refuses_new() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut srv = start(l, "drain-test", "tok");
    let mut a = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    srv.arrived.recv().await.unwrap();
    srv.stop.send(true).unwrap();
    // The listener closes: a new client is refused (bounded wait for the loop to see the stop).
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are refused after shutdown");
    assert!(
        !srv.task.is_finished(),
        "the loop waits for the request in flight"
    );
    // The request in flight completes, and then the loop ends.
    srv.gate.add_permits(1);
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), a.read_to_string(&mut buf))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.ends_with("slow done"), "{buf}");
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .expect("loop ended")
        .unwrap();
}

#[tokio::test]
async fn health_metrics_ids_and_errors() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = start(l, "metrics-test", "sekrit-token");
    let mut c = TcpStream::connect(addr).await.unwrap();
    let h = request(&mut c, "/_health", "").await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(body(&h), "ok\n");
    // Without (or with a wrong) token: 401, a challenge, the API's error shape.
    for auth in ["", "authorization: Bearer sekrit-tokeN\r\n"] {
        let m = request(&mut c, "/_metrics", auth).await;
        assert!(m.starts_with("HTTP/1.1 401"), "{m}");
        assert!(
            m.contains("www-authenticate: Bearer realm=\"metrics\""),
            "{m}"
        );
        assert!(
            body(&m).starts_with("{\"error\":{\"code\":\"AccessDenied\""),
            "{m}"
        );
    }
    // Request ids: fresh per request, 16 uppercase hex digits.
    let one = request(&mut c, "/fast", "").await;
    let two = request(&mut c, "/fast", "").await;
    let (id1, id2) = (body(&one).to_string(), body(&two).to_string());
    assert_eq!(id1.len(), 16, "{one}");
    assert!(id1
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    assert_ne!(id1, id2);
    let e = request(&mut c, "/nothing", "").await;
    assert!(e.starts_with("HTTP/1.1 404"), "{e}");
    let m = request(
        &mut c,
        "/_metrics",
        "authorization: Bearer sekrit-token\r\n",
    )
    .await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    let text = body(&m);
    for want in [
        "euca_http_requests_total{endpoint=\"Fast\",service=\"metrics-test\",status=\"200\"} 2\n",
        "euca_http_requests_total{endpoint=\"Missing\",service=\"metrics-test\",status=\"404\"} 1\n",
        "euca_http_request_errors_total{code=\"NoSuchThing\",endpoint=\"Missing\",service=\"metrics-test\"} 1\n",
        "euca_http_request_duration_seconds_count{endpoint=\"Fast\",service=\"metrics-test\"} 2\n",
        "euca_http_open_connections{service=\"metrics-test\"} 1\n",
        "euca_http_requests_total{endpoint=\"Health\",service=\"metrics-test\",status=\"200\"} 1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    srv.stop.send(true).unwrap();
    drop(c);
    srv.task.await.unwrap();
}

#[tokio::test]
async fn unix_socket_through_the_same_loop() {
    let dir = std::env::temp_dir().join(format!("euca-svc-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sock");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let srv = start(l, "unix-test", "tok");
    let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
    let r = request(&mut c, "/fast", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body(&r).len(), 16);
    let m = request(&mut c, "/_metrics", "").await;
    assert!(m.starts_with("HTTP/1.1 401"), "{m}");
    srv.stop.send(true).unwrap();
    drop(c);
    srv.task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Collects what the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_line_per_request() {
    let cap = Captured::default();
    let w = cap.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_env_filter("access=info")
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = start(l, "log-test", "tok");
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = request(&mut c, "/fast", "").await;
    let id = body(&r).to_string();
    srv.stop.send(true).unwrap();
    drop(c);
    srv.task.await.unwrap();
    let log = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("request_id={id}")))
        .unwrap_or_else(|| panic!("no access line for {id} in {log}"));
    for want in [
        " access:",
        "service=\"log-test\"",
        "endpoint=\"Fast\"",
        "method=GET",
        "status=200",
        "bytes=16",
        "duration_ms=",
        "client=127.0.0.1:",
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
}

/// TLS from `[service] tls_cert`/`tls_key`: curl verifies a self-signed
/// certificate made by the openssl CLI and reads `/_health` over https; a
/// clear-text request on the same port gets no answer.
#[tokio::test]
async fn tls_listener_with_a_self_signed_certificate() {
    let dir = std::env::temp_dir().join(format!("euca-svc-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(st.success());
    let only_cert: Result<ServiceConfig, _> =
        serde_json::from_value(serde_json::json!({ "tls_cert": cert }));
    assert!(only_cert.unwrap_err().to_string().contains("go together"));
    let cfg: ServiceConfig =
        serde_json::from_value(serde_json::json!({ "tls_cert": cert, "tls_key": key })).unwrap();
    assert!(cfg.tls.is_some());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (tx, _arrived) = tokio::sync::mpsc::unbounded_channel();
    let api = Arc::new(TestApi {
        name: "tls-test",
        gate,
        arrived: tx,
    });
    let (stop, rx) = watch::channel(false);
    let opts = ListenOptions::new("tls", 16, &cfg);
    let task = tokio::spawn(serve_api(l, opts, api, MetricsAccess::Closed, rx));
    let curl = |url: String, cacert: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert"])
                .arg(cacert)
                .arg(url)
                .output()
                .expect("curl")
        })
    };
    let out = curl(
        format!("https://127.0.0.1:{}/_health", addr.port()),
        cert.clone(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ok\n");
    let out = curl(
        format!("https://127.0.0.1:{}/fast", addr.port()),
        cert.clone(),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout.len(), 16, "a request id");
    // Clear text on the TLS port: no HTTP answer.
    let out = curl(
        format!("http://127.0.0.1:{}/_health", addr.port()),
        cert.clone(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    stop.send(true).unwrap();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
