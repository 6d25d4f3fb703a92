//! The values the CLC, the CC and the NCs exchange.
use serde::{Deserialize, Serialize};

/// Error codes of the compute APIs (`{"error":{"code":…}}`), beside the generic
/// `BadRequest`, `Forbidden`, `NotFound`, `TooLarge`, `InternalError`.
pub mod codes {
    /// No node (or not enough nodes) can take the instances: nothing was placed.
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientInstanceCapacity";
    /// The instance is not known to this CC / NC.
    pub const INSTANCE_NOT_FOUND: &str = "InstanceNotFound";
    /// The instance id exists with a different spec (a launch is idempotent only
    /// for the same spec).
    pub const INSTANCE_EXISTS: &str = "InstanceExists";
    /// The volume is not attached to that instance.
    pub const VOLUME_NOT_ATTACHED: &str = "VolumeNotAttached";
    /// The action does not apply in the instance's state (e.g. attach while
    /// shutting down).
    pub const INCORRECT_STATE: &str = "IncorrectInstanceState";
    /// The node that holds the instance is `DOWN`: its state is unknown.
    pub const NODE_UNAVAILABLE: &str = "NodeUnavailable";
    /// The guest did not release the device in time (detach without force).
    pub const DETACH_TIMEOUT: &str = "DetachTimeout";
    /// A launch for a zone other than the one the CC is configured to serve
    /// (`[cc] zone`): the CLC's `[[clc.clusters]]` and the CC disagree.
    pub const ZONE_MISMATCH: &str = "ZoneMismatch";
}

/// Cores, memory and disk: what a node advertises, what is free on it, or what a
/// VM type needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cores: 0,
        memory_mib: 0,
        disk_gib: 0,
    };

    /// Whether `need` fits in `self` on every axis.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cores <= self.cores
            && need.memory_mib <= self.memory_mib
            && need.disk_gib <= self.disk_gib
    }

    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_add(o.cores),
            memory_mib: self.memory_mib.saturating_add(o.memory_mib),
            disk_gib: self.disk_gib.saturating_add(o.disk_gib),
        }
    }

    /// `self − o`, each axis floored at 0.
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_sub(o.cores),
            memory_mib: self.memory_mib.saturating_sub(o.memory_mib),
            disk_gib: self.disk_gib.saturating_sub(o.disk_gib),
        }
    }

    /// How many copies of `need` fit (repeated subtraction on every axis, as
    /// Eucalyptus counted the free/max columns); a need of zero on an axis does
    /// not limit it.
    pub fn copies(&self, need: &Resources) -> u64 {
        let per = |have: u64, need: u64| have.checked_div(need).unwrap_or(u64::MAX);
        per(self.cores.into(), need.cores.into())
            .min(per(self.memory_mib, need.memory_mib))
            .min(per(self.disk_gib, need.disk_gib))
    }
}

/// The over-commit ratios a CC schedules with (each ≥ 1.0 in practice; default 1.0):
/// a node advertising 2 cores with `cores = 4.0` takes 8 one-core instances.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overcommit {
    pub cores: f64,
    pub memory: f64,
    pub disk: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Overcommit {
            cores: 1.0,
            memory: 1.0,
            disk: 1.0,
        }
    }
}

impl Overcommit {
    /// `r` scaled by the ratios (rounded down).
    pub fn scale(&self, r: &Resources) -> Resources {
        Resources {
            cores: (f64::from(r.cores) * self.cores).floor() as u32,
            memory_mib: (r.memory_mib as f64 * self.memory).floor() as u64,
            disk_gib: (r.disk_gib as f64 * self.disk).floor() as u64,
        }
    }
}

/// An instance type as a node runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmType {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    /// Root + ephemeral disk.
    pub disk_gib: u64,
}

impl VmType {
    pub fn resources(&self) -> Resources {
        Resources {
            cores: self.cores,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
        }
    }
}

/// An installed image a node takes from its image cache (`euca nc-cache`), by the
/// installed id (the SHA-256 of its manifest, hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    pub installed_id: String,
    /// Bytes (for disk accounting).
    pub size: u64,
}

/// A volume as the SC exports it to one node: `nbd://host:port/export`, or
/// `nbds://…` when the node must use TLS (the NC's configured client certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeExport {
    pub uri: String,
}

/// The instance's root disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RootDisk {
    /// Instance store: a qcow2 overlay on the cached image (pinned while the
    /// instance lives, never copied).
    Image(CachedImage),
    /// EBS root: the SC's export of the root volume.
    Volume {
        volume_id: String,
        export: VolumeExport,
    },
}

