//! The cloud controller's client of the storage controller's internal API
//! (`storage-controller/src/api.rs`): SigV4 service `sc`, signed as the admin
//! account, JSON answers. The SC makes the ids of volumes and snapshots and keeps
//! their storage; the CLC keeps the EC2 records under the same ids.
//!
//! Errors map to [`Ec2Error`] here, once: the SC's answers to the caller's
//! mistakes (400/404/409/413) are 400s — `InvalidVolume.NotFound`,
//! `InvalidSnapshot.NotFound`, `IncorrectState` and `VolumeInUse` keep their code,
//! any other is `InvalidParameterValue`; an SC that cannot answer (unreachable,
//! timed out, 502/503/504) is `Unavailable` (503, clients retry); anything else
//! (another 5xx, the CLC's key refused) is an internal error (500).
use crate::error::Ec2Error;
use euca_service::client::{ClientError, SignedClient};
use http::{Method, StatusCode};
use serde::Deserialize;
use std::time::Duration;

/// The SigV4 service name the SC verifies.
pub const SIGNING_SERVICE: &str = "sc";

const GIB: u64 = 1 << 30;

/// A volume as the SC reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScVolume {
    pub id: String,
    /// Bytes.
    pub size: u64,
    /// `creating`, `available`, `in-use`, `deleting`.
    pub state: String,
    #[serde(default)]
    pub snapshot_id: Option<String>,
}

impl ScVolume {
    /// The size in GiB, rounded up.
    pub fn size_gib(&self) -> u64 {
        self.size.div_ceil(GIB)
    }
}

/// Upload progress of a snapshot, in chunks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScProgress {
    #[serde(default)]
    pub chunks_total: u64,
    #[serde(default)]
    pub chunks_done: u64,
}

/// A snapshot as the SC reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScSnapshot {
    pub id: String,
    pub volume_id: String,
    /// Bytes.
    pub size: u64,
    /// `pending`, `completed`, `error`.
    pub state: String,
    #[serde(default)]
    pub progress: ScProgress,
    #[serde(default)]
    pub error: Option<String>,
}

impl ScSnapshot {
    /// Progress in percent: 100 once completed, at most 99 before.
    pub fn percent(&self) -> u8 {
        percent(&self.state, &self.progress)
    }
}

/// Percent done: 100 once `completed`; while pending the share of chunks done,
/// never 100 (EC2 shows 100% only for completed snapshots).
pub fn percent(state: &str, p: &ScProgress) -> u8 {
    if state == "completed" {
        return 100;
    }
    if p.chunks_total == 0 {
        return 0;
    }
    let pc = p.chunks_done.min(p.chunks_total) * 100 / p.chunks_total;
    pc.min(99) as u8
}

/// The SC's API, called as the cloud administrator.
#[derive(Clone)]
pub struct ScClient {
    client: SignedClient,
}

impl ScClient {
    /// `url` is the SC API's `http://host:port/`; the key is the admin account's.
    pub fn new(
        url: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
    ) -> Result<ScClient, Ec2Error> {
        let client = SignedClient::new(url, access_key, secret_key, region, SIGNING_SERVICE)
            .map_err(|e| Ec2Error::internal(format!("storage controller client: {e}")))?
            .with_timeout(Duration::from_secs(60));
        Ok(ScClient { client })
    }

    pub fn url(&self) -> &str {
        self.client.base_url()
    }

    /// Creates a volume of `size_gib` and/or from `snapshot_id`.
    pub async fn create_volume(
        &self,
        size_gib: Option<u64>,
        snapshot_id: Option<&str>,
    ) -> Result<ScVolume, Ec2Error> {
        let mut q = Vec::new();
        if let Some(s) = size_gib {
            q.push(format!("size_gib={s}"));
        }
        if let Some(s) = snapshot_id {
            q.push(format!("snapshot_id={}", enc(s)));
        }
        self.client
            .json(Method::POST, &format!("/volumes?{}", q.join("&")))
            .await
            .map_err(map_error)
    }

    /// The volume, or `None` if the SC has none of that id.
    pub async fn volume(&self, id: &str) -> Result<Option<ScVolume>, Ec2Error> {
        absent_is_none(
            self.client
                .json(Method::GET, &format!("/volumes/{}", enc(id)))
                .await,
        )
    }

    /// Deletes the volume; false if the SC had none of that id.
    pub async fn delete_volume(&self, id: &str) -> Result<bool, Ec2Error> {
        let r: Option<serde_json::Value> = absent_is_none(
            self.client
                .json(Method::DELETE, &format!("/volumes/{}", enc(id)))
                .await,
        )?;
        Ok(r.is_some())
    }

    /// Exports the volume to the node at `node` (an IP address) over `protocol`
    /// (`nbd` or `iscsi`, `[clc] volume_protocol`); returns the URI the node opens.
    pub async fn attach_volume(
        &self,
        id: &str,
        node: std::net::IpAddr,
        protocol: &str,
    ) -> Result<String, Ec2Error> {
        #[derive(Deserialize)]
        struct Attached {
            uri: String,
        }
        let a: Attached = self
            .client
            .json(
                Method::POST,
                &format!(
                    "/volumes/{}/attach?node={}&protocol={}",
                    enc(id),
                    enc(&node.to_string()),
                    enc(protocol)
                ),
            )
            .await
            .map_err(map_error)?;
        Ok(a.uri)
    }

