//! The cloud controller's identity service (accounts, keys, credential lookup for
//! the other services), in `euca up` or alone as `euca clc`; and the services' side
//! of it: `euca walrus --identity FILE` and `euca sc --identity FILE --s3-url URL`
//! authenticating through [`RemoteIdentity`] instead of opening identity.redb.
use crate::{account_key, edge, imagecache, open_identity, pki, SYSTEM_ACCOUNT};
use anyhow::{bail, Context, Result};
use clap::Args;
use euca_identity::remote::CacheTtl;
use euca_identity::service::IdentityService;
use euca_identity::{IdentityStore, RemoteIdentity, ADMIN_ACCOUNT};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

pub use euca_clc::config::{ClcConfig, DEFAULT_LISTEN};

/// `<data>/credentials/services.toml` (0600), written by the cloud controller: how
/// other services reach the identity service, and the system account's key they
/// call it (and Walrus) with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    pub identity_url: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// How long a service keeps a credential it was given (seconds): a key
    /// disabled on the cloud controller still works there for up to this long.
    /// 0 asks the identity service on every request.
    #[serde(default = "default_cache_secs")]
    pub cache_secs: u64,
    /// How long a service remembers that a key does not exist (seconds): a key
    /// just created may be refused for up to this long.
    #[serde(default = "default_negative_cache_secs")]
    pub negative_cache_secs: u64,
}

fn default_cache_secs() -> u64 {
    CacheTtl::default().positive.as_secs()
}

fn default_negative_cache_secs() -> u64 {
    CacheTtl::default().negative.as_secs()
}

pub fn services_path(data: &Path) -> PathBuf {
    data.join("credentials/services.toml")
}

/// The cloud controller's listener as started: its URL, its task, and with the EC2
/// API its state (to give it the storage controller once that listens).
pub struct Started {
    pub url: String,
    pub task: tokio::task::JoinHandle<()>,
    pub clc: Option<Arc<euca_clc::Clc>>,
}

/// Gives the cloud controller the storage controller's API at `sc_url`, called as
/// the admin account (the SC API is the administrator's).
pub fn connect_sc(
    clc: &euca_clc::Clc,
    store: &IdentityStore,
    sc_url: &str,
    region: &str,
) -> Result<()> {
    let key = account_key(store, ADMIN_ACCOUNT)?;
    let client =
        euca_clc::sc::ScClient::new(sc_url, &key.access_key_id, &key.secret_access_key, region)
            .with_context(|| format!("the storage controller's URL {sc_url}"))?;
    clc.set_sc(client);
    Ok(())
}

/// Binds the cloud controller's listener and starts serving it. With `ec2_data`
/// (the cloud's data directory) it serves the EC2 API beside the identity
/// service, its records in `<ec2_data>/clc/`; without, the identity service alone.
pub async fn start_clc(
    store: &IdentityStore,
    region: &str,
    cfg: &ClcConfig,
    svc: &euca_service::ServiceConfig,
    metrics: euca_service::MetricsAccess,
    shutdown: watch::Receiver<bool>,
    ec2_data: Option<&Path>,
) -> Result<Started> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the cloud controller to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/");
    let service = IdentityService::new(store.clone(), region, ADMIN_ACCOUNT, SYSTEM_ACCOUNT);
    let opts = euca_service::ListenOptions::new("clc", cfg.max_connections, svc);
    let mut ec2 = None;
    let task = match ec2_data {
        Some(data) => {
            let dir = data.join("clc");
            let mut clc =
                euca_clc::Clc::open(&dir, region, &url, cfg.clone()).with_context(|| {
                    format!(
                        "opening the cloud controller's records in {}",
                        dir.display()
                    )
                })?;
            clc.installer = Some(image_installer(data, store));
            let interrupted = clc
                .fail_interrupted_installs()
                .context("marking interrupted image installs failed")?;
            if interrupted > 0 {
                tracing::warn!(
                    images = interrupted,
                    "image installs interrupted by the last stop are marked failed"
                );
            }
            clc.connect_configured_clusters()
                .context("connecting the clusters [[clc.clusters]] names")?;
            let clc = Arc::new(clc);
            // Instances' background work (states from the clusters, attachments,
            // interrupted launches, expiry); idle until a cluster is connected.
            let reconciler = euca_clc::reconcile::spawn(clc.clone(), shutdown.clone());
            if let Some(at) = cfg.dns_listen {
                start_dns(clc.clone(), at, shutdown.clone()).await;
            }
            ec2 = Some(clc.clone());
            let api = euca_clc::ClcApi::new(clc, service, Arc::new(store.clone()));
            let serve = api.serve(listener, opts, metrics, shutdown);
            tokio::spawn(async move {
                serve.await;
                // The reconciler ends its pass and gives its lease back (shared
                // records: another CLC takes over at once, not a TTL later).
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), reconciler).await;
            })
        }
        None => tokio::spawn(service.serve(listener, opts, metrics, shutdown)),
    };
    Ok(Started {
        url,
        task,
        clc: ec2,
    })
}

