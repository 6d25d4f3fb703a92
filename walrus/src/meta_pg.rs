//! Metadata in PostgreSQL (`[walrus] meta_url = "postgres://…"`): several Walrus
//! front ends share one database and so serve the same buckets.
//!
//! The tables and the rules of every op are those of [`crate::meta_kv`] (the same
//! records as redb, byte-keyed rows ordered as bytes). Each op runs in its own
//! SERIALIZABLE transaction, retried when PostgreSQL reports a serialization failure
//! or a deadlock, so two front ends racing on one key behave as one writer would: the
//! loser re-runs and sees the winner (a conditional PUT gets 412). A reply is sent
//! only after COMMIT, which is durable under PostgreSQL's `synchronous_commit` (on by
//! default). A read of one row or one range is one statement (its own snapshot);
//! reads that take several run in one REPEATABLE READ, READ ONLY transaction.
//!
//! The driver is the synchronous `postgres` crate: the op logic is plain synchronous
//! code shared with redb. `[walrus] meta_max_connections` threads each own one
//! connection (opened at first use, reopened after it breaks) and take ops from one
//! queue; an op holds its connection for its few round trips. A connection lost
//! mid-op fails that op (a write's outcome is then unknown to the client, as with
//! any lost reply); the next op reconnects.
//!
//! The schema is created at start by the versioned migrations in
//! `walrus/migrations/postgres/`, applied once under an advisory lock (front ends
//! starting together wait for each other).
use crate::meta::*;
use crate::meta_kv::{self, KvRead, KvWrite, Row, Table};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Attempts of one op that keeps losing serialization races, before it fails.
const MAX_ATTEMPTS: u32 = 64;
/// `pg_advisory_lock` key held while migrations run ("walrus" in ASCII).
const MIGRATION_LOCK: i64 = 0x77616c727573;

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../migrations/postgres/0001_metadata.sql"))];

fn backend(e: postgres::Error) -> MetaError {
    MetaError::Backend(format!("postgresql: {e}"))
}

/// One connection with its prepared statements.
struct PgConn {
    client: Client,
    stmts: StatementSet,
}

