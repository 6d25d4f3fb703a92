//! Real QEMU (TCG) with the tiny guest (`EUCA_GUEST_DIR`, default target/guest; built
//! by tools/vm/build-tiny-guest.sh): boot, console, NBD hot-plug and detach,
//! adoption by a second node controller, terminate. At most one guest at a time;
//! every QEMU and qemu-nbd started here is killed by pid on the way out.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use euca_compute_proto::{
    AttachSpec, CachedImage, InstanceSpec, NodeAttachState, NodeInstanceState, Resources, RootDisk,
    VmType, VolumeExport,
};
use euca_nc::config::NcConfig;
use euca_nc::hypervisor::{DirImages, ImageCall, QemuNode};
use euca_nc::{NcError, Node};

use crate::common;
use common::{console_of, img_id, one_guest, until};

const ID: &str = "i-0badc0de";

/// The guest dir, or `None` (with the reason printed) when it does not exist.
fn guest_dir() -> Option<PathBuf> {
    let d = common::guest_path();
    if !d.is_dir() {
        eprintln!(
            "SKIPPED: no tiny guest at {} (build it with tools/vm/build-tiny-guest.sh, \
             or set EUCA_GUEST_DIR)",
            d.display()
        );
        return None;
    }
    for f in ["vmlinux", "initramfs.gz"] {
        assert!(d.join(f).is_file(), "{} has no {f}", d.display());
    }
    Some(d)
}

/// Kills, on drop, the processes named by pid files or pids (only if they are
/// still QEMU / qemu-nbd processes).
#[derive(Default)]
struct Reaper {
    pidfiles: Vec<PathBuf>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        common::kill_qemus(&self.pidfiles);
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A 64 MiB raw file exported by qemu-nbd on a free loopback port.
fn nbd_export(dir: &Path, reaper: &mut Reaper) -> (PathBuf, String) {
    let file = dir.join("vol.raw");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let pidfile = dir.join("qemu-nbd.pid");
    reaper.pidfiles.push(pidfile.clone());
    let port = free_port();
    let st = std::process::Command::new("qemu-nbd")
        .args(["--fork", "--persistent", "--pid-file"])
        .arg(&pidfile)
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-x", "export"])
        .args(["-f", "raw", "--shared=4"])
        .arg(&file)
        .status()
        .expect("qemu-nbd");
    assert!(st.success());
    (file, format!("nbd://127.0.0.1:{port}/export"))
}

fn spec(root_image: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: ID.into(),
        account: "000000000001".into(),
        reservation_id: "r-0badc0de".into(),
        vm_type: VmType {
            name: "m1.small".into(),
            cores: 1,
            memory_mib: 256,
            disk_gib: 5,
        },
        root: RootDisk::Image(CachedImage {
            installed_id: root_image.into(),
            size: 16 << 20,
        }),
        kernel: Some(CachedImage {
            installed_id: img_id('b'),
            size: 0,
        }),
        ramdisk: Some(CachedImage {
            installed_id: img_id('c'),
            size: 0,
        }),
        mac: "d0:0d:0b:ad:c0:de".into(),
        user_data: None,
        public_key: None,
        volumes: vec![],
        nic: None,
        incarnation: 0,
    }
}

/// The image dir: a 16 MiB raw root image, the guest's kernel and initramfs.
fn images(tmp: &Path, guest: &Path) -> Arc<DirImages> {
    let d = tmp.join("images");
    std::fs::create_dir_all(&d).unwrap();
    let mut root = vec![0u8; 16 << 20];
    root[..12].copy_from_slice(b"EUCA-ROOT-OK");
    std::fs::write(d.join(img_id('a')), root).unwrap();
    std::os::unix::fs::symlink(guest.join("vmlinux"), d.join(img_id('b'))).unwrap();
    std::os::unix::fs::symlink(guest.join("initramfs.gz"), d.join(img_id('c'))).unwrap();
    Arc::new(DirImages::new(d))
}

fn config(tmp: &Path) -> NcConfig {
    NcConfig {
        dir: tmp.join("nc"),
        cores: Some(3),
        memory_mib: Some(3000),
        disk_gib: Some(30),
        shutdown_timeout_secs: 1,
        detach_timeout_secs: 20,
        ..NcConfig::default()
    }
}

async fn console(node: &QemuNode) -> String {
    console_of(node, ID).await
}