    /// Removes the volume's export; false if it was not attached (or is gone).
    pub async fn detach_volume(&self, id: &str) -> Result<bool, Ec2Error> {
        let r: Result<serde_json::Value, ClientError> = self
            .client
            .json(Method::POST, &format!("/volumes/{}/detach", enc(id)))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(ClientError::Status { status, .. })
                if status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT =>
            {
                Ok(false)
            }
            Err(e) => Err(map_error(e)),
        }
    }

    /// Takes a snapshot of the volume (it uploads in the background).
    pub async fn create_snapshot(&self, volume_id: &str) -> Result<ScSnapshot, Ec2Error> {
        self.client
            .json(
                Method::POST,
                &format!("/volumes/{}/snapshots", enc(volume_id)),
            )
            .await
            .map_err(map_error)
    }

    /// The snapshot with its progress, or `None` if the SC has none of that id.
    pub async fn snapshot(&self, id: &str) -> Result<Option<ScSnapshot>, Ec2Error> {
        absent_is_none(
            self.client
                .json(Method::GET, &format!("/snapshots/{}", enc(id)))
                .await,
        )
    }

    /// Deletes the snapshot; false if the SC had none of that id.
    pub async fn delete_snapshot(&self, id: &str) -> Result<bool, Ec2Error> {
        let r: Option<serde_json::Value> = absent_is_none(
            self.client
                .json(Method::DELETE, &format!("/snapshots/{}", enc(id)))
                .await,
        )?;
        Ok(r.is_some())
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn absent_is_none<T>(r: Result<T, ClientError>) -> Result<Option<T>, Ec2Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(map_error(e)),
    }
}

/// The EC2 error for an SC error (see the module doc).
pub fn map_error(e: ClientError) -> Ec2Error {
    if let ClientError::Status {
        status,
        code,
        message,
    } = &e
    {
        if matches!(status.as_u16(), 400 | 404 | 409 | 413) {
            let code: &'static str = match code.as_str() {
                "InvalidVolume.NotFound" => "InvalidVolume.NotFound",
                "InvalidSnapshot.NotFound" => "InvalidSnapshot.NotFound",
                "IncorrectState" => "IncorrectState",
                "VolumeInUse" => "VolumeInUse",
                _ => return Ec2Error::invalid(message.clone()),
            };
            return Ec2Error::state(code, message.clone());
        }
    }
    // Only an SC that did not answer, or said it is overloaded or going away, is
    // worth a retry; any other 5xx is a fault a retry would only repeat.
    let retryable = match e.status() {
        Some(s) => matches!(s.as_u16(), 502..=504),
        None => e.is_unavailable(),
    };
    if retryable {
        return Ec2Error::Unavailable(format!("the storage controller did not answer: {e}"));
    }
    Ec2Error::internal(format!("storage controller: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> ClientError {
        ClientError::Status {
            status: StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn errors_map_to_ec2_codes_and_statuses() {
        let e = map_error(status(409, "VolumeInUse"));
        assert_eq!((e.code().as_ref(), e.status()), ("VolumeInUse", 400));
        let e = map_error(status(409, "IncorrectState"));
        assert_eq!((e.code().as_ref(), e.status()), ("IncorrectState", 400));
        let e = map_error(status(400, "InvalidParameterValue"));
        assert_eq!(
            (e.code().as_ref(), e.status()),
            ("InvalidParameterValue", 400)
        );
        let e = map_error(status(503, "ServiceUnavailable"));
        assert_eq!((e.code().as_ref(), e.status()), ("ServiceUnavailable", 503));
        // A fault of the SC is not retried by clients.
        let e = map_error(status(500, "InternalError"));
        assert_eq!((e.code().as_ref(), e.status()), ("InternalError", 500));
        let e = map_error(ClientError::Transport {
            url: "u".into(),
            message: "refused".into(),
        });
        assert_eq!(e.status(), 503);
        // The CLC's key refused by the SC is the cloud's fault, not the caller's.
        let e = map_error(status(403, "AccessDenied"));
        assert_eq!((e.code().as_ref(), e.status()), ("InternalError", 500));
    }

    #[test]
    fn progress_is_100_only_when_completed() {
        let p = |done, total| ScProgress {
            chunks_total: total,
            chunks_done: done,
        };
        assert_eq!(percent("pending", &p(0, 0)), 0);
        assert_eq!(percent("pending", &p(5, 10)), 50);
        assert_eq!(percent("pending", &p(10, 10)), 99);
        assert_eq!(percent("pending", &p(20, 10)), 99);
        assert_eq!(percent("completed", &p(0, 0)), 100);
        assert_eq!(percent("error", &p(3, 4)), 75);
    }

    #[test]
    fn sizes_round_up_to_gib() {
        let v = |size| ScVolume {
            id: "vol-00000000".into(),
            size,
            state: "available".into(),
            snapshot_id: None,
        };
        assert_eq!(v(GIB).size_gib(), 1);
        assert_eq!(v(GIB + 1).size_gib(), 2);
        assert_eq!(v(3 * GIB).size_gib(), 3);
    }
}
