//! The metadata logic shared by every engine: the key layout, the record codec, each
//! [`MetaOp`]'s rules and the reads, written once against a small ordered key-value
//! interface ([`KvRead`], [`KvWrite`]) that redb ([`crate::meta_redb`]) and PostgreSQL
//! ([`crate::meta_pg`]) implement. An engine only has to give one op at a time a
//! serializable transaction over byte-ordered tables; the records are the same bytes
//! in either (version sequence numbers aside: a redb counter, a PostgreSQL sequence).
use crate::meta::*;
use rand::RngCore;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashSet;

/// The tables. Keys and values are bytes, ordered bytewise (as `memcmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// bucket name → [`BucketMeta`].
    Buckets,
    /// [`object_key`] → [`ObjectMeta`] (the current object of a key).
    Objects,
    /// [`upload_key`] → [`UploadMeta`].
    Uploads,
    /// [`part_key`] → [`PartMeta`].
    Parts,
    /// `bucket\0key\0uploadId` → [`CompletedUpload`].
    Completed,
    /// `completed ms (be)` + `bucket\0key\0uploadId` → empty, to expire
    /// [`Table::Completed`] in order.
    CompletedByTime,
    /// [`version_key`] → [`Version`]: every version of the keys written since their
    /// bucket had versioning. [`Table::Objects`] keeps the current object as well
    /// (listing and GET stay one lookup), with its `version_id` set; an object whose
    /// `version_id` is `None` was written before and is the key's only version (its
    /// `null` one).
    Versions,
    /// `bucket\0key` → the sequence number (8 bytes, big-endian) of the key's `null`
    /// version in [`Table::Versions`].
    Nulls,
    /// Named counters (8 bytes, big-endian): [`VERSION_SEQ`] (redb; PostgreSQL has
    /// a sequence instead, which concurrent writers do not conflict on).
    Counters,
}

impl Table {
    pub(crate) const ALL: [Table; 9] = [
        Table::Buckets,
        Table::Objects,
        Table::Uploads,
        Table::Parts,
        Table::Completed,
        Table::CompletedByTime,
        Table::Versions,
        Table::Nulls,
        Table::Counters,
    ];

    /// The table's name (redb's table names; PostgreSQL prefixes `walrus_`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Buckets => "buckets",
            Table::Objects => "objects",
            Table::Uploads => "uploads",
            Table::Parts => "parts",
            Table::Completed => "completed",
            Table::CompletedByTime => "completed_by_time",
            Table::Versions => "versions",
            Table::Nulls => "null_versions",
            Table::Counters => "counters",
        }
    }
}

