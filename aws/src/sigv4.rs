//! AWS Signature Version 4: canonical request, string to sign, signing key.
use crate::encoding::{parse_query, uri_decode, uri_encode};
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub use crate::hash::sha256_hex;

/// The derived key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

/// How the path is canonicalised: S3 signs the path as sent (encoded once); other
/// services and some clients sign a normalised re-encoding. Verification tries both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathForm {
    AsSent,
    Reencoded,
}

pub fn canonical_uri(raw_path: &str, form: PathForm) -> String {
    let p = if raw_path.is_empty() { "/" } else { raw_path };
    match form {
        PathForm::AsSent => p.to_string(),
        PathForm::Reencoded => uri_encode(&uri_decode(p), true),
    }
}

/// Canonical query string: every parameter decoded then re-encoded with AWS rules,
/// sorted by name then value; `skip` names a parameter to leave out (the signature).
pub fn canonical_query(raw_query: &str, skip: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = parse_query(raw_query)
        .into_iter()
        .filter(|(k, _)| skip != Some(k.as_str()))
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Header value as it enters the canonical request: trimmed, inner runs of spaces
/// collapsed, several values joined by `,`. `None` if a signed header is absent.
pub fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let s = String::from_utf8_lossy(v.as_bytes());
        let mut prev_space = false;
        for c in s.trim().chars() {
            if c == ' ' {
                if !prev_space {
                    out.push(' ');
                }
                prev_space = true;
            } else {
                out.push(c);
                prev_space = false;
            }
        }
    }
    Some(out)
}

pub struct CanonicalRequest<'a> {
    pub method: &'a str,
    pub canonical_uri: String,
    pub canonical_query: String,
    pub headers: &'a HeaderMap,
    /// Lower-case, sorted, as in `SignedHeaders`.
    pub signed_headers: &'a [String],
    pub payload_hash: &'a str,
}

impl CanonicalRequest<'_> {
    /// `None` when a header named in `SignedHeaders` is not in the request.
    pub fn render(&self) -> Option<String> {
        let mut s = String::with_capacity(512);
        s.push_str(self.method);
        s.push('\n');
        s.push_str(&self.canonical_uri);
        s.push('\n');
        s.push_str(&self.canonical_query);
        s.push('\n');
        for h in self.signed_headers {
            let v = canonical_header_value(self.headers, h)?;
            s.push_str(h);
            s.push(':');
            s.push_str(&v);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.signed_headers.join(";"));
        s.push('\n');
        s.push_str(self.payload_hash);
        Some(s)
    }
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Signature of one `aws-chunked` chunk, chained from the previous signature.
pub fn chunk_string_to_sign(
    amz_date: &str,
    scope: &str,
    prev_sig: &str,
    chunk_sha256_hex: &str,
) -> String {
    format!(
        "{ALGORITHM}-PAYLOAD\n{amz_date}\n{scope}\n{prev_sig}\n{EMPTY_SHA256}\n{chunk_sha256_hex}"
    )
}

/// Signature over the trailing headers of a signed streaming upload.
pub fn trailer_string_to_sign(
    amz_date: &str,
    scope: &str,
    prev_sig: &str,
    trailer_sha256_hex: &str,
) -> String {
    format!("{ALGORITHM}-TRAILER\n{amz_date}\n{scope}\n{prev_sig}\n{trailer_sha256_hex}")
}

/// A parsed `Credential=AKID/20130524/us-east-1/s3/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl CredentialScope {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let access_key = it.next()?.to_string();
        let date = it.next()?.to_string();
        let region = it.next()?.to_string();
        let service = it.next()?.to_string();
        if it.next()? != "aws4_request" || it.next().is_some() || access_key.is_empty() {
            return None;
        }
        Some(Self {
            access_key,
            date,
            region,
            service,
        })
    }

    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug)]
pub struct AuthHeader {
    pub credential: CredentialScope,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl AuthHeader {
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix(ALGORITHM)?.trim_start();
        let (mut cred, mut sh, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => cred = CredentialScope::parse(v),
                "SignedHeaders" => {
                    sh = Some(
                        v.split(';')
                            .map(|s| s.to_ascii_lowercase())
                            .collect::<Vec<_>>(),
                    )
                }
                "Signature" => sig = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Self {
            credential: cred?,
            signed_headers: sh?,
            signature: sig?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The GET Object example of the S3 SigV4 documentation.
    #[test]
    fn aws_documented_get_object_example() {
        let mut h = HeaderMap::new();
        h.insert(
            "host",
            HeaderValue::from_static("examplebucket.s3.amazonaws.com"),
        );
        h.insert("range", HeaderValue::from_static("bytes=0-9"));
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(EMPTY_SHA256),
        );
        h.insert("x-amz-date", HeaderValue::from_static("20130524T000000Z"));
        let signed: Vec<String> = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
            .map(String::from)
            .to_vec();
        let cr = CanonicalRequest {
            method: "GET",
            canonical_uri: canonical_uri("/test.txt", PathForm::AsSent),
            canonical_query: canonical_query("", None),
            headers: &h,
            signed_headers: &signed,
            payload_hash: EMPTY_SHA256,
        }
        .render()
        .unwrap();
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &cr,
        );
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        assert_eq!(
            hex::encode(hmac_sha256(&key, sts.as_bytes())),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn parses_header_and_query() {
        let a = AuthHeader::parse("AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc").unwrap();
        assert_eq!(a.credential.access_key, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        assert!(AuthHeader::parse(
            "AWS4-HMAC-SHA256 Credential=AK/2013/us/s3/x, SignedHeaders=host, Signature=a"
        )
        .is_none());
        assert_eq!(
            canonical_query("b=2&a=1&X-Amz-Signature=z&a=0", Some("X-Amz-Signature")),
            "a=0&a=1&b=2"
        );
        assert_eq!(
            canonical_query("prefix=a b&list-type=2", None),
            "list-type=2&prefix=a%20b"
        );
    }
}
