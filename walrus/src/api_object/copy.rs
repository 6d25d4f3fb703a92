//! CopyObject, and the copy source (`x-amz-copy-source`) UploadPartCopy shares.
use crate::acl::Permission;
use crate::api_object::conditions::check_conditions;
use crate::api_object::put::{commit_object, content_from_request};
use crate::api_object::tagging::may_tag;
use crate::api_object::write_cond;
use crate::authz;
use crate::error::{S3Error, S3Result};
use crate::handler::{
    free_blobs, load_bucket, set_header, set_version_header, xml, Req, Resp, MAX_KEY_BYTES,
};
use crate::meta::{millis_to_time, now_millis, BlobRef, ObjectData, ObjectMeta};
use crate::state::State;
use crate::tags::TagSet;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

/// Parses `x-amz-copy-source`: `[/]bucket/key[?versionId=…]`, URL-encoded:
/// (bucket, key, version id).
pub fn parse_copy_source(v: &str) -> S3Result<(String, String, Option<String>)> {
    let (v, version) = match v.split_once('?') {
        Some((p, q)) => {
            let version = euca_aws::encoding::parse_query(q)
                .into_iter()
                .find(|(k, _)| k == "versionId")
                .map(|(_, v)| v);
            (p, version)
        }
        None => (v, None),
    };
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
    Ok((b.to_string(), k.to_string(), version))
}

/// Loads and authorizes the copy source, and checks the copy-source conditions:
/// (bucket, key, the object, whether a version was named).
pub fn copy_source(st: &State, r: &Req) -> S3Result<(String, String, ObjectMeta, bool)> {
    let (sb, sk, version) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    let src_bucket = load_bucket(st, &sb)?;
    let action = if version.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    let src = authz::object(
        st,
        r,
        &src_bucket,
        &sk,
        version.as_deref(),
        action,
        Permission::Read,
    )?;
    check_conditions(&r.headers, &src, true)?;
    Ok((sb, sk, src, version.is_some()))
}

/// The source's tags, for a copy that keeps them. Copying them is reading them: as in
/// S3, that needs the right to read the source's tags (its owner or its bucket's), so
/// a READ grant on a tagged object does not hand its tags to whoever copies it.
fn copied_tags(st: &State, r: &Req, src_bucket: &str, src: &ObjectMeta) -> S3Result<TagSet> {
    if src.tags.is_empty() || may_tag(st, src_bucket, src, r.principal.as_ref())? {
        Ok(src.tags.clone())
    } else {
        Err(S3Error::access_denied())
    }
}

pub async fn copy_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CopyObject";
    let b = load_bucket(st, r.bucket())?;
    authz::check_put(r, &b)?;
    let (sb, sk, src, named_version) = copy_source(st, r)?;
    let cond = write_cond::from_headers(&r.headers)?;
    write_cond::precheck(st, r.bucket(), r.key(), cond.as_ref())?;
    // The directives' tokens as given: S3 takes exactly `COPY` or `REPLACE`.
    let tags = match r
        .headers
        .get("x-amz-tagging-directive")
        .map(|v| v.as_bytes())
    {
        None | Some(b"COPY") => copied_tags(st, r, &sb, &src)?,
        Some(b"REPLACE") => crate::tags::from_request_header(&r.headers)?,
        Some(_) => {
            return Err(S3Error::invalid_argument("Unknown tagging directive.")
                .with("ArgumentName", "x-amz-tagging-directive"))
        }
    };
    let replace = match r
        .headers
        .get("x-amz-metadata-directive")
        .map(|v| v.as_bytes())
    {
        None | Some(b"COPY") => false,
        Some(b"REPLACE") => true,
        Some(_) => {
            return Err(S3Error::invalid_argument("Unknown metadata directive.")
                .with("ArgumentName", "x-amz-metadata-directive"))
        }
    };
    // Copying a named (older) version onto its key is how one restores it.
    if sb == r.bucket() && sk == r.key() && !replace && !named_version {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let (owner, acl) = crate::ownership::owner_and_acl(st, r, &b, r.owner()?)?;
    // The source's lock is not copied: the copy gets what this request and the
    // destination bucket say.
    let (retention, legal_hold) = crate::objectlock::for_new_object(r, &b)?;
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
        tags,
        version_id: None,
        retention,
        legal_hold,
    };
    let lm = meta.last_modified;
    let expiration = crate::lifecycle::expiration_header(st, &b, r.key(), &meta);
    let version = commit_object(st, r, meta, cond).await?;
    let mut w = XmlWriter::new();
    w.root("CopyObjectResult", S3_NS)
        .elem("LastModified", format_iso8601(millis_to_time(lm)))
        .elem("ETag", format!("\"{}\"", src.etag));
    let mut resp = xml(StatusCode::OK, w.finish());
    set_version_header(resp.headers_mut(), version.as_deref())?;
    if let Some(v) = expiration {
        set_header(resp.headers_mut(), "x-amz-expiration", &v)?;
    }
    if let Some(v) = &src.version_id {
        set_header(resp.headers_mut(), "x-amz-copy-source-version-id", v)?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn copy_sources() {
        assert_eq!(
            parse_copy_source("/b/a%20b?versionId=null").unwrap(),
            ("b".into(), "a b".into(), Some("null".into()))
        );
        assert!(parse_copy_source("nokey").is_err());
    }
}
