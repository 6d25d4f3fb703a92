//! NBD server (fixed newstyle, structured replies, `base:allocation`).
//!
//! The server serves the exports of an [`ExportTable`]. Each export is reachable
//! only from its `allowed_peer` (or from anyone when that is `None`); to every other
//! client it does not exist (`NBD_REP_ERR_UNKNOWN`, absent from `NBD_OPT_LIST`).
//!
//! Per connection: the handshake runs on the stream, then a reader parses requests
//! and runs each in its own task (at most [`NbdServer::max_in_flight`] at once and a
//! bounded number of payload bytes), and one writer task serialises reply frames,
//! so replies can go out of order while every frame stays whole. Connection code is
//! generic over the stream, so the same code runs on TCP, Unix sockets and TLS.
//!
//! Memory: every READ reply and WRITE payload is paid for before its buffer is
//! allocated, from the connection's bound ([`NbdServer::max_in_flight_bytes`]) and
//! from one budget shared by all connections ([`NbdServer::memory_budget`]). The
//! bytes go back when the reply is on the wire or the write is applied. When
//! either is spent, the reader stops reading requests until bytes come back, so
//! clients are slowed through TCP, never refused. Held bytes come back without
//! any reader's help (the writer task sends the reply, the request's task applies
//! the write), and every request costs at most the whole budget (which is at
//! least the 32 MiB maximum request), so connections holding budget can always
//! finish. A client that stops reading its replies would keep its share
//! forever: a connection whose replies make no progress for
//! [`NbdServer::reply_timeout`] is closed, which frees it.
//!
//! TLS (NBD STARTTLS with X.509 certificates, see [`TlsConfig`]) is enabled with
//! [`NbdServer::tls`]; the [`TlsMode`] says which clients must use it. A client
//! that must use TLS gets `NBD_REP_ERR_TLS_REQD` for every option but STARTTLS
//! and ABORT (and a hard disconnect for EXPORT_NAME) until it has started TLS;
//! after STARTTLS the TLS handshake runs on the same socket, negotiation starts
//! over inside TLS, and transmission stays in TLS. The per-export peer address
//! restriction applies the same with or without TLS.

mod handshake;
pub mod proto;
mod tls;
mod transmission;

pub use tls::{TlsConfig, TlsMode};

/// The pure decoders of what a client sends (option payloads; request headers are
/// [`proto::Request::decode`]), for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod decode {
    pub use super::handshake::{parse_info_request, parse_meta_request};
}

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::device::BlockDevice;

/// Errors that end a connection. Request-level failures are NBD error replies and
/// never show up here.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("client sent unknown or unoffered handshake flags {0:#x}")]
    BadClientFlags(u32),
    #[error("bad option magic {0:#x}")]
    BadOptionMagic(u64),
    #[error("bad request magic {0:#x}")]
    BadRequestMagic(u32),
    #[error("NBD_OPT_EXPORT_NAME for an export this client cannot open")]
    ExportNameRefused,
    #[error("option payload of {0} bytes is too large")]
    OptionTooLarge(u32),
    #[error("write request of {0} bytes exceeds the maximum payload")]
    OversizedWrite(u32),
    #[error("handshake not finished in time")]
    HandshakeTimeout,
    #[error("client skipped STARTTLS, which this server requires of it")]
    TlsRequired,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// One exported volume.
pub struct Export {
    pub device: Arc<dyn BlockDevice>,
    /// The only client address allowed to see or open this export; `None` = any.
    /// Unix-socket clients have no address and can open only `None` exports.
    pub allowed_peer: Option<IpAddr>,
    pub read_only: bool,
    pub description: String,
}

pub(crate) struct ExportEntry {
    pub(crate) export: Export,
    /// Flipped to `true` when the export is removed or replaced. Every connection in
    /// transmission on this export holds a receiver, so `closed()` on the sender
    /// tells when all of them are gone.
    close: watch::Sender<bool>,
}

impl ExportEntry {
    pub(crate) fn visible_to(&self, peer: Option<IpAddr>) -> bool {
        match self.export.allowed_peer {
            None => true,
            Some(allowed) => peer.is_some_and(|p| p.to_canonical() == allowed.to_canonical()),
        }
    }
}

/// The set of exports a server offers; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ExportTable {
    inner: Arc<Mutex<HashMap<String, Arc<ExportEntry>>>>,
}

