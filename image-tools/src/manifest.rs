//! The bundle manifest (`<prefix>.manifest.xml`): parsing into typed fields
//! and extracting the bytes the signature covers.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::error::ImageError;

/// Largest manifest accepted. A 10 GiB image in 10 MiB parts lists ~1000
/// parts (~150 KB of XML); this leaves room for far larger images while
/// bounding memory for attacker-supplied manifests.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Deepest element nesting accepted (the format needs 4).
const MAX_DEPTH: usize = 32;

/// A SHA-1 digest as written in the manifest (`<digest algorithm="SHA1">hex</digest>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha1Digest(pub [u8; 20]);

impl Sha1Digest {
    /// Lowercase hex, as euca2ools writes it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1Digest({})", self.to_hex())
    }
}

/// `<bundler>`: the tool that made the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundler {
    /// `euca2ools` (3.x), `euca-tools` (1.x/2.x), `ec2-ami-tools` (AWS).
    pub name: String,
    pub version: String,
    pub release: String,
}

/// One `<block_device_mapping><mapping>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDeviceMapping {
    /// `<virtual>`: `ami`, `root`, `ephemeral0`, `swap`, …
    pub virtual_name: String,
    /// `<device>`: `sda1`, `/dev/sda1`, …
    pub device: String,
}

/// `<machine_configuration>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineConfiguration {
    pub architecture: Option<String>,
    /// In document order. Read from `block_device_mapping/mapping` (what every
    /// writer emits) or `block_device_mappings/block_device_mapping` (what the
    /// euca2ools 3.x reader looks for).
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Read from `product_codes/product_code` or `productcodes/product_code`.
    pub product_codes: Vec<String>,
    /// `eki-…`, or `true` for a kernel image.
    pub kernel_id: Option<String>,
    /// `eri-…`, or `true` for a ramdisk image.
    pub ramdisk_id: Option<String>,
}

/// An RSA-wrapped AES key or IV (`*_encrypted_key` / `*_encrypted_iv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedValue {
    /// The `algorithm` attribute (`AES-128-CBC` on keys; absent on IVs).
    pub algorithm: Option<String>,
    /// The RSA PKCS#1 v1.5 ciphertext (hex-decoded).
    pub ciphertext: Vec<u8>,
}

/// One `<parts><part>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The `index` attribute; parts are stored sorted by it (0, 1, 2, …).
    pub index: u32,
    /// `<filename>`: a plain file name (checked: no path separators, no `..`).
    pub filename: String,
    /// SHA-1 of the part file's bytes.
    pub digest: Sha1Digest,
}

/// `<image>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The bundle prefix / original file name.
    pub name: String,
    /// Owner account id (dashes stripped).
    pub user: Option<String>,
    /// `<type>`: `machine`, `kernel` or `ramdisk`.
    pub image_type: Option<String>,
    /// SHA-1 of the tar stream (the `algorithm` attribute was checked to be SHA1).
    pub digest: Sha1Digest,
    /// Size of the raw image in bytes.
    pub size: u64,
    /// Ciphertext length = sum of the part sizes.
    pub bundled_size: u64,
    /// AES key wrapped for the cloud's certificate.
    pub ec2_encrypted_key: Option<EncryptedValue>,
    /// AES IV wrapped for the cloud's certificate.
    pub ec2_encrypted_iv: Option<EncryptedValue>,
    /// AES key wrapped for the user's certificate.
    pub user_encrypted_key: Option<EncryptedValue>,
    /// AES IV wrapped for the user's certificate.
    pub user_encrypted_iv: Option<EncryptedValue>,
    /// Sorted by index, indices 0..n without gaps.
    pub parts: Vec<Part>,
}

/// A parsed bundle manifest.
///
/// Parsing checks structure and part file names but not the signature; call
/// [`Manifest::verify_signature`] (which [`crate::unbundle`] always does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `<version>`, `2007-10-10` for every known writer.
    pub version: String,
    pub bundler: Bundler,
    pub machine_configuration: MachineConfiguration,
    pub image: Image,
    /// `<signature>` text: lowercase hex of the RSA-SHA1 signature, or `UNSIGNED`.
    pub signature: String,
    /// The exact bytes the signature covers (see [`Manifest::signed_bytes`]).
    signed: Vec<u8>,
}

