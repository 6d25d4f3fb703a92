//! DeleteObject and DeleteObjects (the multi-object delete, `POST /bucket?delete`).
use crate::acl::Permission;
use crate::authz::{self, AclRule, Authz};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, free_blobs, load_bucket, xml, Req, Resp, MAX_KEY_BYTES};
use crate::meta::{MetaError, MetaOp};
use crate::state::State;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

pub async fn delete_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "DeleteObject";
    let b = load_bucket(st, r.bucket())?;
    let key = r.key().to_string();
    authz::check(
        r,
        &b,
        "s3:DeleteObject",
        Some(&key),
        AclRule::Grant(&b.acl, Permission::Write),
    )?;
    let out = st
        .meta
        .apply(MetaOp::DeleteObject {
            bucket: r.bucket().into(),
            key: r.key().into(),
        })
        .await?;
    free_blobs(st, out.freed_blobs);
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn delete_objects(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let b = load_bucket(st, r.bucket())?;
    // Authorized before the body is read: without WRITE on the bucket (or a policy
    // statement that might allow some key) no key could be deleted anyway. Each key
    // is then decided on its own (a policy may allow or deny by prefix).
    let rule = AclRule::Grant(&b.acl, Permission::Write);
    let authz = Authz::new(&b)?;
    if !authz.may_for_some_key(r, "s3:DeleteObject", rule) {
        return Err(S3Error::access_denied());
    }
    let node = r.xml_body(2 * 1024 * 1024).await?;
    let crate::xmlreq::DeleteRequest { quiet, keys } = crate::xmlreq::delete_request(&node)?;
    // Issue every delete at once: the metadata writer commits them in a few group
    // commits instead of one fsync per key.
    let bucket = r.bucket().to_string();
    let results = futures::future::join_all(keys.iter().map(|k| {
        let (st, bucket, k) = (st.clone(), bucket.clone(), k.clone());
        let allowed = authz.allowed(r, "s3:DeleteObject", Some(&k), None, rule);
        async move {
            if k.is_empty() || k.len() > MAX_KEY_BYTES {
                return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
            }
            if !allowed {
                return Err(S3Error::access_denied());
            }
            match st.meta.apply(MetaOp::DeleteObject { bucket, key: k }).await {
                Ok(out) => {
                    free_blobs(&st, out.freed_blobs);
                    Ok(())
                }
                Err(MetaError::NoSuchKey) => Ok(()),
                Err(e) => Err(S3Error::from(e)),
            }
        }
    }))
    .await;
    let mut w = XmlWriter::new();
    w.root("DeleteResult", S3_NS);
    for (k, res) in keys.into_iter().zip(results) {
        match res {
            Ok(()) if !quiet => {
                w.open("Deleted").elem("Key", &k).close();
            }
            Ok(()) => {}
            Err(e) => {
                w.open("Error")
                    .elem("Key", &k)
                    .elem("Code", e.code)
                    .elem("Message", &e.message)
                    .close();
            }
        }
    }
    Ok(xml(StatusCode::OK, w.finish()))
}
