//! Key layout, chunk ids and their checks.

use bytes::Bytes;

use crate::error::ChunkError;

/// Where chunks live in a bucket.
pub const CHUNK_PREFIX: &str = "chunks/";
/// What every manifest key ends with.
pub const MANIFEST_SUFFIX: &str = ".json";

/// The id of a chunk: the SHA-256 of its bytes, 64 lowercase hex digits.
pub fn chunk_id(data: &[u8]) -> String {
    euca_aws::hash::sha256_hex(data)
}

/// `chunks/<id>`.
pub fn chunk_key(id: &str) -> String {
    format!("{CHUNK_PREFIX}{id}")
}

/// `<prefix><name>.json`.
pub fn manifest_key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}{MANIFEST_SUFFIX}")
}

/// Exactly 64 lowercase hex digits.
pub fn is_chunk_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A chunk id is exactly 64 lowercase hex digits (anything else could name a key
/// outside `chunks/`).
pub fn validate_chunk_id(id: &str) -> Result<(), ChunkError> {
    if is_chunk_id(id) {
        Ok(())
    } else {
        Err(ChunkError::InvalidId(id.into()))
    }
}

/// Manifest names become object keys and file names: 1–128 of `[A-Za-z0-9._-]`,
/// not starting with a dot (snapshot ids and image ids both fit).
pub fn validate_manifest_name(name: &str) -> Result<(), ChunkError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ChunkError::InvalidName(name.into()))
    }
}

/// Checks that `data` hashes to `id`.
pub fn verify_chunk(id: &str, data: &[u8]) -> Result<(), ChunkError> {
    let actual = chunk_id(data);
    if actual == id {
        Ok(())
    } else {
        Err(ChunkError::Corrupt {
            id: id.into(),
            actual,
        })
    }
}

/// [`verify_chunk`] of a (up to 64 MiB) chunk on the blocking pool, off the async
/// workers; hands the bytes back when they check out.
pub async fn verify_chunk_blocking(id: &str, data: Bytes) -> Result<Bytes, ChunkError> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || verify_chunk(&id, &data).map(|()| data))
        .await
        .map_err(|e| ChunkError::Io(std::io::Error::other(format!("hash task failed: {e}"))))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_keys() {
        let id = chunk_id(b"x");
        assert_eq!(
            id,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
        assert!(validate_chunk_id(&id).is_ok());
        assert!(validate_chunk_id(&id.to_uppercase()).is_err());
        assert!(validate_chunk_id(&id[1..]).is_err());
        assert!(validate_chunk_id("../../etc/passwd").is_err());
        assert!(validate_manifest_name("snap-1").is_ok());
        assert!(validate_manifest_name(&id).is_ok());
        assert!(validate_manifest_name("../x").is_err());
        assert!(validate_manifest_name(".hidden").is_err());
        assert!(validate_manifest_name("").is_err());
        assert!(validate_manifest_name(&"a".repeat(129)).is_err());
        assert_eq!(chunk_key(&id), format!("chunks/{id}"));
        assert_eq!(manifest_key("images/", "abc"), "images/abc.json");
        assert!(verify_chunk(&id, b"x").is_ok());
        assert!(matches!(
            verify_chunk(&id, b"y"),
            Err(ChunkError::Corrupt { .. })
        ));
    }
}
