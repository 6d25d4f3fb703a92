//! DeleteObject and DeleteObjects (the multi-object delete, `POST /bucket?delete`).
use crate::acl::{Owner, Permission};
use crate::authz::{self, AclRule, Authz};
use crate::error::{S3Error, S3Result};
use crate::handler::{
    check_version_id, empty, free_blobs, load_bucket, set_header, set_version_header, xml, Req,
    Resp, MAX_KEY_BYTES,
};
use crate::meta::{BucketMeta, MetaError, MetaOp};
use crate::state::State;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

pub async fn delete_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "DeleteObject";
    let b = load_bucket(st, r.bucket()).await?;
    let key = r.key().to_string();
    let version = r.q("versionId");
    let action = if version.is_some() {
        "s3:DeleteObjectVersion"
    } else {
        "s3:DeleteObject"
    };
    authz::check(
        r,
        &b,
        action,
        Some(&key),
        AclRule::Grant(&b.acl, Permission::Write),
    )?;
    let op = match version {
        Some(v) => {
            check_version_id(v)?;
            MetaOp::DeleteVersion {
                bucket: r.bucket().into(),
                key: r.key().into(),
                version_id: v.into(),
                bypass_governance: crate::objectlock::bypass_governance(r, &b),
            }
        }
        None => MetaOp::DeleteObject {
            bucket: r.bucket().into(),
            key: r.key().into(),
            by: deleter(r, &b),
            unchanged: None,
        },
    };
    let out = st.meta.apply(op).await?;
    free_blobs(st, out.freed_blobs);
    let mut resp = empty(StatusCode::NO_CONTENT);
    set_version_header(resp.headers_mut(), out.version_id.as_deref())?;
    if out.delete_marker {
        set_header(resp.headers_mut(), "x-amz-delete-marker", "true")?;
    }
    Ok(resp)
}

/// The owner of the delete marker a delete leaves in a bucket with versioning: the
/// requester, or for an anonymous one (a public-write bucket) the bucket's owner.
fn deleter(r: &Req, b: &BucketMeta) -> Owner {
    r.principal
        .as_ref()
        .map(Owner::of)
        .unwrap_or_else(|| b.owner.clone())
}

pub async fn delete_objects(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let b = load_bucket(st, r.bucket()).await?;
    // Authorized before the body is read: without WRITE on the bucket (or a policy
    // statement that might allow some key) no key could be deleted anyway. Each key
    // is then decided on its own (a policy may allow or deny by prefix).
    let rule = AclRule::Grant(&b.acl, Permission::Write);
    let authz = Authz::new(&b)?;
    if !authz.may_for_some_key(r, "s3:DeleteObject", rule) {
        return Err(S3Error::access_denied());
    }
    let node = r.xml_body(2 * 1024 * 1024).await?;
    let crate::xmlreq::DeleteRequest { quiet, objects } = crate::xmlreq::delete_request(&node)?;
    // Issue every delete at once: the metadata writer commits them in a few group
    // commits instead of one fsync per key.
    let bucket = r.bucket().to_string();
    let by = deleter(r, &b);
    let bypass_governance = crate::objectlock::bypass_governance(r, &b);
    let results = futures::future::join_all(objects.iter().map(|(k, v)| {
        let (st, bucket, key, by) = (st.clone(), bucket.clone(), k.clone(), by.clone());
        let version_id = v.clone();
        let action = if v.is_some() {
            "s3:DeleteObjectVersion"
        } else {
            "s3:DeleteObject"
        };
        let allowed = authz.allowed(r, action, Some(k), None, rule);
        async move {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
            }
            if !allowed {
                return Err(S3Error::access_denied());
            }
            let op = match version_id {
                Some(version_id) => {
                    check_version_id(&version_id)?;
                    MetaOp::DeleteVersion {
                        bucket,
                        key,
                        version_id,
                        bypass_governance,
                    }
                }
                None => MetaOp::DeleteObject {
                    bucket,
                    key,
                    by,
                    unchanged: None,
                },
            };
            match st.meta.apply(op).await {
                Ok(mut out) => {
                    free_blobs(&st, std::mem::take(&mut out.freed_blobs));
                    Ok(Some(out))
                }
                Err(MetaError::NoSuchKey) => Ok(None),
                Err(e) => Err(S3Error::from(e)),
            }
        }
    }))
    .await;
    let mut w = XmlWriter::new();
    w.root("DeleteResult", S3_NS);
    for ((k, asked), res) in objects.into_iter().zip(results) {
        match res {
            Ok(out) if !quiet => {
                w.open("Deleted").elem("Key", &k);
                if let Some(v) = &asked {
                    w.elem("VersionId", v);
                }
                // A marker added (its id) or removed (the id asked for).
                if let Some(out) = out.filter(|o| o.delete_marker) {
                    w.elem("DeleteMarker", "true");
                    if asked.is_none() {
                        if let Some(v) = &out.version_id {
                            w.elem("DeleteMarkerVersionId", v);
                        }
                    }
                }
                w.close();
            }
            Ok(_) => {}
            Err(e) => {
                w.open("Error").elem("Key", &k);
                if let Some(v) = &asked {
                    w.elem("VersionId", v);
                }
                w.elem("Code", e.code).elem("Message", &e.message).close();
            }
        }
    }
    Ok(xml(StatusCode::OK, w.finish()))
}
