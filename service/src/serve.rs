//! The accept loop: a connection cap per listener, a cap per source address,
//! trusted proxies, and early close of idle keep-alive connections near the cap.
use crate::config::ServiceConfig;
use crate::proxy::{canonical_ip, client_from_forwarded, is_trusted, read_proxy_header};
use crate::tls::MaybeTls;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Notify, Semaphore};

/// Where connections come from: a TCP listener (every limit applies), or a Unix
/// socket (local clients: no per-source cap, no proxies).
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer address (`None`: a local socket).
    fn accept_conn(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
    /// Writes `bytes` without waiting (the refusal before a close), best effort.
    fn try_refuse(_stream: &Self::Stream, _bytes: &[u8]) {}
    /// Reads a PROXY protocol header from a trusted proxy's connection.
    fn proxy_header(
        _stream: &mut Self::Stream,
    ) -> impl Future<Output = Result<Option<SocketAddr>, crate::proxy::ProxyError>> + Send {
        async { Ok(None) }
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept_conn(&self) -> std::io::Result<(TcpStream, Option<SocketAddr>)> {
        let (s, a) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(a)))
    }
    fn try_refuse(stream: &TcpStream, bytes: &[u8]) {
        let _ = stream.try_write(bytes);
    }
    async fn proxy_header(
        stream: &mut TcpStream,
    ) -> Result<Option<SocketAddr>, crate::proxy::ProxyError> {
        read_proxy_header(stream).await
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_conn(&self) -> std::io::Result<(UnixStream, Option<SocketAddr>)> {
        Ok((self.accept().await?.0, None))
    }
}

/// The address a Unix-socket client is reported as.
const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// How one listener accepts and limits connections.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// For logs, e.g. `"walrus"`.
    pub name: &'static str,
    /// Open connections at most; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Open connections per client address at most (0: no limit); trusted
    /// proxies are exempt. At the cap the address's own longest-idle connection is
    /// closed to make room; if all of them have a request in flight, the new
    /// connection gets [`Self::refusal`] and is closed.
    pub max_per_source: usize,
    pub trusted_proxies: Arc<[IpNet]>,
    /// Connections from trusted proxies start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// A request head must arrive within this time (also bounds the PROXY header).
    pub header_timeout: Duration,
    /// Largest request head, in bytes (`None`: hyper's default).
    pub max_header_bytes: Option<usize>,
    /// Bytes written (best effort, never waited for) to a connection refused by
    /// the per-source cap before it is closed.
    pub refusal: Bytes,
    /// Kept equal to the number of open connections (a metrics gauge).
    pub open_gauge: Option<Arc<AtomicU64>>,
    /// TLS on TCP connections (after any PROXY header, within the header
    /// timeout); Unix-socket connections stay in clear.
    pub tls: Option<crate::tls::Tls>,
}

impl ListenOptions {
    pub fn new(name: &'static str, max_connections: usize, cfg: &ServiceConfig) -> Self {
        ListenOptions {
            name,
            max_connections: max_connections.max(1),
            max_per_source: cfg.max_connections_per_source,
            trusted_proxies: cfg.trusted_proxies.clone().into(),
            proxy_protocol: cfg.proxy_protocol,
            header_timeout: Duration::from_secs(30),
            max_header_bytes: None,
            refusal: Bytes::from_static(
                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: 38\r\n\r\ntoo many connections from this address\n",
            ),
            open_gauge: None,
            tls: cfg.tls.clone(),
        }
    }
}

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client: the TCP peer, or what a trusted proxy said (from
    /// `X-Forwarded-For` the port is 0).
    pub client: SocketAddr,
    /// The TCP peer (the proxy, when there is one).
    pub tcp: SocketAddr,
    /// Whether the connection is TLS (what `aws:SecureTransport` in a bucket policy asks).
    pub tls: bool,
}

struct Conn {
    /// Requests in flight (from the handler's call until the response body ends).
    busy: AtomicUsize,
    /// Microseconds since the listener started, at the last request start or end.
    last_active: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    /// The address it counts against (`None`: exempt).
    source: Mutex<Option<IpAddr>>,
}

#[derive(Default)]
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    per_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

