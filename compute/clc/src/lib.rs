//! The cloud controller (CLC): the EC2 Query API that awscli, boto3 and euca2ools
//! drive, and the records behind it (key pairs, security groups, images, volumes,
//! snapshots, tags), per account. Volumes and snapshots are stored by the storage
//! controller, images by Walrus; the CLC is the authority for their EC2 records,
//! states and ownership. Running instances come with the cluster and node
//! controllers, on this same API.
//!
//! - [`api`]: the listener's API (EC2 beside the identity service's routes).
//! - [`actions`]: one module per kind of resource.
//! - [`store`]: the records (embedded redb behind [`store::RecordStore`]).
//! - [`params`], [`describe`]: EC2 request conventions (lists, filters, pages).
pub mod actions;
pub mod api;
pub mod call;
pub mod cluster;
pub mod config;
pub mod describe;
pub mod dns;
pub mod error;
pub mod ids;
pub mod install;
pub mod keymat;
pub mod mac;
pub mod model;
pub mod netalloc;
pub mod netstate;
mod offload;
pub mod params;
pub mod reconcile;
pub mod sc;
pub mod store;
pub mod store_pg;
pub mod write_check;

pub use api::ClcApi;
pub use config::ClcConfig;
pub use error::Ec2Error;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

/// The cloud controller's state, shared by every request.
pub struct Clc {
    pub db: store::Db,
    /// The cloud's region (Walrus's; the one eucarc and AWS configs name).
    pub region: String,
    /// The EC2 endpoint URL, as clients reach it (DescribeRegions).
    pub endpoint: String,
    pub config: ClcConfig,
    /// The storage controller's API, set once it listens ([`Clc::set_sc`]).
    sc: OnceLock<sc::ScClient>,
    /// Installs bundle images (RegisterImage with an `ImageLocation`); without
    /// one, such registrations are refused as unavailable.
    pub installer: Option<Arc<install::Installer>>,
    /// What "now" is for signature skew checks: the system clock, or a test's
    /// fixed time ([`Clc::set_clock`]).
    clock: Clock,
    /// The cluster controllers by zone ([`Clc::set_cluster`]).
    clusters: RwLock<BTreeMap<String, Arc<dyn cluster::ClusterApi>>>,
    /// Wakes the reconciler at once (after a mutating instance call).
    pub(crate) kick: tokio::sync::Notify,
    /// Guests of this cloud a cluster reports that have no instance record, and
    /// when the reconciler first saw each (unix seconds; see [`reconcile`]).
    pub(crate) strays: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Each zone's network config as its CC last answered (`GET /v1/network`),
    /// re-read by every reconciler pass.
    nets: RwLock<BTreeMap<String, euca_compute_proto::net::ClusterNet>>,
    /// What the dynamic DNS answers, rebuilt whenever addresses change.
    pub(crate) dns_index: RwLock<Arc<dns::Index>>,
    /// This cloud controller's name in leases on shared records (its host, its
    /// data directory, which [`Clc::open`] locks, and an id kept there): the reconciler's, and each
    /// running install's. The same after a restart, so a restarted CLC takes its
    /// leases back at once.
    pub(crate) holder: String,
    /// The lock on the data directory (one process per directory, so one per
    /// holder name).
    _lock: std::fs::File,
}

type Clock = Box<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

/// Locks `data_dir` for this process (created if missing) and names it in leases
/// ([`euca_pg::lease_holder`]: the host, the directory and an id kept there),
/// unique among running cloud controllers and the same for this one after a
/// restart.
fn lock_data_dir(data_dir: &Path) -> Result<(std::fs::File, String), Ec2Error> {
    use std::os::fd::AsRawFd;
    let io = |e: std::io::Error| {
        Ec2Error::internal(format!("cloud controller data {}: {e}", data_dir.display()))
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("lock"))
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Ec2Error::internal(format!(
            "{} is in use by another cloud controller",
            data_dir.display()
        )));
    }
    let holder = euca_pg::lease_holder(data_dir).map_err(io)?;
    Ok((lock, holder))
}

