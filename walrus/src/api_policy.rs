//! The bucket policy and public access block operations: Put/Get/DeleteBucketPolicy,
//! GetBucketPolicyStatus, Put/Get/DeletePublicAccessBlock.
//!
//! Who may use the policy operations follows S3: the bucket owner's account always
//! may, even when its own policy denies it (so an owner cannot lock itself out);
//! another account is refused — with 405 MethodNotAllowed when the policy would allow
//! it the action (S3's answer for a permitted caller outside the owner's account),
//! else 403. The public access block and policy status operations are ordinary
//! decisions ([`crate::authz`]): the owner, or whom the policy allows, and an
//! explicit Deny holds for the owner too.
use crate::authz::{check, policy_of, AclRule, Authz, PublicAccessBlock};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, full, load_bucket, xml, Req, Resp};
use crate::meta::{BucketConfig, BucketMeta};
use crate::policy::{Decision, Policy, MAX_POLICY_BYTES};
use crate::state::State;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{HeaderValue, Method, StatusCode};
use std::sync::Arc;

/// Whether a request is one of these operations (by its sub-resource).
pub fn handles(r: &Req) -> bool {
    r.has("policy") || r.has("policyStatus") || r.has("publicAccessBlock")
}

fn malformed_policy(msg: impl Into<String>) -> S3Error {
    S3Error::new("MalformedPolicy", 400, msg)
}

fn no_such_policy(bucket: &str) -> S3Error {
    S3Error::new(
        "NoSuchBucketPolicy",
        404,
        "The bucket policy does not exist",
    )
    .with("BucketName", bucket)
}

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let name = r.bucket().to_string();
    let b = load_bucket(st, &name).await?;
    let m = r.method.clone();
    if r.has("policyStatus") {
        if m != Method::GET {
            return Err(S3Error::method_not_allowed());
        }
        r.op = "GetBucketPolicyStatus";
        check(
            r,
            &b,
            "s3:GetBucketPolicyStatus",
            None,
            AclRule::BucketOwner,
        )?;
        let policy = policy_of(&b)?.ok_or_else(|| no_such_policy(&name))?;
        let mut w = XmlWriter::new();
        w.root("PolicyStatus", S3_NS).elem(
            "IsPublic",
            if policy.is_public() { "true" } else { "false" },
        );
        return Ok(xml(StatusCode::OK, w.finish()));
    }
    if r.has("policy") {
        return match m {
            Method::PUT => put_policy(st, r, &b).await,
            Method::GET => {
                r.op = "GetBucketPolicy";
                owner_only(r, &b, "s3:GetBucketPolicy")?;
                let doc = b
                    .config(BucketConfig::POLICY)
                    .ok_or_else(|| no_such_policy(&name))?;
                let mut resp = full(StatusCode::OK, doc.to_string());
                resp.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                Ok(resp)
            }
            Method::DELETE => {
                r.op = "DeleteBucketPolicy";
                owner_only(r, &b, "s3:DeleteBucketPolicy")?;
                st.set_bucket_config(&name, BucketConfig::POLICY, None)
                    .await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            _ => Err(S3Error::method_not_allowed()),
        };
    }
    match m {
        Method::PUT => {
            r.op = "PutPublicAccessBlock";
            check(
                r,
                &b,
                "s3:PutBucketPublicAccessBlock",
                None,
                AclRule::BucketOwner,
            )?;
            let node = r.xml_body(64 * 1024).await?;
            let pab = crate::xmlreq::public_access_block(&node)?;
            st.set_bucket_config(&name, BucketConfig::PUBLIC_ACCESS_BLOCK, Some(pab.to_xml()))
                .await?;
            Ok(empty(StatusCode::OK))
        }
        Method::GET => {
            r.op = "GetPublicAccessBlock";
            check(
                r,
                &b,
                "s3:GetBucketPublicAccessBlock",
                None,
                AclRule::BucketOwner,
            )?;
            let doc = b.config(BucketConfig::PUBLIC_ACCESS_BLOCK).ok_or_else(|| {
                S3Error::new(
                    "NoSuchPublicAccessBlockConfiguration",
                    404,
                    "The public access block configuration was not found",
                )
                .with("BucketName", &name)
            })?;
            Ok(xml(StatusCode::OK, doc.to_string()))
        }
        Method::DELETE => {
            r.op = "DeletePublicAccessBlock";
            check(
                r,
                &b,
                "s3:PutBucketPublicAccessBlock",
                None,
                AclRule::BucketOwner,
            )?;
            st.set_bucket_config(&name, BucketConfig::PUBLIC_ACCESS_BLOCK, None)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(S3Error::method_not_allowed()),
    }
}

/// The policy operations: the owner's account always; others never (405 when the
/// policy allows them the action, 403 otherwise).
fn owner_only(r: &Req, b: &BucketMeta, action: &str) -> S3Result<()> {
    let authz = Authz::new(b)?;
    if authz.is_bucket_owner(r) {
        return Ok(());
    }
    if r.principal.is_some() && authz.policy_decision(r, action, None) == Decision::Allow {
        return Err(S3Error::method_not_allowed());
    }
    Err(S3Error::access_denied())
}

async fn put_policy(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    r.op = "PutBucketPolicy";
    owner_only(r, b, "s3:PutBucketPolicy")?;
    let too_big = || malformed_policy("Policy exceeds the maximum allowed document size.");
    let declared = |h: &str| {
        r.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let len = declared("x-amz-decoded-content-length").or(declared("content-length"));
    if len.is_some_and(|n| n > MAX_POLICY_BYTES as u64) {
        return Err(too_big());
    }
    let too_large = |e: S3Error| {
        if e.code == "EntityTooLarge" {
            too_big()
        } else {
            e
        }
    };
    let (doc, _) = r
        .body(MAX_POLICY_BYTES as u64)
        .map_err(too_large)?
        .read_all()
        .await
        .map_err(too_large)?;
    let policy = Policy::parse(&doc, &b.name).map_err(|e| malformed_policy(e.0))?;
    if policy.is_public() && PublicAccessBlock::of(b)?.block_public_policy {
        return Err(S3Error::access_denied());
    }
    // Stored as given (bytes, not re-serialised); JSON is UTF-8, which parse checked.
    let text = String::from_utf8(doc)
        .map_err(|_| malformed_policy("This policy contains invalid Json"))?;
    st.set_bucket_config(&b.name, BucketConfig::POLICY, Some(text))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
