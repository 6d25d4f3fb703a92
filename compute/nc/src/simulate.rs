//! A simulated node: answers the NC protocol without QEMU, so a CC can be measured
//! against 1 000 nodes and counting tests (MACs, capacity races) need not boot
//! guests (`euca nc --simulate N`).
//!
//! It costs nothing while idle: no task per node or per instance. Every transition
//! (pending → running, shutting-down → terminated, attaching → attached,
//! detaching → detached) is a deadline kept with the instance and applied when the
//! node is next asked (a poll, a call), so from outside it progresses "in the
//! background" after [`SimConfig::delay`].
//!
//! Networking (issue 14): a NIC in the spec is accepted and nothing is plugged. A
//! simulated guest does no DHCP, so there is nothing to learn: in `system` mode the
//! report's `learned_ip` is the spec's `nic.private_ip` once the instance runs
//! (`None` unless the caller put one there, standing in for the LAN's lease, so a
//! cloud's system-mode path can be exercised without guests); in the other modes
//! it is `None`, as on a real node.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use euca_compute_proto::net::NetMode;
use euca_compute_proto::{
    now_rfc3339, AttachSpec, ConsoleOutput, InstanceReport, InstanceSpec, NodeAttachState,
    NodeInstanceState, NodeReport, Resources, StateReason, VolumeReport,
};

use crate::node::Node;
use crate::NcError;

/// How long a terminated instance stays in the reports (the protocol asks ≥ 10 min).
pub const TOMBSTONE: Duration = Duration::from_secs(15 * 60);

/// What a simulated node advertises and how fast it acts.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The node's name in its reports (and registration).
    pub name: String,
    /// Advertised capacity.
    pub capacity: Resources,
    /// How long each long operation takes (boot, shutdown, attach, detach).
    pub delay: Duration,
}

impl SimConfig {
    /// Default delay of a simulated node's transitions.
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(200);
    /// Default advertised capacity when the config names none.
    pub const DEFAULT_CAPACITY: Resources = Resources {
        cores: 4,
        memory_mib: 8192,
        disk_gib: 100,
    };
}

struct SimVolume {
    spec: AttachSpec,
    state: NodeAttachState,
    /// When `state` (attaching/detaching) turns into the next one.
    until: Option<Instant>,
}

struct SimInstance {
    spec: InstanceSpec,
    launched_at: String,
    state: NodeInstanceState,
    /// When `state` (pending/shutting-down) turns into the next one.
    until: Option<Instant>,
    /// When the instance turned terminated (to forget it after [`TOMBSTONE`]).
    ended: Option<Instant>,
    reason: Option<StateReason>,
    volumes: Vec<SimVolume>,
    /// Wall-clock time it turned running (shown on the fake console).
    booted_at: Option<String>,
}

impl SimInstance {
    /// Applies every transition due by `now`.
    fn advance(&mut self, now: Instant) {
        if self.until.is_some_and(|t| t <= now) {
            self.until = None;
            match self.state {
                NodeInstanceState::Pending => {
                    self.state = NodeInstanceState::Running;
                    self.booted_at = Some(now_rfc3339());
                }
                NodeInstanceState::ShuttingDown => {
                    self.state = NodeInstanceState::Terminated;
                    self.ended = Some(now);
                    for v in &mut self.volumes {
                        v.state = NodeAttachState::Detached;
                        v.until = None;
                    }
                }
                _ => {}
            }
        }
        // Volumes progress only while the guest runs (QEMU plugs them after start).
        if self.state == NodeInstanceState::Running {
            for v in &mut self.volumes {
                if v.until.is_some_and(|t| t <= now) {
                    v.until = None;
                    v.state = match v.state {
                        NodeAttachState::Attaching => NodeAttachState::Attached,
                        NodeAttachState::Detaching => NodeAttachState::Detached,
                        s => s,
                    };
                }
            }
        }
    }

