//! Images: registered from a bundle in Walrus (installed in the background, see
//! [`crate::install`]) or from a snapshot (EBS, available at once); launch
//! permissions.
//!
//! An image is visible to its owner, to everyone when public (launch permission
//! group `all`), and to the accounts given launch permission. Anything else is
//! `InvalidAMIID.NotFound`. Deregistering removes the record (Describe no longer
//! lists it); the installed pieces stay in the image store (not collected yet).
use crate::call::Call;
use crate::describe::{self, Describe, Filterable, Scope, Tags};
use crate::error::Ec2Error;
use crate::ids::new_id;
use crate::model::{now_iso, BlockDevice, Image, ImageState, ImageType, Snapshot, SnapshotState};
use crate::params::Params;
use crate::store::{Owned, Write};
use euca_aws::xml::XmlWriter;

/// The root device of bundle (instance-store) images.
const BUNDLE_ROOT_DEVICE: &str = "/dev/sda1";

fn not_found(id: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidAMIID.NotFound", "image id", id)
}

/// Whether `account` may see (and launch) the image.
pub fn can_launch(o: &Owned<Image>, account: &str) -> bool {
    o.owner == account
        || o.record.public
        || o.record.launch_permissions.iter().any(|a| a == account)
}

/// The image `id` as `account` sees it, or `InvalidAMIID.NotFound`.
fn visible_image(cx: &Call<'_>, id: &str) -> Result<Owned<Image>, Ec2Error> {
    match cx.clc.db.get::<Image>(id)? {
        Some(o) if can_launch(&o, cx.account()) => Ok(o),
        _ => Err(not_found(id)),
    }
}

/// The image `id` if the caller owns it; another account's visible image is
/// `AuthFailure`, an invisible one `NotFound`.
fn owned_image(cx: &Call<'_>, id: &str) -> Result<Owned<Image>, Ec2Error> {
    let o = visible_image(cx, id)?;
    if o.owner != cx.account() {
        return Err(Ec2Error::AuthFailure(format!(
            "Not authorized for image:{id}"
        )));
    }
    Ok(o)
}

fn check_architecture(a: &str) -> Result<(), Ec2Error> {
    match a {
        "i386" | "x86_64" => Ok(()),
        _ => Err(Ec2Error::invalid(format!(
            "Value ({a}) for parameter architecture is invalid. Expected 'i386' or 'x86_64'."
        ))),
    }
}

fn check_name(name: &str) -> Result<(), Ec2Error> {
    let n = name.chars().count();
    if !(3..=128).contains(&n) {
        return Err(Ec2Error::invalid(format!(
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/' and '_' (got {n} characters)"
        )));
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c));
    if !ok {
        return Err(Ec2Error::invalid(format!(
            "Invalid AMI name {name:?}: it may contain only letters, numbers, spaces and ()[]./-'@_"
        )));
    }
    Ok(())
}

/// `BlockDeviceMapping.N.*`.
fn block_devices(p: &Params) -> Result<Vec<BlockDevice>, Ec2Error> {
    let mut out = Vec::new();
    for m in p.members("BlockDeviceMapping") {
        let device_name = m.required("DeviceName")?.to_string();
        let volume_size = match m.int("Ebs.VolumeSize")? {
            None => None,
            Some(n) if (1..=16384).contains(&n) => Some(n as u64),
            Some(n) => {
                return Err(Ec2Error::invalid(format!(
                    "Value ({n}) for parameter volumeSize is invalid. Expected 1-16384 (GiB)."
                )))
            }
        };
        out.push(BlockDevice {
            device_name,
            snapshot_id: m.get("Ebs.SnapshotId").map(String::from),
            volume_size,
            delete_on_termination: m.bool("Ebs.DeleteOnTermination")?.unwrap_or(true),
            virtual_name: m.get("VirtualName").map(String::from),
        });
    }
    Ok(out)
}

/// The kernel or ramdisk image `id` names, which must be one the caller may launch.
fn check_linked(cx: &Call<'_>, id: &str, want: ImageType) -> Result<(), Ec2Error> {
    let o = visible_image(cx, id)?;
    if o.record.image_type != want {
        return Err(Ec2Error::invalid(format!(
            "{id} is a {} image, not a {} image",
            o.record.image_type.as_str(),
            want.as_str()
        )));
    }
    Ok(())
}

