//! SHA-1 on a helper thread, so that hashing overlaps the decrypting, inflating and
//! writing done by the caller's thread.
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
