//! Real instances: one `qemu-system-x86_64` per instance.
//!
//! Each instance lives in `<dir>/instances/<id>/`:
//!
//! | file | what |
//! | --- | --- |
//! | `spec.json` | the [`InstanceSpec`], written durably before QEMU starts |
//! | `state.json` | state, reason, attachments (rewritten durably on each change) |
//! | `root.qcow2` | qcow2 overlay on the cached image (kernel boots see it as `/dev/vda`) |
//! | `ephemeral.qcow2` | the type's disk minus the image, ≥ 1 GiB, sparse (`/dev/vdb`) |
//! | `console.log` | the serial console (QEMU appends; the NC cuts its head past 1 MiB, see [`disks::trim_console`]) |
//! | `qmp.sock`, `qemu.pid` | QEMU's monitor and pid |
//!
//! Networking (issue 14): an instance whose spec has a `nic` gets a virtio NIC with
//! its MAC on a tap named after it ([`tap_name`]); after QEMU starts, the NC plugs
//! the tap into the segment the spec names (the `[nc.net]` bridge, or a per-VNI
//! VXLAN segment it creates), and in SYSTEM mode learns the guest's address on it
//! (`state.json`'s `learned_ip`). See `net.rs` and `learn.rs`. Without a `nic` the
//! guest has no NIC (`-nic none`).
//!
//! QEMU runs daemonized (its own session), so it survives the NC; [`QemuNode::open`]
//! adopts every live QEMU whose `/proc/<pid>/cmdline` names its instance, reconnects
//! its QMP socket and reconciles the attachments with the devices QEMU has.
//! A watcher task per instance reads QMP events: `SHUTDOWN` and QEMU's exit →
//! `shutoff`; `STOP` with a dead status (`internal-error`: KVM could not run the
//! guest) → QEMU killed, `failed` with `Server.InternalError`; `DEVICE_DELETED` →
//! detach progress.
//!
//! Volumes: `blockdev-add` (nbd driver, `tls-creds` for `nbds://`; or iscsi driver
//! for `iscsi://`, its CHAP secret first added as a `secret` object over QMP, or at
//! boot read from a 0600 file removed once QEMU has started) + `device_add
//! virtio-blk-pci`; detach = `device_del`, wait for `DEVICE_DELETED` up to
//! `detach_timeout_secs`, `blockdev-del`. QEMU refuses `blockdev-del` while the
//! guest still has the device, so `force` cannot take a device from a guest that
//! does not let go: after the timeout it `yank`s the block node's NBD connection
//! (the guest's I/O on it fails from then on, nothing more reaches the volume, so
//! the SC may detach), reports `detached` with a note, and deletes the block node
//! when the guest finally releases the device.
mod disks;
mod images;
mod learn;
mod net;
mod qemu;
mod qmp;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use euca_compute_proto::net::{NetMode, Segment};
use euca_compute_proto::{
    now_rfc3339, AttachSpec, ConsoleOutput, InstanceReport, InstanceSpec, NodeAttachState,
    NodeInstanceState, NodeReport, Resources, RootDisk, StateReason, VolumeReport, CONSOLE_TAIL,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

pub use images::{CacheImages, DirImages, ImageCall};
pub use net::{segment_links, tap_name};
pub use qemu::{IscsiTarget, NbdTarget, VolumeTarget, KERNEL_APPEND};

use crate::config::NcConfig;
use crate::node::{ImageSource, Node};
use crate::NcError;
use qemu::{BootVolume, Launch, RootSource};
use qmp::{Qmp, QmpError, QmpEvent};

/// How long a terminated instance stays in the report (and its dir on disk).
pub const TOMBSTONE: Duration = Duration::from_secs(15 * 60);
/// The longest unix socket path (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long an adopted or starting QEMU's QMP socket gets to answer.
const QMP_CONNECT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reason(code: &str, message: impl Into<String>) -> Option<StateReason> {
    Some(StateReason {
        code: code.into(),
        message: message.into(),
    })
}

fn internal(e: impl std::fmt::Display) -> NcError {
    NcError::Internal(e.to_string())
}

/// `i-` + 8 to 17 lower-case hex digits (it names a directory).
fn valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|h| {
        (8..=17).contains(&h.len()) && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn valid_volume_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// One attachment as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Vol {
    volume_id: String,
    device: String,
    state: NodeAttachState,
    #[serde(default)]
    error: Option<String>,
    uri: String,
    /// QEMU block node and device ids (fresh per attach).
    node: String,
    dev: String,
    /// Whether QEMU (and the guest) still has the device.
    #[serde(default)]
    plugged: bool,
    /// Detached by force while the guest still held the device.
    #[serde(default)]
    forced: bool,
}

impl Vol {
    fn report(&self) -> VolumeReport {
        VolumeReport {
            volume_id: self.volume_id.clone(),
            device: self.device.clone(),
            state: self.state,
            error: self.error.clone(),
        }
    }
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    state: NodeInstanceState,
    #[serde(default)]
    reason: Option<StateReason>,
    launched_at: String,
    #[serde(default)]
    volumes: Vec<Vol>,
    /// Counter naming block nodes and devices.
    #[serde(default)]
    gen: u64,
    /// Unix seconds the instance was terminated.
    #[serde(default)]
    terminated_at: Option<u64>,
    /// SYSTEM mode: the guest's address as learned on its tap (kept, so a restarted
    /// NC reports it before the guest's next DHCP or ARP packet).
    #[serde(default)]
    learned_ip: Option<Ipv4Addr>,
}

struct Instance {
    spec: InstanceSpec,
    dir: PathBuf,
    rec: Mutex<Record>,
    /// Serializes the QEMU-side work (boot, attach, detach, terminate).
    op: tokio::sync::Mutex<()>,
    /// Orders `state.json` writes.
    persist_lock: tokio::sync::Mutex<()>,
    qmp: Mutex<Option<Arc<Qmp>>>,
    pid: Mutex<Option<i32>>,
    /// Device ids QEMU reported deleted.
    deleted: watch::Sender<HashSet<String>>,
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
    /// SYSTEM mode: the thread watching the tap for the guest's address.
    learner: Mutex<Option<learn::Learner>>,
}

impl Instance {
    fn new(spec: InstanceSpec, dir: PathBuf, rec: Record) -> Arc<Instance> {
        Arc::new(Instance {
            spec,
            dir,
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            persist_lock: tokio::sync::Mutex::new(()),
            qmp: Mutex::new(None),
            pid: Mutex::new(None),
            deleted: watch::channel(HashSet::new()).0,
            watcher: Mutex::new(None),
            learner: Mutex::new(None),
        })
    }

    fn id(&self) -> &str {
        &self.spec.instance_id
    }

    fn state(&self) -> NodeInstanceState {
        lock(&self.rec).state
    }

    fn qmp(&self) -> Option<Arc<Qmp>> {
        lock(&self.qmp).clone()
    }

    fn pid(&self) -> Option<i32> {
        *lock(&self.pid)
    }

    fn report(&self) -> InstanceReport {
        let r = lock(&self.rec);
        InstanceReport {
            instance_id: self.spec.instance_id.clone(),
            account: self.spec.account.clone(),
            reservation_id: self.spec.reservation_id.clone(),
            vm_type: self.spec.vm_type.clone(),
            state: r.state,
            reason: r.reason.clone(),
            mac: self.spec.mac.clone(),
            launched_at: r.launched_at.clone(),
            volumes: r.volumes.iter().map(Vol::report).collect(),
            learned_ip: r.learned_ip,
            incarnation: self.spec.incarnation,
        }
    }

    fn vol_report(&self, volume: &str) -> Option<VolumeReport> {
        lock(&self.rec)
            .volumes
            .iter()
            .find(|v| v.volume_id == volume)
            .map(Vol::report)
    }

    /// Changes the record and writes it.
    async fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut lock(&self.rec));
        self.persist().await;
    }

    /// Changes one attachment (if still there) and writes the record.
    async fn update_vol(&self, volume: &str, f: impl FnOnce(&mut Vol)) {
        self.update(|r| {
            if let Some(v) = r.volumes.iter_mut().find(|v| v.volume_id == volume) {
                f(v)
            }
        })
        .await
    }

    async fn persist(&self) {
        let _g = self.persist_lock.lock().await;
        let body = match serde_json::to_vec_pretty(&*lock(&self.rec)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(instance = self.id(), "encoding state: {e}");
                return;
            }
        };
        let path = self.dir.join("state.json");
        let r = tokio::task::spawn_blocking(move || disks::write_atomic(&path, &body)).await;
        if let Err(e) = r.map_err(internal).and_then(|r| r.map_err(NcError::from)) {
            tracing::error!(instance = self.id(), "writing state.json: {e}");
        }
    }

    /// The images the instance holds pins on.
    fn image_ids(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let RootDisk::Image(ci) = &self.spec.root {
            v.push(ci.installed_id.clone());
        }
        v.extend(self.spec.kernel.iter().map(|k| k.installed_id.clone()));
        v.extend(self.spec.ramdisk.iter().map(|k| k.installed_id.clone()));
        v
    }
}

