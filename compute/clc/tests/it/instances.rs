//! Instances through the action functions with a fake cluster (no CC, no NC) and,
//! for attachments, a fake storage controller on loopback: all-or-nothing
//! launches, ClientToken idempotency, error codes, state mapping by the
//! reconciler, expiry of terminated instances, cloud-unique MACs, attach/detach
//! progression and re-driven interrupted launches.
use crate::common;

use async_trait::async_trait;
use common::{call, texts};
use euca_clc::cluster::ClusterApi;
use euca_clc::model::{Image, ImageState, ImageType, Instance, InstanceState, Volume, VolumeState};
use euca_clc::{Clc, ClcConfig, Ec2Error};
use euca_compute_proto::net::{NetworkState, NetworkStatus};
use euca_compute_proto::{
    codes, AttachSpec, ConsoleOutput, InstanceReport, LaunchReply, LaunchRequest, NodeAttachState,
    NodeInstanceState, NodeState, NodeView, PlacedInstance, Placement, ProtoError, Resources,
    StateReason, VolumeReport,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const A: &str = "111111111111";
const B: &str = "222222222222";
const ZONE: &str = "eucalyptus1a";

fn code(r: Result<String, Ec2Error>) -> String {
    r.expect_err("an error").code().to_string()
}

/// One instance as the fake node holds it.
#[derive(Clone)]
struct Held {
    spec_mac: String,
    /// The spec's incarnation (a StartInstances' run is a new one).
    incarnation: u32,
    state: NodeInstanceState,
    reason: Option<StateReason>,
    volumes: Vec<VolumeReport>,
}

/// A cluster of one node with `slots` instance slots.
#[derive(Default)]
struct Fake {
    slots: Mutex<usize>,
    held: Mutex<BTreeMap<String, Held>>,
    node_state: Mutex<Option<NodeState>>,
    launches: AtomicUsize,
    /// Launch calls answered with a transport failure before working.
    fail_launches: AtomicUsize,
    /// Terminate calls answered "no such instance" before working (the node has
    /// not got the run yet).
    lost_terminates: AtomicUsize,
    terminates: Mutex<Vec<String>>,
    /// Launch calls refused (not a capacity answer) while set.
    refuse_launches: AtomicBool,
    /// The next launch call waits for this before answering.
    launch_gate: Mutex<Option<Arc<tokio::sync::Notify>>>,
    /// The next instances call waits for this before answering.
    list_gate: Mutex<Option<Arc<tokio::sync::Notify>>>,
    /// Instances calls made.
    lists: AtomicUsize,
}

impl Fake {
    fn new(slots: usize) -> Arc<Fake> {
        let f = Fake::default();
        *f.slots.lock().unwrap() = slots;
        Arc::new(f)
    }
    fn set(&self, id: &str, state: NodeInstanceState, reason: Option<&str>) {
        let mut h = self.held.lock().unwrap();
        let i = h.get_mut(id).expect("held");
        i.state = state;
        i.reason = reason.map(|m| StateReason {
            code: "Server.InternalError".into(),
            message: m.into(),
        });
    }
    fn set_volume(&self, id: &str, vol: &str, state: NodeAttachState) {
        let mut h = self.held.lock().unwrap();
        let i = h.get_mut(id).expect("held");
        for v in i.volumes.iter_mut().filter(|v| v.volume_id == vol) {
            v.state = state;
        }
    }
    fn placed(&self, id: &str) -> PlacedInstance {
        let h = self.held.lock().unwrap();
        let state = self.node_state.lock().unwrap().unwrap_or(NodeState::Up);
        let i = h.get(id);
        PlacedInstance {
            node: "n1".into(),
            node_state: state,
            instance_id: id.into(),
            report: i.map(|i| InstanceReport {
                instance_id: id.into(),
                account: A.into(),
                reservation_id: "r-x".into(),
                vm_type: euca_compute_proto::VmType {
                    name: "m1.small".into(),
                    cores: 1,
                    memory_mib: 256,
                    disk_gib: 5,
                },
                state: i.state,
                reason: i.reason.clone(),
                mac: i.spec_mac.clone(),
                incarnation: i.incarnation,
                launched_at: "2026-12-04T00:00:00Z".into(),
                volumes: i.volumes.clone(),
                learned_ip: None,
            }),
        }
    }
}

#[async_trait]
impl ClusterApi for Fake {
    async fn launch(&self, req: &LaunchRequest) -> Result<LaunchReply, ProtoError> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let gate = self.launch_gate.lock().unwrap().take();
        if let Some(g) = gate {
            g.notified().await;
        }
        if self.refuse_launches.load(Ordering::SeqCst) {
            return Err(ProtoError::Refused {
                status: 400,
                code: "InvalidParameterValue".into(),
                message: "refused".into(),
            });
        }
        if self.fail_launches.load(Ordering::SeqCst) > 0 {
            self.fail_launches.fetch_sub(1, Ordering::SeqCst);
            return Err(ProtoError::Transport("connection refused".into()));
        }
        let mut h = self.held.lock().unwrap();
        let mut slots = self.slots.lock().unwrap();
        let mut placed = Vec::new();
        let mut new = Vec::new();
        for s in &req.instances {
            if h.contains_key(&s.instance_id) {
                placed.push(s.instance_id.clone());
            } else if *slots > new.len() {
                new.push(s.clone());
                placed.push(s.instance_id.clone());
            }
        }
        if placed.len() < req.min_count as usize {
            return Err(ProtoError::Refused {
                status: 409,
                code: codes::INSUFFICIENT_CAPACITY.into(),
                message: "no room".into(),
            });
        }
        *slots -= new.len();
        for s in new {
            h.insert(
                s.instance_id.clone(),
                Held {
                    spec_mac: s.mac.clone(),
                    incarnation: s.incarnation,
                    state: NodeInstanceState::Pending,
                    reason: None,
                    volumes: Vec::new(),
                },
            );
        }
        Ok(LaunchReply {
            placed: placed
                .into_iter()
                .map(|id| Placement {
                    instance_id: id,
                    node: "n1".into(),
                })
                .collect(),
        })
    }
    async fn instances(&self) -> Result<Vec<PlacedInstance>, ProtoError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let gate = self.list_gate.lock().unwrap().take();
        if let Some(g) = gate {
            g.notified().await;
        }
        let ids: Vec<String> = self.held.lock().unwrap().keys().cloned().collect();
        Ok(ids.iter().map(|i| self.placed(i)).collect())
    }
    async fn nodes(&self) -> Result<Vec<NodeView>, ProtoError> {
        let slots = *self.slots.lock().unwrap() as u64;
        let r = |n: u64| Resources {
            cores: n as u32,
            memory_mib: 256 * n,
            disk_gib: 5 * n,
        };
        Ok(vec![NodeView {
            name: "n1".into(),
            url: "http://127.0.0.1:8778".into(),
            state: NodeState::Up,
            capacity: r(8),
            limit: r(8),
            free: r(slots),
            reserved: Resources::ZERO,
            instances: Vec::new(),
            last_seen: None,
        }])
    }
    async fn terminate(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        self.terminates.lock().unwrap().push(id.to_string());
        if self.lost_terminates.load(Ordering::SeqCst) > 0 {
            self.lost_terminates.fetch_sub(1, Ordering::SeqCst);
            return Err(common::instance_not_found());
        }
        {
            let mut h = self.held.lock().unwrap();
            let Some(i) = h.get_mut(id) else {
                return Err(common::instance_not_found());
            };
            if i.state != NodeInstanceState::Terminated {
                i.state = NodeInstanceState::Terminated;
                *self.slots.lock().unwrap() += 1;
            }
        }
        Ok(self.placed(id))
    }
    async fn reboot(&self, id: &str) -> Result<PlacedInstance, ProtoError> {
        Ok(self.placed(id))
    }
    async fn console(&self, id: &str) -> Result<ConsoleOutput, ProtoError> {
        if !self.held.lock().unwrap().contains_key(id) {
            return Err(common::instance_not_found());
        }
        use base64::Engine;
        Ok(ConsoleOutput {
            instance_id: id.into(),
            timestamp: "2026-12-04T00:00:01Z".into(),
            output: base64::engine::general_purpose::STANDARD.encode("TG-BOOTED\n"),
        })
    }
    async fn attach(&self, id: &str, spec: &AttachSpec) -> Result<VolumeReport, ProtoError> {
        let mut h = self.held.lock().unwrap();
        let i = h.get_mut(id).ok_or_else(common::instance_not_found)?;
        assert!(spec.export.uri.starts_with("nbd://"), "{}", spec.export.uri);
        let r = VolumeReport {
            volume_id: spec.volume_id.clone(),
            device: spec.device.clone(),
            state: NodeAttachState::Attaching,
            error: None,
        };
        i.volumes.push(r.clone());
        Ok(r)
    }
    async fn detach(
        &self,
        id: &str,
        volume: &str,
        _force: bool,
    ) -> Result<VolumeReport, ProtoError> {
        let mut h = self.held.lock().unwrap();
        let i = h.get_mut(id).ok_or_else(common::instance_not_found)?;
        let v = i
            .volumes
            .iter_mut()
            .find(|v| v.volume_id == volume)
            .ok_or_else(|| ProtoError::Refused {
                status: 404,
                code: codes::VOLUME_NOT_ATTACHED.into(),
                message: "not attached".into(),
            })?;
        v.state = NodeAttachState::Detaching;
        Ok(v.clone())
    } // Networking off, as every CC answers until its router lands: no NIC, nothing sent.
    async fn network(&self) -> Result<NetworkStatus, ProtoError> {
        Ok(NetworkStatus::default())
    }
    async fn apply_network(&self, _: &NetworkState) -> Result<NetworkStatus, ProtoError> {
        panic!("a cluster with networking off is never sent a network state")
    }
}

