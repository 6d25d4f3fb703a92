//! `euca nodes`: the cluster's nodes as its CC sees them (state, free/limit per
//! axis, instances), as a table or JSON.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use euca_compute_proto::cc::CcClient;
use euca_compute_proto::{NodeState, NodeView};
use euca_imagecache::http::Token;

#[derive(Args)]
pub struct NodesArgs {
    /// The CC's URL (default: the one `euca up` on --data runs, else
    /// http://127.0.0.1:8774).
    #[arg(long)]
    cc: Option<String>,
    /// File holding the cluster token (default: <data>/cloud/cluster-token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The local cloud's data directory (for the defaults).
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
    /// Print the CC's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// The CC URL `euca up` recorded for its nodes (`[nc_cache] tracker`: the CC
/// serves the tracker on its listener).
fn local_cc_url(data: &std::path::Path) -> Option<String> {
    let s = std::fs::read_to_string(data.join("credentials/nc-cache.toml")).ok()?;
    let t: toml::Table = toml::from_str(&s).ok()?;
    t.get("nc_cache")?
        .get("tracker")?
        .as_str()
        .map(str::to_string)
}

pub async fn nodes(a: NodesArgs) -> Result<()> {
    let url =
        a.cc.or_else(|| local_cc_url(&a.data))
            .unwrap_or_else(|| "http://127.0.0.1:8774".into());
    let tf = a
        .token_file
        .unwrap_or_else(|| crate::imagecache::token_path(&a.data));
    let t = std::fs::read_to_string(&tf)
        .with_context(|| format!("reading the cluster token from {}", tf.display()))?;
    let cc = CcClient::new(&url, Token::new(&t)?);
    let nodes = cc
        .nodes()
        .await
        .with_context(|| format!("asking the CC at {url}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        print!("{}", table(&nodes));
    }
    Ok(())
}

fn state(s: NodeState) -> &'static str {
    match s {
        NodeState::Up => "UP",
        NodeState::Down => "DOWN",
        NodeState::Asleep => "ASLEEP",
        NodeState::Waking => "WAKING",
        NodeState::Pending => "PENDING",
    }
}

/// NAME STATE CORES MEM DISK (free/limit) INSTANCES; instances count those
/// holding capacity, `(+pending)` when launches placed there are not reported yet.
fn table(nodes: &[NodeView]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "CORES".into(),
        "MEM(MiB)".into(),
        "DISK(GiB)".into(),
        "INSTANCES".into(),
    ]];
    for n in nodes {
        let live = n
            .instances
            .iter()
            .filter(|i| i.state.holds_capacity())
            .count();
        let inst = if n.reserved == euca_compute_proto::Resources::ZERO {
            live.to_string()
        } else {
            format!("{live} (+pending)")
        };
        rows.push([
            n.name.clone(),
            state(n.state).into(),
            format!("{}/{}", n.free.cores, n.limit.cores),
            format!("{}/{}", n.free.memory_mib, n.limit.memory_mib),
            format!("{}/{}", n.free.disk_gib, n.limit.disk_gib),
            inst,
        ]);
    }
    let mut w = [0usize; 6];
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(k, c)| format!("{c:<w$}", w = w[k]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_compute_proto::Resources;

    #[test]
    fn table_shows_free_over_limit() {
        let r = |c, m, d| Resources {
            cores: c,
            memory_mib: m,
            disk_gib: d,
        };
        let n = NodeView {
            name: "node-1".into(),
            url: "http://x".into(),
            state: NodeState::Down,
            capacity: r(2, 2048, 20),
            limit: r(4, 2048, 20),
            free: r(3, 1792, 19),
            reserved: Resources::ZERO,
            instances: vec![],
            last_seen: None,
        };
        let t = table(&[n]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("node-1  DOWN   3/4"), "{t}");
        assert!(
            lines[1].contains("1792/2048") && lines[1].ends_with("0"),
            "{t}"
        );
    }
}
