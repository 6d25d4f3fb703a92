//! The `x-amz-checksum-*` algorithms, computed while a body streams.
use base64::Engine;
use sha1::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 4] = [Self::Crc32, Self::Crc32c, Self::Sha1, Self::Sha256];

    /// The header that carries it: `x-amz-checksum-crc32` …
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name in `x-amz-sdk-checksum-algorithm` and in XML (`CRC32` …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
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
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    pub fn hasher(self) -> ChecksumHasher {
        match self {
            Self::Crc32 => ChecksumHasher::Crc32(crc32fast::Hasher::new()),
            Self::Crc32c => ChecksumHasher::Crc32c(0),
            Self::Sha1 => ChecksumHasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => ChecksumHasher::Sha256(sha2::Sha256::new()),
        }
    }
}

pub enum ChecksumHasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl ChecksumHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The base64 value, as the header carries it.
    pub fn finish_base64(self) -> String {
        let raw: Vec<u8> = match self {
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Crc32c(c) => c.to_be_bytes().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// Checks that a header value is well-formed base64 of the algorithm's digest length.
pub fn valid_value(alg: ChecksumAlgorithm, value: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map(|v| v.len() == alg.digest_len())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
