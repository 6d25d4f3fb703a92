//! Where pieces come from when no peer has them: Walrus (or, in tests, memory).
use bytes::Bytes;

use crate::manifest::{piece_key, IMAGES_BUCKET, MAX_MANIFEST_BYTES, MAX_PIECE_SIZE};
use crate::{CacheError, ImageId};

/// The origin of installed images. Callers verify what they get (the manifest
/// against its id, pieces against the manifest).
#[async_trait::async_trait]
pub trait Origin: Send + Sync + 'static {
    /// The stored manifest bytes of `id`.
    async fn manifest(&self, id: &ImageId) -> Result<Bytes, CacheError>;
    /// The bytes stored under piece hash `sha256_hex`.
    async fn piece(&self, sha256_hex: &str) -> Result<Bytes, CacheError>;
}

/// Installed images in a Walrus bucket, read through the project's S3 client with
/// the node's credentials.
pub struct WalrusOrigin {
    s3: euca_s3::S3Client,
    bucket: String,
}

impl WalrusOrigin {
    pub fn new(s3: euca_s3::S3Client) -> Self {
        WalrusOrigin {
            s3,
            bucket: IMAGES_BUCKET.into(),
        }
    }

    async fn get(&self, key: &str, max: usize, what: &str) -> Result<Bytes, CacheError> {
        match self.s3.get_bytes(&self.bucket, key, max).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(CacheError::NotFound(what.into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Origin for WalrusOrigin {
    async fn manifest(&self, id: &ImageId) -> Result<Bytes, CacheError> {
        self.get(
            &id.manifest_key(),
            MAX_MANIFEST_BYTES,
            &format!("image {id}"),
        )
        .await
    }

    async fn piece(&self, sha256_hex: &str) -> Result<Bytes, CacheError> {
        self.get(
            &piece_key(sha256_hex),
            MAX_PIECE_SIZE as usize,
            &format!("piece {sha256_hex}"),
        )
        .await
    }
}