/// The console up to its last newline: a line the guest is still printing is not
/// read (its start may match while the rest, which callers check, is not there yet).
fn complete_lines(mut c: String) -> String {
    c.truncate(c.rfind('\n').map_or(0, |i| i + 1));
    c
}

async fn until_console(node: &QemuNode, what: &str, count: usize, secs: u64) -> String {
    for _ in 0..secs * 5 {
        let c = complete_lines(console(node).await);
        if c.matches(what).count() >= count {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "console never showed {what:?} {count}×:\n{}",
        console(node).await
    );
}

fn state(node: &QemuNode) -> NodeInstanceState {
    node.report()
        .instances
        .iter()
        .find(|i| i.instance_id == ID)
        .map(|i| i.state)
        .unwrap()
}

fn vol_state(node: &QemuNode, vol: &str) -> Option<NodeAttachState> {
    node.report()
        .instances
        .iter()
        .find(|i| i.instance_id == ID)?
        .volumes
        .iter()
        .find(|v| v.volume_id == vol)
        .map(|v| v.state)
}

fn qemu_img_info(p: &Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn boot_attach_detach_adopt_terminate() {
    let Some(guest) = guest_dir() else { return };
    let _one = one_guest();
    let tmp = tempfile::tempdir().unwrap();
    let mut reaper = Reaper::default();
    let images = images(tmp.path(), &guest);
    let cfg = config(tmp.path());
    let idir = cfg.dir.join("instances").join(ID);
    reaper.pidfiles.push(idir.join("qemu.pid"));
    let (vol_file, uri) = nbd_export(tmp.path(), &mut reaper);
    let attach = AttachSpec {
        volume_id: "vol-0000aaaa".into(),
        device: "/dev/sdf".into(),
        export: VolumeExport { uri },
    };
    let spec = spec(&img_id('a'));

    // --- the first NC: boot, attach, detach, attach again, then it "dies".
    let rt1 = rt();
    let (pid, len_before) = rt1.block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let r = node.run(spec.clone()).await.unwrap();
        assert_eq!(r.state, NodeInstanceState::Pending);
        // Idempotent for the same spec; refused for another under the same id.
        assert_eq!(node.run(spec.clone()).await.unwrap().instance_id, ID);
        let mut other = spec.clone();
        other.vm_type.memory_mib = 512;
        assert!(matches!(
            node.run(other).await,
            Err(NcError::InstanceExists(_))
        ));
        assert_eq!(
            node.report().capacity,
            Resources {
                cores: 3,
                memory_mib: 3000,
                disk_gib: 30
            }
        );
        until("running", 60, || {
            let st = state(&node);
            assert_ne!(st, NodeInstanceState::Failed, "{:?}", node.report());
            st == NodeInstanceState::Running
        })
        .await;
        until_console(&node, "TG-BOOTED", 1, 90).await;

        // The root disk is an overlay on the image (not a copy); the ephemeral disk
        // is the type's 5 GiB minus the 1 GiB (rounded up) image.
        let info = qemu_img_info(&idir.join("root.qcow2"));
        let backing = std::fs::canonicalize(tmp.path().join("images").join(img_id('a'))).unwrap();
        assert_eq!(
            std::fs::canonicalize(info["backing-filename"].as_str().unwrap()).unwrap(),
            backing
        );
        assert_eq!(info["virtual-size"], 16 << 20);
        assert!(info["actual-size"].as_u64().unwrap() < 4 << 20, "{info}");
        let eph = qemu_img_info(&idir.join("ephemeral.qcow2"));
        assert_eq!(eph["virtual-size"], 4u64 << 30);
        assert!(std::fs::read(idir.join("spec.json")).is_ok());
        // The images are pinned for the instance.
        assert_eq!(images.pinned().len(), 3);

        let v = node.attach(ID, attach.clone()).await.unwrap();
        assert_eq!(v.volume_id, "vol-0000aaaa");
        until("attached", 30, || {
            vol_state(&node, "vol-0000aaaa") == Some(NodeAttachState::Attached)
        })
        .await;
        let c = until_console(&node, "TG-DISK vdc", 1, 30).await;
        assert!(c.contains("readback='TG-WRITE vdc"), "{c}");
        node.detach(ID, "vol-0000aaaa", false).await.unwrap();
        until("detached", 30, || {
            vol_state(&node, "vol-0000aaaa") == Some(NodeAttachState::Detached)
        })
        .await;
        until_console(&node, "TG-HOTPLUG-REMOVE vdc", 1, 30).await;
        // The guest's write reached the export.
        let bytes = std::fs::read(&vol_file).unwrap();
        assert!(bytes[1 << 20..].starts_with(b"TG-WRITE vdc"));
        // Attached again, and left attached across the restart.
        node.attach(ID, attach.clone()).await.unwrap();
        until("re-attached", 30, || {
            vol_state(&node, "vol-0000aaaa") == Some(NodeAttachState::Attached)
        })
        .await;
        let c = until_console(&node, "TG-HOTPLUG-ADD", 2, 30).await;
        let pid: i32 = std::fs::read_to_string(idir.join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (pid, c.len())
    });
    drop(rt1); // the NC dies: its tasks and QMP connection are gone
    assert!(alive(pid), "QEMU must outlive the node controller");

    // --- a second NC adopts the same QEMU.
    let rt2 = rt();
    rt2.block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        assert_eq!(state(&node), NodeInstanceState::Running);
        assert_eq!(
            vol_state(&node, "vol-0000aaaa"),
            Some(NodeAttachState::Attached),
            "the adopted instance reports its attachment"
        );
        let pid2: i32 = std::fs::read_to_string(idir.join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid2, pid);
        node.detach(ID, "vol-0000aaaa", false).await.unwrap();
        until("detached after adoption", 30, || {
            vol_state(&node, "vol-0000aaaa") == Some(NodeAttachState::Detached)
        })
        .await;
        let c = until_console(&node, "TG-HOTPLUG-REMOVE vdc", 2, 30).await;
        assert!(c.len() > len_before, "the console keeps growing");
        node.attach(ID, attach.clone()).await.unwrap();
        until("attached after adoption", 30, || {
            vol_state(&node, "vol-0000aaaa") == Some(NodeAttachState::Attached)
        })
        .await;
        until_console(&node, "TG-HOTPLUG-ADD", 3, 30).await;
        node.reboot(ID).await.unwrap();
        until_console(&node, "TG-BOOTED", 2, 90).await;

        let r = node.terminate(ID).await.unwrap();
        assert!(matches!(
            r.state,
            NodeInstanceState::ShuttingDown | NodeInstanceState::Terminated
        ));
        until("terminated", 60, || {
            state(&node) == NodeInstanceState::Terminated
        })
        .await;
        assert!(!alive(pid), "QEMU is gone");
        for f in ["root.qcow2", "ephemeral.qcow2", "qmp.sock", "qemu.pid"] {
            assert!(!idir.join(f).exists(), "{f} left behind");
        }
        assert!(idir.join("console.log").exists());
        assert_eq!(
            vol_state(&node, "vol-0000aaaa"),
            Some(NodeAttachState::Detached)
        );
        // Acquired once by the first NC, released once by the second.
        assert!(images.pinned().is_empty(), "{:?}", images.calls());
        let calls = images.calls();
        for c in ['a', 'b', 'c'] {
            let acq = ImageCall::Acquire {
                image: img_id(c),
                holder: ID.into(),
            };
            let rel = ImageCall::Release {
                image: img_id(c),
                holder: ID.into(),
            };
            assert_eq!(calls.iter().filter(|x| **x == acq).count(), 1);
            assert_eq!(calls.iter().filter(|x| **x == rel).count(), 1);
        }
        // Terminate again: answered as it is; the tombstone is reported.
        let r = node.terminate(ID).await.unwrap();
        assert_eq!(r.state, NodeInstanceState::Terminated);
        assert!(matches!(
            node.attach(ID, attach.clone()).await,
            Err(NcError::IncorrectState(_))
        ));
    });
    drop(reaper);
}

