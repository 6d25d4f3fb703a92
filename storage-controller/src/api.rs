//! The SC's internal HTTP API, for the cloud controller and `euca volume` /
//! `euca snapshot`. Every call is SigV4-signed (the one verifier in `euca-aws`,
//! service name `sc`) by the admin account; parameters travel in the query
//! string, bodies must be empty, answers are JSON. Errors are
//! `{"error":{"code","message"}}` with EC2's error codes.
//!
//! | method | path | query | does |
//! |---|---|---|---|
//! | POST | /volumes | `size_gib` and/or `snapshot_id` | create a volume |
//! | GET | /volumes, /volumes/{id} | | describe |
//! | DELETE | /volumes/{id} | | delete (must be detached) |
//! | POST | /volumes/{id}/attach | `node` (an IP address) | export it to that node; returns the NBD URI |
//! | POST | /volumes/{id}/detach | | remove the export |
//! | POST | /volumes/{id}/snapshots | | take a snapshot (uploads in the background) |
//! | GET | /snapshots, /snapshots/{id} | | describe, with progress |
//! | DELETE | /snapshots/{id} | | delete it and its unshared chunks |
//! | GET | /_health | | unauthenticated |
//! | GET | /_metrics | | `Authorization: Bearer <metrics token>` (unless `metrics_public`) |
use crate::error::ScError;
use crate::model::Volume;
use crate::service::StorageController;
use bytes::Bytes;
use euca_aws::auth::{AuthConfig, CredentialLookup};
use euca_service::body::{read_capped, BodyError};
use euca_service::MetricsAccess;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub type Resp = http::Response<Full<Bytes>>;

