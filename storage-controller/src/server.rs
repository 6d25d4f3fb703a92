//! Starting and stopping the SC: its state, the NBD and iSCSI listeners and the API
//! listener.
use crate::api::ApiState;
use crate::config::ScConfig;
use crate::error::ScError;
use crate::iscsi::IscsiServer;
use crate::nbd::{ExportTable, NbdServer, TlsConfig, TlsMode};
use crate::service::StorageController;
use crate::state::StateStore;
use crate::store::FileVolumeStore;
use euca_aws::auth::CredentialLookup;
use euca_chunks::ChunkStore;
use euca_service::{ListenOptions, MetricsAccess, ServiceConfig};
use futures::future::{BoxFuture, FutureExt};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct ScServer {
    sc: Arc<StorageController>,
    api: Arc<ApiState>,
    exports: ExportTable,
    api_listener: TcpListener,
    nbd_listener: TcpListener,
    iscsi_listener: Option<TcpListener>,
    iscsi_iqn_prefix: String,
    iscsi_max_connections: usize,
    per_source: usize,
    /// NBD TLS credentials and mode (`None`: no TLS).
    nbd_tls: Option<(TlsConfig, TlsMode)>,
    api_max_connections: usize,
    nbd_max_connections: usize,
    edge: ServiceConfig,
    /// The records, for the lease on them (PostgreSQL).
    state: StateStore,
    /// Ends the lease's renewals (once the volumes are flushed), and their task.
    lease_stop: watch::Sender<bool>,
    lease_task: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

impl ScServer {
    /// Opens the SC on `cfg.data_dir` (refusing a directory another SC process
    /// holds), recovers interrupted operations and binds both listeners.
    /// (Boxed, like [`ScServer::serve`]: compiled here once, not in every binary
    /// that starts an SC; see `euca_service::serve_api`.)
    pub fn open(
        cfg: ScConfig,
        identity: Arc<dyn CredentialLookup>,
        admin_account: String,
        chunks: Arc<dyn ChunkStore>,
    ) -> BoxFuture<'static, Result<Self, ScError>> {
        Self::opening(cfg, identity, admin_account, chunks).boxed()
    }

    async fn opening(
        cfg: ScConfig,
        identity: Arc<dyn CredentialLookup>,
        admin_account: String,
        chunks: Arc<dyn ChunkStore>,
    ) -> Result<Self, ScError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.data_dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ScError::IncorrectState(format!(
                "{} is in use by another storage controller",
                cfg.data_dir.display()
            )));
        }
        let chunk_size = cfg.chunk_size_mib << 20;
        if !chunk_size.is_power_of_two() || chunk_size < (64 << 10) {
            return Err(ScError::Invalid(
                "chunk_size_mib must be a power of two".into(),
            ));
        }
        let nbd_tls = nbd_tls(&cfg)?;
        let state = open_state(&cfg)?;
        // Renewed from now on: start-up (recovery, `euca up` waiting for the other
        // services) may take longer than the lease.
        let (lease_stop, stop) = watch::channel(false);
        let lease_task = {
            let state = state.clone();
            tokio::spawn(async move { state.keep_lease(stop).await })
        };
        let volumes = Arc::new(FileVolumeStore::new(cfg.data_dir.join("volumes"))?);
        let nbd_listener = TcpListener::bind(cfg.nbd_listen).await?;
        let iscsi_listener = match cfg.iscsi_listen_addr()? {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
                ScError::Invalid(format!(
                    "iSCSI listener {a}: {e} (iscsi_listen, or \"off\")"
                ))
            })?),
            None => None,
        };
        let iscsi_addr = match &iscsi_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let api_listener = TcpListener::bind(cfg.listen).await?;
        let exports = ExportTable::new();
        let sc = StorageController::open(
            state.clone(),
            volumes,
            chunks,
            exports.clone(),
            &cfg,
            nbd_listener.local_addr()?,
            iscsi_addr,
        )
        .await?;
        let api = Arc::new(ApiState {
            sc: sc.clone(),
            identity,
            admin_account,
            region: cfg.region.clone(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics_access: MetricsAccess::Closed,
        });
        Ok(ScServer {
            sc,
            api,
            exports,
            api_listener,
            nbd_listener,
            iscsi_listener,
            iscsi_iqn_prefix: cfg.iscsi_iqn_prefix.clone(),
            iscsi_max_connections: cfg.iscsi_max_connections,
            per_source: cfg.block_max_connections_per_source,
            nbd_tls,
            api_max_connections: cfg.max_connections,
            nbd_max_connections: cfg.nbd_max_connections,
            edge: ServiceConfig::default(),
            state,
            lease_stop,
            lease_task,
            _lock: lock,
        })
    }

    /// The shared listener rules (`[service]`) and who may read `/_metrics`.
    pub fn with_edge(mut self, edge: ServiceConfig, metrics: MetricsAccess) -> Self {
        if let Some(api) = Arc::get_mut(&mut self.api) {
            api.metrics_access = metrics;
        }
        self.edge = edge;
        self
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_listener.local_addr().ok()
    }

    pub fn nbd_addr(&self) -> Option<SocketAddr> {
        self.nbd_listener.local_addr().ok()
    }

    /// The iSCSI target's address (`None`: `iscsi_listen = "off"`).
    pub fn iscsi_addr(&self) -> Option<SocketAddr> {
        self.iscsi_listener.as_ref()?.local_addr().ok()
    }

    pub fn controller(&self) -> Arc<StorageController> {
        self.sc.clone()
    }

    /// Serves until `shutdown` turns true; then NBD connections finish their
    /// in-flight requests, and every open volume is flushed. (Boxed: the API, NBD
    /// and iSCSI paths are compiled here, once.)
    pub fn serve(self, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        self.serving(shutdown).boxed()
    }

    async fn serving(self, shutdown: watch::Receiver<bool>) {
        let mut nbd_stop = shutdown.clone();
        let mut nbd = NbdServer::new(self.exports.clone())
            .memory_budget(self.sc.nbd_memory_budget())
            .max_connections(self.nbd_max_connections)
            .max_connections_per_source(self.per_source);
        if let Some((config, mode)) = self.nbd_tls {
            nbd = nbd.tls(config, mode);
        }
        let nbd_task =
            tokio::spawn(nbd.serve(
                self.nbd_listener,
                async move { stopped(&mut nbd_stop).await },
            ));
        let iscsi_task = self.iscsi_listener.map(|l| {
            let mut stop = shutdown.clone();
            let server = IscsiServer::new(self.exports.clone())
                .iqn_prefix(self.iscsi_iqn_prefix)
                .max_connections(self.iscsi_max_connections)
                .max_connections_per_source(self.per_source);
            tokio::spawn(server.serve(l, async move { stopped(&mut stop).await }))
        });
        let opts = ListenOptions {
            header_timeout: Duration::from_secs(10),
            ..ListenOptions::new("sc-api", self.api_max_connections, &self.edge)
        };
        euca_service::registry::add_source(&self.api);
        let access = self.api.metrics_access.clone();
        euca_service::serve_api(self.api_listener, opts, self.api.clone(), access, shutdown).await;
        match nbd_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "NBD server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "NBD server task failed"),
            Ok(Ok(())) => {}
        }
        if let Some(t) = iscsi_task {
            match t.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "iSCSI server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "iSCSI server task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.sc.flush_all().await;
        // The lease is renewed until the volumes are flushed, then given back.
        let _ = self.lease_stop.send(true);
        let _ = self.lease_task.await;
        let state = self.state.clone();
        let released = tokio::task::spawn_blocking(move || state.release())
            .await
            .unwrap_or_else(|e| Err(ScError::State(e.to_string())));
        if let Err(e) = released {
            tracing::warn!(error = %e, "giving back the storage controller's lease");
        }
    }
}

