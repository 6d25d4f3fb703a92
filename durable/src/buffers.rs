//! I/O buffers kept for reuse.
//!
//! Every READ needs a buffer for its data until the reply is on the wire. Allocated
//! fresh each time, a buffer of a few hundred KiB comes from pages the kernel has to
//! fault in and zero first (glibc hands much of memory of that size back to the system
//! when it is freed): on a sequential read that was a tenth of the storage controller's CPU
//! (`perf record` of `scripts/bench-nbd-seq.sh read 4`, BENCHMARKS.md). Here a buffer
//! goes back to a small pool when the last [`Bytes`] holding it is dropped — by the
//! NBD or iSCSI writer once the reply is sent — and the next read takes it, its pages
//! still mapped.
//!
//! Buffers come in power-of-two sizes from [`MIN_POOLED`] to [`MAX_POOLED`]; smaller
//! and larger reads are plain allocations (small ones are cheap, larger ones rare).
//! The pool keeps at most [`MAX_KEPT`] bytes across all sizes, process-wide, which is
//! what it costs at rest after a burst of reads.
//!
//! Walrus takes its request bodies' chunks from the same pool, as [`AlignedBuf`]s that
//! its blob files are written from with `O_DIRECT`.

use std::sync::Mutex;

use bytes::Bytes;

use crate::DIRECT_ALIGN;

/// Smallest buffer the pool keeps.
pub const MIN_POOLED: usize = 64 << 10;
/// Largest buffer the pool keeps.
pub const MAX_POOLED: usize = 4 << 20;
/// Most bytes the pool holds at rest.
pub const MAX_KEPT: usize = 32 << 20;

const CLASSES: usize = (MAX_POOLED / MIN_POOLED).trailing_zeros() as usize + 1;

struct Pool {
    state: Mutex<Kept>,
}

struct Kept {
    free: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
}

/// The process's pool.
static POOL: Pool = Pool::new();

/// The size class of a buffer for `len` bytes, and that class's capacity.
fn class(len: usize) -> Option<(usize, usize)> {
    if !(MIN_POOLED..=MAX_POOLED).contains(&len) {
        return None;
    }
    let cap = len.next_power_of_two();
    Some(((cap / MIN_POOLED).trailing_zeros() as usize, cap))
}

/// An empty buffer with room for at least `len` bytes: a kept one when there is one.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// The capacity [`take`] gives a buffer for `len` bytes: the size class for pooled
/// sizes, `len` itself otherwise. A kept buffer may have all of it resident (it
/// held that much before), so a memory budget should charge this, not `len`.
pub fn footprint(len: usize) -> usize {
    class(len).map_or(len, |(_, cap)| cap)
}

/// The buffer as [`Bytes`]; it returns to the pool when the last clone is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    POOL.freeze(buf)
}

/// A pooled buffer whose data starts on a [`DIRECT_ALIGN`] boundary, so that a
/// [`DirectWriter`](crate::DirectWriter) can write it with `O_DIRECT` when its length
/// is a multiple of that too.
pub struct AlignedBuf {
    buf: Vec<u8>,
    /// Where the data starts in `buf` (the bytes before are padding).
    start: usize,
    room: usize,
}

impl AlignedBuf {
    /// An empty buffer for at most `room` bytes. A `room` of a power of two less
    /// [`DIRECT_ALIGN`] fits a pooled buffer exactly.
    pub fn take(room: usize) -> Self {
        let mut buf = take(room + DIRECT_ALIGN);
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        buf.resize(start, 0);
        AlignedBuf { buf, start, room }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that still fit.
    pub fn room(&self) -> usize {
        self.room.saturating_sub(self.len())
    }

    /// Appends all of `b`, which must fit ([`Self::room`]: more would move the data
    /// off the boundary).
    pub fn extend_from_slice(&mut self, b: &[u8]) {
        assert!(b.len() <= self.room(), "AlignedBuf overfilled");
        self.buf.extend_from_slice(b);
    }

    /// The data as [`Bytes`], aligned; the buffer returns to the pool when the last
    /// clone is dropped.
    pub fn freeze(mut self) -> Bytes {
        let start = self.start;
        freeze(std::mem::take(&mut self.buf)).slice(start..)
    }
}

impl Drop for AlignedBuf {
    /// A buffer never frozen (a body that ended, an error) goes back too.
    fn drop(&mut self) {
        if self.buf.capacity() > 0 {
            POOL.put(std::mem::take(&mut self.buf));
        }
    }
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            state: Mutex::new(Kept {
                free: [const { Vec::new() }; CLASSES],
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Nothing a panic could leave half-made is held: a poisoned lock is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let Some((i, cap)) = class(len) else {
            return Vec::with_capacity(len);
        };
        let kept = {
            let mut k = self.lock();
            let buf = k.free[i].pop();
            if buf.is_some() {
                k.bytes -= cap;
            }
            buf
        };
        kept.unwrap_or_else(|| Vec::with_capacity(cap))
    }

    fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        if class(buf.capacity()).is_some_and(|(_, cap)| cap == buf.capacity()) {
            Bytes::from_owner(Pooled { buf, pool: self })
        } else {
            Bytes::from(buf)
        }
    }