struct Ctx {
    cfg: NcConfig,
    images: Arc<dyn ImageSource>,
    net: net::NodeNet,
}

type Instances = Arc<Mutex<BTreeMap<String, Arc<Instance>>>>;

pub struct QemuNode {
    ctx: Arc<Ctx>,
    name: String,
    capacity: Resources,
    instances: Instances,
}

impl QemuNode {
    /// Opens the node on `cfg.dir`: checks QEMU and the accelerator, and adopts the
    /// instances an earlier NC process left running (same QEMU process). (Boxed:
    /// compiled here once; see `euca_service::serve_api`.)
    pub fn open(
        cfg: NcConfig,
        images: Arc<dyn ImageSource>,
    ) -> futures::future::BoxFuture<'static, Result<Arc<QemuNode>, NcError>> {
        futures::FutureExt::boxed(Self::opening(cfg, images))
    }

    async fn opening(
        cfg: NcConfig,
        images: Arc<dyn ImageSource>,
    ) -> Result<Arc<QemuNode>, NcError> {
        check_qemu(&cfg).await?;
        let mut cfg = cfg;
        let root = cfg.dir.join("instances");
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| NcError::Config(format!("creating {}: {e}", root.display())))?;
        // Specs (user data, keys), consoles and disks are the instances' owners'
        // alone: nobody else on the host may enter.
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(|e| NcError::Config(format!("securing {}: {e}", root.display())))?;
        }
        let longest = |dir: &std::path::Path| -> Result<usize, NcError> {
            Ok(std::path::absolute(dir)?
                .join("instances")
                .join("i-0123456789abcdef0")
                .join("qmp.sock")
                .as_os_str()
                .len())
        };
        if longest(&cfg.dir)? > MAX_SOCKET_PATH {
            // Every instance path is reached through a short symbolic link to the
            // node's directory, so QMP socket paths fit in `sun_path`.
            let alias = short_alias(&cfg.dir)?;
            if longest(&alias)? > MAX_SOCKET_PATH {
                return Err(NcError::Config(format!(
                    "dir {} is too long for QMP sockets, and so is its alias {}",
                    cfg.dir.display(),
                    alias.display()
                )));
            }
            cfg.dir = alias;
        }
        let dir = cfg.dir.clone();
        let host = tokio::task::spawn_blocking(move || host_capacity(&dir))
            .await
            .map_err(internal)?;
        let capacity = Resources {
            cores: cfg.cores.unwrap_or(host.cores),
            memory_mib: cfg.memory_mib.unwrap_or(host.memory_mib),
            disk_gib: cfg.disk_gib.unwrap_or(host.disk_gib),
        };
        let name = cfg.name.clone().unwrap_or_else(hostname);
        let found = tokio::task::spawn_blocking(move || scan(&root))
            .await
            .map_err(internal)?;
        let node_net = net::NodeNet::new(cfg.net.clone())?;
        // Every live instance's segment is counted before any is unplugged below.
        for inst in &found {
            if let (Some(nic), Some(_)) = (&inst.spec.nic, inst.pid()) {
                node_net.register(inst.id(), nic);
            }
        }
        let ctx = Arc::new(Ctx {
            cfg,
            images,
            net: node_net,
        });
        let instances: Instances = Arc::new(Mutex::new(BTreeMap::new()));
        for inst in found {
            adopt(&ctx, &inst).await;
            lock(&instances).insert(inst.id().to_string(), inst);
        }
        tokio::spawn(janitor(Arc::downgrade(&instances)));
        tokio::spawn(console_trimmer(Arc::downgrade(&instances)));
        Ok(Arc::new(QemuNode {
            ctx,
            name,
            capacity,
            instances,
        }))
    }

    /// Stops every instance's QEMU gracefully (powerdown, then kill after
    /// `shutdown_timeout_secs`), keeping their records: `euca up`'s shutdown.
    /// Terminations in flight are finished too: `euca up` exits right after this,
    /// which would cancel their task in the middle of its grace period and leave
    /// the QEMU (its own session) running with nobody to adopt it.
    pub async fn shutdown_all(&self) {
        let all: Vec<Arc<Instance>> = lock(&self.instances).values().cloned().collect();
        let mut set = tokio::task::JoinSet::new();
        for inst in all {
            let ctx = self.ctx.clone();
            match inst.state() {
                NodeInstanceState::Running | NodeInstanceState::Pending => {}
                NodeInstanceState::ShuttingDown => {
                    // Waits for the terminate task (the op lock), or does its work
                    // if that task never got the lock.
                    set.spawn(async move { terminate_bg(&ctx, &inst).await });
                    continue;
                }
                _ => continue,
            }
            set.spawn(async move {
                inst.update(|r| {
                    r.state = NodeInstanceState::Shutoff;
                    r.reason = reason(
                        "Server.NodeShutdown",
                        "the node controller stopped its instances",
                    );
                })
                .await;
                let _g = inst.op.lock().await;
                stop_qemu(&ctx, &inst).await;
                inst.update(|r| {
                    for v in &mut r.volumes {
                        v.state = NodeAttachState::Detached;
                        v.plugged = false;
                    }
                })
                .await;
            });
        }
        while set.join_next().await.is_some() {}
    }

    fn get(&self, id: &str) -> Result<Arc<Instance>, NcError> {
        lock(&self.instances)
            .get(id)
            .cloned()
            .ok_or_else(|| NcError::InstanceNotFound(id.to_string()))
    }
}

