//! The one signed client for service-to-service calls (and the admin CLI): SigV4
//! through euca-aws, answers read with a cap, the internal APIs' JSON error
//! (`{"error": {"code": …, "message": …}}`) mapped to one typed [`ClientError`].
//!
//! Underneath is [`HttpClient`], the one HTTP client of service-to-service calls:
//! [`SignedClient`] signs with SigV4, the image cache's peer and tracker calls add
//! the cluster token. S3 traffic keeps its own client (euca-s3); this one is for the
//! small JSON APIs.
use bytes::Bytes;
use euca_aws::sign::Signer;
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Answers larger than this are refused (the internal APIs answer small JSON).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not an http:// URL")]
    InvalidUrl(String),
    /// The service could not be reached or the exchange broke off.
    #[error("calling {url}: {message}")]
    Transport { url: String, message: String },
    #[error("calling {url}: no answer in {secs} s")]
    Timeout { url: String, secs: u64 },
    /// The service answered with an error status.
    #[error("{status}: {code}: {message}")]
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("calling {url}: answer larger than {cap} bytes")]
    TooLarge { url: String, cap: usize },
    #[error("calling {url}: cannot decode the answer: {message}")]
    Decode { url: String, message: String },
}

impl ClientError {
    /// Whether the service itself could not answer (unreachable, broken, 5xx): the
    /// call may be retried, and nothing can be concluded from it.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => status.is_server_error(),
            ClientError::InvalidUrl(_) => false,
            _ => true,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why an exchange ended without a complete answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No complete answer within the deadline (the peer may just be busy).
    #[error("no answer in {0:?}")]
    TimedOut(Duration),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// Refused, reset, cut short: the exchange failed outright.
    #[error("{0}")]
    Failed(String),
}

/// The HTTP/1.1 client of every service-to-service call: pooled keep-alive
/// connections (idle 30 s), a connect timeout, one deadline for the whole exchange,
/// answers read with a cap (an announced `Content-Length` past it is refused before
/// reading; a body shorter than announced is a failure).
#[derive(Clone)]
pub struct HttpClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_nodelay(true);
        HttpClient {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(conn),
        }
    }

    /// Sends `req` and reads the answer (any status) of at most `max` bytes, all
    /// within `timeout`.
    pub async fn exchange(
        &self,
        req: http::Request<Full<Bytes>>,
        max: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ExchangeError> {
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ExchangeError::Failed(error_chain(&e)))?;
            let status = resp.status();
            let announced = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max as u64) {
                return Err(ExchangeError::TooLarge(max));
            }
            let body = match Limited::new(resp.into_body(), max).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(ExchangeError::TooLarge(max))
                }
                Err(e) => return Err(ExchangeError::Failed(e.to_string())),
            };
            if announced.is_some_and(|n| n != body.len() as u64) {
                return Err(ExchangeError::Failed(
                    "answer shorter than its Content-Length".into(),
                ));
            }
            Ok((status, body))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ExchangeError::TimedOut(timeout))?
    }
}

/// A client for one service, signing every request with one key.
#[derive(Clone)]
pub struct SignedClient {
    base: String,
    host: HeaderValue,
    signer: Signer,
    http: HttpClient,
    max_body: usize,
    timeout: Duration,
}

impl SignedClient {
    /// `base_url` is `http://host:port` (a trailing `/` is ignored); `service` is the
    /// SigV4 service name the server verifies.
    pub fn new(
        base_url: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        service: &str,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let uri: Uri = base
            .parse()
            .map_err(|_| ClientError::InvalidUrl(base_url.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::InvalidUrl(base_url.to_string()));
        }
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| ClientError::InvalidUrl(base_url.to_string()))?;
        Ok(Self {
            base,
            host,
            signer: Signer {
                access_key: access_key.to_string(),
                secret_key: secret_key.to_string(),
                region: region.to_string(),
                service: service.to_string(),
            },
            http: HttpClient::new(Duration::from_secs(5)),
            max_body: DEFAULT_MAX_BODY,
            timeout: Duration::from_secs(30),
        })
    }

    /// The whole exchange (connect, send, read the answer) must end within `t`.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Answers longer than `cap` bytes fail with [`ClientError::TooLarge`].
    pub fn with_max_body(mut self, cap: usize) -> Self {
        self.max_body = cap;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a signed request; `path_and_query` starts with `/` and is sent as is
    /// (already percent-encoded). Returns the body of a 2xx answer; any other
    /// status is a [`ClientError::Status`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let url = format!("{}{path_and_query}", self.base);
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::InvalidUrl(url.clone()))?;
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, self.host.clone());
        let hash = if body.is_empty() {
            euca_aws::sigv4::EMPTY_SHA256.to_string()
        } else {
            euca_aws::sigv4::sha256_hex(&body)
        };
        self.signer.sign(
            method.as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
            &mut headers,
            &hash,
            time::OffsetDateTime::now_utc(),
        );
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let (status, body) = self
            .http
            .exchange(req, self.max_body, self.timeout)
            .await
            .map_err(|e| match e {
                ExchangeError::TimedOut(t) => ClientError::Timeout {
                    url: url.clone(),
                    secs: t.as_secs(),
                },
                ExchangeError::TooLarge(cap) => ClientError::TooLarge {
                    url: url.clone(),
                    cap,
                },
                ExchangeError::Failed(message) => ClientError::Transport {
                    url: url.clone(),
                    message,
                },
            })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(error_of(status, &body))
    }

    /// [`SignedClient::call`] with no body, the answer decoded from JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<T, ClientError> {
        let body = self.call(method, path_and_query, Bytes::new()).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: format!("{}{path_and_query}", self.base),
            message: e.to_string(),
        })
    }
}

/// The typed error of an error answer: the JSON error shape of the internal APIs,
/// else the status with (the start of) the body as message.
fn error_of(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        error: Inner,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(s) => ClientError::Status {
            status,
            code: s.error.code,
            message: s.error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            ClientError::Status {
                status,
                code: status.canonical_reason().unwrap_or("Error").to_string(),
                message: text.trim().to_string(),
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_typed_and_others_keep_their_text() {
        let e = error_of(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"EntityAlreadyExists","message":"account 'a' already exists"}}"#,
        );
        assert!(matches!(
            &e,
            ClientError::Status { status, code, message }
                if *status == StatusCode::CONFLICT && code == "EntityAlreadyExists"
                    && message == "account 'a' already exists"
        ));
        assert!(!e.is_unavailable());
        let e = error_of(StatusCode::BAD_GATEWAY, b"<html>down</html>");
        assert!(
            matches!(&e, ClientError::Status { code, message, .. } if code == "Bad Gateway" && message == "<html>down</html>")
        );
        assert!(e.is_unavailable());
    }

    #[test]
    fn only_http_urls() {
        assert!(SignedClient::new("http://127.0.0.1:1/", "a", "s", "r", "x").is_ok());
        for bad in ["https://h/", "127.0.0.1:1", "not a url"] {
            assert!(
                matches!(
                    SignedClient::new(bad, "a", "s", "r", "x"),
                    Err(ClientError::InvalidUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn unreachable_is_unavailable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = SignedClient::new(&format!("http://127.0.0.1:{port}"), "a", "s", "r", "x").unwrap();
        let e = c
            .json::<serde_json::Value>(Method::GET, "/x")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Transport { .. }), "{e}");
        assert!(e.is_unavailable());
    }
}
