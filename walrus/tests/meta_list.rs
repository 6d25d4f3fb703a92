//! The metadata store and listing logic, on a real redb file and on a real
//! PostgreSQL (a throwaway server the test starts: see `common`).
use std::sync::Arc;
use walrus::acl::{Acl, Owner};
use walrus::meta::*;
use walrus::meta_redb::RedbMeta;

mod common;

fn redb(dir: &tempfile::TempDir) -> Arc<dyn MetaStore> {
    Arc::new(RedbMeta::open(&dir.path().join("m.redb"), 16 << 20).unwrap())
}

fn owner() -> Owner {
    Owner {
        id: "o".into(),
        display_name: "o".into(),
    }
}

fn obj(data: ObjectData) -> ObjectMeta {
    ObjectMeta {
        size: 1,
        etag: "e".into(),
        last_modified: 0,
        owner: owner(),
        headers: ContentHeaders::default(),
        user_meta: vec![],
        checksums: vec![],
        acl: Acl::private(owner()),
        data,
        part_sizes: vec![],
        checksum_type: None,
        part_checksums: vec![],
        tags: vec![],
        version_id: None,
        retention: None,
        legal_hold: false,
        sse: None,
    }
}

fn bucket(name: &str) -> BucketMeta {
    BucketMeta {
        name: name.into(),
        owner: owner(),
        created: 0,
        region: "r".into(),
        acl: Acl::private(owner()),
        configs: Default::default(),
        account_block: None,
    }
}

async fn put(m: &dyn MetaStore, key: &str) {
    m.apply(MetaOp::PutObject {
        bucket: "b".into(),
        key: key.into(),
        meta: obj(ObjectData::Inline(vec![1])),
        cond: None,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn objects_uploads_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    objects_uploads_and_listing_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_uploads_and_listing_on_postgres() {
    objects_uploads_and_listing_on(common::postgres().await).await;
}

async fn objects_uploads_and_listing_on(m: Arc<dyn MetaStore>) {
    let b = bucket("b");
    m.apply(MetaOp::CreateBucket(b.clone())).await.unwrap();
    assert!(matches!(
        m.apply(MetaOp::CreateBucket(b)).await,
        Err(MetaError::BucketExists { .. })
    ));
    // Another bucket whose name shares a prefix must not leak into listings of "b".
    let b2 = bucket("bb");
    m.apply(MetaOp::CreateBucket(b2)).await.unwrap();
    m.apply(MetaOp::PutObject {
        bucket: "bb".into(),
        key: "zzz".into(),
        meta: obj(ObjectData::Inline(vec![])),
        cond: None,
    })
    .await
    .unwrap();

    let keys = ["a/1", "a/2", "a/b/3", "b", "c/x", "c/y", "d", "z", "é"]; // binary (UTF-8) order
    for k in keys.iter().rev() {
        put(&*m, k).await;
    }
    let all = walrus_list(&*m, "", "", None, 1000).await;
    assert_eq!(all.0, keys.to_vec());
    let (objs, prefixes, truncated) = walrus_list(&*m, "", "/", None, 1000).await;
    assert_eq!(objs, vec!["b", "d", "z", "é"]);
    assert_eq!(prefixes, vec!["a/", "c/"]);
    assert!(!truncated);
    // Paging by 2 with a delimiter visits each entry exactly once.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let l = walrus::list_for_tests(&*m, "b", "", "/", marker.as_deref(), 2)
            .await
            .unwrap();
        seen.extend(l.objects.iter().map(|(k, _)| k.clone()));
        seen.extend(l.prefixes.iter().cloned());
        if !l.truncated {
            break;
        }
        marker = l.last.clone();
    }
    seen.sort();
    assert_eq!(seen, vec!["a/", "b", "c/", "d", "z", "é"]);
    let (objs, prefixes, _) = walrus_list(&*m, "a/", "/", None, 1000).await;
    assert_eq!(
        (objs, prefixes),
        (
            vec!["a/1".to_string(), "a/2".into()],
            vec!["a/b/".to_string()]
        )
    );

    // Overwrite frees the old blob; delete reports existence.
    let blob = BlobRef {
        id: "x1".into(),
        size: 1,
    };
    m.apply(MetaOp::PutObject {
        bucket: "b".into(),
        key: "k".into(),
        meta: obj(ObjectData::Blobs(vec![blob.clone()])),
        cond: None,
    })
    .await
    .unwrap();
    let out = m
        .apply(MetaOp::PutObject {
            bucket: "b".into(),
            key: "k".into(),
            meta: obj(ObjectData::Inline(vec![])),
            cond: None,
        })
        .await
        .unwrap();
    assert_eq!(out.freed_blobs, vec![blob]);
    assert!(
        m.apply(MetaOp::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
            by: owner(),
            unchanged: None,
        })
        .await
        .unwrap()
        .existed
    );
    assert!(
        !m.apply(MetaOp::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
            by: owner(),
            unchanged: None,
        })
        .await
        .unwrap()
        .existed
    );
    assert!(matches!(
        m.apply(MetaOp::DeleteBucket { name: "b".into() }).await,
        Err(MetaError::BucketNotEmpty)
    ));

    // Multipart: completing with a part that changed fails; the right parts succeed
    // and the unused part's blob is freed.
    let up = UploadMeta {
        upload_id: "u1".into(),
        bucket: "b".into(),
        key: "mp".into(),
        initiated: 0,
        owner: owner(),
        headers: ContentHeaders::default(),
        user_meta: vec![],
        acl: Acl::private(owner()),
        checksum_algorithm: None,
        checksum_type: None,
        tags: vec![],
        retention: None,
        legal_hold: false,
        sse: None,
    };
    m.apply(MetaOp::CreateUpload(up)).await.unwrap();
    for (n, id) in [(1, "p1"), (2, "p2"), (3, "p3")] {
        let part = PartMeta {
            number: n,
            blob: BlobRef {
                id: id.into(),
                size: 5,
            },
            etag: "e".into(),
            last_modified: 0,
            checksums: vec![],
        };
        m.apply(MetaOp::PutPart {
            bucket: "b".into(),
            key: "mp".into(),
            upload_id: "u1".into(),
            part,
        })
        .await
        .unwrap();
    }
    assert_eq!(m.parts("u1", 1, 10).await.unwrap().len(), 2);
    assert_eq!(m.scan_uploads("b", None, "", 10).await.unwrap().len(), 1);
    let meta = obj(ObjectData::Blobs(vec![]));
    let bad = MetaOp::CompleteUpload {
        bucket: "b".into(),
        key: "mp".into(),
        upload_id: "u1".into(),
        parts: vec![(1, "other".into())],
        meta: meta.clone(),
        cond: None,
    };
    assert!(matches!(m.apply(bad).await, Err(MetaError::PartChanged)));
    let good = MetaOp::CompleteUpload {
        bucket: "b".into(),
        key: "mp".into(),
        upload_id: "u1".into(),
        parts: vec![(1, "p1".into()), (3, "p3".into())],
        meta,
        cond: None,
    };
    let out = m.apply(good).await.unwrap();
    assert_eq!(
        out.freed_blobs
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        vec!["p2"]
    );
    assert!(m.upload("b", "mp", "u1").await.unwrap().is_none());
    assert!(m.parts("u1", 0, 10).await.unwrap().is_empty());
    let refs = m.referenced_blobs().await.unwrap();
    assert!(
        refs.is_empty(),
        "completed object lists no blobs here: {refs:?}"
    );
}

