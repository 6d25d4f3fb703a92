//! The NBD server against the real client tools: nbdinfo, nbdcopy, qemu-img and
//! qemu-io. A missing tool fails the test (see scripts/install-test-deps.sh).

use crate::nbd_common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nbd_common::*;

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: sizes differ",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

/// A 64 MiB sparse file with data at [1M, 2M) and [10M, 10M+64K).
fn sparse_image(path: &Path) {
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_all_at(&pattern(MIB as usize, 1), MIB).unwrap();
    f.write_all_at(&pattern(65536, 2), 10 * MIB).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn nbdinfo_reports_size_flags_block_sizes_and_map() {
    let nbdinfo = tool("nbdinfo");
    let server = TestServer::start();
    let img = server.path("vol-info");
    sparse_image(&img);
    server.add_file("vol-info", &img);
    let uri = server.uri("vol-info");

    let json = run_ok(Command::new(&nbdinfo).args(["--json", &uri]), T);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 64 * MIB, "{json}");
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_cache",
        "can_df",
        "can_fast_zero",
    ] {
        assert_eq!(e[flag], true, "{flag} in {json}");
    }
    assert_eq!(e["is_read_only"], false, "{json}");
    assert_eq!(e["block_size_minimum"], 1, "{json}");
    assert_eq!(e["block_size_preferred"], 4096, "{json}");
    assert_eq!(e["block_size_maximum"], 32 * MIB, "{json}");

    let size = run_ok(Command::new(&nbdinfo).args(["--size", &uri]), T);
    assert_eq!(size.trim(), (64 * MIB).to_string());

    // --map: "offset length type description" per extent (type 0 data, 3 hole+zero).
    let map = run_ok(Command::new(&nbdinfo).args(["--map", &uri]), T);
    let extents: Vec<(u64, u64, u32)> = map
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let expected = vec![
        (0, MIB, 3),
        (MIB, MIB, 0),
        (2 * MIB, 8 * MIB, 3),
        (10 * MIB, 65536, 0),
        (10 * MIB + 65536, 54 * MIB - 65536, 3),
    ];
    assert_eq!(extents, expected, "nbdinfo --map:\n{map}");
    server.stop();
}

#[test]
fn nbdcopy_round_trip_single_and_multi_connection() {
    let nbdcopy = tool("nbdcopy");
    let server = TestServer::start();
    let src = server.dir.path().join("src.raw");
    std::fs::write(&src, pattern(64 * MIB as usize, 42)).unwrap();

    for (name, conns) in [("vol-copy1", "1"), ("vol-copy4", "4")] {
        let vol = server.add_volume(name, 64 * MIB);
        let uri = server.uri(name);
        let conn_arg = format!("--connections={conns}");
        run_ok(
            Command::new(&nbdcopy).args([&conn_arg, src.to_str().unwrap(), &uri]),
            T,
        );
        same_file(&src, &vol);
        let back = server.dir.path().join(format!("{name}.back"));
        std::fs::File::create(&back).unwrap();
        run_ok(
            Command::new(&nbdcopy).args([&conn_arg, &uri, back.to_str().unwrap()]),
            T,
        );
        same_file(&src, &back);
    }
    server.stop();
}