/// A snapshot the caller may make volumes from: its own, or restorable by it or
/// by all.
fn usable_snapshot(cx: &Call<'_>, id: &str) -> Result<Owned<Snapshot>, Ec2Error> {
    let gone = || Ec2Error::not_found("InvalidSnapshot.NotFound", "snapshot", id);
    let o = cx.clc.db.get::<Snapshot>(id)?.ok_or_else(gone)?;
    // Only the snapshot's owner registers an image from it: an image pins its
    // snapshot (DeleteSnapshot refuses), and no account may pin another's.
    if o.owner != cx.account() {
        return Err(gone());
    }
    if o.record.state != SnapshotState::Completed {
        return Err(Ec2Error::state(
            "IncorrectState",
            format!(
                "Snapshot {id} is {}, not completed",
                o.record.state.as_str()
            ),
        ));
    }
    Ok(o)
}

pub async fn register_image(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let name = p.required("Name")?.to_string();
    check_name(&name)?;
    let description = p.get("Description").map(String::from);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return Err(Ec2Error::invalid(
            "The description may be at most 255 characters long",
        ));
    }
    if let Some(a) = p.get("Architecture") {
        check_architecture(a)?;
    }
    let mut devices = block_devices(p)?;
    let mut kernel_id = p.get("KernelId").map(String::from);
    let mut ramdisk_id = p.get("RamdiskId").map(String::from);
    let account = cx.account().to_string();

    let (image_type, architecture, location, root_device_type, root_device_name, bundle) = match p
        .get("ImageLocation")
    {
        Some(loc) => {
            let installer = cx.clc.installer.as_ref().ok_or_else(|| {
                Ec2Error::Unavailable("this cloud controller installs no bundle images".into())
            })?;
            let (bucket, key) = euca_imagecache::install::split_location(loc)
                .map_err(|e| Ec2Error::invalid(format!("ImageLocation: {e}")))?;
            let info = installer.read_manifest_as(cx.caller, &bucket, &key).await?;
            if let Some(a) = info.architecture.as_deref() {
                if p.get("Architecture").is_none() {
                    check_architecture(a)?;
                }
            }
            if info.image_type == ImageType::Machine {
                kernel_id = kernel_id.or(info.kernel_id.clone());
                ramdisk_id = ramdisk_id.or(info.ramdisk_id.clone());
            }
            let arch = p
                .get("Architecture")
                .map(String::from)
                .or(info.architecture.clone())
                .unwrap_or_else(|| "x86_64".into());
            let root = p
                .get("RootDeviceName")
                .unwrap_or(BUNDLE_ROOT_DEVICE)
                .to_string();
            (
                info.image_type,
                arch,
                Some(loc.to_string()),
                "instance-store",
                root,
                Some((bucket, key)),
            )
        }
        None => {
            let root = match p.get("RootDeviceName") {
                Some(r) => r.to_string(),
                None => devices
                    .iter()
                    .find(|d| d.snapshot_id.is_some())
                    .map(|d| d.device_name.clone())
                    .ok_or_else(|| {
                        Ec2Error::MissingParameter(
                            "ImageLocation (or a BlockDeviceMapping with Ebs.SnapshotId)".into(),
                        )
                    })?,
            };
            let root_dev = devices
                .iter_mut()
                .find(|d| d.device_name == root)
                .ok_or_else(|| {
                    Ec2Error::invalid(format!(
                        "No block device mapping for the root device {root}"
                    ))
                })?;
            let snap_id = root_dev.snapshot_id.clone().ok_or_else(|| {
                Ec2Error::MissingParameter(format!(
                    "BlockDeviceMapping Ebs.SnapshotId for the root device {root}"
                ))
            })?;
            let snap = usable_snapshot(cx, &snap_id)?;
            match root_dev.volume_size {
                    Some(s) if s < snap.record.volume_size_gib => {
                        return Err(Ec2Error::invalid(format!(
                            "Volume of size {s} GiB is smaller than snapshot {snap_id}, which needs {} GiB",
                            snap.record.volume_size_gib
                        )))
                    }
                    Some(_) => {}
                    None => root_dev.volume_size = Some(snap.record.volume_size_gib),
                }
            let arch = p.get("Architecture").unwrap_or("x86_64").to_string();
            (ImageType::Machine, arch, None, "ebs", root, None)
        }
    };
    // Other mappings' snapshots must be usable too.
    for d in &devices {
        if let Some(s) = &d.snapshot_id {
            usable_snapshot(cx, s)?;
        }
    }
    if image_type == ImageType::Machine {
        if let Some(k) = &kernel_id {
            check_linked(cx, k, ImageType::Kernel)?;
        }
        if let Some(r) = &ramdisk_id {
            check_linked(cx, r, ImageType::Ramdisk)?;
        }
    } else {
        kernel_id = None;
        ramdisk_id = None;
    }
    let state = if bundle.is_some() {
        ImageState::Pending
    } else {
        ImageState::Available
    };
    let image = Image {
        id: new_id(image_type.prefix()),
        name: name.clone(),
        description,
        image_type,
        state,
        state_reason: None,
        state_reason_code: None,
        owner_id: account.clone(),
        architecture,
        location,
        root_device_type: root_device_type.to_string(),
        root_device_name,
        block_devices: devices,
        kernel_id,
        ramdisk_id,
        installed_id: None,
        public: false,
        launch_permissions: Vec::new(),
        created: now_iso(),
        tags: Tags::new(),
    };
    let (owner, rec, nm) = (account.to_string(), image.clone(), name.to_string());
    let holder = cx.clc.holder.clone();
    if !crate::offload::on_db(&cx.clc.db, move |db| {
        let pending = rec.state == ImageState::Pending;
        if pending {
            crate::install::claim(db, &holder, &rec.id)?;
        }
        let inserted = db.insert(&owner, &rec, |other: &Image| other.name == nm)?;
        if pending && !inserted {
            let lease = crate::install::lease_name(&rec.id);
            db.store().release_lease(&lease, &holder)?;
        }
        Ok(inserted)
    })
    .await?
    {
        return Err(Ec2Error::duplicate(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by AMI of your account"),
        ));
    }
    if let (Some((bucket, key)), Some(installer)) = (bundle, cx.clc.installer.as_ref()) {
        installer.spawn(
            cx.clc.db.clone(),
            cx.clc.holder.clone(),
            image.id.clone(),
            cx.caller.display_name.clone(),
            bucket,
            key,
        );
    }
    x.elem("imageId", &image.id);
    Ok(())
}

