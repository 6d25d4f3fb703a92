//! The content-addressed chunk store: one bucket holds chunks named by the SHA-256
//! of their bytes, and manifests that list chunks. Volume snapshots (the storage
//! controller) and installed images (the image cache) both keep their data this way,
//! each in a bucket of its own.
//!
//! Bucket layout ([`key`]):
//!
//! ```text
//! chunks/<sha256hex>            a chunk: 64 lowercase hex digits, the SHA-256 of its bytes
//! <manifest prefix><name>.json  a manifest (e.g. snapshots/snap-1234.json, images/<id>.json)
//! ```
//!
//! - [`key`]: key layout, hashing ([`chunk_id`]), id and name checks, digest
//!   verification.
//! - [`store`]: the [`ChunkStore`] trait and [`put_chunk_if_absent`].
//! - [`walrus`]: [`WalrusChunks`], a bucket through the project's S3 client.
//! - [`mem`]: [`MemChunks`], in memory, with counters and fault hooks for tests.
//! - [`gc`]: the garbage rules: [`sweep_unreferenced`] and
//!   [`delete_manifest_and_chunks`].
//!
//! What a manifest says is up to its user (a snapshot's geometry, an image's
//! pieces); this crate stores its bytes and asks the user, through a parse
//! function, which chunks it names.

pub mod error;
pub mod gc;
pub mod key;
pub mod mem;
pub mod store;
pub mod walrus;

pub use error::ChunkError;
pub use gc::{delete_manifest_and_chunks, sweep_unreferenced, DeleteStats, SweepStats};
pub use key::{
    chunk_id, chunk_key, is_chunk_id, manifest_key, validate_chunk_id, validate_manifest_name,
    verify_chunk, verify_chunk_blocking, CHUNK_PREFIX, MANIFEST_SUFFIX,
};
pub use mem::MemChunks;
pub use store::{put_chunk_if_absent, ChunkStore, StoredChunk};
pub use walrus::WalrusChunks;
