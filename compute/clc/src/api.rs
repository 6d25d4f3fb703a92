//! The cloud controller's listener: the EC2 Query API on `/`, `/services/compute`
//! and `/services/Eucalyptus` (POST form bodies or GET query strings, any
//! `Version`), and the identity service's `/_admin/…` and `/_identity/…` routes.
//!
//! An EC2 request is authenticated before its body is read: the key is looked up
//! first, then at most [`MAX_BODY`] bytes are read and the signature is checked
//! over them (SigV4, service `ec2`, the signing key derived from the region in the
//! request's scope: euca2ools signs with `undefined-<pid>`). Answers are
//! `<{Action}Response>` documents with a `requestId`; errors are EC2 XML with a
//! `RequestID`.
use crate::actions::{self, Action};
use crate::error::Ec2Error;
use crate::params::Params;
use crate::Clc;
use bytes::Bytes;
use euca_aws::auth::{authenticate_form, form_query_params, AuthConfig, FormAuthError};
use euca_aws::encoding::parse_form;
use euca_aws::xml::XmlWriter;
use euca_aws::{CredentialLookup, Principal};
use euca_identity::service::{IdentityEndpoint, IdentityService};
use euca_service::body::read_capped;
use euca_service::{Api, Ctx, EdgeError};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;

pub type Resp = Response<Full<Bytes>>;

/// The largest EC2 request body read (UserData is at most 16 KiB before base64).
pub const MAX_BODY: usize = 256 * 1024;

/// The namespace answers carry unless the request's `Version` is a plain date.
const DEFAULT_VERSION: &str = "2016-11-15";

/// The paths the EC2 API answers on (Eucalyptus clients use the `/services/…` ones).
pub fn is_ec2_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "" | "/services/compute" | "/services/Eucalyptus"
    )
}

/// The operations of the cloud controller's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClcEndpoint {
    /// An EC2 Query request (the action is in the parameters, read after
    /// authentication).
    Ec2,
    Identity(IdentityEndpoint),
}

impl euca_service::Endpoint for ClcEndpoint {
    fn name(&self) -> &'static str {
        match self {
            ClcEndpoint::Ec2 => "Ec2Query",
            ClcEndpoint::Identity(e) => e.name(),
        }
    }
}

/// Everything the listener serves.
pub struct ClcApi {
    clc: Arc<Clc>,
    identity: Arc<IdentityService>,
    lookup: Arc<dyn CredentialLookup>,
}

impl ClcApi {
    pub fn new(
        clc: Arc<Clc>,
        identity: Arc<IdentityService>,
        lookup: Arc<dyn CredentialLookup>,
    ) -> Arc<ClcApi> {
        Arc::new(ClcApi {
            clc,
            identity,
            lookup,
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

    async fn ec2(&self, req: Request<Incoming>, cx: &Ctx) -> Resp {
        let (parts, body) = req.into_parts();
        let (caller, params) = match self.authenticate(&parts, body).await {
            Ok(v) => v,
            Err(e) => return error(&e, cx),
        };
        let action_name = params.get("Action").unwrap_or("").to_string();
        let result = self.run(&caller, &params, cx).await;
        tracing::info!(
            target: "ec2",
            action = ?action_name,
            account = %caller.account_id,
            request_id = %cx.request_id,
            code = %result.as_ref().err().map(|e| e.code()).unwrap_or_default(),
        );
        match result {
            Ok(xml) => {
                let mut r = Response::new(Full::new(Bytes::from(xml)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/xml;charset=UTF-8"),
                );
                r
            }
            Err(e) => error(&e, cx),
        }
    }

    async fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<(Principal, Params), Ec2Error> {
        if parts.method != Method::POST && parts.method != Method::GET {
            return Err(Ec2Error::invalid(format!(
                "the EC2 API takes GET or POST, not {}",
                parts.method
            )));
        }
        let headers = parts.headers.clone();
        let cfg = AuthConfig::ec2(&self.clc.region);
        let now = self.clc.now();
        let (caller, body) =
            authenticate_form(parts, self.lookup.as_ref(), &cfg, now, || async move {
                read_capped(&headers, body, MAX_BODY).await
            })
            .await
            .map_err(|e| match e {
                FormAuthError::Auth(a) => {
                    let (code, status) = a.ec2_code();
                    match code {
                        "AuthFailure" => Ec2Error::AuthFailure(a.to_string()),
                        _ => Ec2Error::Auth {
                            code,
                            status,
                            message: a.to_string(),
                        },
                    }
                }
                FormAuthError::Body(b) => Ec2Error::invalid(format!("request body: {b}")),
            })?;
        let mut pairs = form_query_params(parts).map_err(|e| Ec2Error::invalid(e.to_string()))?;
        if parts.method == Method::POST {
            pairs.extend(parse_form(&body).map_err(|e| Ec2Error::invalid(e.to_string()))?);
        }
        Ok((caller, Params::new(pairs)?))
    }

    async fn run(&self, caller: &Principal, params: &Params, cx: &Ctx) -> Result<String, Ec2Error> {
        let name = params.required("Action")?;
        let action =
            Action::parse(name).ok_or_else(|| Ec2Error::InvalidAction(name.to_string()))?;
        // DryRun asks "would this be allowed?" without doing it. Until every action
        // can answer that (DryRunOperation, 412), it is refused before anything runs:
        // never run an action a caller meant only to check.
        if params.bool("DryRun")? == Some(true) {
            return Err(Ec2Error::Parameter {
                code: "UnsupportedOperation",
                message: "DryRun is not supported yet; nothing was done".into(),
            });
        }
        let version = params
            .get("Version")
            .filter(|v| {
                !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            })
            .unwrap_or(DEFAULT_VERSION);
        let mut x = XmlWriter::new();
        x.root(
            format!("{}Response", action.name()),
            &format!("http://ec2.amazonaws.com/doc/{version}/"),
        );
        x.elem("requestId", &cx.request_id);
        let call = crate::call::Call {
            clc: &self.clc,
            caller,
            params,
            request_id: &cx.request_id,
        };
        actions::dispatch(action, &call, &mut x).await?;
        Ok(x.finish())
    }
}

fn error(e: &Ec2Error, cx: &Ctx) -> Resp {
    if e.status() >= 500 {
        tracing::warn!(request_id = %cx.request_id, error = %e, "EC2 request failed");
    }
    euca_service::render::ec2_error(e.status(), &e.code(), &e.to_string(), &cx.request_id)
}

impl Api for ClcApi {
    type Endpoint = ClcEndpoint;
    type Body = Full<Bytes>;
    fn service(&self) -> &'static str {
        "clc"
    }
    fn route(&self, head: &http::request::Parts) -> ClcEndpoint {
        let path = head.uri.path();
        if path.starts_with("/_admin/") || path.starts_with("/_identity/") || !is_ec2_path(path) {
            ClcEndpoint::Identity(IdentityEndpoint::parse(&head.method, path))
        } else {
            ClcEndpoint::Ec2
        }
    }
    async fn handle(self: Arc<Self>, ep: ClcEndpoint, req: Request<Incoming>, cx: Ctx) -> Resp {
        match ep {
            ClcEndpoint::Ec2 => self.ec2(req, &cx).await,
            ClcEndpoint::Identity(ep) => self.identity.clone().handle(ep, req, cx).await,
        }
    }
    fn render_error(&self, e: &EdgeError, cx: &Ctx) -> Resp {
        euca_service::render::ec2_error(e.status, e.code, e.message, &cx.request_id)
    }
    fn body(&self, bytes: Bytes) -> Full<Bytes> {
        Full::new(bytes)
    }
}
