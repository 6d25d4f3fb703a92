//! Walrus: the cloud's S3-compatible object store.
//!
//! Request path: [`server`] hands the listener to `euca-service`'s serve loop (which
//! answers `/_health` and `/_metrics`, and labels metrics with the
//! [`endpoint::S3Endpoint`] parsed from the head), [`api::handle`] resolves the
//! bucket and key (path-style, virtual-host or the legacy `/services/Walrus` prefix),
//! authenticates through `euca_aws::authenticate` before any handler runs, and
//! dispatches to the handlers in `api_*` (`api_object/` has one file per object
//! operation). Handlers share [`handler`] (the request, response builders, ACL and
//! bucket checks) and [`state::State`]; nothing below [`api`] imports it or
//! [`server`], so the files have no import cycles (`scripts/check-import-cycles.py`).
//! Metadata lives behind [`meta::MetaStore`]
//! (embedded redb by default); bytes live behind [`blob::BlobStore`] (`object_store`,
//! local filesystem by default).
pub mod access_logs;
pub mod account_block;
pub mod acl;
pub mod api;
mod api_account;
mod api_bucket;
mod api_bucket_encryption;
mod api_bucket_tagging;
mod api_multipart;
mod api_object;
mod api_policy;
pub mod authz;
pub mod blob;
#[cfg(feature = "remote-blobs")]
pub mod blob_remote;
pub mod body;
mod checksums;
pub mod config;
mod cors;
pub mod endpoint;
pub mod error;
pub mod handler;
mod lifecycle;
mod list;
pub mod logging;
pub mod meta;
pub(crate) mod meta_kv;
pub mod meta_pg;
pub mod meta_redb;
pub mod metrics;
pub mod migrate;
mod objectlock;
mod ownership;
pub mod policy;
mod post;
pub mod public_access;
pub mod server;
mod sse;
mod sse_keys;
pub mod state;
pub mod system;
mod tags;
mod versioning;
pub mod xmlin;
pub mod xmlreq;

pub use config::WalrusConfig;
pub use server::Walrus;

/// The listing algorithm, exposed for integration tests.
#[doc(hidden)]
pub async fn list_for_tests(
    meta: &dyn meta::MetaStore,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    marker: Option<&str>,
    max: usize,
) -> error::S3Result<list::Listing> {
    list::list(meta, bucket, prefix, delimiter, marker, max).await
}
