//! The SC's durable records (volumes, snapshots): in an embedded redb database
//! (`<data_dir>/sc.redb`, the default) or in PostgreSQL (`[sc] meta_url`). Either
//! way every change is one committed transaction, so a state an API call reported
//! survives `kill -9`.
//!
//! In PostgreSQL an SC keeps its records under its name (`[sc] name`), in
//! `sc_records` (migrations in `storage-controller/migrations/postgres/`): the
//! volumes' bytes stay on the SC's own disks, so the records are its alone, and
//! several SCs (one per zone) can share one database. The name is held by a lease
//! (`sc:<name>` in `sc_leases`, [`LEASE_TTL`], renewed by
//! [`StateStore::keep_lease`]): an SC refuses to start while another holds its
//! name; renewals only extend a lease that still names this SC; and every write is
//! one statement that lands only while this SC still holds the lease, so an SC
//! that lost it (frozen past the TTL while a replacement took over) cannot
//! overwrite the replacement's records, even after the replacement stops. The
//! holder is the host, the data directory and an id kept there
//! ([`euca_pg::lease_holder`]): an SC restarted after `kill -9` takes its own
//! lease back at once. Each SC also claims its snapshot bucket
//! ([`StateStore::claim_snapshot_bucket`]).
use crate::error::ScError;
use crate::model::{Snapshot, Volume};
use euca_pg::{Conn, Migration, Pool};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_records.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_snapshot_buckets.sql"),
    },
];

/// How long an SC's lease on its name lasts unless renewed (every third of it).
pub const LEASE_TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Volumes,
    Snapshots,
}

impl Table {
    const ALL: [Table; 2] = [Table::Volumes, Table::Snapshots];

    fn name(self) -> &'static str {
        match self {
            Table::Volumes => "volumes",
            Table::Snapshots => "snapshots",
        }
    }

    fn redb(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Volumes => VOLUMES,
            Table::Snapshots => SNAPSHOTS,
        }
    }
}

#[derive(Clone)]
pub struct StateStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(Arc<Database>),
    Postgres(Arc<PgState>),
}

struct PgState {
    pool: Pool,
    /// The SC's name: its records' key and its lease's.
    name: String,
    /// Who holds the lease: this SC's host, data directory and lease id.
    holder: String,
}

impl PgState {
    fn lease(&self) -> String {
        format!("sc:{}", self.name)
    }

    /// Extends the lease if it still names this SC (blocks).
    fn extend(&self) -> Result<bool, ScError> {
        let (lease, me) = (self.lease(), self.holder.clone());
        self.pool.run_blocking(move |c: &mut Conn| {
            euca_pg::extend_lease(&mut c.client, "sc_leases", &lease, &me, LEASE_TTL)
                .map_err(pg_err)
        })
    }
}

fn db_err(e: impl std::fmt::Display) -> ScError {
    ScError::State(e.to_string())
}

/// A PostgreSQL error with the server's message (the driver's display says only
/// "db error").
fn pg_err(e: impl euca_pg::DbFailure) -> ScError {
    ScError::State(format!("postgresql: {}", e.describe()))
}

impl From<euca_pg::PgError> for ScError {
    fn from(e: euca_pg::PgError) -> Self {
        db_err(e)
    }
}

fn lost_lease(name: &str) -> ScError {
    ScError::State(format!(
        "this storage controller no longer holds the name {name:?} in meta_url (another SC \
         took it over while this one was not renewing): its records are the other's now; \
         stop this one"
    ))
}

