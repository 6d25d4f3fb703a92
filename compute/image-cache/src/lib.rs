//! Images for the nodes: installed once centrally, cached on every node, shared
//! between nodes so that an image crosses the cloud's uplink about once.
//!
//! - [`install`]: a bundle in Walrus → verified, decrypted raw image → SHA-256
//!   pieces (4 MiB) plus an [`ImageManifest`] in the `euca-images` bucket. The
//!   manifest's own SHA-256 is the [`ImageId`].
//! - [`store`]: a node's on-disk cache (pieces written into a sparse image file, a
//!   presence map, LRU by bytes between watermarks, pins).
//! - [`daemon`]: the cache daemon: fetches pieces from peers and, when the tracker
//!   allows it, from Walrus; verifies every piece; serves its pieces to peers.
//! - [`tracker`]: soft-state tracker on the cluster controller: who holds which
//!   pieces, and which one or two nodes per image may fetch from Walrus.
//! - [`http`]: the small HTTP plumbing they share (servers, bearer token, clients).
pub mod config;
pub mod daemon;
pub mod error;
pub mod http;
pub mod install;
pub mod manifest;
pub mod origin;
pub mod store;
pub mod tracker;

pub use error::CacheError;
pub use manifest::{ImageId, ImageManifest};
