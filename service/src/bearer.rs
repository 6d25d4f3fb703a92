//! The cluster's shared secret and the client that carries it: every internal
//! API of the compute services (the image tracker and piece servers, the CC and
//! NC APIs) authenticates each request with `Authorization: Bearer <token>`,
//! compared in constant time; [`BearerClient`] is [`crate::client::HttpClient`]
//! with that header on every request.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the cluster token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
}

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The shared secret of a cluster's nodes, its CC (and tracker) and the CLC.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// The token as read from its file or config: surrounding whitespace (the
    /// file's final newline) is not part of it.
    pub fn new(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort);
        }
        Ok(Token(s.into()))
    }

    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether the request carries this token (constant-time compare).
    pub fn admits<B>(&self, req: &Request<B>) -> bool {
        let got = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        euca_aws::constant_time_eq(got.as_bytes(), self.0.as_bytes())
    }
}

/// Why a call failed: it took too long (the peer may just be busy), or it failed
/// outright (refused, reset, cut short, oversized).
#[derive(Debug)]
pub enum CallError {
    TimedOut(Duration),
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::TimedOut(t) => write!(f, "timed out after {t:?}"),
            CallError::Failed(m) => f.write_str(m),
        }
    }
}

/// The client of the internal APIs: [`crate::client::HttpClient`] with the
/// cluster token on every request.
#[derive(Clone)]
pub struct BearerClient {
    client: crate::client::HttpClient,
    token: Token,
}

impl BearerClient {
    pub fn new(token: Token) -> Self {
        BearerClient {
            client: crate::client::HttpClient::new(Duration::from_secs(2)),
            token,
        }
    }

    /// Sends a request and reads a body of at most `max` bytes, all within
    /// `timeout`. Non-2xx statuses are returned, not turned into errors.
    pub async fn call(
        &self,
        method: http::Method,
        url: &str,
        body: Option<Bytes>,
        max: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", self.token.header());
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| CallError::Failed(e.to_string()))?;
        use crate::client::ExchangeError;
        self.client
            .exchange(req, max, timeout)
            .await
            .map_err(|e| match e {
                ExchangeError::TimedOut(t) => CallError::TimedOut(t),
                other => CallError::Failed(other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks_the_bearer_header() {
        assert!(matches!(Token::new("short"), Err(TokenError::TooShort)));
        let t = Token::new("0123456789abcdef\n").unwrap();
        assert_eq!(t.header(), "Bearer 0123456789abcdef");
        let req = |v: &str| {
            Request::builder()
                .header("authorization", v)
                .body(())
                .unwrap()
        };
        assert!(t.admits(&req("Bearer 0123456789abcdef")));
        assert!(!t.admits(&req("Bearer 0123456789abcdeF")));
        assert!(!t.admits(&req("0123456789abcdef")));
        assert!(!t.admits(&Request::new(())));
    }
}
