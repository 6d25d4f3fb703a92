//! Block device mappings at launch other than the root: RunInstances'
//! `BlockDeviceMapping.N.{DeviceName, Ebs.SnapshotId, Ebs.VolumeSize,
//! Ebs.DeleteOnTermination, Ebs.VolumeType, NoDevice, VirtualName}` over the
//! image's own non-root mappings.
//!
//! - An `Ebs` mapping makes one volume per instance through the SC (from the
//!   snapshot, of the size, or both; the size at least the snapshot's), in the
//!   instance's zone. It is exported to the node the launch is pinned to (as an
//!   EBS root is) and given to the node in the instance spec (the node plugs it
//!   in as the guest starts): the attachment is `attaching` until the node
//!   reports it, then `attached`. `DeleteOnTermination` defaults to true
//!   (AWS's default for launch-created volumes): terminate deletes it.
//! - `NoDevice` drops the image's mapping of that device (or nothing).
//! - `VirtualName=ephemeralN` names the instance type's ephemeral disk; every
//!   instance already has its type's one ephemeral disk, so it creates nothing
//!   (N > 0 is accepted and ignored, as AWS ignores instance stores a type does
//!   not have).
//! - `Ebs.VolumeType` is checked against the EC2 names and otherwise ignored: the
//!   SC has one kind of volume. `Ebs.Encrypted=true` is refused.
use super::volumes::{check_kind, restorable_snapshot, valid_device};
use crate::call::Call;
use crate::error::Ec2Error;
use crate::model::Image;

/// One volume each instance of the launch gets at `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchVolume {
    pub device: String,
    pub snapshot_id: Option<String>,
    /// GiB; `None`: the snapshot's size.
    pub size_gib: Option<u64>,
    pub delete_on_termination: bool,
}

/// What a mapping asks for, before snapshots are looked up.
enum Mapping {
    Ebs(LaunchVolume),
    NoDevice,
    Ephemeral,
}

/// The non-root volumes of a launch of `image`: the image's non-root EBS
/// mappings, then the request's mappings replacing (or with `NoDevice`,
/// dropping) those of the same device. The root device's mapping is not
/// handled here (EBS root: `ebs_root_of`; instance-store root: refused).
pub async fn launch_volumes(cx: &Call<'_>, image: &Image) -> Result<Vec<LaunchVolume>, Ec2Error> {
    let root = image.root_device_name.as_str();
    let mut out: Vec<LaunchVolume> = image
        .block_devices
        .iter()
        .filter(|b| b.device_name != root && b.virtual_name.is_none())
        .filter(|b| b.snapshot_id.is_some() || b.volume_size.is_some())
        .map(|b| LaunchVolume {
            device: b.device_name.clone(),
            snapshot_id: b.snapshot_id.clone(),
            size_gib: b.volume_size,
            delete_on_termination: b.delete_on_termination,
        })
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for (k, m) in cx.params.members("BlockDeviceMapping").iter().enumerate() {
        let n = k + 1;
        let device = m.get("DeviceName").ok_or_else(|| {
            Ec2Error::MissingParameter(format!("BlockDeviceMapping.{n}.DeviceName"))
        })?;
        if !named.insert(device.to_string()) {
            return Err(Ec2Error::invalid(format!(
                "The device '{device}' is mapped more than once"
            )));
        }
        let mapping = parse(m, device)?;
        if device == root {
            match (image.root_device_type.as_str(), &mapping) {
                // The EBS root's size and DeleteOnTermination (`ebs_root_of`).
                ("ebs", Mapping::Ebs(_)) => continue,
                (_, Mapping::Ebs(_)) => {
                    return Err(Ec2Error::invalid(format!(
                        "The root device {device} of instance-store image {} cannot be mapped to a volume",
                        image.id
                    )))
                }
                _ => {
                    return Err(Ec2Error::invalid(format!(
                        "The root device {device} cannot be suppressed or made ephemeral"
                    )))
                }
            }
        }
        if !valid_device(device) {
            return Err(Ec2Error::invalid(format!(
                "Value ({device}) for parameter deviceName is invalid. {device} is not a valid device name."
            )));
        }
        out.retain(|v| v.device != device);
        match mapping {
            Mapping::Ebs(v) => out.push(v),
            Mapping::NoDevice | Mapping::Ephemeral => {}
        }
    }
    for v in &mut out {
        if let Some(id) = &v.snapshot_id {
            let snap = restorable_snapshot(cx, id).await?;
            match v.size_gib {
                Some(s) if s < snap.volume_size_gib => {
                    return Err(Ec2Error::invalid(format!(
                        "Volume of {s} GiB is too small; snapshot '{id}' requires at least {} GiB.",
                        snap.volume_size_gib
                    )))
                }
                Some(_) => {}
                None => v.size_gib = Some(snap.volume_size_gib),
            }
        }
    }
    Ok(out)
}

/// One `BlockDeviceMapping.N`, checked on its own.
fn parse(m: &crate::params::Params, device: &str) -> Result<Mapping, Ec2Error> {
    let ebs = [
        "SnapshotId",
        "VolumeSize",
        "DeleteOnTermination",
        "VolumeType",
        "Encrypted",
    ]
    .iter()
    .any(|f| m.get(&format!("Ebs.{f}")).is_some());
    let virtual_name = m.get("VirtualName");
    let no_device = m.get("NoDevice").is_some();
    if [ebs, virtual_name.is_some(), no_device]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(Ec2Error::invalid(format!(
            "The mapping of {device} must be one of Ebs, VirtualName or NoDevice"
        )));
    }
    if no_device {
        return Ok(Mapping::NoDevice);
    }
    if let Some(v) = virtual_name {
        let ephemeral = v
            .strip_prefix("ephemeral")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ephemeral {
            return Err(Ec2Error::invalid(format!(
                "Value ({v}) for parameter virtualName is invalid. Expected ephemeral0 to ephemeral23."
            )));
        }
        return Ok(Mapping::Ephemeral);
    }
    if !ebs {
        return Err(Ec2Error::invalid(format!(
            "The mapping of {device} needs Ebs, VirtualName or NoDevice"
        )));
    }
    let size_gib = match m.int("Ebs.VolumeSize")? {
        Some(s) if !(1..=16384).contains(&s) => {
            return Err(Ec2Error::invalid(format!(
                "Value ({s}) for parameter volumeSize is invalid. Expected 1 to 16384 GiB."
            )))
        }
        Some(s) => Some(s as u64),
        None => None,
    };
    let snapshot_id = m.get("Ebs.SnapshotId").map(String::from);
    if size_gib.is_none() && snapshot_id.is_none() {
        return Err(Ec2Error::invalid(format!(
            "The mapping of {device} needs Ebs.SnapshotId or Ebs.VolumeSize"
        )));
    }
    check_kind(m.get("Ebs.VolumeType"), m.bool("Ebs.Encrypted")?)?;
    Ok(Mapping::Ebs(LaunchVolume {
        device: device.to_string(),
        snapshot_id,
        size_gib,
        delete_on_termination: m.bool("Ebs.DeleteOnTermination")?.unwrap_or(true),
    }))
}
