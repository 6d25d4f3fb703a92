//! CORS: the bucket's configuration (Put/Get/DeleteBucketCors), preflight (`OPTIONS`)
//! and the `Access-Control-*` headers of actual requests.
//!
//! The configuration is kept as [`BucketConfig::CORS`] in its canonical XML (what
//! GetBucketCors answers), validated when it is put, and parsed again when a request
//! needs it (only requests with an `Origin` header do).
//!
//! Preflights carry no credentials, so they are answered before authentication, and
//! read no body. Order, as S3: no `Origin` → 400 `BadRequest`; a bucket that does not
//! exist → 404 `NoSuchBucket` (what every other request on it answers, so nothing new
//! is revealed); no `Access-Control-Request-Method` → 400 `BadRequest`; no configuration → 403 "CORS is not enabled for this bucket."; no
//! rule matching → 403 "This CORS request is not allowed…"; otherwise 200 with the
//! matching rule's headers. A rule matches when one of its origins matches `Origin`
//! (a pattern may hold one `*`), one of its methods is exactly
//! `Access-Control-Request-Method`, and every `Access-Control-Request-Headers` entry
//! matches one of its header patterns (case-insensitively, `*` wildcards).
use crate::error::{S3Error, S3Result};
use crate::handler::{self, empty, xml, Req, Resp};
use crate::meta::{BucketConfig, BucketMeta};
use crate::state::State;
use crate::xmlin::Node;
use euca_aws::encoding::uri_decode;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::Arc;

