//! Object operations: Get, Head, Put, Copy, Delete, DeleteObjects, object ACLs.
use crate::acl::Permission;
use crate::api::{
    self, acl_from_headers, acl_from_xml, empty, free_blobs, load_bucket, millis_to_time, require,
    set_header, xml, Req, Resp, RespBody,
};
use crate::blob::BlobError;
use crate::body::{BodySummary, VerifiedBody};
use crate::error::{S3Error, S3Result};
use crate::meta::{BlobRef, ContentHeaders, MetaError, MetaOp, ObjectData, ObjectMeta};
use crate::server::State;
use bytes::Bytes;
use euca_aws::timefmt::{format_http_date, format_iso8601, parse_http_date};
use euca_aws::xml::{XmlWriter, S3_NS};
use euca_aws::Principal;
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    match r.method.clone() {
        Method::GET if r.has("acl") => {
            r.op = "GetObjectAcl";
            let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
            require(&o.acl, r.principal.as_ref(), Permission::ReadAcp)?;
            Ok(xml(StatusCode::OK, o.acl.to_xml()))
        }
        Method::PUT if r.has("acl") => {
            r.op = "PutObjectAcl";
            load_bucket(st, r.bucket())?;
            let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
            require(&o.acl, r.principal.as_ref(), Permission::WriteAcp)?;
            let bucket_owner = load_bucket(st, r.bucket())?.owner;
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
            st.meta
                .apply(MetaOp::SetObjectAcl {
                    bucket: r.bucket().into(),
                    key: r.key().into(),
                    acl,
                })
                .await?;
            Ok(empty(StatusCode::OK))
        }
        Method::GET if r.has("tagging") => {
            r.op = "GetObjectTagging";
            let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
            require(&o.acl, r.principal.as_ref(), Permission::Read)?;
            let mut w = XmlWriter::new();
            w.root("Tagging", S3_NS).open("TagSet");
            Ok(xml(StatusCode::OK, w.finish()))
        }
        Method::PUT | Method::DELETE if r.has("tagging") => {
            r.op = "PutObjectTagging";
            Err(S3Error::not_implemented("Object tagging"))
        }
        Method::GET if r.has("attributes") => crate::checksums::get_object_attributes(st, r),
        Method::GET | Method::HEAD => get_object(st, r).await,
        Method::PUT if r.headers.contains_key("x-amz-copy-source") => copy_object(st, r).await,
        Method::PUT => put_object(st, r).await,
        Method::DELETE => {
            r.op = "DeleteObject";
            let b = load_bucket(st, r.bucket())?;
            require(&b.acl, r.principal.as_ref(), Permission::Write)?;
            let out = st
                .meta
                .apply(MetaOp::DeleteObject {
                    bucket: r.bucket().into(),
                    key: r.key().into(),
                })
                .await?;
            free_blobs(st, out.freed_blobs);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::POST => Err(S3Error::not_implemented("POST on an object")),
        _ => Err(S3Error::new(
            "MethodNotAllowed",
            405,
            "The specified method is not allowed against this resource.",
        )),
    }
}

