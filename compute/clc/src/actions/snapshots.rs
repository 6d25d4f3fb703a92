//! Snapshots of volumes, taken and stored by the storage controller; their EC2
//! records (owner, description, `createVolumePermission`, tags) here. A pending
//! snapshot's state and progress are the SC's, asked when it is described.
use crate::call::Call;
use crate::describe::{self, Describe, Filterable, Scope, Tags};
use crate::error::Ec2Error;
use crate::model::{Image, ImageState, Snapshot, SnapshotState, Volume, VolumeState};
use crate::store::{Db, Owned, Write};
use crate::Clc;
use euca_aws::xml::XmlWriter;

/// The `group` of createVolumePermission that makes a snapshot public.
const ALL: &str = "all";

fn snapshot_not_found(id: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidSnapshot.NotFound", "snapshot", id)
}

/// Whether `account` may create volumes from the snapshot (and so see it).
pub(crate) fn can_restore(o: &Owned<Snapshot>, account: &str) -> bool {
    o.owner == account
        || o.record
            .restorable_by
            .iter()
            .any(|a| a == account || a == ALL)
}

/// While a snapshot is pending, its state and progress are the SC's: asked and
/// stored. An SC that does not answer leaves the record as it is.
pub(crate) async fn refresh_snapshot(clc: &Clc, o: Owned<Snapshot>) -> Owned<Snapshot> {
    if o.record.state != SnapshotState::Pending {
        return o;
    }
    let Ok(sc) = clc.sc() else { return o };
    let (state, progress) = match sc.snapshot(&o.record.id).await {
        Ok(Some(s)) => (state_of_sc(&s.state), s.percent()),
        Ok(None) => (SnapshotState::Error, o.record.progress),
        Err(e) => {
            tracing::warn!(snapshot = %o.record.id, error = %e, "asking the storage controller for a snapshot's state");
            return o;
        }
    };
    let id = o.record.id.clone();
    let updated = crate::offload::on_db(&clc.db, move |db| {
        db.update_while::<Snapshot>(
            &id,
            |c| c.state == SnapshotState::Pending,
            |c| {
                c.state = state;
                c.progress = progress;
            },
        )
    })
    .await;
    match updated {
        Ok(Some(n)) => n,
        _ => o,
    }
}

fn state_of_sc(s: &str) -> SnapshotState {
    match s {
        "pending" => SnapshotState::Pending,
        "completed" => SnapshotState::Completed,
        _ => SnapshotState::Error,
    }
}

pub async fn create_snapshot(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let volume_id = p.required("VolumeId")?;
    let description = p.get("Description").unwrap_or("");
    if description.chars().count() > 255 {
        return Err(Ec2Error::invalid(
            "The snapshot description is at most 255 characters.",
        ));
    }
    let tags = crate::actions::tags::tag_specs(p, "snapshot")?;
    let vol = match cx.clc.db.get::<Volume>(volume_id)? {
        Some(o) if o.owner == cx.account() => o.record,
        _ => return Err(Ec2Error::volume_not_found(volume_id)),
    };
    if !matches!(vol.state, VolumeState::Available | VolumeState::InUse) {
        return Err(Ec2Error::state(
            "IncorrectState",
            format!(
                "Volume '{volume_id}' is {}; snapshots are taken of available or in-use volumes.",
                vol.state.as_str()
            ),
        ));
    }
    let made = cx.clc.sc()?.create_snapshot(volume_id).await?;
    let s = Snapshot {
        id: made.id.clone(),
        volume_id: volume_id.to_string(),
        volume_size_gib: vol.size_gib,
        state: state_of_sc(&made.state),
        progress: made.percent(),
        description: description.to_string(),
        start_time: crate::model::now_iso(),
        restorable_by: Vec::new(),
        tags,
    };
    let (owner, rec) = (cx.account().to_string(), s.clone());
    if !crate::offload::on_db(&cx.clc.db, move |db| db.insert_new(&owner, &rec)).await? {
        return Err(Ec2Error::internal(format!(
            "the storage controller made snapshot {} but a record of that id exists",
            s.id
        )));
    }
    snapshot_body(x, &s, cx.account());
    Ok(())
}

