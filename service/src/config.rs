//! The `[service]` section of the TOML config: rules shared by every listener.
use crate::tls::Tls;
use ipnet::IpNet;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawServiceConfig")]
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
    /// TLS on every TCP listener (`tls_cert` and `tls_key`, PEM files, loaded when
    /// the config is read). The Unix control socket stays in clear.
    pub tls: Option<Tls>,
}

/// The section as written.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServiceConfig {
    max_connections_per_source: usize,
    trusted_proxies: Vec<IpNet>,
    proxy_protocol: bool,
    metrics_public: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for RawServiceConfig {
    fn default() -> Self {
        let d = ServiceConfig::default();
        RawServiceConfig {
            max_connections_per_source: d.max_connections_per_source,
            trusted_proxies: d.trusted_proxies,
            proxy_protocol: d.proxy_protocol,
            metrics_public: d.metrics_public,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl TryFrom<RawServiceConfig> for ServiceConfig {
    type Error = String;
    fn try_from(r: RawServiceConfig) -> Result<Self, String> {
        let tls = match (&r.tls_cert, &r.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some(Tls::from_pem_files(c, k).map_err(|e| e.to_string())?),
            _ => return Err("[service] tls_cert and tls_key go together".into()),
        };
        Ok(ServiceConfig {
            max_connections_per_source: r.max_connections_per_source,
            trusted_proxies: r.trusted_proxies,
            proxy_protocol: r.proxy_protocol,
            metrics_public: r.metrics_public,
            tls,
        })
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_connections_per_source: 64,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            metrics_public: false,
            tls: None,
        }
    }
}
