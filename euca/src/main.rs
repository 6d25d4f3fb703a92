//! `euca`: one binary for every service of the cloud, and its admin commands.
mod admin;
mod clc;
mod credentials;
mod edge;
mod imagecache;
mod images;
mod migrate;
mod nc;
mod nodes;
mod pki;
mod progress;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use euca_compute_proto::net::NetMode;
use euca_identity::IdentityStore;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::sync::watch;
use walrus::WalrusConfig;

/// The name of the cloud's own system account: `aws-exec-read` grants it READ, and
/// the image and snapshot services act as it.
const SYSTEM_ACCOUNT: &str = "eucalyptus";

#[derive(Parser)]
#[command(
    name = "euca",
    version,
    about = "A storage-first private cloud: S3 (Walrus), EBS-style volumes over NBD, image bundles; EC2 next."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the all-in-one cloud on this machine (Walrus and the storage controller), on embedded defaults.
    Up(UpArgs),
    /// Run Walrus (S3) alone, from a TOML config and/or flags.
    Walrus(WalrusArgs),
    /// Run the cloud controller's identity service alone (accounts, keys, credential lookup).
    Clc(clc::ClcArgs),
    /// Run the storage controller (volumes over NBD, snapshots in Walrus).
    Sc(ScArgs),
    /// Manage volumes (on a running cloud): create, list, attach to a node, …
    Volume {
        #[command(subcommand)]
        cmd: admin::VolumeCmd,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Manage snapshots of volumes (on a running cloud).
    Snapshot {
        #[command(subcommand)]
        cmd: admin::SnapshotCmd,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Bundle an image the euca2ools way (tar, gzip on every core, AES-128-CBC, parts, signed manifest).
    BundleImage(images::BundleImageArgs),
    /// Verify an image bundle (signature, part and image digests) and restore the image.
    Unbundle(images::UnbundleArgs),
    /// Upload a bundle's parts (in parallel) and then its manifest to Walrus.
    UploadBundle(images::UploadBundleArgs),
    /// Download a bundle's manifest and parts from Walrus.
    DownloadBundle(images::DownloadBundleArgs),
    /// Delete a bundle's parts and manifest from Walrus.
    DeleteBundle(images::DeleteBundleArgs),
    /// Installed images: `install` turns a bundle in Walrus into SHA-256 pieces for the nodes.
    Image {
        #[command(subcommand)]
        cmd: imagecache::ImageCmd,
    },
    /// Run the cluster controller (polls its nodes, places instances; hosts the image tracker).
    Cc(imagecache::CcArgs),
    /// List the cluster's nodes: state, capacity, instances.
    Nodes(nodes::NodesArgs),
    /// Run a node's image cache daemon (fetches pieces from peers and Walrus, serves peers).
    NcCache(imagecache::NcCacheArgs),
    /// Talk to this node's image cache daemon: fetch, list, evict, pin, unpin.
    Cache(imagecache::CacheArgs),
    /// Run a node controller: instances as QEMU guests, with the node's image cache
    /// (or `--simulate N` nodes without QEMU), registered with its CC.
    Nc(nc::NcArgs),
    /// Move a stopped single-node cloud's Walrus (and its accounts) onto PostgreSQL and
    /// a shared blob store, checking every blob and table.
    Migrate(migrate::MigrateArgs),
    /// Manage accounts (on a running cloud).
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Manage access keys (on a running cloud).
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
        #[command(flatten)]
        target: admin::Target,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Everything lives under this directory.
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
    /// Walrus (S3) listen address.
    #[arg(long, default_value = "127.0.0.1:8773")]
    walrus_listen: SocketAddr,
    /// Storage controller API listen address.
    #[arg(long, default_value = "127.0.0.1:8775")]
    sc_listen: SocketAddr,
    /// NBD listen address (volume exports).
    #[arg(long, default_value = "127.0.0.1:10809")]
    nbd_listen: SocketAddr,
    /// iSCSI listen address (volumes attached with `--protocol iscsi`), or `off`.
    #[arg(long, default_value = "127.0.0.1:3260", value_name = "ADDR|off")]
    iscsi_listen: String,
    /// Cluster controller (image-piece tracker) listen address.
    #[arg(long, default_value = "127.0.0.1:8774")]
    cc_listen: SocketAddr,
    /// Cloud controller (identity service: accounts, keys) listen address.
    #[arg(long, default_value = clc::DEFAULT_LISTEN)]
    clc_listen: SocketAddr,
    /// This machine's node controller (NC API) listen address.
    #[arg(long, default_value = "127.0.0.1:8778")]
    nc_listen: SocketAddr,
    /// Run no node controller here (instances only on nodes that join with
    /// `euca nc`).
    #[arg(long)]
    no_node: bool,
    /// Optional TOML config (sections: [walrus], [sc], [cc], [clc], [nc], [nc_cache]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Instance networking: `off`, `system`, `static`, `managed-novlan` or `managed`.
    /// Default: `[cc.net] mode` when the config file sets it, else `managed-novlan`
    /// when run as root with this machine's node (a private bridge inside the
    /// cloud's router namespace) and `off` otherwise (`--no-node`: the nodes need
    /// the site's bridges, see `[cc.net]`).
    #[arg(long, value_parser = parse_net_mode)]
    net: Option<euca_compute_proto::net::NetMode>,
}

fn parse_net_mode(s: &str) -> Result<euca_compute_proto::net::NetMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("{s:?} is not a network mode (off, system, static, managed-novlan, managed)")
    })
}

