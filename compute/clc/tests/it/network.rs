//! Instance networking on the CLC's side (issue 14), through the action functions
//! with a fake cluster answering a managed-novlan (or static, system, off)
//! ClusterNet: address allocation (group subnets, lowest free, freed at
//! termination, one group only), the elastic IP API, the NetworkState pushed to
//! the cluster (rules, metadata tree, re-push on another digest or none),
//! DescribeInstances' network fields and the dynamic DNS server's answers; the
//! address bookkeeping: the per-account elastic IP limit, the sweep of records
//! (addresses and MACs) whose holder is gone, a release from a stale copy of the
//! instance.
use crate::common;

use common::netcluster::NetCluster;
use common::{call, text, texts};
use euca_clc::model::{
    Address, Image, ImageState, ImageType, Instance, InstanceState, MacRecord, NetRecord,
};
use euca_clc::store::Write;
use euca_clc::{Clc, ClcConfig, Ec2Error};
use euca_compute_proto::net::{ClusterNet, NetMode, Segment};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

const A: &str = "111111111111";
const B: &str = "222222222222";
const ZONE: &str = "eucalyptus1a";
const EMI: &str = "emi-00000001";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn code(r: Result<String, Ec2Error>) -> String {
    r.expect_err("an error").code().to_string()
}

/// managed-novlan: 10.10.0.0/24 cut in four /26 group subnets, a public pool of
/// `pool` addresses from 198.51.100.1.
fn managed(pool: u8) -> ClusterNet {
    ClusterNet {
        mode: NetMode::ManagedNovlan,
        private_range: Some("10.10.0.0/24".parse().unwrap()),
        addrs_per_net: 64,
        public_ips: (1..=pool).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect(),
        vni_base: 0,
        static_ips: Vec::new(),
    }
}

fn setup(dir: &std::path::Path, net: ClusterNet) -> (Arc<Clc>, Arc<NetCluster>) {
    setup_with(dir, net, ClcConfig::default())
}

/// [`setup`] with `config`'s other settings.
fn setup_with(
    dir: &std::path::Path,
    net: ClusterNet,
    config: ClcConfig,
) -> (Arc<Clc>, Arc<NetCluster>) {
    let clc = common::open_with(
        dir,
        ClcConfig {
            zone: Some(ZONE.into()),
            dns_domain: "cloud.test".into(),
            ..config
        },
    );
    let fake = Arc::new(NetCluster::new(net));
    assert!(clc.set_cluster_api(ZONE, fake.clone()));
    let image = Image {
        id: EMI.into(),
        name: "tiny".into(),
        description: None,
        image_type: ImageType::Machine,
        state: ImageState::Available,
        state_reason: None,
        state_reason_code: None,
        owner_id: A.into(),
        architecture: "x86_64".into(),
        location: Some("bucket/tiny.manifest.xml".into()),
        root_device_type: "instance-store".into(),
        root_device_name: "/dev/sda1".into(),
        block_devices: Vec::new(),
        kernel_id: None,
        ramdisk_id: None,
        installed_id: Some(format!("{:0>64}", 1)),
        public: true,
        launch_permissions: Vec::new(),
        created: "2026-12-04T00:00:00.000Z".into(),
        tags: Default::default(),
    };
    clc.db.insert_new(A, &image).unwrap();
    (Arc::new(clc), fake)
}

/// RunInstances of one instance with `extra` parameters; its id.
async fn run(clc: &Clc, who: &str, extra: &[(&str, &str)]) -> Result<String, Ec2Error> {
    let mut p = vec![("ImageId", EMI), ("MinCount", "1"), ("MaxCount", "1")];
    p.extend_from_slice(extra);
    let out = call(clc, who, "RunInstances", &p).await?;
    Ok(text(&out, "instanceId").unwrap().to_string())
}

fn rec(clc: &Clc, id: &str) -> Instance {
    clc.db.get::<Instance>(id).unwrap().unwrap().record
}

async fn group(clc: &Clc, who: &str, name: &str) -> String {
    let out = call(
        clc,
        who,
        "CreateSecurityGroup",
        &[("GroupName", name), ("GroupDescription", name)],
    )
    .await
    .unwrap();
    text(&out, "groupId").unwrap().to_string()
}

async fn associate(clc: &Clc, public_ip: &str, id: &str) {
    call(
        clc,
        A,
        "AssociateAddress",
        &[("PublicIp", public_ip), ("InstanceId", id)],
    )
    .await
    .unwrap();
}

async fn terminate(clc: &Clc, id: &str) {
    call(clc, A, "TerminateInstances", &[("InstanceId.1", id)])
        .await
        .unwrap();
    // The node ends it, the reconciler sees it and gives the addresses back.
    euca_clc::reconcile::pass(clc).await.unwrap();
    euca_clc::reconcile::pass(clc).await.unwrap();
    assert_eq!(rec(clc, id).state, InstanceState::Terminated);
}

