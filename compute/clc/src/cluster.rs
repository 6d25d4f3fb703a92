//! The cloud controller's view of its clusters: one cluster controller per
//! availability zone, reached through [`ClusterApi`] (implemented by
//! [`CcClient`]; tests put a fake behind it). Errors from a CC map to EC2 errors
//! here, once.
use crate::error::Ec2Error;
use async_trait::async_trait;
use euca_compute_proto::cc::CcClient;
use euca_compute_proto::net::{NetworkState, NetworkStatus};
use euca_compute_proto::{
    codes, AttachSpec, ConsoleOutput, LaunchReply, LaunchRequest, NodeView, PlacedInstance,
    ProtoError, VolumeReport,
};

/// What the CLC asks of a cluster (the CC API, `euca_compute_proto::cc`).
#[async_trait]
pub trait ClusterApi: Send + Sync + 'static {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchReply, ProtoError>;
    async fn instances(&self) -> Result<Vec<PlacedInstance>, ProtoError>;
    async fn nodes(&self) -> Result<Vec<NodeView>, ProtoError>;
    async fn terminate(&self, id: &str) -> Result<PlacedInstance, ProtoError>;
    async fn reboot(&self, id: &str) -> Result<PlacedInstance, ProtoError>;
    async fn console(&self, id: &str) -> Result<ConsoleOutput, ProtoError>;
    async fn attach(&self, id: &str, spec: &AttachSpec) -> Result<VolumeReport, ProtoError>;
    async fn detach(&self, id: &str, volume: &str, force: bool)
        -> Result<VolumeReport, ProtoError>;
    /// The cluster's network config and the state it last applied.
    async fn network(&self) -> Result<NetworkStatus, ProtoError>;
    /// Makes the cluster's network match `state`.
    async fn apply_network(&self, state: &NetworkState) -> Result<NetworkStatus, ProtoError>;
}

#[async_trait]
impl ClusterApi for CcClient {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchReply, ProtoError> {
        CcClient::launch(self, req).await
    }
    async fn instances(&self) -> Result<Vec<PlacedInstance>, ProtoError> {
        CcClient::instances(self).await
    }
    async fn nodes(&self) -> Result<Vec<NodeView>, ProtoError> {
        CcClient::nodes(self).await
    }
    async fn terminate(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        CcClient::terminate(self, id).await
    }
    async fn reboot(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        CcClient::reboot(self, id).await
    }
    async fn console(&self, id: &str) -> Result<ConsoleOutput, ProtoError> {
        CcClient::console(self, id).await
    }
    async fn attach(&self, id: &str, spec: &AttachSpec) -> Result<VolumeReport, ProtoError> {
        CcClient::attach(self, id, spec).await
    }
    async fn detach(
        &self,
        id: &str,
        volume: &str,
        force: bool,
    ) -> Result<VolumeReport, ProtoError> {
        CcClient::detach(self, id, volume, force).await
    }
    async fn network(&self) -> Result<NetworkStatus, ProtoError> {
        CcClient::network(self).await
    }
    async fn apply_network(&self, state: &NetworkState) -> Result<NetworkStatus, ProtoError> {
        CcClient::apply_network(self, state).await
    }
}

/// The EC2 error for a CC's answer: capacity → `InsufficientInstanceCapacity`,
/// a down node or an unreachable CC → `Unavailable` (503, retried), an unknown
/// instance → `InvalidInstanceID.NotFound`, a wrong state → `IncorrectInstanceState`.
pub fn map_error(e: ProtoError) -> Ec2Error {
    match e.code() {
        Some(codes::INSUFFICIENT_CAPACITY) => Ec2Error::state(
            "InsufficientInstanceCapacity",
            "There is not enough capacity to fulfill your request.",
        ),
        Some(codes::NODE_UNAVAILABLE) => {
            Ec2Error::Unavailable(format!("the instance's node is down: {e}"))
        }
        Some(codes::INSTANCE_NOT_FOUND) => {
            Ec2Error::state("IncorrectInstanceState", format!("the cluster: {e}"))
        }
        Some(codes::INCORRECT_STATE) => Ec2Error::state("IncorrectInstanceState", e.to_string()),
        Some(codes::VOLUME_NOT_ATTACHED) => Ec2Error::state("IncorrectState", e.to_string()),
        // `[[clc.clusters]]` names this CC for a zone its `[cc] zone` disagrees with.
        Some(codes::ZONE_MISMATCH) => {
            Ec2Error::internal(format!("misconfigured cluster controller: {e}"))
        }
        _ if e.is_unavailable() => {
            Ec2Error::Unavailable(format!("the cluster controller did not answer: {e}"))
        }
        _ => Ec2Error::internal(format!("cluster controller: {e}")),
    }
}

/// The IP address of the node `node` of the cluster (from its URL's host).
pub(crate) async fn node_ip(
    cluster: &dyn ClusterApi,
    node: &str,
) -> Result<std::net::IpAddr, Ec2Error> {
    let nodes = cluster.nodes().await.map_err(map_error)?;
    let n = nodes.iter().find(|n| n.name == node).ok_or_else(|| {
        Ec2Error::Unavailable(format!("the node {node} is not known to its cluster"))
    })?;
    let url = http::Uri::try_from(n.url.as_str())
        .map_err(|e| Ec2Error::internal(format!("node {node}'s URL {}: {e}", n.url)))?;
    let host = url
        .host()
        .ok_or_else(|| Ec2Error::internal(format!("node {node}'s URL {} has no host", n.url)))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ip);
    }
    let port = url.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| Ec2Error::Unavailable(format!("cannot resolve node {node}'s host {host}")))
}
