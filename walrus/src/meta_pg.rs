//! Metadata in PostgreSQL (`[walrus] meta_url = "postgres://…"`): several Walrus
//! front ends share one database and so serve the same buckets.
//!
//! The tables and the rules of every op are those of [`crate::meta_kv`] (the same
//! records as redb, byte-keyed rows ordered as bytes). Each op runs in its own READ
//! COMMITTED transaction that first takes transaction-scoped advisory locks
//! ([`OpLocks`]): an op on an object key (PUT, DELETE, a version, a tag or lock
//! change, an upload or its parts) takes its bucket's lock shared and its key's
//! lock exclusive; an op on a bucket (create, delete, ACL, configuration) takes the
//! bucket's lock exclusive. So ops on one key run one after the other across every
//! front end and each reads what the previous one committed (every statement of a
//! READ COMMITTED transaction sees the latest commits): the loser of two racing
//! conditional PUTs gets 412; a bucket is never deleted while an op in it is under
//! way, and no op lands in a deleted bucket; two configuration changes to one bucket
//! never lose one. Ops on different keys never wait for each other. (SERIALIZABLE
//! did the same with no locks, but its page-grained predicate locks made concurrent
//! PUTs of neighbouring keys abort each other: 4585 transactions for 2000 small PUTs
//! at 16 in flight, and 1037–1170 PUT/s against 1668–1681 with the locks, same run;
//! BENCHMARKS.md.) Everything an op touches
//! is under its key or its bucket, except the expiry of completed-upload records
//! (deleting a row twice is harmless) and the version sequence (a PostgreSQL
//! sequence). A deadlock (none is expected: locks are taken bucket first) is retried.
//! A reply is sent only after COMMIT, which is durable under PostgreSQL's
//! `synchronous_commit` (on by default). A read of one row or one range is one
//! statement (its own snapshot); reads that take several run in one REPEATABLE
//! READ, READ ONLY transaction. Bulk writes of `euca migrate` run SERIALIZABLE.
//!
//! Connections are `euca-pg`'s: the synchronous `postgres` driver (the op logic is
//! plain synchronous code shared with redb) on `[walrus] meta_max_connections`
//! threads; an op holds one connection for its few round trips. A connection lost
//! mid-op fails that op (a write's outcome is then unknown to the client, as with
//! any lost reply); the next op reconnects. The schema comes from the versioned
//! migrations in `walrus/migrations/postgres/`, applied at start.
use crate::meta::*;
use crate::meta_kv::{self, KvRead, KvWrite, Row, Table};
use euca_pg::{is_retryable, Conn, DbFailure, Migration, Pool, Statements};
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Transaction};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::LazyLock;

/// Attempts of one op that keeps losing serialization races, before it fails.
const MAX_ATTEMPTS: u32 = 64;

/// The migrations, in order (tables `walrus_…`).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_metadata.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_leases.sql"),
    },
];

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(format!("postgresql: {e}"))
}

/// A statement's error: [`MetaError::Busy`] for a lock or statement timeout.
fn statement_error(e: postgres::Error) -> MetaError {
    let m = e.describe();
    if e.is_busy() {
        MetaError::Busy(format!("postgresql: {m}"))
    } else {
        backend(m)
    }
}

impl From<euca_pg::PgError> for MetaError {
    fn from(e: euca_pg::PgError) -> Self {
        if e.is_busy() {
            MetaError::Busy(e.to_string())
        } else {
            MetaError::Backend(e.to_string())
        }
    }
}

/// The statements of one table.
struct TableSql {
    get: String,
    range: String,
    range_open: String,
    claim: String,
    put: String,
    remove: String,
}

/// Per table, indexed by `Table as usize`.
static SQL: LazyLock<Vec<TableSql>> = LazyLock::new(|| {
    Table::ALL
        .iter()
        .map(|t| {
            let n = format!("walrus_{}", t.name());
            TableSql {
                get: format!("SELECT v FROM {n} WHERE k = $1"),
                range: format!("SELECT k, v FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"),
                range_open: format!("SELECT k, v FROM {n} WHERE k >= $1 ORDER BY k LIMIT $2"),
                claim: format!(
                    "SELECT k, v FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3 \
                     FOR UPDATE SKIP LOCKED"
                ),
                put: format!(
                    "INSERT INTO {n} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
                remove: format!("DELETE FROM {n} WHERE k = $1 RETURNING v"),
            }
        })
        .collect()
});
const NEXT_SEQ: &str = "SELECT nextval('walrus_version_seq')";

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
    statements: RefCell<&'a mut Statements>,
    retry: Cell<bool>,
    /// Rows read ahead under the op's locks ([`OpLocks::read_ahead`]), kept up
    /// to date by the op's own writes.
    read_ahead: RefCell<Vec<ReadAhead>>,
}

