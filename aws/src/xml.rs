//! A minimal streaming XML writer for S3 and EC2 response bodies.
use std::borrow::Cow;
use std::fmt::Write;

pub struct XmlWriter {
    buf: String,
    stack: Vec<Cow<'static, str>>,
}

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['<', '>', '&', '"', '\'', '\r'])
        && !s
            .chars()
            .any(|c| (c as u32) < 0x20 && c != '\n' && c != '\t')
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            buf: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            stack: Vec::new(),
        }
    }

    /// Opens the root element with the given namespace.
    /// Opens the root element with the given namespace. (Element names are the
    /// caller's constants, or built from them, e.g. `{Action}Response`: never input.)
    pub fn root(&mut self, name: impl Into<Cow<'static, str>>, ns: &str) -> &mut Self {
        let name = name.into();
        let _ = write!(self.buf, "<{name} xmlns=\"{ns}\">");
        self.stack.push(name);
        self
    }

    pub fn open(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Self {
        let name = name.into();
        let _ = write!(self.buf, "<{name}>");
        self.stack.push(name);
        self
    }

    /// Opens an element with raw attributes (caller escapes values).
    pub fn open_attrs(&mut self, name: impl Into<Cow<'static, str>>, attrs: &str) -> &mut Self {
        let name = name.into();
        let _ = write!(self.buf, "<{name} {attrs}>");
        self.stack.push(name);
        self
    }

    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.stack.pop() {
            let _ = write!(self.buf, "</{name}>");
        }
        self
    }

    pub fn elem(&mut self, name: &str, text: impl AsRef<str>) -> &mut Self {
        let _ = write!(self.buf, "<{name}>{}</{name}>", escape(text.as_ref()));
        self
    }

    pub fn finish(mut self) -> String {
        while !self.stack.is_empty() {
            self.close();
        }
        self.buf
    }
}

/// Rejects bodies that carry a DTD: we never expand entities, and a DOCTYPE in an S3
/// request is always hostile or broken.
pub fn has_doctype(body: &[u8]) -> bool {
    body.windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"<!DOCTYPE"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn writes_escaped() {
        let mut w = XmlWriter::new();
        w.root("A", S3_NS)
            .elem("K", "<&>\"'")
            .open("B")
            .elem("C", "x");
        let s = w.finish();
        assert!(s.ends_with("<A xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><K>&lt;&amp;&gt;&quot;&apos;</K><B><C>x</C></B></A>"));
        assert!(has_doctype(b"<?xml?><!doctype x>"));
    }
}
