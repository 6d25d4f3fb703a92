//! The CC's durable state (`<state_dir>/cc.redb`, each commit fsync'd): the
//! placements not yet reported by their node, the nodes that registered, and
//! each node's instances as it last reported them (written when they change),
//! so a CC restarted while a node is `DOWN` still lists that node's instances.
//!
//! A placement is written BEFORE its node is asked to run the instance and removed
//! once the node reports it (in any state), so a CC killed at any point restarts
//! with every launch it answered (or was answering) still reserved on the same
//! node, and re-sends the run (idempotent by instance id) instead of placing again.
use std::path::Path;

use euca_compute_proto::{InstanceReport, InstanceSpec, Resources};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::CcError;

const PLACEMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("placements");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// POWERSAVE: nodes put to sleep, with the capacity they last advertised (a
/// restarted CC neither polls them into `DOWN` nor forgets it may wake them).
const ASLEEP: TableDefinition<&str, &[u8]> = TableDefinition::new("asleep");
/// Each node's instances as its last answered poll listed them.
const LAST_REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("last_reports");
/// Each placed instance's user-data (base64, as given), for the metadata service:
/// the placement record goes once the node reports the instance, this stays while
/// the instance is placed or in some node's last report ([`prune_user_data`]).
const USER_DATA: TableDefinition<&str, &str> = TableDefinition::new("user_data");

/// A launch placed on `node`, not yet reported by it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingPlacement {
    pub node: String,
    pub spec: InstanceSpec,
}

#[derive(Serialize, Deserialize)]
struct NodeRec {
    url: String,
    /// Registration order (the node list's order survives restarts).
    seq: u64,
}

pub struct Journal {
    db: Database,
}

fn je(e: impl Into<redb::Error>) -> CcError {
    CcError::from(e.into())
}

fn bad_record(key: &str, e: serde_json::Error) -> CcError {
    CcError::Journal(format!("record {key:?}: {e}"))
}

