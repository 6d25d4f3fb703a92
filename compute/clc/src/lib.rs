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
mod auth_shim;
pub mod config;
pub mod describe;
pub mod error;
pub mod ids;
pub mod model;
pub mod params;
pub mod store;

pub use api::ClcApi;
pub use config::ClcConfig;
pub use error::Ec2Error;

use std::path::Path;
use std::sync::Arc;

/// The cloud controller's state, shared by every request.
pub struct Clc {
    pub db: store::Db,
    /// The cloud's region (Walrus's; the one eucarc and AWS configs name).
    pub region: String,
    /// The EC2 endpoint URL, as clients reach it (DescribeRegions).
    pub endpoint: String,
    pub config: ClcConfig,
    /// What "now" is for signature skew checks: the system clock, or a test's
    /// fixed time ([`Clc::set_clock`]).
    clock: Clock,
}

type Clock = Box<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

impl Clc {
    /// Opens (or creates) the records under `data_dir` (`clc.redb`).
    pub fn open(
        data_dir: &Path,
        region: &str,
        endpoint: &str,
        config: ClcConfig,
    ) -> Result<Clc, Ec2Error> {
        let store = store::RedbStore::open(&data_dir.join("clc.redb"))?;
        Ok(Clc {
            db: store::Db::new(Arc::new(store)),
            region: region.to_string(),
            endpoint: endpoint.to_string(),
            config,
            clock: Box::new(time::OffsetDateTime::now_utc),
        })
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

    /// The availability zone this cloud's cluster serves.
    pub fn zone(&self) -> String {
        self.config
            .zone
            .clone()
            .unwrap_or_else(|| format!("{}a", self.region))
    }
}
