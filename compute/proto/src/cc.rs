//! The cluster controller's API for the cloud controller and the nodes (`euca cc`,
//! on the same listener as the image tracker):
//!
//! | request | body → answer |
//! | --- | --- |
//! | `GET /v1/nodes` | → `Vec<`[`NodeView`]`>` (also `euca nodes`) |
//! | `POST /v1/nodes` | [`RegisterNode`] → [`NodeView`] (an NC joining; idempotent) |
//! | `GET /v1/instances` | → `Vec<`[`PlacedInstance`]`>` (from the last polls, never waits on a node) |
//! | `POST /v1/launch` | [`LaunchRequest`] → [`LaunchReply`] (409 `InsufficientInstanceCapacity`: nothing placed) |
//! | `POST /v1/instances/{id}/terminate` | → [`PlacedInstance`] |
//! | `POST /v1/instances/{id}/reboot` | → [`PlacedInstance`] |
//! | `GET /v1/instances/{id}/console` | → [`ConsoleOutput`] |
//! | `PUT /v1/instances/{id}/volumes/{vol}` | [`AttachSpec`] → [`VolumeReport`] |
//! | `DELETE /v1/instances/{id}/volumes/{vol}?force=true` | → [`VolumeReport`] |
//! | `GET /v1/network` | → [`NetworkStatus`] (the cluster's network config, the state applied) |
//! | `PUT /v1/network` | [`NetworkState`] → [`NetworkStatus`] (applied before answering) |
//!
//! Instance calls are forwarded to the node that holds the instance; a node that
//! is `DOWN` answers `NodeUnavailable` (503). `InstanceNotFound` (404) for an
//! instance the CC has never placed nor seen.
use std::time::Duration;

use euca_service::bearer::Token;
use http::Method;

use crate::client::JsonClient;
use crate::net::{NetworkState, NetworkStatus};
use crate::types::*;
use crate::ProtoError;

/// The routes of the CC API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CcEndpoint {
    Nodes,
    RegisterNode,
    Instances,
    Launch,
    TerminateInstance(String),
    RebootInstance(String),
    ConsoleOutput(String),
    AttachVolume { instance: String, volume: String },
    DetachVolume { instance: String, volume: String },
    Network,
    ApplyNetwork,
    Unknown,
}

impl CcEndpoint {
    pub fn parse(method: &Method, path: &str) -> CcEndpoint {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let s = |x: &&str| x.to_string();
        match (method, segs.as_slice()) {
            (&Method::GET, ["v1", "nodes"]) => CcEndpoint::Nodes,
            (&Method::POST, ["v1", "nodes"]) => CcEndpoint::RegisterNode,
            (&Method::GET, ["v1", "instances"]) => CcEndpoint::Instances,
            (&Method::POST, ["v1", "launch"]) => CcEndpoint::Launch,
            (&Method::POST, ["v1", "instances", i, "terminate"]) => {
                CcEndpoint::TerminateInstance(s(i))
            }
            (&Method::POST, ["v1", "instances", i, "reboot"]) => CcEndpoint::RebootInstance(s(i)),
            (&Method::GET, ["v1", "instances", i, "console"]) => CcEndpoint::ConsoleOutput(s(i)),
            (&Method::PUT, ["v1", "instances", i, "volumes", v]) => CcEndpoint::AttachVolume {
                instance: s(i),
                volume: s(v),
            },
            (&Method::DELETE, ["v1", "instances", i, "volumes", v]) => CcEndpoint::DetachVolume {
                instance: s(i),
                volume: s(v),
            },
            (&Method::GET, ["v1", "network"]) => CcEndpoint::Network,
            (&Method::PUT, ["v1", "network"]) => CcEndpoint::ApplyNetwork,
            _ => CcEndpoint::Unknown,
        }
    }
}

impl euca_service::Endpoint for CcEndpoint {
    fn name(&self) -> &'static str {
        match self {
            CcEndpoint::Nodes => "DescribeNodes",
            CcEndpoint::RegisterNode => "RegisterNode",
            CcEndpoint::Instances => "DescribeInstances",
            CcEndpoint::Launch => "RunInstances",
            CcEndpoint::TerminateInstance(_) => "TerminateInstance",
            CcEndpoint::RebootInstance(_) => "RebootInstance",
            CcEndpoint::ConsoleOutput(_) => "GetConsoleOutput",
            CcEndpoint::AttachVolume { .. } => "AttachVolume",
            CcEndpoint::DetachVolume { .. } => "DetachVolume",
            CcEndpoint::Network => "DescribeNetwork",
            CcEndpoint::ApplyNetwork => "ApplyNetwork",
            CcEndpoint::Unknown => "Unknown",
        }
    }
    /// The CC's polls, the CLC's reconciler and the nodes' registrations.
    fn routine(&self) -> bool {
        matches!(
            self,
            CcEndpoint::Instances | CcEndpoint::RegisterNode | CcEndpoint::Network
        )
    }
}

/// The CLC's (and `euca nodes`', and an NC's registration) client of one CC.
#[derive(Clone)]
pub struct CcClient {
    c: JsonClient,
    pub timeout: Duration,
}

impl CcClient {
    pub fn new(base_url: &str, token: Token) -> Self {
        CcClient {
            c: JsonClient::new(base_url, token),
            timeout: Duration::from_secs(15),
        }
    }

    pub fn base(&self) -> &str {
        self.c.base()
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ProtoError> {
        self.c
            .call(Method::GET, "/v1/nodes", None::<&()>, self.timeout)
            .await
    }

    pub async fn register(&self, node: &RegisterNode) -> Result<NodeView, ProtoError> {
        self.c
            .call(Method::POST, "/v1/nodes", Some(node), self.timeout)
            .await
    }

    pub async fn instances(&self) -> Result<Vec<PlacedInstance>, ProtoError> {
        self.c
            .call(Method::GET, "/v1/instances", None::<&()>, self.timeout)
            .await
    }

    pub async fn launch(&self, req: &LaunchRequest) -> Result<LaunchReply, ProtoError> {
        self.c
            .call(Method::POST, "/v1/launch", Some(req), self.timeout)
            .await
    }

    pub async fn terminate(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        self.c.instance_action(id, "terminate", self.timeout).await
    }

    pub async fn reboot(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
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

    /// The cluster's network config and the state it last applied.
    pub async fn network(&self) -> Result<NetworkStatus, ProtoError> {
        self.c
            .call(Method::GET, "/v1/network", None::<&()>, self.timeout)
            .await
    }

    /// Make the cluster's network match `state` (answers once applied).
    pub async fn apply_network(&self, state: &NetworkState) -> Result<NetworkStatus, ProtoError> {
        self.c
            .call(Method::PUT, "/v1/network", Some(state), self.timeout)
            .await
    }
}