fn config() -> ClcConfig {
    ClcConfig {
        zone: Some(ZONE.into()),
        ..ClcConfig::default()
    }
}

fn open(dir: &std::path::Path) -> Clc {
    common::open_with(dir, config())
}

fn image(id: &str, kind: ImageType) -> Image {
    Image {
        id: id.into(),
        name: format!("name-{id}"),
        description: None,
        image_type: kind,
        state: ImageState::Available,
        state_reason: None,
        state_reason_code: None,
        owner_id: A.into(),
        architecture: "x86_64".into(),
        location: None,
        root_device_type: "instance-store".into(),
        root_device_name: "/dev/sda1".into(),
        block_devices: Vec::new(),
        kernel_id: None,
        ramdisk_id: None,
        installed_id: Some(format!("{:0>64}", id.len())),
        public: false,
        launch_permissions: Vec::new(),
        created: "2026-12-04T00:00:00.000Z".into(),
        tags: Default::default(),
    }
}

/// A Clc with a fake cluster of `slots` slots and account A's images
/// `emi-00000001` (kernel `eki-00000001`, ramdisk `eri-00000001`).
fn setup(dir: &std::path::Path, slots: usize) -> (Clc, Arc<Fake>) {
    let clc = open(dir);
    let fake = Fake::new(slots);
    assert!(clc.set_cluster_api(ZONE, fake.clone()));
    add_images(&clc);
    (clc, fake)
}

