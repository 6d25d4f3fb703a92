//! AttachVolume and DetachVolume. The volume record's `attachment` (and the
//! instance's `volumes` entry) carry the EC2 attachment state: `attaching` until
//! the node reports the device attached, `detaching` until it reports it gone
//! (then the SC removes the export and the volume is `available`); the
//! reconciler ([`crate::reconcile`]) advances them from the cluster's reports.
use super::instances::owned_instance;
use super::volumes::valid_device;
use crate::call::Call;
use crate::cluster::map_error;
use crate::error::Ec2Error;
use crate::model::{
    AttachmentState, Instance, InstanceState, InstanceVolume, Volume, VolumeAttachment, VolumeState,
};
use crate::offload::on_db;
use crate::store::{Db, Write};
use euca_aws::xml::XmlWriter;
use euca_compute_proto::{codes, AttachSpec, VolumeExport};

fn attachment_item(
    x: &mut XmlWriter,
    vol: &str,
    inst: &str,
    device: &str,
    s: AttachmentState,
    t: &str,
) {
    x.elem("volumeId", vol)
        .elem("instanceId", inst)
        .elem("device", device)
        .elem("status", s.as_str())
        .elem("attachTime", t);
}

/// Takes the volume's attachment away and makes it `available` again (the
/// export is already gone), and removes the instance's entry.
pub(crate) fn release_volume(db: &Db, volume: &str, instance: &str) -> Result<(), Ec2Error> {
    db.update::<Volume, _>(volume, |cur| {
        Ok(match cur {
            Some(c)
                if c.record
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.instance_id == instance) =>
            {
                c.record.attachment = None;
                c.record.state = VolumeState::Available;
                (Write::Put, ())
            }
            _ => (Write::Keep, ()),
        })
    })?;
    db.update::<Instance, _>(instance, |cur| {
        Ok(match cur {
            Some(c) => {
                c.record.volumes.retain(|v| v.volume_id != volume);
                (Write::Put, ())
            }
            None => (Write::Keep, ()),
        })
    })
}

/// Sets the attachment state of `volume` on `instance`, in both records.
pub(crate) fn set_attachment(
    db: &Db,
    volume: &str,
    instance: &str,
    state: AttachmentState,
    error: Option<String>,
) -> Result<(), Ec2Error> {
    db.update::<Volume, _>(volume, |cur| {
        Ok(match cur {
            Some(c) => match c.record.attachment.as_mut() {
                Some(a) if a.instance_id == instance => {
                    a.state = state;
                    (Write::Put, ())
                }
                _ => (Write::Keep, ()),
            },
            None => (Write::Keep, ()),
        })
    })?;
    db.update::<Instance, _>(instance, |cur| {
        Ok(match cur {
            Some(c) => {
                for v in c
                    .record
                    .volumes
                    .iter_mut()
                    .filter(|v| v.volume_id == volume)
                {
                    v.status = state;
                    v.error = error.clone();
                }
                (Write::Put, ())
            }
            None => (Write::Keep, ()),
        })
    })
}

