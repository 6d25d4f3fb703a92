//! The process's one metrics registry (the `prometheus` crate), served at
//! `/_metrics` by every listener.
//!
//! - Request families, kept by the serve loop for every API:
//!   `euca_http_requests_total{service,endpoint,status}`,
//!   `euca_http_request_duration_seconds{service,endpoint}`,
//!   `euca_http_request_errors_total{service,endpoint,code}`,
//!   `euca_http_open_connections{service}`.
//! - Service families (Walrus bytes, SC volumes, cache counters): each service
//!   registers a [`MetricSource`] that reports its current values at scrape time.
//!   Several instances in one process (tests, `euca up`) add up per label set.
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The request families every service shares.
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub errors: IntCounterVec,
    pub open_connections: IntGaugeVec,
}

struct Global {
    registry: Registry,
    http: HttpMetrics,
    sources: Mutex<Vec<Weak<dyn MetricSource>>>,
}

fn global() -> &'static Global {
    static G: OnceLock<Global> = OnceLock::new();
    G.get_or_init(|| {
        let registry = Registry::new();
        // Names and labels are constants: registration cannot fail.
        let requests = IntCounterVec::new(
            Opts::new(
                "euca_http_requests_total",
                "HTTP requests by service, endpoint and status.",
            ),
            &["service", "endpoint", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "euca_http_request_duration_seconds",
                "Time from the request head to the response head, by service and endpoint.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["service", "endpoint"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "euca_http_request_errors_total",
                "Error responses by service, endpoint and error code.",
            ),
            &["service", "endpoint", "code"],
        )
        .expect("valid metric");
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "euca_http_open_connections",
                "Open client connections by service.",
            ),
            &["service"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(open_connections.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Global {
            registry,
            http: HttpMetrics {
                requests,
                duration,
                errors,
                open_connections,
            },
            sources: Mutex::new(Vec::new()),
        }
    })
}

/// The request families (kept by the serve loop).
pub fn http() -> &'static HttpMetrics {
    &global().http
}

/// The process registry, for families a service registers itself.
pub fn registry() -> &'static Registry {
    &global().registry
}

/// A service's own values, read at each scrape.
pub trait MetricSource: Send + Sync + 'static {
    fn report(&self, out: &mut Scrape);
}

/// Adds a source for as long as it lives (it is held weakly).
pub fn add_source<S: MetricSource>(source: &Arc<S>) {
    let weak: Weak<dyn MetricSource> = Arc::downgrade(source) as Weak<dyn MetricSource>;
    let mut s = global().sources.lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|w| w.strong_count() > 0);
    s.push(weak);
}

/// Values reported by the sources during one scrape.
pub struct Scrape {
    registry: Registry,
    counters: HashMap<&'static str, IntCounterVec>,
    gauges: HashMap<&'static str, IntGaugeVec>,
}

impl Scrape {
    fn new() -> Self {
        Scrape {
            registry: Registry::new(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
        }
    }

    /// Adds `v` to counter `name` with these labels (label names must be the same
    /// on every call for one name).
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: u64) {
        let reg = &self.registry;
        let c = self.counters.entry(name).or_insert_with(|| {
            let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            let c = IntCounterVec::new(Opts::new(name, help), &names).expect("valid metric");
            let _ = reg.register(Box::new(c.clone()));
            c
        });
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        if let Ok(c) = c.get_metric_with_label_values(&values) {
            c.inc_by(v);
        }
    }

    /// Adds `v` to gauge `name` with these labels.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: i64) {
        let reg = &self.registry;
        let g = self.gauges.entry(name).or_insert_with(|| {
            let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            let g = IntGaugeVec::new(Opts::new(name, help), &names).expect("valid metric");
            let _ = reg.register(Box::new(g.clone()));
            g
        });
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        if let Ok(g) = g.get_metric_with_label_values(&values) {
            g.add(v);
        }
    }
}

/// The Prometheus text exposition of the whole process.
pub fn render() -> String {
    let g = global();
    let sources: Vec<Arc<dyn MetricSource>> = {
        let mut s = g.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|w| w.strong_count() > 0);
        s.iter().filter_map(|w| w.upgrade()).collect()
    };
    let mut scrape = Scrape::new();
    for s in &sources {
        s.report(&mut scrape);
    }
    let mut families = g.registry.gather();
    families.extend(scrape.registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two;
    impl MetricSource for Two {
        fn report(&self, out: &mut Scrape) {
            out.counter("test_src_bytes_total", "bytes", &[], 5);
            out.gauge("test_src_items", "items", &[("state", "x")], 2);
        }
    }

    #[test]
    fn sources_add_up_and_go_away() {
        let a = Arc::new(Two);
        let b = Arc::new(Two);
        add_source(&a);
        add_source(&b);
        http()
            .requests
            .with_label_values(&["t", "GetThing", "200"])
            .inc();
        let text = render();
        assert!(text.contains("test_src_bytes_total 10\n"), "{text}");
        assert!(text.contains("test_src_items{state=\"x\"} 4\n"), "{text}");
        assert!(
            text.contains("# TYPE test_src_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "euca_http_requests_total{endpoint=\"GetThing\",service=\"t\",status=\"200\"} 1"
            ),
            "{text}"
        );
        drop(b);
        assert!(render().contains("test_src_bytes_total 5\n"));
    }
}
