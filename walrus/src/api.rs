//! Request entry point: addressing, authentication, routing, error rendering.
use crate::acl::{Acl, CannedContext, Grant, Owner, Permission};
use crate::body::{Body, VerifiedBody};
use crate::error::{S3Error, S3Result};
use crate::meta::BucketMeta;
use crate::server::State;
use crate::{api_bucket, api_multipart, api_object};
use bytes::Bytes;
use euca_aws::auth::{AuthConfig, Authenticated};
use euca_aws::encoding::{parse_query, uri_decode};
use euca_aws::sigv2::VhostBucket;
use euca_aws::{PayloadCheck, Principal};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub type RespBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
pub type Resp = Response<RespBody>;

pub const LEGACY_PREFIX: &str = "/services/Walrus";
pub const MAX_KEY_BYTES: usize = 1024;

/// An authenticated S3 request, ready for a handler.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub principal: Option<Principal>,
    pub payload: PayloadCheck,
    body: Option<Body>,
    pub request_id: String,
    /// The operation name, for logs and metrics.
    pub op: &'static str,
}

impl Req {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn bucket(&self) -> &str {
        self.bucket.as_deref().unwrap_or_default()
    }
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }
    /// The body, verified against the signature and declared digests as it streams.
    pub fn body(&mut self, limit: u64) -> S3Result<VerifiedBody> {
        let b = self
            .body
            .take()
            .ok_or_else(|| S3Error::internal("body taken twice"))?;
        VerifiedBody::new(b, &self.headers, &self.payload, limit)
    }
    /// A small XML body (at most `limit` bytes), parsed. Call it only once the
    /// caller is authorized for the operation. A declared length past `limit` is
    /// refused before anything is read.
    pub async fn xml_body(&mut self, limit: u64) -> S3Result<crate::xmlin::Node> {
        let declared = |h: &str| {
            self.headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let len = declared("x-amz-decoded-content-length").or(declared("content-length"));
        if len.is_some_and(|n| n > limit) {
            return Err(too_large_is_malformed(crate::body::entity_too_large()));
        }
        let (bytes, _) = self
            .body(limit)
            .map_err(too_large_is_malformed)?
            .read_all()
            .await
            .map_err(too_large_is_malformed)?;
        crate::xmlin::parse(&bytes)
    }
    pub fn owner(&self) -> S3Result<Owner> {
        self.principal
            .as_ref()
            .map(Owner::of)
            .ok_or_else(S3Error::access_denied)
    }
    pub fn resource(&self) -> String {
        match (&self.bucket, &self.key) {
            (Some(b), Some(k)) => format!("/{b}/{k}"),
            (Some(b), None) => format!("/{b}"),
            _ => "/".into(),
        }
    }
}

/// An XML body past its cap: S3's `MaxMessageLengthExceeded`.
fn too_large_is_malformed(e: S3Error) -> S3Error {
    if e.code == "EntityTooLarge" {
        S3Error::new("MaxMessageLengthExceeded", 400, "Your request was too big.")
    } else {
        e
    }
}

pub fn request_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode_upper(b)
}

