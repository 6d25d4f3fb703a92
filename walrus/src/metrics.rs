//! Prometheus text-format counters for the service (served at `/_metrics`).
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Kept by the accept loop (`euca_service::ListenOptions::open_gauge`).
    pub open_connections: std::sync::Arc<AtomicU64>,
}

impl Metrics {
    pub fn record(&self, op: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((op, status)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP walrus_requests_total S3 requests by operation and HTTP status.\n# TYPE walrus_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((op, status), n) in m.iter() {
                let _ = writeln!(
                    s,
                    "walrus_requests_total{{op=\"{op}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# TYPE walrus_received_bytes_total counter\nwalrus_received_bytes_total {}",
            self.bytes_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# TYPE walrus_sent_bytes_total counter\nwalrus_sent_bytes_total {}",
            self.bytes_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# TYPE walrus_open_connections gauge\nwalrus_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        s
    }
}
