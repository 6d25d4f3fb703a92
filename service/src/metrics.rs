//! Who may read `/_metrics`.
use http::HeaderMap;
use std::sync::Arc;

/// Access to `/_metrics`: open to anyone (`metrics_public = true`), or only with
/// `Authorization: Bearer <token>`, or to no one (no token configured).
/// `/_health` is never restricted.
#[derive(Clone, Debug)]
pub enum MetricsAccess {
    Public,
    Token(Arc<[u8]>),
    Closed,
}

impl MetricsAccess {
    /// Access with this token (surrounding whitespace, as in a token file, ignored);
    /// an empty token opens nothing.
    pub fn token(t: &str) -> Self {
        let t = t.trim();
        if t.is_empty() {
            MetricsAccess::Closed
        } else {
            MetricsAccess::Token(t.as_bytes().into())
        }
    }

    /// Whether a request with these headers may read the metrics.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match self {
            MetricsAccess::Public => true,
            MetricsAccess::Closed => false,
            MetricsAccess::Token(want) => {
                let got = headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes())
                    // The auth scheme is case-insensitive (RFC 7235).
                    .and_then(|v| {
                        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
                    })
                    .unwrap_or(b"");
                euca_aws::constant_time_eq(got, want)
            }
        }
    }

    /// The `WWW-Authenticate` value to send with a refusal.
    pub const CHALLENGE: &'static str = "Bearer realm=\"metrics\"";
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn token_compare() {
        let m = MetricsAccess::token("abc123\n");
        let mut h = HeaderMap::new();
        assert!(!m.allows(&h));
        h.insert("authorization", "Bearer abc12".parse().unwrap());
        assert!(!m.allows(&h));
        h.insert("authorization", "Bearer abc123".parse().unwrap());
        assert!(m.allows(&h));
        h.insert("authorization", "bearer abc123".parse().unwrap());
        assert!(m.allows(&h));
        h.insert("authorization", "Basic abc123".parse().unwrap());
        assert!(!m.allows(&h));
        assert!(MetricsAccess::Public.allows(&HeaderMap::new()));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert!(!MetricsAccess::token(" ").allows(&h));
    }
}
