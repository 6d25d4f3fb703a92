//! GetObjectAcl and PutObjectAcl.
use crate::acl::Permission;
use crate::error::S3Result;
use crate::handler::{
    acl_from_headers, acl_from_xml, empty, load_bucket, load_object, require, xml, Req, Resp,
};
use crate::meta::MetaOp;
use crate::state::State;
use http::StatusCode;
use std::sync::Arc;

pub fn get_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectAcl";
    let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
    require(&o.acl, r.principal.as_ref(), Permission::ReadAcp)?;
    Ok(xml(StatusCode::OK, o.acl.to_xml()))
}

pub async fn put_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectAcl";
    load_bucket(st, r.bucket())?;
    let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
    require(&o.acl, r.principal.as_ref(), Permission::WriteAcp)?;
    let bucket_owner = load_bucket(st, r.bucket())?.owner;
    let acl = if r.header("x-amz-acl").is_some()
        || r.headers
            .keys()
            .any(|k| k.as_str().starts_with("x-amz-grant-"))
    {
        acl_from_headers(st, r, o.owner.clone(), Some(&bucket_owner))?
    } else {
        let node = r.xml_body(64 * 1024).await?;
        acl_from_xml(&node, &o.owner)?
    };
    st.meta
        .apply(MetaOp::SetObjectAcl {
            bucket: r.bucket().into(),
            key: r.key().into(),
            acl,
        })
        .await?;
    Ok(empty(StatusCode::OK))
}
