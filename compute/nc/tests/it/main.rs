//! The NC's integration tests, one test binary: each file was its own, and
//! compiling and linking what they share once saves the suite build time on two
//! cores. The tests that boot guests (qemu.rs, qemu_net.rs) take
//! `common::one_guest()`, so at most one guest runs at a time as before.
mod common;

mod adopt;
mod api;
mod qemu;
mod qemu_images;
mod qemu_net;