/// Drops the user-data of instances neither placed nor in any node's last report:
/// they ended and their node forgot them. Runs inside the writes that can end an
/// instance's last trace (a changed report, a removed placement), so the table
/// holds no more than the live instances (it grew forever before).
fn prune_user_data(tx: &redb::WriteTransaction) -> Result<(), CcError> {
    let mut live = std::collections::HashSet::new();
    {
        let p = tx.open_table(PLACEMENTS).map_err(je)?;
        for e in p.iter().map_err(je)? {
            live.insert(e.map_err(je)?.0.value().to_string());
        }
        let r = tx.open_table(LAST_REPORTS).map_err(je)?;
        for e in r.iter().map_err(je)? {
            let (k, v) = e.map_err(je)?;
            let list: Vec<InstanceReport> =
                serde_json::from_slice(v.value()).map_err(|e| bad_record(k.value(), e))?;
            live.extend(list.into_iter().map(|i| i.instance_id));
        }
    }
    let mut u = tx.open_table(USER_DATA).map_err(je)?;
    let mut gone = Vec::new();
    for e in u.iter().map_err(je)? {
        let k = e.map_err(je)?.0.value().to_string();
        if !live.contains(&k) {
            gone.push(k);
        }
    }
    for k in gone {
        u.remove(k.as_str()).map_err(je)?;
    }
    Ok(())
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Journal, CcError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CcError::Journal(format!("creating {}: {e}", dir.display())))?;
        let db = Database::create(dir.join("cc.redb")).map_err(je)?;
        let tx = db.begin_write().map_err(je)?;
        tx.open_table(PLACEMENTS).map_err(je)?;
        tx.open_table(NODES).map_err(je)?;
        tx.open_table(ASLEEP).map_err(je)?;
        tx.open_table(LAST_REPORTS).map_err(je)?;
        tx.open_table(USER_DATA).map_err(je)?;
        tx.commit().map_err(je)?;
        Ok(Journal { db })
    }

    /// Records placements durably (one commit).
    pub fn put_placements(&self, items: &[PendingPlacement]) -> Result<(), CcError> {
        let tx = self.db.begin_write().map_err(je)?;
        {
            let mut t = tx.open_table(PLACEMENTS).map_err(je)?;
            for p in items {
                let v = serde_json::to_vec(p).map_err(|e| bad_record(&p.spec.instance_id, e))?;
                t.insert(p.spec.instance_id.as_str(), v.as_slice())
                    .map_err(je)?;
            }
            let mut u = tx.open_table(USER_DATA).map_err(je)?;
            for p in items {
                if let Some(d) = &p.spec.user_data {
                    u.insert(p.spec.instance_id.as_str(), d.as_str())
                        .map_err(je)?;
                }
            }
        }
        tx.commit().map_err(je)
    }

    /// An instance's user-data (base64, as launched), if it had any.
    pub fn user_data(&self, instance_id: &str) -> Result<Option<String>, CcError> {
        let tx = self.db.begin_read().map_err(je)?;
        let t = tx.open_table(USER_DATA).map_err(je)?;
        Ok(t.get(instance_id)
            .map_err(je)?
            .map(|v| v.value().to_string()))
    }

    /// Forgets placements (their node reported them).
    pub fn remove_placements(&self, ids: &[String]) -> Result<(), CcError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(je)?;
        {
            let mut t = tx.open_table(PLACEMENTS).map_err(je)?;
            for id in ids {
                t.remove(id.as_str()).map_err(je)?;
            }
        }
        prune_user_data(&tx)?;
        tx.commit().map_err(je)
    }

    /// Every pending placement.
    pub fn placements(&self) -> Result<Vec<PendingPlacement>, CcError> {
        let tx = self.db.begin_read().map_err(je)?;
        let t = tx.open_table(PLACEMENTS).map_err(je)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(je)? {
            let (k, v) = e.map_err(je)?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| bad_record(k.value(), e))?);
        }
        Ok(out)
    }

    /// Adds a registered node, or updates its URL (keeping its place in the list).
    pub fn put_node(&self, name: &str, url: &str) -> Result<(), CcError> {
        let tx = self.db.begin_write().map_err(je)?;
        {
            let mut t = tx.open_table(NODES).map_err(je)?;
            let existing = t
                .get(name)
                .map_err(je)?
                .and_then(|v| serde_json::from_slice::<NodeRec>(v.value()).ok());
            let seq = match existing {
                Some(r) if r.url == url => return Ok(()),
                Some(r) => r.seq,
                None => t.len().map_err(je)?,
            };
            let v = serde_json::to_vec(&NodeRec {
                url: url.to_string(),
                seq,
            })
            .map_err(|e| bad_record(name, e))?;
            t.insert(name, v.as_slice()).map_err(je)?;
        }
        tx.commit().map_err(je)
    }

    /// Registered nodes `(name, url)` in registration order.
    pub fn nodes(&self) -> Result<Vec<(String, String)>, CcError> {
        let tx = self.db.begin_read().map_err(je)?;
        let t = tx.open_table(NODES).map_err(je)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(je)? {
            let (k, v) = e.map_err(je)?;
            let r: NodeRec =
                serde_json::from_slice(v.value()).map_err(|e| bad_record(k.value(), e))?;
            out.push((r.seq, k.value().to_string(), r.url));
        }
        out.sort();
        Ok(out.into_iter().map(|(_, n, u)| (n, u)).collect())
    }

    /// Records node `name` asleep with its last capacity (`Some`), or awake (`None`).
    pub fn set_asleep(&self, name: &str, capacity: Option<Resources>) -> Result<(), CcError> {
        let tx = self.db.begin_write().map_err(je)?;
        {
            let mut t = tx.open_table(ASLEEP).map_err(je)?;
            match capacity {
                Some(c) => {
                    let v = serde_json::to_vec(&c).map_err(|e| bad_record(name, e))?;
                    t.insert(name, v.as_slice()).map_err(je)?;
                }
                None => {
                    t.remove(name).map_err(je)?;
                }
            }
        }
        tx.commit().map_err(je)
    }

    /// Records node `name`'s instances as it just reported them.
    pub fn put_last_report(&self, name: &str, instances: &[InstanceReport]) -> Result<(), CcError> {
        let tx = self.db.begin_write().map_err(je)?;
        {
            let mut t = tx.open_table(LAST_REPORTS).map_err(je)?;
            let v = serde_json::to_vec(instances).map_err(|e| bad_record(name, e))?;
            t.insert(name, v.as_slice()).map_err(je)?;
        }
        prune_user_data(&tx)?;
        tx.commit().map_err(je)
    }

    /// Every node's last reported instances.
    pub fn last_reports(&self) -> Result<Vec<(String, Vec<InstanceReport>)>, CcError> {
        let tx = self.db.begin_read().map_err(je)?;
        let t = tx.open_table(LAST_REPORTS).map_err(je)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(je)? {
            let (k, v) = e.map_err(je)?;
            let r = serde_json::from_slice(v.value()).map_err(|e| bad_record(k.value(), e))?;
            out.push((k.value().to_string(), r));
        }
        Ok(out)
    }

    /// Nodes asleep, with their last advertised capacity.
    pub fn asleep(&self) -> Result<Vec<(String, Resources)>, CcError> {
        let tx = self.db.begin_read().map_err(je)?;
        let t = tx.open_table(ASLEEP).map_err(je)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(je)? {
            let (k, v) = e.map_err(je)?;
            let c = serde_json::from_slice(v.value()).map_err(|e| bad_record(k.value(), e))?;
            out.push((k.value().to_string(), c));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_compute_proto::{CachedImage, NodeInstanceState, RootDisk, VmType};

    fn vm() -> VmType {
        VmType {
            name: "m1.small".into(),
            cores: 1,
            memory_mib: 256,
            disk_gib: 5,
        }
    }

    fn spec(id: &str) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.into(),
            account: "000000000001".into(),
            reservation_id: "r-00000001".into(),
            vm_type: vm(),
            root: RootDisk::Image(CachedImage {
                installed_id: "emi-00000001".into(),
                size: 1,
            }),
            kernel: None,
            ramdisk: None,
            mac: "d0:0d:00:00:00:01".into(),
            user_data: Some(format!("ud-of-{id}")),
            public_key: None,
            volumes: vec![],
            nic: None,
            incarnation: 0,
        }
    }

    fn report(id: &str) -> InstanceReport {
        InstanceReport {
            instance_id: id.into(),
            account: "000000000001".into(),
            reservation_id: "r-00000001".into(),
            vm_type: vm(),
            state: NodeInstanceState::Running,
            reason: None,
            mac: "d0:0d:00:00:00:01".into(),
            launched_at: "2026-12-04T00:00:00Z".into(),
            volumes: vec![],
            learned_ip: None,
            incarnation: 0,
        }
    }

    #[test]
    fn user_data_lives_as_long_as_the_instance_is_placed_or_reported() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let place = |id: &str| PendingPlacement {
            node: "n1".into(),
            spec: spec(id),
        };
        j.put_placements(&[place("i-00000001"), place("i-00000002")])
            .unwrap();
        // Reported by its node, the placement goes; the user-data stays.
        j.put_last_report("n1", &[report("i-00000001")]).unwrap();
        j.remove_placements(&["i-00000001".into()]).unwrap();
        assert_eq!(
            j.user_data("i-00000001").unwrap().as_deref(),
            Some("ud-of-i-00000001")
        );
        // Another node's report, or an unrelated removal, keeps it too.
        j.put_last_report("n2", &[]).unwrap();
        assert!(j.user_data("i-00000001").unwrap().is_some());
        assert!(j.user_data("i-00000002").unwrap().is_some(), "still placed");
        // A placement refused and dropped without a report: gone.
        j.remove_placements(&["i-00000002".into()]).unwrap();
        assert_eq!(j.user_data("i-00000002").unwrap(), None);
        // The node forgot the ended instance: gone, also after a reopen.
        j.put_last_report("n1", &[]).unwrap();
        assert_eq!(j.user_data("i-00000001").unwrap(), None);
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.user_data("i-00000001").unwrap(), None);
    }
}
