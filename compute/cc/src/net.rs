//! The cluster's network as the CC holds it: the router namespace rendering the
//! CLC's [`NetworkState`], the state journaled (`<state_dir>/network.json`:
//! temp file, fsync, rename) and re-applied at start, and the metadata service.
//!
//! `applied` (in `GET /v1/network`) is the digest of the state applied by this
//! process: `None` after a restart, so the CLC sends the state again even though
//! the journaled one was re-applied already (instances kept their network).
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use euca_compute_proto::net::{ClusterNet, NetMode, NetworkState, NetworkStatus};
use euca_vnet::router::{Router, METADATA_IP};
use euca_vnet::VnetError;
use tokio::sync::watch;

use crate::metadata::{Metadata, UserData};
use crate::netconfig::NetConfig;
use crate::CcError;

/// The journaled state's file name in the state directory.
pub const STATE_FILE: &str = "network.json";

/// The cluster's network.
pub struct Network {
    config: ClusterNet,
    router: Option<Router>,
    state_file: PathBuf,
    /// What the metadata service answers from (the state last applied, or the
    /// journaled one after a restart).
    current: Arc<RwLock<Arc<NetworkState>>>,
    applied: Mutex<Option<String>>,
    /// One apply at a time, in arrival order.
    apply_lock: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    metadata_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn net_err(e: VnetError) -> CcError {
    match e {
        VnetError::Invalid { .. } => CcError::BadRequest(e.to_string()),
        e => CcError::Network(e.to_string()),
    }
}

/// Runs file work off the runtime.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CcError> + Send + 'static,
) -> Result<T, CcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CcError::Journal(e.to_string()))?
}

/// Writes `data` durably: a temporary file, fsync, rename, fsync of the directory.
fn write_durable(path: &Path, data: &[u8]) -> Result<(), CcError> {
    let j = |e: std::io::Error| CcError::Journal(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(j)?;
    f.write_all(data).map_err(j)?;
    f.sync_all().map_err(j)?;
    std::fs::rename(&tmp, path).map_err(j)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(j)?;
    }
    Ok(())
}

fn read_state(path: &Path) -> Result<Option<NetworkState>, CcError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| CcError::Journal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CcError::Journal(format!("{}: {e}", path.display()))),
    }
}

impl Network {
    /// Builds (or re-adopts) the router for `cfg` and re-applies the journaled
    /// state; starts the metadata service in `static` and the managed modes. Mode `off`, or no
    /// root: no router (one warning), `GET /v1/network` says `off`.
    pub async fn start(
        cfg: &NetConfig,
        state_dir: &Path,
        user_data: UserData,
    ) -> Result<Arc<Network>, CcError> {
        let mut mode = cfg.mode;
        if mode != NetMode::Off && !euca_vnet::can_admin_network() {
            tracing::warn!(
                mode = mode.as_str(),
                "cc: not root, so instance networking is off ([cc.net] mode ignored)"
            );
            mode = NetMode::Off;
        }
        let config = if mode == NetMode::Off {
            ClusterNet::default()
        } else {
            cfg.cluster_net(state_dir)?
        };
        let state_file = state_dir.join(STATE_FILE);
        let journaled = {
            let p = state_file.clone();
            off_runtime(move || read_state(&p)).await?
        };
        let (stop, _) = watch::channel(false);
        let mut net = Network {
            config,
            router: None,
            state_file,
            current: Arc::new(RwLock::new(Arc::new(journaled.clone().unwrap_or_default()))),
            applied: Mutex::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            stop,
            metadata_task: Mutex::new(None),
        };
        if !matches!(mode, NetMode::Off | NetMode::System) {
            let router = Router::setup(cfg.router_spec(state_dir)?)
                .await
                .map_err(net_err)?;
            if let Some(s) = &journaled {
                // Instances keep their network across the CC's restart; a failure
                // here is retried by the CLC's next PUT.
                if let Err(e) = router.apply(s).await {
                    tracing::error!(error = %e, "cc: re-applying the journaled network failed");
                }
            }
            // STATIC and the managed modes, as Eucalyptus (SYSTEM's guests are on
            // a LAN the cloud does not route).
            if mode.is_managed() || mode == NetMode::Static {
                let ns = router.spec().netns.clone();
                let l = bind_in(&ns).await?;
                let md = Metadata::new(net.current.clone(), user_data);
                let h = tokio::spawn(md.serve(l, net.stop.subscribe()));
                *net.metadata_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
            }
            net.router = Some(router);
        }
        Ok(Arc::new(net))
    }

    /// `GET /v1/network`.
    pub fn status(&self) -> NetworkStatus {
        NetworkStatus {
            config: self.config.clone(),
            applied: self
                .applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// The router namespace, when there is one.
    pub fn router_netns(&self) -> Option<&str> {
        self.router.as_ref().map(|r| r.spec().netns.as_str())
    }

    /// `PUT /v1/network`: journals `state`, renders it, remembers its digest.
    pub async fn apply(&self, state: NetworkState) -> Result<NetworkStatus, CcError> {
        euca_vnet::router::check_state(&state).map_err(net_err)?;
        let _one = self.apply_lock.lock().await;
        let digest = state.digest();
        let json = serde_json::to_vec(&state).map_err(|e| CcError::BadRequest(e.to_string()))?;
        let p = self.state_file.clone();
        off_runtime(move || write_durable(&p, &json)).await?;
        if let Some(r) = &self.router {
            let started = std::time::Instant::now();
            r.apply(&state).await.map_err(net_err)?;
            tracing::info!(
                instances = state.instances.len(),
                groups = state.groups.len(),
                ms = started.elapsed().as_millis() as u64,
                "cc: network applied"
            );
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        Ok(self.status())
    }

    /// Stops the metadata service and DHCP; the namespace stays (see
    /// [`delete_router`]).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let h = self
            .metadata_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h {
            let _ = h.await;
        }
        if let Some(r) = &self.router {
            r.stop().await;
        }
    }
}

async fn bind_in(ns: &str) -> Result<tokio::net::TcpListener, CcError> {
    let ns2 = ns.to_string();
    let std = tokio::task::spawn_blocking(move || {
        crate::metadata::bind_in_netns(&ns2, SocketAddr::from((METADATA_IP, 80)))
    })
    .await
    .map_err(|e| CcError::Network(e.to_string()))?
    .map_err(|e| CcError::Network(format!("metadata service in {ns}: {e}")))?;
    tokio::net::TcpListener::from_std(std).map_err(|e| CcError::Network(e.to_string()))
}

/// Deletes the router namespace of the CC whose state dir this is (tests, `down`).
pub async fn delete_router(state_dir: &Path) -> Result<(), CcError> {
    let ns = euca_vnet::router::router_netns(state_dir);
    euca_vnet::router::destroy(&ns).await.map_err(net_err)
}
