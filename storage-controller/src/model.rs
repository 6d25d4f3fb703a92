//! The SC's domain types: volumes, their attachment to a node, snapshots, and the
//! Eucalyptus-style ids that name them.
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const GIB: u64 = 1 << 30;

/// `vol-` or `snap-` followed by 8 lower-case hex digits (Eucalyptus' form).
/// Ids name files, so anything else is refused before it gets near a path.
pub fn valid_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    Creating,
    Available,
    InUse,
    Deleting,
}

/// A volume exported to one node: the NBD export or iSCSI target only that node's
/// address may open.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub node: IpAddr,
    /// The export name: the volume id and 128 random bits, so it cannot be guessed.
    /// Over iSCSI the target is `<iscsi_iqn_prefix>:<export>`.
    pub export: String,
    pub attached_at: String,
    /// NBD (records from before iSCSI have none: NBD) or iSCSI.
    #[serde(default)]
    pub protocol: crate::export::Protocol,
    /// iSCSI: the CHAP credentials the node logs in with (also in the URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapCredentials>,
}

/// One attachment's CHAP user name and secret (random; 128 bits of secret).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    /// Bytes.
    pub size: u64,
    pub state: VolumeState,
    pub created: String,
    /// The snapshot the volume was created from, if any.
    pub snapshot_id: Option<String>,
    pub attachment: Option<Attachment>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    /// Bytes (the volume's size at the cut).
    pub size: u64,
    pub state: SnapshotState,
    pub created: String,
    pub chunk_size: u64,
    /// What the upload did (final once `state` is not pending).
    #[serde(default)]
    pub progress: Progress,
    #[serde(default)]
    pub error: Option<String>,
}

/// Snapshot upload progress, in chunks and bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub chunks_total: u64,
    pub chunks_done: u64,
    /// All-zero chunks: not stored.
    pub chunks_zero: u64,
    /// Chunks already in Walrus (unchanged since an earlier snapshot, or shared).
    pub chunks_reused: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ids() {
        assert!(valid_id("vol", "vol-0123abcd"));
        assert!(valid_id("vol", &new_id("vol")));
        for bad in [
            "vol-0123ABCD",
            "vol-123",
            "vol-0123abcde",
            "snap-0123abcd",
            "vol-../../x",
            "vol-",
        ] {
            assert!(!valid_id("vol", bad), "{bad}");
        }
    }
}
