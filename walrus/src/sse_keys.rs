//! The keys and ciphers of server-side encryption (see [`crate::sse`]): the cloud
//! master key ([`Keyring`], `sse-master.key` under the data directory), data keys
//! sealed with AES-256-GCM, and AES-256-CTR over a blob at any offset. Nothing here
//! knows about requests, so [`crate::state::State`] can hold the [`Keyring`].
use crate::error::S3Error;
use bytes::Bytes;
use object_store::ObjectStore;
use openssl::cipher::Cipher as EvpCipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The master key's file name under Walrus's data directory.
pub const MASTER_KEY_FILE: &str = "sse-master.key";
/// Additional data of the GCM seals, so a seal made for one use opens for no other.
pub const AAD_S3: &[u8] = b"euca-walrus-sse-s3-data-key-v1";
pub const AAD_CUSTOMER: &[u8] = b"euca-walrus-sse-c-data-key-v1";
pub const AAD_KMS: &[u8] = b"euca-walrus-sse-kms-data-key-v1";

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("SSE master key {path}: {err}")]
    MasterKey { path: PathBuf, err: std::io::Error },
    #[error("SSE master key in the blob store: {0}")]
    MasterKeyStore(String),
    #[error("SSE master key {0} is not {KEY_LEN} bytes")]
    MasterKeyLength(PathBuf),
    #[error("SSE: the stored data key does not open with the master key")]
    Unseal,
    #[error("SSE cipher: {0}")]
    Cipher(#[from] openssl::error::ErrorStack),
}

impl From<SseError> for S3Error {
    fn from(e: SseError) -> Self {
        S3Error::internal(e)
    }
}

/// A 256-bit key, in memory only.
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A new random key.
    pub fn random() -> Self {
        let mut k = DataKey([0; KEY_LEN]);
        rand::rng().fill_bytes(&mut k.0);
        k
    }
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// The cloud master key, loaded (or created) on first use.
pub struct Keyring {
    home: KeyHome,
    master: tokio::sync::OnceCell<DataKey>,
}

/// Where the master key is kept: beside the blobs, so every front end that shares
/// them shares it.
enum KeyHome {
    File(PathBuf),
    /// The object `sse-master.key` at the root of a remote blob store.
    Store(Arc<dyn ObjectStore>),
}

impl Keyring {
    /// The keyring of a Walrus whose blobs are under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            home: KeyHome::File(dir.join(MASTER_KEY_FILE)),
            master: tokio::sync::OnceCell::new(),
        }
    }

    /// The keyring of a Walrus whose blobs are in a remote store.
    pub fn in_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            home: KeyHome::Store(store),
            master: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn master(&self) -> Result<&DataKey, SseError> {
        self.master
            .get_or_try_init(|| async { self.load_or_install(DataKey::random()).await })
            .await
    }

    /// The master key there is, or else `new`, stored first.
    async fn load_or_install(&self, new: DataKey) -> Result<DataKey, SseError> {
        match &self.home {
            KeyHome::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || load_or_create_master(&path, new))
                    .await
                    .map_err(|e| SseError::MasterKeyStore(e.to_string()))?
            }
            KeyHome::Store(store) => load_or_create_master_in(store.as_ref(), new).await,
        }
    }

    /// Makes `key` the master key (`euca migrate` carrying a cloud's key over): stored
    /// if there is none; refused if there is another.
    pub async fn adopt(&self, key: &[u8; KEY_LEN]) -> Result<(), SseError> {
        let there = self.load_or_install(DataKey(*key)).await?;
        if &there.0 != key {
            return Err(SseError::MasterKeyStore(
                "the target already has a different SSE master key".into(),
            ));
        }
        Ok(())
    }
}

/// The master key in `dir` (a data directory or blob directory), if there is one.
pub fn read_master_file(dir: &Path) -> Result<Option<[u8; KEY_LEN]>, SseError> {
    let path = dir.join(MASTER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            b.try_into().map_err(|_| SseError::MasterKeyLength(path))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SseError::MasterKey { path, err }),
    }
}

