//! Volumes: the records, states and ownership here; the storage on the storage
//! controller, under the id the SC makes. A volume's record is stored right after
//! the SC answers (so it is describable at once); a failed SC call leaves none.
//! Known gap: a crash (or an SC timeout) between the SC's create and the record
//! leaves SC storage no record names; a start-up reconcile against the SC's list
//! is the planned fix.
use super::snapshots::{can_restore, refresh_snapshot};
use crate::call::Call;
use crate::describe::{self, Describe, Filterable, Scope, Tags};
use crate::error::Ec2Error;
use crate::model::{Snapshot, SnapshotState, Volume, VolumeState};
use crate::store::{Owned, Write};
use euca_aws::xml::XmlWriter;

/// The volume types accepted (all are served alike and answered as `standard`).
const VOLUME_TYPES: &[&str] = &["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"];

/// Whether `device` is a device name an attachment may use (`/dev/sdf`,
/// `/dev/xvdg`, `/dev/vdb`, `xvdh`).
pub(crate) fn valid_device(device: &str) -> bool {
    let name = device.strip_prefix("/dev/").unwrap_or(device);
    !name.is_empty()
        && name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && ["sd", "xvd", "vd", "hd"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// A volume's `VolumeType` (an EC2 name; otherwise ignored: the SC has one kind
/// of volume) and `Encrypted` (refused when true), for CreateVolume and launch
/// mappings alike.
pub(crate) fn check_kind(
    volume_type: Option<&str>,
    encrypted: Option<bool>,
) -> Result<(), Ec2Error> {
    if let Some(t) = volume_type {
        if !VOLUME_TYPES.contains(&t) {
            return Err(Ec2Error::invalid(format!(
                "Value ({t}) for parameter volumeType is invalid."
            )));
        }
    }
    if encrypted == Some(true) {
        return Err(Ec2Error::invalid(
            "Encrypted volumes are not supported by this cloud.",
        ));
    }
    Ok(())
}

/// Serialises CreateVolume calls that carry a ClientToken, so two retries of one
/// request cannot both create a volume.
static TOKEN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The EC2 state of an SC volume state.
fn state_of_sc(s: &str) -> VolumeState {
    match s {
        "creating" => VolumeState::Creating,
        "available" => VolumeState::Available,
        "in-use" => VolumeState::InUse,
        "deleting" => VolumeState::Deleting,
        _ => VolumeState::Error,
    }
}

/// A volume's record, if `account` owns it.
fn owned_volume(cx: &Call<'_>, id: &str) -> Result<Owned<Volume>, Ec2Error> {
    match cx.clc.db.get::<Volume>(id)? {
        Some(o) if o.owner == cx.account() => Ok(o),
        _ => Err(Ec2Error::volume_not_found(id)),
    }
}

pub async fn create_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let zone = p.required("AvailabilityZone")?;
    if !cx.clc.zones().iter().any(|z| z == zone) {
        return Err(Ec2Error::Parameter {
            code: "InvalidZone.NotFound",
            message: format!("The zone '{zone}' does not exist."),
        });
    }
    let size = match p.int("Size")? {
        Some(n) if n < 1 => {
            return Err(Ec2Error::invalid(format!(
                "Value ({n}) for parameter size is invalid. Expected a size of at least 1 GiB."
            )))
        }
        Some(n) => Some(n as u64),
        None => None,
    };
    check_kind(p.get("VolumeType"), p.bool("Encrypted")?)?;
    let tags = crate::actions::tags::tag_specs(p, "volume")?;
    let snapshot_id = p.get("SnapshotId");
    let snapshot = match snapshot_id {
        Some(id) => Some(restorable_snapshot(cx, id).await?),
        None => None,
    };
    let size = match (size, &snapshot) {
        (Some(s), Some(snap)) if s < snap.volume_size_gib => {
            return Err(Ec2Error::invalid(format!(
                "Volume of {s} GiB is too small; snapshot '{}' requires at least {} GiB.",
                snap.id, snap.volume_size_gib
            )))
        }
        (Some(s), _) => Some(s),
        (None, Some(_)) => None,
        (None, None) => return Err(Ec2Error::MissingParameter("Size".into())),
    };
    let token = p.get("ClientToken").filter(|t| !t.is_empty());
    if token.is_some_and(|t| t.len() > 64) {
        return Err(Ec2Error::invalid(
            "Value for parameter clientToken is invalid: at most 64 characters.",
        ));
    }
    let _guard = match token {
        Some(_) => Some(TOKEN_LOCK.lock().await),
        None => None,
    };
    if let Some(t) = token {
        if let Some(v) = by_client_token(cx, t)? {
            let same = v.snapshot_id.as_deref() == snapshot_id
                && size.is_none_or(|s| s == v.size_gib)
                && v.zone == zone;
            if !same {
                return Err(Ec2Error::Parameter {
                    code: "IdempotentParameterMismatch",
                    message: format!(
                        "The client token '{t}' was used with other parameters for {}",
                        v.id
                    ),
                });
            }
            let v = refresh_volume(
                cx,
                Owned {
                    owner: cx.account().to_string(),
                    record: v,
                },
            )
            .await;
            write_volume(x, &v.record);
            return Ok(());
        }
    }
    let sc = cx.clc.sc()?;
    let made = sc.create_volume(size, snapshot_id).await?;
    let v = Volume {
        id: made.id.clone(),
        size_gib: made.size_gib(),
        snapshot_id: made.snapshot_id.clone(),
        zone: zone.to_string(),
        state: state_of_sc(&made.state),
        created: crate::model::now_iso(),
        attachment: None,
        tags,
        client_token: token.map(String::from),
    };
    let (owner, rec) = (cx.account().to_string(), v.clone());
    let stored =
        match crate::offload::on_db(&cx.clc.db, move |db| db.insert_new(&owner, &rec)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Ec2Error::internal(format!(
                "the storage controller made volume {} but a record of that id exists",
                v.id
            ))),
            Err(e) => Err(e),
        };
    if let Err(e) = stored {
        // No record, no volume: the storage goes too.
        if let Err(de) = sc.delete_volume(&v.id).await {
            tracing::warn!(volume = %v.id, error = %de, "removing a volume without a record failed");
        }
        return Err(e);
    }
    write_volume(x, &v);
    Ok(())
}

