//! The snapshot layer's error type (also returned by cuts and lazy volumes).

use euca_chunks::ChunkError;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("a snapshot of this volume is already in progress")]
    CutActive,
    #[error("{0}")]
    Invalid(String),
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] ChunkError),
}
