//! SSH key material for key pairs: generating a pair (the private half returned
//! once, never kept), reading an imported public key, and the fingerprints AWS
//! prints. The cryptography is OpenSSL's; this module only encodes (the SSH wire
//! format of RFC 4253 and OpenSSH's `openssh-key-v1` private key container).
//!
//! Fingerprints, as AWS computes them:
//! - created RSA: SHA-1 of the PKCS#8 DER private key, colon-separated hex;
//! - imported RSA: MD5 of the DER public key (SubjectPublicKeyInfo), colon hex;
//! - ed25519 (created or imported): SHA-256 of the OpenSSH public key blob, in
//!   standard base64 *with* `=` padding and without ssh-keygen's `SHA256:` prefix
//!   (AWS's form; `ssh-keygen -l -E sha256` prints the same digest unpadded).
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

/// Why public key material was refused (`InvalidKey.Format`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyFormatError(pub String);

fn bad(msg: impl Into<String>) -> KeyFormatError {
    KeyFormatError(msg.into())
}

/// The kinds of key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    /// `KeyType` as sent (`rsa`, `ed25519`).
    pub fn parse(s: &str) -> Option<KeyType> {
        match s {
            "rsa" => Some(KeyType::Rsa),
            "ed25519" => Some(KeyType::Ed25519),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// A generated key pair.
pub struct Generated {
    /// The PEM private key returned to the caller (`keyMaterial`).
    pub private_pem: String,
    /// `ssh-rsa AAAA…` / `ssh-ed25519 AAAA…`.
    pub public_line: String,
    pub fingerprint: String,
}

/// A parsed public key.
#[derive(Debug)]
pub struct Imported {
    pub key_type: KeyType,
    pub public_line: String,
    pub fingerprint: String,
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An SSH `mpint` from a non-negative big-endian magnitude.
fn put_mpint(out: &mut Vec<u8>, mag: &[u8]) {
    let start = mag.iter().position(|b| *b != 0).unwrap_or(mag.len());
    let mag = &mag[start..];
    if mag.first().is_some_and(|b| b & 0x80 != 0) {
        out.extend_from_slice(&(mag.len() as u32 + 1).to_be_bytes());
        out.push(0);
        out.extend_from_slice(mag);
    } else {
        put_string(out, mag);
    }
}

fn rsa_blob(e: &[u8], n: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, b"ssh-rsa");
    put_mpint(&mut b, e);
    put_mpint(&mut b, n);
    b
}

fn ed25519_blob(public: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, b"ssh-ed25519");
    put_string(&mut b, public);
    b
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn digest(md: MessageDigest, data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    Ok(hash(md, data)?.to_vec())
}

/// The fingerprint of an ed25519 public key blob.
fn ed25519_fingerprint(blob: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    Ok(STANDARD.encode(digest(MessageDigest::sha256(), blob)?))
}

fn line(kind: &str, blob: &[u8]) -> String {
    format!("{kind} {}", STANDARD.encode(blob))
}

/// Generates a key pair: RSA 2048 (PKCS#1 PEM, `BEGIN RSA PRIVATE KEY`, as AWS
/// returns it) or ed25519 (OpenSSH private key format). CPU-bound: call it off the
/// async runtime.
pub fn generate(kind: KeyType) -> Result<Generated, openssl::error::ErrorStack> {
    match kind {
        KeyType::Rsa => {
            let rsa = Rsa::generate(2048)?;
            let private_pem = String::from_utf8_lossy(&rsa.private_key_to_pem()?).into_owned();
            let blob = rsa_blob(&rsa.e().to_vec(), &rsa.n().to_vec());
            let pkcs8 = PKey::from_rsa(rsa)?.private_key_to_pkcs8()?;
            Ok(Generated {
                private_pem,
                public_line: line("ssh-rsa", &blob),
                fingerprint: colon_hex(&digest(MessageDigest::sha1(), &pkcs8)?),
            })
        }
        KeyType::Ed25519 => {
            let key = PKey::generate_ed25519()?;
            let public = key.raw_public_key()?;
            let seed = key.raw_private_key()?;
            let blob = ed25519_blob(&public);
            Ok(Generated {
                private_pem: openssh_ed25519_private(&blob, &seed, &public),
                public_line: line("ssh-ed25519", &blob),
                fingerprint: ed25519_fingerprint(&blob)?,
            })
        }
    }
}

/// OpenSSH's unencrypted `openssh-key-v1` container holding one ed25519 key.
fn openssh_ed25519_private(blob: &[u8], seed: &[u8], public: &[u8]) -> String {
    let check = rand::random::<u32>().to_be_bytes();
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, public);
    let mut secret = seed.to_vec();
    secret.extend_from_slice(public);
    put_string(&mut private, &secret);
    put_string(&mut private, b"");
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut out = b"openssh-key-v1\0".to_vec();
    put_string(&mut out, b"none");
    put_string(&mut out, b"none");
    put_string(&mut out, b"");
    out.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out, blob);
    put_string(&mut out, &private);
    let b64 = STANDARD.encode(&out);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    pem
}

