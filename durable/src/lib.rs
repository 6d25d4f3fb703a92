//! File I/O shared by the services: large files written durably without a long stall
//! at the end, and I/O buffers kept for reuse ([`buffers`]).
//!
//! [`WriteBehind`] starts write-back of every [`WINDOW`] bytes as they are written and
//! waits for the window [`DEPTH`] before, so the page cache never holds more than
//! `DEPTH + 1` windows of a file's dirty data and the final fsync has little left to
//! flush.
//! Unbundled images are written through it.
//!
//! [`DirectWriter`] writes a new file with `O_DIRECT` wherever a chunk allows it
//! (aligned in memory, in length and in the file) and through a [`WriteBehind`]
//! elsewhere. Walrus writes its blobs with it: copying every byte into the page cache
//! was the largest cost of a PUT after the MD5 (BENCHMARKS.md), and a blob just
//! written is seldom read back at once.
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};

pub mod buffers;

/// The alignment direct I/O needs here, of buffers, lengths and file offsets (the
/// largest logical block size of common disks).
pub const DIRECT_ALIGN: usize = 4096;

/// Write-back granularity.
pub const WINDOW: u64 = 8 << 20;
/// Windows whose write-back may be in flight at once (4 measured no better than 1:
/// BENCHMARKS.md, 2026-12-06 night).
pub const DEPTH: u64 = 1;

pub struct WriteBehind<F> {
    file: F,
    written: u64,
    /// Write-back started up to here.
    started: u64,
    /// Write-back waited for up to here.
    waited: u64,
}

impl<F: Write + AsFd> WriteBehind<F> {
    pub fn new(file: F) -> Self {
        WriteBehind {
            file,
            written: 0,
            started: 0,
            waited: 0,
        }
    }

    /// The file, to fsync and close it.
    pub fn into_inner(self) -> F {
        self.file
    }

