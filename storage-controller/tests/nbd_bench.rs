//! Throughput of the NBD server with nbdcopy (ignored by default):
//! `CARGO_TARGET_DIR=/tmp/target-sc cargo test -p euca-sc --release --test nbd_bench -- --ignored --nocapture`
//! Size via NBD_BENCH_MIB (default 1024).

mod nbd_common;

use std::process::Command;
use std::time::{Duration, Instant};

use nbd_common::*;

#[test]
#[ignore]
fn nbdcopy_throughput() {
    let mib: u64 = std::env::var("NBD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let nbdcopy = tool("nbdcopy");
    let server = TestServer::start();
    let src = server.dir.path().join("bench-src.raw");
    {
        // Incompressible, fully allocated source.
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let block = pattern(1 << 20, 3);
        for i in 0..mib {
            let mut b = block.clone();
            b[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&b).unwrap();
        }
    }
    server.add_volume("vol-bench", mib << 20);
    let uri = server.uri("vol-bench");
    let back = server.dir.path().join("bench-back.raw");
    std::fs::File::create(&back).unwrap();
    for conns in ["1", "4"] {
        let arg = format!("--connections={conns}");
        let t = Instant::now();
        run_ok(
            Command::new(&nbdcopy).args([&arg, src.to_str().unwrap(), &uri]),
            Duration::from_secs(600),
        );
        let w = t.elapsed();
        let t = Instant::now();
        run_ok(
            Command::new(&nbdcopy).args([&arg, &uri, "null:"]),
            Duration::from_secs(600),
        );
        let r = t.elapsed();
        let t = Instant::now();
        run_ok(
            Command::new(&nbdcopy).args([&arg, &uri, back.to_str().unwrap()]),
            Duration::from_secs(600),
        );
        let rf = t.elapsed();
        let rate = |d: Duration| mib as f64 / d.as_secs_f64();
        println!(
            "connections={conns}: write {:.0} MiB/s, read to null: {:.0} MiB/s, read to file {:.0} MiB/s ({mib} MiB)",
            rate(w),
            rate(r),
            rate(rf)
        );
    }
    server.stop();
}