async fn walrus_list(
    m: &dyn MetaStore,
    prefix: &str,
    delim: &str,
    marker: Option<&str>,
    max: usize,
) -> (Vec<String>, Vec<String>, bool) {
    let l = walrus::list_for_tests(m, "b", prefix, delim, marker, max)
        .await
        .unwrap();
    (
        l.objects.into_iter().map(|(k, _)| k).collect(),
        l.prefixes,
        l.truncated,
    )
}

/// A completed upload is remembered (for a repeated Complete) with the digest of its
/// parts, and forgotten once older than COMPLETED_TTL_MS.
#[tokio::test]
async fn completed_uploads_are_remembered_then_expire() {
    let dir = tempfile::tempdir().unwrap();
    completed_uploads_are_remembered_then_expire_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_uploads_are_remembered_then_expire_on_postgres() {
    completed_uploads_are_remembered_then_expire_on(common::postgres().await).await;
}

async fn completed_uploads_are_remembered_then_expire_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    for (id, at) in [("old", now - COMPLETED_TTL_MS - 1000), ("new", now)] {
        complete_upload(&*m, id, at).await.unwrap();
    }
    let c = m.completed_upload("b", "k", "new").await.unwrap().unwrap();
    assert_eq!(c.etag, "etag-new");
    assert_eq!(c.owner_id, "o");
    assert_eq!(c.parts_digest, parts_digest([(1, "aa")]));
    assert_ne!(c.parts_digest, parts_digest([(2, "aa")]));
    assert!(m.completed_upload("b", "k", "old").await.unwrap().is_none());
    assert!(m
        .completed_upload("b", "other", "new")
        .await
        .unwrap()
        .is_none());
}

