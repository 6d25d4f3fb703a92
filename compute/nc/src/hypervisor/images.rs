//! Where a node's instances get their image files: the node image cache (pinned per
//! instance) or, in tests, a directory.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use euca_imagecache::daemon::Daemon;
use euca_imagecache::ImageId;

use crate::node::ImageSource;
use crate::NcError;

/// The node's image cache: fetch (from peers or the origin), then pin for the
/// instance so the cache never evicts the backing file of a live overlay.
pub struct CacheImages {
    daemon: Arc<Daemon>,
}

impl CacheImages {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        CacheImages { daemon }
    }
}

fn image_id(s: &str) -> Result<ImageId, NcError> {
    ImageId::parse(s).map_err(|e| NcError::BadRequest(e.to_string()))
}

#[async_trait]
impl ImageSource for CacheImages {
    async fn acquire(&self, installed_id: &str, holder: &str) -> Result<PathBuf, NcError> {
        let id = image_id(installed_id)?;
        // A fetched image can be evicted before it is pinned (it is not held between
        // the two); fetch again then.
        for _ in 0..3 {
            self.daemon
                .fetch(&id)
                .await
                .map_err(|e| NcError::Internal(format!("image {id}: {e}")))?;
            let Some(hold) = self.daemon.store().hold(&id) else {
                continue;
            };
            if !hold.is_complete() {
                continue;
            }
            let store = self.daemon.store().clone();
            let (id2, holder2) = (id.clone(), holder.to_string());
            // The hold keeps the entry from eviction while the pin is written.
            tokio::task::spawn_blocking(move || store.set_pin(&id2, &holder2, true))
                .await
                .map_err(|e| NcError::Internal(e.to_string()))?
                .map_err(|e| NcError::Internal(format!("pinning image {id}: {e}")))?;
            return Ok(hold.data_path());
        }
        Err(NcError::Internal(format!(
            "image {id} was evicted while being fetched, three times"
        )))
    }

    async fn release(&self, installed_id: &str, holder: &str) -> Result<(), NcError> {
        let id = image_id(installed_id)?;
        let store = self.daemon.store().clone();
        let holder = holder.to_string();
        let r = tokio::task::spawn_blocking(move || store.set_pin(&id, &holder, false))
            .await
            .map_err(|e| NcError::Internal(e.to_string()))?;
        match r {
            Ok(()) | Err(euca_imagecache::CacheError::NotFound(_)) => Ok(()),
            Err(e) => Err(NcError::Internal(format!("unpinning image: {e}"))),
        }
    }
}

/// One call a [`DirImages`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageCall {
    Acquire { image: String, holder: String },
    Release { image: String, holder: String },
}

/// Image files named by their installed id in one directory (tests, and nodes
/// without a cache); records every call.
pub struct DirImages {
    dir: PathBuf,
    calls: Mutex<Vec<ImageCall>>,
}

impl DirImages {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirImages {
            dir: dir.into(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every acquire and release so far, in order.
    pub fn calls(&self) -> Vec<ImageCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `(image, holder)` pairs acquired and not released.
    pub fn pinned(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut set = std::collections::BTreeSet::new();
        for c in self.calls() {
            match c {
                ImageCall::Acquire { image, holder } => {
                    set.insert((image, holder));
                }
                ImageCall::Release { image, holder } => {
                    set.remove(&(image, holder));
                }
            }
        }
        set
    }

    fn record(&self, c: ImageCall) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

fn plain_name(s: &str) -> Result<(), NcError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(NcError::BadRequest(format!("bad image id {s:?}")));
    }
    Ok(())
}

#[async_trait]
impl ImageSource for DirImages {
    async fn acquire(&self, installed_id: &str, holder: &str) -> Result<PathBuf, NcError> {
        plain_name(installed_id)?;
        let p = std::path::absolute(self.dir.join(installed_id))?;
        tokio::fs::metadata(&p)
            .await
            .map_err(|e| NcError::Internal(format!("image {installed_id}: {e}")))?;
        self.record(ImageCall::Acquire {
            image: installed_id.into(),
            holder: holder.into(),
        });
        Ok(p)
    }

    async fn release(&self, installed_id: &str, holder: &str) -> Result<(), NcError> {
        plain_name(installed_id)?;
        self.record(ImageCall::Release {
            image: installed_id.into(),
            holder: holder.into(),
        });
        Ok(())
    }
}
