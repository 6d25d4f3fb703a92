//! GetObjectAcl and PutObjectAcl.
use crate::acl::Permission;
use crate::authz;
use crate::error::S3Result;
use crate::handler::{
    acl_from_headers, acl_from_xml, empty, load_bucket, set_version_header, xml, Req, Resp,
};
use crate::meta::MetaOp;
use crate::state::State;
use http::StatusCode;
use std::sync::Arc;

pub async fn get_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectAcl";
    let b = load_bucket(st, r.bucket()).await?;
    let version = r.q("versionId");
    let action = if version.is_some() {
        "s3:GetObjectVersionAcl"
    } else {
        "s3:GetObjectAcl"
    };
    let o = authz::object(st, r, &b, r.key(), version, action, Permission::ReadAcp).await?;
    // With ACLs disabled the stored ACL no longer applies: the bucket owner has full
    // control of every object, which is what S3 shows.
    let acl = if crate::authz::acls_disabled(&b) {
        crate::acl::Acl::private(b.owner.clone())
    } else {
        o.acl
    };
    let mut resp = xml(StatusCode::OK, acl.to_xml());
    set_version_header(resp.headers_mut(), o.version_id.as_deref())?;
    Ok(resp)
}

pub async fn put_object_acl(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObjectAcl";
    let b = load_bucket(st, r.bucket()).await?;
    let version = r.q("versionId");
    let action = if version.is_some() {
        "s3:PutObjectVersionAcl"
    } else {
        "s3:PutObjectAcl"
    };
    let o = authz::object(st, r, &b, r.key(), version, action, Permission::WriteAcp).await?;
    crate::ownership::check_acl_change(&b)?;
    let bucket_owner = b.owner.clone();
    let acl = if r.header("x-amz-acl").is_some()
        || r.headers
            .keys()
            .any(|k| k.as_str().starts_with("x-amz-grant-"))
    {
        acl_from_headers(st, r, o.owner.clone(), Some(&bucket_owner)).await?
    } else {
        let node = r.xml_body(64 * 1024).await?;
        acl_from_xml(st, &node, &o.owner).await?
    };
    authz::check_acl_allowed(&b, &acl)?;
    st.meta
        .apply(MetaOp::UpdateObject {
            bucket: r.bucket().into(),
            key: r.key().into(),
            // The version authorized (a later write keeps its own ACL).
            version_id: r.q("versionId").map(|_| o.version().to_string()),
            // The object authorized: the body came later, and a write meanwhile
            // (even of the same `null` version) is another object.
            unchanged: Some(crate::meta::ObjectStamp::of(&o)),
            change: crate::meta::ObjectChange::Acl(acl),
        })
        .await?;
    let mut resp = empty(StatusCode::OK);
    set_version_header(resp.headers_mut(), o.version_id.as_deref())?;
    Ok(resp)
}