/// A volume to attach: at launch (block device mapping) or later (AttachVolume).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachSpec {
    pub volume_id: String,
    /// The EC2 device name the user asked for (`/dev/sdf`); the guest sees `/dev/vdX`
    /// whatever it is.
    pub device: String,
    pub export: VolumeExport,
}

/// Everything a node needs to run one instance. A node runs an instance id at most
/// once: the same spec again is answered with the instance as it is; a different
/// spec under the same id is refused (`InstanceExists`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// `i-` + 8 hex digits, made by the CLC.
    pub instance_id: String,
    /// The owner's account id.
    pub account: String,
    /// The reservation (`r-…`) the instance was launched in.
    pub reservation_id: String,
    pub vm_type: VmType,
    pub root: RootDisk,
    /// Kernel and ramdisk (`eki`/`eri`) booted directly, with the kernel command
    /// line `root=/dev/vda console=ttyS0` as Eucalyptus passed; without a kernel the
    /// root disk is booted whole (BIOS).
    #[serde(default)]
    pub kernel: Option<CachedImage>,
    #[serde(default)]
    pub ramdisk: Option<CachedImage>,
    /// Lower-case colon-separated, from the cloud's locally-administered prefix,
    /// unique across the cloud (the CLC makes it).
    pub mac: String,
    /// As the user gave it (base64), for the metadata service (issue 14).
    #[serde(default)]
    pub user_data: Option<String>,
    /// The key pair's public key (OpenSSH form), for the metadata service.
    #[serde(default)]
    pub public_key: Option<String>,
    /// EBS volumes attached at boot (block device mappings other than the root).
    #[serde(default)]
    pub volumes: Vec<AttachSpec>,
    /// The network interface (issue 14); none: the NIC has no network (`-nic none`
    /// as before, networking off).
    #[serde(default)]
    pub nic: Option<crate::net::NicSpec>,
    /// Which run of the instance this is: 0 for its launch, one more at every
    /// StartInstances of a stopped EBS-root instance (same id, new exports). The
    /// node echoes it in [`InstanceReport::incarnation`], so the tombstone of the
    /// run a stop ended is never taken for the run a start asked for (by the CC,
    /// whose reservation it would clear, or by the CLC, which would end the
    /// instance).
    #[serde(default)]
    pub incarnation: u32,
}

impl InstanceSpec {
    pub fn resources(&self) -> Resources {
        self.vm_type.resources()
    }
}

/// An instance's state as its node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeInstanceState {
    /// Disks being prepared, QEMU starting.
    Pending,
    /// QEMU runs the guest.
    Running,
    /// Terminate asked: QEMU being stopped, disks being removed.
    ShuttingDown,
    /// The guest powered itself off (QEMU exited on its own); the disks are still
    /// there until the instance is terminated.
    Shutoff,
    /// QEMU gone, overlay and ephemeral disk removed, image unpinned.
    Terminated,
    /// Could not run (see the reason): QEMU did not start, the image could not be
    /// fetched, the accelerator cannot run the guest (paused with an internal
    /// error), …; nothing of it is left running.
    Failed,
}

impl NodeInstanceState {
    /// Whether the instance still holds the node's capacity.
    pub fn holds_capacity(&self) -> bool {
        !matches!(
            self,
            NodeInstanceState::Terminated | NodeInstanceState::Failed
        )
    }
}

/// Why an instance is in its state (EC2's `stateReason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReason {
    /// EC2's codes: `Server.InternalError`, `Server.InsufficientInstanceCapacity`,
    /// `Client.InstanceInitiatedShutdown`, `Client.UserInitiatedShutdown`,
    /// `Server.NodeDown` (ours), …
    pub code: String,
    pub message: String,
}

/// A volume attachment's state as the node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAttachState {
    /// `blockdev-add`/`device_add` under way.
    Attaching,
    /// The guest has the device.
    Attached,
    /// `device_del` sent, waiting for `DEVICE_DELETED`.
    Detaching,
    /// Device and block node gone; the SC may unexport.
    Detached,
    /// The attach or the detach failed (see `error`); after a failed detach the
    /// volume is still attached.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    pub volume_id: String,
    pub device: String,
    pub state: NodeAttachState,
    #[serde(default)]
    pub error: Option<String>,
}