/// Reads SSH wire strings off a blob.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], KeyFormatError> {
        if self.0.len() < 4 {
            return Err(bad("the public key is truncated"));
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err(bad("the public key is truncated"));
        }
        self.0 = &rest[n..];
        Ok(&rest[..n])
    }
}

/// The smallest and largest RSA moduli accepted (AWS takes 1024, 2048 and 4096).
const RSA_BITS: std::ops::RangeInclusive<u32> = 1024..=16384;

fn from_rsa(rsa: Rsa<Public>) -> Result<Imported, KeyFormatError> {
    if !RSA_BITS.contains(&rsa.n().num_bits().unsigned_abs()) {
        return Err(bad("the RSA key must have 1024 to 16384 bits"));
    }
    let blob = rsa_blob(&rsa.e().to_vec(), &rsa.n().to_vec());
    let spki = PKey::from_rsa(rsa)
        .and_then(|k| k.public_key_to_der())
        .map_err(|e| bad(format!("the RSA key is not valid: {e}")))?;
    let md5 = digest(MessageDigest::md5(), &spki).map_err(|e| bad(e.to_string()))?;
    Ok(Imported {
        key_type: KeyType::Rsa,
        public_line: line("ssh-rsa", &blob),
        fingerprint: colon_hex(&md5),
    })
}

/// Reads imported public key material: an OpenSSH public key line (`ssh-rsa` or
/// `ssh-ed25519`, comment optional), or an RSA SubjectPublicKeyInfo in PEM or DER.
pub fn import(material: &[u8]) -> Result<Imported, KeyFormatError> {
    if let Ok(text) = std::str::from_utf8(material) {
        if text.trim_start().starts_with("-----BEGIN") {
            let k = PKey::public_key_from_pem(material)
                .map_err(|_| bad("the PEM public key is not valid"))?;
            return from_pkey(k);
        }
        let mut words = text.split_ascii_whitespace();
        if let (Some(kind), Some(b64)) = (words.next(), words.next()) {
            if kind.starts_with("ssh-") {
                let blob = STANDARD
                    .decode(b64)
                    .map_err(|_| bad("the public key's base64 is not valid"))?;
                return from_blob(kind, &blob);
            }
        }
    }
    match PKey::public_key_from_der(material) {
        Ok(k) => from_pkey(k),
        Err(_) => Err(bad(
            "Key is not in valid OpenSSH public key format (ssh-rsa or ssh-ed25519)",
        )),
    }
}

fn from_pkey(k: PKey<Public>) -> Result<Imported, KeyFormatError> {
    match k.id() {
        Id::RSA => from_rsa(k.rsa().map_err(|e| bad(e.to_string()))?),
        Id::ED25519 => {
            let public = k.raw_public_key().map_err(|e| bad(e.to_string()))?;
            ed25519(&public)
        }
        _ => Err(bad("only RSA and ed25519 keys are supported")),
    }
}

fn ed25519(public: &[u8]) -> Result<Imported, KeyFormatError> {
    if public.len() != 32 {
        return Err(bad("an ed25519 public key has 32 bytes"));
    }
    let blob = ed25519_blob(public);
    Ok(Imported {
        key_type: KeyType::Ed25519,
        public_line: line("ssh-ed25519", &blob),
        fingerprint: ed25519_fingerprint(&blob).map_err(|e| bad(e.to_string()))?,
    })
}

