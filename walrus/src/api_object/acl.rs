//! GetObjectAcl and PutObjectAcl.
use crate::acl::Permission;
use crate::authz;
use crate::error::S3Result;
use crate::handler::{acl_from_headers, acl_from_xml, empty, load_bucket, xml, Req, Resp};
use crate::meta::MetaOp;
use crate::state::State;
use http::StatusCode;
use std::sync::Arc;

pub fn get_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectAcl";
    let b = load_bucket(st, r.bucket())?;
    let o = authz::object(
        st,
        r,
        &b,
        r.key(),
        None,
        "s3:GetObjectAcl",
        Permission::ReadAcp,
    )?;
    Ok(xml(StatusCode::OK, o.acl.to_xml()))
}

pub async fn put_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectAcl";
    let b = load_bucket(st, r.bucket())?;
    let o = authz::object(
        st,
        r,
        &b,
        r.key(),
        None,
        "s3:PutObjectAcl",
        Permission::WriteAcp,
    )?;
    let bucket_owner = b.owner.clone();
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
    authz::check_acl_allowed(&b, &acl)?;
    st.meta
        .apply(MetaOp::SetObjectAcl {
            bucket: r.bucket().into(),
            key: r.key().into(),
            acl,
        })
        .await?;
    Ok(empty(StatusCode::OK))
}
