//! Writing large files durably without a long stall at the end.
//!
//! [`WriteBehind`] starts write-back of every [`WINDOW`] bytes as they are written and
//! waits for the window before, so the page cache never holds more than two windows of
//! a file's dirty data and the final fsync has little left to flush. Walrus blobs and
//! unbundled images are written through it.
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};

/// Write-back granularity.
pub const WINDOW: u64 = 8 << 20;

pub struct WriteBehind<F> {
    file: F,
    written: u64,
    flushed: u64,
}

impl<F: Write + AsFd> WriteBehind<F> {
    pub fn new(file: F) -> Self {
        WriteBehind {
            file,
            written: 0,
            flushed: 0,
        }
    }

    /// The file, to fsync and close it.
    pub fn into_inner(self) -> F {
        self.file
    }

    fn after_write(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.flushed < WINDOW {
            return;
        }
        let (fd, off, len) = (
            self.file.as_fd().as_raw_fd(),
            self.flushed,
            self.written - self.flushed,
        );
        // SAFETY: plain syscalls on an open descriptor; a failure only loses the hint.
        unsafe {
            libc::sync_file_range(fd, off as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
            if off >= WINDOW {
                libc::sync_file_range(
                    fd,
                    (off - WINDOW) as i64,
                    WINDOW as i64,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        self.flushed = self.written;
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
}