pub async fn attach_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let vol_id = p.required("VolumeId")?;
    let inst_id = p.required("InstanceId")?;
    let device = p.required("Device")?;
    if !valid_device(device) {
        return Err(Ec2Error::invalid(format!(
            "Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name."
        )));
    }
    let vol = match cx.clc.db.get::<Volume>(vol_id)? {
        Some(o) if o.owner == cx.account() => o.record,
        _ => return Err(Ec2Error::volume_not_found(vol_id)),
    };
    if vol.state == VolumeState::InUse || vol.attachment.is_some() {
        return Err(Ec2Error::state(
            "VolumeInUse",
            format!("Volume {vol_id} is already attached"),
        ));
    }
    let inst = owned_instance(cx, inst_id)?.record;
    if inst.state != InstanceState::Running {
        return Err(Ec2Error::state(
            "IncorrectInstanceState",
            format!(
                "Instance '{inst_id}' is {}; volumes attach to running instances.",
                inst.state.as_str()
            ),
        ));
    }
    if vol.zone != inst.zone {
        return Err(Ec2Error::Parameter {
            code: "InvalidVolume.ZoneMismatch",
            message: format!(
                "The volume '{vol_id}' is not in the same availability zone as instance '{inst_id}'"
            ),
        });
    }
    if inst.volumes.iter().any(|v| v.device_name == device) || inst.root_device_name == device {
        return Err(Ec2Error::invalid(format!(
            "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
        )));
    }
    let cluster = cx.clc.cluster(&inst.zone)?;
    let sc = cx.clc.sc()?;
    let node = inst
        .node
        .clone()
        .ok_or_else(|| Ec2Error::Unavailable(format!("instance {inst_id} is not placed yet")))?;
    let ip = crate::cluster::node_ip(&*cluster, &node).await?;
    let now = euca_aws::timefmt::format_iso8601(cx.clc.now());
    // available → in-use (attaching), atomically: one attach wins.
    let (v, i, d, t) = (
        vol_id.to_string(),
        inst_id.to_string(),
        device.to_string(),
        now.clone(),
    );
    on_db(&cx.clc.db, move |db| {
        let (vol_id, inst_id, device, now) = (v.as_str(), i.as_str(), d.as_str(), &t);
        db.update::<Volume, _>(vol_id, |cur| {
            let Some(c) = cur else {
                return Err(Ec2Error::volume_not_found(vol_id));
            };
            match c.record.state {
                VolumeState::Available if c.record.attachment.is_none() => {
                    c.record.state = VolumeState::InUse;
                    c.record.attachment = Some(VolumeAttachment {
                        instance_id: inst_id.to_string(),
                        device: device.to_string(),
                        state: AttachmentState::Attaching,
                        attach_time: now.clone(),
                        delete_on_termination: false,
                    });
                    Ok((Write::Put, ()))
                }
                VolumeState::InUse => Err(Ec2Error::state(
                    "VolumeInUse",
                    format!("Volume {vol_id} is already attached"),
                )),
                s => Err(Ec2Error::state(
                    "IncorrectState",
                    format!(
                        "Volume {vol_id} is {}; only available volumes attach",
                        s.as_str()
                    ),
                )),
            }
        })
    })
    .await?;
    let undo = |db: &Db| {
        let (db, v, i) = (db.clone(), vol_id.to_string(), inst_id.to_string());
        async move {
            let vid = v.clone();
            if let Err(e) = on_db(&db, move |db| release_volume(db, &vid, &i)).await {
                tracing::warn!(volume = %v, error = %e, "undoing a failed attach");
            }
        }
    };
    let uri = match sc
        .attach_volume(vol_id, ip, &cx.clc.config.volume_protocol)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            undo(&cx.clc.db).await;
            return Err(e);
        }
    };
    let entry = InstanceVolume {
        device_name: device.to_string(),
        volume_id: vol_id.to_string(),
        status: AttachmentState::Attaching,
        attach_time: now.clone(),
        delete_on_termination: false,
        export_uri: Some(uri.clone()),
        error: None,
        force: false,
    };
    let i = inst_id.to_string();
    let added = on_db(&cx.clc.db, move |db| {
        db.update::<Instance, _>(&i, |cur| {
            Ok(match cur {
                Some(c) => {
                    c.record.volumes.push(entry.clone());
                    (Write::Put, true)
                }
                None => (Write::Keep, false),
            })
        })
    })
    .await;
    let spec = AttachSpec {
        volume_id: vol_id.to_string(),
        device: device.to_string(),
        export: VolumeExport { uri },
    };
    let called = match added {
        Ok(true) => cluster.attach(inst_id, &spec).await.map_err(map_error),
        Ok(false) => Err(super::instances::not_found(inst_id)),
        Err(e) => Err(e),
    };
    if let Err(e) = called {
        if let Err(de) = sc.detach_volume(vol_id).await {
            tracing::warn!(volume = %vol_id, error = %de, "removing the export of a failed attach");
        }
        undo(&cx.clc.db).await;
        return Err(e);
    }
    cx.clc.kick_reconciler();
    attachment_item(x, vol_id, inst_id, device, AttachmentState::Attaching, &now);
    Ok(())
}

