//! NBD server behaviour a well-behaved client never exercises, driven over raw
//! sockets: handshake edge cases, malformed and oversized requests, peer
//! restrictions by source address, partial writes, export removal and shutdown.

use crate::nbd_common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use euca_sc::device::{BlockDevice, Extent, FileDevice};
use euca_sc::nbd::{Export, ExportTable, NbdServer};
use nbd_common::*;

const MIB: u64 = 1 << 20;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn handshake_flags_no_zeroes_and_legacy_export_name() {
    let server = TestServer::start();
    server.add_volume("vol-legacy", 4 * MIB);

    // NO_ZEROES agreed: EXPORT_NAME reply is exactly size + flags, then transmission.
    let mut c = connect(server.addr);
    let hs = c.greet(3);
    assert_eq!(hs & 3, 3, "server must offer FIXED_NEWSTYLE and NO_ZEROES");
    c.send_opt(OPT_EXPORT_NAME, b"vol-legacy");
    assert_eq!(c.u64(), 4 * MIB);
    let flags = c.u16();
    assert_eq!(flags & 1, 1, "HAS_FLAGS");
    assert_ne!(flags & TFLAG_CAN_MULTI_CONN, 0);
    c.write_at(1, 0, b"legacy!!");
    assert_eq!(c.read_at(2, 0, 8), b"legacy!!");
    c.request(0, CMD_DISC, 3, 0, 0, &[]);
    assert!(c.is_closed(), "DISC must close the connection");

    // Without NO_ZEROES: 124 zero bytes follow.
    let mut c = connect(server.addr);
    c.greet(1);
    c.send_opt(OPT_EXPORT_NAME, b"vol-legacy");
    assert_eq!(c.u64(), 4 * MIB);
    c.u16();
    assert_eq!(c.read_n(124), vec![0u8; 124]);
    assert_eq!(c.read_at(4, 0, 8), b"legacy!!");

    // EXPORT_NAME can't report errors: an unknown name is a hard disconnect.
    let mut c = connect(server.addr);
    c.greet(3);
    c.send_opt(OPT_EXPORT_NAME, b"no-such-volume");
    assert!(c.is_closed());

    // Unknown client flag bits: the server must drop the connection.
    let mut c = connect(server.addr);
    c.greet(3 | 1 << 7);
    assert!(c.is_closed());

    server.stop();
}

#[test]
fn options_unsupported_and_invalid_keep_negotiating() {
    let server = TestServer::start();
    server.add_volume("vol-opts", 4 * MIB);
    let mut c = connect(server.addr);
    c.greet(3);

    // Unknown option with a payload: ERR_UNSUP after consuming the payload.
    let r = c.opt(0x4242, &[0xaa; 37]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, REP_ERR_UNSUP);
    assert_eq!(c.opt(OPT_EXTENDED_HEADERS, &[])[0].0, REP_ERR_UNSUP);
    assert_eq!(c.opt(OPT_STARTTLS, &[])[0].0, REP_ERR_POLICY);
    assert_eq!(c.opt(OPT_LIST, b"junk")[0].0, REP_ERR_INVALID);
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, b"x")[0].0, REP_ERR_INVALID);
    // Meta contexts need structured replies first.
    let mut meta = Vec::new();
    meta.extend_from_slice(&8u32.to_be_bytes());
    meta.extend_from_slice(b"vol-opts");
    meta.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(c.opt(OPT_LIST_META_CONTEXT, &meta)[0].0, REP_ERR_INVALID);
    // Malformed INFO (name length beyond the payload).
    let mut bad = 100u32.to_be_bytes().to_vec();
    bad.extend_from_slice(b"vol");
    assert_eq!(c.opt(OPT_INFO, &bad)[0].0, REP_ERR_INVALID);

    // Now structured replies + meta contexts.
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, &[])[0].0, REP_ACK);
    let r = c.opt(OPT_LIST_META_CONTEXT, &meta);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].0, REP_META_CONTEXT);
    assert_eq!(&r[0].1[4..], b"base:allocation");
    let mut set = Vec::new();
    set.extend_from_slice(&8u32.to_be_bytes());
    set.extend_from_slice(b"vol-opts");
    set.extend_from_slice(&2u32.to_be_bytes());
    for q in ["qemu:dirty-bitmap:x", "base:allocation"] {
        set.extend_from_slice(&(q.len() as u32).to_be_bytes());
        set.extend_from_slice(q.as_bytes());
    }
    let r = c.opt(OPT_SET_META_CONTEXT, &set);
    assert_eq!(r.len(), 2, "only base:allocation is selected: {r:?}");
    assert_eq!(&r[0].1[4..], b"base:allocation");

    // INFO keeps negotiating, GO ends it.
    let r = c.opt(OPT_INFO, &info_payload("vol-opts", &[1, 2, 3]));
    assert_eq!(r.last().unwrap().0, REP_ACK);
    let infos: BTreeSet<u16> = r
        .iter()
        .filter(|(t, _)| *t == REP_INFO)
        .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    assert_eq!(infos, BTreeSet::from([0, 1, 2, 3]));
    let (last, size, _) = c.go("vol-opts");
    assert_eq!((last, size), (REP_ACK, 4 * MIB));

    // ABORT on a fresh connection: ACK, then the server closes.
    let mut c = connect(server.addr);
    c.greet(3);
    assert_eq!(c.opt(OPT_ABORT, &[])[0].0, REP_ACK);
    assert!(c.is_closed());
    server.stop();
}