#[test]
fn failures_are_reported_and_nothing_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let mut reaper = Reaper::default();
    let cfg = config(tmp.path());
    reaper
        .pidfiles
        .push(cfg.dir.join("instances").join(ID).join("qemu.pid"));
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    let images = Arc::new(DirImages::new(tmp.path().join("images")));
    rt().block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let mut bad = spec(&img_id('a'));
        bad.instance_id = "i-../../etc".into();
        assert!(matches!(node.run(bad).await, Err(NcError::BadRequest(_))));
        let mut tls = spec(&img_id('a'));
        tls.root = RootDisk::Volume {
            volume_id: "vol-1".into(),
            export: VolumeExport {
                uri: "nbds://127.0.0.1:1/x".into(),
            },
        };
        assert!(matches!(node.run(tls).await, Err(NcError::BadRequest(_))));
        assert!(matches!(
            node.console("i-00000000").await,
            Err(NcError::InstanceNotFound(_))
        ));
        // The image does not exist: failed, with the reason, nothing running.
        node.run(spec(&img_id('a'))).await.unwrap();
        until("failed", 30, || state(&node) == NodeInstanceState::Failed).await;
        let r = node.report();
        let reason = r.instances[0].reason.clone().unwrap();
        assert_eq!(reason.code, "Server.InternalError");
        assert!(reason.message.contains(&img_id('a')), "{reason:?}");
        let idir = cfg.dir.join("instances").join(ID);
        assert!(!idir.join("qemu.pid").exists());
        assert!(images.pinned().is_empty());
        let attach = AttachSpec {
            volume_id: "vol-1".into(),
            device: "/dev/sdf".into(),
            export: VolumeExport {
                uri: "nbd://127.0.0.1:1/x".into(),
            },
        };
        assert!(matches!(
            node.attach(ID, attach).await,
            Err(NcError::IncorrectState(_))
        ));
        node.terminate(ID).await.unwrap();
        until("terminated", 30, || {
            state(&node) == NodeInstanceState::Terminated
        })
        .await;
        // A restarted NC keeps the tombstone.
        drop(node);
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        assert_eq!(state(&node), NodeInstanceState::Terminated);
    });
    drop(reaper);
}

