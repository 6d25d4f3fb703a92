//! The identity service: the store's internal JSON API, served by the process that
//! is the cloud controller (`euca up`, `euca clc`) so that Walrus, the SC and later
//! services can authenticate from other processes and hosts.
//!
//! Every request is SigV4-signed (service name [`SIGNING_SERVICE`]) and verified
//! against the store before anything else; no endpoint takes a body, and none is
//! read. Errors are `{"error": {"code": …, "message": …}}`.
//!
//! - `/_admin/accounts…`, `/_admin/keys/{id}/disable`: account and key management,
//!   for the admin account only (the `euca account` / `euca key` commands).
//! - `GET /_identity/v1/keys/{access_key}`: an active key with its account
//!   ([`KeyInfo`]; 404 if unknown or disabled), and `GET /_identity/v1/accounts/{name}`
//!   ([`AccountInfo`]): for the system account only. Any other caller gets 403,
//!   whether or not the key or account exists.
use crate::{AccessKey, Account, IdentityError, IdentityStore};
use bytes::Bytes;
use euca_aws::auth::AuthConfig;
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
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let (status, code) = match &e {
            IdentityError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            IdentityError::AccountExists(_) => (StatusCode::CONFLICT, "EntityAlreadyExists"),
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

fn render(e: ApiError) -> Resp {
    json(
        e.status,
        &serde_json::json!({"error": {"code": e.code, "message": e.message}}),
    )
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

    /// Answers one request (hand it to `euca_service::serve`).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let resp = match self.route(req).await {
            Ok(r) => r,
            Err(e) => render(e),
        };
        tracing::info!(target: "clc::access", %method, %path, status = resp.status().as_u16());
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (parts, body) = req.into_parts();
        if parts.uri.path() == "/_health" && parts.method == Method::GET {
            return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
        }
        let cfg = AuthConfig {
            region: self.region.clone(),
            service: SIGNING_SERVICE,
            max_skew: time::Duration::minutes(15),
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
            let store = self.store.clone();
            let method = parts.method.clone();
            // Writes commit to disk: off the runtime.
            return tokio::task::spawn_blocking(move || admin(&store, &method, &segs))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        e.to_string(),
                    )
                })?;
        }
        if let Some(rest) = path.strip_prefix("/_identity/v1/") {
            if caller.display_name != self.system_account {
                return Err(ApiError::denied());
            }
            return match (&parts.method, rest.split_once('/')) {
                (&Method::GET, Some(("keys", ak))) if !ak.contains('/') => {
                    let ak = segment(ak)?;
                    let c = self.store.credential(&ak)?.ok_or_else(|| {
                        ApiError::new(StatusCode::NOT_FOUND, "NoSuchEntity", "no such active key")
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
                (&Method::GET, Some(("accounts", name))) if !name.contains('/') => {
                    let name = segment(name)?;
                    let a = self.store.account(&name)?.ok_or_else(|| {
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

/// `/_admin/...`: account and key management.
fn admin(store: &IdentityStore, method: &Method, segs: &[String]) -> Result<Resp, ApiError> {
    let ok = |v: serde_json::Value| Ok(json(StatusCode::OK, &v));
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["accounts"]) => ok(serde_json::Value::Array(
            store.accounts()?.iter().map(acct_json).collect(),
        )),
        (&Method::POST, ["accounts", name]) => {
            let (a, k) = store.create_account(name)?;
            ok(serde_json::json!({"account": acct_json(&a), "key": key_json(&k)}))
        }
        (&Method::POST, ["accounts", name, "disable"]) => {
            store.set_account_enabled(name, false)?;
            ok(serde_json::json!({"disabled": name}))
        }
        (&Method::POST, ["accounts", name, "enable"]) => {
            store.set_account_enabled(name, true)?;
            ok(serde_json::json!({"enabled": name}))
        }
        (&Method::GET, ["accounts", name, "keys"]) => ok(serde_json::Value::Array(
            store.keys(name)?.iter().map(key_json).collect(),
        )),
        (&Method::POST, ["accounts", name, "keys"]) => ok(key_json(&store.create_key(name)?)),
        (&Method::POST, ["keys", key, "disable"]) => {
            store.set_key_enabled(key, false)?;
            ok(serde_json::json!({"disabled": key}))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Unknown admin resource",
        )),
    }
}
