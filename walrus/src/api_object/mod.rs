//! Object operations, one file per operation: GetObject/HeadObject ([`get`]),
//! PutObject ([`put`]), CopyObject ([`copy`]), DeleteObject and DeleteObjects
//! ([`delete`]), object ACLs ([`acl`]) and tagging ([`tagging`]); GetObjectAttributes
//! is with the other checksum code in [`crate::checksums`]. [`dispatch`] picks one.
//! The pieces UploadPart and UploadPartCopy share (storing a body, the copy source)
//! are in [`put`] and [`copy`]; conditional headers are in [`conditions`] (reads and
//! copy sources) and [`write_cond`] (conditional writes).
pub mod acl;
pub mod conditions;
pub mod copy;
pub mod delete;
pub mod get;
pub mod put;
pub mod tagging;
pub mod write_cond;

use crate::error::{S3Error, S3Result};
use crate::handler::{Req, Resp};
use crate::state::State;
use http::Method;
use std::sync::Arc;

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    match r.method.clone() {
        Method::GET if r.has("acl") => acl::get_object_acl(st, r).await,
        Method::PUT if r.has("acl") => acl::put_object_acl(st, r).await,
        Method::GET if r.has("tagging") => tagging::get_object_tagging(st, r).await,
        Method::PUT if r.has("tagging") => tagging::put_object_tagging(st, r).await,
        Method::DELETE if r.has("tagging") => tagging::delete_object_tagging(st, r).await,
        Method::GET if r.has("attributes") => crate::checksums::get_object_attributes(st, r).await,
        Method::GET if r.has("retention") || r.has("legal-hold") => {
            crate::objectlock::get_object_lock(st, r).await
        }
        Method::PUT if r.has("retention") || r.has("legal-hold") => {
            let b = crate::handler::load_bucket(st, r.bucket()).await?;
            let action = if r.has("retention") {
                "s3:PutObjectRetention"
            } else {
                "s3:PutObjectLegalHold"
            };
            let key = r.key().to_string();
            crate::authz::check(
                r,
                &b,
                action,
                Some(&key),
                crate::authz::AclRule::BucketOwner,
            )?;
            crate::objectlock::put_object_lock(st, r, &b).await
        }
        Method::GET | Method::HEAD => get::get_object(st, r).await,
        Method::PUT if r.headers.contains_key("x-amz-copy-source") => {
            copy::copy_object(st, r).await
        }
        Method::PUT => put::put_object(st, r).await,
        Method::DELETE => delete::delete_object(st, r).await,
        Method::POST => Err(S3Error::not_implemented("POST on an object")),
        _ => Err(S3Error::method_not_allowed()),
    }
}
