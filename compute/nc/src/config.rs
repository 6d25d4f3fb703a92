//! `[nc]` in the cloud's TOML file (every field has a default; flags override).
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct NcConfig {
    /// The NC API's listen address (default 127.0.0.1:8778).
    pub listen: SocketAddr,
    /// URL the CC reaches this node at (default `http://<listen>`).
    pub advertise_url: Option<String>,
    /// Node name, unique in the cluster (default: the host name).
    pub name: Option<String>,
    /// The CC to register with (`http://host:port`); `euca up` sets its own.
    pub cc: Option<String>,
    /// The cluster token, or a file holding it.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Instance directories (`<dir>/instances/<id>/`).
    pub dir: PathBuf,
    /// `tcg` (default; works everywhere) or `kvm`.
    pub accel: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The `qemu-img` binary (overlays, ephemeral disks).
    pub qemu_img: PathBuf,
    /// Advertised capacity; unset axes default to what the host has (cores online,
    /// physical memory, free space of `dir`).
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    /// Seconds a guest gets to release a volume after `device_del`.
    pub detach_timeout_secs: u64,
    /// Seconds a guest gets to power off on terminate before QEMU is killed.
    pub shutdown_timeout_secs: u64,
    /// Directory with the NBD TLS client credentials (`ca-cert.pem`,
    /// `client-cert.pem`, `client-key.pem`) for `nbds://` exports.
    pub nbd_tls_dir: Option<PathBuf>,
    /// Open connections to the NC API at most.
    pub max_connections: usize,
}

impl Default for NcConfig {
    fn default() -> Self {
        NcConfig {
            listen: ([127, 0, 0, 1], euca_compute_proto::nc::DEFAULT_PORT).into(),
            advertise_url: None,
            name: None,
            cc: None,
            token: None,
            token_file: None,
            dir: PathBuf::from("/var/lib/euca/nc"),
            accel: "tcg".into(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            cores: None,
            memory_mib: None,
            disk_gib: None,
            detach_timeout_secs: 10,
            shutdown_timeout_secs: 5,
            nbd_tls_dir: None,
            max_connections: 256,
        }
    }
}
