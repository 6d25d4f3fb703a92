//! Request authentication, done once before routing for every API.
//!
//! The request's auth mode is classified exactly once (header SigV4, query SigV4, header
//! SigV2, query SigV2, or anonymous); mixing header and query credentials is refused.
//! The result is a verified [`Principal`] (or anonymous) and the [`PayloadCheck`] that
//! the body reader must enforce, so no handler can forget to verify anything.
use crate::credential::lookup_key;
pub use crate::credential::{
    constant_time_eq, AuthConfig, AuthError, Credential, CredentialLookup, LookupError, Principal,
};
use crate::encoding::{parse_form, parse_query, EncodingError};
use crate::sigv2;
use crate::sigv4::{self, AuthHeader, CredentialScope, PathForm};
use crate::timefmt::{format_amz_date, parse_amz_date, parse_http_date};
use bytes::Bytes;
use http::request::Parts;
use std::future::Future;
use time::{Duration, OffsetDateTime};

/// Per-chunk signature state for `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`.
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    pub key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: String,
}

impl ChunkSigner {
    pub fn chunk_signature(&self, prev: &str, chunk_sha256_hex: &str) -> String {
        let sts = sigv4::chunk_string_to_sign(&self.amz_date, &self.scope, prev, chunk_sha256_hex);
        hex::encode(sigv4::hmac_sha256(&self.key, sts.as_bytes()))
    }
    pub fn trailer_signature(&self, prev: &str, trailer_sha256_hex: &str) -> String {
        let sts =
            sigv4::trailer_string_to_sign(&self.amz_date, &self.scope, prev, trailer_sha256_hex);
        hex::encode(sigv4::hmac_sha256(&self.key, sts.as_bytes()))
    }
}

/// What the body must satisfy for the request to count as authenticated.
#[derive(Debug, Clone)]
pub enum PayloadCheck {
    /// UNSIGNED-PAYLOAD, SigV2 or anonymous: no binding of the body to the signature.
    Unsigned,
    /// The body's SHA-256 must equal this (hex, lower-case).
    Sha256(String),
    /// `Content-Encoding: aws-chunked` framing: decode it; verify chunk signatures if
    /// `signer` is set; read trailing headers if `trailer`.
    Chunked {
        signer: Option<ChunkSigner>,
        trailer: bool,
        decoded_length: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Option<Principal>,
    pub payload: PayloadCheck,
}

fn header_str<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// How a request claims to be signed; classified once, from the `Authorization`
/// header and the query parameters. Mixing header and query credentials is refused.
enum Mode<'a> {
    /// `Authorization: AWS4-HMAC-SHA256 ...`
    V4Header(&'a str),
    /// `Authorization: AWS ...` (what follows `AWS `).
    V2Header(&'a str),
    /// An `Authorization` header of no known scheme.
    OtherHeader,
    /// `X-Amz-Algorithm` / `X-Amz-Credential` / `X-Amz-Signature` in the query.
    V4Query,
    /// `AWSAccessKeyId` / `Signature` in the query.
    V2Query,
    Anonymous,
}

fn classify<'a>(parts: &'a Parts, query: &[(String, String)]) -> Result<Mode<'a>, AuthError> {
    let has = |name: &str| query.iter().any(|(k, _)| k == name);
    let authz = header_str(parts, "authorization");
    let q_v4 = has("X-Amz-Algorithm") || has("X-Amz-Credential") || has("X-Amz-Signature");
    let q_v2 = has("AWSAccessKeyId") || has("Signature");
    let modes = authz.is_some() as u8 + q_v4 as u8 + q_v2 as u8;
    if modes > 1 {
        return Err(AuthError::MixedAuth);
    }
    Ok(match authz {
        Some(a) if a.starts_with(sigv4::ALGORITHM) => Mode::V4Header(a),
        Some(a) => match a.strip_prefix("AWS ") {
            Some(rest) => Mode::V2Header(rest),
            None => Mode::OtherHeader,
        },
        None if q_v4 => Mode::V4Query,
        None if q_v2 => Mode::V2Query,
        None => Mode::Anonymous,
    })
}

fn unsupported_authorization() -> AuthError {
    AuthError::HeaderMalformed("unsupported authorization type".into())
}

