//! The accounts' public access blocks (S3 Control; the operations are in
//! [`crate::api_account`]): their settings hold on every bucket of the account, on
//! top of each bucket's own block ([`crate::public_access::PublicAccessBlock::union`]),
//! for buckets that exist now and later.
//!
//! Storage: one configuration entry per account (named after its canonical id) on
//! the system bucket [`ACCOUNTS_BUCKET`], so every metadata backend keeps the blocks
//! with no schema of their own, and front ends that share metadata share them. Each
//! front end holds them in memory ([`AccountBlocks`]), re-read at the first request
//! after [`REFRESH`] and at once after a change it made itself: a change made
//! through another front end holds here within [`REFRESH`] (AWS, too, says such a
//! change takes a while to hold everywhere).
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::error::{S3Error, S3Result};
use crate::meta::{BucketMeta, MetaStore};
use crate::public_access::PublicAccessBlock;

/// The system bucket whose configuration entries are the accounts' blocks.
pub const ACCOUNTS_BUCKET: &str = "euca-accounts";
/// How old the in-memory blocks may get before a request re-reads them.
pub const REFRESH: Duration = Duration::from_secs(2);
/// The S3 Control path of the operations.
pub const CONTROL_PATH: &str = "/v20180820/configuration/publicAccessBlock";
/// The name of an account's entry on [`ACCOUNTS_BUCKET`]: this + its canonical id.
const ENTRY_PREFIX: &str = "account-public-access-block/";

/// Whether `b` is [`ACCOUNTS_BUCKET`] holding some account's block: it is not
/// empty (DeleteBucket would drop every account's block).
pub fn holds_blocks(b: &BucketMeta) -> bool {
    b.name == ACCOUNTS_BUCKET && b.configs.keys().any(|k| k.starts_with(ENTRY_PREFIX))
}

/// The entry on [`ACCOUNTS_BUCKET`] of the account with this canonical id.
pub fn entry_name(canonical_id: &str) -> String {
    format!("{ENTRY_PREFIX}{canonical_id}")
}

/// Whether a request is an S3 Control public access block call: its path (after
/// the legacy prefix) and the account header, whatever the host (a path-style
/// bucket named `v20180820` is still reached without the header).
pub fn is_control(path: &str, headers: &HeaderMap) -> bool {
    path == CONTROL_PATH && headers.contains_key("x-amz-account-id")
}

/// The blocks of every account that has one, by canonical id, as last read.
#[derive(Default)]
pub struct AccountBlocks {
    cached: RwLock<Cached>,
    /// One re-read at a time.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    read_at: Option<Instant>,
    blocks: HashMap<String, PublicAccessBlock>,
}

impl AccountBlocks {
    /// The block of the account with this canonical id, if it has one.
    pub fn get(&self, canonical_id: &str) -> Option<PublicAccessBlock> {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        c.blocks.get(canonical_id).copied()
    }

    fn fresh(&self) -> bool {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        c.read_at.is_some_and(|t| t.elapsed() < REFRESH)
    }

    /// Re-reads the blocks if they are older than [`REFRESH`] (before a request is
    /// authorized). A store that cannot be read fails the request: a block is
    /// never skipped.
    pub async fn refresh(&self, meta: &dyn MetaStore, system_id: &str) -> S3Result<()> {
        if self.fresh() {
            return Ok(());
        }
        let _one = self.reading.lock().await;
        if self.fresh() {
            return Ok(());
        }
        let blocks = read_all(meta, system_id).await?;
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        *c = Cached {
            read_at: Some(Instant::now()),
            blocks,
        };
        Ok(())
    }

    /// Forgets what was read (after a change through this front end).
    pub fn invalidate(&self) {
        self.cached
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .read_at = None;
    }
}

/// Every account's block from the store. A bucket of that name that is not the
/// system account's holds none.
pub async fn read_all(
    meta: &dyn MetaStore,
    system_id: &str,
) -> S3Result<HashMap<String, PublicAccessBlock>> {
    let mut out = HashMap::new();
    let Some(b) = meta.bucket(ACCOUNTS_BUCKET).await? else {
        return Ok(out);
    };
    if b.owner.id != system_id {
        return Ok(out);
    }
    for (name, doc) in &b.configs {
        let Some(id) = name.strip_prefix(ENTRY_PREFIX) else {
            continue;
        };
        let pab = crate::xmlreq::public_access_block(&crate::xmlin::parse(doc.as_bytes())?)
            .map_err(|_| S3Error::internal("stored account public access block unreadable"))?;
        out.insert(id.to_string(), pab);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_calls_are_told_by_path_and_account_header() {
        let mut h = HeaderMap::new();
        assert!(
            !is_control(CONTROL_PATH, &h),
            "a bucket v20180820 path-style"
        );
        h.insert("x-amz-account-id", "123456789012".parse().unwrap());
        assert!(is_control(CONTROL_PATH, &h));
        assert!(!is_control(
            "/v20180820/configuration/publicAccessBlock/",
            &h
        ));
        assert!(!is_control("/bucket/key", &h));
    }
}
