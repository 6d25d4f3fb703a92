//! The SCSI side of the target (SPC-4 / SBC-3 direct-access logical unit): what
//! each CDB asks for, checked before any data moves, and the data pages and sense
//! data the answers carry. Pure functions; `conn.rs` moves the bytes.
//!
//! One logical unit, LUN 0, 512-byte logical blocks over 4 KiB physical blocks,
//! thin provisioned (UNMAP and WRITE SAME with UNMAP punch holes; unmapped blocks
//! read as zeroes).

/// Logical block size.
pub const BLOCK: u64 = 512;
/// Largest transfer one command may ask for, in blocks (VPD B0); bounds the work
/// one command does, never the memory (writes go to the device PDU by PDU).
pub const MAX_TRANSFER_BLOCKS: u32 = 64 * 1024;
/// Largest WRITE SAME, in blocks (VPD B0): 1 GiB.
pub const MAX_WRITE_SAME_BLOCKS: u64 = 2 * 1024 * 1024;
/// Largest UNMAP: LBAs per command and descriptors (VPD B0).
pub const MAX_UNMAP_BLOCKS: u32 = 1024 * 1024;
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Largest parameter list we buffer (UNMAP, the data of WRITE SAME / COMPARE AND WRITE).
pub const MAX_PARAMETER_BYTES: u32 = 64 * 1024;

/// SCSI status codes.
pub const GOOD: u8 = 0x00;
pub const CHECK_CONDITION: u8 = 0x02;

/// Sense keys.
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// Fixed-format sense data's essentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// The INFORMATION field (e.g. the offset of the first miscompare).
    pub info: Option<u32>,
}

impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
        }
    }
    pub const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
    pub const INVALID_FIELD_IN_PARAMETERS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x1a, 0x00);
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
    pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00);
    pub const WRITE_PROTECTED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x00);
    pub const READ_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
    pub const WRITE_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x0c, 0x00);
    /// The initiator's expected transfer length cannot hold the command's data.
    pub const TRANSFER_TOO_SHORT: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);

    /// 18 bytes, response code 0x70 (current, fixed format).
    pub fn fixed(&self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = self.key;
        if let Some(i) = self.info {
            s[0] |= 0x80;
            s[3..7].copy_from_slice(&i.to_be_bytes());
        }
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

/// What a command needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answer with this data (already cut to the allocation length), then GOOD.
    Data(Vec<u8>),
    /// GOOD with no data.
    Good,
    /// CHECK CONDITION.
    Check(Sense),
    /// Read `len` bytes at `offset` to the initiator.
    Read { offset: u64, len: u64 },
    /// Take `len` bytes from the initiator and write them at `offset`.
    Write { offset: u64, len: u64, fua: bool },
    /// Take `len` bytes and compare them with the medium at `offset` (VERIFY with
    /// BYTCHK=1); MISCOMPARE on the first difference.
    Compare { offset: u64, len: u64 },
    /// Take a small parameter list or data block of `len` bytes, then act on it.
    Collect { len: u32, then: Collected },
    /// SYNCHRONIZE CACHE.
    Flush,
}

/// What a collected parameter list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    Unmap,
    /// WRITE SAME: repeat the one block over `blocks` blocks at `lba`; `unmap` allows
    /// deallocating when the block is zeroes.
    WriteSame {
        lba: u64,
        blocks: u64,
        unmap: bool,
    },
    /// COMPARE AND WRITE of `blocks` blocks at `lba`: the first half is compared,
    /// the second written if it matched.
    CompareAndWrite {
        lba: u64,
        blocks: u64,
        fua: bool,
    },
}

/// The logical unit's identity and shape.
pub struct Unit<'a> {
    pub blocks: u64,
    pub read_only: bool,
    /// Unit serial number (VPD 80): the volume's export name.
    pub serial: &'a str,
    /// The target's IQN (VPD 83 SCSI name string).
    pub iqn: &'a str,
}

