//! Instance networking on the node (issue 14), with real QEMU (TCG) guests (the tiny
//! guest, `EUCA_GUEST_DIR`, default target/guest) that bring eth0 up by DHCP.
//!
//! Root only (skips otherwise, saying so). Everything lives in namespaces named
//! `node-…` that the test makes and deletes:
//!
//! ```text
//!  node-l<pid> "LAN"               node-n<pid> "node" ([nc.net] netns)        node-v<pid> "CC"
//!  dnsmasq on vl1 10.77.0.1/24 ── vl0 ⊂ nbr0 ([nc.net] bridge) ⊃ taps
//!                                  vu0 10.79.0.2/24 ([nc.net] underlay) ── vu1 10.79.0.1/24
//!                                  nb4242 ⊃ nx4242 (VXLAN 4242), taps       vx (VXLAN 4242) 10.80.0.1/24
//!                                                                           + dnsmasq on vx
//! ```
//!
//! QEMU makes each tap in this process's namespace; the NC moves it into the node
//! namespace at once and plugs it there.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use euca_compute_proto::net::{NetMode, NicSpec, Segment};
use euca_compute_proto::{
    CachedImage, InstanceReport, InstanceSpec, NodeInstanceState, RootDisk, VmType,
};
use euca_nc::config::{NcConfig, NcNetConfig};
use euca_nc::hypervisor::{segment_links, tap_name, DirImages, QemuNode};
use euca_nc::Node;

use crate::common;
use common::{console_of, img_id, until};

const SYSTEM_ID: &str = "i-0e0de001";
const STATIC_ID: &str = "i-0e0de002";
const VXLAN_ID: &str = "i-0e0de003";
const NOBRIDGE_ID: &str = "i-0e0de004";
const VXLAN2_ID: &str = "i-0e0de005";
const NOUNDERLAY_ID: &str = "i-0e0de006";
const VNI: u32 = 4242;
const STATIC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 42);

fn mac_of(id: &str) -> String {
    let h = id.strip_prefix("i-0e0de").unwrap();
    format!("d0:0d:0e:0d:e0:{h:0>2}", h = &h[h.len() - 2..])
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &str) -> String {
    let mut a = vec!["-n", ns];
    a.extend(args.split_whitespace());
    run("ip", &a)
}