pub struct ApiState {
    pub sc: Arc<StorageController>,
    pub identity: Arc<dyn CredentialLookup>,
    pub admin_account: String,
    pub region: String,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub metrics_access: MetricsAccess,
}

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let mut r = http::Response::new(Full::new(Bytes::from(v.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_resp(status: u16, code: &str, message: &str) -> Resp {
    json_resp(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": {"code": code, "message": message}}),
    )
}

impl From<ScError> for Resp {
    fn from(e: ScError) -> Resp {
        error_resp(e.status(), e.code(), &e.to_string())
    }
}

fn volume_json(sc: &StorageController, v: &Volume) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Some(uri) = sc.attachment_uri(v) {
        j["attachment"]["uri"] = Value::String(uri);
    }
    j
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Handles one request.
pub async fn handle(st: Arc<ApiState>, req: http::Request<Incoming>, peer: SocketAddr) -> Resp {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(&st, req).await;
    if !resp.status().is_success() {
        st.errors.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(target: "sc::access", %peer, %method, %path, status = resp.status().as_u16());
    resp
}

async fn route(st: &ApiState, req: http::Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if parts.method == Method::GET && path == "/_health" {
        return json_resp(StatusCode::OK, &json!({"ok": true}));
    }
    if parts.method == Method::GET && path == "/_metrics" {
        if !st.metrics_access.allows(&parts.headers) {
            let mut r = error_resp(
                401,
                "AuthFailure",
                "metrics need Authorization: Bearer <the metrics token>",
            );
            r.headers_mut().insert(
                "www-authenticate",
                http::HeaderValue::from_static(MetricsAccess::CHALLENGE),
            );
            return r;
        }
        let mut r = http::Response::new(Full::new(Bytes::from(metrics(st))));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return r;
    }
    let cfg = AuthConfig {
        region: st.region.clone(),
        service: "sc",
        max_skew: time::Duration::minutes(15),
    };
    let auth = match euca_aws::authenticate(
        &parts,
        st.identity.as_ref(),
        &cfg,
        time::OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let (code, status) = e.code();
            return error_resp(status, code, &e.to_string());
        }
    };
    match &auth.principal {
        Some(p) if p.display_name == st.admin_account => {}
        _ => {
            return error_resp(
                403,
                "AccessDenied",
                "the storage controller API is for the cloud administrator",
            )
        }
    }
    // Parameters are in the query; a body is refused rather than ignored.
    match read_capped(&parts.headers, body, 0).await {
        Ok(_) => {}
        Err(BodyError::TooLarge(_)) => {
            return error_resp(413, "InvalidParameterValue", "requests carry no body")
        }
        Err(e) => return error_resp(400, "InvalidParameterValue", &e.to_string()),
    }
    let query = parts.uri.query().unwrap_or("");
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match dispatch(&st.sc, &parts.method, &segs, query).await {
        Ok(Some(v)) => json_resp(StatusCode::OK, &v),
        Ok(None) => error_resp(
            404,
            "InvalidAction",
            &format!("no such operation: {} {path}", parts.method),
        ),
        Err(e) => e.into(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ScError> {
    serde_json::to_value(v).map_err(|e| ScError::State(e.to_string()))
}

/// Runs one operation; `None` if there is no such operation.
async fn dispatch(
    sc: &Arc<StorageController>,
    m: &Method,
    segs: &[&str],
    query: &str,
) -> Result<Option<Value>, ScError> {
    Ok(Some(match (m, segs) {
        (&Method::POST, ["volumes"]) => {
            let size = match query_param(query, "size_gib") {
                Some(s) => Some(
                    s.parse::<u64>()
                        .map_err(|_| ScError::Invalid(format!("size_gib {s:?} is not a number")))?,
                ),
                None => None,
            };
            let snap = query_param(query, "snapshot_id");
            volume_json(sc, &sc.create_volume(size, snap.as_deref()).await?)
        }
        (&Method::GET, ["volumes"]) => {
            Value::Array(sc.volumes()?.iter().map(|v| volume_json(sc, v)).collect())
        }
        (&Method::GET, ["volumes", id]) => {
            let mut j = volume_json(sc, &sc.describe_volume(id)?);
            if let Some((present, total)) = sc.fill_state(id).await {
                j["chunks_present"] = json!(present);
                j["chunks_total"] = json!(total);
            }
            j
        }
        (&Method::DELETE, ["volumes", id]) => {
            sc.delete_volume(id).await?;
            json!({"deleted": id})
        }
        (&Method::POST, ["volumes", id, "attach"]) => {
            let node = query_param(query, "node")
                .ok_or_else(|| ScError::Invalid("node (an IP address) is required".into()))?;
            let node: IpAddr = node
                .parse()
                .map_err(|_| ScError::Invalid(format!("node {node:?} is not an IP address")))?;
            let (v, uri) = sc.attach(id, node).await?;
            json!({"volume": volume_json(sc, &v), "uri": uri})
        }
        (&Method::POST, ["volumes", id, "detach"]) => volume_json(sc, &sc.detach(id).await?),
        (&Method::POST, ["volumes", id, "snapshots"]) => to_json(&sc.create_snapshot(id).await?)?,
        (&Method::GET, ["snapshots"]) => to_json(&sc.snapshots()?)?,
        (&Method::GET, ["snapshots", id]) => to_json(&sc.describe_snapshot(id)?)?,
        (&Method::DELETE, ["snapshots", id]) => {
            sc.delete_snapshot(id).await?;
            json!({"deleted": id})
        }
        _ => return Ok(None),
    }))
}

fn metrics(st: &ApiState) -> String {
    let sc = &st.sc;
    let (mut avail, mut inuse) = (0, 0);
    for v in sc.volumes().unwrap_or_default() {
        match v.state {
            crate::model::VolumeState::InUse => inuse += 1,
            _ => avail += 1,
        }
    }
    format!(
        "# TYPE euca_sc_requests_total counter\neuca_sc_requests_total {}\n\
         # TYPE euca_sc_request_errors_total counter\neuca_sc_request_errors_total {}\n\
         # TYPE euca_sc_volumes gauge\neuca_sc_volumes{{state=\"in-use\"}} {inuse}\neuca_sc_volumes{{state=\"other\"}} {avail}\n\
         # TYPE euca_sc_snapshots_running gauge\neuca_sc_snapshots_running {}\n\
         # TYPE euca_sc_snapshot_bytes_uploading gauge\neuca_sc_snapshot_bytes_uploading {}\n",
        st.requests.load(Ordering::Relaxed),
        st.errors.load(Ordering::Relaxed),
        sc.running_snapshots(),
        sc.bytes_uploaded_total(),
    )
}
