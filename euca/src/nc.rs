//! `euca nc`: the node controller on one machine. It serves the NC API (the CC's
//! polls and calls) for a [`QemuNode`] that runs instances as QEMU processes, with
//! the node's image cache daemon in the same process (what `euca nc-cache` runs
//! alone), and keeps the node registered with its CC.
//!
//! `euca nc --simulate N` instead serves N simulated nodes (no QEMU, no cache) on
//! one listener, node k at `<url>/sim/<k>`, each registered as `<name>-sim<k>`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use euca_compute_proto::cc::CcClient;
use euca_compute_proto::{RegisterNode, Resources};
use euca_imagecache::config::NcCacheConfig;
use euca_imagecache::http::{Edge, Token};
use euca_nc::api::NcApi;
use euca_nc::config::NcConfig;
use euca_nc::hypervisor::{CacheImages, QemuNode};
use euca_nc::node::Node;
use euca_nc::simulate::{SimConfig, SimNode};

use crate::imagecache::{read_token, NodeCache};

/// Most simulated nodes one process serves.
const MAX_SIMULATED: usize = 100_000;

#[derive(Args)]
pub struct NcArgs {
    /// TOML config file with an [nc] table (and [nc_cache] for the node's image
    /// cache, unless --simulate).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NC API listen address (default 127.0.0.1:8778).
    #[arg(long, value_name = "ADDR")]
    nc_listen: Option<SocketAddr>,
    /// The cluster controller to register with (http://host:port).
    #[arg(long, value_name = "URL")]
    cc: Option<String>,
    /// File holding the cluster token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Instance directories live under this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Node name, unique in the cluster (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Serve N simulated nodes instead of running QEMU (scale and counting tests).
    #[arg(long, value_name = "N")]
    simulate: Option<usize>,
    /// How long a simulated node takes to boot, stop, attach or detach (ms).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    sim_delay_ms: u64,
    /// QEMU accelerator: tcg or kvm.
    #[arg(long)]
    accel: Option<String>,
    /// Advertised cores (default: the host's).
    #[arg(long)]
    cores: Option<u32>,
    /// Advertised memory in MiB (default: the host's).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Advertised disk in GiB (default: free space of --dir).
    #[arg(long)]
    disk_gib: Option<u64>,
}

/// This machine's host name (the default node name).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..n]) {
        Ok(s) if rc == 0 && !s.is_empty() => s.to_string(),
        _ => "localhost".into(),
    }
}

/// `[nc]` from the file with the flags applied over it.
fn merged(a: &NcArgs, file: Option<NcConfig>) -> NcConfig {
    let mut cfg = file.unwrap_or_default();
    if let Some(l) = a.nc_listen {
        cfg.listen = l;
    }
    if a.cc.is_some() {
        cfg.cc = a.cc.clone();
    }
    if a.token_file.is_some() {
        cfg.token = None;
        cfg.token_file = a.token_file.clone();
    }
    if let Some(d) = &a.dir {
        cfg.dir = d.clone();
    }
    if a.name.is_some() {
        cfg.name = a.name.clone();
    }
    if let Some(x) = &a.accel {
        cfg.accel = x.clone();
    }
    if a.cores.is_some() {
        cfg.cores = a.cores;
    }
    if a.memory_mib.is_some() {
        cfg.memory_mib = a.memory_mib;
    }
    if a.disk_gib.is_some() {
        cfg.disk_gib = a.disk_gib;
    }
    cfg
}