impl Manifest {
    /// Reads and parses a manifest file (at most [`MAX_MANIFEST_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Manifest, ImageError> {
        let read_err = |source| ImageError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Manifest::from_bytes(&bytes)
    }

    /// Parses manifest bytes.
    ///
    /// Refuses (with [`ImageError::UnsafePartName`]) any part file name that is
    /// empty, absolute, or contains `/`, `\`, `..` or NUL, so a caller that
    /// parses first never touches a path outside the parts directory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ImageError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ImageError::ManifestTooLarge {
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8/ASCII text: {e}")))?;
        let root = parse_tree(text)?;
        if root.name != "manifest" {
            return Err(bad(format!(
                "root element is <{}>, expected <manifest>",
                root.name
            )));
        }

        let version = root.required_child("version")?.text().to_string();

        let b = root.required_child("bundler")?;
        let bundler = Bundler {
            name: b.required_child("name")?.text().to_string(),
            version: b.required_child("version")?.text().to_string(),
            release: b.required_child("release")?.text().to_string(),
        };

        let mc_el = root.required_child("machine_configuration")?;
        let machine_configuration = parse_machine_configuration(mc_el)?;

        let img_el = root.required_child("image")?;
        let image = parse_image(img_el)?;

        let signature = root.required_child("signature")?.text().to_string();

        let signed = signed_region(text, mc_el, img_el)?;

        Ok(Manifest {
            version,
            bundler,
            machine_configuration,
            image,
            signature,
            signed,
        })
    }

    /// The exact bytes the signature covers: the raw text of
    /// `<machine_configuration>…</machine_configuration>` immediately followed
    /// by the raw text of `<image>…</image>`, as they appear in the file.
    ///
    /// These are the byte spans of the elements this parser read (so a signed
    /// copy hidden elsewhere, e.g. in a comment, cannot vouch for different
    /// parsed fields); parsing also checks that they are exactly what the
    /// Eucalyptus cloud extracts (from the first literal `<machine_configuration>`
    /// to the first `</machine_configuration>`, and likewise for `<image>`) and
    /// refuses the manifest otherwise.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// True when the bundler is euca2ools 1.x (`euca-tools` 1.*), whose image
    /// digest is always SHA-1 of the empty string (a known 1.x bug), so the
    /// digest cannot be checked.
    pub fn image_digest_is_advisory(&self) -> bool {
        const SHA1_EMPTY: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        self.bundler.name == "euca-tools"
            && self.bundler.version.starts_with('1')
            && self.image.digest.to_hex() == SHA1_EMPTY
    }
}

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::Manifest(msg.into())
}

fn parse_machine_configuration(mc: &Element) -> Result<MachineConfiguration, ImageError> {
    let mut out = MachineConfiguration {
        architecture: mc
            .optional_child("architecture")?
            .map(|e| e.text().to_string()),
        kernel_id: mc
            .optional_child("kernel_id")?
            .map(|e| e.text().to_string()),
        ramdisk_id: mc
            .optional_child("ramdisk_id")?
            .map(|e| e.text().to_string()),
        ..MachineConfiguration::default()
    };
    // The writers' spelling, then the one the euca2ools 3.x reader looks for.
    for (list, item) in [
        ("block_device_mapping", "mapping"),
        ("block_device_mappings", "block_device_mapping"),
    ] {
        if let Some(l) = mc.optional_child(list)? {
            for m in l.children_named(item) {
                out.block_device_mappings.push(BlockDeviceMapping {
                    virtual_name: m.required_child("virtual")?.text().to_string(),
                    device: m.required_child("device")?.text().to_string(),
                });
            }
        }
    }
    for list in ["product_codes", "productcodes"] {
        if let Some(l) = mc.optional_child(list)? {
            for p in l.children_named("product_code") {
                out.product_codes.push(p.text().to_string());
            }
        }
    }
    Ok(out)
}

