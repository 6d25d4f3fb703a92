//! Bucket, object and multipart-upload metadata.
//!
//! [`MetaStore`] is the interface; [`crate::meta_redb::RedbMeta`] is the embedded
//! default. A PostgreSQL backend implements the same trait: every mutation is one
//! [`MetaOp`] applied atomically, with its preconditions checked inside the
//! transaction, so backends with row locks or serializable transactions fit as well.
use crate::acl::{Acl, Owner};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Backend(String),
    /// The store did not answer in time (a lock or statement timeout, or no free
    /// connection): nothing was changed; the client may retry.
    #[error("metadata store busy: {0}")]
    Busy(String),
    /// The commit's answer was lost (the connection broke during COMMIT): the change
    /// may or may not be stored. Blobs it would reference must not be freed.
    #[error("metadata store: {0} (the change may have been committed)")]
    CommitUnknown(String),
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already exists")]
    BucketExists { owner: String },
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("no such key")]
    NoSuchKey,
    #[error("a part changed while the upload was being completed")]
    PartChanged,
    /// Object lock protects the version (retention or legal hold).
    #[error("the object version is protected by object lock")]
    ObjectLocked,
    /// The change would shorten or remove a retention the caller may not.
    #[error("the retention may not be shortened or removed")]
    RetentionLocked,
    /// A [`WriteCondition`] did not hold when the write was committed.
    #[error("the write's precondition does not hold")]
    PreconditionFailed,
    /// The object was replaced between the check of a request and its change.
    #[error("the object changed while the request was being made")]
    Changed,
}

/// What tells one write of an object from another under the same version id (a
/// `null` version is overwritten in place): an ACL or tag change authorized against
/// one write must not land on the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStamp {
    pub last_modified: i64,
    pub etag: String,
    pub owner: String,
}

impl ObjectStamp {
    pub fn of(o: &ObjectMeta) -> Self {
        ObjectStamp {
            last_modified: o.last_modified,
            etag: o.etag.clone(),
            owner: o.owner.id.clone(),
        }
    }
}

/// The object a delete was decided on (the lifecycle worker's scan): the write
/// ([`ObjectStamp`]) and its tags, which a rule may filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundObject {
    pub stamp: ObjectStamp,
    pub tags: Vec<(String, String)>,
}

impl FoundObject {
    pub fn of(o: &ObjectMeta) -> Self {
        FoundObject {
            stamp: ObjectStamp::of(o),
            tags: o.tags.clone(),
        }
    }

    /// Whether `o` is still the object found, with the same tags.
    pub fn is(&self, o: &ObjectMeta) -> bool {
        self.stamp == ObjectStamp::of(o) && self.tags == o.tags
    }
}

/// A condition a write commits under (`If-None-Match: *`, `If-Match: <etag>`),
/// checked inside the transaction, so of racing conditional writers exactly one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// No object with the key exists.
    Absent,
    /// The current object's ETag is this (hex, no quotes, as [`ObjectMeta::etag`]).
    EtagIs(String),
}

impl WriteCondition {
    /// Whether the condition holds for the current object.
    pub fn holds(&self, current: Option<&ObjectMeta>) -> bool {
        match (self, current) {
            (WriteCondition::Absent, None) => true,
            (WriteCondition::EtagIs(e), Some(o)) => &o.etag == e,
            _ => false,
        }
    }
}

/// A stored blob holding some or all of an object's bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRef {
    pub id: String,
    pub size: u64,
}