impl Drop for QemuNode {
    /// Stops the watchers (their QMP connections close), as a dying NC would: the
    /// QEMUs run on for the next [`QemuNode::open`] to adopt.
    fn drop(&mut self) {
        for inst in lock(&self.instances).values() {
            if let Some(h) = lock(&inst.watcher).take() {
                h.abort();
            }
            lock(&inst.qmp).take();
            lock(&inst.learner).take();
        }
    }
}

#[async_trait]
impl Node for QemuNode {
    fn report(&self) -> NodeReport {
        let instances = lock(&self.instances).values().map(|i| i.report()).collect();
        NodeReport {
            name: self.name.clone(),
            capacity: self.capacity,
            instances,
        }
    }

    async fn run(&self, spec: InstanceSpec) -> Result<InstanceReport, NcError> {
        if !valid_instance_id(&spec.instance_id) {
            return Err(NcError::BadRequest(format!(
                "bad instance id {:?}",
                spec.instance_id
            )));
        }
        for v in &spec.volumes {
            if !valid_volume_id(&v.volume_id) {
                return Err(NcError::BadRequest(format!(
                    "bad volume id {:?}",
                    v.volume_id
                )));
            }
            check_export(&self.ctx, &v.export.uri)?;
        }
        if let RootDisk::Volume { export, .. } = &spec.root {
            check_export(&self.ctx, &export.uri)?;
        }
        if let Some(nic) = &spec.nic {
            check_nic(&spec.mac, nic)?;
        }
        let inst = {
            let mut map = lock(&self.instances);
            if let Some(i) = map.get(&spec.instance_id) {
                let ended = i.report().state == NodeInstanceState::Terminated;
                if i.spec == spec {
                    // A repeated call (even after the end: never revived).
                    return Ok(i.report());
                }
                if !ended {
                    return Err(NcError::InstanceExists(spec.instance_id));
                }
                // A terminated instance's id launched again with a new spec (an
                // EBS-root instance started after a stop: a new export): the
                // tombstone gives way.
                map.remove(&spec.instance_id);
            }
            let mut rec = Record {
                state: NodeInstanceState::Pending,
                reason: None,
                launched_at: now_rfc3339(),
                volumes: vec![],
                gen: 0,
                terminated_at: None,
                learned_ip: None,
            };
            for v in &spec.volumes {
                rec.gen += 1;
                rec.volumes.push(Vol {
                    volume_id: v.volume_id.clone(),
                    device: v.device.clone(),
                    state: NodeAttachState::Attaching,
                    error: None,
                    uri: v.export.uri.clone(),
                    node: format!("n{}", rec.gen),
                    dev: format!("d{}", rec.gen),
                    plugged: false,
                    forced: false,
                });
            }
            let dir = self.ctx.cfg.dir.join("instances").join(&spec.instance_id);
            let inst = Instance::new(spec, dir, rec);
            map.insert(inst.id().to_string(), inst.clone());
            inst
        };
        let ctx = self.ctx.clone();
        let i2 = inst.clone();
        tokio::spawn(async move {
            let _g = i2.op.lock().await;
            if let Err(e) = boot(&ctx, &i2).await {
                tracing::warn!(instance = i2.id(), "boot failed: {e}");
                fail(&ctx, &i2, &e.to_string()).await;
            }
        });
        Ok(inst.report())
    }

    async fn terminate(&self, id: &str) -> Result<InstanceReport, NcError> {
        let inst = self.get(id)?;
        {
            let mut r = lock(&inst.rec);
            if matches!(
                r.state,
                NodeInstanceState::Terminated | NodeInstanceState::ShuttingDown
            ) {
                drop(r);
                return Ok(inst.report());
            }
            r.state = NodeInstanceState::ShuttingDown;
            r.reason = reason("Client.UserInitiatedShutdown", "User initiated shutdown");
        }
        inst.persist().await;
        let ctx = self.ctx.clone();
        let i2 = inst.clone();
        tokio::spawn(async move { terminate_bg(&ctx, &i2).await });
        Ok(inst.report())
    }

    async fn reboot(&self, id: &str) -> Result<InstanceReport, NcError> {
        let inst = self.get(id)?;
        let qmp = running_qmp(&inst)?;
        qmp.execute("system_reset", Value::Null)
            .await
            .map_err(internal)?;
        Ok(inst.report())
    }

