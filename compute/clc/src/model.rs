//! The records the cloud controller keeps, one type per kind of resource. Every
//! record has its EC2 id and a `tags` map (CreateTags treats all kinds alike
//! through it). Times are RFC 3339 UTC strings as EC2 prints them
//! (`2026-12-03T21:05:33.000Z`). Fields may be added (with `#[serde(default)]`)
//! without migrating stored records.
use crate::describe::Tags;
use crate::store::{Kind, Record};
use serde::{Deserialize, Serialize};

/// An SSH key pair (only the public half is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPair {
    /// `key-` + hex.
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    /// `rsa` or `ed25519`.
    pub key_type: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    pub created: String,
    #[serde(default)]
    pub tags: Tags,
}

/// A security group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-` + hex.
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub tags: Tags,
}

/// One ingress permission: a protocol and port range from a CIDR or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    /// A CIDR (`0.0.0.0/0`), or a source group.
    pub source: RuleSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    Cidr(String),
    Group {
        /// The owning account id.
        user_id: String,
        group_id: String,
        group_name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    Machine,
    Kernel,
    Ramdisk,
}

impl ImageType {
    /// The id prefix: `emi`, `eki`, `eri`.
    pub fn prefix(self) -> &'static str {
        match self {
            ImageType::Machine => "emi",
            ImageType::Kernel => "eki",
            ImageType::Ramdisk => "eri",
        }
    }
}

/// EC2 image states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Pending,
    Available,
    Failed,
    Deregistered,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
            ImageState::Deregistered => "deregistered",
        }
    }
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Machine => "machine",
            ImageType::Kernel => "kernel",
            ImageType::Ramdisk => "ramdisk",
        }
    }
}

/// A registered image: from a bundle in Walrus (instance-store) or from a
/// snapshot (EBS).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub image_type: ImageType,
    pub state: ImageState,
    /// Why the image failed (`stateReason` message).
    #[serde(default)]
    pub state_reason: Option<String>,
    /// The `stateReason` code (`Client.InvalidManifest`, `Server.InternalError`).
    #[serde(default)]
    pub state_reason_code: Option<String>,
    /// The owning account's id (what `owner-id` filters on).
    #[serde(default)]
    pub owner_id: String,
    pub architecture: String,
    /// `bucket/prefix.manifest.xml` for bundles.
    #[serde(default)]
    pub location: Option<String>,
    /// `instance-store` or `ebs`.
    pub root_device_type: String,
    pub root_device_name: String,
    /// EBS images: the root snapshot (and any other mappings, device → snapshot).
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    #[serde(default)]
    pub kernel_id: Option<String>,
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    /// The installed image's id in the image store (content address), once
    /// available.
    #[serde(default)]
    pub installed_id: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// Account ids allowed to launch it besides the owner.
    #[serde(default)]
    pub launch_permissions: Vec<String>,
    pub created: String,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub device_name: String,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub volume_size: Option<u64>,
    #[serde(default)]
    pub delete_on_termination: bool,
    /// `ephemeralN` / `swap` mappings (instance-store).
    #[serde(default)]
    pub virtual_name: Option<String>,
}

/// EC2 volume states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    Creating,
    Available,
    InUse,
    Deleting,
    Deleted,
    Error,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::InUse => "in-use",
            VolumeState::Deleting => "deleting",
            VolumeState::Deleted => "deleted",
            VolumeState::Error => "error",
        }
    }
}

/// A volume (the storage is the storage controller's volume of the same id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub size_gib: u64,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    pub zone: String,
    pub state: VolumeState,
    pub created: String,
    #[serde(default)]
    pub attachment: Option<VolumeAttachment>,
    #[serde(default)]
    pub tags: Tags,
    /// CreateVolume's `ClientToken` (idempotency within the owner's account).
    #[serde(default)]
    pub client_token: Option<String>,
}

/// Attachment states (set by the instances work; the volume record lives here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentState {
    Attaching,
    Attached,
    Detaching,
    Detached,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeAttachment {
    pub instance_id: String,
    pub device: String,
    pub state: AttachmentState,
    pub attach_time: String,
    #[serde(default)]
    pub delete_on_termination: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
}

impl AttachmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentState::Attaching => "attaching",
            AttachmentState::Attached => "attached",
            AttachmentState::Detaching => "detaching",
            AttachmentState::Detached => "detached",
        }
    }
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Completed => "completed",
            SnapshotState::Error => "error",
        }
    }
}

/// A snapshot (stored by the storage controller under the same id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    pub volume_size_gib: u64,
    pub state: SnapshotState,
    /// 0–100.
    pub progress: u8,
    #[serde(default)]
    pub description: String,
    pub start_time: String,
    /// Account ids allowed to create volumes from it besides the owner
    /// (`createVolumePermission`); `all` for public.
    #[serde(default)]
    pub restorable_by: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

/// EC2 instance states, and `launching`: written before the cluster is asked, not
/// shown by Describe (a crash then leaves a record the reconciler re-drives, never
/// an instance nobody knows of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Launching,
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Launching | InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// EC2's state code.
    pub fn code(self) -> u16 {
        match self {
            InstanceState::Launching | InstanceState::Pending => 0,
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
            InstanceState::Stopping => 64,
            InstanceState::Stopped => 80,
        }
    }
}

/// A security group an instance was launched in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