/// [`setup`] with a clock running `offset` seconds ahead of now.
fn setup_clocked(dir: &std::path::Path, slots: usize) -> (Clc, Arc<Fake>, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let mut clc = open(dir);
    let o = offset.clone();
    clc.set_clock(move || {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(o.load(Ordering::SeqCst))
    });
    let fake = Fake::new(slots);
    clc.set_cluster_api(ZONE, fake.clone());
    add_images(&clc);
    (clc, fake, offset)
}

fn add_images(clc: &Clc) {
    let mut emi = image("emi-00000001", ImageType::Machine);
    emi.kernel_id = Some("eki-00000001".into());
    emi.ramdisk_id = Some("eri-00000001".into());
    for i in [
        emi,
        image("eki-00000001", ImageType::Kernel),
        image("eri-00000001", ImageType::Ramdisk),
    ] {
        clc.db.insert_new(A, &i).unwrap();
    }
}

fn all_instances(clc: &Clc) -> Vec<Instance> {
    clc.db
        .scan::<Instance>(None, None, 10_000)
        .unwrap()
        .into_iter()
        .map(|o| o.record)
        .collect()
}

async fn run(clc: &Clc, extra: &[(&str, &str)]) -> Result<String, Ec2Error> {
    let mut p = vec![("ImageId", "emi-00000001")];
    p.extend_from_slice(extra);
    call(clc, A, "RunInstances", &p).await
}

/// StopInstances on a running instance, then a pass: stopped.
async fn stop_running(clc: &Clc, id: &str) {
    let s = call(clc, A, "StopInstances", &[("InstanceId.1", id)])
        .await
        .unwrap();
    assert_eq!(texts(&s, "name"), ["stopping", "running"], "{s}");
    euca_clc::reconcile::pass(clc).await.unwrap();
    assert_eq!(describe_states(clc).await, ["stopped"]);
}

async fn describe_states(clc: &Clc) -> Vec<String> {
    let x = call(clc, A, "DescribeInstances", &[]).await.unwrap();
    texts(&x, "instanceState")
        .iter()
        .flat_map(|s| texts(s, "name"))
        .collect()
}

#[tokio::test]
async fn min_count_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), 2);
    let e = run(&clc, &[("MinCount", "3"), ("MaxCount", "5")]).await;
    assert_eq!(code(e), "InsufficientInstanceCapacity");
    assert!(all_instances(&clc).is_empty(), "no record is left behind");
    let x = call(&clc, A, "DescribeInstances", &[]).await.unwrap();
    assert!(texts(&x, "instanceId").is_empty(), "{x}");
    // Fewer than Max fit but at least Min: the ones that fit, in one reservation.
    let x = run(&clc, &[("MinCount", "1"), ("MaxCount", "5")])
        .await
        .unwrap();
    let ids = texts(&x, "instanceId");
    assert_eq!(ids.len(), 2, "{x}");
    assert_eq!(
        all_instances(&clc).len(),
        2,
        "the unplaced records are deleted"
    );
    assert_eq!(texts(&x, "reservationId").len(), 1);
    assert_eq!(texts(&x, "instanceType"), ["m1.small", "m1.small"]);
    assert_eq!(texts(&x, "kernelId")[0], "eki-00000001");
    assert_eq!(texts(&x, "groupName")[0], "default");
    assert!(texts(&x, "groupId")[0].starts_with("sg-"));
    assert_eq!(describe_states(&clc).await, ["pending", "pending"]);
}

#[tokio::test]
async fn client_token_same_params_same_reservation_else_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 10);
    let first = run(&clc, &[("ClientToken", "tok-1"), ("MaxCount", "2")])
        .await
        .unwrap();
    let again = run(&clc, &[("ClientToken", "tok-1"), ("MaxCount", "2")])
        .await
        .unwrap();
    assert_eq!(
        texts(&first, "reservationId"),
        texts(&again, "reservationId")
    );
    assert_eq!(texts(&first, "instanceId"), texts(&again, "instanceId"));
    assert_eq!(fake.launches.load(Ordering::SeqCst), 1, "launched once");
    let other = run(&clc, &[("ClientToken", "tok-1"), ("MaxCount", "3")]).await;
    assert_eq!(code(other), "IdempotentParameterMismatch");
    assert_eq!(all_instances(&clc).len(), 2);
    // TagSpecification tags the instances; tag filters see them.
    let x = run(
        &clc,
        &[
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
        ],
    )
    .await
    .unwrap();
    let tagged = texts(&x, "instanceId");
    let x = call(
        &clc,
        A,
        "DescribeInstances",
        &[("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "web")],
    )
    .await
    .unwrap();
    assert_eq!(texts(&x, "instanceId"), tagged);
    assert!(
        x.contains("<tagSet><item><key>Name</key><value>web</value></item></tagSet>"),
        "{x}"
    );
}

#[tokio::test]
async fn bad_parameters_have_their_codes_and_others_see_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), 10);
    let e = call(&clc, A, "RunInstances", &[("ImageId", "emi-0000ffff")]).await;
    assert_eq!(code(e), "InvalidAMIID.NotFound");
    assert_eq!(
        code(run(&clc, &[("InstanceType", "m9.huge")]).await),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(run(&clc, &[("KeyName", "nokey")]).await),
        "InvalidKeyPair.NotFound"
    );
    assert_eq!(
        code(run(&clc, &[("SecurityGroup.1", "nogroup")]).await),
        "InvalidGroup.NotFound"
    );
    assert_eq!(
        code(run(&clc, &[("UserData", "!!notbase64")]).await),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(run(&clc, &[("Placement.AvailabilityZone", "elsewhere")]).await),
        "InvalidParameterValue"
    );
    use base64::Engine;
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 16 * 1024 + 1]);
    assert_eq!(
        code(run(&clc, &[("UserData", &big)]).await),
        "InvalidParameterValue"
    );
    // Another account cannot launch A's private image, nor see A's instance.
    assert_eq!(
        code(call(&clc, B, "RunInstances", &[("ImageId", "emi-00000001")]).await),
        "InvalidAMIID.NotFound"
    );
    let x = run(&clc, &[]).await.unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    for action in [
        "DescribeInstances",
        "TerminateInstances",
        "RebootInstances",
        "GetConsoleOutput",
    ] {
        let e = call(
            &clc,
            B,
            action,
            &[("InstanceId.1", &id), ("InstanceId", &id)],
        )
        .await;
        assert_eq!(code(e), "InvalidInstanceID.NotFound", "{action}");
    }
    let x = call(&clc, B, "DescribeInstances", &[]).await.unwrap();
    assert!(texts(&x, "instanceId").is_empty());
    // Without a cluster: 503, and nothing recorded.
    let dir2 = tempfile::tempdir().unwrap();
    let lone = open(dir2.path());
    add_images(&lone);
    let e = run(&lone, &[]).await.unwrap_err();
    assert_eq!((e.code().as_ref(), e.status()), ("ServiceUnavailable", 503));
    assert!(all_instances(&lone).is_empty());
}