    async fn console(&self, id: &str) -> Result<ConsoleOutput, NcError> {
        let inst = self.get(id)?;
        let path = inst.dir.join("console.log");
        let bytes = tokio::task::spawn_blocking(move || disks::tail(&path, CONSOLE_TAIL))
            .await
            .map_err(internal)??;
        Ok(ConsoleOutput {
            instance_id: id.to_string(),
            timestamp: now_rfc3339(),
            output: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    async fn attach(&self, id: &str, spec: AttachSpec) -> Result<VolumeReport, NcError> {
        let inst = self.get(id)?;
        if !valid_volume_id(&spec.volume_id) {
            return Err(NcError::BadRequest(format!(
                "bad volume id {:?}",
                spec.volume_id
            )));
        }
        check_export(&self.ctx, &spec.export.uri)?;
        let vol = spec.volume_id.clone();
        let reattached = {
            let mut r = lock(&inst.rec);
            if r.state != NodeInstanceState::Running {
                return Err(NcError::IncorrectState(format!(
                    "instance {id} is {:?}, not running",
                    r.state
                )));
            }
            if let Some(v) = r.volumes.iter_mut().find(|v| v.volume_id == vol) {
                match v.state {
                    NodeAttachState::Attached | NodeAttachState::Attaching => return Ok(v.report()),
                    NodeAttachState::Detaching => {
                        return Err(NcError::IncorrectState(format!(
                            "volume {vol} is being detached"
                        )))
                    }
                    // A failed detach left the device in place: attached still.
                    NodeAttachState::Failed if v.plugged => {
                        v.state = NodeAttachState::Attached;
                        v.error = None;
                        true
                    }
                    _ => false,
                }
            } else {
                false
            }
        };
        if reattached {
            inst.persist().await;
            return inst
                .vol_report(&vol)
                .ok_or_else(|| NcError::Internal("attachment vanished".into()));
        }
        {
            let mut r = lock(&inst.rec);
            r.gen += 1;
            let gen = r.gen;
            r.volumes.retain(|v| v.volume_id != vol);
            r.volumes.push(Vol {
                volume_id: vol.clone(),
                device: spec.device.clone(),
                state: NodeAttachState::Attaching,
                error: None,
                uri: spec.export.uri.clone(),
                node: format!("n{gen}"),
                dev: format!("d{gen}"),
                plugged: false,
                forced: false,
            });
        }
        inst.persist().await;
        let i2 = inst.clone();
        let v2 = vol.clone();
        tokio::spawn(async move { attach_bg(&i2, &v2).await });
        inst.vol_report(&vol)
            .ok_or_else(|| NcError::Internal("attachment vanished".into()))
    }

    async fn detach(&self, id: &str, volume: &str, force: bool) -> Result<VolumeReport, NcError> {
        let inst = self.get(id)?;
        let not_attached = || NcError::VolumeNotAttached {
            instance: id.to_string(),
            volume: volume.to_string(),
        };
        let running = inst.state() == NodeInstanceState::Running;
        {
            let mut r = lock(&inst.rec);
            let v = r
                .volumes
                .iter_mut()
                .find(|v| v.volume_id == volume)
                .ok_or_else(not_attached)?;
            match v.state {
                NodeAttachState::Detached | NodeAttachState::Detaching => return Ok(v.report()),
                NodeAttachState::Attaching => {
                    return Err(NcError::IncorrectState(format!(
                        "volume {volume} is still being attached"
                    )))
                }
                NodeAttachState::Failed if !v.plugged => {
                    v.state = NodeAttachState::Detached;
                }
                _ if !running => {
                    // QEMU is gone: nothing holds the export any more.
                    v.state = NodeAttachState::Detached;
                    v.plugged = false;
                }
                _ => {
                    v.state = NodeAttachState::Detaching;
                    v.error = None;
                }
            }
        }
        inst.persist().await;
        if inst
            .vol_report(volume)
            .is_some_and(|v| v.state == NodeAttachState::Detaching)
        {
            let ctx = self.ctx.clone();
            let i2 = inst.clone();
            let v2 = volume.to_string();
            tokio::spawn(async move { detach_bg(&ctx, &i2, &v2, force).await });
        }
        inst.vol_report(volume).ok_or_else(not_attached)
    }
}

/// The QMP connection of a running instance, or `IncorrectState`.
fn running_qmp(inst: &Instance) -> Result<Arc<Qmp>, NcError> {
    let state = inst.state();
    if state != NodeInstanceState::Running {
        return Err(NcError::IncorrectState(format!(
            "instance {} is {state:?}, not running",
            inst.id()
        )));
    }
    inst.qmp().ok_or_else(|| {
        NcError::IncorrectState(format!("instance {}: no QMP connection", inst.id()))
    })
}

/// A NIC needs a MAC (it goes on the NIC, and DHCP keys on it) and a VNI in range.
fn check_nic(mac: &str, nic: &euca_compute_proto::net::NicSpec) -> Result<(), NcError> {
    if learn::parse_mac(mac).is_none() {
        return Err(NcError::BadRequest(format!(
            "a network interface needs a MAC, not {mac:?}"
        )));
    }
    if nic.mode == NetMode::Off {
        return Err(NcError::BadRequest(
            "a network interface in mode off: leave nic out instead".into(),
        ));
    }
    if let Segment::Vxlan { vni } = nic.segment {
        if vni == 0 || vni >= 1 << 24 {
            return Err(NcError::BadRequest(format!(
                "VNI {vni} is outside 1..16777215"
            )));
        }
    }
    Ok(())
}

/// Plugs a started (or adopted) instance's tap into its segment and, in SYSTEM
/// mode, starts learning the guest's address on it.
async fn attach_nic(ctx: &Ctx, inst: &Arc<Instance>) -> Result<(), NcError> {
    let Some(nic) = &inst.spec.nic else {
        return Ok(());
    };
    ctx.net.plug(inst.id(), &inst.spec.mac, nic).await?;
    if nic.mode != NetMode::System || lock(&inst.learner).is_some() {
        return Ok(());
    }
    let mac = learn::parse_mac(&inst.spec.mac)
        .ok_or_else(|| NcError::BadRequest(format!("bad MAC {:?}", inst.spec.mac)))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id, tap) = (inst.id().to_string(), net::tap_name(inst.id()));
    let netns = ctx.net.netns().map(str::to_string);
    let known = lock(&inst.rec).learned_ip;
    let learner = tokio::task::spawn_blocking(move || {
        learn::spawn(&id, &tap, netns.as_deref(), mac, known, tx)
    })
    .await
    .map_err(internal)??;
    *lock(&inst.learner) = Some(learner);
    let i2 = inst.clone();
    // Ends when the learner does (its sender dropped).
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            i2.update(|r| r.learned_ip = Some(l.ip())).await;
        }
    });
    Ok(())
}

fn check_export(ctx: &Ctx, uri: &str) -> Result<VolumeTarget, NcError> {
    let t = VolumeTarget::parse(uri)?;
    if t.tls() && ctx.cfg.nbd_tls_dir.is_none() {
        return Err(NcError::BadRequest(format!(
            "{uri}: a TLS export, but this node has no nbd_tls_dir configured"
        )));
    }
    Ok(t)
}

async fn check_qemu(cfg: &NcConfig) -> Result<(), NcError> {
    if cfg.accel.is_empty() || !cfg.accel.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(NcError::Config(format!("bad accel {:?}", cfg.accel)));
    }
    if cfg.accel == "kvm" && !Path::new("/dev/kvm").exists() {
        return Err(NcError::Config("accel kvm but /dev/kvm is missing".into()));
    }
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&cfg.qemu)
            .arg("-version")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .map_err(|_| NcError::Config(format!("{} -version did not answer", cfg.qemu.display())))?
    .map_err(|e| NcError::Config(format!("QEMU {}: {e}", cfg.qemu.display())))?;
    if !out.status.success() {
        return Err(NcError::Config(format!(
            "{} -version failed: {}",
            cfg.qemu.display(),
            out.status
        )));
    }
    Ok(())
}

/// Writes a CHAP secret for QEMU to read: owner-only from its creation.
async fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::fs::remove_file(path).await;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    f.write_all(secret.as_bytes()).await?;
    f.flush().await
}