/// Starts the dynamic DNS on `at` until `shutdown`. A port that cannot be bound
/// (another cloud on this machine has it) leaves the cloud without DNS, said
/// loudly, rather than without its API: names are a convenience, the API is not.
async fn start_dns(clc: Arc<euca_clc::Clc>, at: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    match euca_clc::dns::serve(clc, at).await {
        Ok(dns) => {
            tokio::spawn(async move {
                while !*shutdown.borrow() {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
                dns.shutdown().await;
            });
        }
        Err(e) => tracing::error!(error = %e, "the dynamic DNS is not running ([clc] dns_listen)"),
    }
}

/// [`start_clc`], for callers that need only the URL and the task.
pub async fn start(
    store: &IdentityStore,
    region: &str,
    cfg: &ClcConfig,
    svc: &euca_service::ServiceConfig,
    metrics: euca_service::MetricsAccess,
    shutdown: watch::Receiver<bool>,
    ec2_data: Option<&Path>,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let s = start_clc(store, region, cfg, svc, metrics, shutdown, ec2_data).await?;
    Ok((s.url, s.task))
}

/// The CLC's image installer: the cloud's keys under `data`, Walrus and the
/// system account's key from `<data>/cloud/system.json` (read at each install:
/// `euca up` writes it after the CLC starts), callers' keys from `store`.
fn image_installer(data: &Path, store: &IdentityStore) -> Arc<euca_clc::install::Installer> {
    let creds_path = imagecache::system_creds_path(data);
    let env: euca_clc::install::EnvLoader = Arc::new(move || {
        let raw = std::fs::read(&creds_path)
            .map_err(|e| format!("reading {}: {e}", creds_path.display()))?;
        let c: imagecache::SystemCreds = serde_json::from_slice(&raw)
            .map_err(|e| format!("parsing {}: {e}", creds_path.display()))?;
        Ok(euca_clc::install::InstallEnv {
            s3_url: c.s3_url,
            region: c.region,
            access_key: c.access_key,
            secret_key: c.secret_key,
            nodes_canonical_id: c.nodes_canonical_id,
            system_canonical_id: c.system_canonical_id,
        })
    });
    Arc::new(euca_clc::install::Installer::new(
        data.to_path_buf(),
        env,
        Arc::new(store.clone()),
    ))
}

/// `euca walrus` / `euca sc` without `--identity` open identity.redb themselves and
/// serve its API too, so that `euca account` / `euca key` keep working against
/// them: on `[clc] listen` if the config has it, else on a free loopback port (the
/// eucarc names it as EUCA_CLC_URL either way).
pub async fn start_embedded(
    o: &mut crate::Opened,
    file: Option<ClcConfig>,
    svc: &euca_service::ServiceConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let cfg = file.unwrap_or_else(|| ClcConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ClcConfig::default()
    });
    let token = edge::ensure_metrics_token(&o.data)?;
    let metrics = edge::metrics_access(svc, Some(&token));
    let (url, task) = start(&o.identity, &o.region, &cfg, svc, metrics, shutdown, None).await?;
    o.clc_url = Some(url);
    Ok(task)
}

