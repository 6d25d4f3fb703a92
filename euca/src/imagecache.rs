//! Installed images and the image cache: `euca image install` (cloud side),
//! `euca cc` (the tracker), `euca nc-cache` (the daemon on every node) and
//! `euca cache …` (talks to a node's daemon over its Unix socket).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use euca_cc::config::CcConfig;
use euca_imagecache::config::{parse_size, NcCacheConfig};
use euca_imagecache::daemon::{Daemon, DaemonConfig, Progress as FetchProgress};
use euca_imagecache::http::{Edge, Token};
use euca_imagecache::store::{ImageStatus, Store};
use euca_imagecache::{install, origin::WalrusOrigin, ImageId};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::progress::Progress;

/// The account whose read-only key the nodes' cache daemons use; installed
/// images are granted READ to it.
pub const NODES_ACCOUNT: &str = "eucalyptus-nodes";

/// What `euca image install` needs from the cloud, written by `euca up` to
/// `<data>/cloud/system.json` (0600): the system account's key and the nodes'
/// account id.
#[derive(Serialize, Deserialize)]
pub struct SystemCreds {
    pub s3_url: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub nodes_canonical_id: String,
    pub system_canonical_id: String,
}

/// The file under `<data>/cloud` holding [`SystemCreds`].
const SYSTEM_CREDS_FILE: &str = "system.json";

pub fn system_creds_path(data: &Path) -> PathBuf {
    data.join("cloud").join(SYSTEM_CREDS_FILE)
}

pub fn token_path(data: &Path) -> PathBuf {
    data.join("cloud/cluster-token")
}

/// The cluster token under `<data>/cloud`, created on first use.
pub fn ensure_token(data: &Path) -> Result<String> {
    let p = token_path(data);
    if let Ok(t) = std::fs::read_to_string(&p) {
        return Ok(t.trim().to_string());
    }
    let mut b = [0u8; 24];
    openssl::rand::rand_bytes(&mut b)?;
    let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    crate::pki::write_file(&p, t.as_bytes(), 0o600)?;
    Ok(t)
}

pub(crate) fn read_token(file: &Path) -> Result<Token> {
    let t = std::fs::read_to_string(file)
        .with_context(|| format!("reading the cluster token from {}", file.display()))?;
    Ok(Token::new(&t)?)
}

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Turn a bundle in Walrus into an installed image (verify, decrypt, store as
    /// SHA-256 pieces); prints the image id.
    Install(InstallArgs),
}

/// The eucarc variable naming the cloud's own key directory (`<data>/cloud`:
/// `system.json`, `cloud-pk.pem`), for `euca image install` after `source eucarc`.
pub const CLOUD_DIR_VAR: &str = "EUCA_CLOUD_DIR";

#[derive(Args)]
pub struct InstallArgs {
    /// The bundle: BUCKET/PREFIX.manifest.xml.
    location: String,
    /// The cloud's data directory (as for `euca up`). Default: the sourced
    /// eucarc's EUCA_CLOUD_DIR (the cloud's keys) and EC2_CERT (the signer);
    /// without EUCA_CLOUD_DIR, ./euca-data.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The cloud's private key (default: <data>/cloud/cloud-pk.pem, or
    /// $EUCA_CLOUD_DIR/cloud-pk.pem).
    #[arg(short = 'k', long = "privatekey", value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// Certificate of the user who signed the bundle (default: the admin's,
    /// <data>/credentials/admin-cert.pem, or $EC2_CERT with EUCA_CLOUD_DIR).
    #[arg(short = 'c', long = "cert", value_name = "FILE")]
    cert: Option<PathBuf>,
}