pub fn full(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

pub fn xml(status: StatusCode, body: String) -> Resp {
    let mut r = full(status, body);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

pub fn empty(status: StatusCode) -> Resp {
    full(status, Bytes::new())
}

pub fn error_response(e: &S3Error, request_id: &str, head: bool) -> Resp {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = if head {
        empty(status)
    } else {
        xml(status, e.to_xml(request_id))
    };
    if e.code == "InvalidRange" {
        if let Some((_, v)) = e.extra.iter().find(|(k, _)| *k == "ActualObjectSize") {
            if let Ok(h) = HeaderValue::from_str(&format!("bytes */{v}")) {
                r.headers_mut().insert("content-range", h);
            }
        }
    }
    r
}

/// Splits the host into a virtual-host bucket, if it names one.
fn vhost_bucket(host: &str, domains: &[String]) -> Option<String> {
    let host = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let host = host.to_ascii_lowercase();
    let mut ds: Vec<&String> = domains.iter().collect();
    ds.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in ds {
        if host == *d {
            return None;
        }
        if let Some(b) = host
            .strip_suffix(d.as_str())
            .and_then(|p| p.strip_suffix('.'))
        {
            if !b.is_empty() {
                return Some(b.to_string());
            }
        }
    }
    None
}

pub async fn handle(st: Arc<State>, req: http::Request<Incoming>, peer: SocketAddr) -> Resp {
    let started = Instant::now();
    let rid = request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // hyper sends `100 Continue` only for a non-empty body. botocore keeps the state of
    // a request answered without it on the connection and misreads the next response,
    // so such a connection is closed after the answer.
    let expect_no_continue = req
        .headers()
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && req
            .headers()
            .get("content-length")
            .is_some_and(|v| v.as_bytes() == b"0");
    let (resp, op) = match route(&st, req, &rid).await {
        Ok(x) => x,
        Err((e, op)) => (error_response(&e, &rid, method == Method::HEAD), op),
    };
    let mut resp = resp;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amz-request-id", v.clone());
        h.insert("x-amz-id-2", v);
    }
    h.insert("server", HeaderValue::from_static("Walrus"));
    if expect_no_continue {
        h.insert("connection", HeaderValue::from_static("close"));
    }
    let status = resp.status().as_u16();
    st.metrics.record(op, status);
    tracing::info!(target: "walrus::access", %peer, %method, path = %path, op, status, ms = started.elapsed().as_millis() as u64, rid = %rid);
    resp
}

/// The path without the Eucalyptus legacy prefix (`/services/Walrus`), if it has one.
fn strip_legacy_prefix(raw_path: &str) -> &str {
    match raw_path.strip_prefix(LEGACY_PREFIX) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => raw_path,
    }
}

