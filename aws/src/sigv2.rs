//! AWS Signature Version 2 (HMAC-SHA1), as s3cmd `--signature-v2` and euca2ools send it.
use crate::credential::{
    constant_time_eq, lookup_key, AuthConfig, AuthError, CredentialLookup, Principal,
};
use crate::encoding::{uri_decode, uri_encode};
use crate::timefmt::{parse_amz_date, parse_http_date};
use base64::Engine;
use hmac::{KeyInit, Mac};
use http::request::Parts;
use time::OffsetDateTime;

/// Query parameters that are part of the canonical resource.
const SUB_RESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

pub fn hmac_sha1_b64(secret: &str, data: &str) -> String {
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The canonicalized resource: `/bucket/key?sub-resources` (the bucket prepended when
/// it was addressed through the Host header).
pub fn canonical_resource(raw_path: &str, raw_query: &str, vhost_bucket: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(b) = vhost_bucket {
        out.push('/');
        out.push_str(b);
    }
    out.push_str(if raw_path.is_empty() { "/" } else { raw_path });
    let mut subs: Vec<(String, Option<String>)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let k = String::from_utf8_lossy(&uri_decode(k)).into_owned();
            SUB_RESOURCES.contains(&k.as_str()).then(|| {
                (
                    k,
                    v.map(|v| String::from_utf8_lossy(&uri_decode(v)).into_owned()),
                )
            })
        })
        .collect();
    subs.sort();
    for (i, (k, v)) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

pub fn string_to_sign(parts: &Parts, date_line: &str, resource: &str) -> String {
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut amz: Vec<(String, String)> = Vec::new();
    for (name, value) in parts.headers.iter() {
        let n = name.as_str();
        if n.starts_with("x-amz-") {
            let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            match amz.iter_mut().find(|(k, _)| k == n) {
                Some((_, existing)) => {
                    existing.push(',');
                    existing.push_str(&v);
                }
                None => amz.push((n.to_string(), v)),
            }
        }
    }
    amz.sort();
    let mut s = format!(
        "{}\n{}\n{}\n{}\n",
        parts.method.as_str(),
        h("content-md5"),
        h("content-type"),
        date_line
    );
    for (k, v) in amz {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push_str(resource);
    s
}

/// The bucket named by a virtual-host request, set by the service before calling us.
#[derive(Clone, Debug)]
pub struct VhostBucket(pub String);

fn resources(parts: &Parts) -> Vec<String> {
    let vb = parts.extensions.get::<VhostBucket>().map(|b| b.0.as_str());
    let raw = parts.uri.path();
    let q = parts.uri.query().unwrap_or("");
    let mut v = vec![canonical_resource(raw, q, vb)];
    let re = uri_encode(&uri_decode(raw), true);
    if re != raw {
        v.push(canonical_resource(&re, q, vb));
    }
    // botocore signs `/bucket/` for a path-style request to `/bucket`: the same
    // resource (only bucket-level paths, so no object can stand in for another).
    let segs = raw.trim_start_matches('/');
    if vb.is_none() && !segs.is_empty() && !segs.contains('/') {
        v.push(canonical_resource(&format!("{raw}/"), q, vb));
    }
    v
}

pub async fn verify_header(
    parts: &Parts,
    rest: &str,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<Principal, AuthError> {
    let (akid, sig) = rest
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| AuthError::HeaderMalformed("expected AWS AccessKeyId:Signature".into()))?;
    let hs = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let when = match (hs("x-amz-date"), hs("date")) {
        (Some(d), _) => parse_http_date(d).or_else(|| parse_amz_date(d)),
        (None, Some(d)) => parse_http_date(d),
        (None, None) => return Err(AuthError::AccessDeniedDate),
    }
    .ok_or(AuthError::AccessDeniedDate)?;
    let cred = lookup_key(lookup, akid).await?;
    if (now - when).abs() > cfg.max_skew {
        return Err(AuthError::RequestTimeTooSkewed);
    }
    let date_line = hs("date").unwrap_or("");
    for res in resources(parts) {
        let expected = hmac_sha1_b64(&cred.secret, &string_to_sign(parts, date_line.trim(), &res));
        if constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
            return Ok(cred.principal);
        }
    }
    Err(AuthError::SignatureDoesNotMatch)
}

pub async fn verify_query(
    parts: &Parts,
    query: &[(String, String)],
    lookup: &dyn CredentialLookup,
    _cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<Principal, AuthError> {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let akid = q("AWSAccessKeyId")
        .ok_or_else(|| AuthError::QueryMalformed("missing AWSAccessKeyId".into()))?;
    let sig =
        q("Signature").ok_or_else(|| AuthError::QueryMalformed("missing Signature".into()))?;
    let expires =
        q("Expires").ok_or_else(|| AuthError::QueryMalformed("missing Expires".into()))?;
    let exp: i64 = expires
        .parse()
        .map_err(|_| AuthError::QueryMalformed("invalid Expires".into()))?;
    let cred = lookup_key(lookup, akid).await?;
    if now.unix_timestamp() > exp {
        return Err(AuthError::Expired);
    }
    for res in resources(parts) {
        let expected = hmac_sha1_b64(&cred.secret, &string_to_sign(parts, expires, &res));
        if constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
            return Ok(cred.principal);
        }
    }
    Err(AuthError::SignatureDoesNotMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GET example of the S3 SigV2 documentation.
    #[test]
    fn aws_documented_example() {
        let req = http::Request::builder()
            .method("GET")
            .uri("/johnsmith/photos/puppy.jpg")
            .header("date", "Tue, 27 Mar 2007 19:36:42 +0000")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        let sts = string_to_sign(
            &parts,
            "Tue, 27 Mar 2007 19:36:42 +0000",
            &canonical_resource("/johnsmith/photos/puppy.jpg", "", None),
        );
        assert_eq!(
            sts,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
        );
        assert_eq!(
            hmac_sha1_b64("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &sts),
            "bWq2s1WEIj+Ydj0vQ697zp+IXMU="
        );
        assert_eq!(
            canonical_resource("/b", "uploads&prefix=x&acl", None),
            "/b?acl&uploads"
        );
    }
}
