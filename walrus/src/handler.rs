//! What every S3 operation handler shares: the authenticated request ([`Req`]), the
//! response builders, and the bucket, ACL and blob helpers. The entry point that
//! builds a [`Req`] and routes it is [`crate::api`].
use crate::acl::{Acl, CannedContext, Grant, Owner, Permission};
use crate::body::{Body, VerifiedBody};
use crate::error::{S3Error, S3Result};
use crate::meta::{BucketMeta, MetaError, ObjectMeta, Version, Versioning};
use crate::state::State;
use bytes::Bytes;
use euca_aws::{PayloadCheck, Principal};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

pub type RespBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
pub type Resp = Response<RespBody>;

pub const MAX_KEY_BYTES: usize = 1024;

/// An authenticated S3 request, ready for a handler.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub principal: Option<Principal>,
    /// Who sent it (the serve loop's client address, trusted-proxy aware) and whether
    /// over TLS: the `aws:SourceIp` and `aws:SecureTransport` of bucket policies.
    pub peer: Option<euca_service::Peer>,
    pub payload: PayloadCheck,
    pub(crate) body: Option<Body>,
    pub request_id: String,
    /// The operation name as the handler sets it (metrics and the access log
    /// are labelled by [`crate::endpoint::S3Endpoint`], parsed from the head before dispatch).
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

/// The bucket (or NoSuchBucket), with its owner account's public access block
/// ([`BucketMeta::account_block`], refreshed before every request) for the checks.
pub async fn load_bucket(st: &State, name: &str) -> S3Result<BucketMeta> {
    let mut b = st
        .meta
        .bucket(name)
        .await?
        .ok_or_else(|| S3Error::no_such_bucket(name))?;
    b.account_block = st.account_blocks.get(&b.owner.id);
    Ok(b)
}

/// What a request naming a key (and maybe a `versionId`) finds.
pub enum Found {
    Object(Box<ObjectMeta>),
    /// A delete marker: the latest version (`by_id` false) or the one asked for.
    Marker {
        version_id: String,
        by_id: bool,
    },
    /// Nothing (`by_id`: the version asked for does not exist).
    Missing {
        by_id: bool,
    },
}

impl Found {
    /// The error for a caller who may know that nothing is there (one who may list
    /// the bucket): a delete marker answers 404 `NoSuchKey` when it is the latest
    /// version and 405 `MethodNotAllowed` when asked for by id, with
    /// `x-amz-delete-marker` and its version id either way, as S3 does.
    pub fn missing_error(self, r: &Req, key: &str) -> S3Error {
        match self {
            Found::Object(_) => S3Error::internal("an object is not missing"),
            Found::Marker { version_id, by_id } => {
                let e = if by_id {
                    S3Error::method_not_allowed()
                        .with("Method", r.method.as_str())
                        .with("ResourceType", "DeleteMarker")
                } else {
                    S3Error::no_such_key(key)
                };
                e.with_header("x-amz-delete-marker", "true")
                    .with_header("x-amz-version-id", version_id)
            }
            Found::Missing { by_id: true } => S3Error::new(
                "NoSuchVersion",
                404,
                "The specified version does not exist.",
            )
            .with("Key", key)
            .with("VersionId", r.q("versionId").unwrap_or_default()),
            Found::Missing { by_id: false } => S3Error::no_such_key(key),
        }
    }
}

/// Looks up `key` in `b`: the version `version_id` if given, else the current object
/// (or, in a bucket with versioning, the delete marker that is the latest version).
pub async fn find_object(
    st: &State,
    b: &BucketMeta,
    key: &str,
    version_id: Option<&str>,
) -> S3Result<Found> {
    let found = match version_id {
        None => {
            if let Some(o) = st.meta.object(&b.name, key).await? {
                return Ok(Found::Object(Box::new(o)));
            }
            if b.versioning() == Versioning::Unversioned {
                None
            } else {
                st.meta
                    .scan_versions(&b.name, None, key, 1)
                    .await?
                    .into_iter()
                    .find(|e| e.key == key)
                    .map(|e| e.version)
            }
        }
        Some(v) => {
            check_version_id(v)?;
            st.meta.object_version(&b.name, key, v).await?
        }
    };
    let by_id = version_id.is_some();
    Ok(match found {
        Some(Version::Object(o)) => Found::Object(o),
        Some(Version::DeleteMarker(m)) => Found::Marker {
            version_id: m.version_id,
            by_id,
        },
        None => Found::Missing { by_id },
    })
}

/// A `versionId` this store could have given out: `null` or 32 hex digits; anything
/// else is 400 `InvalidArgument` as S3 answers a malformed id.
pub fn check_version_id(v: &str) -> S3Result<()> {
    if v == crate::meta::NULL_VERSION || (v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(S3Error::invalid_argument("Invalid version id specified")
            .with("ArgumentName", "versionId")
            .with("ArgumentValue", v))
    }
}

/// Puts `x-amz-version-id` on a response when the object has a version id.
pub fn set_version_header(h: &mut HeaderMap, version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        Some(v) => set_header(h, "x-amz-version-id", v),
        None => Ok(()),
    }
}

/// The most grants an access control list may hold (S3's limit).
pub const MAX_GRANTS: usize = 100;

