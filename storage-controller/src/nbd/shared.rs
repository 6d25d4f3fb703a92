//! What every connection of a server shares: the tunables, the export table, TLS,
//! the server-wide memory budget.
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Bursts that may run at once ([`MAX_BURSTS`]).
    pub(crate) bursts: Arc<Semaphore>,
    /// Connections in transmission, server-wide.
    pub(crate) transmitting: Arc<Transmitting>,
}

/// Most bursts (runs of WRITEs or READs served on a blocking-pool thread,
/// `super::burst`) running at once, server-wide: the threads and buffers that
/// clients can hold this way. Further connections use the async path.
pub(crate) const MAX_BURSTS: usize = 8;

pub(crate) use crate::export::wait_true;

/// How many connections are in transmission, server-wide, and whether that is
/// enough for read bursts (`super::burst::run_reads`): at least as many as the
/// host has cores (and at least two). A lone connection does better on the async
/// path, where one core reads the next READ while another sends the last reply;
/// a read burst does both in turn on one thread. With a connection per core the
/// parallelism comes from the connections, and a burst's shorter path per request
/// wins (4 connections on 2 cores, 4 requests in flight each: 6.1-6.6 GiB/s
/// against 3.9-4.0; BENCHMARKS.md, 2026-12-07 afternoon).
pub(crate) struct Transmitting {
    count: AtomicUsize,
    read_bursts_from: usize,
}

impl Default for Transmitting {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Transmitting {
            count: AtomicUsize::new(0),
            read_bursts_from: cores.max(2),
        }
    }
}

impl Transmitting {
    /// Counts a connection until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InTransmission {
        self.count.fetch_add(1, Ordering::Relaxed);
        InTransmission(self.clone())
    }

    pub(crate) fn read_bursts(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= self.read_bursts_from
    }
}

/// One connection counted in [`Transmitting`].
pub(crate) struct InTransmission(Arc<Transmitting>);

impl Drop for InTransmission {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}
