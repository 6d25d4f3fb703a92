//! Moving a single-node Walrus onto the scale-out engines (`euca migrate`): its
//! redb metadata into PostgreSQL, its blob directory into the store `blob_url`
//! names (`s3://…` or `file:///…`).
//!
//! The order keeps the target usable at every step: the blobs first (so no copied
//! row ever names a blob the target lacks), then the SSE master key (without it
//! the encrypted objects cannot be read), then the metadata tables, row for row
//! (the bytes redb holds), `buckets` last, and the version sequence raised past
//! every copied version. Every blob is copied under its own id, hashed (SHA-256)
//! as it streams out of the source, read back from the target and hashed again;
//! every table is read back from PostgreSQL and compared with the source the same
//! way. Any difference stops the migration with an error.
//!
//! The source Walrus must be stopped (redb refuses a second opener, and a running
//! one would go on changing it). The target database must hold no Walrus rows (a
//! migration never merges into a serving cloud); a migration cut short leaves rows
//! behind, so run it again into a new database (blobs already copied are copied
//! again, under the same names).
use crate::blob::{BlobError, BlobStore};
use crate::meta::{MetaError, MetaStore};
use crate::meta_kv::{self, Row, Table};
use crate::meta_pg::PgMeta;
use crate::meta_redb::RedbMeta;
use crate::server::StartError;
use crate::sse_keys::SseError;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Rows read and written per statement batch (one transaction each).
const PAGE: usize = 500;

/// What to move where.
pub struct Migration {
    /// The source Walrus's data directory (`meta.redb`, `blobs/`, `sse-master.key`).
    pub from: PathBuf,
    /// The target metadata database (`[walrus] meta_url`).
    pub to_meta: String,
    /// The target blob store (`[walrus] blob_url`).
    pub to_blobs: String,
    /// Blobs copied at once.
    pub parallel: usize,
}

/// What was moved.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows per table, in the order copied.
    pub tables: Vec<(&'static str, usize)>,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Whether the source had an SSE-S3 master key (now the target's).
    pub sse_key: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("blob {id}: {err}")]
    Blob { id: String, err: BlobError },
    #[error("blob {0}: the copy reads back different bytes from the target")]
    BlobMismatch(String),
    #[error("table {0}: the copy reads back different rows from the target")]
    TableMismatch(&'static str),
    #[error("{0}")]
    Sse(#[from] SseError),
}

/// Runs the migration; `progress` gets a line now and then. (Boxed: compiled here,
/// not in the binary that runs it; see `euca_service::serve_api`.)
pub fn migrate<'a>(
    m: &'a Migration,
    progress: &'a dyn Fn(&str),
) -> futures::future::LocalBoxFuture<'a, Result<Report, MigrateError>> {
    futures::FutureExt::boxed_local(migrating(m, progress))
}

async fn migrating(m: &Migration, progress: &dyn Fn(&str)) -> Result<Report, MigrateError> {
    let meta_path = m.from.join("meta.redb");
    if !meta_path.is_file() {
        return Err(MigrateError::Refused(format!(
            "{} has no meta.redb: name a Walrus data directory (<data>/walrus of `euca up --data <data>`)",
            m.from.display()
        )));
    }
    let src = RedbMeta::open(&meta_path, 64 << 20).map_err(|e| {
        MigrateError::Refused(format!(
            "opening {}: {e} (is a Walrus still running on it? stop it first)",
            meta_path.display()
        ))
    })?;
    let dst = PgMeta::open(&m.to_meta, 4).await?;
    for t in Table::ALL {
        if !dst.table_rows(t, Vec::new(), 1).await?.is_empty() {
            return Err(MigrateError::Refused(format!(
                "the target database already holds Walrus rows (table walrus_{}): migrate into a new, empty database",
                t.name()
            )));
        }
    }
    let src_blobs = BlobStore::local(m.from.clone()).map_err(StartError::from)?;
    let (dst_blobs, dst_keyring) = crate::server::open_blobs(Some(&m.to_blobs), &m.from)?;
    let mut report = Report::default();

    // 1. Blobs.
    let mut ids: Vec<String> = src.referenced_blobs().await?.into_iter().collect();
    ids.sort();
    progress(&format!("copying {} blobs", ids.len()));
    let mut copies = futures::stream::iter(ids.iter().cloned())
        .map(|id| copy_blob(&src_blobs, &dst_blobs, id))
        .buffer_unordered(m.parallel.max(1));
    let mut last = std::time::Instant::now();
    while let Some(n) = copies.try_next().await? {
        report.blobs += 1;
        report.blob_bytes += n;
        if last.elapsed().as_secs() >= 5 {
            last = std::time::Instant::now();
            progress(&format!(
                "  {} of {} blobs, {} MiB",
                report.blobs,
                ids.len(),
                report.blob_bytes >> 20
            ));
        }
    }
    drop(copies);

    // 2. The SSE-S3 master key.
    if let Some(key) = crate::sse_keys::read_master_file(&m.from)? {
        dst_keyring.adopt(&key).await?;
        report.sse_key = true;
    }

    // 3. Metadata, `buckets` last: until it is there, the target serves nothing.
    let order = Table::ALL
        .iter()
        .copied()
        .filter(|t| *t != Table::Buckets)
        .chain([Table::Buckets]);
    for t in order {
        let (n, want) = copy_table(&src, &dst, t).await?;
        if t == Table::Counters {
            let rows = src.table_rows(t, meta_kv::VERSION_SEQ.as_bytes(), 1)?;
            if let Some((_, v)) = rows
                .first()
                .filter(|(k, _)| k == meta_kv::VERSION_SEQ.as_bytes())
            {
                dst.raise_version_seq(meta_kv::u64_of(v)?).await?;
            }
        }
        let (n_back, got) = digest_target(&dst, t).await?;
        if (n_back, got) != (n, want) {
            return Err(MigrateError::TableMismatch(t.name()));
        }
        progress(&format!("  table {}: {n} rows", t.name()));
        report.tables.push((t.name(), n));
    }
    Ok(report)
}

