//! `euca-service`: the edge every euca service shares — how connections are
//! accepted and limited, and the small request-edge rules that must not differ
//! between services.
//!
//! Today it gives Walrus, the storage controller's API, the tracker and the node
//! cache's piece server:
//!
//! - [`serve`]: the HTTP/1.1 accept loop with a connection cap per listener
//!   (further clients wait in the kernel's accept queue), a cap per source address
//!   (its own idle connections closed first, else refused with a short `503`),
//!   trusted proxies (exempt from the
//!   per-source cap; the client address comes from the PROXY protocol header, v1 or
//!   v2, or from `X-Forwarded-For`, and only from them), and closing of idle
//!   keep-alive connections when a listener nears its cap;
//! - [`budget`]: raising the soft `RLIMIT_NOFILE` to the hard limit and fitting
//!   every listener's cap into the descriptors the process has;
//! - [`MetricsAccess`]: the bearer token `/_metrics` needs (constant-time compare);
//! - [`body::read_capped`]: reading a small request body with a size cap, refusing
//!   an over-long `Content-Length` before reading anything.
//!
//! Planned (a later issue): this crate grows into the one serve loop for every
//! service — TLS termination, request ids and access logs, graceful drain and
//! per-request deadlines move here, and services hand it only their router.
pub mod body;
pub mod budget;
pub mod client;
mod config;
mod metrics;
mod proxy;
mod serve;

pub use config::ServiceConfig;
pub use metrics::MetricsAccess;
pub use proxy::client_from_forwarded;
pub use serve::{serve, ListenOptions, Peer};

/// Generates a random token of 32 bytes as 64 lowercase hex characters (from the
/// kernel's random source).
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
