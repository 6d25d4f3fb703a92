//! `[sc]` section of the TOML config; every field has a default so `euca up`
//! needs no file.
use crate::error::ScError;
use crate::nbd::TlsMode;
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
    /// Host name or address put in the NBD and iSCSI URIs handed to nodes
    /// (default: the address the listener is bound to).
    pub nbd_host: Option<String>,
    /// The iSCSI target (RFC 7143) that exports volumes attached with
    /// `protocol = "iscsi"`, or "off". iSCSI has no TLS: put it on a storage
    /// network, or under IPsec/WireGuard, when nodes are not on this host.
    pub iscsi_listen: String,
    /// Targets are named `<iscsi_iqn_prefix>:<export name>`.
    pub iscsi_iqn_prefix: String,
    /// Open iSCSI connections at most (further ones are closed at accept).
    pub iscsi_max_connections: usize,
    /// Open NBD, and open iSCSI, connections from one address at most (a node's
    /// QEMU opens one per volume; multi-conn clients a few).
    pub block_max_connections_per_source: usize,
    /// Walrus bucket for snapshot chunks (`chunks/<sha256>`) and manifests
    /// (`snapshots/<snap-id>.json`).
    pub snapshot_bucket: String,
    /// Snapshot chunk size in MiB (a power of two).
    pub chunk_size_mib: u64,
    /// Largest volume that may be created, in GiB.
    pub max_volume_gib: u64,
    /// Region used to verify request signatures.
    pub region: String,
    /// NBD TLS policy: "auto" (TLS required of nodes that are not on loopback;
    /// optional for loopback clients), "required" (for every client) or "off".
    /// TLS needs `tls_cert` and `tls_key`; without them "auto" means no TLS and
    /// "required" refuses to start. `euca up` / `euca sc` fill them in with a
    /// certificate issued by the cloud CA.
    pub nbd_tls: String,
    /// PEM certificate chain (server certificate first) for NBD TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Open connections to the API at most (further ones wait in the accept queue).
    pub max_connections: usize,
    /// Open NBD connections at most (further ones are closed at accept).
    pub nbd_max_connections: usize,
    /// Memory, in MiB, that all NBD connections together may hold in request
    /// payloads (READ replies not yet sent, WRITE data not yet applied); at least
    /// 32 (the largest request). When it is spent the server stops reading
    /// requests until replies have gone out. Each connection is also bounded on
    /// its own (256 MiB).
    pub nbd_memory_mib: u64,
    /// Snapshot chunks no manifest refers to (left by an upload a crash cut
    /// short) are deleted once they are older than this, at start-up and when a
    /// failed snapshot is deleted. The age only guards against writers outside
    /// this SC: uploads of this SC are excluded by a lock while it sweeps. Only one
    /// SC may use a bucket.
    pub orphan_chunk_grace_secs: u64,
    /// Keep the volume and snapshot records in this PostgreSQL database
    /// (`postgres://user[:password]@host[:port]/dbname`) instead of
    /// `<data_dir>/sc.redb`, beside the rest of the cloud's state. The volumes'
    /// bytes stay in `data_dir`.
    pub meta_url: Option<String>,
    /// This SC's name in `meta_url`: its records are kept under it, and one SC at a
    /// time may hold it (SCs sharing a database need different names; a replacement
    /// with the same name starts once the old one stopped, or 30 s after it died on
    /// another host).
    pub name: String,
}

impl ScConfig {
    /// `iscsi_listen` parsed: `None` when it is "off".
    pub fn iscsi_listen_addr(&self) -> Result<Option<SocketAddr>, ScError> {
        if self.iscsi_listen == "off" {
            return Ok(None);
        }
        self.iscsi_listen.parse().map(Some).map_err(|_| {
            ScError::Invalid(format!(
                "iscsi_listen {:?} is neither an address:port nor \"off\"",
                self.iscsi_listen
            ))
        })
    }

    /// The NBD TLS mode in effect: `nbd_tls` parsed, and "auto" without
    /// `tls_cert`/`tls_key` downgraded to off.
    pub fn nbd_tls_mode(&self) -> Result<TlsMode, ScError> {
        let mode: TlsMode = self.nbd_tls.parse().map_err(ScError::Invalid)?;
        let have_creds = self.tls_cert.is_some() && self.tls_key.is_some();
        Ok(match mode {
            TlsMode::Auto if !have_creds => TlsMode::Off,
            m => m,
        })
    }
}

impl Default for ScConfig {
    fn default() -> Self {
        ScConfig {
            data_dir: PathBuf::from("euca-data/sc"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8774)),
            nbd_listen: SocketAddr::from(([127, 0, 0, 1], 10809)),
            nbd_host: None,
            iscsi_listen: "127.0.0.1:3260".into(),
            iscsi_iqn_prefix: crate::iscsi::DEFAULT_IQN_PREFIX.into(),
            iscsi_max_connections: 1024,
            block_max_connections_per_source: 64,
            snapshot_bucket: "euca-snapshots".into(),
            chunk_size_mib: 4,
            max_volume_gib: 1024,
            region: "us-east-1".into(),
            nbd_tls: "auto".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 256,
            nbd_max_connections: 1024,
            nbd_memory_mib: 256,
            orphan_chunk_grace_secs: 3600,
            meta_url: None,
            name: "sc".into(),
        }
    }
}