#[tokio::test]
async fn managed_allocation_by_group_subnet_lowest_free() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), managed(3));
    let i1 = run(&clc, A, &[]).await.unwrap();
    let i2 = run(&clc, A, &[]).await.unwrap();
    let (r1, r2) = (rec(&clc, &i1), rec(&clc, &i2));
    // The default group took subnet 0; .1 is the gateway.
    assert_eq!(r1.private_ip, Some(ip("10.10.0.2")));
    assert_eq!(r2.private_ip, Some(ip("10.10.0.3")));
    assert_eq!(r1.net_index, Some(0));
    assert_eq!(r1.public_ip, Some(ip("198.51.100.1")));
    assert_eq!(r2.public_ip, Some(ip("198.51.100.2")));
    let nic = fake.spec(&i1).nic.expect("a NIC in managed mode");
    assert_eq!(nic.mode, NetMode::ManagedNovlan);
    assert_eq!(nic.segment, Segment::Bridge);
    assert_eq!(nic.private_ip, Some(ip("10.10.0.2")));

    // Another group, the next subnet; a private-only launch gets no public address.
    let web = group(&clc, A, "web").await;
    let i3 = run(
        &clc,
        A,
        &[("SecurityGroupId.1", &web), ("AddressingType", "private")],
    )
    .await
    .unwrap();
    let r3 = rec(&clc, &i3);
    assert_eq!(r3.private_ip, Some(ip("10.10.0.66")));
    assert_eq!(r3.net_index, Some(1));
    assert_eq!(r3.public_ip, None);

    // One group only in the managed modes.
    let e = run(
        &clc,
        A,
        &[("SecurityGroup.1", "default"), ("SecurityGroup.2", "web")],
    )
    .await;
    assert_eq!(code(e), "InvalidParameterCombination");

    // Another account's group gets its own subnet; the pool's last address.
    let i4 = run(&clc, B, &[]).await.unwrap();
    let r4 = rec(&clc, &i4);
    assert_eq!(r4.private_ip, Some(ip("10.10.0.130")));
    assert_eq!(r4.public_ip, Some(ip("198.51.100.3")));
    // The pool is empty: the next launch is private only, not refused.
    let i5 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i5).private_ip, Some(ip("10.10.0.4")));
    assert_eq!(rec(&clc, &i5).public_ip, None);

    // Four subnets: a fourth group fits, a fifth does not (and leaves nothing behind).
    let g4 = group(&clc, A, "g4").await;
    let i6 = run(&clc, A, &[("SecurityGroupId.1", &g4)]).await.unwrap();
    assert_eq!(rec(&clc, &i6).private_ip, Some(ip("10.10.0.194")));
    let g5 = group(&clc, A, "g5").await;
    let e = run(&clc, A, &[("SecurityGroupId.1", &g5)]).await;
    let e = e.expect_err("no subnet left");
    assert_eq!(e.code(), "InsufficientAddressCapacity");
    assert!(e.to_string().contains("subnet"), "{e}");

    // Termination frees the private and the public address; the lowest free is
    // taken again.
    terminate(&clc, &i1).await;
    let r1 = rec(&clc, &i1);
    assert_eq!((r1.private_ip, r1.public_ip), (None, None));
    let i7 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i7).private_ip, Some(ip("10.10.0.2")));
    assert_eq!(rec(&clc, &i7).public_ip, Some(ip("198.51.100.1")));

    // The group's last instance gone: its subnet is free for g5.
    terminate(&clc, &i6).await;
    let i8 = run(&clc, A, &[("SecurityGroupId.1", &g5)]).await.unwrap();
    assert_eq!(rec(&clc, &i8).net_index, Some(3));
}

#[tokio::test]
async fn managed_vxlan_segment_and_static_and_off_modes() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = managed(0);
    net.mode = NetMode::Managed;
    net.vni_base = 5000;
    let (clc, fake) = setup(dir.path(), net);
    let web = group(&clc, A, "web").await;
    let i1 = run(&clc, A, &[]).await.unwrap();
    let i2 = run(&clc, A, &[("SecurityGroupId.1", &web)]).await.unwrap();
    assert_eq!(
        fake.spec(&i1).nic.unwrap().segment,
        Segment::Vxlan { vni: 5000 }
    );
    assert_eq!(
        fake.spec(&i2).nic.unwrap().segment,
        Segment::Vxlan { vni: 5001 }
    );

    let dir = tempfile::tempdir().unwrap();
    let net = ClusterNet {
        mode: NetMode::Static,
        static_ips: vec![ip("192.168.5.10"), ip("192.168.5.11")],
        ..ClusterNet::default()
    };
    let (clc, fake) = setup(dir.path(), net);
    let s1 = run(&clc, A, &[]).await.unwrap();
    let s2 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &s1).private_ip, Some(ip("192.168.5.10")));
    assert_eq!(rec(&clc, &s2).private_ip, Some(ip("192.168.5.11")));
    assert_eq!(rec(&clc, &s2).public_ip, None);
    let nic = fake.spec(&s2).nic.unwrap();
    assert_eq!((nic.mode, nic.segment), (NetMode::Static, Segment::Bridge));
    assert_eq!(code(run(&clc, A, &[]).await), "InsufficientAddressCapacity");
    // Several groups are fine outside the managed modes.
    let web = group(&clc, A, "web").await;
    terminate(&clc, &s1).await;
    let s3 = run(
        &clc,
        A,
        &[("SecurityGroup.1", "default"), ("SecurityGroupId.2", &web)],
    )
    .await
    .unwrap();
    assert_eq!(rec(&clc, &s3).private_ip, Some(ip("192.168.5.10")));
    // Elastic IPs are the managed modes'.
    assert_eq!(
        code(call(&clc, A, "AllocateAddress", &[]).await),
        "InvalidParameterValue"
    );

    // system: the node's learned address lands on the record.
    let dir = tempfile::tempdir().unwrap();
    let net = ClusterNet {
        mode: NetMode::System,
        ..ClusterNet::default()
    };
    let (clc, fake) = setup(dir.path(), net);
    let y1 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &y1).private_ip, None);
    assert_eq!(fake.spec(&y1).nic.unwrap().mode, NetMode::System);
    fake.learned
        .lock()
        .unwrap()
        .insert(y1.clone(), ip("192.0.2.77"));
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(rec(&clc, &y1).private_ip, Some(ip("192.0.2.77")));
    let out = call(&clc, A, "DescribeInstances", &[]).await.unwrap();
    assert_eq!(text(&out, "privateIpAddress"), Some("192.0.2.77"));

    // off: no NIC, no addresses, nothing sent.
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), ClusterNet::default());
    let o1 = run(&clc, A, &[]).await.unwrap();
    assert!(fake.spec(&o1).nic.is_none());
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), 0);
}