/// Prepares the disks and starts QEMU (the caller holds the op lock).
async fn boot(ctx: &Ctx, inst: &Arc<Instance>) -> Result<(), NcError> {
    let cfg = &ctx.cfg;
    // Absolute paths for QEMU (a daemonized QEMU runs in `/`).
    let dir = &std::path::absolute(&inst.dir)?;
    let id = inst.id().to_string();
    tokio::fs::create_dir_all(dir).await?;
    let spec_json = serde_json::to_vec_pretty(&inst.spec).map_err(internal)?;
    let p = dir.join("spec.json");
    tokio::task::spawn_blocking(move || disks::write_atomic(&p, &spec_json))
        .await
        .map_err(internal)??;
    inst.persist().await;

    let (root, image_bytes) = match &inst.spec.root {
        RootDisk::Image(ci) => {
            let image = ctx.images.acquire(&ci.installed_id, &id).await?;
            let overlay = dir.join("root.qcow2");
            disks::create_overlay(&cfg.qemu_img, &image, &overlay).await?;
            (RootSource::Overlay(overlay), ci.size)
        }
        RootDisk::Volume { export, .. } => {
            (RootSource::Volume(VolumeTarget::parse(&export.uri)?), 0)
        }
    };
    let kernel = match &inst.spec.kernel {
        Some(k) => Some(std::path::absolute(
            ctx.images.acquire(&k.installed_id, &id).await?,
        )?),
        None => None,
    };
    let ramdisk = match &inst.spec.ramdisk {
        Some(r) => Some(std::path::absolute(
            ctx.images.acquire(&r.installed_id, &id).await?,
        )?),
        None => None,
    };
    let ephemeral = dir.join("ephemeral.qcow2");
    let gib = disks::ephemeral_gib(inst.spec.vm_type.disk_gib, image_bytes);
    disks::create_ephemeral(&cfg.qemu_img, &ephemeral, gib).await?;
    // Before QEMU makes the tap: an instance never runs with a NIC that cannot be
    // plugged (no root, no bridge).
    let tap = match &inst.spec.nic {
        Some(nic) => {
            ctx.net.check(nic).await?;
            Some(net::tap_name(&id))
        }
        None => None,
    };
    if inst.state() != NodeInstanceState::Pending {
        return Ok(()); // terminated meanwhile; terminate cleans up
    }
    for f in ["qmp.sock", "qemu.pid"] {
        let _ = tokio::fs::remove_file(dir.join(f)).await;
    }
    let volumes = lock(&inst.rec)
        .volumes
        .iter()
        .map(|v| {
            Ok(BootVolume {
                node: v.node.clone(),
                dev: v.dev.clone(),
                target: VolumeTarget::parse(&v.uri)?,
            })
        })
        .collect::<Result<Vec<_>, NcError>>()?;
    let tls_dir = cfg
        .nbd_tls_dir
        .as_deref()
        .map(std::path::absolute)
        .transpose()?;
    let launch = Launch {
        spec: &inst.spec,
        accel: &cfg.accel,
        dir,
        root,
        ephemeral,
        kernel,
        ramdisk,
        volumes,
        tls_dir: tls_dir.as_deref(),
        tap,
    };
    // iSCSI CHAP secrets reach QEMU in 0600 files it reads at start (the command
    // line is readable by every local user); they are removed once it has started.
    let mut targets: Vec<(&str, &VolumeTarget)> = Vec::new();
    if let RootSource::Volume(t) = &launch.root {
        targets.push(("root", t));
    }
    targets.extend(launch.volumes.iter().map(|v| (v.node.as_str(), &v.target)));
    let mut secret_files = Vec::new();
    for (node, t) in targets {
        if let Some(secret) = t.secret() {
            let p = qemu::secret_file(dir, node);
            secret_files.push(p.clone());
            if let Err(e) = write_secret(&p, secret).await {
                for f in &secret_files {
                    let _ = tokio::fs::remove_file(f).await;
                }
                return Err(e.into());
            }
        }
    }
    let started = qemu::start(&cfg.qemu, &launch.args(), dir).await;
    for f in &secret_files {
        let _ = tokio::fs::remove_file(f).await;
    }
    let pid = started?;
    *lock(&inst.pid) = Some(pid);
    attach_nic(ctx, inst).await?;
    let (qmp, events) = connect_qmp(dir).await.map_err(internal)?;
    let status = qmp.status().await.map_err(internal)?;
    if qmp::is_dead_status(&status) {
        return Err(NcError::Internal(format!(
            "the guest stopped at once (QEMU status {status})"
        )));
    }
    *lock(&inst.qmp) = Some(qmp);
    inst.update(|r| {
        if r.state == NodeInstanceState::Pending {
            r.state = NodeInstanceState::Running;
        }
        for v in &mut r.volumes {
            if v.state == NodeAttachState::Attaching {
                v.state = NodeAttachState::Attached;
                v.plugged = true;
            }
        }
    })
    .await;
    start_watcher(ctx, inst, events);
    Ok(())
}