impl Filterable for Image {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        let one = |s: &str| Some(vec![s.to_string()]);
        let opt = |s: &Option<String>| Some(s.iter().cloned().collect());
        match name {
            "image-id" => one(&self.id),
            "name" => one(&self.name),
            "state" => one(self.state.as_str()),
            "architecture" => one(&self.architecture),
            "image-type" => one(self.image_type.as_str()),
            "is-public" => one(if self.public { "true" } else { "false" }),
            "owner-id" => one(&self.owner_id),
            "root-device-type" => one(&self.root_device_type),
            "root-device-name" => one(&self.root_device_name),
            "kernel-id" => opt(&self.kernel_id),
            "ramdisk-id" => opt(&self.ramdisk_id),
            "virtualization-type" => one(virtualization_type(self)),
            "hypervisor" => one("kvm"),
            "manifest-location" => opt(&self.location),
            "description" => opt(&self.description),
            "state-reason-code" => opt(&self.state_reason_code),
            "state-reason-message" => opt(&self.state_reason),
            "block-device-mapping.snapshot-id" => Some(
                self.block_devices
                    .iter()
                    .filter_map(|d| d.snapshot_id.clone())
                    .collect(),
            ),
            "block-device-mapping.device-name" => Some(
                self.block_devices
                    .iter()
                    .map(|d| d.device_name.clone())
                    .collect(),
            ),
            _ => None,
        }
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// `paravirtual` when the image boots a named kernel, else `hvm`.
fn virtualization_type(i: &Image) -> &'static str {
    if i.kernel_id.is_some() {
        "paravirtual"
    } else {
        "hvm"
    }
}

