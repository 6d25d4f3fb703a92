//! The JSON client both APIs' clients are made of: the cluster token on every
//! request, bounded answers, a timeout per call, errors as [`ProtoError`].
use std::time::Duration;

use bytes::Bytes;
use euca_imagecache::http::{CallError, HttpClient, Token};
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ProtoError;

/// Largest answer read (a CC's `GET /v1/instances` for a big cluster fits).
pub const MAX_ANSWER: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct JsonClient {
    http: HttpClient,
    /// Base URL without a trailing slash.
    base: String,
}

impl JsonClient {
    pub fn new(base: &str, token: Token) -> Self {
        JsonClient {
            http: HttpClient::new(token),
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
        let body = match body {
            Some(b) => Some(Bytes::from(
                serde_json::to_vec(b).map_err(|e| ProtoError::BadAnswer(e.to_string()))?,
            )),
            None => None,
        };
        let url = format!("{}{}", self.base, path);
        let (status, bytes) = self
            .http
            .call(method, &url, body, MAX_ANSWER, timeout)
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
