//! What every listener shares at start-up: the `[service]` rules, the metrics
//! token and the descriptor budget (see `euca-service`).
use anyhow::{Context, Result};
use euca_service::budget::{self, Cap};
use euca_service::{MetricsAccess, ServiceConfig};
use std::path::{Path, PathBuf};

/// `<data>/credentials/metrics-token`: the bearer token `/_metrics` requires on
/// every port (usable as Prometheus' `bearer_token_file`).
pub fn metrics_token_path(data: &Path) -> PathBuf {
    data.join("credentials/metrics-token")
}

/// The metrics token, created (0600) on first start.
pub fn ensure_metrics_token(data: &Path) -> Result<String> {
    let p = metrics_token_path(data);
    if let Ok(t) = std::fs::read_to_string(&p) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let t = euca_service::random_token().context("generating the metrics token")?;
    crate::pki::write_file(&p, format!("{t}\n").as_bytes(), 0o600)?;
    Ok(t)
}

/// Who may read `/_metrics`: anyone with `metrics_public = true`, else the token holders.
pub fn metrics_access(svc: &ServiceConfig, token: Option<&str>) -> MetricsAccess {
    match (svc.metrics_public, token) {
        (true, _) => MetricsAccess::Public,
        (false, Some(t)) => MetricsAccess::token(t),
        (false, None) => MetricsAccess::Closed,
    }
}

/// Raises the soft descriptor limit to the hard one and fits the listeners' caps
/// (`(name, cap, descriptors per connection)`) into it, scaling them down together
/// (with a warning) if they do not fit.
pub fn fit_caps(caps: &mut [(&str, &mut usize, u64)]) -> Result<()> {
    let limit = budget::raise_nofile_limit()?;
    let mut list: Vec<Cap> = caps
        .iter()
        .map(|(name, n, fds)| Cap {
            name: name.to_string(),
            connections: **n,
            fds_per_connection: *fds,
        })
        .collect();
    if budget::fit(limit, &mut list)? {
        let shown: Vec<String> = list
            .iter()
            .map(|c| format!("{} = {}", c.name, c.connections))
            .collect();
        tracing::warn!(
            limit,
            "connection caps scaled down to fit the descriptor limit: {}",
            shown.join(", ")
        );
    }
    for ((_, n, _), c) in caps.iter_mut().zip(list) {
        **n = c.connections;
    }
    Ok(())
}
