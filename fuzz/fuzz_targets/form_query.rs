//! The form / query-string decoder (`euca_aws::encoding::parse_query`), which also
//! decodes `application/x-www-form-urlencoded` bodies of EC2-style APIs. No panic;
//! decode -> encode -> decode gives the same pairs; percent-encoding round-trips
//! any bytes.
#![no_main]
use euca_aws::encoding::{parse_query, uri_decode, uri_encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let pairs = parse_query(&raw);
    assert!(pairs.len() <= raw.len());
    let encoded = pairs
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
    assert_eq!(parse_query(&encoded), pairs, "decode -> encode -> decode");
    for slash in [false, true] {
        assert_eq!(
            uri_decode(&uri_encode(data, slash)),
            data,
            "percent round trip"
        );
    }
});