#[test]
fn unknown_export_then_retry_on_same_connection() {
    let server = TestServer::start();
    server.add_volume("vol-known", 4 * MIB);
    let mut c = connect(server.addr);
    c.greet(3);
    let (last, _, _) = c.go("vol-unknown");
    assert_eq!(last, REP_ERR_UNKNOWN);
    let (last, size, _) = c.go("vol-known");
    assert_eq!((last, size), (REP_ACK, 4 * MIB));
    c.write_at(1, 512, b"abc");
    assert_eq!(c.read_at(2, 512, 3), b"abc");
    server.stop();
}

#[test]
fn restricted_export_is_invisible_to_other_addresses() {
    let server = TestServer::start();
    server.add_volume("vol-open", 4 * MIB);
    server.add_volume_with("vol-for-2", 4 * MIB, Some(ip("127.0.0.2")), false);

    let list = |c: &mut Raw| -> BTreeSet<String> {
        c.opt(OPT_LIST, &[])
            .into_iter()
            .filter(|(t, _)| *t == REP_SERVER)
            .map(|(_, d)| {
                let n = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
                String::from_utf8(d[4..4 + n].to_vec()).unwrap()
            })
            .collect()
    };

    // From 127.0.0.1: identical answer to a nonexistent export, and not listed.
    let mut c = connect(server.addr);
    c.greet(3);
    c.send_opt(OPT_GO, &info_payload("vol-for-2", &[]));
    let refused = c.opt_replies(OPT_GO);
    c.send_opt(OPT_GO, &info_payload("vol-nonexistent", &[]));
    let missing = c.opt_replies(OPT_GO);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, REP_ERR_UNKNOWN);
    assert_eq!(
        refused, missing,
        "a restricted export must look nonexistent"
    );
    c.send_opt(OPT_INFO, &info_payload("vol-for-2", &[]));
    assert_eq!(c.opt_replies(OPT_INFO)[0].0, REP_ERR_UNKNOWN);
    assert_eq!(list(&mut c), BTreeSet::from(["vol-open".to_string()]));
    c.send_opt(OPT_EXPORT_NAME, b"vol-for-2");
    assert!(c.is_closed());

    // From 127.0.0.2: listed and usable.
    let mut c = connect_from(&server, ip("127.0.0.2"));
    c.greet(3);
    assert_eq!(
        list(&mut c),
        BTreeSet::from(["vol-open".to_string(), "vol-for-2".to_string()])
    );
    let (last, size, _) = c.go("vol-for-2");
    assert_eq!((last, size), (REP_ACK, 4 * MIB));
    c.write_at(7, 4096, b"from two");
    assert_eq!(c.read_at(8, 4096, 8), b"from two");
    server.stop();
}

#[test]
fn bad_requests_get_errors_and_connection_survives() {
    let server = TestServer::start();
    let size = 64 * MIB;
    let path = server.add_volume("vol-bad", size);
    let mut c = open_export(connect(server.addr), "vol-bad");

    // Unknown command, unknown flag, DF without structured replies.
    c.request(0, 42, 1, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 1));
    c.request(1 << 9, CMD_READ, 2, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 2));
    c.request(1 << 2, CMD_READ, 3, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 3));
    // BLOCK_STATUS without a negotiated context.
    c.request(0, 7, 4, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 4));
    // FLUSH with a length.
    c.request(0, CMD_FLUSH, 5, 0, 1, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 5));

    // Out of range: read/trim past the end EINVAL, write/zero ENOSPC, overflow too.
    c.request(0, CMD_READ, 10, size - 512, 1024, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 10));
    c.request(0, CMD_READ, 11, u64::MAX - 100, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 11));
    c.request(0, 4, 12, size, 512, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 12));
    let junk = vec![0x5au8; 4096];
    c.request(0, CMD_WRITE, 13, size - 512, 4096, &junk);
    assert_eq!(c.simple_reply(), (ENOSPC, 13));
    c.request(0, CMD_WRITE, 14, u64::MAX - 10, 4096, &junk);
    assert_eq!(c.simple_reply(), (ENOSPC, 14));
    c.request(0, 6, 15, size - 512, 4096, &[]);
    assert_eq!(c.simple_reply(), (ENOSPC, 15));
    // A refused write with bad flags still has its payload skipped.
    c.request(1 << 1, CMD_WRITE, 16, 0, 4096, &junk);
    assert_eq!(c.simple_reply(), (EINVAL, 16));

    // Oversized read: EOVERFLOW without payload; the connection stays usable.
    c.request(0, CMD_READ, 20, 0, (32 << 20) + 1, &[]);
    assert_eq!(c.simple_reply(), (EOVERFLOW, 20));
    c.write_at(21, 0, b"still alive");
    assert_eq!(c.read_at(22, 0, 11), b"still alive");
    assert!(
        std::fs::read(&path).unwrap()[size as usize - 512..]
            .iter()
            .all(|&b| b == 0),
        "refused writes must not touch the volume"
    );

    // Oversized write: refused, then the server hangs up rather than reading it.
    c.request(0, CMD_WRITE, 23, 0, (32 << 20) + 1, &[]);
    assert_eq!(c.simple_reply(), (EINVAL, 23));
    assert!(c.is_closed());
    server.stop();
}