pub async fn detach_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let vol_id = p.required("VolumeId")?;
    let force = p.bool("Force")?.unwrap_or(false);
    let vol = match cx.clc.db.get::<Volume>(vol_id)? {
        Some(o) if o.owner == cx.account() => o.record,
        _ => return Err(Ec2Error::volume_not_found(vol_id)),
    };
    let Some(att) = vol.attachment.clone() else {
        return Err(Ec2Error::state(
            "IncorrectState",
            format!("Volume '{vol_id}' is in the 'available' state."),
        ));
    };
    if let Some(i) = p.get("InstanceId") {
        if i != att.instance_id {
            return Err(Ec2Error::Parameter {
                code: "InvalidAttachment.NotFound",
                message: format!("Volume '{vol_id}' is not attached to instance '{i}'"),
            });
        }
    }
    if let Some(d) = p.get("Device") {
        if d != att.device {
            return Err(Ec2Error::Parameter {
                code: "InvalidAttachment.NotFound",
                message: format!("Volume '{vol_id}' is not attached at '{d}'"),
            });
        }
    }
    let inst_id = att.instance_id.clone();
    let inst = cx.clc.db.get::<Instance>(&inst_id)?.map(|o| o.record);
    if let Some(i) = &inst {
        if i.root_device_type == "ebs"
            && i.volumes.first().is_some_and(|v| v.volume_id == vol_id)
            && i.root_device_name == att.device
        {
            return Err(Ec2Error::state(
                "OperationNotPermitted",
                format!("Volume '{vol_id}' is the root device of instance '{inst_id}'"),
            ));
        }
    }
    if att.state == AttachmentState::Detaching && !force {
        attachment_item(
            x,
            vol_id,
            &inst_id,
            &att.device,
            AttachmentState::Detaching,
            &att.attach_time,
        );
        return Ok(());
    }
    let (v, i) = (vol_id.to_string(), inst_id.clone());
    on_db(&cx.clc.db, move |db| {
        set_attachment(db, &v, &i, AttachmentState::Detaching, None)?;
        db.update::<Instance, _>(&i, |cur| {
            Ok(match cur {
                Some(c) => {
                    for x in c.record.volumes.iter_mut().filter(|x| x.volume_id == v) {
                        x.force = force;
                    }
                    (Write::Put, ())
                }
                None => (Write::Keep, ()),
            })
        })
    })
    .await?;
    let runs_on_node = inst.as_ref().is_some_and(|i| {
        matches!(
            i.state,
            InstanceState::Pending
                | InstanceState::Running
                | InstanceState::Stopping
                | InstanceState::ShuttingDown
        )
    });
    if runs_on_node {
        let cluster = cx
            .clc
            .cluster(&inst.as_ref().map(|i| i.zone.clone()).unwrap_or_default())?;
        match cluster.detach(&inst_id, vol_id, force).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(codes::DETACH_TIMEOUT) && !force => {
                let (v, i, msg) = (vol_id.to_string(), inst_id.clone(), e.to_string());
                on_db(&cx.clc.db, move |db| {
                    set_attachment(db, &v, &i, AttachmentState::Attached, Some(msg))
                })
                .await?;
                return Err(Ec2Error::state(
                    "IncorrectState",
                    format!("The guest did not release volume {vol_id}: {e}; it stays attached (use Force to tear it down)"),
                ));
            }
            Err(e) if e.code() == Some(codes::VOLUME_NOT_ATTACHED) => {}
            Err(e) if force => {
                tracing::warn!(volume = %vol_id, error = %e, "forced detach: the node did not answer; the export goes anyway");
            }
            Err(e) => {
                let (v, i, back) = (vol_id.to_string(), inst_id.clone(), att.state);
                on_db(&cx.clc.db, move |db| set_attachment(db, &v, &i, back, None)).await?;
                return Err(map_error(e));
            }
        }
    } else {
        // Not on a node (a stopped instance, or one already gone): nothing to
        // unplug, so the SC's export goes now and the volume is free at once.
        cx.clc.sc()?.detach_volume(vol_id).await?;
        let (vid, iid) = (vol_id.to_string(), inst_id.clone());
        on_db(&cx.clc.db, move |db| release_volume(db, &vid, &iid)).await?;
    }
    cx.clc.kick_reconciler();
    attachment_item(
        x,
        vol_id,
        &inst_id,
        &att.device,
        AttachmentState::Detaching,
        &att.attach_time,
    );
    Ok(())
}
