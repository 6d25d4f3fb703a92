//! The CLC's integration tests, one test binary: each file was its own, and
//! compiling and linking what they share once saves the suite about a minute of
//! build on two cores.
mod common;
mod images;
mod instances;
mod network;
mod replay;