/// Makes upload `id` of `b/k` with one part and completes it, as if at `at` (ms).
async fn complete_upload(m: &dyn MetaStore, id: &str, at: i64) -> Result<OpOutcome, MetaError> {
    // Through serde, so optional fields added later default to None.
    let upload: UploadMeta = serde_json::from_value(serde_json::json!({
        "upload_id": id, "bucket": "b", "key": "k", "initiated": 0,
        "owner": owner(), "headers": ContentHeaders::default(), "user_meta": [],
        "acl": Acl::private(owner()),
    }))
    .unwrap();
    m.apply(MetaOp::CreateUpload(upload)).await?;
    let blob = BlobRef {
        id: format!("blob-{id}"),
        size: 1,
    };
    m.apply(MetaOp::PutPart {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: id.into(),
        part: PartMeta {
            number: 1,
            blob: blob.clone(),
            etag: "aa".into(),
            last_modified: 0,
            checksums: vec![],
        },
    })
    .await?;
    let mut meta = obj(ObjectData::Blobs(vec![blob.clone()]));
    meta.etag = format!("etag-{id}");
    meta.last_modified = at;
    m.apply(MetaOp::CompleteUpload {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: id.into(),
        parts: vec![(1, blob.id)],
        meta,
        cond: None,
    })
    .await
}

/// A completion does not wait for another one expiring the same remembered
/// completions: it leaves those rows to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_do_not_queue_behind_each_others_expiry_on_postgres() {
    let url = tokio::task::spawn_blocking(euca_pg::testing::database_url)
        .await
        .unwrap();
    let quick = format!("{url}?options=-c%20lock_timeout%3D300");
    let m = walrus::meta_pg::PgMeta::open(&quick, 2).await.unwrap();
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    complete_upload(&m, "old", now - COMPLETED_TTL_MS - 1000)
        .await
        .unwrap();
    // Another completion in flight holds the expired row it is removing.
    let held = Held::take(&url, "SELECT k FROM walrus_completed_by_time FOR UPDATE");
    assert_eq!(held.rows, 1);
    complete_upload(&m, "new", now).await.unwrap();
    drop(held);
    assert!(m.completed_upload("b", "k", "new").await.unwrap().is_some());
}