struct Shared {
    opts: ListenOptions,
    table: Mutex<Table>,
    started: Instant,
    /// Wakes the drain at shutdown when the last connection ends.
    emptied: Notify,
    /// `euca_http_open_connections{service}`.
    open_metric: prometheus::IntGauge,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Registers a connection from `source` (`None`: exempt), or `None` if that
    /// source is at its cap.
    fn register(self: &Arc<Self>, source: Option<IpAddr>) -> Option<Registration> {
        let mut t = self.lock();
        if let Some(ip) = source {
            if !self.admit_source(&mut t, ip) {
                return None;
            }
        }
        t.next_id += 1;
        let id = t.next_id;
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_us()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            source: Mutex::new(source),
        });
        t.conns.insert(id, conn.clone());
        if let Some(g) = &self.opts.open_gauge {
            g.fetch_add(1, Ordering::Relaxed);
        }
        self.open_metric.inc();
        Some(Registration {
            shared: self.clone(),
            id,
            source,
            conn,
        })
    }

    /// Counts one more connection against `ip` if it is under its cap. At the cap,
    /// the address's own longest-idle connection is asked to close to make room
    /// (a client that leaks keep-alive connections still gets served); if all of
    /// them are busy, the new one is refused.
    fn admit_source(&self, t: &mut Table, ip: IpAddr) -> bool {
        let cap = self.opts.max_per_source;
        let n = t.per_source.get(&ip).copied().unwrap_or(0);
        if cap > 0 && n >= cap {
            let mine =
                |c: &&Arc<Conn>| *c.source.lock().unwrap_or_else(|e| e.into_inner()) == Some(ip);
            let closing = t
                .conns
                .values()
                .filter(mine)
                .filter(|c| c.closing.load(Ordering::Relaxed))
                .count();
            if n - closing >= cap {
                let victim = t
                    .conns
                    .values()
                    .filter(mine)
                    .filter(|c| {
                        !c.closing.load(Ordering::Relaxed) && c.busy.load(Ordering::Acquire) == 0
                    })
                    .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
                match victim {
                    Some(c) => {
                        c.closing.store(true, Ordering::Relaxed);
                        c.close.notify_one();
                    }
                    None => return false,
                }
            }
        }
        *t.per_source.entry(ip).or_default() += 1;
        true
    }

    /// Asks idle connections (no request in flight), longest idle first, to close
    /// until at most `target` stay open.
    fn reap_idle(&self, target: usize) {
        let t = self.lock();
        let open = t
            .conns
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .count();
        if open <= target {
            return;
        }
        // Each connection's last activity is read once: connections go on serving
        // (and updating it) while this runs, and a sort whose keys change under it
        // panics ("does not correctly implement a total order") — on the accept
        // loop, which took the whole process down under a keep-alive flood.
        let mut idle: Vec<(u64, &Arc<Conn>)> = t
            .conns
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed) && c.busy.load(Ordering::Acquire) == 0)
            .map(|c| (c.last_active.load(Ordering::Relaxed), c))
            .collect();
        idle.sort_unstable_by_key(|&(at, _)| at);
        let n = (open - target).min(idle.len());
        for (_, c) in idle.into_iter().take(n) {
            c.closing.store(true, Ordering::Relaxed);
            c.close.notify_one();
        }
        if n > 0 {
            tracing::debug!(
                listener = self.opts.name,
                closed = n,
                open,
                "closing idle connections near the cap"
            );
        }
    }

    fn close_all(&self) {
        for c in self.lock().conns.values() {
            c.closing.store(true, Ordering::Relaxed);
            c.close.notify_one();
        }
    }
}

/// A connection's place in the table; dropping it frees the place.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
    source: Option<IpAddr>,
    conn: Arc<Conn>,
}

impl Registration {
    /// Counts the connection against `ip` from now on (a client behind a PROXY
    /// header); false if `ip` is at its cap.
    fn set_source(&mut self, ip: IpAddr) -> bool {
        let mut t = self.shared.lock();
        if !self.shared.admit_source(&mut t, ip) {
            return false;
        }
        self.source = Some(ip);
        *self.conn.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.shared.lock();
        t.conns.remove(&self.id);
        if let Some(ip) = self.source {
            if let Some(n) = t.per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.per_source.remove(&ip);
                }
            }
        }
        let empty = t.conns.is_empty();
        drop(t);
        if let Some(g) = &self.shared.opts.open_gauge {
            g.fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.open_metric.dec();
        if empty {
            self.shared.emptied.notify_waiters();
        }
    }
}

