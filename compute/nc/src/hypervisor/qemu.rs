//! QEMU's command line, its start (daemonized: its own session, so it outlives the
//! NC, even `kill -9` of it), and what the NC knows of a QEMU process by its pid.
use std::path::{Path, PathBuf};
use std::time::Duration;

use euca_compute_proto::InstanceSpec;
use serde_json::{json, Value};

use crate::NcError;

/// The kernel command line for kernel + ramdisk boots: Eucalyptus' `root=/dev/vda
/// console=ttyS0`, plus `no_timer_check`: under TCG on a loaded host the guest's
/// early IO-APIC timer check can miss its ticks and panic the kernel ("IO-APIC +
/// timer doesn't work!"; seen with 20 guests booting on 2 busy cores).
pub const KERNEL_APPEND: &str = "root=/dev/vda console=ttyS0 no_timer_check";
/// The QOM id of the TLS credentials object (`nbds://` exports).
pub const TLS_CREDS_ID: &str = "nbdtls";
/// How long QEMU may take to initialize before `-daemonize` returns.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An NBD export as QEMU's nbd block driver takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdTarget {
    pub host: String,
    pub port: u16,
    pub export: String,
    pub tls: bool,
}

impl NbdTarget {
    /// Parses `nbd://host[:port]/export` or `nbds://…` (TLS); IPv6 hosts in brackets.
    pub fn parse(uri: &str) -> Result<NbdTarget, NcError> {
        let bad = |why: &str| NcError::BadRequest(format!("volume export {uri:?}: {why}"));
        let (tls, rest) = if let Some(r) = uri.strip_prefix("nbd://") {
            (false, r)
        } else if let Some(r) = uri.strip_prefix("nbds://") {
            (true, r)
        } else {
            return Err(bad("not an nbd:// or nbds:// URI"));
        };
        let (authority, export) = match rest.split_once('/') {
            Some((a, e)) => (a, e),
            None => (rest, ""),
        };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 10809,
        };
        Ok(NbdTarget {
            host: host.to_string(),
            port,
            export: export.to_string(),
            tls,
        })
    }

    /// The `blockdev-add` arguments (also the `-blockdev` JSON) for node `node`.
    pub fn blockdev(&self, node: &str) -> Value {
        let mut v = json!({
            "driver": "nbd",
            "node-name": node,
            "server": {"type": "inet", "host": self.host, "port": self.port.to_string()},
            "export": self.export,
        });
        if self.tls {
            v["tls-creds"] = json!(TLS_CREDS_ID);
        }
        v
    }
}

/// An iSCSI LUN as QEMU's iscsi block driver takes it, with the CHAP user and
/// secret the SC gave the attachment.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiTarget {
    /// `host:port` (IPv6 hosts in brackets).
    pub portal: String,
    pub iqn: String,
    pub lun: u32,
    pub chap: Option<(String, String)>,
}

