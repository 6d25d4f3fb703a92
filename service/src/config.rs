//! The `[service]` section of the TOML config: rules shared by every listener.
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Connections one client address may hold open on one listener (0: no limit).
    pub max_connections_per_source: usize,
    /// Load balancers and proxies (addresses or CIDRs) whose connections are exempt
    /// from the per-source cap and whose PROXY header / `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Trusted proxies open every connection with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// Serve `/_metrics` without the bearer token.
    pub metrics_public: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_connections_per_source: 64,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            metrics_public: false,
        }
    }
}
