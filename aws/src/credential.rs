//! What every signature verifier shares (SigV4 in [`crate::auth`], SigV2 in
//! [`crate::sigv2`], chunk signatures in [`crate::chunked`]): the verified caller, the
//! credential lookup, the auth errors and the one constant-time compare of the
//! workspace. Kept apart so the verifiers import it and not each other.
use subtle::ConstantTimeEq;
use time::Duration;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account_id: String,
    /// The S3 canonical user id of the account (owner of buckets and objects).
    pub canonical_id: String,
    pub display_name: String,
    pub access_key: String,
}

/// An active access key and who it belongs to.
#[derive(Debug, Clone)]
pub struct Credential {
    pub secret: String,
    pub principal: Principal,
}

/// The identity store could not be asked (a remote identity service that is down or
/// answers garbage): the request can be neither accepted nor refused as unknown.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("identity service unavailable: {0}")]
pub struct LookupError(pub String);

/// The identity store, as the verifier sees it: only active keys are returned.
/// `Ok(None)` means "no such (active) key"; `Err` means the store could not answer,
/// which an edge reports as a retryable 503, never as an unknown key.
#[async_trait::async_trait]
pub trait CredentialLookup: Send + Sync {
    async fn lookup(&self, access_key: &str) -> Result<Option<Credential>, LookupError>;
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub region: String,
    pub service: &'static str,
    pub max_skew: Duration,
}

impl AuthConfig {
    pub fn s3(region: &str) -> Self {
        Self {
            region: region.to_string(),
            service: "s3",
            max_skew: Duration::minutes(15),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureDoesNotMatch,
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    InvalidAccessKeyId,
    #[error("The difference between the request time and the current time is too large.")]
    RequestTimeTooSkewed,
    #[error("Request has expired")]
    Expired,
    #[error("AWS authentication requires a valid Date or x-amz-date header")]
    AccessDeniedDate,
    #[error("The authorization header is malformed: {0}")]
    HeaderMalformed(String),
    #[error("Query-string authentication is malformed: {0}")]
    QueryMalformed(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")]
    MixedAuth,
    #[error("{0} is not implemented")]
    NotImplemented(String),
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,
    #[error("An unsigned header must be signed: {0}")]
    UnsignedHeader(String),
    /// The identity store did not answer; the client should retry. The detail is for
    /// the server's log, not the client.
    #[error("Service is unable to handle request.")]
    IdentityUnavailable(String),
}

impl AuthError {
    /// AWS error code and HTTP status.
    pub fn code(&self) -> (&'static str, u16) {
        match self {
            Self::SignatureDoesNotMatch => ("SignatureDoesNotMatch", 403),
            Self::InvalidAccessKeyId => ("InvalidAccessKeyId", 403),
            Self::RequestTimeTooSkewed => ("RequestTimeTooSkewed", 403),
            Self::Expired => ("AccessDenied", 403),
            Self::AccessDeniedDate => ("AccessDenied", 403),
            Self::HeaderMalformed(_) => ("AuthorizationHeaderMalformed", 400),
            Self::QueryMalformed(_) => ("AuthorizationQueryParametersError", 400),
            Self::InvalidArgument(_) => ("InvalidArgument", 400),
            Self::MixedAuth => ("InvalidArgument", 400),
            Self::NotImplemented(_) => ("NotImplemented", 501),
            Self::ContentSha256Mismatch => ("XAmzContentSHA256Mismatch", 400),
            Self::MissingContentSha256 => ("InvalidRequest", 400),
            Self::UnsignedHeader(_) => ("AccessDenied", 403),
            Self::IdentityUnavailable(_) => ("ServiceUnavailable", 503),
        }
    }
}

/// Looks up an active key: unknown is `InvalidAccessKeyId`, an unreachable store is
/// `IdentityUnavailable` (503).
pub(crate) async fn lookup_key(
    lookup: &dyn CredentialLookup,
    access_key: &str,
) -> Result<Credential, AuthError> {
    match lookup.lookup(access_key).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(AuthError::InvalidAccessKeyId),
        Err(e) => Err(AuthError::IdentityUnavailable(e.0)),
    }
}

/// Compares two secrets (signatures, tokens) in time that depends only on their
/// lengths. The one constant-time compare of the workspace: use it for every
/// comparison of a secret with a value a client sent.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
        assert_eq!(
            AuthError::IdentityUnavailable("x".into()).code(),
            ("ServiceUnavailable", 503)
        );
    }
}
