//! Where volume bytes live. [`VolumeStore`] is the seam a Ceph RBD (or LVM)
//! backend implements; [`FileVolumeStore`] is the embedded default: one sparse
//! file per volume, opened under an exclusive lock.
use crate::device::{BlockDevice, FileDevice};
use crate::error::ScError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

#[async_trait::async_trait]
pub trait VolumeStore: Send + Sync + 'static {
    /// Creates an empty (all-zero, thin) volume of `size` bytes.
    async fn create(&self, id: &str, size: u64) -> Result<(), ScError>;
    /// Opens a volume for exclusive use by this process.
    async fn open(&self, id: &str) -> Result<Arc<dyn BlockDevice>, ScError>;
    /// Deletes a volume's bytes; deleting a missing volume is not an error.
    async fn delete(&self, id: &str) -> Result<(), ScError>;
    async fn exists(&self, id: &str) -> bool;
}

pub struct FileVolumeStore {
    dir: PathBuf,
}

impl FileVolumeStore {
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The callers validated `id` (`vol-` + 8 hex), so this stays inside `dir`.
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }
}

#[async_trait::async_trait]
impl VolumeStore for FileVolumeStore {
    async fn create(&self, id: &str, size: u64) -> Result<(), ScError> {
        let path = self.path(id);
        let dev = tokio::task::spawn_blocking(move || FileDevice::create(&path, size))
            .await
            .map_err(|e| ScError::Io(io::Error::other(e)))??;
        drop(dev);
        Ok(())
    }

    async fn open(&self, id: &str) -> Result<Arc<dyn BlockDevice>, ScError> {
        let path = self.path(id);
        let dev = tokio::task::spawn_blocking(move || FileDevice::open(&path))
            .await
            .map_err(|e| ScError::Io(io::Error::other(e)))??;
        Ok(Arc::new(dev))
    }

    async fn delete(&self, id: &str) -> Result<(), ScError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn exists(&self, id: &str) -> bool {
        tokio::fs::metadata(self.path(id)).await.is_ok()
    }
}
