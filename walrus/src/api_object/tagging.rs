//! Object tagging: GetObjectTagging, PutObjectTagging, DeleteObjectTagging.
//!
//! Who may: S3 grants the tagging actions through policies only, never through ACL
//! grants, so with ACLs alone they belong to the object's owner and to the bucket's
//! owner (who owns every object under S3's default "bucket owner enforced"
//! ownership). Walrus allows exactly those two, for reading tags as for changing them;
//! a READ or WRITE grant does not extend to tags. Anyone else gets AccessDenied, and a
//! missing key is NoSuchKey only for who may list the bucket (see
//! [`crate::handler::load_object`]).
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, load_object, xml, Req, Resp};
use crate::meta::{MetaOp, ObjectMeta};
use crate::state::State;
use crate::tags::{self, TagTarget, MAX_TAGGING_BODY};
use euca_aws::Principal;
use http::StatusCode;
use std::sync::Arc;

/// Whether `who` may read or change the tags of `o` in `bucket`: its owner or the
/// bucket's.
pub fn may_tag(
    st: &State,
    bucket: &str,
    o: &ObjectMeta,
    who: Option<&Principal>,
) -> S3Result<bool> {
    let Some(me) = who.map(|p| p.canonical_id.as_str()) else {
        return Ok(false);
    };
    Ok(o.owner.id == me || load_bucket(st, bucket)?.owner.id == me)
}

/// The object, if the caller may read or change its tags.
fn authorized_object(st: &State, r: &Req) -> S3Result<ObjectMeta> {
    let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
    if may_tag(st, r.bucket(), &o, r.principal.as_ref())? {
        Ok(o)
    } else {
        Err(S3Error::access_denied())
    }
}

pub fn get_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectTagging";
    let o = authorized_object(st, r)?;
    Ok(xml(StatusCode::OK, tags::to_xml(&o.tags)))
}

pub async fn put_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectTagging";
    // Authorized before a byte of the body is read.
    authorized_object(st, r)?;
    let node = r.xml_body(MAX_TAGGING_BODY).await?;
    let tags = tags::from_xml(&node, TagTarget::Object)?;
    set_tags(st, r, tags).await?;
    Ok(empty(StatusCode::OK))
}

pub async fn delete_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "DeleteObjectTagging";
    authorized_object(st, r)?;
    set_tags(st, r, Vec::new()).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn set_tags(st: &Arc<State>, r: &Req, tags: tags::TagSet) -> S3Result<()> {
    st.meta
        .apply(MetaOp::SetObjectTags {
            bucket: r.bucket().into(),
            key: r.key().into(),
            tags,
        })
        .await
        .map_err(|e| match e {
            // Deleted since it was authorized: the key's own 404.
            crate::meta::MetaError::NoSuchKey => S3Error::no_such_key(r.key()),
            e => e.into(),
        })?;
    Ok(())
}
