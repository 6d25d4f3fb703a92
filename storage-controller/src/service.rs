//! The storage controller's operations: volumes, attachments (NBD exports or iSCSI
//! targets) and
//! snapshots, with every state change committed before it is reported.
//!
//! A volume's device stack, opened on first use and kept open (and locked) while
//! the SC runs:
//!
//! ```text
//! NBD export / iSCSI target ──► VolumeDevice (snapshot cuts: copy-before-write)
//!                   └─► LazyDevice (only for volumes made from a snapshot:
//!                   │              chunks pulled from Walrus on first touch)
//!                   └─► the VolumeStore's device (a sparse file by default)
//! ```
use crate::config::ScConfig;
use crate::device::{BlockDevice, LazyDevice, VolumeDevice};
use crate::error::ScError;
use crate::export::{Export, ExportTable, Protocol};
use crate::model::{
    new_id, now_rfc3339, valid_id, Attachment, ChapCredentials, Progress, Snapshot, SnapshotState,
    Volume, VolumeState, GIB,
};
use crate::nbd::TlsMode;
use crate::snapshot::{
    finish_snapshot, referenced_chunks, sweep_orphan_chunks, ChunkError, ChunkStore, SnapshotError,
    SnapshotManifest, SnapshotProgress, SnapshotStore, SweepStats,
};
use crate::state::StateStore;
use crate::store::VolumeStore;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, Notify, RwLock};

/// An open volume: the device exported and snapshotted, and its lazy layer if any.
struct OpenVolume {
    device: VolumeDevice,
    lazy: Option<Arc<LazyDevice>>,
}

/// A snapshot being uploaded.
struct Running {
    volume_id: String,
    progress: Arc<SnapshotProgress>,
}

impl From<SnapshotError> for ScError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::CutActive => ScError::IncorrectState(e.to_string()),
            SnapshotError::Invalid(m) => ScError::Invalid(m),
            SnapshotError::Io(e) => ScError::Io(e),
            SnapshotError::Store(e) => e.into(),
        }
    }
}

impl From<ChunkError> for ScError {
    fn from(e: ChunkError) -> Self {
        ScError::Chunks(e.to_string())
    }
}

fn progress_of(p: &SnapshotProgress) -> Progress {
    let r = p.report();
    Progress {
        chunks_total: r.chunks_total,
        chunks_done: r.chunks_done,
        chunks_zero: r.chunks_zero,
        chunks_reused: r.chunks_reused,
        chunks_uploaded: r.chunks_uploaded,
        bytes_uploaded: r.bytes_uploaded,
    }
}

pub struct StorageController {
    state: StateStore,
    volumes: Arc<dyn VolumeStore>,
    chunks: Arc<dyn ChunkStore>,
    exports: ExportTable,
    /// Where the scratch files live: preserved chunks of running snapshots
    /// (`cow/`) and the presence maps and manifests of lazy volumes (`lazy/`).
    scratch: PathBuf,
    chunk_size: u64,
    max_volume: u64,
    /// `host:port` put in NBD URIs.
    nbd_authority: String,
    /// `host:port` put in iSCSI URIs, and the IQN prefix; `None`: iSCSI is off.
    iscsi: Option<(String, String)>,
    /// NBD TLS mode in effect: nodes that must use TLS get `nbds://` URIs.
    nbd_tls: TlsMode,
    /// Payload bytes all NBD connections together may hold (`nbd_memory_mib`).
    nbd_memory: usize,
    open: Mutex<HashMap<String, Arc<OpenVolume>>>,
    /// Control-plane changes are serialised: they are rare, and it makes every
    /// check-then-change atomic.
    ops: Mutex<()>,
    /// Uploads hold it shared from their first chunk to their manifest; deleting a
    /// snapshot or a volume, and sweeping orphaned chunks, hold it exclusively
    /// while they remove unreferenced chunks.
    chunk_gc: Arc<RwLock<()>>,
    /// Unreferenced chunks younger than this are not swept (`orphan_chunk_grace_secs`).
    orphan_grace: Duration,
    /// Signalled when a sweep kept unreferenced chunks for being too young: the
    /// sweeper runs again once they are old enough.
    sweep_later: Arc<Notify>,
    running: std::sync::Mutex<HashMap<String, Running>>,
}