/// Conditional writes are decided inside the commit: of 16 racing `If-None-Match: *`
/// writers exactly one wins; `If-Match` needs the current ETag; bucket configs and
/// object tags are set and removed in place.
#[tokio::test]
async fn conditional_writes_tags_and_bucket_configs() {
    let dir = tempfile::tempdir().unwrap();
    conditional_writes_tags_and_bucket_configs_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_tags_and_bucket_configs_on_postgres() {
    conditional_writes_tags_and_bucket_configs_on(common::postgres().await).await;
}

async fn conditional_writes_tags_and_bucket_configs_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut meta = obj(ObjectData::Inline(vec![i]));
                meta.etag = format!("e{i}");
                m.apply(MetaOp::PutObject {
                    bucket: "b".into(),
                    key: "k".into(),
                    meta,
                    cond: Some(WriteCondition::Absent),
                })
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => won.push(i),
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let etag = m.object("b", "k").await.unwrap().unwrap().etag;
    assert_eq!(etag, format!("e{}", won[0]));
    let put_if = |e: &str| MetaOp::PutObject {
        bucket: "b".into(),
        key: "k".into(),
        meta: obj(ObjectData::Inline(vec![])),
        cond: Some(WriteCondition::EtagIs(e.into())),
    };
    assert!(matches!(
        m.apply(put_if("nope")).await,
        Err(MetaError::PreconditionFailed)
    ));
    m.apply(put_if(&etag)).await.unwrap();
    assert!(matches!(
        m.apply(MetaOp::PutObject {
            bucket: "b".into(),
            key: "absent".into(),
            meta: obj(ObjectData::Inline(vec![])),
            cond: Some(WriteCondition::EtagIs("e".into())),
        })
        .await,
        Err(MetaError::PreconditionFailed)
    ));
    let tags = vec![("a".to_string(), "1".to_string())];
    m.apply(MetaOp::UpdateObject {
        bucket: "b".into(),
        key: "k".into(),
        version_id: None,
        unchanged: None,
        change: ObjectChange::Tags(tags.clone()),
    })
    .await
    .unwrap();
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().tags, tags);
    // A change authorized against one write of the key does not land on the next
    // (an unversioned overwrite keeps the `null` version id).
    let authorized = ObjectStamp::of(&m.object("b", "k").await.unwrap().unwrap());
    let stamped = |stamp: &ObjectStamp| MetaOp::UpdateObject {
        bucket: "b".into(),
        key: "k".into(),
        version_id: None,
        unchanged: Some(stamp.clone()),
        change: ObjectChange::Tags(vec![("x".into(), "planted".into())]),
    };
    m.apply(stamped(&authorized)).await.unwrap();
    put_meta(&*m, "k", blob_obj("overwrite")).await;
    assert!(matches!(
        m.apply(stamped(&authorized)).await,
        Err(MetaError::Changed)
    ));
    assert!(m.object("b", "k").await.unwrap().unwrap().tags.is_empty());
    // A delete of the object found due (the lifecycle worker's) spares a newer
    // write, and the same write retagged since.
    let found = FoundObject::of(&m.object("b", "k").await.unwrap().unwrap());
    let delete_found = |found: &FoundObject| MetaOp::DeleteObject {
        bucket: "b".into(),
        key: "k".into(),
        by: owner(),
        unchanged: Some(found.clone()),
    };
    put_meta(&*m, "k", blob_obj("newer")).await;
    assert!(matches!(
        m.apply(delete_found(&found)).await,
        Err(MetaError::Changed)
    ));
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().etag, "newer");
    let newer = FoundObject::of(&m.object("b", "k").await.unwrap().unwrap());
    m.apply(MetaOp::UpdateObject {
        bucket: "b".into(),
        key: "k".into(),
        version_id: None,
        unchanged: None,
        change: ObjectChange::Tags(vec![("keep".into(), "yes".into())]),
    })
    .await
    .unwrap();
    assert!(matches!(
        m.apply(delete_found(&newer)).await,
        Err(MetaError::Changed)
    ));
    let newer = FoundObject::of(&m.object("b", "k").await.unwrap().unwrap());
    m.apply(delete_found(&newer)).await.unwrap();
    assert!(m.object("b", "k").await.unwrap().is_none());
    assert!(matches!(
        m.apply(delete_found(&newer)).await,
        Err(MetaError::Changed)
    ));
    for doc in [Some("<CORSConfiguration/>".to_string()), None] {
        m.apply(MetaOp::SetBucketConfig {
            name: "b".into(),
            config: BucketConfig::CORS.into(),
            doc: doc.clone(),
        })
        .await
        .unwrap();
        let b = m.bucket("b").await.unwrap().unwrap();
        assert_eq!(b.config(BucketConfig::CORS), doc.as_deref());
    }
    // Front ends sharing the store learn from one row that logging was ever set.
    assert!(
        !m.logging_seen().await.unwrap(),
        "before any logging config"
    );
    for doc in [Some("{}".to_string()), None] {
        m.apply(MetaOp::SetBucketConfig {
            name: "b".into(),
            config: BucketConfig::LOGGING.into(),
            doc,
        })
        .await
        .unwrap();
        assert!(m.logging_seen().await.unwrap(), "sticky once set");
    }
}

fn blob_obj(id: &str) -> ObjectMeta {
    let mut o = obj(ObjectData::Blobs(vec![BlobRef {
        id: id.into(),
        size: 1,
    }]));
    o.etag = id.into();
    o
}

async fn put_meta(m: &dyn MetaStore, key: &str, meta: ObjectMeta) -> OpOutcome {
    m.apply(MetaOp::PutObject {
        bucket: "b".into(),
        key: key.into(),
        meta,
        cond: None,
    })
    .await
    .unwrap()
}

async fn set_versioning(m: &dyn MetaStore, state: &str) {
    m.apply(MetaOp::SetBucketConfig {
        name: "b".into(),
        config: BucketConfig::VERSIONING.into(),
        doc: Some(state.into()),
    })
    .await
    .unwrap();
}

async fn listing(m: &dyn MetaStore, prefix: &str) -> Vec<(String, String, bool, bool)> {
    m.scan_versions("b", None, prefix, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let marker = matches!(e.version, Version::DeleteMarker(_));
            (
                e.key,
                e.version.version_id().to_string(),
                e.is_latest,
                marker,
            )
        })
        .collect()
}

/// Versioning in the store: an object from before becomes the `null` version, writes
/// add versions and deletes add markers (nothing freed), deleting the latest version
/// brings back the next one, suspension replaces the `null` version, listings merge
/// both kinds in key order (keys holding 0 bytes included) and page exactly.
#[tokio::test]
async fn versions_markers_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    versions_markers_and_listing_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_markers_and_listing_on_postgres() {
    versions_markers_and_listing_on(common::postgres().await).await;
}

