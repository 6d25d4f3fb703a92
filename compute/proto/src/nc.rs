//! The node controller's API (`euca nc`, default port 8778), relative to the node's
//! base URL (which may carry a path prefix: simulated nodes share one listener):
//!
//! | request | body → answer |
//! | --- | --- |
//! | `GET /v1/node` | → [`NodeReport`] (the CC's poll) |
//! | `PUT /v1/instances/{id}` | [`InstanceSpec`] → [`InstanceReport`] (202-like: `pending`; idempotent) |
//! | `POST /v1/instances/{id}/terminate` | → [`InstanceReport`] (`shutting-down`, then `terminated`) |
//! | `POST /v1/instances/{id}/reboot` | → [`InstanceReport`] |
//! | `GET /v1/instances/{id}/console` | → [`ConsoleOutput`] |
//! | `PUT /v1/instances/{id}/volumes/{vol}` | [`AttachSpec`] → [`VolumeReport`] (`attaching`; idempotent) |
//! | `DELETE /v1/instances/{id}/volumes/{vol}?force=true` | → [`VolumeReport`] (`detaching`, then `detached`) |
//!
//! Long operations answer at once and progress shows in the next poll. Errors:
//! `InstanceNotFound` (404), `InstanceExists` (409), `IncorrectInstanceState` (409),
//! `VolumeNotAttached` (404), `BadRequest` (400), `Forbidden` (403, wrong token).
use std::time::Duration;

use euca_service::bearer::Token;
use http::Method;

use crate::client::{seg, JsonClient};
use crate::types::*;
use crate::ProtoError;

/// The NC's default port.
pub const DEFAULT_PORT: u16 = 8778;

/// The routes of the NC API (parsed from the path after the node's base).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NcEndpoint {
    Node,
    RunInstance(String),
    TerminateInstance(String),
    RebootInstance(String),
    ConsoleOutput(String),
    AttachVolume { instance: String, volume: String },
    DetachVolume { instance: String, volume: String },
    Unknown,
}

impl NcEndpoint {
    /// Parses `method` and the path below the node's base (segments already split
    /// on `/`, not decoded: ids never contain `%`, so an encoded one is unknown).
    pub fn parse(method: &Method, path: &str) -> NcEndpoint {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let s = |x: &&str| x.to_string();
        match (method, segs.as_slice()) {
            (&Method::GET, ["v1", "node"]) => NcEndpoint::Node,
            (&Method::PUT, ["v1", "instances", i]) => NcEndpoint::RunInstance(s(i)),
            (&Method::POST, ["v1", "instances", i, "terminate"]) => {
                NcEndpoint::TerminateInstance(s(i))
            }
            (&Method::POST, ["v1", "instances", i, "reboot"]) => NcEndpoint::RebootInstance(s(i)),
            (&Method::GET, ["v1", "instances", i, "console"]) => NcEndpoint::ConsoleOutput(s(i)),
            (&Method::PUT, ["v1", "instances", i, "volumes", v]) => NcEndpoint::AttachVolume {
                instance: s(i),
                volume: s(v),
            },
            (&Method::DELETE, ["v1", "instances", i, "volumes", v]) => NcEndpoint::DetachVolume {
                instance: s(i),
                volume: s(v),
            },
            _ => NcEndpoint::Unknown,
        }
    }
}

impl euca_service::Endpoint for NcEndpoint {
    fn name(&self) -> &'static str {
        match self {
            NcEndpoint::Node => "DescribeNode",
            NcEndpoint::RunInstance(_) => "RunInstance",
            NcEndpoint::TerminateInstance(_) => "TerminateInstance",
            NcEndpoint::RebootInstance(_) => "RebootInstance",
            NcEndpoint::ConsoleOutput(_) => "GetConsoleOutput",
            NcEndpoint::AttachVolume { .. } => "AttachVolume",
            NcEndpoint::DetachVolume { .. } => "DetachVolume",
            NcEndpoint::Unknown => "Unknown",
        }
    }
    /// The CC's polls, the CLC's reconciler and the nodes' registrations.
    fn routine(&self) -> bool {
        matches!(self, NcEndpoint::Node)
    }
}

/// A CC's client of one node.
#[derive(Clone)]
pub struct NcClient {
    c: JsonClient,
    /// Per-call timeout (the poll's is given per call).
    pub timeout: Duration,
}

impl NcClient {
    pub fn new(base_url: &str, token: Token) -> Self {
        NcClient {
            c: JsonClient::new(base_url, token),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn base(&self) -> &str {
        self.c.base()
    }

    /// The poll, within `timeout`.
    pub async fn describe(&self, timeout: Duration) -> Result<NodeReport, ProtoError> {
        self.c
            .call_capped(
                Method::GET,
                "/v1/node",
                None::<&()>,
                crate::client::MAX_NODE_REPORT,
                timeout,
            )
            .await
    }

    pub async fn run(&self, spec: &InstanceSpec) -> Result<InstanceReport, ProtoError> {
        let path = format!("/v1/instances/{}", seg(&spec.instance_id));
        self.c
            .call(Method::PUT, &path, Some(spec), self.timeout)
            .await
    }

    pub async fn terminate(&self, id: &str) -> Result<InstanceReport, ProtoError> {
        self.c.instance_action(id, "terminate", self.timeout).await
    }

    pub async fn reboot(&self, id: &str) -> Result<InstanceReport, ProtoError> {
        self.c.instance_action(id, "reboot", self.timeout).await
    }

    pub async fn console(&self, id: &str) -> Result<ConsoleOutput, ProtoError> {
        self.c.console(id, self.timeout).await
    }

    pub async fn attach(&self, id: &str, spec: &AttachSpec) -> Result<VolumeReport, ProtoError> {
        self.c.attach(id, spec, self.timeout).await
    }

    pub async fn detach(
        &self,
        id: &str,
        volume: &str,
        force: bool,
    ) -> Result<VolumeReport, ProtoError> {
        self.c.detach(id, volume, force, self.timeout).await
    }
}
