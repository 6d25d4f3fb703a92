//! Parsing of request XML bodies into a small tree, with S3's limits: bounded size
//! (checked by the caller), bounded depth, no DTDs; any error is `MalformedXML`.
//!
//! The text of a leaf element is kept exactly as sent: no trimming, and no XML 1.0
//! end-of-line normalisation (a literal `\r` stays `\r`), since it may be an object
//! key, prefix, marker, tag or metadata value, and those are bytes. Character and
//! predefined entity references (`&#13;`, `&#x9;`, `&amp;`) are resolved, so a client
//! that escapes control characters (botocore does for `\r` and `\n`) round-trips too.
//! AWS normalises a literal `\r\n` to `\n`; keeping it means a client that sends it
//! raw (s3cmd) names the key it meant rather than another one. Text between child
//! elements (indentation) is structure, not content: whitespace there is dropped and
//! anything else is `MalformedXML`.
use crate::error::{S3Error, S3Result};
use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_DEPTH: usize = 16;
/// Most elements one body may hold. A tree node costs ~25 times the bytes of its
/// shortest form (`<a/>`), so without this a 4 MiB body could take ~100 MiB; the
/// largest real body (CompleteMultipartUpload with 10 000 parts, each with a part
/// number, ETag and checksum) has ~40 000.
const MAX_NODES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Node {
    pub name: String,
    /// The element's text, verbatim (empty for elements with children).
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// The exact text of the first child `name` (for keys, prefixes, values).
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
    /// The text of the first child `name` without surrounding XML whitespace: only for
    /// tokens (numbers, enumerations, ETags, ids), never for keys or values.
    pub fn token_of(&self, name: &str) -> Option<&str> {
        self.text_of(name).map(trim_xml_space)
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Trims the XML whitespace characters (space, tab, CR, LF) and nothing else.
pub fn trim_xml_space(s: &str) -> &str {
    s.trim_matches(is_xml_space)
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, n)) => n.to_string(),
        None => name.to_string(),
    }
}

/// The character an entity reference (`amp`, `#13`, `#x9`, …) stands for.
fn resolve_ref(r: &quick_xml::events::BytesRef) -> S3Result<char> {
    if let Some(c) = r.resolve_char_ref().map_err(|_| S3Error::malformed_xml())? {
        return Ok(c);
    }
    match r.as_ref() {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => Err(S3Error::malformed_xml()),
    }
}