/// Whether the config file names `[cc.net] mode` itself (so `euca up` keeps it).
fn file_sets_net_mode(path: Option<&Path>) -> bool {
    let Some(p) = path else { return false };
    let Ok(text) = std::fs::read_to_string(p) else {
        return false;
    };
    text.parse::<toml::Table>().is_ok_and(|t| {
        t.get("cc")
            .and_then(|c| c.get("net"))
            .and_then(|n| n.get("mode"))
            .is_some()
    })
}

#[derive(Args)]
struct ScArgs {
    /// TOML config file with an [sc] (and [walrus]) section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, laid out as for `euca up`.
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
    /// API listen address (overrides the config file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// NBD listen address (overrides the config file).
    #[arg(long)]
    nbd_listen: Option<SocketAddr>,
    /// iSCSI listen address, or `off` (overrides the config file).
    #[arg(long, value_name = "ADDR|off")]
    iscsi_listen: Option<String>,
    /// Authenticate through the identity service named in this file (a cloud
    /// controller's credentials/services.toml) and run without an in-process Walrus;
    /// needs --s3-url.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The Walrus that stores snapshots (with --identity).
    #[arg(long, value_name = "URL")]
    s3_url: Option<String>,
}

#[derive(Args)]
struct WalrusArgs {
    /// TOML config file with a [walrus] section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, laid out as for `euca up` (walrus/, identity.redb, credentials/).
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
    /// Listen address (overrides the config file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Region (overrides the config file).
    #[arg(long)]
    region: Option<String>,
    /// Authenticate through the identity service named in this file (a cloud
    /// controller's credentials/services.toml) instead of opening identity.redb.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account with a first access key; prints its id and key.
    Create {
        name: String,
    },
    List,
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create another access key for an account.
    Create {
        account: String,
    },
    List {
        account: String,
    },
    Disable {
        access_key_id: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ConfigFile {
    walrus: Option<WalrusConfig>,
    sc: Option<euca_sc::ScConfig>,
    cc: Option<euca_cc::config::CcConfig>,
    nc_cache: Option<euca_imagecache::config::NcCacheConfig>,
    nc: Option<euca_nc::config::NcConfig>,
    clc: Option<clc::ClcConfig>,
    /// Rules shared by every listener (per-source cap, trusted proxies, metrics).
    service: Option<euca_service::ServiceConfig>,
}

fn load_config(path: Option<&Path>) -> Result<ConfigFile> {
    match path {
        None => Ok(ConfigFile::default()),
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&s).with_context(|| format!("parsing {}", p.display()))
        }
    }
}

/// Runs the command; a failure is printed as one line, `<prog>: <error>: <cause>: …`,
/// and the exit code is 1. (Returning the error from `main` would print anyhow's
/// multi-line form, with a backtrace whenever `RUST_BACKTRACE` is set.)
fn main() -> std::process::ExitCode {
    let prog = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .and_then(|n| n.to_str())
                .map(String::from)
        })
        .filter(|n| n.starts_with("euca"))
        .unwrap_or_else(|| "euca".into());
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {}", error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`. A cause whose text the
/// message before it already ends with (an `I/O: {0}` wrapper and its source)
/// is shown once; line breaks (a quoted server answer) become spaces.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        let msg = msg
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if msg.is_empty() || line.ends_with(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line
}

fn run() -> Result<()> {
    // glibc gives every thread that allocates its own arena and keeps freed memory in
    // each: with tokio's worker and blocking threads that doubled the resident set.
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Invoked as `euca-unbundle` (a link to this binary): the euca2ools command names.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let prog = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("euca")
        .to_string();
    if let Some(sub) = prog.strip_prefix("euca-") {
        args[0] = "euca".into();
        args.insert(1, sub.into());
    }
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Up(a) => up(a).await,
            Cmd::Walrus(a) => walrus_alone(a).await,
            Cmd::Clc(a) => clc::clc_alone(a).await,
            Cmd::Sc(a) => sc_alone(a).await,
            Cmd::Volume { cmd, target } => admin::volume(&target, cmd).await,
            Cmd::Snapshot { cmd, target } => admin::snapshot(&target, cmd).await,
            Cmd::UploadBundle(a) => images::upload_bundle(a).await,
            Cmd::DownloadBundle(a) => images::download_bundle(a).await,
            Cmd::DeleteBundle(a) => images::delete_bundle(a).await,
            Cmd::BundleImage(a) => {
                tokio::task::spawn_blocking(move || images::bundle_image(a)).await?
            }
            Cmd::Unbundle(a) => tokio::task::spawn_blocking(move || images::unbundle(a)).await?,
            Cmd::Image { cmd } => imagecache::image(cmd).await,
            Cmd::Cc(a) => {
                let c = load_config(a.config.as_deref())?;
                imagecache::cc(a, c.cc, c.service.unwrap_or_default()).await
            }
            Cmd::NcCache(a) => {
                let c = load_config(a.config.as_deref())?;
                imagecache::nc_cache(a, c.nc_cache, c.service.unwrap_or_default()).await
            }
            Cmd::Cache(a) => imagecache::cache(a).await,
            Cmd::Nc(a) => {
                let c = load_config(a.config.as_deref())?;
                nc::nc(a, c.nc, c.nc_cache, c.service.unwrap_or_default()).await
            }
            Cmd::Nodes(a) => nodes::nodes(a).await,
            Cmd::Migrate(a) => migrate::migrate(a).await,
            Cmd::Account { cmd, target } => admin::account(&target, cmd).await,
            Cmd::Key { cmd, target } => admin::key(&target, cmd).await,
        }
    })
}

