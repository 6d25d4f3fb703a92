//! Server-side encryption of object bytes: SSE-S3 (`x-amz-server-side-encryption:
//! AES256`, keys the cloud keeps), SSE-KMS (`aws:kms` with a key id; Walrus is its own
//! key service), SSE-C (keys the customer sends with every request and Walrus never
//! stores) and a bucket's default encryption (the [`BucketConfig::ENCRYPTION`]
//! document, see `api_bucket_encryption`).
//!
//! Envelope encryption: every object (every multipart upload) gets a random 256-bit
//! data key. Its bytes are encrypted with AES-256-CTR under that key; the data key is
//! stored only sealed (AES-256-GCM) in the object's metadata ([`Sse`]):
//! - SSE-S3: sealed with the cloud master key, `sse-master.key` under Walrus's data
//!   directory (32 random bytes, created 0600 and fsynced on first use, never served);
//! - SSE-KMS: sealed with the key of its KMS key id, HMAC-SHA256 of the id under the
//!   master key (so nothing but the master key is stored, and front ends sharing it
//!   agree); the id, `aws/s3` or one of `[walrus] kms_key_ids`, is kept with the seal;
//! - SSE-C: sealed with the customer's key. Opening the seal is how a later key is
//!   verified (a wrong key fails GCM's tag: 403); nothing else about the key is kept,
//!   not even its MD5 (the client sends that with every request and we echo it).
//!
//! CTR because a range read must stay cheap: the keystream at any byte offset is
//! computed directly (counter = IV + offset / 16), so `Range` and `partNumber` reads
//! decrypt only what they send, and the stored size is the plaintext size. Each blob
//! has its own IV, derived from its id (ids are random and never reused; a blob is
//! never rewritten), so the parts of an upload, which share a data key, never share a
//! keystream, and a part re-uploaded under the same number gets a new blob and IV.
//! CTR does not authenticate: integrity at rest is what it is for plain objects (the
//! blob store is trusted; the sealed data key is authenticated by GCM).
use crate::error::{S3Error, S3Result};
use crate::handler::{set_header, Req};
use crate::meta::{BucketConfig, BucketMeta, Sse, SseKind};
use crate::sse_keys::{seal, unseal, AAD_CUSTOMER, AAD_KMS, AAD_S3, KEY_LEN};
pub use crate::sse_keys::{Ctr, DataKey, SseError};
use crate::state::State;
use base64::Engine;
use euca_aws::hash::Md5;
use euca_aws::sigv4::hmac_sha256;
use http::HeaderMap;

pub const ALGORITHM: &str = "AES256";
/// `x-amz-server-side-encryption`'s value for SSE-KMS.
pub const KMS: &str = "aws:kms";
/// The KMS key id of `aws:kms` without one (S3's AWS-managed key for S3 is `aws/s3`).
pub const DEFAULT_KMS_KEY: &str = "aws/s3";
const H_SSE: &str = "x-amz-server-side-encryption";
const H_KMS_KEY: &str = "x-amz-server-side-encryption-aws-kms-key-id";
/// The SSE-C headers' (and browser POST fields') common prefix.
const H_CUSTOMER: &str = "x-amz-server-side-encryption-customer-";
const H_CUSTOMER_ALG: &str = "x-amz-server-side-encryption-customer-algorithm";
const H_CUSTOMER_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";

/// A customer's key (SSE-C) as a request sent it, for that request only.
pub struct CustomerKey {
    key: [u8; KEY_LEN],
    /// The request's `…-key-MD5` (checked against the key), echoed in answers.
    md5: String,
}