#[tokio::test]
async fn the_reconciler_maps_node_states_to_ec2_states() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 10);
    let x = run(&clc, &[("MaxCount", "3")]).await.unwrap();
    let ids = texts(&x, "instanceId");
    for id in &ids {
        fake.set(id, NodeInstanceState::Running, None);
    }
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["running"; 3]);
    let out = call(&clc, A, "GetConsoleOutput", &[("InstanceId", &ids[0])])
        .await
        .unwrap();
    assert_eq!(texts(&out, "output"), ["VEctQk9PVEVECg=="]);
    // The guest powered off (instance store) → terminated, initiated by it;
    // a failed one → terminated with the node's reason.
    fake.set(&ids[0], NodeInstanceState::Shutoff, None);
    fake.set(
        &ids[1],
        NodeInstanceState::Failed,
        Some("qemu exited: boom"),
    );
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let x = call(&clc, A, "DescribeInstances", &[("InstanceId.1", &ids[0])])
        .await
        .unwrap();
    assert_eq!(texts(&x, "code")[0], "48", "{x}");
    assert!(
        x.contains("<code>Client.InstanceInitiatedShutdown</code>"),
        "{x}"
    );
    let x = call(&clc, A, "DescribeInstances", &[("InstanceId.1", &ids[1])])
        .await
        .unwrap();
    assert!(x.contains("<code>Server.InternalError</code>"), "{x}");
    assert!(x.contains("boom"), "{x}");
    // A node that is down: last state kept, with a reason.
    *fake.node_state.lock().unwrap() = Some(NodeState::Down);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let x = call(&clc, A, "DescribeInstances", &[("InstanceId.1", &ids[2])])
        .await
        .unwrap();
    assert_eq!(texts(&x, "name")[0], "running", "{x}");
    assert!(x.contains("<code>Server.NodeDown</code>"), "{x}");
    *fake.node_state.lock().unwrap() = Some(NodeState::Up);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let x = call(&clc, A, "DescribeInstances", &[("InstanceId.1", &ids[2])])
        .await
        .unwrap();
    assert!(!x.contains("stateReason"), "{x}");
    // Filters.
    let x = call(
        &clc,
        A,
        "DescribeInstances",
        &[
            ("Filter.1.Name", "instance-state-name"),
            ("Filter.1.Value.1", "running"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(texts(&x, "instanceId"), [ids[2].clone()]);
    let x = call(
        &clc,
        A,
        "DescribeInstanceStatus",
        &[("IncludeAllInstances", "true")],
    )
    .await
    .unwrap();
    assert_eq!(texts(&x, "instanceId").len(), 3, "{x}");
}

#[tokio::test]
async fn terminated_instances_stay_an_hour_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake, offset) = setup_clocked(dir.path(), 4);
    let x = run(&clc, &[]).await.unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    let t = call(&clc, A, "TerminateInstances", &[("InstanceId.1", &id)])
        .await
        .unwrap();
    assert_eq!(texts(&t, "code"), ["32", "0"], "{t}");
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["terminated"]);
    offset.store(3500, Ordering::SeqCst);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["terminated"], "still kept");
    offset.store(3700, Ordering::SeqCst);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert!(describe_states(&clc).await.is_empty(), "expired");
    assert!(all_instances(&clc).is_empty());
}

#[tokio::test]
async fn stop_and_start_need_an_ebs_root() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), 4);
    let x = run(&clc, &[]).await.unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    for action in ["StopInstances", "StartInstances"] {
        let e = call(&clc, A, action, &[("InstanceId.1", &id)]).await;
        assert_eq!(code(e), "UnsupportedOperation", "{action}");
    }
    assert_eq!(describe_states(&clc).await, ["pending"]);
}

#[tokio::test]
async fn fifty_instances_get_fifty_distinct_macs_with_the_cloud_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 50);
    let x = run(&clc, &[("MinCount", "50"), ("MaxCount", "50")])
        .await
        .unwrap();
    assert_eq!(texts(&x, "instanceId").len(), 50);
    let prefix = euca_clc::mac::prefix(&clc.db).unwrap();
    let first = u8::from_str_radix(&prefix[..2], 16).unwrap();
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {prefix}");
    let macs = texts(&x, "macAddress");
    assert_eq!(macs.len(), 50);
    let distinct: std::collections::BTreeSet<_> = macs.iter().collect();
    assert_eq!(distinct.len(), 50);
    for m in &macs {
        assert!(m.starts_with(&format!("{prefix}:")), "{m}");
        assert_eq!(m.len(), 17);
        assert_eq!(m.to_lowercase(), *m);
    }
    // The node got the same MACs.
    let held: std::collections::BTreeSet<String> = fake
        .held
        .lock()
        .unwrap()
        .values()
        .map(|h| h.spec_mac.clone())
        .collect();
    assert_eq!(held, macs.iter().cloned().collect());
}

