//! Tag sets, shared by object tagging (`?tagging` on a key, `x-amz-tagging` on
//! PutObject, CreateMultipartUpload and CopyObject) and bucket tagging (`?tagging` on
//! a bucket): parsing the `Tagging` XML document and the URL-encoded header,
//! validating against S3's limits, and rendering the document Get answers with.
//!
//! Keys and values are kept exactly as sent (no trimming or normalisation): a tag is
//! user data, and `" a"` and `"a"` are two keys.
use crate::error::{S3Error, S3Result};
use crate::xmlin::Node;
use euca_aws::xml::{XmlWriter, S3_NS};

/// Tags in the order they were given.
pub type TagSet = Vec<(String, String)>;

/// The most tags an object may have.
pub const MAX_OBJECT_TAGS: usize = 10;
/// The most tags a bucket may have.
pub const MAX_BUCKET_TAGS: usize = 50;
/// Longest key and value, in Unicode characters.
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;
/// Cap on a `Tagging` request body: 50 tags of the longest key and value, each
/// character escaped as a numeric reference, fit well inside it.
pub const MAX_TAGGING_BODY: u64 = 256 * 1024;

/// What the tags belong to; the limits and S3's messages differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagTarget {
    Object,
    Bucket,
}

impl TagTarget {
    fn max(self) -> usize {
        match self {
            TagTarget::Object => MAX_OBJECT_TAGS,
            TagTarget::Bucket => MAX_BUCKET_TAGS,
        }
    }
}

fn invalid_tag(msg: &str) -> S3Error {
    S3Error::new("InvalidTag", 400, msg)
}

/// The characters S3 allows in tag keys and values: Unicode letters, numbers and
/// separators (`\p{L}\p{N}\p{Z}`), and `_ . : / = + - @`. Control characters (tab,
/// CR, LF) are not separators and are refused.
fn allowed_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
        || matches!(
            c,
            ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
        )
}

