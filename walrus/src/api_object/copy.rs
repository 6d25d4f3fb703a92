//! CopyObject, and the copy source (`x-amz-copy-source`) UploadPartCopy shares.
use crate::acl::Permission;
use crate::api_object::conditions::check_conditions;
use crate::api_object::put::{commit_object, content_from_request};
use crate::api_object::write_cond;
use crate::authz;
use crate::error::{S3Error, S3Result};
use crate::handler::{
    free_blobs, load_bucket, set_header, set_written_version_header, xml, Req, Resp, MAX_KEY_BYTES,
};
use crate::meta::{millis_to_time, now_millis, BlobRef, ObjectData, ObjectMeta};
use crate::sse::{Ctr, DataKey, Encryption};
use crate::state::State;
use crate::tags::TagSet;
use bytes::Bytes;
use euca_aws::checksum::ChecksumAlgorithm;
use euca_aws::hash::Md5;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use futures::StreamExt;
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
pub async fn copy_source(st: &State, r: &Req) -> S3Result<(String, String, ObjectMeta, bool)> {
    let (sb, sk, version) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    let src_bucket = load_bucket(st, &sb).await?;
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
    )
    .await?;
    check_conditions(&r.headers, &src, true)?;
    Ok((sb, sk, src, version.is_some()))
}

/// The source's tags, for a copy that keeps them. Copying them is reading them: as in
/// S3, that needs `s3:GetObject[Version]Tagging` on the source (its bucket's policy,
/// else its owner or its bucket's), so a READ grant on a tagged object does not hand
/// its tags to whoever copies it.
async fn copied_tags(
    st: &State,
    r: &Req,
    (src_bucket, src_key): (&str, &str),
    src: &ObjectMeta,
    named_version: bool,
) -> S3Result<TagSet> {
    if src.tags.is_empty() {
        return Ok(TagSet::new());
    }
    // Reading the source's tags, under the source bucket's policy (a Deny there
    // holds for copies too) and, without one, for the object's or bucket's owner.
    let action = if named_version {
        "s3:GetObjectVersionTagging"
    } else {
        "s3:GetObjectTagging"
    };
    let b = load_bucket(st, src_bucket).await?;
    authz::Authz::new(&b)?.check(
        r,
        action,
        Some(src_key),
        Some(&src.tags),
        authz::AclRule::ObjectOrBucketOwner(&src.owner),
    )?;
    Ok(src.tags.clone())
}

