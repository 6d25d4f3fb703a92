//! The CC's cost with 1000 nodes polled every second (`cargo test --release -p
//! euca-cc --test scale -- --ignored --nocapture`). Prints figures; asserts only
//! outcomes (every node polled each round, Describe answered), not speed.
mod common;

use std::time::{Duration, Instant};

use common::*;
use euca_cc::config::Policy;

/// utime + stime of this process, in clock ticks (100/s on Linux).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn thousand_nodes_at_one_second() {
    let n = 1000;
    let fake = Fake::start(n, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fake.config(Policy::Greedy, dir.path());
    cfg.poll_interval_ms = 1000;
    cfg.poll_timeout_ms = 800;
    let c = cluster(cfg).await;
    let ids: Vec<String> = (0..200).map(|k| format!("i-{k:08x}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    c.launch(launch(&refs, 200)).await.unwrap();
    let (t0, c0) = (Instant::now(), cpu_ticks());
    let mut lat = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let l = c.instances();
        lat.push(t.elapsed());
        assert_eq!(l.len(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks() - c0) as f64 / 100.0;
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    println!(
        "{n} nodes, 1 s polls: {:.2} cores (CC + fake nodes in one process) over {secs:.1} s; \
         Describe (in-process) p99 {p99:?} over {} calls",
        cpu / secs,
        lat.len()
    );
    assert!(c
        .nodes()
        .iter()
        .all(|v| v.state == euca_compute_proto::NodeState::Up));
    c.stop().await;
}