fn be16(b: &[u8]) -> u64 {
    u64::from(u16::from_be_bytes([b[0], b[1]]))
}
fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn cut(mut v: Vec<u8>, alloc: u64) -> Plan {
    v.truncate(alloc.min(v.len() as u64) as usize);
    Plan::Data(v)
}

/// Plans the command in `cdb` for LUN `lun` (0 is the only unit); `edtl` is the
/// initiator's expected data transfer length.
pub fn plan(cdb: &[u8; 16], lun: u64, u: &Unit, edtl: u32) -> Plan {
    let opcode = cdb[0];
    // RDPROTECT / WRPROTECT / VRPROTECT: there is no protection information.
    if matches!(
        opcode,
        0x28 | 0xa8 | 0x88 | 0x2a | 0xaa | 0x8a | 0x2f | 0x8f | 0x41 | 0x93 | 0x89
    ) && cdb[1] >> 5 != 0
    {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    // Commands any LUN answers.
    match opcode {
        0xa0 => return report_luns(cdb),
        0x12 if lun != 0 => {
            // INQUIRY of a LUN that does not exist: peripheral qualifier 011b.
            let mut v = standard_inquiry();
            v[0] = 0x7f;
            return cut(v, be16(&cdb[3..5]));
        }
        0x03 => {
            return cut(
                Sense::new(key::NO_SENSE, 0, 0).fixed().to_vec(),
                u64::from(cdb[4]),
            )
        }
        _ => {}
    }
    if lun != 0 {
        return Plan::Check(Sense::LUN_NOT_SUPPORTED);
    }
    match opcode {
        0x00 | 0x1b | 0x1e => Plan::Good, // TEST UNIT READY, START STOP, PREVENT ALLOW
        0x12 => inquiry(cdb, u),
        0x25 => {
            let last = u.blocks.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
            let mut v = last.to_be_bytes().to_vec();
            v.extend_from_slice(&(BLOCK as u32).to_be_bytes());
            Plan::Data(v)
        }
        0x9e if cdb[1] & 0x1f == 0x10 => {
            let mut v = vec![0u8; 32];
            v[0..8].copy_from_slice(&u.blocks.saturating_sub(1).to_be_bytes());
            v[8..12].copy_from_slice(&(BLOCK as u32).to_be_bytes());
            v[13] = 3; // 8 logical blocks per physical block
            v[14] = 0x80 | 0x40; // LBPME, LBPRZ
            cut(v, be32(&cdb[10..14]))
        }
        0x1a | 0x5a => mode_sense(cdb, u),
        0x08 | 0x28 | 0xa8 | 0x88 | 0x0a | 0x2a | 0xaa | 0x8a | 0x2f | 0x8f => rw(cdb, u),
        0x35 | 0x91 => Plan::Flush,
        0x42 => {
            if u.read_only {
                return Plan::Check(Sense::WRITE_PROTECTED);
            }
            let len = be16(&cdb[7..9]) as u32;
            if len == 0 {
                Plan::Good
            } else if !(8..=MAX_PARAMETER_BYTES).contains(&len) {
                Plan::Check(Sense::PARAMETER_LIST_LENGTH_ERROR)
            } else {
                Plan::Collect {
                    len,
                    then: Collected::Unmap,
                }
            }
        }
        0x41 | 0x93 => match write_same(cdb, u) {
            // The one block of data, exactly.
            Plan::Collect { len, .. } if edtl != len => Plan::Check(Sense::INVALID_FIELD_IN_CDB),
            p => p,
        },
        0x89 => {
            if u.read_only {
                return Plan::Check(Sense::WRITE_PROTECTED);
            }
            let (lba, blocks) = (be64(&cdb[2..10]), u64::from(cdb[13]));
            // VPD B0 advertises one block; the data is exactly twice the blocks.
            if blocks > 1 || u64::from(edtl) != 2 * blocks * BLOCK {
                return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
            }
            if blocks == 0 {
                return Plan::Good;
            }
            if !in_range(lba, blocks, u.blocks) {
                return Plan::Check(Sense::LBA_OUT_OF_RANGE);
            }
            Plan::Collect {
                len: (2 * blocks * BLOCK) as u32,
                then: Collected::CompareAndWrite {
                    lba,
                    blocks,
                    fua: cdb[1] & 0x08 != 0,
                },
            }
        }
        _ => Plan::Check(Sense::INVALID_OPCODE),
    }
}

fn in_range(lba: u64, blocks: u64, total: u64) -> bool {
    lba.checked_add(blocks).is_some_and(|end| end <= total)
}

/// READ, WRITE and VERIFY in their 6/10/12/16-byte forms.
fn rw(cdb: &[u8; 16], u: &Unit) -> Plan {
    let op = cdb[0];
    let (lba, blocks) = match op {
        0x08 | 0x0a => {
            let lba = (u64::from(cdb[1] & 0x1f) << 16) | be16(&cdb[2..4]);
            let n = u64::from(cdb[4]);
            (lba, if n == 0 { 256 } else { n })
        }
        0x28 | 0x2a | 0x2f => (be32(&cdb[2..6]), be16(&cdb[7..9])),
        0xa8 | 0xaa => (be32(&cdb[2..6]), be32(&cdb[6..10])),
        _ => (be64(&cdb[2..10]), be32(&cdb[10..14])),
    };
    let write = matches!(op, 0x0a | 0x2a | 0xaa | 0x8a);
    let verify = matches!(op, 0x2f | 0x8f);
    if write && u.read_only {
        return Plan::Check(Sense::WRITE_PROTECTED);
    }
    if !in_range(lba, blocks, u.blocks) {
        return Plan::Check(Sense::LBA_OUT_OF_RANGE);
    }
    if blocks > u64::from(MAX_TRANSFER_BLOCKS) {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    if blocks == 0 {
        return Plan::Good;
    }
    let (offset, len) = (lba * BLOCK, blocks * BLOCK);
    if verify {
        return match (cdb[1] >> 1) & 0x3 {
            0 => Plan::Good, // the medium is always readable
            1 => Plan::Compare { offset, len },
            _ => Plan::Check(Sense::INVALID_FIELD_IN_CDB),
        };
    }
    // FUA is in byte 1 of the 10/12/16-byte forms only.
    let fua = !matches!(op, 0x08 | 0x0a) && cdb[1] & 0x08 != 0;
    if write {
        Plan::Write { offset, len, fua }
    } else {
        Plan::Read { offset, len }
    }
}

fn write_same(cdb: &[u8; 16], u: &Unit) -> Plan {
    if u.read_only {
        return Plan::Check(Sense::WRITE_PROTECTED);
    }
    let (lba, blocks) = if cdb[0] == 0x41 {
        (be32(&cdb[2..6]), be16(&cdb[7..9]))
    } else {
        (be64(&cdb[2..10]), be32(&cdb[10..14]))
    };
    let unmap = cdb[1] & 0x08 != 0;
    let anchor = cdb[1] & 0x10 != 0;
    let ndob = cdb[0] == 0x93 && cdb[1] & 0x01 != 0;
    // WSNZ is set in VPD B0: zero blocks is not "to the end".
    if blocks == 0 || anchor || ndob || blocks > MAX_WRITE_SAME_BLOCKS {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    if !in_range(lba, blocks, u.blocks) {
        return Plan::Check(Sense::LBA_OUT_OF_RANGE);
    }
    Plan::Collect {
        len: BLOCK as u32,
        then: Collected::WriteSame { lba, blocks, unmap },
    }
}

/// Parses an UNMAP parameter list into (offset, len) byte ranges, checked.
pub fn unmap_ranges(p: &[u8], total_blocks: u64) -> Result<Vec<(u64, u64)>, Sense> {
    if p.len() < 8 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let desc_len = be16(&p[2..4]) as usize;
    let descs = &p[8..];
    if !desc_len.is_multiple_of(16) || desc_len > descs.len() {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if desc_len / 16 > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(Sense::INVALID_FIELD_IN_PARAMETERS);
    }
    let mut out = Vec::new();
    let mut total = 0u64;
    for d in descs[..desc_len].chunks_exact(16) {
        let (lba, n) = (be64(&d[0..8]), be32(&d[8..12]));
        if !in_range(lba, n, total_blocks) {
            return Err(Sense::LBA_OUT_OF_RANGE);
        }
        total += n;
        if total > u64::from(MAX_UNMAP_BLOCKS) {
            return Err(Sense::INVALID_FIELD_IN_PARAMETERS);
        }
        if n > 0 {
            out.push((lba * BLOCK, n * BLOCK));
        }
    }
    Ok(out)
}

fn report_luns(cdb: &[u8; 16]) -> Plan {
    let alloc = be32(&cdb[6..10]);
    if alloc < 16 {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    if !matches!(cdb[2], 0x00..=0x02) {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let mut v = vec![0u8; 16];
    v[3] = 8; // one LUN: 0
    cut(v, alloc)
}

const VENDOR: &[u8; 8] = b"EUCA    ";
const PRODUCT: &[u8; 16] = b"EBS VOLUME      ";
const REVISION: &[u8; 4] = b"0001";

fn standard_inquiry() -> Vec<u8> {
    let mut v = vec![0u8; 66];
    v[0] = 0x00; // direct-access block device, connected
    v[2] = 0x06; // SPC-4
    v[3] = 0x12; // HiSup, response data format 2
    v[4] = (v.len() - 5) as u8;
    v[7] = 0x02; // CmdQue
    v[8..16].copy_from_slice(VENDOR);
    v[16..32].copy_from_slice(PRODUCT);
    v[32..36].copy_from_slice(REVISION);
    // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
    for (i, d) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
        v[58 + 2 * i..60 + 2 * i].copy_from_slice(&d.to_be_bytes());
    }
    v
}

/// An NAA 6 (IEEE registered extended) designator derived from the serial, so the
/// same volume has the same identifier on every attach.
fn naa(serial: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(serial.as_bytes());
    let mut n = [0u8; 16];
    n.copy_from_slice(&h[..16]);
    // NAA 6, then a locally chosen 24-bit "OUI" from the hash.
    n[0] = 0x60 | (n[0] & 0x0f);
    n
}

fn vpd(page: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0u8, page];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend(body);
    v
}

fn inquiry(cdb: &[u8; 16], u: &Unit) -> Plan {
    let alloc = be16(&cdb[3..5]);
    let evpd = cdb[1] & 0x01 != 0;
    if !evpd {
        if cdb[2] != 0 {
            return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
        }
        return cut(standard_inquiry(), alloc);
    }
    let page = match cdb[2] {
        0x00 => vpd(0x00, vec![0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]),
        0x80 => vpd(0x80, u.serial.as_bytes().to_vec()),
        0x83 => {
            let mut b = Vec::new();
            // NAA, binary, associated with the logical unit.
            b.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
            b.extend_from_slice(&naa(u.serial));
            // T10 vendor id, ASCII: vendor then the serial.
            let t10 = [&VENDOR[..], u.serial.as_bytes()].concat();
            b.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
            b.extend_from_slice(&t10);
            // SCSI name string (UTF-8) of the target device: the IQN, NUL padded
            // to a multiple of 4.
            let mut name = u.iqn.as_bytes().to_vec();
            name.push(0);
            while !name.len().is_multiple_of(4) {
                name.push(0);
            }
            b.extend_from_slice(&[0x03, 0x28, 0x00, name.len() as u8]);
            b.extend_from_slice(&name);
            vpd(0x83, b)
        }
        0xb0 => {
            let mut b = vec![0u8; 0x3c];
            b[0] = 0x01; // WSNZ
            b[1] = 1; // COMPARE AND WRITE of one block
            b[2..4].copy_from_slice(&8u16.to_be_bytes()); // optimal granularity: 4 KiB
            b[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            b[8..12].copy_from_slice(&2048u32.to_be_bytes()); // optimal: 1 MiB
            b[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
            b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            b[24..28].copy_from_slice(&8u32.to_be_bytes()); // unmap granularity
            b[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
            vpd(0xb0, b)
        }
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[1] = 1; // non-rotating medium
            vpd(0xb1, b)
        }
        0xb2 => {
            // LBPU, LBPWS, LBPWS10, LBPRZ; thin provisioned.
            vpd(0xb2, vec![0x00, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0x00])
        }
        _ => return Plan::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    cut(page, alloc)
}

fn mode_sense(cdb: &[u8; 16], u: &Unit) -> Plan {
    let six = cdb[0] == 0x1a;
    let dbd = cdb[1] & 0x08 != 0;
    let pc = cdb[2] >> 6;
    let page = cdb[2] & 0x3f;
    let subpage = cdb[3];
    let alloc = if six {
        u64::from(cdb[4])
    } else {
        be16(&cdb[7..9])
    };
    if pc == 3 {
        return Plan::Check(Sense::SAVING_NOT_SUPPORTED);
    }
    if subpage != 0 && subpage != 0xff {
        return Plan::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let changeable = pc == 1;
    let caching = || {
        let mut p = vec![0u8; 20];
        p[0] = 0x08;
        p[1] = 0x12;
        if !changeable {
            p[2] = 0x04; // WCE: writes are cached until SYNCHRONIZE CACHE or FUA
        }
        p
    };
    let control = || {
        let mut p = vec![0u8; 12];
        p[0] = 0x0a;
        p[1] = 0x0a;
        if !changeable {
            p[3] = 0x10; // QAM 1: unrestricted reordering
            p[8] = 0xff; // busy timeout period: unlimited
            p[9] = 0xff;
        }
        p
    };
    let informational = || {
        let mut p = vec![0u8; 12];
        p[0] = 0x1c;
        p[1] = 0x0a;
        p
    };
    let pages: Vec<u8> = match page {
        0x08 => caching(),
        0x0a => control(),
        0x1c => informational(),
        0x3f => [caching(), control(), informational()].concat(),
        _ => return Plan::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    // One short block descriptor unless DBD.
    let mut bd = Vec::new();
    if !dbd {
        bd = vec![0u8; 8];
        let n = u.blocks.min(u64::from(u32::MAX)) as u32;
        bd[0..4].copy_from_slice(&n.to_be_bytes());
        bd[5..8].copy_from_slice(&(BLOCK as u32).to_be_bytes()[1..]);
    }
    // Device-specific parameter: WP for read-only, DPOFUA (FUA honoured).
    let dsp = if u.read_only { 0x80 } else { 0 } | 0x10;
    let mut v = Vec::new();
    if six {
        let len = 3 + bd.len() + pages.len();
        v.extend_from_slice(&[len.min(255) as u8, 0, dsp, bd.len() as u8]);
    } else {
        let len = 6 + bd.len() + pages.len();
        v.extend_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
        v.extend_from_slice(&[0, dsp, 0, 0]);
        v.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    }
    v.extend(bd);
    v.extend(pages);
    cut(v, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(blocks: u64) -> Unit<'static> {
        Unit {
            blocks,
            read_only: false,
            serial: "vol-1234abcd-00",
            iqn: "iqn.2026-12.euca.sc:vol-1234abcd-00",
        }
    }

    fn cdb(b: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..b.len()].copy_from_slice(b);
        c
    }

    #[test]
    fn reads_and_writes_are_range_checked_before_any_data() {
        let u = unit(100);
        assert_eq!(
            plan(&cdb(&[0x28, 0, 0, 0, 0, 99, 0, 0, 1, 0]), 0, &u, 512),
            Plan::Read {
                offset: 99 * 512,
                len: 512
            }
        );
        assert_eq!(
            plan(&cdb(&[0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0]), 0, &u, 512),
            Plan::Check(Sense::LBA_OUT_OF_RANGE)
        );
        // LBA + length overflowing u64 is out of range, not a wrap.
        let mut c = cdb(&[0x8a, 0x08]);
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[13] = 1;
        assert_eq!(plan(&c, 0, &u, 512), Plan::Check(Sense::LBA_OUT_OF_RANGE));
        assert_eq!(
            plan(&cdb(&[0x2a, 0x08, 0, 0, 0, 1, 0, 0, 2, 0]), 0, &u, 512),
            Plan::Write {
                offset: 512,
                len: 1024,
                fua: true
            }
        );
        let ro = Unit {
            read_only: true,
            ..unit(100)
        };
        assert_eq!(
            plan(&cdb(&[0x2a, 0, 0, 0, 0, 1, 0, 0, 2, 0]), 0, &ro, 512),
            Plan::Check(Sense::WRITE_PROTECTED)
        );
        assert_eq!(
            plan(&cdb(&[0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]), 1, &u, 512),
            Plan::Check(Sense::LUN_NOT_SUPPORTED)
        );
        assert_eq!(
            plan(&cdb(&[0xff]), 0, &u, 512),
            Plan::Check(Sense::INVALID_OPCODE)
        );
    }

    #[test]
    fn capacity_inquiry_and_luns_describe_one_thin_unit() {
        let u = unit(2048);
        let Plan::Data(v) = plan(&cdb(&[0x25]), 0, &u, 512) else {
            panic!()
        };
        assert_eq!(v, [0, 0, 7, 255, 0, 0, 2, 0]);
        let Plan::Data(v) = plan(
            &cdb(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]),
            0,
            &u,
            512,
        ) else {
            panic!()
        };
        assert_eq!(&v[0..8], &2047u64.to_be_bytes());
        assert_eq!(v[14] & 0x80, 0x80);
        let Plan::Data(v) = plan(&cdb(&[0x12, 0, 0, 0, 36]), 0, &u, 512) else {
            panic!()
        };
        assert_eq!(v.len(), 36);
        assert_eq!(&v[8..16], b"EUCA    ");
        let Plan::Data(v) = plan(&cdb(&[0x12, 1, 0x83, 1, 0]), 0, &u, 512) else {
            panic!()
        };
        assert_eq!(v[1], 0x83);
        assert_eq!(usize::from(u16::from_be_bytes([v[2], v[3]])) + 4, v.len());
        assert_eq!(
            plan(&cdb(&[0x12, 1, 0x99, 1, 0]), 0, &u, 512),
            Plan::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        let Plan::Data(v) = plan(&cdb(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 5, &u, 512) else {
            panic!()
        };
        assert_eq!(v, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let Plan::Data(v) = plan(&cdb(&[0x12, 0, 0, 0, 36]), 3, &u, 512) else {
            panic!()
        };
        assert_eq!(v[0], 0x7f);
    }

    #[test]
    fn mode_sense_lengths_are_consistent() {
        let u = unit(2048);
        let Plan::Data(v) = plan(&cdb(&[0x1a, 0, 0x3f, 0, 255]), 0, &u, 512) else {
            panic!()
        };
        assert_eq!(usize::from(v[0]) + 1, v.len());
        assert_eq!(v[3], 8);
        let Plan::Data(v) = plan(&cdb(&[0x5a, 0x08, 0x08, 0, 0, 0, 0, 1, 0]), 0, &u, 512) else {
            panic!()
        };
        assert_eq!(usize::from(u16::from_be_bytes([v[0], v[1]])) + 2, v.len());
        assert_eq!(v[8], 0x08);
        assert_eq!(
            plan(&cdb(&[0x1a, 0, 0xc8, 0, 255]), 0, &u, 512),
            Plan::Check(Sense::SAVING_NOT_SUPPORTED)
        );
    }

    #[test]
    fn unmap_lists_are_checked() {
        let mut p = vec![0u8; 8 + 32];
        p[3] = 32;
        p[8 + 7] = 10; // lba 10
        p[8 + 11] = 4; // 4 blocks
        p[16 + 8 + 7] = 96;
        p[16 + 8 + 11] = 4; // lba 96, 4 blocks: ends at 100
        assert_eq!(
            unmap_ranges(&p, 100).unwrap(),
            vec![(10 * 512, 4 * 512), (96 * 512, 4 * 512)]
        );
        assert_eq!(unmap_ranges(&p, 99), Err(Sense::LBA_OUT_OF_RANGE));
        p[3] = 33;
        assert_eq!(
            unmap_ranges(&p, 100),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
    }
}
