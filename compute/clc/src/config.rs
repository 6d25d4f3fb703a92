//! The `[clc]` section of the TOML config: where the cloud controller listens and
//! what its EC2 API offers.
use serde::Deserialize;
use std::net::SocketAddr;

/// Where the cloud controller listens unless told otherwise. (Eucalyptus served
/// its CLC on 8773; here that is Walrus's port, so the CLC takes 8777.)
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8777";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClcConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// The availability zone (one per cluster; default `<region>a`).
    pub zone: Option<String>,
}

impl Default for ClcConfig {
    fn default() -> Self {
        ClcConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            max_connections: 256,
            zone: None,
        }
    }
}
