//! The identity service: the store's internal JSON API, served by the process that
//! is the cloud controller (`euca up`, `euca clc`) so that Walrus, the SC and later
//! services can authenticate from other processes and hosts.
//!
//! Served through `euca_service::serve_api` as the `identity` service (see
//! [`IdentityEndpoint`]): `/_health`, `/_metrics`, request ids and the per-endpoint
//! request families like every listener. Every other request is SigV4-signed
//! (service name [`SIGNING_SERVICE`]) and verified against the store before
//! anything else; no endpoint takes a body, and none is read. Errors are the
//! internal APIs' `{"error": {"code": …, "message": …}}` (`euca_service::render`).
//!
//! - `/_admin/accounts…`, `/_admin/keys/{id}/disable`: account and key management,
//!   for the admin account only (the `euca account` / `euca key` commands).
//! - `GET /_identity/v1/keys/{access_key}`: an active key with its account
//!   ([`KeyInfo`]; 404 if unknown or disabled), `GET /_identity/v1/accounts/{name}`
//!   and `GET /_identity/v1/canonical-ids/{id}` (an account by its S3 canonical user
//!   id, which ACL grants name) ([`AccountInfo`]): for the system account only. Any
//!   other caller gets 403, whether or not the key or account exists.
use crate::{AccessKey, Account, IdentityError, IdentityStore};
use bytes::Bytes;
use euca_aws::auth::AuthConfig;
use euca_service::{Ctx, EdgeError};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The SigV4 service name the identity API verifies (Eucalyptus's Euare is IAM).
pub const SIGNING_SERVICE: &str = "iam";

/// An active access key as `GET /_identity/v1/keys/{access_key}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account: String,
    pub account_id: String,
    pub canonical_id: String,
    pub enabled: bool,
}

/// An account as `GET /_identity/v1/accounts/{name}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    pub name: String,
    pub id: String,
    pub canonical_id: String,
    pub enabled: bool,
}

impl From<&Account> for AccountInfo {
    fn from(a: &Account) -> Self {
        AccountInfo {
            name: a.name.clone(),
            id: a.id.clone(),
            canonical_id: a.canonical_id.clone(),
            enabled: a.enabled,
        }
    }
}

pub type Resp = Response<Full<Bytes>>;

/// What the identity API serves and who may call which part.
pub struct IdentityService {
    store: IdentityStore,
    region: String,
    /// May manage accounts and keys (`/_admin`).
    admin_account: String,
    /// May look up credentials (`/_identity/v1`).
    system_account: String,
}

/// The identity API's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityEndpoint {
    /// `GET /_admin/accounts`
    ListAccounts,
    /// `POST /_admin/accounts/{name}`
    CreateAccount,
    /// `POST /_admin/accounts/{name}/disable`
    DisableAccount,
    /// `POST /_admin/accounts/{name}/enable`
    EnableAccount,
    /// `GET /_admin/accounts/{name}/keys`
    ListKeys,
    /// `POST /_admin/accounts/{name}/keys`
    CreateKey,
    /// `POST /_admin/keys/{access_key}/disable`
    DisableKey,
    /// `GET /_identity/v1/keys/{access_key}`
    LookupKey,
    /// `GET /_identity/v1/accounts/{name}`
    LookupAccount,
    /// `GET /_identity/v1/canonical-ids/{id}`
    LookupCanonicalId,
    /// No such operation (404 `NotFound`, after authentication).
    Unknown,
}

impl euca_service::Endpoint for IdentityEndpoint {
    fn name(&self) -> &'static str {
        match self {
            IdentityEndpoint::ListAccounts => "ListAccounts",
            IdentityEndpoint::CreateAccount => "CreateAccount",
            IdentityEndpoint::DisableAccount => "DisableAccount",
            IdentityEndpoint::EnableAccount => "EnableAccount",
            IdentityEndpoint::ListKeys => "ListKeys",
            IdentityEndpoint::CreateKey => "CreateKey",
            IdentityEndpoint::DisableKey => "DisableKey",
            IdentityEndpoint::LookupKey => "LookupKey",
            IdentityEndpoint::LookupAccount => "LookupAccount",
            IdentityEndpoint::LookupCanonicalId => "LookupCanonicalId",
            IdentityEndpoint::Unknown => "Unknown",
        }
    }
}

