//! Request entry point: addressing, authentication, routing, error rendering.
use crate::endpoint::S3Endpoint;
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp, RespBody, MAX_KEY_BYTES};
use crate::state::State;
use crate::{api_bucket, api_multipart, api_object};
use bytes::Bytes;
use euca_aws::auth::{AuthConfig, Authenticated};
use euca_aws::encoding::{parse_query, uri_decode};
use euca_aws::sigv2::VhostBucket;
use euca_service::{Ctx, EdgeError};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;

pub const LEGACY_PREFIX: &str = "/services/Walrus";

pub fn error_response(e: &S3Error, request_id: &str, head: bool) -> Resp {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = if head {
        empty(status)
    } else {
        xml(status, e.to_xml(request_id))
    };
    r.extensions_mut()
        .insert(euca_service::ErrorCode(e.code.to_string()));
    for (name, v) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*name, v);
        }
    }
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

/// Which S3 operation a request is, from its head (see [`S3Endpoint::parse`]).
pub fn endpoint(st: &State, parts: &http::request::Parts) -> S3Endpoint {
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let vb = vhost_bucket(host, &st.cfg.domains);
    let path = strip_legacy_prefix(parts.uri.path());
    if crate::account_block::is_control(path, &parts.headers) {
        return match parts.method {
            Method::GET => S3Endpoint::GetAccountPublicAccessBlock,
            Method::PUT => S3Endpoint::PutAccountPublicAccessBlock,
            Method::DELETE => S3Endpoint::DeleteAccountPublicAccessBlock,
            _ => S3Endpoint::Invalid,
        };
    }
    let p = path.strip_prefix('/').unwrap_or(path);
    let (has_bucket, has_key) = match vb {
        Some(_) => (true, !p.is_empty()),
        None => match p.split_once('/') {
            None => (!p.is_empty(), false),
            Some((_, k)) => (true, !k.is_empty()),
        },
    };
    S3Endpoint::parse(
        &parts.method,
        has_bucket,
        has_key,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
    )
}

/// Handles one S3 request (`/_health` and `/_metrics` are answered before, by
/// the serve loop).
pub async fn handle(st: Arc<State>, req: http::Request<Incoming>, cx: &Ctx) -> Resp {
    let rid = cx.request_id.as_str();
    let method = req.method().clone();
    let cors = crate::cors::ActualRequest::of(&method, req.headers(), request_bucket(&st, &req));
    let mut resp = match route(&st, req, rid, cx.peer).await {
        Ok(r) => r,
        Err(e) => error_response(&e, rid, method == Method::HEAD),
    };
    if let Some(c) = cors {
        c.decorate(&st, &mut resp).await;
    }
    resp
}

/// The bucket a request names (virtual host or first path segment), if any.
fn request_bucket<B>(st: &State, req: &http::Request<B>) -> Option<String> {
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(b) = vhost_bucket(host, &st.cfg.domains) {
        return Some(b);
    }
    let path = strip_legacy_prefix(req.uri().path());
    let p = path.strip_prefix('/').unwrap_or(path);
    let b = p.split_once('/').map_or(p, |(b, _)| b);
    (!b.is_empty()).then(|| String::from_utf8_lossy(&uri_decode(b)).into_owned())
}