/// As [`load_or_create_master`], in a remote store: a new key is written only if
/// there is none (a conditional PUT), so racing front ends end up with the winner's.
async fn load_or_create_master_in(
    store: &dyn ObjectStore,
    key: DataKey,
) -> Result<DataKey, SseError> {
    use object_store::{ObjectStoreExt, PutMode, PutOptions};
    let path = object_store::path::Path::from(MASTER_KEY_FILE);
    let fail = |e: object_store::Error| SseError::MasterKeyStore(e.to_string());
    let read = || async {
        let b = store.get(&path).await?.bytes().await?;
        Ok::<_, object_store::Error>(b)
    };
    let parse = |b: bytes::Bytes| -> Result<DataKey, SseError> {
        let k: [u8; KEY_LEN] = b[..]
            .try_into()
            .map_err(|_| SseError::MasterKeyLength(PathBuf::from(MASTER_KEY_FILE)))?;
        Ok(DataKey(k))
    };
    match read().await {
        Ok(b) => return parse(b),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(fail(e)),
    }
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .put_opts(&path, bytes::Bytes::copy_from_slice(&key.0).into(), opts)
        .await
    {
        Ok(_) => {
            tracing::warn!("SSE-S3 master key created in the blob store ({MASTER_KEY_FILE}); back it up with the data");
        }
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(fail(e)),
    }
    // Whoever wrote first made the key; read what is there.
    parse(read().await.map_err(fail)?)
}

/// Reads the master key, storing `key` first if there is none: written to a private
/// temporary file (0600 from its creation), fsynced, then linked into place (so a
/// racing creator's key wins whole, never half) and the directory fsynced.
fn load_or_create_master(path: &Path, key: DataKey) -> Result<DataKey, SseError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |err| SseError::MasterKey {
        path: path.to_path_buf(),
        err,
    };
    let read = |p: &Path| -> Result<DataKey, SseError> {
        let b = std::fs::read(p).map_err(err)?;
        let k: [u8; KEY_LEN] = b
            .try_into()
            .map_err(|_| SseError::MasterKeyLength(p.to_path_buf()))?;
        Ok(DataKey(k))
    };
    match read(path) {
        Err(SseError::MasterKey { err: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!("{MASTER_KEY_FILE}.{}.new", std::process::id()));
    // One left by a crash of an earlier process that had the same pid.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key.0)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(err)?;
    // Loud: a key made anew where one was lost leaves every older SSE-S3 object
    // unreadable, and the file must be backed up with the data.
    tracing::warn!(path = %path.display(), "SSE-S3 master key created; back it up with the data directory");
    // Whoever linked first made the key; read what is there.
    read(path)
}

pub fn seal(kek: &[u8; KEY_LEN], aad: &[u8], key: &DataKey) -> Result<Vec<u8>, SseError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        kek,
        Some(&nonce),
        aad,
        &key.0,
        &mut tag,
    )?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The data key, if `kek` is the key it was sealed with.