/// Writes `services.toml` for the identity service at `url`. The cache times of an
/// existing file are kept (the operator's); a file that does not parse is
/// replaced, with a warning.
pub fn write_services_file(
    data: &Path,
    store: &IdentityStore,
    url: &str,
    region: &str,
) -> Result<()> {
    let path = services_path(data);
    let (cache_secs, negative_cache_secs) = match std::fs::read_to_string(&path) {
        Ok(text) => match toml::from_str::<ServicesFile>(&text) {
            Ok(old) => (old.cache_secs, old.negative_cache_secs),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "replacing a services file that does not parse");
                (default_cache_secs(), default_negative_cache_secs())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (default_cache_secs(), default_negative_cache_secs())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let key = account_key(store, SYSTEM_ACCOUNT)?;
    let f = ServicesFile {
        identity_url: url.to_string(),
        region: region.to_string(),
        access_key: key.access_key_id,
        secret_key: key.secret_access_key,
        cache_secs,
        negative_cache_secs,
    };
    pki::write_file(&path, toml::to_string(&f)?.as_bytes(), 0o600)
}

fn read_services_file(p: &Path) -> Result<ServicesFile> {
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&s).with_context(|| format!("parsing {}", p.display()))
}

/// The identity service named in a services file, as a credential lookup.
pub fn remote(p: &Path) -> Result<(Arc<RemoteIdentity>, ServicesFile)> {
    let f = read_services_file(p)?;
    let r = RemoteIdentity::new(
        &f.identity_url,
        &f.access_key,
        &f.secret_key,
        &f.region,
        CacheTtl {
            positive: std::time::Duration::from_secs(f.cache_secs),
            negative: std::time::Duration::from_secs(f.negative_cache_secs),
            ..CacheTtl::default()
        },
    )
    .with_context(|| format!("identity_url in {}", p.display()))?;
    Ok((Arc::new(r), f))
}

/// An account the cloud controller must have created.
async fn remote_account(
    r: &RemoteIdentity,
    name: &str,
) -> Result<euca_identity::service::AccountInfo> {
    r.account(name)
        .await
        .with_context(|| format!("asking the identity service for account {name}"))?
        .with_context(|| format!("the identity service has no account {name}"))
}

