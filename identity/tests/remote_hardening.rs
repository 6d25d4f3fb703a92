//! `RemoteIdentity` against a stand-in identity service that counts its calls:
//! made-up keys cost no call, a 404 that is not `NoSuchEntity` is an error,
//! concurrent lookups of one key share a call, and calls are bounded.
use bytes::Bytes;
use euca_aws::CredentialLookup;
use euca_identity::remote::{CacheTtl, MAX_CALLS};
use euca_identity::RemoteIdentity;
use http::{Response, StatusCode};
use http_body_util::Full;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy)]
enum Answer {
    /// 404 `{"error":{"code":"NoSuchEntity"}}`, as the identity service says it.
    NoSuchEntity,
    /// 404 with a proxy's HTML page.
    ProxyNotFound,
    /// 404 with the JSON error shape but another code.
    OtherNotFound,
    /// The key asked about, enabled.
    Key,
}

#[derive(Default)]
struct Counts {
    calls: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
}

struct Mock {
    url: String,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    async fn start(answer: Answer, delay: Duration) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let (stop, rx) = watch::channel(false);
        let cfg = euca_service::ServiceConfig {
            max_connections_per_source: 1024,
            ..Default::default()
        };
        let opts = euca_service::ListenOptions::new("mock", 1024, &cfg);
        let c = counts.clone();
        let task = tokio::spawn(euca_service::serve(
            listener,
            opts,
            move |req: http::Request<hyper::body::Incoming>, _| {
                let c = c.clone();
                async move {
                    c.calls.fetch_add(1, Ordering::SeqCst);
                    let now = c.now.fetch_add(1, Ordering::SeqCst) + 1;
                    c.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    c.now.fetch_sub(1, Ordering::SeqCst);
                    let key = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let (status, body) = match answer {
                        Answer::NoSuchEntity => (
                            StatusCode::NOT_FOUND,
                            r#"{"error":{"code":"NoSuchEntity","message":"no such active key"}}"#
                                .to_string(),
                        ),
                        Answer::ProxyNotFound => (
                            StatusCode::NOT_FOUND,
                            "<html><body>404 Not Found</body></html>".to_string(),
                        ),
                        Answer::OtherNotFound => (
                            StatusCode::NOT_FOUND,
                            r#"{"error":{"code":"NotFound","message":"Unknown resource"}}"#
                                .to_string(),
                        ),
                        Answer::Key => (
                            StatusCode::OK,
                            serde_json::json!({
                                "access_key_id": key, "secret_access_key": "secret",
                                "account": "user", "account_id": "123456789012",
                                "canonical_id": "c0ffee", "enabled": true,
                            })
                            .to_string(),
                        ),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r
                }
            },
            rx,
        ));
        Mock {
            url,
            counts,
            stop,
            task,
        }
    }

    fn calls(&self) -> usize {
        self.counts.calls.load(Ordering::SeqCst)
    }

    fn remote(&self, ttl: CacheTtl) -> Arc<RemoteIdentity> {
        Arc::new(RemoteIdentity::new(&self.url, "AKIESYSTEM", "secret", "us-east-1", ttl).unwrap())
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn long() -> CacheTtl {
    CacheTtl {
        positive: Duration::from_secs(3600),
        negative: Duration::from_secs(3600),
        ..CacheTtl::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_be_ours_cost_no_call() {
    let m = Mock::start(Answer::NoSuchEntity, Duration::ZERO).await;
    let r = m.remote(long());
    let huge = "A".repeat(60 << 10);
    let long_key = "B".repeat(129);
    for k in ["", "a/b?c d%", "AKIE-0123", "AKIE\u{e9}", &long_key, &huge] {
        assert!(
            matches!(r.lookup(k).await, Ok(None)),
            "{}",
            &k[..k.len().min(20)]
        );
    }
    assert_eq!(m.calls(), 0, "made-up keys reached the identity service");
    // A key that may be ours is asked about once, then its absence is cached.
    let k = "AKIE0123456789ABCDEF";
    assert!(matches!(r.lookup(k).await, Ok(None)));
    assert!(matches!(r.lookup(k).await, Ok(None)));
    assert_eq!(m.calls(), 1);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_absence_only_with_no_such_entity() {
    for answer in [Answer::ProxyNotFound, Answer::OtherNotFound] {
        let m = Mock::start(answer, Duration::ZERO).await;
        let r = m.remote(long());
        assert!(r.lookup("AKIEPROXIED").await.is_err());
        // Not cached: asked again.
        assert!(r.lookup("AKIEPROXIED").await.is_err());
        assert_eq!(m.calls(), 2);
        assert!(r.account("user1").await.is_err());
        m.stop().await;
    }
    let m = Mock::start(Answer::NoSuchEntity, Duration::ZERO).await;
    let r = m.remote(long());
    assert!(matches!(r.lookup("AKIEABSENT").await, Ok(None)));
    assert_eq!(r.account("nobody").await.unwrap(), None);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_key_share_one_call() {
    let m = Mock::start(Answer::Key, Duration::from_millis(300)).await;
    let r = m.remote(long());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.lookup("AKIESHARED").await })
        })
        .collect();
    for t in tasks {
        let c = t.await.unwrap().unwrap().expect("the key is found");
        assert_eq!(c.secret, "secret");
        assert_eq!(c.principal.access_key, "AKIESHARED");
    }
    assert_eq!(m.calls(), 1);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_the_identity_service_are_bounded() {
    let m = Mock::start(Answer::NoSuchEntity, Duration::from_millis(100)).await;
    let r = m.remote(long());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.lookup(&format!("AKIEMANY{i}")).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Ok(None)));
    }
    assert_eq!(m.calls(), 100);
    let most = m.counts.most.load(Ordering::SeqCst);
    assert!(most <= MAX_CALLS, "{most} calls at once");
    m.stop().await;
}
