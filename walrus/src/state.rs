//! The shared state of a running Walrus, handed to every request handler.
use crate::blob::BlobStore;
use crate::config::WalrusConfig;
use crate::meta::MetaStore;
use crate::metrics::Metrics;
use euca_aws::CredentialLookup;
use euca_service::MetricsAccess;
use std::sync::Arc;

/// Shared state of a running Walrus.
pub struct State {
    pub cfg: WalrusConfig,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    /// Where request signatures are checked: the local store or the identity service.
    pub identity: Arc<dyn CredentialLookup>,
    /// Canonical id of the cloud's system account (grantee of `aws-exec-read`).
    pub system_id: String,
    /// Its name (the display name of the system buckets' owner).
    pub system_name: String,
    pub admin_account: String,
    /// Canonical ids of accounts that may only read (GET/HEAD), e.g. the nodes' key.
    pub read_only_ids: Vec<String>,
    pub metrics: Arc<Metrics>,
    /// Who may read `/_metrics` (closed until [`crate::server::Walrus::with_edge`] says otherwise).
    pub metrics_access: MetricsAccess,
    /// The SSE-S3 master key (loaded on first use).
    pub keyring: crate::sse_keys::Keyring,
    /// Server access log records waiting for delivery (bucket logging).
    pub access_logs: crate::access_logs::AccessLogs,
    /// The accounts' public access blocks (S3 Control), as last read.
    pub account_blocks: crate::account_block::AccountBlocks,
}

impl State {
    /// Stores (`Some`) or removes (`None`) one of a bucket's configuration documents
    /// ([`crate::meta::BucketConfig`] names them).
    pub async fn set_bucket_config(
        &self,
        bucket: &str,
        config: &str,
        doc: Option<String>,
    ) -> crate::error::S3Result<()> {
        self.meta
            .apply(crate::meta::MetaOp::SetBucketConfig {
                name: bucket.to_string(),
                config: config.to_string(),
                doc,
            })
            .await?;
        Ok(())
    }
}