/// A fake SC API on loopback: attach answers an NBD URI, detach and delete answer.
async fn fake_sc() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                c.lock().unwrap().push(line.clone());
                let body = if line.contains("/attach") {
                    r#"{"volume":{},"uri":"nbd://127.0.0.1:10809/x"}"#.to_string()
                } else if line.starts_with("POST /volumes?") {
                    let n = c.lock().unwrap().len();
                    format!(
                        r#"{{"id":"vol-{n:08x}","size":1073741824,"state":"available","snapshot_id":"snap-00000001"}}"#
                    )
                } else {
                    r#"{}"#.to_string()
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, calls)
}

fn volume(id: &str) -> Volume {
    Volume {
        id: id.into(),
        size_gib: 1,
        snapshot_id: None,
        zone: ZONE.into(),
        state: VolumeState::Available,
        created: "2026-12-04T00:00:00.000Z".into(),
        attachment: None,
        tags: Default::default(),
        client_token: None,
    }
}

fn vol_status(clc: &Clc, id: &str) -> (VolumeState, Option<&'static str>) {
    let v = clc.db.get::<Volume>(id).unwrap().unwrap().record;
    (v.state, v.attachment.map(|a| a.state.as_str()))
}

#[tokio::test]
async fn attach_and_detach_progress_with_the_node_and_the_sc() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 4);
    let (sc_url, sc_calls) = fake_sc().await;
    clc.set_sc(euca_clc::sc::ScClient::new(&sc_url, "ak", "sk", "eucalyptus").unwrap());
    clc.db.insert_new(A, &volume("vol-00000001")).unwrap();
    // Every record commit below is the actions' and the reconciler's: none may
    // run on the runtime (this test's thread).
    let writes = euca_clc::write_check::runtime_writes();
    let x = run(&clc, &[]).await.unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    let att = [
        ("VolumeId", "vol-00000001"),
        ("InstanceId", id.as_str()),
        ("Device", "/dev/sdf"),
    ];
    // Not running yet.
    assert_eq!(
        code(call(&clc, A, "AttachVolume", &att).await),
        "IncorrectInstanceState"
    );
    fake.set(&id, NodeInstanceState::Running, None);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let a = call(&clc, A, "AttachVolume", &att).await.unwrap();
    assert_eq!(texts(&a, "status"), ["attaching"]);
    assert_eq!(
        vol_status(&clc, "vol-00000001"),
        (VolumeState::InUse, Some("attaching"))
    );
    assert!(
        sc_calls.lock().unwrap().iter().any(|l| l
            .contains("/volumes/vol%2D00000001/attach?node=127%2E0%2E0%2E1")
            || l.contains("attach?node=127")),
        "{:?}",
        sc_calls.lock().unwrap()
    );
    // Another account cannot detach it; a second attach is refused.
    assert_eq!(
        code(call(&clc, B, "DetachVolume", &[("VolumeId", "vol-00000001")]).await),
        "InvalidVolume.NotFound"
    );
    assert_eq!(
        code(call(&clc, A, "AttachVolume", &att).await),
        "VolumeInUse"
    );
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        vol_status(&clc, "vol-00000001").1,
        Some("attaching"),
        "not before the node says so"
    );
    fake.set_volume(&id, "vol-00000001", NodeAttachState::Attached);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        vol_status(&clc, "vol-00000001"),
        (VolumeState::InUse, Some("attached"))
    );
    let x = call(&clc, A, "DescribeInstances", &[]).await.unwrap();
    assert!(x.contains("<deviceName>/dev/sdf</deviceName><ebs><volumeId>vol-00000001</volumeId><status>attached</status>"), "{x}");
    let d = call(&clc, A, "DetachVolume", &[("VolumeId", "vol-00000001")])
        .await
        .unwrap();
    assert_eq!(texts(&d, "status"), ["detaching"]);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        vol_status(&clc, "vol-00000001"),
        (VolumeState::InUse, Some("detaching"))
    );
    fake.set_volume(&id, "vol-00000001", NodeAttachState::Detached);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        vol_status(&clc, "vol-00000001"),
        (VolumeState::Available, None)
    );
    assert!(sc_calls
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("/detach")));
    let x = call(&clc, A, "DescribeInstances", &[]).await.unwrap();
    assert!(!x.contains("vol-00000001"), "{x}");
    // A forced detach, and one refused by the node, commit off the runtime too.
    fake.set_volume(&id, "vol-00000001", NodeAttachState::Attached);
    call(&clc, A, "AttachVolume", &att).await.unwrap();
    call(
        &clc,
        A,
        "DetachVolume",
        &[("VolumeId", "vol-00000001"), ("Force", "true")],
    )
    .await
    .unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        euca_clc::write_check::runtime_writes(),
        writes,
        "record commits made on the async runtime"
    );
}

