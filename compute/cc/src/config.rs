//! `[cc]` in the cloud's TOML file: the image tracker's fields (the CC hosts it)
//! and the cluster controller's. Every field has a default, so flags alone suffice.
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use euca_imagecache::config::TrackerConfig;

use euca_compute_proto::Overcommit;
use serde::{Deserialize, Serialize};

use crate::CcError;

/// Placement policy (Eucalyptus' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// First node in list order that fits (an asleep one is woken only when no
    /// awake node fits).
    #[serde(rename = "GREEDY")]
    Greedy,
    /// The next node after the last one used that fits, cyclically.
    #[serde(rename = "ROUNDROBIN")]
    RoundRobin,
    /// Greedy over busy nodes first; idle nodes are put to sleep, woken when needed.
    #[serde(rename = "POWERSAVE")]
    PowerSave,
}

/// A node named in the config (beside those that register themselves).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    pub name: String,
    /// The node's NC API base URL.
    pub url: String,
}

/// `[cc]`: the tracker's fields (`listen`, `token_file`, `seeders_per_image`,
/// `max_connections`, flattened into the same table, so the TOML a user writes
/// is one flat table) and the cluster controller's.
///
/// serde ignores `deny_unknown_fields` beside `flatten`, so keys neither part
/// knows are collected and refused by [`CcConfig::validate`] (which `euca cc` and
/// `euca up` run before starting).
#[derive(Deserialize, Clone, Debug)]
#[serde(default)]
pub struct CcConfig {
    #[serde(flatten)]
    pub tracker: TrackerConfig,
    /// The availability zone this cluster is (unset: the CLC's zone).
    pub zone: Option<String>,
    /// `GREEDY` (default), `ROUNDROBIN` or `POWERSAVE`; anything else is refused.
    pub policy: Policy,
    /// How often every node is polled.
    pub poll_interval_ms: u64,
    /// How long one poll may take (a node slower than this missed the poll).
    pub poll_timeout_ms: u64,
    /// Missed polls in a row after which a node is `DOWN`.
    pub down_after_missed: u32,
    /// Over-commit ratios (default 1.0 each).
    pub overcommit: Overcommit,
    /// POWERSAVE: seconds a node with no instance stays awake.
    pub idle_sleep_secs: u64,
    /// POWERSAVE: the command putting a node to sleep, an argv list; `{node}` and
    /// `{url}` in any argument are replaced by the node's name and NC URL.
    pub sleep_command: Vec<String>,
    /// POWERSAVE: the command waking a node (same placeholders).
    pub wake_command: Vec<String>,
    /// Seconds a woken node has to answer a poll before it is `DOWN`.
    pub wake_timeout_secs: u64,
    /// Nodes known without registering (in this order, before registered ones).
    pub nodes: Vec<StaticNode>,
    /// Where the CC keeps its journal (pending placements, registered nodes);
    /// `euca cc` and `euca up` default it to `<data>/cc`.
    pub state_dir: Option<PathBuf>,
    /// `[cc.net]`: the cluster's instance network (issue 14); off by default.
    pub net: crate::netconfig::NetConfig,
    /// Keys of `[cc]` neither part knows (refused by [`CcConfig::validate`]).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig {
            tracker: TrackerConfig::default(),
            zone: None,
            policy: Policy::Greedy,
            poll_interval_ms: 1000,
            poll_timeout_ms: 800,
            down_after_missed: 3,
            overcommit: Overcommit::default(),
            idle_sleep_secs: 300,
            sleep_command: Vec::new(),
            wake_command: Vec::new(),
            wake_timeout_secs: 300,
            nodes: Vec::new(),
            state_dir: None,
            net: crate::netconfig::NetConfig::default(),
            unknown: BTreeMap::new(),
        }
    }
}