async fn versions_markers_and_listing_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    put_meta(&*m, "k", blob_obj("old")).await;
    put_meta(&*m, "plain", blob_obj("plain")).await;
    set_versioning(&*m, Versioning::ENABLED).await;
    assert_eq!(
        m.bucket("b").await.unwrap().unwrap().versioning(),
        Versioning::Enabled
    );
    assert_eq!(
        listing(&*m, "k").await,
        vec![("k".into(), "null".into(), true, false)]
    );

    let out = put_meta(&*m, "k", blob_obj("v1")).await;
    assert!(out.freed_blobs.is_empty() && out.existed);
    let v1 = out.version_id.unwrap();
    assert_eq!(v1.len(), 32);
    assert_eq!(
        m.object("b", "k")
            .await
            .unwrap()
            .unwrap()
            .version_id
            .as_deref(),
        Some(v1.as_str())
    );
    let out = m
        .apply(MetaOp::DeleteObject {
            bucket: "b".into(),
            key: "k".into(),
            by: owner(),
            unchanged: None,
        })
        .await
        .unwrap();
    assert!(out.delete_marker && out.existed && out.freed_blobs.is_empty());
    let marker = out.version_id.unwrap();
    assert!(m.object("b", "k").await.unwrap().is_none());
    assert_eq!(
        listing(&*m, "k").await,
        vec![
            ("k".into(), marker.clone(), true, true),
            ("k".into(), v1.clone(), false, false),
            ("k".into(), "null".into(), false, false),
        ]
    );
    // Every version's blob is still referenced.
    let refs = m.referenced_blobs().await.unwrap();
    assert!(["old", "v1", "plain"].iter().all(|b| refs.contains(*b)));
    // Lookups by id: a forged id with a real sequence number finds nothing.
    assert!(
        matches!(m.object_version("b", "k", &v1).await.unwrap(), Some(Version::Object(o)) if o.etag == "v1")
    );
    assert!(
        matches!(m.object_version("b", "k", "null").await.unwrap(), Some(Version::Object(o)) if o.etag == "old")
    );
    let forged = format!("{}{}", &v1[..16], "0".repeat(16));
    assert!(forged == v1 || m.object_version("b", "k", &forged).await.unwrap().is_none());
    assert!(m.object_version("b", "k", "nope").await.unwrap().is_none());
    assert!(matches!(
        m.object_version("b", "plain", "null").await.unwrap(),
        Some(Version::Object(_))
    ));

    // Deleting the marker brings v1 back; deleting v1 brings the null version back.
    let del = |v: &str| MetaOp::DeleteVersion {
        bucket: "b".into(),
        key: "k".into(),
        version_id: v.into(),
        bypass_governance: false,
    };
    let out = m.apply(del(&marker)).await.unwrap();
    assert!(out.delete_marker && out.existed);
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().etag, "v1");
    let out = m.apply(del(&v1)).await.unwrap();
    assert_eq!(
        out.freed_blobs
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["v1"]
    );
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().etag, "old");
    assert!(!m.apply(del(&v1)).await.unwrap().existed);

    // Suspended: a write replaces the null version (its blob is freed).
    set_versioning(&*m, Versioning::SUSPENDED).await;
    let out = put_meta(&*m, "k", blob_obj("s1")).await;
    assert_eq!(out.version_id.as_deref(), Some("null"));
    assert_eq!(
        out.freed_blobs
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["old"]
    );
    assert_eq!(
        listing(&*m, "k").await,
        vec![("k".into(), "null".into(), true, false)]
    );
    // Tags set on the current object are seen through its version too.
    m.apply(MetaOp::UpdateObject {
        bucket: "b".into(),
        key: "k".into(),
        version_id: None,
        unchanged: None,
        change: ObjectChange::Tags(vec![("t".into(), "1".into())]),
    })
    .await
    .unwrap();
    assert!(
        matches!(m.object_version("b", "k", "null").await.unwrap(), Some(Version::Object(o)) if o.tags.len() == 1)
    );

    // Keys holding 0 bytes keep their own versions, in key order.
    set_versioning(&*m, Versioning::ENABLED).await;
    // Tags and ACL of an older version by id: that version alone changes.
    let newer = put_meta(&*m, "k", blob_obj("n1")).await.version_id.unwrap();
    let set_tags = |v: &str, t: &str| MetaOp::UpdateObject {
        bucket: "b".into(),
        key: "k".into(),
        version_id: Some(v.into()),
        unchanged: None,
        change: ObjectChange::Tags(vec![("t".into(), t.into())]),
    };
    m.apply(set_tags("null", "old")).await.unwrap();
    assert!(
        matches!(m.object_version("b", "k", "null").await.unwrap(), Some(Version::Object(o)) if o.tags == [("t".to_string(), "old".to_string())])
    );
    assert!(m.object("b", "k").await.unwrap().unwrap().tags.is_empty());
    m.apply(set_tags(&newer, "new")).await.unwrap();
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().tags[0].1, "new");
    assert!(
        matches!(m.object_version("b", "k", &newer).await.unwrap(), Some(Version::Object(o)) if o.tags[0].1 == "new")
    );
    let missing = format!("{}{}", &newer[..16], "f".repeat(16));
    assert!(matches!(
        m.apply(set_tags(&missing, "x")).await,
        Err(MetaError::NoSuchKey)
    ));
    for k in ["a", "a\0b", "ab"] {
        put_meta(&*m, k, blob_obj(k)).await;
        put_meta(&*m, k, blob_obj(k)).await;
    }
    let all = listing(&*m, "a").await;
    let keys: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(keys, ["a", "a", "a\0b", "a\0b", "ab", "ab"]);
    assert_eq!(listing(&*m, "a\0").await.len(), 2);
    // Paging one at a time, by (key, version) markers, yields the same list.
    let whole = listing(&*m, "").await;
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = m
            .scan_versions(
                "b",
                after.as_ref().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
                "",
                1,
            )
            .await
            .unwrap();
        let Some(e) = page.into_iter().next() else {
            break;
        };
        after = Some((e.key.clone(), e.version.version_id().to_string()));
        paged.push((
            e.key,
            e.version.version_id().to_string(),
            e.is_latest,
            false,
        ));
    }
    assert_eq!(
        paged.iter().map(|e| (&e.0, &e.1, e.2)).collect::<Vec<_>>(),
        whole.iter().map(|e| (&e.0, &e.1, e.2)).collect::<Vec<_>>()
    );
    // A key marker alone skips all of that key's versions.
    let rest = m
        .scan_versions("b", Some(("a", None)), "", 1000)
        .await
        .unwrap();
    assert_eq!(rest[0].key, "a\0b");
    // A bucket holding only versions is not empty.
    for e in m.scan_versions("b", None, "", 1000).await.unwrap() {
        if e.is_latest {
            m.apply(MetaOp::DeleteObject {
                bucket: "b".into(),
                key: e.key.clone(),
                by: owner(),
                unchanged: None,
            })
            .await
            .unwrap();
        }
    }
    assert!(m
        .scan_objects("b", &ScanStart::From(String::new()), "", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        m.apply(MetaOp::DeleteBucket { name: "b".into() }).await,
        Err(MetaError::BucketNotEmpty)
    ));
}