impl Clc {
    /// Opens (or creates) the records under `data_dir` (`clc.redb`).
    pub fn open(
        data_dir: &Path,
        region: &str,
        endpoint: &str,
        config: ClcConfig,
    ) -> Result<Clc, Ec2Error> {
        let (lock, holder) = lock_data_dir(data_dir)?;
        let store: Arc<dyn store::RecordStore> = match &config.meta_url {
            Some(url) => Arc::new(store_pg::PgRecordStore::open(url, 8)?),
            None => Arc::new(store::RedbStore::open(&data_dir.join("clc.redb"))?),
        };
        // The zones are served from the start, before any instance has a name.
        let dns_index = dns::Index::build(&config.dns_domain, [], []);
        Ok(Clc {
            db: store::Db::new(store),
            region: region.to_string(),
            endpoint: endpoint.to_string(),
            sc: OnceLock::new(),
            installer: None,
            clock: Box::new(time::OffsetDateTime::now_utc),
            clusters: RwLock::new(BTreeMap::new()),
            kick: tokio::sync::Notify::new(),
            strays: std::sync::Mutex::new(std::collections::HashMap::new()),
            config,
            nets: RwLock::new(BTreeMap::new()),
            dns_index: RwLock::new(Arc::new(dns_index)),
            holder,
            _lock: lock,
        })
    }

    /// Connects the clusters `[[clc.clusters]]` names (a CLC run alone; `euca up`
    /// calls [`Clc::set_cluster`] itself).
    pub fn connect_configured_clusters(&self) -> Result<(), Ec2Error> {
        for c in &self.config.clusters {
            let raw = std::fs::read_to_string(&c.token_file).map_err(|e| {
                Ec2Error::internal(format!(
                    "reading the cluster token {}: {e}",
                    c.token_file.display()
                ))
            })?;
            let token = euca_imagecache::http::Token::new(&raw)
                .map_err(|e| Ec2Error::internal(format!("cluster token: {e}")))?;
            self.set_cluster(
                &c.zone,
                euca_compute_proto::cc::CcClient::new(&c.url, token),
            );
        }
        Ok(())
    }

    /// Gives the cloud controller the cluster controller of `zone` (in `euca up`
    /// the CC starts after the CLC). Only the first call per zone counts; false
    /// for a later one.
    pub fn set_cluster(&self, zone: &str, cc: euca_compute_proto::cc::CcClient) -> bool {
        self.set_cluster_api(zone, Arc::new(cc))
    }

    /// [`Clc::set_cluster`] with any [`cluster::ClusterApi`] (tests' fakes).
    pub fn set_cluster_api(&self, zone: &str, api: Arc<dyn cluster::ClusterApi>) -> bool {
        let mut m = self.clusters.write().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(zone) {
            return false;
        }
        m.insert(zone.to_string(), api);
        drop(m);
        self.kick.notify_one();
        true
    }

    /// The cluster of `zone`, or `Unavailable` (503) while none is connected.
    pub fn cluster(&self, zone: &str) -> Result<Arc<dyn cluster::ClusterApi>, Ec2Error> {
        self.clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(zone)
            .cloned()
            .ok_or_else(|| {
                Ec2Error::Unavailable(format!(
                    "the cluster controller of zone {zone} is not running"
                ))
            })
    }

