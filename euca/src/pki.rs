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
//! - `<data>/cloud/nbd-server-key.pem` / `nbd-server-cert.pem`: the storage
//!   controller's NBD TLS key and certificate, issued by the cloud key, with the
//!   NBD host's addresses as subjectAltName (see [`ensure_nbd_tls`]).
//! - `<data>/credentials/nbd-tls/ca-cert.pem`: a copy of `cloud-cert.pem` laid out
//!   the way NBD clients look for their CA: qemu
//!   `--object tls-creds-x509,id=tls0,dir=<data>/credentials/nbd-tls,endpoint=client`
//!   and libnbd `nbds://host:port/export?tls-certificates=<data>/credentials/nbd-tls`.
//!
//! RSA goes through OpenSSL, as in `euca-image` (see ARCHITECTURE.md, Crypto).
use anyhow::{Context, Result};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Name, X509};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Paths of the bundling credentials, for the eucarc.
pub struct BundlingCreds {
    pub cloud_cert: PathBuf,
    pub cloud_key: PathBuf,
    pub user_cert: PathBuf,
    pub user_key: PathBuf,
}

pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    // A fresh file, so `mode` holds: a leftover temp file could have kept looser
    // permissions while secrets were written into it.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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
    certificate_with_names(subject, key, issuer, &[])
}