/// The first enabled key of `account` (created if there is none).
fn account_key(id: &IdentityStore, account: &str) -> Result<euca_identity::AccessKey> {
    Ok(match id.keys(account)?.into_iter().find(|k| k.enabled) {
        Some(k) => k,
        None => id.create_key(account)?,
    })
}

/// Opens the identity store (`path`, or the PostgreSQL database at `meta_url`, which
/// other front ends may share) and makes sure the admin and system accounts exist.
fn open_identity(
    path: &Path,
    meta_url: Option<&str>,
) -> Result<(IdentityStore, euca_identity::AccessKey, String)> {
    // Returns the store, the admin's first active key and the system account's canonical id.
    let id = match meta_url {
        Some(url) => {
            IdentityStore::open_postgres(url).context("opening the identity store in meta_url")?
        }
        None => {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            IdentityStore::open(path).with_context(|| format!("opening {}", path.display()))?
        }
    };
    let (_, key) = id.ensure_admin()?;
    let system = id.ensure_account(SYSTEM_ACCOUNT)?;
    id.ensure_account(imagecache::NODES_ACCOUNT)?;
    Ok((id, key, system.canonical_id))
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// What `euca up` / `euca walrus` opened: Walrus and the identity it serves.
struct Opened {
    walrus: walrus::Walrus,
    data: PathBuf,
    identity: IdentityStore,
    admin_key: euca_identity::AccessKey,
    admin: euca_identity::Account,
    region: String,
    s3_url: String,
    /// The identity service, when this process serves it.
    clc_url: Option<String>,
    /// The EC2 API, when this process serves it (`euca up`).
    ec2_url: Option<String>,
}

/// Opens Walrus with the `up` data layout.
async fn open_walrus(
    data: &Path,
    mut wcfg: WalrusConfig,
    data_dir_from_file: bool,
) -> Result<Opened> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let data = data.canonicalize()?;
    if !data_dir_from_file {
        wcfg.data_dir = data.join("walrus");
    }
    let (identity, admin_key, system_id) =
        open_identity(&data.join("identity.redb"), wcfg.meta_url.as_deref())?;
    let region = wcfg.region.clone();
    let admin = identity
        .account(euca_identity::ADMIN_ACCOUNT)?
        .context("admin account missing")?;
    let nodes = identity
        .account(imagecache::NODES_ACCOUNT)?
        .context("nodes account missing")?;
    let walrus = start_walrus(
        wcfg,
        std::sync::Arc::new(identity.clone()),
        system_id,
        SYSTEM_ACCOUNT.into(),
        nodes.canonical_id,
    )
    .await?;
    let s3_url = format!("http://{}/", walrus.local_addr());
    Ok(Opened {
        walrus,
        data,
        identity,
        admin_key,
        admin,
        region,
        s3_url,
        clc_url: None,
        ec2_url: None,
    })
}

/// Opens Walrus authenticating through `identity`. The nodes' key (`nodes_id`) only
/// reads: it creates no bucket and writes nothing anywhere. System buckets exist from
/// the start, owned by the system account, so no other account can take their names;
/// the nodes may list installed images (so a missing image is a 404 to them, not a 403).
pub(crate) async fn start_walrus(
    wcfg: WalrusConfig,
    identity: std::sync::Arc<dyn euca_aws::CredentialLookup>,
    system_id: String,
    system_name: String,
    nodes_id: String,
) -> Result<walrus::Walrus> {
    let walrus = walrus::Walrus::open(
        wcfg,
        identity,
        system_id,
        system_name,
        euca_identity::ADMIN_ACCOUNT.into(),
        vec![nodes_id.clone()],
    )
    .await
    .context("starting Walrus")?;
    walrus
        .ensure_system_bucket(euca_imagecache::manifest::IMAGES_BUCKET, &[nodes_id])
        .await?;
    Ok(walrus)
}

