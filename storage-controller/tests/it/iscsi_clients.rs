//! The iSCSI target against real initiators: libiscsi's tools (iscsi-ls, iscsi-inq,
//! iscsi-readcapacity16) and QEMU's libiscsi block driver (qemu-img, qemu-io). A
//! missing tool fails the test (scripts/install-test-deps.sh installs them).

use crate::nbd_common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use euca_sc::device::FileDevice;
use euca_sc::export::{Export, ExportTable};
use euca_sc::iscsi::{Chap, IscsiServer, DEFAULT_IQN_PREFIX};
use nbd_common::{pattern, run, run_ok, tool};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(120);

/// An iSCSI target on 127.0.0.1:<ephemeral>, in-process, with its own runtime.
struct Target {
    rt: tokio::runtime::Runtime,
    exports: ExportTable,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Target {
    fn start() -> Target {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let exports = ExportTable::new();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(IscsiServer::new(exports.clone()).serve(listener, async {
            let _ = rx.await;
        }));
        Target {
            rt,
            exports,
            addr,
            dir: tempfile::tempdir().unwrap(),
            stop: Some(tx),
        }
    }

    fn add(&self, name: &str, size: u64, peer: Option<IpAddr>, chap: Option<Chap>) {
        let path = self.dir.path().join(name);
        let dev = FileDevice::create(&path, size).unwrap();
        self.exports.insert(
            name.into(),
            Export {
                protocol: euca_sc::export::Protocol::Iscsi,
                device: Arc::new(dev),
                allowed_peer: peer,
                read_only: false,
                description: String::new(),
                chap,
            },
        );
    }

    fn iqn(name: &str) -> String {
        format!("{DEFAULT_IQN_PREFIX}:{name}")
    }

    fn url(&self, name: &str) -> String {
        format!("iscsi://{}/{}/0", self.addr, Self::iqn(name))
    }

    fn url_chap(&self, name: &str, user: &str, secret: &str) -> String {
        format!(
            "iscsi://{user}%{secret}@{}/{}/0",
            self.addr,
            Self::iqn(name)
        )
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn localhost() -> Option<IpAddr> {
    Some("127.0.0.1".parse().unwrap())
}

#[test]
fn libiscsi_tools_see_one_thin_lun_and_discovery_lists_only_what_the_peer_may_open() {
    let t = Target::start();
    t.add("vol-aaaa0001-0123456789abcdef", 64 * MIB, localhost(), None);
    // Another node's volume: invisible from 127.0.0.1.
    t.add(
        "vol-bbbb0002-fedcba9876543210",
        64 * MIB,
        Some("10.9.9.9".parse().unwrap()),
        None,
    );

    let ls = run_ok(
        Command::new(tool("iscsi-ls")).args(["-s", &format!("iscsi://{}", t.addr)]),
        T,
    );
    assert!(ls.contains("vol-aaaa0001-0123456789abcdef"), "{ls}");
    assert!(!ls.contains("vol-bbbb0002"), "{ls}");
    assert!(ls.contains("Lun:0"), "{ls}");

    let url = t.url("vol-aaaa0001-0123456789abcdef");
    let inq = run_ok(Command::new(tool("iscsi-inq")).arg(&url), T);
    assert!(inq.contains("EUCA"), "{inq}");
    assert!(inq.contains("EBS VOLUME"), "{inq}");
    // VPD 83: the designators parse (NAA, T10, SCSI name).
    let vpd = run_ok(
        Command::new(tool("iscsi-inq")).args(["-e", "1", "-c", "131", &url]),
        T,
    );
    assert!(vpd.to_lowercase().contains("naa"), "{vpd}");
    let cap = run_ok(Command::new(tool("iscsi-readcapacity16")).arg(&url), T);
    assert!(cap.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{cap}");
    let last = format!("RETURNED LOGICAL BLOCK ADDRESS:{}", 64 * MIB / 512 - 1);
    assert!(cap.contains(&last), "{cap}");
    assert!(cap.contains("LBPME:1 LBPRZ:1"), "{cap}");
    assert!(
        cap.contains("LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:3"),
        "{cap}"
    );

    // The other node's target is "not found", exactly like a name that never existed.
    let hidden = run(
        Command::new(tool("iscsi-inq")).arg(t.url("vol-bbbb0002-fedcba9876543210")),
        T,
    );
    let missing = run(
        Command::new(tool("iscsi-inq")).arg(t.url("vol-cccc0003-00")),
        T,
    );
    assert!(!hidden.status.success() && !missing.status.success());
    let e1 = String::from_utf8_lossy(&hidden.stderr).replace("vol-bbbb0002-fedcba9876543210", "X");
    let e2 = String::from_utf8_lossy(&missing.stderr).replace("vol-cccc0003-00", "X");
    assert_eq!(e1, e2);
}

#[test]
fn qemu_round_trips_256_mib_and_reads_writes_flushes_and_discards() {
    let t = Target::start();
    let name = "vol-dddd0004-0123456789abcdef";
    t.add(name, 256 * MIB, localhost(), None);
    let url = t.url(name);
    let src = t.dir.path().join("src.raw");
    let mut data = Vec::with_capacity((256 * MIB) as usize);
    for i in 0..256u64 {
        data.extend_from_slice(&pattern(MIB as usize, i));
    }
    std::fs::write(&src, &data).unwrap();
    drop(data);
    let qemu_img = tool("qemu-img");
    let src_s = src.to_str().unwrap();
    run_ok(
        Command::new(&qemu_img).args(["convert", "-n", "-f", "raw", "-O", "raw", src_s, &url]),
        T,
    );
    run_ok(
        Command::new(&qemu_img).args(["compare", "-f", "raw", "-F", "raw", src_s, &url]),
        T,
    );
    // And back out, byte for byte.
    let out = t.dir.path().join("out.raw");
    run_ok(
        Command::new(&qemu_img).args([
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            out.to_str().unwrap(),
        ]),
        T,
    );
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap());

    let qemu_io = tool("qemu-io");
    let io = |cmds: &[&str]| {
        let mut c = Command::new(&qemu_io);
        c.args(["-f", "raw"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.arg(&url);
        run_ok(&mut c, T)
    };
    // FUA write, a write spanning several R2Ts, flush, discard then read zeroes.
    io(&["write -f -P 0xab 1M 64k", "write -P 0xcd 4M 3M", "flush"]);
    let r = io(&["read -P 0xab 1M 64k", "read -P 0xcd 4M 3M"]);
    assert!(!r.contains("Pattern verification failed"), "{r}");
    io(&["discard 4M 1M"]);
    let r = io(&["read -P 0 4M 1M", "read -P 0xcd 5M 2M"]);
    assert!(!r.contains("Pattern verification failed"), "{r}");
    // Many 4 KiB writes in flight at once (the target takes those that arrive
    // together as one batch), one of them FUA, then a flush: each lands where
    // it was sent.
    let mut cmds: Vec<String> = (0..48u64)
        .map(|i| {
            let fua = if i == 17 { "-f " } else { "" };
            format!("aio_write {fua}-P {} {} 4k", 0x10 + i, 8 * MIB + i * 4096)
        })
        .collect();
    cmds.push("aio_flush".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let w = io(&cmds);
    assert_eq!(w.matches("wrote 4096/4096 bytes").count(), 48, "{w}");
    let reads: Vec<String> = (0..48u64)
        .map(|i| format!("read -P {} {} 4k", 0x10 + i, 8 * MIB + i * 4096))
        .collect();
    let r = io(&reads.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!r.contains("Pattern verification failed"), "{r}");
    assert_eq!(r.matches("read 4096/4096 bytes").count(), 48, "{r}");
    // Past the end is refused, not wrapped.
    let past = run(
        Command::new(&qemu_io).args(["-f", "raw", "-c", "read 256M 512", &url]),
        T,
    );
    let said =
        String::from_utf8_lossy(&past.stdout).to_string() + &String::from_utf8_lossy(&past.stderr);
    assert!(!said.contains("read 512/512 bytes"), "{said}");
}

#[test]
fn chap_is_required_and_a_wrong_secret_or_user_cannot_log_in() {
    let t = Target::start();
    let name = "vol-eeee0005-0123456789abcdef";
    t.add(
        name,
        16 * MIB,
        localhost(),
        Some(Chap {
            user: "node-1".into(),
            secret: b"s3cret-s3cret-s3cret".to_vec(),
            target: None,
        }),
    );
    let inq = tool("iscsi-inq");
    let ok = run(
        Command::new(&inq).arg(t.url_chap(name, "node-1", "s3cret-s3cret-s3cret")),
        T,
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for url in [
        t.url(name),
        t.url_chap(name, "node-1", "s3cret-s3cret-s3creT"),
        t.url_chap(name, "node-2", "s3cret-s3cret-s3cret"),
    ] {
        let out = run(Command::new(&inq).arg(&url), T);
        assert!(!out.status.success(), "{url} logged in");
    }
    // The file behind it was never opened for a refused login.
    assert!(Path::new(&t.dir.path().join(name)).exists());
    let _ = &t.rt;
}

/// libiscsi's conformance suite against this target (run with --ignored; used by
/// scripts/iscsi-compare.sh). With `ISCSI_TARGET_CMD` set, runs that shell command
/// with the target's URL as `$1` (the script's suite-by-suite loop); otherwise
/// `iscsi-test-cu -d $ISCSI_CU_ARGS URL` (default `-s`). Prints what it ran.
#[test]
#[ignore]
fn iscsi_test_cu_summary() {
    let t = Target::start();
    let name = "vol-ffff0006-0123456789abcdef";
    t.add(name, 256 * MIB, localhost(), None);
    let url = t.url(name);
    let mut cmd = match std::env::var("ISCSI_TARGET_CMD") {
        Ok(script) => {
            let mut c = Command::new("sh");
            c.args(["-c", &script, "iscsi-target", &url]);
            c
        }
        Err(_) => {
            // e.g. ISCSI_CU_ARGS="--test=ALL.CompareAndWrite -V"
            let extra = std::env::var("ISCSI_CU_ARGS").unwrap_or_else(|_| "-s".into());
            let mut c = Command::new(tool("iscsi-test-cu"));
            c.arg("-d").args(extra.split_whitespace()).arg(&url);
            c
        }
    };
    let out = run(&mut cmd, Duration::from_secs(1800));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));
}
