//! CopyObject, and the copy source (`x-amz-copy-source`) UploadPartCopy shares.
use crate::acl::Permission;
use crate::api_object::conditions::check_conditions;
use crate::api_object::put::{commit_object, content_from_request};
use crate::authz::{self, AclRule};
use crate::error::{S3Error, S3Result};
use crate::handler::{acl_from_headers, free_blobs, load_bucket, xml, Req, Resp, MAX_KEY_BYTES};
use crate::meta::{millis_to_time, now_millis, BlobRef, ObjectData, ObjectMeta};
use crate::state::State;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

/// Parses `x-amz-copy-source`: `[/]bucket/key[?versionId=…]`, URL-encoded.
pub fn parse_copy_source(v: &str) -> S3Result<(String, String)> {
    let v = v.split_once('?').map(|(p, _)| p).unwrap_or(v);
    let decoded = String::from_utf8(euca_aws::encoding::uri_decode(v))
        .map_err(|_| S3Error::invalid_argument("Invalid copy source encoding"))?;
    let d = decoded.strip_prefix('/').unwrap_or(&decoded);
    let (b, k) = d.split_once('/').ok_or_else(|| {
        S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
        .with("ArgumentName", "x-amz-copy-source")
    })?;
    if k.is_empty() || k.len() > MAX_KEY_BYTES {
        return Err(S3Error::invalid_argument("Invalid copy source key"));
    }
    Ok((b.to_string(), k.to_string()))
}

/// Loads and authorizes the copy source, and checks the copy-source conditions.
pub fn copy_source(st: &State, r: &Req) -> S3Result<(String, String, ObjectMeta)> {
    let (sb, sk) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    let src_bucket = load_bucket(st, &sb)?;
    let src = authz::object(st, r, &src_bucket, &sk, "s3:GetObject", Permission::Read)?;
    check_conditions(&r.headers, &src, true)?;
    Ok((sb, sk, src))
}

pub async fn copy_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CopyObject";
    let b = load_bucket(st, r.bucket())?;
    let key = r.key().to_string();
    authz::check(
        r,
        &b,
        "s3:PutObject",
        Some(&key),
        AclRule::Grant(&b.acl, Permission::Write),
    )?;
    let (sb, sk, src) = copy_source(st, r)?;
    let replace = match r
        .header("x-amz-metadata-directive")
        .map(|s| s.trim().to_ascii_uppercase())
    {
        None => false,
        Some(d) if d == "COPY" => false,
        Some(d) if d == "REPLACE" => true,
        Some(_) => {
            return Err(S3Error::invalid_argument("Unknown metadata directive.")
                .with("ArgumentName", "x-amz-metadata-directive"))
        }
    };
    if sb == r.bucket() && sk == r.key() && !replace {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let owner = r.owner()?;
    let acl = acl_from_headers(st, r, owner.clone(), Some(&b.owner))?;
    authz::check_acl_allowed(&b, &acl)?;
    let (headers, user_meta) = if replace {
        content_from_request(r)?
    } else {
        (src.headers.clone(), src.user_meta.clone())
    };
    let data = match &src.data {
        ObjectData::Inline(d) => ObjectData::Inline(d.clone()),
        ObjectData::Blobs(bs) => {
            let mut out = Vec::new();
            for b in bs {
                match st.blobs.copy(&b.id).await {
                    Ok(id) => out.push(BlobRef { id, size: b.size }),
                    Err(e) => {
                        free_blobs(st, out);
                        return Err(e.into());
                    }
                }
            }
            ObjectData::Blobs(out)
        }
    };
    let meta = ObjectMeta {
        size: src.size,
        etag: src.etag.clone(),
        last_modified: now_millis(),
        owner,
        headers,
        user_meta,
        checksums: src.checksums.clone(),
        acl,
        data: data.clone(),
        part_sizes: src.part_sizes.clone(),
        checksum_type: src.checksum_type.clone(),
        part_checksums: src.part_checksums.clone(),
        tags: src.tags.clone(),
    };
    let lm = meta.last_modified;
    commit_object(st, r, meta).await?;
    let mut w = XmlWriter::new();
    w.root("CopyObjectResult", S3_NS)
        .elem("LastModified", format_iso8601(millis_to_time(lm)))
        .elem("ETag", format!("\"{}\"", src.etag));
    Ok(xml(StatusCode::OK, w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn copy_sources() {
        assert_eq!(
            parse_copy_source("/b/a%20b?versionId=null").unwrap(),
            ("b".into(), "a b".into())
        );
        assert!(parse_copy_source("nokey").is_err());
    }
}