/// One row: key, value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Reads inside one transaction (a consistent view).
pub(crate) trait KvRead {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    /// Up to `limit` rows with `from <= key < to` (`to` empty: no upper bound), in
    /// key order.
    fn range(&self, t: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, MetaError>;
}

/// Writes inside one transaction.
pub(crate) trait KvWrite: KvRead {
    fn put(&self, t: Table, k: &[u8], v: &[u8]) -> Result<(), MetaError>;
    /// Removes a row, returning its value.
    fn remove(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    /// The next version sequence number: larger than every one given out before.
    fn next_seq(&self) -> Result<u64, MetaError>;
    /// [`KvRead::range`] for rows the caller will remove, leaving out rows another
    /// writer is removing meanwhile (PostgreSQL: locked rows are skipped, so
    /// concurrent ops pruning the same table do not queue behind one another).
    fn claim_range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, MetaError> {
        self.range(t, from, to, limit)
    }
}

/// Rows are fetched this many at a time by [`Scan`].
const SCAN_PAGE: usize = 256;

/// Every row with `from <= key < to`, in key order, fetched a page at a time.
pub(crate) struct Scan<'a, R: KvRead + ?Sized> {
    kv: &'a R,
    table: Table,
    next: Vec<u8>,
    to: Vec<u8>,
    page: std::vec::IntoIter<Row>,
    done: bool,
}

impl<'a, R: KvRead + ?Sized> Scan<'a, R> {
    pub(crate) fn new(kv: &'a R, table: Table, from: &[u8], to: &[u8]) -> Self {
        Self {
            kv,
            table,
            next: from.to_vec(),
            to: to.to_vec(),
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl<R: KvRead + ?Sized> Iterator for Scan<'_, R> {
    type Item = Result<Row, MetaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.page.next() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        let rows = match self.kv.range(self.table, &self.next, &self.to, SCAN_PAGE) {
            Ok(r) => r,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.done = rows.len() < SCAN_PAGE;
        if let Some((last, _)) = rows.last() {
            // The smallest key after `last`.
            self.next = last.clone();
            self.next.push(0);
        }
        self.page = rows.into_iter();
        self.page.next().map(Ok)
    }
}

/// The smallest key after `k`.
fn after(k: &[u8]) -> Vec<u8> {
    let mut x = k.to_vec();
    x.push(0);
    x
}

fn get<T: Record>(kv: &(impl KvRead + ?Sized), t: Table, k: &[u8]) -> Result<Option<T>, MetaError> {
    kv.get(t, k)?.map(|v| dec(&v)).transpose()
}

fn get_u64(kv: &(impl KvRead + ?Sized), t: Table, k: &[u8]) -> Result<Option<u64>, MetaError> {
    kv.get(t, k)?.map(|v| u64_of(&v)).transpose()
}

pub(crate) fn u64_of(v: &[u8]) -> Result<u64, MetaError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| MetaError::Backend("corrupt counter".into()))
}

/// The end of a bucket's rows in the tables keyed `bucket\0…`.
fn bucket_end(bucket: &str) -> Vec<u8> {
    let mut end = bucket.as_bytes().to_vec();
    end.push(1);
    end
}

/// The last version sequence number given out (version ids carry it).
pub(crate) const VERSION_SEQ: &str = "version_seq";
/// Set (to 1) the first time any bucket gets a logging configuration, and never
/// cleared: front ends sharing the store read this one row, not every bucket, to
/// learn whether request logging may be needed.
pub(crate) const LOGGING_SEEN: &str = "bucket_logging_seen";
/// Expired completion records dropped per completion (keeps each commit small).
const EXPIRE_PER_OP: usize = 64;

/// Records are this byte, then postcard. Older formats are still read: format 1
/// (before multipart checksum types), 2 (before bucket configs, tags and versions) and
/// 3 (before server-side encryption).
const FORMAT: u8 = 4;

pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
    let mut out = vec![FORMAT];
    out.extend(postcard::to_allocvec(v).map_err(|e| MetaError::Backend(e.to_string()))?);
    Ok(out)
}