#[test]
fn bad_magic_closes_only_that_connection() {
    let server = TestServer::start();
    server.add_volume("vol-magic", 4 * MIB);
    let mut good = open_export(connect(server.addr), "vol-magic");
    let mut bad = open_export(connect(server.addr), "vol-magic");
    good.write_at(1, 0, b"before");

    let mut req = vec![0u8; 28];
    req[0..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    bad.s.write_all(&req).unwrap();
    assert!(bad.is_closed(), "bad magic must close the connection");

    assert_eq!(good.read_at(2, 0, 6), b"before");
    let mut fresh = open_export(connect(server.addr), "vol-magic");
    assert_eq!(fresh.read_at(3, 0, 6), b"before");
    server.stop();
}

#[test]
fn disconnect_mid_write_payload_applies_nothing() {
    let server = TestServer::start();
    let path = server.add_volume("vol-partial", 8 * MIB);
    let original = pattern(MIB as usize, 7);
    let mut c = open_export(connect(server.addr), "vol-partial");
    c.write_at(1, MIB, &original);
    c.request(0, CMD_FLUSH, 2, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (0, 2));
    drop(c);

    let mut c = open_export(connect(server.addr), "vol-partial");
    c.request(0, CMD_WRITE, 3, MIB, MIB as u32, &[]);
    c.s.write_all(&vec![0xee; (MIB / 2) as usize]).unwrap();
    c.s.flush().unwrap();
    // Let the server consume what was sent, then vanish mid-payload.
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    wait_until("connections to close", Duration::from_secs(10), || {
        server.exports.connections("vol-partial") == 0
    });

    let mut got = vec![0u8; MIB as usize];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut got, MIB)
        .unwrap();
    assert!(got == original, "a partial write payload was applied");
    let mut c = open_export(connect(server.addr), "vol-partial");
    assert!(c.read_at(4, MIB, MIB as u32) == original);
    server.stop();
}

#[test]
fn small_writes_sent_together_all_land_and_are_answered() {
    // 64 pipelined 4 KiB writes (one with FUA, one of 128 KiB) in one send,
    // then FLUSH: the server takes those that arrive together as batches; every
    // one is answered once and lands where it was sent.
    let server = TestServer::start();
    let (dev, path) = probe_device(&server, "vol-batch", Duration::ZERO);
    let mut c = open_export(connect(server.addr), "vol-batch");
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| pattern(4096, 300 + i)).collect();
    let big = pattern(128 << 10, 9);
    let mut wire = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let flags: u16 = if i == 40 { 1 } else { 0 }; // NBD_CMD_FLAG_FUA
        wire.extend(write_request(flags, i as u64, i as u64 * 8192, b));
        if i == 20 {
            wire.extend(write_request(0, 1000, 4 * MIB, &big));
        }
    }
    c.s.write_all(&wire).unwrap();
    c.request(0, CMD_FLUSH, 2000, 0, 0, &[]);
    let cookies = c.ok_replies(66);
    let mut want: BTreeSet<u64> = (0..64).collect();
    want.extend([1000, 2000]);
    assert_eq!(cookies, want);
    for (i, b) in blocks.iter().enumerate() {
        assert!(
            c.read_at(5000 + i as u64, i as u64 * 8192, 4096) == *b,
            "block {i}"
        );
        // The gaps between the blocks stay zero.
        assert_eq!(
            c.read_at(6000 + i as u64, i as u64 * 8192 + 4096, 4096),
            vec![0u8; 4096]
        );
    }
    assert!(c.read_at(7000, 4 * MIB, big.len() as u32) == big);
    let disk = std::fs::read(&path).unwrap();
    assert!(disk[..4096] == blocks[0][..] && disk[63 * 8192..63 * 8192 + 4096] == blocks[63][..]);
    // They did go to the device in batches.
    assert!(
        dev.largest_batch.load(Ordering::SeqCst) >= 2,
        "no batch of two writes"
    );
    server.stop();
}

/// One WRITE request (header and payload) as it goes on the wire.
fn write_request(flags: u16, cookie: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    request_bytes(flags, CMD_WRITE, cookie, offset, data.len() as u32, data)
}