/// Marks a request in flight until dropped (with the response body).
struct Busy {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Busy {
    fn new(conn: Arc<Conn>, shared: Arc<Shared>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.last_active.store(shared.now_us(), Ordering::Relaxed);
        Busy { conn, shared }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.shared.now_us(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it ends.
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves HTTP/1.1 on `listener` with `opts` until `shutdown` turns true; then
/// open connections finish their requests (up to 10 s) and close. This is the
/// one hyper accept loop of the project: every service's listeners (TCP, and the
/// image cache's control socket) come through it.
pub async fn serve<L, F, Fut, B>(
    listener: L,
    opts: ListenOptions,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Listener,
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = opts.max_connections.max(1);
    // Past 90 % of the cap, idle connections are closed down to 75 %.
    let high = max * 9 / 10;
    let low = max * 3 / 4;
    let open_metric = crate::registry::http()
        .open_connections
        .with_label_values(&[opts.name]);
    let shared = Arc::new(Shared {
        opts,
        table: Mutex::new(Table::default()),
        started: Instant::now(),
        emptied: Notify::new(),
        open_metric,
    });
    let permits = Arc::new(Semaphore::new(max));
    'accept: loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the cap: make room from idle connections, and let new clients
                // wait in the accept queue meanwhile. Connections busy now may be
                // idle soon, so look again every 250 ms while the cap holds.
                let mut again = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => break 'accept,
                        },
                        _ = stopped(&mut shutdown) => break 'accept,
                        _ = again.tick() => shared.reap_idle(low),
                    }
                }
            }
        };
        let (stream, tcp) = tokio::select! {
            r = listener.accept_conn() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = shared.opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // A local (Unix socket) client is exempt from the per-source rules.
        let local = tcp.is_none();
        let (tcp, source, from_proxy) = match tcp {
            Some(tcp) => {
                let ip = canonical_ip(tcp.ip());
                let from_proxy = is_trusted(ip, &shared.opts.trusted_proxies);
                (tcp, (!from_proxy).then_some(ip), from_proxy)
            }
            None => (LOCAL, None, false),
        };
        let Some(reg) = shared.register(source) else {
            refuse::<L>(&shared, &stream, tcp);
            continue;
        };
        if shared.open() > high {
            shared.reap_idle(low);
        }
        tokio::spawn(connection::<L, F, Fut, B>(
            shared.clone(),
            stream,
            tcp,
            from_proxy,
            local,
            reg,
            permit,
            handler.clone(),
            shutdown.clone(),
        ));
    }
    // Shut down: new connections are refused (the listener closes), idle ones
    // close now, busy ones after their request.
    drop(listener);
    shared.close_all();
    let drained = async {
        loop {
            let wait = shared.emptied.notified();
            if shared.open() == 0 {
                return;
            }
            wait.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .is_err()
    {
        tracing::warn!(
            listener = shared.opts.name,
            "connections still open after 10 s; closing"
        );
    }
}

/// For a request with `Expect: 100-continue`, whether its body is empty (`None`:
/// no such expectation). Its answer closes the connection when it may have gone
/// out before the body did: always for an empty body (hyper sends no `100 Continue`
/// for one, and botocore, waiting for it, misreads the next answer), and for any
/// answer but a success (a refusal comes before the body is read; the client then
/// keeps the body back, and hyper, draining it, would take the first bytes of the
/// client's next request for it — `GET` read as `T`). A success read the body.
fn may_withhold_body(req: &Request<Incoming>) -> Option<bool> {
    let expects = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    expects.then(|| req.body().is_end_stream())
}

fn refuse<L: Listener>(shared: &Shared, stream: &L::Stream, tcp: SocketAddr) {
    tracing::debug!(listener = shared.opts.name, peer = %tcp, "per-source connection cap reached; refused");
    L::try_refuse(stream, &shared.opts.refusal);
}

#[allow(clippy::too_many_arguments)]
async fn connection<L, F, Fut, B>(
    shared: Arc<Shared>,
    mut stream: L::Stream,
    tcp: SocketAddr,
    from_proxy: bool,
    local: bool,
    mut reg: Registration,
    permit: tokio::sync::OwnedSemaphorePermit,
    handler: F,
    mut stop: watch::Receiver<bool>,
) where
    L: Listener,
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let opts = &shared.opts;
    // The client behind a PROXY header counts against its own address.
    let mut proxied: Option<SocketAddr> = None;
    if from_proxy && opts.proxy_protocol {
        match tokio::time::timeout(opts.header_timeout, L::proxy_header(&mut stream)).await {
            Ok(Ok(Some(client))) => {
                if !reg.set_source(canonical_ip(client.ip())) {
                    refuse::<L>(&shared, &stream, client);
                    return;
                }
                proxied = Some(client);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %tcp, error = %e, "bad PROXY header; closing");
                return;
            }
            Err(_) => return,
        }
    }
    let stream = match &opts.tls {
        Some(tls) if !local => {
            match tokio::time::timeout(opts.header_timeout, tls.accept(stream)).await {
                Ok(Ok(s)) => MaybeTls::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(listener = opts.name, peer = %tcp, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
        _ => MaybeTls::Plain(stream),
    };
    let tls = matches!(stream, MaybeTls::Tls(_));
    let conn = reg.conn.clone();
    let svc = {
        let shared = shared.clone();
        let conn = conn.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let client = match proxied {
                Some(c) => c,
                None if from_proxy => SocketAddr::new(
                    client_from_forwarded(req.headers(), tcp.ip(), &shared.opts.trusted_proxies),
                    0,
                ),
                None => tcp,
            };
            let busy = Busy::new(conn.clone(), shared.clone());
            let withheld = may_withhold_body(&req);
            let fut = handler(req, Peer { client, tcp, tls });
            async move {
                let mut resp = fut.await;
                if withheld.is_some_and(|empty| empty || !resp.status().is_success()) {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(resp.map(|b| Tracked {
                    inner: b,
                    _busy: busy,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    if let Some(n) = opts.max_header_bytes {
        builder.max_buf_size(n.max(8192));
    }
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = opts.name, peer = %tcp, error = %e, "connection ended with error");
                }
                break;
            }
            _ = conn.close.notified(), if !closing => {
                // Asked to make room: with no request in flight (idle, or still
                // sending a request head) the connection goes now, so a client
                // trickling header bytes cannot keep its place until the header
                // timeout; a request in flight is answered first.
                if conn.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopped(&mut stop), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    drop(reg);
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reap_idle while every connection's activity time keeps changing (as when
    /// they are serving): it must neither panic nor close more than asked.
    #[test]
    fn reap_idle_under_changing_activity() {
        let cfg = ServiceConfig::default();
        let shared = Arc::new(Shared {
            opts: ListenOptions::new("test", 10_000, &cfg),
            table: Mutex::new(Table::default()),
            started: Instant::now(),
            emptied: Notify::new(),
            open_metric: crate::registry::http()
                .open_connections
                .with_label_values(&["test"]),
        });
        let regs: Vec<Registration> = (0..2000)
            .map(|_| shared.register(None).expect("no per-source cap"))
            .collect();
        let conns: Vec<Arc<Conn>> = regs.iter().map(|r| r.conn.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));
        let churn = {
            let (conns, stop, running) = (conns.clone(), stop.clone(), running.clone());
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for c in &conns {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        c.last_active.store(x >> 40, Ordering::Relaxed);
                    }
                    running.store(true, Ordering::Relaxed);
                }
            })
        };
        while !running.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        for round in 0..40 {
            for c in &conns {
                c.closing.store(false, Ordering::Relaxed);
            }
            let target = 1000 + round * 20;
            shared.reap_idle(target);
            let open = conns
                .iter()
                .filter(|c| !c.closing.load(Ordering::Relaxed))
                .count();
            assert_eq!(open, target);
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("churn thread");
    }
}