/// Where `euca image install` finds the cloud's keys (`cloud_dir`) and, unless
/// `-c` is given, the signer's certificate: flags > `--data` > the environment
/// (`EUCA_CLOUD_DIR`, `EC2_CERT`) > `./euca-data`.
fn install_paths(
    a: &InstallArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(PathBuf, PathBuf)> {
    let from_data = |d: &Path| {
        let cert = format!("credentials/{}-cert.pem", euca_identity::ADMIN_ACCOUNT);
        (d.join("cloud"), Some(d.join(cert)))
    };
    let (cloud_dir, default_cert) = match (&a.data, env(CLOUD_DIR_VAR)) {
        (Some(d), _) => from_data(d),
        (None, Some(dir)) => (PathBuf::from(dir), env("EC2_CERT").map(PathBuf::from)),
        (None, None) => from_data(Path::new("euca-data")),
    };
    let cert = a.cert.clone().or(default_cert).with_context(|| {
        format!("{CLOUD_DIR_VAR} is set but EC2_CERT is not: give -c with the signer's certificate")
    })?;
    Ok((cloud_dir, cert))
}

pub async fn image(cmd: ImageCmd) -> Result<()> {
    let ImageCmd::Install(a) = cmd;
    let (cloud_dir, cert_path) =
        install_paths(&a, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
    let creds_path = cloud_dir.join(SYSTEM_CREDS_FILE);
    let creds: SystemCreds =
        serde_json::from_slice(&std::fs::read(&creds_path).with_context(|| {
            format!(
                "reading {} (has `euca up` run there? give --data DIR or source its eucarc)",
                creds_path.display()
            )
        })?)?;
    let key_path = a
        .private_key
        .unwrap_or_else(|| cloud_dir.join("cloud-pk.pem"));
    let s3 = euca_s3::S3Client::new(
        &creds.s3_url,
        &creds.access_key,
        &creds.secret_key,
        &creds.region,
    )?;
    let (bucket, manifest_key) = install::split_location(&a.location)?;
    let req = install::InstallRequest {
        bucket,
        manifest_key,
        private_key: Arc::new(euca_image::PrivateKey::from_pem_file(&key_path)?),
        signer: Arc::new(euca_image::SignerCert::from_pem_file(&cert_path)?),
        grant_read: Some(creds.nodes_canonical_id),
        owner_id: Some(creds.system_canonical_id),
    };
    let done = install::install(&Arc::new(s3), &req, None).await?;
    eprintln!(
        "installed {} as image {}: {} bytes, {} pieces of {} bytes ({} new), sha256 {}",
        done.manifest.name,
        done.id,
        done.manifest.size,
        done.manifest.pieces.len(),
        done.manifest.piece_size,
        done.pieces_uploaded,
        done.manifest.sha256
    );
    println!("{}", done.id);
    Ok(())
}

#[derive(Args)]
pub struct CcArgs {
    /// TOML config file with a [cc] section.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address of the CC API and the image tracker.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// File holding the cluster token (default: <data>/cloud/cluster-token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cloud's data directory, for the default token file and the CC's
    /// journal (<data>/cc unless [cc] state_dir says otherwise).
    #[arg(long, default_value = "euca-data")]
    data: PathBuf,
}

/// A running cluster controller: its API URL, the cluster, the serving task.
pub struct StartedCc {
    pub addr: SocketAddr,
    pub cluster: Arc<euca_cc::Cluster>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the CC's listener, starts the cluster (journal under `[cc] state_dir`,
/// default `<data>/cc`; polling) and serves the CC API and the image tracker on it.
pub async fn start_cluster(
    cfg: &CcConfig,
    data: &Path,
    token: Token,
    edge: Edge,
    shutdown: watch::Receiver<bool>,
) -> Result<StartedCc> {
    let listener = tokio::net::TcpListener::bind(cfg.tracker.listen)
        .await
        .with_context(|| format!("binding the cluster controller to {}", cfg.tracker.listen))?;
    let addr = listener.local_addr()?;
    let mut cfg = cfg.clone();
    cfg.state_dir.get_or_insert_with(|| data.join("cc"));
    let cluster = euca_cc::Cluster::start(cfg.clone(), token)
        .await
        .context("starting the cluster controller")?;
    let api = euca_cc::api::CcApi::new(cluster.clone(), cfg.tracker.seeders_per_image);
    let c = cluster.clone();
    let task = tokio::spawn(async move {
        api.serve(listener, edge, shutdown).await;
        c.stop().await;
    });
    Ok(StartedCc {
        addr,
        cluster,
        task,
    })
}

pub async fn cc(a: CcArgs, file: Option<CcConfig>, svc: euca_service::ServiceConfig) -> Result<()> {
    let mut cfg = file.unwrap_or_default();
    if let Some(l) = a.listen {
        cfg.tracker.listen = l;
    }
    crate::edge::fit_caps(&mut [("[cc] max_connections", &mut cfg.tracker.max_connections, 1)])?;
    let metrics_token = crate::edge::ensure_metrics_token(&a.data)?;
    let token_file = a
        .token_file
        .or(cfg.tracker.token_file.clone())
        .unwrap_or_else(|| token_path(&a.data));
    let token = read_token(&token_file)?;
    let edge = Edge::new(
        "tracker",
        cfg.tracker.max_connections,
        &svc,
        crate::edge::metrics_access(&svc, Some(&metrics_token)),
    );
    let started = start_cluster(&cfg, &a.data, token, edge, crate::shutdown_signal()).await?;
    let addr = started.addr;
    println!(
        "euca: cc is up ({:?}, {} nodes listed)\n  cc+tracker   http://{addr}/   metrics http://{addr}/_metrics",
        cfg.policy,
        started.cluster.nodes().len()
    );
    started.task.await?;
    Ok(())
}

#[derive(Args)]
pub struct NcCacheArgs {
    /// TOML config file with an [nc_cache] section (`euca up` writes one to
    /// <data>/credentials/nc-cache.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cache directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Piece server listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// URL peers reach this node at.
    #[arg(long)]
    advertise_url: Option<String>,
    /// Node name.
    #[arg(long)]
    node: Option<String>,
    /// Tracker URL.
    #[arg(long)]
    tracker: Option<String>,
    /// Fetch everything from Walrus, without a tracker or peers.
    #[arg(long)]
    no_tracker: bool,
    /// Cache quota, e.g. 20GiB.
    #[arg(long)]
    quota: Option<String>,
}

/// Holds an exclusive lock on the cache directory for the daemon's life.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = std::fs::File::create(dir.join("lock"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("{} is in use by another euca nc-cache", dir.display());
    }
    Ok(f)
}

pub async fn nc_cache(
    a: NcCacheArgs,
    file: Option<NcCacheConfig>,
    svc: euca_service::ServiceConfig,
) -> Result<()> {
    let mut cfg = file.unwrap_or_default();
    if let Some(d) = a.dir {
        cfg.dir = d;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if a.advertise_url.is_some() {
        cfg.advertise_url = a.advertise_url;
    }
    if a.node.is_some() {
        cfg.node = a.node;
    }
    if a.tracker.is_some() {
        cfg.tracker = a.tracker;
    }
    if a.no_tracker {
        cfg.tracker = None;
    }
    if let Some(q) = a.quota {
        cfg.quota = q;
    }
    crate::edge::fit_caps(&mut [("[nc_cache] max_connections", &mut cfg.max_connections, 1)])?;
    let cache = NodeCache::open(cfg, &svc).await?;
    println!("euca: nc-cache is up");
    cache.print();
    cache.serve(crate::shutdown_signal()).await;
    Ok(())
}

/// A node's image cache daemon, opened and bound but not yet serving: what
/// `euca nc-cache` runs alone and `euca nc` runs in-process beside its node.
pub struct NodeCache {
    pub daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    control: tokio::net::UnixListener,
    token: Token,
    edge: Edge,
    /// The URL peers reach the piece server at.
    pub advertise: String,
    sock: PathBuf,
    tracker: Option<String>,
    s3_url: String,
    /// The cache directory's lock, held while the daemon lives.
    _lock: std::fs::File,
}

impl NodeCache {
    /// Locks and opens the cache directory, binds the piece server and the control
    /// socket (0600). `cfg.max_connections` is used as is (fit it first).
    pub async fn open(cfg: NcCacheConfig, svc: &euca_service::ServiceConfig) -> Result<NodeCache> {
        let token = match (&cfg.token, &cfg.token_file) {
            (Some(t), _) => Token::new(t)?,
            (None, Some(f)) => read_token(f)?,
            (None, None) => bail!("no cluster token: set token or token_file in [nc_cache]"),
        };
        let metrics_token = match (&cfg.metrics_token, &cfg.metrics_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            (None, None) => None,
        };
        let edge = Edge::new(
            "pieces",
            cfg.max_connections,
            svc,
            crate::edge::metrics_access(svc, metrics_token.as_deref()),
        );
        let lock = lock_dir(&cfg.dir)?;
        let store = {
            let (dir, quota) = (cfg.dir.clone(), parse_size(&cfg.quota)?);
            tokio::task::spawn_blocking(move || Store::open(&dir, quota)).await??
        };
        let s3 =
            euca_s3::S3Client::new(&cfg.s3_url, &cfg.access_key, &cfg.secret_key, &cfg.region)?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let advertise = cfg
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let node = cfg.node.clone().unwrap_or_else(|| {
            advertise
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        });
        let dcfg = DaemonConfig {
            node,
            advertise_url: advertise.trim_end_matches('/').to_string(),
            tracker: cfg.tracker.clone(),
            origin_concurrency: cfg.origin_concurrency.max(1),
            direct_concurrency: cfg.direct_concurrency.max(1),
            ..DaemonConfig::default()
        };
        let daemon = Daemon::new(dcfg, store, Arc::new(WalrusOrigin::new(s3)), token.clone());
        let sock = cfg.dir.join("control.sock");
        let _ = std::fs::remove_file(&sock);
        let control = tokio::net::UnixListener::bind(&sock)
            .with_context(|| format!("binding {}", sock.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(NodeCache {
            daemon,
            listener,
            control,
            token,
            edge,
            advertise,
            sock,
            tracker: cfg.tracker,
            s3_url: cfg.s3_url,
            _lock: lock,
        })
    }

    /// Prints what the daemon serves (the lines under a command's "is up").
    pub fn print(&self) {
        let advertise = &self.advertise;
        println!("  pieces       {advertise}/   metrics {advertise}/_metrics");
        println!("  control      {}", self.sock.display());
        match &self.tracker {
            Some(t) => println!("  tracker      {t}"),
            None => println!(
                "  tracker      none: every piece comes from {}",
                self.s3_url
            ),
        }
    }

    /// Serves peers and the control socket, and announces, until `shutdown`.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let NodeCache {
            daemon,
            listener,
            control,
            token,
            edge,
            _lock,
            ..
        } = self;
        daemon.serve(listener, control, token, edge, shutdown).await;
        drop(_lock);
    }
}

#[derive(Args)]
pub struct CacheArgs {
    /// The daemon's cache directory (its control socket is <dir>/control.sock).
    #[arg(long, default_value = "euca-cache", global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: CacheCmd,
}

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Fetch an image into the cache (from peers, and Walrus where needed); prints its path.
    Fetch { image: String },
    /// List cached images.
    List,
    /// Drop an image from the cache (refused while pinned or in use).
    Evict { image: String },
    /// Pin an image for a holder (e.g. an instance id); pinned images are never evicted.
    Pin { image: String, holder: String },
    /// Remove a holder's pin.
    Unpin { image: String, holder: String },
}

async fn control(
    sock: &Path,
    method: http::Method,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>> {
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .with_context(|| {
            format!(
                "connecting to {} (is euca nc-cache running?)",
                sock.display()
            )
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

async fn expect_ok(resp: http::Response<hyper::body::Incoming>) -> Result<Bytes> {
    let st = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !st.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                euca_service::render::json_error_message(&body)
                    .or_else(|| v["error"].as_str().map(String::from))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{msg}");
    }
    Ok(body)
}

pub async fn cache(a: CacheArgs) -> Result<()> {
    let sock = a.dir.join("control.sock");
    use http::Method;
    match a.cmd {
        CacheCmd::Fetch { image } => {
            let id = ImageId::parse(&image)?;
            let start = std::time::Instant::now();
            let resp = control(&sock, Method::POST, &format!("/v1/images/{id}/fetch")).await?;
            if !resp.status().is_success() {
                expect_ok(resp).await?;
                return Ok(());
            }
            let mut body = resp.into_body();
            let (mut buf, mut progress, mut last) =
                (Vec::new(), None::<Progress>, FetchProgress::default());
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame?.into_data() {
                    buf.extend_from_slice(&d);
                }
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    last = serde_json::from_slice(&line).context("bad progress line")?;
                    if last.size > 0 {
                        let p =
                            progress.get_or_insert_with(|| Progress::start("fetching", last.size));
                        p.counter().store(last.bytes, Ordering::Relaxed);
                    }
                }
            }
            if let Some(p) = progress {
                p.finish();
            }
            if let Some(e) = last.error {
                bail!("fetch of {id} failed: {e}");
            }
            if !last.done {
                bail!("the daemon ended the fetch of {id} without a result");
            }
            let list = expect_ok(control(&sock, Method::GET, "/v1/images").await?).await?;
            let images: Vec<ImageStatus> = serde_json::from_slice(&list)?;
            let path = images
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.path.display().to_string())
                .unwrap_or_default();
            eprintln!(
                "{id}: {} bytes in {:.3} s",
                last.size,
                start.elapsed().as_secs_f64()
            );
            println!("{path}");
        }
        CacheCmd::List => {
            let list = expect_ok(control(&sock, Method::GET, "/v1/images").await?).await?;
            let images: Vec<ImageStatus> = serde_json::from_slice(&list)?;
            println!(
                "{:<64}  {:>12}  {:>9}  {:<8}  {:<16}  pins",
                "IMAGE", "BYTES", "PIECES", "STATE", "NAME"
            );
            for i in images {
                println!(
                    "{:<64}  {:>12}  {:>4}/{:<4}  {:<8}  {:<16}  {}",
                    i.id,
                    i.size,
                    i.have,
                    i.pieces,
                    if i.complete { "complete" } else { "partial" },
                    i.name,
                    i.pins.join(",")
                );
            }
        }
        CacheCmd::Evict { image } => {
            let id = ImageId::parse(&image)?;
            expect_ok(control(&sock, Method::DELETE, &format!("/v1/images/{id}")).await?).await?;
            println!("evicted {id}");
        }
        CacheCmd::Pin { image, holder } => set_pin(&sock, &image, &holder, true).await?,
        CacheCmd::Unpin { image, holder } => set_pin(&sock, &image, &holder, false).await?,
    }
    Ok(())
}

/// `euca cache pin|unpin IMAGE HOLDER`.
async fn set_pin(sock: &Path, image: &str, holder: &str, pin: bool) -> Result<()> {
    if !valid_holder(holder) {
        bail!("invalid holder {holder:?} (letters, digits, '-', '_', '.', up to 128)");
    }
    let id = ImageId::parse(image)?;
    let method = if pin {
        http::Method::POST
    } else {
        http::Method::DELETE
    };
    let path = format!("/v1/images/{id}/pins/{holder}");
    expect_ok(control(sock, method, &path).await?).await?;
    println!(
        "{} {id} for {holder}",
        if pin { "pinned" } else { "unpinned" }
    );
    Ok(())
}

fn valid_holder(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 128
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && h != "."
        && h != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: Option<&str>, cert: Option<&str>) -> InstallArgs {
        InstallArgs {
            location: "b/x.manifest.xml".into(),
            data: data.map(PathBuf::from),
            private_key: None,
            cert: cert.map(PathBuf::from),
        }
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn install_paths_flags_then_data_then_environment_then_default() {
        let sourced = [
            (CLOUD_DIR_VAR, "/srv/c/cloud"),
            ("EC2_CERT", "/srv/c/me.pem"),
        ];
        let p = |a: &InstallArgs, e: &[(&str, &str)]| {
            let (d, c) = install_paths(a, env(e)).unwrap();
            (d.display().to_string(), c.display().to_string())
        };
        assert_eq!(
            p(&args(Some("/d"), None), &sourced),
            ("/d/cloud".into(), "/d/credentials/admin-cert.pem".into())
        );
        assert_eq!(
            p(&args(None, None), &sourced),
            ("/srv/c/cloud".into(), "/srv/c/me.pem".into())
        );
        assert_eq!(
            p(&args(None, Some("/x.pem")), &sourced),
            ("/srv/c/cloud".into(), "/x.pem".into())
        );
        assert_eq!(
            p(&args(Some("/d"), Some("/x.pem")), &sourced),
            ("/d/cloud".into(), "/x.pem".into())
        );
        assert_eq!(
            p(&args(None, None), &[("EC2_CERT", "/srv/c/me.pem")]),
            (
                "euca-data/cloud".into(),
                "euca-data/credentials/admin-cert.pem".into()
            )
        );
        let err = install_paths(&args(None, None), env(&[(CLOUD_DIR_VAR, "/c")])).unwrap_err();
        assert!(err.to_string().contains("EC2_CERT"), "{err}");
    }
}
