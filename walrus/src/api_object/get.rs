//! GetObject and HeadObject: conditions, ranges and `partNumber`, response header
//! overrides, streaming the blobs.
use crate::acl::Permission;
use crate::api_object::conditions::check_conditions;
use crate::blob::BlobError;
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, set_header, set_version_header, Req, Resp, RespBody};
use crate::meta::{millis_to_time, BlobRef, ObjectData, ObjectMeta};
use crate::sse::DataKey;
use crate::state::State;
use bytes::Bytes;
use euca_aws::timefmt::format_http_date;
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    set_version_header(h, o.version_id.as_deref())?;
    crate::objectlock::set_headers(h, o)?;
    if !o.tags.is_empty() {
        set_header(h, "x-amz-tagging-count", &o.tags.len().to_string())?;
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

pub async fn get_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let head = r.method == Method::HEAD;
    r.op = if head { "HeadObject" } else { "GetObject" };
    // A concurrent overwrite may delete the blobs we are about to open; the grace
    // period makes that rare, and a retry reads the new version.
    let mut attempt = 0;
    let b = load_bucket(st, r.bucket()).await?;
    let authz = crate::authz::Authz::new(&b)?;
    loop {
        let version = r.q("versionId");
        let action = if version.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        };
        let o = authz
            .object_version(st, r, r.key(), version, action, Permission::Read)
            .await?;
        // Lifecycle expiration applies to current objects only.
        let expiration = match version {
            None => crate::lifecycle::expiration_header(st, &b, r.key(), &o),
            Some(_) => None,
        };
        match serve_object(st, r, o, head).await {
            Ok(mut resp) if resp.status().is_success() => {
                if let Some(v) = expiration {
                    set_header(resp.headers_mut(), "x-amz-expiration", &v)?;
                }
                return Ok(resp);
            }
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
    // A read names no SSE-S3/KMS encryption (S3 refuses it; only SSE-C keys are sent).
    if r.headers.contains_key("x-amz-server-side-encryption") {
        return Err(S3Error::invalid_argument(
            "x-amz-server-side-encryption header is not supported for this operation.",
        )
        .into());
    }
    // An SSE-C object answers nothing, not even a condition, without its key.
    let enc = crate::sse::for_read(st, r, o.sse.as_ref(), false).await?;
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
            ObjectData::Blobs(blobs) => {
                stream_blobs(st, blobs, range.clone(), enc.as_ref().map(|e| &e.key)).await?
            }
        }
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    object_headers(h, &o)?;
    if let Some(e) = &enc {
        e.set_headers(h)?;
    }
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
/// on the local store) and chains their streams, decrypting them with `key`.
async fn stream_blobs(
    st: &Arc<State>,
    blobs: &[BlobRef],
    range: std::ops::Range<u64>,
    key: Option<&DataKey>,
) -> Result<RespBody, ServeError> {
    let mut streams = Vec::new();
    for (b, part) in BlobRef::slices(blobs, range) {
        let decrypt = crate::sse::Ctr::transform(key, &b.id, part.start).map_err(S3Error::from)?;
        match st.blobs.read_transformed(&b.id, Some(part), decrypt).await {
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
    }
}
