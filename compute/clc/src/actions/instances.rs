//! Instances: RunInstances, DescribeInstances, Terminate/Reboot/Stop/Start,
//! GetConsoleOutput and DescribeInstanceStatus. The records are the CLC's (ids,
//! reservations, MACs, states as EC2 shows them); the VMs are the cluster's,
//! reached through [`crate::cluster::ClusterApi`].
//!
//! Crash safety of a launch: the records are written first in the internal
//! `launching` state (Describe does not show it), then the cluster is asked to
//! place them (idempotent by instance id), then the placed ones become `pending`
//! and the others are deleted. The reconciler ([`crate::reconcile`]) re-drives
//! `launching` records left by a crash: the same ids get the same placement, or
//! are deleted if the cluster has no room. So no instance runs unseen and none
//! runs twice. A record is deleted there only while it is still `launching`,
//! and the reconciler re-reads a reservation before re-driving it, so a pass
//! that read the records while their call was still placing them changes
//! nothing (on records several controllers share it also waits
//! [`crate::reconcile::SHARED_LAUNCH_GRACE_SECS`], as another controller's call
//! in flight cannot be seen).
use super::launch_volumes::LaunchVolume;
use crate::call::Call;
use crate::cluster::map_error;
use crate::describe::{self, Describe, Filterable, Scope, Tags};
use crate::error::Ec2Error;
use crate::model::{
    GroupRef, Image, ImageState, ImageType, Instance, InstanceReason, InstanceState, KeyPair,
};
use crate::offload::{all_of, blocking, on_db};
use crate::params::Params;
use crate::store::{Db, Owned, Write};
use base64::Engine;
use euca_aws::xml::XmlWriter;
use euca_compute_proto::{codes, CachedImage, InstanceSpec, LaunchRequest, RootDisk, VmType};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The default instance type.
pub const DEFAULT_TYPE: &str = "m1.small";
/// Largest decoded UserData.
pub const MAX_USER_DATA: usize = 16 << 10;
/// Most instances one RunInstances may ask for.
pub const MAX_COUNT: i64 = 1000;
/// How long a terminated instance stays describable (seconds).
pub const TERMINATED_KEPT_SECS: i64 = 3600;

/// Serialises RunInstances calls that carry the same ClientToken (and owner), so
/// two retries of one request cannot both launch; calls with other tokens hash to
/// other stripes and go on concurrently.
static TOKEN_LOCKS: [tokio::sync::Mutex<()>; 64] =
    [const { tokio::sync::Mutex::const_new(()) }; 64];

fn token_lock(owner: &str, token: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (owner, token).hash(&mut h);
    &TOKEN_LOCKS[(h.finish() % TOKEN_LOCKS.len() as u64) as usize]
}

/// Reservations whose launch a RunInstances call is driving now (the reconciler
/// leaves their `launching` records alone).
static IN_FLIGHT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Whether a RunInstances call in this process is launching `reservation`.
pub(crate) fn in_flight(reservation: &str) -> bool {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(reservation)
}

struct InFlight(String);
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

pub fn not_found(id: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidInstanceID.NotFound", "instance ID", id)
}

/// The caller's instance `id` (not one still `launching`).
pub fn owned_instance(cx: &Call<'_>, id: &str) -> Result<Owned<Instance>, Ec2Error> {
    match cx.clc.db.get::<Instance>(id)? {
        Some(o) if o.owner == cx.account() && o.record.state != InstanceState::Launching => Ok(o),
        _ => Err(not_found(id)),
    }
}

/// An image the caller may launch, of `kind`, available.
fn launchable(cx: &Call<'_>, id: &str, kind: ImageType) -> Result<Image, Ec2Error> {
    let nf = || Ec2Error::not_found("InvalidAMIID.NotFound", "image id", id);
    let o = match cx.clc.db.get::<Image>(id)? {
        Some(o) if super::images::can_launch(&o, cx.account()) => o,
        _ => return Err(nf()),
    };
    if o.record.image_type != kind {
        return Err(Ec2Error::invalid(format!(
            "The image {id} is a {} image, not a {} image",
            o.record.image_type.as_str(),
            kind.as_str()
        )));
    }
    if o.record.state != ImageState::Available {
        return Err(Ec2Error::invalid(format!(
            "The image {id} is {}; only available images can be launched",
            o.record.state.as_str()
        )));
    }
    Ok(o.record)
}

fn cached(i: &Image) -> Result<CachedImage, Ec2Error> {
    let installed = i
        .installed_id
        .clone()
        .ok_or_else(|| Ec2Error::invalid(format!("The image {} has no installed copy", i.id)))?;
    Ok(CachedImage {
        installed_id: installed,
        size: 0,
    })
}

