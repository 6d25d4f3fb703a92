//! Configuration of the tracker (its fields of `[cc]`: the cluster controller
//! hosts it and flattens [`TrackerConfig`] into its table) and the cache daemon
//! (`[nc_cache]`) in the cloud's TOML file; every field has a default, so flags
//! alone suffice.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::CacheError;

#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Listen address of the tracker (and the CC API beside it).
    pub listen: SocketAddr,
    /// File holding the cluster token (shared with the nodes and the CLC).
    pub token_file: Option<PathBuf>,
    /// Nodes per image allowed to fetch from Walrus at once.
    pub seeders_per_image: usize,
    /// Open connections at most (further ones wait in the accept queue).
    pub max_connections: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            listen: ([127, 0, 0, 1], 8774).into(),
            token_file: None,
            seeders_per_image: 2,
            max_connections: 512,
        }
    }
}

#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct NcCacheConfig {
    /// Cache directory (images, and the control socket `control.sock`).
    pub dir: PathBuf,
    /// Piece server listen address (peers connect here).
    pub listen: SocketAddr,
    /// URL peers use to reach this node (default: `http://<listen>`).
    pub advertise_url: Option<String>,
    /// Node name in the cluster (default: the advertised URL's authority).
    pub node: Option<String>,
    /// Tracker base URL; without one every piece comes from Walrus.
    pub tracker: Option<String>,
    /// The cluster token, or a file holding it.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Walrus endpoint and the node's (read-only) credentials.
    pub s3_url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Cache quota, e.g. `20GiB` (bytes without a suffix).
    pub quota: String,
    /// Origin requests in flight when this node is an uplink seeder / has no tracker.
    pub origin_concurrency: usize,
    pub direct_concurrency: usize,
    /// Open connections to the piece server at most.
    pub max_connections: usize,
    /// The bearer token `/_metrics` requires, or a file holding it (`euca up`
    /// writes `<data>/credentials/metrics-token`); without one, `/_metrics` is
    /// closed unless `[service] metrics_public = true`.
    pub metrics_token: Option<String>,
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for NcCacheConfig {
    fn default() -> Self {
        NcCacheConfig {
            dir: "euca-cache".into(),
            listen: ([127, 0, 0, 1], 8776).into(),
            advertise_url: None,
            node: None,
            tracker: None,
            token: None,
            token_file: None,
            s3_url: "http://127.0.0.1:8773/".into(),
            access_key: String::new(),
            secret_key: String::new(),
            region: "us-east-1".into(),
            quota: "20GiB".into(),
            origin_concurrency: 2,
            direct_concurrency: 2,
            max_connections: 1024,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

/// Parses `123`, `4K`, `10MiB`, `20GB`, `1T` (binary multiples either way).
pub fn parse_size(s: &str) -> Result<u64, CacheError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| CacheError::Config(format!("bad size {s:?}")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(CacheError::Config(format!("bad size unit in {s:?}"))),
    };
    n.checked_mul(mult)
        .ok_or_else(|| CacheError::Config(format!("size {s:?} too large")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(super::parse_size("512").unwrap(), 512);
        assert_eq!(super::parse_size("3m").unwrap(), 3 << 20);
        assert!(super::parse_size("x").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }
}