pub async fn copy_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CopyObject";
    let b = load_bucket(st, r.bucket()).await?;
    authz::check_put(r, &b)?;
    let (sb, sk, src, named_version) = copy_source(st, r).await?;
    let cond = write_cond::from_headers(&r.headers)?;
    write_cond::precheck(st, r.bucket(), r.key(), cond.as_ref()).await?;
    // The directives' tokens as given: S3 takes exactly `COPY` or `REPLACE`.
    let tags = match r
        .headers
        .get("x-amz-tagging-directive")
        .map(|v| v.as_bytes())
    {
        None | Some(b"COPY") => copied_tags(st, r, (&sb, &sk), &src, named_version).await?,
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
    let src_enc = crate::sse::for_read(st, r, src.sse.as_ref(), true).await?;
    // Copying a named (older) version onto its key is how one restores it; a copy
    // onto itself may also just change the encryption.
    if sb == r.bucket()
        && sk == r.key()
        && !replace
        && !named_version
        && !crate::sse::explicitly_requested(r)
    {
        return Err(S3Error::invalid_request(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let (owner, acl) = crate::ownership::owner_and_acl(st, r, &b, r.owner()?).await?;
    // The source's lock is not copied: the copy gets what this request and the
    // destination bucket say.
    let (retention, legal_hold) = crate::objectlock::for_new_object(r, &b)?;
    let (headers, user_meta) = if replace {
        content_from_request(r)?
    } else {
        (src.headers.clone(), src.user_meta.clone())
    };
    let dst_enc = crate::sse::for_write(st, r, &b).await?;
    let (data, etag) = match &src.data {
        // Encryption changes (to, from or between keys): the bytes are rewritten.
        _ if src_enc.is_some() || dst_enc.is_some() => {
            recrypt(st, &src, src_enc.as_ref().map(|e| &e.key), dst_enc.as_ref()).await?
        }
        ObjectData::Inline(d) => (ObjectData::Inline(d.clone()), src.etag.clone()),
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
            (ObjectData::Blobs(out), src.etag.clone())
        }
    };
    let meta = ObjectMeta {
        size: src.size,
        etag: etag.clone(),
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
        sse: dst_enc.as_ref().map(|e| e.sse.clone()),
    };
    let lm = meta.last_modified;
    let expiration = crate::lifecycle::expiration_header(st, &b, r.key(), &meta);
    let version = commit_object(st, r, meta, cond).await?;
    let mut w = XmlWriter::new();
    w.root("CopyObjectResult", S3_NS)
        .elem("LastModified", format_iso8601(millis_to_time(lm)))
        .elem("ETag", format!("\"{etag}\""));
    let mut resp = xml(StatusCode::OK, w.finish());
    set_written_version_header(resp.headers_mut(), version.as_deref())?;
    if let Some(e) = &dst_enc {
        e.set_headers(resp.headers_mut())?;
    }
    if let Some(v) = expiration {
        set_header(resp.headers_mut(), "x-amz-expiration", &v)?;
    }
    if let Some(v) = &src.version_id {
        set_header(resp.headers_mut(), "x-amz-copy-source-version-id", v)?;
    }
    Ok(resp)
}

/// Copies a byte range of an object into a new blob, hashing the plaintext on the way:
/// decrypted with `src_key` if the source is encrypted, encrypted with `dst_key` if
/// the copy is to be. Returns the blob, the MD5 and the `alg` checksum of the bytes.
pub async fn copy_range(
    st: &Arc<State>,
    src: &ObjectMeta,
    src_key: Option<&DataKey>,
    range: std::ops::Range<u64>,
    alg: Option<ChecksumAlgorithm>,
    dst_key: Option<&DataKey>,
) -> S3Result<(BlobRef, [u8; 16], Option<(String, String)>)> {
    let mut md5 = Md5::new();
    let mut sum = alg.map(|a| a.hasher());
    let mut w = crate::sse_keys::create_blob(&st.blobs, dst_key).await?;
    let mut write = |chunk: Bytes, md5: &mut Md5| -> S3Result<Bytes> {
        md5.update(&chunk);
        if let Some(h) = &mut sum {
            h.update(&chunk);
        }
        Ok(chunk)
    };
    match &src.data {
        // Encrypted objects are never inline (but for the empty one).
        ObjectData::Inline(d) => {
            let c = write(
                Bytes::copy_from_slice(&d[range.start as usize..range.end as usize]),
                &mut md5,
            )?;
            w.write(c).await?;
        }
        ObjectData::Blobs(blobs) => {
            for (b, part) in BlobRef::slices(blobs, range) {
                let decrypt = Ctr::transform(src_key, &b.id, part.start)?;
                let mut s = st
                    .blobs
                    .read_transformed(&b.id, Some(part), decrypt)
                    .await?;
                while let Some(c) = s.next().await {
                    let c = write(c?, &mut md5)?;
                    w.write(c).await?;
                }
            }
        }
    }
    let size = w.size();
    let id = w.finish().await?;
    let sum = alg
        .zip(sum)
        .map(|(a, h)| (a.name().to_string(), h.finish_base64()));
    Ok((BlobRef { id, size }, md5.finalize(), sum))
}

/// A copy of `src`'s bytes that changes their encryption (from `src_key` to
/// `dst`): a new blob per source blob (so parts stay parts), re-encrypted as they
/// stream. Returns the data and the ETag the copy gets.
async fn recrypt(
    st: &Arc<State>,
    src: &ObjectMeta,
    src_key: Option<&DataKey>,
    dst: Option<&Encryption>,
) -> S3Result<(ObjectData, String)> {
    let mut segments = Vec::new();
    let mut offset = 0;
    for size in src.data.blobs().iter().map(|b| b.size) {
        segments.push(offset..offset + size);
        offset += size;
    }
    if segments.is_empty() && src.size > 0 {
        segments.push(0..src.size); // inline
    }
    let mut blobs = Vec::new();
    let mut md5s = Vec::new();
    for seg in segments {
        match copy_range(st, src, src_key, seg, None, dst.map(|e| &e.key)).await {
            Ok((b, md5, _)) => {
                blobs.push(b);
                md5s.push(md5);
            }
            Err(e) => {
                free_blobs(st, blobs);
                return Err(e);
            }
        }
    }
    let etag_of = |md5: &[u8; 16]| match dst {
        Some(e) => e.etag(md5),
        None => hex::encode(md5),
    };
    let etag = (|| {
        if src.part_sizes.is_empty() {
            let empty: [u8; 16] = Md5::digest(b"");
            return Ok(etag_of(md5s.first().unwrap_or(&empty)));
        }
        // A multipart object keeps its form: the MD5 of its parts' ETags.
        let mut all = Md5::new();
        for m in &md5s {
            all.update(hex::decode(etag_of(m)).map_err(S3Error::internal)?);
        }
        Ok(format!("{}-{}", hex::encode(all.finalize()), md5s.len()))
    })();
    let etag = match etag {
        Ok(e) => e,
        Err(e) => {
            free_blobs(st, blobs);
            return Err(e);
        }
    };
    let data = if blobs.is_empty() {
        ObjectData::Inline(Vec::new())
    } else {
        ObjectData::Blobs(blobs)
    };
    Ok((data, etag))
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
