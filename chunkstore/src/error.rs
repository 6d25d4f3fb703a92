//! The chunk store's error type.

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("chunk {id} is corrupt: its bytes hash to {actual}")]
    Corrupt { id: String, actual: String },
    #[error("invalid chunk id {0:?} (want 64 lowercase hex digits)")]
    InvalidId(String),
    #[error("invalid manifest name {0:?}")]
    InvalidName(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("chunk store: {0}")]
    S3(#[from] euca_s3::S3ClientError),
    #[error("chunk store I/O: {0}")]
    Io(#[from] std::io::Error),
}