impl IdentityEndpoint {
    /// The operation of `method` on `path` (segments as sent, not decoded).
    pub fn parse(method: &Method, path: &str) -> Self {
        use IdentityEndpoint::*;
        if let Some(rest) = path.strip_prefix("/_admin/") {
            let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            return match (method, segs.as_slice()) {
                (&Method::GET, ["accounts"]) => ListAccounts,
                (&Method::POST, ["accounts", _]) => CreateAccount,
                (&Method::POST, ["accounts", _, "disable"]) => DisableAccount,
                (&Method::POST, ["accounts", _, "enable"]) => EnableAccount,
                (&Method::GET, ["accounts", _, "keys"]) => ListKeys,
                (&Method::POST, ["accounts", _, "keys"]) => CreateKey,
                (&Method::POST, ["keys", _, "disable"]) => DisableKey,
                _ => Unknown,
            };
        }
        if let Some(rest) = path.strip_prefix("/_identity/v1/") {
            return match (method, rest.split_once('/')) {
                (&Method::GET, Some(("keys", k))) if !k.contains('/') => LookupKey,
                (&Method::GET, Some(("accounts", n))) if !n.contains('/') => LookupAccount,
                (&Method::GET, Some(("canonical-ids", n))) if !n.contains('/') => LookupCanonicalId,
                _ => Unknown,
            };
        }
        Unknown
    }
}

/// One error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied")
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", "Unknown resource")
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let (status, code) = match &e {
            IdentityError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            IdentityError::AccountExists(_) | IdentityError::Conflict(_) => {
                (StatusCode::CONFLICT, "EntityAlreadyExists")
            }
            IdentityError::NoSuchAccount(_) | IdentityError::NoSuchKey(_) => {
                (StatusCode::NOT_FOUND, "NoSuchEntity")
            }
            IdentityError::InvalidName(_) => (StatusCode::BAD_REQUEST, "InvalidParameterValue"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The identity API's one error renderer (the internal APIs' JSON shape).
fn render(e: ApiError) -> Resp {
    euca_service::render::json_error(e.status.as_u16(), e.code, &e.message)
}

fn key_json(k: &AccessKey) -> serde_json::Value {
    serde_json::json!({"access_key_id": k.access_key_id, "secret_access_key": k.secret_access_key, "account": k.account, "enabled": k.enabled})
}

fn acct_json(a: &Account) -> serde_json::Value {
    serde_json::json!({"name": a.name, "id": a.id, "canonical_id": a.canonical_id, "enabled": a.enabled})
}

/// A path segment as sent, percent-decoded (keys and names are sent encoded).
fn segment(s: &str) -> Result<String, ApiError> {
    String::from_utf8(euca_aws::encoding::uri_decode(s)).map_err(|_| ApiError::not_found())
}

/// Runs `f` on the store off the runtime (redb reads and commits block).
async fn blocking<T: Send + 'static>(
    store: &IdentityStore,
    f: impl FnOnce(&IdentityStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::internal)?
}

impl euca_service::Api for IdentityService {
    type Endpoint = IdentityEndpoint;
    type Body = Full<Bytes>;
    fn service(&self) -> &'static str {
        "identity"
    }
    fn route(&self, head: &http::request::Parts) -> IdentityEndpoint {
        IdentityEndpoint::parse(&head.method, head.uri.path())
    }
    async fn handle(
        self: Arc<Self>,
        ep: IdentityEndpoint,
        req: Request<Incoming>,
        _cx: Ctx,
    ) -> Resp {
        match self.answer(ep, req).await {
            Ok(r) => r,
            Err(e) => render(e),
        }
    }
    fn render_error(&self, e: &EdgeError, _cx: &Ctx) -> Resp {
        euca_service::render::json_error(e.status, e.code, e.message)
    }
    fn body(&self, bytes: Bytes) -> Full<Bytes> {
        Full::new(bytes)
    }
}

impl IdentityService {
    pub fn new(
        store: IdentityStore,
        region: &str,
        admin_account: &str,
        system_account: &str,
    ) -> Arc<Self> {
        Arc::new(IdentityService {
            store,
            region: region.to_string(),
            admin_account: admin_account.to_string(),
            system_account: system_account.to_string(),
        })
    }

