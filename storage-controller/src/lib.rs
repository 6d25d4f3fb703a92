//! The storage controller: EBS-style volumes backed by sparse files and exported to
//! node controllers over NBD.

pub mod config;
pub mod device;
pub mod error;
pub mod export;
pub mod iscsi;
mod listen;
pub mod model;
pub mod nbd;
pub mod snapshot;
pub mod state;
pub mod store;
mod wire;

pub use config::ScConfig;
pub use error::ScError;
pub mod api;
pub mod server;
pub mod service;

pub use server::ScServer;