impl PgConn {
    fn connect(config: &postgres::Config) -> Result<Self, MetaError> {
        let mut client = config.connect(NoTls).map_err(backend)?;
        let mut prep = |sql: String| client.prepare(&sql).map_err(backend);
        let mut get = Vec::new();
        let mut range = Vec::new();
        let mut range_open = Vec::new();
        let mut put = Vec::new();
        let mut remove = Vec::new();
        for t in Table::ALL {
            let n = format!("walrus_{}", t.name());
            get.push(prep(format!("SELECT v FROM {n} WHERE k = $1"))?);
            range.push(prep(format!(
                "SELECT k, v FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
            ))?);
            range_open.push(prep(format!(
                "SELECT k, v FROM {n} WHERE k >= $1 ORDER BY k LIMIT $2"
            ))?);
            put.push(prep(format!(
                "INSERT INTO {n} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ))?);
            remove.push(prep(format!("DELETE FROM {n} WHERE k = $1 RETURNING v"))?);
        }
        let next_seq = prep("SELECT nextval('walrus_version_seq')".into())?;
        Ok(Self {
            client,
            stmts: StatementSet {
                get,
                range,
                range_open,
                put,
                remove,
                next_seq,
            },
        })
    }
}

/// Where one op's statements go: the bare connection (single-statement reads) or a
/// transaction.
enum Target<'a> {
    Plain(&'a mut Client),
    Tx(Transaction<'a>),
}

/// [`KvRead`]/[`KvWrite`] over one connection. Remembers whether a statement failed
/// with a serialization failure or a deadlock (the op is then retried).
struct PgKv<'a> {
    target: RefCell<Target<'a>>,
    stmts: &'a StatementSet,
    retry: Cell<bool>,
}

/// The prepared statements of a [`PgConn`] (per table: indexed by `Table as usize`).
struct StatementSet {
    get: Vec<Statement>,
    range: Vec<Statement>,
    range_open: Vec<Statement>,
    put: Vec<Statement>,
    remove: Vec<Statement>,
    next_seq: Statement,
}

impl PgKv<'_> {
    fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, MetaError> {
        let r = match &mut *self.target.borrow_mut() {
            Target::Plain(c) => c.query(stmt, params),
            Target::Tx(t) => t.query(stmt, params),
        };
        r.map_err(|e| {
            if is_retryable(&e) {
                self.retry.set(true);
            }
            backend(e)
        })
    }
}

fn is_retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl KvRead for PgKv<'_> {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let rows = self.query(&self.stmts.get[t as usize], &[&k])?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, MetaError> {
        let n = limit_param(limit);
        let rows = if to.is_empty() {
            self.query(&self.stmts.range_open[t as usize], &[&from, &n])?
        } else {
            self.query(&self.stmts.range[t as usize], &[&from, &to, &n])?
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl KvWrite for PgKv<'_> {
    fn put(&self, t: Table, k: &[u8], v: &[u8]) -> Result<(), MetaError> {
        self.query(&self.stmts.put[t as usize], &[&k, &v])?;
        Ok(())
    }

    fn remove(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let rows = self.query(&self.stmts.remove[t as usize], &[&k])?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn next_seq(&self) -> Result<u64, MetaError> {
        let rows = self.query(&self.stmts.next_seq, &[])?;
        let n: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| MetaError::Backend("postgresql: no sequence value".into()))?;
        u64::try_from(n).map_err(|_| MetaError::Backend("postgresql: negative sequence".into()))
    }
}

/// How an op uses its connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One statement, no transaction.
    Single,
    /// Several reads of one snapshot.
    Snapshot,
    /// A write: SERIALIZABLE, retried.
    Write,
}

/// Work for a connection thread: given its connection slot (empty, or holding a
/// connection that may have broken) and the server's config.
type Job = Box<dyn FnOnce(&mut Option<PgConn>, &postgres::Config) + Send>;

pub struct PgMeta {
    jobs: mpsc::Sender<Job>,
}

impl PgMeta {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/dbname[?…]`, or
    /// libpq's `key=value` form) and applies the migrations it lacks. Fails (rather
    /// than waits) if the database cannot be reached within 10 s.
    pub async fn open(url: &str, connections: usize) -> Result<Self, MetaError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| MetaError::Backend(format!("meta_url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("euca-walrus");
        }
        // The synchronous driver runs its own small runtime, which cannot start on a
        // thread of tokio's (its blocking pool included): each connection has a
        // thread of its own, fed through one queue.
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..connections.max(1) {
            let (rx, config) = (rx.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("walrus-pg-{n}"))
                .spawn(move || {
                    let mut conn = None;
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        job(&mut conn, &config);
                    }
                })
                .map_err(|e| MetaError::Backend(e.to_string()))?;
        }
        let meta = Self { jobs };
        meta.submit(|_, config| migrate(config)).await?;
        Ok(meta)
    }

    /// Runs `f` on a connection thread.
    async fn submit<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Option<PgConn>, &postgres::Config) -> Result<T, MetaError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn, config| {
                let _ = tx.send(f(conn, config));
            }))
            .map_err(|_| MetaError::Backend("postgresql: connection threads stopped".into()))?;
        rx.await
            .map_err(|_| MetaError::Backend("postgresql: connection thread failed".into()))?
    }

    /// Runs `f` on a connection (made anew if there is none or it broke); a write in
    /// a SERIALIZABLE transaction committed after `f` succeeds, re-run on a
    /// serialization failure.
    async fn run<T, F>(&self, mode: Mode, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: Fn(&PgKv<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        self.submit(move |slot, config| {
            if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
                *slot = None;
            }
            if slot.is_none() {
                *slot = Some(PgConn::connect(config)?);
            }
            let conn = slot
                .as_mut()
                .ok_or_else(|| MetaError::Backend("postgresql: no connection".into()))?;
            run_on(conn, mode, &f)
        })
        .await
    }
}

fn run_on<T>(
    conn: &mut PgConn,
    mode: Mode,
    f: &impl Fn(&PgKv<'_>) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    let PgConn { client, stmts } = conn;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let target = match mode {
            Mode::Single => Target::Plain(client),
            Mode::Snapshot => Target::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(backend)?,
            ),
            Mode::Write => Target::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .map_err(backend)?,
            ),
        };
        let kv = PgKv {
            target: RefCell::new(target),
            stmts,
            retry: Cell::new(false),
        };
        let r = f(&kv);
        let retry = kv.retry.get();
        let r = match (r, kv.target.into_inner()) {
            (Ok(v), Target::Tx(t)) => match t.commit() {
                Ok(()) => Ok(v),
                Err(e) if is_retryable(&e) => Err((true, backend(e))),
                Err(e) => Err((false, backend(e))),
            },
            (Ok(v), Target::Plain(_)) => Ok(v),
            // Dropping the transaction rolls it back.
            (Err(e), _) => Err((retry, e)),
        };
        match r {
            Ok(v) => return Ok(v),
            Err((true, _)) if attempt < MAX_ATTEMPTS => {
                // Back off a little, more each time, so racing writers spread out.
                let ms = rand::random_range(0..=attempt.min(20) as u64);
                std::thread::sleep(Duration::from_millis(ms));
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// Applies the migrations the database lacks, under an advisory lock.
fn migrate(config: &postgres::Config) -> Result<(), MetaError> {
    let mut client = config.connect(NoTls).map_err(backend)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(backend)?;
    let r = (|| {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS walrus_schema_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .map_err(backend)?;
        let done: HashSet<i32> = client
            .query("SELECT version FROM walrus_schema_migrations", &[])
            .map_err(backend)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let newest_known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
        if let Some(v) = done.iter().find(|v| **v > newest_known) {
            return Err(MetaError::Backend(format!(
                "postgresql: the database has schema version {v}, newer than this binary knows ({newest_known})"
            )));
        }
        for (version, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            let mut tx = client.transaction().map_err(backend)?;
            tx.batch_execute(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO walrus_schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            tracing::info!(version, "applied PostgreSQL metadata migration");
        }
        Ok(())
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    r
}

#[async_trait::async_trait]
impl MetaStore for PgMeta {
    async fn bucket(&self, name: &str) -> Result<Option<BucketMeta>, MetaError> {
        let name = name.to_string();
        self.run(Mode::Single, move |kv| meta_kv::bucket(kv, &name))
            .await
    }

    async fn buckets(&self) -> Result<Vec<BucketMeta>, MetaError> {
        self.run(Mode::Snapshot, |kv| meta_kv::buckets(kv)).await
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, MetaError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.run(Mode::Single, move |kv| meta_kv::object(kv, &bucket, &key))
            .await
    }

    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Version>, MetaError> {
        let (bucket, key, id) = (bucket.to_string(), key.to_string(), version_id.to_string());
        self.run(Mode::Snapshot, move |kv| {
            meta_kv::object_version(kv, &bucket, &key, &id)
        })
        .await
    }

    async fn scan_versions(
        &self,
        bucket: &str,
        after: Option<(&str, Option<&str>)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<VersionEntry>, MetaError> {
        let bucket = bucket.to_string();
        let after = after.map(|(k, v)| (k.to_string(), v.map(str::to_string)));
        let prefix = prefix.to_string();
        self.run(Mode::Snapshot, move |kv| {
            let after = after.as_ref().map(|(k, v)| (k.as_str(), v.as_deref()));
            meta_kv::scan_versions(kv, &bucket, after, &prefix, limit)
        })
        .await
    }

    async fn scan_objects(
        &self,
        bucket: &str,
        start: &ScanStart,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ObjectEntry>, MetaError> {
        let (bucket, start, prefix) = (bucket.to_string(), start.clone(), prefix.to_string());
        self.run(Mode::Single, move |kv| {
            meta_kv::scan_objects(kv, &bucket, &start, &prefix, limit)
        })
        .await
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadMeta>, MetaError> {
        let (bucket, key, id) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        self.run(Mode::Single, move |kv| {
            meta_kv::upload(kv, &bucket, &key, &id)
        })
        .await
    }

    async fn scan_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UploadMeta>, MetaError> {
        let bucket = bucket.to_string();
        let after = after.map(|(k, u)| (k.to_string(), u.to_string()));
        let prefix = prefix.to_string();
        self.run(Mode::Single, move |kv| {
            let after = after.as_ref().map(|(k, u)| (k.as_str(), u.as_str()));
            meta_kv::scan_uploads(kv, &bucket, after, &prefix, limit)
        })
        .await
    }

    async fn parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartMeta>, MetaError> {
        let id = upload_id.to_string();
        self.run(Mode::Single, move |kv| {
            meta_kv::parts(kv, &id, after, limit)
        })
        .await
    }

    async fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<CompletedUpload>, MetaError> {
        let (bucket, key, id) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        self.run(Mode::Single, move |kv| {
            meta_kv::completed_upload(kv, &bucket, &key, &id)
        })
        .await
    }

    async fn referenced_blobs(&self) -> Result<HashSet<String>, MetaError> {
        self.run(Mode::Snapshot, |kv| meta_kv::referenced_blobs(kv))
            .await
    }

    async fn apply(&self, op: MetaOp) -> Result<OpOutcome, MetaError> {
        self.run(Mode::Write, move |kv| meta_kv::apply_op(kv, op.clone()))
            .await
    }
}