fn parse_image(img: &Element) -> Result<Image, ImageError> {
    let name = img.required_child("name")?.text().to_string();
    let user = img.optional_child("user")?.map(|e| e.text().to_string());
    let image_type = img.optional_child("type")?.map(|e| e.text().to_string());
    let digest = parse_sha1(img.required_child("digest")?, "image/digest")?;
    let size = parse_u64(img.required_child("size")?, "image/size")?;
    let bundled_size = parse_u64(img.required_child("bundled_size")?, "image/bundled_size")?;

    let enc = |tag: &str| -> Result<Option<EncryptedValue>, ImageError> {
        let Some(e) = img.optional_child(tag)? else {
            return Ok(None);
        };
        let algorithm = e.attr("algorithm").map(str::to_string);
        if let Some(a) = &algorithm {
            if !a.eq_ignore_ascii_case("AES-128-CBC") {
                return Err(ImageError::UnsupportedAlgorithm(format!(
                    "image/{tag} algorithm {a:?} (only AES-128-CBC)"
                )));
            }
        }
        let ciphertext =
            hex::decode(e.text()).map_err(|err| bad(format!("image/{tag} is not hex: {err}")))?;
        if ciphertext.is_empty() {
            return Err(bad(format!("image/{tag} is empty")));
        }
        Ok(Some(EncryptedValue {
            algorithm,
            ciphertext,
        }))
    };
    let ec2_encrypted_key = enc("ec2_encrypted_key")?;
    let ec2_encrypted_iv = enc("ec2_encrypted_iv")?;
    let user_encrypted_key = enc("user_encrypted_key")?;
    let user_encrypted_iv = enc("user_encrypted_iv")?;
    let has_pair =
        |k: &Option<EncryptedValue>, v: &Option<EncryptedValue>| k.is_some() && v.is_some();
    if !has_pair(&ec2_encrypted_key, &ec2_encrypted_iv)
        && !has_pair(&user_encrypted_key, &user_encrypted_iv)
    {
        return Err(bad(
            "image has neither ec2_encrypted_key+iv nor user_encrypted_key+iv",
        ));
    }

    let parts_el = img.required_child("parts")?;
    let mut parts = Vec::new();
    for p in parts_el.children_named("part") {
        let index_text = p
            .attr("index")
            .ok_or_else(|| bad("image/parts/part without an index attribute"))?;
        let index: u32 = index_text.trim().parse().map_err(|_| {
            bad(format!(
                "image/parts/part index {index_text:?} is not a number"
            ))
        })?;
        let filename = p.required_child("filename")?.text().to_string();
        check_part_name(index, &filename)?;
        let digest = parse_sha1(p.required_child("digest")?, "image/parts/part/digest")?;
        parts.push(Part {
            index,
            filename,
            digest,
        });
    }
    if parts.is_empty() {
        return Err(bad("image/parts lists no part"));
    }
    parts.sort_by_key(|p| p.index);
    for (i, p) in parts.iter().enumerate() {
        if p.index as usize != i {
            return Err(bad(format!(
                "image/parts indices must be 0..{} without gaps or duplicates; found index {} at position {}",
                parts.len(),
                p.index,
                i
            )));
        }
    }
    if let Some(count) = parts_el.attr("count") {
        if count.trim().parse::<usize>().ok() != Some(parts.len()) {
            return Err(bad(format!(
                "image/parts count={count:?} but {} parts are listed",
                parts.len()
            )));
        }
    }

    Ok(Image {
        name,
        user,
        image_type,
        digest,
        size,
        bundled_size,
        ec2_encrypted_key,
        ec2_encrypted_iv,
        user_encrypted_key,
        user_encrypted_iv,
        parts,
    })
}

/// A part file name must name a file directly inside the parts directory.
fn check_part_name(index: u32, name: &str) -> Result<(), ImageError> {
    let unsafe_name = name.is_empty()
        || name == "."
        || name.contains('/')
        || name.contains('\\')
        || name.contains("..")
        || name.contains('\0')
        || Path::new(name).is_absolute()
        || Path::new(name).has_root();
    if unsafe_name {
        return Err(ImageError::UnsafePartName {
            index,
            name: name.to_string(),
        });
    }
    Ok(())
}