/// Who `Owner.N` / `ExecutableBy.N` let through, besides plain visibility.
struct Scoping {
    owners: Vec<String>,
    executable_by: Vec<String>,
}

impl Scoping {
    fn from_params(p: &Params, account: &str) -> Scoping {
        let me = |v: &str| {
            if v == "self" {
                account.to_string()
            } else {
                v.to_string()
            }
        };
        Scoping {
            owners: p.list("Owner").into_iter().map(me).collect(),
            executable_by: p.list("ExecutableBy").into_iter().map(me).collect(),
        }
    }

    fn allows(&self, o: &Owned<Image>) -> bool {
        let owner_ok = self.owners.is_empty() || self.owners.contains(&o.owner);
        let exec_ok = self.executable_by.is_empty()
            || self.executable_by.iter().any(|e| {
                if e == "all" {
                    o.record.public
                } else {
                    o.owner == *e || o.record.launch_permissions.iter().any(|a| a == e)
                }
            });
        owner_ok && exec_ok
    }

    /// Only the caller's own images can match.
    fn only_owner<'a>(&self, account: &'a str) -> Option<&'a str> {
        (!self.owners.is_empty() && self.owners.iter().all(|o| o == account)).then_some(account)
    }
}

pub async fn describe_images(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let mut d = Describe::from_params(cx.params, "ImageId")?;
    let account = cx.account();
    d.viewer = Some(account.to_string());
    let scoping = Scoping::from_params(cx.params, account);
    let (images, token) = if d.ids.is_empty() {
        let scope = match scoping.only_owner(account) {
            Some(a) => Scope::Owner(a),
            None => Scope::All,
        };
        describe::page(
            &cx.clc.db,
            scope,
            &d,
            |o: &Owned<Image>| can_launch(o, account) && scoping.allows(o),
            not_found,
        )?
    } else {
        // Ids the caller cannot see are NotFound; Owner / ExecutableBy only narrow.
        let (mut v, t) = describe::page(
            &cx.clc.db,
            Scope::All,
            &d,
            |o: &Owned<Image>| can_launch(o, account),
            not_found,
        )?;
        v.retain(|o| scoping.allows(o));
        (v, t)
    };
    x.open("imagesSet");
    for mut o in images {
        // Tags are the owner's own: another account sees none.
        if o.owner != account {
            o.record.tags.clear();
        }
        image_item(x, &o.record, &o.owner);
    }
    x.close();
    describe::next_token(x, &token);
    Ok(())
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn mapping_items(x: &mut XmlWriter, devices: &[BlockDevice]) {
    for d in devices {
        x.open("item").elem("deviceName", &d.device_name);
        if let Some(v) = &d.virtual_name {
            x.elem("virtualName", v);
        }
        if d.snapshot_id.is_some() || d.volume_size.is_some() {
            x.open("ebs");
            if let Some(s) = &d.snapshot_id {
                x.elem("snapshotId", s);
            }
            if let Some(s) = d.volume_size {
                x.elem("volumeSize", s.to_string());
            }
            x.elem("deleteOnTermination", bool_str(d.delete_on_termination))
                .close();
        }
        x.close();
    }
}

/// One `imagesSet` item, in AWS's element order.
fn image_item(x: &mut XmlWriter, i: &Image, owner: &str) {
    x.open("item").elem("imageId", &i.id);
    match &i.location {
        Some(l) => x.elem("imageLocation", l),
        None => x.elem("imageLocation", format!("{owner}/{}", i.name)),
    };
    x.elem("imageState", i.state.as_str())
        .elem("imageOwnerId", owner)
        .elem("creationDate", &i.created)
        .elem("isPublic", bool_str(i.public))
        .elem("architecture", &i.architecture)
        .elem("imageType", i.image_type.as_str());
    if let Some(k) = &i.kernel_id {
        x.elem("kernelId", k);
    }
    if let Some(r) = &i.ramdisk_id {
        x.elem("ramdiskId", r);
    }
    if i.state == ImageState::Failed {
        x.open("stateReason")
            .elem(
                "code",
                i.state_reason_code
                    .as_deref()
                    .unwrap_or("Server.InternalError"),
            )
            .elem("message", i.state_reason.as_deref().unwrap_or("failed"))
            .close();
    }
    x.elem("name", &i.name);
    if let Some(d) = &i.description {
        x.elem("description", d);
    }
    x.elem("rootDeviceType", &i.root_device_type)
        .elem("rootDeviceName", &i.root_device_name);
    x.open("blockDeviceMapping");
    mapping_items(x, &i.block_devices);
    x.close();
    x.elem("virtualizationType", virtualization_type(i));
    describe::tag_set(x, &i.tags);
    x.elem("hypervisor", "kvm");
    x.close();
}

pub async fn deregister_image(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let id = cx.params.required("ImageId")?;
    let account = cx.account();
    let (account, iid) = (account.to_string(), id.to_string());
    crate::offload::on_db(&cx.clc.db, move |db| {
        let (account, id) = (account.as_str(), iid.as_str());
        db.update::<Image, ()>(id, |cur| match cur {
            Some(o) if o.owner == account => Ok((Write::Delete, ())),
            Some(o) if can_launch(o, account) => Err(Ec2Error::AuthFailure(format!(
                "Not authorized for image:{id}"
            ))),
            _ => Err(not_found(id)),
        })
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

/// An account id for a launch permission: digits only.
fn check_user_id(u: &str) -> Result<(), Ec2Error> {
    if u.is_empty() || !u.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Ec2Error::invalid(format!(
            "Invalid launch permission user id {u:?}: an account id is digits only"
        )));
    }
    Ok(())
}

fn check_group(g: &str) -> Result<(), Ec2Error> {
    if g != "all" {
        return Err(Ec2Error::invalid(format!(
            "Invalid launch permission group {g:?}: only 'all' is known"
        )));
    }
    Ok(())
}

/// A change of launch permissions: accounts and whether the `all` group.
#[derive(Default)]
struct PermChange {
    add_users: Vec<String>,
    add_all: bool,
    remove_users: Vec<String>,
    remove_all: bool,
}

impl PermChange {
    fn is_empty(&self) -> bool {
        self.add_users.is_empty()
            && self.remove_users.is_empty()
            && !self.add_all
            && !self.remove_all
    }

    fn apply(&self, i: &mut Image) {
        for u in &self.add_users {
            if !i.launch_permissions.contains(u) {
                i.launch_permissions.push(u.clone());
            }
        }
        i.launch_permissions
            .retain(|u| !self.remove_users.contains(u));
        if self.add_all {
            i.public = true;
        }
        if self.remove_all {
            i.public = false;
        }
    }
}

/// `LaunchPermission.{Add,Remove}.N.{UserId,Group}` (the current form) and
/// `Attribute=launchPermission OperationType=add|remove UserId.N UserGroup.N`
/// (the legacy one euca2ools and awscli v1's shorthand send).
fn launch_permission_change(p: &Params) -> Result<PermChange, Ec2Error> {
    let mut c = PermChange::default();
    for (dir, users, all) in [
        ("Add", &mut c.add_users, &mut c.add_all),
        ("Remove", &mut c.remove_users, &mut c.remove_all),
    ] {
        for m in p.members(&format!("LaunchPermission.{dir}")) {
            if let Some(u) = m.get("UserId") {
                check_user_id(u)?;
                users.push(u.to_string());
            }
            if let Some(g) = m.get("Group") {
                check_group(g)?;
                *all = true;
            }
        }
    }
    let legacy_users = p.list("UserId");
    let legacy_groups = p.list("UserGroup");
    if !legacy_users.is_empty() || !legacy_groups.is_empty() {
        let (users, all) = match p.get("OperationType") {
            Some("add") => (&mut c.add_users, &mut c.add_all),
            Some("remove") => (&mut c.remove_users, &mut c.remove_all),
            Some(o) => {
                return Err(Ec2Error::invalid(format!(
                "Value ({o}) for parameter OperationType is invalid. Expected 'add' or 'remove'."
            )))
            }
            None => return Err(Ec2Error::MissingParameter("OperationType".into())),
        };
        for u in legacy_users {
            check_user_id(u)?;
            users.push(u.to_string());
        }
        for g in legacy_groups {
            check_group(g)?;
            *all = true;
        }
    }
    Ok(c)
}

pub async fn modify_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let id = p.required("ImageId")?;
    owned_image(cx, id)?;
    let perms = launch_permission_change(p)?;
    let description = match (p.get("Description.Value"), p.get("Attribute")) {
        (Some(d), _) => Some(d.to_string()),
        (None, Some("description")) => Some(p.required("Value")?.to_string()),
        _ => None,
    };
    match p.get("Attribute") {
        None | Some("launchPermission") | Some("description") => {}
        Some(a) => {
            return Err(Ec2Error::invalid(format!(
                "Value ({a}) for parameter attribute is invalid: ModifyImageAttribute changes launchPermission or description"
            )))
        }
    }
    if perms.is_empty() && description.is_none() {
        return Err(Ec2Error::MissingParameter(
            "LaunchPermission or Description".into(),
        ));
    }
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return Err(Ec2Error::invalid(
            "The description may be at most 255 characters long",
        ));
    }
    let account = cx.account();
    let (account, iid) = (account.to_string(), id.to_string());
    crate::offload::on_db(&cx.clc.db, move |db| {
        let (account, id) = (account.as_str(), iid.as_str());
        db.update::<Image, ()>(id, |cur| match cur {
            Some(o) if o.owner == account => {
                perms.apply(&mut o.record);
                if let Some(d) = &description {
                    o.record.description = Some(d.clone());
                }
                Ok((Write::Put, ()))
            }
            _ => Err(not_found(id)),
        })
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}

pub async fn describe_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let id = p.required("ImageId")?;
    let attribute = p.required("Attribute")?;
    let o = match attribute {
        // Who may launch it is the owner's business.
        "launchPermission" => owned_image(cx, id)?,
        _ => visible_image(cx, id)?,
    };
    let i = &o.record;
    x.elem("imageId", &i.id);
    let value = |x: &mut XmlWriter, name: &'static str, v: &Option<String>| {
        x.open(name);
        if let Some(v) = v {
            x.elem("value", v);
        }
        x.close();
    };
    match attribute {
        "launchPermission" => {
            x.open("launchPermission");
            if i.public {
                x.open("item").elem("group", "all").close();
            }
            for u in &i.launch_permissions {
                x.open("item").elem("userId", u).close();
            }
            x.close();
        }
        "description" => value(x, "description", &i.description),
        "kernel" => value(x, "kernel", &i.kernel_id),
        "ramdisk" => value(x, "ramdisk", &i.ramdisk_id),
        "blockDeviceMapping" => {
            x.open("blockDeviceMapping");
            mapping_items(x, &i.block_devices);
            x.close();
        }
        "productCodes" => {
            x.open("productCodes").close();
        }
        a => {
            return Err(Ec2Error::invalid(format!(
                "Value ({a}) for parameter attribute is invalid. Expected one of launchPermission, description, kernel, ramdisk, blockDeviceMapping, productCodes."
            )))
        }
    }
    Ok(())
}

pub async fn reset_image_attribute(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    let id = p.required("ImageId")?;
    match p.required("Attribute")? {
        "launchPermission" => {}
        a => {
            return Err(Ec2Error::invalid(format!(
                "Value ({a}) for parameter attribute is invalid: only launchPermission can be reset"
            )))
        }
    }
    owned_image(cx, id)?;
    let account = cx.account();
    let (account, iid) = (account.to_string(), id.to_string());
    crate::offload::on_db(&cx.clc.db, move |db| {
        let (account, id) = (account.as_str(), iid.as_str());
        db.update::<Image, ()>(id, |cur| match cur {
            Some(o) if o.owner == account => {
                o.record.public = false;
                o.record.launch_permissions.clear();
                Ok((Write::Put, ()))
            }
            _ => Err(not_found(id)),
        })
    })
    .await?;
    x.elem("return", "true");
    Ok(())
}
