//! EC2 Query API authentication against real client captures (awscli 1 and 2, boto3,
//! euca2ools 3.4; see tests/data/ec2/README.md): every capture verifies with
//! `authenticate_form` and decodes to the parameters the capturing server saw, and each
//! way of breaking one is refused with the right error, the body unread where the
//! refusal can be made without it.
use bytes::Bytes;
use euca_aws::auth::{authenticate_form, form_query_params, FormAuthError};
use euca_aws::credential::{AuthConfig, AuthError, Credential, CredentialLookup, LookupError};
use euca_aws::encoding::parse_form;
use euca_aws::sign::Signer;
use euca_aws::sigv4;
use euca_aws::timefmt::{format_amz_date, parse_amz_date};
use euca_aws::Principal;
use http::request::Parts;
use std::cell::Cell;
use std::convert::Infallible;
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "testsecret";

/// One key pair, as the captures were signed with (or another secret for it).
struct Keys(&'static str);

#[async_trait::async_trait]
impl CredentialLookup for Keys {
    async fn lookup(&self, k: &str) -> Result<Option<Credential>, LookupError> {
        Ok((k == AKID).then(|| Credential {
            secret: self.0.into(),
            principal: principal(),
        }))
    }
}

fn principal() -> Principal {
    Principal {
        account_id: "000000000001".into(),
        canonical_id: "canon".into(),
        display_name: "admin".into(),
        access_key: AKID.into(),
    }
}

/// A parsed capture: the request head, its body and the parameters the capturing
/// server decoded (`###   Name = Value`).
struct Capture {
    name: String,
    parts: Parts,
    body: Vec<u8>,
    params: Vec<(String, String)>,
    now: OffsetDateTime,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ec2")
}

fn parse_capture(name: &str, raw: &[u8]) -> Capture {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{name}: no end of head"));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().expect("request line");
    let mut rl = request_line.split(' ');
    let (method, target) = (rl.next().unwrap(), rl.next().unwrap());
    let mut b = http::Request::builder().method(method).uri(target);
    let mut length = None;
    for line in lines {
        let (k, v) = line.split_once(": ").expect("header line");
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().expect("Content-Length"));
        }
        b = b.header(k, v);
    }
    let length = length.unwrap_or_else(|| panic!("{name}: no Content-Length"));
    let rest = &raw[split + 4..];
    assert!(
        rest.len() >= length,
        "{name}: body shorter than Content-Length"
    );
    let body = rest[..length].to_vec();
    let tail = std::str::from_utf8(&rest[length..]).expect("UTF-8 notes");
    assert!(
        tail.starts_with('\n'),
        "{name}: the body ends where the notes start"
    );
    let mut params = Vec::new();
    let mut in_params = false;
    for line in tail.lines() {
        if line == "### decoded parameters:" {
            in_params = true;
        } else if let Some(p) = line.strip_prefix("###   ").filter(|_| in_params) {
            let (k, v) = p.split_once(" = ").expect("Name = Value");
            params.push((k.to_string(), v.to_string()));
        } else if in_params {
            break;
        }
    }
    assert!(
        tail.contains("sigv4 OK"),
        "{name}: the capturing server accepted it"
    );
    let parts = b.body(()).unwrap().into_parts().0;
    let amz = parts.headers["x-amz-date"].to_str().unwrap();
    let now = parse_amz_date(amz).expect("X-Amz-Date");
    Capture {
        name: name.to_string(),
        parts,
        body,
        params,
        now,
    }
}