fn lazy_paths(scratch: &std::path::Path, id: &str) -> (PathBuf, PathBuf) {
    (
        scratch.join("lazy").join(format!("{id}.present")),
        scratch.join("lazy").join(format!("{id}.manifest.json")),
    )
}

impl StorageController {
    /// Opens the SC's state, finishes or rolls back whatever a crash interrupted,
    /// and re-creates the exports of attached volumes (so nodes can reconnect).
    /// `cfg` gives the scratch directory (`data_dir`), the chunk size, the
    /// volume size limit, the host put in NBD URIs and whether they are
    /// `nbds://` (`nbd_tls`); `nbd_addr` is where the
    /// NBD server listens, `iscsi_addr` the iSCSI target (if it runs).
    pub async fn open(
        state: StateStore,
        volumes: Arc<dyn VolumeStore>,
        chunks: Arc<dyn ChunkStore>,
        exports: ExportTable,
        cfg: &ScConfig,
        nbd_addr: SocketAddr,
        iscsi_addr: Option<SocketAddr>,
    ) -> Result<Arc<Self>, ScError> {
        let scratch = cfg.data_dir.clone();
        let chunk_size = cfg.chunk_size_mib << 20;
        let max_volume = cfg.max_volume_gib.saturating_mul(GIB);
        let nbd_host = cfg.nbd_host.clone();
        let nbd_tls = cfg.nbd_tls_mode()?;
        std::fs::create_dir_all(scratch.join("cow"))?;
        std::fs::create_dir_all(scratch.join("lazy"))?;
        let host_of = |addr: SocketAddr| match &nbd_host {
            Some(h) => h.clone(),
            None => match addr.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            },
        };
        let host = host_of(nbd_addr);
        let iscsi = iscsi_addr.map(|a| {
            (
                format!("{}:{}", host_of(a), a.port()),
                cfg.iscsi_iqn_prefix.clone(),
            )
        });
        let sc = Arc::new(StorageController {
            state,
            volumes,
            chunks,
            exports,
            scratch,
            chunk_size,
            max_volume,
            nbd_authority: format!("{host}:{}", nbd_addr.port()),
            iscsi,
            nbd_tls,
            nbd_memory: usize::try_from(cfg.nbd_memory_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            open: Mutex::new(HashMap::new()),
            ops: Mutex::new(()),
            chunk_gc: Arc::new(RwLock::new(())),
            orphan_grace: Duration::from_secs(cfg.orphan_chunk_grace_secs),
            sweep_later: Arc::new(Notify::new()),
            running: std::sync::Mutex::new(HashMap::new()),
        });
        sc.recover().await?;
        sc.spawn_sweeper();
        Ok(sc)
    }