    fn put(&self, mut buf: Vec<u8>) {
        let Some((i, cap)) = class(buf.capacity()) else {
            return;
        };
        buf.clear();
        let mut k = self.lock();
        if k.bytes + cap <= MAX_KEPT {
            k.bytes += cap;
            k.free[i].push(buf);
        }
    }
}

/// A pool-sized buffer on its way back to its pool.
struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footprint_is_the_capacity_a_buffer_gets() {
        for len in [
            1,
            4096,
            MIN_POOLED - 1,
            MIN_POOLED,
            200 << 10,
            (2 << 20) + 4096,
        ] {
            assert!(footprint(len) >= len);
            assert_eq!(take(len).capacity(), footprint(len), "{len}");
        }
        assert_eq!(footprint((2 << 20) + 4096), 4 << 20);
        assert_eq!(footprint(MAX_POOLED + 1), MAX_POOLED + 1);
    }

    #[test]
    fn a_returned_buffer_is_taken_again_and_the_pool_stays_bounded() {
        // A pool of this test's own: nothing else takes from it meanwhile.
        let pool: &'static Pool = Box::leak(Box::new(Pool::new()));
        let mut buf = pool.take(200 << 10);
        assert_eq!(buf.capacity(), 256 << 10);
        buf.extend_from_slice(&[7u8; 200 << 10]);
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let clone = bytes.clone();
        assert_eq!(&bytes[..], &[7u8; 200 << 10][..]);
        drop(bytes);
        assert_eq!(clone.len(), 200 << 10, "a clone keeps the data");
        assert_eq!(pool.lock().bytes, 0, "back only when the last clone drops");
        drop(clone);
        assert_eq!(pool.lock().bytes, 256 << 10);
        let again = pool.take(256 << 10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation, taken again");
        assert_eq!(pool.lock().bytes, 0);

        // Far more than the cap, returned at once: the pool keeps at most MAX_KEPT.
        let many: Vec<Bytes> = (0..(MAX_KEPT / MAX_POOLED) * 3)
            .map(|_| pool.freeze(pool.take(MAX_POOLED)))
            .collect();
        drop(many);
        assert_eq!(pool.lock().bytes, MAX_KEPT);

        // Outside the pooled sizes: plain buffers, never kept.
        assert_eq!(class(100), None);
        assert_eq!(class(8 << 20), None);
        assert_eq!(class(200 << 10), Some((2, 256 << 10)));
        drop(pool.freeze(pool.take(8 << 20)));
        drop(pool.freeze(vec![0u8; 100]));
        assert_eq!(pool.lock().bytes, MAX_KEPT);
    }

    #[test]
    fn an_aligned_buffer_starts_on_the_boundary_and_holds_what_was_put() {
        for _ in 0..8 {
            let mut a = AlignedBuf::take((256 << 10) - DIRECT_ALIGN);
            assert_eq!(a.room(), (256 << 10) - DIRECT_ALIGN);
            a.extend_from_slice(&[1, 2, 3]);
            a.extend_from_slice(&vec![9u8; a.room()]);
            assert_eq!(a.room(), 0);
            let b = a.freeze();
            assert_eq!(b.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(b.len(), (256 << 10) - DIRECT_ALIGN);
            assert_eq!(&b[..4], &[1, 2, 3, 9]);
            assert!(b[3..].iter().all(|&x| x == 9));
        }
    }
}