impl euca_service::Api for State {
    type Endpoint = S3Endpoint;
    type Body = RespBody;
    fn service(&self) -> &'static str {
        "walrus"
    }
    fn route(&self, head: &http::request::Parts) -> S3Endpoint {
        endpoint(self, head)
    }
    async fn handle(
        self: Arc<Self>,
        _endpoint: S3Endpoint,
        req: http::Request<Incoming>,
        cx: Ctx,
    ) -> Resp {
        handle(self, req, &cx).await
    }
    fn render_error(&self, e: &EdgeError, cx: &Ctx) -> Resp {
        error_response(
            &S3Error::new(e.code, e.status, e.message),
            &cx.request_id,
            false,
        )
    }
    /// Every answer carries the request id (as S3 does) and names the server.
    fn finish(&self, resp: &mut Resp, cx: &Ctx) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&cx.request_id) {
            h.insert("x-amz-request-id", v.clone());
            h.insert("x-amz-id-2", v);
        }
        h.insert("server", HeaderValue::from_static("Walrus"));
    }
    fn body(&self, bytes: Bytes) -> RespBody {
        Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
    }
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
    peer: euca_service::Peer,
) -> Result<Resp, S3Error> {
    let started = (crate::meta::now_millis(), std::time::Instant::now());
    let (mut parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    // Like S3, no Transfer-Encoding on requests: hyper would let it override a
    // Content-Length (the request-smuggling shape), and S3 clients never need it.
    if parts.headers.contains_key("transfer-encoding") {
        return Err(S3Error::new(
            "NotImplemented",
            501,
            "A header you provided implies functionality that is not implemented",
        )
        .with("Header", "Transfer-Encoding"));
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
        return crate::cors::preflight(st, &parts, vb.as_deref(), path).await;
    }
    // For the access log (bucket logging): the request line as received.
    let request_line = st
        .access_logs
        .active()
        .then(|| format!("{} {} {:?}", parts.method, parts.uri, parts.version));
    // Authenticate before anything else looks at the request.
    let auth: Authenticated = match euca_aws::authenticate(
        &parts,
        st.identity.as_ref(),
        &AuthConfig::s3(&st.cfg.region),
        time::OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let e = S3Error::from(e);
            // S3 logs refused requests too, with no requester.
            if let Some(line) = &request_line {
                if let Ok((Some(bucket), key)) = address(strip_legacy_prefix(&raw_path), vb) {
                    let query = parse_query(parts.uri.query().unwrap_or(""));
                    let logged = Logged {
                        method: &parts.method,
                        headers: &parts.headers,
                        query: &query,
                        key: key.as_deref(),
                        requester: None,
                        peer: Some(peer),
                        request_id: rid,
                    };
                    if let Ok(Some(b)) = st.meta.bucket(&bucket).await {
                        log_request(st, &b, &logged, &Err(e.clone()), line, started);
                    }
                }
            }
            return Err(e);
        }
    };

    // S3 Control (the account's public access block) names no bucket.
    let control = crate::account_block::is_control(strip_legacy_prefix(&raw_path), &parts.headers);
    let (bucket, key) = if control {
        (None, None)
    } else {
        address(strip_legacy_prefix(&raw_path), vb)?
    };
    if let Some(k) = &key {
        if k.len() > MAX_KEY_BYTES {
            return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long")
                .with("MaxSizeAllowed", "1024"));
        }
    }
    let mut r = Req {
        method: parts.method.clone(),
        headers: parts.headers,
        query: parse_query(parts.uri.query().unwrap_or("")),
        bucket,
        key,
        principal: auth.principal,
        peer: Some(peer),
        payload: auth.payload,
        body: Some(crate::body::incoming(body)),
        request_id: rid.to_string(),
        op: "Unknown",
    };
    let result = if control {
        crate::api_account::dispatch(st, &mut r).await
    } else {
        // The accounts' blocks as of now (at most account_block::REFRESH old)
        // before anything is authorized.
        match st.account_blocks.refresh(&*st.meta, &st.system_id).await {
            Ok(()) => dispatch(st, &mut r).await,
            Err(e) => Err(e),
        }
    };
    let result = result.map_err(|e| {
        if e.resource.is_none() {
            e.with_resource(r.resource())
        } else {
            e
        }
    });
    if let (Some(line), Some(bucket)) = (request_line, r.bucket.as_deref()) {
        let logged = Logged {
            method: &r.method,
            headers: &r.headers,
            query: &r.query,
            key: r.key.as_deref(),
            requester: r.principal.as_ref().map(|p| p.canonical_id.as_str()),
            peer: r.peer,
            request_id: &r.request_id,
        };
        if let Ok(Some(b)) = st.meta.bucket(bucket).await {
            log_request(st, &b, &logged, &result, &line, started);
        }
    }
    result
}

