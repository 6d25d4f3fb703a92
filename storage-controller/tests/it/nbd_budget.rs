//! The server-wide NBD memory budget: a client that stops reading its replies
//! cannot keep the budget from everyone else.

use crate::nbd_common;

use std::io::Read;
use std::time::Duration;

use nbd_common::*;

const REQ: u32 = 32 << 20;

#[test]
fn a_client_that_stops_reading_replies_loses_its_budget_share() {
    // The smallest budget: one 32 MiB request at a time, server-wide.
    let server = TestServer::start_with(|s| {
        s.memory_budget(REQ as usize)
            .reply_timeout(Duration::from_secs(1))
    });
    let path = server.path("vol");
    std::fs::write(&path, pattern(REQ as usize, 9)).unwrap();
    server.add_file("vol", &path);

    // The stuck client: two pipelined 32 MiB READs, and it never reads. The
    // first takes the whole budget and its reply cannot be sent.
    let mut stuck = open_export(connect(server.addr), "vol");
    stuck.request(0, CMD_READ, 1, 0, REQ, &[]);
    stuck.request(0, CMD_READ, 2, 0, REQ, &[]);

    // Another client is served once the stuck one has been dropped.
    let mut other = open_export(connect(server.addr), "vol");
    other
        .s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let data = other.read_at(3, 0, REQ);
    assert!(
        data == pattern(REQ as usize, 9),
        "wrong data for the other client"
    );

    // The stuck connection was closed by the server.
    let mut sink = Vec::new();
    stuck
        .s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let waited = std::time::Instant::now();
    let r = stuck.s.read_to_end(&mut sink);
    // What the stuck client got, for a failure to tell which step went wrong
    // (seen once in CI, not reproduced): the first reply's magic and error.
    let first: Vec<String> = sink
        .chunks(4)
        .take(2)
        .map(|w| format!("{:02x?}", w))
        .collect();
    assert!(
        r.is_ok()
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stuck connection was not closed: {r:?} after {:?}; it had received {} bytes \
         (first reply magic and error: {first:?})",
        waited.elapsed(),
        sink.len()
    );
    assert!(
        sink.len() < 2 * (REQ as usize + 16),
        "the stuck client got all its replies ({} bytes); it should have been cut off",
        sink.len()
    );
    server.stop();
}
