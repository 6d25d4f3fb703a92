//! The crate's error type; the HTTP edges map it to status codes.

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid image id {0:?} (want 64 lowercase hex digits)")]
    InvalidImageId(String),
    #[error("invalid image manifest: {0}")]
    InvalidManifest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("piece {index} from {source_name} is corrupt (hash mismatch)")]
    PieceCorrupt { index: u32, source_name: String },
    #[error("peer {peer}: timed out")]
    PeerTimeout { peer: String },
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("fetch failed: {0}")]
    Fetch(String),
    #[error("tracker: {0}")]
    Tracker(String),
    #[error("cache full: {needed} bytes needed, {free} can be freed within the quota of {quota} (the rest is pinned or in use)")]
    NoSpace { needed: u64, free: u64, quota: u64 },
    #[error("image {0} is pinned or in use")]
    Pinned(String),
    #[error("walrus: {0}")]
    S3(#[from] euca_s3::S3ClientError),
    #[error("bundle: {0}")]
    Bundle(#[from] euca_image::ImageError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<euca_service::bearer::TokenError> for CacheError {
    fn from(e: euca_service::bearer::TokenError) -> Self {
        CacheError::Config(e.to_string())
    }
}

impl From<euca_chunks::ChunkError> for CacheError {
    fn from(e: euca_chunks::ChunkError) -> Self {
        use euca_chunks::ChunkError as C;
        match e {
            C::S3(e) => CacheError::S3(e),
            C::Io(e) => CacheError::Io(e),
            C::NotFound(what) => CacheError::NotFound(what),
            C::InvalidId(_) | C::InvalidName(_) | C::InvalidManifest(_) => {
                CacheError::InvalidManifest(e.to_string())
            }
            C::Corrupt { .. } => CacheError::Fetch(e.to_string()),
        }
    }
}

impl CacheError {
    /// The error code the daemon's APIs report this error with.
    pub fn code(&self) -> &'static str {
        match self {
            CacheError::InvalidImageId(_) => "InvalidImageId",
            CacheError::InvalidManifest(_) => "InvalidManifest",
            CacheError::NotFound(_) => "NotFound",
            CacheError::PieceCorrupt { .. } => "PieceCorrupt",
            CacheError::PeerTimeout { .. } => "PeerTimeout",
            CacheError::Peer { .. } => "PeerFailed",
            CacheError::Config(_) => "InvalidConfiguration",
            CacheError::Fetch(_) => "FetchFailed",
            CacheError::Tracker(_) => "TrackerFailed",
            CacheError::NoSpace { .. } => "NoSpace",
            CacheError::Pinned(_) => "Pinned",
            CacheError::S3(_) => "OriginFailed",
            CacheError::Bundle(_) => "InvalidBundle",
            CacheError::Io(_) => "InternalError",
        }
    }

    /// The HTTP status this error is reported with by the daemon's APIs.
    pub fn status(&self) -> u16 {
        match self {
            CacheError::InvalidImageId(_)
            | CacheError::InvalidManifest(_)
            | CacheError::Config(_) => 400,
            CacheError::NotFound(_) => 404,
            CacheError::Pinned(_) => 409,
            CacheError::NoSpace { .. } => 507,
            _ => 500,
        }
    }
}
