//! Conditional requests (RFC 7232): `If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`, and their `x-amz-copy-source-*` forms for copies.
use crate::error::{S3Error, S3Result};
use crate::meta::ObjectMeta;
use euca_aws::timefmt::parse_http_date;
use http::{HeaderMap, StatusCode};

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

/// RFC 7232 evaluation order, as S3 applies it. `copy` uses the copy-source headers.
pub fn check_conditions(h: &HeaderMap, o: &ObjectMeta, copy: bool) -> S3Result<Option<StatusCode>> {
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
    let failed = || S3Error::precondition_failed("If-Match");
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
