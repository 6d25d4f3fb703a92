//! Unbundle's helpers for using more than one core and the disk well: SHA-1 on a
//! helper thread (overlapping the caller's decrypting, inflating and writing) and a
//! write-behind file writer.
use sha1::{Digest, Sha1};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Bytes are handed over in batches of this size.
const BATCH: usize = 256 * 1024;

pub(crate) enum BgSha1 {
    Thread {
        buf: Vec<u8>,
        tx: Option<SyncSender<Vec<u8>>>,
        handle: Option<JoinHandle<Sha1>>,
    },
    /// No thread could be started: hash inline.
    Inline(Sha1),
}

impl BgSha1 {
    pub(crate) fn new() -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let spawned = std::thread::Builder::new()
            .name("sha1".into())
            .spawn(move || {
                let mut h = Sha1::new();
                for b in rx {
                    h.update(&b);
                }
                h
            });
        match spawned {
            Ok(handle) => BgSha1::Thread {
                buf: Vec::with_capacity(BATCH),
                tx: Some(tx),
                handle: Some(handle),
            },
            Err(_) => BgSha1::Inline(Sha1::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            BgSha1::Inline(h) => h.update(data),
            BgSha1::Thread { buf, tx, .. } => {
                buf.extend_from_slice(data);
                if buf.len() >= BATCH {
                    let full = std::mem::replace(buf, Vec::with_capacity(BATCH));
                    if let Some(t) = tx {
                        // The thread only stops when `tx` is dropped; a send error
                        // cannot happen before `finish`.
                        let _ = t.send(full);
                    }
                }
            }
        }
    }

    /// The hasher with every byte given to `update`.
    pub(crate) fn finish(mut self) -> Sha1 {
        match &mut self {
            BgSha1::Inline(h) => std::mem::take(h),
            BgSha1::Thread { buf, tx, handle } => {
                let rest = std::mem::take(buf);
                if let Some(t) = tx.take() {
                    let _ = t.send(rest);
                }
                // A hashing thread that panicked yields a hasher that will not match:
                // the digest check then fails, which is the safe outcome.
                handle
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default()
            }
        }
    }
}

impl Drop for BgSha1 {
    fn drop(&mut self) {
        // Dropping the sender ends the thread; it is not joined (nobody needs it).
        if let BgSha1::Thread { tx, .. } = self {
            tx.take();
        }
    }
}

/// A file writer that starts write-back every [`WINDOW`] bytes and waits for the
/// window before, so the final fsync of a multi-GB image has little left to flush.
pub(crate) struct WriteBehind<'a> {
    file: &'a mut std::fs::File,
    written: u64,
    flushed: u64,
}

const WINDOW: u64 = 8 << 20;

impl<'a> WriteBehind<'a> {
    pub(crate) fn new(file: &'a mut std::fs::File) -> Self {
        WriteBehind {
            file,
            written: 0,
            flushed: 0,
        }
    }
}

impl std::io::Write for WriteBehind<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WINDOW {
            use std::os::fd::AsRawFd;
            let (fd, off, len) = (
                self.file.as_raw_fd(),
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
    fn same_digest_as_inline() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut bg = BgSha1::new();
        for c in data.chunks(9_999) {
            bg.update(c);
        }
        assert_eq!(bg.finish().finalize(), Sha1::digest(&data));
        assert_eq!(BgSha1::new().finish().finalize(), Sha1::digest(b""));
    }
}