    /// Serves the API on `listener` until `shutdown`, then drains. (Boxed: the
    /// request path is compiled here once, not in every binary that serves it;
    /// see `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        opts: euca_service::ListenOptions,
        metrics: euca_service::MetricsAccess,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        euca_service::serve_api(listener, opts, self, metrics, shutdown)
    }

    async fn answer(&self, ep: IdentityEndpoint, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (parts, body) = req.into_parts();
        let cfg = AuthConfig {
            region: self.region.clone(),
            service: SIGNING_SERVICE,
            max_skew: time::Duration::minutes(15),
            region_from_scope: false,
        };
        let auth =
            euca_aws::authenticate(&parts, &self.store, &cfg, time::OffsetDateTime::now_utc())
                .await
                .map_err(|e| {
                    let (code, status) = e.code();
                    ApiError::new(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        code,
                        e.to_string(),
                    )
                })?;
        let caller = auth.principal.ok_or_else(ApiError::denied)?;
        // No endpoint takes a body: it is never read (hyper closes the connection
        // rather than drain an unread one).
        drop(body);
        let path = parts.uri.path();
        if let Some(rest) = path.strip_prefix("/_admin/") {
            if caller.display_name != self.admin_account {
                return Err(ApiError::denied());
            }
            let segs = rest
                .split('/')
                .filter(|s| !s.is_empty())
                .map(segment)
                .collect::<Result<Vec<_>, _>>()?;
            // Writes commit to disk: off the runtime.
            return blocking(&self.store, move |store| admin(store, ep, &segs)).await;
        }
        if let Some(rest) = path.strip_prefix("/_identity/v1/") {
            if caller.display_name != self.system_account {
                return Err(ApiError::denied());
            }
            let arg = match rest.split_once('/') {
                Some((_, a)) => segment(a)?,
                None => return Err(ApiError::not_found()),
            };
            return match ep {
                IdentityEndpoint::LookupKey => {
                    let c = blocking(&self.store, move |s| Ok(s.credential(&arg)?))
                        .await?
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::NOT_FOUND,
                                "NoSuchEntity",
                                "no such active key",
                            )
                        })?;
                    let info = KeyInfo {
                        access_key_id: c.principal.access_key,
                        secret_access_key: c.secret,
                        account: c.principal.display_name,
                        account_id: c.principal.account_id,
                        canonical_id: c.principal.canonical_id,
                        enabled: true,
                    };
                    Ok(json(StatusCode::OK, &serde_json::json!(info)))
                }
                IdentityEndpoint::LookupAccount | IdentityEndpoint::LookupCanonicalId => {
                    let by_name = ep == IdentityEndpoint::LookupAccount;
                    let a = blocking(&self.store, move |s| {
                        Ok(if by_name {
                            s.account(&arg)?
                        } else {
                            s.account_by_canonical_id(&arg)?
                        })
                    })
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::NOT_FOUND, "NoSuchEntity", "no such account")
                    })?;
                    Ok(json(
                        StatusCode::OK,
                        &serde_json::json!(AccountInfo::from(&a)),
                    ))
                }
                _ => Err(ApiError::not_found()),
            };
        }
        Err(ApiError::not_found())
    }
}

/// `/_admin/...`: account and key management (`segs`: the path after `/_admin/`,
/// decoded).
fn admin(store: &IdentityStore, ep: IdentityEndpoint, segs: &[String]) -> Result<Resp, ApiError> {
    use IdentityEndpoint::*;
    let ok = |v: serde_json::Value| Ok(json(StatusCode::OK, &v));
    // The name or key: the second segment of every admin path that has one.
    let arg = || {
        segs.get(1)
            .map(String::as_str)
            .ok_or_else(ApiError::not_found)
    };
    match ep {
        ListAccounts => ok(serde_json::Value::Array(
            store.accounts()?.iter().map(acct_json).collect(),
        )),
        CreateAccount => {
            let (a, k) = store.create_account(arg()?)?;
            ok(serde_json::json!({"account": acct_json(&a), "key": key_json(&k)}))
        }
        DisableAccount => {
            let name = arg()?;
            store.set_account_enabled(name, false)?;
            ok(serde_json::json!({"disabled": name}))
        }
        EnableAccount => {
            let name = arg()?;
            store.set_account_enabled(name, true)?;
            ok(serde_json::json!({"enabled": name}))
        }
        ListKeys => ok(serde_json::Value::Array(
            store.keys(arg()?)?.iter().map(key_json).collect(),
        )),
        CreateKey => ok(key_json(&store.create_key(arg()?)?)),
        DisableKey => {
            let key = arg()?;
            store.set_key_enabled(key, false)?;
            ok(serde_json::json!({"disabled": key}))
        }
        LookupKey | LookupAccount | LookupCanonicalId | Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Unknown admin resource",
        )),
    }
}