/// Who a DescribeSnapshots' `Owner.N` / `RestorableBy.N` ask for, as account ids
/// (`self` is the caller; `all` stays `all`).
fn resolve(values: Vec<&str>, me: &str) -> Vec<String> {
    values
        .into_iter()
        .map(|v| {
            if v == "self" {
                me.to_string()
            } else {
                v.to_string()
            }
        })
        .collect()
}

/// Whether the snapshot answers an `Owner` / `RestorableBy` selection: either
/// list matching is enough (one pass, so no snapshot is listed twice). With
/// neither, every snapshot the caller can see answers.
fn selected(o: &Owned<Snapshot>, owners: &[String], restorers: &[String]) -> bool {
    if owners.is_empty() && restorers.is_empty() {
        return true;
    }
    // `RestorableBy` names who was granted the snapshot, not its owner: euca2ools
    // asks `Owner=self`, then `RestorableBy=self`, and prints both answers without
    // de-duplication, so an own snapshot must not answer the second.
    owners.contains(&o.owner)
        || restorers.iter().any(|r| {
            if r == ALL {
                o.record.restorable_by.iter().any(|a| a == ALL)
            } else {
                *r != o.owner && o.record.restorable_by.iter().any(|a| a == r || a == ALL)
            }
        })
}

pub async fn describe_snapshots(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let me = cx.account();
    let mut d = Describe::from_params(cx.params, "SnapshotId")?;
    let owner_filters: Vec<describe::Filter> = d
        .filters
        .iter()
        .filter(|f| f.name == "owner-id")
        .cloned()
        .collect();
    d.filters.retain(|f| f.name != "owner-id");
    let owner_ok = |o: &Owned<Snapshot>| {
        owner_filters
            .iter()
            .all(|f| f.values.iter().any(|v| describe::wildcard(v, &o.owner)))
    };
    let owners = resolve(cx.params.list("Owner"), me);
    let restorers = resolve(cx.params.list("RestorableBy"), me);
    d.viewer = Some(me.to_string());
    let by_id = !d.ids.is_empty();
    let (found, next) = describe::page::<Snapshot>(
        &cx.clc.db,
        Scope::All,
        &d,
        // Asked by id, an unseen snapshot is NotFound and a seen one that the
        // selection leaves out is just not listed.
        |o| can_restore(o, me) && (by_id || (selected(o, &owners, &restorers) && owner_ok(o))),
        snapshot_not_found,
    )?;
    x.open("snapshotSet");
    for o in found {
        if by_id && !(selected(&o, &owners, &restorers) && owner_ok(&o)) {
            continue;
        }
        let mut o = refresh_snapshot(cx.clc, o).await;
        // Tags are the owner's own: another account sees none.
        if o.owner != me {
            o.record.tags.clear();
        }
        x.open("item");
        snapshot_body(x, &o.record, &o.owner);
        x.close();
    }
    x.close();
    describe::next_token(x, &next);
    Ok(())
}

/// A snapshot's elements (CreateSnapshot's answer, DescribeSnapshots' items).
fn snapshot_body(x: &mut XmlWriter, s: &Snapshot, owner: &str) {
    x.elem("snapshotId", &s.id)
        .elem("volumeId", &s.volume_id)
        .elem("status", s.state.as_str())
        .elem("startTime", &s.start_time)
        .elem("progress", format!("{}%", s.progress))
        .elem("ownerId", owner)
        .elem("volumeSize", s.volume_size_gib.to_string())
        .elem("description", &s.description)
        .elem("encrypted", "false");
    describe::tag_set(x, &s.tags);
}