/// Postcard (its wire format is stable since 1.0) writes a struct as its fields in
/// order, and an empty `Vec`, map or `None` as one 0 byte. Each format only appended
/// such fields to the records it changed, so an older record is today's layout minus
/// its last fields: with one 0 byte per missing field it decodes as today's type.
pub(crate) fn dec<T: Record>(b: &[u8]) -> Result<T, MetaError> {
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
pub(crate) trait Record: Serialize + DeserializeOwned {
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

pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
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

/// The sequence number of a [`version_key`].
fn seq_of_version_key(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::MAX - u64::from_be_bytes(tail))
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

fn bucket_has_content(tx: &impl KvWrite, bucket: &str) -> Result<bool, MetaError> {
    let mut start = bucket.as_bytes().to_vec();
    start.push(0);
    let end = bucket_end(bucket);
    for table in [Table::Objects, Table::Uploads, Table::Versions] {
        if !tx.range(table, &start, &end, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_parts(tx: &impl KvWrite, upload_id: &str) -> Result<Vec<PartMeta>, MetaError> {
    let start = part_key(upload_id, 0);
    let end = after(&part_key(upload_id, u32::MAX));
    let rows: Vec<Row> = Scan::new(tx, Table::Parts, &start, &end).collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        out.push(dec::<PartMeta>(&v)?);
        tx.remove(Table::Parts, &k)?;
    }
    Ok(out)
}

fn time_key(ms: i64, uk: &[u8]) -> Vec<u8> {
    let mut k = (ms.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(uk);
    k
}

/// Remembers a completion and forgets up to [`EXPIRE_PER_OP`] expired ones.
fn record_completion(tx: &impl KvWrite, uk: &[u8], c: CompletedUpload) -> Result<(), MetaError> {
    let cutoff = time_key(c.completed - COMPLETED_TTL_MS, &[]);
    for (k, _) in tx.claim_range(Table::CompletedByTime, &[], &cutoff, EXPIRE_PER_OP)? {
        tx.remove(Table::CompletedByTime, &k)?;
        if let Some(done) = k.get(8..) {
            tx.remove(Table::Completed, done)?;
        }
    }
    tx.put(Table::CompletedByTime, &time_key(c.completed, uk), &[])?;
    tx.put(Table::Completed, uk, &enc(&c)?)?;
    Ok(())
}

fn versioning(tx: &impl KvWrite, bucket: &str) -> Result<Versioning, MetaError> {
    let b: BucketMeta =
        get(tx, Table::Buckets, bucket.as_bytes())?.ok_or(MetaError::NoSuchBucket)?;
    Ok(b.versioning())
}

fn next_version_seq(tx: &impl KvWrite) -> Result<u64, MetaError> {
    tx.next_seq()
}

/// Where a version id's record is: its sequence number (`null`: from [`Table::Nulls`]).
fn version_seq(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<u64>, MetaError> {
    if version_id == NULL_VERSION {
        get_u64(kv, Table::Nulls, &object_key(bucket, key))
    } else {
        Ok(seq_of_version_id(version_id))
    }
}

/// Before a versioned write to a key whose object predates versioning: that object
/// becomes the key's `null` version in [`Table::Versions`].
fn adopt_unversioned(tx: &impl KvWrite, bucket: &str, key: &str) -> Result<(), MetaError> {
    let k = object_key(bucket, key);
    let Some(mut o) = get::<ObjectMeta>(tx, Table::Objects, &k)? else {
        return Ok(());
    };
    if o.version_id.is_some() {
        return Ok(());
    }
    let seq = next_version_seq(tx)?;
    o.version_id = Some(NULL_VERSION.into());
    tx.put(Table::Objects, &k, &enc(&o)?)?;
    tx.put(
        Table::Versions,
        &version_key(bucket, key, seq),
        &enc(&Version::Object(Box::new(o)))?,
    )?;
    tx.put(Table::Nulls, &k, &seq.to_be_bytes())?;
    Ok(())
}

/// Removes the key's `null` version from [`Table::Versions`] (not from
/// [`Table::Objects`]).
fn remove_null_version(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
) -> Result<Option<Version>, MetaError> {
    let Some(seq) = tx
        .remove(Table::Nulls, &object_key(bucket, key))?
        .map(|v| u64_of(&v))
        .transpose()?
    else {
        return Ok(None);
    };
    tx.remove(Table::Versions, &version_key(bucket, key, seq))?
        .map(|v| dec::<Version>(&v))
        .transpose()
}

/// Adds a new latest version (an object or a delete marker, built from the version id
/// it gets) to a bucket with versioning; suspended, it replaces the `null` version.
fn add_version(
    tx: &impl KvWrite,
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
    // The key's newest version so far. Reading it also puts the key's versions in the
    // transaction's read set: two writers adding a version to one key at once (a PUT
    // and a delete marker, say) then conflict in PostgreSQL and one re-runs, instead
    // of both committing in an order their sequence numbers (taken outside the
    // transaction there) may contradict. The new version must sort before it.
    let newest = latest_version(tx, bucket, key)?.and_then(|(k, _)| seq_of_version_key(&k));
    let seq = loop {
        let s = next_version_seq(tx)?;
        if newest.is_none_or(|n| s > n) {
            break s;
        }
    };
    let id = match state {
        Versioning::Suspended => NULL_VERSION.to_string(),
        _ => new_version_id(seq),
    };
    let v = make(id.clone());
    tx.put(Table::Versions, &version_key(bucket, key, seq), &enc(&v)?)?;
    if state == Versioning::Suspended {
        tx.put(Table::Nulls, &object_key(bucket, key), &seq.to_be_bytes())?;
    }
    out.version_id = Some(id);
    Ok(v)
}

/// Makes `meta` the key's current object: replacing the old one (whose blobs are
/// freed) in a bucket without versioning (`state`, read by the caller), as a new
/// version otherwise.
fn place_object(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    state: Versioning,
    mut meta: ObjectMeta,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let k = object_key(bucket, key);
    if state == Versioning::Unversioned {
        meta.version_id = None;
        if let Some(old) = get::<ObjectMeta>(tx, Table::Objects, &k)? {
            out.freed_blobs.extend(old.data.blobs().iter().cloned());
            out.existed = true;
        }
        tx.put(Table::Objects, &k, &enc(&meta)?)?;
        return Ok(());
    }
    out.existed = tx.get(Table::Objects, &k)?.is_some();
    let v = add_version(tx, bucket, key, state, out, |id| {
        meta.version_id = Some(id);
        Version::Object(Box::new(meta))
    })?;
    if let Version::Object(meta) = v {
        tx.put(Table::Objects, &k, &enc(&meta)?)?;
    }
    Ok(())
}

/// DeleteObject: removes the object, or (with versioning) adds a delete marker.
fn delete_object(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    by: crate::acl::Owner,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let state = versioning(tx, bucket)?;
    let k = object_key(bucket, key);
    if state == Versioning::Unversioned {
        let removed = tx
            .remove(Table::Objects, &k)?
            .map(|v| dec::<ObjectMeta>(&v))
            .transpose()?;
        if let Some(old) = removed {
            out.freed_blobs = old.data.blobs().to_vec();
            out.existed = true;
        }
        return Ok(());
    }
    adopt_unversioned(tx, bucket, key)?;
    // The current object stays as a version (suspended: unless it is the null one).
    out.existed = tx.remove(Table::Objects, &k)?.is_some();
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

/// The first (newest) version of a key, with its [`Table::Versions`] key.
fn latest_version(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, Version)>, MetaError> {
    let start = versions_of(bucket, key);
    let mut end = start.clone();
    end.extend_from_slice(&[0xFF; 8]);
    match kv
        .range(Table::Versions, &start, &after(&end), 1)?
        .into_iter()
        .next()
    {
        Some((k, v)) => Ok(Some((k, dec(&v)?))),
        None => Ok(None),
    }
}

/// DeleteVersion: removes one version for good; if it was the latest, the next
/// newest becomes current (an object) or the key has no current object (a marker).
fn delete_version(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    version_id: &str,
    bypass_governance: bool,
    out: &mut OpOutcome,
) -> Result<(), MetaError> {
    let now = now_millis();
    if tx.get(Table::Buckets, bucket.as_bytes())?.is_none() {
        return Err(MetaError::NoSuchBucket);
    }
    let k = object_key(bucket, key);
    if version_id == NULL_VERSION {
        if let Some(o) = get::<ObjectMeta>(tx, Table::Objects, &k)? {
            if o.version_id.is_none() {
                if o.locked(now, bypass_governance) {
                    return Err(MetaError::ObjectLocked);
                }
                tx.remove(Table::Objects, &k)?;
                out.freed_blobs = o.data.blobs().to_vec();
                out.existed = true;
                out.version_id = Some(NULL_VERSION.into());
                return Ok(());
            }
        }
    }
    let Some(seq) = version_seq(tx, bucket, key, version_id)? else {
        return Ok(());
    };
    let vk = version_key(bucket, key, seq);
    match get::<Version>(tx, Table::Versions, &vk)? {
        Some(Version::Object(o))
            if o.version() == version_id && o.locked(now, bypass_governance) =>
        {
            return Err(MetaError::ObjectLocked);
        }
        Some(v) if v.version_id() == version_id => {
            let was_latest = latest_version(tx, bucket, key)?.map(|(k, _)| k) == Some(vk.clone());
            tx.remove(Table::Versions, &vk)?;
            match v {
                Version::Object(o) => out.freed_blobs = o.data.blobs().to_vec(),
                Version::DeleteMarker(_) => out.delete_marker = true,
            }
            out.existed = true;
            out.version_id = Some(version_id.to_string());
            let next = if was_latest {
                Some(latest_version(tx, bucket, key)?)
            } else {
                None
            };
            if version_id == NULL_VERSION {
                tx.remove(Table::Nulls, &k)?;
            }
            match next {
                Some(Some((_, Version::Object(o)))) => {
                    tx.put(Table::Objects, &k, &enc(&o)?)?;
                }
                Some(_) => {
                    tx.remove(Table::Objects, &k)?;
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
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    retention: Option<Option<Retention>>,
    legal_hold: Option<bool>,
    bypass_governance: bool,
) -> Result<(), MetaError> {
    if tx.get(Table::Buckets, bucket.as_bytes())?.is_none() {
        return Err(MetaError::NoSuchBucket);
    }
    adopt_unversioned(tx, bucket, key)?;
    let k = object_key(bucket, key);
    let current: Option<ObjectMeta> = get(tx, Table::Objects, &k)?;
    let id = match version_id {
        Some(v) => v.to_string(),
        None => current
            .as_ref()
            .and_then(|o| o.version_id.clone())
            .ok_or(MetaError::NoSuchKey)?,
    };
    let seq = version_seq(tx, bucket, key, &id)?.ok_or(MetaError::NoSuchKey)?;
    let vk = version_key(bucket, key, seq);
    let mut o = match get::<Version>(tx, Table::Versions, &vk)? {
        Some(Version::Object(o)) if o.version() == id => *o,
        _ => return Err(MetaError::NoSuchKey),
    };
    if let Some(new) = retention {
        if let Some(old) = o.retention.as_ref().filter(|r| r.until > now_millis()) {
            let weaker = match &new {
                None => true,
                // A change of mode counts as weakening either way, as in S3: GOVERNANCE
                // to COMPLIANCE needs the bypass too.
                Some(n) => n.until < old.until || n.mode != old.mode,
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
    tx.put(
        Table::Versions,
        &vk,
        &enc(&Version::Object(Box::new(o.clone())))?,
    )?;
    if current.is_some_and(|c| c.version_id.as_deref() == Some(id.as_str())) {
        tx.put(Table::Objects, &k, &enc(&o)?)?;
    }
    Ok(())
}

/// After the current object's ACL or tags changed: its copy in [`Table::Versions`] too.
fn mirror_current_version(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    o: &ObjectMeta,
) -> Result<(), MetaError> {
    let Some(id) = o.version_id.as_deref() else {
        return Ok(());
    };
    if let Some(seq) = version_seq(tx, bucket, key, id)? {
        tx.put(
            Table::Versions,
            &version_key(bucket, key, seq),
            &enc(&Version::Object(Box::new(o.clone())))?,
        )?;
    }
    Ok(())
}

/// Changes one version of an object (its ACL or tags): the current object (`None`,
/// or the id of the current one) with its copy in [`Table::Versions`], or an older
/// version there alone. A missing version, or a delete marker, is `NoSuchKey`.
fn update_object_version(
    tx: &impl KvWrite,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    unchanged: Option<&ObjectStamp>,
    change: impl FnOnce(&mut ObjectMeta),
) -> Result<(), MetaError> {
    let same = |o: &ObjectMeta| unchanged.is_none_or(|s| *s == ObjectStamp::of(o));
    let k = object_key(bucket, key);
    let current: Option<ObjectMeta> = get(tx, Table::Objects, &k)?;
    match (current, version_id) {
        (Some(mut o), v) if v.is_none_or(|v| o.version() == v) => {
            if !same(&o) {
                return Err(MetaError::Changed);
            }
            change(&mut o);
            tx.put(Table::Objects, &k, &enc(&o)?)?;
            mirror_current_version(tx, bucket, key, &o)
        }
        (_, None) => Err(MetaError::NoSuchKey),
        (_, Some(id)) => {
            let seq = version_seq(tx, bucket, key, id)?.ok_or(MetaError::NoSuchKey)?;
            let vk = version_key(bucket, key, seq);
            let mut o = match get::<Version>(tx, Table::Versions, &vk)? {
                Some(Version::Object(o)) if o.version() == id => *o,
                _ => return Err(MetaError::NoSuchKey),
            };
            if !same(&o) {
                return Err(MetaError::Changed);
            }
            change(&mut o);
            tx.put(Table::Versions, &vk, &enc(&Version::Object(Box::new(o)))?)?;
            Ok(())
        }
    }
}

/// Applies one op inside `tx`. On an error PostgreSQL rolls the op's transaction
/// back. redb's group commit commits the batch's writes whatever each op returned:
/// every op returns its errors before writing, or after writes that change nothing
/// visible (adopting a `null` version), except the backstop in [`add_version`]
/// (a locked `null` version in a suspended bucket, which object lock forbids).
pub(crate) fn apply_op(tx: &impl KvWrite, op: MetaOp) -> Result<OpOutcome, MetaError> {
    let mut out = OpOutcome::default();
    let has_bucket = |name: &str| -> Result<bool, MetaError> {
        Ok(tx.get(Table::Buckets, name.as_bytes())?.is_some())
    };
    match op {
        MetaOp::CreateBucket(b) => {
            if let Some(existing) = get::<BucketMeta>(tx, Table::Buckets, b.name.as_bytes())? {
                return Err(MetaError::BucketExists {
                    owner: existing.owner.id,
                });
            }
            tx.put(Table::Buckets, b.name.as_bytes(), &enc(&b)?)?;
        }
        MetaOp::DeleteBucket { name } => {
            if !has_bucket(&name)? {
                return Err(MetaError::NoSuchBucket);
            }
            if bucket_has_content(tx, &name)? {
                return Err(MetaError::BucketNotEmpty);
            }
            tx.remove(Table::Buckets, name.as_bytes())?;
        }
        MetaOp::SetBucketAcl { name, acl } => {
            let mut b: BucketMeta =
                get(tx, Table::Buckets, name.as_bytes())?.ok_or(MetaError::NoSuchBucket)?;
            b.acl = acl;
            tx.put(Table::Buckets, name.as_bytes(), &enc(&b)?)?;
        }
        MetaOp::SetBucketConfig { name, config, doc } => {
            let mut b: BucketMeta =
                get(tx, Table::Buckets, name.as_bytes())?.ok_or(MetaError::NoSuchBucket)?;
            if config == BucketConfig::LOGGING && doc.is_some() {
                tx.put(
                    Table::Counters,
                    LOGGING_SEEN.as_bytes(),
                    &1u64.to_be_bytes(),
                )?;
            }
            match doc {
                Some(d) => b.configs.insert(config, d),
                None => b.configs.remove(&config),
            };
            tx.put(Table::Buckets, name.as_bytes(), &enc(&b)?)?;
        }
        MetaOp::PutObject {
            bucket,
            key,
            meta,
            cond,
        } => {
            // (NoSuchBucket if the bucket is gone.)
            let state = versioning(tx, &bucket)?;
            if let Some(c) = cond {
                let current = get::<ObjectMeta>(tx, Table::Objects, &object_key(&bucket, &key))?;
                if !c.holds(current.as_ref()) {
                    return Err(MetaError::PreconditionFailed);
                }
            }
            place_object(tx, &bucket, &key, state, meta, &mut out)?;
        }
        MetaOp::DeleteObject {
            bucket,
            key,
            by,
            unchanged,
        } => {
            if let Some(found) = unchanged {
                let current = get::<ObjectMeta>(tx, Table::Objects, &object_key(&bucket, &key))?;
                if !current.is_some_and(|c| found.is(&c)) {
                    return Err(MetaError::Changed);
                }
            }
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
            if !has_bucket(&u.bucket)? {
                return Err(MetaError::NoSuchBucket);
            }
            tx.put(
                Table::Uploads,
                &upload_key(&u.bucket, &u.key, &u.upload_id),
                &enc(&u)?,
            )?;
        }
        MetaOp::PutPart {
            bucket,
            key,
            upload_id,
            part,
        } => {
            if tx
                .get(Table::Uploads, &upload_key(&bucket, &key, &upload_id))?
                .is_none()
            {
                // The upload was completed or aborted meanwhile: the new blob is unused.
                return Err(MetaError::NoSuchUpload);
            }
            let k = part_key(&upload_id, part.number);
            if let Some(old) = get::<PartMeta>(tx, Table::Parts, &k)? {
                out.freed_blobs.push(old.blob);
            }
            tx.put(Table::Parts, &k, &enc(&part)?)?;
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
            if tx.get(Table::Uploads, &uk)?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            if let Some(c) = cond {
                let current = get::<ObjectMeta>(tx, Table::Objects, &object_key(&bucket, &key))?;
                if !c.holds(current.as_ref()) {
                    return Err(MetaError::PreconditionFailed);
                }
            }
            let mut etags = Vec::with_capacity(parts.len());
            for (n, blob_id) in &parts {
                match get::<PartMeta>(tx, Table::Parts, &part_key(&upload_id, *n))? {
                    Some(p) if &p.blob.id == blob_id => etags.push((*n, p.etag)),
                    _ => return Err(MetaError::PartChanged),
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
            tx.remove(Table::Uploads, &uk)?;
            let state = versioning(tx, &bucket)?;
            place_object(tx, &bucket, &key, state, meta, &mut out)?;
        }
        MetaOp::AbortUpload {
            bucket,
            key,
            upload_id,
        } => {
            let uk = upload_key(&bucket, &key, &upload_id);
            if tx.remove(Table::Uploads, &uk)?.is_none() {
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

// ---- reads -------------------------------------------------------------------

pub(crate) fn bucket(
    kv: &(impl KvRead + ?Sized),
    name: &str,
) -> Result<Option<BucketMeta>, MetaError> {
    get(kv, Table::Buckets, name.as_bytes())
}

/// Whether any bucket has ever had a logging configuration ([`LOGGING_SEEN`]).
pub(crate) fn logging_seen(kv: &(impl KvRead + ?Sized)) -> Result<bool, MetaError> {
    Ok(kv.get(Table::Counters, LOGGING_SEEN.as_bytes())?.is_some())
}

pub(crate) fn buckets(kv: &(impl KvRead + ?Sized)) -> Result<Vec<BucketMeta>, MetaError> {
    Scan::new(kv, Table::Buckets, &[], &[])
        .map(|row| dec(&row?.1))
        .collect()
}

pub(crate) fn object(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
) -> Result<Option<ObjectMeta>, MetaError> {
    get(kv, Table::Objects, &object_key(bucket, key))
}

pub(crate) fn object_version(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<Version>, MetaError> {
    if version_id == NULL_VERSION {
        let o: Option<ObjectMeta> = get(kv, Table::Objects, &object_key(bucket, key))?;
        if let Some(o) = o.filter(|o| o.version_id.is_none()) {
            return Ok(Some(Version::Object(Box::new(o))));
        }
    }
    let Some(seq) = version_seq(kv, bucket, key, version_id)? else {
        return Ok(None);
    };
    let v: Option<Version> = get(kv, Table::Versions, &version_key(bucket, key, seq))?;
    Ok(v.filter(|v| v.version_id() == version_id))
}

pub(crate) fn scan_versions(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    after: Option<(&str, Option<&str>)>,
    prefix: &str,
    limit: usize,
) -> Result<Vec<VersionEntry>, MetaError> {
    // Start at the marker's key (its versions are skipped below) or the prefix.
    let (start, mut skip) = match after {
        Some((k, v)) if k >= prefix => (k, Some((k, v))),
        _ => (prefix, None),
    };
    let base_len = bucket.len() + 1;
    let end = bucket_end(bucket);
    // Objects written before versioning (their key's only, `null`, version) ...
    let obj_from = object_key(bucket, start);
    let mut unversioned = Scan::new(kv, Table::Objects, &obj_from, &end)
        .map(|item| -> Result<Option<VersionEntry>, MetaError> {
            let (k, v) = item?;
            let o: ObjectMeta = dec(&v)?;
            if o.version_id.is_some() {
                return Ok(None);
            }
            let key = String::from_utf8(k[base_len..].to_vec())
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
    let mut versioned = Scan::new(kv, Table::Versions, &ver_from, &end)
        .map(|item| -> Result<(String, Version), MetaError> {
            let (k, v) = item?;
            Ok((key_of_version_key(&k, base_len)?, dec(&v)?))
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

pub(crate) fn scan_objects(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    start: &ScanStart,
    prefix: &str,
    limit: usize,
) -> Result<Vec<ObjectEntry>, MetaError> {
    let base_len = bucket.len() + 1;
    let mut from = match start {
        ScanStart::From(k) => object_key(bucket, k),
        ScanStart::After(k) => after(&object_key(bucket, k)),
        // 0xFF never occurs in UTF-8, so prefix+0xFF sorts after every key under it.
        ScanStart::AfterPrefix(p) => {
            let mut k = object_key(bucket, p);
            k.push(0xFF);
            k
        }
    };
    let pfx = object_key(bucket, prefix);
    if from < pfx {
        from = pfx.clone();
    }
    // Every key under the prefix sorts before prefix+0xFF (as above).
    let mut end = pfx.clone();
    end.push(0xFF);
    let mut out = Vec::new();
    for (k, v) in kv.range(Table::Objects, &from, &end, limit)? {
        let key = String::from_utf8(k[base_len..].to_vec())
            .map_err(|e| MetaError::Backend(e.to_string()))?;
        out.push((key, dec(&v)?));
    }
    Ok(out)
}

pub(crate) fn upload(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<UploadMeta>, MetaError> {
    get(kv, Table::Uploads, &upload_key(bucket, key, upload_id))
}

pub(crate) fn scan_uploads(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    after_upload: Option<(&str, &str)>,
    prefix: &str,
    limit: usize,
) -> Result<Vec<UploadMeta>, MetaError> {
    let pfx = object_key(bucket, prefix);
    let from = match after_upload {
        Some((k, u)) => after(&upload_key(bucket, k, u)).max(pfx.clone()),
        None => pfx.clone(),
    };
    let mut end = pfx;
    end.push(0xFF);
    kv.range(Table::Uploads, &from, &end, limit)?
        .into_iter()
        .map(|(_, v)| dec(&v))
        .collect()
}

pub(crate) fn parts(
    kv: &(impl KvRead + ?Sized),
    upload_id: &str,
    after_part: u32,
    limit: usize,
) -> Result<Vec<PartMeta>, MetaError> {
    let start = part_key(upload_id, after_part.saturating_add(1));
    let end = after(&part_key(upload_id, u32::MAX));
    kv.range(Table::Parts, &start, &end, limit)?
        .into_iter()
        .map(|(_, v)| dec(&v))
        .collect()
}

pub(crate) fn completed_upload(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<CompletedUpload>, MetaError> {
    let c: Option<CompletedUpload> =
        get(kv, Table::Completed, &upload_key(bucket, key, upload_id))?;
    let now = now_millis();
    Ok(c.filter(|c| now - c.completed <= COMPLETED_TTL_MS))
}

pub(crate) fn referenced_blobs(kv: &(impl KvRead + ?Sized)) -> Result<HashSet<String>, MetaError> {
    let mut out = HashSet::new();
    for row in Scan::new(kv, Table::Objects, &[], &[]) {
        let o: ObjectMeta = dec(&row?.1)?;
        out.extend(o.data.blobs().iter().map(|b| b.id.clone()));
    }
    for row in Scan::new(kv, Table::Parts, &[], &[]) {
        let p: PartMeta = dec(&row?.1)?;
        out.insert(p.blob.id);
    }
    for row in Scan::new(kv, Table::Versions, &[], &[]) {
        if let Version::Object(o) = dec(&row?.1)? {
            out.extend(o.data.blobs().iter().map(|b| b.id.clone()));
        }
    }
    Ok(out)
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
            account_block: None,
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