/// Writes the admin's client configs (eucarc and friends) and prints where
/// everything is.
fn announce(o: &Opened, sc: Option<(&str, SocketAddr)>) -> Result<()> {
    let cred_dir = o.data.join("credentials");
    let bundling = pki::ensure(&o.data, &o.admin.name, &o.admin.id)?;
    credentials::write_all(
        &cred_dir,
        &o.s3_url,
        &o.region,
        &o.admin_key,
        &o.admin.id,
        &bundling,
        credentials::ServiceUrls {
            sc: sc.map(|(u, _)| u),
            clc: o.clc_url.as_deref(),
            ec2: o.ec2_url.as_deref(),
        },
    )?;
    write_system_creds(o)?;
    if let Some(u) = &o.clc_url {
        clc::write_services_file(&o.data, &o.identity, u, &o.region)?;
    }
    let (s3_url, region) = (&o.s3_url, &o.region);
    println!("  walrus (S3)  {s3_url}   (also {s3_url}services/Walrus/)   region {region}");
    println!(
        "  metrics      {s3_url}_metrics   (Authorization: Bearer <{}>)",
        edge::metrics_token_path(&o.data).display()
    );
    if let Some((url, nbd)) = sc {
        println!("  sc (volumes) {url}   NBD exports on {nbd}   metrics {url}_metrics");
    }
    if let Some(u) = &o.clc_url {
        println!("  clc          {u}   (accounts, keys: euca account / euca key)");
    }
    println!("  credentials  {}/", cred_dir.display());
    println!("               eucarc (source it), aws/config + aws/credentials (profile euca), s3cfg (s3cmd -c), rclone.conf (remote euca:)");
    println!(
        "  try: source {}/eucarc && aws --endpoint-url $S3_URL s3 ls",
        cred_dir.display()
    );
    Ok(())
}

/// Writes what `euca image install` needs (`<data>/cloud/system.json`, 0600).
fn write_system_creds(o: &Opened) -> Result<()> {
    write_system_creds_to(&o.data, &o.identity, &o.s3_url, &o.region)
}

fn write_system_creds_to(
    data: &Path,
    identity: &IdentityStore,
    s3_url: &str,
    region: &str,
) -> Result<()> {
    let key = account_key(identity, SYSTEM_ACCOUNT)?;
    let nodes = identity
        .account(imagecache::NODES_ACCOUNT)?
        .context("nodes account missing")?;
    let creds = imagecache::SystemCreds {
        s3_url: s3_url.to_string(),
        region: region.to_string(),
        access_key: key.access_key_id,
        secret_key: key.secret_access_key,
        nodes_canonical_id: nodes.canonical_id,
        system_canonical_id: identity
            .account(SYSTEM_ACCOUNT)?
            .context("system account missing")?
            .canonical_id,
    };
    pki::write_file(
        &imagecache::system_creds_path(data),
        &serde_json::to_vec_pretty(&creds)?,
        0o600,
    )
}

/// Starts the cluster controller (with the image tracker) for `euca up` and writes
/// `<data>/credentials/nc-cache.toml`, the config a node's `euca nc-cache` runs
/// with (Walrus, the nodes' read-only key, the tracker and the cluster token).
async fn start_cc(
    o: &Opened,
    mut cfg: euca_cc::config::CcConfig,
    svc: &euca_service::ServiceConfig,
    metrics_token: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<(String, tokio::task::JoinHandle<()>, String)> {
    let token = match &cfg.tracker.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        None => imagecache::ensure_token(&o.data)?,
    };
    cfg.tracker
        .token_file
        .get_or_insert_with(|| imagecache::token_path(&o.data));
    let edge = euca_imagecache::http::Edge::new(
        "tracker",
        cfg.tracker.max_connections,
        svc,
        edge::metrics_access(svc, Some(metrics_token)),
    );
    let started = imagecache::start_cluster(
        &cfg,
        &o.data,
        euca_imagecache::http::Token::new(&token)?,
        edge,
        shutdown,
    )
    .await?;
    let url = format!("http://{}", started.addr);
    write_nc_cache_config(
        &o.data,
        &o.identity,
        &o.s3_url,
        &o.region,
        &url,
        &token,
        metrics_token,
    )?;
    Ok((url, started.task, token))
}