#[test]
fn qemu_img_info_and_convert_both_ways() {
    let qemu_img = tool("qemu-img");
    let server = TestServer::start();
    let vol = server.add_volume("vol-qemu", 32 * MIB);
    let uri = server.uri("vol-qemu");

    let info = run_ok(
        Command::new(&qemu_img).args(["info", "--output=json", &uri]),
        T,
    );
    let v: serde_json::Value =
        serde_json::from_str(&info).unwrap_or_else(|e| panic!("{e}: {info}"));
    assert_eq!(v["format"], "raw", "{info}");
    assert_eq!(v["virtual-size"], 32 * MIB, "{info}");

    // A source with data and holes.
    let src = server.dir.path().join("qsrc.raw");
    {
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(32 * MIB).unwrap();
        f.write_all_at(&pattern(3 * MIB as usize, 9), 0).unwrap();
        f.write_all_at(&pattern(MIB as usize, 10), 20 * MIB)
            .unwrap();
    }
    // Pre-dirty the target so zero handling on the NBD side matters.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vol)
        .unwrap()
        .write_all_at(&[0xcc; 65536], 10 * MIB)
        .unwrap();
    run_ok(
        Command::new(&qemu_img).args([
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ]),
        T,
    );
    same_file(&src, &vol);
    let back = server.dir.path().join("qback.raw");
    std::fs::File::create(&back)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    run_ok(
        Command::new(&qemu_img).args([
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            back.to_str().unwrap(),
        ]),
        T,
    );
    same_file(&src, &back);
    let cmp = run(
        Command::new(&qemu_img).args([
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ]),
        T,
    );
    assert!(
        cmp.status.success(),
        "qemu-img compare: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    server.stop();
}

#[test]
fn qemu_io_write_read_flush_discard_zero() {
    let qemu_io = tool("qemu-io");
    let server = TestServer::start();
    let vol = server.add_volume("vol-qio", 16 * MIB);
    let uri = server.uri("vol-qio");
    // Data where discard and write -z will land.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vol)
        .unwrap()
        .write_all_at(&vec![0x77; 3 * MIB as usize], MIB)
        .unwrap();

    let out = run_ok(
        Command::new(&qemu_io).args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -f -P 0xcd 128k 4k",
            "-c",
            "flush",
            "-c",
            "discard 1M 1M",
            "-c",
            "write -z 2M 1M",
            "-c",
            "read -P 0 2M 1M",
            "-c",
            "read -P 0x77 3M 1M",
            &uri,
        ]),
        T,
    );
    for bad in ["fail", "error", "Pattern verification"] {
        assert!(!out.contains(bad), "qemu-io reported `{bad}`:\n{out}");
    }
    assert_eq!(out.matches("wrote ").count(), 3, "{out}");
    assert_eq!(out.matches("read ").count(), 3, "{out}");

    let disk = std::fs::read(&vol).unwrap();
    assert!(disk[..65536].iter().all(|&b| b == 0xab));
    assert!(disk[128 << 10..(128 << 10) + 4096]
        .iter()
        .all(|&b| b == 0xcd));
    assert!(disk[2 * MIB as usize..3 * MIB as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(disk[3 * MIB as usize..4 * MIB as usize]
        .iter()
        .all(|&b| b == 0x77));

    // Errors surface: reading past the end fails in qemu-io.
    let past = run(
        Command::new(&qemu_io).args(["-f", "raw", "-c", "read 16M 4k", &uri]),
        T,
    );
    let text =
        String::from_utf8_lossy(&past.stdout).into_owned() + &String::from_utf8_lossy(&past.stderr);
    assert!(
        text.contains("failed") || text.contains("out of range") || !past.status.success(),
        "{text}"
    );
    server.stop();
}

#[test]
fn nbdsh_script() {
    let nbdsh = tool("nbdsh");
    let server = TestServer::start();
    server.add_volume("vol-nbdsh", 8 * MIB);
    let script = "\
assert h.get_structured_replies_negotiated()
assert h.get_size() == 8 * 1024 * 1024
assert h.can_multi_conn() and h.can_fua() and h.can_trim() and h.can_zero()
h.pwrite(b'nbdsh was here', 4096, nbd.CMD_FLAG_FUA)
assert h.pread(14, 4096) == b'nbdsh was here'
print('nbdsh-ok')
";
    // nbdsh runs `python3` from PATH; only Debian's can import the nbd module.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let out = run_ok(
        Command::new(&nbdsh)
            .env("PATH", path)
            .args(["-u", &server.uri("vol-nbdsh"), "-c", script]),
        T,
    );
    assert!(out.contains("nbdsh-ok"), "{out}");
    server.stop();
}
