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
//! | POST | /volumes/{id}/attach | `node` (an IP address), `protocol` (`nbd`, the default, or `iscsi`) | export it to that node; returns the URI (`nbd[s]://…` or `iscsi://USER%SECRET@host:port/<iqn>/0`) |
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
use euca_aws::encoding::parse_query_strict;
use euca_service::body::{read_capped, BodyError};
use euca_service::MetricsAccess;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::IpAddr;
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

/// The one error renderer of the SC API (the internal APIs' JSON shape).
fn error_resp(status: u16, code: &str, message: &str) -> Resp {
    euca_service::render::json_error(status, code, message)
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

/// The value of query parameter `name`, decoded by the shared query rules
/// ([`parse_query_strict`], the S3 ones: `%XX` escapes, `+` stays `+`). A malformed
/// escape or non-UTF-8 text anywhere in the query, or `name` given more than once, is
/// `InvalidParameterValue` (400).
fn query_param(query: &str, name: &str) -> Result<Option<String>, ScError> {
    let pairs = parse_query_strict(query).map_err(|e| ScError::Invalid(e.to_string()))?;
    let mut values = pairs.into_iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(ScError::Invalid(format!(
            "query parameter {name:?} is given more than once"
        )));
    }
    Ok(first)
}

/// The SC API's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScEndpoint {
    CreateVolume,
    DescribeVolumes,
    DescribeVolume,
    DeleteVolume,
    AttachVolume,
    DetachVolume,
    CreateSnapshot,
    DescribeSnapshots,
    DescribeSnapshot,
    DeleteSnapshot,
    /// No such operation (answered `InvalidAction`).
    Unknown,
}

impl euca_service::Endpoint for ScEndpoint {
    fn name(&self) -> &'static str {
        match self {
            ScEndpoint::CreateVolume => "CreateVolume",
            ScEndpoint::DescribeVolumes => "DescribeVolumes",
            ScEndpoint::DescribeVolume => "DescribeVolume",
            ScEndpoint::DeleteVolume => "DeleteVolume",
            ScEndpoint::AttachVolume => "AttachVolume",
            ScEndpoint::DetachVolume => "DetachVolume",
            ScEndpoint::CreateSnapshot => "CreateSnapshot",
            ScEndpoint::DescribeSnapshots => "DescribeSnapshots",
            ScEndpoint::DescribeSnapshot => "DescribeSnapshot",
            ScEndpoint::DeleteSnapshot => "DeleteSnapshot",
            ScEndpoint::Unknown => "Unknown",
        }
    }
}

/// The path's segments, percent-decoded.
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

impl ScEndpoint {
    /// The operation of `method` on these path segments.
    pub fn parse(m: &Method, segs: &[&str]) -> ScEndpoint {
        use ScEndpoint::*;
        match (m, segs) {
            (&Method::POST, ["volumes"]) => CreateVolume,
            (&Method::GET, ["volumes"]) => DescribeVolumes,
            (&Method::GET, ["volumes", _]) => DescribeVolume,
            (&Method::DELETE, ["volumes", _]) => DeleteVolume,
            (&Method::POST, ["volumes", _, "attach"]) => AttachVolume,
            (&Method::POST, ["volumes", _, "detach"]) => DetachVolume,
            (&Method::POST, ["volumes", _, "snapshots"]) => CreateSnapshot,
            (&Method::GET, ["snapshots"]) => DescribeSnapshots,
            (&Method::GET, ["snapshots", _]) => DescribeSnapshot,
            (&Method::DELETE, ["snapshots", _]) => DeleteSnapshot,
            _ => Unknown,
        }
    }
}

impl euca_service::Api for ApiState {
    type Endpoint = ScEndpoint;
    type Body = Full<Bytes>;
    fn service(&self) -> &'static str {
        "sc"
    }
    fn route(&self, head: &http::request::Parts) -> ScEndpoint {
        let segs = segments(head.uri.path());
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        ScEndpoint::parse(&head.method, &segs)
    }
    async fn handle(
        self: Arc<Self>,
        ep: ScEndpoint,
        req: http::Request<Incoming>,
        _cx: euca_service::Ctx,
    ) -> Resp {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = route(&self, ep, req).await;
        if !resp.status().is_success() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        resp
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Resp {
        error_resp(e.status, e.code, e.message)
    }
    fn body(&self, bytes: Bytes) -> Full<Bytes> {
        Full::new(bytes)
    }
}

