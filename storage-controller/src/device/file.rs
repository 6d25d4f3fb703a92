//! [`FileDevice`]: a volume on a sparse file (or a block device node such as an
//! LV), with positioned I/O on one shared descriptor, so every connection sees the
//! same data and one `fdatasync` covers writes made through any of them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::block::{BlockDevice, Extent};
use euca_durable::buffers;

/// Most extents one [`FileDevice::extents`] call reports; NBD lets the server
/// describe less than was asked.
const MAX_EXTENTS_PER_CALL: usize = 4096;

/// A sparse file (or block device node) used as a volume.
///
/// I/O is `pread`/`pwrite` on one descriptor through tokio's blocking pool. FLUSH is
/// `fdatasync`, FUA is write then `fdatasync`, TRIM punches holes, write-zeroes
/// punches (or writes real zeroes when holes are not allowed), and extents come from
/// `SEEK_DATA`/`SEEK_HOLE`. The file is held under an exclusive `flock` for the
/// lifetime of the value, so a second opener (another process or another `open`
/// in this one) fails instead of writing behind our back.
pub struct FileDevice {
    file: Arc<File>,
    size: u64,
    path: PathBuf,
    /// Cleared once the filesystem says it cannot do buffered `RWF_NOWAIT`
    /// writes (ext4 cannot), so they are not tried again.
    write_nowait: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDevice")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish()
    }
}

impl FileDevice {
    /// Opens an existing volume file read-write and locks it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        lock_exclusive(&file, path)?;
        // SEEK_END works for regular files and block devices alike.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileDevice {
            file: Arc::new(file),
            size: end as u64,
            path: path.to_path_buf(),
            write_nowait: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Creates a new sparse volume file of `size` bytes (fails if `path` exists),
    /// locks it, and makes the file and its directory entry durable.
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        if i64::try_from(size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "volume size too large",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let prepared = (|| {
            lock_exclusive(&file, path)?;
            file.set_len(size)?;
            file.sync_all()?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = prepared {
            // We created it, so nobody else can be using it: don't leave a stub.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(FileDevice {
            file: Arc::new(file),
            size,
            path: path.to_path_buf(),
            write_nowait: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what the page cache takes without blocking, on the calling thread;
    /// how many bytes that was. Stops trying for good once the filesystem says it
    /// cannot (ext4 has no `RWF_NOWAIT` buffered writes).
    fn try_write_nowait(&self, offset: u64, data: &[u8]) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.write_nowait.load(Relaxed) {
            return 0;
        }
        match write_nowait(&self.file, offset, data) {
            Ok(n) => n,
            Err(_) => {
                self.write_nowait.store(false, Relaxed);
                0
            }
        }
    }

    async fn blocking<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&File) -> io::Result<T> + Send + 'static,
    {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .map_err(|e| io::Error::other(format!("blocking I/O task failed: {e}")))?
    }
}

fn lock_exclusive(file: &File, path: &Path) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is already in use (locked by another process or handle)",
                path.display()
            ),
        ));
    }
    Err(err)
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let (off, len) = (to_off(offset)?, to_off(len)?);
    loop {
        // SAFETY: plain syscall on an owned descriptor.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

fn write_zero_bytes(file: &File, mut offset: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let n = len.min(ZEROES.len() as u64) as usize;
        file.write_all_at(&ZEROES[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Largest request tried without leaving the async thread: copying this much from
/// or to the page cache takes tens of microseconds.
const NOWAIT_MAX: usize = 256 << 10;

/// Reads from the page cache without blocking (`preadv2(RWF_NOWAIT)`), on the
/// calling thread: no hop to the blocking pool for data that is cached. Appends to
/// `buf` what the page cache held, from `offset` up to `len` bytes in all; the caller
/// reads the rest (if any) on the blocking pool, without reading again what came
/// from here.
fn read_nowait(file: &File, offset: u64, buf: &mut Vec<u8>, len: usize) {
    if len <= NOWAIT_MAX {
        read_cached(file, offset, buf, len);
    }
}

/// [`read_nowait`] of any length, for a thread that may take its time.
fn read_cached(file: &File, offset: u64, buf: &mut Vec<u8>, len: usize) {
    let filled = buf.len();
    if filled >= len || buf.capacity() < len {
        return;
    }
    let Ok(at) = to_off(offset + filled as u64) else {
        return;
    };
    let spare = &mut buf.spare_capacity_mut()[..len - filled];
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: spare.len(),
    };
    // SAFETY: one iovec over the spare capacity, valid for `len - filled` bytes of
    // writes; `set_len` only covers what the kernel reports as read.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    if let Ok(n) = usize::try_from(n) {
        // SAFETY: the kernel initialised `n <= len - filled` bytes after `filled`.
        unsafe { buf.set_len(filled + n.min(len - filled)) };
    }
}

/// Writes into the page cache without blocking (`pwritev2(RWF_NOWAIT)`), on the
/// calling thread. Returns how many bytes went in: 0 if the write would block
/// (e.g. to allocate blocks); the caller writes the rest on the blocking pool.
/// `Err` if the filesystem does not support it at all.
fn write_nowait(file: &File, offset: u64, data: &[u8]) -> Result<usize, ()> {
    if data.is_empty() || data.len() > NOWAIT_MAX {
        return Ok(0);
    }
    let Ok(at) = to_off(offset) else {
        return Ok(0);
    };
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one iovec over `data`, which the kernel only reads.
    let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
        return Err(());
    }
    Ok(usize::try_from(n).unwrap_or(0).min(data.len()))
}

/// Reads into `buf` until it holds `len` bytes from `offset` (it may already hold the
/// first few); past the end of a shorter file reads as zeroes.
fn pread_fill(file: &File, offset: u64, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    buf.reserve(len.saturating_sub(buf.len()));
    while buf.len() < len {
        let filled = buf.len();
        let at = to_off(offset + filled as u64)?;
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: the kernel writes at most `spare.len()` bytes into the spare
        // capacity, which is valid for writes; `set_len` below only covers the bytes
        // it reports as written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                at,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            // Past the end of a file that is shorter than the volume: reads as zero.
            buf.resize(len, 0);
            break;
        }
        // SAFETY: `n` bytes (n <= spare.len()) were initialised by pread.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(())
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = to_off(offset)?;
    // SAFETY: plain syscall. The file position is never used for I/O (all I/O is
    // positioned), so moving it concurrently is harmless.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(err);
    }
    Ok(Some(rc as u64))
}

