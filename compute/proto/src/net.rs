//! Instance networking (issue 14): what the CLC, the CC and the NC agree on.
//!
//! The modes are Eucalyptus' four, chosen per cluster in the CC's `[cc.net]`:
//!
//! | mode | addresses | DHCP | groups, elastic IPs, metadata |
//! | --- | --- | --- | --- |
//! | `system` | the LAN's DHCP server; the NC learns them from the instance's tap | the LAN's | no |
//! | `static` | fixed MAC→IP pairs from the CC's range | the CC's | no |
//! | `managed-novlan` | one subnet per security group | the CC's, per subnet | yes; groups share one layer 2 |
//! | `managed` | as `managed-novlan`, one VXLAN segment (VNI) per group between the CC and the NCs | the CC's | yes |
//!
//! Who does what:
//! - The **CLC** is the source of truth: it reads each cluster's [`ClusterNet`]
//!   (`GET /v1/network` on the CC), allocates private addresses (per group subnet in the
//!   managed modes, from the static range in `static`), public addresses (launch-time and
//!   elastic, from the cluster's pool), and sends the CC the whole desired state,
//!   [`NetworkState`] (`PUT /v1/network`), after every change and again whenever the CC
//!   reports a different applied state (a CC restart). It puts the instance's
//!   [`NicSpec`] in the launch spec.
//! - The **CC** renders that state in the cluster's router namespace (named after its
//!   state dir): gateways, DHCP, nftables filter and NAT, public addresses, VXLAN
//!   segments, and the metadata service at 169.254.169.254, which identifies the guest
//!   by source address (anti-spoofed by MAC) and answers from [`InstanceNet::metadata`]
//!   and the spec's user-data.
//! - The **NC** plugs the instance's tap into the segment the [`NicSpec`] names, and in
//!   `system` mode learns the guest's address from its DHCP/ARP traffic on the tap
//!   ([`crate::InstanceReport::learned_ip`]).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A cluster's network mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// No instance networking (the NIC has no network): a CC without root, or told so.
    #[default]
    Off,
    System,
    Static,
    Managed,
    ManagedNovlan,
}

impl NetMode {
    /// Security groups, elastic IPs and the metadata service apply.
    pub fn is_managed(self) -> bool {
        matches!(self, NetMode::Managed | NetMode::ManagedNovlan)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Off => "off",
            NetMode::System => "system",
            NetMode::Static => "static",
            NetMode::Managed => "managed",
            NetMode::ManagedNovlan => "managed-novlan",
        }
    }
}

/// A cluster's network as its CC is configured: `GET /v1/network` answers it (with
/// the state it last applied), so the CLC can allocate addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNet {
    pub mode: NetMode,
    /// Managed modes: the range cut into one subnet per security group.
    #[serde(default)]
    pub private_range: Option<Ipv4Net>,
    /// Managed modes: addresses per group subnet (a power of two ≥ 16). Subnet `k` is
    /// `private_range`'s k-th block of this size; `.1` of it is the gateway (the CC's
    /// router), the last is broadcast; instances take the rest.
    #[serde(default)]
    pub addrs_per_net: u32,
    /// Managed modes: the public pool (launch-time public IPs and elastic IPs).
    #[serde(default)]
    pub public_ips: Vec<Ipv4Addr>,
    /// `managed`: the VNI of group subnet `k` is `vni_base + k`.
    #[serde(default)]
    pub vni_base: u32,
    /// `static`: the addresses the CC hands out, first come first served.
    #[serde(default)]
    pub static_ips: Vec<Ipv4Addr>,
}

impl ClusterNet {
    /// The subnet of group index `k` in the managed modes.
    pub fn group_subnet(&self, k: u32) -> Option<Ipv4Net> {
        let range = self.private_range?;
        let size = self.addrs_per_net;
        if size < 16 || !size.is_power_of_two() {
            return None;
        }
        let prefix = 32 - size.trailing_zeros() as u8;
        if prefix < range.prefix_len() {
            return None;
        }
        let count = 1u64 << (prefix - range.prefix_len());
        if u64::from(k) >= count {
            return None;
        }
        let base = u32::from(range.network()).checked_add(k.checked_mul(size)?)?;
        Ipv4Net::new(Ipv4Addr::from(base), prefix).ok()
    }
}

/// Where an instance's tap joins, given to the NC in [`crate::InstanceSpec::nic`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Segment {
    /// The node's configured bridge (`[nc.net] bridge`): `system`, `static`,
    /// `managed-novlan`.
    Bridge,
    /// `managed`: the group's VXLAN segment (the NC makes a bridge with a VXLAN
    /// device of this VNI on its `[nc.net] underlay` device, shared by the node's
    /// instances of that group, removed with the last).
    Vxlan { vni: u32 },
}

/// An instance's network interface, in its launch spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    pub mode: NetMode,
    pub segment: Segment,
    /// The address the CC's DHCP will hand out (not in `system` mode). For display
    /// and checks only: the guest is never told it except by DHCP.
    #[serde(default)]
    pub private_ip: Option<Ipv4Addr>,
}

/// An ingress rule of a security group (EC2's IpPermission, one protocol/port range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    /// Ports (tcp/udp), or ICMP type (`from_port`) and code (`to_port`); -1 is any.
    pub from_port: i32,
    pub to_port: i32,
    #[serde(default)]
    pub cidrs: Vec<Ipv4Net>,
    /// Source security groups, by group id (`sg-…`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One security group with instances in the cluster (managed modes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupNet {
    pub group_id: String,
    pub account: String,
    pub name: String,
    /// The group's subnet index ([`ClusterNet::group_subnet`]; VNI `vni_base + index`).
    pub index: u32,
    pub rules: Vec<IngressRule>,
}

/// One instance's addresses and metadata, as the CLC decided them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNet {
    pub instance_id: String,
    pub account: String,
    pub mac: String,
    /// Managed modes: the instance's one security group.
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub private_ip: Option<Ipv4Addr>,
    /// The public address mapped to it (DNAT in, SNAT out), launch-time or elastic.
    #[serde(default)]
    pub public_ip: Option<Ipv4Addr>,
    /// The 2009-04-04 meta-data tree as leaf paths under `meta-data/`
    /// (`instance-id`, `local-ipv4`, `public-keys/0/openssh-key`, …) and their values;
    /// directory listings are derived from the paths. User-data is the launch spec's.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The desired network of one cluster (`PUT /v1/network`): the CC makes its router
/// namespace match it exactly, and answers with [`NetworkStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    pub groups: Vec<GroupNet>,
    pub instances: Vec<InstanceNet>,
}

impl NetworkState {
    /// A digest of the state (SHA-256 of its JSON), so the CLC can tell whether the CC
    /// holds what it would send.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        euca_aws::hash::sha256_hex(&json)
    }
}

/// `GET /v1/network` and `PUT /v1/network`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub config: ClusterNet,
    /// [`NetworkState::digest`] of the state last applied (none since the CC started:
    /// the CLC sends it again).
    #[serde(default)]
    pub applied: Option<String>,
}