    /// Sweeps orphaned chunks now (a crash may have left some, see
    /// [`StorageController::sweep_orphan_chunks`]) and again whenever a sweep
    /// kept chunks only for being younger than the grace period. Walrus may not
    /// serve yet when the SC opens, so the first sweep is retried a few times.
    fn spawn_sweeper(self: &Arc<Self>) {
        let sc = Arc::downgrade(self);
        let later = self.sweep_later.clone();
        let grace = self.orphan_grace;
        tokio::spawn(async move {
            for attempt in 1..=5u32 {
                let Some(s) = sc.upgrade() else { return };
                match s.sweep_orphan_chunks().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(attempt, error = %e, "sweeping orphaned snapshot chunks failed")
                    }
                }
                drop(s);
                tokio::time::sleep(Duration::from_secs(5 * u64::from(attempt))).await;
            }
            loop {
                later.notified().await;
                tokio::time::sleep(grace + Duration::from_secs(1)).await;
                let Some(s) = sc.upgrade() else { return };
                if let Err(e) = s.sweep_orphan_chunks().await {
                    tracing::warn!(error = %e, "sweeping orphaned snapshot chunks failed");
                }
            }
        });
    }

    /// Deletes the chunks in the snapshot store that no manifest (of a snapshot,
    /// or kept beside a volume made from one) refers to and that are older than
    /// `orphan_chunk_grace_secs`: those of uploads a crash or an error cut short.
    /// Runs exclusive of uploads and chunk deletions (the `chunk_gc` lock), so a
    /// running upload's chunks are never taken for orphans.
    pub async fn sweep_orphan_chunks(&self) -> Result<SweepStats, ScError> {
        let _gc = self.chunk_gc.write().await;
        self.sweep_locked().await
    }

    /// [`StorageController::sweep_orphan_chunks`] with `chunk_gc` held exclusively.
    async fn sweep_locked(&self) -> Result<SweepStats, ScError> {
        let mut lazy = Vec::new();
        for v in self.state.volumes()? {
            if let Some(m) = self.lazy_manifest(&v.id).await? {
                lazy.push(m);
            }
        }
        let keep = referenced_chunks(&lazy);
        let before = SystemTime::now()
            .checked_sub(self.orphan_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stats = sweep_orphan_chunks(self.chunks.as_ref(), &keep, before).await?;
        if stats.deleted + stats.too_young + stats.undated > 0 {
            tracing::info!(
                deleted = stats.deleted,
                kept_too_young = stats.too_young,
                kept_undated = stats.undated,
                referenced = stats.referenced,
                "swept snapshot chunks no manifest refers to"
            );
        }
        if stats.too_young > 0 {
            self.sweep_later.notify_one();
        }
        Ok(stats)
    }

    async fn recover(&self) -> Result<(), ScError> {
        for mut s in self.state.snapshots()? {
            if s.state == SnapshotState::Pending {
                s.state = SnapshotState::Error;
                s.error = Some("interrupted by a restart of the storage controller".into());
                self.state.put_snapshot(&s)?;
                tracing::warn!(snapshot = %s.id, "snapshot interrupted by a restart; marked error");
            }
        }
        if let Ok(mut rd) = tokio::fs::read_dir(self.scratch.join("cow")).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
        for v in self.state.volumes()? {
            match v.state {
                VolumeState::Creating | VolumeState::Deleting => {
                    self.destroy(&v.id).await?;
                    tracing::warn!(volume = %v.id, state = ?v.state, "finished an interrupted create/delete by removing the volume");
                }
                VolumeState::InUse => {
                    if let Some(a) = &v.attachment {
                        let dev = self.device(&v).await?;
                        self.export(&v, a, dev.device.clone());
                    }
                }
                VolumeState::Available => {}
            }
        }
        Ok(())
    }

    fn volume_record(&self, id: &str) -> Result<Volume, ScError> {
        if !valid_id("vol", id) {
            return Err(ScError::NoSuchVolume(id.into()));
        }
        self.state
            .volume(id)?
            .ok_or_else(|| ScError::NoSuchVolume(id.into()))
    }

    fn snapshot_record(&self, id: &str) -> Result<Snapshot, ScError> {
        if !valid_id("snap", id) {
            return Err(ScError::NoSuchSnapshot(id.into()));
        }
        self.state
            .snapshot(id)?
            .ok_or_else(|| ScError::NoSuchSnapshot(id.into()))
    }

    /// Opens (once) the device stack of a volume.
    async fn device(&self, v: &Volume) -> Result<Arc<OpenVolume>, ScError> {
        let mut open = self.open.lock().await;
        if let Some(o) = open.get(&v.id) {
            return Ok(o.clone());
        }
        let base = self.volumes.open(&v.id).await?;
        let (present, manifest_path) = lazy_paths(&self.scratch, &v.id);
        let (top, lazy): (Arc<dyn BlockDevice>, _) = if v.snapshot_id.is_some()
            && tokio::fs::metadata(&manifest_path).await.is_ok()
        {
            let bytes = tokio::fs::read(&manifest_path).await?;
            let manifest: SnapshotManifest = serde_json::from_slice(&bytes)
                .map_err(|e| ScError::State(format!("{}: {e}", manifest_path.display())))?;
            let lazy =
                Arc::new(LazyDevice::open(base, manifest, self.chunks.clone(), &present).await?);
            (lazy.clone(), Some(lazy))
        } else {
            (base, None)
        };
        let o = Arc::new(OpenVolume {
            device: VolumeDevice::new(top),
            lazy,
        });
        open.insert(v.id.clone(), o.clone());
        Ok(o)
    }

    fn export(&self, v: &Volume, a: &Attachment, device: VolumeDevice) {
        let chap = a.chap.as_ref().map(|c| crate::iscsi::Chap {
            user: c.user.clone(),
            secret: c.secret.clone().into_bytes(),
            target: None,
        });
        self.exports.insert(
            a.export.clone(),
            Export {
                protocol: a.protocol,
                device: Arc::new(device),
                allowed_peer: Some(a.node),
                read_only: false,
                description: format!("{} attached to {}", v.id, a.node),
                chap,
            },
        );
    }

    /// `nbds://` when the node must use TLS (see [`TlsMode::requires_tls`]), so
    /// libnbd and qemu start TLS; `nbd://` otherwise. iSCSI:
    /// `iscsi://USER%SECRET@host:port/<iqn>/0`, as libiscsi and QEMU take it (the
    /// secret is hex, so nothing in it needs escaping).
    fn uri(&self, a: &Attachment) -> String {
        if a.protocol == Protocol::Iscsi {
            let (authority, prefix) = self
                .iscsi
                .as_ref()
                .map_or(("iscsi-is-off", ""), |(h, p)| (h.as_str(), p.as_str()));
            let creds = a
                .chap
                .as_ref()
                .map(|c| format!("{}%{}@", c.user, c.secret))
                .unwrap_or_default();
            return format!("iscsi://{creds}{authority}/{prefix}:{}/0", a.export);
        }
        let scheme = if self.nbd_tls.requires_tls(Some(a.node)) {
            "nbds"
        } else {
            "nbd"
        };
        format!("{scheme}://{}/{}", self.nbd_authority, a.export)
    }

    /// Removes a volume's bytes, scratch files and record (it must not be open
    /// by an export).
    async fn destroy(&self, id: &str) -> Result<(), ScError> {
        self.open.lock().await.remove(id);
        self.volumes.delete(id).await?;
        let (present, manifest) = lazy_paths(&self.scratch, id);
        let _ = tokio::fs::remove_file(present).await;
        let _ = tokio::fs::remove_file(manifest).await;
        self.state.remove_volume(id)
    }

    // ---- volumes ----------------------------------------------------------------

    pub async fn create_volume(
        &self,
        size_gib: Option<u64>,
        snapshot_id: Option<&str>,
    ) -> Result<Volume, ScError> {
        let _op = self.ops.lock().await;
        let snap = match snapshot_id {
            Some(s) => {
                let snap = self.snapshot_record(s)?;
                if snap.state != SnapshotState::Completed {
                    return Err(ScError::IncorrectState(format!(
                        "snapshot {s} is not completed"
                    )));
                }
                Some(snap)
            }
            None => None,
        };
        let size = match (size_gib, &snap) {
            (Some(0), _) => return Err(ScError::Invalid("size must be at least 1 GiB".into())),
            (Some(g), _) if g > self.max_volume / GIB => {
                return Err(ScError::Invalid(format!(
                    "size {g} GiB is above the limit of {} GiB",
                    self.max_volume / GIB
                )))
            }
            (Some(g), Some(s)) if g * GIB < s.size => {
                return Err(ScError::Invalid(format!(
                    "size {g} GiB is smaller than snapshot {} ({} bytes)",
                    s.id, s.size
                )))
            }
            (Some(g), _) => g * GIB,
            (None, Some(s)) => s.size,
            (None, None) => return Err(ScError::Invalid("give a size or a snapshot".into())),
        };
        let mut id = new_id("vol");
        while self.state.volume(&id)?.is_some() || self.volumes.exists(&id).await {
            id = new_id("vol");
        }
        let mut v = Volume {
            id: id.clone(),
            size,
            state: VolumeState::Creating,
            created: now_rfc3339(),
            snapshot_id: snap.as_ref().map(|s| s.id.clone()),
            attachment: None,
        };
        self.state.put_volume(&v)?;
        let made = async {
            if let Some(s) = &snap {
                // The manifest is kept beside the volume: the volume keeps working
                // (and its chunks stay referenced) even if the snapshot is deleted.
                let manifest = self.chunks.get_manifest(&s.id).await?;
                let (_, mpath) = lazy_paths(&self.scratch, &id);
                let bytes =
                    serde_json::to_vec(&manifest).map_err(|e| ScError::State(e.to_string()))?;
                write_durably(&mpath, &bytes).await?;
            }
            self.volumes.create(&id, size).await
        }
        .await;
        if let Err(e) = made {
            let _ = self.destroy(&id).await;
            return Err(e);
        }
        v.state = VolumeState::Available;
        self.state.put_volume(&v)?;
        tracing::info!(volume = %id, size, snapshot = ?v.snapshot_id, "volume created");
        Ok(v)
    }

    pub fn describe_volume(&self, id: &str) -> Result<Volume, ScError> {
        self.volume_record(id)
    }

    pub fn volumes(&self) -> Result<Vec<Volume>, ScError> {
        self.state.volumes()
    }

    pub async fn delete_volume(&self, id: &str) -> Result<(), ScError> {
        let _op = self.ops.lock().await;
        let mut v = self.volume_record(id)?;
        match v.state {
            VolumeState::Available => {}
            VolumeState::InUse => {
                return Err(ScError::VolumeInUse(format!(
                    "{id} (detach it before deleting it)"
                )))
            }
            s => return Err(ScError::IncorrectState(format!("volume {id} is {s:?}"))),
        }
        if self.snapshot_running_for(id) {
            return Err(ScError::IncorrectState(format!(
                "a snapshot of {id} is still being taken"
            )));
        }
        v.state = VolumeState::Deleting;
        self.state.put_volume(&v)?;
        // Unreadable: its chunks are left for the orphan sweep rather than guessed at.
        let source = self.lazy_manifest(id).await.unwrap_or_else(|e| {
            tracing::warn!(volume = id, error = %e, "not collecting the chunks of a deleted volume");
            None
        });
        self.destroy(id).await?;
        // A volume made from a snapshot kept that snapshot's chunks alive; if the
        // snapshot is gone, the chunks nobody else refers to go too.
        if let Some(m) = source {
            let _gc = self.chunk_gc.write().await;
            let keep = self.chunks_in_use(None, Some(id)).await?;
            let mut removed = 0u64;
            for c in m.chunk_ids() {
                if !keep.contains(c) {
                    self.chunks.delete_chunk(c).await?;
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::info!(volume = %id, chunks_removed = removed, "removed chunks of a deleted snapshot");
            }
        }
        tracing::info!(volume = %id, "volume deleted");
        Ok(())
    }

    /// Exports the volume to `node` over `protocol` and returns the volume and the
    /// URI the node opens. A volume is attached (read-write) to at most one node.
    /// Over iSCSI the attachment gets its own CHAP user and secret.
    pub async fn attach(
        &self,
        id: &str,
        node: IpAddr,
        protocol: Protocol,
    ) -> Result<(Volume, String), ScError> {
        if protocol == Protocol::Iscsi && self.iscsi.is_none() {
            return Err(ScError::Invalid(
                "iSCSI is off on this storage controller (iscsi_listen)".into(),
            ));
        }
        let _op = self.ops.lock().await;
        let mut v = self.volume_record(id)?;
        match v.state {
            VolumeState::Available => {}
            VolumeState::InUse => return Err(ScError::VolumeInUse(id.into())),
            s => return Err(ScError::IncorrectState(format!("volume {id} is {s:?}"))),
        }
        let dev = self.device(&v).await?;
        let a = Attachment {
            node,
            export: format!("{id}-{:032x}", rand::random::<u128>()),
            attached_at: now_rfc3339(),
            protocol,
            chap: (protocol == Protocol::Iscsi).then(|| ChapCredentials {
                user: format!("node-{:016x}", rand::random::<u64>()),
                secret: format!("{:032x}", rand::random::<u128>()),
            }),
        };
        v.state = VolumeState::InUse;
        v.attachment = Some(a.clone());
        self.state.put_volume(&v)?;
        self.export(&v, &a, dev.device.clone());
        tracing::info!(volume = %id, %node, %protocol, "volume attached");
        Ok((v, self.uri(&a)))
    }

    /// The server-wide NBD memory budget in bytes, for
    /// [`crate::nbd::NbdServer::memory_budget`] (which raises it to 32 MiB).
    pub fn nbd_memory_budget(&self) -> usize {
        self.nbd_memory
    }

    /// The URI of an attached volume (NBD or iSCSI).
    pub fn attachment_uri(&self, v: &Volume) -> Option<String> {
        v.attachment.as_ref().map(|a| self.uri(a))
    }

    /// Removes the export: new connections are refused at once; open ones are
    /// closed after their in-flight writes completed.
    pub async fn detach(&self, id: &str) -> Result<Volume, ScError> {
        let _op = self.ops.lock().await;
        let mut v = self.volume_record(id)?;
        let Some(a) = v.attachment.clone() else {
            return Err(ScError::IncorrectState(format!(
                "volume {id} is not attached"
            )));
        };
        self.exports.remove(&a.export).await;
        if let Some(o) = self.open.lock().await.get(id) {
            o.device.flush().await?;
        }
        v.state = VolumeState::Available;
        v.attachment = None;
        self.state.put_volume(&v)?;
        tracing::info!(volume = %id, node = %a.node, "volume detached");
        Ok(v)
    }

    // ---- snapshots --------------------------------------------------------------

    fn snapshot_running_for(&self, volume_id: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.values().any(|r| r.volume_id == volume_id)
    }

    /// Takes a crash-consistent cut of the volume (every write acknowledged
    /// before this call is in it; none issued after it returns is), records the
    /// snapshot as pending and uploads it in the background.
    pub async fn create_snapshot(self: &Arc<Self>, volume_id: &str) -> Result<Snapshot, ScError> {
        let _op = self.ops.lock().await;
        let v = self.volume_record(volume_id)?;
        if !matches!(v.state, VolumeState::Available | VolumeState::InUse) {
            return Err(ScError::IncorrectState(format!(
                "volume {volume_id} is {:?}",
                v.state
            )));
        }
        if self.snapshot_running_for(volume_id) {
            return Err(ScError::IncorrectState(format!(
                "a snapshot of {volume_id} is already being taken"
            )));
        }
        let dev = self.device(&v).await?;
        let mut id = new_id("snap");
        while self.state.snapshot(&id)?.is_some() {
            id = new_id("snap");
        }
        let chunks_total = v.size.div_ceil(self.chunk_size);
        let snap = Snapshot {
            id: id.clone(),
            volume_id: v.id.clone(),
            size: v.size,
            state: SnapshotState::Pending,
            created: now_rfc3339(),
            chunk_size: self.chunk_size,
            progress: Progress {
                chunks_total,
                ..Progress::default()
            },
            error: None,
        };
        self.state.put_snapshot(&snap)?;
        let preserve = self.scratch.join("cow").join(format!("{id}.cow"));
        let cut = match dev.device.begin_cut(self.chunk_size, &preserve).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.state.remove_snapshot(&id);
                return Err(e.into());
            }
        };
        let progress = Arc::new(SnapshotProgress::new());
        progress.chunks_total.store(chunks_total, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Running {
                    volume_id: v.id.clone(),
                    progress: progress.clone(),
                },
            );
        tracing::info!(snapshot = %id, volume = %v.id, "snapshot cut taken; uploading");
        let sc = self.clone();
        let (snap_id, vol_id) = (id, v.id.clone());
        tokio::spawn(async move {
            let result = {
                let _gc = sc.chunk_gc.read().await;
                finish_snapshot(
                    &dev.device,
                    cut,
                    sc.chunks.as_ref(),
                    &snap_id,
                    &vol_id,
                    &progress,
                )
                .await
            };
            if let Ok(Some(mut snap)) = sc.state.snapshot(&snap_id) {
                snap.progress = progress_of(&progress);
                match result {
                    Ok(_) => {
                        snap.state = SnapshotState::Completed;
                        tracing::info!(snapshot = %snap_id, uploaded = snap.progress.bytes_uploaded, "snapshot completed");
                    }
                    Err(e) => {
                        snap.state = SnapshotState::Error;
                        snap.error = Some(e.to_string());
                        tracing::warn!(snapshot = %snap_id, error = %e, "snapshot failed");
                    }
                }
                if let Err(e) = sc.state.put_snapshot(&snap) {
                    tracing::error!(snapshot = %snap_id, error = %e, "recording the snapshot's end failed");
                }
            }
            sc.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&snap_id);
        });
        Ok(snap)
    }

    /// A snapshot, with live progress while it uploads.
    pub fn describe_snapshot(&self, id: &str) -> Result<Snapshot, ScError> {
        let mut s = self.snapshot_record(id)?;
        if s.state == SnapshotState::Pending {
            if let Some(r) = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
            {
                s.progress = progress_of(&r.progress);
            }
        }
        Ok(s)
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>, ScError> {
        let ids: Vec<String> = self.state.snapshots()?.into_iter().map(|s| s.id).collect();
        ids.iter().map(|id| self.describe_snapshot(id)).collect()
    }

    /// Deletes a snapshot's manifest, then every chunk no other snapshot and no
    /// volume made from a snapshot still refers to.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), ScError> {
        let _op = self.ops.lock().await;
        let s = self.snapshot_record(id)?;
        if s.state == SnapshotState::Pending {
            return Err(ScError::IncorrectState(format!(
                "snapshot {id} is still being taken"
            )));
        }
        let _gc = self.chunk_gc.write().await;
        if s.state == SnapshotState::Completed {
            let keep = self.chunks_in_use(Some(id), None).await?;
            let stats = crate::snapshot::delete_snapshot(self.chunks.as_ref(), id, &keep).await?;
            tracing::info!(snapshot = %id, chunks_deleted = stats.chunks_deleted, chunks_kept = stats.chunks_kept, "snapshot deleted");
        } else {
            // A failed upload stored chunks but (normally) no manifest; a crash
            // right after the manifest was written leaves one. Either way,
            // what it stored and nothing else refers to goes now.
            self.chunks.delete_manifest(id).await?;
            if let Err(e) = self.sweep_locked().await {
                tracing::warn!(snapshot = %id, error = %e, "sweeping the chunks of a failed snapshot failed; the next start-up sweeps them");
            }
            tracing::info!(snapshot = %id, "failed snapshot deleted");
        }
        // The record goes last: a failure above leaves the snapshot listed, so
        // the delete can be retried.
        self.state.remove_snapshot(id)?;
        Ok(())
    }

    /// Every chunk a completed snapshot or a volume made from a snapshot refers
    /// to, leaving out the snapshot and the volume given.
    async fn chunks_in_use(
        &self,
        but_snapshot: Option<&str>,
        but_volume: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, ScError> {
        let mut manifests = Vec::new();
        for other in self.state.snapshots()? {
            if Some(other.id.as_str()) != but_snapshot && other.state == SnapshotState::Completed {
                manifests.push(self.chunks.get_manifest(&other.id).await?);
            }
        }
        for v in self.state.volumes()? {
            if Some(v.id.as_str()) == but_volume {
                continue;
            }
            if let Some(m) = self.lazy_manifest(&v.id).await? {
                manifests.push(m);
            }
        }
        Ok(referenced_chunks(&manifests))
    }

    /// The manifest kept beside a volume made from a snapshot; `None` only when the
    /// volume has none. Any other failure is an error: garbage collection must never
    /// take an unreadable manifest for "this volume references nothing".
    async fn lazy_manifest(&self, volume_id: &str) -> Result<Option<SnapshotManifest>, ScError> {
        let (_, mpath) = lazy_paths(&self.scratch, volume_id);
        let bytes = match tokio::fs::read(&mpath).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ScError::State(format!(
                "the snapshot manifest of volume {volume_id} is unreadable: {e}"
            ))
        })
    }

    /// How far a volume made from a snapshot has been filled: (present, total) chunks.
    pub async fn fill_state(&self, id: &str) -> Option<(u64, u64)> {
        let open = self.open.lock().await;
        open.get(id)
            .and_then(|o| o.lazy.as_ref().map(|l| l.chunks_present()))
    }

    /// Flushes every open volume (at shutdown).
    pub async fn flush_all(&self) {
        let open: Vec<_> = self.open.lock().await.values().cloned().collect();
        for o in open {
            if let Err(e) = o.device.flush().await {
                tracing::warn!(error = %e, "flush at shutdown failed");
            }
        }
    }

    pub fn running_snapshots(&self) -> u64 {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    pub fn bytes_uploaded_total(&self) -> u64 {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.progress.bytes_uploaded.load(Ordering::Relaxed))
            .sum()
    }
}

/// Writes a small file atomically and durably: temp file, fsync, rename, fsync dir.
async fn write_durably(path: &std::path::Path, bytes: &[u8]) -> Result<(), ScError> {
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    })
    .await
    .map_err(|e| ScError::Io(std::io::Error::other(e)))??;
    Ok(())
}
