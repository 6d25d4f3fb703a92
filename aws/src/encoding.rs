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

/// A query string ([`parse_query_strict`]) or form body ([`parse_form`]) that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// A `%` not followed by two hex digits, in the named parameter.
    #[error("parameter {0:?} has a malformed percent-encoding")]
    BadEscape(String),
    /// The named parameter's name or value does not decode to UTF-8.
    #[error("parameter {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// The name [`parse_query_strict`] has always used for its error.
pub type QueryError = EncodingError;

/// Percent-decodes like [`uri_decode`], but `None` if a `%` is not followed by two
/// hex digits (where [`uri_decode`] keeps such a `%` literally).
pub fn uri_decode_strict(s: &str) -> Option<Vec<u8>> {
    decode_strict(s.as_bytes(), false)
}

/// Percent-decodes `s`, refusing a `%` not followed by two hex digits; with
/// `plus_is_space` a `+` is a space (form encoding), else it is kept.
fn decode_strict(s: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let well_formed = s.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    if plus_is_space && s.contains(&b'+') {
        let spaced: Vec<u8> = s
            .iter()
            .map(|&c| if c == b'+' { b' ' } else { c })
            .collect();
        return Some(percent_decode(&spaced).collect());
    }
    Some(percent_decode(s).collect())
}

/// The strict `name=value&...` splitter shared by [`parse_query_strict`] and
/// [`parse_form`]: empty pairs are skipped, a name without `=` has the value "",
/// nothing is trimmed, and every name and value must decode to UTF-8.
fn parse_pairs_strict(
    raw: &[u8],
    plus_is_space: bool,
) -> Result<Vec<(String, String)>, EncodingError> {
    raw.split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&c| c == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            // For error messages only: the name as well as it decodes.
            let name =
                || String::from_utf8_lossy(&percent_decode(k).collect::<Vec<u8>>()).into_owned();
            let decode = |s: &[u8]| -> Result<String, EncodingError> {
                let bytes = decode_strict(s, plus_is_space)
                    .ok_or_else(|| EncodingError::BadEscape(name()))?;
                String::from_utf8(bytes).map_err(|_| EncodingError::NotUtf8(name()))
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// [`parse_query`] for APIs that take their parameters from the query: the same
/// splitting and decoding (`+` stays `+`), but a malformed `%` escape or a name or
/// value that is not UTF-8 once decoded is an error instead of being kept literally
/// or replaced.
pub fn parse_query_strict(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    parse_pairs_strict(raw.as_bytes(), false)
}

/// Decodes an `application/x-www-form-urlencoded` body (EC2 Query API form posts, and
/// the query strings of EC2 GET requests): pairs split on `&`, empty pairs skipped, a
/// name without `=` has the value "", `+` is a space and `%XX` an escaped byte. A
/// malformed escape, or a name or value that is not UTF-8 once decoded, is refused.
/// Nothing is trimmed; the pairs keep the order they were sent in.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, EncodingError> {
    parse_pairs_strict(body, true)
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
    fn form_decoding() {
        assert_eq!(
            parse_form(b"a=x+y&b=1%2B2&c=%20v%20+&&flag&e=").unwrap(),
            vec![
                ("a".into(), "x y".into()),
                ("b".into(), "1+2".into()),
                ("c".into(), " v  ".into()),
                ("flag".into(), "".into()),
                ("e".into(), "".into()),
            ]
        );
        // Names decode too, and `=` after the first belongs to the value (base64).
        assert_eq!(
            parse_form(b"User+Data%2E1=aGk=&k=%C3%A9").unwrap(),
            vec![
                ("User Data.1".into(), "aGk=".into()),
                ("k".into(), "é".into())
            ]
        );
        assert_eq!(parse_form(b"").unwrap(), vec![]);
        assert_eq!(
            parse_form(b"Action=X&v=%G1"),
            Err(EncodingError::BadEscape("v".into()))
        );
        assert_eq!(
            parse_form(b"v=abc%"),
            Err(EncodingError::BadEscape("v".into()))
        );
        assert_eq!(
            parse_form(b"v=%ff%fe"),
            Err(EncodingError::NotUtf8("v".into()))
        );
        // A raw (unescaped) non-UTF-8 byte is refused as well.
        assert_eq!(
            parse_form(b"v=\xff"),
            Err(EncodingError::NotUtf8("v".into()))
        );
        assert_eq!(
            parse_form(b"%ff=1"),
            Err(EncodingError::NotUtf8("\u{fffd}".into()))
        );
        // The query form keeps `+` where the form turns it into a space.
        assert_eq!(
            parse_query_strict("a=x+y").unwrap(),
            vec![("a".into(), "x+y".into())]
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
