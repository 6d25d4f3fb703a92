//! Object ownership controls: Put/Get/DeleteBucketOwnershipControls, CreateBucket's
//! `x-amz-object-ownership`, and what the setting does to writes and ACLs.
//!
//! - `ObjectWriter` (the default here, see below): the writer owns what it writes and
//!   ACLs work as always.
//! - `BucketOwnerPreferred`: an object written with the canned ACL
//!   `bucket-owner-full-control` belongs to the bucket's owner.
//! - `BucketOwnerEnforced`: ACLs are off. The bucket owner owns every new object; a
//!   write asking for any ACL but `bucket-owner-full-control`, and every Put*Acl, is
//!   400 `AccessControlListNotSupported`; ACL grants (the bucket's and the objects')
//!   no longer admit anyone: the bucket owner and the bucket policy decide
//!   ([`crate::authz`]). Reading ACLs still works.
//!
//! Choice: a bucket without the setting behaves as `ObjectWriter`, not as S3's
//! present default (`BucketOwnerEnforced`): Walrus users, euca2ools and the cloud's
//! own buckets (images, snapshots) rely on ACL grants. The setting is stored in
//! [`BucketConfig::OWNERSHIP`] as its name.
use crate::acl::{Acl, Grantee, Owner};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp};
use crate::meta::{BucketConfig, BucketMeta};
use crate::state::State;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{Method, StatusCode};
use std::sync::Arc;

/// The canned ACL the bucket-owner settings accept on writes.
pub const BUCKET_OWNER_FULL_CONTROL: &str = "bucket-owner-full-control";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    BucketOwnerEnforced,
    BucketOwnerPreferred,
    ObjectWriter,
}

impl Ownership {
    pub fn name(self) -> &'static str {
        match self {
            Ownership::BucketOwnerEnforced => "BucketOwnerEnforced",
            Ownership::BucketOwnerPreferred => "BucketOwnerPreferred",
            Ownership::ObjectWriter => "ObjectWriter",
        }
    }

    /// From its name, exactly as S3 spells it.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Ownership::BucketOwnerEnforced,
            Ownership::BucketOwnerPreferred,
            Ownership::ObjectWriter,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }

    /// The bucket's setting (`ObjectWriter` when it has none).
    pub fn of(b: &BucketMeta) -> Self {
        b.config(BucketConfig::OWNERSHIP)
            .and_then(Ownership::parse)
            .unwrap_or(Ownership::ObjectWriter)
    }
}

use crate::authz::acls_disabled;

pub fn acl_not_supported() -> S3Error {
    S3Error::new(
        "AccessControlListNotSupported",
        400,
        "The bucket does not allow ACLs",
    )
}

fn invalid_bucket_acl() -> S3Error {
    S3Error::new(
        "InvalidBucketAclWithObjectOwnership",
        400,
        "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
    )
}

/// Put*Acl on a bucket whose ACLs are disabled: refused.
pub fn check_acl_change(b: &BucketMeta) -> S3Result<()> {
    if acls_disabled(b) {
        Err(acl_not_supported())
    } else {
        Ok(())
    }
}

/// Who owns an object `writer` writes into `b`, given the canned ACL the request asks
/// for (`canned`) and whether it sends grant headers; `Some(acl)` when the setting
/// fixes the object's ACL (ACLs disabled: the owner's full control alone).
pub fn new_object_owner(
    b: &BucketMeta,
    writer: Owner,
    canned: Option<&str>,
    grants: bool,
) -> S3Result<(Owner, Option<Acl>)> {
    match Ownership::of(b) {
        Ownership::BucketOwnerEnforced => {
            if grants || canned.is_some_and(|c| c != BUCKET_OWNER_FULL_CONTROL) {
                return Err(acl_not_supported());
            }
            Ok((b.owner.clone(), Some(Acl::private(b.owner.clone()))))
        }
        Ownership::BucketOwnerPreferred if !grants && canned == Some(BUCKET_OWNER_FULL_CONTROL) => {
            Ok((b.owner.clone(), None))
        }
        _ => Ok((writer, None)),
    }
}

