//! Images through the action functions (no listener, no Walrus): EBS images from a
//! snapshot record, visibility and launch permissions, filters, and pending
//! installs marked failed on start-up.
use crate::common;

use common::{call_as as call, principal, text};
use euca_clc::model::{Image, ImageState, ImageType, Snapshot, SnapshotState};
use euca_clc::{Clc, ClcConfig};

fn open(dir: &std::path::Path) -> Clc {
    common::open_with(dir, ClcConfig::default())
}

fn snapshot(id: &str, state: SnapshotState, restorable_by: &[&str]) -> Snapshot {
    Snapshot {
        id: id.into(),
        volume_id: "vol-00000001".into(),
        volume_size_gib: 2,
        state,
        progress: 100,
        description: String::new(),
        start_time: "2026-12-03T21:00:00.000Z".into(),
        restorable_by: restorable_by.iter().map(|s| s.to_string()).collect(),
        tags: Default::default(),
    }
}

#[tokio::test]
async fn ebs_image_from_a_completed_snapshot_is_available_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clc = open(dir.path());
    let (a, b) = (principal("111111111111"), principal("222222222222"));
    assert!(clc
        .db
        .insert_new(
            &a.account_id,
            &snapshot("snap-0000000a", SnapshotState::Completed, &[])
        )
        .unwrap());
    assert!(clc
        .db
        .insert_new(
            &a.account_id,
            &snapshot("snap-0000000b", SnapshotState::Pending, &[])
        )
        .unwrap());
    let reg = |snap: &'static str, name: &'static str| {
        vec![
            ("Name", name),
            ("RootDeviceName", "/dev/sda1"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
            ("BlockDeviceMapping.1.Ebs.SnapshotId", snap),
        ]
    };
    let out = call(&clc, &a, "RegisterImage", &reg("snap-0000000a", "ebs-one"))
        .await
        .unwrap();
    let id = text(&out, "imageId").unwrap().to_string();
    assert!(id.starts_with("emi-"), "{out}");
    let d = call(&clc, &a, "DescribeImages", &[("ImageId.1", &id)])
        .await
        .unwrap();
    assert_eq!(text(&d, "imageState"), Some("available"));
    assert_eq!(text(&d, "rootDeviceType"), Some("ebs"));
    assert_eq!(text(&d, "snapshotId"), Some("snap-0000000a"));
    assert_eq!(
        text(&d, "volumeSize"),
        Some("2"),
        "the snapshot's size by default"
    );
    assert_eq!(text(&d, "deleteOnTermination"), Some("true"));
    assert_eq!(text(&d, "virtualizationType"), Some("hvm"));
    assert_eq!(text(&d, "hypervisor"), Some("kvm"));

    // A pending snapshot, someone else's, a missing one, a name taken, no root.
    let e = call(&clc, &a, "RegisterImage", &reg("snap-0000000b", "ebs-two"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "IncorrectState");
    let e = call(&clc, &b, "RegisterImage", &reg("snap-0000000a", "ebs-b"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidSnapshot.NotFound");
    let e = call(
        &clc,
        &a,
        "RegisterImage",
        &reg("snap-0000000f", "ebs-three"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "InvalidSnapshot.NotFound");
    let e = call(&clc, &a, "RegisterImage", &reg("snap-0000000a", "ebs-one"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidAMIName.Duplicate");
    // A snapshot shared with another account is not its to register from: an
    // image pins its snapshot, and no account may pin another's.
    assert!(clc
        .db
        .insert_new(
            &a.account_id,
            &snapshot("snap-0000000c", SnapshotState::Completed, &["222222222222"])
        )
        .unwrap());
    let e = call(&clc, &b, "RegisterImage", &reg("snap-0000000c", "ebs-one"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidSnapshot.NotFound");
    // The same name in another account is fine (names are per account).
    assert!(clc
        .db
        .insert_new(
            &b.account_id,
            &snapshot("snap-0000000d", SnapshotState::Completed, &[])
        )
        .unwrap());
    call(&clc, &b, "RegisterImage", &reg("snap-0000000d", "ebs-one"))
        .await
        .unwrap();
    let e = call(&clc, &a, "RegisterImage", &[("Name", "nothing")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "MissingParameter");
    // A smaller volume than the snapshot.
    let mut small = reg("snap-0000000a", "ebs-small");
    small.push(("BlockDeviceMapping.1.Ebs.VolumeSize", "1"));
    let e = call(&clc, &a, "RegisterImage", &small).await.unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    // No installer: bundle registration is refused as unavailable (retryable).
    let e = call(
        &clc,
        &a,
        "RegisterImage",
        &[("Name", "bundle"), ("ImageLocation", "b/x.manifest.xml")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), 503);
}

#[tokio::test]
async fn visibility_launch_permissions_owner_and_executable_by() {
    let dir = tempfile::tempdir().unwrap();
    let clc = open(dir.path());
    let (a, b) = (principal("111111111111"), principal("222222222222"));
    assert!(clc
        .db
        .insert_new(
            &a.account_id,
            &snapshot("snap-0000000a", SnapshotState::Completed, &[])
        )
        .unwrap());
    let out = call(
        &clc,
        &a,
        "RegisterImage",
        &[
            ("Name", "shared"),
            ("Description", "desc"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
            ("BlockDeviceMapping.1.Ebs.SnapshotId", "snap-0000000a"),
        ],
    )
    .await
    .unwrap();
    let id = text(&out, "imageId").unwrap().to_string();
    let ids = |xml: &str| xml.matches("<imageId>").count();

    let e = call(&clc, &b, "DescribeImages", &[("ImageId.1", &id)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidAMIID.NotFound");
    assert_eq!(
        ids(&call(&clc, &b, "DescribeImages", &[]).await.unwrap()),
        0
    );
    let e = call(
        &clc,
        &b,
        "ModifyImageAttribute",
        &[("ImageId", &id), ("LaunchPermission.Add.1.Group", "all")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "InvalidAMIID.NotFound");

    call(
        &clc,
        &a,
        "ModifyImageAttribute",
        &[
            ("ImageId", &id),
            ("LaunchPermission.Add.1.UserId", "222222222222"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        ids(
            &call(&clc, &b, "DescribeImages", &[("ExecutableBy.1", "self")])
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        ids(&call(&clc, &b, "DescribeImages", &[("Owner.1", "self")])
            .await
            .unwrap()),
        0
    );
    assert_eq!(
        ids(
            &call(&clc, &b, "DescribeImages", &[("Owner.1", "111111111111")])
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        ids(&call(&clc, &b, "DescribeImages", &[("Owner.1", "amazon")])
            .await
            .unwrap()),
        0
    );
    assert_eq!(
        ids(
            &call(&clc, &b, "DescribeImages", &[("ExecutableBy.1", "all")])
                .await
                .unwrap()
        ),
        0
    );
    let e = call(&clc, &b, "DeregisterImage", &[("ImageId", &id)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "AuthFailure");
    let attr = call(
        &clc,
        &a,
        "DescribeImageAttribute",
        &[("ImageId", &id), ("Attribute", "launchPermission")],
    )
    .await
    .unwrap();
    assert_eq!(text(&attr, "userId"), Some("222222222222"));
    let attr = call(
        &clc,
        &b,
        "DescribeImageAttribute",
        &[("ImageId", &id), ("Attribute", "description")],
    )
    .await
    .unwrap();
    assert_eq!(text(&attr, "value"), Some("desc"));

    // Legacy removal form.
    call(
        &clc,
        &a,
        "ModifyImageAttribute",
        &[
            ("ImageId", &id),
            ("Attribute", "launchPermission"),
            ("OperationType", "remove"),
            ("UserId.1", "222222222222"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        ids(
            &call(&clc, &b, "DescribeImages", &[("ExecutableBy.1", "self")])
                .await
                .unwrap()
        ),
        0
    );
    // Legacy public form, then reset.
    call(
        &clc,
        &a,
        "ModifyImageAttribute",
        &[
            ("ImageId", &id),
            ("Attribute", "launchPermission"),
            ("OperationType", "add"),
            ("UserGroup.1", "all"),
        ],
    )
    .await
    .unwrap();
    let d = call(
        &clc,
        &b,
        "DescribeImages",
        &[("Filter.1.Name", "is-public"), ("Filter.1.Value.1", "true")],
    )
    .await
    .unwrap();
    assert_eq!(text(&d, "isPublic"), Some("true"));
    call(
        &clc,
        &a,
        "ResetImageAttribute",
        &[("ImageId", &id), ("Attribute", "launchPermission")],
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&call(&clc, &b, "DescribeImages", &[]).await.unwrap()),
        0
    );
    let e = call(
        &clc,
        &a,
        "ModifyImageAttribute",
        &[
            ("ImageId", &id),
            ("LaunchPermission.Add.1.Group", "friends"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    let e = call(
        &clc,
        &a,
        "DescribeImages",
        &[("Filter.1.Name", "colour"), ("Filter.1.Value.1", "x")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");

    call(&clc, &a, "DeregisterImage", &[("ImageId", &id)])
        .await
        .unwrap();
    let e = call(&clc, &a, "DescribeImages", &[("ImageId.1", &id)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidAMIID.NotFound");
}

fn pending_image(id: &str, state: ImageState) -> Image {
    Image {
        id: id.into(),
        name: id.into(),
        description: None,
        image_type: ImageType::Machine,
        state,
        state_reason: None,
        state_reason_code: None,
        owner_id: "111111111111".into(),
        architecture: "x86_64".into(),
        location: Some("b/k.manifest.xml".into()),
        root_device_type: "instance-store".into(),
        root_device_name: "/dev/sda1".into(),
        block_devices: vec![],
        kernel_id: None,
        ramdisk_id: None,
        installed_id: None,
        public: false,
        launch_permissions: vec![],
        created: "2026-12-03T21:00:00.000Z".into(),
        tags: Default::default(),
    }
}

#[test]
fn pending_installs_are_failed_on_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let image = pending_image;
    {
        let clc = open(dir.path());
        clc.db
            .insert_new("111111111111", &image("emi-0000000a", ImageState::Pending))
            .unwrap();
        clc.db
            .insert_new(
                "111111111111",
                &image("emi-0000000b", ImageState::Available),
            )
            .unwrap();
    }
    let clc = open(dir.path());
    assert_eq!(clc.fail_interrupted_installs().unwrap(), 1);
    let a = clc.db.get::<Image>("emi-0000000a").unwrap().unwrap().record;
    assert_eq!(a.state, ImageState::Failed);
    assert_eq!(a.state_reason_code.as_deref(), Some("Server.InternalError"));
    assert!(a.state_reason.unwrap().contains("interrupted"));
    assert_eq!(
        clc.db
            .get::<Image>("emi-0000000b")
            .unwrap()
            .unwrap()
            .record
            .state,
        ImageState::Available
    );
    assert_eq!(clc.fail_interrupted_installs().unwrap(), 0);
}

/// Two cloud controllers on one database: an install whose holder renews its
/// lease is left alone; one whose holder stopped (its lease lapsed) is failed,
/// by either of them.
#[test]
fn shared_records_fail_only_installs_whose_holder_stopped() {
    let url = euca_pg::testing::database_url();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = || ClcConfig {
        meta_url: Some(url.clone()),
        ..Default::default()
    };
    let a = common::open_with(da.path(), cfg());
    let b = common::open_with(db.path(), cfg());
    let owner = "111111111111";
    for id in ["emi-000000aa", "emi-000000bb"] {
        a.db.insert_new(owner, &pending_image(id, ImageState::Pending))
            .unwrap();
    }
    let store = a.db.store();
    // aa's install is alive elsewhere; bb's holder died with a short lease.
    let live = euca_clc::install::lease_name("emi-000000aa");
    assert!(store
        .lease(&live, "live-clc", std::time::Duration::from_secs(60))
        .unwrap());
    let dead = euca_clc::install::lease_name("emi-000000bb");
    assert!(store
        .lease(&dead, "dead-clc", std::time::Duration::from_millis(200))
        .unwrap());
    // Nothing lapsed yet: nothing is failed.
    assert_eq!(b.fail_interrupted_installs().unwrap(), 0);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(b.fail_interrupted_installs().unwrap(), 1);
    let state = |id: &str| a.db.get::<Image>(id).unwrap().unwrap().record.state;
    assert_eq!(state("emi-000000aa"), ImageState::Pending);
    assert_eq!(state("emi-000000bb"), ImageState::Failed);
    // The failed one's lease was given back, the live one still holds.
    assert!(store
        .lease(&dead, "anyone", std::time::Duration::from_secs(1))
        .unwrap());
    assert!(!store
        .lease(&live, "anyone", std::time::Duration::from_secs(1))
        .unwrap());
    assert_eq!(a.fail_interrupted_installs().unwrap(), 0);
}

/// With shared records, the periodic sweep of the reconciler's holder leaves the
/// installs its own CLC is running alone; a CLC restarted on the same data
/// directory (same lease name) fails its own interrupted installs at start-up
/// instead of after their leases lapse; a second process on that directory is
/// refused.
#[test]
fn own_installs_are_spared_while_running_and_failed_at_restart() {
    let url = euca_pg::testing::database_url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = || ClcConfig {
        meta_url: Some(url.clone()),
        ..Default::default()
    };
    let a = common::open_with(dir.path(), cfg());
    a.db.insert_new(
        "111111111111",
        &pending_image("emi-000000cc", ImageState::Pending),
    )
    .unwrap();
    euca_clc::install::claim(&a.db, a.lease_holder(), "emi-000000cc").unwrap();
    let state = |c: &Clc| {
        c.db.get::<Image>("emi-000000cc")
            .unwrap()
            .unwrap()
            .record
            .state
    };
    assert_eq!(a.fail_abandoned_installs().unwrap(), 0);
    assert_eq!(state(&a), ImageState::Pending);
    let err = Clc::open(dir.path(), "eucalyptus", "http://127.0.0.1:1/", cfg())
        .err()
        .expect("a second CLC on one directory");
    assert!(err.to_string().contains("in use"), "{err}");
    // It dies with the install's lease live for 30 s more, and starts again.
    drop(a);
    let again = common::open_with(dir.path(), cfg());
    assert_eq!(again.fail_interrupted_installs().unwrap(), 1);
    assert_eq!(state(&again), ImageState::Failed);
}