#[tokio::test]
async fn elastic_addresses_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(3));
    let i1 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i1).public_ip, Some(ip("198.51.100.1")));
    let out = call(&clc, A, "AllocateAddress", &[]).await.unwrap();
    assert_eq!(text(&out, "publicIp"), Some("198.51.100.2"));
    assert_eq!(text(&out, "domain"), Some("standard"));
    let out = call(&clc, A, "DescribeAddresses", &[]).await.unwrap();
    assert_eq!(texts(&out, "publicIp"), ["198.51.100.2"]);
    assert!(text(&out, "instanceId").is_none());

    // Associate: the launch-time address goes back to the pool.
    associate(&clc, "198.51.100.2", &i1).await;
    assert_eq!(rec(&clc, &i1).public_ip, Some(ip("198.51.100.2")));
    let out = call(&clc, A, "DescribeInstances", &[]).await.unwrap();
    assert_eq!(text(&out, "ipAddress"), Some("198.51.100.2"));
    assert_eq!(
        text(&out, "dnsName"),
        Some("euca-198-51-100-2.eucalyptus.cloud.test")
    );
    let out = call(
        &clc,
        A,
        "DescribeAddresses",
        &[("Filter.1.Name", "instance-id"), ("Filter.1.Value.1", &i1)],
    )
    .await
    .unwrap();
    assert_eq!(texts(&out, "publicIp"), ["198.51.100.2"]);
    assert_eq!(text(&out, "instanceId"), Some(i1.as_str()));
    // .1 is free again: the next allocation takes it.
    let out = call(&clc, A, "AllocateAddress", &[]).await.unwrap();
    assert_eq!(text(&out, "publicIp"), Some("198.51.100.1"));

    // Another account sees none of it.
    for action in ["AssociateAddress", "DisassociateAddress", "ReleaseAddress"] {
        let e = call(
            &clc,
            B,
            action,
            &[("PublicIp", "198.51.100.2"), ("InstanceId", &i1)],
        )
        .await;
        assert_eq!(code(e), "InvalidAddress.NotFound", "{action}");
    }
    let e = call(
        &clc,
        B,
        "DescribeAddresses",
        &[("PublicIp.1", "198.51.100.2")],
    )
    .await;
    assert_eq!(code(e), "InvalidAddress.NotFound");
    // Unknown and malformed addresses alike; an unknown instance.
    for bad in ["198.51.100.3", "203.0.113.9", "nope"] {
        let e = call(&clc, A, "ReleaseAddress", &[("PublicIp", bad)]).await;
        assert_eq!(code(e), "InvalidAddress.NotFound", "{bad}");
    }
    let e = call(
        &clc,
        A,
        "AssociateAddress",
        &[("PublicIp", "198.51.100.1"), ("InstanceId", "i-0badbad0")],
    )
    .await;
    assert_eq!(code(e), "InvalidInstanceID.NotFound");

    // The last one, then the pool is empty (the account is below its limit).
    let out = call(&clc, A, "AllocateAddress", &[]).await.unwrap();
    assert_eq!(text(&out, "publicIp"), Some("198.51.100.3"));
    assert_eq!(
        code(call(&clc, A, "AllocateAddress", &[]).await),
        "InsufficientAddressCapacity"
    );

    // Moving .2 to i2: i1 is left without one (the pool is empty).
    let i2 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i2).public_ip, None);
    associate(&clc, "198.51.100.2", &i2).await;
    assert_eq!(rec(&clc, &i2).public_ip, Some(ip("198.51.100.2")));
    assert_eq!(rec(&clc, &i1).public_ip, None);

    // Release .3: back in the pool; disassociating .2 gives i2 a fresh one (.3).
    call(&clc, A, "ReleaseAddress", &[("PublicIp", "198.51.100.3")])
        .await
        .unwrap();
    call(
        &clc,
        A,
        "DisassociateAddress",
        &[("PublicIp", "198.51.100.2")],
    )
    .await
    .unwrap();
    assert_eq!(rec(&clc, &i2).public_ip, Some(ip("198.51.100.3")));
    let out = call(&clc, A, "DescribeAddresses", &[]).await.unwrap();
    assert_eq!(texts(&out, "publicIp"), ["198.51.100.1", "198.51.100.2"]);
    assert!(text(&out, "instanceId").is_none());

    // Releasing an associated one disassociates it first; terminating an instance
    // leaves its elastic IP allocated, unassociated.
    associate(&clc, "198.51.100.1", &i1).await;
    terminate(&clc, &i1).await;
    let out = call(
        &clc,
        A,
        "DescribeAddresses",
        &[("PublicIp.1", "198.51.100.1")],
    )
    .await
    .unwrap();
    assert_eq!(texts(&out, "publicIp"), ["198.51.100.1"]);
    assert!(text(&out, "instanceId").is_none());
    associate(&clc, "198.51.100.2", &i2).await;
    call(&clc, A, "ReleaseAddress", &[("PublicIp", "198.51.100.2")])
        .await
        .unwrap();
    // i2's launch-time .3 went back at the association; disassociated by the
    // release, it gets the lowest free (.2 is still taken until it is released).
    assert_eq!(rec(&clc, &i2).public_ip, Some(ip("198.51.100.3")));
    let out = call(&clc, A, "DescribeAddresses", &[]).await.unwrap();
    assert_eq!(texts(&out, "publicIp"), ["198.51.100.1"]);
}

