//! The JSON client both APIs' clients are made of: the cluster token on every
//! request, bounded answers, a timeout per call, errors as [`ProtoError`].
use std::time::Duration;

use bytes::Bytes;
use euca_service::bearer::{BearerClient, CallError, Token};
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ProtoError;

/// Largest answer read (a CC's `GET /v1/instances` for a big cluster fits).
pub const MAX_ANSWER: usize = 64 << 20;
/// Largest node report a CC reads from one poll (up to 1024 polls are in flight).
pub const MAX_NODE_REPORT: usize = 4 << 20;

#[derive(Clone)]
pub(crate) struct JsonClient {
    http: BearerClient,
    /// Base URL without a trailing slash.
    base: String,
}

impl JsonClient {
    pub fn new(base: &str, token: Token) -> Self {
        JsonClient {
            http: BearerClient::new(token),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method base+path` with an optional JSON body; a 2xx answer is decoded as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ProtoError> {
        self.call_capped(method, path, body, MAX_ANSWER, timeout)
            .await
    }

    /// [`JsonClient::call`] reading at most `max` bytes of answer.
    pub async fn call_capped<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        max: usize,
        timeout: Duration,
    ) -> Result<T, ProtoError> {
        let body = match body {
            Some(b) => Some(Bytes::from(
                serde_json::to_vec(b).map_err(|e| ProtoError::BadAnswer(e.to_string()))?,
            )),
            None => None,
        };
        let url = format!("{}{}", self.base, path);
        let (status, bytes) = self
            .http
            .call(method, &url, body, max, timeout)
            .await
            .map_err(|e| match e {
                CallError::TimedOut(t) => ProtoError::TimedOut(t),
                CallError::Failed(m) => ProtoError::Transport(m),
            })?;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct Inner {
                code: String,
                #[serde(default)]
                message: String,
            }
            #[derive(serde::Deserialize)]
            struct Outer {
                error: Inner,
            }
            let (code, message) = match serde_json::from_slice::<Outer>(&bytes) {
                Ok(o) => (o.error.code, o.error.message),
                Err(_) => (
                    status
                        .canonical_reason()
                        .unwrap_or("Error")
                        .replace(' ', ""),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                ),
            };
            return Err(ProtoError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ProtoError::BadAnswer(e.to_string()))
    }
}

/// The instance calls the NC API and the CC API share (same paths, same bodies).
impl JsonClient {
    /// `POST /v1/instances/{id}/{action}` (`terminate`, `reboot`).
    pub async fn instance_action<T: DeserializeOwned>(
        &self,
        id: &str,
        action: &str,
        timeout: Duration,
    ) -> Result<T, ProtoError> {
        let path = format!("/v1/instances/{}/{action}", seg(id));
        self.call(Method::POST, &path, None::<&()>, timeout).await
    }

    pub async fn console(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<crate::ConsoleOutput, ProtoError> {
        let path = format!("/v1/instances/{}/console", seg(id));
        self.call(Method::GET, &path, None::<&()>, timeout).await
    }

    pub async fn attach(
        &self,
        id: &str,
        spec: &crate::AttachSpec,
        timeout: Duration,
    ) -> Result<crate::VolumeReport, ProtoError> {
        let path = format!("/v1/instances/{}/volumes/{}", seg(id), seg(&spec.volume_id));
        self.call(Method::PUT, &path, Some(spec), timeout).await
    }

    pub async fn detach(
        &self,
        id: &str,
        volume: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<crate::VolumeReport, ProtoError> {
        let path = format!(
            "/v1/instances/{}/volumes/{}?force={force}",
            seg(id),
            seg(volume)
        );
        self.call(Method::DELETE, &path, None::<&()>, timeout).await
    }
}

/// Percent-encodes one path segment (ids are `[a-z0-9-]`, but a path segment is
/// never trusted to be).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