impl CcConfig {
    /// Refuses values the CC cannot run with.
    pub fn validate(&self) -> Result<(), CcError> {
        let bad = |m: String| Err(CcError::Config(m));
        if let Some(k) = self.unknown.keys().next() {
            return bad(format!("[cc]: unknown field `{k}`"));
        }
        if self.poll_interval_ms == 0 || self.poll_timeout_ms == 0 {
            return bad("[cc] poll_interval_ms and poll_timeout_ms must be > 0".into());
        }
        if self.down_after_missed == 0 {
            return bad("[cc] down_after_missed must be ≥ 1".into());
        }
        let o = &self.overcommit;
        for (n, v) in [("cores", o.cores), ("memory", o.memory), ("disk", o.disk)] {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("[cc.overcommit] {n} must be a positive number"));
            }
        }
        if self.policy == Policy::PowerSave
            && (self.sleep_command.is_empty() || self.wake_command.is_empty())
        {
            return bad("[cc] POWERSAVE needs sleep_command and wake_command".into());
        }
        self.net.validate()?;
        let mut names = std::collections::HashSet::new();
        for n in &self.nodes {
            if n.name.is_empty() || !names.insert(n.name.as_str()) {
                return bad(format!("[cc] nodes: empty or repeated name {:?}", n.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_policy() {
        let c: CcConfig = toml::from_str(
            r#"policy = "ROUNDROBIN"
               nodes = [{name = "n1", url = "http://127.0.0.1:1"}]
               [overcommit]
               cores = 2.0"#,
        )
        .unwrap();
        assert_eq!(c.policy, Policy::RoundRobin);
        assert_eq!(c.overcommit.cores, 2.0);
        assert_eq!(c.overcommit.memory, 1.0);
        assert_eq!(c.nodes[0].name, "n1");
        assert_eq!(c.poll_interval_ms, 1000);
        c.validate().unwrap();
        assert!(toml::from_str::<CcConfig>(r#"policy = "RANDOM""#).is_err());
        assert!(toml::from_str::<CcConfig>(r#"policy = "greedy""#).is_err());
        let ps: CcConfig = toml::from_str(r#"policy = "POWERSAVE""#).unwrap();
        assert!(ps.validate().is_err(), "POWERSAVE without commands");
        assert_eq!(c.tracker.seeders_per_image, 2);
    }

    #[test]
    fn an_existing_cc_table_still_parses_flat() {
        // The table as users wrote it before the tracker's fields were shared:
        // one flat [cc], tracker and cluster fields side by side.
        let doc: toml::Table = toml::from_str(
            r#"[cc]
               listen = "127.0.0.1:9774"
               token_file = "/etc/euca/cluster-token"
               seeders_per_image = 3
               max_connections = 64
               zone = "us-east-1b"
               policy = "GREEDY"
               poll_interval_ms = 250"#,
        )
        .unwrap();
        let c: CcConfig = doc["cc"].clone().try_into().unwrap();
        c.validate().unwrap();
        assert_eq!(c.tracker.listen, "127.0.0.1:9774".parse().unwrap());
        assert_eq!(
            c.tracker.token_file.as_deref(),
            Some(std::path::Path::new("/etc/euca/cluster-token"))
        );
        assert_eq!(c.tracker.seeders_per_image, 3);
        assert_eq!(c.tracker.max_connections, 64);
        assert_eq!(c.zone.as_deref(), Some("us-east-1b"));
        assert_eq!(c.poll_interval_ms, 250);
        // Defaults for what the table leaves out, on both sides.
        let d: CcConfig = toml::from_str("").unwrap();
        assert_eq!(d.tracker.listen, "127.0.0.1:8774".parse().unwrap());
        assert_eq!(d.down_after_missed, 3);
        // A key neither side knows is still refused.
        let typo: CcConfig = toml::from_str("seeders_per_imag = 3").unwrap();
        let e = typo.validate().unwrap_err().to_string();
        assert!(e.contains("seeders_per_imag"), "{e}");
    }
}