/// Object lock in the store: a version under retention or legal hold cannot be
/// deleted (governance yields to a bypass, compliance to nothing), a compliance
/// retention cannot be shortened, and an overwrite only adds a version.
#[tokio::test]
async fn object_lock_holds_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    object_lock_holds_in_the_store_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_holds_in_the_store_on_postgres() {
    object_lock_holds_in_the_store_on(common::postgres().await).await;
}

async fn object_lock_holds_in_the_store_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    set_versioning(&*m, Versioning::ENABLED).await;
    let future = now_millis() + 3_600_000;
    let mut locked = blob_obj("c");
    locked.retention = Some(Retention {
        mode: RetentionMode::Compliance,
        until: future,
    });
    let vc = put_meta(&*m, "k", locked).await.version_id.unwrap();
    let mut gov = blob_obj("g");
    gov.retention = Some(Retention {
        mode: RetentionMode::Governance,
        until: future,
    });
    let vg = put_meta(&*m, "k", gov).await.version_id.unwrap();
    let vh = put_meta(&*m, "k", blob_obj("h")).await.version_id.unwrap();
    let lock = |v: &str, retention: Option<Option<Retention>>, hold: Option<bool>, bypass| {
        MetaOp::SetObjectLock {
            bucket: "b".into(),
            key: "k".into(),
            version_id: Some(v.into()),
            retention,
            legal_hold: hold,
            bypass_governance: bypass,
        }
    };
    m.apply(lock(&vh, None, Some(true), false)).await.unwrap();
    let del = |v: &str, bypass| MetaOp::DeleteVersion {
        bucket: "b".into(),
        key: "k".into(),
        version_id: v.into(),
        bypass_governance: bypass,
    };
    for (v, bypass) in [(&vc, true), (&vg, false), (&vh, true)] {
        assert!(
            matches!(m.apply(del(v, bypass)).await, Err(MetaError::ObjectLocked)),
            "{v}"
        );
    }
    // Compliance: not shortened, not downgraded, not removed; extended it may be.
    for r in [
        None,
        Some(Retention {
            mode: RetentionMode::Compliance,
            until: future - 1000,
        }),
        Some(Retention {
            mode: RetentionMode::Governance,
            until: future + 1000,
        }),
    ] {
        assert!(matches!(
            m.apply(lock(&vc, Some(r), None, true)).await,
            Err(MetaError::RetentionLocked)
        ));
    }
    let longer = Retention {
        mode: RetentionMode::Compliance,
        until: future + 1000,
    };
    m.apply(lock(&vc, Some(Some(longer.clone())), None, false))
        .await
        .unwrap();
    assert!(
        matches!(m.object_version("b", "k", &vc).await.unwrap(), Some(Version::Object(o)) if o.retention == Some(longer))
    );
    // Governance yields to a bypass; a legal hold to being lifted.
    assert!(matches!(
        m.apply(lock(&vg, Some(None), None, false)).await,
        Err(MetaError::RetentionLocked)
    ));
    m.apply(del(&vg, true)).await.unwrap();
    m.apply(lock(&vh, None, Some(false), false)).await.unwrap();
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().etag, "h");
    m.apply(del(&vh, false)).await.unwrap();
    // The compliance version is now current, and still protected.
    assert_eq!(m.object("b", "k").await.unwrap().unwrap().etag, "c");
    assert!(matches!(
        m.apply(del(&vc, true)).await,
        Err(MetaError::ObjectLocked)
    ));
}

