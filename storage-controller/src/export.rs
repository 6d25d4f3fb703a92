//! The exports the block servers offer (NBD and iSCSI share one table): which
//! volume, to which peer, read-only or not, and the iSCSI CHAP secret.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::device::BlockDevice;

/// The block protocol an export is served over. An export is reachable over its
/// own protocol only: an iSCSI attachment (CHAP) cannot be opened over NBD, which
/// would skip CHAP, nor an NBD one over iSCSI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Nbd,
    Iscsi,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Nbd => "nbd",
            Protocol::Iscsi => "iscsi",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    /// Exactly `nbd` or `iscsi`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nbd" => Ok(Protocol::Nbd),
            "iscsi" => Ok(Protocol::Iscsi),
            other => Err(format!("unknown protocol {other:?} (nbd or iscsi)")),
        }
    }
}

/// iSCSI: the CHAP credentials an initiator must prove to log in to one target
/// (the algorithm is in `crate::iscsi`).
#[derive(Clone)]
pub struct Chap {
    /// The `CHAP_N` the initiator must send.
    pub user: String,
    /// The secret it proves knowledge of.
    pub secret: Vec<u8>,
    /// Mutual CHAP: the name and secret this target answers a challenge with.
    /// `None`: an initiator asking for mutual authentication is refused.
    pub target: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("mutual", &self.target.is_some())
            .finish_non_exhaustive()
    }
}

/// One exported volume.
pub struct Export {
    /// The only server that offers it.
    pub protocol: Protocol,
    pub device: Arc<dyn BlockDevice>,
    /// The only client address allowed to see or open this export; `None` = any.
    /// Unix-socket clients have no address and can open only `None` exports.
    pub allowed_peer: Option<IpAddr>,
    pub read_only: bool,
    pub description: String,
    /// iSCSI only: the CHAP credentials an initiator must prove at login (`None`:
    /// no authentication beyond the peer address). NBD ignores it; its export name
    /// carries unguessable bits instead.
    pub chap: Option<Chap>,
}

pub(crate) struct ExportEntry {
    pub(crate) export: Export,
    /// Flipped to `true` when the export is removed or replaced. Every connection in
    /// transmission on this export holds a receiver, so `closed()` on the sender
    /// tells when all of them are gone.
    close: watch::Sender<bool>,
}

impl ExportEntry {
    pub(crate) fn visible_to(&self, peer: Option<IpAddr>, protocol: Protocol) -> bool {
        self.export.protocol == protocol
            && match self.export.allowed_peer {
                None => true,
                Some(allowed) => peer.is_some_and(|p| p.to_canonical() == allowed.to_canonical()),
            }
    }
}

/// The set of exports a server offers; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ExportTable {
    inner: Arc<Mutex<HashMap<String, Arc<ExportEntry>>>>,
}

impl ExportTable {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<ExportEntry>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an export. Replacing an existing name makes its open connections close
    /// (after their in-flight requests) without waiting; use [`ExportTable::remove`]
    /// first to wait for that.
    pub fn insert(&self, name: String, export: Export) {
        let (close, _) = watch::channel(false);
        let entry = Arc::new(ExportEntry { export, close });
        if let Some(old) = self.map().insert(name.clone(), entry) {
            tracing::warn!(export = %name, "export replaced; closing its connections");
            old.close.send_replace(true);
        }
    }

    /// Removes the export so no new client can open it, waits for its in-flight
    /// requests to finish (so acknowledged writes are done), then closes every
    /// connection that had it open and flushes the device. Returns false if there
    /// was no such export.
    pub async fn remove(&self, name: &str) -> bool {
        let Some(entry) = self.map().remove(name) else {
            return false;
        };
        entry.close.send_replace(true);
        // Resolves once every connection holding a receiver has drained and closed.
        entry.close.closed().await;
        if let Err(e) = entry.export.device.flush().await {
            tracing::warn!(export = %name, error = %e, "flush after export removal failed");
        }
        tracing::info!(export = %name, "export removed");
        true
    }

    /// Names of all exports, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map().keys().cloned().collect();
        v.sort();
        v
    }

    /// Connections currently in transmission on `name` (0 if there is no such export).
    pub fn connections(&self, name: &str) -> usize {
        self.map().get(name).map_or(0, |e| e.close.receiver_count())
    }

    /// The export `name` if `peer` may see it over `protocol`.
    pub(crate) fn lookup(
        &self,
        name: &[u8],
        peer: Option<IpAddr>,
        protocol: Protocol,
    ) -> Option<Arc<ExportEntry>> {
        let name = std::str::from_utf8(name).ok()?;
        self.map()
            .get(name)
            .filter(|e| e.visible_to(peer, protocol))
            .cloned()
    }

    /// Like `lookup`, and registers the caller as a connection on the export (under
    /// the same lock, so `remove` cannot miss it).
    pub(crate) fn open(
        &self,
        name: &[u8],
        peer: Option<IpAddr>,
        protocol: Protocol,
    ) -> Option<(Arc<ExportEntry>, watch::Receiver<bool>)> {
        let name = std::str::from_utf8(name).ok()?;
        let map = self.map();
        let entry = map.get(name).filter(|e| e.visible_to(peer, protocol))?;
        let rx = entry.close.subscribe();
        Some((entry.clone(), rx))
    }

    /// (name, description) of every export `peer` may see over `protocol`, sorted
    /// by name.
    pub(crate) fn list_for(
        &self,
        peer: Option<IpAddr>,
        protocol: Protocol,
    ) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .map()
            .iter()
            .filter(|(_, e)| e.visible_to(peer, protocol))
            .map(|(n, e)| (n.clone(), e.export.description.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Resolves when the watch holds `true`, or when its sender is gone.
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
