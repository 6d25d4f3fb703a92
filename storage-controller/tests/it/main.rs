//! The SC's integration tests, one test binary: each file was its own, and
//! compiling and linking what they share once saves the suite build time on two
//! cores. nbd_memory (it reads this process's peak resident set, which other tests
//! would disturb) and nbd_bench (ignored; a benchmark) stay binaries of their own.
#[path = "../nbd_common/mod.rs"]
mod nbd_common;
#[path = "../snapshot_common/mod.rs"]
mod snapshot_common;

mod iscsi_clients;
mod nbd_budget;
mod nbd_clients;
mod nbd_libnbd;
mod nbd_raw;
mod nbd_tls;
mod snapshot_cut;
mod snapshot_dedup;
mod snapshot_lazy;
mod snapshot_orphans;
