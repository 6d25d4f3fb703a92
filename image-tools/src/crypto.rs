//! RSA pieces of the bundle format: the manifest signature and the wrapped
//! AES key/IV.
//!
//! All RSA goes through the `openssl` crate (system OpenSSL), not the
//! pure-Rust `rsa` crate: the cloud decrypts attacker-supplied PKCS#1 v1.5
//! blocks (`ec2_encrypted_key`/`_iv`) with its own private key whenever an image
//! is registered, and the `rsa` crate's decryption is not constant-time
//! (RUSTSEC-2023-0071, the "Marvin" timing attack), which would let an attacker
//! who can submit manifests and time the answers recover plaintexts or forge
//! signatures with the cloud key. OpenSSL checks PKCS#1 v1.5 padding in
//! constant time (and from 3.2 on uses implicit rejection, returning a
//! pseudo-random plaintext instead of an error); we treat any result that is
//! not a plausible hex key as "wrong key" either way.

use std::path::Path;

use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;

use crate::error::ImageError;
use crate::manifest::{EncryptedValue, Manifest};

/// An RSA private key: the user's (matching `user_encrypted_*`) or the
/// cloud's (matching `ec2_encrypted_*`).
#[derive(Clone)]
pub struct PrivateKey {
    pkey: PKey<Private>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(RSA-{})", self.pkey.bits())
    }
}

impl PrivateKey {
    /// From PEM (`BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, ImageError> {
        let pkey = PKey::private_key_from_pem(pem)
            .map_err(|e| ImageError::InvalidKey(format!("cannot parse PEM private key: {e}")))?;
        if pkey.id() != Id::RSA {
            return Err(ImageError::InvalidKey("private key is not RSA".into()));
        }
        Ok(PrivateKey { pkey })
    }

    /// Reads a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<PrivateKey, ImageError> {
        PrivateKey::from_pem(&read_small(path)?)
    }

    /// RSAES-PKCS1-v1_5 decryption.
    fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut d = Decrypter::new(&self.pkey).ok()?;
        d.set_rsa_padding(Padding::PKCS1).ok()?;
        let mut out = vec![0u8; d.decrypt_len(ciphertext).ok()?];
        let n = d.decrypt(ciphertext, &mut out).ok()?;
        out.truncate(n);
        Some(out)
    }

    /// RSASSA-PKCS1-v1_5 signature with SHA-1 (what euca2ools' `openssl
    /// pkeyutl -sign -pkeyopt digest:sha1` over a SHA-1 hash produces).
    pub(crate) fn sign_sha1(&self, data: &[u8]) -> Result<Vec<u8>, ImageError> {
        let crypto = |e: openssl::error::ErrorStack| ImageError::Crypto(e.to_string());
        let mut s = Signer::new(MessageDigest::sha1(), &self.pkey).map_err(crypto)?;
        s.set_rsa_padding(Padding::PKCS1).map_err(crypto)?;
        s.sign_oneshot_to_vec(data).map_err(crypto)
    }
}

/// An RSA X.509 certificate: the signer's (to check the manifest signature)
/// or, when bundling, the user's or the cloud's (to wrap the AES key and IV
/// for; see [`crate::Certificate`]).
#[derive(Clone)]
pub struct SignerCert {
    key: PKey<Public>,
}

impl std::fmt::Debug for SignerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerCert(RSA-{})", self.key.bits())
    }
}

impl SignerCert {
    /// From a PEM certificate (`BEGIN CERTIFICATE`).
    pub fn from_pem(pem: &[u8]) -> Result<SignerCert, ImageError> {
        let cert = X509::from_pem(pem)
            .map_err(|e| ImageError::InvalidKey(format!("cannot parse PEM certificate: {e}")))?;
        let key = cert
            .public_key()
            .map_err(|e| ImageError::InvalidKey(format!("certificate public key: {e}")))?;
        if key.id() != Id::RSA {
            return Err(ImageError::InvalidKey("certificate key is not RSA".into()));
        }
        Ok(SignerCert { key })
    }

