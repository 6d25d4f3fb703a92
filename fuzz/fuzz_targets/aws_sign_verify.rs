//! Differential: a request signed the way clients sign it (any object key, any
//! query parameters, any extra headers) must authenticate, with SigV4 (header) and
//! SigV2 (header). Catches canonicalisation differences between what is signed and
//! what the verifier rebuilds from the parsed URI.
#![no_main]
use arbitrary::Arbitrary;
use euca_aws::encoding::uri_encode;
use euca_aws::sign::Signer;
use euca_aws::sigv4::{EMPTY_SHA256, UNSIGNED_PAYLOAD};
use euca_aws::timefmt::format_http_date;
use euca_aws::{authenticate, sigv2};
use euca_fuzz::{block_on, principal, s3_config, Keys, ACCESS_KEY, REGION, SECRET_KEY};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    bucket_in_path: bool,
    /// Object key bytes (encoded once, as SDKs do), or a raw path if `raw_path`.
    key: Vec<u8>,
    raw_path: Option<String>,
    query: Vec<(String, String)>,
    headers: Vec<(String, Vec<u8>)>,
    unsigned_payload: bool,
    v2: bool,
}

fuzz_target!(|inp: Input| {
    let method = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::HEAD,
    ][usize::from(inp.method) % 5]
        .clone();
    let path = match &inp.raw_path {
        Some(p) if p.starts_with('/') && !p.contains(['?', '#']) => p.clone(),
        Some(_) => return,
        None if inp.bucket_in_path => format!("/b/{}", uri_encode(&inp.key, true)),
        None => format!("/{}", uri_encode(&inp.key, true)),
    };
    let query = inp
        .query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    // A path the HTTP layer refuses never reaches the verifier.
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };

    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8773"));
    for (name, value) in &inp.headers {
        let lower = name.to_ascii_lowercase();
        // Headers with protocol meaning of their own are out of scope here.
        if lower == "authorization"
            || lower == "host"
            || lower.starts_with("x-amz-")
            || lower == "date"
            || lower.contains(',')
        {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(n, v);
    }
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);

    if inp.v2 {
        headers.insert(
            "date",
            HeaderValue::from_str(&format_http_date(now)).expect("ascii"),
        );
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("valid");
        *req.headers_mut() = headers;
        let (mut parts, ()) = req.into_parts();
        let date = format_http_date(now);
        let resource =
            sigv2::canonical_resource(parts.uri.path(), parts.uri.query().unwrap_or(""), None);
        let sig =
            sigv2::hmac_sha1_b64(SECRET_KEY, &sigv2::string_to_sign(&parts, &date, &resource));
        let authz = format!("AWS {ACCESS_KEY}:{sig}");
        parts.headers.insert(
            "authorization",
            HeaderValue::from_str(&authz).expect("ascii"),
        );
        let got = block_on(authenticate(&parts, &Keys, &s3_config(), now));
        assert_eq!(
            got.map(|a| a.principal),
            Ok(Some(principal())),
            "SigV2 {target:?}"
        );
        return;
    }

    let signer = Signer {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        region: REGION.into(),
        service: "s3".into(),
    };
    let payload = if inp.unsigned_payload {
        UNSIGNED_PAYLOAD
    } else {
        EMPTY_SHA256
    };
    signer.sign(method.as_str(), &path, &query, &mut headers, payload, now);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("valid");
    *req.headers_mut() = headers;
    let (parts, ()) = req.into_parts();
    let got = block_on(authenticate(&parts, &Keys, &s3_config(), now));
    assert_eq!(
        got.map(|a| a.principal),
        Ok(Some(principal())),
        "SigV4 {target:?}"
    );
});
