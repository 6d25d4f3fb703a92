//! Socket reads the NBD and iSCSI servers share.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads from `r` until `buf` holds `len` bytes, into its spare capacity (never
/// zeroed first; `buf` is a pooled buffer from `euca_durable::buffers` with room
/// for `len`, so nothing is reallocated). A stream that ends sooner is
/// `UnexpectedEof`.
pub(crate) async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<()> {
    let mut limited = r.take(len.saturating_sub(buf.len()) as u64);
    while buf.len() < len {
        if limited.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}