/// A lease is one holder's until it expires; renewing keeps it; then another may take
/// it. (redb, opened by one front end only, always grants it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_on_postgres() {
    let m = common::postgres().await;
    assert!(m.lease("lifecycle", "a", 60_000).await.unwrap());
    assert!(!m.lease("lifecycle", "b", 60_000).await.unwrap());
    assert!(
        m.lease("lifecycle", "a", 300).await.unwrap(),
        "its holder renews it"
    );
    assert!(
        m.lease("other", "b", 60_000).await.unwrap(),
        "leases are per name"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        m.lease("lifecycle", "b", 60_000).await.unwrap(),
        "expired: b takes it"
    );
    assert!(!m.lease("lifecycle", "a", 60_000).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let r = redb(&dir);
    assert!(
        r.lease("lifecycle", "a", 1).await.unwrap() && r.lease("lifecycle", "b", 1).await.unwrap()
    );
}

#[tokio::test]
async fn racing_version_writers_agree() {
    let dir = tempfile::tempdir().unwrap();
    racing_version_writers_agree_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_version_writers_agree_on_postgres() {
    racing_version_writers_agree_on(common::postgres().await).await;
}

/// A PUT and a DELETE racing on a key with no current object, in a bucket with
/// versioning: whichever wins, the current object and the newest version agree (in
/// PostgreSQL the sequence numbers are taken outside the transactions, so the two
/// must conflict rather than both commit in an order their numbers contradict).
async fn racing_version_writers_agree_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    set_versioning(&*m, Versioning::ENABLED).await;
    for round in 0..24 {
        let key = format!("race{round}");
        let (m1, m2, k1, k2) = (m.clone(), m.clone(), key.clone(), key.clone());
        let put = tokio::spawn(async move { put_meta(&*m1, &k1, blob_obj(&k1)).await });
        let del = tokio::spawn(async move {
            m2.apply(MetaOp::DeleteObject {
                bucket: "b".into(),
                key: k2,
                by: owner(),
                unchanged: None,
            })
            .await
            .unwrap()
        });
        put.await.unwrap();
        del.await.unwrap();
        let current = m.object("b", &key).await.unwrap();
        let newest = m
            .scan_versions("b", None, &key, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.key == key && e.is_latest)
            .unwrap();
        match newest.version {
            Version::DeleteMarker(_) => assert!(current.is_none(), "round {round}: {current:?}"),
            Version::Object(o) => assert_eq!(
                current.map(|c| c.version_id),
                Some(o.version_id),
                "round {round}"
            ),
        }
    }
}