    fn report(&self) -> InstanceReport {
        InstanceReport {
            instance_id: self.spec.instance_id.clone(),
            account: self.spec.account.clone(),
            reservation_id: self.spec.reservation_id.clone(),
            vm_type: self.spec.vm_type.clone(),
            state: self.state,
            reason: self.reason.clone(),
            mac: self.spec.mac.clone(),
            launched_at: self.launched_at.clone(),
            volumes: self.volumes.iter().map(volume_report).collect(),
            learned_ip: self
                .spec
                .nic
                .as_ref()
                .filter(|n| n.mode == NetMode::System && self.state == NodeInstanceState::Running)
                .and_then(|n| n.private_ip),
            incarnation: self.spec.incarnation,
        }
    }
}

fn volume_report(v: &SimVolume) -> VolumeReport {
    VolumeReport {
        volume_id: v.spec.volume_id.clone(),
        device: v.spec.device.clone(),
        state: v.state,
        error: None,
    }
}

/// A node that keeps its instances in memory and pretends to run them.
pub struct SimNode {
    cfg: SimConfig,
    instances: Mutex<HashMap<String, SimInstance>>,
}

impl SimNode {
    pub fn new(cfg: SimConfig) -> SimNode {
        SimNode {
            cfg,
            instances: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimInstance>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on instance `id` after applying what is due.
    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut SimInstance, Instant) -> Result<T, NcError>,
    ) -> Result<T, NcError> {
        let now = Instant::now();
        let mut map = self.lock();
        let inst = map
            .get_mut(id)
            .ok_or_else(|| NcError::InstanceNotFound(id.to_string()))?;
        inst.advance(now);
        f(inst, now)
    }

    fn deadline(&self, now: Instant) -> Option<Instant> {
        Some(now + self.cfg.delay)
    }
}

/// The fake serial console of a simulated guest.
fn console_text(inst: &SimInstance) -> String {
    let mut s = String::new();
    if inst.state == NodeInstanceState::Pending {
        return s;
    }
    s.push_str("SeaBIOS (simulated)\r\n");
    s.push_str(&format!(
        "Linux version 6.1.0-sim (euca nc --simulate) instance {}\r\n",
        inst.spec.instance_id
    ));
    s.push_str("Kernel command line: root=/dev/vda console=ttyS0\r\n");
    s.push_str(&format!(
        "TG-BOOTED {} mac={} at {}\r\n",
        inst.spec.instance_id,
        inst.spec.mac,
        inst.booted_at.as_deref().unwrap_or("-")
    ));
    for (i, v) in inst.volumes.iter().enumerate() {
        if matches!(v.state, NodeAttachState::Attached) {
            let dev = char::from(b'b' + (i % 24) as u8);
            s.push_str(&format!("TG-DISK vd{dev} {}\r\n", v.spec.volume_id));
        }
    }
    if matches!(
        inst.state,
        NodeInstanceState::ShuttingDown | NodeInstanceState::Terminated
    ) {
        s.push_str("reboot: Power down\r\n");
    }
    s
}