impl BlobRef {
    /// The blobs of an object stored as `blobs` (in order) that hold bytes of
    /// `range`, each with the part of the range it holds, relative to its start
    /// (never an empty part).
    pub fn slices(
        blobs: &[BlobRef],
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = (&BlobRef, std::ops::Range<u64>)> {
        let mut offset = 0u64;
        blobs.iter().filter_map(move |b| {
            let (start, end) = (offset, offset + b.size);
            offset = end;
            let (from, to) = (range.start.max(start), range.end.min(end));
            (from < to).then(|| (b, from - start..to - start))
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ObjectData {
    /// Small objects live in the metadata record itself.
    Inline(Vec<u8>),
    /// One blob for a simple PUT; one per part, in order, for a multipart upload.
    Blobs(Vec<BlobRef>),
}

impl ObjectData {
    pub fn blobs(&self) -> &[BlobRef] {
        match self {
            ObjectData::Inline(_) => &[],
            ObjectData::Blobs(b) => b,
        }
    }
}

/// The standard content headers S3 stores with an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub website_redirect: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketMeta {
    pub name: String,
    pub owner: Owner,
    /// Unix milliseconds.
    pub created: i64,
    pub region: String,
    pub acl: Acl,
    /// The bucket's sub-resource documents by name (`cors`, `policy`, `tagging`,
    /// `public-access-block`, …; see [`BucketConfig`]), each kept as the canonical
    /// text its Get operation answers with, validated when it was put.
    #[serde(default)]
    pub configs: std::collections::BTreeMap<String, String>,
    /// Not stored: the public access block of the owner's account (S3 Control), as
    /// [`crate::handler::load_bucket`] found it for the request (`None`: the account
    /// has none). [`crate::authz`] enforces it on top of the bucket's own.
    #[serde(skip)]
    pub account_block: Option<crate::public_access::PublicAccessBlock>,
}

/// The names of [`BucketMeta::configs`] entries.
pub struct BucketConfig;

impl BucketConfig {
    pub const CORS: &'static str = "cors";
    pub const POLICY: &'static str = "policy";
    pub const TAGGING: &'static str = "tagging";
    pub const PUBLIC_ACCESS_BLOCK: &'static str = "public-access-block";
    /// `Enabled` or `Suspended` (absent: never enabled); see [`Versioning`].
    pub const VERSIONING: &'static str = "versioning";
    /// The ObjectLockConfiguration XML (canonical); present once object lock is on.
    pub const OBJECT_LOCK: &'static str = "object-lock";
    /// The LifecycleConfiguration XML (canonical).
    pub const LIFECYCLE: &'static str = "lifecycle";
    /// The ServerSideEncryptionConfiguration XML (canonical): the bucket's default
    /// encryption, see [`crate::sse`].
    pub const ENCRYPTION: &'static str = "encryption";
    /// The object ownership setting's name (`BucketOwnerEnforced`, ...); absent:
    /// `ObjectWriter` (see `crate::ownership`).
    pub const OWNERSHIP: &'static str = "ownership";
    /// Bucket logging's `LoggingEnabled` (JSON, see `crate::logging`).
    pub const LOGGING: &'static str = "logging";
}

/// A bucket's versioning state. Once enabled, a bucket is never unversioned again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a write replaces the object, a delete removes it.
    Unversioned,
    /// Every write adds a version with a fresh id; a delete adds a delete marker.
    Enabled,
    /// Writes and deletes replace the `null` version; other versions stay.
    Suspended,
}

impl Versioning {
    pub const ENABLED: &'static str = "Enabled";
    pub const SUSPENDED: &'static str = "Suspended";
}

/// The version id of the version written while versioning was off or suspended.
pub const NULL_VERSION: &str = "null";

impl BucketMeta {
    /// A sub-resource document, if the bucket has one.
    pub fn config(&self, name: &str) -> Option<&str> {
        self.configs.get(name).map(String::as_str)
    }

    pub fn versioning(&self) -> Versioning {
        match self.config(BucketConfig::VERSIONING) {
            Some(Versioning::ENABLED) => Versioning::Enabled,
            Some(_) => Versioning::Suspended,
            None => Versioning::Unversioned,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// Hex MD5 of the bytes, or `md5-of-md5s-N` for multipart objects (no quotes).
    pub etag: String,
    /// Unix milliseconds.
    pub last_modified: i64,
    pub owner: Owner,
    pub headers: ContentHeaders,
    /// `x-amz-meta-*` with the prefix removed, names lower-case.
    pub user_meta: Vec<(String, String)>,
    /// (algorithm name, base64 value), e.g. ("CRC32", "DUoRhQ=="); a composite
    /// multipart checksum keeps its `-N` suffix.
    pub checksums: Vec<(String, String)>,
    pub acl: Acl,
    pub data: ObjectData,
    /// Part sizes for multipart objects (for `partNumber` reads and `x-amz-mp-parts-count`).
    pub part_sizes: Vec<u64>,
    /// `COMPOSITE` or `FULL_OBJECT` when `checksums` is not empty (a single PUT's is
    /// full-object).
    pub checksum_type: Option<String>,
    /// Each part's checksum (base64, the algorithm of `checksums`), in part order, for
    /// a multipart object whose upload had an algorithm; empty otherwise.
    pub part_checksums: Vec<String>,
    /// Object tags (key, value) in the order they were given.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Its version id once the bucket had versioning (`null` included); `None` for an
    /// object written before, which is the bucket's `null` version. Set by the store.
    #[serde(default)]
    pub version_id: Option<String>,
    /// Object lock retention: this version may not be deleted before it ends.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Object lock legal hold: this version may not be deleted while it is on.
    #[serde(default)]
    pub legal_hold: bool,
    /// Server-side encryption of its bytes (`None`: stored as sent).
    #[serde(default)]
    pub sse: Option<Sse>,
}

/// How an object's (or an upload's) bytes are encrypted at rest; see [`crate::sse`].
/// The key that encrypts the bytes (the data key) is random per object and stored
/// only sealed: with the cloud's master key (SSE-S3) or with the customer's own key
/// (SSE-C), which is itself never stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sse {
    pub kind: SseKind,
    /// The data key sealed with AES-256-GCM: nonce (12) ‖ ciphertext (32) ‖ tag (16).
    pub sealed_key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SseKind {
    /// `x-amz-server-side-encryption: AES256`: sealed with the cloud master key.
    S3,
    /// SSE-C: sealed with the customer's key, which every read must present.
    Customer,
    /// `x-amz-server-side-encryption: aws:kms`: sealed with the key Walrus derives
    /// from the cloud master key for a KMS key id; `sealed_key` is that id's length
    /// (one byte), the id, then the seal.
    Kms,
}

/// An object lock retention period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retention {
    pub mode: RetentionMode,
    /// Unix milliseconds.
    pub until: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RetentionMode {
    /// Whoever may bypass governance (the bucket owner, asking for it) may shorten or
    /// remove it, and delete the version.
    Governance,
    /// Nobody may shorten or remove it, or delete the version, before it ends.
    Compliance,
}

impl RetentionMode {
    pub fn name(self) -> &'static str {
        match self {
            RetentionMode::Governance => "GOVERNANCE",
            RetentionMode::Compliance => "COMPLIANCE",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GOVERNANCE" => Some(RetentionMode::Governance),
            "COMPLIANCE" => Some(RetentionMode::Compliance),
            _ => None,
        }
    }
}

impl ObjectMeta {
    /// Whether object lock keeps this version from being deleted at `now` (ms), for a
    /// caller who does (`bypass_governance`) or does not bypass governance retention.
    pub fn locked(&self, now: i64, bypass_governance: bool) -> bool {
        self.legal_hold
            || self.retention.as_ref().is_some_and(|r| {
                r.until > now && !(bypass_governance && r.mode == RetentionMode::Governance)
            })
    }
}

impl ObjectMeta {
    /// The version id S3 shows for it.
    pub fn version(&self) -> &str {
        self.version_id.as_deref().unwrap_or(NULL_VERSION)
    }
}

/// One version of a key in a bucket that has had versioning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Version {
    /// An object; its `version_id` is set. (Boxed: a marker is small; postcard
    /// writes a box as its content.)
    Object(Box<ObjectMeta>),
    DeleteMarker(DeleteMarker),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteMarker {
    pub version_id: String,
    pub owner: Owner,
    /// Unix milliseconds.
    pub last_modified: i64,
}

impl Version {
    pub fn version_id(&self) -> &str {
        match self {
            Version::Object(o) => o.version(),
            Version::DeleteMarker(m) => &m.version_id,
        }
    }
}

/// An entry of a version scan: a key's versions come newest first, and the first is
/// the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub key: String,
    pub version: Version,
    pub is_latest: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadMeta {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: i64,
    pub owner: Owner,
    pub headers: ContentHeaders,
    pub user_meta: Vec<(String, String)>,
    pub acl: Acl,
    pub checksum_algorithm: Option<String>,
    /// `COMPOSITE` or `FULL_OBJECT` when `checksum_algorithm` is set.
    pub checksum_type: Option<String>,
    /// Tags the completed object gets (`x-amz-tagging` at initiation).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The object lock retention and legal hold the completed object gets.
    #[serde(default)]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub legal_hold: bool,
    /// The encryption every part and the completed object get (one data key).
    #[serde(default)]
    pub sse: Option<Sse>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartMeta {
    pub number: u32,
    pub blob: BlobRef,
    /// Hex MD5 of the part.
    pub etag: String,
    pub last_modified: i64,
    pub checksums: Vec<(String, String)>,
}

/// What a completed multipart upload produced, kept for a while after completion so a
/// repeated CompleteMultipartUpload (a client retrying after a lost answer, or after
/// a crash between commit and answer) gets the same answer instead of NoSuchUpload.
/// Written in the same transaction as the object; expires after [`COMPLETED_TTL_MS`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompletedUpload {
    /// [`parts_digest`] of the (number, ETag) list the upload was completed with.
    pub parts_digest: String,
    pub etag: String,
    /// Canonical id of the upload's initiator.
    pub owner_id: String,
    pub checksums: Vec<(String, String)>,
    /// `COMPOSITE` or `FULL_OBJECT` when the object has a checksum.
    pub checksum_type: Option<String>,
    /// Unix milliseconds.
    pub completed: i64,
}

/// How long a completed upload is remembered (24 hours).
pub const COMPLETED_TTL_MS: i64 = 24 * 3600 * 1000;

/// A digest of a part list: (part number, hex MD5 ETag) in order.
pub fn parts_digest<'a>(parts: impl IntoIterator<Item = (u32, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (n, etag) in parts {
        h.update(n.to_be_bytes());
        h.update((etag.len() as u32).to_be_bytes());
        h.update(etag.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What [`MetaOp::UpdateObject`] changes.
#[derive(Debug, Clone)]
pub enum ObjectChange {
    Acl(Acl),
    Tags(Vec<(String, String)>),
}

impl ObjectChange {
    pub fn apply(self, o: &mut ObjectMeta) {
        match self {
            ObjectChange::Acl(acl) => o.acl = acl,
            ObjectChange::Tags(tags) => o.tags = tags,
        }
    }
}

/// One atomic change. Each op checks its own preconditions inside the transaction and
/// reports what it replaced, so the caller can delete blobs that are no longer used.
#[derive(Debug, Clone)]
pub enum MetaOp {
    CreateBucket(BucketMeta),
    DeleteBucket {
        name: String,
    },
    SetBucketAcl {
        name: String,
        acl: Acl,
    },
    /// Sets (`Some`) or removes (`None`) one of [`BucketMeta::configs`].
    SetBucketConfig {
        name: String,
        config: String,
        doc: Option<String>,
    },
    PutObject {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        cond: Option<WriteCondition>,
    },
    /// Removes the object; in a bucket with versioning, adds a delete marker instead
    /// (replacing the `null` version when suspended).
    DeleteObject {
        bucket: String,
        key: String,
        /// Who deletes (the owner of a delete marker).
        by: Owner,
        /// Only if the current object is still this one with these tags, else
        /// [`MetaError::Changed`] (the lifecycle worker deletes what it found due,
        /// never a newer write or one whose tags changed since).
        unchanged: Option<FoundObject>,
    },
    /// Removes one version for good (an object's or a delete marker); if it was the
    /// latest, the next newest becomes the current object (none if it is a marker).
    DeleteVersion {
        bucket: String,
        key: String,
        version_id: String,
        /// `x-amz-bypass-governance-retention` from someone allowed to.
        bypass_governance: bool,
    },
    /// Sets a version's object lock retention and/or legal hold (`None`: unchanged).
    /// A COMPLIANCE retention can only be extended; a GOVERNANCE one shortened or
    /// removed only with `bypass_governance`.
    SetObjectLock {
        bucket: String,
        key: String,
        /// `None`: the current version.
        version_id: Option<String>,
        retention: Option<Option<Retention>>,
        legal_hold: Option<bool>,
        bypass_governance: bool,
    },
    /// Changes the ACL or the tags of one version of an object, nothing else.
    UpdateObject {
        bucket: String,
        key: String,
        /// `None`: the current version.
        version_id: Option<String>,
        /// The object the change was authorized against, if it must still be the
        /// one stored ([`ObjectStamp`]).
        unchanged: Option<ObjectStamp>,
        change: ObjectChange,
    },
    CreateUpload(UploadMeta),
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        part: PartMeta,
    },
    /// `parts` are the exact parts (number, blob id) the object is built from; if any
    /// changed since they were read, the op fails with [`MetaError::PartChanged`].
    /// Also records a [`CompletedUpload`] and drops expired ones.
    CompleteUpload {
        bucket: String,
        key: String,
        upload_id: String,
        parts: Vec<(u32, String)>,
        meta: ObjectMeta,
        cond: Option<WriteCondition>,
    },
    AbortUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
}

/// What an op replaced or removed: blobs that nothing references any more.
#[derive(Debug, Default)]
pub struct OpOutcome {
    pub freed_blobs: Vec<BlobRef>,
    /// For DeleteObject: whether an object existed; for DeleteVersion: the version.
    pub existed: bool,
    /// In a bucket with versioning: the version the op wrote (PutObject,
    /// CompleteUpload, DeleteObject's marker) or removed (DeleteVersion).
    pub version_id: Option<String>,
    /// DeleteObject added a delete marker; DeleteVersion removed one.
    pub delete_marker: bool,
}

/// An entry of a key-ordered object scan.
pub type ObjectEntry = (String, ObjectMeta);

#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    async fn bucket(&self, name: &str) -> Result<Option<BucketMeta>, MetaError>;
    async fn buckets(&self) -> Result<Vec<BucketMeta>, MetaError>;
    /// The current object (none if the latest version is a delete marker).
    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, MetaError>;
    /// One version by id (`null` included).
    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Version>, MetaError>;
    /// Versions of `bucket`'s keys under `prefix`, in key order and newest first per
    /// key, starting after `after`: (key, None) skips that key's versions, (key,
    /// Some(version id)) the versions up to and including that one. At most `limit`.
    async fn scan_versions(
        &self,
        bucket: &str,
        after: Option<(&str, Option<&str>)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<VersionEntry>, MetaError>;
    /// Objects of `bucket` with key > `after` (or >= `from` when `inclusive`), in
    /// binary key order, at most `limit`, stopping at the first key without `prefix`.
    async fn scan_objects(
        &self,
        bucket: &str,
        start: &ScanStart,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ObjectEntry>, MetaError>;
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadMeta>, MetaError>;
    /// Uploads of a bucket in (key, upload id) order, starting after (key, upload id).
    async fn scan_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UploadMeta>, MetaError>;
    /// Parts of an upload with number > `after`, ascending.
    async fn parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartMeta>, MetaError>;
    /// The record of a recently completed upload, if it has not expired.
    async fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<CompletedUpload>, MetaError>;
    /// Every blob id referenced by any object or part (for garbage collection).
    async fn referenced_blobs(&self) -> Result<std::collections::HashSet<String>, MetaError>;
    /// Applies one op atomically and durably.
    async fn apply(&self, op: MetaOp) -> Result<OpOutcome, MetaError>;
    /// Whether any bucket has ever had a logging configuration (one row: cheaper
    /// than reading every bucket).
    async fn logging_seen(&self) -> Result<bool, MetaError>;
    /// Whether other front ends may change the store (PostgreSQL): what this process
    /// learns from its own requests (e.g. that a bucket has logging on) is then not
    /// all there is.
    fn shared(&self) -> bool {
        false
    }
    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: true if `holder`
    /// has it now (no one else held it, or their lease expired). Background work
    /// that must run once per cloud (lifecycle) takes it before each step. A store
    /// only one front end opens (redb) always grants it.
    async fn lease(&self, _name: &str, _holder: &str, _ttl_ms: i64) -> Result<bool, MetaError> {
        Ok(true)
    }
}

/// Where an ordered scan starts.
#[derive(Debug, Clone)]
pub enum ScanStart {
    /// At the first key >= this.
    From(String),
    /// At the first key > this.
    After(String),
    /// After every key that starts with this prefix.
    AfterPrefix(String),
}

/// Now, as metadata timestamps are stored: milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A metadata timestamp (milliseconds since the Unix epoch) as a date.
pub fn millis_to_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod blob_slices_tests {
    use super::BlobRef;

    #[test]
    fn slices_cut_a_range_across_blobs() {
        let blobs: Vec<BlobRef> = [("a", 10), ("b", 0), ("c", 5), ("d", 10)]
            .into_iter()
            .map(|(id, size)| BlobRef {
                id: id.into(),
                size,
            })
            .collect();
        let cut = |r| {
            BlobRef::slices(&blobs, r)
                .map(|(b, r)| (b.id.as_str(), r))
                .collect::<Vec<_>>()
        };
        assert_eq!(cut(0..25), [("a", 0..10), ("c", 0..5), ("d", 0..10)]);
        assert_eq!(cut(8..12), [("a", 8..10), ("c", 0..2)]);
        assert_eq!(cut(10..15), [("c", 0..5)]);
        assert_eq!(cut(24..25), [("d", 9..10)]);
        assert_eq!(cut(5..5), []);
        assert_eq!(cut(25..30), []);
    }
}
