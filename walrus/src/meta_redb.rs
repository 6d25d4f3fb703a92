//! The embedded metadata store: redb, with group commit.
//!
//! Reads use their own read transactions, concurrently. Writes go to one writer thread
//! that drains every queued [`MetaOp`] into a single write transaction and commits it
//! with one fsync, then answers each caller: under concurrency, N small PUTs cost one
//! durable commit instead of N.
use crate::meta::*;
use rand::RngCore;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
/// `bucket\0key\0uploadId` → [`CompletedUpload`].
const COMPLETED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("completed");
/// `completed ms (be)` + `bucket\0key\0uploadId` → (), to expire [`COMPLETED`] in order.
const COMPLETED_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("completed_by_time");
/// [`version_key`] → [`Version`]: every version of the keys written since their
/// bucket had versioning. [`OBJECTS`] keeps the current object as well (listing and
/// GET stay one lookup), with its `version_id` set; an object whose `version_id` is
/// `None` was written before and is the key's only version (its `null` one).
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
/// `bucket\0key` → the sequence number of the key's `null` version in [`VERSIONS`].
const NULLS: TableDefinition<&[u8], u64> = TableDefinition::new("null_versions");
/// Named counters: [`VERSION_SEQ`].
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The last version sequence number given out (version ids carry it).
const VERSION_SEQ: &str = "version_seq";
/// Expired completion records dropped per completion (keeps each commit small).
const EXPIRE_PER_OP: usize = 64;

/// Records are this byte, then postcard. Older formats are still read: format 1
/// (before multipart checksum types), 2 (before bucket configs, tags and versions) and
/// 3 (before server-side encryption).
const FORMAT: u8 = 4;
const MAX_BATCH: usize = 512;

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
    let mut out = vec![FORMAT];
    out.extend(postcard::to_allocvec(v).map_err(|e| MetaError::Backend(e.to_string()))?);
    Ok(out)
}

/// Postcard (its wire format is stable since 1.0) writes a struct as its fields in
/// order, and an empty `Vec`, map or `None` as one 0 byte. Each format only appended
/// such fields to the records it changed, so an older record is today's layout minus
/// its last fields: with one 0 byte per missing field it decodes as today's type.
fn dec<T: Record>(b: &[u8]) -> Result<T, MetaError> {
    let r = match b.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest),
        Some((&f, rest)) if (1..FORMAT).contains(&f) => {
            let missing: usize = T::APPENDED
                .iter()
                .filter(|(g, _)| *g > f)
                .map(|(_, n)| n)
                .sum();
            let mut padded = Vec::with_capacity(rest.len() + missing);
            padded.extend_from_slice(rest);
            padded.resize(rest.len() + missing, 0);
            postcard::from_bytes(&padded).map(|mut v: T| {
                if f == 1 {
                    v.upgrade_from_format_1();
                }
                v
            })
        }
        _ => return Err(MetaError::Backend("unknown record format".into())),
    };
    r.map_err(|e| MetaError::Backend(format!("corrupt record: {e}")))
}

/// A stored record type.
trait Record: Serialize + DeserializeOwned {
    /// (format, number of fields it appended), for every format after the first that
    /// changed this type. An appended field must encode its default as one 0 byte.
    const APPENDED: &'static [(u8, usize)] = &[];
    /// Fills what format 1 did not record, from what it did.
    fn upgrade_from_format_1(&mut self) {}
}
impl Record for PartMeta {}
impl Record for CompletedUpload {}
/// New in format 3. An `Object` version ends with its [`ObjectMeta`], so fields
/// appended to that later are padded the same way (a `DeleteMarker` is complete
/// without them; postcard leaves the padding unread).
impl Record for Version {
    /// 4: the object's `sse`.
    const APPENDED: &'static [(u8, usize)] = &[(4, 1)];
}

impl Record for BucketMeta {
    /// 3: `configs`.
    const APPENDED: &'static [(u8, usize)] = &[(3, 1)];
}

impl Record for ObjectMeta {
    /// 2: `checksum_type`, `part_checksums`; 3: `tags`, `version_id`, `retention`,
    /// `legal_hold`; 4: `sse`.
    const APPENDED: &'static [(u8, usize)] = &[(2, 2), (3, 4), (4, 1)];
    /// Format 1 had composite multipart checksums (`…-N`) and full-object PUT ones.
    fn upgrade_from_format_1(&mut self) {
        self.checksum_type = self.checksums.first().map(|(_, v)| {
            let composite = !self.part_sizes.is_empty()
                && v.rsplit_once('-')
                    .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
            if composite {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            }
            .to_string()
        });
    }
}

impl Record for UploadMeta {
    /// 2: `checksum_type`; 3: `tags`, `retention`, `legal_hold`; 4: `sse`.
    const APPENDED: &'static [(u8, usize)] = &[(2, 1), (3, 3), (4, 1)];
    /// Format 1 uploads with an algorithm were all composite.
    fn upgrade_from_format_1(&mut self) {
        self.checksum_type = self
            .checksum_algorithm
            .as_ref()
            .map(|_| "COMPOSITE".to_string());
    }
}

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

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `bucket\0`, then the key with each 0 byte written as 0 0xFF (keys may hold 0): the
/// key order is kept, and no key's part is a prefix of another's.
fn escaped_key_start(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + key.len() + 12);
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    for &b in key.as_bytes() {
        k.push(b);
        if b == 0 {
            k.push(0xFF);
        }
    }
    k
}

