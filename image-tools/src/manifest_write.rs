//! Writing `<prefix>.manifest.xml` exactly as euca2ools 3.x serialises it
//! (lxml, compact, `encoding='ASCII'`), and signing it.

use std::fmt::Write as _;

use crate::crypto::{PrivateKey, SignerCert};
use crate::error::ImageError;
use crate::manifest::{BlockDeviceMapping, Bundler, Sha1Digest};

/// Everything the manifest says, in the form the writer needs.
pub(crate) struct ManifestFields<'a> {
    pub bundler: &'a Bundler,
    pub architecture: &'a str,
    /// Already sorted by virtual name.
    pub block_device_mappings: &'a [BlockDeviceMapping],
    pub product_codes: &'a [String],
    pub kernel_id: Option<&'a str>,
    pub ramdisk_id: Option<&'a str>,
    pub name: &'a str,
    pub user: &'a str,
    pub image_type: &'a str,
    pub digest: Sha1Digest,
    pub size: u64,
    pub bundled_size: u64,
    pub ec2_encrypted_key: &'a [u8],
    pub user_encrypted_key: &'a [u8],
    pub ec2_encrypted_iv: &'a [u8],
    pub user_encrypted_iv: &'a [u8],
    /// (file name, SHA-1), in index order.
    pub parts: &'a [(String, Sha1Digest)],
}

/// Text content escaped as lxml writes it with `encoding='ASCII'`: `&`, `<`,
/// `>` as entities, anything outside ASCII as a decimal character reference.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "&#{};", c as u32);
            }
        }
    }
    out
}

fn el(out: &mut String, tag: &str, text: &str) {
    let _ = write!(out, "<{tag}>{}</{tag}>", esc(text));
}

/// The `<machine_configuration>…</machine_configuration><image>…</image>`
/// text (the bytes the signature covers), in euca2ools 3.x element order.
pub(crate) fn signed_text(f: &ManifestFields<'_>) -> String {
    let mut s = String::with_capacity(4096 + f.parts.len() * 128);
    s.push_str("<machine_configuration>");
    el(&mut s, "architecture", f.architecture);
    if !f.block_device_mappings.is_empty() {
        s.push_str("<block_device_mapping>");
        for m in f.block_device_mappings {
            s.push_str("<mapping>");
            el(&mut s, "virtual", &m.virtual_name);
            el(&mut s, "device", &m.device);
            s.push_str("</mapping>");
        }
        s.push_str("</block_device_mapping>");
    }
    if !f.product_codes.is_empty() {
        s.push_str("<product_codes>");
        for p in f.product_codes {
            el(&mut s, "product_code", p);
        }
        s.push_str("</product_codes>");
    }
    if let Some(k) = f.kernel_id {
        el(&mut s, "kernel_id", k);
    }
    if let Some(r) = f.ramdisk_id {
        el(&mut s, "ramdisk_id", r);
    }
    s.push_str("</machine_configuration>");

    s.push_str("<image>");
    el(&mut s, "name", f.name);
    el(&mut s, "user", f.user);
    el(&mut s, "type", f.image_type);
    let _ = write!(
        s,
        "<digest algorithm=\"SHA1\">{}</digest><size>{}</size><bundled_size>{}</bundled_size>",
        f.digest.to_hex(),
        f.size,
        f.bundled_size
    );
    let _ = write!(
        s,
        "<ec2_encrypted_key algorithm=\"AES-128-CBC\">{}</ec2_encrypted_key>\
<user_encrypted_key algorithm=\"AES-128-CBC\">{}</user_encrypted_key>\
<ec2_encrypted_iv>{}</ec2_encrypted_iv><user_encrypted_iv>{}</user_encrypted_iv>",
        hex::encode(f.ec2_encrypted_key),
        hex::encode(f.user_encrypted_key),
        hex::encode(f.ec2_encrypted_iv),
        hex::encode(f.user_encrypted_iv),
    );
    let _ = write!(s, "<parts count=\"{}\">", f.parts.len());
    for (i, (name, digest)) in f.parts.iter().enumerate() {
        let _ = write!(s, "<part index=\"{i}\">");
        el(&mut s, "filename", name);
        let _ = write!(
            s,
            "<digest algorithm=\"SHA1\">{}</digest></part>",
            digest.to_hex()
        );
    }
    s.push_str("</parts></image>");
    s
}

/// The whole manifest file: declaration, newline, then the document on one
/// line with no trailing newline. The signature is RSA-SHA1 with `signer_key`
/// over exactly [`signed_text`]; it is checked against `signer_cert` so a key
/// that does not match the user's certificate is refused here rather than at
/// registration.
pub(crate) fn manifest_xml(
    f: &ManifestFields<'_>,
    signer_key: &PrivateKey,
    signer_cert: &SignerCert,
) -> Result<String, ImageError> {
    let signed = signed_text(f);
    let sig = signer_key.sign_sha1(signed.as_bytes())?;
    if !signer_cert.verify_sha1(signed.as_bytes(), &sig) {
        return Err(ImageError::InvalidKey(
            "the user's private key does not match the user's certificate".into(),
        ));
    }
    let mut doc = String::with_capacity(signed.len() + 1024);
    doc.push_str("<?xml version='1.0' encoding='ASCII'?>\n<manifest>");
    el(&mut doc, "version", "2007-10-10");
    doc.push_str("<bundler>");
    el(&mut doc, "name", &f.bundler.name);
    el(&mut doc, "version", &f.bundler.version);
    el(&mut doc, "release", &f.bundler.release);
    doc.push_str("</bundler>");
    doc.push_str(&signed);
    let _ = write!(
        doc,
        "<signature>{}</signature></manifest>",
        hex::encode(sig)
    );
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_like_lxml_ascii() {
        assert_eq!(esc("a&b<c>d\"e'"), "a&amp;b&lt;c&gt;d\"e'");
        assert_eq!(esc("é€"), "&#233;&#8364;");
    }
}