fn push_extent(out: &mut Vec<Extent>, length: u64, hole: bool) {
    if length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.hole == hole {
            last.length += length;
            return;
        }
    }
    out.push(Extent {
        length,
        hole,
        zero: hole,
    });
}

fn file_extents(file: &File, size: u64, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
    let end = offset.saturating_add(len).min(size);
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end && out.len() < MAX_EXTENTS_PER_CALL {
        let data = match seek(file, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // No SEEK_DATA support: everything is data.
            Err(e) if unsupported(&e) => {
                push_extent(&mut out, end - pos, false);
                break;
            }
            Err(e) => return Err(e),
        };
        match data {
            None => {
                // No data at or after pos: hole to the end.
                push_extent(&mut out, end - pos, true);
                break;
            }
            Some(d) if d > pos => {
                let stop = d.min(end);
                push_extent(&mut out, stop - pos, true);
                pos = stop;
            }
            Some(_) => {
                let hole = seek(file, pos, libc::SEEK_HOLE)?.unwrap_or(end);
                // A hole offset that doesn't move means a race with a concurrent
                // write; report one block as data to make progress.
                let stop = if hole > pos {
                    hole.min(end)
                } else {
                    (pos + 1).min(end)
                };
                push_extent(&mut out, stop - pos, false);
                pos = stop;
            }
        }
    }
    if out.is_empty() && len > 0 {
        // Range lies past the file's real end (shorter than the volume): zeroes.
        out.push(Extent {
            length: len,
            hole: true,
            zero: true,
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn multi_conn_safe(&self) -> bool {
        // One shared descriptor, no user-space cache: fdatasync covers every write
        // that any connection has completed.
        true
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        let len = len as usize;
        let mut buf = buffers::take(len);
        read_nowait(&self.file, offset, &mut buf, len);
        if buf.len() == len {
            return Ok(buffers::freeze(buf));
        }
        self.blocking(move |f| {
            pread_fill(f, offset, &mut buf, len)?;
            Ok(buffers::freeze(buf))
        })
        .await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        let done = if fua {
            0
        } else {
            self.try_write_nowait(offset, &data)
        };
        if done == data.len() {
            return Ok(());
        }
        self.blocking(move |f| {
            f.write_all_at(&data[done..], offset + done as u64)?;
            if fua {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
    }

    async fn write_batch(&self, writes: Vec<(u64, Bytes)>) -> io::Result<()> {
        // What the page cache takes at once is done, up to the first write it does
        // not take whole; the rest of that one and every one after it go to the
        // blocking pool as one job, in order (a later write that overlaps an earlier
        // one must not land first).
        let mut rest: Vec<(u64, Bytes)> = Vec::new();
        for (offset, data) in writes {
            let done = if rest.is_empty() {
                self.try_write_nowait(offset, &data)
            } else {
                0
            };
            if done < data.len() {
                rest.push((offset + done as u64, data.slice(done..)));
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.blocking(move |f| {
            rest.iter()
                .try_for_each(|(offset, data)| f.write_all_at(data, *offset))
        })
        .await
    }

    fn write_here(&self, offset: u64, data: &[u8]) -> Option<io::Result<()>> {
        Some(self.file.write_all_at(data, offset))
    }

    fn read_here(
        &self,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
        wait: bool,
    ) -> Option<io::Result<()>> {
        buf.clear();
        buf.reserve(len);
        read_cached(&self.file, offset, buf, len);
        if wait && buf.len() < len {
            return Some(pread_fill(&self.file, offset, buf, len));
        }
        Some(Ok(()))
    }

    async fn flush(&self) -> io::Result<()> {
        self.blocking(|f| f.sync_data()).await
    }

    async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.blocking(move |f| match punch_hole(f, offset, len) {
            // TRIM is only a hint.
            Err(e) if unsupported(&e) => Ok(()),
            other => other,
        })
        .await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<()> {
        self.blocking(move |f| {
            if may_punch {
                match punch_hole(f, offset, len) {
                    Err(e) if unsupported(&e) => match zero_range(f, offset, len) {
                        Err(e) if unsupported(&e) => write_zero_bytes(f, offset, len)?,
                        other => other?,
                    },
                    other => other?,
                }
            } else {
                // NO_HOLE: the client wants the range allocated. ZERO_RANGE leaves
                // unwritten extents that SEEK_DATA reports as holes on ext4/xfs, so
                // write real zeroes.
                write_zero_bytes(f, offset, len)?;
            }
            if fua {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
    }

    async fn write_zeroes_fast(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<bool> {
        self.blocking(move |f| {
            let mut done = false;
            if may_punch {
                match punch_hole(f, offset, len) {
                    Ok(()) => done = true,
                    Err(e) if unsupported(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if !done {
                match zero_range(f, offset, len) {
                    Ok(()) => done = true,
                    Err(e) if unsupported(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if done && fua {
                f.sync_data()?;
            }
            Ok(done)
        })
        .await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let size = self.size;
        self.blocking(move |f| file_extents(f, size, offset, len))
            .await
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.blocking(move |f| {
            let (off, len) = (to_off(offset)?, to_off(len)?);
            // SAFETY: advisory syscall on an owned descriptor. The result is ignored:
            // CACHE is a hint.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_lock_read_write_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol");
        let dev = FileDevice::create(&path, 8 << 20).unwrap();
        assert_eq!(dev.size(), 8 << 20);
        let err = FileDevice::open(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(err.to_string().contains("in use"), "{err}");

        dev.write(1 << 20, Bytes::from(vec![7u8; 65536]), true)
            .await
            .unwrap();
        let back = dev.read(1 << 20, 65536).await.unwrap();
        assert!(back.iter().all(|&b| b == 7));
        let ext = dev.extents(0, 8 << 20).await.unwrap();
        assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), 8 << 20);
        assert!(ext[0].hole && ext[0].zero);
        assert!(ext.iter().any(|e| !e.hole));

        dev.write_zeroes(1 << 20, 65536, true, false).await.unwrap();
        let ext = dev.extents(0, 8 << 20).await.unwrap();
        assert_eq!(ext.len(), 1, "{ext:?}");
        assert!(ext[0].hole);

        dev.write_zeroes(2 << 20, 65536, false, true).await.unwrap();
        let ext = dev.extents(2 << 20, 65536).await.unwrap();
        assert!(!ext[0].hole, "{ext:?}");
        assert!(dev
            .read(2 << 20, 4096)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0));

        drop(dev);
        let dev = FileDevice::open(&path).unwrap();
        assert_eq!(dev.size(), 8 << 20);
    }

    /// A read whose first part is in the page cache and whose rest is not: the part
    /// read without blocking is kept and the rest read after it, each byte in its place.
    #[tokio::test]
    async fn a_read_partly_in_the_page_cache_returns_every_byte_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol");
        let dev = FileDevice::create(&path, 4 << 20).unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        dev.write(1 << 20, Bytes::from(data.clone()), true)
            .await
            .unwrap();
        for (cached, len) in [(64 << 10, 256 << 10), (100, 200 << 10), (0, 1 << 20)] {
            // Drop the range's clean pages from the cache, then bring the first
            // `cached` bytes back.
            // SAFETY: plain syscall on an open descriptor.
            let rc = unsafe {
                libc::posix_fadvise(
                    dev.file.as_raw_fd(),
                    1 << 20,
                    1 << 20,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            assert_eq!(rc, 0);
            if cached > 0 {
                let head = dev.read(1 << 20, cached).await.unwrap();
                assert_eq!(&head[..], &data[..cached as usize]);
            }
            let back = dev.read(1 << 20, len).await.unwrap();
            assert_eq!(back.len(), len as usize);
            assert!(
                back[..] == data[..len as usize],
                "{cached} cached, {len} read"
            );
        }
        // Appending to a buffer that already holds the first bytes reads on from there.
        let mut buf = buffers::take(200 << 10);
        buf.extend_from_slice(&data[..1000]);
        read_nowait(&dev.file, 1 << 20, &mut buf, 200 << 10);
        pread_fill(&dev.file, 1 << 20, &mut buf, 200 << 10).unwrap();
        assert!(buf[..] == data[..200 << 10]);
        // Past the end of the file (a volume larger than its file): zeroes.
        dev.write((4 << 20) - 5, Bytes::from_static(b"12345"), true)
            .await
            .unwrap();
        let mut buf = Vec::new();
        pread_fill(&dev.file, (4 << 20) - 5, &mut buf, 10).unwrap();
        assert_eq!(buf, b"12345\0\0\0\0\0");
    }
}
