//! `[sc]` section of the TOML config; every field has a default so `euca up`
//! needs no file.
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScConfig {
    /// Volumes (sparse files), the state database and snapshot scratch files.
    pub data_dir: PathBuf,
    /// The SC's HTTP API (JSON; SigV4-signed by the admin or a cloud service).
    pub listen: SocketAddr,
    /// The NBD server that exports attached volumes.
    pub nbd_listen: SocketAddr,
    /// Host name or address put in the NBD URIs handed to nodes (default: the
    /// address `nbd_listen` is bound to).
    pub nbd_host: Option<String>,
    /// Walrus bucket for snapshot chunks (`chunks/<sha256>`) and manifests
    /// (`snapshots/<snap-id>.json`).
    pub snapshot_bucket: String,
    /// Snapshot chunk size in MiB (a power of two).
    pub chunk_size_mib: u64,
    /// Largest volume that may be created, in GiB.
    pub max_volume_gib: u64,
    /// Region used to verify request signatures.
    pub region: String,
}

impl Default for ScConfig {
    fn default() -> Self {
        ScConfig {
            data_dir: PathBuf::from("euca-data/sc"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8774)),
            nbd_listen: SocketAddr::from(([127, 0, 0, 1], 10809)),
            nbd_host: None,
            snapshot_bucket: "euca-snapshots".into(),
            chunk_size_mib: 4,
            max_volume_gib: 1024,
            region: "us-east-1".into(),
        }
    }
}