pub fn parse(body: &[u8]) -> S3Result<Node> {
    if euca_aws::xml::has_doctype(body) {
        return Err(S3Error::malformed_xml());
    }
    let mut r = Reader::from_reader(body);
    r.config_mut().trim_text(false);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut buf = Vec::new();
    let mut nodes = 0usize;
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|_| S3Error::malformed_xml())?;
        if matches!(ev, Event::Start(_) | Event::Empty(_)) {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(S3Error::malformed_xml());
            }
        }
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH || root.is_some() {
                    return Err(S3Error::malformed_xml());
                }
                stack.push(Node {
                    name: local(e.name().as_ref()),
                    ..Default::default()
                });
            }
            Event::Empty(e) => {
                if root.is_some() {
                    return Err(S3Error::malformed_xml());
                }
                let n = Node {
                    name: local(e.name().as_ref()),
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::Text(t) => match stack.last_mut() {
                Some(top) => top.text.push_str(&t.into_inner()),
                // Outside the root only whitespace may appear.
                None if t.into_inner().chars().all(is_xml_space) => {}
                None => return Err(S3Error::malformed_xml()),
            },
            Event::GeneralRef(e) => {
                let c = resolve_ref(&e)?;
                match stack.last_mut() {
                    Some(top) => top.text.push(c),
                    None => return Err(S3Error::malformed_xml()),
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(top) => top.text.push_str(&t.into_inner()),
                None => return Err(S3Error::malformed_xml()),
            },
            Event::End(_) => {
                let mut n = stack.pop().ok_or_else(S3Error::malformed_xml)?;
                if !n.children.is_empty() {
                    // Mixed content: only indentation may sit between child elements.
                    if !n.text.chars().all(is_xml_space) {
                        return Err(S3Error::malformed_xml());
                    }
                    n.text.clear();
                }
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::DocType(_) => return Err(S3Error::malformed_xml()),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(S3Error::malformed_xml());
    }
    root.ok_or_else(S3Error::malformed_xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(body: &str) -> Vec<String> {
        parse(body.as_bytes())
            .unwrap()
            .children("Object")
            .map(|o| o.text_of("Key").unwrap().to_string())
            .collect()
    }

    #[test]
    fn parses_and_limits() {
        let n = parse(br#"<?xml version="1.0"?><Delete xmlns="x"><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>"#).unwrap();
        assert_eq!(n.name, "Delete");
        assert_eq!(n.text_of("Quiet"), Some("true"));
        assert_eq!(
            keys(
                r#"<Delete><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>"#
            ),
            vec!["a&b", "c"]
        );
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<!DOCTYPE x [<!ENTITY e 'x'>]><a>&e;</a>").is_err());
        assert!(parse(b"<a>&e;</a>").is_err());
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_NODES));
        assert!(parse(wide.as_bytes()).is_err());
        let fits = format!("<a>{}</a>", "<b/>".repeat(MAX_NODES - 1));
        assert_eq!(
            parse(fits.as_bytes()).unwrap().children.len(),
            MAX_NODES - 1
        );
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a></a><b></b>").is_err());
        assert!(parse(b"<a></a><b/>").is_err());
        assert!(parse(b"<a></a>junk").is_err());
    }

    /// Keys are bytes: whitespace, CR/LF (literal or as entities) and entities come
    /// through exactly (issue 10: `<Key> </Key>` became the empty key and `_ ` became `_`).
    #[test]
    fn leaf_text_is_verbatim() {
        let body = "<Delete>\n  <Object><Key> </Key></Object>\n  <Object><Key>_ </Key></Object>\n  <Object><Key>a\n</Key></Object>\n  <Object><Key>\tb</Key></Object>\n  <Object><Key>c\r\n</Key></Object>\n  <Object><Key>c&#13;&#xA;</Key></Object>\n  <Object><Key>&#x9;x&#9;</Key></Object>\n  <Object><Key> &amp; &lt;&gt;&quot;&apos; </Key></Object>\n  <Object><Key><![CDATA[ <raw> ]]></Key></Object>\n</Delete>\n";
        assert_eq!(
            keys(body),
            vec![
                " ",
                "_ ",
                "a\n",
                "\tb",
                "c\r\n",
                "c\r\n",
                "\tx\t",
                " & <>\"' ",
                " <raw> "
            ]
        );
    }

    #[test]
    fn indentation_is_structure_not_content() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<CompleteMultipartUpload>\r\n\t<Part>\r\n\t\t<PartNumber> 1 </PartNumber>\r\n\t\t<ETag>\"abc\"</ETag>\r\n\t</Part>\r\n</CompleteMultipartUpload>\r\n";
        let n = parse(body.as_bytes()).unwrap();
        let p = n.child("Part").unwrap();
        assert_eq!(n.text, "");
        assert_eq!(p.text, "");
        assert_eq!(p.token_of("PartNumber"), Some("1"));
        assert_eq!(p.text_of("PartNumber"), Some(" 1 "));
        assert_eq!(p.token_of("ETag"), Some("\"abc\""));
        // Text mixed with elements is not a valid S3 body.
        assert!(parse(b"<Delete>x<Object><Key>k</Key></Object></Delete>").is_err());
        // An empty element and an element with only whitespace are both leaves.
        let n = parse(b"<A><B/><C>  </C></A>").unwrap();
        assert_eq!(n.text_of("B"), Some(""));
        assert_eq!(n.text_of("C"), Some("  "));
    }
}