#[tokio::test]
async fn racing_bucket_and_object_ops_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    racing_bucket_and_object_ops_lose_nothing_on(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bucket_and_object_ops_lose_nothing_on_postgres() {
    racing_bucket_and_object_ops_lose_nothing_on(common::postgres().await).await;
}

/// Concurrent configuration changes to one bucket all stay (none overwrites
/// another with the bucket it read before); a bucket deleted while PUTs race into
/// it is either refused as not empty or leaves no object behind.
async fn racing_bucket_and_object_ops_lose_nothing_on(m: Arc<dyn MetaStore>) {
    m.apply(MetaOp::CreateBucket(bucket("cfg"))).await.unwrap();
    let sets: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move {
                m.apply(MetaOp::SetBucketConfig {
                    name: "cfg".into(),
                    config: format!("test-config-{i}"),
                    doc: Some(format!("doc {i}")),
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in sets {
        t.await.unwrap();
    }
    let b = m.bucket("cfg").await.unwrap().unwrap();
    for i in 0..8 {
        assert_eq!(
            b.config(&format!("test-config-{i}")),
            Some(format!("doc {i}").as_str()),
            "config {i} lost"
        );
    }
    for round in 0..12 {
        let name = format!("gone{round}");
        m.apply(MetaOp::CreateBucket(bucket(&name))).await.unwrap();
        let puts: Vec<_> = (0..6)
            .map(|i| {
                let (m, name) = (m.clone(), name.clone());
                tokio::spawn(async move {
                    m.apply(MetaOp::PutObject {
                        bucket: name,
                        key: format!("k{i}"),
                        meta: obj(ObjectData::Inline(vec![1])),
                        cond: None,
                    })
                    .await
                })
            })
            .collect();
        let (m2, n2) = (m.clone(), name.clone());
        let del = tokio::spawn(async move { m2.apply(MetaOp::DeleteBucket { name: n2 }).await });
        let mut acked = Vec::new();
        for (i, t) in puts.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(_) => acked.push(i),
                Err(MetaError::NoSuchBucket) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        match del.await.unwrap() {
            Ok(_) => {
                assert!(m.bucket(&name).await.unwrap().is_none());
                for i in 0..6 {
                    assert!(
                        m.object(&name, &format!("k{i}")).await.unwrap().is_none(),
                        "round {round}: k{i} left in a deleted bucket (acked {acked:?})"
                    );
                }
                assert!(
                    acked.is_empty(),
                    "round {round}: {acked:?} acked into a deleted bucket"
                );
            }
            Err(MetaError::BucketNotEmpty) => {
                for i in &acked {
                    assert!(m.object(&name, &format!("k{i}")).await.unwrap().is_some());
                }
                assert!(!acked.is_empty());
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

/// A store whose table another session holds locked answers `Busy` (a 503 at
/// the edge) within its lock timeout, changes nothing, and works once the lock
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_busy_and_changes_nothing_on_postgres() {
    let url = tokio::task::spawn_blocking(euca_pg::testing::database_url)
        .await
        .unwrap();
    let quick = format!("{url}?options=-c%20lock_timeout%3D300");
    let m: Arc<dyn MetaStore> = Arc::new(
        walrus::meta_pg::PgMeta::open(&quick, 2)
            .await
            .expect("open PgMeta"),
    );
    m.apply(MetaOp::CreateBucket(bucket("b"))).await.unwrap();
    let locked = Held::table(&url, "walrus_objects");
    let started = std::time::Instant::now();
    let e = m
        .apply(MetaOp::PutObject {
            bucket: "b".into(),
            key: "k".into(),
            meta: obj(ObjectData::Inline(vec![1])),
            cond: None,
        })
        .await
        .expect_err("the objects table is locked");
    assert!(matches!(e, MetaError::Busy(_)), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let e = m.object("b", "k").await.expect_err("reads wait too");
    assert!(matches!(e, MetaError::Busy(_)), "{e}");
    drop(locked);
    assert!(
        m.object("b", "k").await.unwrap().is_none(),
        "the busy PUT wrote"
    );
    put(&*m, "k").await;
    assert!(m.object("b", "k").await.unwrap().is_some());
}

/// Locks another session took (in a transaction, by `sql`) and holds until
/// dropped.
struct Held {
    /// The rows `sql` returned.
    rows: usize,
    release: Option<std::sync::mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl Held {
    fn take(url: &str, sql: &str) -> Self {
        let (url, sql) = (url.to_string(), sql.to_string());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut c = url
                .parse::<postgres::Config>()
                .unwrap()
                .connect(postgres::NoTls)
                .unwrap();
            let mut tx = c.transaction().unwrap();
            locked_tx.send(tx.query(&sql, &[]).unwrap().len()).unwrap();
            let _ = release_rx.recv();
            tx.rollback().unwrap();
        });
        Held {
            rows: locked_rx.recv().unwrap(),
            release: Some(release),
            holder: Some(holder),
        }
    }

    /// `table` locked ACCESS EXCLUSIVE: every read and write of it waits.
    fn table(url: &str, table: &str) -> Self {
        Self::take(url, &format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(h) = self.holder.take() {
            let _ = h.join();
        }
    }
}
