//! The cloud controller's records in PostgreSQL (`[clc] meta_url`): several
//! `euca clc` on one database serve the same key pairs, groups, images, volumes,
//! snapshots and instances.
//!
//! One table, `clc_records (kind, id, owner, value)`, ids and owners ordered as
//! bytes (`COLLATE "C"`, as redb orders them), from the migrations in
//! `compute/clc/migrations/postgres/`. The rules are the trait's:
//! - an insert is one transaction that first takes a transaction-scoped advisory
//!   lock on (kind, owner), so two front ends inserting records of one account
//!   check the name-conflict rule one after the other; the id is the primary key;
//! - an update locks its row (`SELECT … FOR UPDATE`) for its read-decide-write;
//! - a read is one statement.
//!
//! Connections are `euca-pg`'s; the calls block, as redb's do, and run off the
//! async runtime ([`crate::offload`]).
use crate::error::Ec2Error;
use crate::store::{Change, Conflict, Kind, RecordStore, Stored};
use euca_pg::{Conn, Migration, Pool};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_records.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_notify_instances.sql"),
    },
];

/// A database error at the EC2 edge: `ServiceUnavailable` (503, which clients
/// retry) when the database was busy, else an internal error.
fn pg_err(e: impl euca_pg::DbFailure) -> Ec2Error {
    if e.is_busy() {
        Ec2Error::Unavailable(format!("the record store is busy: {}", e.describe()))
    } else {
        Ec2Error::internal(format!("postgresql: {}", e.describe()))
    }
}

pub struct PgRecordStore {
    pool: Pool,
}

impl PgRecordStore {
    /// Connects (`connections` threads) and applies the migrations the database
    /// lacks. Blocks: call at start-up, off the runtime.
    pub fn open(url: &str, connections: usize) -> Result<Self, Ec2Error> {
        let pool =
            Pool::open_blocking(url, "euca-clc", connections, "clc", MIGRATIONS).map_err(pg_err)?;
        Ok(Self { pool })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, Ec2Error> + Send + 'static,
    ) -> Result<T, Ec2Error> {
        self.pool.run_blocking(f)
    }
}

impl From<euca_pg::PgError> for Ec2Error {
    fn from(e: euca_pg::PgError) -> Self {
        pg_err(e)
    }
}

fn stored(id: String, owner: String, value: Vec<u8>) -> Stored {
    Stored { owner, id, value }
}

