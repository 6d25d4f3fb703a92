//! Adoption without a monitor: an instance left `shutting-down` by a node
//! controller that died, whose QEMU still runs but whose QMP socket is gone. The
//! next node controller must finish the terminate (kill the process named by the
//! pid file, remove the overlay and socket, release the image pins, report
//! `terminated`). The "QEMU" here is a plain process whose command line names the
//! instance (`-name <id>`), as the node recognises its guests: no guest needed.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use euca_compute_proto::{InstanceSpec, NodeInstanceState};
use euca_nc::config::NcConfig;
use euca_nc::hypervisor::{DirImages, ImageCall, QemuNode};
use euca_nc::Node;

const ID: &str = "i-0dead0a1";

fn spec() -> InstanceSpec {
    serde_json::from_value(serde_json::json!({
        "instance_id": ID, "account": "000000000001", "reservation_id": "r-0dead0a1",
        "vm_type": {"name": "m1.small", "cores": 1, "memory_mib": 256, "disk_gib": 5},
        "root": {"kind": "image", "installed_id": "a".repeat(64), "size": 0},
        "mac": "d0:0d:0d:ea:d0:a1",
    }))
    .unwrap()
}

/// A process that looks like instance `id`'s QEMU to the node (`-name <id>`).
fn fake_qemu(id: &str) -> std::process::Child {
    std::process::Command::new("python3")
        .args(["-c", "import time; time.sleep(600)", "-name", id])
        .spawn()
        .expect("python3")
}

fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped) has an empty command line.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

fn write_instance(dir: &Path, state: &str, pid: u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec()).unwrap()).unwrap();
    let rec = serde_json::json!({
        "state": state,
        "launched_at": "2026-12-04T00:00:00Z",
        "volumes": [],
        "gen": 0,
    });
    std::fs::write(dir.join("state.json"), rec.to_string()).unwrap();
    std::fs::write(dir.join("qemu.pid"), format!("{pid}\n")).unwrap();
    std::fs::write(dir.join("root.qcow2"), b"overlay").unwrap();
    std::fs::write(dir.join("console.log"), b"TG-BOOTED\n").unwrap();
}

/// A node controller opened on a dir holding instance [`ID`] in `state`, whose
/// "QEMU" (a [`fake_qemu`]) runs and whose QMP socket does not exist.
struct Adopted {
    _tmp: tempfile::TempDir,
    node: Arc<QemuNode>,
    child: std::process::Child,
    idir: std::path::PathBuf,
    images: Arc<DirImages>,
}

impl Adopted {
    async fn open(state: &str) -> Adopted {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = NcConfig {
            dir: tmp.path().join("nc"),
            cores: Some(2),
            memory_mib: Some(1024),
            disk_gib: Some(10),
            shutdown_timeout_secs: 600,
            ..NcConfig::default()
        };
        let idir = cfg.dir.join("instances").join(ID);
        let child = fake_qemu(ID);
        write_instance(&idir, state, child.id());
        let images = Arc::new(DirImages::new(tmp.path().join("images")));
        let node = QemuNode::open(cfg, images.clone()).await.unwrap();
        Adopted {
            _tmp: tmp,
            node,
            child,
            idir,
            images,
        }
    }

    fn state(&self) -> Option<NodeInstanceState> {
        self.node
            .report()
            .instances
            .iter()
            .find(|i| i.instance_id == ID)
            .map(|i| i.state)
    }

    /// Waits (up to 30 s) for `terminated`; whether it came.
    async fn terminated(&self) -> bool {
        for _ in 0..300 {
            if self.state() == Some(NodeInstanceState::Terminated) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Ends the fake QEMU (if still there) and reaps it.
    fn reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_shutting_down_guest_without_a_monitor_is_finished_on_adoption() {
    let mut a = Adopted::open("shutting-down").await;
    let done = a.terminated().await;
    a.reap();
    assert!(done, "still {:?}", a.state());
    for f in ["root.qcow2", "qemu.pid"] {
        assert!(!a.idir.join(f).exists(), "{f} left behind");
    }
    assert!(a.idir.join("console.log").exists());
    assert!(a.images.calls().contains(&ImageCall::Release {
        image: "a".repeat(64),
        holder: ID.into(),
    }));
    // And a terminate of it again is answered as it is.
    assert_eq!(
        a.node.terminate(ID).await.unwrap().state,
        NodeInstanceState::Terminated
    );
}

/// A running guest adopted without a monitor keeps running (never killed for
/// want of one); a terminate then kills it at once (no powerdown to wait for).
#[tokio::test]
async fn a_running_guest_without_a_monitor_terminates() {
    let mut a = Adopted::open("running").await;
    let pid = a.child.id();
    assert_eq!(a.state(), Some(NodeInstanceState::Running));
    assert!(alive(pid));
    a.node.terminate(ID).await.unwrap();
    let done = a.terminated().await;
    let gone = !alive(pid);
    a.reap();
    assert!(done, "still {:?}", a.state());
    assert!(gone, "the process named by the pid file is killed");
    assert!(!a.idir.join("root.qcow2").exists());
}

/// The serial console stays bounded while "QEMU" appends to it, for an adopted
/// instance too: 3 MiB written, at most 1 MiB (+ one second's writes) left on
/// disk, and GetConsoleOutput still returns the newest 64 KiB, in order.
#[tokio::test]
async fn the_console_stays_bounded_after_adoption() {
    use base64::Engine;
    use std::io::Write;
    let mut a = Adopted::open("running").await;
    let log = a.idir.join("console.log");
    let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let line = |n: u32| format!("console line {n:010}\n");
    let per = line(0).len() as u64;
    let total = (3u64 << 20) / per;
    for n in 0..total as u32 {
        w.write_all(line(n).as_bytes()).unwrap();
    }
    let mut len = u64::MAX;
    for _ in 0..100 {
        len = std::fs::metadata(&log).unwrap().len();
        if len <= 1 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = a.node.console(ID).await;
    a.reap();
    assert!(len <= 1 << 20, "console.log is {len} bytes");
    let out = base64::engine::general_purpose::STANDARD
        .decode(c.unwrap().output)
        .unwrap();
    assert_eq!(out.len(), 64 << 10);
    let text = String::from_utf8(out).unwrap();
    let last: Vec<&str> = text.lines().rev().take(100).collect();
    for (k, l) in last.iter().enumerate() {
        assert_eq!(*l, line(total as u32 - 1 - k as u32).trim_end());
    }
}