#[test]
fn large_writes_and_headers_split_across_sends_land_where_they_were_sent() {
    // After a large WRITE the server reads the next header alone, possibly in
    // pieces (a header cut across two sends below), and batches large WRITEs
    // that arrive together: every byte must still land in its place.
    let server = TestServer::start();
    let (_dev, path) = probe_device(&server, "vol-large", Duration::ZERO);
    let mut c = open_export(connect(server.addr), "vol-large");
    let large: Vec<Vec<u8>> = (0..8).map(|i| pattern(256 << 10, 700 + i)).collect();
    let huge = pattern(2 * MIB as usize, 800); // above the batched size
    let small = pattern(4096, 801);
    let split = pattern(300 << 10, 802);
    let mut wire = Vec::new();
    for (i, d) in large.iter().enumerate() {
        wire.extend(write_request(0, i as u64, i as u64 * (256 << 10), d));
    }
    wire.extend(write_request(0, 10, 6 * MIB, &small));
    wire.extend(write_request(0, 11, 2 * MIB, &huge));
    let tail = write_request(0, 12, 5 * MIB, &split);
    wire.extend_from_slice(&tail[..10]);
    c.s.write_all(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.s.write_all(&tail[10..]).unwrap();
    c.request(0, CMD_FLUSH, 13, 0, 0, &[]);
    let cookies = c.ok_replies(12);
    assert_eq!(cookies, (0..8).chain(10..14).collect::<BTreeSet<u64>>());
    let mut want = vec![0u8; 8 * MIB as usize];
    for (i, d) in large.iter().enumerate() {
        want[i * (256 << 10)..][..d.len()].copy_from_slice(d);
    }
    want[2 * MIB as usize..][..huge.len()].copy_from_slice(&huge);
    want[5 * MIB as usize..][..split.len()].copy_from_slice(&split);
    want[6 * MIB as usize..][..small.len()].copy_from_slice(&small);
    assert!(c.read_at(20, 0, 8 * MIB as u32) == want, "data read back");
    assert!(std::fs::read(&path).unwrap() == want, "data on disk");
    server.stop();
}

#[test]
fn pipelined_reads_arrive_whole_when_the_client_reads_late() {
    // A READ's reply goes onto the socket where its data was read when the socket
    // has room, else (or the rest of one it took in part) through the reply
    // writer. 96 READs of about 1 MiB sent at once to a client that reads nothing
    // for a while fill the socket, so replies go out in part: each must still
    // arrive whole, once, with its data, never cut by another.
    let server = TestServer::start();
    let path = server.path("vol-pipe");
    let data = pattern(64 * MIB as usize, 77);
    std::fs::write(&path, &data).unwrap();
    server.add_file("vol-pipe", &path);
    let mut c = open_export(connect(server.addr), "vol-pipe");
    let reads: Vec<(u64, usize)> = (0..96u64)
        .map(|i| {
            (
                (i * 37 % 60) * MIB + i * 4096 + i,
                MIB as usize - 512 * i as usize,
            )
        })
        .collect();
    let mut wire = Vec::new();
    for (i, (off, len)) in reads.iter().enumerate() {
        wire.extend(request_bytes(0, CMD_READ, i as u64, *off, *len as u32, &[]));
    }
    c.s.write_all(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = BTreeSet::new();
    for _ in 0..reads.len() {
        let (err, cookie) = c.simple_reply();
        assert_eq!(err, 0, "READ {cookie}");
        assert!(seen.insert(cookie), "READ {cookie} answered twice");
        let (off, len) = reads[cookie as usize];
        let got = c.read_n(len);
        assert!(
            got[..] == data[off as usize..][..len],
            "READ {cookie}'s data"
        );
    }
    server.stop();
}

#[test]
fn reads_stop_starting_while_the_client_takes_no_replies() {
    // A client that pipelines 512 READs of 256 KiB (served from the page cache,
    // each answered as it is read) and reads no reply: once the socket is full,
    // the server starts no further READ (it would only fill buffers that go cold
    // before the socket takes them). Without the bound it reads on until the
    // connection's payload budget (64 MiB: 256 READs) is held in queued replies.
    // Every READ is still answered, with its data, once the client reads.
    const READS: u64 = 512;
    const LEN: usize = 256 << 10;
    let server = TestServer::start();
    let (dev, path) = probe_device(&server, "vol-ahead", Duration::ZERO);
    let data = pattern(8 * MIB as usize, 31);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&data, 0)
        .unwrap();
    let at = |i: u64| (i * LEN as u64) % (8 * MIB);
    let mut c = open_export(connect(server.addr), "vol-ahead");
    let wire: Vec<u8> = (0..READS)
        .flat_map(|i| request_bytes(0, CMD_READ, i, at(i), LEN as u32, &[]))
        .collect();
    c.s.write_all(&wire).unwrap();
    wait_until("the first READs", Duration::from_secs(10), || {
        dev.reads.load(Ordering::SeqCst) >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = dev.reads.load(Ordering::SeqCst);
    // What the two sockets' buffers take (a few MiB), the bound, the READ that hit it.
    assert!(
        started <= 128,
        "{started} of {READS} READs started while no reply was read"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..READS {
        let (err, cookie) = c.simple_reply();
        assert_eq!(err, 0, "READ {cookie}");
        assert!(seen.insert(cookie), "READ {cookie} answered twice");
        let off = at(cookie) as usize;
        assert!(c.read_n(LEN) == data[off..][..LEN], "READ {cookie}'s data");
    }
    assert_eq!(dev.reads.load(Ordering::SeqCst), READS as usize);
    server.stop();
}

#[test]
fn write_bursts_hand_the_connection_back_at_every_turn() {
    // A volume on a file: runs of WRITEs are received and written on a blocking
    // thread (a burst), which hands the socket back to the async reader when a
    // payload is slow to come, when a header is cut across sends, at a READ, at a
    // WRITE with FUA and at a FLUSH. Every request must be answered once and every
    // byte land in its place, whichever side read it.
    let server = TestServer::start();
    let path = server.add_volume("vol-burst", 8 * MIB);
    let mut c = open_export(connect(server.addr), "vol-burst");
    let block = 256u64 << 10;
    let data: Vec<Vec<u8>> = (0..24).map(|i| pattern(block as usize, 900 + i)).collect();
    let w = |i: usize, flags: u16| write_request(flags, i as u64, i as u64 * block, &data[i]);
    let mut want = vec![0u8; 8 * MIB as usize];
    for (i, d) in data.iter().enumerate() {
        want[i * block as usize..][..d.len()].copy_from_slice(d);
    }
    let pause = || std::thread::sleep(Duration::from_millis(150));

    // 0..=5 back to back.
    let mut wire: Vec<u8> = (0..6).flat_map(|i| w(i, 0)).collect();
    // 6: header and half its payload, then a pause longer than a burst waits.
    let w6 = w(6, 0);
    wire.extend_from_slice(&w6[..28 + 100_000]);
    c.s.write_all(&wire).unwrap();
    pause();
    c.s.write_all(&w6[28 + 100_000..]).unwrap();
    // 7 whole, then 10 bytes of 8's header; the rest after a pause.
    let w8 = w(8, 0);
    let mut wire = w(7, 0);
    wire.extend_from_slice(&w8[..10]);
    c.s.write_all(&wire).unwrap();
    pause();
    c.s.write_all(&w8[10..]).unwrap();
    // 9, a READ of block 0 (cookie 100), 10 with FUA, 11, 12, a FLUSH (101), 13.
    let mut wire = w(9, 0);
    wire.extend(request_bytes(0, CMD_READ, 100, 0, block as u32, &[]));
    wire.extend(w(10, 1));
    wire.extend((11..13).flat_map(|i| w(i, 0)));
    wire.extend(request_bytes(0, CMD_FLUSH, 101, 0, 0, &[]));
    wire.extend(w(13, 0));
    c.s.write_all(&wire).unwrap();
    // 14..24 in one send each, with pauses between some of them.
    for i in 14..24 {
        c.s.write_all(&w(i, 0)).unwrap();
        if i % 3 == 0 {
            pause();
        }
    }
    let mut cookies = BTreeSet::new();
    for _ in 0..26 {
        let (err, cookie) = c.simple_reply();
        assert_eq!(err, 0, "request {cookie}");
        assert!(cookies.insert(cookie), "request {cookie} answered twice");
        if cookie == 100 {
            // Block 0 was written (and answered) two pauses before the READ.
            assert!(c.read_n(block as usize) == data[0], "block 0 read back");
        }
    }
    let mut expected: BTreeSet<u64> = (0..24).collect();
    expected.extend([100, 101]);
    assert_eq!(cookies, expected);
    assert!(c.read_at(200, 0, 8 * MIB as u32) == want, "data read back");
    c.request(0, CMD_FLUSH, 201, 0, 0, &[]);
    assert_eq!(c.simple_reply(), (0, 201));
    assert!(std::fs::read(&path).unwrap() == want, "data on disk");

    // A client that goes away mid-payload in a burst: the WRITEs before it stay,
    // the cut-short one is not applied.
    let mut wire = w(0, 0);
    let w1 = write_request(0, 1, block, &vec![0xee; block as usize]);
    wire.extend_from_slice(&w1[..28 + 1000]);
    c.s.write_all(&wire).unwrap();
    assert_eq!(c.simple_reply(), (0, 0));
    drop(c);
    wait_until("connections to close", Duration::from_secs(10), || {
        server.exports.connections("vol-burst") == 0
    });
    let mut c = open_export(connect(server.addr), "vol-burst");
    assert!(
        c.read_at(300, 0, 8 * MIB as u32) == want,
        "after a cut-short payload"
    );
    server.stop();
}

#[test]
fn read_bursts_answer_every_request_once_with_its_data() {
    // Two connections to a volume on a file: sequential READs on either may run as
    // a read burst, which hands the socket back at a WRITE, a FLUSH, a small READ
    // and a READ elsewhere. Every request answered once, every byte right.
    let server = TestServer::start();
    server.add_volume("vol-rb", 8 * MIB);
    let mut a = open_export(connect(server.addr), "vol-rb");
    let mut b = open_export(connect(server.addr), "vol-rb");
    let block = 256usize << 10;
    let mut want: Vec<u8> = (0..32).flat_map(|i| pattern(block, 700 + i)).collect();
    for i in 0..32 {
        a.write_at(i as u64, (i * block) as u64, &want[i * block..][..block]);
    }
    let pause = || std::thread::sleep(Duration::from_millis(20));
    for (c, first) in [(&mut a, 0usize), (&mut b, 8)] {
        // One READ at a time, each following the last: bursts start and go on.
        for i in first..first + 8 {
            let got = c.read_at(1000 + i as u64, (i * block) as u64, block as u32);
            assert!(got == want[i * block..][..block], "block {i}");
            pause();
        }
    }
    // Pipelined: READs, then a WRITE (ends a burst), a READ of what it wrote, a
    // FLUSH, a 4 KiB READ, a READ elsewhere, more sequential READs.
    let new_block = pattern(block, 9999);
    let mut wire = Vec::new();
    for i in 16..20 {
        wire.extend(request_bytes(
            0,
            CMD_READ,
            2000 + i,
            i * block as u64,
            block as u32,
            &[],
        ));
    }
    wire.extend(request_bytes(
        0,
        CMD_WRITE,
        3000,
        20 * block as u64,
        block as u32,
        &new_block,
    ));
    wire.extend(request_bytes(
        0,
        CMD_READ,
        3001,
        20 * block as u64,
        block as u32,
        &[],
    ));
    wire.extend(request_bytes(0, CMD_FLUSH, 3002, 0, 0, &[]));
    wire.extend(request_bytes(0, CMD_READ, 3003, 5, 4096, &[]));
    wire.extend(request_bytes(
        0,
        CMD_READ,
        3004,
        3 * block as u64,
        block as u32,
        &[],
    ));
    for i in 4..8 {
        wire.extend(request_bytes(
            0,
            CMD_READ,
            2000 + i,
            i * block as u64,
            block as u32,
            &[],
        ));
    }
    a.s.write_all(&wire).unwrap();
    want[20 * block..][..block].copy_from_slice(&new_block);
    let mut cookies = BTreeSet::new();
    for _ in 0..13 {
        let (err, cookie) = a.simple_reply();
        assert_eq!(err, 0, "request {cookie}");
        assert!(cookies.insert(cookie), "request {cookie} answered twice");
        let (at, len) = match cookie {
            3000 | 3002 => continue,
            3001 => (20 * block, block),
            3003 => (5, 4096),
            3004 => (3 * block, block),
            c => ((c - 2000) as usize * block, block),
        };
        assert!(a.read_n(len) == want[at..][..len], "request {cookie}");
    }
    assert_eq!(cookies.len(), 13);
    // Both connections see the whole volume as written.
    assert!(
        b.read_at(4000, 0, 8 * MIB as u32) == want,
        "whole volume on b"
    );
    assert!(
        a.read_at(4001, 0, 8 * MIB as u32) == want,
        "whole volume on a"
    );
    server.stop();
}

#[test]
fn the_payload_budget_pays_for_the_pooled_buffer_not_just_the_request() {
    // A 32 MiB budget and WRITEs of 2 MiB + 4 KiB: each payload sits in a 4 MiB
    // pooled buffer, so 8 are held at once, not the 15 their lengths would allow.
    let server = TestServer::start_with(|s| s.memory_budget(32 << 20));
    let (dev, _) = probe_device(&server, "vol-footprint", Duration::from_secs(4));
    let mut c = open_export(connect(server.addr), "vol-footprint");
    let data = pattern(2 * MIB as usize + 4096, 5);
    // The server stops reading once the budget is spent: send from a thread.
    let mut s = c.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..12 {
            s.write_all(&write_request(0, i, 0, &data)).unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.started.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "8 writes did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Each write takes 4 s: none has finished, so none has given its bytes back.
    if dev.finished.load(Ordering::SeqCst) == 0 {
        assert_eq!(dev.started.load(Ordering::SeqCst), 8, "writes held at once");
    }
    assert_eq!(c.ok_replies(12), (0..12).collect::<BTreeSet<u64>>());
    sender.join().unwrap();
    server.stop();
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let server = TestServer::start();
    server.add_volume_with("vol-ro", 4 * MIB, None, true);
    let mut c = connect(server.addr);
    c.greet(3);
    let (last, _, flags) = c.go("vol-ro");
    assert_eq!(last, REP_ACK);
    assert_ne!(flags & TFLAG_READ_ONLY, 0);
    c.request(0, CMD_WRITE, 1, 0, 512, &[1u8; 512]);
    assert_eq!(c.simple_reply(), (EPERM, 1));
    c.request(0, 4, 2, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EPERM, 2));
    c.request(0, 6, 3, 0, 512, &[]);
    assert_eq!(c.simple_reply(), (EPERM, 3));
    assert_eq!(c.read_at(4, 0, 512), vec![0u8; 512]);
    server.stop();
}

/// A FileDevice whose writes may take a while, counting starts and completions and
/// recording the largest write batch it was given, and counting READs.
struct ProbeDevice {
    inner: FileDevice,
    delay: Duration,
    reads: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    largest_batch: AtomicUsize,
}

#[async_trait::async_trait]
impl BlockDevice for ProbeDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn multi_conn_safe(&self) -> bool {
        true
    }
    async fn read(&self, offset: u64, len: u32) -> std::io::Result<Bytes> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> std::io::Result<()> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.write(offset, data, fua).await?;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn write_batch(&self, writes: Vec<(u64, Bytes)>) -> std::io::Result<()> {
        let n = writes.len();
        self.largest_batch.fetch_max(n, Ordering::SeqCst);
        self.started.fetch_add(n, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.write_batch(writes).await?;
        self.finished.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
    async fn flush(&self) -> std::io::Result<()> {
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.trim(offset, len).await
    }
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> std::io::Result<()> {
        self.inner.write_zeroes(offset, len, may_punch, fua).await
    }
    async fn extents(&self, offset: u64, len: u64) -> std::io::Result<Vec<Extent>> {
        self.inner.extents(offset, len).await
    }
}

fn probe_device(
    server: &TestServer,
    name: &str,
    delay: Duration,
) -> (Arc<ProbeDevice>, std::path::PathBuf) {
    let path = server.path(name);
    let dev = Arc::new(ProbeDevice {
        inner: FileDevice::create(&path, 8 * MIB).unwrap(),
        delay,
        reads: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        largest_batch: AtomicUsize::new(0),
    });
    server.add_device(name, dev.clone(), None, false);
    (dev, path)
}

fn slow_device(server: &TestServer, name: &str) -> (Arc<ProbeDevice>, std::path::PathBuf) {
    probe_device(server, name, Duration::from_millis(1000))
}

#[test]
fn remove_waits_for_in_flight_writes_then_closes_connections() {
    let server = TestServer::start();
    let (dev, path) = slow_device(&server, "vol-remove");
    let mut c = open_export(connect(server.addr), "vol-remove");
    let mut idle = open_export(connect(server.addr), "vol-remove");
    assert_eq!(idle.read_at(99, 0, 4), vec![0u8; 4]);
    assert_eq!(server.exports.connections("vol-remove"), 2);

    let blocks: Vec<Vec<u8>> = (0..4).map(|i| pattern(65536, 100 + i)).collect();
    for (i, b) in blocks.iter().enumerate() {
        c.request(0, CMD_WRITE, i as u64, i as u64 * 65536, 65536, b);
    }
    wait_until("writes to start", Duration::from_secs(10), || {
        dev.started.load(Ordering::SeqCst) == 4
    });
    let table = server.exports.clone();
    let removal = server
        .rt
        .spawn(async move { table.remove("vol-remove").await });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !removal.is_finished(),
        "remove returned before in-flight writes finished"
    );
    assert!(
        server.rt.block_on(removal).unwrap(),
        "remove of an existing export"
    );
    assert_eq!(
        dev.finished.load(Ordering::SeqCst),
        4,
        "remove returned before acknowledged writes were done"
    );
    assert!(server.exports.names().is_empty());

    // Every in-flight write was answered, then the connection closed.
    let mut cookies = BTreeSet::new();
    for _ in 0..4 {
        let (err, cookie) = c.simple_reply();
        assert_eq!(err, 0);
        cookies.insert(cookie);
    }
    assert_eq!(cookies, BTreeSet::from([0, 1, 2, 3]));
    assert!(c.is_closed(), "connection must close after removal");
    assert!(idle.is_closed(), "idle connection must close after removal");

    // Gone for new clients, data on disk.
    let mut n = connect(server.addr);
    n.greet(3);
    assert_eq!(n.go("vol-remove").0, REP_ERR_UNKNOWN);
    let disk = std::fs::read(&path).unwrap();
    for (i, b) in blocks.iter().enumerate() {
        assert!(&disk[i * 65536..(i + 1) * 65536] == b.as_slice());
    }
    assert!(!server.rt.block_on(server.exports.remove("vol-remove")));
    server.stop();
}

#[test]
fn shutdown_finishes_in_flight_writes_and_closes() {
    let mut server = TestServer::start();
    let (dev, path) = slow_device(&server, "vol-shutdown");
    let mut c = open_export(connect(server.addr), "vol-shutdown");
    let data = pattern(65536, 5);
    c.request(0, CMD_WRITE, 77, 0, 65536, &data);
    wait_until("write to start", Duration::from_secs(10), || {
        dev.started.load(Ordering::SeqCst) == 1
    });
    server.shutdown();
    assert_eq!(dev.finished.load(Ordering::SeqCst), 1);
    assert_eq!(c.simple_reply(), (0, 77));
    assert!(c.is_closed());
    assert!(std::fs::read(&path).unwrap()[..65536] == data[..]);
}

#[test]
fn handshake_timeout_drops_silent_clients() {
    let server = TestServer::start_with(|s| s.handshake_timeout(Duration::from_millis(300)));
    let mut c = connect(server.addr);
    let _ = c.read_n(18);
    // Never send client flags.
    std::thread::sleep(Duration::from_millis(600));
    assert!(c.is_closed());
    server.stop();
}

#[test]
fn connections_per_source_address_are_capped() {
    let server = TestServer::start_with(|s| s.max_connections_per_source(2));
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    assert_eq!(&a.read_n(8)[..], b"NBDMAGIC");
    assert_eq!(&b.read_n(8)[..], b"NBDMAGIC");
    // A third from 127.0.0.1 is closed at once; another address still gets in.
    let mut c = connect(server.addr);
    assert!(c.is_closed());
    let mut d = connect_from(&server, ip("127.0.0.2"));
    assert_eq!(&d.read_n(8)[..], b"NBDMAGIC");
    // A slot comes back when its connection ends.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut e = connect(server.addr);
    assert_eq!(&e.read_n(8)[..], b"NBDMAGIC");
    drop((b, d, e));
    server.stop();
}

#[test]
fn unix_socket_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbd.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let exports = ExportTable::new();
    let dev = FileDevice::create(&dir.path().join("u.img"), 4 * MIB).unwrap();
    exports.insert(
        "vol-unix".into(),
        Export {
            protocol: euca_sc::export::Protocol::Nbd,
            device: Arc::new(dev),
            allowed_peer: None,
            read_only: false,
            description: String::new(),
            chap: None,
        },
    );
    let dev2 = FileDevice::create(&dir.path().join("r.img"), 4 * MIB).unwrap();
    exports.insert(
        "vol-tcp-only".into(),
        Export {
            protocol: euca_sc::export::Protocol::Nbd,
            device: Arc::new(dev2),
            allowed_peer: Some(ip("127.0.0.1")),
            read_only: false,
            description: String::new(),
            chap: None,
        },
    );
    let listener = rt
        .block_on(async { tokio::net::UnixListener::bind(&sock) })
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(NbdServer::new(exports).serve_unix(listener, async {
        let _ = rx.await;
    }));

    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Raw { s };
    c.greet(3);
    assert_eq!(c.go("vol-tcp-only").0, REP_ERR_UNKNOWN);
    assert_eq!(c.go("vol-unix").0, REP_ACK);
    c.write_at(1, 100, b"unix");
    assert_eq!(c.read_at(2, 100, 4), b"unix");

    tx.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap();
    assert!(c.is_closed());
}

#[test]
fn random_options_and_requests_keep_framing_and_server_alive() {
    use rand::{Rng, SeedableRng};
    let server = TestServer::start();
    let size = 8 * MIB;
    server.add_volume("vol-fuzz", size);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);

    // Options: every one gets a final reply and negotiation continues.
    let mut c = connect(server.addr);
    c.greet(3);
    for _ in 0..300 {
        let opt = match rng.random_range(0..4) {
            0 => rng.random_range(3..=11),
            1 => rng.random(),
            _ => [OPT_INFO, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT][rng.random_range(0..3)],
        };
        if opt == OPT_GO || opt == OPT_ABORT || opt == OPT_EXPORT_NAME {
            continue;
        }
        let len = rng.random_range(0..64);
        let data: Vec<u8> = (0..len).map(|_| rng.random_range(0..4u8)).collect();
        let replies = c.opt(opt, &data);
        assert!(!replies.is_empty());
    }
    assert_eq!(c.go("vol-fuzz").0, REP_ACK);

    // Requests with random types, flags, offsets and lengths (simple replies).
    for cookie in 0..2000u64 {
        let ty: u16 = if rng.random_bool(0.1) {
            rng.random()
        } else {
            rng.random_range(0..10)
        };
        if ty == CMD_DISC {
            continue;
        }
        let flags: u16 = if rng.random_bool(0.7) {
            0
        } else {
            rng.random()
        };
        let offset = match rng.random_range(0..3) {
            0 => rng.random_range(0..size),
            1 => rng.random_range(0..2 * size),
            _ => rng.random(),
        };
        let len: u32 = if ty == CMD_WRITE || ty == CMD_READ {
            rng.random_range(0..256 << 10)
        } else if rng.random_bool(0.5) {
            rng.random_range(0..size as u32)
        } else {
            rng.random()
        };
        let payload = if ty == CMD_WRITE {
            pattern(len as usize, cookie)
        } else {
            Vec::new()
        };
        c.request(flags, ty, cookie, offset, len, &payload);
        let (err, got) = c.simple_reply();
        assert_eq!(got, cookie);
        if ty > 7 {
            assert_eq!(err, EINVAL, "unknown command {ty}");
        }
        if ty == CMD_READ && err == 0 {
            c.read_n(len as usize);
        }
    }
    c.request(0, CMD_DISC, 0, 0, 0, &[]);
    assert!(c.is_closed());

    // Garbage instead of a request header closes that connection only.
    let mut c = open_export(connect(server.addr), "vol-fuzz");
    let junk: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    let _ = c.s.write_all(&junk);
    assert!(c.is_closed());
    let mut ok = open_export(connect(server.addr), "vol-fuzz");
    ok.write_at(1, 0, b"alive");
    assert_eq!(ok.read_at(2, 0, 5), b"alive");
    server.stop();
}

#[test]
fn replacing_an_export_closes_connections_to_the_old_one() {
    let server = TestServer::start();
    server.add_volume("vol-replace", 4 * MIB);
    let mut old = open_export(connect(server.addr), "vol-replace");
    old.write_at(1, 0, b"old");
    let newer = server.dir.path().join("newer.img");
    let dev = FileDevice::create(&newer, 8 * MIB).unwrap();
    server.add_device("vol-replace", Arc::new(dev), None, false);
    assert!(
        old.is_closed(),
        "connection to the replaced export must close"
    );
    let mut c = connect(server.addr);
    c.greet(3);
    let (last, size, _) = c.go("vol-replace");
    assert_eq!((last, size), (REP_ACK, 8 * MIB));
    assert_eq!(c.read_at(2, 0, 3), vec![0u8; 3]);
    server.stop();
}