/// The bucket and key a (prefix-stripped) path names, with the virtual-host bucket
/// `vb` if there is one; keys percent-decoded, never normalised.
fn address(path: &str, vb: Option<String>) -> Result<(Option<String>, Option<String>), S3Error> {
    let decoded = |s: &str| -> Result<String, S3Error> {
        String::from_utf8(uri_decode(s))
            .map_err(|_| S3Error::invalid_argument("Object key is not valid UTF-8"))
    };
    Ok(match vb {
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
    })
}

/// What the access log needs of a request (authenticated or not).
struct Logged<'a> {
    method: &'a Method,
    headers: &'a http::HeaderMap,
    query: &'a [(String, String)],
    key: Option<&'a str>,
    requester: Option<&'a str>,
    peer: Option<euca_service::Peer>,
    request_id: &'a str,
}

/// Queues the access log record of a request whose bucket has logging on.
fn log_request(
    st: &State,
    b: &crate::meta::BucketMeta,
    r: &Logged<'_>,
    result: &Result<Resp, S3Error>,
    request_line: &str,
    started: (i64, std::time::Instant),
) {
    if b.config(crate::meta::BucketConfig::LOGGING).is_none() {
        return;
    }
    let ms = u64::try_from(started.1.elapsed().as_millis()).unwrap_or(u64::MAX);
    let head = *r.method == Method::HEAD;
    let number = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let text = |h: &'_ http::HeaderMap, name: &str| -> Option<String> {
        h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    };
    let (status, error_code, bytes_sent, object_size, version) = match result {
        Ok(resp) => {
            let h = resp.headers();
            let sent = if head {
                None
            } else {
                number(h, "content-length")
            };
            // The whole object's size: a range's total, a GET's length, a PUT's body.
            let size = if r.key.is_none() {
                None
            } else if let Some(total) = text(h, "content-range")
                .and_then(|v| v.rsplit_once('/').and_then(|(_, n)| n.parse().ok()))
            {
                Some(total)
            } else if matches!(*r.method, Method::GET | Method::HEAD) {
                number(h, "content-length")
            } else if *r.method == Method::PUT {
                number(r.headers, "x-amz-decoded-content-length")
                    .or_else(|| number(r.headers, "content-length"))
            } else {
                None
            };
            (
                resp.status().as_u16(),
                None,
                sent,
                size,
                text(h, "x-amz-version-id"),
            )
        }
        Err(e) => {
            let sent = (!head).then(|| e.to_xml(r.request_id).len() as u64);
            (e.status, Some(e.code), sent, None, None)
        }
    };
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let has = |name: &str| r.query.iter().any(|(k, _)| k == name);
    let auth = header("authorization");
    let signature_version = match auth {
        Some(a) if a.starts_with("AWS4-") => Some("SigV4"),
        Some(a) if a.starts_with("AWS ") => Some("SigV2"),
        Some(_) => None,
        None if has("X-Amz-Algorithm") => Some("SigV4"),
        None if has("Signature") => Some("SigV2"),
        None => None,
    };
    let auth_type = match (auth, signature_version) {
        (Some(_), _) => Some("AuthHeader"),
        (None, Some(_)) => Some("QueryString"),
        _ => None,
    };
    let version = version.or_else(|| {
        r.query
            .iter()
            .find(|(k, _)| k == "versionId")
            .map(|(_, v)| v.clone())
    });
    let rec = crate::access_logs::Record {
        bucket_owner: &b.owner.id,
        bucket: &b.name,
        time: started.0,
        remote_ip: r.peer.map(|p| p.client.ip().to_canonical()),
        requester: r.requester,
        request_id: r.request_id,
        operation: crate::access_logs::operation(
            r.method,
            r.key.is_some(),
            r.query,
            r.headers.contains_key("x-amz-copy-source"),
        ),
        key: r.key,
        request_line,
        status,
        error_code,
        bytes_sent,
        object_size,
        total_ms: ms,
        turnaround_ms: ms,
        referer: header("referer"),
        user_agent: header("user-agent"),
        version_id: version.as_deref(),
        signature_version,
        auth_type,
        host: header("host"),
        tls: r.peer.is_some_and(|p| p.tls),
    };
    st.access_logs.push(b, &rec);
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
            _ => Err(S3Error::method_not_allowed()),
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