async fn route(st: &ApiState, ep: ScEndpoint, req: http::Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let cfg = AuthConfig {
        region: st.region.clone(),
        service: "sc",
        max_skew: time::Duration::minutes(15),
        region_from_scope: false,
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
    let segs = segments(&path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match dispatch(&st.sc, ep, &segs, query).await {
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
    ep: ScEndpoint,
    segs: &[&str],
    query: &str,
) -> Result<Option<Value>, ScError> {
    use ScEndpoint::*;
    Ok(Some(match (ep, segs) {
        (CreateVolume, _) => {
            let size = match query_param(query, "size_gib")? {
                Some(s) => Some(
                    s.parse::<u64>()
                        .map_err(|_| ScError::Invalid(format!("size_gib {s:?} is not a number")))?,
                ),
                None => None,
            };
            let snap = query_param(query, "snapshot_id")?;
            volume_json(sc, &sc.create_volume(size, snap.as_deref()).await?)
        }
        (DescribeVolumes, _) => {
            Value::Array(sc.volumes()?.iter().map(|v| volume_json(sc, v)).collect())
        }
        (DescribeVolume, [_, id]) => {
            let mut j = volume_json(sc, &sc.describe_volume(id)?);
            if let Some((present, total)) = sc.fill_state(id).await {
                j["chunks_present"] = json!(present);
                j["chunks_total"] = json!(total);
            }
            j
        }
        (DeleteVolume, [_, id]) => {
            sc.delete_volume(id).await?;
            json!({"deleted": id})
        }
        (AttachVolume, [_, id, _]) => {
            let node = query_param(query, "node")?
                .ok_or_else(|| ScError::Invalid("node (an IP address) is required".into()))?;
            let node: IpAddr = node
                .parse()
                .map_err(|_| ScError::Invalid(format!("node {node:?} is not an IP address")))?;
            let protocol = match query_param(query, "protocol")? {
                None => crate::export::Protocol::Nbd,
                Some(p) => p.parse().map_err(ScError::Invalid)?,
            };
            let (v, uri) = sc.attach(id, node, protocol).await?;
            json!({"volume": volume_json(sc, &v), "uri": uri})
        }
        (DetachVolume, [_, id, _]) => volume_json(sc, &sc.detach(id).await?),
        (CreateSnapshot, [_, id, _]) => to_json(&sc.create_snapshot(id).await?)?,
        (DescribeSnapshots, _) => to_json(&sc.snapshots()?)?,
        (DescribeSnapshot, [_, id]) => to_json(&sc.describe_snapshot(id)?)?,
        (DeleteSnapshot, [_, id]) => {
            sc.delete_snapshot(id).await?;
            json!({"deleted": id})
        }
        _ => return Ok(None),
    }))
}

impl euca_service::registry::MetricSource for ApiState {
    fn report(&self, out: &mut euca_service::registry::Scrape) {
        let sc = &self.sc;
        let (mut avail, mut inuse) = (0, 0);
        for v in sc.volumes().unwrap_or_default() {
            match v.state {
                crate::model::VolumeState::InUse => inuse += 1,
                _ => avail += 1,
            }
        }
        out.counter(
            "euca_sc_requests_total",
            "SC API requests.",
            &[],
            self.requests.load(Ordering::Relaxed),
        );
        out.counter(
            "euca_sc_request_errors_total",
            "SC API requests answered with an error.",
            &[],
            self.errors.load(Ordering::Relaxed),
        );
        let help = "Volumes by state.";
        out.gauge("euca_sc_volumes", help, &[("state", "in-use")], inuse);
        out.gauge("euca_sc_volumes", help, &[("state", "other")], avail);
        out.gauge(
            "euca_sc_snapshots_running",
            "Snapshots being uploaded.",
            &[],
            sc.running_snapshots() as i64,
        );
        out.gauge(
            "euca_sc_snapshot_bytes_uploading",
            "Bytes uploaded by running snapshots.",
            &[],
            sc.bytes_uploaded_total() as i64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("node=a%2Fb", "node").unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(
            query_param("size_gib=10&snapshot_id=snap-1", "snapshot_id")
                .unwrap()
                .as_deref(),
            Some("snap-1")
        );
        assert_eq!(query_param("size_gib=10", "node").unwrap(), None);
        assert_eq!(query_param("", "node").unwrap(), None);
    }

    async fn refused(query: &str, name: &str) -> (u16, Value) {
        use http_body_util::BodyExt;
        let e = query_param(query, name).expect_err(query);
        let resp = Resp::from(e);
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&bytes).expect("JSON error body");
        (status, body)
    }

    #[tokio::test]
    async fn malformed_or_repeated_parameters_are_refused() {
        for (query, name) in [
            ("size_gib=%ZZ", "size_gib"),
            ("node=10.0.0.1&size_gib=%4", "node"),
            ("node=%C0%80", "node"),
            ("node=10.0.0.1&node=10.0.0.2", "node"),
        ] {
            let (status, body) = refused(query, name).await;
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"]["code"], "InvalidParameterValue", "{query}");
            assert!(body["error"]["message"].is_string(), "{query}");
        }
        let (_, body) = refused("node=1&node=2", "node").await;
        assert_eq!(
            body["error"]["message"],
            "query parameter \"node\" is given more than once"
        );
    }
}
