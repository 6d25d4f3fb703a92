//! The serve loop with an [`Api`]: drain on shutdown, `/_health` and `/_metrics`
//! answered for every API, request ids, the Unix-socket listener, TLS.
mod common;
use common::{body, request, request_raw, start, TestApi};
use euca_service::{serve_api, ListenOptions, MetricsAccess, ServiceConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
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
    // A clear-text connection is not TLS to the handler.
    assert!(
        one.to_ascii_lowercase().contains("x-peer-tls: false"),
        "{one}"
    );
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
    // The handler is told the connection is TLS (a bucket policy's aws:SecureTransport).
    let port = addr.port();
    let cacert = cert.clone();
    let head = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "--max-time",
                "10",
                "--cacert",
            ])
            .arg(cacert)
            .arg(format!("https://127.0.0.1:{port}/fast"))
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.contains("x-peer-tls: true"), "{head}");
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

/// A client that sent `Expect: 100-continue` keeps its body back until `100 Continue`;
/// answered without one (a refusal, or an empty body), it may send its next request on
/// the same connection, whose first bytes hyper would otherwise drain as the withheld
/// body (a `GET` read as `T`, seen as SignatureDoesNotMatch). Such answers close.
#[tokio::test]
async fn an_answer_before_an_expected_body_closes_the_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _srv = start(l, "expect-test", "tok");
    for (path, len) in [("/missing", 2), ("/fast", 0)] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: {len}\r\n\r\n"
        );
        let r = request_raw(&mut c, &head).await;
        assert!(!r.starts_with("HTTP/1.1 100"), "{r}");
        assert!(r.contains("connection: close"), "{path}: {r}");
        // The next request on it is never read as the withheld body.
        let _ = c.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // Without the expectation, a refusal keeps the connection.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = request_raw(
        &mut c,
        "PUT /missing HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 404") && !r.contains("connection: close"),
        "{r}"
    );
    let again = request(&mut c, "/fast", "").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
