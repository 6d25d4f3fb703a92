//! The CC's integration tests, one test binary (cluster.rs and net.rs were one
//! each): their shared build is compiled and linked once. scale.rs stays its own
//! binary: it is ignored by default and measures this process.
#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod net;
