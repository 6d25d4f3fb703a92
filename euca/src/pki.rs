//! The cloud's key pair and certificates for image bundles, made once by `euca up`.
//!
//! - `<data>/cloud/cloud-pk.pem`: the cloud's RSA private key (0600). Bundles seal
//!   their AES key for it; only the services that register images read it.
//! - `<data>/credentials/cloud-cert.pem`: its self-signed certificate, which users
//!   bundle for (`EUCALYPTUS_CERT`).
//! - `<data>/credentials/<account>-pk.pem` / `<account>-cert.pem`: the admin's own
//!   key and a certificate signed by the cloud key (`EC2_PRIVATE_KEY`, `EC2_CERT`),
//!   with which `euca-bundle-image` signs manifests.
//!
//! RSA goes through OpenSSL, as in `euca-image` (see ARCHITECTURE.md, Crypto).
use anyhow::{Context, Result};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Name, X509};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Paths of the bundling credentials, for the eucarc.
pub struct BundlingCreds {
    pub cloud_cert: PathBuf,
    pub cloud_key: PathBuf,
    pub user_cert: PathBuf,
    pub user_key: PathBuf,
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn name(cn: &str) -> Result<X509Name> {
    let mut b = X509Name::builder()?;
    b.append_entry_by_text("O", "Eucalyptus")?;
    b.append_entry_by_text("CN", cn)?;
    Ok(b.build())
}

fn certificate(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<X509> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let subject_name = name(subject)?;
    b.set_subject_name(&subject_name)?;
    b.set_pubkey(key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let is_ca = issuer.is_none();
    let mut bc = BasicConstraints::new();
    bc.critical();
    if is_ca {
        bc.ca();
    }
    b.append_extension(bc.build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature().key_encipherment();
    if is_ca {
        ku.key_cert_sign().crl_sign();
    }
    b.append_extension(ku.build()?)?;
    match issuer {
        Some((cert, ikey)) => {
            b.set_issuer_name(cert.subject_name())?;
            b.sign(ikey, MessageDigest::sha256())?;
        }
        None => {
            b.set_issuer_name(&subject_name)?;
            b.sign(key, MessageDigest::sha256())?;
        }
    }
    Ok(b.build())
}

/// Creates what is missing (never replaces existing keys) and returns the paths.
pub fn ensure(data: &Path, account: &str, account_id: &str) -> Result<BundlingCreds> {
    let creds = BundlingCreds {
        cloud_cert: data.join("credentials/cloud-cert.pem"),
        cloud_key: data.join("cloud/cloud-pk.pem"),
        user_cert: data.join(format!("credentials/{account}-cert.pem")),
        user_key: data.join(format!("credentials/{account}-pk.pem")),
    };
    if !creds.cloud_key.exists() || !creds.cloud_cert.exists() {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let cert = certificate("cloud", &key, None)?;
        write_file(&creds.cloud_key, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write_file(&creds.cloud_cert, &cert.to_pem()?, 0o644)?;
    }
    if !creds.user_key.exists() || !creds.user_cert.exists() {
        let ckey = PKey::private_key_from_pem(&std::fs::read(&creds.cloud_key)?)
            .context("reading the cloud key")?;
        let ccert = X509::from_pem(&std::fs::read(&creds.cloud_cert)?)
            .context("reading the cloud certificate")?;
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let cert = certificate(
            &format!("{account}-{account_id}"),
            &key,
            Some((&ccert, &ckey)),
        )?;
        write_file(&creds.user_key, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write_file(&creds.user_cert, &cert.to_pem()?, 0o644)?;
    }
    Ok(creds)
}
