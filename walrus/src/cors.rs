//! CORS preflight (`OPTIONS`). Browsers send it without credentials, so it is answered
//! before authentication, and it reads no body. Walrus stores no CORS configuration
//! yet, so every preflight that names an existing bucket is refused the way S3 refuses
//! it for a bucket without one.
//!
//! Order, as S3: no `Origin` → 400 `BadRequest`; a bucket that does not exist → 404
//! `NoSuchBucket` (what every other request on it answers, so nothing new is revealed);
//! otherwise 403 `AccessForbidden` "CORS is not enabled for this bucket."
use crate::error::{S3Error, S3Result};
use crate::handler::{self, Resp};
use crate::state::State;
use euca_aws::encoding::uri_decode;
use http::request::Parts;

/// Answers a preflight. `vhost_bucket` is the bucket named by `Host`, if any; `path`
/// is the request path with the legacy prefix already removed.
pub fn preflight(
    st: &State,
    parts: &Parts,
    vhost_bucket: Option<&str>,
    path: &str,
) -> S3Result<Resp> {
    if !parts.headers.contains_key("origin") {
        return Err(S3Error::new(
            "BadRequest",
            400,
            "Insufficient information. Origin request header needed.",
        ));
    }
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (bucket, has_key) = match vhost_bucket {
        Some(b) => (Some(b.to_string()), !rest.is_empty()),
        None => match rest.split_once('/') {
            None if rest.is_empty() => (None, false),
            None => (Some(decode(rest)), false),
            Some((b, k)) => (Some(decode(b)), !k.is_empty()),
        },
    };
    if let Some(b) = &bucket {
        handler::load_bucket(st, b)?;
    }
    let method = parts
        .headers
        .get("access-control-request-method")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    Err(S3Error::new(
        "AccessForbidden",
        403,
        "CORSResponse: CORS is not enabled for this bucket.",
    )
    .with("Method", method)
    .with("ResourceType", if has_key { "OBJECT" } else { "BUCKET" }))
}

fn decode(s: &str) -> String {
    String::from_utf8_lossy(&uri_decode(s)).into_owned()
}