/// Most rules one configuration may hold (S3's limit).
pub const MAX_RULES: usize = 100;
/// Largest PutBucketCors body read (S3's sub-resource document limit is of this order).
const MAX_BODY: u64 = 64 * 1024;
/// The methods a rule may allow.
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One `CORSRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u32>,
}

/// A bucket's CORS configuration: its rules, in order (the first match wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsConfig {
    pub rules: Vec<CorsRule>,
}

/// A pattern with at most one `*`, matched against the whole of `s`.
fn wildcard_match(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, suf)) => {
            s.len() >= pre.len() + suf.len() && s.starts_with(pre) && s.ends_with(suf)
        }
    }
}

impl CorsRule {
    fn origin_matches(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|p| wildcard_match(p, origin))
    }
    fn method_matches(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }
    /// Header names are case-insensitive: patterns and names compare lower-cased.
    fn header_matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.allowed_headers
            .iter()
            .any(|p| wildcard_match(&p.to_ascii_lowercase(), &name))
    }
    /// `Access-Control-Allow-Origin`: `*` for a rule that allows any origin, as S3
    /// answers; otherwise the request's own origin.
    fn allow_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.allowed_origins.iter().any(|o| o == "*") {
            "*"
        } else {
            origin
        }
    }
}

impl CorsConfig {
    /// Parses and validates a `CORSConfiguration` body.
    pub fn from_xml(node: &Node) -> S3Result<Self> {
        if node.name != "CORSConfiguration" {
            return Err(S3Error::malformed_xml());
        }
        const RULE_ELEMENTS: [&str; 6] = [
            "ID",
            "AllowedOrigin",
            "AllowedMethod",
            "AllowedHeader",
            "ExposeHeader",
            "MaxAgeSeconds",
        ];
        let mut rules = Vec::new();
        // Only rules, and only the elements of the schema in them.
        if node.children.iter().any(|c| c.name != "CORSRule") {
            return Err(S3Error::malformed_xml());
        }
        for r in node.children("CORSRule") {
            if r.children
                .iter()
                .any(|c| !RULE_ELEMENTS.contains(&c.name.as_str()))
            {
                return Err(S3Error::malformed_xml());
            }
            let texts =
                |name: &str| -> Vec<String> { r.children(name).map(|c| c.text.clone()).collect() };
            let rule = CorsRule {
                id: r.text_of("ID").map(String::from),
                allowed_origins: texts("AllowedOrigin"),
                // Methods are tokens: surrounding XML whitespace is layout.
                allowed_methods: r
                    .children("AllowedMethod")
                    .map(|c| crate::xmlin::trim_xml_space(&c.text).to_string())
                    .collect(),
                allowed_headers: texts("AllowedHeader"),
                expose_headers: texts("ExposeHeader"),
                max_age: match r.token_of("MaxAgeSeconds") {
                    None => None,
                    Some(v) => Some(v.parse::<u32>().map_err(|_| S3Error::malformed_xml())?),
                },
            };
            if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
                return Err(S3Error::malformed_xml());
            }
            if rule.id.as_ref().is_some_and(|id| id.len() > 255) {
                return Err(S3Error::invalid_argument(
                    "The ID of a CORS rule can be at most 255 characters long.",
                ));
            }
            for m in &rule.allowed_methods {
                if !METHODS.contains(&m.as_str()) {
                    return Err(S3Error::invalid_request(format!(
                        "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                    )));
                }
            }
            for o in &rule.allowed_origins {
                if o.matches('*').count() > 1 {
                    return Err(S3Error::invalid_request(format!(
                        "AllowedOrigin \"{o}\" can not have more than one wildcard."
                    )));
                }
            }
            for h in &rule.allowed_headers {
                if h.matches('*').count() > 1 {
                    return Err(S3Error::invalid_request(format!(
                        "AllowedHeader \"{h}\" can not have more than one wildcard."
                    )));
                }
            }
            rules.push(rule);
        }
        if rules.is_empty() || rules.len() > MAX_RULES {
            return Err(S3Error::malformed_xml());
        }
        Ok(Self { rules })
    }

    /// The canonical document (what GetBucketCors answers).
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.root("CORSConfiguration", S3_NS);
        for r in &self.rules {
            w.open("CORSRule");
            if let Some(id) = &r.id {
                w.elem("ID", id);
            }
            for h in &r.allowed_headers {
                w.elem("AllowedHeader", h);
            }
            for m in &r.allowed_methods {
                w.elem("AllowedMethod", m);
            }
            for o in &r.allowed_origins {
                w.elem("AllowedOrigin", o);
            }
            for e in &r.expose_headers {
                w.elem("ExposeHeader", e);
            }
            if let Some(a) = r.max_age {
                w.elem("MaxAgeSeconds", a.to_string());
            }
            w.close();
        }
        w.finish()
    }

    /// The bucket's configuration, if it has one (a stored document that no longer
    /// parses counts as none: it was validated when put).
    pub fn of_bucket(b: &BucketMeta) -> Option<Self> {
        let doc = b.config(BucketConfig::CORS)?;
        let node = crate::xmlin::parse(doc.as_bytes()).ok()?;
        Self::from_xml(&node).ok()
    }

    /// The first rule allowing `origin` with `method` and every header of `headers`.
    pub fn find(&self, origin: &str, method: &str, headers: &[&str]) -> Option<&CorsRule> {
        self.rules.iter().find(|r| {
            r.origin_matches(origin)
                && r.method_matches(method)
                && headers.iter().all(|h| r.header_matches(h))
        })
    }
}

/// The bucket owner, unless the bucket policy says otherwise (S3's default for
/// `s3:GetBucketCORS` / `s3:PutBucketCORS`, which also covers deleting).
fn only_owner(b: &BucketMeta, r: &Req, action: &str) -> S3Result<()> {
    crate::authz::check(r, b, action, None, crate::authz::AclRule::BucketOwner)
}

/// PutBucketCors: the bucket owner only (S3's default for `s3:PutBucketCORS`).
pub async fn put_bucket_cors(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PutBucketCors";
    let name = r.bucket().to_string();
    let b = handler::load_bucket(st, &name).await?;
    only_owner(&b, r, "s3:PutBucketCORS")?;
    let node = r.xml_body(MAX_BODY).await?;
    let cfg = CorsConfig::from_xml(&node)?;
    st.set_bucket_config(&name, BucketConfig::CORS, Some(cfg.to_xml()))
        .await?;
    Ok(empty(StatusCode::OK))
}

/// GetBucketCors: the stored document, or 404 `NoSuchCORSConfiguration`.
pub async fn get_bucket_cors(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetBucketCors";
    let name = r.bucket().to_string();
    let b = handler::load_bucket(st, &name).await?;
    only_owner(&b, r, "s3:GetBucketCORS")?;
    match b.config(BucketConfig::CORS) {
        Some(doc) => Ok(xml(StatusCode::OK, doc.to_string())),
        None => Err(S3Error::new(
            "NoSuchCORSConfiguration",
            404,
            "The CORS configuration does not exist",
        )
        .with("BucketName", &name)),
    }
}

/// DeleteBucketCors: 204 whether or not there was one.
pub async fn delete_bucket_cors(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "DeleteBucketCors";
    let name = r.bucket().to_string();
    let b = handler::load_bucket(st, &name).await?;
    only_owner(&b, r, "s3:PutBucketCORS")?;
    st.set_bucket_config(&name, BucketConfig::CORS, None)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from a validated configuration or the request's own headers; one
    // that is not header text is left out rather than failing the answer.
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The `Access-Control-*` headers a matching rule adds (preflight and actual requests).
fn add_rule_headers(h: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    let allow_origin = rule.allow_origin(origin);
    set(h, "access-control-allow-origin", allow_origin);
    set(
        h,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if allow_origin != "*" {
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
    if !rule.expose_headers.is_empty() {
        set(
            h,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(a) = rule.max_age {
        set(h, "access-control-max-age", &a.to_string());
    }
    h.insert(
        "vary",
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        ),
    );
}

fn header_text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Answers a preflight. `vhost_bucket` is the bucket named by `Host`, if any; `path`
/// is the request path with the legacy prefix already removed.
pub async fn preflight(
    st: &State,
    parts: &Parts,
    vhost_bucket: Option<&str>,
    path: &str,
) -> S3Result<Resp> {
    let Some(origin) = parts.headers.get("origin") else {
        return Err(S3Error::new(
            "BadRequest",
            400,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (bucket, has_key) = match vhost_bucket {
        Some(b) => (Some(b.to_string()), !rest.is_empty()),
        None => match rest.split_once('/') {
            None if rest.is_empty() => (None, false),
            None => (Some(decode(rest)), false),
            Some((b, k)) => (Some(decode(b)), !k.is_empty()),
        },
    };
    let b = match &bucket {
        Some(name) => Some(handler::load_bucket(st, name).await?),
        None => None,
    };
    let Some(method) = header_text(&parts.headers, "access-control-request-method") else {
        return Err(S3Error::new(
            "BadRequest",
            400,
            "Invalid Access-Control-Request-Method: null",
        ));
    };
    let resource_type = if has_key { "OBJECT" } else { "BUCKET" };
    let Some(cfg) = b.as_ref().and_then(CorsConfig::of_bucket) else {
        return Err(S3Error::new(
            "AccessForbidden",
            403,
            "CORSResponse: CORS is not enabled for this bucket.",
        )
        .with("Method", method)
        .with("ResourceType", resource_type));
    };
    // An origin that is not text cannot match any rule (rules are text).
    let origin = origin.to_str().unwrap_or("");
    // The requested headers: a comma-separated list of names (the spaces around
    // the commas are list syntax, not part of any name).
    let requested: Vec<&str> = header_text(&parts.headers, "access-control-request-headers")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim_matches([' ', '\t']))
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let rule = (!origin.is_empty())
        .then(|| cfg.find(origin, method, &requested))
        .flatten();
    let Some(rule) = rule else {
        return Err(S3Error::new(
            "AccessForbidden",
            403,
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        )
        .with("Method", method)
        .with("ResourceType", resource_type));
    };
    let mut resp = empty(StatusCode::OK);
    let h = resp.headers_mut();
    add_rule_headers(h, rule, origin);
    if !requested.is_empty() {
        set(h, "access-control-allow-headers", &requested.join(", "));
    }
    Ok(resp)
}

/// What an actual (non-preflight) request needs to get its CORS headers: its
/// `Origin`, its method and the bucket it names.
pub struct ActualRequest {
    origin: String,
    method: Method,
    bucket: String,
}

impl ActualRequest {
    /// `None` unless the request has an `Origin` (text) and names a bucket.
    pub fn of(method: &Method, headers: &HeaderMap, bucket: Option<String>) -> Option<Self> {
        if *method == Method::OPTIONS {
            return None;
        }
        let origin = header_text(headers, "origin")?.to_string();
        Some(Self {
            origin,
            method: method.clone(),
            bucket: bucket?,
        })
    }

    /// Adds the headers of the first rule matching the origin and method to the
    /// answer, success or error alike, as S3 does.
    pub async fn decorate(&self, st: &State, resp: &mut Resp) {
        let Ok(Some(b)) = st.meta.bucket(&self.bucket).await else {
            return;
        };
        let Some(cfg) = CorsConfig::of_bucket(&b) else {
            return;
        };
        if let Some(rule) = cfg.find(&self.origin, self.method.as_str(), &[]) {
            add_rule_headers(resp.headers_mut(), rule, &self.origin);
        }
    }
}

fn decode(s: &str) -> String {
    String::from_utf8_lossy(&uri_decode(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmlin::parse;

    fn cfg(body: &str) -> S3Result<CorsConfig> {
        CorsConfig::from_xml(&parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "http://a"));
        assert!(wildcard_match(
            "http://*.example.com",
            "http://a.example.com"
        ));
        assert!(!wildcard_match(
            "http://*.example.com",
            "http://example.com"
        ));
        assert!(!wildcard_match("http://a.com", "http://a.com.evil"));
        assert!(wildcard_match("x-amz-*", "x-amz-date"));
        // The prefix and suffix may not overlap.
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn parse_validate_round_trip() {
        let c = cfg("<CORSConfiguration><CORSRule><ID>r1</ID><AllowedOrigin>http://*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>300</MaxAgeSeconds></CORSRule><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>HEAD</AllowedMethod></CORSRule></CORSConfiguration>").unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].max_age, Some(300));
        let again = CorsConfig::from_xml(&parse(c.to_xml().as_bytes()).unwrap()).unwrap();
        assert_eq!(again, c);

        let r = c
            .find("http://a.example.com", "PUT", &["X-Amz-Date"])
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(
            r.allow_origin("http://a.example.com"),
            "http://a.example.com"
        );
        assert!(c
            .find("http://a.example.com", "PUT", &["authorization"])
            .is_none());
        assert!(c.find("http://a.example.com", "DELETE", &[]).is_none());
        let any = c.find("http://other", "HEAD", &[]).unwrap();
        assert_eq!(any.allow_origin("http://other"), "*");
        // Methods are case-sensitive, as HTTP methods are.
        assert!(c.find("http://other", "head", &[]).is_none());

        let err = |b: &str| cfg(b).unwrap_err();
        assert_eq!(err("<CORSConfiguration/>").code, "MalformedXML");
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "MalformedXML"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "InvalidRequest"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "InvalidRequest"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>**</AllowedHeader></CORSRule></CORSConfiguration>").code,
            "InvalidRequest"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>x</MaxAgeSeconds></CORSRule></CORSConfiguration>").code,
            "MalformedXML"
        );
        assert_eq!(
            err("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethods>PUT</AllowedMethods></CORSRule></CORSConfiguration>").code,
            "MalformedXML"
        );
        assert_eq!(
            err("<CORSConfiguration><Rule/><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code,
            "MalformedXML"
        );
        let rule = "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>";
        assert!(cfg(&format!(
            "<CORSConfiguration>{}</CORSConfiguration>",
            rule.repeat(MAX_RULES)
        ))
        .is_ok());
        assert_eq!(
            err(&format!(
                "<CORSConfiguration>{}</CORSConfiguration>",
                rule.repeat(MAX_RULES + 1)
            ))
            .code,
            "MalformedXML"
        );
    }
}
