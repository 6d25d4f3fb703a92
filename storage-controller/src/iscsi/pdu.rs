//! iSCSI PDUs (RFC 7143 §11): the 48-byte basic header segment, the data segment
//! padded to 4 bytes, and reading/writing them on a stream. Digests are not
//! negotiated (only `None` is offered), and additional header segments are read and
//! ignored (no command here needs an extended CDB).

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::error::IscsiError;
use euca_durable::buffers;

/// Length of the basic header segment.
pub const BHS_LEN: usize = 48;
/// The "reserved" tag value: no task / no transfer.
pub const NO_TAG: u32 = 0xffff_ffff;

/// Opcodes (byte 0, low 6 bits).
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_CMD: u8 = 0x01;
    pub const TASK_MGMT: u8 = 0x02;
    pub const LOGIN: u8 = 0x03;
    pub const TEXT: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RSP: u8 = 0x21;
    pub const TASK_MGMT_RSP: u8 = 0x22;
    pub const LOGIN_RSP: u8 = 0x23;
    pub const TEXT_RSP: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RSP: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const REJECT: u8 = 0x3f;
}

/// Flag bits of byte 1.
pub const F_FINAL: u8 = 0x80;
pub const F_CONTINUE: u8 = 0x40;

/// One PDU: its header and its data segment (padding and digests stripped).
#[derive(Debug, Clone)]
pub struct Pdu {
    pub bhs: [u8; BHS_LEN],
    pub data: Bytes,
}

impl Pdu {
    /// A target PDU with `opcode` and byte 1 = `flags`, everything else zero.
    pub fn new(opcode: u8, flags: u8) -> Pdu {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode;
        bhs[1] = flags;
        Pdu {
            bhs,
            data: Bytes::new(),
        }
    }

    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }

    /// The I bit: an immediate request, outside the CmdSN order.
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }

    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.bhs[off],
            self.bhs[off + 1],
            self.bhs[off + 2],
            self.bhs[off + 3],
        ])
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bhs[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bhs[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Initiator task tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    /// The 8-byte LUN field, as sent.
    pub fn lun(&self) -> [u8; 8] {
        let mut l = [0u8; 8];
        l.copy_from_slice(&self.bhs[8..16]);
        l
    }

    /// Sets the data segment and its length field.
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Pdu {
        self.data = data.into();
        let n = self.data.len() as u32;
        self.bhs[5] = (n >> 16) as u8;
        self.bhs[6] = (n >> 8) as u8;
        self.bhs[7] = n as u8;
        self
    }

    /// The data segment from `buf`, which holds it and its padding (a pooled
    /// buffer: a fresh 256 KiB one costs a page fault per 4 KiB).
    fn set_segment(&mut self, mut buf: Vec<u8>) {
        buf.truncate(self.data_len_field());
        self.data = buffers::freeze(buf);
    }

    fn data_len_field(&self) -> usize {
        (usize::from(self.bhs[5]) << 16)
            | (usize::from(self.bhs[6]) << 8)
            | usize::from(self.bhs[7])
    }
}

fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Reads one PDU. `Ok(None)` on a clean end of stream before its first byte. A data
/// segment longer than `max_data` (what this side declared it receives) is a
/// protocol error: the connection cannot be resynchronised after it.
pub async fn read_pdu<R: AsyncRead + Unpin>(
    r: &mut R,
    max_data: usize,
) -> Result<Option<Pdu>, IscsiError> {
    let Some(bhs) = read_bhs(r).await? else {
        return Ok(None);
    };
    let (mut pdu, total) = after_bhs(r, bhs, max_data).await?;
    if total > 0 {
        let mut buf = buffers::take(total);
        crate::wire::fill(r, &mut buf, total).await?;
        pdu.set_segment(buf);
    }
    Ok(Some(pdu))
}

/// Data segments of at least this size are read from the stream straight into their
/// own buffer by [`read_pdu_past`], and the header after them alone.
pub const LARGE_SEGMENT: usize = 64 << 10;

/// [`read_pdu`] on a buffered stream, its header (`bhs`) already read: a data segment
/// of [`LARGE_SEGMENT`] or more takes what the read buffer holds of it and reads the
/// rest from the stream straight into its own buffer, not through the read buffer
/// (which would copy every byte once more).
pub async fn read_pdu_past<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    bhs: [u8; BHS_LEN],
    max_data: usize,
) -> Result<Pdu, IscsiError> {
    let (mut pdu, total) = after_bhs(r, bhs, max_data).await?;
    if total > 0 {
        let mut buf = buffers::take(total);
        if total >= LARGE_SEGMENT {
            let buffered = r.buffer().len().min(total);
            buf.extend_from_slice(&r.buffer()[..buffered]);
            std::pin::Pin::new(&mut *r).consume(buffered);
            crate::wire::fill(r.get_mut(), &mut buf, total).await?;
        } else {
            crate::wire::fill(r, &mut buf, total).await?;
        }
        pdu.set_segment(buf);
    }
    Ok(pdu)
}

