//! The HTTP server: accept loop, connection limits and timeouts, graceful shutdown.
use crate::api;
use crate::blob::BlobStore;
use crate::config::WalrusConfig;
use crate::meta::MetaStore;
use crate::meta_redb::RedbMeta;
use crate::metrics::Metrics;
use euca_identity::IdentityStore;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

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
}

/// Shared state of a running Walrus.
pub struct State {
    pub cfg: WalrusConfig,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    pub identity: IdentityStore,
    /// Canonical id of the cloud's system account (grantee of `aws-exec-read`).
    pub system_id: String,
    pub admin_account: String,
    /// Canonical ids of accounts that may only read (GET/HEAD), e.g. the nodes' key.
    pub read_only_ids: Vec<String>,
    pub metrics: Metrics,
}

pub struct Walrus {
    pub(crate) state: Arc<State>,
    listener: TcpListener,
}

impl Walrus {
    /// Opens the stores, sweeps blobs left by a crash, and binds the listener.
    /// `read_only_ids`: canonical ids of accounts that may only GET and HEAD.
    pub async fn open(
        cfg: WalrusConfig,
        identity: IdentityStore,
        system_id: String,
        admin_account: String,
        read_only_ids: Vec<String>,
    ) -> Result<Self, StartError> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let meta: Arc<dyn MetaStore> = Arc::new(RedbMeta::open(
            &dir.join("meta.redb"),
            cfg.meta_cache_mib << 20,
        )?);
        let blobs = BlobStore::local(dir.clone())?;
        let referenced = meta.referenced_blobs()?;
        let swept = blobs.sweep(&referenced).await?;
        if swept > 0 {
            tracing::info!(swept, "removed blobs left unreferenced by an earlier crash");
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| StartError::Listen(cfg.listen, e))?;
        let state = Arc::new(State {
            cfg,
            meta,
            blobs,
            identity,
            system_id,
            admin_account,
            read_only_ids,
            metrics: Metrics::default(),
        });
        Ok(Self { state, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.cfg.listen)
    }

    /// Serves until `shutdown` turns true, then lets in-flight requests finish.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let state = self.state;
        let permits = Arc::new(Semaphore::new(state.cfg.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let st = state.clone();
            let svc = service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(st, req, peer).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(state.cfg.header_timeout_secs))
                .max_buf_size(state.cfg.max_header_bytes.max(8192))
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn);
            let st = state.clone();
            st.metrics.open_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with error");
                }
                st.metrics.open_connections.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
        }
    }
}
