//! What every connection of one iSCSI server shares: the exports and the settings.
use std::time::Duration;

use crate::export::ExportTable;

pub(crate) struct Config {
    pub(crate) iqn_prefix: String,
    pub(crate) max_connections: usize,
    pub(crate) max_per_source: usize,
    pub(crate) login_timeout: Duration,
    pub(crate) nop_interval: Duration,
    pub(crate) pdu_timeout: Duration,
}

pub(crate) struct Shared {
    pub(crate) exports: ExportTable,
    pub(crate) cfg: Config,
    /// COMPARE AND WRITE reads then writes; this makes the pair atomic with
    /// respect to every other COMPARE AND WRITE (the only users of atomicity).
    pub(crate) compare_and_write: tokio::sync::Mutex<()>,
}

impl Shared {
    /// The IQN of export `name`.
    pub(crate) fn iqn(&self, name: &str) -> String {
        format!("{}:{name}", self.cfg.iqn_prefix)
    }

    /// The export an IQN names, if it is under our prefix (compared as given:
    /// IQNs are case-sensitive here, as export names are).
    pub(crate) fn export_name<'a>(&self, iqn: &'a str) -> Option<&'a str> {
        iqn.strip_prefix(self.cfg.iqn_prefix.as_str())?
            .strip_prefix(':')
    }
}