/// EC2's `stateReason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReason {
    pub code: String,
    pub message: String,
}

/// An EBS volume of an instance (its root, a launch mapping, or AttachVolume's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceVolume {
    pub device_name: String,
    pub volume_id: String,
    pub status: AttachmentState,
    pub attach_time: String,
    #[serde(default)]
    pub delete_on_termination: bool,
    /// The SC's export URI while attached (what the node was given).
    #[serde(default)]
    pub export_uri: Option<String>,
    /// Why a detach did not happen (the node's error), until it does.
    #[serde(default)]
    pub error: Option<String>,
    /// AttachVolume's detach was forced.
    #[serde(default)]
    pub force: bool,
}

/// An instance (one VM of a reservation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// `i-` + 8 hex.
    pub id: String,
    pub reservation_id: String,
    pub image_id: String,
    #[serde(default)]
    pub kernel_id: Option<String>,
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    pub instance_type: String,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    pub zone: String,
    pub launch_index: u32,
    /// How many of the reservation must be placed (RunInstances' MinCount): what a
    /// re-driven launch asks for again.
    #[serde(default)]
    pub min_count: u32,
    pub launch_time: String,
    pub state: InstanceState,
    #[serde(default)]
    pub state_reason: Option<InstanceReason>,
    /// `reason` (the state transition reason, free text).
    #[serde(default)]
    pub reason: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`, unique in the cloud.
    pub mac: String,
    pub architecture: String,
    /// `instance-store` or `ebs`.
    pub root_device_type: String,
    pub root_device_name: String,
    #[serde(default)]
    pub volumes: Vec<InstanceVolume>,
    #[serde(default)]
    pub client_token: Option<String>,
    /// A digest of the RunInstances parameters (ClientToken idempotency).
    #[serde(default)]
    pub params_digest: Option<String>,
    /// The node the cluster placed it on.
    #[serde(default)]
    pub node: Option<String>,
    /// When it became terminated (Unix seconds, the CLC's clock): expired an hour on.
    #[serde(default)]
    pub terminated_at: Option<i64>,
    /// What the node runs (kept so a re-driven launch and StartInstances send the
    /// same spec).
    pub spec: euca_compute_proto::InstanceSpec,
    #[serde(default)]
    pub tags: Tags,
    /// Its private address: allocated by the CLC (managed modes: in its group's
    /// subnet; `static`: from the zone's range), or learned by its node (`system`).
    /// Cleared when the instance ends.
    #[serde(default)]
    pub private_ip: Option<std::net::Ipv4Addr>,
    /// The public address mapped to it now (launch-time or elastic, see [`Address`]).
    #[serde(default)]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// Managed modes: its group's subnet index in its zone
    /// (`ClusterNet::group_subnet`).
    #[serde(default)]
    pub net_index: Option<u32>,
}

impl Instance {
    /// The network mode its launch spec was made for (`off` without a NIC).
    pub fn net_mode(&self) -> euca_compute_proto::net::NetMode {
        self.spec.nic.as_ref().map(|n| n.mode).unwrap_or_default()
    }
}

/// A public address of a zone's pool that is taken (id `<zone>/<address>`, so the
/// store's id uniqueness is the address's): an elastic IP an account allocated
/// (owned by it), or an instance's launch-time public IP (owned by the instance's
/// account, `elastic` false, removed when the instance lets go of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Address {
    pub id: String,
    pub zone: String,
    pub public_ip: std::net::Ipv4Addr,
    pub elastic: bool,
    /// The instance it is mapped to.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// When it was taken (Unix seconds, the system clock; none in records older
    /// than the field): the leak sweep leaves a young launch-time address alone,
    /// since its launch may not have written the instance yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// A private network allocation (internal): a group subnet index
/// (`<zone>/subnet/<k>` → the group id), a group's index (`<zone>/group/<sg>` →
/// `k`) or a private address (`<zone>/ip/<address>` → the instance id). One
/// record per thing allocated, so a clash is an id clash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetRecord {
    pub id: String,
    pub holder: String,
    /// When it was taken (as [`Address::created`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// A MAC address handed out (id = the address), or the cloud's prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MacRecord {
    pub id: String,
    /// The instance holding it, or (for the prefix record) the prefix.
    pub value: String,
    /// When it was taken (as [`Address::created`]): the leak sweep leaves a young
    /// one alone, since its launch may not have written the instance yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

macro_rules! record {
    ($t:ty, $k:expr) => {
        impl Record for $t {
            const KIND: Kind = $k;
            fn id(&self) -> &str {
                &self.id
            }
        }
    };
}
record!(KeyPair, Kind::KeyPair);
record!(SecurityGroup, Kind::SecurityGroup);
record!(Image, Kind::Image);
record!(Volume, Kind::Volume);
record!(Snapshot, Kind::Snapshot);
record!(Instance, Kind::Instance);
record!(MacRecord, Kind::Mac);
record!(Address, Kind::Address);
record!(NetRecord, Kind::Net);

/// The `stateReason` code of an instance whose node is down (see
/// [`crate::reconcile`]).
pub const NODE_DOWN: &str = "Server.NodeDown";

/// Now, as EC2 prints times (`2026-12-03T21:05:33.000Z`).
pub fn now_iso() -> String {
    euca_aws::timefmt::format_iso8601(time::OffsetDateTime::now_utc())
}
