//! What the fuzz targets share: the fixed test identity (the seeds in `corpus/` are
//! signed with it, see `seeds/gen_seeds.py`) and a reader of raw HTTP request heads.
use euca_aws::auth::AuthConfig;
use euca_aws::timefmt::{parse_amz_date, parse_http_date};
use euca_aws::{Credential, CredentialLookup, LookupError, Principal};
use http::request::Parts;
use time::OffsetDateTime;

pub const ACCESS_KEY: &str = "AKIDFUZZEXAMPLE";
pub const SECRET_KEY: &str = "fuzz/secret+key";
pub const REGION: &str = "us-east-1";

/// Knows exactly one key: [`ACCESS_KEY`].
pub struct Keys;

#[euca_aws::async_trait]
impl CredentialLookup for Keys {
    async fn lookup(&self, access_key: &str) -> Result<Option<Credential>, LookupError> {
        Ok((access_key == ACCESS_KEY).then(|| Credential {
            secret: SECRET_KEY.to_string(),
            principal: principal(),
        }))
    }
}

/// Runs a future that never waits (verification against [`Keys`] does no I/O).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

pub fn principal() -> Principal {
    Principal {
        account_id: "000000000001".into(),
        canonical_id: "owner-canonical-id".into(),
        display_name: "owner".into(),
        access_key: ACCESS_KEY.into(),
    }
}

pub fn s3_config() -> AuthConfig {
    AuthConfig::s3(REGION)
}

/// Parses a request head (request line and headers, as on the wire). `None` when
/// it is not one that a server's HTTP layer would accept.
pub fn request_head(data: &[u8]) -> Option<Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(data).ok()?;
    let mut b = http::Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(h.value).ok()?;
        b = b.header(name, value);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

/// The time the request claims (so that signed seeds pass the skew and expiry
/// checks and the fuzzer reaches signature computation), else a fixed time.
pub fn request_time(parts: &Parts) -> OffsetDateTime {
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let query = euca_aws::encoding::parse_query(parts.uri.query().unwrap_or(""));
    let q = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    header("x-amz-date")
        .and_then(|d| parse_amz_date(d).or_else(|| parse_http_date(d)))
        .or_else(|| q("X-Amz-Date").and_then(|d| parse_amz_date(&d)))
        .or_else(|| header("date").and_then(parse_http_date))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000))
}