#[async_trait]
impl Node for SimNode {
    fn report(&self) -> NodeReport {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, i| {
            i.advance(now);
            i.ended
                .is_none_or(|t| now.saturating_duration_since(t) < TOMBSTONE)
        });
        let mut instances: Vec<InstanceReport> = map.values().map(SimInstance::report).collect();
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        NodeReport {
            name: self.cfg.name.clone(),
            capacity: self.cfg.capacity,
            instances,
        }
    }

    async fn run(&self, spec: InstanceSpec) -> Result<InstanceReport, NcError> {
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(inst) = map.get_mut(&spec.instance_id) {
            inst.advance(now);
            let ended = inst.report().state == NodeInstanceState::Terminated;
            if inst.spec == spec {
                // A repeated call (even after the end: never revived).
                return Ok(inst.report());
            }
            if !ended {
                return Err(NcError::InstanceExists(spec.instance_id));
            }
            // Launched again with a new spec after it ended (start after stop):
            // replace it.
            map.remove(&spec.instance_id);
        }
        let volumes = spec
            .volumes
            .iter()
            .map(|v| SimVolume {
                spec: v.clone(),
                state: NodeAttachState::Attaching,
                until: Some(now + self.cfg.delay),
            })
            .collect();
        let inst = SimInstance {
            spec: spec.clone(),
            launched_at: now_rfc3339(),
            state: NodeInstanceState::Pending,
            until: self.deadline(now),
            ended: None,
            reason: None,
            volumes,
            booted_at: None,
        };
        let report = inst.report();
        map.insert(spec.instance_id, inst);
        Ok(report)
    }

    async fn terminate(&self, id: &str) -> Result<InstanceReport, NcError> {
        let until = self.deadline(Instant::now());
        self.with(id, |inst, _| {
            if inst.state.holds_capacity() && inst.state != NodeInstanceState::ShuttingDown {
                inst.state = NodeInstanceState::ShuttingDown;
                inst.until = until;
                inst.reason = Some(StateReason {
                    code: "Client.UserInitiatedShutdown".into(),
                    message: "Client.UserInitiatedShutdown: User initiated shutdown".into(),
                });
            }
            Ok(inst.report())
        })
    }

    async fn reboot(&self, id: &str) -> Result<InstanceReport, NcError> {
        self.with(id, |inst, _| match inst.state {
            NodeInstanceState::Pending | NodeInstanceState::Running => Ok(inst.report()),
            s => Err(NcError::IncorrectState(format!(
                "instance {id} is {s:?}: cannot reboot"
            ))),
        })
    }

    async fn console(&self, id: &str) -> Result<ConsoleOutput, NcError> {
        self.with(id, |inst, _| {
            let text = console_text(inst);
            let tail =
                &text.as_bytes()[text.len().saturating_sub(euca_compute_proto::CONSOLE_TAIL)..];
            Ok(ConsoleOutput {
                instance_id: id.to_string(),
                timestamp: now_rfc3339(),
                output: base64::engine::general_purpose::STANDARD.encode(tail),
            })
        })
    }

    async fn attach(&self, id: &str, spec: AttachSpec) -> Result<VolumeReport, NcError> {
        let delay = self.cfg.delay;
        self.with(id, |inst, now| {
            if !matches!(
                inst.state,
                NodeInstanceState::Pending | NodeInstanceState::Running
            ) {
                return Err(NcError::IncorrectState(format!(
                    "instance {id} is {:?}: cannot attach",
                    inst.state
                )));
            }
            if let Some(v) = inst.volumes.iter().find(|v| {
                v.spec.volume_id == spec.volume_id && v.state != NodeAttachState::Detached
            }) {
                return Ok(volume_report(v));
            }
            inst.volumes.retain(|v| v.spec.volume_id != spec.volume_id);
            let v = SimVolume {
                spec,
                state: NodeAttachState::Attaching,
                until: Some(now + delay),
            };
            let r = volume_report(&v);
            inst.volumes.push(v);
            Ok(r)
        })
    }

    async fn detach(&self, id: &str, volume: &str, _force: bool) -> Result<VolumeReport, NcError> {
        let delay = self.cfg.delay;
        self.with(id, |inst, now| {
            let running = inst.state == NodeInstanceState::Running;
            let v = inst
                .volumes
                .iter_mut()
                .find(|v| v.spec.volume_id == volume)
                .ok_or_else(|| NcError::VolumeNotAttached {
                    instance: id.to_string(),
                    volume: volume.to_string(),
                })?;
            match v.state {
                NodeAttachState::Detaching | NodeAttachState::Detached => {}
                // A plug not done yet, or a guest that is not running: nothing to unplug.
                NodeAttachState::Attaching | NodeAttachState::Failed if !running => {
                    v.state = NodeAttachState::Detached;
                    v.until = None;
                }
                _ => {
                    v.state = NodeAttachState::Detaching;
                    v.until = Some(now + delay);
                }
            }
            Ok(volume_report(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_compute_proto::net::{NicSpec, Segment};
    use euca_compute_proto::{CachedImage, RootDisk, VmType};

    fn spec(id: &str) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.into(),
            account: "123456789012".into(),
            reservation_id: "r-00000001".into(),
            vm_type: VmType {
                name: "m1.small".into(),
                cores: 1,
                memory_mib: 256,
                disk_gib: 5,
            },
            root: RootDisk::Image(CachedImage {
                installed_id: "ab".repeat(32),
                size: 1 << 20,
            }),
            kernel: None,
            ramdisk: None,
            mac: "d2:00:00:00:00:01".into(),
            user_data: None,
            public_key: None,
            volumes: vec![],
            nic: None,
            incarnation: 0,
        }
    }

    fn node(delay: Duration) -> SimNode {
        SimNode::new(SimConfig {
            name: "n".into(),
            capacity: SimConfig::DEFAULT_CAPACITY,
            delay,
        })
    }

    #[tokio::test]
    async fn zero_delay_transitions_apply_on_the_next_look() {
        let n = node(Duration::ZERO);
        let r = n.run(spec("i-00000001")).await.unwrap();
        assert_eq!(r.state, NodeInstanceState::Pending);
        assert_eq!(n.report().instances[0].state, NodeInstanceState::Running);
        let out = n.console("i-00000001").await.unwrap();
        let text = base64::engine::general_purpose::STANDARD
            .decode(out.output)
            .unwrap();
        assert!(String::from_utf8_lossy(&text).contains("TG-BOOTED"));
        let t = n.terminate("i-00000001").await.unwrap();
        assert_eq!(t.state, NodeInstanceState::ShuttingDown);
        assert_eq!(n.report().instances[0].state, NodeInstanceState::Terminated);
        // Terminated again: answered as it is, not an error.
        let t = n.terminate("i-00000001").await.unwrap();
        assert_eq!(t.state, NodeInstanceState::Terminated);
        assert!(matches!(
            n.attach(
                "i-00000001",
                AttachSpec {
                    volume_id: "vol-1".into(),
                    device: "/dev/sdf".into(),
                    export: euca_compute_proto::VolumeExport {
                        uri: "nbd://127.0.0.1:1/x".into()
                    }
                }
            )
            .await,
            Err(NcError::IncorrectState(_))
        ));
    }

    #[tokio::test]
    async fn a_long_delay_keeps_it_pending() {
        let n = node(Duration::from_secs(3600));
        n.run(spec("i-00000002")).await.unwrap();
        assert_eq!(n.report().instances[0].state, NodeInstanceState::Pending);
        let out = n.console("i-00000002").await.unwrap();
        assert_eq!(out.output, "");
    }

    #[tokio::test]
    async fn system_mode_reports_the_stand_in_lease_once_running() {
        let n = node(Duration::ZERO);
        let ip = std::net::Ipv4Addr::new(10, 9, 8, 7);
        let mut s = spec("i-00000003");
        s.nic = Some(NicSpec {
            mode: NetMode::System,
            segment: Segment::Bridge,
            private_ip: Some(ip),
        });
        assert_eq!(n.run(s).await.unwrap().learned_ip, None);
        assert_eq!(n.report().instances[0].learned_ip, Some(ip));
        let mut s = spec("i-00000004");
        s.nic = Some(NicSpec {
            mode: NetMode::Static,
            segment: Segment::Bridge,
            private_ip: Some(ip),
        });
        n.run(s).await.unwrap();
        let r = n.report();
        let st = r.instances.iter().find(|i| i.instance_id == "i-00000004");
        assert_eq!(st.unwrap().learned_ip, None);
    }
}