impl std::fmt::Debug for IscsiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiTarget")
            .field("portal", &self.portal)
            .field("iqn", &self.iqn)
            .field("lun", &self.lun)
            .field("user", &self.chap.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

impl IscsiTarget {
    /// Parses libiscsi's form, `iscsi://[USER%SECRET@]host[:port]/<iqn>/<lun>`
    /// (the SC's iSCSI attachments; no percent-decoding: `%` separates the user
    /// from the secret, as in libiscsi).
    pub fn parse(uri: &str) -> Result<IscsiTarget, NcError> {
        let bad = |why: &str| NcError::BadRequest(format!("volume export: {why}"));
        let rest = uri
            .strip_prefix("iscsi://")
            .ok_or_else(|| bad("not an iscsi:// URI"))?;
        let (creds, rest) = match rest.rsplit_once('@') {
            Some((c, r)) => (Some(c), r),
            None => (None, rest),
        };
        let chap = match creds {
            None => None,
            Some(c) => {
                let (u, p) = c
                    .split_once('%')
                    .ok_or_else(|| bad("iSCSI credentials without a secret"))?;
                if u.is_empty() || p.is_empty() {
                    return Err(bad("empty iSCSI user or secret"));
                }
                Some((u.to_string(), p.to_string()))
            }
        };
        let mut parts = rest.splitn(3, '/');
        let authority = parts.next().unwrap_or("");
        let iqn = parts.next().unwrap_or("");
        let lun = parts.next().unwrap_or("");
        if authority.is_empty() || authority.starts_with(':') {
            return Err(bad("no host"));
        }
        let has_port = match authority.strip_prefix('[') {
            Some(r) => {
                let (_, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
                !after.is_empty()
            }
            None => authority.contains(':'),
        };
        let portal = if has_port {
            let port = authority.rsplit_once(':').map_or("", |(_, p)| p);
            port.parse::<u16>().map_err(|_| bad("bad port"))?;
            authority.to_string()
        } else {
            format!("{authority}:3260")
        };
        if iqn.is_empty() {
            return Err(bad("no target name"));
        }
        let lun = lun.parse::<u32>().map_err(|_| bad("bad LUN"))?;
        Ok(IscsiTarget {
            portal,
            iqn: iqn.to_string(),
            lun,
            chap,
        })
    }
}

/// A volume's export, as the SC's URI names it: NBD or iSCSI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeTarget {
    Nbd(NbdTarget),
    Iscsi(IscsiTarget),
}

impl VolumeTarget {
    /// `nbd://`, `nbds://` or `iscsi://`.
    pub fn parse(uri: &str) -> Result<VolumeTarget, NcError> {
        if uri.starts_with("iscsi://") {
            IscsiTarget::parse(uri).map(VolumeTarget::Iscsi)
        } else {
            NbdTarget::parse(uri).map(VolumeTarget::Nbd)
        }
    }

    /// Whether it needs the NC's NBD TLS credentials.
    pub fn tls(&self) -> bool {
        matches!(self, VolumeTarget::Nbd(t) if t.tls)
    }

    /// The QOM id of the secret object holding node `node`'s CHAP secret.
    pub fn secret_id(node: &str) -> String {
        format!("{node}-chap")
    }

    /// The CHAP secret QEMU must hold (as a `secret` object named
    /// [`VolumeTarget::secret_id`]) before the block node is added.
    pub fn secret(&self) -> Option<&str> {
        match self {
            VolumeTarget::Iscsi(IscsiTarget {
                chap: Some((_, secret)),
                ..
            }) => Some(secret),
            _ => None,
        }
    }

    /// The `blockdev-add` arguments (also the `-blockdev` JSON) for node `node`.
    pub fn blockdev(&self, node: &str) -> Value {
        match self {
            VolumeTarget::Nbd(t) => t.blockdev(node),
            VolumeTarget::Iscsi(t) => {
                let mut v = json!({
                    "driver": "iscsi",
                    "node-name": node,
                    "transport": "tcp",
                    "portal": t.portal,
                    "target": t.iqn,
                    "lun": t.lun,
                });
                if let Some((user, _)) = &t.chap {
                    v["user"] = json!(user);
                    v["password-secret"] = json!(Self::secret_id(node));
                }
                v
            }
        }
    }
}

/// The file a boot-time CHAP secret is handed to QEMU in (0600, in the instance
/// dir; never on the command line, which every local user can read). The NC
/// removes it once QEMU has started.
pub fn secret_file(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.chap"))
}

/// Where the root disk comes from.
pub enum RootSource {
    /// `root.qcow2`, the overlay on the cached image.
    Overlay(PathBuf),
    /// The SC's export of the root volume.
    Volume(VolumeTarget),
}

/// A volume attached at boot: its block node, device id and export.
pub struct BootVolume {
    pub node: String,
    pub dev: String,
    pub target: VolumeTarget,
}

/// Everything the command line is made from.
pub struct Launch<'a> {
    pub spec: &'a InstanceSpec,
    pub accel: &'a str,
    pub dir: &'a Path,
    pub root: RootSource,
    pub ephemeral: PathBuf,
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub volumes: Vec<BootVolume>,
    pub tls_dir: Option<&'a Path>,
    /// The tap QEMU makes for the NIC (`spec.nic` is set): `None` gives no NIC.
    pub tap: Option<String>,
}

