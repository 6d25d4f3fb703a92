//! Request authentication on arbitrary request heads (request line + headers, as
//! on the wire): mode classification, SigV4 `Authorization` header and presigned
//! query parsing, SigV2 header and query parsing, canonical request building from
//! whatever path and query arrive, payload-mode headers. No input may panic; the
//! pure parsers are also driven directly, with a canonical-query idempotence check.
#![no_main]
use euca_aws::sigv4::{self, AuthHeader, CredentialScope, PathForm};
use euca_aws::{authenticate, sigv2};
use euca_fuzz::{block_on, request_head, request_time, s3_config, Keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(parts) = request_head(data) else {
        // Not HTTP: still feed the text to the parsers that take strings.
        let s = String::from_utf8_lossy(data);
        let _ = AuthHeader::parse(&s);
        let _ = CredentialScope::parse(&s);
        query_properties(&s);
        return;
    };
    let _ = block_on(authenticate(
        &parts,
        &Keys,
        &s3_config(),
        request_time(&parts),
    ));

    if let Some(a) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        if let Some(h) = AuthHeader::parse(a) {
            assert!(!h.credential.access_key.is_empty());
            assert!(h.credential.scope().ends_with("/aws4_request"));
        }
    }
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    for form in [PathForm::AsSent, PathForm::Reencoded] {
        let uri = sigv4::canonical_uri(path, form);
        assert!(!uri.is_empty());
    }
    // Re-encoding is a fixed point: decoding then encoding an already re-encoded
    // path changes nothing (so the verifier's second try is well defined).
    let re = sigv4::canonical_uri(path, PathForm::Reencoded);
    assert_eq!(sigv4::canonical_uri(&re, PathForm::Reencoded), re);
    let _ = sigv2::canonical_resource(path, query, Some("bucket"));
    query_properties(query);
});

fn query_properties(query: &str) {
    let cq = sigv4::canonical_query(query, Some("X-Amz-Signature"));
    assert_eq!(
        sigv4::canonical_query(&cq, Some("X-Amz-Signature")),
        cq,
        "canonical query is not a fixed point"
    );
}
