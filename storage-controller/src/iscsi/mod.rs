//! iSCSI target (RFC 7143) on the same exports and device layer as the NBD server.
//!
//! Every export of the [`ExportTable`] is a target named `<iqn prefix>:<export
//! name>` with one logical unit, LUN 0. As with NBD, a target exists only for its
//! `allowed_peer`: any other initiator gets the same "not found" at login as for a
//! name that does not exist, and discovery (SendTargets) lists only what the asking
//! address may open. An export with [`Chap`] credentials requires CHAP (MD5; mutual
//! CHAP when the export has target credentials) before the operational stage.
//!
//! Negotiated: no digests, one connection per session, error recovery level 0, one
//! outstanding R2T per task, immediate and unsolicited data as the initiator
//! offers. The SCSI commands are in [`scsi`]; the session logic in `conn`.
//!
//! Bounds a stranger meets: connections per listener and per source address,
//! a login that must finish within [`IscsiServer::login_timeout`], text limited
//! to 64 KiB, data segments limited to what we declared; an idle session is
//! pinged (NOP-In) and closed if the initiator does not answer.

mod chap;
mod conn;
mod error;
pub mod pdu;
pub mod scsi;
mod shared;
pub mod text;

pub use crate::export::Chap;
pub use error::IscsiError;
use shared::{Config, Shared};

use futures::future::{BoxFuture, FutureExt};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::export::ExportTable;
use crate::listen::{accept_loop, Caps, TcpAcceptor};

/// The IQN prefix targets are named under unless configured.
pub const DEFAULT_IQN_PREFIX: &str = "iqn.2026-12.sc.euca";

/// The iSCSI server. Build with [`IscsiServer::new`] and the setters, then run
/// [`IscsiServer::serve`].
pub struct IscsiServer {
    exports: ExportTable,
    cfg: Config,
}

impl IscsiServer {
    pub fn new(exports: ExportTable) -> Self {
        IscsiServer {
            exports,
            cfg: Config {
                iqn_prefix: DEFAULT_IQN_PREFIX.into(),
                max_connections: 1024,
                max_per_source: 64,
                login_timeout: Duration::from_secs(15),
                nop_interval: Duration::from_secs(30),
                pdu_timeout: Duration::from_secs(60),
            },
        }
    }

    /// Targets are `<prefix>:<export name>`.
    pub fn iqn_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cfg.iqn_prefix = prefix.into();
        self
    }

    pub fn max_connections(mut self, n: usize) -> Self {
        self.cfg.max_connections = n.max(1);
        self
    }

    pub fn max_connections_per_source(mut self, n: usize) -> Self {
        self.cfg.max_per_source = n.max(1);
        self
    }

    pub fn login_timeout(mut self, d: Duration) -> Self {
        self.cfg.login_timeout = d;
        self
    }

    /// Idle time before a NOP-In ping, and again before giving up on its answer.
    pub fn nop_interval(mut self, d: Duration) -> Self {
        self.cfg.nop_interval = d;
        self
    }

    /// Accept loop; returns when `shutdown` resolves, after every connection ended
    /// (each finishes the command it is running). (Boxed, `shutdown` too: compiled
    /// here once, not for every caller's future; see `euca_service::serve_api`.)
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<()>> {
        self.serving(listener, shutdown.boxed())
    }

    fn serving(
        self,
        listener: tokio::net::TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, io::Result<()>> {
        self.accepting(listener, shutdown).boxed()
    }

    async fn accepting(
        self,
        listener: tokio::net::TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared {
            exports: self.exports,
            cfg: self.cfg,
            compare_and_write: tokio::sync::Mutex::new(()),
        });
        let caps = Caps {
            total: shared.cfg.max_connections,
            per_source: shared.cfg.max_per_source,
        };
        // Each connection finishes the command in hand once told to stop.
        let drain = Duration::from_secs(30);
        accept_loop(
            "iSCSI",
            TcpAcceptor(listener),
            shutdown,
            caps,
            drain,
            |stream, peer, stop| {
                let shared = shared.clone();
                async move {
                    let local = stream.local_addr().ok();
                    match conn::run(stream, peer, local, shared, stop).await {
                        Ok(()) => tracing::debug!(?peer, "iSCSI connection closed"),
                        Err(e) => tracing::info!(?peer, error = %e, "iSCSI connection ended"),
                    }
                }
            },
        )
        .await;
        Ok(())
    }
}