/// `x-amz-version-id` on the answer to a write (PUT, POST, copy, completion): only a
/// real version id. A write to a bucket whose versioning is suspended stores the
/// `null` version and, as in S3, names no version.
pub fn set_written_version_header(h: &mut HeaderMap, version_id: Option<&str>) -> S3Result<()> {
    set_version_header(h, version_id.filter(|v| *v != "null"))
}

/// The ACL a PUT/Create request asks for: `x-amz-acl`, or `x-amz-grant-*`, or private.
/// Grantees named by id must be accounts of this cloud ([`resolve_grantees`]).
pub async fn acl_from_headers(
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
    resolve_grantees(st, &owner, &mut grants).await?;
    Ok(Acl { owner, grants })
}

/// Every grantee named by canonical id must be an account of this cloud, as in S3
/// (400 `InvalidArgument`, "Invalid id": a grant to a mistyped id would grant
/// nothing, silently). Its display name is the account's, whatever the request said.
/// At most [`MAX_GRANTS`] grants (S3's limit), so a request asks the identity store
/// a bounded number of times (once per distinct id).
pub async fn resolve_grantees(st: &State, owner: &Owner, grants: &mut [Grant]) -> S3Result<()> {
    use crate::acl::Grantee;
    if grants.len() > MAX_GRANTS {
        return Err(S3Error::invalid_argument(format!(
            "An access control list holds at most {MAX_GRANTS} grants"
        )));
    }
    let mut known: Vec<(String, String)> = vec![
        (owner.id.clone(), owner.display_name.clone()),
        (st.system_id.clone(), st.system_name.clone()),
    ];
    for g in grants.iter_mut() {
        let Grantee::User { id, display_name } = &mut g.grantee else {
            continue;
        };
        let name = match known.iter().find(|(k, _)| k == id) {
            Some((_, n)) => Some(n.clone()),
            None => {
                let n = st
                    .identity
                    .account_name(id)
                    .await
                    .map_err(|e| S3Error::new("ServiceUnavailable", 503, e.to_string()))?;
                if let Some(n) = &n {
                    known.push((id.clone(), n.clone()));
                }
                n
            }
        };
        match name {
            Some(n) => *display_name = Some(n),
            None => {
                return Err(S3Error::invalid_argument("Invalid id")
                    .with("ArgumentName", "CanonicalUser/ID")
                    .with("ArgumentValue", id.as_str()))
            }
        }
    }
    Ok(())
}

/// Parses an `AccessControlPolicy` body into an ACL; the owner must stay the same, and
/// grantees named by id must be accounts of this cloud ([`resolve_grantees`]).
pub async fn acl_from_xml(st: &State, node: &crate::xmlin::Node, owner: &Owner) -> S3Result<Acl> {
    let mut acl = parse_acl_xml(node, owner)?;
    resolve_grantees(st, owner, &mut acl.grants).await?;
    Ok(acl)
}

/// [`acl_from_xml`]'s reading of the body alone: no grantee is looked up.
pub fn parse_acl_xml(node: &crate::xmlin::Node, owner: &Owner) -> S3Result<Acl> {
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
    Ok(Acl {
        owner: owner.clone(),
        grants: grants_from_xml(list)?,
    })
}

/// The `<Grant>` children of `list` (an `AccessControlList`, or bucket logging's
/// `TargetGrants`).
pub fn grants_from_xml(list: &crate::xmlin::Node) -> S3Result<Vec<Grant>> {
    use crate::acl::Grantee;
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
    Ok(grants)
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

/// After a failed commit: frees the blobs the op would have referenced, unless the
/// commit's outcome is unknown (then they may be referenced; the start-up sweep
/// removes them if not).
pub fn free_uncommitted(st: &Arc<State>, blobs: Vec<crate::meta::BlobRef>, e: &MetaError) {
    if matches!(e, MetaError::CommitUnknown(_)) {
        tracing::warn!(blobs = blobs.len(), error = %e, "commit outcome unknown: keeping the request's blobs");
        return;
    }
    free_blobs(st, blobs);
}

/// Deletes blobs no longer referenced, after a grace period (30 s) so that reads
/// which started before the change can finish. A crash before then leaves them to
/// the startup sweep.
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

/// A `max-keys`-style query parameter: 1000 when absent, at most 1000.
pub fn parse_max(r: &Req, name: &str) -> S3Result<usize> {
    match r.q(name) {
        None => Ok(1000),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n.min(1000) as usize)
            .ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "Provided {name} not an integer or within integer range"
                ))
                .with("ArgumentName", name)
            }),
    }
}

/// A listing's `encoding-type`: whether it is `url` (anything else is refused).
pub fn url_encoding(r: &Req) -> S3Result<bool> {
    match r.q("encoding-type") {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(
            S3Error::invalid_argument("Invalid Encoding Method specified in Request")
                .with("ArgumentName", "encoding-type"),
        ),
    }
}

/// A key or prefix as a listing shows it: URL-encoded when [`url_encoding`] says so.
pub fn listing_text(url: bool, s: &str) -> String {
    if url {
        euca_aws::encoding::uri_encode(s.as_bytes(), true)
    } else {
        s.to_string()
    }
}