impl Drop for CustomerKey {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The SSE-C key of a request (`copy_source`: the copy source's
/// `x-amz-copy-source-server-side-encryption-customer-*` headers), checked: the
/// algorithm is AES256, the key 32 bytes, its MD5 the one sent, and the connection
/// TLS (unless `[walrus] sse_customer_keys_over_http` allows plain HTTP).
pub fn customer_key(st: &State, r: &Req, copy_source: bool) -> S3Result<Option<CustomerKey>> {
    let prefix = if copy_source {
        "x-amz-copy-source-server-side-encryption-customer-"
    } else {
        H_CUSTOMER
    };
    checked_customer_key(st, r, prefix, |n| r.header(&format!("{prefix}{n}")))
}

/// The SSE-C key a browser POST form names in its
/// `x-amz-server-side-encryption-customer-*` fields, checked as the headers are.
pub fn form_customer_key<'a>(
    st: &State,
    r: &Req,
    field: impl Fn(&str) -> Option<&'a str>,
) -> S3Result<Option<CustomerKey>> {
    checked_customer_key(st, r, H_CUSTOMER, |n| field(&format!("{H_CUSTOMER}{n}")))
}

/// An SSE-C key from `get` (`algorithm`, `key`, `key-md5` after `prefix`), checked.
fn checked_customer_key<'a>(
    st: &State,
    r: &Req,
    prefix: &str,
    get: impl Fn(&str) -> Option<&'a str>,
) -> S3Result<Option<CustomerKey>> {
    let (alg, key, md5) = (get("algorithm"), get("key"), get("key-md5"));
    if alg.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    let tls = r.peer.as_ref().is_some_and(|p| p.tls);
    if !tls && !st.cfg.sse_customer_keys_over_http {
        return Err(S3Error::invalid_request(
            "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
        ));
    }
    let arg = |msg: &str, name: &str| {
        S3Error::invalid_argument(msg.to_string()).with("ArgumentName", format!("{prefix}{name}"))
    };
    match alg {
        None => return Err(arg("Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.", "algorithm")),
        Some(ALGORITHM) => {}
        Some(_) => {
            return Err(S3Error::new(
                "InvalidEncryptionAlgorithmError",
                400,
                "The Encryption request you specified is not valid. Supported value: AES256.",
            ))
        }
    }
    let key = key.ok_or_else(|| arg("Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.", "key"))?;
    let key: [u8; KEY_LEN] = b64()
        .decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| {
            arg(
                "The secret key was invalid for the specified algorithm.",
                "key",
            )
        })?;
    let md5 = md5.ok_or_else(|| arg("Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.", "key-MD5"))?;
    let computed: [u8; 16] = Md5::digest(key);
    if b64().decode(md5).ok().as_deref() != Some(&computed[..]) {
        return Err(arg(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
            "key-MD5",
        ));
    }
    Ok(Some(CustomerKey {
        key,
        md5: md5.to_string(),
    }))
}

/// An object's encryption as one request uses it: the metadata to store, the open
/// data key and the customer key the request brought.
pub struct Encryption {
    pub sse: Sse,
    pub key: DataKey,
    pub customer: Option<CustomerKey>,
}

impl Encryption {
    /// A new object's (or upload's) encryption: a fresh data key, sealed.
    async fn new(st: &State, with: Requested) -> S3Result<Self> {
        let key = DataKey::random();
        let (kind, sealed_key, customer) = match with {
            Requested::Customer(c) => (
                SseKind::Customer,
                seal(&c.key, AAD_CUSTOMER, &key)?,
                Some(c),
            ),
            Requested::S3 => (
                SseKind::S3,
                seal(st.keyring.master().await?.bytes(), AAD_S3, &key)?,
                None,
            ),
            Requested::Kms(id) => {
                let kek = kms_kek(st.keyring.master().await?.bytes(), &id);
                // The id fits one length byte: kms_key_id checked it.
                let mut sealed = vec![id.len() as u8];
                sealed.extend_from_slice(id.as_bytes());
                sealed.extend(seal(&kek, AAD_KMS, &key)?);
                (SseKind::Kms, sealed, None)
            }
        };
        Ok(Self {
            sse: Sse { kind, sealed_key },
            key,
            customer,
        })
    }

    /// The ETag of bytes whose MD5 is `md5`. SSE-S3 keeps S3's MD5 ETag; for SSE-C,
    /// as in S3, it is not the plaintext's MD5 (which would let anyone who can list
    /// the bucket confirm a guess of the content): a MAC of it under the data key.
    /// SSE-KMS, as in S3, is not the MD5 either.
    pub fn etag(&self, md5: &[u8; 16]) -> String {
        if self.sse.kind == SseKind::S3 {
            return hex::encode(md5);
        }
        let mac = hmac_sha256(
            self.key.bytes(),
            &[&b"euca-walrus-sse-c-etag"[..], md5].concat(),
        );
        hex::encode(&mac[..16])
    }

