//! A node's image cache on disk.
//!
//! Layout under the cache directory:
//!
//! ```text
//! images/<image-id>/manifest.json   the manifest's exact bytes (they hash to the id)
//!                   data            the raw image, sparse, written piece by piece
//!                   have            one byte per piece: 1 = written
//!                   complete        present once every piece is in and data is fsynced
//!                   pins            JSON list of pin holders (e.g. instance ids)
//!                   used            last use, seconds since the epoch (LRU order)
//! ```
//!
//! Durability without an fsync per piece: write-back of each piece starts as it
//! is written (`sync_file_range`), `have` is written after the piece's bytes but
//! not synced; on start-up every piece an incomplete image claims is
//! re-hashed, and only the ones that verify count. `complete` is written only
//! after `data` is fdatasynced, so a complete image is trusted as it is.
//!
//! Eviction is by whole images, least recently used first, when a new image would
//! take the cache above its high watermark (90 % of the quota), down to the low
//! watermark (75 %). Pinned images and images in use (being fetched or served to a
//! peer right now) are never evicted. The store only picks victims and marks them
//! removed (so they stop being served); the daemon withdraws them from the
//! tracker before it deletes their files.
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::manifest::ImageManifest;
use crate::{CacheError, ImageId};

/// Eviction starts above this share of the quota …
pub const HIGH_WATERMARK: f64 = 0.90;
/// … and frees down to this share.
pub const LOW_WATERMARK: f64 = 0.75;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fsync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

/// Writes `data` to `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let f = File::create(&tmp)?;
        f.write_all_at(data, 0)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        fsync_dir(d)?;
    }
    Ok(())
}

/// One cached image (complete or not).
pub struct Entry {
    pub id: ImageId,
    pub manifest: Arc<ImageManifest>,
    dir: PathBuf,
    data: File,
    have_file: File,
    have: Mutex<Vec<bool>>,
    have_count: AtomicU64,
    complete: AtomicBool,
    last_used: AtomicU64,
    pins: Mutex<BTreeSet<String>>,
    busy: AtomicUsize,
    removed: AtomicBool,
}