/// A snapshot the caller may create a volume from, completed.
pub(crate) async fn restorable_snapshot(cx: &Call<'_>, id: &str) -> Result<Snapshot, Ec2Error> {
    let not_found = || Ec2Error::not_found("InvalidSnapshot.NotFound", "snapshot", id);
    let o = match cx.clc.db.get::<Snapshot>(id)? {
        Some(o) if can_restore(&o, cx.account()) => o,
        _ => return Err(not_found()),
    };
    let o = refresh_snapshot(cx.clc, o).await;
    if o.record.state != SnapshotState::Completed {
        return Err(Ec2Error::state(
            "IncorrectState",
            format!(
                "Snapshot '{id}' is {}; volumes are made from completed snapshots.",
                o.record.state.as_str()
            ),
        ));
    }
    Ok(o.record)
}

/// The caller's volume created with ClientToken `token`, if any.
fn by_client_token(cx: &Call<'_>, token: &str) -> Result<Option<Volume>, Ec2Error> {
    let mut after: Option<String> = None;
    loop {
        let batch = cx.clc.db.scan::<Volume>(
            Some(cx.account()),
            after.as_deref(),
            describe::MAX_RESULTS,
        )?;
        let n = batch.len();
        for o in batch {
            if o.record.client_token.as_deref() == Some(token) {
                return Ok(Some(o.record));
            }
            after = Some(o.record.id);
        }
        if n < describe::MAX_RESULTS {
            return Ok(None);
        }
    }
}

/// While a volume is `creating`, its state is the SC's: asked and stored. An SC
/// that does not answer leaves the record as it is.
async fn refresh_volume(cx: &Call<'_>, o: Owned<Volume>) -> Owned<Volume> {
    if o.record.state != VolumeState::Creating {
        return o;
    }
    let Ok(sc) = cx.clc.sc() else { return o };
    let state = match sc.volume(&o.record.id).await {
        Ok(Some(v)) => state_of_sc(&v.state),
        Ok(None) => VolumeState::Error,
        Err(e) => {
            tracing::warn!(volume = %o.record.id, error = %e, "asking the storage controller for a volume's state");
            return o;
        }
    };
    let id = o.record.id.clone();
    let updated = crate::offload::on_db(&cx.clc.db, move |db| {
        db.update_while::<Volume>(
            &id,
            |c| c.state == VolumeState::Creating,
            |c| c.state = state,
        )
    })
    .await;
    match updated {
        Ok(Some(n)) => n,
        _ => o,
    }
}

pub async fn describe_volumes(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "VolumeId")?;
    let (found, next) = describe::page::<Volume>(
        &cx.clc.db,
        Scope::Owner(cx.account()),
        &d,
        |_| true,
        Ec2Error::volume_not_found,
    )?;
    x.open("volumeSet");
    for o in found {
        let o = refresh_volume(cx, o).await;
        x.open("item");
        volume_body(x, &o.record);
        x.close();
    }
    x.close();
    describe::next_token(x, &next);
    Ok(())
}