/// A boot sector (BIOS, real mode): enables interrupts, zeroes DS, prints its
/// message on COM1, then either halts forever or waits 2 s (INT 15h AH=86h) and
/// powers the machine off (ACPI PM1a_CNT of QEMU's PIIX4 at 0x604, SLP_EN with S5).
fn boot_sector(poweroff: bool) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xFB, // sti
        0x31, 0xC0, // xor ax,ax
        0x8E, 0xD8, // mov ds,ax
        0xFC, // cld
        0xBE, 0x28, 0x7C, // mov si,0x7C28 (the message)
        0xBA, 0xF8, 0x03, // mov dx,0x3F8
        0xAC, // lodsb
        0x08, 0xC0, // or al,al
        0x74, 0x03, // jz +3
        0xEE, // out dx,al
        0xEB, 0xF8, // jmp lodsb
    ];
    if poweroff {
        code.extend([
            0xB4, 0x86, // mov ah,0x86
            0xB9, 0x1E, 0x00, // mov cx,0x001E
            0xBA, 0x80, 0x84, // mov dx,0x8480 (2 000 000 µs)
            0xCD, 0x15, // int 0x15
            0xBA, 0x04, 0x06, // mov dx,0x604
            0xB8, 0x00, 0x20, // mov ax,0x2000
            0xEF, // out dx,ax
        ]);
    } else {
        code.extend([0x90; 17]); // nops, same length
    }
    code.extend([0xF4, 0xEB, 0xFD]); // hlt; jmp hlt
    assert_eq!(code.len(), 0x28);
    code.extend(b"EUCA-BIOS-BOOT\r\n\0");
    let mut disk = vec![0u8; 1 << 20];
    disk[..code.len()].copy_from_slice(&code);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk
}

/// Sends `stop` on an instance's QMP socket (as nobody else is connected).
fn qmp_stop(sock: &Path) {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("QMP"));
    for cmd in ["qmp_capabilities", "stop"] {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
            assert!(!line.contains("\"error\""), "{line}");
        }
    }
}