    /// Reads a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<SignerCert, ImageError> {
        SignerCert::from_pem(&read_small(path)?)
    }

    /// RSAES-PKCS1-v1_5 encryption (random padding) with the certificate's
    /// public key, as `openssl rsautl -encrypt -pkcs -certin` in euca2ools.
    pub(crate) fn encrypt_pkcs1(&self, plain: &[u8]) -> Result<Vec<u8>, ImageError> {
        let crypto = |e: openssl::error::ErrorStack| ImageError::Crypto(e.to_string());
        let mut e = Encrypter::new(&self.key).map_err(crypto)?;
        e.set_rsa_padding(Padding::PKCS1).map_err(crypto)?;
        let mut out = vec![0u8; e.encrypt_len(plain).map_err(crypto)?];
        let n = e.encrypt(plain, &mut out).map_err(crypto)?;
        out.truncate(n);
        Ok(out)
    }

    /// Checks an RSA-SHA1 (PKCS#1 v1.5) signature over `data`.
    pub(crate) fn verify_sha1(&self, data: &[u8], sig: &[u8]) -> bool {
        let Ok(mut v) = Verifier::new(MessageDigest::sha1(), &self.key) else {
            return false;
        };
        if v.set_rsa_padding(Padding::PKCS1).is_err() {
            return false;
        }
        v.verify_oneshot(sig, data).unwrap_or(false)
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let read_err = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(1024 * 1024)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    Ok(buf)
}

/// Which wrapped copy of the AES key the private key opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `user_encrypted_key` / `user_encrypted_iv` (the user's key pair).
    User,
    /// `ec2_encrypted_key` / `ec2_encrypted_iv` (the cloud's key pair).
    Cloud,
}

/// The bundle's AES-128-CBC key and IV.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleKey {
    pub key: [u8; 16],
    pub iv: [u8; 16],
    pub source: KeySource,
}

impl std::fmt::Debug for BundleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "BundleKey {{ source: {:?}, .. }}", self.source)
    }
}

impl Manifest {
    /// Verifies `<signature>`: RSASSA-PKCS1-v1_5 with SHA-1 over
    /// [`Manifest::signed_bytes`], with the signer certificate's public key.
    pub fn verify_signature(&self, signer: &SignerCert) -> Result<(), ImageError> {
        let sig_text = self.signature.trim();
        if sig_text == "UNSIGNED" {
            return Err(ImageError::Unsigned);
        }
        let sig = hex::decode(sig_text).map_err(|_| ImageError::BadSignature)?;
        let mut v = Verifier::new(MessageDigest::sha1(), &signer.key)
            .map_err(|e| ImageError::Crypto(e.to_string()))?;
        v.set_rsa_padding(Padding::PKCS1)
            .map_err(|e| ImageError::Crypto(e.to_string()))?;
        // A malformed signature (wrong length, …) is an OpenSSL error: treat
        // it like any other signature that does not verify.
        match v.verify_oneshot(&sig, self.signed_bytes()) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(ImageError::BadSignature),
        }
    }

    /// Unwraps the AES key and IV with `key`: tries the user's copy
    /// (`user_encrypted_*`) first, then the cloud's (`ec2_encrypted_*`), as
    /// euca2ools 3.x does, accepting a copy only when both key and IV decrypt
    /// to hex strings.
    ///
    /// The result says whether an RSA block was well formed; see
    /// [`ImageError::WrongKey`] for why a service must not pass that
    /// distinction on to whoever submitted the manifest.
    pub fn decrypt_bundle_key(&self, key: &PrivateKey) -> Result<BundleKey, ImageError> {
        let img = &self.image;
        let candidates = [
            (
                KeySource::User,
                &img.user_encrypted_key,
                &img.user_encrypted_iv,
            ),
            (
                KeySource::Cloud,
                &img.ec2_encrypted_key,
                &img.ec2_encrypted_iv,
            ),
        ];
        for (source, k, iv) in candidates {
            let (Some(k), Some(iv)) = (k, iv) else {
                continue;
            };
            if let (Some(k), Some(iv)) = (unwrap_hex16(key, k), unwrap_hex16(key, iv)) {
                return Ok(BundleKey { key: k, iv, source });
            }
        }
        Err(ImageError::WrongKey)
    }
}

/// RSA-decrypts one wrapped value; the plaintext must be the ASCII hex of a
/// 128-bit value. euca2ools 3.x writes exactly 32 hex digits; 1.x could write
/// fewer (leading zero nibbles dropped), so 16..=32 digits are accepted and
/// left-padded with zeros. Requiring at least 16 digits makes it negligible
/// that a wrong key's pseudo-random output (OpenSSL ≥ 3.2 implicit rejection)
/// passes as a key.
fn unwrap_hex16(key: &PrivateKey, v: &EncryptedValue) -> Option<[u8; 16]> {
    let plain = key.decrypt(&v.ciphertext)?;
    if !(16..=32).contains(&plain.len()) || !plain.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut padded = [b'0'; 32];
    padded[32 - plain.len()..].copy_from_slice(&plain);
    let mut out = [0u8; 16];
    hex::decode_to_slice(padded, &mut out).ok()?;
    Some(out)
}