fn parse_sha1(e: &Element, what: &str) -> Result<Sha1Digest, ImageError> {
    if let Some(a) = e.attr("algorithm") {
        if !a.eq_ignore_ascii_case("SHA1") {
            return Err(ImageError::UnsupportedAlgorithm(format!(
                "{what} algorithm {a:?} (only SHA1)"
            )));
        }
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(e.text(), &mut out)
        .map_err(|err| bad(format!("{what} is not a 40-hex-digit SHA-1: {err}")))?;
    Ok(Sha1Digest(out))
}

fn parse_u64(e: &Element, what: &str) -> Result<u64, ImageError> {
    let t = e.text();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} {t:?} is not a decimal number")));
    }
    t.parse()
        .map_err(|_| bad(format!("{what} {t:?} is out of range")))
}

/// Finds the signed bytes and checks they agree with the literal-substring
/// rule the Eucalyptus cloud uses.
fn signed_region(text: &str, mc: &Element, img: &Element) -> Result<Vec<u8>, ImageError> {
    let mut signed = Vec::with_capacity((mc.end - mc.start) + (img.end - img.start));
    for (el, open, close) in [
        (mc, "<machine_configuration>", "</machine_configuration>"),
        (img, "<image>", "</image>"),
    ] {
        let span = text
            .get(el.start..el.end)
            .ok_or_else(|| bad("internal: element span out of range"))?;
        let literal = text
            .find(open)
            .and_then(|s| text[s..].find(close).map(|e| (s, s + e + close.len())));
        if literal != Some((el.start, el.end)) || !span.starts_with(open) {
            return Err(bad(format!(
                "the signed text of {open} is ambiguous: the element must be written as a literal {open} (no attributes) and be the first such text in the file"
            )));
        }
        signed.extend_from_slice(span.as_bytes());
    }
    Ok(signed)
}

// ---------------------------------------------------------------------------
// A tiny element tree with byte spans, built with quick-xml.

struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
    /// Byte offset of `<` of the start tag.
    start: usize,
    /// Byte offset just past the end tag's `>`.
    end: usize,
}