/// One instance as its node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub account: String,
    pub reservation_id: String,
    pub vm_type: VmType,
    pub state: NodeInstanceState,
    #[serde(default)]
    pub reason: Option<StateReason>,
    pub mac: String,
    /// RFC 3339 UTC, when the node accepted the instance.
    pub launched_at: String,
    #[serde(default)]
    pub volumes: Vec<VolumeReport>,
    /// `system` mode: the address the guest took from the LAN's DHCP server, as the
    /// node saw it on the instance's tap (a DHCPACK to its MAC, or its ARP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_ip: Option<std::net::Ipv4Addr>,
    /// The spec's [`InstanceSpec::incarnation`]: which run of the instance this
    /// report is about.
    #[serde(default)]
    pub incarnation: u32,
}

/// What a node answers to a poll (`GET /v1/node`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (its config's `name`, default the host name): unique in the
    /// cluster.
    pub name: String,
    /// What it advertises (`[nc] cores/memory_mib/disk_gib`, default what the host has).
    pub capacity: Resources,
    /// Instances it holds, including terminated ones for a while (≥ 10 minutes) so a
    /// CC that missed the end still learns it.
    pub instances: Vec<InstanceReport>,
}

/// GetConsoleOutput: the last 64 KiB of the serial console, base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleOutput {
    pub instance_id: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// Base64 of at most [`CONSOLE_TAIL`] bytes.
    pub output: String,
}

/// How much of the console GetConsoleOutput returns.
pub const CONSOLE_TAIL: usize = 64 << 10;

/// A node as its CC sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeState {
    /// Known (listed or registered) but not answered a poll yet since the CC
    /// started: its capacity is unknown, so nothing is placed on it.
    Pending,
    /// Answered one of the last 3 polls.
    Up,
    /// Missed 3 polls in a row: its instances are reported with it, not forgotten.
    Down,
    /// Put to sleep by POWERSAVE (not polled).
    Asleep,
    /// Being woken (the wake command ran; not answered yet).
    Waking,
}

/// One node in the CC's view (`GET /v1/nodes`, `euca nodes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub url: String,
    pub state: NodeState,
    /// As advertised by the node.
    pub capacity: Resources,
    /// Capacity × over-commit: what the CC places up to.
    pub limit: Resources,
    /// Limit − what its instances and pending launches hold.
    pub free: Resources,
    /// What launches placed here and not yet reported by the node hold.
    pub reserved: Resources,
    pub instances: Vec<InstanceReport>,
    /// RFC 3339 UTC of the last answered poll.
    #[serde(default)]
    pub last_seen: Option<String>,
}

/// A CC's answer about one instance: the node's report and where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedInstance {
    pub node: String,
    pub node_state: NodeState,
    /// `None` while the launch is placed but the node has not reported it yet.
    #[serde(default)]
    pub report: Option<InstanceReport>,
    pub instance_id: String,
}

/// `POST /v1/launch`: place `instances` all or nothing — at least `min_count` of
/// them (the first ones) or none. Instance ids already placed keep their node
/// (the call is idempotent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub min_count: u32,
    pub instances: Vec<InstanceSpec>,
    /// Run on this node only (admin placement), whatever the policy.
    #[serde(default)]
    pub node: Option<String>,
    /// The availability zone the CLC addresses; a CC with a configured zone
    /// refuses another (`ZoneMismatch`), one without accepts any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub instance_id: String,
    pub node: String,
}

/// The placed ones, in request order (at least `min_count`); the rest did not fit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchReply {
    pub placed: Vec<Placement>,
}

/// `POST /v1/nodes` (the NC at start and every 30 s): add or update a node in the
/// CC's list, which the CC keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub name: String,
    /// The node's NC API base URL (`http://host:port`, possibly with a path prefix for
    /// simulated nodes).
    pub url: String,
}

/// RFC 3339 UTC now, to the second (`2026-12-03T10:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// RFC 3339 UTC of a Unix time in seconds.
pub fn rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_fit() {
        let node = Resources {
            cores: 4,
            memory_mib: 1024,
            disk_gib: 10,
        };
        let small = Resources {
            cores: 1,
            memory_mib: 256,
            disk_gib: 2,
        };
        assert_eq!(node.copies(&small), 4);
        assert!(node.fits(&small));
        let big = Resources {
            cores: 1,
            memory_mib: 2048,
            disk_gib: 1,
        };
        assert!(!node.fits(&big));
        assert_eq!(node.copies(&big), 0);
        let o = Overcommit {
            cores: 2.0,
            memory: 1.0,
            disk: 1.5,
        };
        assert_eq!(
            o.scale(&node),
            Resources {
                cores: 8,
                memory_mib: 1024,
                disk_gib: 15
            }
        );
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_342_400), "2026-12-04T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