/// Keeps an entry "in use" (not evictable) while alive.
pub struct Hold(Arc<Entry>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::ops::Deref for Hold {
    type Target = Arc<Entry>;
    fn deref(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Entry {
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }
    pub fn has(&self, index: u32) -> bool {
        lock(&self.have)
            .get(index as usize)
            .copied()
            .unwrap_or(false)
    }
    pub fn have_count(&self) -> u32 {
        self.have_count.load(Ordering::Acquire) as u32
    }
    /// Bytes of the pieces held.
    pub fn bytes_held(&self) -> u64 {
        let have = lock(&self.have);
        (0..have.len() as u32)
            .filter(|i| have[*i as usize])
            .map(|i| self.manifest.piece_range(i).1)
            .sum()
    }
    /// The presence map as a bitfield (bit i = piece i, most significant bit first).
    pub fn bitfield(&self) -> Vec<u8> {
        let have = lock(&self.have);
        let mut bits = vec![0u8; have.len().div_ceil(8)];
        for (i, h) in have.iter().enumerate() {
            if *h {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
        }
        bits
    }
    pub fn missing(&self) -> Vec<u32> {
        let have = lock(&self.have);
        (0..have.len() as u32)
            .filter(|i| !have[*i as usize])
            .collect()
    }
    pub fn pins(&self) -> Vec<String> {
        lock(&self.pins).iter().cloned().collect()
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Records a use (LRU order survives restarts, best effort).
    pub fn touch(&self) {
        let now = now_secs();
        self.last_used.store(now, Ordering::Relaxed);
        let _ = fs::write(self.dir.join("used"), now.to_string());
    }

    /// Writes a verified piece (blocking).
    pub fn write_piece(&self, index: u32, bytes: &[u8]) -> io::Result<()> {
        let (off, len) = self.manifest.piece_range(index);
        if bytes.len() as u64 != len {
            return Err(io::Error::other("piece length does not match the manifest"));
        }
        self.data.write_all_at(bytes, off)?;
        // Start write-back now, so the fdatasync at completion has little left to
        // flush (with 8 nodes finishing at once it otherwise added seconds).
        // SAFETY: a plain syscall on a descriptor we own; errors only lose the hint.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::sync_file_range(
                self.data.as_raw_fd(),
                off as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.have_file.write_all_at(&[1], index as u64)?;
        let mut have = lock(&self.have);
        if let Some(h) = have.get_mut(index as usize) {
            if !*h {
                *h = true;
                self.have_count.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Makes a fully written image durable and marks it complete (blocking).
    pub fn finish(&self) -> io::Result<()> {
        self.data.sync_data()?;
        self.have_file.sync_data()?;
        write_atomic(&self.dir.join("complete"), b"")?;
        self.complete.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads piece `index` (blocking); it must be held.
    pub fn read_piece(&self, index: u32) -> io::Result<Vec<u8>> {
        if !self.has(index) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "piece not held"));
        }
        let (off, len) = self.manifest.piece_range(index);
        let mut buf = vec![0u8; len as usize];
        self.data.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// The image file (for readers such as the node controller).
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn save_pins(&self, pins: &BTreeSet<String>) -> io::Result<()> {
        let body = serde_json::to_vec(pins).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("pins"), &body)
    }
}

/// What [`Store::list`] reports per image.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct ImageStatus {
    pub id: ImageId,
    pub name: String,
    pub size: u64,
    pub pieces: u32,
    pub have: u32,
    pub complete: bool,
    pub pins: Vec<String>,
    pub last_used: u64,
    pub path: PathBuf,
}

pub struct Store {
    dir: PathBuf,
    quota: u64,
    images: Mutex<HashMap<ImageId, Arc<Entry>>>,
}

impl Store {
    /// Opens (or creates) the cache under `dir`, re-verifying incomplete images.
    pub fn open(dir: &Path, quota: u64) -> Result<Arc<Store>, CacheError> {
        let images_dir = dir.join("images");
        fs::create_dir_all(&images_dir)?;
        let mut images = HashMap::new();
        for e in fs::read_dir(&images_dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let Ok(id) = ImageId::parse(&name) else {
                // Leftovers of an interrupted create or delete.
                let _ = fs::remove_dir_all(&path);
                continue;
            };
            match Self::load(&id, &path) {
                Ok(entry) => {
                    images.insert(id, Arc::new(entry));
                }
                Err(err) => {
                    tracing::warn!(image = %id, error = %err, "dropping unreadable cache entry");
                    let _ = fs::remove_dir_all(&path);
                }
            }
        }
        Ok(Arc::new(Store {
            dir: dir.to_path_buf(),
            quota,
            images: Mutex::new(images),
        }))
    }

    fn load(id: &ImageId, dir: &Path) -> Result<Entry, CacheError> {
        let bytes = fs::read(dir.join("manifest.json"))?;
        let manifest = Arc::new(ImageManifest::from_bytes(id, &bytes)?);
        let rw = |p: &str| OpenOptions::new().read(true).write(true).open(dir.join(p));
        let data = rw("data")?;
        let have_file = rw("have")?;
        let n = manifest.piece_count() as usize;
        let complete = dir.join("complete").exists();
        let mut have = vec![complete; n];
        if !complete {
            let mut raw = vec![0u8; n];
            let got = have_file.read_at(&mut raw, 0)?;
            raw.truncate(got);
            for (i, b) in raw.iter().enumerate() {
                if *b == 1 {
                    let (off, len) = manifest.piece_range(i as u32);
                    let mut buf = vec![0u8; len as usize];
                    have[i] = data.read_exact_at(&mut buf, off).is_ok()
                        && manifest.check_piece(i as u32, &buf);
                    if !have[i] {
                        have_file.write_all_at(&[0], i as u64)?;
                    }
                }
            }
        }
        let pins: BTreeSet<String> = fs::read(dir.join("pins"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let last_used = fs::read_to_string(dir.join("used"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let count = have.iter().filter(|h| **h).count() as u64;
        Ok(Entry {
            id: id.clone(),
            manifest,
            dir: dir.to_path_buf(),
            data,
            have_file,
            have: Mutex::new(have),
            have_count: AtomicU64::new(count),
            complete: AtomicBool::new(complete),
            last_used: AtomicU64::new(last_used),
            pins: Mutex::new(pins),
            busy: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
        })
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes the cache accounts for: every image at its full size.
    pub fn used(&self) -> u64 {
        lock(&self.images).values().map(|e| e.manifest.size).sum()
    }

    /// The entry and a hold on it (so it is not evicted while held), unless absent
    /// or being removed.
    pub fn hold(&self, id: &ImageId) -> Option<Hold> {
        let images = lock(&self.images);
        let e = images.get(id)?;
        if e.is_removed() {
            return None;
        }
        e.busy.fetch_add(1, Ordering::AcqRel);
        Some(Hold(e.clone()))
    }

    /// Creates an empty entry for `manifest` (whose stored bytes are `bytes`), held.
    /// Returns the images evicted to make room, already marked removed: the caller
    /// withdraws them and then calls [`Store::delete`].
    pub fn create(
        &self,
        manifest: ImageManifest,
        bytes: &[u8],
    ) -> Result<(Hold, Vec<Arc<Entry>>), CacheError> {
        let id = manifest.id();
        let victims = self.make_room(manifest.size, Some(&id))?;
        if let Some(h) = self.hold(&id) {
            return Ok((h, victims));
        }
        let images_dir = self.dir.join("images");
        let tmp = images_dir.join(format!(".new-{id}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        fs::write(tmp.join("manifest.json"), bytes)?;
        File::create(tmp.join("data"))?.set_len(manifest.size)?;
        File::create(tmp.join("have"))?.set_len(manifest.piece_count() as u64)?;
        for f in ["manifest.json", "data", "have"] {
            File::open(tmp.join(f))?.sync_all()?;
        }
        fsync_dir(&tmp)?;
        let dir = images_dir.join(id.as_str());
        fs::rename(&tmp, &dir)?;
        fsync_dir(&images_dir)?;
        let entry = Arc::new(Self::load(&id, &dir)?);
        entry.touch();
        entry.busy.fetch_add(1, Ordering::AcqRel);
        lock(&self.images).insert(id, entry.clone());
        Ok((Hold(entry), victims))
    }

    /// Picks least-recently-used victims so that `needed` more bytes fit under the
    /// high watermark, freeing down to the low one.
    fn make_room(
        &self,
        needed: u64,
        except: Option<&ImageId>,
    ) -> Result<Vec<Arc<Entry>>, CacheError> {
        let images = lock(&self.images);
        if except.is_some_and(|id| images.contains_key(id)) {
            return Ok(vec![]);
        }
        let used: u64 = images.values().map(|e| e.manifest.size).sum();
        let high = (self.quota as f64 * HIGH_WATERMARK) as u64;
        if used + needed <= high {
            return Ok(vec![]);
        }
        let low = (self.quota as f64 * LOW_WATERMARK) as u64;
        let mut candidates: Vec<&Arc<Entry>> = images
            .values()
            .filter(|e| {
                !e.is_removed() && e.busy.load(Ordering::Acquire) == 0 && lock(&e.pins).is_empty()
            })
            .collect();
        candidates.sort_by_key(|e| e.last_used());
        // Victims are existing images, so `freed <= used` throughout.
        let (mut freed, mut victims) = (0u64, Vec::new());
        for e in candidates {
            if used - freed + needed <= low {
                break;
            }
            freed += e.manifest.size;
            victims.push(e.clone());
        }
        if used - freed + needed > self.quota {
            return Err(CacheError::NoSpace {
                needed,
                free: self.quota.saturating_sub(used) + freed,
                quota: self.quota,
            });
        }
        for v in &victims {
            v.removed.store(true, Ordering::Release);
        }
        Ok(victims)
    }

    /// Marks `id` removed for an explicit eviction; refused if pinned or in use.
    pub fn evict(&self, id: &ImageId) -> Result<Arc<Entry>, CacheError> {
        let images = lock(&self.images);
        let e = images
            .get(id)
            .filter(|e| !e.is_removed())
            .ok_or_else(|| CacheError::NotFound(format!("image {id}")))?;
        if !lock(&e.pins).is_empty() || e.busy.load(Ordering::Acquire) > 0 {
            return Err(CacheError::Pinned(id.to_string()));
        }
        e.removed.store(true, Ordering::Release);
        Ok(e.clone())
    }

    /// Deletes a removed entry's files (blocking).
    pub fn delete(&self, e: &Entry) -> Result<(), CacheError> {
        lock(&self.images).remove(&e.id);
        let trash = self.dir.join("images").join(format!(".del-{}", e.id));
        fs::rename(&e.dir, &trash)?;
        fs::remove_dir_all(&trash)?;
        Ok(())
    }

    /// Adds (`pinned`) or removes `holder`'s pin on `id`; pinned images are never evicted.
    pub fn set_pin(&self, id: &ImageId, holder: &str, pinned: bool) -> Result<(), CacheError> {
        let e = self
            .hold(id)
            .ok_or_else(|| CacheError::NotFound(format!("image {id}")))?;
        let mut pins = lock(&e.pins);
        if pinned {
            pins.insert(holder.to_string());
        } else {
            pins.remove(holder);
        }
        e.save_pins(&pins)?;
        Ok(())
    }

    pub fn list(&self) -> Vec<ImageStatus> {
        let images = lock(&self.images);
        let mut out: Vec<ImageStatus> = images
            .values()
            .filter(|e| !e.is_removed())
            .map(|e| ImageStatus {
                id: e.id.clone(),
                name: e.manifest.name.clone(),
                size: e.manifest.size,
                pieces: e.manifest.piece_count(),
                have: e.have_count(),
                complete: e.is_complete(),
                pins: e.pins(),
                last_used: e.last_used(),
                path: e.data_path(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every live entry (for announces).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        lock(&self.images)
            .values()
            .filter(|e| !e.is_removed())
            .cloned()
            .collect()
    }
}