/// Checks a tag set against S3's limits: count, key and value lengths in characters,
/// allowed characters, unique keys, and no `aws:` keys (reserved for the system).
pub fn validate(tags: &[(String, String)], target: TagTarget) -> S3Result<()> {
    if tags.len() > target.max() {
        return Err(invalid_tag(match target {
            TagTarget::Object => "Object tags cannot be greater than 10",
            TagTarget::Bucket => "Bucket tag count cannot be greater than 50",
        }));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        let key_chars = k.chars().count();
        if key_chars == 0 || !k.chars().all(allowed_char) {
            return Err(invalid_tag("The TagKey you have provided is invalid"));
        }
        if key_chars > MAX_KEY_CHARS {
            return Err(invalid_tag(
                "The TagKey you have provided is too long, max 128",
            ));
        }
        if !v.chars().all(allowed_char) {
            return Err(invalid_tag("The TagValue you have provided is invalid"));
        }
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(invalid_tag(
                "The TagValue you have provided is too long, max 256",
            ));
        }
        // Case-sensitive, as S3's tag keys are.
        if k.starts_with("aws:") {
            return Err(invalid_tag("Your TagKey cannot be prefixed with aws:"));
        }
        if tags[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(invalid_tag(
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(())
}

/// Parses and validates a `Tagging` document (`<Tagging><TagSet><Tag><Key/><Value/>
/// </Tag>…</TagSet></Tagging>`). Anything else in it is `MalformedXML`.
pub fn from_xml(node: &Node, target: TagTarget) -> S3Result<TagSet> {
    if node.name != "Tagging" || node.children.len() != 1 {
        return Err(S3Error::malformed_xml());
    }
    let set = node.child("TagSet").ok_or_else(S3Error::malformed_xml)?;
    let mut tags = Vec::new();
    for tag in &set.children {
        if tag.name != "Tag" || tag.children.len() != 2 {
            return Err(S3Error::malformed_xml());
        }
        let key = tag.text_of("Key").ok_or_else(S3Error::malformed_xml)?;
        let value = tag.text_of("Value").ok_or_else(S3Error::malformed_xml)?;
        tags.push((key.to_string(), value.to_string()));
        // Stop early: a body may hold thousands of tags; no need to collect them all.
        if tags.len() > target.max() {
            break;
        }
    }
    validate(&tags, target)?;
    Ok(tags)
}

/// The `x-amz-tagging` header's error, as S3 words it.
fn bad_header() -> S3Error {
    S3Error::invalid_argument(
        "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.",
    )
    .with("ArgumentName", "x-amz-tagging")
}

/// Parses and validates `x-amz-tagging` (URL query form: `k1=v1&k2=v2`, `%XX`
/// escapes, `+` a space; a key without `=` has the empty value). A malformed escape,
/// text that is not UTF-8 once decoded, or a repeated key is `InvalidArgument`.
pub fn from_header(raw: &[u8]) -> S3Result<TagSet> {
    let tags = euca_aws::encoding::parse_form(raw).map_err(|_| bad_header())?;
    for (i, (k, _)) in tags.iter().enumerate() {
        if tags[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(bad_header());
        }
    }
    validate(&tags, TagTarget::Object)?;
    Ok(tags)
}

/// The tags of a request's `x-amz-tagging` header; empty without one.
pub fn from_request_header(h: &http::HeaderMap) -> S3Result<TagSet> {
    match h.get("x-amz-tagging") {
        None => Ok(Vec::new()),
        Some(v) => from_header(v.as_bytes()),
    }
}

/// The `Tagging` document GetObjectTagging and GetBucketTagging answer with.
pub fn to_xml(tags: &[(String, String)]) -> String {
    let mut w = XmlWriter::new();
    w.root("Tagging", S3_NS).open("TagSet");
    for (k, v) in tags {
        w.open("Tag").elem("Key", k).elem("Value", v).close();
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(tags: &[(&str, &str)]) -> String {
        let mut s = String::from("<Tagging><TagSet>");
        for (k, v) in tags {
            s.push_str(&format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>"));
        }
        s.push_str("</TagSet></Tagging>");
        s
    }

    fn parse(body: &str, t: TagTarget) -> S3Result<TagSet> {
        from_xml(&crate::xmlin::parse(body.as_bytes())?, t)
    }

    fn code(r: S3Result<TagSet>) -> (&'static str, String) {
        let e = r.expect_err("should be refused");
        (e.code, e.message)
    }

    #[test]
    fn parses_and_renders_round_trip() {
        let tags = parse(
            &doc(&[
                ("a", "1"),
                (" b ", ""),
                ("ключ", "знач ение"),
                ("k+=.:/@_-", "v"),
            ]),
            TagTarget::Object,
        )
        .unwrap();
        assert_eq!(tags[1], (" b ".to_string(), String::new()));
        assert_eq!(tags[2].0, "ключ");
        let again = parse(&to_xml(&tags), TagTarget::Object).unwrap();
        assert_eq!(again, tags);
        assert!(to_xml(&[]).contains("<TagSet></TagSet>") || to_xml(&[]).contains("<TagSet/>"));
    }

    #[test]
    fn limits_as_s3() {
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = eleven
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            code(parse(&doc(&refs), TagTarget::Object)),
            ("InvalidTag", "Object tags cannot be greater than 10".into())
        );
        // A bucket may have up to 50.
        assert_eq!(parse(&doc(&refs), TagTarget::Bucket).unwrap().len(), 11);
        let fifty_one: Vec<(String, String)> =
            (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            validate(&fifty_one, TagTarget::Bucket).unwrap_err().code,
            "InvalidTag"
        );
        assert!(validate(&fifty_one[..50], TagTarget::Bucket).is_ok());

        let k128 = "é".repeat(128); // 256 bytes, 128 characters: allowed
        assert!(validate(&[(k128, "v".into())], TagTarget::Object).is_ok());
        let k129 = "k".repeat(129);
        assert_eq!(
            validate(&[(k129, "v".into())], TagTarget::Object)
                .unwrap_err()
                .message,
            "The TagKey you have provided is too long, max 128"
        );
        assert!(validate(&[("k".into(), "v".repeat(256))], TagTarget::Object).is_ok());
        assert_eq!(
            validate(&[("k".into(), "v".repeat(257))], TagTarget::Object)
                .unwrap_err()
                .message,
            "The TagValue you have provided is too long, max 256"
        );
        assert_eq!(
            code(parse(&doc(&[("a", "1"), ("a", "2")]), TagTarget::Object)).1,
            "Cannot provide multiple Tags with the same key"
        );
        // Keys are case-sensitive: these are two keys.
        assert!(parse(&doc(&[("a", "1"), ("A", "2")]), TagTarget::Object).is_ok());
        assert_eq!(
            code(parse(&doc(&[("aws:x", "1")]), TagTarget::Object)).1,
            "Your TagKey cannot be prefixed with aws:"
        );
        assert_eq!(
            code(parse(&doc(&[("", "1")]), TagTarget::Object)).0,
            "InvalidTag"
        );
        assert_eq!(
            code(parse(&doc(&[("a#", "1")]), TagTarget::Object)).0,
            "InvalidTag"
        );
        assert_eq!(
            code(parse(&doc(&[("a", "x&#10;y")]), TagTarget::Object)).0,
            "InvalidTag"
        );
    }

    #[test]
    fn malformed_documents() {
        for body in [
            "<Tagging/>",
            "<Other><TagSet/></Other>",
            "<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>",
            "<Tagging><TagSet><Tag><Value>a</Value></Tag></TagSet></Tagging>",
            "<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value><X/></Tag></TagSet></Tagging>",
            "<Tagging><TagSet><Bad/></TagSet></Tagging>",
            "<Tagging><TagSet/><TagSet/></Tagging>",
        ] {
            assert_eq!(
                code(parse(body, TagTarget::Object)).0,
                "MalformedXML",
                "{body}"
            );
        }
        assert_eq!(
            parse("<Tagging><TagSet/></Tagging>", TagTarget::Object).unwrap(),
            Vec::<(String, String)>::new()
        );
    }

    #[test]
    fn every_allowed_character_round_trips() {
        // Unicode letters, digits and separators of several scripts, and each
        // punctuation mark S3 allows, at the edges and in the middle.
        let pieces = [
            " ", "\u{a0}", "\u{3000}", "_", ".", ":", "/", "=", "+", "-", "@", "a", "Z", "9", "é",
            "ß", "Ж", "中", "٣", "𝐀",
        ];
        let mut tags = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let v = format!("{p}{}{p}", pieces[(i + 7) % pieces.len()]);
            tags.push((format!("{p}k{i}{p}"), v));
            if tags.len() == MAX_OBJECT_TAGS {
                let back = parse(&to_xml(&tags), TagTarget::Object).unwrap();
                assert_eq!(back, tags);
                tags.clear();
            }
        }
        assert_eq!(parse(&to_xml(&tags), TagTarget::Object).unwrap(), tags);
    }

    #[test]
    fn header_form() {
        assert_eq!(
            from_header(b"a=1&b=x%20y+z&c").unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(from_header(b"").unwrap(), Vec::<(String, String)>::new());
        assert_eq!(from_header(b"a=1&a=2").unwrap_err().code, "InvalidArgument");
        assert_eq!(from_header(b"a=%zz").unwrap_err().code, "InvalidArgument");
        assert_eq!(from_header(b"a=%ff").unwrap_err().code, "InvalidArgument");
        let eleven: String = (0..11).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(
            from_header(eleven.as_bytes()).unwrap_err().code,
            "InvalidTag"
        );
        assert_eq!(from_header(b"aws%3Ax=1").unwrap_err().code, "InvalidTag");
    }
}