/// Where a key's versions start in [`VERSIONS`]: [`escaped_key_start`], then 0 1.
fn versions_of(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = escaped_key_start(bucket, key);
    k.extend_from_slice(&[0, 1]);
    k
}

/// A version's key: [`versions_of`], then the inverted sequence number (newest first).
fn version_key(bucket: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = versions_of(bucket, key);
    k.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
    k
}

/// The object key of a [`version_key`] whose bucket part is `base_len` bytes long.
fn key_of_version_key(k: &[u8], base_len: usize) -> Result<String, MetaError> {
    let corrupt = || MetaError::Backend("corrupt version key".into());
    let mut out = Vec::new();
    let mut it = k.get(base_len..).ok_or_else(corrupt)?.iter();
    loop {
        match it.next().ok_or_else(corrupt)? {
            0 => match it.next() {
                Some(0xFF) => out.push(0),
                Some(1) => break,
                _ => return Err(corrupt()),
            },
            &b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| corrupt())
}

/// A fresh version id: the sequence number (16 hex digits, so the id finds its
/// record) and 64 random bits (so an id is never given out twice, even by another
/// database the bucket is later moved to).
fn new_version_id(seq: u64) -> String {
    format!("{seq:016x}{:016x}", rand::rng().next_u64())
}

/// The sequence number in a version id made by [`new_version_id`].
fn seq_of_version_id(id: &str) -> Option<u64> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&id[..16], 16).ok()
}

fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