#[tokio::test]
async fn launching_records_are_re_driven_exactly_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The cluster does not answer: the records stay, hidden.
        let (clc, fake) = setup(dir.path(), 4);
        fake.fail_launches.store(1, Ordering::SeqCst);
        let e = run(&clc, &[("MaxCount", "2")]).await.unwrap_err();
        assert_eq!(e.status(), 503);
        let recs = all_instances(&clc);
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.state == InstanceState::Launching));
        assert!(
            describe_states(&clc).await.is_empty(),
            "launching is not shown"
        );
    }
    // "Restart": a new Clc on the same records, a cluster that answers.
    let clc = open(dir.path());
    let fake = Fake::new(4);
    clc.set_cluster_api(ZONE, fake.clone());
    euca_clc::reconcile::pass(&clc).await.unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.launches.load(Ordering::SeqCst), 1, "re-driven once");
    assert_eq!(fake.held.lock().unwrap().len(), 2);
    assert_eq!(describe_states(&clc).await, ["pending", "pending"]);

    // Interrupted, and the cluster has no room when re-driven: records go.
    let dir = tempfile::tempdir().unwrap();
    {
        let (clc, fake) = setup(dir.path(), 4);
        fake.fail_launches.store(1, Ordering::SeqCst);
        assert!(run(&clc, &[]).await.is_err());
    }
    let clc = open(dir.path());
    let fake = Fake::new(0);
    clc.set_cluster_api(ZONE, fake.clone());
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert!(all_instances(&clc).is_empty());
    assert_eq!(fake.launches.load(Ordering::SeqCst), 1);
}

/// A pass that read a reservation's records while its RunInstances was still
/// placing them, and asks whether the launch is in flight only after the call
/// returned, neither re-drives it nor deletes what it placed (CI saw an instance
/// vanish from DescribeInstances right after a 50-instance RunInstances).
#[tokio::test]
async fn a_pass_that_read_a_launch_in_flight_leaves_it_to_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 4);
    let (go_launch, go_list) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    *fake.launch_gate.lock().unwrap() = Some(go_launch.clone());
    *fake.list_gate.lock().unwrap() = Some(go_list.clone());
    let returned = AtomicBool::new(false);
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(2));
    let launch = async {
        let r = run(&clc, &[("MinCount", "4"), ("MaxCount", "4")]).await;
        returned.store(true, Ordering::SeqCst);
        r
    };
    let pass = async {
        // The records are written and the cluster is placing them.
        while fake.launches.load(Ordering::SeqCst) != 1 {
            tick().await;
        }
        euca_clc::reconcile::pass(&clc).await
    };
    let steer = async {
        // The pass has read the records (`launching`) and lists the cluster:
        // the launch finishes, and then a later launch would be refused.
        while fake.lists.load(Ordering::SeqCst) != 1 {
            tick().await;
        }
        go_launch.notify_one();
        while !returned.load(Ordering::SeqCst) {
            tick().await;
        }
        fake.refuse_launches.store(true, Ordering::SeqCst);
        go_list.notify_one();
    };
    let (launched, passed, ()) = tokio::join!(launch, pass, steer);
    let x = launched.unwrap();
    passed.unwrap();
    assert_eq!(texts(&x, "instanceId").len(), 4);
    assert_eq!(all_instances(&clc).len(), 4, "placed records kept");
    assert_eq!(describe_states(&clc).await, ["pending"; 4]);
    assert_eq!(fake.launches.load(Ordering::SeqCst), 1, "not re-driven");
}

#[tokio::test]
async fn verbose_zones_count_from_the_clusters_live_view() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), 3);
    let x = call(
        &clc,
        A,
        "DescribeAvailabilityZones",
        &[("ZoneName.1", "verbose")],
    )
    .await
    .unwrap();
    // m1.small (1 core, 256 MiB, 5 GiB): 3 free of 8.
    assert!(
        x.contains("<zoneName>|- m1.small</zoneName><zoneState>0003 / 0008"),
        "{x}"
    );
}

#[tokio::test]
async fn ebs_root_from_a_snapshot_image_then_stop_start_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 4);
    let (sc_url, sc_calls) = fake_sc().await;
    clc.set_sc(euca_clc::sc::ScClient::new(&sc_url, "ak", "sk", "eucalyptus").unwrap());
    let mut ebs = image("emi-000000e1", ImageType::Machine);
    ebs.root_device_type = "ebs".into();
    ebs.installed_id = None;
    ebs.block_devices = vec![euca_clc::model::BlockDevice {
        device_name: "/dev/sda1".into(),
        snapshot_id: Some("snap-00000001".into()),
        volume_size: Some(1),
        delete_on_termination: true,
        virtual_name: None,
    }];
    clc.db.insert_new(A, &ebs).unwrap();
    let writes = euca_clc::write_check::runtime_writes();
    let x = call(&clc, A, "RunInstances", &[("ImageId", "emi-000000e1")])
        .await
        .unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    assert_eq!(texts(&x, "rootDeviceType"), ["ebs"]);
    let vol = texts(&x, "volumeId")[0].clone();
    assert!(vol.starts_with("vol-"), "{x}");
    assert_eq!(
        vol_status(&clc, &vol),
        (VolumeState::InUse, Some("attached"))
    );
    let rec = clc.db.get::<Instance>(&id).unwrap().unwrap().record;
    match &rec.spec.root {
        euca_compute_proto::RootDisk::Volume { volume_id, export } => {
            assert_eq!(volume_id, &vol);
            assert!(export.uri.starts_with("nbd://"));
        }
        other => panic!("root {other:?}"),
    }
    assert!(sc_calls
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("snapshot_id=snap")));
    fake.set(&id, NodeInstanceState::Running, None);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    // Stop: the node's instance ends, the volume stays the instance's.
    stop_running(&clc, &id).await;
    assert_eq!(
        vol_status(&clc, &vol),
        (VolumeState::InUse, Some("attached"))
    );
    // Start: the next run of the id (incarnation 1) on its node. Until the node
    // has it, the cluster still reports the stopped run's tombstone (terminated):
    // that is not the new run's end.
    let s = call(&clc, A, "StartInstances", &[("InstanceId.1", &id)])
        .await
        .unwrap();
    assert_eq!(texts(&s, "name"), ["pending", "stopped"], "{s}");
    let rec = clc.db.get::<Instance>(&id).unwrap().unwrap().record;
    assert_eq!(rec.spec.incarnation, 1);
    assert_eq!(fake.held.lock().unwrap()[&id].incarnation, 0);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["pending"]);
    // The node gets the run.
    {
        let mut h = fake.held.lock().unwrap();
        let i = h.get_mut(&id).unwrap();
        i.incarnation = 1;
        i.state = NodeInstanceState::Running;
        *fake.slots.lock().unwrap() -= 1;
    }
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["running"]);
    stop_running(&clc, &id).await;
    // Terminating a stopped instance deletes its DeleteOnTermination root.
    let t = call(&clc, A, "TerminateInstances", &[("InstanceId.1", &id)])
        .await
        .unwrap();
    assert_eq!(texts(&t, "name"), ["terminated", "stopped"], "{t}");
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert!(
        clc.db.get::<Volume>(&vol).unwrap().is_none(),
        "the root volume is deleted"
    );
    assert!(sc_calls
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with(&format!("DELETE /volumes/{}", vol.replace('-', "%2D")))));
    // Fewer nodes with room than MinCount: nothing made, nothing left.
    let e = call(
        &clc,
        A,
        "RunInstances",
        &[
            ("ImageId", "emi-000000e1"),
            ("MinCount", "9"),
            ("MaxCount", "9"),
        ],
    )
    .await;
    assert_eq!(code(e), "InsufficientInstanceCapacity");
    assert_eq!(all_instances(&clc).len(), 1, "only the terminated one");
    assert_eq!(
        euca_clc::write_check::runtime_writes(),
        writes,
        "record commits made on the async runtime"
    );
}

