//! The `x-amz-checksum-*` algorithms, computed while a body streams, and the two
//! checksums S3 derives for a multipart object from its parts' checksums:
//! *composite* (a hash of the concatenated raw part checksums, written `<base64>-N`)
//! and *full-object* (the CRC of the whole object, combined from the part CRCs and
//! lengths without reading the bytes again).
use base64::Engine;
use sha1::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

/// How a multipart object's checksum is derived from its parts
/// (`x-amz-checksum-type`). A single PUT's checksum is always full-object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumType {
    Composite,
    FullObject,
}

impl ChecksumType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Composite => "COMPOSITE",
            Self::FullObject => "FULL_OBJECT",
        }
    }

    /// Exactly `COMPOSITE` or `FULL_OBJECT`, as S3 spells them.
    pub fn from_name(n: &str) -> Option<Self> {
        [Self::Composite, Self::FullObject]
            .into_iter()
            .find(|t| t.name() == n)
    }
}

impl ChecksumAlgorithm {
    /// In the order S3 lists them in XML.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The header that carries it: `x-amz-checksum-crc32` …
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name in `x-amz-sdk-checksum-algorithm` and in XML (`CRC32` …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The XML element that carries a value: `ChecksumCRC32` …
    pub fn xml_element(self) -> &'static str {
        match self {
            Self::Crc32 => "ChecksumCRC32",
            Self::Crc32c => "ChecksumCRC32C",
            Self::Crc64Nvme => "ChecksumCRC64NVME",
            Self::Sha1 => "ChecksumSHA1",
            Self::Sha256 => "ChecksumSHA256",
        }
    }

    pub fn from_header(h: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(h))
    }

    pub fn from_name(n: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(n))
    }

    /// Length of the raw digest; a base64 value of another length is malformed.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Which multipart checksum types S3 allows with this algorithm: CRC64NVME is
    /// full-object only, SHA-1 and SHA-256 composite only, CRC32/CRC32C either.
    pub fn supports(self, t: ChecksumType) -> bool {
        match t {
            ChecksumType::Composite => self != Self::Crc64Nvme,
            ChecksumType::FullObject => self.crc().is_some(),
        }
    }

    /// The type S3 uses when CreateMultipartUpload names no `x-amz-checksum-type`.
    pub fn default_type(self) -> ChecksumType {
        if self == Self::Crc64Nvme {
            ChecksumType::FullObject
        } else {
            ChecksumType::Composite
        }
    }

    /// The CRC's parameters, for CRC algorithms.
    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    pub fn hasher(self) -> ChecksumHasher {
        match self {
            Self::Crc32 => ChecksumHasher::Crc32(crc32fast::Hasher::new()),
            Self::Crc32c => ChecksumHasher::Crc32c(0),
            Self::Crc64Nvme => {
                ChecksumHasher::Crc64(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
            }
            Self::Sha1 => ChecksumHasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => ChecksumHasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// The raw digest of a well-formed base64 value, `None` if malformed.
    pub fn decode(self, value: &str) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .filter(|v| v.len() == self.digest_len())
    }
}

pub enum ChecksumHasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl ChecksumHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Crc64(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The raw digest (CRCs big-endian, as S3 encodes them).
    pub fn finish_raw(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Crc32c(c) => c.to_be_bytes().to_vec(),
            Self::Crc64(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }

    /// The base64 value, as the header carries it.
    pub fn finish_base64(self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.finish_raw())
    }
}

/// Checks that a header value is well-formed base64 of the algorithm's digest length.
pub fn valid_value(alg: ChecksumAlgorithm, value: &str) -> bool {
    alg.decode(value.trim()).is_some()
}

/// The composite checksum of a multipart object: the algorithm applied to the
/// concatenated raw part checksums, in part order, then `-<number of parts>`.
pub fn composite<'a>(alg: ChecksumAlgorithm, parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = alg.hasher();
    let mut n = 0usize;
    for raw in parts {
        h.update(raw);
        n += 1;
    }
    format!("{}-{n}", h.finish_base64())
}