#[derive(Args)]
pub struct ClcArgs {
    /// Data directory (identity.redb, credentials/).
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
    /// Identity service listen address (overrides the config file; default 127.0.0.1:8777).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Walrus's URL, written into the admin's eucarc and client configs.
    #[arg(long, default_value = "http://127.0.0.1:8773/")]
    s3_url: String,
    /// The tracker's URL (`euca cc`): with it, the nodes' config
    /// credentials/nc-cache.toml is written too.
    #[arg(long)]
    tracker_url: Option<String>,
    /// The storage controller's URL, written into the admin's eucarc (EUCA_SC_URL)
    /// and called by the EC2 API for volumes and snapshots (as the admin account).
    #[arg(long)]
    sc_url: Option<String>,
    /// Region the services verify signatures for (default: the config's
    /// `[walrus] region`, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// TOML config file with a [clc] (and [service]) section.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `euca clc`: the identity service alone.
pub async fn clc_alone(a: ClcArgs) -> Result<()> {
    let file = crate::load_config(a.config.as_deref())?;
    let svc = file.service.unwrap_or_default();
    let region = a
        .region
        .clone()
        .unwrap_or_else(|| file.walrus.unwrap_or_default().region);
    let mut cfg = file.clc.unwrap_or_default();
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    edge::fit_caps(&mut [("[clc] max_connections", &mut cfg.max_connections, 1)])?;
    std::fs::create_dir_all(&a.data).with_context(|| format!("creating {}", a.data.display()))?;
    let data = a.data.canonicalize()?;
    // With its records in PostgreSQL the accounts and keys live there too, so
    // every `euca clc` on the database (and Walrus on it) accepts the same keys.
    let (store, admin_key, _) =
        open_identity(&data.join("identity.redb"), cfg.meta_url.as_deref())?;
    let admin = store
        .account(ADMIN_ACCOUNT)?
        .context("admin account missing")?;
    // The cluster token `euca cc --data` and the nodes read, and the metrics token
    // every process given this data directory shares.
    let cluster_token = imagecache::ensure_token(&data)?;
    let metrics_token = edge::ensure_metrics_token(&data)?;
    let shutdown = crate::shutdown_signal();
    let metrics = edge::metrics_access(&svc, Some(&metrics_token));
    let Started { url, task, clc } =
        start_clc(&store, &region, &cfg, &svc, metrics, shutdown, Some(&data)).await?;
    if let (Some(clc), Some(sc_url)) = (&clc, &a.sc_url) {
        connect_sc(clc, &store, sc_url, &region)?;
    }
    let bundling = pki::ensure(&data, &admin.name, &admin.id)?;
    crate::credentials::write_all(
        &data.join("credentials"),
        &a.s3_url,
        &region,
        &admin_key,
        &admin.id,
        &bundling,
        crate::credentials::ServiceUrls {
            sc: a.sc_url.as_deref(),
            clc: Some(&url),
            ec2: Some(&url),
        },
    )?;
    crate::write_system_creds_to(&data, &store, &a.s3_url, &region)?;
    write_services_file(&data, &store, &url, &region)?;
    if let Some(t) = &a.tracker_url {
        crate::write_nc_cache_config(
            &data,
            &store,
            &a.s3_url,
            &region,
            t.trim_end_matches('/'),
            &cluster_token,
            &metrics_token,
        )?;
    }
    println!("euca: clc is up");
    println!("  identity     {url}   (accounts, keys; credential lookup for services)");
    println!(
        "  services     {}   (euca walrus|sc --identity FILE)",
        services_path(&data).display()
    );
    println!("  credentials  {}/", data.join("credentials").display());
    task.await?;
    Ok(())
}

/// `euca walrus --identity FILE`: Walrus authenticating through the identity service.
pub async fn walrus_remote(
    identity: &Path,
    data: &Path,
    mut wcfg: walrus::WalrusConfig,
    data_dir_from_file: bool,
    svc: euca_service::ServiceConfig,
) -> Result<()> {
    let (remote, _) = remote(identity)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let data = data.canonicalize()?;
    if !data_dir_from_file {
        wcfg.data_dir = data.join("walrus");
    }
    let system = remote_account(&remote, SYSTEM_ACCOUNT).await?;
    let nodes = remote_account(&remote, imagecache::NODES_ACCOUNT).await?;
    let walrus = crate::start_walrus(
        wcfg,
        remote,
        system.canonical_id,
        system.name,
        nodes.canonical_id,
    )
    .await?;
    let token = edge::ensure_metrics_token(&data)?;
    let walrus = walrus.with_edge(svc.clone(), edge::metrics_access(&svc, Some(&token)));
    let url = format!("http://{}/", walrus.local_addr());
    println!("euca: walrus is up");
    println!(
        "  walrus (S3)  {url}   (credentials from {})",
        identity.display()
    );
    walrus.serve(crate::shutdown_signal()).await;
    Ok(())
}

/// `euca sc --identity FILE --s3-url URL`: the storage controller alone,
/// authenticating through the identity service and storing snapshots in the
/// Walrus at `s3_url` as the system account.
pub async fn sc_remote(
    identity: &Path,
    s3_url: &str,
    data: &Path,
    cfg: euca_sc::ScConfig,
    data_dir_from_file: bool,
    svc: euca_service::ServiceConfig,
) -> Result<()> {
    let (remote, f) = remote(identity)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let data = data.canonicalize()?;
    let s3 = euca_s3::S3Client::new(s3_url, &f.access_key, &f.secret_key, &f.region)?;
    s3.create_bucket(&cfg.snapshot_bucket)
        .await
        .with_context(|| format!("creating the snapshot bucket at {s3_url}"))?;
    let sc = crate::open_sc_with(&data, &f.region, cfg, data_dir_from_file, remote, s3).await?;
    let token = edge::ensure_metrics_token(&data)?;
    let sc = sc.with_edge(svc.clone(), edge::metrics_access(&svc, Some(&token)));
    let api = sc
        .api_addr()
        .context("the SC API listener has no address")?;
    let nbd = sc.nbd_addr().context("the NBD listener has no address")?;
    println!("euca: sc is up");
    let iscsi = sc
        .iscsi_addr()
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    println!(
        "  sc (volumes) http://{api}/   NBD exports on {nbd}   iSCSI on {iscsi}   snapshots in {s3_url}"
    );
    sc.serve(crate::shutdown_signal()).await;
    Ok(())
}

/// `--s3-url` only makes sense with `--identity`, and the other way round.
pub fn check_sc_flags(identity: Option<&Path>, s3_url: Option<&str>) -> Result<()> {
    match (identity, s3_url) {
        (Some(_), None) => bail!("--identity needs --s3-url (the Walrus that stores snapshots)"),
        (None, Some(_)) => bail!("--s3-url needs --identity (the identity service's file)"),
        _ => Ok(()),
    }
}