/// QEMU's option syntax doubles commas inside a value.
fn opt_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Whether `mac` is six colon-separated hex octets (then it goes on the NIC).
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Launch<'_> {
    /// The arguments after the binary. Disks as `-blockdev`/`-device` JSON (paths
    /// need no escaping there): the root is the first virtio disk (`/dev/vda`), the
    /// ephemeral disk the second, boot-time volumes after them.
    pub fn args(&self) -> Vec<String> {
        let d = self.dir;
        let mut a: Vec<String> = Vec::new();
        let mut push = |x: &[&str]| a.extend(x.iter().map(|s| s.to_string()));
        let mem = format!("{}M", self.spec.vm_type.memory_mib.max(16));
        let cores = self.spec.vm_type.cores.max(1).to_string();
        push(&["-name", &self.spec.instance_id]);
        push(&["-accel", self.accel, "-M", "pc", "-m", &mem, "-smp", &cores]);
        push(&["-nodefaults", "-display", "none"]);
        let qmp = format!(
            "socket,id=qmp,path={},server=on,wait=off",
            opt_escape(&d.join("qmp.sock"))
        );
        push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
        let console = format!(
            "file,id=console,path={},append=on",
            opt_escape(&d.join("console.log"))
        );
        push(&["-chardev", &console, "-serial", "chardev:console"]);
        let pidfile = d.join("qemu.pid").to_string_lossy().into_owned();
        push(&["-daemonize", "-pidfile", &pidfile]);
        if let Some(dir) = self.tls_dir {
            let o = json!({"qom-type": "tls-creds-x509", "id": TLS_CREDS_ID,
                "dir": dir.to_string_lossy(), "endpoint": "client"});
            push(&["-object", &o.to_string()]);
        }
        let mut secret = |node: &str, t: &VolumeTarget| {
            if t.secret().is_some() {
                let o = json!({"qom-type": "secret", "id": VolumeTarget::secret_id(node),
                    "file": secret_file(d, node).to_string_lossy()});
                a.extend(["-object".to_string(), o.to_string()]);
            }
        };
        let root = match &self.root {
            RootSource::Overlay(p) => json!({"driver": "qcow2", "node-name": "root",
                "file": {"driver": "file", "filename": p.to_string_lossy()}}),
            RootSource::Volume(t) => {
                secret("root", t);
                t.blockdev("root")
            }
        };
        for v in &self.volumes {
            secret(&v.node, &v.target);
        }
        let mut push = |x: &[&str]| a.extend(x.iter().map(|s| s.to_string()));
        let eph = json!({"driver": "qcow2", "node-name": "eph",
            "file": {"driver": "file", "filename": self.ephemeral.to_string_lossy()}});
        push(&["-blockdev", &root.to_string()]);
        let root_dev = json!({"driver": "virtio-blk-pci", "drive": "root", "id": "root-disk",
            "bootindex": 1});
        push(&["-device", &root_dev.to_string()]);
        push(&["-blockdev", &eph.to_string()]);
        let eph_dev = json!({"driver": "virtio-blk-pci", "drive": "eph", "id": "eph-disk"});
        push(&["-device", &eph_dev.to_string()]);
        for v in &self.volumes {
            push(&["-blockdev", &v.target.blockdev(&v.node).to_string()]);
            let dev = json!({"driver": "virtio-blk-pci", "drive": v.node, "id": v.dev});
            push(&["-device", &dev.to_string()]);
        }
        if let Some(k) = &self.kernel {
            push(&["-kernel", &k.to_string_lossy(), "-append", KERNEL_APPEND]);
            if let Some(r) = &self.ramdisk {
                push(&["-initrd", &r.to_string_lossy()]);
            }
        }
        // The NIC, with the instance's MAC, on a tap QEMU makes and the NC then plugs
        // into the instance's segment (`script=no`: QEMU runs no helper as root).
        match &self.tap {
            Some(tap) if valid_mac(&self.spec.mac) => {
                let netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
                push(&["-netdev", &netdev]);
                let nic = json!({"driver": "virtio-net-pci", "id": "nic0", "netdev": "net0",
                    "mac": self.spec.mac});
                push(&["-device", &nic.to_string()]);
            }
            _ => push(&["-nic", "none"]),
        }
        a
    }
}

/// Starts QEMU with `args`; returns once it has daemonized (initialized, QMP socket
/// listening) with its pid from the pid file.
pub async fn start(qemu: &Path, args: &[String], dir: &Path) -> Result<i32, NcError> {
    let mut cmd = tokio::process::Command::new(qemu);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(START_TIMEOUT, cmd.output())
        .await
        .map_err(|_| NcError::Internal(format!("QEMU did not start within {START_TIMEOUT:?}")))?
        .map_err(|e| NcError::Internal(format!("running {}: {e}", qemu.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(NcError::Internal(format!(
            "QEMU failed to start ({}): {}",
            out.status,
            tail.trim()
        )));
    }
    let pidfile = dir.join("qemu.pid");
    let text = tokio::fs::read_to_string(&pidfile)
        .await
        .map_err(|e| NcError::Internal(format!("reading {}: {e}", pidfile.display())))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| NcError::Internal(format!("bad pid file {}", pidfile.display())))
}

/// Whether `pid` is a live QEMU of instance `id` (`-name <id>` in its command line),
/// so a recycled pid is never taken for it (blocking: reads /proc).
pub fn is_instance_process(pid: i32, id: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"-name" && w[1] == id.as_bytes())
}

