//! A fake cluster for the networking tests: one roomy node that runs whatever it
//! is sent, answers a configurable [`ClusterNet`], records every [`NetworkState`]
//! it is sent and answers with the digest it was told to claim (the real one by
//! default, `None` after a "restart").
use async_trait::async_trait;
use euca_clc::cluster::ClusterApi;
use euca_compute_proto::net::{ClusterNet, NetworkState, NetworkStatus};
use euca_compute_proto::{
    AttachSpec, ConsoleOutput, InstanceReport, InstanceSpec, LaunchReply, LaunchRequest,
    NodeInstanceState, NodeState, NodeView, PlacedInstance, Placement, ProtoError, Resources,
    VolumeReport,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

#[derive(Default)]
pub struct NetCluster {
    pub net: Mutex<ClusterNet>,
    /// What `GET /v1/network` says was applied.
    pub applied: Mutex<Option<String>>,
    /// Every state sent, in order.
    pub sent: Mutex<Vec<NetworkState>>,
    /// Instances it runs: spec and state.
    pub held: Mutex<BTreeMap<String, (InstanceSpec, NodeInstanceState)>>,
    /// `system` mode: the address the node "learned" per instance.
    pub learned: Mutex<BTreeMap<String, Ipv4Addr>>,
    /// The network calls fail as an unreachable CC's do.
    pub down: std::sync::atomic::AtomicBool,
}

impl NetCluster {
    pub fn new(net: ClusterNet) -> NetCluster {
        let c = NetCluster::default();
        *c.net.lock().unwrap() = net;
        c
    }
    pub fn last_sent(&self) -> Option<NetworkState> {
        self.sent.lock().unwrap().last().cloned()
    }
    pub fn sent_count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
    pub fn spec(&self, id: &str) -> InstanceSpec {
        self.held.lock().unwrap()[id].0.clone()
    }
    fn placed(&self, id: &str) -> PlacedInstance {
        let h = self.held.lock().unwrap();
        let learned = self.learned.lock().unwrap().get(id).copied();
        PlacedInstance {
            node: "n1".into(),
            node_state: NodeState::Up,
            instance_id: id.into(),
            report: h.get(id).map(|(s, state)| InstanceReport {
                instance_id: id.into(),
                account: s.account.clone(),
                reservation_id: s.reservation_id.clone(),
                vm_type: s.vm_type.clone(),
                state: *state,
                reason: None,
                mac: s.mac.clone(),
                launched_at: "2026-12-04T00:00:00Z".into(),
                volumes: Vec::new(),
                learned_ip: learned,
                incarnation: s.incarnation,
            }),
        }
    }
}

#[async_trait]
impl ClusterApi for NetCluster {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchReply, ProtoError> {
        let mut h = self.held.lock().unwrap();
        let mut placed = Vec::new();
        for s in &req.instances {
            h.entry(s.instance_id.clone())
                .or_insert_with(|| (s.clone(), NodeInstanceState::Running));
            placed.push(Placement {
                instance_id: s.instance_id.clone(),
                node: "n1".into(),
            });
        }
        Ok(LaunchReply { placed })
    }
    async fn instances(&self) -> Result<Vec<PlacedInstance>, ProtoError> {
        let ids: Vec<String> = self.held.lock().unwrap().keys().cloned().collect();
        Ok(ids.iter().map(|i| self.placed(i)).collect())
    }
    async fn nodes(&self) -> Result<Vec<NodeView>, ProtoError> {
        let r = Resources {
            cores: 64,
            memory_mib: 65536,
            disk_gib: 1000,
        };
        Ok(vec![NodeView {
            name: "n1".into(),
            url: "http://127.0.0.1:8778".into(),
            state: NodeState::Up,
            capacity: r,
            limit: r,
            free: r,
            reserved: Resources::ZERO,
            instances: Vec::new(),
            last_seen: None,
        }])
    }
    async fn terminate(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        {
            let mut h = self.held.lock().unwrap();
            let i = h.get_mut(id).ok_or_else(super::instance_not_found)?;
            i.1 = NodeInstanceState::Terminated;
        }
        Ok(self.placed(id))
    }
    async fn reboot(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        Ok(self.placed(id))
    }
    async fn console(&self, id: &str) -> Result<ConsoleOutput, ProtoError> {
        Ok(ConsoleOutput {
            instance_id: id.into(),
            timestamp: "2026-12-04T00:00:01Z".into(),
            output: String::new(),
        })
    }
    async fn attach(&self, _: &str, _: &AttachSpec) -> Result<VolumeReport, ProtoError> {
        Err(super::instance_not_found())
    }
    async fn detach(&self, _: &str, _: &str, _: bool) -> Result<VolumeReport, ProtoError> {
        Err(super::instance_not_found())
    }
    async fn network(&self) -> Result<NetworkStatus, ProtoError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProtoError::Transport("connection refused".into()));
        }
        Ok(NetworkStatus {
            config: self.net.lock().unwrap().clone(),
            applied: self.applied.lock().unwrap().clone(),
        })
    }
    async fn apply_network(&self, state: &NetworkState) -> Result<NetworkStatus, ProtoError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProtoError::Transport("connection refused".into()));
        }
        self.sent.lock().unwrap().push(state.clone());
        *self.applied.lock().unwrap() = Some(state.digest());
        self.network().await
    }
}
