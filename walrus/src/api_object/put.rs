//! PutObject, and storing a verified body (inline or as a blob), which UploadPart
//! shares.
use crate::api_object::write_cond;
use crate::authz;
use crate::body::{BodySummary, VerifiedBody};
use crate::error::{S3Error, S3Result};
use crate::handler::{
    empty, free_blobs, load_bucket, set_header, set_written_version_header, Req, Resp,
};
use crate::meta::{
    now_millis, BlobRef, ContentHeaders, MetaOp, ObjectData, ObjectMeta, WriteCondition,
};
use crate::sse::DataKey;
use crate::state::State;
use bytes::Bytes;
use http::StatusCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Standard content headers and `x-amz-meta-*` from a request.
pub fn content_from_request(r: &Req) -> S3Result<(ContentHeaders, Vec<(String, String)>)> {
    let g = |n: &str| r.header(n).map(|s| s.to_string());
    let encoding = r.header("content-encoding").and_then(|v| {
        // aws-chunked is transfer framing, not a property of the object.
        let rest: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|e| !e.eq_ignore_ascii_case("aws-chunked") && !e.is_empty())
            .collect();
        (!rest.is_empty()).then(|| rest.join(", "))
    });
    let headers = ContentHeaders {
        content_type: g("content-type"),
        content_encoding: encoding,
        content_disposition: g("content-disposition"),
        content_language: g("content-language"),
        cache_control: g("cache-control"),
        expires: g("expires"),
        website_redirect: g("x-amz-website-redirect-location"),
    };
    let mut meta = Vec::new();
    let mut total = 0;
    for (k, v) in r.headers.iter() {
        if let Some(name) = k.as_str().strip_prefix("x-amz-meta-") {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            total += name.len() + v.len();
            meta.push((name.to_string(), v));
        }
    }
    if total > 2048 {
        return Err(S3Error::new(
            "MetadataTooLarge",
            400,
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    meta.sort();
    Ok((headers, meta))
}

/// Where a body ended up.
pub enum Stored {
    Inline(Vec<u8>),
    Blob(BlobRef),
}

/// Reads a verified body into the store: small bodies stay in memory to be inlined in
/// the metadata record, larger ones stream into a new blob. Nothing is visible until
/// the caller commits metadata; on error the blob is discarded. With `key`, the bytes
/// are encrypted as they stream (AES-CTR under the blob's IV) and never inlined.
pub async fn store_body(
    st: &Arc<State>,
    mut body: VerifiedBody,
    inline_max: usize,
    key: Option<&DataKey>,
) -> S3Result<(Stored, BodySummary)> {
    let inline_max = if key.is_some() { 0 } else { inline_max };
    let mut head: Vec<u8> = Vec::new();
    let mut writer = None;
    loop {
        let chunk = match body.next().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                if let Some(w) = writer {
                    crate::blob::BlobWriter::abort(w).await;
                }
                return Err(e);
            }
        };
        st.metrics
            .bytes_in
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        match writer.as_mut() {
            None if head.len() + chunk.len() <= inline_max => head.extend_from_slice(&chunk),
            None => {
                // Encrypted as written; nothing is inlined then (`head` is empty).
                let mut w = crate::sse_keys::create_blob(&st.blobs, key).await?;
                if !head.is_empty() {
                    w.write(Bytes::from(std::mem::take(&mut head))).await?;
                }
                w.write(chunk).await?;
                writer = Some(w);
            }
            Some(w) => {
                if let Err(e) = w.write(chunk).await {
                    if let Some(w) = writer {
                        w.abort().await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    let summary = body
        .summary()
        .ok_or_else(|| S3Error::internal("body summary missing"))?;
    let stored = match writer {
        None => Stored::Inline(head),
        Some(w) => {
            let size = w.size();
            let id = w.finish().await?;
            Stored::Blob(BlobRef { id, size })
        }
    };
    Ok((stored, summary))
}

pub async fn put_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObject";
    let b = load_bucket(st, r.bucket()).await?;
    authz::check_put(r, &b)?;
    if !r.headers.contains_key("content-length") {
        return Err(S3Error::new(
            "MissingContentLength",
            411,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    let writer = r
        .principal
        .as_ref()
        .map(crate::acl::Owner::of)
        .unwrap_or_else(|| b.owner.clone());
    let (owner, acl) = crate::ownership::owner_and_acl(st, r, &b, writer).await?;
    let (headers, user_meta) = content_from_request(r)?;
    let tags = crate::tags::from_request_header(&r.headers)?;
    let (retention, legal_hold) = crate::objectlock::for_new_object(r, &b)?;
    // Refuse a write whose condition already fails before streaming its body.
    let cond = write_cond::from_headers(&r.headers)?;
    write_cond::precheck(st, r.bucket(), r.key(), cond.as_ref()).await?;
    let enc = crate::sse::for_write(st, r, &b).await?;
    let mut body = r.body(st.cfg.max_put_bytes)?;
    // S3's default: an object uploaded without a checksum gets a CRC64NVME.
    body.compute_unless_declared(crate::checksums::DEFAULT_ALGORITHM);
    let (stored, summary) = store_body(
        st,
        body,
        st.cfg.inline_max_bytes,
        enc.as_ref().map(|e| &e.key),
    )
    .await?;
    let data = match stored {
        Stored::Inline(d) => ObjectData::Inline(d),
        Stored::Blob(b) => ObjectData::Blobs(vec![b]),
    };
    let checksums: Vec<(String, String)> = summary
        .checksum
        .iter()
        .map(|(a, v)| (a.name().to_string(), v.clone()))
        .collect();
    let meta = ObjectMeta {
        size: summary.size,
        etag: match &enc {
            Some(e) => e.etag(&summary.md5),
            None => hex::encode(summary.md5),
        },
        last_modified: now_millis(),
        owner,
        headers,
        user_meta,
        checksum_type: (!checksums.is_empty()).then(|| "FULL_OBJECT".to_string()),
        checksums: checksums.clone(),
        acl,
        data: data.clone(),
        part_sizes: Vec::new(),
        part_checksums: Vec::new(),
        tags,
        version_id: None,
        retention,
        legal_hold,
        sse: enc.as_ref().map(|e| e.sse.clone()),
    };
    let etag = meta.etag.clone();
    let expiration = crate::lifecycle::expiration_header(st, &b, r.key(), &meta);
    let version = commit_object(st, r, meta, cond).await?;
    let mut resp = empty(StatusCode::OK);
    if let Some(v) = expiration {
        set_header(resp.headers_mut(), "x-amz-expiration", &v)?;
    }
    set_header(resp.headers_mut(), "etag", &format!("\"{etag}\""))?;
    set_written_version_header(resp.headers_mut(), version.as_deref())?;
    if let Some(e) = &enc {
        e.set_headers(resp.headers_mut())?;
    }
    for (a, v) in checksums {
        set_header(
            resp.headers_mut(),
            &format!("x-amz-checksum-{}", a.to_ascii_lowercase()),
            &v,
        )?;
    }
    Ok(resp)
}

/// Makes `meta` the object at the request's key, if `cond` holds when it commits.
/// The blobs it replaced are freed; if the commit fails, its own blobs are. Returns
/// the version id it got, if the bucket has versioning.
pub async fn commit_object(
    st: &Arc<State>,
    r: &Req,
    meta: ObjectMeta,
    cond: Option<WriteCondition>,
) -> S3Result<Option<String>> {
    let own = meta.data.blobs().to_vec();
    let op = MetaOp::PutObject {
        bucket: r.bucket().into(),
        key: r.key().into(),
        meta,
        cond: cond.clone(),
    };
    match st.meta.apply(op).await {
        Ok(out) => {
            free_blobs(st, out.freed_blobs);
            Ok(out.version_id)
        }
        Err(e) => {
            crate::handler::free_uncommitted(st, own, &e);
            Err(write_cond::commit_error(st, r.bucket(), r.key(), cond.as_ref(), e).await)
        }
    }
}