async fn route(
    st: &Arc<State>,
    req: http::Request<Incoming>,
    rid: &str,
) -> Result<(Resp, &'static str), (S3Error, &'static str)> {
    let (mut parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    if raw_path == "/_health" && parts.method == Method::GET {
        return Ok((full(StatusCode::OK, "ok\n"), "Health"));
    }
    if raw_path == "/_metrics" && parts.method == Method::GET {
        if !st.metrics_access.allows(&parts.headers) {
            let mut r = error_response(
                &S3Error::new(
                    "AccessDenied",
                    401,
                    "Metrics need Authorization: Bearer <the metrics token>.",
                ),
                rid,
                false,
            );
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static(euca_service::MetricsAccess::CHALLENGE),
            );
            return Ok((r, "Metrics"));
        }
        let mut r = full(StatusCode::OK, st.metrics.render());
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return Ok((r, "Metrics"));
    }
    // Like S3, no Transfer-Encoding on requests: hyper would let it override a
    // Content-Length (the request-smuggling shape), and S3 clients never need it.
    if parts.headers.contains_key("transfer-encoding") {
        return Err((
            S3Error::new(
                "NotImplemented",
                501,
                "A header you provided implies functionality that is not implemented",
            )
            .with("Header", "Transfer-Encoding"),
            "Invalid",
        ));
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let vb = vhost_bucket(&host, &st.cfg.domains);
    if let Some(b) = &vb {
        parts.extensions.insert(VhostBucket(b.clone()));
    }
    // A CORS preflight carries no credentials: answered before authentication.
    if parts.method == Method::OPTIONS {
        let path = strip_legacy_prefix(&raw_path);
        return crate::cors::preflight(st, &parts, vb.as_deref(), path)
            .map(|r| (r, "Preflight"))
            .map_err(|e| (e, "Preflight"));
    }
    // Authenticate before anything else looks at the request.
    let auth: Authenticated = euca_aws::authenticate(
        &parts,
        st.identity.as_ref(),
        &AuthConfig::s3(&st.cfg.region),
        time::OffsetDateTime::now_utc(),
    )
    .await
    .map_err(|e| (S3Error::from(e), "Auth"))?;

    let path = strip_legacy_prefix(&raw_path);
    let decoded = |s: &str| -> Result<String, (S3Error, &'static str)> {
        String::from_utf8(uri_decode(s)).map_err(|_| {
            (
                S3Error::invalid_argument("Object key is not valid UTF-8"),
                "Invalid",
            )
        })
    };
    let (bucket, key) = match vb {
        Some(b) => {
            let k = path.strip_prefix('/').unwrap_or(path);
            (
                Some(b),
                if k.is_empty() {
                    None
                } else {
                    Some(decoded(k)?)
                },
            )
        }
        None => {
            let p = path.strip_prefix('/').unwrap_or(path);
            match p.split_once('/') {
                None if p.is_empty() => (None, None),
                None => (Some(decoded(p)?), None),
                Some((b, k)) => (
                    Some(decoded(b)?),
                    if k.is_empty() {
                        None
                    } else {
                        Some(decoded(k)?)
                    },
                ),
            }
        }
    };
    if let Some(k) = &key {
        if k.len() > MAX_KEY_BYTES {
            return Err((
                S3Error::new("KeyTooLongError", 400, "Your key is too long")
                    .with("MaxSizeAllowed", "1024"),
                "Invalid",
            ));
        }
    }
    let mut r = Req {
        method: parts.method.clone(),
        headers: parts.headers,
        query: parse_query(parts.uri.query().unwrap_or("")),
        bucket,
        key,
        principal: auth.principal,
        payload: auth.payload,
        body: Some(crate::body::incoming(body)),
        request_id: rid.to_string(),
        op: "Unknown",
    };
    let head = r.method == Method::HEAD;
    match dispatch(st, &mut r).await {
        Ok(resp) => Ok((resp, r.op)),
        Err(e) => {
            let e = if e.resource.is_none() {
                e.with_resource(r.resource())
            } else {
                e
            };
            let _ = head;
            Err((e, r.op))
        }
    }
}

async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    crate::system::check_writable(st, r)?;
    let m = r.method.clone();
    if r.bucket.is_none() {
        return match m {
            Method::GET => {
                r.op = "ListBuckets";
                api_bucket::list_buckets(st, r).await
            }
            _ => Err(S3Error::new(
                "MethodNotAllowed",
                405,
                "The specified method is not allowed against this resource.",
            )),
        };
    }
    if r.key.is_none() {
        return api_bucket::dispatch(st, r).await;
    }
    if r.has("uploads") || r.has("uploadId") {
        return api_multipart::dispatch(st, r).await;
    }
    api_object::dispatch(st, r).await
}

// ---- helpers shared by the handlers ------------------------------------------------

/// The bucket, or NoSuchBucket.
pub fn load_bucket(st: &State, name: &str) -> S3Result<BucketMeta> {
    st.meta
        .bucket(name)?
        .ok_or_else(|| S3Error::no_such_bucket(name))
}

/// Requires `perm` on the ACL; AccessDenied otherwise.
pub fn require(acl: &Acl, who: Option<&Principal>, perm: Permission) -> S3Result<()> {
    if acl.allows(who, perm) {
        Ok(())
    } else {
        Err(S3Error::access_denied())
    }
}