fn from_blob(kind: &str, blob: &[u8]) -> Result<Imported, KeyFormatError> {
    let mut r = Reader(blob);
    let inner = r.string()?;
    if inner != kind.as_bytes() {
        return Err(bad("the key type does not match the key's contents"));
    }
    let key = match kind {
        "ssh-rsa" => {
            let e = BigNum::from_slice(r.string()?).map_err(|e| bad(e.to_string()))?;
            let n = BigNum::from_slice(r.string()?).map_err(|e| bad(e.to_string()))?;
            let rsa = Rsa::from_public_components(n, e).map_err(|e| bad(e.to_string()))?;
            from_rsa(rsa)?
        }
        "ssh-ed25519" => ed25519(r.string()?)?,
        _ => return Err(bad("only ssh-rsa and ssh-ed25519 keys are supported")),
    };
    if !r.0.is_empty() {
        return Err(bad("the public key has trailing data"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519 public key (the one awscli imported in the captured fixture) and
    // its fingerprint as `ssh-keygen -l -E sha256` prints it (unpadded, prefixed).
    const ED_LINE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBG66u/jXHVCy8I42ACM9u5dfJ/uycwXQ3sEJSPYyvQB root@vm\n";

    #[test]
    fn ed25519_import_and_fingerprint_match_ssh_keygen() {
        let k = import(ED_LINE.as_bytes()).unwrap();
        assert_eq!(k.key_type, KeyType::Ed25519);
        assert_eq!(
            k.public_line,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBG66u/jXHVCy8I42ACM9u5dfJ/uycwXQ3sEJSPYyvQB"
        );
        assert_eq!(k.fingerprint, ED_FP);
    }

    // `ssh-keygen -l -E sha256` of ED_LINE, with base64 padding added.
    const ED_FP: &str = include_str!("../tests/data/ed25519.fp").trim_ascii_end();

    // An RSA 2048 public key and the MD5 of its SPKI DER, computed by
    // `ssh-keygen -e -m PKCS8 | openssl pkey -pubin -outform DER | md5sum`.
    const RSA_LINE: &str = include_str!("../tests/data/rsa.pub");
    const RSA_FP: &str = include_str!("../tests/data/rsa.md5").trim_ascii_end();

    #[test]
    fn rsa_import_fingerprint_is_md5_of_spki() {
        let k = import(RSA_LINE.as_bytes()).unwrap();
        assert_eq!(k.key_type, KeyType::Rsa);
        assert_eq!(k.fingerprint, RSA_FP);
        // The stored line is the key without its comment.
        assert!(RSA_LINE.starts_with(&k.public_line));
        // The same key as a PEM SubjectPublicKeyInfo.
        let pem = include_bytes!("../tests/data/rsa.spki.pem");
        let p = import(pem).unwrap();
        assert_eq!(p.fingerprint, RSA_FP);
        assert_eq!(p.public_line, k.public_line);
    }

    #[test]
    fn garbage_is_refused() {
        for m in [
            &b""[..],
            b"hello",
            b"ssh-rsa !!!notbase64",
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBG66u/jXHVCy8I42ACM9u5dfJ/uycwXQ3sEJSPYyvQ=",
            b"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBG66u/jXHVCy8I42ACM9u5dfJ/uycwXQ3sEJSPYyvQB",
            b"ssh-dss AAAAB3NzaC1kc3M=",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(import(m).is_err(), "{}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn generated_keys_reimport_to_the_same_public_key() {
        let g = generate(KeyType::Ed25519).unwrap();
        assert!(g
            .private_pem
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let back = import(g.public_line.as_bytes()).unwrap();
        assert_eq!(back.fingerprint, g.fingerprint);

        let r = generate(KeyType::Rsa).unwrap();
        assert!(r
            .private_pem
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        // Created RSA: SHA-1 of the PKCS#8 private key (20 bytes, colon hex).
        let pkcs8 = PKey::from_rsa(Rsa::private_key_from_pem(r.private_pem.as_bytes()).unwrap())
            .unwrap()
            .private_key_to_pkcs8()
            .unwrap();
        let want = colon_hex(&hash(MessageDigest::sha1(), &pkcs8).unwrap());
        assert_eq!(r.fingerprint, want);
        assert_eq!(r.fingerprint.len(), 59);
        assert_eq!(
            import(r.public_line.as_bytes()).unwrap().key_type,
            KeyType::Rsa
        );
    }

    #[test]
    fn mpint_adds_a_zero_byte_for_high_bits() {
        let mut v = Vec::new();
        put_mpint(&mut v, &[0x00, 0x80, 0x01]);
        assert_eq!(v, [0, 0, 0, 3, 0, 0x80, 0x01]);
        let mut v = Vec::new();
        put_mpint(&mut v, &[0x01, 0x00, 0x01]);
        assert_eq!(v, [0, 0, 0, 3, 1, 0, 1]);
    }
}