    fn after_write(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.started < WINDOW {
            return;
        }
        let fd = self.file.as_fd().as_raw_fd();
        let (off, len) = (self.started, self.written - self.started);
        // SAFETY: plain syscalls on an open descriptor; a failure only loses the hint.
        unsafe {
            libc::sync_file_range(fd, off as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.started = self.written;
        let target = self.started.saturating_sub(DEPTH * WINDOW);
        if target > self.waited {
            // SAFETY: as above.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.waited as i64,
                    (target - self.waited) as i64,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
            self.waited = target;
        }
    }
}

impl<F: Write + AsFd> Write for WriteBehind<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.after_write(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A new file written with `O_DIRECT` where a chunk allows it and through the page
/// cache (with write-behind) where it does not: a chunk goes direct when its address,
/// its length and the file's position are all multiples of [`DIRECT_ALIGN`], as those
/// of a [`buffers::AlignedBuf`] filled to a multiple are. On a file system that
/// refuses direct I/O every chunk goes through the page cache. Either way the data is
/// durable only after [`File::sync_data`] on [`Self::into_inner`].
pub struct DirectWriter {
    wb: WriteBehind<File>,
    /// `O_DIRECT` is set on the descriptor now.
    direct: bool,
    /// The file system took direct I/O (until it refuses once).
    can_direct: bool,
}

impl DirectWriter {
    /// Writes `file` (new, or truncated) from its start.
    pub fn new(file: File) -> Self {
        DirectWriter {
            wb: WriteBehind::new(file),
            direct: false,
            can_direct: true,
        }
    }

    /// Writes `file` through the page cache only (with write-behind).
    pub fn buffered(file: File) -> Self {
        DirectWriter {
            can_direct: false,
            ..Self::new(file)
        }
    }

    /// Whether the writes so far went direct where they could (false once the file
    /// system refused `O_DIRECT`).
    pub fn direct_capable(&self) -> bool {
        self.can_direct
    }

    /// Writes all of `b` at the end of what was written.
    pub fn write_chunk(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let aligned = (b.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
                && b.len().is_multiple_of(DIRECT_ALIGN)
                && self.wb.written.is_multiple_of(DIRECT_ALIGN as u64);
            self.set_direct(aligned && self.can_direct)?;
            match self.wb.file.write(b) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wb.after_write(n);
                    b = &b[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The file system (or this device's block size) refuses it: the rest
                // goes through the page cache.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.can_direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        if on == self.direct {
            return Ok(());
        }
        let fd = self.wb.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this writer owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            let e = io::Error::last_os_error();
            if on && e.raw_os_error() == Some(libc::EINVAL) {
                self.can_direct = false;
                return Ok(());
            }
            return Err(e);
        }
        self.direct = on;
        Ok(())
    }

    /// The file, to fsync and close it.
    pub fn into_inner(self) -> File {
        self.wb.into_inner()
    }
}

/// How many of `file`'s pages are in the page cache now (`mincore` over a read-only
/// mapping): what the tests of direct writes check. `file` must be open for reading.
pub fn cached_pages(file: &File) -> io::Result<usize> {
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a shared read-only mapping of the file's `len` bytes, only passed to
    // mincore (which writes one byte per page into `vec`, sized for that) and
    // unmapped before returning; its memory is never read.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::mincore(p, len, vec.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::munmap(p, len);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn writes_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = WriteBehind::new(std::fs::File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 253) as u8).collect();
        for _ in 0..20 {
            w.write_all(&chunk).unwrap();
        }
        w.into_inner().sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), chunk.len() * 20);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk));
    }

    #[test]
    fn a_direct_writer_writes_aligned_and_unaligned_chunks_in_order() {
        // Not /tmp, which may be a tmpfs that refuses O_DIRECT.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let mut w = DirectWriter::new(std::fs::File::create(&path).unwrap());
        let mut expect = Vec::new();
        let mut piece = |n: usize, seed: u8| -> Vec<u8> {
            let v: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            expect.extend_from_slice(&v);
            v
        };
        // Unaligned first (a body's first frames), then aligned chunks from the
        // pool, an unaligned one in the middle, aligned ones again once the position
        // is back on the boundary, a short tail.
        let head = piece(1000, 1);
        let realign = piece(DIRECT_ALIGN - 1000, 2);
        let mut chunks: Vec<bytes::Bytes> = vec![head.into(), realign.into()];
        for seed in 3..40 {
            let n = if seed == 20 {
                777
            } else if seed == 21 {
                3 * DIRECT_ALIGN - 777
            } else {
                16 * DIRECT_ALIGN
            };
            let mut a = buffers::AlignedBuf::take((256 << 10) - DIRECT_ALIGN);
            a.extend_from_slice(&piece(n, seed));
            chunks.push(a.freeze());
        }
        chunks.push(piece(12345, 99).into());
        for c in &chunks {
            w.write_chunk(c).unwrap();
        }
        w.into_inner().sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn the_aligned_chunks_of_a_direct_writer_bypass_the_page_cache() {
        // Where the file system takes O_DIRECT (ext4, xfs; not every tmpfs), the
        // aligned chunks are not left in the page cache: mincore sees none of them.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut w = DirectWriter::new(file);
        for _ in 0..16 {
            let mut a = buffers::AlignedBuf::take((256 << 10) - DIRECT_ALIGN);
            a.extend_from_slice(&vec![5u8; (256 << 10) - DIRECT_ALIGN]);
            w.write_chunk(&a.freeze()).unwrap();
        }
        let direct = w.direct_capable();
        let f = w.into_inner();
        f.sync_all().unwrap();
        if !direct {
            eprintln!("skipped: {} refuses O_DIRECT", dir.path().display());
            return;
        }
        let len = f.metadata().unwrap().len() as usize;
        assert_eq!(len, 16 * ((256 << 10) - DIRECT_ALIGN));
        assert_eq!(cached_pages(&f).unwrap(), 0);
    }
}