impl ExportTable {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<ExportEntry>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an export. Replacing an existing name makes its open connections close
    /// (after their in-flight requests) without waiting; use [`ExportTable::remove`]
    /// first to wait for that.
    pub fn insert(&self, name: String, export: Export) {
        let (close, _) = watch::channel(false);
        let entry = Arc::new(ExportEntry { export, close });
        if let Some(old) = self.map().insert(name.clone(), entry) {
            tracing::warn!(export = %name, "export replaced; closing its connections");
            old.close.send_replace(true);
        }
    }

    /// Removes the export so no new client can open it, waits for its in-flight
    /// requests to finish (so acknowledged writes are done), then closes every
    /// connection that had it open and flushes the device. Returns false if there
    /// was no such export.
    pub async fn remove(&self, name: &str) -> bool {
        let Some(entry) = self.map().remove(name) else {
            return false;
        };
        entry.close.send_replace(true);
        // Resolves once every connection holding a receiver has drained and closed.
        entry.close.closed().await;
        if let Err(e) = entry.export.device.flush().await {
            tracing::warn!(export = %name, error = %e, "flush after export removal failed");
        }
        tracing::info!(export = %name, "export removed");
        true
    }

    /// Names of all exports, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map().keys().cloned().collect();
        v.sort();
        v
    }

    /// Connections currently in transmission on `name` (0 if there is no such export).
    pub fn connections(&self, name: &str) -> usize {
        self.map().get(name).map_or(0, |e| e.close.receiver_count())
    }

    /// The export `name` if `peer` may see it.
    pub(crate) fn lookup(&self, name: &[u8], peer: Option<IpAddr>) -> Option<Arc<ExportEntry>> {
        let name = std::str::from_utf8(name).ok()?;
        self.map().get(name).filter(|e| e.visible_to(peer)).cloned()
    }

    /// Like `lookup`, and registers the caller as a connection on the export (under
    /// the same lock, so `remove` cannot miss it).
    pub(crate) fn open(
        &self,
        name: &[u8],
        peer: Option<IpAddr>,
    ) -> Option<(Arc<ExportEntry>, watch::Receiver<bool>)> {
        let name = std::str::from_utf8(name).ok()?;
        let map = self.map();
        let entry = map.get(name).filter(|e| e.visible_to(peer))?;
        let rx = entry.close.subscribe();
        Some((entry.clone(), rx))
    }

    /// (name, description) of every export `peer` may see, sorted by name.
    pub(crate) fn list_for(&self, peer: Option<IpAddr>) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .map()
            .iter()
            .filter(|(_, e)| e.visible_to(peer))
            .map(|(n, e)| (n.clone(), e.export.description.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Largest budget (a semaphore holds at most `usize::MAX >> 3` permits; one per byte).
const MAX_BUDGET: usize = u32::MAX as usize;

/// Default of [`NbdServer::memory_budget`]: eight 32 MiB requests in flight
/// server-wide, enough to keep a few nodes streaming on a small host.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// Tunables shared by every connection of a server.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_connections: usize,
    /// Payload bytes all connections together may hold (see the module docs).
    pub(crate) memory_budget: usize,
    /// How long a reply may make no progress before the connection is closed.
    pub(crate) reply_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_in_flight: 64,
            max_in_flight_bytes: 256 << 20,
            handshake_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1024,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            reply_timeout: Duration::from_secs(60),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) exports: ExportTable,
    pub(crate) cfg: Config,
    /// `None`: no TLS (STARTTLS gets `NBD_REP_ERR_POLICY`).
    pub(crate) tls: Option<(TlsConfig, TlsMode)>,
    /// The server-wide payload budget, one permit per byte.
    pub(crate) memory: Arc<Semaphore>,
}

/// The NBD server. Build with [`NbdServer::new`] and the setters, then run
/// [`NbdServer::serve`] (TCP) or [`NbdServer::serve_unix`].
pub struct NbdServer {
    exports: ExportTable,
    cfg: Config,
    tls: Option<(TlsConfig, TlsMode)>,
}

impl NbdServer {
    pub fn new(exports: ExportTable) -> Self {
        NbdServer {
            exports,
            cfg: Config::default(),
            tls: None,
        }
    }

    /// Offers NBD STARTTLS with `config`; `mode` says which clients must use it
    /// ([`TlsMode::Off`] turns TLS off again). Without this call the server
    /// has no TLS.
    pub fn tls(mut self, config: TlsConfig, mode: TlsMode) -> Self {
        self.tls = (mode != TlsMode::Off).then_some((config, mode));
        self
    }