pub fn unseal(kek: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Option<DataKey> {
    if sealed.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(KEY_LEN);
    let pt = decrypt_aead(Cipher::aes_256_gcm(), kek, Some(nonce), aad, ct, tag).ok()?;
    let k: [u8; KEY_LEN] = pt.try_into().ok()?;
    Some(DataKey(k))
}

/// AES-256-CTR over one blob, positioned at a byte offset: encryption and decryption
/// are the same operation.
pub struct Ctr(CipherCtx);

impl Ctr {
    pub fn new(key: &DataKey, blob_id: &str, offset: u64) -> Result<Self, SseError> {
        let iv = blob_iv(blob_id).wrapping_add(u128::from(offset / 16));
        let mut c = CipherCtx::new()?;
        c.encrypt_init(
            Some(EvpCipher::aes_256_ctr()),
            Some(&key.0),
            Some(&iv.to_be_bytes()),
        )?;
        let skip = (offset % 16) as usize;
        if skip > 0 {
            // Into the block the offset falls in.
            let mut out = [0u8; 16];
            c.cipher_update(&[0u8; 16][..skip], Some(&mut out))?;
        }
        Ok(Self(c))
    }

    /// Encrypts (or decrypts) `data`, in place when nothing else holds its buffer
    /// (a freshly read chunk), else in a copy.
    pub fn apply(&mut self, data: Bytes) -> Result<Bytes, SseError> {
        let mut v = Vec::from(data);
        let len = v.len();
        // CTR is a stream cipher: the output is exactly as long as the input.
        self.0.cipher_update_inplace(&mut v, len)?;
        Ok(Bytes::from(v))
    }

    /// The blob transform that applies it ([`crate::blob::Transform`]).
    pub fn into_transform(mut self) -> crate::blob::Transform {
        Box::new(move |b| self.apply(b).map_err(std::io::Error::other))
    }

    /// The transform for blob `blob_id` from `offset` under `key`, if there is a key.
    pub fn transform(
        key: Option<&DataKey>,
        blob_id: &str,
        offset: u64,
    ) -> Result<Option<crate::blob::Transform>, SseError> {
        key.map(|k| Ctr::new(k, blob_id, offset).map(Ctr::into_transform))
            .transpose()
    }
}

/// A new blob, encrypted (as it is written, on the writer's thread) if there is a key.
pub async fn create_blob(
    blobs: &crate::blob::BlobStore,
    key: Option<&DataKey>,
) -> Result<crate::blob::BlobWriter, crate::blob::BlobError> {
    match key {
        None => blobs.create().await,
        Some(k) => {
            blobs
                .create_transformed(|id| {
                    Ctr::new(k, id, 0)
                        .map(Ctr::into_transform)
                        .map_err(std::io::Error::other)
                })
                .await
        }
    }
}

/// The counter block a blob's keystream starts at.
fn blob_iv(blob_id: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(b"euca-walrus-sse-blob-iv");
    h.update(blob_id.as_bytes());
    let d = h.finalize();
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&d[..16]);
    u128::from_be_bytes(iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> DataKey {
        DataKey([b; KEY_LEN])
    }

    #[test]
    fn ctr_at_any_offset_matches_the_whole_stream() {
        let k = key(7);
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = Ctr::new(&k, "blob", 0)
            .unwrap()
            .apply(Bytes::from(plain.clone()))
            .unwrap();
        assert_ne!(&whole[..], &plain[..]);
        assert_eq!(whole.len(), plain.len());
        for start in [0usize, 1, 15, 16, 17, 500, 999] {
            let part = Ctr::new(&k, "blob", start as u64)
                .unwrap()
                .apply(whole.slice(start..))
                .unwrap();
            assert_eq!(&part[..], &plain[start..], "offset {start}");
        }
        // In pieces of odd sizes, as a stream arrives.
        let mut c = Ctr::new(&k, "blob", 0).unwrap();
        let mut out = Vec::new();
        for piece in plain.chunks(37) {
            out.extend_from_slice(&c.apply(Bytes::copy_from_slice(piece)).unwrap());
        }
        assert_eq!(out, &whole[..]);
        // Another blob (or key) gets another keystream.
        let other = Ctr::new(&k, "blob2", 0)
            .unwrap()
            .apply(Bytes::from(plain.clone()))
            .unwrap();
        assert_ne!(other, whole);
        let other = Ctr::new(&key(8), "blob", 0)
            .unwrap()
            .apply(Bytes::from(plain.clone()))
            .unwrap();
        assert_ne!(other, whole);
    }

    #[test]
    fn seals_open_only_with_their_key_and_purpose() {
        let dk = key(1);
        let sealed = seal(&[2; KEY_LEN], AAD_CUSTOMER, &dk).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + KEY_LEN + TAG_LEN);
        assert!(!sealed.windows(KEY_LEN).any(|w| w == dk.0));
        assert_eq!(
            unseal(&[2; KEY_LEN], AAD_CUSTOMER, &sealed).unwrap().0,
            dk.0
        );
        assert!(unseal(&[3; KEY_LEN], AAD_CUSTOMER, &sealed).is_none());
        assert!(unseal(&[2; KEY_LEN], AAD_S3, &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(unseal(&[2; KEY_LEN], AAD_CUSTOMER, &tampered).is_none());
        assert!(unseal(&[2; KEY_LEN], AAD_CUSTOMER, &sealed[1..]).is_none());
    }

    #[test]
    fn master_key_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w").join(MASTER_KEY_FILE);
        let a = load_or_create_master(&p, DataKey::random()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_master(&p, DataKey::random()).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            load_or_create_master(&p, DataKey::random()),
            Err(SseError::MasterKeyLength(_))
        ));
    }
}