/// A terminate that reached the node before the run did: the record ended, then
/// the guest came up. The reconciler ends it and its slot comes back. A guest of
/// this cloud with no record at all is ended after the grace; another cloud's
/// (another MAC prefix) is left alone.
#[tokio::test]
async fn guests_without_a_live_record_are_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake, offset) = setup_clocked(dir.path(), 10);
    let x = run(&clc, &[]).await.unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    assert_eq!(*fake.slots.lock().unwrap(), 9);
    fake.lost_terminates.store(2, Ordering::SeqCst);
    call(&clc, A, "TerminateInstances", &[("InstanceId.1", &id)])
        .await
        .unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(describe_states(&clc).await, ["terminated"]);
    // The run lands now.
    fake.set(&id, NodeInstanceState::Running, None);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(
        fake.held.lock().unwrap()[&id].state,
        NodeInstanceState::Terminated,
        "the late guest is ended"
    );
    assert_eq!(*fake.slots.lock().unwrap(), 10, "its capacity is free");
    assert_eq!(describe_states(&clc).await, ["terminated"]);

    // Guests with no record: one of this cloud, one of another.
    let prefix = clc
        .db
        .get::<euca_clc::model::MacRecord>(euca_clc::mac::PREFIX_ID)
        .unwrap()
        .unwrap()
        .record
        .value;
    let other = if prefix.starts_with("06") {
        "0a:00:00"
    } else {
        "06:00:00"
    };
    for (gid, mac) in [
        ("i-0000stray", format!("{prefix}:00:00:01")),
        ("i-000other", format!("{other}:00:00:01")),
    ] {
        fake.held.lock().unwrap().insert(
            gid.into(),
            Held {
                spec_mac: mac,
                incarnation: 0,
                state: NodeInstanceState::Running,
                reason: None,
                volumes: Vec::new(),
            },
        );
    }
    *fake.slots.lock().unwrap() -= 2;
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let state = |g: &str| fake.held.lock().unwrap()[g].state;
    assert_eq!(
        state("i-0000stray"),
        NodeInstanceState::Running,
        "within the grace"
    );
    offset.store(euca_clc::reconcile::STRAY_GRACE_SECS + 1, Ordering::SeqCst);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(state("i-0000stray"), NodeInstanceState::Terminated);
    assert_eq!(
        state("i-000other"),
        NodeInstanceState::Running,
        "not this cloud's"
    );
    assert!(!fake
        .terminates
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "i-000other"));
    assert_eq!(*fake.slots.lock().unwrap(), 9);
}

