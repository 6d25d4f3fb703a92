//! Client-side SigV4 signing, for the project's own tools (admin CLI, bench, service to
//! service calls). It shares the canonicalisation code with the verifier.
use crate::sigv4::{self, PathForm};
use crate::timefmt::format_amz_date;
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

#[derive(Clone, Debug)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub service: String,
}

impl Signer {
    /// Adds `x-amz-date`, `x-amz-content-sha256` and `authorization`. `headers` must
    /// already hold `host`; every header present is signed.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &mut HeaderMap,
        payload_hash: &str,
        now: OffsetDateTime,
    ) {
        let amz_date = format_amz_date(now);
        let date = &amz_date[..8];
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&amz_date).expect("ascii"),
        );
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(payload_hash).expect("ascii"),
        );
        let mut signed: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
        signed.sort();
        signed.dedup();
        let cr = sigv4::CanonicalRequest {
            method,
            canonical_uri: sigv4::canonical_uri(path, PathForm::AsSent),
            canonical_query: sigv4::canonical_query(query, None),
            headers,
            signed_headers: &signed,
            payload_hash,
        }
        .render()
        .expect("all signed headers are present");
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let sts = sigv4::string_to_sign(&amz_date, &scope, &cr);
        let key = sigv4::signing_key(&self.secret_key, date, &self.region, &self.service);
        let sig = hex::encode(sigv4::hmac_sha256(&key, sts.as_bytes()));
        let authz = format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            sigv4::ALGORITHM,
            self.access_key,
            signed.join(";")
        );
        headers.insert(
            "authorization",
            HeaderValue::from_str(&authz).expect("ascii"),
        );
    }
}
