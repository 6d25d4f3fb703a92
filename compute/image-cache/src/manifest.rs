//! The image manifest: an installed image's geometry and the SHA-256 of every
//! piece. Its own SHA-256 (of the exact stored bytes) is the image id, so a node
//! that knows the id can check the manifest, and through it every piece, whoever
//! sent them.
//!
//! In Walrus (bucket [`IMAGES_BUCKET`]): `images/<image-id>.json` and
//! `chunks/<sha256>`: the content-addressed chunk layout of the `euca-chunks`
//! crate, shared with snapshots (each in its own bucket).
use serde::{Deserialize, Serialize};

use crate::CacheError;

/// Piece size of newly installed images.
pub const PIECE_SIZE: u64 = 4 << 20;
pub const MIN_PIECE_SIZE: u64 = 64 << 10;
pub const MAX_PIECE_SIZE: u64 = 64 << 20;
/// Largest manifest accepted (a 1 TiB image at 4 MiB pieces is ~17 MiB).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// The Walrus bucket installed images live in.
pub const IMAGES_BUCKET: &str = "euca-images";
/// Where image manifests live in [`IMAGES_BUCKET`].
pub const IMAGE_MANIFEST_PREFIX: &str = "images/";
/// Manifest format written by this code.
pub const FORMAT: u32 = 1;

/// An image id: the SHA-256 of its manifest, 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageId(String);

impl ImageId {
    pub fn parse(s: &str) -> Result<Self, CacheError> {
        if is_sha256_hex(s) {
            Ok(ImageId(s.to_string()))
        } else {
            Err(CacheError::InvalidImageId(s.chars().take(80).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The manifest's key in [`IMAGES_BUCKET`].
    pub fn manifest_key(&self) -> String {
        euca_chunks::manifest_key(IMAGE_MANIFEST_PREFIX, &self.0)
    }
}

impl TryFrom<String> for ImageId {
    type Error = CacheError;
    fn try_from(s: String) -> Result<Self, CacheError> {
        ImageId::parse(&s)
    }
}
impl From<ImageId> for String {
    fn from(i: ImageId) -> String {
        i.0
    }
}
impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    euca_chunks::is_chunk_id(s)
}

/// The key of a piece (chunk) in [`IMAGES_BUCKET`].
pub fn piece_key(sha256_hex: &str) -> String {
    euca_chunks::chunk_key(sha256_hex)
}

pub use euca_aws::hash::sha256_hex;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The image's name in its bundle (informational).
    pub name: String,
    /// Image size in bytes.
    pub size: u64,
    pub piece_size: u64,
    /// SHA-256 of the whole image.
    pub sha256: String,
    /// SHA-256 of each piece, in order; the last may be short.
    pub pieces: Vec<String>,
}

impl ImageManifest {
    /// The stored form; the image id is the SHA-256 of exactly these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn id(&self) -> ImageId {
        ImageId(sha256_hex(&self.to_bytes()))
    }

    /// Parses stored bytes, checking they hash to `id` and that the geometry holds.
    pub fn from_bytes(id: &ImageId, bytes: &[u8]) -> Result<Self, CacheError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(CacheError::InvalidManifest("too large".into()));
        }
        if sha256_hex(bytes) != id.as_str() {
            return Err(CacheError::InvalidManifest(format!(
                "its bytes do not hash to the image id {id}"
            )));
        }
        let m: ImageManifest = serde_json::from_slice(bytes)
            .map_err(|e| CacheError::InvalidManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), CacheError> {
        let bad = |m: String| Err(CacheError::InvalidManifest(m));
        if self.format != FORMAT {
            return bad(format!("unknown format {}", self.format));
        }
        if !self.piece_size.is_power_of_two()
            || !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&self.piece_size)
        {
            return bad(format!("piece size {} out of range", self.piece_size));
        }
        if self.pieces.len() as u64 != self.size.div_ceil(self.piece_size)
            || self.pieces.len() > u32::MAX as usize
        {
            return bad(format!(
                "{} pieces listed for {} bytes at {}",
                self.pieces.len(),
                self.size,
                self.piece_size
            ));
        }
        if !is_sha256_hex(&self.sha256) || !self.pieces.iter().all(|p| is_sha256_hex(p)) {
            return bad("a hash is not 64 lowercase hex digits".into());
        }
        Ok(())
    }

    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Byte offset and length of piece `index`.
    pub fn piece_range(&self, index: u32) -> (u64, u64) {
        let start = index as u64 * self.piece_size;
        (start, self.size.saturating_sub(start).min(self.piece_size))
    }

    /// Checks `data` is piece `index`.
    pub fn check_piece(&self, index: u32, data: &[u8]) -> bool {
        let (_, len) = self.piece_range(index);
        match self.pieces.get(index as usize) {
            Some(want) => data.len() as u64 == len && sha256_hex(data) == *want,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_binds_bytes_and_geometry_is_checked() {
        let data = vec![7u8; 100_000];
        let m = ImageManifest {
            format: FORMAT,
            name: "x".into(),
            size: data.len() as u64,
            piece_size: MIN_PIECE_SIZE,
            sha256: sha256_hex(&data),
            pieces: data
                .chunks(MIN_PIECE_SIZE as usize)
                .map(sha256_hex)
                .collect(),
        };
        let id = m.id();
        let bytes = m.to_bytes();
        assert_eq!(ImageManifest::from_bytes(&id, &bytes).unwrap(), m);
        assert!(m.check_piece(1, &data[MIN_PIECE_SIZE as usize..]));
        assert!(!m.check_piece(0, &data[MIN_PIECE_SIZE as usize..]));
        let mut tampered = bytes.clone();
        tampered[10] ^= 1;
        assert!(ImageManifest::from_bytes(&id, &tampered).is_err());
        let mut short = m.clone();
        short.pieces.pop();
        assert!(ImageManifest::from_bytes(&short.id(), &short.to_bytes()).is_err());
        assert!(ImageId::parse("../etc").is_err());
        assert!(ImageId::parse(&"A".repeat(64)).is_err());
    }
}