/// [`new_object_owner`] for a request whose ACL is in its headers (PutObject,
/// CopyObject, CreateMultipartUpload): the owner, and the ACL to store.
pub async fn owner_and_acl(
    st: &State,
    r: &Req,
    b: &BucketMeta,
    writer: Owner,
) -> S3Result<(Owner, Acl)> {
    let grants = r
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("x-amz-grant-"));
    // Compared as sent: a token is bytes.
    let canned = r
        .headers
        .get("x-amz-acl")
        .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("\u{fffd}"));
    let (owner, fixed) = new_object_owner(b, writer, canned, grants)?;
    let acl = match fixed {
        Some(acl) => acl,
        None => crate::handler::acl_from_headers(st, r, owner.clone(), Some(&b.owner)).await?,
    };
    crate::authz::check_acl_allowed(b, &acl)?;
    Ok((owner, acl))
}

/// Whether `acl` grants anything to anyone but `owner` (refused with
/// `BucketOwnerEnforced`).
fn grants_others(acl: &Acl, owner: &Owner) -> bool {
    acl.grants
        .iter()
        .any(|g| !matches!(&g.grantee, Grantee::User { id, .. } if *id == owner.id))
}

/// CreateBucket's `x-amz-object-ownership`: the setting to store, if any.
pub fn from_create_request(r: &Req, acl: &Acl) -> S3Result<Option<Ownership>> {
    let Some(v) = r.headers.get("x-amz-object-ownership") else {
        return Ok(None);
    };
    let o = std::str::from_utf8(v.as_bytes())
        .ok()
        .and_then(Ownership::parse)
        .ok_or_else(|| {
            S3Error::invalid_argument("Invalid x-amz-object-ownership header")
                .with("ArgumentName", "x-amz-object-ownership")
        })?;
    if o == Ownership::BucketOwnerEnforced && grants_others(acl, &acl.owner) {
        return Err(invalid_bucket_acl());
    }
    Ok(Some(o))
}