/// The ACL a PUT/Create request asks for: `x-amz-acl`, or `x-amz-grant-*`, or private.
pub fn acl_from_headers(
    st: &State,
    r: &Req,
    owner: Owner,
    bucket_owner: Option<&Owner>,
) -> S3Result<Acl> {
    let ctx = CannedContext {
        system_id: &st.system_id,
        bucket_owner,
    };
    let grant_headers = [
        ("x-amz-grant-read", Permission::Read),
        ("x-amz-grant-write", Permission::Write),
        ("x-amz-grant-read-acp", Permission::ReadAcp),
        ("x-amz-grant-write-acp", Permission::WriteAcp),
        ("x-amz-grant-full-control", Permission::FullControl),
    ];
    let has_grants = grant_headers
        .iter()
        .any(|(h, _)| r.headers.contains_key(*h));
    if let Some(c) = r.header("x-amz-acl") {
        if has_grants {
            return Err(S3Error::invalid_request(
                "Specifying both Canned ACLs and Header Grants is not allowed",
            ));
        }
        return Acl::canned(c.trim(), owner, &ctx)
            .ok_or_else(|| S3Error::invalid_argument(format!("Unknown canned ACL {c}")));
    }
    if !has_grants {
        return Ok(Acl::private(owner));
    }
    let mut grants: Vec<Grant> = Vec::new();
    for (h, p) in grant_headers {
        if let Some(v) = r.header(h) {
            grants.extend(crate::acl::parse_grant_header(v, p).map_err(S3Error::invalid_argument)?);
        }
    }
    Ok(Acl { owner, grants })
}

/// Parses an `AccessControlPolicy` body into an ACL; the owner must stay the same.
pub fn acl_from_xml(node: &crate::xmlin::Node, owner: &Owner) -> S3Result<Acl> {
    use crate::acl::Grantee;
    if node.name != "AccessControlPolicy" {
        return Err(S3Error::malformed_xml());
    }
    if let Some(id) = node.child("Owner").and_then(|o| o.token_of("ID")) {
        if id != owner.id {
            return Err(S3Error::access_denied());
        }
    }
    let list = node
        .child("AccessControlList")
        .ok_or_else(S3Error::malformed_xml)?;
    let mut grants = Vec::new();
    for g in list.children("Grant") {
        let ge = g.child("Grantee").ok_or_else(S3Error::malformed_xml)?;
        let grantee = if let Some(id) = ge.token_of("ID") {
            Grantee::User {
                id: id.to_string(),
                display_name: ge.text_of("DisplayName").map(String::from),
            }
        } else if let Some(uri) = ge.token_of("URI") {
            Grantee::Group(uri.to_string())
        } else if ge.child("EmailAddress").is_some() {
            return Err(S3Error::not_implemented("Grants by email address"));
        } else {
            return Err(S3Error::malformed_xml());
        };
        let permission = g
            .token_of("Permission")
            .and_then(Permission::parse)
            .ok_or_else(S3Error::malformed_xml)?;
        grants.push(Grant {
            grantee,
            permission,
        });
    }
    Ok(Acl {
        owner: owner.clone(),
        grants,
    })
}

/// Sets a header from user data, refusing values that are not valid header text.
pub fn set_header(h: &mut HeaderMap, name: &str, value: &str) -> S3Result<()> {
    let v = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| S3Error::invalid_argument(format!("Invalid value for header {name}")))?;
    let n = http::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| S3Error::invalid_argument(format!("Invalid header name {name}")))?;
    h.insert(n, v);
    Ok(())
}

pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn millis_to_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Deletes blobs no longer referenced, after a grace period so that reads which
/// started before the change can finish. A crash before then leaves them to the
/// startup sweep.
pub fn free_blobs(st: &Arc<State>, blobs: Vec<crate::meta::BlobRef>) {
    if blobs.is_empty() {
        return;
    }
    let st = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        for b in blobs {
            if let Err(e) = st.blobs.delete(&b.id).await {
                tracing::warn!(blob = %b.id, error = %e, "could not delete an unused blob");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn vhost() {
        let d = vec!["s3.localhost".to_string(), "localhost".to_string()];
        assert_eq!(
            vhost_bucket("bkt.s3.localhost:8773", &d),
            Some("bkt".into())
        );
        assert_eq!(vhost_bucket("a.b.localhost", &d), Some("a.b".into()));
        assert_eq!(vhost_bucket("s3.localhost:1", &d), None);
        assert_eq!(vhost_bucket("127.0.0.1:8773", &d), None);
        assert_eq!(vhost_bucket("localhost", &d), None);
    }
}