    /// Requests a connection runs concurrently (default 64).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.cfg.max_in_flight = n.clamp(1, 4096);
        self
    }

    /// Payload bytes (write data received, read data not yet sent) a connection
    /// may hold at once (default 256 MiB; never below the 32 MiB maximum request).
    pub fn max_in_flight_bytes(mut self, n: usize) -> Self {
        self.cfg.max_in_flight_bytes = n.clamp(proto::MAX_PAYLOAD as usize, MAX_BUDGET);
        self
    }

    /// Payload bytes (READ data not yet sent, WRITE data not yet applied) all
    /// connections together may hold (default [`DEFAULT_MEMORY_BUDGET`]; never
    /// below the 32 MiB maximum request, so any single request fits). When it is
    /// spent, connections stop reading requests until replies have gone out.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.cfg.memory_budget = bytes.clamp(proto::MAX_PAYLOAD as usize, MAX_BUDGET);
        self
    }

    /// How long the server waits for a client to take any bytes of a pending
    /// reply before it closes the connection (default 60 s); this keeps a client
    /// that stopped reading from holding its share of the memory budget.
    pub fn reply_timeout(mut self, d: Duration) -> Self {
        self.cfg.reply_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// Time a client has to finish option negotiation (default 30 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.cfg.handshake_timeout = d;
        self
    }

    /// On shutdown or export removal: how long a connection may take to send its
    /// last replies before it is dropped (default 30 s). In-flight device
    /// operations are always waited for.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.cfg.shutdown_grace = d;
        self
    }

    /// Concurrent connections (default 1024); further clients are dropped at accept.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.cfg.max_connections = n.max(1);
        self
    }

    /// Accept loop; returns when `shutdown` resolves, after in-flight requests
    /// finished and connections closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        self.run(TcpAcceptor(listener), shutdown).await
    }

    /// Same as [`NbdServer::serve`] on a Unix socket. Such clients have no IP
    /// address, so they can only open exports whose `allowed_peer` is `None`.
    pub async fn serve_unix(
        self,
        listener: tokio::net::UnixListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        self.run(UnixAcceptor(listener), shutdown).await
    }

    async fn run<A: Acceptor>(
        self,
        acceptor: A,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let memory = Arc::new(Semaphore::new(self.cfg.memory_budget));
        let shared = Arc::new(Shared {
            exports: self.exports,
            cfg: self.cfg,
            tls: self.tls,
            memory,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(shared.cfg.max_connections));
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = acceptor.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(?peer, "NBD connection limit reached; dropping client");
                            continue;
                        };
                        let shared = shared.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move {
                            let _permit = permit;
                            handle_connection(stream, peer, shared, stop).await;
                        });
                    }
                    Err(e) => {
                        // EMFILE, ECONNABORTED...: keep serving.
                        tracing::warn!(error = %e, "NBD accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(acceptor);
        stop_tx.send_replace(true);
        // Connections wait for their in-flight device operations themselves and
        // bound the time spent sending final replies, so this normally ends
        // quickly; the outer limit only guards against a stuck device.
        let drain = async { while conns.join_next().await.is_some() {} };
        let limit = shared.cfg.shutdown_grace.saturating_mul(2);
        if tokio::time::timeout(limit, drain).await.is_err() {
            tracing::warn!("NBD connections still busy after shutdown grace; aborting them");
            conns.shutdown().await;
        }
        Ok(())
    }
}

async fn handle_connection<S>(
    stream: S,
    peer: Option<IpAddr>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(?peer, "NBD client connected");
    let mut stop_hs = stop.clone();
    let negotiated = tokio::select! {
        r = tokio::time::timeout(
            shared.cfg.handshake_timeout,
            negotiate(stream, &shared, peer),
        ) => match r {
            Ok(r) => r,
            Err(_) => Err(NbdError::HandshakeTimeout),
        },
        _ = wait_true(&mut stop_hs) => {
            tracing::debug!(?peer, "server shutting down during NBD handshake");
            return;
        }
    };
    let (session, negotiated) = match negotiated {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::debug!(?peer, "NBD client left during negotiation");
            return;
        }
        Err(e) => {
            tracing::info!(?peer, error = %e, "NBD handshake failed");
            return;
        }
    };
    let export = negotiated.name.clone();
    let result = match session {
        Session::Plain(s) => {
            tracing::info!(?peer, %export, tls = false, "NBD client opened export");
            transmission::run(s, negotiated, &shared, stop).await
        }
        Session::Tls(s) => {
            tracing::info!(?peer, %export, tls = true, "NBD client opened export");
            transmission::run(s, negotiated, &shared, stop).await
        }
    };
    match result {
        Ok(()) => tracing::info!(?peer, %export, "NBD client closed"),
        Err(e) => tracing::warn!(?peer, %export, error = %e, "NBD connection ended"),
    }
}

