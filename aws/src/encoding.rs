//! URI encoding exactly as AWS signatures define it.
use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters `A-Z a-z 0-9 - . _ ~`.
pub const AWS_QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Like [`AWS_QUERY`] but keeps `/` (object keys in paths).
pub const AWS_PATH: &AsciiSet = &AWS_QUERY.remove(b'/');

pub fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let set = if keep_slash { AWS_PATH } else { AWS_QUERY };
    percent_encoding::percent_encode(s, set).to_string()
}

/// Percent-decodes (no `+` to space translation), returning raw bytes.
pub fn uri_decode(s: &str) -> Vec<u8> {
    percent_decode(s.as_bytes()).collect()
}

/// Splits a raw query string into percent-decoded (name, value) pairs. A `+` is kept as
/// a literal `+` (AWS signers never form-encode), except in `form_plus` mode.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&uri_decode(k)).into_owned(),
                String::from_utf8_lossy(&uri_decode(v)).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn encodes_like_aws() {
        assert_eq!(uri_encode(b"a b+c/d~e", true), "a%20b%2Bc/d~e");
        assert_eq!(uri_encode(b"a/b", false), "a%2Fb");
        assert_eq!(uri_encode("é".as_bytes(), true), "%C3%A9");
        assert_eq!(
            parse_query("a=1&b&c=x%2By+z"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "x+y+z".into())
            ]
        );
    }
}