/// A basic header segment; `None` on a clean end of stream before its first byte.
pub async fn read_bhs<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<[u8; BHS_LEN]>> {
    let mut bhs = [0u8; BHS_LEN];
    let n = r.read(&mut bhs).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut bhs[n..]).await?;
    Ok(Some(bhs))
}

/// The PDU of header `bhs` with its additional header segments read and skipped, and
/// the length of its data segment with padding, checked against `max_data`.
async fn after_bhs<R: AsyncRead + Unpin>(
    r: &mut R,
    bhs: [u8; BHS_LEN],
    max_data: usize,
) -> Result<(Pdu, usize), IscsiError> {
    let pdu = Pdu {
        bhs,
        data: Bytes::new(),
    };
    let ahs = usize::from(bhs[4]) * 4;
    if ahs > 0 {
        let mut skip = vec![0u8; ahs];
        r.read_exact(&mut skip).await?;
    }
    let len = pdu.data_len_field();
    if len > max_data {
        return Err(IscsiError::Protocol(format!(
            "data segment of {len} bytes exceeds the declared {max_data}"
        )));
    }
    Ok((pdu, if len > 0 { len + pad(len) } else { 0 }))
}

/// Writes one PDU (not flushed).
pub async fn write_pdu<W: AsyncWrite + Unpin>(w: &mut W, pdu: &Pdu) -> std::io::Result<()> {
    w.write_all(&pdu.bhs).await?;
    if !pdu.data.is_empty() {
        w.write_all(&pdu.data).await?;
        let p = pad(pdu.data.len());
        if p > 0 {
            w.write_all(&[0u8; 3][..p]).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pdu_round_trips_with_padding_and_ahs_is_skipped() {
        let p = Pdu::new(op::NOP_IN, F_FINAL).with_data(&b"hello"[..]);
        let mut wire = Vec::new();
        write_pdu(&mut wire, &p).await.unwrap();
        assert_eq!(wire.len(), 48 + 8);
        let back = read_pdu(&mut &wire[..], 8192).await.unwrap().unwrap();
        assert_eq!(&back.data[..], b"hello");
        assert_eq!(back.opcode(), op::NOP_IN);

        // One AHS word before the data segment.
        let mut wire2 = wire[..48].to_vec();
        wire2[4] = 1;
        wire2.extend_from_slice(&[9, 9, 9, 9]);
        wire2.extend_from_slice(&wire[48..]);
        let back = read_pdu(&mut &wire2[..], 8192).await.unwrap().unwrap();
        assert_eq!(&back.data[..], b"hello");
    }

    #[tokio::test]
    async fn an_oversized_segment_and_a_short_header_are_errors() {
        let p = Pdu::new(op::NOP_OUT, F_FINAL).with_data(vec![0u8; 100]);
        let mut wire = Vec::new();
        write_pdu(&mut wire, &p).await.unwrap();
        assert!(read_pdu(&mut &wire[..], 64).await.is_err());
        assert!(read_pdu(&mut &wire[..20], 8192).await.is_err());
        // A data segment cut short.
        let mut cut = Vec::new();
        write_pdu(
            &mut cut,
            &Pdu::new(op::NOP_OUT, F_FINAL).with_data(vec![7u8; 70]),
        )
        .await
        .unwrap();
        assert!(read_pdu(&mut &cut[..cut.len() - 3], 8192).await.is_err());
        let whole = read_pdu(&mut &cut[..], 8192).await.unwrap().unwrap();
        assert_eq!(&whole.data[..], &[7u8; 70][..]);
        assert!(read_pdu(&mut &[][..], 8192).await.unwrap().is_none());
    }
}
