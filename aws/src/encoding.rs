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

/// A query string [`parse_query_strict`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `%` not followed by two hex digits, in the named parameter.
    #[error("query parameter {0:?} has a malformed percent-encoding")]
    BadEscape(String),
    /// The named parameter's name or value does not decode to UTF-8.
    #[error("query parameter {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// Percent-decodes like [`uri_decode`], but `None` if a `%` is not followed by two
/// hex digits (where [`uri_decode`] keeps such a `%` literally).
pub fn uri_decode_strict(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| uri_decode(s))
}

/// [`parse_query`] for APIs that take their parameters from the query: the same
/// splitting and decoding (`+` stays `+`), but a malformed `%` escape or a name or
/// value that is not UTF-8 once decoded is an error instead of being kept literally
/// or replaced.
pub fn parse_query_strict(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let name = || String::from_utf8_lossy(&uri_decode(k)).into_owned();
            let decode = |s: &str| -> Result<String, QueryError> {
                let bytes = uri_decode_strict(s).ok_or_else(|| QueryError::BadEscape(name()))?;
                String::from_utf8(bytes).map_err(|_| QueryError::NotUtf8(name()))
            };
            Ok((decode(k)?, decode(v)?))
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

    #[test]
    fn strict_query() {
        assert_eq!(
            parse_query_strict("node=a%2Fb&x=1+2&flag&&y=%C3%A9").unwrap(),
            vec![
                ("node".into(), "a/b".into()),
                ("x".into(), "1+2".into()),
                ("flag".into(), "".into()),
                ("y".into(), "é".into())
            ]
        );
        assert_eq!(
            parse_query_strict("a=1&size_gib=%ZZ"),
            Err(QueryError::BadEscape("size_gib".into()))
        );
        assert_eq!(
            parse_query_strict("v=%4"),
            Err(QueryError::BadEscape("v".into()))
        );
        assert_eq!(
            parse_query_strict("v=%ff"),
            Err(QueryError::NotUtf8("v".into()))
        );
        assert_eq!(
            parse_query_strict("%zz=1"),
            Err(QueryError::BadEscape("%zz".into()))
        );
        // The lenient form keeps what the strict one refuses.
        assert_eq!(parse_query("v=%ZZ"), vec![("v".into(), "%ZZ".into())]);
        assert_eq!(uri_decode_strict("%41%2f"), Some(b"A/".to_vec()));
        assert_eq!(uri_decode_strict("100%"), None);
    }
}
