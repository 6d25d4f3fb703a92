//! The HTTP server: accept loop, connection limits and timeouts, graceful shutdown.
use crate::blob::BlobStore;
use crate::config::WalrusConfig;
use crate::meta::MetaStore;
use crate::meta_pg::PgMeta;
use crate::meta_redb::RedbMeta;
use crate::metrics::Metrics;
use crate::state::State;
use euca_aws::CredentialLookup;
use euca_service::{ListenOptions, MetricsAccess, ServiceConfig};
use futures::future::{BoxFuture, FutureExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metadata: {0}")]
    Meta(#[from] crate::meta::MetaError),
    #[error("blobs: {0}")]
    Blob(#[from] crate::blob::BlobError),
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("blob_url {0:?}: {1}")]
    BlobUrl(String, &'static str),
    #[error("blob_url {0:?}: {1}")]
    RemoteBlobs(String, String),
}

/// Blobs and staging files younger than this are left by the startup sweep of a
/// store other front ends share: they may be theirs, in flight (a blob is committed
/// within moments of being written, and a PUT's staging file grows while it is sent).
const SHARED_SWEEP_MIN_AGE: Duration = Duration::from_secs(3600);

/// The directory of a `file:///absolute/path` URL (taken as bytes, not decoded).
fn blob_dir(url: &str) -> Result<std::path::PathBuf, StartError> {
    let bad = |why| StartError::BlobUrl(url.to_string(), why);
    let path = url
        .strip_prefix("file://")
        .ok_or_else(|| bad("a local blob directory is named file:///absolute/path"))?;
    if !path.starts_with('/') {
        return Err(bad("the path must be absolute (file:///…)"));
    }
    Ok(path.into())
}

/// The blob store `blob_url` names (`None`: `data_dir` itself) and the SSE keyring
/// kept beside it.
pub(crate) fn open_blobs(
    blob_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<(BlobStore, crate::sse_keys::Keyring), StartError> {
    Ok(match blob_url {
        #[cfg(feature = "remote-blobs")]
        Some(url) if !url.starts_with("file:") => {
            let store = crate::blob_remote::open(url)
                .map_err(|e| StartError::RemoteBlobs(crate::blob::redacted(url), e.to_string()))?;
            (
                BlobStore::remote(store.clone()),
                crate::sse_keys::Keyring::in_store(store),
            )
        }
        #[cfg(not(feature = "remote-blobs"))]
        Some(url) if !url.starts_with("file:") => {
            return Err(StartError::BlobUrl(
                crate::blob::redacted(url),
                "this build has no remote blob stores (walrus's feature remote-blobs)",
            ))
        }
        url => {
            let root = match url {
                Some(url) => blob_dir(url)?,
                None => data_dir.to_path_buf(),
            };
            (
                BlobStore::local(root.clone())?,
                crate::sse_keys::Keyring::new(&root),
            )
        }
    })
}

pub struct Walrus {
    pub(crate) state: Arc<State>,
    listener: TcpListener,
    edge: ServiceConfig,
}

impl Walrus {
    /// Opens the stores, sweeps blobs left by a crash, and binds the listener.
    /// `read_only_ids`: canonical ids of accounts that may only GET and HEAD.
    /// (Boxed, like [`Walrus::serve`]: compiled here once, not in every binary
    /// that starts Walrus; see `euca_service::serve_api`.)
    pub fn open(
        cfg: WalrusConfig,
        identity: Arc<dyn CredentialLookup>,
        system_id: String,
        system_name: String,
        admin_account: String,
        read_only_ids: Vec<String>,
    ) -> BoxFuture<'static, Result<Self, StartError>> {
        Self::opening(
            cfg,
            identity,
            system_id,
            system_name,
            admin_account,
            read_only_ids,
        )
        .boxed()
    }

    async fn opening(
        cfg: WalrusConfig,
        identity: Arc<dyn CredentialLookup>,
        system_id: String,
        system_name: String,
        admin_account: String,
        read_only_ids: Vec<String>,
    ) -> Result<Self, StartError> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let meta: Arc<dyn MetaStore> = match &cfg.meta_url {
            Some(url) => Arc::new(PgMeta::open(url, cfg.meta_max_connections).await?),
            None => Arc::new(RedbMeta::open(
                &dir.join("meta.redb"),
                cfg.meta_cache_mib << 20,
            )?),
        };
        if cfg.meta_url.is_some() && cfg.blob_url.is_none() {
            tracing::warn!(
                "meta_url is set but blob_url is not: object bytes stay in this front end's data directory, where other front ends cannot read them"
            );
        }
        let (blobs, keyring) = open_blobs(cfg.blob_url.as_deref(), &dir)?;
        let blobs = blobs.with_direct_writes(cfg.direct_writes);
        // Another front end may be writing into a shared store right now.
        let min_age = if cfg.meta_url.is_some() || cfg.blob_url.is_some() {
            SHARED_SWEEP_MIN_AGE
        } else {
            Duration::ZERO
        };
        let referenced = meta.referenced_blobs().await?;
        let swept = blobs.sweep(&referenced, min_age).await?;
        if swept > 0 {
            tracing::info!(swept, "removed blobs left unreferenced by an earlier crash");
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| StartError::Listen(cfg.listen, e))?;
        let metrics = Arc::new(Metrics::default());
        euca_service::registry::add_source(&metrics);
        let state = Arc::new(State {
            cfg,
            meta,
            blobs,
            identity,
            system_id,
            system_name,
            admin_account,
            read_only_ids,
            metrics,
            metrics_access: MetricsAccess::Closed,
            keyring,
            access_logs: Default::default(),
            account_blocks: Default::default(),
        });
        Ok(Self {
            state,
            listener,
            edge: ServiceConfig::default(),
        })
    }

    /// The shared listener rules (`[service]`) and who may read `/_metrics`.
    pub fn with_edge(mut self, edge: ServiceConfig, metrics: MetricsAccess) -> Self {
        if let Some(st) = Arc::get_mut(&mut self.state) {
            st.metrics_access = metrics;
        }
        self.edge = edge;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.cfg.listen)
    }

    /// Makes sure the system bucket `name` exists, owned by the system account, with
    /// READ granted to `readers` (the rules are in `system.rs`).
    pub async fn ensure_system_bucket(
        &self,
        name: &str,
        readers: &[String],
    ) -> Result<(), StartError> {
        Ok(crate::system::ensure_system_bucket(&self.state, name, readers).await?)
    }

    /// Serves until `shutdown` turns true, then lets in-flight requests finish.
    /// (Boxed: the whole request path is compiled here, once.)
    pub fn serve(self, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        self.serving(shutdown).boxed()
    }

    async fn serving(self, shutdown: watch::Receiver<bool>) {
        let state = self.state;
        let mut opts = ListenOptions::new("walrus", state.cfg.max_connections, &self.edge);
        opts.header_timeout = Duration::from_secs(state.cfg.header_timeout_secs);
        opts.max_header_bytes = Some(state.cfg.max_header_bytes);
        opts.open_gauge = Some(state.metrics.open_connections.clone());
        opts.refusal = slow_down();
        let access = state.metrics_access.clone();
        let lifecycle = tokio::spawn(crate::lifecycle::worker(state.clone(), shutdown.clone()));
        let logs = tokio::spawn(crate::logging::worker(state.clone(), shutdown.clone()));
        let last = state.clone();
        euca_service::serve_api(self.listener, opts, state, access, shutdown).await;
        lifecycle.abort();
        // The delivery task ends at the shutdown signal, after a delivery it is in
        // the middle of (aborting it could lose the records it took).
        if tokio::time::timeout(std::time::Duration::from_secs(5), logs)
            .await
            .is_err()
        {
            tracing::warn!("bucket logging: a delivery still running at exit");
        }
        // The access log records of the requests that finished during the drain: one
        // last delivery, cut short rather than hold the exit.
        let last_delivery = crate::logging::deliver(&last);
        if tokio::time::timeout(std::time::Duration::from_secs(5), last_delivery)
            .await
            .is_err()
        {
            tracing::warn!("bucket logging: last delivery cut short; records lost");
        }
    }
}

/// What a client past the per-source connection cap reads before the close: S3's
/// `SlowDown` (clients back off and retry).
fn slow_down() -> bytes::Bytes {
    let body = crate::error::S3Error::new("SlowDown", 503, "Please reduce your request rate.")
        .to_xml("0000000000000000");
    bytes::Bytes::from(format!(
        "HTTP/1.1 503 Slow Down\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}
