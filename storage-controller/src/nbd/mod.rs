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
//! generic over the stream, so the same code runs on TCP, Unix sockets and TLS (a
//! plain socket's two sides are watched apart in transmission, `socket.rs`).
//!
//! Memory: every READ reply and WRITE payload is paid for before its buffer is
//! allocated (its length rounded up to the buffer pool's size class, which is what
//! a reused buffer may hold resident), from the connection's bound
//! ([`NbdServer::max_in_flight_bytes`]) and from one budget shared by all
//! connections ([`NbdServer::memory_budget`]). The
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

mod burst;
mod error;
mod handshake;
pub mod proto;
mod shared;
mod socket;
mod tls;
mod transmission;

pub use crate::export::{Export, ExportTable};
pub use error::NbdError;
pub use shared::DEFAULT_MEMORY_BUDGET;
pub use tls::{TlsConfig, TlsMode};

/// The pure decoders of what a client sends (option payloads; request headers are
/// [`proto::Request::decode`]), for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod decode {
    pub use super::handshake::{parse_info_request, parse_meta_request};
}

use futures::future::{BoxFuture, FutureExt};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

use crate::listen::{accept_loop, Acceptor, Caps, TcpAcceptor, UnixAcceptor};
use shared::{wait_true, Config, Shared};

/// Largest budget (a semaphore holds at most `usize::MAX >> 3` permits; one per byte).
const MAX_BUDGET: usize = u32::MAX as usize;

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

    /// Concurrent connections from one address (default 64; Unix-socket clients
    /// count only in [`NbdServer::max_connections`]).
    pub fn max_connections_per_source(mut self, n: usize) -> Self {
        self.cfg.max_per_source = n.max(1);
        self
    }

    /// Accept loop; returns when `shutdown` resolves, after in-flight requests
    /// finished and connections closed. (Boxed, `shutdown` too: the server is
    /// compiled here once, not for every caller's future; see
    /// `euca_service::serve_api`.)
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<()>> {
        self.serve_tcp(listener, shutdown.boxed())
    }

    fn serve_tcp(
        self,
        listener: tokio::net::TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, io::Result<()>> {
        async move {
            self.run(TcpAcceptor(listener), shutdown).await;
            Ok(())
        }
        .boxed()
    }

    /// Same as [`NbdServer::serve`] on a Unix socket. Such clients have no IP
    /// address, so they can only open exports whose `allowed_peer` is `None`.
    pub fn serve_unix(
        self,
        listener: tokio::net::UnixListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<()>> {
        self.serve_on_unix(listener, shutdown.boxed())
    }

    fn serve_on_unix(
        self,
        listener: tokio::net::UnixListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, io::Result<()>> {
        async move {
            self.run(UnixAcceptor(listener), shutdown).await;
            Ok(())
        }
        .boxed()
    }

    async fn run<A: Acceptor>(self, acceptor: A, shutdown: BoxFuture<'static, ()>) {
        let memory = Arc::new(Semaphore::new(self.cfg.memory_budget));
        let shared = Arc::new(Shared {
            exports: self.exports,
            cfg: self.cfg,
            tls: self.tls,
            memory,
            bursts: Arc::new(Semaphore::new(shared::MAX_BURSTS)),
            transmitting: Default::default(),
        });
        let caps = Caps {
            total: shared.cfg.max_connections,
            per_source: shared.cfg.max_per_source,
        };
        // Connections wait for their in-flight device operations themselves and
        // bound the time spent sending final replies, so the drain normally ends
        // quickly; the outer limit only guards against a stuck device.
        let drain = shared.cfg.shutdown_grace.saturating_mul(2);
        accept_loop(
            "NBD",
            acceptor,
            shutdown,
            caps,
            drain,
            |stream, peer, stop| handle_connection(stream, peer, shared.clone(), stop),
        )
        .await;
    }
}

async fn handle_connection<S>(
    stream: S,
    peer: Option<IpAddr>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::os::fd::AsFd + 'static,
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
            match socket::split(s) {
                Ok((rd, wr, fd)) => {
                    transmission::run(rd, wr, Some(fd), negotiated, &shared, stop).await
                }
                Err((s, e)) => {
                    // Served all the same, without bursts.
                    tracing::debug!(?peer, error = %e, "no write bursts: socket not split");
                    let (rd, wr) = tokio::io::split(s);
                    transmission::run(rd, wr, None, negotiated, &shared, stop).await
                }
            }
        }
        Session::Tls(s) => {
            tracing::info!(?peer, %export, tls = true, "NBD client opened export");
            let (rd, wr) = tokio::io::split(s);
            transmission::run(rd, wr, None, negotiated, &shared, stop).await
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
