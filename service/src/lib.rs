//! `euca-service`: the edge every euca service shares — how connections are
//! accepted and limited, and the small request-edge rules that must not differ
//! between services.
//!
//! It serves Walrus, the storage controller's API, the tracker, the node cache's
//! piece server and its control socket:
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
//! - [`bearer`]: the cluster token of the compute services' internal APIs and
//!   the client that sends it;
//! - [`body::read_capped`]: reading a small request body with a size cap, refusing
//!   an over-long `Content-Length` before reading anything.
//!
//! - [`serve_api`] and [`Api`]: a service hands the loop a router that parses a
//!   request head into a typed endpoint, then handles it; the loop answers
//!   `/_health` and `/_metrics`, gives each request an id ([`Ctx`]), writes one
//!   access-log line per request (`tracing` target `access`, info level: silence
//!   with `RUST_LOG=access=off`) and keeps the per-endpoint families of the one
//!   process [`registry`];
//! - [`render`]: the EC2 Query XML and internal JSON error renderers;
//! - graceful shutdown: the listener closes, in-flight requests finish (up to
//!   10 s), idle connections close at once.
//!
//! - optional TLS on TCP listeners (`[service] tls_cert`/`tls_key`, OpenSSL).
//!
//! Planned: TLS in the internal clients (the SC's and image cache's HTTP
//! clients, the CLI) and per-request deadlines.
pub mod api;
pub mod bearer;
pub mod body;
pub mod budget;
pub mod client;
mod config;
pub mod failpoint;
mod metrics;
mod proxy;
pub mod registry;
pub mod render;
mod serve;
mod tls;

pub use api::{request_id, serve_api, Api, Ctx, EdgeError, Endpoint, ErrorCode};
pub use config::ServiceConfig;
pub use metrics::MetricsAccess;
pub use proxy::{client_from_forwarded, ProxyError};
pub use serve::{serve, ListenOptions, Listener, Peer};
pub use tls::{Tls, TlsError};

/// Generates a random token of 32 bytes as 64 lowercase hex characters (from the
/// kernel's random source).
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
