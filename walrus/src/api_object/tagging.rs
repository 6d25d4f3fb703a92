//! Object tagging: GetObjectTagging, PutObjectTagging, DeleteObjectTagging, of the
//! current object or of the version `?versionId=` names.
//!
//! Who may: the bucket policy first (`s3:GetObjectTagging`, `s3:PutObjectTagging`,
//! `s3:DeleteObjectTagging`, or their `*VersionTagging` forms with a version id; an
//! explicit Deny refuses even the owner). Without a policy verdict, S3 grants the
//! tagging actions through policies only, never through ACL grants, so they belong to
//! the object's owner and to the bucket's owner; a READ or WRITE grant does not
//! extend to tags. Anyone else gets AccessDenied, and a missing key or version is
//! told only to who may list the bucket (see [`crate::authz::Authz::object_version`]).
use crate::authz::ObjectRule;
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, set_version_header, xml, Req, Resp};
use crate::meta::{MetaOp, ObjectMeta};
use crate::state::State;
use crate::tags::{self, TagTarget, MAX_TAGGING_BODY};
use http::StatusCode;
use std::sync::Arc;

/// The object (or version), if the caller may do `action` (the unversioned name;
/// the `*Version*` one applies with a version id) on its tags.
async fn authorized_object(st: &State, r: &Req, action: &str) -> S3Result<ObjectMeta> {
    let b = load_bucket(st, r.bucket()).await?;
    let version = r.q("versionId");
    let action = match version {
        Some(_) => action.replacen("Object", "ObjectVersion", 1),
        None => action.to_string(),
    };
    crate::authz::Authz::new(&b)?
        .object_version_by(st, r, r.key(), version, &action, ObjectRule::Owners)
        .await
}

/// The answer, with the version id S3 names for a version of a versioned bucket.
fn with_version(mut resp: Resp, o: &ObjectMeta) -> S3Result<Resp> {
    set_version_header(resp.headers_mut(), o.version_id.as_deref())?;
    Ok(resp)
}

pub async fn get_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectTagging";
    let o = authorized_object(st, r, "s3:GetObjectTagging").await?;
    with_version(xml(StatusCode::OK, tags::to_xml(&o.tags)), &o)
}

pub async fn put_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectTagging";
    // Authorized before a byte of the body is read.
    let o = authorized_object(st, r, "s3:PutObjectTagging").await?;
    let node = r.xml_body(MAX_TAGGING_BODY).await?;
    let tags = tags::from_xml(&node, TagTarget::Object)?;
    set_tags(st, r, &o, tags).await?;
    with_version(empty(StatusCode::OK), &o)
}

pub async fn delete_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "DeleteObjectTagging";
    let o = authorized_object(st, r, "s3:DeleteObjectTagging").await?;
    set_tags(st, r, &o, Vec::new()).await?;
    with_version(empty(StatusCode::NO_CONTENT), &o)
}

async fn set_tags(st: &Arc<State>, r: &Req, o: &ObjectMeta, tags: tags::TagSet) -> S3Result<()> {
    st.meta
        .apply(MetaOp::UpdateObject {
            bucket: r.bucket().into(),
            key: r.key().into(),
            // The version authorized (a later write must not receive these tags).
            version_id: r.q("versionId").map(|_| o.version().to_string()),
            // The object authorized: a write meanwhile (even of the same `null`
            // version) is another object.
            unchanged: Some(crate::meta::ObjectStamp::of(o)),
            change: crate::meta::ObjectChange::Tags(tags),
        })
        .await
        .map_err(|e| match e {
            // Deleted since it was authorized: the key's own 404.
            crate::meta::MetaError::NoSuchKey => S3Error::no_such_key(r.key()),
            e => e.into(),
        })?;
    Ok(())
}
