//! TEMPORARY(ec2auth): stands in for `euca_aws::auth::authenticate_form` and
//! `euca_aws::encoding::parse_form` until they land (branch ec2auth). It looks the
//! key up but DOES NOT CHECK THE SIGNATURE. Removed at that merge; nothing else
//! may call it.
use bytes::Bytes;
use euca_aws::{AuthError, CredentialLookup, Principal};
use http::request::Parts;
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum FormAuthError<E: std::fmt::Display> {
    #[error("{0}")]
    Auth(AuthError),
    #[error("{0}")]
    Body(E),
}

pub async fn authenticate_form<F, Fut, E>(
    parts: &Parts,
    lookup: &dyn CredentialLookup,
    read_body: F,
) -> Result<(Principal, Bytes), FormAuthError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let authz = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(FormAuthError::Auth(AuthError::AccessDeniedDate))?;
    let ak = authz
        .split("Credential=")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .ok_or(FormAuthError::Auth(AuthError::InvalidAccessKeyId))?;
    let cred = lookup
        .lookup(ak)
        .await
        .map_err(|_| FormAuthError::Auth(AuthError::InvalidAccessKeyId))?
        .ok_or(FormAuthError::Auth(AuthError::InvalidAccessKeyId))?;
    let body = read_body().await.map_err(FormAuthError::Body)?;
    Ok((cred.principal, body))
}

pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            euca_aws::encoding::uri_decode_strict(&s)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("malformed form field {s:?}"))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}
