//! Walrus configuration: the `[walrus]` section of the TOML config, or flags.
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalrusConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where metadata (`walrus/meta.redb`) and blobs (`walrus/blobs/`) live, unless
    /// `meta_url` and `blob_url` put them elsewhere.
    pub data_dir: PathBuf,
    /// Metadata in PostgreSQL instead of `meta.redb`:
    /// `postgres://user[:password]@host[:port]/dbname` (or libpq's `key=value`
    /// form). Front ends with the same `meta_url` and `blob_url` serve the same
    /// buckets; the schema is created (and migrated) at start.
    pub meta_url: Option<String>,
    /// Connections to PostgreSQL this front end opens at most (one thread each).
    pub meta_max_connections: usize,
    /// Object bytes somewhere else than the data directory: `file:///absolute/path`
    /// (a directory every front end shares, e.g. over NFS; written with fsync), or
    /// `s3://bucket/prefix?endpoint=…&region=…` (any S3-compatible store),
    /// `az://container/prefix?…` (Azure Blob Storage), `gs://bucket/prefix?…`
    /// (Google Cloud Storage); see `blob_remote.rs`. The SSE-S3 master key lives there too, so every
    /// front end decrypts alike.
    pub blob_url: Option<String>,
    /// The region clients sign for and buckets report.
    pub region: String,
    /// Host names under which `BUCKET.<domain>` selects a bucket (virtual-host style).
    pub domains: Vec<String>,
    /// Objects up to this size are stored inside the metadata record.
    pub inline_max_bytes: usize,
    /// Smallest size of a multipart part other than the last (S3: 5 MiB).
    pub min_part_bytes: u64,
    /// Largest single PUT or part (S3: 5 GiB).
    pub max_put_bytes: u64,
    /// Connections beyond this wait in the accept queue.
    pub max_connections: usize,
    /// A request's headers must arrive within this many seconds.
    pub header_timeout_secs: u64,
    /// Largest request head (request line plus headers) in bytes.
    pub max_header_bytes: usize,
    /// Page cache of the metadata database, in MiB.
    pub meta_cache_mib: usize,
    /// How often the lifecycle worker applies the buckets' rules.
    pub lifecycle_interval_secs: u64,
    /// The length of a lifecycle "day" (tests shorten it).
    pub lifecycle_day_secs: u64,
    /// Accept SSE-C keys (`x-amz-server-side-encryption-customer-key`) over plain
    /// HTTP. S3 refuses them without TLS (400 InvalidRequest), and so does Walrus
    /// by default; a loopback test cloud, or a front end that terminates TLS on the
    /// same host, may turn this on.
    pub sse_customer_keys_over_http: bool,
    /// How often buffered server access log records are delivered to their target
    /// buckets (bucket logging); a full buffer is delivered sooner.
    pub access_log_flush_secs: u64,
    /// Large bodies go to local blob files with `O_DIRECT` (past their first MiB):
    /// no copy into the page cache, no hot data pushed out of it, and the first GET
    /// of such an object reads from disk. `false` writes through the page cache, for
    /// a cloud that reads most objects right after writing them.
    pub direct_writes: bool,
    /// SSE-KMS key ids this cloud answers for besides its default `aws/s3` (Walrus is
    /// its own key service: each id's key is derived from the cloud master key, see
    /// `sse.rs`). A request naming another id is refused (`KMS.NotFoundException`).
    pub kms_key_ids: Vec<String>,
}

impl Default for WalrusConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8773".parse().expect("valid address"),
            data_dir: PathBuf::from("walrus-data"),
            meta_url: None,
            meta_max_connections: 16,
            blob_url: None,
            region: "us-east-1".into(),
            domains: vec!["s3.localhost".into(), "localhost".into()],
            inline_max_bytes: 16 * 1024,
            min_part_bytes: 5 * 1024 * 1024,
            max_put_bytes: 5 * 1024 * 1024 * 1024,
            max_connections: 1024,
            header_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            meta_cache_mib: 64,
            lifecycle_interval_secs: 3600,
            lifecycle_day_secs: 86400,
            sse_customer_keys_over_http: false,
            access_log_flush_secs: 60,
            direct_writes: true,
            kms_key_ids: Vec::new(),
        }
    }
}