/// DescribeInstanceStatus: IncludeAllInstances and the status filters decide
/// inside the paging (every page is full while more match), the checks follow
/// the state, and a node the cluster reports DOWN makes the system check
/// `impaired`.
#[tokio::test]
async fn instance_status_filters_pages_and_down_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), 10);
    let x = run(&clc, &[("MinCount", "4"), ("MaxCount", "4")])
        .await
        .unwrap();
    let ids = texts(&x, "instanceId");
    for id in &ids[..2] {
        fake.set(id, NodeInstanceState::Running, None);
    }
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let status = |extra: Vec<(&'static str, String)>| {
        let clc = &clc;
        async move {
            let p: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(clc, A, "DescribeInstanceStatus", &p).await.unwrap()
        }
    };
    // Pages of one: each holds one of the two running instances.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut p = vec![("MaxResults", "1".to_string())];
        if let Some(t) = &token {
            p.push(("NextToken", t.clone()));
        }
        let x = status(p).await;
        let got = texts(&x, "instanceId");
        token = texts(&x, "nextToken").first().cloned();
        if got.is_empty() {
            assert!(token.is_none(), "an empty page with a next token: {x}");
            break;
        }
        seen.extend(got);
        if token.is_none() {
            break;
        }
    }
    seen.sort();
    let mut running: Vec<String> = ids[..2].to_vec();
    running.sort();
    assert_eq!(seen, running);
    // Status filters.
    let x = status(vec![
        ("IncludeAllInstances", "true".into()),
        ("Filter.1.Name", "instance-status.status".into()),
        ("Filter.1.Value.1", "initializing".into()),
    ])
    .await;
    let mut pending = texts(&x, "instanceId");
    pending.sort();
    let mut want: Vec<String> = ids[2..].to_vec();
    want.sort();
    assert_eq!(pending, want, "{x}");
    let x = status(vec![
        ("IncludeAllInstances", "true".into()),
        ("Filter.1.Name", "system-status.status".into()),
        ("Filter.1.Value.1", "ok".into()),
        ("Filter.2.Name", "instance-state-code".into()),
        ("Filter.2.Value.1", "16".into()),
    ])
    .await;
    assert_eq!(texts(&x, "instanceId").len(), 2, "{x}");
    let x = status(vec![
        ("IncludeAllInstances", "true".into()),
        ("Filter.1.Name", "event.code".into()),
        ("Filter.1.Value.1", "*".into()),
    ])
    .await;
    assert!(texts(&x, "instanceId").is_empty(), "no events: {x}");
    let x = status(vec![
        ("IncludeAllInstances", "true".into()),
        ("Filter.1.Name", "availability-zone".into()),
        ("Filter.1.Value.1", ZONE.into()),
    ])
    .await;
    assert_eq!(texts(&x, "instanceId").len(), 4, "{x}");
    // By id: a pending one asked for without IncludeAllInstances is left out.
    let x = status(vec![("InstanceId.1", ids[3].clone())]).await;
    assert!(texts(&x, "instanceId").is_empty(), "{x}");
    // The node goes DOWN: the system check fails for all of them.
    *fake.node_state.lock().unwrap() = Some(NodeState::Down);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let x = status(vec![
        ("IncludeAllInstances", "true".into()),
        ("Filter.1.Name", "system-status.status".into()),
        ("Filter.1.Value.1", "impaired".into()),
    ])
    .await;
    assert_eq!(texts(&x, "instanceId").len(), 4, "{x}");
    assert!(
        x.contains("<systemStatus><status>impaired</status><details><item><name>reachability</name><status>failed</status>"),
        "{x}"
    );
    *fake.node_state.lock().unwrap() = Some(NodeState::Up);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let x = status(vec![]).await;
    assert!(!x.contains("impaired"), "{x}");
    assert_eq!(texts(&x, "instanceId").len(), 2, "{x}");
}

#[tokio::test]
async fn launch_mappings_override_suppress_and_add_to_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), 4);
    let (sc_url, sc_calls) = fake_sc().await;
    clc.set_sc(euca_clc::sc::ScClient::new(&sc_url, "ak", "sk", "eucalyptus").unwrap());
    let bd = |dev: &str, snap: Option<&str>, size: Option<u64>, virt: Option<&str>| {
        euca_clc::model::BlockDevice {
            device_name: dev.into(),
            snapshot_id: snap.map(String::from),
            volume_size: size,
            delete_on_termination: false,
            virtual_name: virt.map(String::from),
        }
    };
    let mut img = image("emi-000000b1", ImageType::Machine);
    img.block_devices = vec![
        bd("/dev/sdb", None, None, Some("ephemeral0")),
        bd("/dev/sdf", Some("snap-0000000f"), None, None),
        bd("/dev/sdg", None, Some(2), None),
    ];
    clc.db.insert_new(A, &img).unwrap();
    let x = call(
        &clc,
        A,
        "RunInstances",
        &[
            ("ImageId", "emi-000000b1"),
            // The image's /dev/sdf (its snapshot is never looked up) is dropped.
            ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"),
            ("BlockDeviceMapping.1.NoDevice", ""),
            // /dev/sdg replaced: 3 GiB, kept at terminate.
            ("BlockDeviceMapping.2.DeviceName", "/dev/sdg"),
            ("BlockDeviceMapping.2.Ebs.VolumeSize", "3"),
            ("BlockDeviceMapping.2.Ebs.DeleteOnTermination", "false"),
            // /dev/sdh added: DeleteOnTermination defaults to true.
            ("BlockDeviceMapping.3.DeviceName", "/dev/sdh"),
            ("BlockDeviceMapping.3.Ebs.VolumeSize", "1"),
        ],
    )
    .await
    .unwrap();
    let id = texts(&x, "instanceId")[0].clone();
    let rec = clc.db.get::<Instance>(&id).unwrap().unwrap().record;
    let devs: Vec<(&str, bool, &str)> = rec
        .volumes
        .iter()
        .map(|v| {
            (
                v.device_name.as_str(),
                v.delete_on_termination,
                v.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        devs,
        [
            ("/dev/sdg", false, "attaching"),
            ("/dev/sdh", true, "attaching")
        ]
    );
    // The node gets them in the spec, with their exports; the launch is pinned.
    let spec: Vec<(&str, &str)> = rec
        .spec
        .volumes
        .iter()
        .map(|v| (v.device.as_str(), v.export.uri.as_str()))
        .collect();
    assert_eq!(
        spec,
        [
            ("/dev/sdg", "nbd://127.0.0.1:10809/x"),
            ("/dev/sdh", "nbd://127.0.0.1:10809/x")
        ]
    );
    assert!(rec.node.is_some());
    let creates: Vec<String> = sc_calls
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST /volumes?"))
        .cloned()
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert!(creates[0].contains("size_gib=3"), "{creates:?}");
    assert!(creates[1].contains("size_gib=1"), "{creates:?}");
    for v in &rec.volumes {
        assert_eq!(
            vol_status(&clc, &v.volume_id),
            (VolumeState::InUse, Some("attaching"))
        );
    }
    // A mapping of an instance-store root to a volume is refused, nothing made.
    assert_eq!(
        code(
            call(
                &clc,
                A,
                "RunInstances",
                &[
                    ("ImageId", "emi-000000b1"),
                    ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
                    ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
                ],
            )
            .await
        ),
        "InvalidParameterValue"
    );
    assert_eq!(all_instances(&clc).len(), 1);
}