#[test]
fn whole_disk_boot_shutoff_and_a_stopped_guest_fails() {
    if guest_dir().is_none() {
        return;
    }
    let _one = one_guest();
    let tmp = tempfile::tempdir().unwrap();
    let mut reaper = Reaper::default();
    let mut cfg = config(tmp.path());
    cfg.detach_timeout_secs = 1;
    let (_vol, uri) = nbd_export(tmp.path(), &mut reaper);
    let d = tmp.path().join("images");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(img_id('e')), boot_sector(true)).unwrap();
    std::fs::write(d.join(img_id('f')), boot_sector(false)).unwrap();
    let images = Arc::new(DirImages::new(d));
    let bios = |id: &str, img: char| {
        let mut s = spec(&img_id(img));
        s.instance_id = id.into();
        s.kernel = None;
        s.ramdisk = None;
        s.root = RootDisk::Image(CachedImage {
            installed_id: img_id(img),
            size: 1 << 20,
        });
        s
    };
    let (a, b) = ("i-0000b105", "i-0000b106");
    for id in [a, b, "i-0000b107"] {
        reaper
            .pidfiles
            .push(cfg.dir.join("instances").join(id).join("qemu.pid"));
    }
    let st = |node: &QemuNode, id: &str| {
        node.report()
            .instances
            .into_iter()
            .find(|i| i.instance_id == id)
            .unwrap()
    };
    let rt1 = rt();
    let pid_b = rt1.block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        // A: boots from the disk (BIOS), prints, powers itself off → shutoff.
        node.run(bios(a, 'e')).await.unwrap();
        until("A shut off", 90, || {
            st(&node, a).state == NodeInstanceState::Shutoff
        })
        .await;
        let r = st(&node, a).reason.unwrap();
        assert_eq!(r.code, "Client.InstanceInitiatedShutdown", "{r:?}");
        assert!(console_of(&node, a).await.contains("EUCA-BIOS-BOOT"));
        // Its disks stay until terminate.
        let adir = cfg.dir.join("instances").join(a);
        assert!(adir.join("root.qcow2").exists());
        node.terminate(a).await.unwrap();
        until("A terminated", 30, || {
            st(&node, a).state == NodeInstanceState::Terminated
        })
        .await;
        assert!(!adir.join("root.qcow2").exists());

        // B: boots and halts; left running for the next NC.
        let mut spec_b = bios(b, 'f');
        spec_b.volumes.push(AttachSpec {
            volume_id: "vol-0000cccc".into(),
            device: "/dev/sdh".into(),
            export: VolumeExport { uri: uri.clone() },
        });
        node.run(spec_b).await.unwrap();
        until("B running", 60, || {
            st(&node, b).state == NodeInstanceState::Running
        })
        .await;
        let boot_vol = st(&node, b).volumes;
        assert_eq!(boot_vol.len(), 1);
        assert_eq!(
            boot_vol[0].state,
            NodeAttachState::Attached,
            "attached at boot"
        );
        for _ in 0..300 {
            if console_of(&node, b).await.contains("EUCA-BIOS-BOOT") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(console_of(&node, b).await.contains("EUCA-BIOS-BOOT"));

        // No OS answers the ACPI eject: a detach times out (volume still attached),
        // a forced one cuts the NBD connection and reports detached.
        let attach = AttachSpec {
            volume_id: "vol-0000bbbb".into(),
            device: "/dev/sdg".into(),
            export: VolumeExport { uri: uri.clone() },
        };
        let vs = |node: &QemuNode| {
            st(node, b)
                .volumes
                .into_iter()
                .find(|v| v.volume_id == "vol-0000bbbb")
                .unwrap()
        };
        node.attach(b, attach.clone()).await.unwrap();
        until("attached", 30, || {
            vs(&node).state == NodeAttachState::Attached
        })
        .await;
        node.detach(b, "vol-0000bbbb", false).await.unwrap();
        until("detach failed", 30, || {
            vs(&node).state == NodeAttachState::Failed
        })
        .await;
        let err = vs(&node).error.unwrap();
        assert!(err.contains("did not release"), "{err}");
        // Still attached: attach again answers so at once.
        let v = node.attach(b, attach.clone()).await.unwrap();
        assert_eq!(v.state, NodeAttachState::Attached);
        node.detach(b, "vol-0000bbbb", true).await.unwrap();
        until("forced", 30, || {
            vs(&node).state == NodeAttachState::Detached
        })
        .await;
        let err = vs(&node).error.unwrap();
        assert!(err.starts_with("forced"), "{err}");

        std::fs::read_to_string(cfg.dir.join("instances").join(b).join("qemu.pid"))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    });
    drop(rt1);
    // While no NC watches, the VM gets paused (as a KVM that cannot run the guest
    // leaves it): the next NC must not adopt a paused QEMU.
    qmp_stop(&cfg.dir.join("instances").join(b).join("qmp.sock"));
    assert!(alive(pid_b));
    rt().block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let r = st(&node, b);
        assert_eq!(r.state, NodeInstanceState::Failed);
        let reason = r.reason.unwrap();
        assert_eq!(reason.code, "Server.InternalError");
        assert!(reason.message.contains("paused"), "{reason:?}");
        assert!(!alive(pid_b), "the paused QEMU was killed");
        assert_eq!(st(&node, a).state, NodeInstanceState::Terminated);
        node.terminate(b).await.unwrap();
        until("B terminated", 30, || {
            st(&node, b).state == NodeInstanceState::Terminated
        })
        .await;
        assert!(images.pinned().is_empty(), "{:?}", images.calls());
        assert!(st(&node, b)
            .volumes
            .iter()
            .all(|v| v.state == NodeAttachState::Detached));

        // C: stopped by shutdown_all (euca up's Ctrl-C): shutoff, disks kept.
        let c = "i-0000b107";
        let cdir = cfg.dir.join("instances").join(c);
        node.run(bios(c, 'f')).await.unwrap();
        until("C running", 60, || {
            st(&node, c).state == NodeInstanceState::Running
        })
        .await;
        let pid_c: i32 = std::fs::read_to_string(cdir.join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        node.shutdown_all().await;
        assert!(!alive(pid_c));
        let r = st(&node, c);
        assert_eq!(r.state, NodeInstanceState::Shutoff);
        assert_eq!(r.reason.unwrap().code, "Server.NodeShutdown");
        assert!(cdir.join("root.qcow2").exists());
        drop(node);
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        assert_eq!(st(&node, c).state, NodeInstanceState::Shutoff);
        node.terminate(c).await.unwrap();
        until("C terminated", 30, || {
            st(&node, c).state == NodeInstanceState::Terminated
        })
        .await;
        assert!(!cdir.join("root.qcow2").exists());
        assert!(images.pinned().is_empty(), "{:?}", images.calls());
    });
    drop(reaper);
}