pub async fn nc(
    a: NcArgs,
    file: Option<NcConfig>,
    cache_file: Option<NcCacheConfig>,
    svc: euca_service::ServiceConfig,
) -> Result<()> {
    let mut cfg = merged(&a, file);
    let token = match (&cfg.token, &cfg.token_file) {
        (Some(t), _) => Token::new(t)?,
        (None, Some(f)) => read_token(f)?,
        (None, None) => {
            bail!("no cluster token: give --token-file, or token or token_file in [nc]")
        }
    };
    if let Some(cc) = &cfg.cc {
        if !(cc.starts_with("http://") || cc.starts_with("https://")) {
            bail!("--cc must be an http:// URL, not {cc:?}");
        }
    }
    let name = cfg.name.clone().unwrap_or_else(host_name);
    let simulate = match a.simulate {
        Some(0) => bail!("--simulate needs at least 1 node"),
        Some(n) if n > MAX_SIMULATED => bail!("--simulate takes at most {MAX_SIMULATED} nodes"),
        s => s,
    };
    // The node's image cache (real nodes only): [nc_cache], inheriting the cluster
    // token and the node's name when it names none.
    let mut cache_cfg = match (simulate, cache_file) {
        (Some(_), _) => None,
        (None, Some(mut c)) => {
            if c.token.is_none() && c.token_file.is_none() {
                c.token = cfg.token.clone();
                c.token_file = cfg.token_file.clone();
            }
            if c.node.is_none() {
                c.node = Some(name.clone());
            }
            // Left at their defaults, the cache lives in the node's directory and
            // its piece server on an ephemeral port of the NC's address (peers learn
            // it from the tracker).
            let defaults = NcCacheConfig::default();
            if c.dir == defaults.dir {
                c.dir = cfg.dir.join("cache");
            }
            if c.listen == defaults.listen {
                c.listen = SocketAddr::new(cfg.listen.ip(), 0);
            }
            Some(c)
        }
        (None, None) => bail!(
            "euca nc runs the node's image cache: the config needs an [nc_cache] table \
             (s3_url and the nodes' key, as `euca up` writes to <data>/credentials/nc-cache.toml); \
             or use --simulate N"
        ),
    };
    let mut svc = svc;
    if let Some(n) = simulate {
        // The CC keeps a connection per node, all from its one address: N
        // simulated nodes need N connections from one source.
        cfg.max_connections = cfg.max_connections.max(n + 64);
        svc.max_connections_per_source = svc.max_connections_per_source.max(n + 64);
    }
    {
        let mut caps: Vec<(&str, &mut usize, u64)> =
            vec![("[nc] max_connections", &mut cfg.max_connections, 1)];
        if let Some(c) = cache_cfg.as_mut() {
            caps.push(("[nc_cache] max_connections", &mut c.max_connections, 1));
        }
        crate::edge::fit_caps(&mut caps)?;
    }
    let metrics_token = match cache_cfg
        .as_ref()
        .map(|c| (&c.metrics_token, &c.metrics_token_file))
    {
        Some((Some(t), _)) => Some(t.clone()),
        Some((None, Some(f))) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    let edge = Edge::new(
        "nc",
        cfg.max_connections,
        &svc,
        crate::edge::metrics_access(&svc, metrics_token.as_deref()),
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the NC API to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let advertise = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let shutdown = crate::shutdown_signal();

    let (api, registrations, qemu, cache_task) = match simulate {
        Some(n) => {
            let capacity = Resources {
                cores: cfg.cores.unwrap_or(SimConfig::DEFAULT_CAPACITY.cores),
                memory_mib: cfg
                    .memory_mib
                    .unwrap_or(SimConfig::DEFAULT_CAPACITY.memory_mib),
                disk_gib: cfg.disk_gib.unwrap_or(SimConfig::DEFAULT_CAPACITY.disk_gib),
            };
            let delay = Duration::from_millis(a.sim_delay_ms);
            let nodes: Vec<Arc<dyn Node>> = (0..n)
                .map(|k| {
                    Arc::new(SimNode::new(SimConfig {
                        name: format!("{name}-sim{k}"),
                        capacity,
                        delay,
                    })) as Arc<dyn Node>
                })
                .collect();
            let api = NcApi::simulated(nodes, token.clone());
            let regs: Vec<RegisterNode> = (0..n)
                .map(|k| RegisterNode {
                    name: format!("{name}-sim{k}"),
                    url: format!("{advertise}{}", api.prefix(k)),
                })
                .collect();
            println!("euca: nc is up, simulating {n} nodes");
            println!(
                "  nc api       {advertise}/sim/0/ … {advertise}/sim/{}/   metrics {advertise}/_metrics",
                n - 1
            );
            println!(
                "  nodes        {name}-sim0 … {name}-sim{}: {} cores, {} MiB, {} GiB each",
                n - 1,
                capacity.cores,
                capacity.memory_mib,
                capacity.disk_gib
            );
            (api, regs, None, None)
        }
        None => {
            let cache = NodeCache::open(cache_cfg.take().unwrap_or_default(), &svc).await?;
            let (node, api) = open_qemu_node(&cfg, &cache, token.clone()).await?;
            println!("euca: nc is up");
            println!("  nc api       {advertise}/   metrics {advertise}/_metrics");
            println!(
                "  node         {name}: {} (accelerator {})",
                cfg.dir.display(),
                cfg.accel
            );
            cache.print();
            let task = tokio::spawn(cache.serve(shutdown.clone()));
            let regs = vec![RegisterNode {
                name: name.clone(),
                url: advertise.clone(),
            }];
            (api, regs, Some(node), Some(task))
        }
    };
    let register = match &cfg.cc {
        Some(cc) => {
            println!(
                "  cc           {cc} (registering every {} s)",
                euca_nc::register::PERIOD.as_secs()
            );
            Some(tokio::spawn(euca_nc::register::keep_registered(
                CcClient::new(cc, token.clone()),
                registrations,
                euca_nc::register::PERIOD,
                None,
                shutdown.clone(),
            )))
        }
        None => {
            println!("  cc           none (not registering; give --cc URL)");
            None
        }
    };
    api.serve(listener, edge, shutdown).await;
    // A node service that stops (an upgrade, a restart) leaves its guests running:
    // the next `euca nc` adopts them. (`euca up`, the all-in-one, powers its own
    // node's guests off instead.)
    drop(qemu);
    if let Some(t) = register {
        let _ = t.await;
    }
    if let Some(t) = cache_task {
        let _ = t.await;
    }
    Ok(())
}

/// The QEMU node on `cfg.dir` with its images from `cache`, and its API.
async fn open_qemu_node(
    cfg: &NcConfig,
    cache: &NodeCache,
    token: Token,
) -> Result<(Arc<QemuNode>, Arc<NcApi>)> {
    let images = Arc::new(CacheImages::new(cache.daemon.clone()));
    let node = QemuNode::open(cfg.clone(), images)
        .await
        .with_context(|| format!("opening the node on {}", cfg.dir.display()))?;
    let api = NcApi::new(node.clone(), token);
    Ok((node, api))
}

/// `euca up`'s own node: a QEMU node with its image cache in this process, its NC
/// API on `cfg.listen`, registered with the cloud's CC (`cfg.cc`).
pub struct LocalNode {
    /// The NC API's URL.
    pub url: String,
    /// Serves until shutdown, then stops the node's guests (records kept).
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts `euca up`'s node (see [`LocalNode`]). `cfg.name` defaults to the host
/// name; `cache_cfg` is the node's image cache (its own directory and listener).
pub async fn start_local(
    mut cfg: NcConfig,
    cache_cfg: NcCacheConfig,
    svc: &euca_service::ServiceConfig,
    metrics: euca_service::MetricsAccess,
    token: Token,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<LocalNode> {
    let name = cfg.name.clone().unwrap_or_else(host_name);
    cfg.name = Some(name.clone());
    let cache = NodeCache::open(cache_cfg, svc).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the NC API to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let url = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let (node, api) = open_qemu_node(&cfg, &cache, token.clone()).await?;
    let edge = Edge::new("nc", cfg.max_connections, svc, metrics);
    let cache_task = tokio::spawn(cache.serve(shutdown.clone()));
    let register = cfg.cc.clone().map(|cc| {
        tokio::spawn(euca_nc::register::keep_registered(
            CcClient::new(&cc, token.clone()),
            vec![RegisterNode {
                name: name.clone(),
                url: url.clone(),
            }],
            euca_nc::register::PERIOD,
            None,
            shutdown.clone(),
        ))
    });
    let task = tokio::spawn(async move {
        api.serve(listener, edge, shutdown).await;
        node.shutdown_all().await;
        if let Some(t) = register {
            let _ = t.await;
        }
        let _ = cache_task.await;
    });
    Ok(LocalNode { url, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: NcArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let file: NcConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nname = \"from-file\"\ncores = 2\ntoken = \"0123456789abcdef0\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "x",
            "--nc-listen",
            "127.0.0.1:9100",
            "--cores",
            "8",
            "--token-file",
            "/t",
            "--accel",
            "kvm",
        ]);
        let c = merged(&cli.a, Some(file));
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.name.as_deref(), Some("from-file"));
        assert_eq!(c.cores, Some(8));
        assert_eq!(c.accel, "kvm");
        // A token file on the command line wins over a token in the file.
        assert_eq!(c.token, None);
        assert_eq!(c.token_file, Some(PathBuf::from("/t")));
        assert!(!host_name().is_empty());
    }
}
