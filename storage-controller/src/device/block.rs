//! The block-device interface every layer implements and the NBD server talks to.

use std::io;

use bytes::Bytes;

/// One run of the device with uniform allocation status (NBD `base:allocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    /// Not allocated in the backing store (`NBD_STATE_HOLE`).
    pub hole: bool,
    /// Known to read as zeroes (`NBD_STATE_ZERO`).
    pub zero: bool,
}

/// Storage behind an export. Offsets and lengths passed in have already been
/// checked against [`BlockDevice::size`] by the caller.
#[async_trait::async_trait]
pub trait BlockDevice: Send + Sync + 'static {
    fn size(&self) -> u64;
    /// true if a flush on any handle covers writes acked on every other (no per-connection cache)
    fn multi_conn_safe(&self) -> bool;
    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes>;
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()>;
    async fn flush(&self) -> io::Result<()>;
    async fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fua: bool,
    ) -> io::Result<()>;
    /// Consecutive extents starting at `offset`. They may cover less than `len`
    /// (at least one extent when `len > 0`) and may run past it; the caller clips.
    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
    /// Several writes (none with FUA) as one request, in order: what a protocol
    /// server calls with the small writes that arrived together, so that a device
    /// which must leave the async runtime to write (a file on a filesystem without
    /// `RWF_NOWAIT` buffered writes, e.g. ext4) does it once for all of them, not
    /// once each. `Err` if any failed (which ones is unknown). The default writes
    /// them one by one.
    async fn write_batch(&self, writes: Vec<(u64, Bytes)>) -> io::Result<()> {
        for (offset, data) in writes {
            self.write(offset, data, false).await?;
        }
        Ok(())
    }
    /// Writes `data` at `offset` (no FUA) on the calling thread, which it may block:
    /// call it only where blocking is allowed (a blocking-pool thread). `None` when
    /// this device cannot write without awaiting something first (a snapshot cut to
    /// preserve the range for, a restored volume's range to fill, a device that is
    /// not a local file); the caller then uses [`BlockDevice::write`] or
    /// [`BlockDevice::write_batch`]. Lets a protocol server receive a payload and
    /// copy it into the page cache on the same thread, while it is still in that
    /// core's cache. Writing nothing (`data` empty) does nothing and answers
    /// whether a write could go this way now.
    fn write_here(&self, _offset: u64, _data: &[u8]) -> Option<io::Result<()>> {
        None
    }
    /// Reads `len` bytes at `offset` into `buf` (emptied first; capacity at least
    /// `len`) on the calling thread, which it may block: call it only where blocking
    /// is allowed. `wait == false`: only what is in memory now, without waiting for
    /// the disk, so `buf` may end up short (even empty). `None` when this device
    /// cannot read this way (a restored volume's range to fetch, a device that is
    /// not a local file); the caller then uses [`BlockDevice::read`]. Lets a
    /// protocol server read and send a reply on one thread. Reading nothing
    /// (`len == 0`) answers whether a read could go this way.
    fn read_here(
        &self,
        _offset: u64,
        _len: usize,
        _buf: &mut Vec<u8>,
        _wait: bool,
    ) -> Option<io::Result<()>> {
        None
    }
    /// Prefetch hint (NBD_CMD_CACHE).
    async fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Zero the range only if that is cheap (no data written), as NBD `FAST_ZERO`
    /// requires. `Ok(false)` means nothing was done and the caller should report
    /// `ENOTSUP` so the client falls back to writing.
    async fn write_zeroes_fast(
        &self,
        _offset: u64,
        _len: u64,
        _may_punch: bool,
        _fua: bool,
    ) -> io::Result<bool> {
        Ok(false)
    }
}