fn part_key(upload_id: &str, n: u32) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
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
        tx.open_table(BUCKETS)?;
        tx.open_table(OBJECTS)?;
        tx.open_table(UPLOADS)?;
        tx.open_table(PARTS)?;
        tx.open_table(COMPLETED)?;
        tx.open_table(COMPLETED_BY_TIME)?;
        tx.open_table(VERSIONS)?;
        tx.open_table(NULLS)?;
        tx.open_table(COUNTERS)?;
        tx.commit()?;
        let (writer, rx) = mpsc::unbounded_channel();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("walrus-meta-writer".into())
            .spawn(move || writer_loop(wdb, rx))
            .map_err(|e| MetaError::Backend(e.to_string()))?;
        Ok(Self { db, writer })
    }

    fn read(&self) -> Result<ReadTransaction, MetaError> {
        Ok(self.db.begin_read()?)
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
            match apply_op(&tx, j.op.clone()) {
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

fn get<T: Record, K: redb::Key + 'static>(
    t: &impl ReadableTable<K, &'static [u8]>,
    k: K::SelfType<'_>,
) -> Result<Option<T>, MetaError> {
    match t.get(k)? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

fn bucket_has_content(tx: &WriteTransaction, bucket: &str) -> Result<bool, MetaError> {
    let mut start = bucket.as_bytes().to_vec();
    start.push(0);
    let mut end = bucket.as_bytes().to_vec();
    end.push(1);
    let objects = tx.open_table(OBJECTS)?;
    if objects
        .range(start.as_slice()..end.as_slice())?
        .next()
        .is_some()
    {
        return Ok(true);
    }
    for table in [UPLOADS, VERSIONS] {
        if tx
            .open_table(table)?
            .range(start.as_slice()..end.as_slice())?
            .next()
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_parts(tx: &WriteTransaction, upload_id: &str) -> Result<Vec<PartMeta>, MetaError> {
    let mut parts = tx.open_table(PARTS)?;
    let start = part_key(upload_id, 0);
    let end = part_key(upload_id, u32::MAX);
    let mut out = Vec::new();
    let mut keys = Vec::new();
    for item in parts.range(start.as_slice()..=end.as_slice())? {
        let (k, v) = item?;
        keys.push(k.value().to_vec());
        out.push(dec::<PartMeta>(v.value())?);
    }
    for k in keys {
        parts.remove(k.as_slice())?;
    }
    Ok(out)
}

fn time_key(ms: i64, uk: &[u8]) -> Vec<u8> {
    let mut k = (ms.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(uk);
    k
}

/// Remembers a completion and forgets up to [`EXPIRE_PER_OP`] expired ones.
fn record_completion(
    tx: &WriteTransaction,
    uk: &[u8],
    c: CompletedUpload,
) -> Result<(), MetaError> {
    let mut by_time = tx.open_table(COMPLETED_BY_TIME)?;
    let mut done = tx.open_table(COMPLETED)?;
    let cutoff = time_key(c.completed - COMPLETED_TTL_MS, &[]);
    let mut expired = Vec::new();
    for item in by_time.range(..cutoff.as_slice())?.take(EXPIRE_PER_OP) {
        expired.push(item?.0.value().to_vec());
    }
    for k in expired {
        by_time.remove(k.as_slice())?;
        done.remove(&k[8..])?;
    }
    by_time.insert(time_key(c.completed, uk).as_slice(), ())?;
    done.insert(uk, enc(&c)?.as_slice())?;
    Ok(())
}

fn versioning(tx: &WriteTransaction, bucket: &str) -> Result<Versioning, MetaError> {
    let b: BucketMeta = get(&tx.open_table(BUCKETS)?, bucket)?.ok_or(MetaError::NoSuchBucket)?;
    Ok(b.versioning())
}

fn next_version_seq(tx: &WriteTransaction) -> Result<u64, MetaError> {
    let mut t = tx.open_table(COUNTERS)?;
    let n = t.get(VERSION_SEQ)?.map(|v| v.value()).unwrap_or(0) + 1;
    t.insert(VERSION_SEQ, n)?;
    Ok(n)
}

/// Where a version id's record is: its sequence number (`null`: from [`NULLS`]).
fn version_seq(
    nulls: &impl ReadableTable<&'static [u8], u64>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<u64>, MetaError> {
    if version_id == NULL_VERSION {
        Ok(nulls
            .get(object_key(bucket, key).as_slice())?
            .map(|v| v.value()))
    } else {
        Ok(seq_of_version_id(version_id))
    }
}

/// Before a versioned write to a key whose object predates versioning: that object
/// becomes the key's `null` version in [`VERSIONS`].
fn adopt_unversioned(tx: &WriteTransaction, bucket: &str, key: &str) -> Result<(), MetaError> {
    let k = object_key(bucket, key);
    let mut objects = tx.open_table(OBJECTS)?;
    let Some(mut o) = get::<ObjectMeta, &[u8]>(&objects, &k)? else {
        return Ok(());
    };
    if o.version_id.is_some() {
        return Ok(());
    }
    let seq = next_version_seq(tx)?;
    o.version_id = Some(NULL_VERSION.into());
    objects.insert(k.as_slice(), enc(&o)?.as_slice())?;
    tx.open_table(VERSIONS)?.insert(
        version_key(bucket, key, seq).as_slice(),
        enc(&Version::Object(Box::new(o)))?.as_slice(),
    )?;
    tx.open_table(NULLS)?.insert(k.as_slice(), seq)?;
    Ok(())
}

/// Removes the key's `null` version from [`VERSIONS`] (not from [`OBJECTS`]).
fn remove_null_version(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
) -> Result<Option<Version>, MetaError> {
    let Some(seq) = tx
        .open_table(NULLS)?
        .remove(object_key(bucket, key).as_slice())?
        .map(|v| v.value())
    else {
        return Ok(None);
    };
    let removed = tx
        .open_table(VERSIONS)?
        .remove(version_key(bucket, key, seq).as_slice())?
        .map(|v| dec::<Version>(v.value()))
        .transpose()?;
    Ok(removed)
}

/// Adds a new latest version (an object or a delete marker, built from the version id
/// it gets) to a bucket with versioning; suspended, it replaces the `null` version.
fn add_version(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    state: Versioning,
    out: &mut OpOutcome,
    make: impl FnOnce(String) -> Version,
) -> Result<Version, MetaError> {
    adopt_unversioned(tx, bucket, key)?;
    if state == Versioning::Suspended {
        if let Some(Version::Object(o)) = remove_null_version(tx, bucket, key)? {
            // (A bucket with object lock cannot be suspended; this is the backstop.)
            if o.locked(now_millis(), false) {
                return Err(MetaError::ObjectLocked);
            }
            out.freed_blobs.extend(o.data.blobs().iter().cloned());
        }
    }
    let seq = next_version_seq(tx)?;
    let id = match state {
        Versioning::Suspended => NULL_VERSION.to_string(),
        _ => new_version_id(seq),
    };
    let v = make(id.clone());
    tx.open_table(VERSIONS)?.insert(
        version_key(bucket, key, seq).as_slice(),
        enc(&v)?.as_slice(),
    )?;
    if state == Versioning::Suspended {
        tx.open_table(NULLS)?
            .insert(object_key(bucket, key).as_slice(), seq)?;
    }
    out.version_id = Some(id);
    Ok(v)
}

/// Makes `meta` the key's current object: replacing the old one (whose blobs are
/// freed) in a bucket without versioning, as a new version otherwise.
fn place_object(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    mut meta: ObjectMeta,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let state = versioning(tx, bucket)?;
    let k = object_key(bucket, key);
    if state == Versioning::Unversioned {
        meta.version_id = None;
        let mut t = tx.open_table(OBJECTS)?;
        if let Some(old) = get::<ObjectMeta, &[u8]>(&t, &k)? {
            out.freed_blobs.extend(old.data.blobs().iter().cloned());
            out.existed = true;
        }
        t.insert(k.as_slice(), enc(&meta)?.as_slice())?;
        return Ok(());
    }
    out.existed = tx.open_table(OBJECTS)?.get(k.as_slice())?.is_some();
    let v = add_version(tx, bucket, key, state, out, |id| {
        meta.version_id = Some(id);
        Version::Object(Box::new(meta))
    })?;
    if let Version::Object(meta) = v {
        tx.open_table(OBJECTS)?
            .insert(k.as_slice(), enc(&meta)?.as_slice())?;
    }
    Ok(())
}

/// DeleteObject: removes the object, or (with versioning) adds a delete marker.
fn delete_object(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    by: crate::acl::Owner,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let state = versioning(tx, bucket)?;
    let k = object_key(bucket, key);
    if state == Versioning::Unversioned {
        let removed = tx
            .open_table(OBJECTS)?
            .remove(k.as_slice())?
            .map(|v| dec::<ObjectMeta>(v.value()))
            .transpose()?;
        if let Some(old) = removed {
            out.freed_blobs = old.data.blobs().to_vec();
            out.existed = true;
        }
        return Ok(());
    }
    adopt_unversioned(tx, bucket, key)?;
    // The current object stays as a version (suspended: unless it is the null one).
    out.existed = tx.open_table(OBJECTS)?.remove(k.as_slice())?.is_some();
    add_version(tx, bucket, key, state, out, |version_id| {
        Version::DeleteMarker(DeleteMarker {
            version_id,
            owner: by,
            last_modified: now_millis(),
        })
    })?;
    out.delete_marker = true;
    Ok(())
}

/// The first (newest) version of a key, with its [`VERSIONS`] key.
fn latest_version(
    versions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, Version)>, MetaError> {
    let start = versions_of(bucket, key);
    let mut end = start.clone();
    end.extend_from_slice(&[0xFF; 8]);
    match versions.range(start.as_slice()..=end.as_slice())?.next() {
        Some(item) => {
            let (k, v) = item?;
            Ok(Some((k.value().to_vec(), dec(v.value())?)))
        }
        None => Ok(None),
    }
}

/// DeleteVersion: removes one version for good; if it was the latest, the next
/// newest becomes current (an object) or the key has no current object (a marker).
fn delete_version(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    version_id: &str,
    bypass_governance: bool,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let now = now_millis();
    if tx.open_table(BUCKETS)?.get(bucket)?.is_none() {
        return Err(MetaError::NoSuchBucket);
    }
    let k = object_key(bucket, key);
    if version_id == NULL_VERSION {
        let mut objects = tx.open_table(OBJECTS)?;
        if let Some(o) = get::<ObjectMeta, &[u8]>(&objects, &k)? {
            if o.version_id.is_none() {
                if o.locked(now, bypass_governance) {
                    return Err(MetaError::ObjectLocked);
                }
                objects.remove(k.as_slice())?;
                out.freed_blobs = o.data.blobs().to_vec();
                out.existed = true;
                out.version_id = Some(NULL_VERSION.into());
                return Ok(());
            }
        }
    }
    let Some(seq) = version_seq(&tx.open_table(NULLS)?, bucket, key, version_id)? else {
        return Ok(());
    };
    let vk = version_key(bucket, key, seq);
    let mut versions = tx.open_table(VERSIONS)?;
    match get::<Version, &[u8]>(&versions, &vk)? {
        Some(Version::Object(o))
            if o.version() == version_id && o.locked(now, bypass_governance) =>
        {
            return Err(MetaError::ObjectLocked);
        }
        Some(v) if v.version_id() == version_id => {
            let was_latest =
                latest_version(&versions, bucket, key)?.map(|(k, _)| k) == Some(vk.clone());
            versions.remove(vk.as_slice())?;
            match v {
                Version::Object(o) => out.freed_blobs = o.data.blobs().to_vec(),
                Version::DeleteMarker(_) => out.delete_marker = true,
            }
            out.existed = true;
            out.version_id = Some(version_id.to_string());
            let next = if was_latest {
                Some(latest_version(&versions, bucket, key)?)
            } else {
                None
            };
            drop(versions);
            if version_id == NULL_VERSION {
                tx.open_table(NULLS)?.remove(k.as_slice())?;
            }
            let mut objects = tx.open_table(OBJECTS)?;
            match next {
                Some(Some((_, Version::Object(o)))) => {
                    objects.insert(k.as_slice(), enc(&o)?.as_slice())?;
                }
                Some(_) => {
                    objects.remove(k.as_slice())?;
                }
                None => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// SetObjectLock: a version's retention and legal hold, with the rules of
/// [`MetaOp::SetObjectLock`]; the current object's copy follows.
#[allow(clippy::too_many_arguments)]
fn set_object_lock(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    retention: Option<Option<Retention>>,
    legal_hold: Option<bool>,
    bypass_governance: bool,
) -> Result<(), MetaError> {
    if tx.open_table(BUCKETS)?.get(bucket)?.is_none() {
        return Err(MetaError::NoSuchBucket);
    }
    adopt_unversioned(tx, bucket, key)?;
    let k = object_key(bucket, key);
    let current: Option<ObjectMeta> = get(&tx.open_table(OBJECTS)?, k.as_slice())?;
    let id = match version_id {
        Some(v) => v.to_string(),
        None => current
            .as_ref()
            .and_then(|o| o.version_id.clone())
            .ok_or(MetaError::NoSuchKey)?,
    };
    let seq = version_seq(&tx.open_table(NULLS)?, bucket, key, &id)?.ok_or(MetaError::NoSuchKey)?;
    let vk = version_key(bucket, key, seq);
    let mut versions = tx.open_table(VERSIONS)?;
    let mut o = match get::<Version, &[u8]>(&versions, &vk)? {
        Some(Version::Object(o)) if o.version() == id => *o,
        _ => return Err(MetaError::NoSuchKey),
    };
    if let Some(new) = retention {
        if let Some(old) = o.retention.as_ref().filter(|r| r.until > now_millis()) {
            let weaker = match &new {
                None => true,
                Some(n) => {
                    n.until < old.until
                        || (old.mode == RetentionMode::Compliance && n.mode != old.mode)
                }
            };
            if weaker && (old.mode == RetentionMode::Compliance || !bypass_governance) {
                return Err(MetaError::RetentionLocked);
            }
        }
        o.retention = new;
    }
    if let Some(h) = legal_hold {
        o.legal_hold = h;
    }
    versions.insert(
        vk.as_slice(),
        enc(&Version::Object(Box::new(o.clone())))?.as_slice(),
    )?;
    drop(versions);
    if current.is_some_and(|c| c.version_id.as_deref() == Some(id.as_str())) {
        tx.open_table(OBJECTS)?
            .insert(k.as_slice(), enc(&o)?.as_slice())?;
    }
    Ok(())
}

/// After the current object's ACL or tags changed: its copy in [`VERSIONS`] too.
fn mirror_current_version(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    o: &ObjectMeta,
) -> Result<(), MetaError> {
    let Some(id) = o.version_id.as_deref() else {
        return Ok(());
    };
    if let Some(seq) = version_seq(&tx.open_table(NULLS)?, bucket, key, id)? {
        tx.open_table(VERSIONS)?.insert(
            version_key(bucket, key, seq).as_slice(),
            enc(&Version::Object(Box::new(o.clone())))?.as_slice(),
        )?;
    }
    Ok(())
}

/// Changes one version of an object (its ACL or tags): the current object (`None`,
/// or the id of the current one) with its copy in [`VERSIONS`], or an older version
/// in [`VERSIONS`] alone. A missing version, or a delete marker, is `NoSuchKey`.
fn update_object_version(
    tx: &WriteTransaction,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    unchanged: Option<&ObjectStamp>,
    change: impl FnOnce(&mut ObjectMeta),
) -> Result<(), MetaError> {
    let same = |o: &ObjectMeta| unchanged.is_none_or(|s| *s == ObjectStamp::of(o));
    let k = object_key(bucket, key);
    let current: Option<ObjectMeta> = get(&tx.open_table(OBJECTS)?, k.as_slice())?;
    match (current, version_id) {
        (Some(mut o), v) if v.is_none_or(|v| o.version() == v) => {
            if !same(&o) {
                return Err(MetaError::Changed);
            }
            change(&mut o);
            tx.open_table(OBJECTS)?
                .insert(k.as_slice(), enc(&o)?.as_slice())?;
            mirror_current_version(tx, bucket, key, &o)
        }
        (_, None) => Err(MetaError::NoSuchKey),
        (_, Some(id)) => {
            let seq = version_seq(&tx.open_table(NULLS)?, bucket, key, id)?
                .ok_or(MetaError::NoSuchKey)?;
            let vk = version_key(bucket, key, seq);
            let mut versions = tx.open_table(VERSIONS)?;
            let mut o = match get::<Version, &[u8]>(&versions, &vk)? {
                Some(Version::Object(o)) if o.version() == id => *o,
                _ => return Err(MetaError::NoSuchKey),
            };
            if !same(&o) {
                return Err(MetaError::Changed);
            }
            change(&mut o);
            versions.insert(
                vk.as_slice(),
                enc(&Version::Object(Box::new(o)))?.as_slice(),
            )?;
            Ok(())
        }
    }
}

fn apply_op(tx: &WriteTransaction, op: MetaOp) -> Result<OpOutcome, MetaError> {
    let mut out = OpOutcome::default();
    match op {
        MetaOp::CreateBucket(b) => {
            let mut t = tx.open_table(BUCKETS)?;
            if let Some(existing) = get::<BucketMeta, &str>(&t, &b.name)? {
                return Err(MetaError::BucketExists {
                    owner: existing.owner.id,
                });
            }
            t.insert(b.name.as_str(), enc(&b)?.as_slice())?;
        }
        MetaOp::DeleteBucket { name } => {
            {
                let t = tx.open_table(BUCKETS)?;
                if t.get(name.as_str())?.is_none() {
                    return Err(MetaError::NoSuchBucket);
                }
            }
            if bucket_has_content(tx, &name)? {
                return Err(MetaError::BucketNotEmpty);
            }
            tx.open_table(BUCKETS)?.remove(name.as_str())?;
        }
        MetaOp::SetBucketAcl { name, acl } => {
            let mut t = tx.open_table(BUCKETS)?;
            let mut b: BucketMeta = get(&t, name.as_str())?.ok_or(MetaError::NoSuchBucket)?;
            b.acl = acl;
            t.insert(name.as_str(), enc(&b)?.as_slice())?;
        }
        MetaOp::SetBucketConfig { name, config, doc } => {
            let mut t = tx.open_table(BUCKETS)?;
            let mut b: BucketMeta = get(&t, name.as_str())?.ok_or(MetaError::NoSuchBucket)?;
            match doc {
                Some(d) => b.configs.insert(config, d),
                None => b.configs.remove(&config),
            };
            t.insert(name.as_str(), enc(&b)?.as_slice())?;
        }
        MetaOp::PutObject {
            bucket,
            key,
            meta,
            cond,
        } => {
            if tx.open_table(BUCKETS)?.get(bucket.as_str())?.is_none() {
                return Err(MetaError::NoSuchBucket);
            }
            if let Some(c) = cond {
                let t = tx.open_table(OBJECTS)?;
                let current = get::<ObjectMeta, &[u8]>(&t, &object_key(&bucket, &key))?;
                if !c.holds(current.as_ref()) {
                    return Err(MetaError::PreconditionFailed);
                }
            }
            place_object(tx, &bucket, &key, meta, &mut out)?;
        }
        MetaOp::DeleteObject { bucket, key, by } => {
            delete_object(tx, &bucket, &key, by, &mut out)?;
        }
        MetaOp::DeleteVersion {
            bucket,
            key,
            version_id,
            bypass_governance,
        } => {
            delete_version(tx, &bucket, &key, &version_id, bypass_governance, &mut out)?;
        }
        MetaOp::SetObjectLock {
            bucket,
            key,
            version_id,
            retention,
            legal_hold,
            bypass_governance,
        } => {
            set_object_lock(
                tx,
                &bucket,
                &key,
                version_id.as_deref(),
                retention,
                legal_hold,
                bypass_governance,
            )?;
        }
        MetaOp::UpdateObject {
            bucket,
            key,
            version_id,
            unchanged,
            change,
        } => {
            update_object_version(
                tx,
                &bucket,
                &key,
                version_id.as_deref(),
                unchanged.as_ref(),
                |o| change.apply(o),
            )?;
        }
        MetaOp::CreateUpload(u) => {
            if tx.open_table(BUCKETS)?.get(u.bucket.as_str())?.is_none() {
                return Err(MetaError::NoSuchBucket);
            }
            let mut t = tx.open_table(UPLOADS)?;
            t.insert(
                upload_key(&u.bucket, &u.key, &u.upload_id).as_slice(),
                enc(&u)?.as_slice(),
            )?;
        }
        MetaOp::PutPart {
            bucket,
            key,
            upload_id,
            part,
        } => {
            if tx
                .open_table(UPLOADS)?
                .get(upload_key(&bucket, &key, &upload_id).as_slice())?
                .is_none()
            {
                // The upload was completed or aborted meanwhile: the new blob is unused.
                return Err(MetaError::NoSuchUpload);
            }
            let mut t = tx.open_table(PARTS)?;
            let k = part_key(&upload_id, part.number);
            if let Some(old) = get::<PartMeta, &[u8]>(&t, &k)? {
                out.freed_blobs.push(old.blob);
            }
            t.insert(k.as_slice(), enc(&part)?.as_slice())?;
        }
        MetaOp::CompleteUpload {
            bucket,
            key,
            upload_id,
            parts,
            meta,
            cond,
        } => {
            let uk = upload_key(&bucket, &key, &upload_id);
            if tx.open_table(UPLOADS)?.get(uk.as_slice())?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            if let Some(c) = cond {
                let t = tx.open_table(OBJECTS)?;
                let current = get::<ObjectMeta, &[u8]>(&t, &object_key(&bucket, &key))?;
                if !c.holds(current.as_ref()) {
                    return Err(MetaError::PreconditionFailed);
                }
            }
            let mut etags = Vec::with_capacity(parts.len());
            {
                let t = tx.open_table(PARTS)?;
                for (n, blob_id) in &parts {
                    match get::<PartMeta, &[u8]>(&t, &part_key(&upload_id, *n))? {
                        Some(p) if &p.blob.id == blob_id => etags.push((*n, p.etag)),
                        _ => return Err(MetaError::PartChanged),
                    }
                }
            }
            record_completion(
                tx,
                &uk,
                CompletedUpload {
                    parts_digest: parts_digest(etags.iter().map(|(n, e)| (*n, e.as_str()))),
                    etag: meta.etag.clone(),
                    owner_id: meta.owner.id.clone(),
                    checksums: meta.checksums.clone(),
                    checksum_type: meta.checksum_type.clone(),
                    completed: meta.last_modified,
                },
            )?;
            let used: HashSet<&str> = parts.iter().map(|(_, b)| b.as_str()).collect();
            for p in remove_parts(tx, &upload_id)? {
                if !used.contains(p.blob.id.as_str()) {
                    out.freed_blobs.push(p.blob);
                }
            }
            tx.open_table(UPLOADS)?.remove(uk.as_slice())?;
            place_object(tx, &bucket, &key, meta, &mut out)?;
        }
        MetaOp::AbortUpload {
            bucket,
            key,
            upload_id,
        } => {
            let uk = upload_key(&bucket, &key, &upload_id);
            if tx.open_table(UPLOADS)?.remove(uk.as_slice())?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            out.freed_blobs = remove_parts(tx, &upload_id)?
                .into_iter()
                .map(|p| p.blob)
                .collect();
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl MetaStore for RedbMeta {
    fn bucket(&self, name: &str) -> Result<Option<BucketMeta>, MetaError> {
        let tx = self.read()?;
        get(&tx.open_table(BUCKETS)?, name)
    }

    fn buckets(&self) -> Result<Vec<BucketMeta>, MetaError> {
        let tx = self.read()?;
        let t = tx.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            out.push(dec(item?.1.value())?);
        }
        Ok(out)
    }

    fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, MetaError> {
        let tx = self.read()?;
        get(&tx.open_table(OBJECTS)?, object_key(bucket, key).as_slice())
    }

    fn object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Version>, MetaError> {
        let tx = self.read()?;
        if version_id == NULL_VERSION {
            let o: Option<ObjectMeta> =
                get(&tx.open_table(OBJECTS)?, object_key(bucket, key).as_slice())?;
            if let Some(o) = o.filter(|o| o.version_id.is_none()) {
                return Ok(Some(Version::Object(Box::new(o))));
            }
        }
        let Some(seq) = version_seq(&tx.open_table(NULLS)?, bucket, key, version_id)? else {
            return Ok(None);
        };
        let v: Option<Version> = get(
            &tx.open_table(VERSIONS)?,
            version_key(bucket, key, seq).as_slice(),
        )?;
        Ok(v.filter(|v| v.version_id() == version_id))
    }

    fn scan_versions(
        &self,
        bucket: &str,
        after: Option<(&str, Option<&str>)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<VersionEntry>, MetaError> {
        let tx = self.read()?;
        let objects = tx.open_table(OBJECTS)?;
        let versions = tx.open_table(VERSIONS)?;
        // Start at the marker's key (its versions are skipped below) or the prefix.
        let (start, mut skip) = match after {
            Some((k, v)) if k >= prefix => (k, Some((k, v))),
            _ => (prefix, None),
        };
        let base_len = bucket.len() + 1;
        let mut end = bucket.as_bytes().to_vec();
        end.push(1);
        // Objects written before versioning (their key's only, `null`, version) ...
        let obj_from = object_key(bucket, start);
        let mut unversioned = objects
            .range(obj_from.as_slice()..end.as_slice())?
            .map(|item| -> Result<Option<VersionEntry>, MetaError> {
                let (k, v) = item?;
                let o: ObjectMeta = dec(v.value())?;
                if o.version_id.is_some() {
                    return Ok(None);
                }
                let key = String::from_utf8(k.value()[base_len..].to_vec())
                    .map_err(|e| MetaError::Backend(e.to_string()))?;
                Ok(Some(VersionEntry {
                    key,
                    version: Version::Object(Box::new(o)),
                    is_latest: true,
                }))
            })
            .filter_map(Result::transpose)
            .peekable();
        // ... merged in key order with the keys written since.
        let ver_from = escaped_key_start(bucket, start);
        let mut versioned = versions
            .range(ver_from.as_slice()..end.as_slice())?
            .map(|item| -> Result<(String, Version), MetaError> {
                let (k, v) = item?;
                Ok((key_of_version_key(k.value(), base_len)?, dec(v.value())?))
            })
            .peekable();
        let mut previous: Option<String> = None;
        let mut out = Vec::new();
        while out.len() < limit {
            let from_unversioned = match (unversioned.peek(), versioned.peek()) {
                (None, None) => break,
                (Some(Ok(a)), Some(Ok((b, _)))) => a.key < *b,
                (Some(_), _) => true,
                (None, Some(_)) => false,
            };
            let entry = if from_unversioned {
                match unversioned.next() {
                    Some(e) => e?,
                    None => break,
                }
            } else {
                let Some(item) = versioned.next() else { break };
                let (key, version) = item?;
                let is_latest = previous.as_deref() != Some(key.as_str());
                previous = Some(key.clone());
                VersionEntry {
                    key,
                    version,
                    is_latest,
                }
            };
            if !entry.key.starts_with(prefix) {
                break;
            }
            if let Some((k, v)) = skip {
                if entry.key == k {
                    // The marker key's versions: all of them, or up to and including
                    // the marker version.
                    if v.is_some_and(|v| v == entry.version.version_id()) {
                        skip = None;
                    }
                    continue;
                }
                skip = None;
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn scan_objects(
        &self,
        bucket: &str,
        start: &ScanStart,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ObjectEntry>, MetaError> {
        let tx = self.read()?;
        let t = tx.open_table(OBJECTS)?;
        let base_len = bucket.len() + 1;
        let (mut from, exclusive) = match start {
            ScanStart::From(k) => (object_key(bucket, k), None),
            ScanStart::After(k) => {
                let k = object_key(bucket, k);
                (k.clone(), Some(k))
            }
            // 0xFF never occurs in UTF-8, so prefix+0xFF sorts after every key under it.
            ScanStart::AfterPrefix(p) => {
                let mut k = object_key(bucket, p);
                k.push(0xFF);
                (k, None)
            }
        };
        let pfx = object_key(bucket, prefix);
        if from < pfx {
            from = pfx.clone();
        }
        let mut end = bucket.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::new();
        for item in t.range(from.as_slice()..end.as_slice())? {
            let (k, v) = item?;
            let k = k.value();
            if exclusive.as_deref() == Some(k) {
                continue;
            }
            if !k.starts_with(&pfx) || out.len() >= limit {
                break;
            }
            let key = String::from_utf8(k[base_len..].to_vec())
                .map_err(|e| MetaError::Backend(e.to_string()))?;
            out.push((key, dec(v.value())?));
        }
        Ok(out)
    }

    fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadMeta>, MetaError> {
        let tx = self.read()?;
        get(
            &tx.open_table(UPLOADS)?,
            upload_key(bucket, key, upload_id).as_slice(),
        )
    }

    fn scan_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UploadMeta>, MetaError> {
        let tx = self.read()?;
        let t = tx.open_table(UPLOADS)?;
        let pfx = object_key(bucket, prefix);
        let from = match after {
            Some((k, u)) => {
                let mut x = upload_key(bucket, k, u);
                x.push(0);
                x.max(pfx.clone())
            }
            None => pfx.clone(),
        };
        let mut end = bucket.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::new();
        for item in t.range(from.as_slice()..end.as_slice())? {
            let (k, v) = item?;
            if !k.value().starts_with(&pfx) || out.len() >= limit {
                break;
            }
            out.push(dec(v.value())?);
        }
        Ok(out)
    }

    fn parts(&self, upload_id: &str, after: u32, limit: usize) -> Result<Vec<PartMeta>, MetaError> {
        let tx = self.read()?;
        let t = tx.open_table(PARTS)?;
        let start = part_key(upload_id, after.saturating_add(1));
        let end = part_key(upload_id, u32::MAX);
        let mut out = Vec::new();
        for item in t.range(start.as_slice()..=end.as_slice())? {
            if out.len() >= limit {
                break;
            }
            out.push(dec(item?.1.value())?);
        }
        Ok(out)
    }

    fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<CompletedUpload>, MetaError> {
        let tx = self.read()?;
        let t = tx.open_table(COMPLETED)?;
        let c: Option<CompletedUpload> = get(&t, upload_key(bucket, key, upload_id).as_slice())?;
        let now = crate::meta::now_millis();
        Ok(c.filter(|c| now - c.completed <= COMPLETED_TTL_MS))
    }

    fn referenced_blobs(&self) -> Result<HashSet<String>, MetaError> {
        let tx = self.read()?;
        let mut out = HashSet::new();
        for item in tx.open_table(OBJECTS)?.iter()? {
            let o: ObjectMeta = dec(item?.1.value())?;
            out.extend(o.data.blobs().iter().map(|b| b.id.clone()));
        }
        for item in tx.open_table(PARTS)?.iter()? {
            let p: PartMeta = dec(item?.1.value())?;
            out.insert(p.blob.id);
        }
        for item in tx.open_table(VERSIONS)?.iter()? {
            if let Version::Object(o) = dec(item?.1.value())? {
                out.extend(o.data.blobs().iter().map(|b| b.id.clone()));
            }
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as format 1 wrote them (bytes taken from the code before format 2):
    /// a multipart object with a composite CRC32 and an upload with SHA256.
    const V1_OBJECT: &str = "0105016502036162630561646d696e0000000000000001016b0176010543524333320a4141414141413d3d2d32036162630561646d696e010003616263010561646d696e00010102623105020302";
    const V1_UPLOAD: &str = "0101750162016b04036162630561646d696e0000000000000000036162630561646d696e010003616263010561646d696e000106534841323536";

    #[test]
    fn reads_format_1_records() {
        let o: ObjectMeta = dec(&hex::decode(V1_OBJECT).unwrap()).unwrap();
        assert_eq!(o.size, 5);
        assert_eq!(o.etag, "e");
        assert_eq!(o.user_meta, vec![("k".to_string(), "v".to_string())]);
        assert_eq!(
            o.checksums,
            vec![("CRC32".to_string(), "AAAAAA==-2".to_string())]
        );
        assert_eq!(o.part_sizes, vec![3, 2]);
        assert_eq!(o.data.blobs()[0].id, "b1");
        assert_eq!(o.checksum_type.as_deref(), Some("COMPOSITE"));
        assert!(o.part_checksums.is_empty());
        let u: UploadMeta = dec(&hex::decode(V1_UPLOAD).unwrap()).unwrap();
        assert_eq!((u.upload_id.as_str(), u.key.as_str()), ("u", "k"));
        assert_eq!(u.checksum_algorithm.as_deref(), Some("SHA256"));
        assert_eq!(u.checksum_type.as_deref(), Some("COMPOSITE"));
        assert!(o.tags.is_empty() && u.tags.is_empty());
        // Re-encoded, it is today's format and round-trips.
        let again = enc(&o).unwrap();
        assert_eq!(again[0], FORMAT);
        assert_eq!(dec::<ObjectMeta>(&again).unwrap(), o);
        assert!(dec::<ObjectMeta>(&[9, 0]).is_err());
    }

    /// Format 2 (before bucket configs and tags) is format 3 without the last field.
    #[test]
    fn reads_format_2_records() {
        let mut o: ObjectMeta = dec(&hex::decode(V1_OBJECT).unwrap()).unwrap();
        o.part_checksums = vec!["x".into()];
        let mut v2 = enc(&o).unwrap();
        assert_eq!(v2.pop(), Some(0), "empty tags are one 0 byte");
        v2[0] = 2;
        assert_eq!(dec::<ObjectMeta>(&v2).unwrap(), o);
        let b = BucketMeta {
            name: "b".into(),
            owner: o.owner.clone(),
            created: 7,
            region: "r".into(),
            acl: o.acl.clone(),
            configs: Default::default(),
        };
        let mut v2 = enc(&b).unwrap();
        assert_eq!(v2.pop(), Some(0));
        v2[0] = 2;
        assert_eq!(dec::<BucketMeta>(&v2).unwrap(), b);
    }

    /// Format 3 (before server-side encryption) is format 4 without the last field,
    /// for objects, uploads and versions; a delete marker is read as it was.
    #[test]
    fn reads_format_3_records() {
        let mut o: ObjectMeta = dec(&hex::decode(V1_OBJECT).unwrap()).unwrap();
        o.tags = vec![("t".into(), "v".into())];
        o.version_id = Some("0000000000000001aaaaaaaaaaaaaaaa".into());
        o.retention = Some(crate::meta::Retention {
            mode: crate::meta::RetentionMode::Governance,
            until: 42,
        });
        o.legal_hold = true;
        let as_v3 = |mut b: Vec<u8>| {
            assert_eq!(b.pop(), Some(0), "no sse is one 0 byte");
            b[0] = 3;
            b
        };
        let v3 = as_v3(enc(&o).unwrap());
        assert_eq!(dec::<ObjectMeta>(&v3).unwrap(), o);
        let version = Version::Object(Box::new(o.clone()));
        assert_eq!(
            dec::<Version>(&as_v3(enc(&version).unwrap())).unwrap(),
            version
        );
        let marker = Version::DeleteMarker(crate::meta::DeleteMarker {
            version_id: "v".into(),
            owner: o.owner.clone(),
            last_modified: 7,
        });
        let mut m3 = enc(&marker).unwrap();
        m3[0] = 3;
        assert_eq!(dec::<Version>(&m3).unwrap(), marker);
        let mut u: UploadMeta = dec(&hex::decode(V1_UPLOAD).unwrap()).unwrap();
        u.tags = o.tags.clone();
        u.legal_hold = true;
        assert_eq!(dec::<UploadMeta>(&as_v3(enc(&u).unwrap())).unwrap(), u);
        // And an encrypted object round-trips in today's format.
        o.sse = Some(crate::meta::Sse {
            kind: crate::meta::SseKind::Customer,
            sealed_key: vec![1; 60],
        });
        assert_eq!(dec::<ObjectMeta>(&enc(&o).unwrap()).unwrap(), o);
    }
}