/// The full-object checksum of a multipart object from its parts' (raw checksum,
/// length) in order: CRC(part1 ‖ part2 ‖ …), combined without the bytes. `None` for
/// algorithms that cannot be combined (SHA-1, SHA-256) or a malformed part value.
pub fn full_object<'a>(
    alg: ChecksumAlgorithm,
    parts: impl IntoIterator<Item = (&'a [u8], u64)>,
) -> Option<String> {
    let crc = alg.crc()?;
    let mut acc = crc_fast::checksum(crc, b"");
    for (raw, len) in parts {
        if raw.len() != alg.digest_len() {
            return None;
        }
        let part = raw.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        acc = crc_fast::checksum_combine(crc, acc, part, len);
    }
    let raw = acc.to_be_bytes();
    Some(base64::engine::general_purpose::STANDARD.encode(&raw[8 - alg.digest_len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
        let mut h = alg.hasher();
        h.update(data);
        h.finish_raw()
    }

    fn b64(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut h = alg.hasher();
        h.update(data);
        h.finish_base64()
    }

    #[test]
    fn known_values() {
        let mut h = ChecksumAlgorithm::Crc32.hasher();
        h.update(b"hello world");
        assert_eq!(h.finish_base64(), "DUoRhQ==");
        let mut h = ChecksumAlgorithm::Crc32c.hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish_base64(), "yZRlqg==");
        let mut h = ChecksumAlgorithm::Sha256.hasher();
        h.update(b"");
        assert_eq!(
            h.finish_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert!(valid_value(ChecksumAlgorithm::Crc32, "DUoRhQ=="));
        assert!(!valid_value(ChecksumAlgorithm::Crc32, "DUoR"));
    }

    /// The catalogue check values (CRC of "123456789").
    #[test]
    fn crc_check_values() {
        let check = |alg, v: u64| {
            let r = raw(alg, b"123456789");
            assert_eq!(r, v.to_be_bytes()[8 - r.len()..].to_vec(), "{alg:?}");
        };
        check(ChecksumAlgorithm::Crc32, 0xCBF4_3926);
        check(ChecksumAlgorithm::Crc32c, 0xE306_9283);
        check(ChecksumAlgorithm::Crc64Nvme, 0xAE8B_1486_0A79_9888);
        assert!(valid_value(ChecksumAlgorithm::Crc64Nvme, "rosUhgp5mIg="));
        assert!(!valid_value(ChecksumAlgorithm::Crc64Nvme, "DUoRhQ=="));
        assert_eq!(
            ChecksumAlgorithm::from_header("X-Amz-Checksum-CRC64NVME"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
    }

    /// Combining part CRCs gives the CRC of the concatenation, for every CRC, for
    /// empty parts, one-byte parts, and parts of odd and power-of-two lengths.
    #[test]
    fn full_object_is_crc_of_concatenation() {
        let data: Vec<u8> = (0..70_001u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let splits: &[&[usize]] = &[
            &[],
            &[0],
            &[70_001],
            &[1],
            &[0, 5],
            &[4096, 8192],
            &[1, 2, 3, 65_536],
            &[17, 17, 40_000, 69_999, 70_000],
        ];
        for alg in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            for cuts in splits {
                let mut bounds = vec![0];
                bounds.extend_from_slice(cuts);
                bounds.push(data.len());
                let parts: Vec<(Vec<u8>, u64)> = bounds
                    .windows(2)
                    .map(|w| (raw(alg, &data[w[0]..w[1]]), (w[1] - w[0]) as u64))
                    .collect();
                let got = full_object(alg, parts.iter().map(|(r, l)| (r.as_slice(), *l)));
                assert_eq!(got, Some(b64(alg, &data)), "{alg:?} cut at {cuts:?}");
            }
            // No parts: the CRC of nothing.
            assert_eq!(full_object(alg, []), Some(b64(alg, b"")));
            // A malformed part value is refused, not combined.
            assert_eq!(full_object(alg, [(&[1u8, 2][..], 2)]), None);
        }
        assert_eq!(
            full_object(ChecksumAlgorithm::Sha256, [(&[0u8; 32][..], 1)]),
            None
        );
    }

    #[test]
    fn composite_hashes_raw_part_checksums() {
        let (a, b) = (b"first part".as_slice(), b"second".as_slice());
        for alg in ChecksumAlgorithm::ALL {
            let (ra, rb) = (raw(alg, a), raw(alg, b));
            let mut joined = ra.clone();
            joined.extend_from_slice(&rb);
            assert_eq!(
                composite(alg, [ra.as_slice(), rb.as_slice()]),
                format!("{}-2", b64(alg, &joined))
            );
        }
        // One part still gets the suffix, and is not the part's own checksum.
        let r = raw(ChecksumAlgorithm::Sha256, a);
        let c = composite(ChecksumAlgorithm::Sha256, [r.as_slice()]);
        assert!(c.ends_with("-1"));
        assert_ne!(c, format!("{}-1", b64(ChecksumAlgorithm::Sha256, a)));
    }

    #[test]
    fn type_matrix() {
        use ChecksumAlgorithm::*;
        use ChecksumType::*;
        for (alg, composite, full) in [
            (Crc32, true, true),
            (Crc32c, true, true),
            (Crc64Nvme, false, true),
            (Sha1, true, false),
            (Sha256, true, false),
        ] {
            assert_eq!(alg.supports(Composite), composite, "{alg:?}");
            assert_eq!(alg.supports(FullObject), full, "{alg:?}");
            assert!(alg.supports(alg.default_type()));
        }
        assert_eq!(ChecksumType::from_name("FULL_OBJECT"), Some(FullObject));
        assert_eq!(ChecksumType::from_name("full_object"), None);
    }
}