impl PgKv<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, MetaError> {
        let mut statements = self.statements.borrow_mut();
        let r = match &mut *self.target.borrow_mut() {
            Target::Plain(c) => statements.get(*c, sql).and_then(|st| c.query(&st, params)),
            Target::Tx(t) => statements.get(t, sql).and_then(|st| t.query(&st, params)),
        };
        r.map_err(|e| {
            if is_retryable(&e) {
                self.retry.set(true);
            }
            statement_error(e)
        })
    }

    /// The row read ahead for `(t, k)`, if it was.
    fn read_ahead(&self, t: Table, k: &[u8]) -> Option<Option<Vec<u8>>> {
        self.read_ahead
            .borrow()
            .iter()
            .find(|(rt, rk, _)| *rt == t && rk == k)
            .map(|(_, _, v)| v.clone())
    }

    /// Keeps a row read ahead in step with this op's write of it.
    fn wrote(&self, t: Table, k: &[u8], v: Option<&[u8]>) {
        for (rt, rk, rv) in self.read_ahead.borrow_mut().iter_mut() {
            if *rt == t && rk == k {
                *rv = v.map(<[u8]>::to_vec);
            }
        }
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl KvRead for PgKv<'_> {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        if let Some(v) = self.read_ahead(t, k) {
            return Ok(v);
        }
        let rows = self.query(&SQL[t as usize].get, &[&k])?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, MetaError> {
        let n = limit_param(limit);
        let rows = if to.is_empty() {
            self.query(&SQL[t as usize].range_open, &[&from, &n])?
        } else {
            self.query(&SQL[t as usize].range, &[&from, &to, &n])?
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl KvWrite for PgKv<'_> {
    fn put(&self, t: Table, k: &[u8], v: &[u8]) -> Result<(), MetaError> {
        self.query(&SQL[t as usize].put, &[&k, &v])?;
        self.wrote(t, k, Some(v));
        Ok(())
    }

    fn remove(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let rows = self.query(&SQL[t as usize].remove, &[&k])?;
        self.wrote(t, k, None);
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn claim_range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, MetaError> {
        if to.is_empty() {
            return self.range(t, from, to, limit);
        }
        let rows = self.query(&SQL[t as usize].claim, &[&from, &to, &limit_param(limit)])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn next_seq(&self) -> Result<u64, MetaError> {
        let rows = self.query(NEXT_SEQ, &[])?;
        let n: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| backend("no sequence value"))?;
        u64::try_from(n).map_err(|_| backend("negative sequence value"))
    }
}

/// How an op uses its connection.
#[derive(Clone, PartialEq)]
enum Mode {
    /// One statement, no transaction.
    Single,
    /// Several reads of one snapshot.
    Snapshot,
    /// A write: SERIALIZABLE, retried.
    Write,
    /// A [`MetaOp`]: READ COMMITTED under its advisory locks.
    Op(OpLocks),
}

/// The advisory locks a [`MetaOp`] takes, as 64-bit hashes of its bucket's name
/// and its key (a collision only makes two ops wait for each other), and the rows it
/// reads first. Bucket locks are in the two-key space (class [`BUCKET_LOCK_CLASS`],
/// 32 bits of the hash), key locks in the one-key space, so the two never meet.
#[derive(Clone, PartialEq, Debug)]
struct OpLocks {
    bucket: i32,
    /// The bucket's lock exclusive (an op on the bucket itself); else shared.
    bucket_exclusive: bool,
    key: Option<i64>,
    /// For a PUT, a DELETE or a completion, the keys of its bucket's row and of
    /// the key's current object, read as soon as the locks are taken
    /// ([`OpLocks::read_ahead`]).
    object_rows: Option<(Vec<u8>, Vec<u8>)>,
}

const BUCKET_LOCK_CLASS: i32 = 0x5741_4c42; // "WALB"

/// FNV-1a: stable across builds and releases (front ends of different versions
/// must agree on the lock of a key).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no name holds, so ("ab", "c") and ("a", "bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

impl OpLocks {
    fn of(op: &MetaOp) -> Self {
        let bucket_only = |name: &str| OpLocks {
            bucket: fnv1a(&[name.as_bytes()]) as i32,
            bucket_exclusive: true,
            key: None,
            object_rows: None,
        };
        // `read_ahead`: the op reads the bucket row and the key's current object
        // (what placing or deleting an object does).
        let object = |bucket: &str, key: &str, read_ahead: bool| OpLocks {
            bucket: fnv1a(&[bucket.as_bytes()]) as i32,
            bucket_exclusive: false,
            key: Some(fnv1a(&[bucket.as_bytes(), key.as_bytes()]) as i64),
            object_rows: read_ahead
                .then(|| (bucket.as_bytes().to_vec(), meta_kv::object_key(bucket, key))),
        };
        match op {
            MetaOp::CreateBucket(b) => bucket_only(&b.name),
            MetaOp::DeleteBucket { name }
            | MetaOp::SetBucketAcl { name, .. }
            | MetaOp::SetBucketConfig { name, .. } => bucket_only(name),
            MetaOp::CreateUpload(u) => object(&u.bucket, &u.key, false),
            MetaOp::PutObject { bucket, key, .. }
            | MetaOp::DeleteObject { bucket, key, .. }
            | MetaOp::CompleteUpload { bucket, key, .. } => object(bucket, key, true),
            MetaOp::DeleteVersion { bucket, key, .. }
            | MetaOp::SetObjectLock { bucket, key, .. }
            | MetaOp::UpdateObject { bucket, key, .. }
            | MetaOp::PutPart { bucket, key, .. }
            | MetaOp::AbortUpload { bucket, key, .. } => object(bucket, key, false),
        }
    }

    /// Takes the locks (bucket first), in one prepared statement.
    fn take(&self, kv: &PgKv<'_>) -> Result<(), MetaError> {
        match (self.bucket_exclusive, self.key) {
            (true, _) => kv.query(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&BUCKET_LOCK_CLASS, &self.bucket],
            ),
            (false, None) => kv.query(
                "SELECT pg_advisory_xact_lock_shared($1, $2)",
                &[&BUCKET_LOCK_CLASS, &self.bucket],
            ),
            (false, Some(key)) => kv.query(
                "SELECT pg_advisory_xact_lock_shared($1, $2), pg_advisory_xact_lock($3)",
                &[&BUCKET_LOCK_CLASS, &self.bucket, &key],
            ),
        }
        .map(|_| ())
    }

    /// Reads [`OpLocks::object_rows`] in one prepared statement, once the locks
    /// are taken (a statement of its own: its snapshot is taken after the locks).
    fn read_ahead(&self, kv: &PgKv<'_>) -> Result<(), MetaError> {
        let Some((b, o)) = &self.object_rows else {
            return Ok(());
        };
        let rows = kv.query(READ_BUCKET_AND_OBJECT, &[b, o])?;
        let Some(row) = rows.first() else {
            return Ok(());
        };
        kv.read_ahead.borrow_mut().extend([
            (Table::Buckets, b.clone(), row.get(0)),
            (Table::Objects, o.clone(), row.get(1)),
        ]);
        Ok(())
    }
}

const READ_BUCKET_AND_OBJECT: &str = "SELECT (SELECT v FROM walrus_buckets WHERE k = $1), \
     (SELECT v FROM walrus_objects WHERE k = $2)";

/// A row read ahead: its table, key and value (`None`: no such row).
type ReadAhead = (Table, Vec<u8>, Option<Vec<u8>>);

pub struct PgMeta {
    pool: Pool,
}

impl PgMeta {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/dbname[?…]`, or
    /// libpq's `key=value` form) with `connections` connection threads and applies
    /// the migrations the database lacks. Fails (rather than waits) if the database
    /// cannot be reached within 10 s.
    pub async fn open(url: &str, connections: usize) -> Result<Self, MetaError> {
        let pool = Pool::open(url, "euca-walrus", connections, "walrus", MIGRATIONS).await?;
        Ok(Self { pool })
    }

    /// Up to `limit` rows of `t` from `from` on, in key order (for `euca migrate`).
    pub(crate) async fn table_rows(
        &self,
        t: Table,
        from: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<Row>, MetaError> {
        self.run(Mode::Single, move |kv| kv.range(t, &from, &[], limit))
            .await
    }

    /// Writes `rows` into `t` as they are, in one transaction (for `euca migrate`).
    pub(crate) async fn put_rows(&self, t: Table, rows: Vec<Row>) -> Result<(), MetaError> {
        self.run(Mode::Write, move |kv| {
            rows.iter().try_for_each(|(k, v)| kv.put(t, k, v))
        })
        .await
    }

    /// Makes the version sequence give out numbers above `n` (for `euca migrate`:
    /// the copied versions' numbers stay below every new one).
    pub(crate) async fn raise_version_seq(&self, n: u64) -> Result<(), MetaError> {
        let n = i64::try_from(n).map_err(|_| backend("version sequence out of range"))?;
        self.run(Mode::Write, move |kv| {
            kv.query(
                "SELECT setval('walrus_version_seq', GREATEST($1, (SELECT last_value FROM walrus_version_seq)))",
                &[&n],
            )?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on a connection; a write in a SERIALIZABLE transaction committed after
    /// `f` succeeds, re-run on a serialization failure.
    async fn run<T, F>(&self, mode: Mode, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: Fn(&PgKv<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        // A write runs to its end even if its request is dropped meanwhile: the
        // request frees the blobs it wrote only after the commit's answer.
        if matches!(mode, Mode::Write | Mode::Op(_)) {
            self.pool
                .run_to_end(move |conn| run_on(conn, mode, &f))
                .await
        } else {
            self.pool.run(move |conn| run_on(conn, mode, &f)).await
        }
    }
}

fn run_on<T>(
    conn: &mut Conn,
    mode: Mode,
    f: &impl Fn(&PgKv<'_>) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    let Conn {
        client, statements, ..
    } = conn;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let target = match &mode {
            Mode::Single => Target::Plain(client),
            Mode::Snapshot => Target::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(statement_error)?,
            ),
            Mode::Write => Target::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .map_err(statement_error)?,
            ),
            Mode::Op(_) => Target::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .map_err(statement_error)?,
            ),
        };
        let kv = PgKv {
            target: RefCell::new(target),
            statements: RefCell::new(statements),
            retry: Cell::new(false),
            read_ahead: RefCell::new(Vec::new()),
        };
        let r = match &mode {
            Mode::Op(locks) => locks
                .take(&kv)
                .and_then(|()| locks.read_ahead(&kv))
                .and_then(|()| f(&kv)),
            _ => f(&kv),
        };
        let retry = kv.retry.get();
        let r = match (r, kv.target.into_inner()) {
            (Ok(v), Target::Tx(t)) => match t.commit() {
                Ok(()) => Ok(v),
                Err(e) if is_retryable(&e) => Err((true, statement_error(e))),
                // No answer from the server (the connection broke): it may have
                // committed.
                Err(e) if e.code().is_none() && matches!(mode, Mode::Write | Mode::Op(_)) => Err((
                    false,
                    MetaError::CommitUnknown(format!("postgresql: {}", e.describe())),
                )),
                Err(e) => Err((false, statement_error(e))),
            },
            (Ok(v), Target::Plain(_)) => Ok(v),
            // Dropping the transaction rolls it back.
            (Err(e), _) => Err((retry, e)),
        };
        match r {
            Ok(v) => return Ok(v),
            Err((true, _)) if attempt < MAX_ATTEMPTS => euca_pg::backoff(attempt),
            Err((_, e)) => return Err(e),
        }
    }
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

    async fn logging_seen(&self) -> Result<bool, MetaError> {
        self.run(Mode::Single, |kv| meta_kv::logging_seen(kv)).await
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
        self.run(Mode::Op(OpLocks::of(&op)), move |kv| {
            meta_kv::apply_op(kv, op.clone())
        })
        .await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, MetaError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.pool
            .run(move |conn| {
                euca_pg::take_lease(
                    &mut conn.client,
                    "walrus_leases",
                    &name,
                    &holder,
                    std::time::Duration::from_millis(ttl_ms.max(0) as u64),
                )
                .map_err(statement_error)
            })
            .await
    }
}