/// Like `certificate`; a non-empty `alt_names` (IP addresses or DNS names)
/// makes it a TLS server certificate: subjectAltName plus serverAuth usage.
fn certificate_with_names(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    alt_names: &[String],
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
    if !alt_names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in alt_names {
            if n.parse::<IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let san = san.build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
        b.append_extension(san)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    }
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

/// Makes the cloud key and its self-signed certificate if either is missing;
/// returns their paths (certificate, key).
fn ensure_cloud_ca(data: &Path) -> Result<(PathBuf, PathBuf)> {
    let cloud_cert = data.join("credentials/cloud-cert.pem");
    let cloud_key = data.join("cloud/cloud-pk.pem");
    if !cloud_key.exists() || !cloud_cert.exists() {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let cert = certificate("cloud", &key, None)?;
        write_file(&cloud_key, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write_file(&cloud_cert, &cert.to_pem()?, 0o644)?;
    }
    Ok((cloud_cert, cloud_key))
}

fn load_cloud_ca(cert: &Path, key: &Path) -> Result<(X509, PKey<Private>)> {
    let ckey = PKey::private_key_from_pem(&std::fs::read(key)?).context("reading the cloud key")?;
    let ccert = X509::from_pem(&std::fs::read(cert)?).context("reading the cloud certificate")?;
    Ok((ccert, ckey))
}

/// Creates what is missing (never replaces existing keys) and returns the paths.
pub fn ensure(data: &Path, account: &str, account_id: &str) -> Result<BundlingCreds> {
    let (cloud_cert, cloud_key) = ensure_cloud_ca(data)?;
    let creds = BundlingCreds {
        cloud_cert,
        cloud_key,
        user_cert: data.join(format!("credentials/{account}-cert.pem")),
        user_key: data.join(format!("credentials/{account}-pk.pem")),
    };
    if !creds.user_key.exists() || !creds.user_cert.exists() {
        let (ccert, ckey) = load_cloud_ca(&creds.cloud_cert, &creds.cloud_key)?;
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

/// The storage controller's NBD TLS credentials.
pub struct NbdTlsCreds {
    /// PEM certificate issued by the cloud CA (`<data>/cloud/nbd-server-cert.pem`).
    pub cert: PathBuf,
    /// Its PEM private key, 0600 (`<data>/cloud/nbd-server-key.pem`).
    pub key: PathBuf,
    /// Directory holding `ca-cert.pem` (the cloud CA certificate) for NBD clients:
    /// `<data>/credentials/nbd-tls`.
    pub client_dir: PathBuf,
}

/// Ensures the SC's NBD server key and certificate, issued by the cloud CA
/// (made first if missing), with `hosts` as subjectAltName entries (IP
/// addresses become IP entries, anything else DNS entries), and copies the CA
/// certificate to `<data>/credentials/nbd-tls/ca-cert.pem` for qemu
/// (`tls-creds-x509,dir=…`) and libnbd (`tls-certificates=…`). An existing
/// certificate is kept while it was issued by the current cloud CA, names every
/// one of `hosts` and has more than 30 days left; otherwise key and certificate
/// are made anew.
pub fn ensure_nbd_tls(data: &Path, hosts: &[String]) -> Result<NbdTlsCreds> {
    let (cloud_cert, cloud_key) = ensure_cloud_ca(data)?;
    let creds = NbdTlsCreds {
        cert: data.join("cloud/nbd-server-cert.pem"),
        key: data.join("cloud/nbd-server-key.pem"),
        client_dir: data.join("credentials/nbd-tls"),
    };
    let (ccert, ckey) = load_cloud_ca(&cloud_cert, &cloud_key)?;
    let current = creds.key.exists()
        && std::fs::read(&creds.cert)
            .ok()
            .and_then(|pem| X509::from_pem(&pem).ok())
            .is_some_and(|cert| server_cert_current(&cert, &ccert, hosts));
    if !current {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let cert =
            certificate_with_names("storage-controller", &key, Some((&ccert, &ckey)), hosts)?;
        write_file(&creds.key, &key.private_key_to_pem_pkcs8()?, 0o600)?;
        write_file(&creds.cert, &cert.to_pem()?, 0o644)?;
    }
    let ca_copy = creds.client_dir.join("ca-cert.pem");
    let ca_pem = ccert.to_pem()?;
    if std::fs::read(&ca_copy).ok().as_deref() != Some(&ca_pem[..]) {
        write_file(&ca_copy, &ca_pem, 0o644)?;
    }
    Ok(creds)
}

/// Whether `cert` was signed by `ca`, covers every host and is valid for a while.
fn server_cert_current(cert: &X509, ca: &X509, hosts: &[String]) -> bool {
    let signed = ca
        .public_key()
        .and_then(|k| cert.verify(&k))
        .unwrap_or(false);
    let fresh = Asn1Time::days_from_now(30).is_ok_and(|t| cert.not_after() > t);
    let names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| {
                    n.dnsname().map(str::to_owned).or_else(|| {
                        n.ipaddress().and_then(|b| match b.len() {
                            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
                            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
                            _ => None,
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let covered = hosts.iter().all(|h| {
        let canon = h
            .parse::<IpAddr>()
            .map_or_else(|_| h.clone(), |ip| ip.to_string());
        names.contains(&canon)
    });
    signed && fresh && covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_tls_credentials() {
        let dir = std::env::temp_dir().join(format!("euca-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts: Vec<String> = ["127.0.0.1", "::1", "localhost"].map(String::from).to_vec();
        let c = ensure_nbd_tls(&dir, &hosts).unwrap();
        let cert = X509::from_pem(&std::fs::read(&c.cert).unwrap()).unwrap();
        let ca = X509::from_pem(&std::fs::read(c.client_dir.join("ca-cert.pem")).unwrap()).unwrap();
        assert!(server_cert_current(&cert, &ca, &hosts));
        // Kept as long as it fits; re-issued for a new host.
        let again = ensure_nbd_tls(&dir, &hosts).unwrap();
        assert_eq!(std::fs::read(&again.cert).unwrap(), cert.to_pem().unwrap());
        let more = [hosts.clone(), vec!["10.0.0.7".into()]].concat();
        assert!(!server_cert_current(&cert, &ca, &more));
        let c2 = ensure_nbd_tls(&dir, &more).unwrap();
        let cert2 = X509::from_pem(&std::fs::read(&c2.cert).unwrap()).unwrap();
        assert!(server_cert_current(&cert2, &ca, &more));
        let key = PKey::private_key_from_pem(&std::fs::read(&c2.key).unwrap()).unwrap();
        assert!(cert2.public_key().unwrap().public_eq(&key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