#[tokio::test]
async fn describe_instances_network_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(2));
    let i1 = run(&clc, A, &[]).await.unwrap();
    let _i2 = run(&clc, A, &[("AddressingType", "private")])
        .await
        .unwrap();
    let out = call(&clc, A, "DescribeInstances", &[("InstanceId.1", &i1)])
        .await
        .unwrap();
    assert_eq!(text(&out, "privateIpAddress"), Some("10.10.0.2"));
    assert_eq!(text(&out, "ipAddress"), Some("198.51.100.1"));
    assert_eq!(
        text(&out, "privateDnsName"),
        Some("euca-10-10-0-2.eucalyptus.internal")
    );
    assert_eq!(
        text(&out, "dnsName"),
        Some("euca-198-51-100-1.eucalyptus.cloud.test")
    );
    let nic = text(&out, "networkInterfaceSet").unwrap();
    assert_eq!(text(nic, "macAddress"), Some(rec(&clc, &i1).mac.as_str()));
    assert_eq!(text(nic, "privateIpAddress"), Some("10.10.0.2"));
    let assoc = text(nic, "association").unwrap();
    assert_eq!(text(assoc, "publicIp"), Some("198.51.100.1"));
    let mac1 = rec(&clc, &i1).mac;
    for (filter, value, want) in [
        ("private-ip-address", "10.10.0.3", 1),
        ("private-ip-address", "10.10.0.*", 2),
        ("ip-address", "198.51.100.1", 1),
        ("private-dns-name", "euca-10-10-0-2.eucalyptus.internal", 1),
        ("network-interface.private-dns-name", "euca-10-10-0-3.*", 1),
        ("dns-name", "euca-198-51-100-1.eucalyptus.cloud.test", 1),
        ("dns-name", "*.eucalyptus.cloud.test", 1),
        // Another domain's name, a private name: nothing.
        ("dns-name", "euca-198-51-100-1.eucalyptus.localhost", 0),
        ("dns-name", "euca-10-10-0-2.eucalyptus.internal", 0),
        (
            "network-interface.association.public-dns-name",
            "euca-198-51-100-1.eucalyptus.cloud.test",
            1,
        ),
        ("ip-address", "198.51.100.*", 1),
        ("network-interface.mac-address", mac1.as_str(), 1),
        ("mac-address", "00:*", 0),
    ] {
        let out = call(
            &clc,
            A,
            "DescribeInstances",
            &[("Filter.1.Name", filter), ("Filter.1.Value.1", value)],
        )
        .await
        .unwrap();
        let n = texts(&out, "instanceId").len();
        assert_eq!(n, want, "{filter}={value}");
    }
}

#[tokio::test]
async fn pushed_state_rules_metadata_and_repush() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), managed(2));
    call(
        &clc,
        A,
        "CreateKeyPair",
        &[("KeyName", "k1"), ("KeyType", "ed25519")],
    )
    .await
    .unwrap();
    let web = group(&clc, A, "web").await;
    let i1 = run(&clc, A, &[("KeyName", "k1")]).await.unwrap();
    let i2 = run(&clc, A, &[("SecurityGroupId.1", &web)]).await.unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let st = fake.last_sent().expect("a state sent");
    assert_eq!(st.groups.len(), 2);
    let default = &st.groups[0];
    assert_eq!((default.name.as_str(), default.index), ("default", 0));
    assert_eq!(default.account, A);
    assert_eq!(st.groups[1].group_id, web);
    assert!(st.groups[1].rules.is_empty());
    assert_eq!(st.instances.len(), 2);
    let n1 = st.instances.iter().find(|i| i.instance_id == i1).unwrap();
    assert_eq!(n1.private_ip, Some(ip("10.10.0.2")));
    assert_eq!(n1.public_ip, Some(ip("198.51.100.1")));
    assert_eq!(n1.mac, rec(&clc, &i1).mac);
    let m = &n1.metadata;
    for (k, v) in [
        ("instance-id", i1.as_str()),
        ("ami-id", EMI),
        ("ami-launch-index", "0"),
        ("ami-manifest-path", "bucket/tiny.manifest.xml"),
        ("local-ipv4", "10.10.0.2"),
        ("public-ipv4", "198.51.100.1"),
        ("local-hostname", "euca-10-10-0-2.eucalyptus.internal"),
        ("hostname", "euca-10-10-0-2.eucalyptus.internal"),
        ("public-hostname", "euca-198-51-100-1.eucalyptus.cloud.test"),
        ("placement/availability-zone", ZONE),
        ("instance-type", "m1.small"),
        ("security-groups", "default"),
        ("public-keys/", "0=k1"),
        ("block-device-mapping/root", "/dev/sda1"),
        ("instance-action", "none"),
    ] {
        assert_eq!(m.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(m["public-keys/0/openssh-key"].starts_with("ssh-ed25519 "));
    assert_eq!(m["reservation-id"], rec(&clc, &i1).reservation_id);
    assert_eq!(m["mac"], rec(&clc, &i1).mac);
    let n2 = st.instances.iter().find(|i| i.instance_id == i2).unwrap();
    assert_eq!(n2.group_id.as_deref(), Some(web.as_str()));
    assert!(!n2.metadata.contains_key("public-keys/"));

    // Nothing changed: nothing sent again.
    let sent = fake.sent_count();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent);
    // A rule change reaches the cluster on the next pass (the action kicks it).
    call(
        &clc,
        A,
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", &web),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "192.0.2.0/24"),
            ("IpPermissions.2.IpProtocol", "-1"),
            ("IpPermissions.2.Groups.1.GroupName", "default"),
        ],
    )
    .await
    .unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent + 1);
    let rules = &fake.last_sent().unwrap().groups[1].rules;
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0].protocol, "tcp");
    assert_eq!((rules[0].from_port, rules[0].to_port), (22, 22));
    assert_eq!(
        rules[0].cidrs,
        ["192.0.2.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    assert_eq!(rules[1].protocol, "-1");
    assert_eq!((rules[1].from_port, rules[1].to_port), (-1, -1));
    assert_eq!(rules[1].groups, std::slice::from_ref(&default.group_id));

    // The CC restarted (applied none) or holds another state: sent again, the same.
    let want = fake.last_sent().unwrap();
    *fake.applied.lock().unwrap() = None;
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent + 2);
    *fake.applied.lock().unwrap() = Some("other".into());
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent + 3);
    assert_eq!(fake.last_sent().unwrap(), want);

    // A terminated instance leaves the state; its group with it.
    terminate(&clc, &i2).await;
    let st = fake.last_sent().unwrap();
    assert_eq!(st.instances.len(), 1);
    assert_eq!(st.groups.len(), 1);
}