/// The SC's records: `<data_dir>/sc.redb`, or the database at `meta_url` under
/// `name`. A `sc.redb` holding records beside an empty database is refused: those
/// volumes' records would silently be ignored (`euca migrate` moves them).
fn open_state(cfg: &ScConfig) -> Result<StateStore, ScError> {
    let local = cfg.data_dir.join("sc.redb");
    let Some(url) = &cfg.meta_url else {
        return StateStore::open(&local);
    };
    let holder = euca_pg::lease_holder(&cfg.data_dir)?;
    let state = StateStore::open_postgres(url, &cfg.name, &holder)?;
    let left_behind = || -> Result<bool, ScError> {
        Ok(local.is_file() && !StateStore::open(&local)?.is_empty()? && state.is_empty()?)
    };
    let checks = || -> Result<bool, ScError> {
        state.claim_snapshot_bucket(&cfg.snapshot_bucket)?;
        left_behind()
    };
    match checks() {
        Ok(false) => Ok(state),
        refused => {
            let _ = state.release();
            refused?;
            Err(ScError::IncorrectState(format!(
                "{} holds volume records and meta_url none for [sc] name {:?}: move them \
                 with `euca migrate` (which renames the file once they are copied), or set \
                 meta_url aside",
                local.display(),
                cfg.name
            )))
        }
    }
}