/// Put/Get/DeleteBucketOwnershipControls; only the bucket owner (or the policy).
pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let b = crate::handler::load_bucket(st, r.bucket()).await?;
    let get = r.method == Method::GET;
    let action = if get {
        "s3:GetBucketOwnershipControls"
    } else {
        "s3:PutBucketOwnershipControls"
    };
    r.op = match r.method {
        Method::GET => "GetBucketOwnershipControls",
        Method::PUT => "PutBucketOwnershipControls",
        _ => "DeleteBucketOwnershipControls",
    };
    crate::authz::check(r, &b, action, None, crate::authz::AclRule::BucketOwner)?;
    match r.method {
        Method::GET => match b.config(BucketConfig::OWNERSHIP) {
            Some(name) => {
                let mut w = XmlWriter::new();
                w.root("OwnershipControls", S3_NS)
                    .open("Rule")
                    .elem("ObjectOwnership", name)
                    .close();
                Ok(xml(StatusCode::OK, w.finish()))
            }
            None => Err(S3Error::new(
                "OwnershipControlsNotFoundError",
                404,
                "The bucket ownership controls were not found",
            )
            .with("BucketName", &b.name)),
        },
        Method::PUT => {
            let node = r.xml_body(16 * 1024).await?;
            let o = parse_controls(&node)?;
            if o == Ownership::BucketOwnerEnforced && grants_others(&b.acl, &b.owner) {
                return Err(invalid_bucket_acl());
            }
            st.set_bucket_config(&b.name, BucketConfig::OWNERSHIP, Some(o.name().into()))
                .await?;
            Ok(empty(StatusCode::OK))
        }
        _ => {
            st.set_bucket_config(&b.name, BucketConfig::OWNERSHIP, None)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}

/// An `OwnershipControls` document: exactly one rule with one setting.
fn parse_controls(node: &crate::xmlin::Node) -> S3Result<Ownership> {
    if node.name != "OwnershipControls" {
        return Err(S3Error::malformed_xml());
    }
    let rules: Vec<_> = node.children("Rule").collect();
    let [rule] = rules.as_slice() else {
        return Err(S3Error::malformed_xml());
    };
    rule.token_of("ObjectOwnership")
        .and_then(Ownership::parse)
        .ok_or_else(S3Error::malformed_xml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Owner;
    use std::collections::BTreeMap;

    fn bucket(setting: Option<Ownership>) -> BucketMeta {
        let owner = Owner {
            id: "bo".into(),
            display_name: "bo".into(),
        };
        let mut configs = BTreeMap::new();
        if let Some(o) = setting {
            configs.insert(BucketConfig::OWNERSHIP.to_string(), o.name().to_string());
        }
        BucketMeta {
            name: "b".into(),
            owner: owner.clone(),
            created: 0,
            region: "us-east-1".into(),
            acl: Acl::private(owner),
            configs,
            account_block: None,
        }
    }

    fn writer() -> Owner {
        Owner {
            id: "w".into(),
            display_name: "w".into(),
        }
    }

    #[test]
    fn owners_by_setting() {
        let ow = bucket(None);
        assert_eq!(Ownership::of(&ow), Ownership::ObjectWriter);
        let (o, fixed) =
            new_object_owner(&ow, writer(), Some(BUCKET_OWNER_FULL_CONTROL), false).unwrap();
        assert_eq!((o.id.as_str(), fixed.is_none()), ("w", true));

        let pref = bucket(Some(Ownership::BucketOwnerPreferred));
        let (o, _) =
            new_object_owner(&pref, writer(), Some(BUCKET_OWNER_FULL_CONTROL), false).unwrap();
        assert_eq!(o.id, "bo");
        let (o, _) = new_object_owner(&pref, writer(), Some("private"), false).unwrap();
        assert_eq!(o.id, "w");
        let (o, _) = new_object_owner(&pref, writer(), None, false).unwrap();
        assert_eq!(o.id, "w");

        let enf = bucket(Some(Ownership::BucketOwnerEnforced));
        assert!(acls_disabled(&enf));
        let (o, fixed) = new_object_owner(&enf, writer(), None, false).unwrap();
        assert_eq!(o.id, "bo");
        assert!(fixed.is_some_and(|a| a
            .grants
            .iter()
            .all(|g| matches!(&g.grantee, Grantee::User { id, .. } if id == "bo"))));
        for (canned, grants) in [
            (Some("private"), false),
            (None, true),
            (Some("public-read"), false),
        ] {
            assert_eq!(
                new_object_owner(&enf, writer(), canned, grants)
                    .unwrap_err()
                    .code,
                "AccessControlListNotSupported"
            );
        }
        // Tokens are exact.
        assert_eq!(Ownership::parse("bucketownerenforced"), None);
        assert!(
            new_object_owner(&enf, writer(), Some("Bucket-Owner-Full-Control"), false).is_err()
        );
    }

    #[test]
    fn authz_reads_the_same_name() {
        assert!(!acls_disabled(&bucket(Some(
            Ownership::BucketOwnerPreferred
        ))));
        assert!(acls_disabled(&bucket(Some(Ownership::BucketOwnerEnforced))));
    }

    #[test]
    fn controls_documents() {
        let parse = |s: &str| parse_controls(&crate::xmlin::parse(s.as_bytes()).unwrap());
        assert_eq!(
            parse("<OwnershipControls><Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule></OwnershipControls>").unwrap(),
            Ownership::ObjectWriter
        );
        for bad in [
            "<OwnershipControls/>",
            "<OwnershipControls><Rule><ObjectOwnership>Nobody</ObjectOwnership></Rule></OwnershipControls>",
            "<OwnershipControls><Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule><Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule></OwnershipControls>",
            "<Other/>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