/// The object, for a request by `who`. A missing key is `NoSuchKey` only for callers
/// who may list the bucket (READ on it); anyone else gets `AccessDenied`, exactly what
/// an existing object they may not read answers, so a 404 cannot tell them whether a
/// key (a snapshot chunk's hash, an image id) exists. This is what S3 does.
pub fn load_object(
    st: &State,
    bucket: &str,
    key: &str,
    who: Option<&Principal>,
) -> S3Result<ObjectMeta> {
    if let Some(o) = st.meta.object(bucket, key)? {
        return Ok(o);
    }
    match st.meta.bucket(bucket)? {
        None => Err(S3Error::no_such_bucket(bucket)),
        Some(b) if b.acl.allows(who, Permission::Read) => Err(S3Error::no_such_key(key)),
        Some(_) => Err(S3Error::access_denied()),
    }
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

/// RFC 7232 evaluation order, as S3 applies it. `copy` uses the copy-source headers.
fn check_conditions(h: &HeaderMap, o: &ObjectMeta, copy: bool) -> S3Result<Option<StatusCode>> {
    let g = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let (im, ius, inm, ims) = if copy {
        (
            g("x-amz-copy-source-if-match"),
            g("x-amz-copy-source-if-unmodified-since"),
            g("x-amz-copy-source-if-none-match"),
            g("x-amz-copy-source-if-modified-since"),
        )
    } else {
        (
            g("if-match"),
            g("if-unmodified-since"),
            g("if-none-match"),
            g("if-modified-since"),
        )
    };
    let failed = || {
        S3Error::new(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
        )
        .with("Condition", "If-Match")
    };
    let modified_secs = o.last_modified.div_euclid(1000);
    if let Some(v) = im {
        if !etag_matches(v, &o.etag) {
            return Err(failed());
        }
    } else if let Some(t) = ius.and_then(parse_http_date) {
        if modified_secs > t.unix_timestamp() {
            return Err(failed());
        }
    }
    if let Some(v) = inm {
        if etag_matches(v, &o.etag) {
            return if copy {
                Err(failed())
            } else {
                Ok(Some(StatusCode::NOT_MODIFIED))
            };
        }
    } else if let Some(t) = ims.and_then(parse_http_date) {
        if modified_secs <= t.unix_timestamp() {
            return if copy {
                Err(failed())
            } else {
                Ok(Some(StatusCode::NOT_MODIFIED))
            };
        }
    }
    Ok(None)
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`. `Ok(None)`: serve
/// everything (absent or not a single byte range, per RFC 7233).
pub fn parse_range(v: Option<&str>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    let Some(v) = v else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = || {
        S3Error::new(
            "InvalidRange",
            416,
            "The requested range is not satisfiable",
        )
        .with("RangeRequested", v.to_string())
        .with("ActualObjectSize", size.to_string())
    };
    let r = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(unsatisfiable());
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => (e + 1).min(size),
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(unsatisfiable());
        }
        start..end
    };
    Ok(Some(r))
}

fn object_headers(h: &mut HeaderMap, o: &ObjectMeta) -> S3Result<()> {
    set_header(h, "etag", &format!("\"{}\"", o.etag))?;
    set_header(
        h,
        "last-modified",
        &format_http_date(millis_to_time(o.last_modified)),
    )?;
    set_header(h, "accept-ranges", "bytes")?;
    let c = &o.headers;
    set_header(
        h,
        "content-type",
        c.content_type.as_deref().unwrap_or("binary/octet-stream"),
    )?;
    for (name, v) in [
        ("content-encoding", &c.content_encoding),
        ("content-disposition", &c.content_disposition),
        ("content-language", &c.content_language),
        ("cache-control", &c.cache_control),
        ("expires", &c.expires),
        ("x-amz-website-redirect-location", &c.website_redirect),
    ] {
        if let Some(v) = v {
            set_header(h, name, v)?;
        }
    }
    for (k, v) in &o.user_meta {
        set_header(h, &format!("x-amz-meta-{k}"), v)?;
    }
    if !o.part_sizes.is_empty() {
        set_header(h, "x-amz-mp-parts-count", &o.part_sizes.len().to_string())?;
    }
    Ok(())
}

const OVERRIDES: &[(&str, &str)] = &[
    ("response-content-type", "content-type"),
    ("response-content-language", "content-language"),
    ("response-expires", "expires"),
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
];

async fn get_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let head = r.method == Method::HEAD;
    r.op = if head { "HeadObject" } else { "GetObject" };
    // A concurrent overwrite may delete the blobs we are about to open; the grace
    // period makes that rare, and a retry reads the new version.
    let mut attempt = 0;
    loop {
        let o = load_object(st, r.bucket(), r.key(), r.principal.as_ref())?;
        require(&o.acl, r.principal.as_ref(), Permission::Read)?;
        match serve_object(st, r, o, head).await {
            Err(ServeError::Gone) if attempt < 3 => attempt += 1,
            Err(ServeError::Gone) => return Err(S3Error::internal("object data missing")),
            Err(ServeError::S3(e)) => return Err(e),
            Ok(resp) => return Ok(resp),
        }
    }
}

enum ServeError {
    Gone,
    S3(S3Error),
}

impl From<S3Error> for ServeError {
    fn from(e: S3Error) -> Self {
        ServeError::S3(e)
    }
}

async fn serve_object(
    st: &Arc<State>,
    r: &Req,
    o: ObjectMeta,
    head: bool,
) -> Result<Resp, ServeError> {
    if let Some(status) = check_conditions(&r.headers, &o, false)? {
        let mut resp = empty(status);
        set_header(resp.headers_mut(), "etag", &format!("\"{}\"", o.etag))?;
        set_header(
            resp.headers_mut(),
            "last-modified",
            &format_http_date(millis_to_time(o.last_modified)),
        )?;
        return Ok(resp);
    }
    let mut range = parse_range(r.header("range"), o.size)?;
    if let Some(pn) = r.q("partNumber") {
        let n: usize = pn.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
        if o.part_sizes.is_empty() {
            if n != 1 {
                return Err(S3Error::new(
                    "InvalidPartNumber",
                    416,
                    "The requested partnumber is not satisfiable",
                )
                .into());
            }
        } else {
            if n > o.part_sizes.len() {
                return Err(S3Error::new(
                    "InvalidPartNumber",
                    416,
                    "The requested partnumber is not satisfiable",
                )
                .into());
            }
            let start: u64 = o.part_sizes[..n - 1].iter().sum();
            range = Some(start..start + o.part_sizes[n - 1]);
        }
    }
    let mut overrides = Vec::new();
    for (q, h) in OVERRIDES {
        if let Some(v) = r.q(q) {
            if r.principal.is_none() {
                return Err(S3Error::invalid_request(
                    "Request specific response headers cannot be used for anonymous GET requests.",
                )
                .into());
            }
            overrides.push((*h, v.to_string()));
        }
    }
    let (status, range) = match range {
        Some(rg) => (StatusCode::PARTIAL_CONTENT, rg),
        None => (StatusCode::OK, 0..o.size),
    };
    let len = range.end - range.start;
    let body: RespBody = if head || len == 0 {
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync()
    } else {
        match &o.data {
            ObjectData::Inline(d) => {
                let slice = Bytes::copy_from_slice(&d[range.start as usize..range.end as usize]);
                st.metrics.bytes_out.fetch_add(len, Ordering::Relaxed);
                http_body_util::Full::new(slice)
                    .map_err(|e| match e {})
                    .boxed_unsync()
            }
            ObjectData::Blobs(blobs) => stream_blobs(st, blobs, range.clone()).await?,
        }
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    object_headers(h, &o)?;
    set_header(h, "content-length", &len.to_string())?;
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(
            h,
            "content-range",
            &format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                o.size
            ),
        )?;
    }
    let part = r.q("partNumber").and_then(|n| n.parse().ok());
    crate::checksums::response_headers(r, h, &o, status == StatusCode::OK, part)?;
    for (name, v) in overrides {
        set_header(h, name, &v)?;
    }
    Ok(resp)
}

/// Opens every blob the range touches (so an overwrite cannot pull them away midway
/// on the local store) and chains their streams.
async fn stream_blobs(
    st: &Arc<State>,
    blobs: &[BlobRef],
    range: std::ops::Range<u64>,
) -> Result<RespBody, ServeError> {
    let mut streams = Vec::new();
    let mut offset = 0u64;
    for b in blobs {
        let (bs, be) = (offset, offset + b.size);
        offset = be;
        if be <= range.start || bs >= range.end {
            continue;
        }
        let from = range.start.max(bs) - bs;
        let to = range.end.min(be) - bs;
        match st.blobs.read(&b.id, Some(from..to)).await {
            Ok(s) => streams.push(s),
            Err(BlobError::NotFound) => return Err(ServeError::Gone),
            Err(e) => return Err(S3Error::from(e).into()),
        }
    }
    let st2 = st.clone();
    let stream = futures::stream::iter(streams)
        .flatten()
        .map(move |r| match r {
            Ok(b) => {
                st2.metrics
                    .bytes_out
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(http_body::Frame::data(b))
            }
            Err(e) => {
                tracing::error!(error = %e, "object read failed mid-stream");
                Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            }
        });
    Ok(BodyExt::boxed_unsync(StreamBody::new(stream)))
}

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
/// the caller commits metadata; on error the blob is discarded.
pub async fn store_body(
    st: &Arc<State>,
    mut body: VerifiedBody,
    inline_max: usize,
) -> S3Result<(Stored, BodySummary)> {
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
                let mut w = st.blobs.create().await?;
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

async fn put_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutObject";
    let b = load_bucket(st, r.bucket())?;
    require(&b.acl, r.principal.as_ref(), Permission::Write)?;
    if !r.headers.contains_key("content-length") {
        return Err(S3Error::new(
            "MissingContentLength",
            411,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    let owner = r
        .principal
        .as_ref()
        .map(crate::acl::Owner::of)
        .unwrap_or_else(|| b.owner.clone());
    let acl = acl_from_headers(st, r, owner.clone(), Some(&b.owner))?;
    let (headers, user_meta) = content_from_request(r)?;
    let body = r.body(st.cfg.max_put_bytes)?;
    let (stored, summary) = store_body(st, body, st.cfg.inline_max_bytes).await?;
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
        etag: hex::encode(summary.md5),
        last_modified: api::now_millis(),
        owner,
        headers,
        user_meta,
        checksum_type: (!checksums.is_empty()).then(|| "FULL_OBJECT".to_string()),
        checksums: checksums.clone(),
        acl,
        data: data.clone(),
        part_sizes: Vec::new(),
        part_checksums: Vec::new(),
    };
    let etag = meta.etag.clone();
    commit_object(st, r, meta).await?;
    let mut resp = empty(StatusCode::OK);
    set_header(resp.headers_mut(), "etag", &format!("\"{etag}\""))?;
    for (a, v) in checksums {
        set_header(
            resp.headers_mut(),
            &format!("x-amz-checksum-{}", a.to_ascii_lowercase()),
            &v,
        )?;
    }
    Ok(resp)
}

/// Makes `meta` the object at the request's key. The blobs it replaced are freed; if
/// the commit fails, its own blobs are.
async fn commit_object(st: &Arc<State>, r: &Req, meta: ObjectMeta) -> S3Result<()> {
    let own = meta.data.blobs().to_vec();
    let op = MetaOp::PutObject {
        bucket: r.bucket().into(),
        key: r.key().into(),
        meta,
    };
    match st.meta.apply(op).await {
        Ok(out) => {
            free_blobs(st, out.freed_blobs);
            Ok(())
        }
        Err(e) => {
            free_blobs(st, own);
            Err(e.into())
        }
    }
}

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
    if k.is_empty() || k.len() > api::MAX_KEY_BYTES {
        return Err(S3Error::invalid_argument("Invalid copy source key"));
    }
    Ok((b.to_string(), k.to_string()))
}

/// Loads and authorizes the copy source, and checks the copy-source conditions.
pub fn copy_source(st: &State, r: &Req) -> S3Result<(String, String, ObjectMeta)> {
    let (sb, sk) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    let src = load_object(st, &sb, &sk, r.principal.as_ref())?;
    require(&src.acl, r.principal.as_ref(), Permission::Read)?;
    check_conditions(&r.headers, &src, true)?;
    Ok((sb, sk, src))
}

async fn copy_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CopyObject";
    let b = load_bucket(st, r.bucket())?;
    require(&b.acl, r.principal.as_ref(), Permission::Write)?;
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
        last_modified: api::now_millis(),
        owner,
        headers,
        user_meta,
        checksums: src.checksums.clone(),
        acl,
        data: data.clone(),
        part_sizes: src.part_sizes.clone(),
        checksum_type: src.checksum_type.clone(),
        part_checksums: src.part_checksums.clone(),
    };
    let lm = meta.last_modified;
    commit_object(st, r, meta).await?;
    let mut w = XmlWriter::new();
    w.root("CopyObjectResult", S3_NS)
        .elem("LastModified", format_iso8601(millis_to_time(lm)))
        .elem("ETag", format!("\"{}\"", src.etag));
    Ok(xml(StatusCode::OK, w.finish()))
}

pub async fn delete_objects(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let b = load_bucket(st, r.bucket())?;
    // Authorized before the body is read: without WRITE on the bucket no key
    // could be deleted anyway.
    require(&b.acl, r.principal.as_ref(), Permission::Write)?;
    let node = r.xml_body(2 * 1024 * 1024).await?;
    let crate::xmlreq::DeleteRequest { quiet, keys } = crate::xmlreq::delete_request(&node)?;
    // Issue every delete at once: the metadata writer commits them in a few group
    // commits instead of one fsync per key.
    let bucket = r.bucket().to_string();
    let results = futures::future::join_all(keys.iter().map(|k| {
        let (st, bucket, k) = (st.clone(), bucket.clone(), k.clone());
        async move {
            if k.is_empty() || k.len() > api::MAX_KEY_BYTES {
                return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long"));
            }
            match st.meta.apply(MetaOp::DeleteObject { bucket, key: k }).await {
                Ok(out) => {
                    free_blobs(&st, out.freed_blobs);
                    Ok(())
                }
                Err(MetaError::NoSuchKey) => Ok(()),
                Err(e) => Err(S3Error::from(e)),
            }
        }
    }))
    .await;
    let mut w = XmlWriter::new();
    w.root("DeleteResult", S3_NS);
    for (k, res) in keys.into_iter().zip(results) {
        match res {
            Ok(()) if !quiet => {
                w.open("Deleted").elem("Key", &k).close();
            }
            Ok(()) => {}
            Err(e) => {
                w.open("Error")
                    .elem("Key", &k)
                    .elem("Code", e.code)
                    .elem("Message", &e.message)
                    .close();
            }
        }
    }
    Ok(xml(StatusCode::OK, w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100).unwrap(), Some(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), 100).unwrap(), Some(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), 100).unwrap(), Some(90..100));
        assert_eq!(parse_range(Some("bytes=-1000"), 100).unwrap(), Some(0..100));
        assert_eq!(
            parse_range(Some("bytes=50-1000"), 100).unwrap(),
            Some(50..100)
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=9-1"), 100).unwrap(), None);
        assert_eq!(parse_range(Some("items=0-1"), 100).unwrap(), None);
        assert_eq!(
            parse_range(Some("bytes=100-"), 100).unwrap_err().code,
            "InvalidRange"
        );
        assert_eq!(
            parse_range(Some("bytes=0-0"), 0).unwrap_err().code,
            "InvalidRange"
        );
        assert_eq!(
            parse_copy_source("/b/a%20b?versionId=null").unwrap(),
            ("b".into(), "a b".into())
        );
        assert!(parse_copy_source("nokey").is_err());
    }
}