/// One DNS question over UDP; the answer.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let a = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(a.id(), 4242);
    a
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn ptr_of(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(p) => Some(p.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dns_answers_follow_the_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(2));
    let dns = euca_clc::dns::serve(clc.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let at = dns.addr;
    // Before any instance has a name, the zones are still ours: NXDOMAIN.
    let m = ask(at, "euca-10-10-0-2.eucalyptus.cloud.test.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.authoritative());
    let i1 = run(&clc, A, &[]).await.unwrap();
    let private = "euca-10-10-0-2.eucalyptus.internal.";
    let public = "euca-198-51-100-1.eucalyptus.cloud.test.";

    let m = ask(at, private, RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert!(!m.recursion_available());
    assert_eq!(a_of(&m), [ip("10.10.0.2")]);
    let m = ask(at, &public.to_uppercase(), RecordType::A).await;
    assert_eq!(a_of(&m), [ip("198.51.100.1")]);
    let m = ask(at, "2.0.10.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(ptr_of(&m), [private]);
    let m = ask(at, "1.100.51.198.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(ptr_of(&m), [public]);
    // Ours but unknown: NXDOMAIN; not ours: REFUSED.
    let m = ask(at, "euca-10-10-0-9.eucalyptus.internal.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let m = ask(at, "9.0.10.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let m = ask(at, "www.example.com.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);
    let m = ask(at, "4.3.2.1.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);
    // A name with another type: no records, no error.
    let m = ask(at, private, RecordType::AAAA).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());

    // An elastic IP associated: the public name changes at once.
    let out = call(&clc, A, "AllocateAddress", &[]).await.unwrap();
    let eip = text(&out, "publicIp").unwrap().to_string();
    assert_eq!(eip, "198.51.100.2");
    associate(&clc, &eip, &i1).await;
    let m = ask(
        at,
        "euca-198-51-100-2.eucalyptus.cloud.test.",
        RecordType::A,
    )
    .await;
    assert_eq!(a_of(&m), [ip("198.51.100.2")]);
    let m = ask(at, public, RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let m = ask(at, "2.100.51.198.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(ptr_of(&m), ["euca-198-51-100-2.eucalyptus.cloud.test."]);

    // TCP too (dig, when installed).
    let port = at.port().to_string();
    // Off the runtime: the server answers on it.
    let dig = tokio::task::spawn_blocking(move || {
        std::process::Command::new("dig")
            .args([
                "+tcp",
                "+short",
                "+tries=1",
                "-p",
                &port,
                "@127.0.0.1",
                "euca-10-10-0-2.eucalyptus.internal",
            ])
            .output()
    })
    .await
    .unwrap();
    if let Ok(out) = dig {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.10.0.2");
    } else {
        eprintln!("dig not installed: the TCP check is skipped");
    }

    // Terminated: its names are gone.
    terminate(&clc, &i1).await;
    let m = ask(at, private, RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_launches_get_distinct_addresses_off_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), managed(4));
    let before = euca_clc::write_check::runtime_writes();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let clc = clc.clone();
            tokio::spawn(async move { run(&clc, A, &[]).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let private: std::collections::BTreeSet<Ipv4Addr> = ids
        .iter()
        .map(|i| rec(&clc, i).private_ip.unwrap())
        .collect();
    // Eight different addresses, the eight lowest of the subnet.
    let want: std::collections::BTreeSet<Ipv4Addr> =
        (2..=9).map(|d| Ipv4Addr::new(10, 10, 0, d)).collect();
    assert_eq!(private, want);
    let public: std::collections::BTreeSet<Ipv4Addr> =
        ids.iter().filter_map(|i| rec(&clc, i).public_ip).collect();
    assert_eq!(public.len(), 4, "the whole pool, each address once");
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let st = fake.last_sent().unwrap();
    assert_eq!(st.instances.len(), 8);
    assert_eq!(euca_clc::write_check::runtime_writes(), before);
}

#[tokio::test]
async fn a_cluster_that_is_down_delays_the_push_not_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, fake) = setup(dir.path(), managed(2));
    let i1 = run(&clc, A, &[]).await.unwrap();
    euca_clc::reconcile::pass(&clc).await.unwrap();
    let sent = fake.sent_count();
    fake.down.store(true, std::sync::atomic::Ordering::SeqCst);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    // The address actions answer from the records and the last known config.
    let out = call(&clc, A, "AllocateAddress", &[]).await.unwrap();
    let eip = text(&out, "publicIp").unwrap().to_string();
    associate(&clc, &eip, &i1).await;
    // The pass goes on without the cluster; nothing was sent.
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent);
    // Back: the next pass sends the state with the elastic IP.
    fake.down.store(false, std::sync::atomic::Ordering::SeqCst);
    euca_clc::reconcile::pass(&clc).await.unwrap();
    assert_eq!(fake.sent_count(), sent + 1);
    let st = fake.last_sent().unwrap();
    assert_eq!(st.instances[0].public_ip, Some(ip(&eip)));
    assert_eq!(st.instances[0].metadata["public-ipv4"], eip);
}

/// AllocateAddress `n` times as `who`; the addresses.
async fn allocate_n(clc: &Clc, who: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let got = call(clc, who, "AllocateAddress", &[]).await.unwrap();
        out.push(text(&got, "publicIp").unwrap().to_string());
    }
    out
}

fn limited(n: u32) -> ClcConfig {
    ClcConfig {
        max_elastic_ips: n,
        ..ClcConfig::default()
    }
}

#[tokio::test]
async fn elastic_ips_per_account_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup_with(dir.path(), managed(10), limited(2));
    // A launch-time address is not an elastic IP: it does not count.
    let i1 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i1).public_ip, Some(ip("198.51.100.1")));
    let mine = allocate_n(&clc, A, 2).await;
    let e = call(&clc, A, "AllocateAddress", &[])
        .await
        .expect_err("over the limit");
    assert_eq!(
        (e.code().as_ref(), e.status()),
        ("AddressLimitExceeded", 400)
    );
    assert!(e.to_string().contains('2'), "{e}");
    // Per account: B has its own two.
    allocate_n(&clc, B, 2).await;
    assert_eq!(
        code(call(&clc, B, "AllocateAddress", &[]).await),
        "AddressLimitExceeded"
    );
    // An associated one still counts; a released one makes room again.
    associate(&clc, &mine[0], &i1).await;
    assert_eq!(
        code(call(&clc, A, "AllocateAddress", &[]).await),
        "AddressLimitExceeded"
    );
    call(&clc, A, "ReleaseAddress", &[("PublicIp", &mine[1])])
        .await
        .unwrap();
    // The lowest free: i1's launch-time .1, back in the pool since the association.
    let again = allocate_n(&clc, A, 1).await;
    assert_eq!(again, ["198.51.100.1"]);
    let out = call(&clc, A, "DescribeAddresses", &[]).await.unwrap();
    assert_eq!(texts(&out, "publicIp").len(), 2);

    // 0: no elastic IPs at all.
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup_with(dir.path(), managed(10), limited(0));
    assert_eq!(
        code(call(&clc, A, "AllocateAddress", &[]).await),
        "AddressLimitExceeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_stop_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup_with(dir.path(), managed(12), limited(3));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let clc = clc.clone();
            tokio::spawn(async move { call(&clc, A, "AllocateAddress", &[]).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), "AddressLimitExceeded");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (3, 7));
    let out = call(&clc, A, "DescribeAddresses", &[]).await.unwrap();
    assert_eq!(texts(&out, "publicIp").len(), 3);
}

const CLOUD: &str = "cloud";

fn net_rec(id: String, holder: &str, created: Option<i64>) -> NetRecord {
    NetRecord {
        id,
        holder: holder.into(),
        created,
    }
}

fn launch_time(public: &str, instance: &str, created: Option<i64>) -> Address {
    Address {
        id: format!("{ZONE}/{public}"),
        zone: ZONE.into(),
        public_ip: ip(public),
        elastic: false,
        instance_id: Some(instance.into()),
        created,
    }
}

fn has_net(clc: &Clc, id: &str) -> bool {
    clc.db.get::<NetRecord>(id).unwrap().is_some()
}

fn address(clc: &Clc, public: &str) -> Option<(String, Address)> {
    clc.db
        .get::<Address>(&format!("{ZONE}/{public}"))
        .unwrap()
        .map(|o| (o.owner, o.record))
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[tokio::test]
async fn leaked_records_are_swept_live_and_young_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(6));
    let now = euca_clc::netalloc::unix_now();
    let old = Some(now - euca_clc::netalloc::LEAK_GRACE_SECS - 1);
    // Live: i1 (10.10.0.2, .1). i2 (10.10.0.3) gets elastic .3 (its .2 goes back),
    // then ends without its addresses given back (the CLC died in between).
    let i1 = run(&clc, A, &[]).await.unwrap();
    let i2 = run(&clc, A, &[]).await.unwrap();
    let sg = rec(&clc, &i1).groups[0].id.clone();
    let eip = allocate_n(&clc, A, 1).await.remove(0);
    assert_eq!(eip, "198.51.100.3");
    associate(&clc, &eip, &i2).await;
    clc.db
        .update::<Instance, _>(&i2, |c| {
            let c = c.unwrap();
            c.record.state = InstanceState::Terminated;
            Ok((Write::Put, ()))
        })
        .unwrap();
    // A launch that crashed before writing i-dead0001: a private address, its
    // membership and a launch-time public address.
    let dead = "i-dead0001";
    let writes_net = [
        net_rec(format!("{ZONE}/ip/10.10.0.4"), dead, old),
        net_rec(format!("{ZONE}/member/{sg}/{dead}"), "10.10.0.4", old),
        // One of an older version (no time), the only one of group "web": the
        // group's subnet goes with it.
        net_rec(format!("{ZONE}/subnet/1"), "sg-web00001", None),
        net_rec(format!("{ZONE}/group/sg-web00001"), "1", None),
        net_rec(format!("{ZONE}/ip/10.10.0.66"), "i-dead0002", None),
        net_rec(
            format!("{ZONE}/member/sg-web00001/i-dead0002"),
            "10.10.0.66",
            None,
        ),
        // A subnet whose group record was never written.
        net_rec(format!("{ZONE}/subnet/2"), "sg-gone0001", Some(now)),
        // A launch in progress: taken just now, its instance not written yet.
        net_rec(format!("{ZONE}/ip/10.10.0.5"), "i-young001", Some(now)),
        net_rec(
            format!("{ZONE}/member/{sg}/i-young001"),
            "10.10.0.5",
            Some(now),
        ),
    ];
    for r in &writes_net {
        assert!(clc.db.insert_new(CLOUD, r).unwrap(), "{}", r.id);
    }
    assert!(clc
        .db
        .insert_new(A, &launch_time("198.51.100.4", dead, old))
        .unwrap());
    assert!(clc
        .db
        .insert_new(A, &launch_time("198.51.100.6", "i-young001", Some(now)))
        .unwrap());

    let swept = euca_clc::reconcile::sweep_leaks(&clc).await.unwrap();
    let private = |s: &str| format!("{ZONE}/{s}");
    assert_eq!(
        sorted(&swept.private),
        sorted(&[
            private("ip/10.10.0.3"),
            private(&format!("member/{sg}/{i2}")),
            private("ip/10.10.0.4"),
            private(&format!("member/{sg}/{dead}")),
            private("ip/10.10.0.66"),
            private("member/sg-web00001/i-dead0002"),
        ])
    );
    assert_eq!(
        sorted(&swept.subnets),
        sorted(&[private("group/sg-web00001"), private("subnet/2")])
    );
    assert!(!has_net(&clc, &private("subnet/1")));
    assert_eq!(swept.public, [private("198.51.100.4")]);
    assert_eq!(swept.disassociated, [private("198.51.100.3")]);

    // Kept: the live instance's and the young launch's records, the group in use.
    for id in [
        "ip/10.10.0.2".to_string(),
        format!("member/{sg}/{i1}"),
        "ip/10.10.0.5".to_string(),
        format!("member/{sg}/i-young001"),
        format!("group/{sg}"),
        "subnet/0".to_string(),
    ] {
        assert!(has_net(&clc, &private(&id)), "{id}");
    }
    assert!(address(&clc, "198.51.100.1").is_some());
    assert!(address(&clc, "198.51.100.6").is_some());
    // The elastic IP is still A's, on no instance; the ended instance names none.
    let (owner, a) = address(&clc, &eip).unwrap();
    assert_eq!((owner.as_str(), a.elastic, a.instance_id), (A, true, None));
    assert_eq!(rec(&clc, &i2).public_ip, None);

    // A second sweep finds nothing.
    assert!(euca_clc::reconcile::sweep_leaks(&clc)
        .await
        .unwrap()
        .is_empty());

    // What was swept is handed out again, lowest first: 10.10.0.3 and the pool's
    // .2 (given back at the association), then 10.10.0.4 and .4; "web" gets
    // subnet 1.
    let i3 = run(&clc, A, &[]).await.unwrap();
    let i4 = run(&clc, A, &[]).await.unwrap();
    assert_eq!(rec(&clc, &i3).private_ip, Some(ip("10.10.0.3")));
    assert_eq!(rec(&clc, &i3).public_ip, Some(ip("198.51.100.2")));
    assert_eq!(rec(&clc, &i4).private_ip, Some(ip("10.10.0.4")));
    assert_eq!(rec(&clc, &i4).public_ip, Some(ip("198.51.100.4")));
    let web = group(&clc, A, "web").await;
    let i5 = run(&clc, A, &[("SecurityGroupId.1", &web)]).await.unwrap();
    assert_eq!(rec(&clc, &i5).net_index, Some(1));
    assert_eq!(rec(&clc, &i5).private_ip, Some(ip("10.10.0.66")));
}

fn mac_rec(mac: &str, holder: &str, created: Option<i64>) -> MacRecord {
    MacRecord {
        id: mac.into(),
        value: holder.into(),
        created,
    }
}

fn has_mac(clc: &Clc, mac: &str) -> bool {
    clc.db.get::<MacRecord>(mac).unwrap().is_some()
}

#[tokio::test]
async fn leaked_mac_records_are_swept_live_and_young_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(6));
    let now = euca_clc::netalloc::unix_now();
    let old = Some(now - euca_clc::netalloc::LEAK_GRACE_SECS - 1);
    // Live i1; i2 terminated but still kept (DescribeInstances shows its MAC).
    let i1 = run(&clc, A, &[]).await.unwrap();
    let i2 = run(&clc, A, &[]).await.unwrap();
    terminate(&clc, &i2).await;
    let (m1, m2) = (rec(&clc, &i1).mac, rec(&clc, &i2).mac);
    let prefix = euca_clc::mac::prefix(&clc.db).unwrap();
    let mac = |s: &str| format!("{prefix}:{s}");
    let leaks = [
        // An instance whose record went (past retention) without its MAC.
        mac_rec(&mac("00:00:01"), "i-gone0001", old),
        // One of an older version (no time).
        mac_rec(&mac("00:00:02"), "i-gone0002", None),
        // A second MAC naming the live i1 (its record names m1).
        mac_rec(&mac("00:00:03"), &i1, old),
    ];
    // A launch in progress: taken just now, its instance not written yet.
    let young = mac_rec(&mac("00:00:04"), "i-young001", Some(now));
    for r in leaks.iter().chain([&young]) {
        assert!(clc.db.insert_new("cloud", r).unwrap(), "{}", r.id);
    }
    let swept = euca_clc::reconcile::sweep_leaks(&clc).await.unwrap();
    assert_eq!(
        sorted(&swept.macs),
        sorted(&leaks.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
    );
    for r in &leaks {
        assert!(!has_mac(&clc, &r.id), "{}", r.id);
    }
    for m in [&m1, &m2, &young.id] {
        assert!(has_mac(&clc, m), "{m}");
    }
    assert_eq!(euca_clc::mac::prefix(&clc.db).unwrap(), prefix);
    // Nothing more the second time; past its grace the young one goes too.
    assert!(euca_clc::reconcile::sweep_leaks(&clc)
        .await
        .unwrap()
        .is_empty());
    let later = now + euca_clc::netalloc::LEAK_GRACE_SECS + 1;
    let swept = euca_clc::mac::sweep(&clc.db, later).unwrap();
    assert_eq!(swept, std::slice::from_ref(&young.id));
    assert!(has_mac(&clc, &m1) && has_mac(&clc, &m2));
}

#[tokio::test]
async fn release_from_a_stale_copy_lets_go_of_a_later_elastic_ip() {
    let dir = tempfile::tempdir().unwrap();
    let (clc, _fake) = setup(dir.path(), managed(3));
    let i1 = run(&clc, A, &[("AddressingType", "private")])
        .await
        .unwrap();
    // The reconciler's copy, read before the elastic IP was associated.
    let copy = rec(&clc, &i1);
    assert_eq!(copy.public_ip, None);
    let eip = allocate_n(&clc, A, 1).await.remove(0);
    associate(&clc, &eip, &i1).await;
    clc.db
        .update::<Instance, _>(&i1, |c| {
            let c = c.unwrap();
            c.record.state = InstanceState::Terminated;
            Ok((Write::Put, ()))
        })
        .unwrap();
    let db = clc.db.clone();
    tokio::task::spawn_blocking(move || {
        let _g = euca_clc::netalloc::lock();
        euca_clc::netalloc::release(&db, &copy)
    })
    .await
    .unwrap()
    .unwrap();
    let (owner, a) = address(&clc, &eip).unwrap();
    assert_eq!((owner.as_str(), a.elastic, a.instance_id), (A, true, None));
    let r = rec(&clc, &i1);
    assert_eq!((r.private_ip, r.public_ip, r.net_index), (None, None, None));
    assert!(!has_net(&clc, &format!("{ZONE}/ip/10.10.0.2")));
    // Free for another instance of its owner's.
    let i2 = run(&clc, A, &[("AddressingType", "private")])
        .await
        .unwrap();
    associate(&clc, &eip, &i2).await;
    assert_eq!(rec(&clc, &i2).public_ip, Some(ip(&eip)));
}

/// Two cloud controllers on one database: the one not holding the reconciler's
/// lease learns from the records the addresses the other gave out, so its DNS
/// answers for instances launched through the other.
#[tokio::test]
async fn dns_of_a_second_clc_follows_the_shared_records() {
    let url = euca_pg::testing::database_url();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = || ClcConfig {
        meta_url: Some(url.clone()),
        ..Default::default()
    };
    let (a, fake) = setup_with(da.path(), managed(2), cfg());
    let b = Arc::new(common::open_with(
        db.path(),
        ClcConfig {
            zone: Some(ZONE.into()),
            dns_domain: "cloud.test".into(),
            ..cfg()
        },
    ));
    assert!(b.set_cluster_api(ZONE, fake.clone()));
    // A reconciles; B's reconciler task only waits for the lease.
    assert!(a
        .db
        .store()
        .lease(
            "reconciler",
            a.lease_holder(),
            std::time::Duration::from_secs(120)
        )
        .unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = euca_clc::reconcile::spawn(b.clone(), stopped);
    run(&a, A, &[]).await.unwrap();
    let name = "euca-10-10-0-2.eucalyptus.internal.";
    assert!(matches!(
        a.dns().answer(name, RecordType::A),
        euca_clc::dns::Answer::A(_)
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match b.dns().answer(name, RecordType::A) {
            euca_clc::dns::Answer::A(ip) => {
                assert_eq!(ip, self::ip("10.10.0.2"));
                // It knows the zone's ranges too: an unused address of them is
                // NXDOMAIN, not REFUSED.
                assert_eq!(
                    b.dns().answer("9.0.10.10.in-addr.arpa.", RecordType::PTR),
                    euca_clc::dns::Answer::NxDomain
                );
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "B's DNS never learned A's instance: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Told of the change, B learns the next instance at once: well before the
    // minute after which it would rebuild untold.
    run(&a, A, &[]).await.unwrap();
    let next = "euca-10-10-0-3.eucalyptus.internal.";
    assert!(matches!(
        a.dns().answer(next, RecordType::A),
        euca_clc::dns::Answer::A(_)
    ));
    let told = std::time::Instant::now();
    while !matches!(
        b.dns().answer(next, RecordType::A),
        euca_clc::dns::Answer::A(_)
    ) {
        assert!(
            told.elapsed() < std::time::Duration::from_secs(10),
            "B's DNS did not follow A's second instance"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}