/// Authenticates one request. `raw_path` is the path exactly as received.
pub async fn authenticate(
    parts: &Parts,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<Authenticated, AuthError> {
    let raw_query = parts.uri.query().unwrap_or("");
    let query = parse_query(raw_query);
    match classify(parts, &query)? {
        Mode::V4Header(a) => verify_v4_header(parts, a, lookup, cfg, now).await,
        Mode::V2Header(rest) => {
            let p = sigv2::verify_header(parts, rest, lookup, cfg, now).await?;
            Ok(Authenticated {
                principal: Some(p),
                payload: v2_payload(parts)?,
            })
        }
        Mode::OtherHeader => Err(unsupported_authorization()),
        Mode::V4Query => verify_v4_query(parts, &query, lookup, cfg, now).await,
        Mode::V2Query => {
            let p = sigv2::verify_query(parts, &query, lookup, cfg, now).await?;
            Ok(Authenticated {
                principal: Some(p),
                payload: v2_payload(parts)?,
            })
        }
        // Anonymous: the body may still be aws-chunked (unsigned) framing.
        Mode::Anonymous => Ok(Authenticated {
            principal: None,
            payload: v2_payload(parts)?,
        }),
    }
}

/// [`authenticate_form`] failed: the request is not authenticated, or its body could
/// not be read (the caller's own error, e.g. over its size cap).
#[derive(Debug, thiserror::Error)]
pub enum FormAuthError<E> {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Body(E),
}

/// Authenticates a request whose whole (small) body is part of what is signed: EC2
/// Query API form posts (`POST` with an `application/x-www-form-urlencoded` body) and
/// EC2 `GET` requests with their parameters in the query.
///
/// Accepted: header SigV4 and presigned (`X-Amz-*` query) SigV4, with the region of
/// the credential scope when `cfg.region_from_scope` ([`AuthConfig::ec2`]). Refused
/// before any body byte is read: anonymous requests
/// ([`AuthError::MissingAuthentication`]: EC2 has no anonymous access), Signature
/// Version 2 ([`AuthError::UnsupportedSignature`]), a malformed Authorization header
/// or query, a wrong scope, a request time outside `cfg.max_skew`, an unknown or
/// disabled key, an unsigned `host` or `x-amz-*` header.
///
/// Then `read_body` is awaited (the caller caps it) and the signature is checked over
/// the body's SHA-256. When the request carries a signed `X-Amz-Content-SHA256`
/// (euca2ools), the signature covers that value and it must also be the body's
/// SHA-256 ([`AuthError::ContentSha256Mismatch`] otherwise). A presigned request with
/// an empty body may also be signed over `UNSIGNED-PAYLOAD` (nothing is left unsigned).
///
/// Returns the verified caller and the body; decode the parameters with
/// [`crate::encoding::parse_form`] (body) or [`form_query_params`] (query).
pub async fn authenticate_form<F, Fut, E>(
    parts: &Parts,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
    read_body: F,
) -> Result<(Principal, Bytes), FormAuthError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes, E>>,
{
    let raw_query = parts.uri.query().unwrap_or("");
    let query = parse_query(raw_query);
    let pending = match classify(parts, &query)? {
        Mode::V4Header(a) => prepare_v4_header(parts, a, lookup, cfg, now).await?,
        Mode::V4Query => prepare_v4_query(parts, &query, lookup, cfg, now).await?,
        Mode::V2Header(_) | Mode::V2Query => {
            return Err(AuthError::UnsupportedSignature("Signature Version 2".into()).into())
        }
        Mode::OtherHeader => return Err(unsupported_authorization().into()),
        Mode::Anonymous if query.iter().any(|(k, _)| k == "SignatureVersion") => {
            return Err(AuthError::UnsupportedSignature("Signature Version 2".into()).into())
        }
        Mode::Anonymous => return Err(AuthError::MissingAuthentication.into()),
    };
    let body = read_body().await.map_err(FormAuthError::Body)?;
    let body_hash = crate::hash::sha256_hex(&body);
    let claimed = header_str(parts, "x-amz-content-sha256")
        .filter(|_| pending.signed.iter().any(|h| h == "x-amz-content-sha256"));
    match claimed {
        Some(claimed) => {
            // Header SigV4 always signs this header when present (check_signed_set).
            if !pending.matches(parts, claimed.trim())? {
                return Err(AuthError::SignatureDoesNotMatch.into());
            }
            if !claimed.trim().eq_ignore_ascii_case(&body_hash) {
                return Err(AuthError::ContentSha256Mismatch.into());
            }
        }
        None => {
            let ok = pending.matches(parts, &body_hash)?
                || (pending.presigned
                    && body.is_empty()
                    && pending.matches(parts, sigv4::UNSIGNED_PAYLOAD)?);
            if !ok {
                return Err(AuthError::SignatureDoesNotMatch.into());
            }
        }
    }
    Ok((pending.principal, body))
}

/// The signature fields of a browser POST form (S3 POST Object): what signs the
/// form's base64 `policy` field, exactly as the form carried it.
#[derive(Debug, Clone, Copy)]
pub enum PostFormSignature<'a> {
    /// `x-amz-algorithm` (must be AWS4-HMAC-SHA256), `x-amz-credential`,
    /// `x-amz-date`, `x-amz-signature` (hex HMAC-SHA256 of the policy).
    V4 {
        algorithm: &'a str,
        credential: &'a str,
        amz_date: &'a str,
        signature: &'a str,
    },
    /// `AWSAccessKeyId` and `signature` (base64 HMAC-SHA1 of the policy).
    V2 {
        access_key: &'a str,
        signature: &'a str,
    },
}

