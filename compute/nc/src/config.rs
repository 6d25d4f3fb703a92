//! `[nc]` in the cloud's TOML file (every field has a default; flags override).
use std::net::{Ipv4Addr, SocketAddr};
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
    /// Where instance NICs are plugged (`[nc.net]`; issue 14).
    pub net: NcNetConfig,
}

/// `[nc.net]`: how the node plugs an instance's tap into the segment its
/// [`euca_compute_proto::net::NicSpec`] names. No file needed: the defaults fit
/// `euca up` on one machine.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NcNetConfig {
    /// The bridge taps join for `Segment::Bridge` (system, static, managed-novlan):
    /// the node's bridge to the LAN or to the CC's router (default `eucabr`). It must
    /// exist: the NC never creates it (a missing one fails the instance, saying so).
    pub bridge: String,
    /// The named network namespace the bridge (and the underlay) live in, e.g. the
    /// CC's router namespace when everything runs on one machine: QEMU makes the tap
    /// in the NC's namespace and the NC moves it there before plugging it. Unset:
    /// the NC's own namespace.
    pub netns: Option<String>,
    /// `managed` mode (VXLAN): the device that carries the segments to the CC and
    /// the other nodes (in `netns` when that is set). Required for `Segment::Vxlan`.
    pub underlay: Option<String>,
    /// The multicast group VXLAN floods unknown destinations to (default 239.35.0.1).
    pub vxlan_group: Ipv4Addr,
    /// VXLAN's UDP port (default 4789, IANA's).
    pub vxlan_port: u16,
}

impl Default for NcNetConfig {
    fn default() -> Self {
        NcNetConfig {
            bridge: "eucabr".into(),
            netns: None,
            underlay: None,
            vxlan_group: Ipv4Addr::new(239, 35, 0, 1),
            vxlan_port: 4789,
        }
    }
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
            net: NcNetConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_defaults_and_partial_tables() {
        let c: NcConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.net, NcNetConfig::default());
        assert_eq!(c.net.bridge, "eucabr");
        assert_eq!(c.net.netns, None);
        let c: NcConfig =
            serde_json::from_str(r#"{"net": {"netns": "euca-r1", "underlay": "vu0"}}"#).unwrap();
        assert_eq!(c.net.netns.as_deref(), Some("euca-r1"));
        assert_eq!(c.net.underlay.as_deref(), Some("vu0"));
        assert_eq!(c.net.vxlan_group, Ipv4Addr::new(239, 35, 0, 1));
        assert_eq!(c.net.vxlan_port, 4789);
        assert!(serde_json::from_str::<NcConfig>(r#"{"net": {"bridges": "x"}}"#).is_err());
    }
}