/// The record alone knows no owner: `owner-id` filters are taken out of the
/// request and matched against the owner in [`describe_snapshots`].
impl Filterable for Snapshot {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        let s = self;
        Some(match name {
            "snapshot-id" => vec![s.id.clone()],
            "volume-id" => vec![s.volume_id.clone()],
            "status" => vec![s.state.as_str().to_string()],
            "progress" => vec![format!("{}%", s.progress)],
            "description" => vec![s.description.clone()],
            "start-time" => vec![s.start_time.clone()],
            "volume-size" => vec![s.volume_size_gib.to_string()],
            "encrypted" => vec!["false".into()],
            _ => return None,
        })
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// A snapshot the caller owns (another's is NotFound, even if it may see it:
/// only the owner changes or deletes a snapshot).
fn owned_snapshot(cx: &Call<'_>, id: &str) -> Result<Owned<Snapshot>, Ec2Error> {
    match cx.clc.db.get::<Snapshot>(id)? {
        Some(o) if o.owner == cx.account() => Ok(o),
        _ => Err(snapshot_not_found(id)),
    }
}

/// The image (not deregistered) whose block devices use the snapshot, if any.
fn image_using(db: &Db, owner: &str, snapshot_id: &str) -> Result<Option<String>, Ec2Error> {
    let mut after: Option<String> = None;
    loop {
        let batch = db.scan::<Image>(Some(owner), after.as_deref(), describe::MAX_RESULTS)?;
        let n = batch.len();
        for o in batch {
            if o.record.state != ImageState::Deregistered
                && o.record
                    .block_devices
                    .iter()
                    .any(|b| b.snapshot_id.as_deref() == Some(snapshot_id))
            {
                return Ok(Some(o.record.id));
            }
            after = Some(o.record.id);
        }
        if n < describe::MAX_RESULTS {
            return Ok(None);
        }
    }
}

pub async fn delete_snapshot(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("SnapshotId")?;
    owned_snapshot(cx, id)?;
    if let Some(image) = image_using(&cx.clc.db, cx.account(), id)? {
        return Err(Ec2Error::state(
            "InvalidSnapshot.InUse",
            format!("The snapshot {id} is currently in use by {image}"),
        ));
    }
    let sc = cx.clc.sc()?;
    // The SC refuses a pending snapshot (IncorrectState); one it no longer has
    // is gone already.
    sc.delete_snapshot(id).await?;
    cx.clc
        .db
        .update::<Snapshot, _>(id, |_| Ok((Write::Delete, ())))?;
    x.elem("return", "true");
    Ok(())
}

/// `createVolumePermission` changes: account ids and/or the group `all`.
#[derive(Debug, Default, PartialEq)]
struct PermissionChange {
    add: Vec<String>,
    remove: Vec<String>,
}

fn permission_change(p: &crate::params::Params) -> Result<PermissionChange, Ec2Error> {
    let attr = p.get("Attribute").unwrap_or("createVolumePermission");
    if attr != "createVolumePermission" {
        return Err(Ec2Error::invalid(format!(
            "Value ({attr}) for parameter attribute is invalid. Only createVolumePermission can be modified."
        )));
    }
    let mut c = PermissionChange::default();
    let group = |g: &str| -> Result<String, Ec2Error> {
        if g == ALL {
            Ok(ALL.to_string())
        } else {
            Err(Ec2Error::invalid(format!(
                "Value ({g}) for parameter group is invalid. Only 'all' is a group."
            )))
        }
    };
    let user = |u: &str| -> Result<String, Ec2Error> {
        if !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()) {
            Ok(u.to_string())
        } else {
            Err(Ec2Error::invalid(format!(
                "Value ({u}) for parameter userId is invalid. Expected an account id."
            )))
        }
    };
    // The structured form: CreateVolumePermission.{Add,Remove}.N.{UserId,Group}.
    for (which, out) in [("Add", &mut c.add), ("Remove", &mut c.remove)] {
        for m in p.members(&format!("CreateVolumePermission.{which}")) {
            if let Some(u) = m.get("UserId") {
                out.push(user(u)?);
            }
            if let Some(g) = m.get("Group") {
                out.push(group(g)?);
            }
        }
    }
    // The flat form: OperationType with UserId.N / UserGroup.N.
    let users = p.list("UserId");
    let groups = p.list("UserGroup");
    if !users.is_empty() || !groups.is_empty() {
        let out = match p.required("OperationType")? {
            "add" => &mut c.add,
            "remove" => &mut c.remove,
            o => {
                return Err(Ec2Error::invalid(format!(
                    "Value ({o}) for parameter operationType is invalid. Expected add or remove."
                )))
            }
        };
        for u in users {
            out.push(user(u)?);
        }
        for g in groups {
            out.push(group(g)?);
        }
    }
    if c.add.is_empty() && c.remove.is_empty() {
        return Err(Ec2Error::MissingParameter(
            "CreateVolumePermission (or OperationType with UserId / UserGroup)".into(),
        ));
    }
    Ok(c)
}