fn captures() -> Vec<Capture> {
    let mut out: Vec<Capture> = std::fs::read_dir(data_dir())
        .expect("tests/data/ec2")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            parse_capture(&name, &std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn capture(name: &str) -> Capture {
    captures()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no capture {name}"))
}

type Outcome = Result<(Principal, Bytes), FormAuthError<Infallible>>;

/// Runs `authenticate_form` with a body reader that records whether it was called.
fn verify_with(
    parts: &Parts,
    body: &[u8],
    keys: &Keys,
    cfg: &AuthConfig,
    now: OffsetDateTime,
    read: &Cell<bool>,
) -> Outcome {
    let body = Bytes::copy_from_slice(body);
    futures::executor::block_on(authenticate_form(parts, keys, cfg, now, || {
        read.set(true);
        async move { Ok::<_, Infallible>(body) }
    }))
}

fn verify(parts: &Parts, body: &[u8], keys: &Keys, now: OffsetDateTime) -> Outcome {
    verify_with(parts, body, keys, &ec2(), now, &Cell::new(false))
}

fn ec2() -> AuthConfig {
    AuthConfig::ec2("eucalyptus-local")
}

fn auth_err(r: Outcome) -> AuthError {
    match r {
        Err(FormAuthError::Auth(e)) => e,
        Err(FormAuthError::Body(e)) => match e {},
        Ok(_) => panic!("accepted"),
    }
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

#[test]
fn every_capture_verifies_and_decodes() {
    let all = captures();
    for prefix in ["awscli1-", "awscli2-", "boto3-", "euca2ools-"] {
        assert!(
            all.iter().any(|c| c.name.starts_with(prefix)),
            "{prefix} captures present"
        );
    }
    assert!(all.len() >= 19, "{} captures", all.len());
    for c in &all {
        let (who, body) = verify(&c.parts, &c.body, &Keys(SECRET), c.now)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(who, principal(), "{}", c.name);
        assert_eq!(&body[..], &c.body[..], "{}: the body comes back", c.name);
        let params = parse_form(&body).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(!c.params.is_empty(), "{}", c.name);
        assert_eq!(sorted(params), c.params, "{}", c.name);
    }
}

#[test]
fn a_changed_body_byte_is_a_bad_signature() {
    let c = capture("awscli2-AttachVolume.txt");
    let mut body = c.body.clone();
    let i = body.len() - 1;
    body[i] ^= 1;
    let e = auth_err(verify(&c.parts, &body, &Keys(SECRET), c.now));
    assert_eq!(e, AuthError::SignatureDoesNotMatch);
    assert_eq!(e.ec2_code(), ("AuthFailure", 403));
}

#[test]
fn wrong_secret_is_refused() {
    for c in captures() {
        let e = auth_err(verify(&c.parts, &c.body, &Keys("not-the-secret"), c.now));
        assert_eq!(e, AuthError::SignatureDoesNotMatch, "{}", c.name);
    }
}

#[test]
fn content_sha256_header_must_be_the_body_hash() {
    // euca2ools signs X-Amz-Content-SHA256: a changed body no longer matches it.
    let c = capture("euca2ools-RunInstances.txt");
    assert!(c.parts.headers.contains_key("x-amz-content-sha256"));
    let mut body = c.body.clone();
    body[0] ^= 1;
    let e = auth_err(verify(&c.parts, &body, &Keys(SECRET), c.now));
    assert_eq!(e, AuthError::ContentSha256Mismatch);
    assert_eq!(e.ec2_code(), ("XAmzContentSHA256Mismatch", 400));
    // A header changed to the new body's hash breaks the signature instead.
    let mut parts = c.parts.clone();
    let forged = sigv4::sha256_hex(&body);
    parts
        .headers
        .insert("x-amz-content-sha256", forged.parse().unwrap());
    let e = auth_err(verify(&parts, &body, &Keys(SECRET), c.now));
    assert_eq!(e, AuthError::SignatureDoesNotMatch);
    // An AWS SDK capture with an added (hence unsigned) header is refused too.
    let c = capture("awscli2-DescribeVolumes.txt");
    let mut parts = c.parts.clone();
    let hash = sigv4::sha256_hex(&c.body);
    parts
        .headers
        .insert("x-amz-content-sha256", hash.parse().unwrap());
    let e = auth_err(verify(&parts, &c.body, &Keys(SECRET), c.now));
    assert_eq!(e, AuthError::UnsignedHeader("x-amz-content-sha256".into()));
    assert_eq!(e.ec2_code(), ("AuthFailure", 403));
}

#[test]
fn refusals_before_the_body_leave_it_unread() {
    let c = capture("boto3-RunInstances.txt");
    let cfg = ec2();
    let check = |parts: &Parts, now: OffsetDateTime, want: AuthError, code: (&str, u16)| {
        let read = Cell::new(false);
        let e = auth_err(verify_with(parts, &c.body, &Keys(SECRET), &cfg, now, &read));
        assert_eq!(e, want);
        assert_eq!(e.ec2_code(), code);
        assert!(!read.get(), "{want:?}: the body was read");
    };
    // Unknown key.
    let mut parts = c.parts.clone();
    let authz = parts.headers["authorization"].to_str().unwrap();
    let other = authz.replace("Credential=AKIDEXAMPLE/", "Credential=AKIDOTHER/");
    parts
        .headers
        .insert("authorization", other.parse().unwrap());
    check(
        &parts,
        c.now,
        AuthError::InvalidAccessKeyId,
        ("AuthFailure", 403),
    );
    // Skew, either way.
    for off in [Duration::minutes(16), Duration::minutes(-16)] {
        check(
            &c.parts,
            c.now + off,
            AuthError::RequestTimeTooSkewed,
            ("RequestExpired", 400),
        );
    }
    // Anonymous: EC2 has no anonymous access.
    let mut parts = c.parts.clone();
    parts.headers.remove("authorization");
    check(
        &parts,
        c.now,
        AuthError::MissingAuthentication,
        ("MissingAuthenticationToken", 403),
    );
    // Signature Version 2 (query form, and a SigV2 Authorization header).
    let mut parts = c.parts.clone();
    parts.headers.remove("authorization");
    parts.uri =
        "/?AWSAccessKeyId=AKIDEXAMPLE&SignatureVersion=2&SignatureMethod=HmacSHA256&Signature=x"
            .parse()
            .unwrap();
    let v2 = || AuthError::UnsupportedSignature("Signature Version 2".into());
    check(&parts, c.now, v2(), ("AuthFailure", 403));
    parts.uri = "/?SignatureVersion=2".parse().unwrap();
    check(&parts, c.now, v2(), ("AuthFailure", 403));
    let mut parts = c.parts.clone();
    parts
        .headers
        .insert("authorization", "AWS AKIDEXAMPLE:c2ln".parse().unwrap());
    check(&parts, c.now, v2(), ("AuthFailure", 403));
    // Malformed Authorization header.
    let mut parts = c.parts.clone();
    parts.headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE".parse().unwrap(),
    );
    check(
        &parts,
        c.now,
        AuthError::HeaderMalformed("cannot parse".into()),
        ("InvalidParameterValue", 400),
    );
    // A scope for another service.
    let mut parts = c.parts.clone();
    let authz = parts.headers["authorization"].to_str().unwrap();
    let s3 = authz.replace("/ec2/aws4_request", "/s3/aws4_request");
    parts.headers.insert("authorization", s3.parse().unwrap());
    let e = auth_err(verify(&parts, &c.body, &Keys(SECRET), c.now));
    assert!(matches!(e, AuthError::HeaderScope(_)), "{e:?}");
    assert_eq!(e.ec2_code(), ("AuthFailure", 403));
}

#[test]
fn the_region_is_taken_from_the_scope_only_for_ec2() {
    // euca2ools signs with undefined-<pid>, awscli with the configured region: both
    // verify with AuthConfig::ec2 whatever its region.
    for name in [
        "euca2ools-DescribeVolumes.txt",
        "awscli1-DescribeVolumes.txt",
    ] {
        let c = capture(name);
        assert!(verify(&c.parts, &c.body, &Keys(SECRET), c.now).is_ok());
        // The exact check when region_from_scope is off.
        let strict = AuthConfig {
            region_from_scope: false,
            ..ec2()
        };
        let read = Cell::new(false);
        let e = auth_err(verify_with(
            &c.parts,
            &c.body,
            &Keys(SECRET),
            &strict,
            c.now,
            &read,
        ));
        assert!(matches!(e, AuthError::HeaderScope(_)), "{name}: {e:?}");
        assert!(!read.get());
    }
    // S3 keeps refusing a scope for another region.
    let now = OffsetDateTime::now_utc();
    let signer = Signer {
        access_key: AKID.into(),
        secret_key: SECRET.into(),
        region: "eu-west-1".into(),
        service: "s3".into(),
    };
    let mut h = http::HeaderMap::new();
    h.insert("host", "127.0.0.1:1".parse().unwrap());
    signer.sign("GET", "/b/k", "", &mut h, sigv4::UNSIGNED_PAYLOAD, now);
    let mut req = http::Request::builder().uri("/b/k").body(()).unwrap();
    *req.headers_mut() = h;
    let parts = req.into_parts().0;
    let s3 = AuthConfig::s3("us-east-1");
    assert!(!s3.region_from_scope);
    let e = futures::executor::block_on(euca_aws::authenticate(&parts, &Keys(SECRET), &s3, now))
        .unwrap_err();
    assert!(matches!(e, AuthError::HeaderScope(_)), "{e:?}");
    assert_eq!(e.code(), ("AuthorizationHeaderMalformed", 400));
    let ok = AuthConfig::s3("eu-west-1");
    assert!(
        futures::executor::block_on(euca_aws::authenticate(&parts, &Keys(SECRET), &ok, now))
            .is_ok()
    );
}

#[test]
fn body_read_errors_are_the_callers() {
    let c = capture("awscli2-DescribeInstances.txt");
    let r = futures::executor::block_on(authenticate_form(
        &c.parts,
        &Keys(SECRET),
        &ec2(),
        c.now,
        || async { Err::<Bytes, _>("body over the cap") },
    ));
    match r {
        Err(FormAuthError::Body(e)) => assert_eq!(e, "body over the cap"),
        other => panic!("{:?}", other.map(|(p, _)| p)),
    }
}

/// A GET with its parameters in the query, signed in the Authorization header.
#[test]
fn get_with_header_signature() {
    let now = OffsetDateTime::now_utc();
    let query = "Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=vol-1&Filter.1.Value.1=a%20b";
    let signer = Signer {
        access_key: AKID.into(),
        secret_key: SECRET.into(),
        region: "RegionOne".into(),
        service: "ec2".into(),
    };
    let mut h = http::HeaderMap::new();
    h.insert("host", "127.0.0.1:8773".parse().unwrap());
    signer.sign("GET", "/", query, &mut h, sigv4::EMPTY_SHA256, now);
    let mut req = http::Request::builder()
        .uri(format!("/?{query}"))
        .body(())
        .unwrap();
    *req.headers_mut() = h;
    let parts = req.into_parts().0;
    let (who, body) = verify(&parts, b"", &Keys(SECRET), now).unwrap();
    assert_eq!(who, principal());
    assert!(body.is_empty());
    assert_eq!(
        form_query_params(&parts).unwrap(),
        [
            ("Action", "DescribeVolumes"),
            ("Version", "2016-11-15"),
            ("VolumeId.1", "vol-1"),
            ("Filter.1.Value.1", "a b"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // A parameter added to the URL after signing.
    let mut tampered = parts.clone();
    tampered.uri = format!("/?{query}&DryRun=true").parse().unwrap();
    assert_eq!(
        auth_err(verify(&tampered, b"", &Keys(SECRET), now)),
        AuthError::SignatureDoesNotMatch
    );
    // A body smuggled under a GET signed for an empty one.
    assert_eq!(
        auth_err(verify(
            &parts,
            b"Action=TerminateInstances",
            &Keys(SECRET),
            now
        )),
        AuthError::ContentSha256Mismatch
    );
}

/// A presigned GET (`X-Amz-*` in the query), as botocore presigns non-S3 requests:
/// payload hash of the empty body, any region.
fn presigned_get_request(now: OffsetDateTime, expires: u32, payload_hash: &str) -> Parts {
    let amz = format_amz_date(now);
    let scope = format!("{}/undefined-1234/ec2/aws4_request", &amz[..8]);
    let cred = euca_aws::encoding::uri_encode(format!("{AKID}/{scope}").as_bytes(), false);
    let query = format!(
        "Action=DescribeInstances&Version=2016-11-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential={cred}&X-Amz-Date={amz}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
    );
    let mut h = http::HeaderMap::new();
    h.insert("host", "127.0.0.1:8773".parse().unwrap());
    let signed = vec!["host".to_string()];
    let cr = sigv4::CanonicalRequest {
        method: "GET",
        canonical_uri: "/".into(),
        canonical_query: sigv4::canonical_query(&query, None),
        headers: &h,
        signed_headers: &signed,
        payload_hash,
    }
    .render()
    .unwrap();
    let sts = sigv4::string_to_sign(&amz, &scope, &cr);
    let key = sigv4::signing_key(SECRET, &amz[..8], "undefined-1234", "ec2");
    let sig = hex::encode(sigv4::hmac_sha256(&key, sts.as_bytes()));
    let mut req = http::Request::builder()
        .uri(format!("/?{query}&X-Amz-Signature={sig}"))
        .body(())
        .unwrap();
    *req.headers_mut() = h;
    req.into_parts().0
}

#[test]
fn presigned_get_verifies() {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    for hash in [sigv4::EMPTY_SHA256, sigv4::UNSIGNED_PAYLOAD] {
        let parts = presigned_get_request(now, 300, hash);
        let (who, _) = verify(&parts, b"", &Keys(SECRET), now).unwrap();
        assert_eq!(who, principal());
        assert_eq!(
            form_query_params(&parts).unwrap(),
            [("Action", "DescribeInstances"), ("Version", "2016-11-15")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // UNSIGNED-PAYLOAD would leave a body unsigned: refused with one.
        let e = auth_err(verify(&parts, b"Action=RunInstances", &Keys(SECRET), now));
        assert_eq!(e, AuthError::SignatureDoesNotMatch, "{hash}");
    }
    let parts = presigned_get_request(now, 300, sigv4::EMPTY_SHA256);
    let late = now + Duration::seconds(301);
    let e = auth_err(verify(&parts, b"", &Keys(SECRET), late));
    assert_eq!(e, AuthError::Expired);
    assert_eq!(e.ec2_code(), ("RequestExpired", 400));
    let e = auth_err(verify(&parts, b"", &Keys("wrong"), now));
    assert_eq!(e, AuthError::SignatureDoesNotMatch);
    // Query and header credentials together.
    let mut mixed = parts.clone();
    mixed.headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=x".parse().unwrap(),
    );
    let e = auth_err(verify(&mixed, b"", &Keys(SECRET), now));
    assert_eq!(e, AuthError::MixedAuth);
    assert_eq!(e.ec2_code(), ("InvalidParameterValue", 400));
}