/// `euca up` stopped (SIGTERM) just after a TerminateInstances: the node's
/// `shutdown_all`, then the process (its runtime) ends. The terminate still in its
/// grace period (the guest ignores the ACPI powerdown) must be finished, not
/// cancelled with the runtime, leaving its QEMU running with no NC to adopt it.
#[test]
fn shutdown_finishes_a_terminate_in_flight() {
    if guest_dir().is_none() {
        return;
    }
    let _one = one_guest();
    let tmp = tempfile::tempdir().unwrap();
    let mut reaper = Reaper::default();
    let mut cfg = config(tmp.path());
    // Longer than the test takes to call shutdown_all after the terminate.
    cfg.shutdown_timeout_secs = 5;
    let d = tmp.path().join("images");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(img_id('f')), boot_sector(false)).unwrap();
    let images = Arc::new(DirImages::new(d));
    let mut s = spec(&img_id('f'));
    s.kernel = None;
    s.ramdisk = None;
    s.root = RootDisk::Image(CachedImage {
        installed_id: img_id('f'),
        size: 1 << 20,
    });
    let idir = cfg.dir.join("instances").join(ID);
    reaper.pidfiles.push(idir.join("qemu.pid"));
    let rt1 = rt();
    let (pid, after) = rt1.block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        node.run(s).await.unwrap();
        until("running", 60, || state(&node) == NodeInstanceState::Running).await;
        let pid: i32 = std::fs::read_to_string(idir.join("qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let r = node.terminate(ID).await.unwrap();
        assert_eq!(r.state, NodeInstanceState::ShuttingDown);
        node.shutdown_all().await;
        (pid, state(&node))
    });
    drop(rt1); // euca up exits: every task left is cancelled
    assert!(
        !alive(pid),
        "QEMU {pid} outlived the node controller's shutdown"
    );
    assert_eq!(after, NodeInstanceState::Terminated);
    assert!(!idir.join("root.qcow2").exists());
    // Released once, though both the terminate and the shutdown ran.
    assert!(images.pinned().is_empty(), "{:?}", images.calls());
    let rel = ImageCall::Release {
        image: img_id('f'),
        holder: ID.into(),
    };
    assert_eq!(images.calls().iter().filter(|c| **c == rel).count(), 1);
    drop(reaper);
}
