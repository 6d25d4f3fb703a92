//! Object tagging: GetObjectTagging answers an empty tag set; setting tags is not
//! implemented.
use crate::acl::Permission;
use crate::error::{S3Error, S3Result};
use crate::handler::{load_object, require, xml, Req, Resp};
use crate::state::State;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

pub fn get_object_tagging(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectTagging";
    let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
    require(&o.acl, r.principal.as_ref(), Permission::Read)?;
    let mut w = XmlWriter::new();
    w.root("Tagging", S3_NS).open("TagSet");
    Ok(xml(StatusCode::OK, w.finish()))
}

/// PutObjectTagging and DeleteObjectTagging.
pub fn put_object_tagging(r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectTagging";
    Err(S3Error::not_implemented("Object tagging"))
}