/// The NBD TLS setup `cfg` asks for: the mode from [`ScConfig::nbd_tls_mode`]
/// and the credentials from `tls_cert`/`tls_key` (which "required" needs).
fn nbd_tls(cfg: &ScConfig) -> Result<Option<(TlsConfig, TlsMode)>, ScError> {
    let mode = cfg.nbd_tls_mode()?;
    if mode == TlsMode::Off {
        if cfg.nbd_tls != "off" {
            tracing::warn!("no tls_cert/tls_key configured: NBD exports are served without TLS");
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Err(ScError::Invalid(format!(
            "nbd_tls = \"{mode}\" needs tls_cert and tls_key"
        )));
    };
    let config = TlsConfig::from_pem_files(cert, key, None)?;
    tracing::info!(%mode, cert = %cert.display(), "NBD TLS enabled");
    Ok(Some((config, mode)))
}

/// Resolves once `rx` says true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Volume, VolumeState};

    /// With `meta_url` set, records left in `sc.redb` are not silently ignored:
    /// the SC refuses to start until they are moved.
    #[test]
    fn records_left_in_redb_beside_an_empty_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ScConfig {
            data_dir: dir.path().to_path_buf(),
            meta_url: Some(euca_pg::testing::database_url()),
            ..ScConfig::default()
        };
        {
            let local = StateStore::open(&dir.path().join("sc.redb")).unwrap();
            assert!(local.is_empty().unwrap());
        }
        open_state(&cfg).unwrap().release().unwrap(); // an empty sc.redb is fine
        let local = StateStore::open(&dir.path().join("sc.redb")).unwrap();
        local
            .put_volume(&Volume {
                id: "vol-0000abcd".into(),
                size: 1 << 30,
                state: VolumeState::Available,
                created: "2026-12-05T00:00:00Z".into(),
                snapshot_id: None,
                attachment: None,
            })
            .unwrap();
        drop(local);
        let err = open_state(&cfg).err().expect("records would be ignored");
        assert!(err.to_string().contains("euca migrate"), "{err}");
        // Moved (what `euca migrate` does), the SC starts on them.
        let local = StateStore::open(&dir.path().join("sc.redb")).unwrap();
        let url = cfg.meta_url.clone().unwrap();
        let target = StateStore::open_postgres(&url, "sc", "migrate").unwrap();
        local.copy_into(&target).unwrap();
        target.release().unwrap();
        drop(local);
        let state = open_state(&cfg).unwrap();
        assert_eq!(state.volumes().unwrap().len(), 1);
    }
}
