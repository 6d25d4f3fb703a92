//! The NBD server against libnbd (python3-libnbd), one check of
//! tests/nbd_checks.py per test.

use crate::nbd_common;

use std::net::IpAddr;

use nbd_common::*;

const MIB: u64 = 1 << 20;

fn with_volume(check: &str) {
    let server = TestServer::start();
    let name = format!("vol-{check}");
    server.add_volume(&name, 64 * MIB);
    py_check(check, &[&server.uri(&name)]);
    server.stop();
}

#[test]
fn structured_replies_and_read() {
    with_volume("structured_read");
}

#[test]
fn simple_replies_when_structured_not_negotiated() {
    with_volume("simple_replies");
}

#[test]
fn block_status_after_write_trim_and_zero() {
    with_volume("block_status");
}

#[test]
fn zero_no_hole_and_fast_zero() {
    with_volume("zero_no_hole");
}

#[test]
fn fua_on_write_trim_zero() {
    with_volume("fua");
}

#[test]
fn multi_conn_flush_covers_other_connections() {
    with_volume("multi_conn");
}

#[test]
fn cache_command() {
    with_volume("cache");
}

#[test]
fn info_block_sizes_and_description() {
    with_volume("info");
}

#[test]
fn out_of_range_requests() {
    with_volume("bounds");
}

#[test]
fn oversized_requests() {
    with_volume("oversized");
}

#[test]
fn list_shows_only_exports_the_peer_may_open() {
    let server = TestServer::start();
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    server.add_volume_with("vol-any", 4 * MIB, None, false);
    server.add_volume_with("vol-mine", 4 * MIB, Some(here), false);
    server.add_volume_with("vol-theirs", 4 * MIB, Some(other), false);
    py_check("list", &[&server.uri(""), "vol-any,vol-mine", "vol-theirs"]);
    server.stop();
}

#[test]
fn unknown_export_keeps_negotiating() {
    let server = TestServer::start();
    server.add_volume("vol-good", 4 * MIB);
    py_check(
        "unknown_export",
        &[&format!("127.0.0.1:{}", server.port()), "vol-good"],
    );
    server.stop();
}

#[test]
fn export_restricted_by_client_address() {
    let server = TestServer::start();
    server.add_volume_with(
        "vol-peer2",
        4 * MIB,
        Some("127.0.0.2".parse().unwrap()),
        false,
    );
    // From 127.0.0.1 the export does not exist...
    py_check("refused", &[&server.uri("vol-peer2")]);
    // ...from 127.0.0.2 it works.
    py_check(
        "allowed_from",
        &[
            "127.0.0.2",
            "127.0.0.1",
            &server.port().to_string(),
            "vol-peer2",
        ],
    );
    server.stop();
}

#[test]
fn read_only_export_eperm() {
    let server = TestServer::start();
    server.add_volume_with("vol-ro", 4 * MIB, None, true);
    py_check("read_only", &[&server.uri("vol-ro")]);
    server.stop();
}