fn link_exists(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespaces and DHCP servers; all removed on drop (taps with their QEMUs).
struct Testbed {
    node: String,
    lan: String,
    cc: String,
    dir: PathBuf,
    /// dnsmasqs and the stand-in metadata server, killed on drop.
    children: Vec<Child>,
    qemu_pidfiles: Vec<PathBuf>,
}

impl Testbed {
    fn new(dir: &Path) -> Testbed {
        let p = std::process::id();
        let t = Testbed {
            node: format!("node-n{p}"),
            lan: format!("node-l{p}"),
            cc: format!("node-v{p}"),
            dir: dir.to_path_buf(),
            children: vec![],
            qemu_pidfiles: vec![],
        };
        for ns in [&t.node, &t.lan, &t.cc] {
            run("ip", &["netns", "add", ns]);
            ip(ns, "link set lo up");
        }
        let (n, l, c) = (&t.node, &t.lan, &t.cc);
        ip(n, "link add nbr0 type bridge stp_state 0 forward_delay 0");
        ip(n, "link set nbr0 up");
        ip(
            n,
            &format!("link add vl0 type veth peer name vl1 netns {l}"),
        );
        ip(n, "link set vl0 master nbr0 up");
        ip(l, "addr add 10.77.0.1/24 dev vl1");
        ip(l, "link set vl1 up");
        ip(
            n,
            &format!("link add vu0 type veth peer name vu1 netns {c}"),
        );
        ip(n, "addr add 10.79.0.2/24 dev vu0");
        ip(n, "link set vu0 up");
        ip(c, "addr add 10.79.0.1/24 dev vu1");
        ip(c, "link set vu1 up");
        ip(
            c,
            &format!("link add vx type vxlan id {VNI} group 239.35.0.1 dstport 4789 dev vu1"),
        );
        ip(c, "addr add 10.80.0.1/24 dev vx");
        ip(c, "link set vx up");
        t
    }

    /// dnsmasq as a DHCP server only (`--port=0`), in the foreground, on `dev` of
    /// namespace `ns`; `extra` says what it hands out.
    fn dnsmasq(&mut self, ns: &str, dev: &str, extra: &[String]) -> usize {
        let n = self.children.len();
        let mut a: Vec<String> = [
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--port=0",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--log-dhcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(format!("--interface={dev}"));
        a.push(format!(
            "--dhcp-leasefile={}",
            self.dir.join(format!("leases{n}")).display()
        ));
        a.push(format!(
            "--pid-file={}",
            self.dir.join(format!("dnsmasq{n}.pid")).display()
        ));
        a.push(format!(
            "--log-facility={}",
            self.dir.join(format!("dnsmasq{n}.log")).display()
        ));
        a.extend(extra.iter().cloned());
        let child = Command::new("ip")
            .args(&a)
            .stdin(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        self.children.push(child);
        n
    }

    /// A stand-in metadata service at 169.254.169.254 in the LAN namespace (busybox
    /// httpd over files): the guest's side of the protocol, not the CC's service.
    fn metadata(&mut self, instance_id: &str, user_data: &str) {
        let root = self.dir.join("md");
        let md = root.join("latest/meta-data");
        std::fs::create_dir_all(&md).unwrap();
        std::fs::write(md.join("instance-id"), instance_id).unwrap();
        std::fs::write(root.join("latest/user-data"), user_data).unwrap();
        ip(&self.lan, "addr add 169.254.169.254/32 dev lo");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lan, "busybox", "httpd", "-f"])
            .args(["-p", "169.254.169.254:80", "-h"])
            .arg(&root)
            .stdin(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        self.children.push(child);
    }

    fn stop_dnsmasq(&mut self, n: usize) {
        let c = &mut self.children[n];
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        common::kill_qemus(&self.qemu_pidfiles);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.node, &self.lan, &self.cc] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn spec(id: &str, nic: NicSpec) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        account: "000000000001".into(),
        reservation_id: "r-0e0de000".into(),
        vm_type: VmType {
            name: "m1.small".into(),
            cores: 1,
            memory_mib: 256,
            disk_gib: 5,
        },
        root: RootDisk::Image(CachedImage {
            installed_id: img_id('a'),
            size: 1 << 20,
        }),
        kernel: Some(CachedImage {
            installed_id: img_id('b'),
            size: 0,
        }),
        ramdisk: Some(CachedImage {
            installed_id: img_id('c'),
            size: 0,
        }),
        mac: mac_of(id),
        user_data: None,
        public_key: None,
        volumes: vec![],
        nic: Some(nic),
        incarnation: 0,
    }
}

fn report(node: &QemuNode, id: &str) -> InstanceReport {
    node.report()
        .instances
        .into_iter()
        .find(|i| i.instance_id == id)
        .unwrap()
}

/// Waits for the guest's `TG-LEASE` line and returns its address (a lease failure
/// or a guest that stops fails the test with its console).
async fn lease(node: &QemuNode, id: &str) -> Ipv4Addr {
    for _ in 0..180 * 2 {
        let c = console_of(node, id).await;
        if let Some(line) = c.lines().find(|l| l.starts_with("TG-LEASE ")) {
            eprintln!("{id}: {line}");
            let ip = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ip="))
                .unwrap_or_else(|| panic!("no ip= in {line:?}"));
            return ip.parse().unwrap();
        }
        assert!(!c.contains("TG-LEASE-FAILED"), "{id} got no lease:\n{c}");
        let r = report(node, id);
        assert!(
            matches!(
                r.state,
                NodeInstanceState::Pending | NodeInstanceState::Running
            ),
            "{id}: {r:?}\n{c}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{id}: no TG-LEASE line:\n{}", console_of(node, id).await);
}

async fn until_console(node: &QemuNode, id: &str, what: &str) -> String {
    for _ in 0..120 * 2 {
        let mut c = console_of(node, id).await;
        // Complete lines only: the rest of a line still being printed is checked later.
        c.truncate(c.rfind('\n').map_or(0, |i| i + 1));
        if c.contains(what) {
            return c;
        }
        assert!(!c.contains("TG-META-FAILED"), "{id}: no metadata:\n{c}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{id}: no {what:?} on the console:\n{}",
        console_of(node, id).await
    );
}

fn master_of(ns: &str, dev: &str) -> Option<String> {
    let out = ip(ns, &format!("-o link show dev {dev}"));
    let mut words = out.split_whitespace();
    words.find(|w| *w == "master")?;
    words.next().map(str::to_string)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Whether `ip` is `net.lo` … `net.hi` (a DHCP pool).
fn in_pool(ip: Ipv4Addr, net: [u8; 3], hosts: std::ops::RangeInclusive<u8>) -> bool {
    let o = ip.octets();
    o[..3] == net && hosts.contains(&o[3])
}

#[test]
fn guests_get_addresses_by_dhcp_on_their_segments() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, taps)");
        return;
    }
    let guest = common::guest_path();
    if !guest.join("vmlinux").is_file() {
        eprintln!(
            "SKIPPED: no tiny guest at {} (tools/vm/build-tiny-guest.sh, or set EUCA_GUEST_DIR)",
            guest.display()
        );
        return;
    }
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no dnsmasq (apt-get install dnsmasq-base)");
        return;
    }
    let _one = common::one_guest();
    // The stand-in metadata server, ping and wget on the LAN side.
    if Command::new("busybox").output().is_err() {
        eprintln!("SKIPPED: no busybox (apt-get install busybox-static)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(tmp.path());
    let imgs = tmp.path().join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::write(imgs.join(img_id('a')), vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink(guest.join("vmlinux"), imgs.join(img_id('b'))).unwrap();
    std::os::unix::fs::symlink(guest.join("initramfs.gz"), imgs.join(img_id('c'))).unwrap();
    let images = Arc::new(DirImages::new(imgs));
    let cfg = NcConfig {
        dir: tmp.path().join("nc"),
        cores: Some(4),
        memory_mib: Some(4000),
        disk_gib: Some(40),
        shutdown_timeout_secs: 1,
        net: NcNetConfig {
            bridge: "nbr0".into(),
            netns: Some(tb.node.clone()),
            underlay: Some("vu0".into()),
            ..NcNetConfig::default()
        },
        ..NcConfig::default()
    };
    for id in [
        SYSTEM_ID,
        STATIC_ID,
        VXLAN_ID,
        NOBRIDGE_ID,
        VXLAN2_ID,
        NOUNDERLAY_ID,
    ] {
        tb.qemu_pidfiles
            .push(cfg.dir.join("instances").join(id).join("qemu.pid"));
    }
    // The LAN's own DHCP server (SYSTEM mode: not the cloud's), and the "CC's" on
    // the far end of the VXLAN segment.
    let lan_dhcp = tb.dnsmasq(
        &tb.lan.clone(),
        "vl1",
        &[
            "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h".into(),
            "--dhcp-option=3,10.77.0.1".into(),
        ],
    );
    tb.dnsmasq(
        &tb.cc.clone(),
        "vx",
        &["--dhcp-range=10.80.0.100,10.80.0.150,255.255.255.0,1h".into()],
    );
    tb.metadata(SYSTEM_ID, "#!/bin/sh\necho TG-UD-RAN $(cat /tmp/lease)\n");
    let node_ns = tb.node.clone();
    let rt = runtime();
    rt.block_on(async {
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();

        // --- SYSTEM (the LAN's DHCP, learned on the tap) and MANAGED (VXLAN) at once.
        let sys = NicSpec {
            mode: NetMode::System,
            segment: Segment::Bridge,
            private_ip: None,
        };
        node.run(spec(SYSTEM_ID, sys)).await.unwrap();
        let vx = NicSpec {
            mode: NetMode::Managed,
            segment: Segment::Vxlan { vni: VNI },
            private_ip: None,
        };
        node.run(spec(VXLAN_ID, vx.clone())).await.unwrap();
        // A second instance of the same group (VNI) shares the node's segment.
        node.run(spec(VXLAN2_ID, vx)).await.unwrap();
        for id in [SYSTEM_ID, VXLAN_ID, VXLAN2_ID] {
            until("running", 60, || {
                let r = report(&node, id);
                assert_ne!(r.state, NodeInstanceState::Failed, "{r:?}");
                r.state == NodeInstanceState::Running
            })
            .await;
        }
        let tap = tap_name(SYSTEM_ID);
        assert_eq!(master_of(&node_ns, &tap).as_deref(), Some("nbr0"));
        let (br, vxdev) = segment_links(VNI);
        assert_eq!(
            master_of(&node_ns, &tap_name(VXLAN_ID)).as_deref(),
            Some(br.as_str())
        );
        let d = ip(&node_ns, &format!("-d link show dev {vxdev}"));
        assert!(
            d.contains(&format!("vxlan id {VNI} group 239.35.0.1 dev vu0")),
            "{d}"
        );
        assert_eq!(master_of(&node_ns, &vxdev).as_deref(), Some(br.as_str()));
        // The taps are not left in this namespace.
        assert!(!Path::new("/sys/class/net").join(&tap).exists());

        let got = lease(&node, SYSTEM_ID).await;
        assert!(in_pool(got, [10, 77, 0], 100..=150), "{got}");
        until("the learned address", 30, || {
            report(&node, SYSTEM_ID).learned_ip == Some(got)
        })
        .await;
        let over_vxlan = lease(&node, VXLAN_ID).await;
        assert!(in_pool(over_vxlan, [10, 80, 0], 100..=150), "{over_vxlan}");
        assert_eq!(report(&node, VXLAN_ID).learned_ip, None, "not system mode");

        // The guest reached the metadata service through its DHCP default route and
        // ran its script user-data; it answers ping and serves its page.
        let c = until_console(&node, SYSTEM_ID, "TG-UD-RAN").await;
        assert!(
            c.contains(&format!("TG-META instance-id={SYSTEM_ID}")),
            "{c}"
        );
        assert!(c.contains(&format!("TG-UD-RAN ip={got}")), "{c}");
        let lan = tb.lan.clone();
        let target = got.to_string();
        let page = tokio::task::spawn_blocking(move || {
            run(
                "ip",
                &[
                    "netns", "exec", &lan, "busybox", "ping", "-c", "1", "-W", "5", &target,
                ],
            );
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &lan,
                    "timeout",
                    "5",
                    "busybox",
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    &format!("http://{target}/"),
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(page.trim(), format!("instance-id={SYSTEM_ID}"));

        // --- A restarted NC still reports the learned address and keeps the plugs.
        drop(node);
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let r = report(&node, SYSTEM_ID);
        assert_eq!(r.state, NodeInstanceState::Running);
        assert_eq!(r.learned_ip, Some(got));
        assert_eq!(master_of(&node_ns, &tap).as_deref(), Some("nbr0"));
        assert!(link_exists(&node_ns, &br));

        for id in [SYSTEM_ID, VXLAN_ID] {
            node.terminate(id).await.unwrap();
        }
        for id in [SYSTEM_ID, VXLAN_ID] {
            until("terminated", 60, || {
                report(&node, id).state == NodeInstanceState::Terminated
            })
            .await;
        }
        // The segment stays while an instance of its VNI runs here …
        assert_eq!(
            master_of(&node_ns, &tap_name(VXLAN2_ID)).as_deref(),
            Some(br.as_str())
        );
        assert_eq!(master_of(&node_ns, &vxdev).as_deref(), Some(br.as_str()));
        node.terminate(VXLAN2_ID).await.unwrap();
        until("terminated", 60, || {
            report(&node, VXLAN2_ID).state == NodeInstanceState::Terminated
        })
        .await;
        // … and goes with the last one; the taps went with their QEMUs.
        assert!(!link_exists(&node_ns, &br), "{br} left behind");
        assert!(!link_exists(&node_ns, &vxdev), "{vxdev} left behind");
        assert!(!link_exists(&node_ns, &tap), "{tap} left behind");
        assert!(link_exists(&node_ns, "nbr0"), "the node's bridge stays");

        // --- STATIC: the cloud's DHCP hands out a fixed MAC → IP pair.
        tb.stop_dnsmasq(lan_dhcp);
        let fixed = [
            "--dhcp-range=10.77.0.0,static,255.255.255.0,1h".to_string(),
            format!("--dhcp-host={},{STATIC_IP}", mac_of(STATIC_ID)),
        ];
        tb.dnsmasq(&tb.lan.clone(), "vl1", &fixed);
        let st = NicSpec {
            mode: NetMode::Static,
            segment: Segment::Bridge,
            private_ip: Some(STATIC_IP),
        };
        node.run(spec(STATIC_ID, st)).await.unwrap();
        assert_eq!(lease(&node, STATIC_ID).await, STATIC_IP);
        assert_eq!(report(&node, STATIC_ID).learned_ip, None, "not system mode");
        node.terminate(STATIC_ID).await.unwrap();
        until("terminated", 60, || {
            report(&node, STATIC_ID).state == NodeInstanceState::Terminated
        })
        .await;
    });
    drop(rt);

    // --- A bridge that does not exist: the instance fails, saying so, and no
    // QEMU ever runs with an unplugged NIC.
    let rt = runtime();
    rt.block_on(async {
        let mut cfg = cfg.clone();
        cfg.net.bridge = "nosuchbr".into();
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let nic = NicSpec {
            mode: NetMode::Static,
            segment: Segment::Bridge,
            private_ip: Some(STATIC_IP),
        };
        node.run(spec(NOBRIDGE_ID, nic)).await.unwrap();
        until("failed", 60, || {
            report(&node, NOBRIDGE_ID).state == NodeInstanceState::Failed
        })
        .await;
        let why = report(&node, NOBRIDGE_ID).reason.unwrap().message;
        assert!(why.contains("bridge nosuchbr does not exist"), "{why}");
        let pidfile = cfg.dir.join("instances").join(NOBRIDGE_ID).join("qemu.pid");
        assert!(!pidfile.exists(), "QEMU was started");

        // The same for a VXLAN segment without its underlay device.
        let mut cfg = cfg.clone();
        cfg.net.underlay = Some("nosuchdev".into());
        drop(node);
        let node = QemuNode::open(cfg.clone(), images.clone()).await.unwrap();
        let nic = NicSpec {
            mode: NetMode::Managed,
            segment: Segment::Vxlan { vni: VNI },
            private_ip: None,
        };
        node.run(spec(NOUNDERLAY_ID, nic)).await.unwrap();
        until("failed", 60, || {
            report(&node, NOUNDERLAY_ID).state == NodeInstanceState::Failed
        })
        .await;
        let why = report(&node, NOUNDERLAY_ID).reason.unwrap().message;
        assert!(why.contains("underlay nosuchdev does not exist"), "{why}");
        assert!(!link_exists(&node_ns, &segment_links(VNI).0));
    });
    drop(tb);
}