/// Reads the pid file of an instance dir (blocking).
pub fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Sends SIGKILL to `pid` if it still is instance `id`'s QEMU.
pub fn kill(pid: i32, id: &str) {
    if is_instance_process(pid, id) {
        // SAFETY: a plain syscall; the pid was just checked to be this instance's QEMU.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Waits until `pid` is no longer instance `id`'s QEMU, up to `limit`; whether it is gone.
pub async fn wait_gone(pid: i32, id: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let id2 = id.to_string();
        let alive = tokio::task::spawn_blocking(move || is_instance_process(pid, &id2))
            .await
            .unwrap_or(false);
        if !alive {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_compute_proto::{CachedImage, RootDisk, VmType};

    #[test]
    fn parses_exports() {
        let t = NbdTarget::parse("nbd://127.0.0.1:10899/vol-1").unwrap();
        assert_eq!(
            t,
            NbdTarget {
                host: "127.0.0.1".into(),
                port: 10899,
                export: "vol-1".into(),
                tls: false
            }
        );
        let t = NbdTarget::parse("nbds://[::1]:7000/e").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 7000, true));
        assert_eq!(t.blockdev("n1")["tls-creds"], TLS_CREDS_ID);
        assert_eq!(t.blockdev("n1")["server"]["port"], "7000");
        let t = NbdTarget::parse("nbd://host").unwrap();
        assert_eq!((t.port, t.export.as_str()), (10809, ""));
        for bad in [
            "http://x/y",
            "nbd://:1/e",
            "nbd://h:99999/e",
            "nbds://[::1/e",
        ] {
            assert!(NbdTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_iscsi_exports_and_keeps_the_secret_off_the_command_line() {
        let uri = "iscsi://node-1%s3cr3t@10.0.0.5:3261/iqn.2026-12.sc.euca:vol-1-ab/0";
        let t = VolumeTarget::parse(uri).unwrap();
        let VolumeTarget::Iscsi(i) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(
            (i.portal.as_str(), i.iqn.as_str(), i.lun),
            ("10.0.0.5:3261", "iqn.2026-12.sc.euca:vol-1-ab", 0)
        );
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert_eq!(t.secret(), Some("s3cr3t"));
        assert!(!t.tls());
        let b = t.blockdev("v1");
        assert_eq!(b["driver"], "iscsi");
        assert_eq!(b["user"], "node-1");
        assert_eq!(b["password-secret"], "v1-chap");
        assert!(!b.to_string().contains("s3cr3t"));
        let t = VolumeTarget::parse("iscsi://[::1]/iqn.x:y/3").unwrap();
        assert_eq!(t.blockdev("n")["portal"], "[::1]:3260");
        assert_eq!(t.secret(), None);
        for bad in [
            "iscsi://h/iqn",
            "iscsi://h/iqn/x",
            "iscsi://u@h/iqn/0",
            "iscsi://h:99999/iqn/0",
            "iscsi:///iqn/0",
            "iscsi://h//0",
        ] {
            assert!(VolumeTarget::parse(bad).is_err(), "{bad}");
        }
        // At boot the secret goes to QEMU in a file, not in its arguments.
        let s = spec();
        let dir = Path::new("/d");
        let l = Launch {
            spec: &s,
            accel: "tcg",
            dir,
            root: RootSource::Volume(VolumeTarget::parse(uri).unwrap()),
            ephemeral: dir.join("ephemeral.qcow2"),
            kernel: None,
            ramdisk: None,
            volumes: vec![],
            tls_dir: None,
            tap: None,
        };
        let j = l.args().join(" ");
        assert!(!j.contains("s3cr3t"), "{j}");
        let obj = l
            .args()
            .into_iter()
            .find(|x| x.contains("\"qom-type\":\"secret\""))
            .unwrap();
        let obj: Value = serde_json::from_str(&obj).unwrap();
        assert_eq!(obj["id"], "root-chap");
        assert_eq!(obj["file"], "/d/root.chap");
        assert!(j.contains("\"driver\":\"iscsi\""));
    }

    fn spec() -> InstanceSpec {
        InstanceSpec {
            instance_id: "i-0123abcd".into(),
            account: "000000000001".into(),
            reservation_id: "r-1".into(),
            vm_type: VmType {
                name: "m1.small".into(),
                cores: 1,
                memory_mib: 256,
                disk_gib: 5,
            },
            root: RootDisk::Image(CachedImage {
                installed_id: "a".repeat(64),
                size: 1 << 20,
            }),
            kernel: None,
            ramdisk: None,
            mac: "d0:0d:01:02:03:04".into(),
            user_data: None,
            public_key: None,
            volumes: vec![],
            nic: None,
            incarnation: 0,
        }
    }

    #[test]
    fn command_line() {
        let s = spec();
        let dir = Path::new("/x,y/i-0123abcd");
        let l = Launch {
            spec: &s,
            accel: "tcg",
            dir,
            root: RootSource::Overlay(dir.join("root.qcow2")),
            ephemeral: dir.join("ephemeral.qcow2"),
            kernel: Some("/g/vmlinux".into()),
            ramdisk: Some("/g/initrd".into()),
            volumes: vec![BootVolume {
                node: "n1".into(),
                dev: "d1".into(),
                target: VolumeTarget::parse("nbd://127.0.0.1:1/v").unwrap(),
            }],
            tls_dir: None,
            tap: Some("t-0123abcd".into()),
        };
        let a = l.args();
        let j = a.join(" ");
        assert!(j.contains("-name i-0123abcd -accel tcg -M pc -m 256M -smp 1"));
        assert!(j.contains("path=/x,,y/i-0123abcd/qmp.sock,server=on,wait=off"));
        assert!(j.contains("-append root=/dev/vda console=ttyS0 no_timer_check"));
        assert!(j.contains("-initrd /g/initrd"));
        assert!(j.contains("\"mac\":\"d0:0d:01:02:03:04\""));
        assert!(j.contains("-netdev tap,id=net0,ifname=t-0123abcd,script=no,downscript=no"));
        assert!(j.contains("\"netdev\":\"net0\""));
        assert!(!j.contains("-nic none"));
        assert!(!j.contains("tls-creds-x509"));
        // The root is the first disk, then the ephemeral one, then the volume.
        let devs: Vec<&String> = a.iter().filter(|x| x.contains("virtio-blk-pci")).collect();
        assert_eq!(devs.len(), 3);
        assert!(devs[0].contains("\"drive\":\"root\""));
        assert!(devs[1].contains("\"drive\":\"eph\""));
        assert!(devs[2].contains("\"id\":\"d1\""));
        assert!(a
            .iter()
            .any(|x| x.contains("\"filename\":\"/x,y/i-0123abcd/root.qcow2\"")));
    }

    #[test]
    fn nbd_root_with_tls_and_whole_disk_boot() {
        let mut s = spec();
        s.mac = "bogus".into();
        let dir = Path::new("/d");
        let l = Launch {
            spec: &s,
            accel: "kvm",
            dir,
            root: RootSource::Volume(VolumeTarget::parse("nbds://10.0.0.1:5000/root").unwrap()),
            ephemeral: dir.join("ephemeral.qcow2"),
            kernel: None,
            ramdisk: None,
            volumes: vec![],
            tls_dir: Some(Path::new("/etc/tls")),
            tap: Some("t-0123abcd".into()),
        };
        let j = l.args().join(" ");
        assert!(j.contains("-accel kvm"));
        assert!(j.contains("\"qom-type\":\"tls-creds-x509\""));
        assert!(j.contains("\"driver\":\"nbd\""));
        assert!(j.contains("\"tls-creds\":\"nbdtls\""));
        assert!(!j.contains("-kernel"));
        // A tap but no usable MAC: no NIC at all.
        assert!(j.contains("-nic none"));
        assert!(!j.contains("-netdev"));
        // No network interface in the spec: no NIC either.
        let mut s2 = s.clone();
        s2.mac = "d0:0d:01:02:03:04".into();
        let l = Launch {
            spec: &s2,
            tap: None,
            ..l
        };
        let j = l.args().join(" ");
        assert!(j.contains("-nic none") && !j.contains("virtio-net"));
    }
}
