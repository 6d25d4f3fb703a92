//! One `access` log line per request. Alone in its test binary: a thread-local
//! subscriber (`set_default`) races with callsite interest caching when other
//! tests of the same binary log concurrently, and the line can go missing.
mod common;
use common::{body, request, start};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

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