/// A volume's elements (CreateVolume's answer, DescribeVolumes' items).
fn volume_body(x: &mut XmlWriter, v: &Volume) {
    x.elem("volumeId", &v.id)
        .elem("size", v.size_gib.to_string())
        .elem("snapshotId", v.snapshot_id.as_deref().unwrap_or(""))
        .elem("availabilityZone", &v.zone)
        .elem("status", v.state.as_str())
        .elem("createTime", &v.created);
    x.open("attachmentSet");
    if let Some(a) = &v.attachment {
        x.open("item")
            .elem("volumeId", &v.id)
            .elem("instanceId", &a.instance_id)
            .elem("device", &a.device)
            .elem("status", a.state.as_str())
            .elem("attachTime", &a.attach_time)
            .elem("deleteOnTermination", bool_str(a.delete_on_termination))
            .close();
    }
    x.close();
    x.elem("volumeType", "standard")
        .elem("encrypted", "false")
        .elem("multiAttachEnabled", "false");
    describe::tag_set(x, &v.tags);
}

fn write_volume(x: &mut XmlWriter, v: &Volume) {
    volume_body(x, v);
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl Filterable for Volume {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        let att = self.attachment.as_ref();
        Some(match name {
            "volume-id" => vec![self.id.clone()],
            "status" => vec![self.state.as_str().to_string()],
            "size" => vec![self.size_gib.to_string()],
            "availability-zone" => vec![self.zone.clone()],
            "snapshot-id" => vec![self.snapshot_id.clone().unwrap_or_default()],
            "create-time" => vec![self.created.clone()],
            "volume-type" => vec!["standard".into()],
            "encrypted" => vec!["false".into()],
            "multi-attach-enabled" => vec!["false".into()],
            "attachment.instance-id" => att.map(|a| a.instance_id.clone()).into_iter().collect(),
            "attachment.status" => att
                .map(|a| a.state.as_str().to_string())
                .into_iter()
                .collect(),
            "attachment.device" => att.map(|a| a.device.clone()).into_iter().collect(),
            "attachment.attach-time" => att.map(|a| a.attach_time.clone()).into_iter().collect(),
            "attachment.delete-on-termination" => att
                .map(|a| bool_str(a.delete_on_termination).to_string())
                .into_iter()
                .collect(),
            _ => return None,
        })
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

pub async fn delete_volume(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("VolumeId")?;
    owned_volume(cx, id)?;
    let sc = cx.clc.sc()?;
    // available (or error, or a delete that did not finish) → deleting, atomically.
    let (me, vid) = (cx.account().to_string(), id.to_string());
    let before = crate::offload::on_db(&cx.clc.db, move |db| {
        let (id, me) = (vid.as_str(), me.as_str());
        db.update::<Volume, _>(id, |cur| {
            let Some(c) = cur else {
                return Err(Ec2Error::volume_not_found(id));
            };
            if c.owner != me {
                return Err(Ec2Error::volume_not_found(id));
            }
            let prev = c.record.state;
            match prev {
                VolumeState::InUse => Err(Ec2Error::state(
                    "VolumeInUse",
                    format!("Volume {id} is attached; detach it before deleting it."),
                )),
                _ if c.record.attachment.is_some() => Err(Ec2Error::state(
                    "VolumeInUse",
                    format!("Volume {id} is attached; detach it before deleting it."),
                )),
                VolumeState::Creating => Err(Ec2Error::state(
                    "IncorrectState",
                    format!("Volume {id} is still being created."),
                )),
                _ => {
                    c.record.state = VolumeState::Deleting;
                    Ok((Write::Put, prev))
                }
            }
        })
    })
    .await?;
    if let Err(e) = sc.delete_volume(id).await {
        // The storage is still there: the record goes back to what it was.
        let restore = if before == VolumeState::Deleting {
            VolumeState::Available
        } else {
            before
        };
        let vid = id.to_string();
        let _ = crate::offload::on_db(&cx.clc.db, move |db| {
            db.update::<Volume, _>(&vid, |cur| {
                Ok(match cur {
                    Some(c) if c.record.state == VolumeState::Deleting => {
                        c.record.state = restore;
                        (Write::Put, ())
                    }
                    _ => (Write::Keep, ()),
                })
            })
        })
        .await;
        return Err(e);
    }
    let vid = id.to_string();
    crate::offload::on_db(&cx.clc.db, move |db| {
        db.update::<Volume, _>(&vid, |_| Ok((Write::Delete, ())))
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::matches;
    use crate::describe::Filter;
    use crate::model::{AttachmentState, VolumeAttachment};
    use crate::params::Params;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    fn clc(dir: &std::path::Path) -> crate::Clc {
        crate::Clc::open(
            dir,
            "r1",
            "http://127.0.0.1:1/",
            crate::ClcConfig::default(),
        )
        .unwrap()
    }

    fn caller() -> euca_aws::Principal {
        euca_aws::Principal {
            account_id: "111".into(),
            canonical_id: "c".into(),
            display_name: "a".into(),
            access_key: "k".into(),
        }
    }

    async fn create(clc: &crate::Clc) -> Result<(), Ec2Error> {
        let p = params(&[("AvailabilityZone", "r1a"), ("Size", "1")]);
        let who = caller();
        let cx = Call {
            clc,
            caller: &who,
            params: &p,
            request_id: "r",
        };
        let mut x = XmlWriter::new();
        create_volume(&cx, &mut x).await
    }

    #[tokio::test]
    async fn without_a_storage_controller_volumes_are_unavailable_and_unrecorded() {
        let dir = tempfile::tempdir().unwrap();
        let c = clc(dir.path());
        // Not set yet (euca up, before the SC listens): 503, retryable.
        let e = create(&c).await.unwrap_err();
        assert_eq!((e.code().as_ref(), e.status()), ("ServiceUnavailable", 503));
        // Set, but not answering: 503 again, and no record is left behind.
        let sc = crate::sc::ScClient::new("http://127.0.0.1:1/", "ak", "sk", "r1").unwrap();
        assert!(c.set_sc(sc.clone()));
        assert!(!c.set_sc(sc), "the SC is set once");
        let e = create(&c).await.unwrap_err();
        assert_eq!(e.status(), 503, "{e}");
        assert!(c.db.scan::<Volume>(None, None, 10).unwrap().is_empty());
    }

    fn vol() -> Volume {
        Volume {
            id: "vol-0000abcd".into(),
            size_gib: 3,
            snapshot_id: None,
            zone: "z1a".into(),
            state: VolumeState::InUse,
            created: "2026-12-03T21:05:33.000Z".into(),
            attachment: Some(VolumeAttachment {
                instance_id: "i-12345678".into(),
                device: "/dev/sdf".into(),
                state: AttachmentState::Attached,
                attach_time: "2026-12-03T21:06:00.000Z".into(),
                delete_on_termination: false,
            }),
            tags: [("k".to_string(), "v".to_string())].into(),
            client_token: None,
        }
    }

    fn f(name: &str, v: &str) -> Vec<Filter> {
        vec![Filter {
            name: name.into(),
            values: vec![v.into()],
        }]
    }

    #[test]
    fn filters() {
        let v = vol();
        assert!(matches(&f("status", "in-use"), &v).unwrap());
        assert!(!matches(&f("status", "available"), &v).unwrap());
        assert!(matches(&f("size", "3"), &v).unwrap());
        assert!(matches(&f("attachment.instance-id", "i-1*"), &v).unwrap());
        assert!(matches(&f("attachment.status", "attached"), &v).unwrap());
        assert!(matches(&f("tag:k", "v"), &v).unwrap());
        assert!(matches(&f("availability-zone", "z1a"), &v).unwrap());
        assert!(matches(&f("create-time", "2026-12-03*"), &v).unwrap());
        assert!(matches(&f("bogus", "x"), &v).is_err());
        let mut free = vol();
        free.attachment = None;
        assert!(!matches(&f("attachment.status", "*"), &free).unwrap());
    }

    #[test]
    fn xml_has_the_elements_clients_read() {
        let mut x = XmlWriter::new();
        x.root("R", "ns");
        volume_body(&mut x, &vol());
        let s = x.finish();
        for want in [
            "<volumeId>vol-0000abcd</volumeId>",
            "<size>3</size>",
            "<status>in-use</status>",
            "<attachmentSet><item><volumeId>vol-0000abcd</volumeId><instanceId>i-12345678</instanceId><device>/dev/sdf</device><status>attached</status>",
            "<deleteOnTermination>false</deleteOnTermination>",
            "<volumeType>standard</volumeType>",
            "<encrypted>false</encrypted>",
            "<tagSet><item><key>k</key><value>v</value></item></tagSet>",
        ] {
            assert!(s.contains(want), "{want} missing in {s}");
        }
        // An unattached volume still has an (empty) attachmentSet.
        let mut free = vol();
        free.attachment = None;
        let mut x = XmlWriter::new();
        x.root("R", "ns");
        volume_body(&mut x, &free);
        let s = x.finish();
        assert!(
            s.contains("<attachmentSet></attachmentSet>") || s.contains("<attachmentSet/>"),
            "{s}"
        );
    }
}
