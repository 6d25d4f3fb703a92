//! Parsing of request XML bodies into a small tree, with S3's limits: bounded size
//! (checked by the caller), bounded depth, no DTDs; any error is `MalformedXML`.
use crate::error::{S3Error, S3Result};
use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_DEPTH: usize = 16;

#[derive(Debug, Default)]
pub struct Node {
    pub name: String,
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
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, n)) => n.to_string(),
        None => name.to_string(),
    }
}

pub fn parse(body: &[u8]) -> S3Result<Node> {
    if euca_aws::xml::has_doctype(body) {
        return Err(S3Error::malformed_xml());
    }
    let mut r = Reader::from_reader(body);
    r.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut buf = Vec::new();
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|_| S3Error::malformed_xml())?;
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
                let n = Node {
                    name: local(e.name().as_ref()),
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None if root.is_none() => root = Some(n),
                    None => return Err(S3Error::malformed_xml()),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(e) => {
                if let Some(top) = stack.last_mut() {
                    let s = format!("&{};", e.into_inner());
                    let s =
                        quick_xml::escape::unescape(&s).map_err(|_| S3Error::malformed_xml())?;
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::End(_) => {
                let n = stack.pop().ok_or_else(S3Error::malformed_xml)?;
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
    #[test]
    fn parses_and_limits() {
        let n = parse(br#"<?xml version="1.0"?><Delete xmlns="x"><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>"#).unwrap();
        assert_eq!(n.name, "Delete");
        assert_eq!(n.text_of("Quiet"), Some("true"));
        let keys: Vec<_> = n
            .children("Object")
            .map(|o| o.text_of("Key").unwrap().to_string())
            .collect();
        assert_eq!(keys, vec!["a&b", "c"]);
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<!DOCTYPE x [<!ENTITY e 'x'>]><a>&e;</a>").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a></a><b></b>").is_err());
    }
}