/// Writes `<data>/credentials/nc-cache.toml`, the config a node's `euca nc-cache`
/// runs with (Walrus, the nodes' read-only key, the tracker and the cluster token).
fn write_nc_cache_config(
    data: &Path,
    identity: &IdentityStore,
    s3_url: &str,
    region: &str,
    url: &str,
    token: &str,
    metrics_token: &str,
) -> Result<()> {
    let key = account_key(identity, imagecache::NODES_ACCOUNT)?;
    let mut t = toml::Table::new();
    for (k, v) in [
        ("s3_url", s3_url),
        ("region", region),
        ("access_key", key.access_key_id.as_str()),
        ("secret_key", key.secret_access_key.as_str()),
        ("tracker", url),
        ("token", token),
        ("metrics_token", metrics_token),
    ] {
        t.insert(k.into(), toml::Value::String(v.into()));
    }
    let mut doc = toml::Table::new();
    doc.insert("nc_cache".into(), toml::Value::Table(t));
    // `euca nc --config` this file: the node registers with this CC.
    let mut n = toml::Table::new();
    n.insert("cc".into(), toml::Value::String(url.into()));
    n.insert("token".into(), toml::Value::String(token.into()));
    doc.insert("nc".into(), toml::Value::Table(n));
    pki::write_file(
        &data.join("credentials/nc-cache.toml"),
        toml::to_string(&doc)?.as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// Opens the storage controller under `<data>/sc`, storing snapshots in Walrus
/// as the cloud's system account.
async fn open_sc(
    o: &Opened,
    cfg: euca_sc::ScConfig,
    data_dir_from_file: bool,
) -> Result<euca_sc::ScServer> {
    check_snapshot_bucket(&cfg)?;
    o.walrus
        .ensure_system_bucket(&cfg.snapshot_bucket, &[])
        .await?;
    let key = account_key(&o.identity, SYSTEM_ACCOUNT)?;
    let s3 = euca_s3::S3Client::new(
        &o.s3_url,
        &key.access_key_id,
        &key.secret_access_key,
        &o.region,
    )?;
    open_sc_with(
        &o.data,
        &o.region,
        cfg,
        data_dir_from_file,
        std::sync::Arc::new(o.identity.clone()),
        s3,
    )
    .await
}

/// The orphan sweep deletes every `chunks/` object no snapshot manifest names:
/// pointed at the image bucket it would delete every image piece.
fn check_snapshot_bucket(cfg: &euca_sc::ScConfig) -> Result<()> {
    if cfg.snapshot_bucket == euca_imagecache::manifest::IMAGES_BUCKET {
        anyhow::bail!(
            "[sc] snapshot_bucket must not be {}: that bucket holds installed images",
            euca_imagecache::manifest::IMAGES_BUCKET
        );
    }
    Ok(())
}

/// Opens the storage controller under `<data>/sc` with `identity` checking
/// signatures and `s3` (the system account's client) storing snapshots.
async fn open_sc_with(
    data: &Path,
    region: &str,
    mut cfg: euca_sc::ScConfig,
    data_dir_from_file: bool,
    identity: std::sync::Arc<dyn euca_aws::CredentialLookup>,
    s3: euca_s3::S3Client,
) -> Result<euca_sc::ScServer> {
    if !data_dir_from_file {
        cfg.data_dir = data.join("sc");
    }
    cfg.region = region.to_string();
    check_snapshot_bucket(&cfg)?;
    if cfg.nbd_tls != "off" && cfg.tls_cert.is_none() && cfg.tls_key.is_none() {
        // NBD TLS with a certificate from the cloud CA; nodes trust
        // <data>/credentials/nbd-tls/ca-cert.pem.
        let mut hosts: Vec<String> = ["127.0.0.1", "::1", "localhost"].map(String::from).to_vec();
        let listen_ip = cfg.nbd_listen.ip();
        if !listen_ip.is_unspecified() {
            hosts.push(listen_ip.to_string());
        }
        if let Some(h) = &cfg.nbd_host {
            hosts.push(h.trim_start_matches('[').trim_end_matches(']').to_string());
        }
        hosts.sort();
        hosts.dedup();
        let tls = pki::ensure_nbd_tls(data, &hosts)?;
        cfg.tls_cert = Some(tls.cert);
        cfg.tls_key = Some(tls.key);
    }
    let chunks = std::sync::Arc::new(euca_sc::snapshot::walrus_store(
        s3,
        cfg.snapshot_bucket.clone(),
    ));
    let (api, nbd, iscsi) = (cfg.listen, cfg.nbd_listen, cfg.iscsi_listen.clone());
    euca_sc::ScServer::open(cfg, identity, euca_identity::ADMIN_ACCOUNT.into(), chunks)
        .await
        .with_context(|| {
            format!(
                "starting the storage controller (API on {api}, NBD on {nbd}, iSCSI on {iscsi})"
            )
        })
}

async fn up(a: UpArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref())?;
    let from_file = cfg
        .walrus
        .as_ref()
        .is_some_and(|w| w.data_dir != WalrusConfig::default().data_dir);
    let svc = cfg.service.unwrap_or_default();
    let mut wcfg = cfg.walrus.unwrap_or_default();
    wcfg.listen = a.walrus_listen;
    let sc_from_file = cfg
        .sc
        .as_ref()
        .is_some_and(|s| s.data_dir != euca_sc::ScConfig::default().data_dir);
    let mut scfg = cfg.sc.unwrap_or_default();
    scfg.listen = a.sc_listen;
    scfg.nbd_listen = a.nbd_listen;
    scfg.iscsi_listen = a.iscsi_listen.clone();
    let mut ccfg = cfg.cc.unwrap_or_default();
    ccfg.tracker.listen = a.cc_listen;
    let net_off_not_root = set_up_net_mode(&mut ccfg, &a)?;
    let mut clcfg = cfg.clc.unwrap_or_default();
    clcfg.listen = a.clc_listen;
    let mut ncfg = cfg.nc.unwrap_or_default();
    ncfg.listen = a.nc_listen;
    let mut nccfg = cfg.nc_cache.unwrap_or_default();
    // Walrus connections may each hold an open blob or staging file too.
    edge::fit_caps(&mut [
        ("[nc] max_connections", &mut ncfg.max_connections, 1),
        ("[nc_cache] max_connections", &mut nccfg.max_connections, 1),
        ("[walrus] max_connections", &mut wcfg.max_connections, 2),
        ("[sc] max_connections", &mut scfg.max_connections, 1),
        ("[sc] nbd_max_connections", &mut scfg.nbd_max_connections, 2),
        (
            "[sc] iscsi_max_connections",
            &mut scfg.iscsi_max_connections,
            1,
        ),
        ("[cc] max_connections", &mut ccfg.tracker.max_connections, 1),
        ("[clc] max_connections", &mut clcfg.max_connections, 1),
    ])?;
    let mut opened = open_walrus(&a.data, wcfg, from_file).await?;
    let token = edge::ensure_metrics_token(&opened.data)?;
    let access = edge::metrics_access(&svc, Some(&token));
    opened.walrus = opened.walrus.with_edge(svc.clone(), access.clone());
    let shutdown = shutdown_signal();
    let clc::Started {
        url: clc_url,
        task: clc_task,
        clc: clc_state,
    } = clc::start_clc(
        &opened.identity,
        &opened.region,
        &clcfg,
        &svc,
        access.clone(),
        shutdown.clone(),
        Some(&opened.data),
    )
    .await?;
    opened.ec2_url = Some(clc_url.clone());
    opened.clc_url = Some(clc_url);
    let sc = open_sc(&opened, scfg, sc_from_file)
        .await?
        .with_edge(svc.clone(), access);
    // This process holds the data directory's locks now (Walrus, identity, the
    // CLC's records, the SC): a eucarc left by an earlier run must not announce
    // this one before it serves. (Removed no earlier: a second `euca up` on a
    // directory in use fails on those locks and must leave the running cloud's
    // eucarc alone.)
    let _ = std::fs::remove_file(opened.data.join("credentials/eucarc"));
    // The SC listens now: the EC2 API's volume actions may call it.
    if let Some(clc_state) = &clc_state {
        let api = sc
            .api_addr()
            .context("the SC API listener has no address")?;
        clc::connect_sc(
            clc_state,
            &opened.identity,
            &format!("http://{api}/"),
            &opened.region,
        )?;
    }
    // `euca up`'s CC serves the CLC's zone: `[cc] zone` may repeat it, not differ.
    if let Some(clc_state) = &clc_state {
        let own = clc_state.zone();
        match &ccfg.zone {
            Some(z) if *z != own => anyhow::bail!(
                "[cc] zone = {z:?} but this cloud's zone ([clc] zone) is {own:?}: \
                 `euca up`'s cluster controller serves the CLC's zone; run another \
                 zone's CC with `euca cc` and name it in [[clc.clusters]]"
            ),
            _ => ccfg.zone = Some(own),
        }
    }
    let cc_state_dir = ccfg
        .state_dir
        .clone()
        .unwrap_or_else(|| opened.data.join("cc"));
    let net_mode = ccfg.net.mode;
    let own_bridge = ccfg.net.private_bridge.is_none();
    let (tracker, cc_task, cc_token) =
        start_cc(&opened, ccfg, &svc, &token, shutdown.clone()).await?;
    // One machine: the node's taps join the router namespace's own bridge (the
    // CC made it, `br0`), unless the config says where they go.
    if matches!(net_mode, NetMode::ManagedNovlan | NetMode::Static)
        && own_bridge
        && ncfg.net.netns.is_none()
    {
        ncfg.net.netns = Some(euca_vnet::router::router_netns(&cc_state_dir));
        ncfg.net.bridge = euca_vnet::router::BRIDGE.to_string();
    }
    // The CC has built the router namespace: a cloud that then fails to start
    // (the node's port taken, say) removes it on the way out, as a stopped one does.
    let rest = async {
        // The EC2 API's instance actions go to this cluster, in the CLC's zone.
        if let Some(clc_state) = &clc_state {
            clc_state.set_cluster(
                &clc_state.zone(),
                euca_compute_proto::cc::CcClient::new(
                    &tracker,
                    euca_imagecache::http::Token::new(&cc_token)?,
                ),
            );
        }
        if a.no_node {
            return Ok(None);
        }
        let n = start_node(
            &opened,
            ncfg,
            nccfg,
            &svc,
            (&tracker, &cc_token),
            &token,
            shutdown.clone(),
        )
        .await?;
        Ok::<_, anyhow::Error>(Some(n))
    };
    let node = match rest.await {
        Ok(node) => node,
        Err(e) => {
            if net_mode != NetMode::Off {
                remove_router(&cc_state_dir).await;
            }
            return Err(e);
        }
    };
    let node_url = node.as_ref().map(|n| n.url.clone());
    if net_off_not_root {
        tracing::warn!(
            "instance networking is off: `euca up` is not running as root (instances \
             get a NIC on no network; run as root, or set [cc.net] mode)"
        );
    }
    let served = serve_with_sc(opened, sc, "the cloud", shutdown, Some(tracker), node_url).await;
    // The node stops its guests (powered off, records kept) before the CC goes.
    if let Some(n) = node {
        let _ = n.task.await;
    }
    let _ = cc_task.await;
    let _ = clc_task.await;
    // The guests are stopped: `euca up`'s router namespace goes with the cloud
    // (`euca cc` alone keeps it, so instances on other nodes keep their network
    // while it restarts).
    if net_mode != NetMode::Off {
        remove_router(&cc_state_dir).await;
    }
    served
}

/// Removes `euca up`'s router namespace (saying so if that fails).
async fn remove_router(cc_state_dir: &Path) {
    if let Err(e) = euca_cc::net::delete_router(cc_state_dir).await {
        tracing::warn!(error = %e, "removing the cloud's router namespace");
    }
}

/// `euca up`'s network mode: `--net`, else the file's `[cc.net] mode`, else
/// managed-novlan on a bridge of this machine as root when this machine runs the
/// node (with `--no-node` the nodes are elsewhere and need the site's bridges: off
/// until configured). True when root was what was missing (said once the cloud
/// serves, so a start that fails still prints one line).
fn set_up_net_mode(ccfg: &mut euca_cc::config::CcConfig, a: &UpArgs) -> Result<bool> {
    let mut off_not_root = false;
    if let Some(m) = a.net {
        ccfg.net.mode = m;
    } else if !file_sets_net_mode(a.config.as_deref()) {
        ccfg.net.mode = if a.no_node {
            NetMode::Off
        } else if euca_vnet::can_admin_network() {
            NetMode::ManagedNovlan
        } else {
            off_not_root = true;
            NetMode::Off
        };
    }
    if ccfg.net.mode == NetMode::Managed && ccfg.net.underlay.is_none() && !a.no_node {
        anyhow::bail!(
            "[cc.net] mode = \"managed\" carries each group on its own VXLAN segment \
             between the CC and nodes on other hosts: run them with `euca cc` and \
             `euca nc` (or set [cc.net] underlay and [nc.net]), or use managed-novlan \
             on one machine"
        );
    }
    Ok(off_not_root)
}

/// `euca up`'s node controller: a QEMU node on `<data>/nc` with its image cache on
/// `<data>/nc-cache` (peers reach its piece server on an ephemeral port), both
/// registered with the cloud's CC (`cc` = its URL and the cluster token). The
/// `[nc]` and `[nc_cache]` tables of the config file apply; paths and addresses
/// they leave at their defaults are put under the data directory.
async fn start_node(
    o: &Opened,
    mut ncfg: euca_nc::config::NcConfig,
    mut cache: euca_imagecache::config::NcCacheConfig,
    svc: &euca_service::ServiceConfig,
    cc: (&str, &str),
    metrics_token: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<nc::LocalNode> {
    let (cc_url, cc_token) = cc;
    if ncfg.dir == euca_nc::config::NcConfig::default().dir {
        ncfg.dir = o.data.join("nc");
    }
    ncfg.cc = Some(cc_url.to_string());
    let cache_defaults = euca_imagecache::config::NcCacheConfig::default();
    if cache.dir == cache_defaults.dir {
        cache.dir = o.data.join("nc-cache");
    }
    if cache.listen == cache_defaults.listen {
        cache.listen = ([127, 0, 0, 1], 0).into();
    }
    let key = account_key(&o.identity, imagecache::NODES_ACCOUNT)?;
    cache.tracker = Some(cc_url.to_string());
    cache.token = Some(cc_token.to_string());
    cache.token_file = None;
    cache.s3_url = o.s3_url.clone();
    cache.region = o.region.clone();
    cache.access_key = key.access_key_id;
    cache.secret_key = key.secret_access_key;
    cache.metrics_token = Some(metrics_token.to_string());
    if cache.node.is_none() {
        cache.node = ncfg.name.clone();
    }
    nc::start_local(
        ncfg,
        cache,
        svc,
        edge::metrics_access(svc, Some(metrics_token)),
        euca_imagecache::http::Token::new(cc_token)?,
        shutdown,
    )
    .await
    .context("starting this machine's node controller")
}

/// Waits (at most [`READY_TRIES`] × 50 ms each) until every listener in `connect`
/// accepts connections (bound: requests queue until its loop, started next, reads
/// them) and every URL in `health` answers `GET /_health` with 200 (services
/// already serving: the cloud controller, the tracker). The eucarc is written
/// after this, so a client that waits for it finds every service answering.
async fn wait_until_serving(connect: &[SocketAddr], health: &[&str]) -> Result<()> {
    for addr in connect {
        let mut tries = 0;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tries += 1;
            if tries == READY_TRIES {
                anyhow::bail!("{addr} does not accept connections");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for url in health {
        let mut tries = 0;
        while !health_ok(url).await {
            tries += 1;
            if tries == READY_TRIES {
                anyhow::bail!("{url}_health does not answer");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

const READY_TRIES: u32 = 100;

/// Whether `GET <url>/_health` answers 200 (`url` is `http://host:port[/]`).
async fn health_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(&host).await.ok()?;
        s.write_all(
            format!("GET /_health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Announces Walrus and the SC, then serves both until `shutdown`.
async fn serve_with_sc(
    opened: Opened,
    sc: euca_sc::ScServer,
    what: &str,
    shutdown: watch::Receiver<bool>,
    tracker: Option<String>,
    node: Option<String>,
) -> Result<()> {
    let sc_url = format!(
        "http://{}/",
        sc.api_addr()
            .context("the SC API listener has no address")?
    );
    let nbd = sc.nbd_addr().context("the NBD listener has no address")?;
    let mut connect = vec![opened.walrus.local_addr(), nbd];
    connect.extend(sc.api_addr());
    let health: Vec<&str> = opened
        .clc_url
        .iter()
        .chain(tracker.iter())
        .chain(node.iter())
        .map(String::as_str)
        .collect();
    wait_until_serving(&connect, &health).await?;
    println!("euca: {what} is up");
    announce(&opened, Some((&sc_url, nbd)))?;
    if let Some(t) = tracker {
        println!("  cc           {t}/   metrics {t}/_metrics   (euca nodes)");
        if let Some(n) = &node {
            println!(
                "  nc (here)    {n}/   instances in {}/nc",
                opened.data.display()
            );
        }
        println!(
            "  more nodes   euca nc --config {}/credentials/nc-cache.toml --dir DIR --nc-listen ADDR",
            opened.data.display()
        );
    }
    let sc_task = tokio::spawn(sc.serve(shutdown.clone()));
    opened.walrus.serve(shutdown).await;
    sc_task.await?;
    Ok(())
}

async fn sc_alone(a: ScArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref())?;
    // The SC shares the cloud's identity and Walrus: it runs with Walrus in the
    // same process (as `euca up` does) until services reach each other remotely.
    let svc = cfg.service.unwrap_or_default();
    let mut wcfg = cfg.walrus.unwrap_or_default();
    let from_file = cfg
        .sc
        .as_ref()
        .is_some_and(|s| s.data_dir != euca_sc::ScConfig::default().data_dir);
    let mut scfg = cfg.sc.unwrap_or_default();
    if let Some(l) = a.listen {
        scfg.listen = l;
    }
    if let Some(l) = a.nbd_listen {
        scfg.nbd_listen = l;
    }
    if let Some(l) = &a.iscsi_listen {
        scfg.iscsi_listen = l.clone();
    }
    clc::check_sc_flags(a.identity.as_deref(), a.s3_url.as_deref())?;
    if let (Some(id), Some(url)) = (&a.identity, &a.s3_url) {
        edge::fit_caps(&mut [
            ("[sc] max_connections", &mut scfg.max_connections, 1),
            ("[sc] nbd_max_connections", &mut scfg.nbd_max_connections, 2),
            (
                "[sc] iscsi_max_connections",
                &mut scfg.iscsi_max_connections,
                1,
            ),
        ])?;
        return clc::sc_remote(id, url, &a.data, scfg, from_file, svc).await;
    }
    edge::fit_caps(&mut [
        ("[walrus] max_connections", &mut wcfg.max_connections, 2),
        ("[sc] max_connections", &mut scfg.max_connections, 1),
        ("[sc] nbd_max_connections", &mut scfg.nbd_max_connections, 2),
        (
            "[sc] iscsi_max_connections",
            &mut scfg.iscsi_max_connections,
            1,
        ),
    ])?;
    let mut opened = open_walrus(&a.data, wcfg, false).await?;
    let token = edge::ensure_metrics_token(&opened.data)?;
    let access = edge::metrics_access(&svc, Some(&token));
    opened.walrus = opened.walrus.with_edge(svc.clone(), access.clone());
    let shutdown = shutdown_signal();
    let clc_task = clc::start_embedded(&mut opened, cfg.clc, &svc, shutdown.clone()).await?;
    let sc = open_sc(&opened, scfg, from_file)
        .await?
        .with_edge(svc, access);
    let served = serve_with_sc(opened, sc, "sc", shutdown, None, None).await;
    let _ = clc_task.await;
    served
}

async fn walrus_alone(a: WalrusArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref())?;
    let from_file = cfg
        .walrus
        .as_ref()
        .is_some_and(|w| w.data_dir != WalrusConfig::default().data_dir);
    let mut w = cfg.walrus.unwrap_or_default();
    if let Some(l) = a.listen {
        w.listen = l;
    }
    if let Some(r) = a.region {
        w.region = r;
    }
    let svc = cfg.service.unwrap_or_default();
    edge::fit_caps(&mut [("[walrus] max_connections", &mut w.max_connections, 2)])?;
    if let Some(id) = &a.identity {
        return clc::walrus_remote(id, &a.data, w, from_file, svc).await;
    }
    let mut opened = open_walrus(&a.data, w, from_file).await?;
    println!("euca: walrus is up");
    let token = edge::ensure_metrics_token(&opened.data)?;
    opened.walrus = opened
        .walrus
        .with_edge(svc.clone(), edge::metrics_access(&svc, Some(&token)));
    let shutdown = shutdown_signal();
    let clc_task = clc::start_embedded(&mut opened, cfg.clc, &svc, shutdown.clone()).await?;
    announce(&opened, None)?;
    opened.walrus.serve(shutdown).await;
    let _ = clc_task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that shows its source in its own text, as `#[error("I/O: {0}")]` does.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "I/O: {}", self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_line_is_the_chain_on_one_line_without_repeats() {
        let e = anyhow::Error::new(Wrapping(std::io::Error::other("address in use")))
            .context("starting the storage controller");
        assert_eq!(
            error_line(&e),
            "starting the storage controller: I/O: address in use"
        );
        let e =
            anyhow::anyhow!("403 Forbidden: <Error>\r\n  <Code>AccessDenied</Code>\n</Error>\n")
                .context("calling http://h/");
        assert_eq!(
            error_line(&e),
            "calling http://h/: 403 Forbidden: <Error> <Code>AccessDenied</Code> </Error>"
        );
    }
}
