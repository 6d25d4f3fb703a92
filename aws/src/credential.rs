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

    /// The name of the account whose S3 canonical user id is `canonical_id`, enabled or
    /// not (ACL grants name accounts by that id); `Ok(None)` if the cloud has none.
    /// The default knows no account (a store that only verifies signatures), so a
    /// grant checked against it is refused, never let through.
    async fn account_name(&self, _canonical_id: &str) -> Result<Option<String>, LookupError> {
        Ok(None)
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The region a SigV4 credential scope must name (unless `region_from_scope`).
    pub region: String,
    /// The service a SigV4 credential scope must name.
    pub service: &'static str,
    pub max_skew: Duration,
    /// Derive the signing key from whatever region the request's credential scope
    /// names instead of requiring `region`. For EC2 only: its clients sign with the
    /// region their user configured (euca2ools 3.x with `undefined-<pid>`), and the
    /// cloud has one region whatever its name. S3 and the SC keep the exact check.
    pub region_from_scope: bool,
}

impl AuthConfig {
    pub fn s3(region: &str) -> Self {
        Self {
            region: region.to_string(),
            service: "s3",
            max_skew: Duration::minutes(15),
            region_from_scope: false,
        }
    }

    /// The EC2 Query API: service `ec2`, any region in the scope, 15 minutes of skew.
    pub fn ec2(region: &str) -> Self {
        Self {
            region: region.to_string(),
            service: "ec2",
            max_skew: Duration::minutes(15),
            region_from_scope: true,
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
    /// The Authorization header's credential scope names the wrong date, region or
    /// service (for S3 the same answer as [`AuthError::HeaderMalformed`]).
    #[error("The authorization header is malformed: {0}")]
    HeaderScope(String),
    /// The same for `X-Amz-Credential` (S3: as [`AuthError::QueryMalformed`]).
    #[error("Query-string authentication is malformed: {0}")]
    QueryScope(String),
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
    /// No credentials at all, where an API has no anonymous access (EC2).
    #[error("The request carries no AWS Signature Version 4 (neither an Authorization header nor X-Amz-* query parameters).")]
    MissingAuthentication,
    /// A signature scheme this API does not accept (EC2 with Signature Version 2).
    #[error("{0} is not supported; sign the request with AWS Signature Version 4")]
    UnsupportedSignature(String),
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
            Self::HeaderScope(_) => ("AuthorizationHeaderMalformed", 400),
            Self::QueryScope(_) => ("AuthorizationQueryParametersError", 400),
            Self::InvalidArgument(_) => ("InvalidArgument", 400),
            Self::MixedAuth => ("InvalidArgument", 400),
            Self::NotImplemented(_) => ("NotImplemented", 501),
            Self::ContentSha256Mismatch => ("XAmzContentSHA256Mismatch", 400),
            Self::MissingContentSha256 => ("InvalidRequest", 400),
            Self::UnsignedHeader(_) => ("AccessDenied", 403),
            Self::IdentityUnavailable(_) => ("ServiceUnavailable", 503),
            Self::MissingAuthentication => ("AccessDenied", 403),
            Self::UnsupportedSignature(_) => ("AccessDenied", 403),
        }
    }

    /// EC2 Query API error code and HTTP status (the `<Code>` of an EC2 `<Response>`
    /// error), for the same errors [`AuthError::code`] names for S3:
    ///
    /// | error | EC2 code | status |
    /// | --- | --- | --- |
    /// | bad signature, unknown or disabled key, credential scope (date, service) not this request's or API's, unsigned header, signature scheme not accepted | `AuthFailure` | 403 |
    /// | request time outside the allowed skew, presigned URL expired | `RequestExpired` | 400 |
    /// | no credentials at all | `MissingAuthenticationToken` | 403 |
    /// | no usable date | `MissingParameter` | 400 |
    /// | `X-Amz-Content-SHA256` not the body's hash | `XAmzContentSHA256Mismatch` | 400 |
    /// | malformed Authorization header or X-Amz-* query parameters, bad argument, mixed auth | `InvalidParameterValue` | 400 |
    /// | unsupported payload mode | `Unsupported` | 400 |
    /// | identity store unreachable (retryable) | `ServiceUnavailable` | 503 |
    pub fn ec2_code(&self) -> (&'static str, u16) {
        match self {
            Self::SignatureDoesNotMatch
            | Self::InvalidAccessKeyId
            | Self::UnsignedHeader(_)
            | Self::UnsupportedSignature(_)
            | Self::HeaderScope(_)
            | Self::QueryScope(_) => ("AuthFailure", 403),
            Self::RequestTimeTooSkewed | Self::Expired => ("RequestExpired", 400),
            Self::MissingAuthentication => ("MissingAuthenticationToken", 403),
            Self::AccessDeniedDate => ("MissingParameter", 400),
            Self::ContentSha256Mismatch => ("XAmzContentSHA256Mismatch", 400),
            Self::HeaderMalformed(_)
            | Self::QueryMalformed(_)
            | Self::InvalidArgument(_)
            | Self::MixedAuth
            | Self::MissingContentSha256 => ("InvalidParameterValue", 400),
            Self::NotImplemented(_) => ("Unsupported", 400),
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