    /// The response headers of a request that wrote or read this object.
    pub fn set_headers(&self, h: &mut HeaderMap) -> S3Result<()> {
        set_headers(h, Some(&self.sse), self.customer.as_ref())
    }
}

/// `x-amz-server-side-encryption` for SSE-S3; that and the key id for SSE-KMS; the
/// SSE-C algorithm and the key MD5 the request sent for SSE-C.
pub fn set_headers(
    h: &mut HeaderMap,
    sse: Option<&Sse>,
    customer: Option<&CustomerKey>,
) -> S3Result<()> {
    match sse.map(|s| s.kind) {
        Some(SseKind::S3) => set_header(h, H_SSE, ALGORITHM),
        Some(SseKind::Kms) => {
            set_header(h, H_SSE, KMS)?;
            match sse.and_then(kms_parts) {
                Some((id, _)) => set_header(h, H_KMS_KEY, id),
                None => Ok(()),
            }
        }
        Some(SseKind::Customer) => {
            set_header(h, H_CUSTOMER_ALG, ALGORITHM)?;
            if let Some(c) = customer {
                set_header(h, H_CUSTOMER_MD5, &c.md5)?;
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// The encryption a new object (PUT, copy destination, multipart upload) gets: what
/// the request asks for, else the bucket's default, else none.
pub async fn for_write(st: &State, r: &Req, b: &BucketMeta) -> S3Result<Option<Encryption>> {
    let customer = customer_key(st, r, false)?;
    for_post(st, r.header(H_SSE), r.header(H_KMS_KEY), customer, b).await
}

/// The encryption of a browser POST upload: its form's SSE-C key
/// ([`form_customer_key`]) or `x-amz-server-side-encryption` field (and KMS key id),
/// else the bucket's default. [`for_write`] is this with the request's headers.
pub async fn for_post(
    st: &State,
    field: Option<&str>,
    kms_key: Option<&str>,
    customer: Option<CustomerKey>,
    b: &BucketMeta,
) -> S3Result<Option<Encryption>> {
    match requested(st, field, kms_key, customer)?.or_else(|| bucket_default(b)) {
        Some(with) => Ok(Some(Encryption::new(st, with).await?)),
        None => Ok(None),
    }
}

fn incompatible() -> S3Error {
    S3Error::invalid_argument(
        "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
    )
    .with("ArgumentName", H_SSE)
}

/// What an `x-amz-server-side-encryption` value (and the KMS key id sent with it)
/// asks for: AES256, or `aws:kms` with a key id this cloud knows.
fn server_side(st: &State, v: &str, kms_key: Option<&str>) -> S3Result<Requested> {
    match v {
        ALGORITHM if kms_key.is_none() => Ok(Requested::S3),
        ALGORITHM => Err(kms_key_without_kms()),
        KMS => Ok(Requested::Kms(kms_key_id(st, kms_key)?)),
        v => Err(
            S3Error::invalid_argument("The encryption method specified is not supported")
                .with("ArgumentName", H_SSE)
                .with("ArgumentValue", v.to_string()),
        ),
    }
}

fn kms_key_without_kms() -> S3Error {
    S3Error::invalid_argument(
        "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
    )
    .with("ArgumentName", H_SSE)
}

/// The KMS key id a request or a bucket default names (`None`: the default key), if
/// this cloud has it: [`DEFAULT_KMS_KEY`] or one of `[walrus] kms_key_ids`.
pub fn kms_key_id(st: &State, id: Option<&str>) -> S3Result<String> {
    let id = id.unwrap_or(DEFAULT_KMS_KEY);
    // A record keeps the id behind one length byte: a configured id longer than 255
    // bytes cannot be used, and is refused like an unknown one.
    if (id == DEFAULT_KMS_KEY || st.cfg.kms_key_ids.iter().any(|k| k == id))
        && id.len() <= usize::from(u8::MAX)
    {
        return Ok(id.to_string());
    }
    Err(S3Error::new(
        "KMS.NotFoundException",
        400,
        format!("Invalid keyId {id}"),
    ))
}

/// The key that seals data keys for KMS key id `id`: HMAC-SHA256 of the id under the
/// cloud master key (so it is never stored, and the master key's backup covers it).
fn kms_kek(master: &[u8; KEY_LEN], id: &str) -> [u8; KEY_LEN] {
    hmac_sha256(
        master,
        &[&b"euca-walrus-kms-key-v1\0"[..], id.as_bytes()].concat(),
    )
}

/// An SSE-KMS record's key id and seal.
fn kms_parts(sse: &Sse) -> Option<(&str, &[u8])> {
    let (&n, rest) = sse.sealed_key.split_first()?;
    let n = usize::from(n);
    let id = std::str::from_utf8(rest.get(..n)?).ok()?;
    Some((id, rest.get(n..)?))
}

enum Requested {
    S3,
    Customer(CustomerKey),
    Kms(String),
}

/// The encryption a write asks for with `x-amz-server-side-encryption` (`sse`), the KMS
/// key id and an SSE-C key: as headers, or as a browser POST's fields.
fn requested(
    st: &State,
    sse: Option<&str>,
    kms_key: Option<&str>,
    customer: Option<CustomerKey>,
) -> S3Result<Option<Requested>> {
    match (sse, customer) {
        (None, None) if kms_key.is_some() => Err(kms_key_without_kms()),
        (None, None) => Ok(None),
        (None, Some(_)) if kms_key.is_some() => Err(incompatible()),
        (None, Some(c)) => Ok(Some(Requested::Customer(c))),
        (Some(_), Some(_)) => Err(incompatible()),
        (Some(v), None) => server_side(st, v, kms_key).map(Some),
    }
}

/// Whether the request names an encryption of its own (a copy onto itself that only
/// changes the encryption is allowed).
pub fn explicitly_requested(r: &Req) -> bool {
    r.headers.contains_key(H_SSE) || r.headers.contains_key(H_CUSTOMER_ALG)
}

/// The bucket's default encryption, if it has one (its document was checked when put,
/// KMS key id included).
fn bucket_default(b: &BucketMeta) -> Option<Requested> {
    let doc = crate::xmlin::parse(b.config(BucketConfig::ENCRYPTION)?.as_bytes()).ok()?;
    let d = doc
        .child("Rule")?
        .child("ApplyServerSideEncryptionByDefault")?;
    match d.token_of("SSEAlgorithm")? {
        ALGORITHM => Some(Requested::S3),
        KMS => Some(Requested::Kms(
            d.text_of("KMSMasterKeyID")
                .unwrap_or(DEFAULT_KMS_KEY)
                .to_string(),
        )),
        _ => None,
    }
}

/// An existing object's (or upload's) encryption, opened for a request: `None` for
/// a plain object. An SSE-C object needs the right key (`copy_source`: in the copy
/// source headers): none is 400 InvalidRequest, a wrong one 403 AccessDenied. A key
/// sent for an object that is not SSE-C is 400, as in S3.
pub async fn for_read(
    st: &State,
    r: &Req,
    sse: Option<&Sse>,
    copy_source: bool,
) -> S3Result<Option<Encryption>> {
    let customer = customer_key(st, r, copy_source)?;
    let Some(sse) = sse else {
        return match customer {
            None => Ok(None),
            Some(_) => Err(not_applicable()),
        };
    };
    let key = match (sse.kind, &customer) {
        (SseKind::S3, None) => unseal(st.keyring.master().await?.bytes(), AAD_S3, &sse.sealed_key)
            .ok_or(SseError::Unseal)?,
        (SseKind::S3, Some(_)) => return Err(not_applicable()),
        (SseKind::Customer, None) => {
            return Err(S3Error::invalid_request(
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
            ))
        }
        (SseKind::Customer, Some(c)) => unseal(&c.key, AAD_CUSTOMER, &sse.sealed_key)
            .ok_or_else(S3Error::access_denied)?,
        (SseKind::Kms, None) => {
            let (id, sealed) = kms_parts(sse).ok_or(SseError::Unseal)?;
            let kek = kms_kek(st.keyring.master().await?.bytes(), id);
            unseal(&kek, AAD_KMS, sealed).ok_or(SseError::Unseal)?
        }
        (SseKind::Kms, Some(_)) => return Err(not_applicable()),
    };
    Ok(Some(Encryption {
        sse: sse.clone(),
        key,
        customer,
    }))
}

fn not_applicable() -> S3Error {
    S3Error::invalid_request("The encryption parameters are not applicable to this object.")
}