impl Element {
    fn text(&self) -> &str {
        self.text.trim()
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn children_named(&self, name: &str) -> Vec<&Element> {
        self.children.iter().filter(|c| c.name == name).collect()
    }

    /// At most one child of that name.
    fn optional_child(&self, name: &str) -> Result<Option<&Element>, ImageError> {
        let found = self.children_named(name);
        let first = found.first().copied();
        if found.len() > 1 {
            return Err(bad(format!("<{}> has more than one <{name}>", self.name)));
        }
        Ok(first)
    }

    /// Exactly one child of that name.
    fn required_child(&self, name: &str) -> Result<&Element, ImageError> {
        self.optional_child(name)?
            .ok_or_else(|| bad(format!("<{}> has no <{name}>", self.name)))
    }
}

fn new_element(e: &BytesStart<'_>, start: usize) -> Result<Element, ImageError> {
    let qname = e.name();
    let name: &str = qname.as_ref();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| bad(format!("bad attribute on <{name}>: {err}")))?;
        let key: &str = a.key.as_ref();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| bad(format!("bad attribute value on <{name}>: {err}")))?;
        attrs.push((key.to_string(), value.into_owned()));
    }
    Ok(Element {
        name: name.to_string(),
        attrs,
        text: String::new(),
        children: Vec::new(),
        start,
        end: start,
    })
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn parse_tree(text: &str) -> Result<Element, ImageError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let pos = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(|e| {
            bad(format!(
                "XML error at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match ev {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(bad("content after the root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(bad("elements nested too deeply"));
                }
                stack.push(new_element(&e, pos)?);
            }
            Event::Empty(e) => {
                if root.is_some() {
                    return Err(bad("content after the root element"));
                }
                let mut el = new_element(&e, pos)?;
                el.end = reader.buffer_position() as usize;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end names match their start tags.
                let mut el = stack.pop().ok_or_else(|| bad("unbalanced end tag"))?;
                el.end = reader.buffer_position() as usize;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(bad("text outside the root element")),
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None => return Err(bad("CDATA outside the root element")),
            },
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| bad(format!("bad character reference: {e}")))?
                } else {
                    resolve_entity(&r)
                };
                let c = c.ok_or_else(|| bad(format!("unknown entity &{};", &*r)))?;
                match stack.last_mut() {
                    Some(el) => el.text.push(c),
                    None => return Err(bad("reference outside the root element")),
                }
            }
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed in a manifest")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(bad("unexpected end of document (unclosed elements)"));
    }
    root.ok_or_else(|| bad("no root element"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(mc: &str, image_extra: &str, parts: &str) -> String {
        format!(
            "<?xml version='1.0' encoding='ASCII'?>\n<manifest><version>2007-10-10</version>\
<bundler><name>euca2ools</name><version>3.4</version><release>0</release></bundler>\
{mc}<image><name>a</name><type>machine</type>\
<digest algorithm=\"SHA1\">0000000000000000000000000000000000000000</digest>\
<size>1</size><bundled_size>16</bundled_size>\
<user_encrypted_key algorithm=\"AES-128-CBC\">00</user_encrypted_key>\
<user_encrypted_iv>00</user_encrypted_iv>{image_extra}<parts count=\"1\">{parts}</parts></image>\
<signature>UNSIGNED</signature></manifest>"
        )
    }

    const MC: &str =
        "<machine_configuration><architecture>x86_64</architecture></machine_configuration>";
    const PART: &str = "<part index=\"0\"><filename>a.part.00</filename>\
<digest algorithm=\"SHA1\">0000000000000000000000000000000000000000</digest></part>";

    #[test]
    fn minimal_parses_and_signed_bytes_are_raw_spans() {
        let d = doc(MC, "", PART);
        let m = Manifest::from_bytes(d.as_bytes()).unwrap();
        let s = std::str::from_utf8(m.signed_bytes()).unwrap();
        assert!(s.starts_with(MC));
        assert!(s[MC.len()..].starts_with("<image><name>a</name>"));
        assert!(s.ends_with("</parts></image>"));
    }

    #[test]
    fn comment_with_decoy_region_is_refused() {
        let d = doc(MC, "", PART).replace(
            "<manifest>",
            "<manifest><!--<machine_configuration></machine_configuration>-->",
        );
        assert!(matches!(
            Manifest::from_bytes(d.as_bytes()),
            Err(ImageError::Manifest(_))
        ));
    }

    #[test]
    fn duplicate_image_is_refused() {
        let d =
            doc(MC, "", PART).replace("<signature>", "<image><name>b</name></image><signature>");
        assert!(matches!(
            Manifest::from_bytes(d.as_bytes()),
            Err(ImageError::Manifest(_))
        ));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for name in ["", ".", "..", "../x", "/x", "a/b", "a\\b", "x..y"] {
            let p = PART.replace("a.part.00", name);
            let d = doc(MC, "", &p);
            match Manifest::from_bytes(d.as_bytes()) {
                Err(ImageError::UnsafePartName { index: 0, name: n }) => assert_eq!(n, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn entities_and_reader_spelling() {
        let mc = "<machine_configuration><block_device_mappings><block_device_mapping>\
<virtual>ami</virtual><device>sda&#49;</device></block_device_mapping></block_device_mappings>\
<productcodes><product_code>A&amp;B</product_code></productcodes></machine_configuration>";
        let m = Manifest::from_bytes(doc(mc, "", PART).as_bytes()).unwrap();
        let mcfg = &m.machine_configuration;
        assert_eq!(mcfg.block_device_mappings[0].device, "sda1");
        assert_eq!(mcfg.product_codes, vec!["A&B".to_string()]);
        assert_eq!(mcfg.architecture, None);
    }

    #[test]
    fn part_gaps_and_count_mismatch_are_refused() {
        let p = PART.replace("index=\"0\"", "index=\"1\"");
        assert!(Manifest::from_bytes(doc(MC, "", &p).as_bytes()).is_err());
        let d = doc(MC, "", PART).replace("count=\"1\"", "count=\"2\"");
        assert!(Manifest::from_bytes(d.as_bytes()).is_err());
    }

    #[test]
    fn oversized_manifest_is_refused() {
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(
            Manifest::from_bytes(&big),
            Err(ImageError::ManifestTooLarge { .. })
        ));
    }

    #[test]
    fn doctype_is_refused() {
        let d = doc(MC, "", PART).replace(
            "<manifest>",
            "<!DOCTYPE manifest [<!ENTITY x \"y\">]><manifest>",
        );
        assert!(Manifest::from_bytes(d.as_bytes()).is_err());
    }
}
