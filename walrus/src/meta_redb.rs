//! The embedded metadata store: redb, with group commit.
//!
//! Reads use their own read transactions, concurrently. Writes go to one writer thread
//! that drains every queued [`MetaOp`] into a single write transaction and commits it
//! with one fsync, then answers each caller: under concurrency, N small PUTs cost one
//! durable commit instead of N. The rules of each op are in [`crate::meta_kv`].
use crate::meta::*;
use crate::meta_kv::{self, u64_of, KvRead, KvWrite, Row, Table};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

// The tables as redb types them (the file format: their names and types stay).
const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
const COMPLETED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("completed");
const COMPLETED_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("completed_by_time");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const NULLS: TableDefinition<&[u8], u64> = TableDefinition::new("null_versions");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const MAX_BATCH: usize = 512;

macro_rules! backend_err {
    ($($t:ty),*) => {$(impl From<$t> for MetaError { fn from(e: $t) -> Self { MetaError::Backend(e.to_string()) } })*};
}
backend_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

// Conversions between the interface's bytes and the redb tables' key and value types.
fn bytes_in(b: &[u8]) -> Result<&[u8], MetaError> {
    Ok(b)
}
fn str_in(b: &[u8]) -> Result<&str, MetaError> {
    std::str::from_utf8(b).map_err(|_| MetaError::Backend("key is not UTF-8".into()))
}
fn u64_in(b: &[u8]) -> Result<u64, MetaError> {
    u64_of(b)
}
fn unit_in(_: &[u8]) -> Result<(), MetaError> {
    Ok(())
}
fn bytes_out(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}
fn str_out(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}
fn u64_out(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}
fn unit_out(_: ()) -> Vec<u8> {
    Vec::new()
}

/// Runs `$body` with `$def` bound to the redb table of `$t` and `$kin`/`$kout`,
/// `$vin`/`$vout` to its key and value conversions.
macro_rules! with_table {
    ($t:expr, |$def:ident, $kin:ident, $kout:ident, $vin:ident, $vout:ident| $body:block) => {{
        #[allow(unused_variables, clippy::unit_arg)]
        match $t {
            Table::Buckets => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (BUCKETS, str_in, str_out, bytes_in, bytes_out);
                $body
            }
            Table::Objects => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (OBJECTS, bytes_in, bytes_out, bytes_in, bytes_out);
                $body
            }
            Table::Uploads => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (UPLOADS, bytes_in, bytes_out, bytes_in, bytes_out);
                $body
            }
            Table::Parts => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (PARTS, bytes_in, bytes_out, bytes_in, bytes_out);
                $body
            }
            Table::Completed => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (COMPLETED, bytes_in, bytes_out, bytes_in, bytes_out);
                $body
            }
            Table::CompletedByTime => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (COMPLETED_BY_TIME, bytes_in, bytes_out, unit_in, unit_out);
                $body
            }
            Table::Versions => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (VERSIONS, bytes_in, bytes_out, bytes_in, bytes_out);
                $body
            }
            Table::Nulls => {
                let ($def, $kin, $kout, $vin, $vout) =
                    (NULLS, bytes_in, bytes_out, u64_in, u64_out);
                $body
            }
            Table::Counters => {
                let ($def, $kin, $kout, $vin, $vout) = (COUNTERS, str_in, str_out, u64_in, u64_out);
                $body
            }
        }
    }};
}

/// `from <= key < to` (`to` empty: unbounded) over a table, at most `limit` rows.
macro_rules! range_rows {
    ($table:expr, $from:expr, $to:expr, $limit:expr, $kin:ident, $kout:ident, $vout:ident) => {{
        let from = $kin($from)?;
        let iter = if $to.is_empty() {
            $table.range(from..)?
        } else {
            $table.range(from..$kin($to)?)?
        };
        let mut rows: Vec<Row> = Vec::new();
        for item in iter {
            if rows.len() >= $limit {
                break;
            }
            let (k, v) = item?;
            rows.push(($kout(k.value()), $vout(v.value())));
        }
        Ok(rows)
    }};
}

/// A read transaction.
struct RedbRead(ReadTransaction);

impl KvRead for RedbRead {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let table = self.0.open_table(def)?;
            let v = table.get(kin(k)?)?.map(|g| vout(g.value()));
            Ok(v)
        })
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let table = self.0.open_table(def)?;
            range_rows!(table, from, to, limit, kin, kout, vout)
        })
    }
}

/// The writer's transaction.
struct RedbWrite<'a>(&'a WriteTransaction);

