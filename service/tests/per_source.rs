//! The per-source cap on a real listener: a source at its cap gets its own
//! longest-idle connection closed to make room, and is refused (503) only when
//! every one of its connections has a request in flight.
use bytes::Bytes;
use euca_service::{serve, ListenOptions, ServiceConfig};
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

async fn get(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn per_source_cap_evicts_idle_then_refuses() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = ServiceConfig {
        max_connections_per_source: 2,
        ..ServiceConfig::default()
    };
    let opts = ListenOptions::new("test", 16, &cfg);
    // `/slow` waits for a permit: its connection stays busy until the test releases it.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    // Each `/slow` request says when it has arrived (its connection is then busy).
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve(
        l,
        opts,
        move |req: http::Request<hyper::body::Incoming>, _peer| {
            let g = g.clone();
            let arrived_tx = arrived_tx.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let _ = arrived_tx.send(());
                    let _p = g.acquire().await;
                }
                http::Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        },
        rx,
    ));
    // Two idle keep-alive connections, then a third: served, and the oldest closed.
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut a, "/").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut b, "/").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut c, "/").await.starts_with("HTTP/1.1 200"));
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), a.read(&mut one))
        .await
        .expect("the oldest idle connection is closed");
    assert_eq!(n.unwrap_or(0), 0);
    // Both remaining connections busy: a further one is refused with 503.
    for s in [&mut b, &mut c] {
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
    }
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("both slow requests arrive");
    }
    let mut d = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), d.read(&mut buf))
        .await
        .expect("refused at once")
        .unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"));
    gate.add_permits(2);
    assert!(get(&mut b, "/").await.contains("200"));
    tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("shuts down")
        .unwrap();
}
