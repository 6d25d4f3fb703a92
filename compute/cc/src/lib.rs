//! The cluster controller (`euca cc`): one per cluster (= availability zone).
//!
//! - [`config`]: the `[cc]` table (tracker fields, policy, polling, POWERSAVE).
//! - [`view`]: what each node last reported, missed polls, reservations.
//! - [`poll`]: polling every node in parallel, each independently.
//! - [`schedule`]: GREEDY / ROUNDROBIN / POWERSAVE placement in one critical section.
//! - [`journal`]: pending placements and registered nodes, durable (redb).
//! - [`cluster`]: launches (journal first, then the node) and forwarded calls.
//! - [`api`]: the CC API and the image tracker on one listener.
//! - [`netconfig`], [`net`], [`metadata`]: `[cc.net]`, the router namespace that
//!   renders the CLC's network state, and the instance metadata service (issue 14).
pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod journal;
pub mod metadata;
pub mod net;
pub mod netconfig;
pub mod poll;
pub mod schedule;
pub mod view;

pub use cluster::Cluster;
pub use error::CcError;