/// Verifies a POST form's policy signature and returns who signed it. The time is not
/// checked against a skew: the policy's own `expiration` bounds the form's life (the
/// caller checks it). The V4 credential scope must name `cfg`'s region and service and
/// the date of `x-amz-date`, as for any SigV4 request.
pub async fn verify_post_policy(
    policy_b64: &str,
    sig: PostFormSignature<'_>,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
) -> Result<Principal, AuthError> {
    match sig {
        PostFormSignature::V4 {
            algorithm,
            credential,
            amz_date,
            signature,
        } => {
            if algorithm != sigv4::ALGORITHM {
                return Err(AuthError::InvalidArgument(format!(
                    "the x-amz-algorithm {algorithm} is not supported; use {}",
                    sigv4::ALGORITHM
                )));
            }
            let scope = CredentialScope::parse(credential).ok_or_else(|| {
                AuthError::InvalidArgument("the x-amz-credential field is malformed".into())
            })?;
            if parse_amz_date(amz_date).is_none() {
                return Err(AuthError::InvalidArgument(
                    "the x-amz-date field is not a date in ISO 8601 basic form".into(),
                ));
            }
            let region = check_scope(&scope, amz_date, cfg, AuthError::InvalidArgument)?;
            let cred = lookup_key(lookup, &scope.access_key).await?;
            let key = sigv4::signing_key(&cred.secret, &scope.date, region, cfg.service);
            let expected = hex::encode(sigv4::hmac_sha256(&key, policy_b64.as_bytes()));
            if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
                return Err(AuthError::SignatureDoesNotMatch);
            }
            Ok(cred.principal)
        }
        PostFormSignature::V2 {
            access_key,
            signature,
        } => {
            let cred = lookup_key(lookup, access_key).await?;
            let expected = sigv2::hmac_sha1_b64(&cred.secret, policy_b64);
            if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
                return Err(AuthError::SignatureDoesNotMatch);
            }
            Ok(cred.principal)
        }
    }
}

/// The query parameters that authenticate a presigned SigV4 request; not API
/// parameters.
const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// The API parameters of an EC2 Query request's query string (GET requests), decoded
/// with the form rules of [`crate::encoding::parse_form`] and without the presigned
/// SigV4 `X-Amz-*` parameters.
pub fn form_query_params(parts: &Parts) -> Result<Vec<(String, String)>, EncodingError> {
    let raw = parts.uri.query().unwrap_or("");
    let mut params = parse_form(raw.as_bytes())?;
    params.retain(|(k, _)| !PRESIGN_PARAMS.contains(&k.as_str()));
    Ok(params)
}

/// Payload handling for requests not signed with SigV4: only unsigned framing allowed.
fn v2_payload(parts: &Parts) -> Result<PayloadCheck, AuthError> {
    match header_str(parts, "x-amz-content-sha256") {
        Some(sigv4::STREAMING_UNSIGNED_TRAILER) => Ok(PayloadCheck::Chunked {
            signer: None,
            trailer: true,
            decoded_length: decoded_length(parts)?,
        }),
        Some(v) if v.starts_with("STREAMING-") => Err(AuthError::InvalidArgument(
            "signed streaming payloads need a SigV4 signature".into(),
        )),
        _ => Ok(PayloadCheck::Unsigned),
    }
}

fn decoded_length(parts: &Parts) -> Result<Option<u64>, AuthError> {
    match header_str(parts, "x-amz-decoded-content-length") {
        None => Ok(None),
        Some(v) => {
            v.trim().parse::<u64>().map(Some).map_err(|_| {
                AuthError::InvalidArgument("invalid x-amz-decoded-content-length".into())
            })
        }
    }
}

/// Checks the credential scope against the request date and `cfg`, and returns the
/// region the signing key is derived with: `cfg.region`, or the scope's own region
/// where `cfg.region_from_scope` (EC2).
fn check_scope<'a>(
    cred: &'a CredentialScope,
    amz_date: &str,
    cfg: &'a AuthConfig,
    malformed: fn(String) -> AuthError,
) -> Result<&'a str, AuthError> {
    if !amz_date.starts_with(&cred.date) || cred.date.len() != 8 {
        return Err(malformed(format!(
            "credential date {} does not match the request date",
            cred.date
        )));
    }
    if !cfg.region_from_scope && cred.region != cfg.region {
        return Err(malformed(format!(
            "the region '{}' is wrong; expecting '{}'",
            cred.region, cfg.region
        )));
    }
    if cred.service != cfg.service {
        return Err(malformed(format!(
            "the service '{}' is wrong; expecting '{}'",
            cred.service, cfg.service
        )));
    }
    Ok(if cfg.region_from_scope {
        &cred.region
    } else {
        &cfg.region
    })
}

