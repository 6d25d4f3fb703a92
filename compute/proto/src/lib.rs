//! The compute services' internal protocols, shared by the cloud controller (CLC),
//! the cluster controller (CC) and the node controller (NC), which never depend on
//! each other:
//!
//! ```text
//! CLC ──(cc::CcClient: launch, instances, nodes, attach…)──► CC ──(nc::NcClient)──► NC
//!                                                            ▲ polls GET /v1/node every second
//! ```
//!
//! Both APIs are JSON over HTTP, every request authenticated by the cluster token
//! (`Authorization: Bearer …`, constant-time compare; see `euca_service::bearer::Token`),
//! errors in the internal APIs' one shape `{"error":{"code","message"}}`.
//! Every mutating call is idempotent by instance id (and volume id), so a caller
//! that lost an answer (timeout, restart, `kill -9`) repeats the call and never
//! runs an instance twice.
pub mod cc;
mod client;
pub mod error;
pub mod nc;
pub mod net;
pub mod types;

pub use error::ProtoError;
pub use types::*;
