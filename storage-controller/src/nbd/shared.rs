//! What every connection of a server shares: the tunables, the export table, TLS,
//! the server-wide memory budget.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::tls::{TlsConfig, TlsMode};
use crate::export::ExportTable;

/// Default of [`super::NbdServer::memory_budget`]: eight 32 MiB requests in flight
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
    pub(crate) max_per_source: usize,
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
            max_per_source: 64,
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
    /// Write bursts that may run at once ([`MAX_BURSTS`]).
    pub(crate) bursts: Arc<Semaphore>,
}

/// Most write bursts (runs of WRITEs received and written on a blocking-pool
/// thread, `super::burst`) running at once, server-wide: the threads and buffers
/// that clients can hold this way. Further connections use the async path.
pub(crate) const MAX_BURSTS: usize = 8;

pub(crate) use crate::export::wait_true;