pub async fn modify_snapshot_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("SnapshotId")?;
    let change = permission_change(cx.params)?;
    let (me, sid) = (cx.account().to_string(), id.to_string());
    crate::offload::on_db(&cx.clc.db, move |db| {
        let id = sid.as_str();
        db.update::<Snapshot, _>(id, |cur| {
            let Some(c) = cur else {
                return Err(snapshot_not_found(id));
            };
            if c.owner != me {
                return Err(snapshot_not_found(id));
            }
            let list = &mut c.record.restorable_by;
            for a in &change.add {
                if !list.contains(a) {
                    list.push(a.clone());
                }
            }
            list.retain(|a| !change.remove.contains(a));
            Ok((Write::Put, ()))
        })
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

pub async fn describe_snapshot_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("SnapshotId")?;
    let attr = cx.params.required("Attribute")?;
    let o = owned_snapshot(cx, id)?;
    x.elem("snapshotId", id);
    match attr {
        "createVolumePermission" => {
            x.open("createVolumePermission");
            for a in &o.record.restorable_by {
                x.open("item");
                if a == ALL {
                    x.elem("group", ALL);
                } else {
                    x.elem("userId", a);
                }
                x.close();
            }
            x.close();
        }
        "productCodes" => {
            x.open("productCodes").close();
        }
        other => {
            return Err(Ec2Error::invalid(format!(
                "Value ({other}) for parameter attribute is invalid. Expected createVolumePermission or productCodes."
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    fn snap(owner: &str, restorable: &[&str]) -> Owned<Snapshot> {
        Owned {
            owner: owner.into(),
            record: Snapshot {
                id: "snap-0000abcd".into(),
                volume_id: "vol-0000abcd".into(),
                volume_size_gib: 1,
                state: SnapshotState::Completed,
                progress: 100,
                description: String::new(),
                start_time: "2026-12-03T21:05:33.000Z".into(),
                restorable_by: restorable.iter().map(|s| s.to_string()).collect(),
                tags: Tags::new(),
            },
        }
    }

    fn image(id: &str, state: ImageState, snapshot: &str) -> Image {
        Image {
            id: id.into(),
            name: id.into(),
            description: None,
            image_type: crate::model::ImageType::Machine,
            state,
            state_reason: None,
            state_reason_code: None,
            owner_id: "111122223333".into(),
            architecture: "x86_64".into(),
            location: None,
            root_device_type: "ebs".into(),
            root_device_name: "/dev/sda1".into(),
            block_devices: vec![crate::model::BlockDevice {
                device_name: "/dev/sda1".into(),
                snapshot_id: Some(snapshot.into()),
                volume_size: None,
                delete_on_termination: true,
                virtual_name: None,
            }],
            kernel_id: None,
            ramdisk_id: None,
            installed_id: None,
            public: false,
            launch_permissions: vec![],
            created: "2026-12-03T21:05:33.000Z".into(),
            tags: Tags::new(),
        }
    }

    #[test]
    fn a_registered_image_holds_its_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RedbStore::open(&dir.path().join("clc.redb")).unwrap();
        let db = Db::new(std::sync::Arc::new(store));
        assert_eq!(image_using(&db, "111", "snap-0000000a").unwrap(), None);
        db.insert_new(
            "111",
            &image("emi-0000000b", ImageState::Available, "snap-0000000a"),
        )
        .unwrap();
        db.insert_new(
            "111",
            &image("emi-0000000c", ImageState::Deregistered, "snap-0000000d"),
        )
        .unwrap();
        // Another account's image is never consulted (nor named).
        db.insert_new(
            "222",
            &image("emi-0000000f", ImageState::Available, "snap-0000000d"),
        )
        .unwrap();
        assert_eq!(
            image_using(&db, "111", "snap-0000000a").unwrap().as_deref(),
            Some("emi-0000000b")
        );
        // A deregistered image holds nothing.
        assert_eq!(image_using(&db, "111", "snap-0000000d").unwrap(), None);
        assert_eq!(image_using(&db, "111", "snap-0000000e").unwrap(), None);
    }

    #[test]
    fn who_may_restore() {
        assert!(can_restore(&snap("111", &[]), "111"));
        assert!(!can_restore(&snap("111", &[]), "222"));
        assert!(can_restore(&snap("111", &["222"]), "222"));
        assert!(!can_restore(&snap("111", &["222"]), "333"));
        assert!(can_restore(&snap("111", &["all"]), "333"));
    }

    #[test]
    fn owner_and_restorable_by_select_once() {
        let me = "111".to_string();
        let mine = snap("111", &[]);
        let shared = snap("222", &["111"]);
        let public = snap("333", &["all"]);
        let v = |x: &[&String]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Owner=self: mine only.
        assert!(selected(&mine, &v(&[&me]), &[]));
        assert!(!selected(&shared, &v(&[&me]), &[]));
        // RestorableBy=self: shared with me and public, not mine (granted, not owned).
        assert!(!selected(&mine, &[], &v(&[&me])));
        // Both: mine once (one pass).
        assert!(selected(&mine, &v(&[&me]), &v(&[&me])));
        assert!(selected(&shared, &[], &v(&[&me])));
        assert!(selected(&public, &[], &v(&[&me])));
        // RestorableBy=all: public only.
        let all = "all".to_string();
        assert!(selected(&public, &[], &v(&[&all])));
        assert!(!selected(&shared, &[], &v(&[&all])));
        // Neither: all (visibility is checked separately).
        assert!(selected(&shared, &[], &[]));
        assert_eq!(
            resolve(vec!["self", "222", "all"], "111"),
            ["111", "222", "all"]
        );
    }

    #[test]
    fn permission_changes_in_both_forms() {
        let c = permission_change(&params(&[
            ("Attribute", "createVolumePermission"),
            ("CreateVolumePermission.Add.1.UserId", "222"),
            ("CreateVolumePermission.Add.2.Group", "all"),
            ("CreateVolumePermission.Remove.1.UserId", "333"),
        ]))
        .unwrap();
        assert_eq!(c.add, ["222", "all"]);
        assert_eq!(c.remove, ["333"]);
        let c = permission_change(&params(&[
            ("Attribute", "createVolumePermission"),
            ("OperationType", "remove"),
            ("UserGroup.1", "all"),
        ]))
        .unwrap();
        assert_eq!(c.remove, ["all"]);
        assert!(c.add.is_empty());
        for bad in [
            vec![
                ("Attribute", "productCodes"),
                ("OperationType", "add"),
                ("UserId.1", "1"),
            ],
            vec![("OperationType", "add"), ("UserGroup.1", "admins")],
            vec![("OperationType", "add"), ("UserId.1", "abc")],
            vec![("OperationType", "share"), ("UserId.1", "1")],
        ] {
            assert_eq!(
                permission_change(&params(&bad)).unwrap_err().code(),
                "InvalidParameterValue",
                "{bad:?}"
            );
        }
        assert_eq!(
            permission_change(&params(&[])).unwrap_err().code(),
            "MissingParameter"
        );
    }

    #[test]
    fn xml_has_the_elements_clients_read() {
        let mut x = XmlWriter::new();
        x.root("R", "ns");
        let mut s = snap("111", &[]).record;
        s.state = SnapshotState::Pending;
        s.progress = 42;
        snapshot_body(&mut x, &s, "111");
        let out = x.finish();
        for want in [
            "<snapshotId>snap-0000abcd</snapshotId><volumeId>vol-0000abcd</volumeId><status>pending</status>",
            "<progress>42%</progress><ownerId>111</ownerId><volumeSize>1</volumeSize>",
            "<encrypted>false</encrypted>",
            "<tagSet>",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }
}