/// The stream transmission runs on.
enum Session<S> {
    Plain(S),
    Tls(tokio_openssl::SslStream<S>),
}

/// Greeting, option haggling and, if the client asks, STARTTLS followed by a
/// second round of haggling inside TLS. `Ok(None)`: the client left without
/// choosing an export.
async fn negotiate<S>(
    mut stream: S,
    shared: &Shared,
    peer: Option<IpAddr>,
) -> Result<Option<(Session<S>, handshake::Negotiated)>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use handshake::{Step, TlsPhase};
    let Some(client) = handshake::greet(&mut stream).await? else {
        return Ok(None);
    };
    let phase = match &shared.tls {
        None => TlsPhase::Unavailable,
        Some((_, mode)) if mode.requires_tls(peer) => {
            if !client.fixed_newstyle {
                // Such a client can't start TLS (the spec keeps it in NOTLS
                // mode) and may only send EXPORT_NAME, which would be refused.
                return Err(NbdError::TlsRequired);
            }
            TlsPhase::Forced
        }
        Some(_) if client.fixed_newstyle => TlsPhase::Optional,
        Some(_) => TlsPhase::Unavailable,
    };
    let exports = &shared.exports;
    match handshake::options(&mut stream, exports, peer, client.no_zeroes, phase).await? {
        Step::Transmit(n) => Ok(Some((Session::Plain(stream), n))),
        Step::Closed => Ok(None),
        Step::StartTls => {
            let Some((config, _)) = &shared.tls else {
                // Not reached: STARTTLS is acknowledged only when TLS is configured.
                return Err(NbdError::Tls("TLS is not configured".into()));
            };
            let mut tls = config.accept(stream).await?;
            tracing::debug!(?peer, version = tls.ssl().version_str(), "NBD TLS started");
            let step =
                handshake::options(&mut tls, exports, peer, client.no_zeroes, TlsPhase::Active)
                    .await?;
            match step {
                Step::Transmit(n) => Ok(Some((Session::Tls(tls), n))),
                Step::Closed | Step::StartTls => {
                    // Best effort close_notify; the client is leaving anyway.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    Ok(None)
                }
            }
        }
    }
}

/// Resolves when the watch holds `true`, or when its sender is gone.
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Maps a device error to the NBD error value sent to the client.
pub(crate) fn nbd_errno(e: &io::Error) -> u32 {
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EPERM | libc::EACCES | libc::EROFS => proto::EPERM,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => proto::ENOSPC,
            libc::EINVAL => proto::EINVAL,
            libc::ENOMEM => proto::ENOMEM,
            libc::EOVERFLOW => proto::EOVERFLOW,
            libc::ESHUTDOWN => proto::ESHUTDOWN,
            _ => proto::EIO,
        };
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => proto::EPERM,
        io::ErrorKind::StorageFull => proto::ENOSPC,
        io::ErrorKind::InvalidInput => proto::EINVAL,
        io::ErrorKind::OutOfMemory => proto::ENOMEM,
        _ => proto::EIO,
    }
}

trait Acceptor: Send {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Option<IpAddr>)>> + Send;
}

struct TcpAcceptor(tokio::net::TcpListener);

impl Acceptor for TcpAcceptor {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, Option<IpAddr>)> {
        let (stream, addr) = self.0.accept().await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        set_keepalive(&stream);
        Ok((stream, Some(addr.ip().to_canonical())))
    }
}

struct UnixAcceptor(tokio::net::UnixListener);

impl Acceptor for UnixAcceptor {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Stream, Option<IpAddr>)> {
        let (stream, _) = self.0.accept().await?;
        Ok((stream, None))
    }
}

/// TCP keepalive (idle 60 s, then 6 probes 10 s apart) so that connections to
/// clients that vanished without a FIN are eventually closed.
fn set_keepalive(stream: &tokio::net::TcpStream) {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
}