    /// Every connected cluster, by zone.
    pub fn clusters(&self) -> Vec<(String, Arc<dyn cluster::ClusterApi>)> {
        self.clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(z, c)| (z.clone(), c.clone()))
            .collect()
    }

    /// The zones instances may be placed in: this cloud's zone and every
    /// connected cluster's.
    pub fn zones(&self) -> Vec<String> {
        let mut z = vec![self.zone()];
        for (name, _) in self.clusters() {
            if !z.contains(&name) {
                z.push(name);
            }
        }
        z
    }

    /// Zone `zone`'s network config: as last read, else asked of its CC now
    /// (`Unavailable` while the CC does not answer).
    pub async fn cluster_net(
        &self,
        zone: &str,
    ) -> Result<euca_compute_proto::net::ClusterNet, Ec2Error> {
        if let Some(n) = self.cached_net(zone) {
            return Ok(n);
        }
        let status = self
            .cluster(zone)?
            .network()
            .await
            .map_err(cluster::map_error)?;
        self.set_cached_net(zone, status.config.clone());
        Ok(status.config)
    }

    /// Zone `zone`'s network config as last read, if any.
    pub fn cached_net(&self, zone: &str) -> Option<euca_compute_proto::net::ClusterNet> {
        self.nets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(zone)
            .cloned()
    }

    pub(crate) fn set_cached_net(&self, zone: &str, net: euca_compute_proto::net::ClusterNet) {
        let mut m = self.nets.write().unwrap_or_else(|e| e.into_inner());
        if m.get(zone) != Some(&net) {
            tracing::info!(%zone, mode = net.mode.as_str(), "cluster network config");
            m.insert(zone.to_string(), net);
        }
    }

    /// What the dynamic DNS answers now.
    pub fn dns(&self) -> Arc<dns::Index> {
        self.dns_index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_dns(&self, ix: dns::Index) {
        *self.dns_index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ix);
    }

    /// Asks the reconciler to run now (after a mutating instance call).
    pub fn kick_reconciler(&self) {
        self.kick.notify_one();
    }

    /// The time requests are authenticated at.
    pub fn now(&self) -> time::OffsetDateTime {
        (self.clock)()
    }

    /// Replaces the clock (tests replaying captured, signed requests at the time
    /// they were signed).
    pub fn set_clock(&mut self, clock: impl Fn() -> time::OffsetDateTime + Send + Sync + 'static) {
        self.clock = Box::new(clock);
    }

    /// Gives the cloud controller its storage controller (in `euca up` the SC
    /// starts after the CLC). Only the first call counts; false for a later one.
    pub fn set_sc(&self, client: sc::ScClient) -> bool {
        self.sc.set(client).is_ok()
    }

    /// The storage controller, or `Unavailable` (503) until it is set.
    pub fn sc(&self) -> Result<&sc::ScClient, Ec2Error> {
        self.sc
            .get()
            .ok_or_else(|| Ec2Error::Unavailable("the storage controller is not running".into()))
    }

    /// Marks every image still `pending` whose install was interrupted (the
    /// process running it stopped) as `failed`; returns how many. Call once at
    /// start-up, before serving. With records of its own, that is every pending
    /// image. With records other cloud controllers share (`meta_url`), each
    /// running install holds a lease ([`install::lease_name`], renewed while it
    /// runs), and only images whose lease lapsed, or is still held by this CLC's
    /// name (its own installs, cut short by its restart), are marked.
    pub fn fail_interrupted_installs(&self) -> Result<usize, Ec2Error> {
        self.fail_installs_without_holder(&self.holder)
    }

    /// [`Clc::fail_interrupted_installs`] while serving, with shared records (the
    /// reconciler's holder runs it every minute): only images whose lease lapsed
    /// are marked, so an install cut short by another CLC's death fails within
    /// about [`install::LEASE_TTL`] plus a minute, and this CLC's own running
    /// installs are left alone.
    pub fn fail_abandoned_installs(&self) -> Result<usize, Ec2Error> {
        // A name no running install holds its lease under.
        self.fail_installs_without_holder(&format!("{}#sweep", self.holder))
    }

    /// Fails the pending images whose install lease `taker` can take (free,
    /// lapsed, or already `taker`'s).
    fn fail_installs_without_holder(&self, taker: &str) -> Result<usize, Ec2Error> {
        let store = self.db.store().clone();
        let mut pending = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch =
                self.db
                    .scan::<model::Image>(None, after.as_deref(), describe::MAX_RESULTS)?;
            let done = batch.len() < describe::MAX_RESULTS;
            for o in batch {
                after = Some(o.record.id.clone());
                // With shared records, only installs no cloud controller holds
                // the lease of (its holder stopped): taking it, this one ends them.
                if o.record.state == model::ImageState::Pending
                    && store.lease(
                        &install::lease_name(&o.record.id),
                        taker,
                        install::LEASE_TTL,
                    )?
                {
                    pending.push(o.record.id);
                }
            }
            if done {
                break;
            }
        }
        for id in &pending {
            install::finish(
                &self.db,
                id,
                Err(install::Failure {
                    code: "Server.InternalError",
                    message: "the install was interrupted by a restart of the cloud controller; register the image again".into(),
                }),
            )?;
            store.release_lease(&install::lease_name(id), taker)?;
        }
        Ok(pending.len())
    }

    /// This cloud controller's name in leases on shared records.
    pub fn lease_holder(&self) -> &str {
        &self.holder
    }

    /// The availability zone this cloud's cluster serves.
    pub fn zone(&self) -> String {
        self.config
            .zone
            .clone()
            .unwrap_or_else(|| format!("{}a", self.region))
    }
}