fn geteuid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A short symbolic link to `dir` (`/run/euca-nc/<hash>`, or under the temp
/// directory where /run is not writable), made or refreshed now: QMP sockets live
/// in instance directories, and a unix socket path must fit in 107 bytes.
fn short_alias(dir: &std::path::Path) -> Result<PathBuf, NcError> {
    let target = std::path::absolute(dir)?;
    // FNV-1a of the path: a stable short name per node directory.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let name = format!("{h:016x}");
    let mut last = None;
    for base in [
        PathBuf::from("/run/euca-nc"),
        std::env::temp_dir().join("euca-nc"),
    ] {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&base);
        // Only a directory of ours that nobody else can write: in a shared /tmp
        // another user could otherwise swap the link and redirect the node's files.
        match std::fs::symlink_metadata(&base) {
            Ok(m) if m.is_dir() && m.uid() == geteuid() && m.mode() & 0o022 == 0 => {}
            Ok(_) => {
                last = Some(std::io::Error::other(format!(
                    "{} is not a directory only this user can write",
                    base.display()
                )));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        }
        let link = base.join(&name);
        match std::fs::read_link(&link) {
            Ok(t) if t == target => return Ok(link),
            Ok(_) => {
                let _ = std::fs::remove_file(&link);
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => return Ok(link),
            Err(e) => last = Some(e),
        }
    }
    Err(NcError::Config(format!(
        "dir {} is too long for QMP sockets and no short alias could be made: {}",
        dir.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Connects to the instance's QMP socket, retrying briefly while QEMU sets it up.
async fn connect_qmp(
    dir: &Path,
) -> Result<(Arc<Qmp>, mpsc::UnboundedReceiver<QmpEvent>), QmpError> {
    let sock = dir.join("qmp.sock");
    let deadline = tokio::time::Instant::now() + QMP_CONNECT;
    loop {
        match tokio::time::timeout(QMP_CONNECT, Qmp::connect(&sock)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => return Err(QmpError::TimedOut("connect".into())),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn start_watcher(ctx: &Ctx, inst: &Arc<Instance>, events: mpsc::UnboundedReceiver<QmpEvent>) {
    let _ = ctx;
    let i2 = inst.clone();
    let h = tokio::spawn(async move { watch_events(&i2, events).await });
    if let Some(old) = lock(&inst.watcher).replace(h.abort_handle()) {
        old.abort();
    }
}

/// Follows QMP events until QEMU closes the connection, then notes the exit.
async fn watch_events(inst: &Arc<Instance>, mut events: mpsc::UnboundedReceiver<QmpEvent>) {
    let mut guest_shutdown = false;
    while let Some(ev) = events.recv().await {
        match ev.name.as_str() {
            "SHUTDOWN" => guest_shutdown = true,
            "STOP" => {
                let Some(q) = inst.qmp() else { continue };
                match q.status().await {
                    Ok(s) if qmp::is_dead_status(&s) && !guest_shutdown => {
                        let msg = format!(
                            "the guest stopped with QEMU status {s} (an accelerator that \
                             cannot run it?); QEMU was killed"
                        );
                        tracing::warn!(instance = inst.id(), "{msg}");
                        let i2 = inst.clone();
                        tokio::spawn(async move { kill_failed(&i2, &msg).await });
                    }
                    _ => {}
                }
            }
            "DEVICE_DELETED" => {
                let Some(dev) = ev.data.get("device").and_then(Value::as_str) else {
                    continue;
                };
                inst.deleted.send_modify(|s| {
                    s.insert(dev.to_string());
                });
                // The guest let go of a device no detach is waiting for (a forced
                // detach, one that timed out, or the guest's own eject): drop its
                // block node; the volume is detached now.
                let late = lock(&inst.rec)
                    .volumes
                    .iter()
                    .find(|v| v.dev == dev && v.plugged && v.state != NodeAttachState::Detaching)
                    .map(|v| v.node.clone());
                if let (Some(node), Some(q)) = (late, inst.qmp()) {
                    let (i2, dev) = (inst.clone(), dev.to_string());
                    tokio::spawn(async move {
                        let _g = i2.op.lock().await;
                        let r = q.execute("blockdev-del", json!({"node-name": node})).await;
                        i2.update(|rec| {
                            // By device id: the volume may have been attached anew.
                            if let Some(v) = rec.volumes.iter_mut().find(|v| v.dev == dev) {
                                v.plugged = false;
                                if v.state != NodeAttachState::Detached {
                                    v.state = NodeAttachState::Detached;
                                    v.error = r.err().map(|e| e.to_string());
                                }
                            }
                        })
                        .await;
                    });
                }
            }
            _ => {}
        }
    }
    // QEMU closed the monitor: it exited (or is exiting).
    lock(&inst.qmp).take();
    if let Some(pid) = inst.pid() {
        if !qemu::wait_gone(pid, inst.id(), Duration::from_secs(60)).await {
            // The monitor closed but QEMU runs on: leave the state as it is.
            tracing::error!(instance = inst.id(), pid, "QMP closed, QEMU still running");
            return;
        }
    }
    if inst.state() == NodeInstanceState::Running {
        let why = if guest_shutdown {
            reason("Client.InstanceInitiatedShutdown", "The guest powered off")
        } else {
            reason("Server.InternalError", "QEMU exited unexpectedly")
        };
        inst.update(|r| {
            if r.state == NodeInstanceState::Running {
                r.state = NodeInstanceState::Shutoff;
                r.reason = why;
                for v in &mut r.volumes {
                    v.state = NodeAttachState::Detached;
                    v.plugged = false;
                }
            }
        })
        .await;
    }
}

/// Kills QEMU, releases what the instance holds, and marks it `failed` (unless it
/// is being terminated).
async fn fail(ctx: &Ctx, inst: &Arc<Instance>, msg: &str) {
    mark_failed(inst, msg).await;
    kill_qemu(inst).await;
    cleanup(ctx, inst).await;
}

async fn mark_failed(inst: &Instance, msg: &str) {
    let msg = msg.to_string();
    inst.update(|r| {
        if !matches!(
            r.state,
            NodeInstanceState::ShuttingDown | NodeInstanceState::Terminated
        ) {
            r.state = NodeInstanceState::Failed;
            r.reason = reason("Server.InternalError", msg);
        }
        for v in &mut r.volumes {
            v.state = NodeAttachState::Detached;
            v.plugged = false;
        }
    })
    .await;
}

/// A guest QEMU cannot go on with: kill it and fail the instance. The disks and
/// pins stay until terminate (the record says why it failed).
async fn kill_failed(inst: &Arc<Instance>, msg: &str) {
    mark_failed(inst, msg).await;
    kill_qemu(inst).await;
}

async fn kill_qemu(inst: &Instance) {
    if let Some(pid) = inst.pid() {
        let id = inst.id().to_string();
        let _ = tokio::task::spawn_blocking(move || qemu::kill(pid, &id)).await;
        qemu::wait_gone(pid, inst.id(), Duration::from_secs(10)).await;
    }
}

/// Powerdown, wait `shutdown_timeout_secs`, kill; without a monitor (its socket
/// dead since an adoption) there is no one to ask: killed at once.
async fn stop_qemu(ctx: &Ctx, inst: &Instance) {
    let Some(pid) = inst.pid() else { return };
    let Some(q) = inst.qmp() else {
        kill_qemu(inst).await;
        return;
    };
    let _ = q.execute("system_powerdown", Value::Null).await;
    let grace = Duration::from_secs(ctx.cfg.shutdown_timeout_secs);
    if !qemu::wait_gone(pid, inst.id(), grace).await {
        kill_qemu(inst).await;
    }
}

/// Removes the disks, socket and pid file, drops the image pins, and the NIC's
/// segment when this was its last instance here (QEMU is gone, and its tap with it).
async fn cleanup(ctx: &Ctx, inst: &Instance) {
    lock(&inst.learner).take();
    if let Some(nic) = &inst.spec.nic {
        ctx.net.unplug(inst.id(), nic).await;
    }
    let dir = inst.dir.clone();
    let _ = tokio::task::spawn_blocking(move || disks::remove_runtime_files(&dir)).await;
    for img in inst.image_ids() {
        if let Err(e) = ctx.images.release(&img, inst.id()).await {
            tracing::warn!(instance = inst.id(), image = img, "releasing: {e}");
        }
    }
}

async fn terminate_bg(ctx: &Ctx, inst: &Arc<Instance>) {
    let _g = inst.op.lock().await;
    if inst.state() == NodeInstanceState::Terminated {
        // Finished by another call ([`QemuNode::shutdown_all`]): the pins are
        // released once only.
        return;
    }
    stop_qemu(ctx, inst).await;
    if let Some(h) = lock(&inst.watcher).take() {
        h.abort();
    }
    lock(&inst.qmp).take();
    cleanup(ctx, inst).await;
    mark_terminated(inst).await;
}

/// Records the end: `terminated` now, every volume detached (QEMU is gone).
async fn mark_terminated(inst: &Arc<Instance>) {
    inst.update(|r| {
        r.state = NodeInstanceState::Terminated;
        r.terminated_at = Some(unix_now());
        for v in &mut r.volumes {
            v.state = NodeAttachState::Detached;
            v.plugged = false;
        }
    })
    .await;
}

async fn attach_bg(inst: &Arc<Instance>, volume: &str) {
    let _g = inst.op.lock().await;
    let Some(v) = lock(&inst.rec)
        .volumes
        .iter()
        .find(|v| v.volume_id == volume && v.state == NodeAttachState::Attaching)
        .cloned()
    else {
        return;
    };
    let r: Result<(), NcError> = async {
        let qmp = running_qmp(inst)?;
        let target = VolumeTarget::parse(&v.uri)?;
        // iSCSI CHAP: the secret goes to QEMU over its (private) QMP socket first.
        let secret_id = VolumeTarget::secret_id(&v.node);
        if let Some(secret) = target.secret() {
            // One left by an earlier attach that failed half-way.
            let _ = qmp.execute("object-del", json!({"id": secret_id})).await;
            qmp.execute(
                "object-add",
                json!({"qom-type": "secret", "id": secret_id, "data": secret}),
            )
            .await
            .map_err(internal)?;
        }
        let drop_secret = || async {
            if target.secret().is_some() {
                let _ = qmp.execute("object-del", json!({"id": secret_id})).await;
            }
        };
        if let Err(e) = qmp.execute("blockdev-add", target.blockdev(&v.node)).await {
            drop_secret().await;
            return Err(internal(e));
        }
        let dev = json!({"driver": "virtio-blk-pci", "id": v.dev, "drive": v.node});
        if let Err(e) = qmp.execute("device_add", dev).await {
            let _ = qmp
                .execute("blockdev-del", json!({"node-name": v.node}))
                .await;
            drop_secret().await;
            return Err(internal(e));
        }
        Ok(())
    }
    .await;
    inst.update_vol(volume, |x| match r {
        Ok(()) => {
            x.state = NodeAttachState::Attached;
            x.plugged = true;
        }
        Err(e) => {
            x.state = NodeAttachState::Failed;
            x.error = Some(e.to_string());
        }
    })
    .await;
}

async fn detach_bg(ctx: &Ctx, inst: &Arc<Instance>, volume: &str, force: bool) {
    let _g = inst.op.lock().await;
    let Some(v) = lock(&inst.rec)
        .volumes
        .iter()
        .find(|v| v.volume_id == volume && v.state == NodeAttachState::Detaching)
        .cloned()
    else {
        return;
    };
    let Some(qmp) = inst.qmp() else {
        // QEMU is gone: so is the device.
        inst.update_vol(volume, |x| {
            x.state = NodeAttachState::Detached;
            x.plugged = false;
        })
        .await;
        return;
    };
    let mut deleted = inst.deleted.subscribe();
    inst.deleted.send_modify(|s| {
        s.remove(&v.dev);
    });
    let limit = Duration::from_secs(ctx.cfg.detach_timeout_secs);
    let gone = match qmp.execute("device_del", json!({"id": v.dev})).await {
        Ok(_) => tokio::time::timeout(limit, deleted.wait_for(|s| s.contains(&v.dev)))
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(QmpError::Command { class, .. }) if class == "DeviceNotFound" => true,
        // Refused, e.g. an unplug already pending from an earlier try: force goes on.
        Err(QmpError::Command { .. }) if force => false,
        Err(e) => {
            let msg = e.to_string();
            inst.update_vol(volume, |x| {
                x.state = NodeAttachState::Failed;
                x.error = Some(msg);
            })
            .await;
            return;
        }
    };
    if gone {
        let r = qmp
            .execute("blockdev-del", json!({"node-name": v.node}))
            .await;
        if VolumeTarget::parse(&v.uri).is_ok_and(|t| t.secret().is_some()) {
            let secret_id = VolumeTarget::secret_id(&v.node);
            let _ = qmp.execute("object-del", json!({"id": secret_id})).await;
        }
        inst.update_vol(volume, |x| {
            x.state = NodeAttachState::Detached;
            x.plugged = false;
            x.error = r.err().map(|e| e.to_string());
        })
        .await;
        return;
    }
    let secs = ctx.cfg.detach_timeout_secs;
    if !force {
        let msg = NcError::DetachTimeout(volume.to_string()).to_string();
        inst.update_vol(volume, |x| {
            x.state = NodeAttachState::Failed;
            x.error = Some(format!("{msg} (no DEVICE_DELETED within {secs} s)"));
        })
        .await;
        return;
    }
    // Forced: cut the NBD connection; the guest keeps a dead device until it lets go.
    let yank = json!({"instances": [{"type": "block-node", "node-name": v.node}]});
    let r = qmp.execute("yank", yank).await;
    inst.update_vol(volume, |x| match r {
        Ok(_) => {
            x.state = NodeAttachState::Detached;
            x.forced = true;
            x.error = Some(format!(
                "forced: the guest did not release the device within {secs} s; its NBD \
                 connection was cut (guest I/O on it fails) and QEMU drops the block node \
                 when the guest lets go"
            ));
        }
        Err(e) => {
            x.state = NodeAttachState::Failed;
            x.error = Some(format!("forced detach: {e}"));
        }
    })
    .await;
}

/// Reads every instance dir (blocking): spec and record; dirs without a readable
/// spec are left alone (logged).
fn scan(root: &Path) -> Vec<Arc<Instance>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !valid_instance_id(&name) {
            continue;
        }
        let spec: InstanceSpec = match std::fs::read(dir.join("spec.json"))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                // Killed before the spec was durable: QEMU never started.
                tracing::warn!(dir = %dir.display(), "no usable spec.json ({e}); removing");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
        };
        if spec.instance_id != name {
            tracing::warn!(dir = %dir.display(), "spec.json names another instance; skipped");
            continue;
        }
        let rec: Record = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Record {
                state: NodeInstanceState::Pending,
                reason: None,
                launched_at: now_rfc3339(),
                volumes: vec![],
                gen: 0,
                terminated_at: None,
                learned_ip: None,
            });
        let pid = qemu::read_pid(&dir).filter(|p| qemu::is_instance_process(*p, &name));
        let inst = Instance::new(spec, dir, rec);
        *lock(&inst.pid) = pid;
        out.push(inst);
    }
    out
}

/// Takes over an instance found on disk at open.
async fn adopt(ctx: &Arc<Ctx>, inst: &Arc<Instance>) {
    let state = inst.state();
    if matches!(
        state,
        NodeInstanceState::Terminated | NodeInstanceState::Failed
    ) {
        return;
    }
    let alive = inst.pid().is_some();
    if !alive {
        match state {
            NodeInstanceState::ShuttingDown => {
                let _g = inst.op.lock().await;
                cleanup(ctx, inst).await;
                mark_terminated(inst).await;
            }
            NodeInstanceState::Pending => {
                fail(
                    ctx,
                    inst,
                    "the node controller restarted while the instance was starting",
                )
                .await
            }
            NodeInstanceState::Running => {
                inst.update(|r| {
                    r.state = NodeInstanceState::Shutoff;
                    r.reason = reason(
                        "Server.InternalError",
                        "QEMU exited while the node controller was down",
                    );
                    for v in &mut r.volumes {
                        v.state = NodeAttachState::Detached;
                        v.plugged = false;
                    }
                })
                .await
            }
            _ => {}
        }
        return;
    }
    match connect_qmp(&inst.dir).await {
        Ok((qmp, events)) => {
            *lock(&inst.qmp) = Some(qmp.clone());
            if state == NodeInstanceState::ShuttingDown {
                start_watcher(ctx, inst, events);
                let (c, i) = (ctx.clone(), inst.clone());
                tokio::spawn(async move { terminate_bg(&c, &i).await });
                return;
            }
            if state == NodeInstanceState::Pending || state == NodeInstanceState::Shutoff {
                inst.update(|r| r.state = NodeInstanceState::Running).await;
            }
            reconcile_volumes(ctx, inst, &qmp).await;
            start_watcher(ctx, inst, events);
            readopt_nic(ctx, inst).await;
            if let Ok(s) = qmp.status().await {
                if qmp::is_dead_status(&s) {
                    let msg = format!("the guest is stopped with QEMU status {s}; QEMU was killed");
                    kill_failed(inst, &msg).await;
                }
            }
        }
        Err(e) => {
            // Never kill a guest for want of a monitor: report it running; actions
            // needing QMP answer IncorrectState until the next restart, and a
            // terminate kills the process (pid file). One already being
            // terminated is finished now: killed, its disks and pins released.
            tracing::error!(instance = inst.id(), "adopting: {e}");
            if state == NodeInstanceState::ShuttingDown {
                let (c, i) = (ctx.clone(), inst.clone());
                tokio::spawn(async move { terminate_bg(&c, &i).await });
            } else {
                inst.update(|r| r.state = NodeInstanceState::Running).await;
                readopt_nic(ctx, inst).await;
            }
        }
    }
}

/// Re-checks an adopted instance's plug (idempotent) and restarts its learner; a NIC
/// that cannot be plugged any more fails the instance, saying why.
async fn readopt_nic(ctx: &Ctx, inst: &Arc<Instance>) {
    if let Err(e) = attach_nic(ctx, inst).await {
        tracing::error!(instance = inst.id(), "re-plugging the NIC: {e}");
        kill_failed(inst, &e.to_string()).await;
    }
}

/// Brings the recorded attachments in line with the devices QEMU has (after a
/// restart in the middle of an attach or a detach).
async fn reconcile_volumes(ctx: &Arc<Ctx>, inst: &Arc<Instance>, qmp: &Qmp) {
    let present: HashSet<String> = match qmp
        .execute("qom-list", json!({"path": "/machine/peripheral"}))
        .await
    {
        Ok(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
        other => {
            tracing::warn!(instance = inst.id(), "qom-list: {other:?}");
            return;
        }
    };
    let vols = lock(&inst.rec).volumes.clone();
    for v in vols {
        let here = present.contains(&v.dev);
        match (v.state, here) {
            (NodeAttachState::Detaching, true) => {
                let (c, i, vol) = (ctx.clone(), inst.clone(), v.volume_id.clone());
                tokio::spawn(async move { detach_bg(&c, &i, &vol, false).await });
            }
            (NodeAttachState::Attaching, true) => {
                inst.update_vol(&v.volume_id, |x| {
                    x.state = NodeAttachState::Attached;
                    x.plugged = true;
                })
                .await
            }
            (_, false) if v.plugged || v.state != NodeAttachState::Detached => {
                let _ = qmp
                    .execute("blockdev-del", json!({"node-name": v.node}))
                    .await;
                let interrupted = v.state == NodeAttachState::Attaching;
                inst.update_vol(&v.volume_id, |x| {
                    x.plugged = false;
                    if interrupted {
                        x.state = NodeAttachState::Failed;
                        x.error =
                            Some("the attach was cut short by a node controller restart".into());
                    } else {
                        x.state = NodeAttachState::Detached;
                    }
                })
                .await
            }
            _ => {}
        }
    }
}

/// Every second, bounds the console file of every instance not terminated
/// (adopted ones too): see [`disks::trim_console`].
async fn console_trimmer(instances: Weak<Mutex<BTreeMap<String, Arc<Instance>>>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(map) = instances.upgrade() else {
            return;
        };
        let files: Vec<PathBuf> = lock(&map)
            .values()
            .filter(|i| i.state() != NodeInstanceState::Terminated)
            .map(|i| i.dir.join("console.log"))
            .collect();
        drop(map);
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                match disks::trim_console(&f, disks::CONSOLE_MAX, disks::CONSOLE_KEEP) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(file = %f.display(), dropped = n, "console trimmed"),
                    Err(e) => tracing::warn!(file = %f.display(), "trimming the console: {e}"),
                }
            }
        })
        .await;
    }
}

/// Forgets terminated instances after [`TOMBSTONE`] (their dirs too).
async fn janitor(instances: Weak<Mutex<BTreeMap<String, Arc<Instance>>>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(map) = instances.upgrade() else {
            return;
        };
        let now = unix_now();
        let old: Vec<Arc<Instance>> = {
            let mut m = lock(&map);
            let ids: Vec<String> = m
                .iter()
                .filter(|(_, i)| {
                    let r = lock(&i.rec);
                    r.state == NodeInstanceState::Terminated
                        && r.terminated_at
                            .is_some_and(|t| now.saturating_sub(t) >= TOMBSTONE.as_secs())
                })
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| m.remove(k)).collect()
        };
        for i in old {
            let dir = i.dir.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
    }
}

/// Cores online, physical memory, free space of `dir` (blocking).
fn host_capacity(dir: &Path) -> Resources {
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    let disk_gib = free_gib(dir).unwrap_or(0);
    Resources {
        cores,
        memory_mib,
        disk_gib,
    }
}

fn free_gib(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 30)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_instance_id("i-0123abcd"));
        assert!(valid_instance_id("i-0123456789abcdef0"));
        assert!(!valid_instance_id("i-0123ABCD"));
        assert!(!valid_instance_id("i-../../x"));
        assert!(!valid_instance_id("i-123"));
        assert!(valid_volume_id("vol-0123abcd"));
        assert!(!valid_volume_id("vol/1"));
        assert!(!valid_volume_id(""));
    }

    #[test]
    fn host_capacity_is_sane() {
        let r = host_capacity(Path::new("/"));
        assert!(r.cores >= 1);
        assert!(r.memory_mib > 0);
    }
}