/// Copies one blob under its id and checks the target's bytes; returns its size.
async fn copy_blob(src: &BlobStore, dst: &BlobStore, id: String) -> Result<u64, MigrateError> {
    let fail = |err| MigrateError::Blob {
        id: id.clone(),
        err,
    };
    let mut from = src.read(&id, None).await.map_err(fail)?;
    let mut w = dst.create_with_id(&id).await.map_err(fail)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = from.next().await {
        let r = match chunk {
            Ok(c) => {
                h.update(&c);
                n += c.len() as u64;
                w.write(c).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            w.abort().await;
            return Err(fail(e));
        }
    }
    w.finish().await.map_err(fail)?;
    let mut back = dst.read(&id, None).await.map_err(fail)?;
    let mut h2 = Sha256::new();
    while let Some(chunk) = back.next().await {
        h2.update(&chunk.map_err(fail)?);
    }
    if h2.finalize() != h.finalize() {
        return Err(MigrateError::BlobMismatch(id));
    }
    Ok(n)
}

/// Adds one row to a table's digest (lengths first: rows cannot run together).
fn digest_row(h: &mut Sha256, (k, v): &Row) {
    h.update((k.len() as u64).to_be_bytes());
    h.update(k);
    h.update((v.len() as u64).to_be_bytes());
    h.update(v);
}

/// The smallest key after the last of `rows`.
fn next_from(rows: &[Row]) -> Option<Vec<u8>> {
    rows.last().map(|(k, _)| {
        let mut k = k.clone();
        k.push(0);
        k
    })
}

/// Copies every row of `t`; returns how many and their digest.
async fn copy_table(
    src: &RedbMeta,
    dst: &PgMeta,
    t: Table,
) -> Result<(usize, Vec<u8>), MigrateError> {
    let (mut n, mut h, mut from) = (0, Sha256::new(), Vec::new());
    loop {
        let rows = src.table_rows(t, &from, PAGE)?;
        rows.iter().for_each(|r| digest_row(&mut h, r));
        n += rows.len();
        let done = rows.len() < PAGE;
        let next = next_from(&rows);
        if !rows.is_empty() {
            dst.put_rows(t, rows).await?;
        }
        match next {
            Some(k) if !done => from = k,
            _ => return Ok((n, h.finalize().to_vec())),
        }
    }
}

/// How many rows `t` holds in the target, and their digest.
async fn digest_target(dst: &PgMeta, t: Table) -> Result<(usize, Vec<u8>), MigrateError> {
    let (mut n, mut h, mut from) = (0, Sha256::new(), Vec::new());
    loop {
        let rows = dst.table_rows(t, from, PAGE).await?;
        rows.iter().for_each(|r| digest_row(&mut h, r));
        n += rows.len();
        match next_from(&rows) {
            Some(k) if rows.len() == PAGE => from = k,
            _ => return Ok((n, h.finalize().to_vec())),
        }
    }
}
