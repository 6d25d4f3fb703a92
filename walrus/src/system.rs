//! The cloud's own buckets and accounts.
//!
//! - System buckets (`euca-snapshots`, `euca-images`) are created at start-up, owned by
//!   the system account, so no other account can take their names first.
//! - Bucket names starting with [`SYSTEM_PREFIX`] are reserved: only the system
//!   account may create new ones (existing buckets are left as they are), and its own
//!   buckets there are the cloud's: not even its keys delete them through S3 (a
//!   snapshot or image bucket deleted while empty would be the first thing the next
//!   snapshot or registration misses).
//! - Read-only accounts (the nodes' key) may only GET and HEAD: they create no bucket
//!   and write nothing, whatever an ACL grants.
use crate::acl::{Acl, Grant, Grantee, Owner, Permission};
use crate::error::{S3Error, S3Result};
use crate::handler::Req;
use crate::meta::{now_millis, BucketMeta, MetaError, MetaOp};
use crate::state::State;
use http::Method;

/// Bucket names with this prefix belong to the cloud.
pub const SYSTEM_PREFIX: &str = "euca-";

/// Refuses any change by a read-only account.
pub(crate) fn check_writable(st: &State, r: &Req) -> S3Result<()> {
    let read_only = r
        .principal
        .as_ref()
        .is_some_and(|p| st.read_only_ids.contains(&p.canonical_id));
    if read_only && !matches!(r.method, Method::GET | Method::HEAD) {
        return Err(S3Error::access_denied());
    }
    Ok(())
}

/// Refuses a new bucket under the reserved prefix to anyone but the system account.
pub(crate) async fn check_bucket_name(st: &State, name: &str, owner: &Owner) -> S3Result<()> {
    if name.starts_with(SYSTEM_PREFIX)
        && owner.id != st.system_id
        && st.meta.bucket(name).await?.is_none()
    {
        return Err(S3Error::new(
            "InvalidBucketName",
            400,
            format!("Bucket names starting with {SYSTEM_PREFIX} are reserved for the cloud."),
        )
        .with("BucketName", name));
    }
    Ok(())
}

/// Refuses to delete one of the cloud's own buckets (the system account's, under
/// [`SYSTEM_PREFIX`]), whoever asks.
pub(crate) fn check_deletable(st: &State, b: &BucketMeta) -> S3Result<()> {
    if b.name.starts_with(SYSTEM_PREFIX) && b.owner.id == st.system_id {
        return Err(S3Error::new(
            "AccessDenied",
            403,
            format!(
                "{} is one of the cloud's own buckets and cannot be deleted.",
                b.name
            ),
        ));
    }
    Ok(())
}

/// Makes sure the system bucket `name` exists, owned by the system account, with
/// READ (list) granted to `readers` (canonical ids) and nothing else. An existing
/// bucket of the system account gets that ACL back; an empty bucket another
/// account created first is taken back. A non-empty one is left alone and
/// reported: the service that needs it will fail until an operator moves it.
pub(crate) async fn ensure_system_bucket(
    st: &State,
    name: &str,
    readers: &[String],
) -> Result<(), MetaError> {
    let display_name = st.system_name.clone();
    let owner = Owner {
        id: st.system_id.clone(),
        display_name,
    };
    let mut acl = Acl::private(owner.clone());
    acl.grants.extend(readers.iter().map(|id| Grant {
        grantee: Grantee::User {
            id: id.clone(),
            display_name: None,
        },
        permission: Permission::Read,
    }));
    for _ in 0..3 {
        match st.meta.bucket(name).await? {
            Some(b) if b.owner.id == owner.id => {
                if b.acl != acl {
                    st.meta
                        .apply(MetaOp::SetBucketAcl {
                            name: name.into(),
                            acl,
                        })
                        .await?;
                }
                return Ok(());
            }
            Some(b) => match st
                .meta
                .apply(MetaOp::DeleteBucket { name: name.into() })
                .await
            {
                Ok(_) => {
                    tracing::warn!(bucket = name, squatter = %b.owner.display_name, "took back an empty system bucket another account had created")
                }
                Err(MetaError::BucketNotEmpty) => {
                    tracing::error!(bucket = name, owner = %b.owner.display_name, "a system bucket belongs to another account and is not empty; the service using it will fail until it is emptied and removed");
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            None => {
                let meta = BucketMeta {
                    name: name.into(),
                    owner: owner.clone(),
                    created: now_millis(),
                    region: st.cfg.region.clone(),
                    acl: acl.clone(),
                    configs: Default::default(),
                    account_block: None,
                };
                match st.meta.apply(MetaOp::CreateBucket(meta)).await {
                    Ok(_) => return Ok(()),
                    // Created meanwhile: look again.
                    Err(MetaError::BucketExists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