impl RecordStore for PgRecordStore {
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Stored>, Ec2Error> {
        let id = id.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt(
                    "SELECT owner, value FROM clc_records WHERE kind = $1 AND id = $2",
                    &[&kind.name(), &id],
                )
                .map_err(pg_err)?;
            Ok(row.map(|r| stored(id, r.get(0), r.get(1))))
        })
    }

    fn insert(
        &self,
        kind: Kind,
        owner: &str,
        id: &str,
        value: &[u8],
        conflict: Option<Conflict>,
    ) -> Result<bool, Ec2Error> {
        let (owner, id, value) = (owner.to_string(), id.to_string(), value.to_vec());
        let insert = "INSERT INTO clc_records (kind, id, owner, value) VALUES ($1, $2, $3, $4)
                      ON CONFLICT (kind, id) DO NOTHING";
        let Some(conflict) = conflict else {
            // No rule to check: one statement.
            return self.run(move |c| {
                let n = c
                    .client
                    .execute(insert, &[&kind.name(), &id, &owner, &value])
                    .map_err(pg_err)?;
                Ok(n == 1)
            });
        };
        // The rule is a borrowed closure: the connection thread reads the owner's
        // records and asks this thread whether any conflicts, holding a lock on
        // (kind, owner) from the read to the insert.
        self.pool.run_asking(
            move |c, conflicts: &dyn Fn(Vec<Vec<u8>>) -> Option<bool>| {
                let mut tx = c.client.transaction().map_err(pg_err)?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2, 0))",
                    &[&kind.name(), &owner],
                )
                .map_err(pg_err)?;
                let taken = tx
                    .query_opt(
                        "SELECT 1 FROM clc_records WHERE kind = $1 AND id = $2",
                        &[&kind.name(), &id],
                    )
                    .map_err(pg_err)?
                    .is_some();
                if taken {
                    return Ok(false);
                }
                let mine: Vec<Vec<u8>> = tx
                    .query(
                        "SELECT value FROM clc_records WHERE kind = $1 AND owner = $2",
                        &[&kind.name(), &owner],
                    )
                    .map_err(pg_err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                match conflicts(mine) {
                    Some(false) => {}
                    Some(true) => return Ok(false),
                    None => return Err(Ec2Error::internal("record insert abandoned")),
                }
                let n = tx
                    .execute(insert, &[&kind.name(), &id, &owner, &value])
                    .map_err(pg_err)?;
                tx.commit().map_err(pg_err)?;
                Ok(n == 1)
            },
            |mine: Vec<Vec<u8>>| mine.iter().any(|v| conflict(v)),
        )
    }

    fn update(
        &self,
        kind: Kind,
        id: &str,
        f: &mut dyn FnMut(Option<&Stored>) -> Result<Change, Ec2Error>,
    ) -> Result<(), Ec2Error> {
        let id = id.to_string();
        // `f` decides on this thread; its row stays locked (FOR UPDATE) meanwhile.
        self.pool.run_asking(
            move |c, decide: &dyn Fn(Option<Stored>) -> Option<Result<Change, Ec2Error>>| {
                let mut tx = c.client.transaction().map_err(pg_err)?;
                let cur = tx
                    .query_opt(
                        "SELECT owner, value FROM clc_records WHERE kind = $1 AND id = $2 FOR UPDATE",
                        &[&kind.name(), &id],
                    )
                    .map_err(pg_err)?
                    .map(|r| stored(id.clone(), r.get(0), r.get(1)));
                let exists = cur.is_some();
                let change = decide(cur)
                    .ok_or_else(|| Ec2Error::internal("record update abandoned"))??;
                match change {
                    Change::Keep => return Ok(()),
                    Change::Put(value) => {
                        if !exists {
                            return Err(Ec2Error::internal(format!("no record {id} to replace")));
                        }
                        tx.execute(
                            "UPDATE clc_records SET value = $3 WHERE kind = $1 AND id = $2",
                            &[&kind.name(), &id, &value],
                        )
                        .map_err(pg_err)?;
                    }
                    Change::Delete => {
                        tx.execute(
                            "DELETE FROM clc_records WHERE kind = $1 AND id = $2",
                            &[&kind.name(), &id],
                        )
                        .map_err(pg_err)?;
                    }
                }
                tx.commit().map_err(pg_err)
            },
            |cur: Option<Stored>| f(cur.as_ref()),
        )
    }

    fn scan(
        &self,
        kind: Kind,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, Ec2Error> {
        let (owner, after) = (owner.map(str::to_string), after.unwrap_or("").to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            let rows = match &owner {
                Some(o) => c.client.query(
                    "SELECT id, owner, value FROM clc_records
                     WHERE kind = $1 AND owner = $2 AND id > $3 ORDER BY id LIMIT $4",
                    &[&kind.name(), o, &after, &limit],
                ),
                None => c.client.query(
                    "SELECT id, owner, value FROM clc_records
                     WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&kind.name(), &after, &limit],
                ),
            }
            .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| stored(r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool, Ec2Error> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.run(move |c| {
            euca_pg::take_lease(&mut c.client, "clc_leases", &name, &holder, ttl).map_err(pg_err)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), Ec2Error> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.run(move |c| {
            euca_pg::drop_lease(&mut c.client, "clc_leases", &name, &holder).map_err(pg_err)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    /// Listens on the channel the instance records' trigger notifies (migration
    /// 2). While the listener is down (lost, reconnecting) changes may be missed,
    /// so its return to listening counts as a change too.
    fn watch_instances(&self, changed: Box<dyn Fn() + Send + Sync>) -> Result<bool, Ec2Error> {
        self.pool
            .listen("euca_clc_instances", move |event| {
                if event != euca_pg::ListenEvent::Lost {
                    changed();
                }
            })
            .map_err(pg_err)?;
        Ok(true)
    }
}