impl KvRead for RedbWrite<'_> {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let table = self.0.open_table(def)?;
            let v = table.get(kin(k)?)?.map(|g| vout(g.value()));
            Ok(v)
        })
    }

    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let table = self.0.open_table(def)?;
            range_rows!(table, from, to, limit, kin, kout, vout)
        })
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&self, t: Table, k: &[u8], v: &[u8]) -> Result<(), MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let mut table = self.0.open_table(def)?;
            table.insert(kin(k)?, vin(v)?)?;
            Ok(())
        })
    }

    fn remove(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        with_table!(t, |def, kin, kout, vin, vout| {
            let mut table = self.0.open_table(def)?;
            let old = table.remove(kin(k)?)?.map(|g| vout(g.value()));
            Ok(old)
        })
    }

    fn next_seq(&self) -> Result<u64, MetaError> {
        let mut t = self.0.open_table(COUNTERS)?;
        let n = t.get(meta_kv::VERSION_SEQ)?.map(|v| v.value()).unwrap_or(0) + 1;
        t.insert(meta_kv::VERSION_SEQ, n)?;
        Ok(n)
    }
}

struct Job {
    op: MetaOp,
    reply: oneshot::Sender<Result<OpOutcome, MetaError>>,
}

pub struct RedbMeta {
    db: Arc<Database>,
    writer: mpsc::UnboundedSender<Job>,
}

impl RedbMeta {
    /// Opens (or creates) the database; `cache_bytes` bounds redb's page cache, the
    /// main part of the service's resident memory.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, MetaError> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(cache_bytes)
                .create(path)?,
        );
        let tx = db.begin_write()?;
        for t in Table::ALL {
            with_table!(t, |def, kin, kout, vin, vout| {
                tx.open_table(def)?;
            })
        }
        tx.commit()?;
        let (writer, rx) = mpsc::unbounded_channel();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("walrus-meta-writer".into())
            .spawn(move || writer_loop(wdb, rx))
            .map_err(|e| MetaError::Backend(e.to_string()))?;
        Ok(Self { db, writer })
    }

    fn read(&self) -> Result<RedbRead, MetaError> {
        Ok(RedbRead(self.db.begin_read()?))
    }

    /// Up to `limit` rows of `t` from `from` on, in key order (for `euca migrate`).
    pub(crate) fn table_rows(
        &self,
        t: Table,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, MetaError> {
        self.read()?.range(t, from, &[], limit)
    }
}

fn writer_loop(db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let tx = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                for j in jobs {
                    let _ = j.reply.send(Err(MetaError::Backend(e.to_string())));
                }
                continue;
            }
        };
        let mut results = Vec::with_capacity(jobs.len());
        let mut fatal = None;
        for j in &jobs {
            match meta_kv::apply_op(&RedbWrite(&tx), j.op.clone()) {
                Err(MetaError::Backend(e)) => {
                    fatal = Some(e);
                    break;
                }
                r => results.push(r),
            }
        }
        let commit = match fatal {
            Some(e) => {
                let _ = tx.abort();
                Err(e)
            }
            None => tx.commit().map_err(|e| e.to_string()),
        };
        match commit {
            Ok(()) => {
                for (j, r) in jobs.into_iter().zip(results) {
                    let _ = j.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "metadata commit failed");
                for j in jobs {
                    let _ = j.reply.send(Err(MetaError::Backend(e.clone())));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for RedbMeta {
    async fn bucket(&self, name: &str) -> Result<Option<BucketMeta>, MetaError> {
        meta_kv::bucket(&self.read()?, name)
    }

    async fn buckets(&self) -> Result<Vec<BucketMeta>, MetaError> {
        meta_kv::buckets(&self.read()?)
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, MetaError> {
        meta_kv::object(&self.read()?, bucket, key)
    }

    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Version>, MetaError> {
        meta_kv::object_version(&self.read()?, bucket, key, version_id)
    }

    async fn scan_versions(
        &self,
        bucket: &str,
        after: Option<(&str, Option<&str>)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<VersionEntry>, MetaError> {
        meta_kv::scan_versions(&self.read()?, bucket, after, prefix, limit)
    }

    async fn scan_objects(
        &self,
        bucket: &str,
        start: &ScanStart,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ObjectEntry>, MetaError> {
        meta_kv::scan_objects(&self.read()?, bucket, start, prefix, limit)
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadMeta>, MetaError> {
        meta_kv::upload(&self.read()?, bucket, key, upload_id)
    }

    async fn scan_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UploadMeta>, MetaError> {
        meta_kv::scan_uploads(&self.read()?, bucket, after, prefix, limit)
    }

    async fn parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartMeta>, MetaError> {
        meta_kv::parts(&self.read()?, upload_id, after, limit)
    }

    async fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<CompletedUpload>, MetaError> {
        meta_kv::completed_upload(&self.read()?, bucket, key, upload_id)
    }

    async fn referenced_blobs(&self) -> Result<HashSet<String>, MetaError> {
        meta_kv::referenced_blobs(&self.read()?)
    }

    async fn logging_seen(&self) -> Result<bool, MetaError> {
        meta_kv::logging_seen(&self.read()?)
    }

    async fn apply(&self, op: MetaOp) -> Result<OpOutcome, MetaError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { op, reply })
            .map_err(|_| MetaError::Backend("metadata writer stopped".into()))?;
        rx.await
            .map_err(|_| MetaError::Backend("metadata writer stopped".into()))?
    }
}
