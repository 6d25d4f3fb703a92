//! Walrus's own metric families (bytes, open connections), reported to the
//! process registry of `euca-service` at each scrape. Request counts and
//! latencies per S3 operation are the serve loop's `euca_http_*` families.
use euca_service::registry::{MetricSource, Scrape};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Metrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Kept by the accept loop (`euca_service::ListenOptions::open_gauge`).
    pub open_connections: Arc<AtomicU64>,
}

impl MetricSource for Metrics {
    fn report(&self, out: &mut Scrape) {
        out.counter(
            "walrus_received_bytes_total",
            "Object bytes received.",
            &[],
            self.bytes_in.load(Ordering::Relaxed),
        );
        out.counter(
            "walrus_sent_bytes_total",
            "Object bytes sent.",
            &[],
            self.bytes_out.load(Ordering::Relaxed),
        );
        out.gauge(
            "walrus_open_connections",
            "Open client connections.",
            &[],
            self.open_connections.load(Ordering::Relaxed) as i64,
        );
    }
}
