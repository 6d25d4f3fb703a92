//! [`WalrusChunks`]: a chunk bucket in Walrus, through the project's S3 client.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::ChunkError;
use crate::key::{
    chunk_key, manifest_key, validate_chunk_id, validate_manifest_name, verify_chunk_blocking,
    CHUNK_PREFIX, MANIFEST_SUFFIX,
};
use crate::store::{ChunkStore, StoredChunk};

/// Largest chunk a GET reads (chunks are at most 64 MiB).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;
/// Largest manifest a GET reads unless [`WalrusChunks::with_max_manifest_bytes`]
/// says otherwise.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 512 << 20;

/// Chunks (`chunks/<sha256>`) and manifests (`<prefix><name>.json`) in one bucket.
pub struct WalrusChunks {
    s3: Arc<euca_s3::S3Client>,
    bucket: String,
    manifest_prefix: String,
    max_manifest_bytes: usize,
    /// Sent with every PUT (e.g. `x-amz-grant-read` for the nodes' account).
    put_headers: Vec<(&'static str, String)>,
    /// Set once the bucket is known to exist (it is created before the first
    /// write, so a service can start before Walrus serves).
    bucket_ready: tokio::sync::OnceCell<()>,
}

impl WalrusChunks {
    /// `manifest_prefix` is where manifests live, e.g. `"snapshots/"`.
    pub fn new(
        s3: impl Into<Arc<euca_s3::S3Client>>,
        bucket: impl Into<String>,
        manifest_prefix: impl Into<String>,
    ) -> Self {
        WalrusChunks {
            s3: s3.into(),
            bucket: bucket.into(),
            manifest_prefix: manifest_prefix.into(),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            put_headers: Vec::new(),
            bucket_ready: tokio::sync::OnceCell::new(),
        }
    }

    /// Caps what [`ChunkStore::get_manifest_bytes`] reads.
    pub fn with_max_manifest_bytes(mut self, max: usize) -> Self {
        self.max_manifest_bytes = max;
        self
    }

    /// Extra headers for every chunk and manifest PUT (grants).
    pub fn with_put_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.put_headers = headers;
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist (succeeds if we already own it);
    /// once it has succeeded, writes do not ask again.
    pub async fn ensure_bucket(&self) -> Result<(), ChunkError> {
        self.bucket_ready
            .get_or_try_init(|| async {
                self.s3.create_bucket(&self.bucket).await?;
                Ok::<_, ChunkError>(())
            })
            .await
            .map(|_| ())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), ChunkError> {
        self.ensure_bucket().await?;
        let headers: Vec<(&str, String)> = self
            .put_headers
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        self.s3
            .put_bytes_with(&self.bucket, key, body, &headers)
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str, max: usize, what: String) -> Result<Bytes, ChunkError> {
        match self.s3.get_bytes(&self.bucket, key, max).await {
            Ok(d) => Ok(d),
            Err(e) if e.is_not_found() => Err(ChunkError::NotFound(what)),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ChunkError> {
        match self.s3.delete(&self.bucket, key).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Lists `prefix`; a bucket that does not exist yet holds nothing.
    async fn list(&self, prefix: &str) -> Result<Vec<euca_s3::ObjectInfo>, ChunkError> {
        match self.s3.list_objects(&self.bucket, prefix).await {
            Ok(v) => Ok(v),
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl ChunkStore for WalrusChunks {
    async fn has_chunk(&self, id: &str) -> Result<bool, ChunkError> {
        validate_chunk_id(id)?;
        Ok(self.s3.head(&self.bucket, &chunk_key(id)).await?.is_some())
    }

    async fn put_chunk(&self, id: &str, data: Bytes) -> Result<(), ChunkError> {
        validate_chunk_id(id)?;
        self.put(&chunk_key(id), data).await
    }

    async fn get_chunk(&self, id: &str) -> Result<Bytes, ChunkError> {
        validate_chunk_id(id)?;
        let data = self
            .get(&chunk_key(id), MAX_CHUNK_BYTES, format!("chunk {id}"))
            .await?;
        verify_chunk_blocking(id, data).await
    }

    async fn delete_chunk(&self, id: &str) -> Result<(), ChunkError> {
        validate_chunk_id(id)?;
        self.delete(&chunk_key(id)).await
    }

    async fn list_chunks(&self) -> Result<Vec<StoredChunk>, ChunkError> {
        Ok(self
            .list(CHUNK_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = o.key.strip_prefix(CHUNK_PREFIX)?;
                validate_chunk_id(id).ok()?;
                Some(StoredChunk {
                    id: id.to_string(),
                    stored_at: o.last_modified.map(std::time::SystemTime::from),
                })
            })
            .collect())
    }

    async fn put_manifest_bytes(&self, name: &str, body: Bytes) -> Result<(), ChunkError> {
        validate_manifest_name(name)?;
        self.put(&manifest_key(&self.manifest_prefix, name), body)
            .await
    }

    async fn get_manifest_bytes(&self, name: &str) -> Result<Bytes, ChunkError> {
        validate_manifest_name(name)?;
        self.get(
            &manifest_key(&self.manifest_prefix, name),
            self.max_manifest_bytes,
            format!("manifest {name}"),
        )
        .await
    }

    async fn delete_manifest(&self, name: &str) -> Result<(), ChunkError> {
        validate_manifest_name(name)?;
        self.delete(&manifest_key(&self.manifest_prefix, name))
            .await
    }

    async fn list_manifests(&self) -> Result<Vec<String>, ChunkError> {
        let prefix = self.manifest_prefix.as_str();
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(prefix)?.strip_suffix(MANIFEST_SUFFIX)?;
                validate_manifest_name(name).ok()?;
                Some(name.to_string())
            })
            .collect())
    }
}