/// `host` must be signed, and so must every `x-amz-*` header the request carries.
fn check_signed_set(parts: &Parts, signed: &[String], presigned: bool) -> Result<(), AuthError> {
    if !signed.iter().any(|h| h == "host") {
        return Err(AuthError::UnsignedHeader("host".into()));
    }
    for name in parts.headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-amz-") && !signed.iter().any(|h| h == n) {
            // Presigned URLs cannot sign what the holder adds later, except these.
            if presigned && (n == "x-amz-content-sha256" || n == "x-amz-date") {
                continue;
            }
            return Err(AuthError::UnsignedHeader(n.to_string()));
        }
    }
    let mut sorted = signed.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != signed.len() {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    Ok(())
}

/// What a request claims: the derived key, its date and scope, and the signature.
struct Claim<'a> {
    key: &'a [u8; 32],
    amz_date: &'a str,
    scope: &'a str,
    signature: &'a str,
}

/// Computes the signature over the canonical request, trying the path as sent and then
/// re-encoded; returns true if either matches.
fn signature_matches(
    parts: &Parts,
    signed: &[String],
    payload_hash: &str,
    skip_query: Option<&str>,
    claim: &Claim,
) -> Result<bool, AuthError> {
    let Claim {
        key,
        amz_date,
        scope,
        signature: given,
    } = *claim;
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let cq = sigv4::canonical_query(raw_query, skip_query);
    for form in [PathForm::AsSent, PathForm::Reencoded] {
        let uri = sigv4::canonical_uri(raw_path, form);
        if form == PathForm::Reencoded && uri == sigv4::canonical_uri(raw_path, PathForm::AsSent) {
            break;
        }
        let cr = sigv4::CanonicalRequest {
            method: parts.method.as_str(),
            canonical_uri: uri,
            canonical_query: cq.clone(),
            headers: &parts.headers,
            signed_headers: signed,
            payload_hash,
        }
        .render()
        .ok_or(AuthError::SignatureDoesNotMatch)?;
        let sts = sigv4::string_to_sign(amz_date, scope, &cr);
        let sig = hex::encode(sigv4::hmac_sha256(key, sts.as_bytes()));
        if constant_time_eq(sig.as_bytes(), given.as_bytes()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A SigV4 request whose key is known and whose time, scope and signed-header set
/// are checked: only the signature over the canonical request (which needs the
/// payload hash, so possibly the body) remains to be verified.
struct V4Pending {
    principal: Principal,
    key: [u8; 32],
    amz_date: String,
    scope: String,
    signature: String,
    signed: Vec<String>,
    /// Presigned: `X-Amz-Signature` stays out of the canonical query.
    presigned: bool,
}

impl V4Pending {
    /// Whether the claimed signature is the one over this request with `payload_hash`.
    fn matches(&self, parts: &Parts, payload_hash: &str) -> Result<bool, AuthError> {
        let claim = Claim {
            key: &self.key,
            amz_date: &self.amz_date,
            scope: &self.scope,
            signature: &self.signature,
        };
        let skip = self.presigned.then_some("X-Amz-Signature");
        signature_matches(parts, &self.signed, payload_hash, skip, &claim)
    }

    fn chunk_signer(&self) -> ChunkSigner {
        ChunkSigner {
            key: self.key,
            amz_date: self.amz_date.clone(),
            scope: self.scope.clone(),
            seed_signature: self.signature.clone(),
        }
    }
}

/// Everything of a header-signed SigV4 request that needs no payload hash.
async fn prepare_v4_header(
    parts: &Parts,
    authz: &str,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<V4Pending, AuthError> {
    let h = AuthHeader::parse(authz)
        .ok_or_else(|| AuthError::HeaderMalformed("cannot parse".into()))?;
    let (amz_date, t) = request_time(parts, &h.signed_headers)?;
    let region = check_scope(&h.credential, &amz_date, cfg, AuthError::HeaderScope)?;
    let cred = lookup_key(lookup, &h.credential.access_key).await?;
    if (now - t).abs() > cfg.max_skew {
        return Err(AuthError::RequestTimeTooSkewed);
    }
    check_signed_set(parts, &h.signed_headers, false)?;
    let key = sigv4::signing_key(&cred.secret, &h.credential.date, region, cfg.service);
    Ok(V4Pending {
        principal: cred.principal,
        key,
        amz_date,
        scope: h.credential.scope(),
        signature: h.signature,
        signed: h.signed_headers,
        presigned: false,
    })
}

async fn verify_v4_header(
    parts: &Parts,
    authz: &str,
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<Authenticated, AuthError> {
    let pending = prepare_v4_header(parts, authz, lookup, cfg, now).await?;
    let payload_hash = match header_str(parts, "x-amz-content-sha256") {
        Some(v) => v.trim().to_string(),
        None if cfg.service == "s3" => return Err(AuthError::MissingContentSha256),
        None => sigv4::EMPTY_SHA256.to_string(),
    };
    if !pending.matches(parts, &payload_hash)? {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    let payload = payload_check(parts, &payload_hash, || pending.chunk_signer())?;
    Ok(Authenticated {
        principal: Some(pending.principal),
        payload,
    })
}

/// The request time of a header-signed SigV4 request, as the string to sign carries it
/// (`YYYYMMDDTHHMMSSZ`): from `X-Amz-Date`, else from `Date` (RFC 1123, which AWS
/// accepts too). The header the time comes from must be signed, or a captured request
/// could be replayed with a fresh time.
fn request_time(parts: &Parts, signed: &[String]) -> Result<(String, OffsetDateTime), AuthError> {
    let is_signed = |n: &str| signed.iter().any(|h| h == n);
    if let Some(v) = header_str(parts, "x-amz-date") {
        let t = parse_amz_date(v)
            .ok_or_else(|| AuthError::HeaderMalformed("invalid x-amz-date".into()))?;
        return Ok((v.to_string(), t));
    }
    match header_str(parts, "date").map(|d| (d, parse_http_date(d))) {
        Some((_, Some(t))) if is_signed("date") => Ok((format_amz_date(t), t)),
        Some((_, Some(_))) => Err(AuthError::UnsignedHeader("date".into())),
        _ => Err(AuthError::AccessDeniedDate),
    }
}

fn payload_check(
    parts: &Parts,
    payload_hash: &str,
    signer: impl FnOnce() -> ChunkSigner,
) -> Result<PayloadCheck, AuthError> {
    Ok(match payload_hash {
        sigv4::UNSIGNED_PAYLOAD => PayloadCheck::Unsigned,
        sigv4::STREAMING_PAYLOAD => PayloadCheck::Chunked {
            signer: Some(signer()),
            trailer: false,
            decoded_length: decoded_length(parts)?,
        },
        sigv4::STREAMING_PAYLOAD_TRAILER => PayloadCheck::Chunked {
            signer: Some(signer()),
            trailer: true,
            decoded_length: decoded_length(parts)?,
        },
        sigv4::STREAMING_UNSIGNED_TRAILER => PayloadCheck::Chunked {
            signer: None,
            trailer: true,
            decoded_length: decoded_length(parts)?,
        },
        h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            PayloadCheck::Sha256(h.to_ascii_lowercase())
        }
        h if h.starts_with("STREAMING-") => return Err(AuthError::NotImplemented(h.to_string())),
        _ => {
            return Err(AuthError::InvalidArgument(
                "x-amz-content-sha256 must be a SHA-256 hex digest or a known payload mode".into(),
            ))
        }
    })
}

/// Everything of a presigned SigV4 request that needs no payload hash.
async fn prepare_v4_query(
    parts: &Parts,
    query: &[(String, String)],
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<V4Pending, AuthError> {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let missing = |n: &str| AuthError::QueryMalformed(format!("missing {n}"));
    if q("X-Amz-Algorithm").ok_or_else(|| missing("X-Amz-Algorithm"))? != sigv4::ALGORITHM {
        return Err(AuthError::QueryMalformed(
            "unsupported X-Amz-Algorithm".into(),
        ));
    }
    let cred_scope =
        CredentialScope::parse(q("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?)
            .ok_or_else(|| AuthError::QueryMalformed("invalid X-Amz-Credential".into()))?;
    let amz_date = q("X-Amz-Date")
        .ok_or_else(|| missing("X-Amz-Date"))?
        .to_string();
    let t = parse_amz_date(&amz_date)
        .ok_or_else(|| AuthError::QueryMalformed("invalid X-Amz-Date".into()))?;
    let expires: i64 = q("X-Amz-Expires")
        .ok_or_else(|| missing("X-Amz-Expires"))?
        .parse()
        .map_err(|_| AuthError::QueryMalformed("X-Amz-Expires must be a number".into()))?;
    // As AWS: out of range is malformed (400); 0 is a URL that has already expired (403).
    if !(0..=604_800).contains(&expires) {
        return Err(AuthError::QueryMalformed(
            "X-Amz-Expires must be non-negative and at most 604800 seconds".into(),
        ));
    }
    let signed: Vec<String> = q("X-Amz-SignedHeaders")
        .ok_or_else(|| missing("X-Amz-SignedHeaders"))?
        .split(';')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let signature = q("X-Amz-Signature")
        .ok_or_else(|| missing("X-Amz-Signature"))?
        .to_string();
    let region = check_scope(&cred_scope, &amz_date, cfg, AuthError::QueryScope)?;
    let cred = lookup_key(lookup, &cred_scope.access_key).await?;
    if t - now > cfg.max_skew {
        return Err(AuthError::RequestTimeTooSkewed);
    }
    if expires == 0 || now > t + Duration::seconds(expires) {
        return Err(AuthError::Expired);
    }
    check_signed_set(parts, &signed, true)?;
    let key = sigv4::signing_key(&cred.secret, &cred_scope.date, region, cfg.service);
    Ok(V4Pending {
        principal: cred.principal,
        key,
        amz_date,
        scope: cred_scope.scope(),
        signature,
        signed,
        presigned: true,
    })
}

async fn verify_v4_query(
    parts: &Parts,
    query: &[(String, String)],
    lookup: &dyn CredentialLookup,
    cfg: &AuthConfig,
    now: OffsetDateTime,
) -> Result<Authenticated, AuthError> {
    let pending = prepare_v4_query(parts, query, lookup, cfg, now).await?;
    let signed = &pending.signed;
    let payload_hash = if signed.iter().any(|h| h == "x-amz-content-sha256") {
        header_str(parts, "x-amz-content-sha256")
            .unwrap_or(sigv4::UNSIGNED_PAYLOAD)
            .to_string()
    } else {
        sigv4::UNSIGNED_PAYLOAD.to_string()
    };
    if !pending.matches(parts, &payload_hash)? {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    let payload = payload_check(parts, &payload_hash, || pending.chunk_signer())?;
    Ok(Authenticated {
        principal: Some(pending.principal),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Signer;

    struct One(Credential);
    #[async_trait::async_trait]
    impl CredentialLookup for One {
        async fn lookup(&self, k: &str) -> Result<Option<Credential>, LookupError> {
            Ok((k == self.0.principal.access_key).then(|| self.0.clone()))
        }
    }

    /// A store that cannot be reached.
    struct Down;
    #[async_trait::async_trait]
    impl CredentialLookup for Down {
        async fn lookup(&self, _: &str) -> Result<Option<Credential>, LookupError> {
            Err(LookupError("connection refused".into()))
        }
    }

    fn authenticate(
        parts: &Parts,
        lookup: &dyn CredentialLookup,
        cfg: &AuthConfig,
        now: OffsetDateTime,
    ) -> Result<Authenticated, AuthError> {
        futures::executor::block_on(super::authenticate(parts, lookup, cfg, now))
    }

    #[test]
    fn unreachable_store_is_not_an_unknown_key() {
        let (_, signer, cfg) = setup();
        let now = OffsetDateTime::now_utc();
        let e = authenticate(&signed(&signer, now, &[]), &Down, &cfg, now).unwrap_err();
        assert_eq!(e.code(), ("ServiceUnavailable", 503));
        assert!(
            !e.to_string().contains("refused"),
            "detail stays in the log"
        );
    }

    fn setup() -> (One, Signer, AuthConfig) {
        let p = Principal {
            account_id: "1".into(),
            canonical_id: "c".into(),
            display_name: "d".into(),
            access_key: "AKID".into(),
        };
        let signer = Signer {
            access_key: "AKID".into(),
            secret_key: "secret".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        };
        (
            One(Credential {
                secret: "secret".into(),
                principal: p,
            }),
            signer,
            AuthConfig::s3("us-east-1"),
        )
    }

    fn signed(signer: &Signer, at: OffsetDateTime, extra: &[(&str, &str)]) -> Parts {
        let mut h = http::HeaderMap::new();
        h.insert("host", "127.0.0.1:1".parse().unwrap());
        for (k, v) in extra {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        signer.sign(
            "PUT",
            "/b/a%20key",
            "x-id=PutObject",
            &mut h,
            sigv4::UNSIGNED_PAYLOAD,
            at,
        );
        let mut req = http::Request::builder()
            .method("PUT")
            .uri("/b/a%20key?x-id=PutObject")
            .body(())
            .unwrap();
        *req.headers_mut() = h;
        req.into_parts().0
    }

    #[test]
    fn header_auth_round_trip_and_tampering() {
        let (store, signer, cfg) = setup();
        let now = OffsetDateTime::now_utc();
        let parts = signed(&signer, now, &[("x-amz-meta-a", "1")]);
        let ok = authenticate(&parts, &store, &cfg, now).unwrap();
        assert_eq!(ok.principal.unwrap().canonical_id, "c");
        assert!(matches!(ok.payload, PayloadCheck::Unsigned));

        // A header added after signing.
        let mut p = signed(&signer, now, &[]);
        p.headers.insert("x-amz-meta-late", "1".parse().unwrap());
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::UnsignedHeader("x-amz-meta-late".into())
        );
        // A signed header whose value changed.
        let mut p = signed(&signer, now, &[("x-amz-meta-a", "1")]);
        p.headers.insert("x-amz-meta-a", "2".parse().unwrap());
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        // Skew.
        let p = signed(&signer, now - time::Duration::minutes(16), &[]);
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
        let p = signed(&signer, now + time::Duration::minutes(16), &[]);
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
        // Unknown key and wrong secret.
        let other = Signer {
            access_key: "NOPE".into(),
            ..signer.clone()
        };
        assert_eq!(
            authenticate(&signed(&other, now, &[]), &store, &cfg, now).unwrap_err(),
            AuthError::InvalidAccessKeyId
        );
        let wrong = Signer {
            secret_key: "wrong".into(),
            ..signer.clone()
        };
        assert_eq!(
            authenticate(&signed(&wrong, now, &[]), &store, &cfg, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        // Wrong region in scope.
        let eu = Signer {
            region: "eu-west-1".into(),
            ..signer
        };
        let e = authenticate(&signed(&eu, now, &[]), &store, &cfg, now).unwrap_err();
        assert!(matches!(e, AuthError::HeaderScope(_)), "{e:?}");
        assert_eq!(e.code(), ("AuthorizationHeaderMalformed", 400));
    }

    /// A request signed with `Date` (RFC 1123) and no `X-Amz-Date`: the time in the
    /// string to sign is the `Date` in ISO 8601 basic form.
    fn signed_with_date_header(at: OffsetDateTime, sign_date: bool) -> Parts {
        let date = crate::timefmt::format_http_date(at);
        let amz = format_amz_date(at);
        let mut h = http::HeaderMap::new();
        h.insert("host", "127.0.0.1:1".parse().unwrap());
        h.insert("date", date.parse().unwrap());
        h.insert(
            "x-amz-content-sha256",
            sigv4::UNSIGNED_PAYLOAD.parse().unwrap(),
        );
        let mut signed: Vec<String> = vec!["host".into(), "x-amz-content-sha256".into()];
        if sign_date {
            signed.push("date".into());
        }
        signed.sort();
        let cr = sigv4::CanonicalRequest {
            method: "GET",
            canonical_uri: "/b/k".into(),
            canonical_query: String::new(),
            headers: &h,
            signed_headers: &signed,
            payload_hash: sigv4::UNSIGNED_PAYLOAD,
        }
        .render()
        .unwrap();
        let scope = format!("{}/us-east-1/s3/aws4_request", &amz[..8]);
        let sts = sigv4::string_to_sign(&amz, &scope, &cr);
        let key = sigv4::signing_key("secret", &amz[..8], "us-east-1", "s3");
        let sig = hex::encode(sigv4::hmac_sha256(&key, sts.as_bytes()));
        let authz = format!(
            "{} Credential=AKID/{scope}, SignedHeaders={}, Signature={sig}",
            sigv4::ALGORITHM,
            signed.join(";")
        );
        h.insert("authorization", authz.parse().unwrap());
        let mut req = http::Request::builder().uri("/b/k").body(()).unwrap();
        *req.headers_mut() = h;
        req.into_parts().0
    }

    #[test]
    fn date_header_instead_of_x_amz_date() {
        let (store, _, cfg) = setup();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let ok = authenticate(&signed_with_date_header(now, true), &store, &cfg, now).unwrap();
        assert_eq!(ok.principal.unwrap().canonical_id, "c");
        // Skew is judged from Date too.
        let old = now - time::Duration::minutes(16);
        assert_eq!(
            authenticate(&signed_with_date_header(old, true), &store, &cfg, now).unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
        // A Date outside the signature could be refreshed by anyone replaying it.
        assert_eq!(
            authenticate(&signed_with_date_header(now, false), &store, &cfg, now).unwrap_err(),
            AuthError::UnsignedHeader("date".into())
        );
        let mut p = signed_with_date_header(now, true);
        p.headers.remove("date");
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::AccessDeniedDate
        );
        assert_eq!(AuthError::AccessDeniedDate.code(), ("AccessDenied", 403));
    }

    fn presigned(expires: &str, at: OffsetDateTime) -> Parts {
        let amz = format_amz_date(at);
        let cred = format!("AKID/{}/us-east-1/s3/aws4_request", &amz[..8]);
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            crate::encoding::uri_encode(cred.as_bytes(), false)
        );
        let mut h = http::HeaderMap::new();
        h.insert("host", "h".parse().unwrap());
        let signed = vec!["host".to_string()];
        let cr = sigv4::CanonicalRequest {
            method: "GET",
            canonical_uri: "/b/k".into(),
            canonical_query: sigv4::canonical_query(&query, None),
            headers: &h,
            signed_headers: &signed,
            payload_hash: sigv4::UNSIGNED_PAYLOAD,
        }
        .render()
        .unwrap();
        let scope = format!("{}/us-east-1/s3/aws4_request", &amz[..8]);
        let sts = sigv4::string_to_sign(&amz, &scope, &cr);
        let key = sigv4::signing_key("secret", &amz[..8], "us-east-1", "s3");
        let sig = hex::encode(sigv4::hmac_sha256(&key, sts.as_bytes()));
        let mut req = http::Request::builder()
            .uri(format!("/b/k?{query}&X-Amz-Signature={sig}"))
            .body(())
            .unwrap();
        *req.headers_mut() = h;
        req.into_parts().0
    }

    #[test]
    fn presigned_expiry_bounds() {
        let (store, _, cfg) = setup();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        assert!(authenticate(&presigned("60", now), &store, &cfg, now).is_ok());
        // Zero: already expired, even at the very second it was signed.
        let e = authenticate(&presigned("0", now), &store, &cfg, now).unwrap_err();
        assert_eq!(e, AuthError::Expired);
        assert_eq!(e.code(), ("AccessDenied", 403));
        for bad in ["-1", "604801", "x"] {
            let e = authenticate(&presigned(bad, now), &store, &cfg, now).unwrap_err();
            assert_eq!(
                e.code(),
                ("AuthorizationQueryParametersError", 400),
                "{bad}"
            );
        }
        assert!(authenticate(&presigned("604800", now), &store, &cfg, now).is_ok());
    }

    #[test]
    fn post_policy_signatures() {
        let (store, _, cfg) = setup();
        let policy = "eyJleHBpcmF0aW9uIjoiMjAzMC0wMS0wMVQwMDowMDowMFoifQ==";
        let key = sigv4::signing_key("secret", "20261204", "us-east-1", "s3");
        let good = hex::encode(sigv4::hmac_sha256(&key, policy.as_bytes()));
        let v4 = |cred: &'static str, date: &'static str, sig: &str| {
            let sig = sig.to_string();
            let r = futures::executor::block_on(verify_post_policy(
                policy,
                PostFormSignature::V4 {
                    algorithm: sigv4::ALGORITHM,
                    credential: cred,
                    amz_date: date,
                    signature: &sig,
                },
                &store,
                &cfg,
            ));
            r.map(|p| p.canonical_id)
        };
        let cred = "AKID/20261204/us-east-1/s3/aws4_request";
        assert_eq!(v4(cred, "20261204T000000Z", &good), Ok("c".to_string()));
        assert_eq!(
            v4(cred, "20261204T000000Z", &good.replace('a', "b")),
            Err(AuthError::SignatureDoesNotMatch)
        );
        // The date of the scope must be the form's date; the region must be ours.
        assert!(v4(cred, "20261205T000000Z", &good).is_err());
        assert!(v4(
            "AKID/20261204/eu-west-1/s3/aws4_request",
            "20261204T000000Z",
            &good
        )
        .is_err());
        assert_eq!(
            v4(
                "NOPE/20261204/us-east-1/s3/aws4_request",
                "20261204T000000Z",
                &good
            ),
            Err(AuthError::InvalidAccessKeyId)
        );
        let v2 = |sig: &str| {
            futures::executor::block_on(verify_post_policy(
                policy,
                PostFormSignature::V2 {
                    access_key: "AKID",
                    signature: sig,
                },
                &store,
                &cfg,
            ))
            .map(|p| p.canonical_id)
        };
        let good2 = sigv2::hmac_sha1_b64("secret", policy);
        assert_eq!(v2(&good2), Ok("c".to_string()));
        assert_eq!(v2("AAAA"), Err(AuthError::SignatureDoesNotMatch));
    }

    #[test]
    fn mixed_and_anonymous() {
        let (store, signer, cfg) = setup();
        let now = OffsetDateTime::now_utc();
        let mut p = signed(&signer, now, &[]);
        p.uri = "/b/a%20key?X-Amz-Credential=x".parse().unwrap();
        assert_eq!(
            authenticate(&p, &store, &cfg, now).unwrap_err(),
            AuthError::MixedAuth
        );
        let anon = http::Request::builder()
            .uri("/b/k")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(authenticate(&anon, &store, &cfg, now)
            .unwrap()
            .principal
            .is_none());
        // Query credentials without a valid signature are verified, not ignored.
        let q = http::Request::builder()
            .uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00")
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(authenticate(&q, &store, &cfg, now).is_err());
    }
}