impl StateStore {
    /// The redb database at `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self, ScError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(VOLUMES).map_err(db_err)?;
        tx.open_table(SNAPSHOTS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self {
            backend: Backend::Redb(Arc::new(db)),
        })
    }

    /// The records of the SC `name` in the PostgreSQL database at `url` (migrations
    /// applied), with its lease taken for `holder`; refused while another holder
    /// has it. Blocks: call at start-up.
    pub fn open_postgres(url: &str, name: &str, holder: &str) -> Result<Self, ScError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(ScError::Invalid(format!(
                "[sc] name {name:?}: 1 to 64 characters, no control characters"
            )));
        }
        let pool = Pool::open_blocking(url, "euca-sc", 2, "sc", MIGRATIONS)?;
        let st = PgState {
            pool,
            name: name.to_string(),
            holder: holder.to_string(),
        };
        let (lease, me) = (st.lease(), st.holder.clone());
        let taken: Option<(String, f64)> = st.pool.run_blocking(move |c: &mut Conn| {
            if euca_pg::take_lease(&mut c.client, "sc_leases", &lease, &me, LEASE_TTL)
                .map_err(pg_err)?
            {
                return Ok::<_, ScError>(None);
            }
            let row = c
                .client
                .query_opt(
                    "SELECT holder, extract(epoch FROM expires - now())::float8
                     FROM sc_leases WHERE name = $1",
                    &[&lease],
                )
                .map_err(pg_err)?;
            Ok(Some(
                row.map_or((String::new(), 0.0), |r| (r.get(0), r.get(1))),
            ))
        })?;
        if let Some((other, secs)) = taken {
            return Err(ScError::IncorrectState(format!(
                "storage controller {name:?} is running elsewhere: {other} holds its name in \
                 meta_url for {secs:.0} s more (SCs sharing a database need different [sc] name \
                 values)"
            )));
        }
        Ok(Self {
            backend: Backend::Postgres(Arc::new(st)),
        })
    }

    /// Records `bucket` as this SC's snapshot bucket in the database, refused if
    /// another SC there keeps its snapshots in it: each SC sweeps the chunks its
    /// own manifests do not name, so two sharing a bucket would delete each
    /// other's. Nothing on redb (one SC, nobody to ask).
    pub fn claim_snapshot_bucket(&self, bucket: &str) -> Result<(), ScError> {
        let Backend::Postgres(st) = &self.backend else {
            return Ok(());
        };
        let (name, b) = (st.name.clone(), bucket.to_string());
        let owner: String = st.pool.run_blocking(move |c: &mut Conn| {
            c.client
                .execute(
                    "INSERT INTO sc_snapshot_buckets (bucket, sc) VALUES ($1, $2)
                     ON CONFLICT (bucket) DO NOTHING",
                    &[&b, &name],
                )
                .map_err(pg_err)?;
            let row = c
                .client
                .query_one(
                    "SELECT sc FROM sc_snapshot_buckets WHERE bucket = $1",
                    &[&b],
                )
                .map_err(pg_err)?;
            Ok::<_, ScError>(row.get(0))
        })?;
        if owner != st.name {
            return Err(ScError::IncorrectState(format!(
                "snapshot bucket {bucket:?} is storage controller {owner:?}'s (in meta_url): \
                 give each SC its own [sc] snapshot_bucket"
            )));
        }
        Ok(())
    }

    /// Whether the store holds no record at all (of this SC, in PostgreSQL).
    pub fn is_empty(&self) -> Result<bool, ScError> {
        Ok(self.volumes()?.is_empty() && self.snapshots()?.is_empty())
    }

    /// Renews the lease on this SC's name (PostgreSQL) every third of
    /// [`LEASE_TTL`] until `stop` turns true (or its sender is gone;
    /// [`StateStore::release`] gives it back). A renewal only extends the lease
    /// while it still names this SC: once another SC took it (or it was given
    /// back), renewals end for good and every write of this SC is refused.
    /// Returns at once on redb.
    pub async fn keep_lease(&self, mut stop: watch::Receiver<bool>) {
        let Backend::Postgres(st) = &self.backend else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEASE_TTL / 3) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let st2 = st.clone();
            match tokio::task::spawn_blocking(move || st2.extend())
                .await
                .unwrap_or_else(|e| Err(db_err(e)))
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(name = %st.name, "{}", lost_lease(&st.name));
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the storage controller's lease"),
            }
        }
    }

    /// One renewal of [`StateStore::keep_lease`], now (tests).
    #[cfg(test)]
    fn renew(&self) -> bool {
        match &self.backend {
            Backend::Postgres(st) => st.extend().unwrap(),
            Backend::Redb(_) => true,
        }
    }

    /// Gives back the lease on this SC's name (PostgreSQL), so a replacement can
    /// start at once. Nothing on redb.
    pub fn release(&self) -> Result<(), ScError> {
        let Backend::Postgres(st) = &self.backend else {
            return Ok(());
        };
        let (lease, me) = (st.lease(), st.holder.clone());
        st.pool.run_blocking(move |c: &mut Conn| {
            euca_pg::drop_lease(&mut c.client, "sc_leases", &lease, &me).map_err(pg_err)
        })
    }

    fn get<T: DeserializeOwned>(&self, table: Table, id: &str) -> Result<Option<T>, ScError> {
        let bytes = match &self.backend {
            Backend::Redb(db) => {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(table.redb()).map_err(db_err)?;
                t.get(id).map_err(db_err)?.map(|v| v.value().to_vec())
            }
            Backend::Postgres(st) => {
                let (name, id) = (st.name.clone(), id.to_string());
                st.pool.run_blocking(move |c: &mut Conn| {
                    let row = c
                        .client
                        .query_opt(
                            "SELECT value FROM sc_records WHERE sc = $1 AND kind = $2 AND id = $3",
                            &[&name, &table.name(), &id],
                        )
                        .map_err(pg_err)?;
                    Ok::<_, ScError>(row.map(|r| r.get::<_, Vec<u8>>(0)))
                })?
            }
        };
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(db_err))
            .transpose()
    }

    fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, ScError> {
        let rows: Vec<Vec<u8>> = match &self.backend {
            Backend::Redb(db) => {
                let tx = db.begin_read().map_err(db_err)?;
                let t = tx.open_table(table.redb()).map_err(db_err)?;
                let mut out = Vec::new();
                for item in t.iter().map_err(db_err)? {
                    let (_, v) = item.map_err(db_err)?;
                    out.push(v.value().to_vec());
                }
                out
            }
            Backend::Postgres(st) => {
                let name = st.name.clone();
                st.pool.run_blocking(move |c: &mut Conn| {
                    let rows = c
                        .client
                        .query(
                            "SELECT value FROM sc_records WHERE sc = $1 AND kind = $2 ORDER BY id",
                            &[&name, &table.name()],
                        )
                        .map_err(pg_err)?;
                    Ok::<_, ScError>(rows.iter().map(|r| r.get(0)).collect())
                })?
            }
        };
        rows.iter()
            .map(|b| serde_json::from_slice(b).map_err(db_err))
            .collect()
    }

    /// Writes (`Some`) or removes (`None`) one record; in PostgreSQL only while
    /// this SC holds its lease (checked in the same statement).
    fn write(&self, table: Table, id: &str, value: Option<Vec<u8>>) -> Result<(), ScError> {
        match &self.backend {
            Backend::Redb(db) => {
                let tx = db.begin_write().map_err(db_err)?;
                {
                    let mut t = tx.open_table(table.redb()).map_err(db_err)?;
                    match &value {
                        Some(v) => {
                            t.insert(id, v.as_slice()).map_err(db_err)?;
                        }
                        None => {
                            t.remove(id).map_err(db_err)?;
                        }
                    }
                }
                tx.commit().map_err(db_err)
            }
            Backend::Postgres(st) => {
                let (name, lease, me, id) = (
                    st.name.clone(),
                    st.lease(),
                    st.holder.clone(),
                    id.to_string(),
                );
                let held = st.pool.run_blocking(move |c: &mut Conn| {
                    // FOR SHARE: an SC taking the lease over waits for this write
                    // to commit, so none lands after the hand-over.
                    const HELD: &str = "WITH held AS (SELECT 1 FROM sc_leases
                        WHERE name = $4 AND holder = $5 AND expires > now() FOR SHARE)";
                    let row = match &value {
                        Some(v) => c.client.query_one(
                            &format!(
                                "{HELD}, put AS (
                                    INSERT INTO sc_records (sc, kind, id, value)
                                    SELECT $1, $2, $3, $6 WHERE EXISTS (SELECT 1 FROM held)
                                    ON CONFLICT (sc, kind, id) DO UPDATE SET value = EXCLUDED.value)
                                 SELECT EXISTS (SELECT 1 FROM held)"
                            ),
                            &[&name, &table.name(), &id, &lease, &me, v],
                        ),
                        None => c.client.query_one(
                            &format!(
                                "{HELD}, gone AS (
                                    DELETE FROM sc_records WHERE sc = $1 AND kind = $2 AND id = $3
                                    AND EXISTS (SELECT 1 FROM held))
                                 SELECT EXISTS (SELECT 1 FROM held)"
                            ),
                            &[&name, &table.name(), &id, &lease, &me],
                        ),
                    }
                    .map_err(pg_err)?;
                    Ok::<bool, ScError>(row.get(0))
                })?;
                if held {
                    Ok(())
                } else {
                    Err(lost_lease(&st.name))
                }
            }
        }
    }

    fn put<T: Serialize>(&self, table: Table, id: &str, v: &T) -> Result<(), ScError> {
        let bytes = serde_json::to_vec(v).map_err(db_err)?;
        self.write(table, id, Some(bytes))
    }

    pub fn volume(&self, id: &str) -> Result<Option<Volume>, ScError> {
        self.get(Table::Volumes, id)
    }
    pub fn volumes(&self) -> Result<Vec<Volume>, ScError> {
        self.all(Table::Volumes)
    }
    pub fn put_volume(&self, v: &Volume) -> Result<(), ScError> {
        self.put(Table::Volumes, &v.id, v)
    }
    pub fn remove_volume(&self, id: &str) -> Result<(), ScError> {
        self.write(Table::Volumes, id, None)
    }
    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, ScError> {
        self.get(Table::Snapshots, id)
    }
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, ScError> {
        self.all(Table::Snapshots)
    }
    pub fn put_snapshot(&self, s: &Snapshot) -> Result<(), ScError> {
        self.put(Table::Snapshots, &s.id, s)
    }
    pub fn remove_snapshot(&self, id: &str) -> Result<(), ScError> {
        self.write(Table::Snapshots, id, None)
    }

    /// Copies every record of this store into `to` (`euca migrate`), which must
    /// hold none yet, then reads `to` back and compares: returns how many volumes
    /// and snapshots were copied.
    pub fn copy_into(&self, to: &StateStore) -> Result<(usize, usize), ScError> {
        if !to.is_empty()? {
            return Err(ScError::IncorrectState(
                "the target already holds records of a storage controller by that name".into(),
            ));
        }
        let mut counts = [0; 2];
        for (n, table) in Table::ALL.into_iter().enumerate() {
            let mine: Vec<serde_json::Value> = self.all(table)?;
            for v in &mine {
                let id = v.get("id").and_then(|i| i.as_str()).ok_or_else(|| {
                    ScError::State(format!("a {} record has no id", table.name()))
                })?;
                to.put(table, id, v)?;
            }
            // Both list by id in byte order (redb's keys; COLLATE "C").
            let theirs: Vec<serde_json::Value> = to.all(table)?;
            if mine != theirs {
                return Err(ScError::State(format!(
                    "the copied {} differ from the source when read back",
                    table.name()
                )));
            }
            counts[n] = mine.len();
        }
        Ok((counts[0], counts[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Progress, SnapshotState, VolumeState};

    fn volume(id: &str, size: u64) -> Volume {
        Volume {
            id: id.into(),
            size,
            state: VolumeState::Available,
            created: "2026-12-05T00:00:00Z".into(),
            snapshot_id: None,
            attachment: None,
        }
    }

    fn snapshot(id: &str, volume_id: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            volume_id: volume_id.into(),
            size: 1 << 30,
            state: SnapshotState::Completed,
            created: "2026-12-05T00:00:00Z".into(),
            chunk_size: 4 << 20,
            progress: Progress::default(),
            error: None,
        }
    }

    /// Ends the lease of the SC `name` as if its holder had stopped renewing it
    /// 30 s ago.
    fn expire(store: &StateStore, name: &str) {
        let Backend::Postgres(st) = &store.backend else {
            panic!("not on PostgreSQL")
        };
        let lease = format!("sc:{name}");
        st.pool
            .run_blocking(move |c: &mut Conn| {
                c.client
                    .execute(
                        "UPDATE sc_leases SET expires = now() - interval '1 second' WHERE name = $1",
                        &[&lease],
                    )
                    .map_err(pg_err)
            })
            .unwrap();
    }

    #[test]
    fn records_round_trip_on_both_backends_and_names_keep_them_apart() {
        let dir = tempfile::tempdir().unwrap();
        let url = euca_pg::testing::database_url();
        let a = StateStore::open_postgres(&url, "zone-a", "host:/a").unwrap();
        let b = StateStore::open_postgres(&url, "zone-b", "host:/b").unwrap();
        let local = StateStore::open(&dir.path().join("sc.redb")).unwrap();
        for s in [&a, &local] {
            s.put_volume(&volume("vol-0000000b", 2)).unwrap();
            s.put_volume(&volume("vol-0000000a", 1)).unwrap();
            s.put_volume(&volume("vol-0000000a", 3)).unwrap(); // overwrite
            s.put_snapshot(&snapshot("snap-00000001", "vol-0000000a"))
                .unwrap();
            assert_eq!(s.volume("vol-0000000a").unwrap().unwrap().size, 3);
            let ids: Vec<String> = s.volumes().unwrap().into_iter().map(|v| v.id).collect();
            assert_eq!(ids, ["vol-0000000a", "vol-0000000b"]);
            s.remove_volume("vol-0000000b").unwrap();
            s.remove_volume("vol-0000000b").unwrap(); // idempotent
            assert!(s.volume("vol-0000000b").unwrap().is_none());
            assert_eq!(s.snapshots().unwrap().len(), 1);
            s.remove_snapshot("snap-00000001").unwrap();
            assert!(s.snapshot("snap-00000001").unwrap().is_none());
        }
        // The other SC on the database sees none of them, and writes its own.
        assert!(b.is_empty().unwrap());
        b.put_volume(&volume("vol-0000000a", 9)).unwrap();
        assert_eq!(a.volume("vol-0000000a").unwrap().unwrap().size, 3);
        assert_eq!(b.volume("vol-0000000a").unwrap().unwrap().size, 9);
        assert!(StateStore::open_postgres(&url, "", "h").is_err());
        // Each keeps its snapshots in a bucket of its own.
        a.claim_snapshot_bucket("euca-snapshots").unwrap();
        a.claim_snapshot_bucket("euca-snapshots").unwrap(); // again, at a restart
        let err = b.claim_snapshot_bucket("euca-snapshots").unwrap_err();
        assert!(err.to_string().contains("\"zone-a\"'s"), "{err}");
        b.claim_snapshot_bucket("euca-snapshots-b").unwrap();
        local.claim_snapshot_bucket("euca-snapshots").unwrap(); // redb: nobody to ask
    }

    #[test]
    fn one_holder_per_name_and_a_replaced_sc_writes_nothing() {
        let url = euca_pg::testing::database_url();
        let old = StateStore::open_postgres(&url, "sc", "host-1:/var/sc").unwrap();
        old.put_volume(&volume("vol-00000001", 1)).unwrap();
        // Another SC by that name is refused while the lease is live…
        let err = StateStore::open_postgres(&url, "sc", "host-2:/var/sc")
            .err()
            .expect("a second holder must be refused");
        assert!(
            err.to_string().contains("host-1:/var/sc holds its name"),
            "{err}"
        );
        // …the same holder (restarted after kill -9) takes it back at once…
        StateStore::open_postgres(&url, "sc", "host-1:/var/sc").unwrap();
        // …and once it lapsed (the old SC froze), a replacement takes over: from
        // then on the old one's writes are refused and change nothing.
        expire(&old, "sc");
        let new = StateStore::open_postgres(&url, "sc", "host-2:/var/sc").unwrap();
        let err = old.put_volume(&volume("vol-00000001", 7)).unwrap_err();
        assert!(err.to_string().contains("no longer holds"), "{err}");
        assert!(old.remove_volume("vol-00000001").is_err());
        assert!(old.put_volume(&volume("vol-00000002", 1)).is_err());
        assert_eq!(new.volume("vol-00000001").unwrap().unwrap().size, 1);
        assert!(new.volume("vol-00000002").unwrap().is_none());
        new.put_volume(&volume("vol-00000001", 5)).unwrap();
        assert!(
            !old.renew(),
            "the replaced SC's renewal must not take the lease back"
        );
        // Given back, the name is free at once (for another SC; the replaced one
        // renews nothing and still writes nothing).
        new.release().unwrap();
        assert!(!old.renew());
        assert!(old.put_volume(&volume("vol-00000001", 8)).is_err());
        let third = StateStore::open_postgres(&url, "sc", "host-3:/var/sc").unwrap();
        assert!(third.renew());
        assert_eq!(third.volume("vol-00000001").unwrap().unwrap().size, 5);
    }

    #[test]
    fn records_copy_from_redb_onto_postgres_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = euca_pg::testing::database_url();
        let src = StateStore::open(&dir.path().join("sc.redb")).unwrap();
        for n in 0..40u32 {
            let mut v = volume(&format!("vol-{n:08x}"), u64::from(n) << 30);
            if n % 3 == 0 {
                v.state = VolumeState::InUse;
                v.attachment = Some(crate::model::Attachment {
                    node: "10.0.0.7".parse().unwrap(),
                    export: format!("vol-{n:08x}-secret"),
                    attached_at: "2026-12-05T00:00:00Z".into(),
                    protocol: Default::default(),
                    chap: None,
                });
            }
            src.put_volume(&v).unwrap();
        }
        src.put_snapshot(&snapshot("snap-0000000a", "vol-00000001"))
            .unwrap();
        let dst = StateStore::open_postgres(&url, "sc", "migrate").unwrap();
        assert_eq!(src.copy_into(&dst).unwrap(), (40, 1));
        assert_eq!(dst.volumes().unwrap(), src.volumes().unwrap());
        assert_eq!(dst.snapshots().unwrap(), src.snapshots().unwrap());
        let err = src.copy_into(&dst).unwrap_err();
        assert!(err.to_string().contains("already holds"), "{err}");
    }
}