/// A digest of the request's parameters other than the ClientToken (two calls
/// with one token are the same request only if these match).
fn params_digest(p: &Params) -> String {
    let mut h = Sha256::new();
    for (k, v) in p.iter() {
        if k == "ClientToken" {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Every record of `owner`'s reservation `rid` in launch order (any state).
fn reservation_of(db: &Db, owner: &str, rid: &str) -> Result<Vec<Owned<Instance>>, Ec2Error> {
    let mut v: Vec<_> = all_of::<Instance>(db, Some(owner))?
        .into_iter()
        .filter(|o| o.record.reservation_id == rid)
        .collect();
    v.sort_by_key(|o| o.record.launch_index);
    Ok(v)
}

pub async fn run_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let clc = cx.clc;
    let owner = cx.account().to_string();
    let image = launchable(cx, p.required("ImageId")?, ImageType::Machine)?;
    let min = p.int("MinCount")?.unwrap_or(1);
    let max = p.int("MaxCount")?.unwrap_or(min);
    if min < 1 || max < min || max > MAX_COUNT {
        return Err(Ec2Error::invalid(format!(
            "MinCount ({min}) and MaxCount ({max}) must satisfy 1 <= MinCount <= MaxCount <= {MAX_COUNT}"
        )));
    }
    let type_name = p.get("InstanceType").unwrap_or(DEFAULT_TYPE);
    let itype = clc
        .config
        .instance_type(type_name)
        .cloned()
        .ok_or_else(|| {
            Ec2Error::invalid(format!("The instance type '{type_name}' does not exist"))
        })?;
    let zone = match p
        .get("Placement.AvailabilityZone")
        .filter(|z| !z.is_empty())
    {
        Some(z) if clc.zones().iter().any(|o| o == z) => z.to_string(),
        // AWS's answer to a zone the region does not have.
        Some(z) => {
            return Err(Ec2Error::invalid(format!(
                "Invalid availability zone: [{z}]"
            )))
        }
        None => default_zone(clc, &itype, min as u64).await,
    };
    let key = match p.get("KeyName") {
        Some(name) => {
            let keys = all_of::<KeyPair>(&clc.db, Some(&owner))?;
            Some(
                keys.into_iter()
                    .find(|k| k.record.name == name)
                    .map(|k| k.record)
                    .ok_or_else(|| {
                        Ec2Error::not_found("InvalidKeyPair.NotFound", "key pair", name)
                    })?,
            )
        }
        None => None,
    };
    // The caller's groups (the first use makes the `default` group: a commit).
    let (db, me) = (clc.db.clone(), owner.clone());
    let all_groups = blocking(move || super::groups::my_groups(&db, &me)).await?;
    let groups = launch_groups(p, &all_groups)?;
    let tags = super::tags::tag_specs(p, "instance")?;
    let user_data = match p.get("UserData") {
        Some(u) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(u.as_bytes())
                .map_err(|_| Ec2Error::invalid("Invalid BASE64 encoding of user data"))?;
            if decoded.len() > MAX_USER_DATA {
                return Err(Ec2Error::invalid(format!(
                    "User data is limited to {MAX_USER_DATA} bytes"
                )));
            }
            Some(u.to_string())
        }
        None => None,
    };
    let kernel_id = p
        .get("KernelId")
        .map(String::from)
        .or_else(|| image.kernel_id.clone());
    let ramdisk_id = p
        .get("RamdiskId")
        .map(String::from)
        .or_else(|| image.ramdisk_id.clone());
    let kernel = match &kernel_id {
        Some(k) => Some(cached(&launchable(cx, k, ImageType::Kernel)?)?),
        None => None,
    };
    let ramdisk = match &ramdisk_id {
        Some(r) => Some(cached(&launchable(cx, r, ImageType::Ramdisk)?)?),
        None => None,
    };
    let ebs_root = if image.root_device_type == "ebs" {
        Some(ebs_root_of(&image, p)?)
    } else {
        None
    };
    let extra_volumes = super::launch_volumes::launch_volumes(cx, &image).await?;
    let root = match &ebs_root {
        // Filled per instance once its volume is made and exported.
        Some(_) => RootDisk::Volume {
            volume_id: String::new(),
            export: euca_compute_proto::VolumeExport { uri: String::new() },
        },
        None => RootDisk::Image(cached(&image)?),
    };
    let token = p.get("ClientToken").filter(|t| !t.is_empty());
    if token.is_some_and(|t| t.len() > 64) {
        return Err(Ec2Error::invalid(
            "Value for parameter clientToken is invalid: at most 64 characters.",
        ));
    }
    let digest = params_digest(p);
    let _guard = match token {
        Some(t) => Some(token_lock(&owner, t).lock().await),
        None => None,
    };
    if let Some(t) = token {
        let (db, me) = (clc.db.clone(), owner.clone());
        let mine = blocking(move || all_of::<Instance>(&db, Some(&me))).await?;
        if let Some(o) = mine
            .iter()
            .find(|o| o.record.client_token.as_deref() == Some(t))
        {
            if o.record.params_digest.as_deref() != Some(digest.as_str()) {
                return Err(Ec2Error::Parameter {
                    code: "IdempotentParameterMismatch",
                    message: format!(
                        "The client token '{t}' was used with other parameters for {}",
                        o.record.reservation_id
                    ),
                });
            }
            let rid = o.record.reservation_id.clone();
            let res: Vec<_> = reservation_of(&clc.db, &owner, &rid)?
                .into_iter()
                .filter(|o| o.record.state != InstanceState::Launching)
                .collect();
            if !res.is_empty() {
                write_reservation(x, &clc.config.dns_domain, &owner, &res);
                return Ok(());
            }
            // The first call with this token is still being launched (its CC call
            // failed or has not answered; the reconciler goes on with it): a retry
            // must not launch a second reservation.
            return Err(Ec2Error::Unavailable(format!(
                "the request with client token '{t}' ({rid}) is still being launched; retry"
            )));
        }
    }
    let cluster = clc.cluster(&zone)?;
    let net = clc.cluster_net(&zone).await?;
    // Eucalyptus' managed modes put an instance in one group (its subnet).
    if net.mode.is_managed() && groups.len() > 1 {
        return Err(Ec2Error::Parameter {
            code: "InvalidParameterCombination",
            message: format!(
                "In network mode {} an instance belongs to one security group; {} were given",
                net.mode.as_str(),
                groups.len()
            ),
        });
    }
    let public = match p.get("AddressingType") {
        None | Some("public") | Some("") => net.mode.is_managed(),
        Some("private") => false,
        Some(other) => {
            return Err(Ec2Error::invalid(format!(
                "Invalid value '{other}' for AddressingType: public or private"
            )))
        }
    };
    let net_on = net.mode != euca_compute_proto::net::NetMode::Off;
    let reservation_id = crate::ids::new_id("r");
    let _flight = {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reservation_id.clone());
        InFlight(reservation_id.clone())
    };
    let vm_type = VmType {
        name: itype.name.clone(),
        cores: itype.cpus,
        memory_mib: itype.memory_mib,
        disk_gib: itype.disk_gib,
    };
    let launch_time = euca_aws::timefmt::format_iso8601(clc.now());
    let template = Template {
        owner: owner.clone(),
        reservation_id: reservation_id.clone(),
        image,
        kernel_id,
        ramdisk_id,
        kernel,
        ramdisk,
        root,
        vm_type,
        key,
        groups,
        user_data,
        zone,
        launch_time,
        min: min as u32,
        token: token.map(String::from),
        digest,
        tags,
        net,
        public,
    };
    let db = clc.db.clone();
    let count = max as u32;
    // The records first, `launching` (hidden), each with its own MAC and
    // addresses; all or none (addresses can run out part way).
    let records = blocking(move || {
        let mut out: Vec<Instance> = Vec::with_capacity(count as usize);
        for i in 0..count {
            let made = template.instance(&db, i).and_then(|inst| {
                if db.insert_new(&template.owner, &inst)? {
                    return Ok(inst);
                }
                let _g = crate::netalloc::lock();
                crate::netalloc::release(&db, &inst)?;
                crate::mac::release(&db, &inst.mac)?;
                Err(Ec2Error::internal(format!(
                    "instance id {} exists",
                    inst.id
                )))
            });
            match made {
                Ok(inst) => out.push(inst),
                Err(e) => {
                    for r in &out {
                        if let Err(e) = delete_instance(&db, &r.id) {
                            tracing::warn!(instance = %r.id, error = %e, "removing the record of a launch that failed");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    })
    .await?;
    let mut records = records;
    if ebs_root.is_some() || !extra_volumes.is_empty() {
        let made = prepare_volumes(
            clc,
            &*cluster,
            &owner,
            &mut records,
            ebs_root.as_ref(),
            &extra_volumes,
        )
        .await;
        if let Err(e) = made {
            drop_launch(clc, &records).await;
            return Err(e);
        }
    }
    let placed = drive_launch(clc, &*cluster, &owner, records).await?;
    if net_on {
        if let Err(e) = crate::netstate::refresh_dns(clc).await {
            tracing::warn!(error = %e, "rebuilding the DNS index");
        }
    }
    clc.kick_reconciler();
    write_reservation(x, &clc.config.dns_domain, &owner, &placed);
    Ok(())
}

/// The zone of a launch without `Placement.AvailabilityZone`: the first zone
/// (in [`crate::Clc::zones`] order: the CLC's own, then the others by name)
/// whose cluster answers with room for `min` instances of `t` on nodes that are
/// up; when none has room, the CLC's own zone if its cluster is connected, else
/// the first connected one (the launch then fails there with
/// `InsufficientInstanceCapacity`).
async fn default_zone(clc: &crate::Clc, t: &crate::config::InstanceType, min: u64) -> String {
    let need = euca_compute_proto::Resources {
        cores: t.cpus,
        memory_mib: t.memory_mib,
        disk_gib: t.disk_gib,
    };
    let clusters = clc.clusters();
    for z in clc.zones() {
        let Some((_, c)) = clusters.iter().find(|(n, _)| *n == z) else {
            continue;
        };
        let Ok(nodes) = c.nodes().await else { continue };
        let room: u64 = nodes
            .iter()
            .filter(|n| n.state == euca_compute_proto::NodeState::Up)
            .fold(0u64, |a, n| a.saturating_add(n.free.copies(&need)));
        if room >= min {
            return z;
        }
    }
    let own = clc.zone();
    if clc.cluster(&own).is_ok() {
        own
    } else {
        clusters.first().map(|(z, _)| z.clone()).unwrap_or(own)
    }
}

/// The root volume of an EBS-backed launch: from the image's root mapping,
/// `BlockDeviceMapping.N` for the root device overriding size and
/// DeleteOnTermination.
struct EbsRoot {
    snapshot_id: String,
    size_gib: Option<u64>,
    delete_on_termination: bool,
}

fn ebs_root_of(image: &Image, p: &Params) -> Result<EbsRoot, Ec2Error> {
    let bd = image
        .block_devices
        .iter()
        .find(|b| b.device_name == image.root_device_name && b.snapshot_id.is_some())
        .ok_or_else(|| {
            Ec2Error::invalid(format!(
                "The EBS image {} has no snapshot for its root device {}",
                image.id, image.root_device_name
            ))
        })?;
    let mut root = EbsRoot {
        snapshot_id: bd.snapshot_id.clone().unwrap_or_default(),
        size_gib: bd.volume_size,
        delete_on_termination: bd.delete_on_termination,
    };
    for m in p.members("BlockDeviceMapping") {
        if m.get("DeviceName") != Some(image.root_device_name.as_str()) {
            continue;
        }
        if let Some(s) = m.int("Ebs.VolumeSize")? {
            if s < 1 {
                return Err(Ec2Error::invalid(format!("Volume size {s} is invalid")));
            }
            root.size_gib = Some(s as u64);
        }
        if let Some(d) = m.bool("Ebs.DeleteOnTermination")? {
            root.delete_on_termination = d;
        }
    }
    Ok(root)
}

/// How long a launch's volume (made from a snapshot) may take to become available.
const LAUNCH_VOLUME_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Makes each instance's volumes — the EBS root from the image's snapshot
/// (attached), then the launch's other mappings ([`LaunchVolume`], `attaching`
/// until the node reports them) — exports them to one node the cluster has room
/// on (the launch is pinned there: the exports are that node's), and writes
/// them into the records and the instance specs.
async fn prepare_volumes(
    clc: &crate::Clc,
    cluster: &dyn crate::cluster::ClusterApi,
    owner: &str,
    records: &mut [Instance],
    root: Option<&EbsRoot>,
    extra: &[LaunchVolume],
) -> Result<(), Ec2Error> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    let need = first.spec.resources();
    let want = u64::from(first.min_count.max(1));
    let nodes = cluster.nodes().await.map_err(map_error)?;
    let node = nodes
        .iter()
        .filter(|n| n.state == euca_compute_proto::NodeState::Up)
        .max_by_key(|n| n.free.copies(&need))
        .filter(|n| n.free.copies(&need) >= want)
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            Ec2Error::state(
                "InsufficientInstanceCapacity",
                "There is not enough capacity to fulfill your request.",
            )
        })?;
    let ip = crate::cluster::node_ip(cluster, &node).await?;
    for rec in records.iter_mut() {
        rec.node = Some(node.clone());
        if let Some(root) = root {
            let device = rec.root_device_name.clone();
            let (id, uri) = launch_volume(
                clc,
                owner,
                rec,
                ip,
                &LaunchVolume {
                    device,
                    snapshot_id: Some(root.snapshot_id.clone()),
                    size_gib: root.size_gib,
                    delete_on_termination: root.delete_on_termination,
                },
                crate::model::AttachmentState::Attached,
            )
            .await?;
            rec.spec.root = RootDisk::Volume {
                volume_id: id,
                export: euca_compute_proto::VolumeExport { uri },
            };
        }
        for v in extra {
            let (id, uri) = launch_volume(
                clc,
                owner,
                rec,
                ip,
                v,
                crate::model::AttachmentState::Attaching,
            )
            .await?;
            rec.spec.volumes.push(euca_compute_proto::AttachSpec {
                volume_id: id,
                device: v.device.clone(),
                export: euca_compute_proto::VolumeExport { uri },
            });
        }
        let r = rec.clone();
        on_db(&clc.db, move |db| {
            db.update::<Instance, _>(&r.id, |cur| {
                Ok(match cur {
                    Some(c) => {
                        c.record = r.clone();
                        (Write::Put, ())
                    }
                    None => (Write::Keep, ()),
                })
            })
        })
        .await?;
    }
    Ok(())
}

/// Makes one volume of `rec`'s launch through the SC (its record `in-use`,
/// attached to `rec` in `state`), waits until it is available, exports it to
/// the node at `ip`, and adds it to `rec.volumes`. Returns its id and export.
/// Whatever it made is in `rec.volumes` as soon as the SC made it, so a failed
/// launch's [`drop_volumes`] removes it.
async fn launch_volume(
    clc: &crate::Clc,
    owner: &str,
    rec: &mut Instance,
    ip: std::net::IpAddr,
    v: &LaunchVolume,
    state: crate::model::AttachmentState,
) -> Result<(String, String), Ec2Error> {
    let sc = clc.sc()?;
    let made = sc
        .create_volume(v.size_gib, v.snapshot_id.as_deref())
        .await?;
    let vol = crate::model::Volume {
        id: made.id.clone(),
        size_gib: made.size_gib(),
        snapshot_id: made.snapshot_id.clone(),
        zone: rec.zone.clone(),
        state: crate::model::VolumeState::InUse,
        created: rec.launch_time.clone(),
        attachment: Some(crate::model::VolumeAttachment {
            instance_id: rec.id.clone(),
            device: v.device.clone(),
            state,
            attach_time: rec.launch_time.clone(),
            delete_on_termination: v.delete_on_termination,
        }),
        tags: Tags::new(),
        client_token: None,
    };
    rec.volumes.push(crate::model::InstanceVolume {
        device_name: v.device.clone(),
        volume_id: made.id.clone(),
        status: state,
        attach_time: rec.launch_time.clone(),
        delete_on_termination: v.delete_on_termination,
        export_uri: None,
        error: None,
        force: false,
    });
    let (o, v) = (owner.to_string(), vol.clone());
    if !on_db(&clc.db, move |db| db.insert_new(&o, &v)).await? {
        return Err(Ec2Error::internal(format!(
            "the storage controller made volume {} but a record of that id exists",
            vol.id
        )));
    }
    let deadline = tokio::time::Instant::now() + LAUNCH_VOLUME_WAIT;
    let mut vstate = made.state.clone();
    while vstate != "available" {
        if vstate != "creating" || tokio::time::Instant::now() >= deadline {
            return Err(Ec2Error::internal(format!(
                "the launch volume {} is {vstate}, not available",
                made.id
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        vstate = sc
            .volume(&made.id)
            .await?
            .map(|v| v.state)
            .unwrap_or_else(|| "gone".into());
    }
    let uri = sc
        .attach_volume(&made.id, ip, &clc.config.volume_protocol)
        .await?;
    if let Some(e) = rec.volumes.iter_mut().find(|e| e.volume_id == made.id) {
        e.export_uri = Some(uri.clone());
    }
    Ok((made.id, uri))
}

/// Removes what a launch that did not happen made: root volumes (export,
/// storage, record) and the instance records.
async fn drop_launch(clc: &crate::Clc, records: &[Instance]) {
    for rec in records {
        drop_volumes(clc, rec).await;
        let id = rec.id.clone();
        if let Err(e) = on_db(&clc.db, move |db| delete_instance(db, &id)).await {
            tracing::warn!(instance = %rec.id, error = %e, "removing an instance record of a failed launch");
        }
    }
}

/// Removes the volumes an unlaunched instance's launch made.
async fn drop_volumes(clc: &crate::Clc, rec: &Instance) {
    let Ok(sc) = clc.sc() else { return };
    for v in &rec.volumes {
        let gone = async {
            sc.detach_volume(&v.volume_id).await?;
            sc.delete_volume(&v.volume_id).await?;
            let vid = v.volume_id.clone();
            on_db(&clc.db, move |db| {
                db.update::<crate::model::Volume, _>(&vid, |_| Ok((Write::Delete, ())))
            })
            .await
        };
        if let Err(e) = gone.await {
            tracing::warn!(volume = %v.volume_id, error = %e, "removing the root volume of a failed launch");
        }
    }
}

/// What every instance of one RunInstances shares.
struct Template {
    owner: String,
    reservation_id: String,
    image: Image,
    kernel_id: Option<String>,
    ramdisk_id: Option<String>,
    kernel: Option<CachedImage>,
    ramdisk: Option<CachedImage>,
    root: RootDisk,
    vm_type: VmType,
    key: Option<KeyPair>,
    groups: Vec<GroupRef>,
    user_data: Option<String>,
    zone: String,
    launch_time: String,
    min: u32,
    token: Option<String>,
    digest: String,
    tags: Tags,
    /// The zone's network config, and whether to give each a launch-time public
    /// address.
    net: euca_compute_proto::net::ClusterNet,
    public: bool,
}

impl Template {
    fn instance(&self, db: &Db, index: u32) -> Result<Instance, Ec2Error> {
        let id = crate::ids::new_id("i");
        let mac = crate::mac::allocate(db, &id)?;
        let net = {
            let _g = crate::netalloc::lock();
            crate::netalloc::allocate(
                db,
                &self.net,
                &self.zone,
                &self.owner,
                &id,
                self.groups.first(),
                self.public,
            )
        };
        let net = match net {
            Ok(n) => n,
            Err(e) => {
                crate::mac::release(db, &mac)?;
                return Err(e);
            }
        };
        let spec = InstanceSpec {
            instance_id: id.clone(),
            account: self.owner.clone(),
            reservation_id: self.reservation_id.clone(),
            vm_type: self.vm_type.clone(),
            root: self.root.clone(),
            kernel: self.kernel.clone(),
            ramdisk: self.ramdisk.clone(),
            mac: mac.clone(),
            user_data: self.user_data.clone(),
            public_key: self.key.as_ref().map(|k| k.public_key.clone()),
            volumes: Vec::new(),
            nic: net.nic,
            incarnation: 0,
        };
        Ok(Instance {
            id,
            reservation_id: self.reservation_id.clone(),
            image_id: self.image.id.clone(),
            kernel_id: self.kernel_id.clone(),
            ramdisk_id: self.ramdisk_id.clone(),
            instance_type: self.vm_type.name.clone(),
            key_name: self.key.as_ref().map(|k| k.name.clone()),
            groups: self.groups.clone(),
            zone: self.zone.clone(),
            launch_index: index,
            min_count: self.min,
            launch_time: self.launch_time.clone(),
            state: InstanceState::Launching,
            state_reason: None,
            reason: String::new(),
            mac,
            architecture: self.image.architecture.clone(),
            root_device_type: self.image.root_device_type.clone(),
            root_device_name: self.image.root_device_name.clone(),
            volumes: Vec::new(),
            client_token: self.token.clone(),
            params_digest: Some(self.digest.clone()),
            node: None,
            terminated_at: None,
            spec,
            tags: self.tags.clone(),
            private_ip: net.private_ip,
            public_ip: net.public_ip,
            net_index: net.index,
        })
    }
}

/// Asks the cluster to place `records` (one reservation, `launching`, in launch
/// order), then makes the placed ones `pending` and deletes the rest. A cluster
/// without room: all deleted, `InsufficientInstanceCapacity`. A cluster that
/// did not answer: the records stay `launching` for the reconciler to re-drive,
/// and the caller gets `Unavailable`.
pub(crate) async fn drive_launch(
    clc: &crate::Clc,
    cluster: &dyn crate::cluster::ClusterApi,
    owner: &str,
    records: Vec<Instance>,
) -> Result<Vec<Owned<Instance>>, Ec2Error> {
    let Some(first) = records.first() else {
        return Ok(Vec::new());
    };
    // Volumes made for the launch are exported to one node: the launch goes there.
    let pinned = first.node.is_some();
    let req = LaunchRequest {
        min_count: first.min_count.max(1),
        instances: records.iter().map(|r| r.spec.clone()).collect(),
        node: if pinned { first.node.clone() } else { None },
        zone: Some(first.zone.clone()),
    };
    let reply = cluster.launch(&req).await;
    let db = clc.db.clone();
    let mut refused = None;
    let placed: Vec<(String, String)> = match reply {
        Ok(r) => r
            .placed
            .into_iter()
            .map(|p| (p.instance_id, p.node))
            .collect(),
        Err(e) if e.code() == Some(codes::INSUFFICIENT_CAPACITY) => Vec::new(),
        // No answer: the launch may have happened; the reconciler asks again.
        Err(e) if e.is_unavailable() => return Err(map_error(e)),
        // Refused for another reason (a node it cannot use, a request too large):
        // nothing was placed, so nothing is kept.
        Err(e) => {
            refused = Some(map_error(e));
            Vec::new()
        }
    };
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let _ = owner;
    for r in records
        .iter()
        .filter(|r| !placed.iter().any(|(i, _)| *i == r.id))
    {
        drop_volumes(clc, r).await;
    }
    let out = blocking(move || {
        let mut out = Vec::new();
        for id in &ids {
            match placed.iter().find(|(i, _)| i == id) {
                Some((_, node)) => {
                    let o = db.update_while::<Instance>(
                        id,
                        |i| i.state == InstanceState::Launching,
                        |i| {
                            i.state = InstanceState::Pending;
                            i.node = Some(node.clone());
                        },
                    )?;
                    if let Some(o) = o {
                        out.push(o);
                    }
                }
                // Only a record still `launching`: a launch re-driven from a
                // stale view must not delete what another drive placed.
                None => {
                    delete_instance_if(&db, id, |i| i.state == InstanceState::Launching)?;
                }
            }
        }
        Ok(out)
    })
    .await?;
    if let Some(e) = refused {
        return Err(e);
    }
    if out.is_empty() {
        return Err(Ec2Error::state(
            "InsufficientInstanceCapacity",
            "There is not enough capacity to fulfill your request.",
        ));
    }
    Ok(out)
}

/// Removes an instance record and gives its MAC and addresses back.
pub(crate) fn delete_instance(db: &Db, id: &str) -> Result<(), Ec2Error> {
    delete_instance_if(db, id, |_| true).map(|_| ())
}

/// [`delete_instance`] only while the record is still as `still` says, checked
/// in the transaction that deletes it; whether it was deleted.
fn delete_instance_if(
    db: &Db,
    id: &str,
    still: impl Fn(&Instance) -> bool,
) -> Result<bool, Ec2Error> {
    let _g = crate::netalloc::lock();
    let gone = db.update::<Instance, _>(id, |cur| {
        Ok(match cur {
            Some(c) if still(&c.record) => (Write::Delete, Some(c.record.clone())),
            _ => (Write::Keep, None),
        })
    })?;
    let Some(rec) = gone else {
        return Ok(false);
    };
    crate::netalloc::release(db, &rec)?;
    crate::mac::release(db, &rec.mac)?;
    Ok(true)
}

/// The groups of a launch: `SecurityGroupId.N` and `SecurityGroup.N`, or the
/// caller's `default` group.
fn launch_groups(
    p: &Params,
    all: &[Owned<crate::model::SecurityGroup>],
) -> Result<Vec<GroupRef>, Ec2Error> {
    let mut out: Vec<GroupRef> = Vec::new();
    fn add(out: &mut Vec<GroupRef>, g: &crate::model::SecurityGroup) {
        if !out.iter().any(|o| o.id == g.id) {
            out.push(GroupRef {
                id: g.id.clone(),
                name: g.name.clone(),
            });
        }
    }
    for id in p.list("SecurityGroupId") {
        let g = all
            .iter()
            .find(|g| g.record.id == id)
            .ok_or_else(|| Ec2Error::not_found("InvalidGroup.NotFound", "security group", id))?;
        add(&mut out, &g.record);
    }
    for name in p.list("SecurityGroup") {
        let g = all
            .iter()
            .find(|g| g.record.name == name)
            .ok_or_else(|| Ec2Error::not_found("InvalidGroup.NotFound", "security group", name))?;
        add(&mut out, &g.record);
    }
    if out.is_empty() {
        if let Some(g) = all
            .iter()
            .find(|g| g.record.name == super::groups::DEFAULT_GROUP)
        {
            add(&mut out, &g.record);
        }
    }
    Ok(out)
}

fn group_set(x: &mut XmlWriter, groups: &[GroupRef]) {
    x.open("groupSet");
    for g in groups {
        x.open("item")
            .elem("groupId", &g.id)
            .elem("groupName", &g.name)
            .close();
    }
    x.close();
}

/// RunInstances' answer: one reservation.
fn write_reservation(x: &mut XmlWriter, domain: &str, owner: &str, items: &[Owned<Instance>]) {
    let Some(first) = items.first() else { return };
    x.elem("reservationId", &first.record.reservation_id)
        .elem("ownerId", owner);
    group_set(x, &first.record.groups);
    x.open("instancesSet");
    for o in items {
        x.open("item");
        instance_body(x, domain, &o.record);
        x.close();
    }
    x.close();
}

fn state_elem(x: &mut XmlWriter, name: &'static str, s: InstanceState) {
    x.open(name)
        .elem("code", s.code().to_string())
        .elem("name", s.as_str())
        .close();
}

/// One instance's elements (RunInstances' and DescribeInstances' items).
pub fn instance_body(x: &mut XmlWriter, domain: &str, i: &Instance) {
    let private_ip = i.private_ip.map(|a| a.to_string()).unwrap_or_default();
    let private_dns = i
        .private_ip
        .map(crate::dns::private_name)
        .unwrap_or_default();
    let public_dns = i
        .public_ip
        .map(|a| crate::dns::public_name(a, domain))
        .unwrap_or_default();
    x.elem("instanceId", &i.id).elem("imageId", &i.image_id);
    state_elem(x, "instanceState", i.state);
    x.elem("privateDnsName", &private_dns)
        .elem("dnsName", &public_dns)
        .elem("reason", &i.reason);
    if let Some(k) = &i.key_name {
        x.elem("keyName", k);
    }
    x.elem("amiLaunchIndex", i.launch_index.to_string());
    x.open("productCodes").close();
    x.elem("instanceType", &i.instance_type)
        .elem("launchTime", &i.launch_time);
    x.open("placement")
        .elem("availabilityZone", &i.zone)
        .elem("groupName", "")
        .elem("tenancy", "default")
        .close();
    if let Some(k) = &i.kernel_id {
        x.elem("kernelId", k);
    }
    if let Some(r) = &i.ramdisk_id {
        x.elem("ramdiskId", r);
    }
    x.open("monitoring").elem("state", "disabled").close();
    x.elem("privateIpAddress", &private_ip);
    if let Some(a) = i.public_ip {
        x.elem("ipAddress", a.to_string());
    }
    group_set(x, &i.groups);
    if let Some(r) = &i.state_reason {
        x.open("stateReason")
            .elem("code", &r.code)
            .elem("message", &r.message)
            .close();
    }
    x.elem("architecture", &i.architecture)
        .elem("rootDeviceType", &i.root_device_type)
        .elem("rootDeviceName", &i.root_device_name);
    x.open("blockDeviceMapping");
    for v in &i.volumes {
        x.open("item").elem("deviceName", &v.device_name);
        x.open("ebs")
            .elem("volumeId", &v.volume_id)
            .elem("status", v.status.as_str())
            .elem("attachTime", &v.attach_time)
            .elem("deleteOnTermination", bool_str(v.delete_on_termination))
            .close();
        x.close();
    }
    x.close();
    x.elem("virtualizationType", "hvm");
    if let Some(t) = &i.client_token {
        x.elem("clientToken", t);
    } else {
        x.elem("clientToken", "");
    }
    describe::tag_set(x, &i.tags);
    x.elem("hypervisor", "kvm");
    x.open("networkInterfaceSet");
    x.open("item")
        .elem("networkInterfaceId", format!("eni-{}", &i.id[2..]))
        .elem("status", "in-use")
        .elem("macAddress", &i.mac)
        .elem("privateIpAddress", &private_ip)
        .elem("privateDnsName", &private_dns)
        .elem("sourceDestCheck", "true");
    group_set(x, &i.groups);
    if let Some(a) = i.public_ip {
        association(x, a, &public_dns);
    }
    x.open("attachment")
        .elem("attachmentId", format!("eni-attach-{}", &i.id[2..]))
        .elem("deviceIndex", "0")
        .elem("status", "attached")
        .elem("attachTime", &i.launch_time)
        .elem("deleteOnTermination", "true")
        .close();
    if let Some(a) = i.private_ip {
        x.open("privateIpAddressesSet").open("item");
        x.elem("privateIpAddress", a.to_string())
            .elem("privateDnsName", &private_dns)
            .elem("primary", "true");
        if let Some(p) = i.public_ip {
            association(x, p, &public_dns);
        }
        x.close().close();
    }
    x.close();
    x.close();
    x.elem("ebsOptimized", "false");
}

/// A network interface's `association`: its public address.
fn association(x: &mut XmlWriter, public: std::net::Ipv4Addr, dns: &str) {
    x.open("association")
        .elem("publicIp", public.to_string())
        .elem("publicDnsName", dns)
        .elem("ipOwnerId", "amazon")
        .close();
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl Filterable for Instance {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        let one = |s: &str| vec![s.to_string()];
        Some(match name {
            "instance-id" => one(&self.id),
            "instance-state-name" => one(self.state.as_str()),
            "instance-state-code" => vec![self.state.code().to_string()],
            "instance-type" => one(&self.instance_type),
            "image-id" => one(&self.image_id),
            "availability-zone" => one(&self.zone),
            "reservation-id" => one(&self.reservation_id),
            "key-name" => self.key_name.clone().into_iter().collect(),
            "group-id" | "instance.group-id" => self.groups.iter().map(|g| g.id.clone()).collect(),
            "group-name" | "instance.group-name" => {
                self.groups.iter().map(|g| g.name.clone()).collect()
            }
            "kernel-id" => self.kernel_id.clone().into_iter().collect(),
            "ramdisk-id" => self.ramdisk_id.clone().into_iter().collect(),
            "architecture" => one(&self.architecture),
            "root-device-type" => one(&self.root_device_type),
            "root-device-name" => one(&self.root_device_name),
            "client-token" => self.client_token.clone().into_iter().collect(),
            "launch-index" => vec![self.launch_index.to_string()],
            "launch-time" => one(&self.launch_time),
            "mac-address" | "network-interface.mac-address" => one(&self.mac),
            "private-ip-address" | "network-interface.addresses.private-ip-address" => {
                self.private_ip.map(|a| a.to_string()).into_iter().collect()
            }
            "ip-address" | "network-interface.association.public-ip" => {
                self.public_ip.map(|a| a.to_string()).into_iter().collect()
            }
            "private-dns-name" | "network-interface.private-dns-name" => self
                .private_ip
                .map(crate::dns::private_name)
                .into_iter()
                .collect(),
            "block-device-mapping.volume-id" => {
                self.volumes.iter().map(|v| v.volume_id.clone()).collect()
            }
            "block-device-mapping.device-name" => {
                self.volumes.iter().map(|v| v.device_name.clone()).collect()
            }
            "state-reason-code" => self.state_reason.iter().map(|r| r.code.clone()).collect(),
            "hypervisor" => one("kvm"),
            "virtualization-type" => one("hvm"),
            "monitoring-state" => one("disabled"),
            "tenancy" | "placement.tenancy" => one("default"),
            _ => return None,
        })
    }
    fn filter_values_in(&self, name: &str, dns_domain: Option<&str>) -> Option<Vec<String>> {
        match name {
            // The public name DescribeInstances shows as `dnsName` (none: no public
            // address).
            "dns-name" | "network-interface.association.public-dns-name" => Some(
                self.public_ip
                    .zip(dns_domain)
                    .map(|(a, d)| crate::dns::public_name(a, d))
                    .into_iter()
                    .collect(),
            ),
            _ => self.filter_values(name),
        }
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

pub async fn describe_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let mut d = Describe::from_params(cx.params, "InstanceId")?;
    d.dns_domain = Some(cx.clc.config.dns_domain.clone());
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    let (found, next) = blocking(move || {
        describe::page::<Instance>(
            &db,
            Scope::Owner(&owner),
            &d,
            |o| o.record.state != InstanceState::Launching,
            not_found,
        )
    })
    .await?;
    // Items grouped by reservation, in the order reservations first appear.
    let mut order: Vec<String> = Vec::new();
    for o in &found {
        if !order.contains(&o.record.reservation_id) {
            order.push(o.record.reservation_id.clone());
        }
    }
    x.open("reservationSet");
    for rid in &order {
        let items: Vec<&Owned<Instance>> = found
            .iter()
            .filter(|o| &o.record.reservation_id == rid)
            .collect();
        x.open("item")
            .elem("reservationId", rid)
            .elem("ownerId", cx.account());
        group_set(x, &items[0].record.groups);
        x.open("instancesSet");
        for o in items {
            x.open("item");
            instance_body(x, &cx.clc.config.dns_domain, &o.record);
            x.close();
        }
        x.close();
        x.close();
    }
    x.close();
    describe::next_token(x, &next);
    Ok(())
}

/// The caller's instances named by `InstanceId.N` (at least one; all must exist).
fn named_instances(cx: &Call<'_>) -> Result<Vec<Owned<Instance>>, Ec2Error> {
    let ids = cx.params.list("InstanceId");
    if ids.is_empty() {
        return Err(Ec2Error::MissingParameter("InstanceId".into()));
    }
    let mut out: Vec<Owned<Instance>> = Vec::new();
    for id in ids {
        if out.iter().any(|o| o.record.id == id) {
            continue;
        }
        out.push(owned_instance(cx, id)?);
    }
    Ok(out)
}

fn state_change(x: &mut XmlWriter, id: &str, cur: InstanceState, prev: InstanceState) {
    x.open("item").elem("instanceId", id);
    state_elem(x, "currentState", cur);
    state_elem(x, "previousState", prev);
    x.close();
}

/// Moves the record to `to` if it is in one of `from`; returns (previous, current).
/// (A durable commit: on the blocking pool.)
async fn transition(
    db: &Db,
    id: &str,
    from: &[InstanceState],
    to: InstanceState,
    now: i64,
    reason: Option<InstanceReason>,
) -> Result<(InstanceState, InstanceState), Ec2Error> {
    let (db, id, from) = (db.clone(), id.to_string(), from.to_vec());
    blocking(move || transition_now(&db, &id, &from, to, now, reason)).await
}

fn transition_now(
    db: &Db,
    id: &str,
    from: &[InstanceState],
    to: InstanceState,
    now: i64,
    reason: Option<InstanceReason>,
) -> Result<(InstanceState, InstanceState), Ec2Error> {
    db.update::<Instance, _>(id, |cur| {
        let Some(c) = cur else {
            return Err(not_found(id));
        };
        let prev = c.record.state;
        if !from.contains(&prev) {
            return Ok((Write::Keep, (prev, prev)));
        }
        c.record.state = to;
        if to == InstanceState::Terminated {
            c.record.terminated_at = Some(now);
        }
        if let Some(r) = &reason {
            c.record.state_reason = Some(r.clone());
        }
        Ok((Write::Put, (prev, to)))
    })
}

fn user_reason(what: &str) -> InstanceReason {
    InstanceReason {
        code: format!("Client.UserInitiated{what}"),
        message: format!(
            "Client.UserInitiated{what}: User initiated {}",
            what.to_lowercase()
        ),
    }
}

pub async fn terminate_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let found = named_instances(cx)?;
    let now = cx.clc.now().unix_timestamp();
    x.open("instancesSet");
    for o in found {
        let id = o.record.id.clone();
        use InstanceState::*;
        let (prev, cur) = if o.record.state == Stopped {
            // Nothing runs: terminated at once (the reconciler frees its volumes).
            transition(
                &cx.clc.db,
                &id,
                &[Stopped],
                Terminated,
                now,
                Some(user_reason("Shutdown")),
            )
            .await?
        } else {
            transition(
                &cx.clc.db,
                &id,
                &[Pending, Running, Stopping],
                ShuttingDown,
                now,
                Some(user_reason("Shutdown")),
            )
            .await?
        };
        if cur == ShuttingDown && prev != ShuttingDown {
            end_on_node(cx, &o.record.zone, &id, "terminate").await;
        }
        state_change(x, &id, cur, prev);
    }
    x.close();
    cx.clc.kick_reconciler();
    Ok(())
}

/// Asks the instance's cluster to end it on its node (terminate and stop alike:
/// a stopped EBS-root instance is relaunched by Start). A cluster that does not
/// take it now is asked again by the reconciler until the node says terminated.
async fn end_on_node(cx: &Call<'_>, zone: &str, id: &str, what: &str) {
    if let Ok(c) = cx.clc.cluster(zone) {
        if let Err(e) = c.terminate(id).await {
            tracing::warn!(instance = %id, error = %e, "{what}: the cluster did not take it yet");
        }
    }
}

pub async fn reboot_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let found = named_instances(cx)?;
    for o in &found {
        if !matches!(
            o.record.state,
            InstanceState::Running | InstanceState::Pending
        ) {
            continue;
        }
        let c = cx.clc.cluster(&o.record.zone)?;
        c.reboot(&o.record.id).await.map_err(map_error)?;
    }
    x.elem("return", "true");
    Ok(())
}

fn ebs_only(o: &Owned<Instance>, what: &str) -> Result<(), Ec2Error> {
    if o.record.root_device_type != "ebs" {
        return Err(Ec2Error::state(
            "UnsupportedOperation",
            format!(
                "The instance '{}' does not have an 'ebs' root device type and cannot be {what}.",
                o.record.id
            ),
        ));
    }
    Ok(())
}

pub async fn stop_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let found = named_instances(cx)?;
    for o in &found {
        ebs_only(o, "stopped")?;
    }
    let now = cx.clc.now().unix_timestamp();
    x.open("instancesSet");
    for o in found {
        use InstanceState::*;
        let id = o.record.id.clone();
        let (prev, cur) = transition(
            &cx.clc.db,
            &id,
            &[Pending, Running],
            Stopping,
            now,
            Some(user_reason("Shutdown")),
        )
        .await?;
        if cur == Stopping && prev != Stopping {
            end_on_node(cx, &o.record.zone, &id, "stop").await;
        }
        state_change(x, &id, cur, prev);
    }
    x.close();
    cx.clc.kick_reconciler();
    Ok(())
}

pub async fn start_instances(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let found = named_instances(cx)?;
    for o in &found {
        ebs_only(o, "started")?;
    }
    x.open("instancesSet");
    for o in found {
        let prev = o.record.state;
        if prev != InstanceState::Stopped {
            if matches!(prev, InstanceState::Pending | InstanceState::Running) {
                state_change(x, &o.record.id, prev, prev);
                continue;
            }
            return Err(Ec2Error::state(
                "IncorrectInstanceState",
                format!(
                    "The instance '{}' is {}; only stopped instances start.",
                    o.record.id,
                    prev.as_str()
                ),
            ));
        }
        let id = o.record.id.clone();
        start_one(cx, o.record).await?;
        state_change(x, &id, InstanceState::Pending, prev);
    }
    x.close();
    cx.clc.kick_reconciler();
    Ok(())
}

/// Launches a stopped EBS-root instance again: the same id, MAC and volumes,
/// exported to the node it is pinned to.
async fn start_one(cx: &Call<'_>, mut rec: Instance) -> Result<(), Ec2Error> {
    let clc = cx.clc;
    let cluster = clc.cluster(&rec.zone)?;
    let sc = clc.sc()?;
    let need = rec.spec.resources();
    let nodes = cluster.nodes().await.map_err(map_error)?;
    let node = nodes
        .iter()
        .filter(|n| n.state == euca_compute_proto::NodeState::Up && n.free.fits(&need))
        .max_by_key(|n| n.free.copies(&need))
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            Ec2Error::state(
                "InsufficientInstanceCapacity",
                "There is not enough capacity to fulfill your request.",
            )
        })?;
    let ip = crate::cluster::node_ip(&*cluster, &node).await?;
    let mut extra = Vec::new();
    for (n, v) in rec.volumes.iter_mut().enumerate() {
        let uri = sc
            .attach_volume(&v.volume_id, ip, &clc.config.volume_protocol)
            .await?;
        v.export_uri = Some(uri.clone());
        let export = euca_compute_proto::VolumeExport { uri };
        if n == 0 && v.device_name == rec.root_device_name {
            rec.spec.root = RootDisk::Volume {
                volume_id: v.volume_id.clone(),
                export,
            };
        } else {
            extra.push(euca_compute_proto::AttachSpec {
                volume_id: v.volume_id.clone(),
                device: v.device_name.clone(),
                export,
            });
        }
    }
    rec.spec.volumes = extra;
    // A new run of the same id: its reports are told from the stopped run's
    // tombstone, which the node and the CC may still show for a while.
    rec.spec.incarnation += 1;
    rec.node = Some(node.clone());
    let r = rec.clone();
    let moved = on_db(&clc.db, move |db| {
        db.update::<Instance, _>(&r.id, |cur| {
            Ok(match cur {
                Some(c) if c.record.state == InstanceState::Stopped => {
                    c.record = r.clone();
                    c.record.state = InstanceState::Pending;
                    c.record.state_reason = None;
                    (Write::Put, true)
                }
                _ => (Write::Keep, false),
            })
        })
    })
    .await?;
    let launched = if moved {
        cluster
            .launch(&LaunchRequest {
                min_count: 1,
                instances: vec![rec.spec.clone()],
                node: Some(node),
                zone: Some(rec.zone.clone()),
            })
            .await
            .map_err(map_error)
            .map(|_| ())
    } else {
        Err(Ec2Error::state(
            "IncorrectInstanceState",
            format!("The instance '{}' changed state meanwhile.", rec.id),
        ))
    };
    if let Err(e) = launched {
        for v in &rec.volumes {
            let _ = sc.detach_volume(&v.volume_id).await;
        }
        let id = rec.id.clone();
        let _ = on_db(&clc.db, move |db| {
            db.update_while::<Instance>(
                &id,
                |c| c.state == InstanceState::Pending,
                |c| c.state = InstanceState::Stopped,
            )
        })
        .await;
        return Err(e);
    }
    Ok(())
}

pub async fn get_console_output(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("InstanceId")?;
    let o = owned_instance(cx, id)?;
    let c = cx.clc.cluster(&o.record.zone)?;
    let (ts, out) = match c.console(id).await {
        Ok(c) => (c.timestamp, c.output),
        Err(e) if e.code() == Some(codes::INSTANCE_NOT_FOUND) => (
            euca_aws::timefmt::format_iso8601(cx.clc.now()),
            String::new(),
        ),
        Err(e) => return Err(map_error(e)),
    };
    x.elem("instanceId", id)
        .elem("timestamp", ts)
        .elem("output", out);
    Ok(())
}

/// An instance's status checks as DescribeInstanceStatus shows them: (system
/// status, its reachability, instance status, its reachability).
///
/// - running: `ok`/`passed` for both;
/// - pending: `initializing` for both;
/// - running or pending on a node its cluster reports `DOWN` (the reconciler's
///   `Server.NodeDown` reason): the system check `impaired`/`failed` (the host
///   does not answer), the instance check `insufficient-data` (nobody can look);
/// - any other state: `not-applicable` with no reachability.
fn status_checks(i: &Instance) -> (&'static str, &'static str, &'static str, &'static str) {
    let down = i
        .state_reason
        .as_ref()
        .is_some_and(|r| r.code == crate::model::NODE_DOWN);
    match i.state {
        InstanceState::Running | InstanceState::Pending if down => (
            "impaired",
            "failed",
            "insufficient-data",
            "insufficient-data",
        ),
        InstanceState::Running => ("ok", "passed", "ok", "passed"),
        InstanceState::Pending => (
            "initializing",
            "initializing",
            "initializing",
            "initializing",
        ),
        _ => ("not-applicable", "", "not-applicable", ""),
    }
}

/// Whether DescribeInstanceStatus answers filter `name` from the status checks
/// (and events, of which there are none) rather than from the instance.
fn is_status_filter(name: &str) -> bool {
    name.starts_with("system-status.")
        || name.starts_with("instance-status.")
        || name.starts_with("event.")
}

/// The values of a status or event filter (see [`is_status_filter`]).
fn status_filter_values(name: &str, i: &Instance) -> Vec<String> {
    let (sys, sys_reach, inst, inst_reach) = status_checks(i);
    let one = |v: &str| {
        if v.is_empty() {
            Vec::new()
        } else {
            vec![v.to_string()]
        }
    };
    match name {
        "system-status.status" => one(sys),
        "system-status.reachability" => one(sys_reach),
        "instance-status.status" => one(inst),
        "instance-status.reachability" => one(inst_reach),
        // No scheduled events: an event filter matches nothing (and an unknown
        // check name has no value either).
        _ => Vec::new(),
    }
}

/// Whether the instance is listed: running (or any state with
/// `IncludeAllInstances`), and passing every status and event filter.
fn status_listed(i: &Instance, all: bool, filters: &[describe::Filter]) -> bool {
    if i.state == InstanceState::Launching || (!all && i.state != InstanceState::Running) {
        return false;
    }
    filters.iter().all(|f| {
        let have = status_filter_values(&f.name, i);
        f.values
            .iter()
            .any(|want| have.iter().any(|h| describe::wildcard(want, h)))
    })
}

pub async fn describe_instance_status(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "InstanceId")?;
    let all = cx.params.bool("IncludeAllInstances")?.unwrap_or(false);
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    let found = blocking(move || {
        // Status and event filters are answered from the checks, the rest by
        // the instance's own filters; both, and IncludeAllInstances, inside the
        // paging predicate, so a page is full whenever more match.
        let (status, inner): (Vec<_>, Vec<_>) = d
            .filters
            .iter()
            .cloned()
            .partition(|f| is_status_filter(&f.name));
        let mut d = d;
        d.filters = inner;
        if !d.ids.is_empty() {
            // Asked by id: each must exist; the ones not listed are left out.
            let (got, next) = describe::page::<Instance>(
                &db,
                Scope::Owner(&owner),
                &d,
                |o| o.record.state != InstanceState::Launching,
                not_found,
            )?;
            let out = got
                .into_iter()
                .filter(|o| status_listed(&o.record, all, &status))
                .collect();
            return Ok((out, next));
        }
        describe::page::<Instance>(
            &db,
            Scope::Owner(&owner),
            &d,
            |o| status_listed(&o.record, all, &status),
            not_found,
        )
    })
    .await?;
    let (found, next) = found;
    x.open("instanceStatusSet");
    for o in found {
        let i = &o.record;
        let (sys, sys_reach, inst, inst_reach) = status_checks(i);
        x.open("item")
            .elem("instanceId", &i.id)
            .elem("availabilityZone", &i.zone);
        state_elem(x, "instanceState", i.state);
        for (name, status, reach) in [
            ("systemStatus", sys, sys_reach),
            ("instanceStatus", inst, inst_reach),
        ] {
            x.open(name).elem("status", status);
            x.open("details");
            if !reach.is_empty() {
                x.open("item")
                    .elem("name", "reachability")
                    .elem("status", reach)
                    .close();
            }
            x.close();
            x.close();
        }
        x.open("eventsSet").close();
        x.close();
    }
    x.close();
    describe::next_token(x, &next);
    Ok(())
}
