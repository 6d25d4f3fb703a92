//! The cluster's router namespace: renders a [`NetworkState`] there.
//!
//! Layout (names inside the router namespace):
//! - `pub`: veth to the CC's namespace (`er<hash>` there), `.2` of the public link
//!   subnet (the CC's end is `.1`, the router's default route); the public
//!   addresses mapped to instances are `/32`s on it, so the CC's namespace reaches
//!   them on-link.
//! - `br0`: the instances' bridge (`managed-novlan`, `static`), with every group
//!   subnet's gateway (`.1`), or in `static` the router's LAN address (the
//!   nftables table then admits DHCP and, from instances only, the metadata
//!   service); with a `private_bridge` it also holds `lan`, a veth
//!   to that bridge in the CC's namespace (`el<hash>` there).
//! - `managed`: per group index `k`, bridge `gb<k>` with the gateway and `vx<k>`,
//!   a VXLAN device (VNI `vni_base + k`) created in the CC's namespace on the
//!   underlay device, so its UDP socket lives there, then moved in.
//! - `lo`: 169.254.169.254/32, the metadata service's address (managed modes:
//!   behind each group's gateway; `static`: DHCP option 121 routes it via
//!   `static_server_ip`, since the LAN's gateway is not the router).
//!
//! When an address moves (a public address to another instance, a private one to
//! a new owner) the tracked flows through it are deleted ([`crate::conntrack`]), so
//! none keeps its old NAT or its old filter verdict.
//!
//! Forwarding is on in the router namespace only. The namespace outlives the CC
//! process (instances keep their network while the CC restarts); [`destroy`]
//! removes it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use euca_compute_proto::net::{ClusterNet, IngressRule, NetMode, NetworkState};
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use crate::conntrack::{Bindings, Stale};
use crate::dhcp::{Dhcp, DhcpConfig, DhcpSubnet};
use crate::link::{check_netns, netns};
use crate::nft::{Allow, Firewall, GroupFilter, Proto};
use crate::{Ip, VnetError};

/// The metadata service's address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The router's instance bridge (`managed-novlan`, `static`).
pub const BRIDGE: &str = "br0";
/// The router's end of the link to the CC's namespace.
pub const PUBLIC_IF: &str = "pub";
/// The router's end of the link to `private_bridge`.
pub const LAN_IF: &str = "lan";

/// 8 hex digits naming a router after the CC's canonical state directory.
pub fn router_hash(state_dir: &Path) -> String {
    let canon = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let d = Sha256::digest(canon.as_os_str().as_encoded_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// `euca-<hash>`: the router namespace of the CC whose state dir this is.
pub fn router_netns(state_dir: &Path) -> String {
    format!("euca-{}", router_hash(state_dir))
}

/// The default public link subnet, `100.64.X.0/24`, X from the same hash (two
/// clouds on one machine rarely share it; configure `public_cidr` when they do).
pub fn default_public_cidr(state_dir: &Path) -> Ipv4Net {
    let h = router_hash(state_dir);
    let x = u8::from_str_radix(&h[..2], 16).unwrap_or(0);
    Ipv4Net::new(Ipv4Addr::new(100, 64, x, 0), 24).unwrap_or_default()
}

/// Everything the router is built from (the CC's `[cc.net]`, resolved).
#[derive(Clone, Debug)]
pub struct RouterSpec {
    pub cluster: ClusterNet,
    /// The router namespace ([`router_netns`]).
    pub netns: String,
    /// The namespace standing for the CC's own (where the public link's outer end,
    /// the private bridge and the underlay are); `None`: this process's.
    pub outer_netns: Option<String>,
    /// The CC's files (dnsmasq's configuration, hosts and leases).
    pub state_dir: PathBuf,
    /// The link between the router and the CC's namespace.
    pub public_cidr: Ipv4Net,
    /// A bridge in the CC's namespace reaching the nodes' instance bridges.
    pub private_bridge: Option<String>,
    /// `managed`: the VXLAN underlay device in the CC's namespace.
    pub underlay: Option<String>,
    pub vxlan_group: Ipv4Addr,
    pub vxlan_port: u16,
    /// `static`: the LAN's subnet, its gateway, the router's address on it.
    pub static_subnet: Option<Ipv4Net>,
    pub static_router: Option<Ipv4Addr>,
    pub static_server_ip: Option<Ipv4Addr>,
    /// DHCP option 6 (none: not sent).
    pub dns: Option<Ipv4Addr>,
    /// Masquerade instances without a public address behind the router's.
    pub masquerade: bool,
    pub lease_secs: u32,
}

impl RouterSpec {
    /// The router's address on the public link (`.2`).
    pub fn public_addr(&self) -> Ipv4Addr {
        nth(self.public_cidr, 2)
    }
    /// The CC's end of the public link (`.1`).
    pub fn outer_addr(&self) -> Ipv4Addr {
        nth(self.public_cidr, 1)
    }
    fn hash(&self) -> &str {
        self.netns.strip_prefix("euca-").unwrap_or(&self.netns)
    }
    /// The public link's end in the CC's namespace.
    pub fn outer_if(&self) -> String {
        short(&format!("er{}", self.hash()))
    }
    fn outer_lan_if(&self) -> String {
        short(&format!("el{}", self.hash()))
    }
}

fn short(name: &str) -> String {
    name.chars().take(15).collect()
}

fn host(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(a, 32).unwrap_or_default()
}

fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// Runs `ip netns exec NS ARGV…` (for sysctl).
async fn exec(ns: &str, argv: &[&str]) -> Result<(), VnetError> {
    crate::nft::run_stdin(ns, argv, b"").await
}

/// A built router namespace.
pub struct Router {
    spec: RouterSpec,
    ip: Ip,
    outer: Ip,
    dhcp: Dhcp,
    /// `managed`: group indexes whose segment this process has set up.
    segments: tokio::sync::Mutex<BTreeSet<u32>>,
    /// Whether `conntrack` can be run (tracked flows of moved addresses are deleted).
    conntrack: bool,
    /// The address bindings last applied (none yet in this process: the first
    /// apply, the journaled state at start, is what the namespace already holds).
    /// Held through an apply, so applies are rendered one at a time.
    bindings: tokio::sync::Mutex<Option<Bindings>>,
}

impl Router {
    /// Creates (or re-adopts, after a CC restart) the router namespace with its
    /// fixed parts: forwarding, `lo`'s metadata address, the public link, `br0`
    /// and its link to the private bridge.
    ///
    /// A namespace this call created is deleted again when the rest fails, so a
    /// CC that cannot start leaves nothing behind (one that re-adopts its
    /// namespace leaves it: its running instances still route through it).
    pub async fn setup(spec: RouterSpec) -> Result<Router, VnetError> {
        check_netns(&spec.netns)?;
        let ns = spec.netns.clone();
        let existed = netns::exists(&ns).await?;
        netns::ensure(&ns).await?;
        match Router::build(spec).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if !existed {
                    if let Err(d) = destroy(&ns).await {
                        tracing::warn!(netns = %ns, error = %d, "router: removing a half-built namespace");
                    }
                }
                Err(e)
            }
        }
    }

    /// The fixed parts, in the namespace [`Router::setup`] made sure of.
    async fn build(spec: RouterSpec) -> Result<Router, VnetError> {
        let ns = spec.netns.clone();
        exec(
            &ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
            ],
        )
        .await?;
        // With br_netfilter loaded (per namespace, on by default) bridged frames
        // would cross the ip `forward` hook and its drop policy: traffic inside
        // one segment is layer 2 and not the router's to filter. `-e`: the key is
        // absent without the module.
        exec(
            &ns,
            &[
                "sysctl",
                "-qew",
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ],
        )
        .await?;
        let ip = Ip::netns(&ns)?;
        let outer = match &spec.outer_netns {
            Some(o) => Ip::netns(o)?,
            None => Ip::here(),
        };
        ip.addr_replace("lo", Ipv4Net::new(METADATA_IP, 32).unwrap_or_default())
            .await?;

        let outer_if = spec.outer_if();
        outer.ensure_veth(&outer_if, PUBLIC_IF, Some(&ns)).await?;
        let p = spec.public_cidr.prefix_len();
        outer
            .addr_replace(
                &outer_if,
                Ipv4Net::new(spec.outer_addr(), p).unwrap_or_default(),
            )
            .await?;
        outer.set_up(&outer_if).await?;
        ip.addr_replace(
            PUBLIC_IF,
            Ipv4Net::new(spec.public_addr(), p).unwrap_or_default(),
        )
        .await?;
        ip.set_up(PUBLIC_IF).await?;
        ip.route_replace("default", Some(spec.outer_addr()), Some(PUBLIC_IF))
            .await?;

        if spec.cluster.mode != NetMode::Managed {
            ip.ensure_bridge(BRIDGE).await?;
            if let Some(pb) = &spec.private_bridge {
                let lan = spec.outer_lan_if();
                outer.ensure_veth(&lan, LAN_IF, Some(&ns)).await?;
                outer.set_master(&lan, pb).await?;
                ip.set_master(LAN_IF, BRIDGE).await?;
            }
            if let (Some(net), Some(me)) = (spec.static_subnet, spec.static_server_ip) {
                if spec.cluster.mode == NetMode::Static {
                    let a = Ipv4Net::new(me, net.prefix_len()).unwrap_or_default();
                    ip.addr_replace(BRIDGE, a).await?;
                }
            }
        }
        let dhcp = Dhcp::new(&ns, &spec.state_dir)?;
        let conntrack = crate::conntrack::available().await;
        if !conntrack && spec.cluster.mode.is_managed() {
            tracing::warn!(
                netns = %ns,
                "router: `conntrack` is not installed (Debian package conntrack): flows \
                 tracked through an address keep their old instance after it moves"
            );
        }
        tracing::info!(netns = %ns, mode = spec.cluster.mode.as_str(), "router: ready");
        Ok(Router {
            spec,
            ip,
            outer,
            dhcp,
            segments: tokio::sync::Mutex::new(BTreeSet::new()),
            conntrack,
            bindings: tokio::sync::Mutex::new(None),
        })
    }

    pub fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    /// Makes the namespace match `state`: gateways and VXLAN segments, public
    /// addresses, the nftables table, DHCP. Check it first with [`check_state`].
    pub async fn apply(&self, state: &NetworkState) -> Result<(), VnetError> {
        check_state(state)?;
        match self.spec.cluster.mode {
            NetMode::Off | NetMode::System => Ok(()),
            NetMode::Static => self.apply_static(state).await,
            NetMode::Managed | NetMode::ManagedNovlan => self.apply_managed(state).await,
        }
    }

    async fn apply_static(&self, state: &NetworkState) -> Result<(), VnetError> {
        let Some(subnet) = self.spec.static_subnet else {
            return Err(VnetError::Invalid {
                what: "static mode",
                value: "static_subnet is not set".into(),
            });
        };
        let hosts: Vec<(String, Ipv4Addr)> = state
            .instances
            .iter()
            .filter_map(|i| Some((i.mac.clone(), i.private_ip?)))
            .collect();
        // The router is not the LAN's gateway: from the LAN it serves DHCP and the
        // metadata service, to the instances' (MAC, address) pairs only, as in the
        // managed modes (a host of the site's LAN taking an instance's address is
        // not that instance). No groups, no NAT.
        let fw = Firewall {
            inside: vec![BRIDGE.into()],
            public_if: PUBLIC_IF.into(),
            allowed: hosts.clone(),
            metadata: METADATA_IP,
            groups: Vec::new(),
            nat: Vec::new(),
            router_public: self.spec.public_addr(),
            masquerade: None,
        };
        crate::nft::apply(&self.spec.netns, &fw.render()).await?;
        let cfg = DhcpConfig {
            interfaces: vec![BRIDGE.into()],
            subnets: vec![DhcpSubnet {
                subnet,
                router: self.spec.static_router,
                // The metadata service is on this namespace's `lo`, reached through
                // its address on the LAN (the LAN's gateway is not ours).
                routes: self
                    .spec
                    .static_server_ip
                    .map(|me| (host(METADATA_IP), me))
                    .into_iter()
                    .collect(),
            }],
            dns: self.spec.dns,
            lease_secs: self.spec.lease_secs,
        };
        self.dhcp.apply(&cfg, &hosts)
    }

    async fn apply_managed(&self, state: &NetworkState) -> Result<(), VnetError> {
        let mut last = self.bindings.lock().await;
        let c = &self.spec.cluster;
        let managed = c.mode == NetMode::Managed;
        // Group index → (subnet, group).
        let mut subnets = BTreeMap::new();
        for g in &state.groups {
            match c.group_subnet(g.index) {
                Some(n) => {
                    subnets.insert(g.index, (n, g));
                }
                None => tracing::warn!(group = %g.group_id, index = g.index,
                    "router: group index outside the private range; skipped"),
            }
        }
        let gw = |n: Ipv4Net| Ipv4Net::new(nth(n, 1), n.prefix_len()).unwrap_or_default();

        // Gateways (and, in `managed`, the groups' segments).
        let mut inside = Vec::new();
        if managed {
            let links = self.ip.links().await?;
            let mut ready = self.segments.lock().await;
            for (&k, &(n, _)) in &subnets {
                let (br, vx) = (format!("gb{k}"), format!("vx{k}"));
                // A segment set up by this process and still listed needs nothing:
                // an apply touching only rules or addresses stays fast.
                if !(ready.contains(&k) && links.contains(&br) && links.contains(&vx)) {
                    self.ip.ensure_bridge(&br).await?;
                    if !links.contains(&vx) {
                        self.add_vxlan(k, &vx).await?;
                    }
                    self.ip.set_master(&vx, &br).await?;
                    self.ip.addr_replace(&br, gw(n)).await?;
                    ready.insert(k);
                }
                inside.push(br);
            }
            ready.retain(|k| subnets.contains_key(k));
            drop(ready);
            // Segments of groups gone.
            for l in links {
                let k = l
                    .strip_prefix("gb")
                    .or_else(|| l.strip_prefix("vx"))
                    .and_then(|k| k.parse::<u32>().ok());
                if let Some(k) = k {
                    if !subnets.contains_key(&k) {
                        self.ip.del_link(&l).await?;
                    }
                }
            }
        } else {
            let want: BTreeSet<Ipv4Net> = subnets.values().map(|&(n, _)| gw(n)).collect();
            let have: BTreeSet<Ipv4Net> = self.ip.addrs(BRIDGE).await?.into_iter().collect();
            for a in &have {
                let ours = c.private_range.is_some_and(|r| r.contains(&a.addr()));
                if ours && !want.contains(a) {
                    self.ip.addr_del(BRIDGE, *a).await?;
                }
            }
            for a in want.difference(&have) {
                self.ip.addr_replace(BRIDGE, *a).await?;
            }
            inside.push(BRIDGE.to_string());
        }

        // Public addresses: /32s on the public link.
        let want: BTreeSet<Ipv4Addr> = state.instances.iter().filter_map(|i| i.public_ip).collect();
        let me = self.spec.public_addr();
        let have: BTreeSet<Ipv4Addr> = self
            .ip
            .addrs(PUBLIC_IF)
            .await?
            .into_iter()
            .filter(|a| a.prefix_len() == 32 && a.addr() != me)
            .map(|a| a.addr())
            .collect();
        for a in have.difference(&want) {
            self.ip.addr_del(PUBLIC_IF, host(*a)).await?;
        }
        for a in want.difference(&have) {
            self.ip.addr_replace(PUBLIC_IF, host(*a)).await?;
        }

        // Filter and NAT.
        let mut members: HashMap<&str, Vec<Ipv4Addr>> = HashMap::new();
        for i in &state.instances {
            if let (Some(g), Some(ip)) = (&i.group_id, i.private_ip) {
                members.entry(g.as_str()).or_default().push(ip);
            }
        }
        // Each instance's source as hairpin traffic shows it (see `nft`).
        let router_public = self.spec.public_addr();
        let seen: Vec<(Ipv4Addr, Ipv4Addr)> = state
            .instances
            .iter()
            .filter_map(|i| Some((i.private_ip?, i.public_ip.unwrap_or(router_public))))
            .collect();
        let fw = Firewall {
            inside: inside.clone(),
            public_if: PUBLIC_IF.into(),
            allowed: state
                .instances
                .iter()
                .filter_map(|i| Some((i.mac.clone(), i.private_ip?)))
                .collect(),
            metadata: METADATA_IP,
            groups: subnets
                .iter()
                .map(|(&index, &(subnet, g))| GroupFilter {
                    index,
                    subnet,
                    allow: g
                        .rules
                        .iter()
                        .filter_map(|r| resolve_rule(r, &members))
                        .collect(),
                    hairpin: g
                        .rules
                        .iter()
                        .filter_map(|r| resolve_hairpin(r, &seen))
                        .collect(),
                })
                .collect(),
            nat: state
                .instances
                .iter()
                .filter_map(|i| Some((i.private_ip?, i.public_ip?)))
                .collect(),
            router_public,
            masquerade: if self.spec.masquerade {
                c.private_range
            } else {
                None
            },
        };
        crate::nft::apply(&self.spec.netns, &fw.render()).await?;
        // After the new table is in: a packet of a forgotten flow is tracked anew
        // under the new NAT and filter, never the old.
        let now = Bindings::of(state);
        if let Some(old) = last.as_ref() {
            self.forget(&Stale::between(old, &now)).await;
        }
        *last = Some(now);

        let cfg = DhcpConfig {
            interfaces: inside,
            subnets: subnets
                .values()
                .map(|&(n, _)| DhcpSubnet {
                    subnet: n,
                    router: Some(nth(n, 1)),
                    // The gateway is the router, which holds the metadata address.
                    routes: Vec::new(),
                })
                .collect(),
            dns: self.spec.dns,
            lease_secs: self.spec.lease_secs,
        };
        self.dhcp.apply(&cfg, &fw.allowed)
    }

    /// Creates group `k`'s VXLAN device in the CC's namespace (its socket stays
    /// there, on the underlay) and moves it into the router as `vx<k>`.
    async fn add_vxlan(&self, k: u32, name: &str) -> Result<(), VnetError> {
        let underlay = self.spec.underlay.as_deref().ok_or(VnetError::Invalid {
            what: "managed mode",
            value: "underlay is not set".into(),
        })?;
        let vni = self
            .spec
            .cluster
            .vni_base
            .checked_add(k)
            .ok_or(VnetError::Invalid {
                what: "VNI",
                value: format!("{} + {k}", self.spec.cluster.vni_base),
            })?;
        // A temporary name unique to this router: two clouds may share the CC's
        // namespace.
        let tmp = short(&format!("ev{}{k}", self.spec.hash()));
        self.outer.del_link(&tmp).await?;
        self.outer
            .ensure_vxlan(
                &tmp,
                vni,
                self.spec.vxlan_group,
                self.spec.vxlan_port,
                underlay,
            )
            .await?;
        self.outer.move_to(&tmp, &self.spec.netns).await?;
        self.ip.rename(&tmp, name).await
    }

    /// Deletes the tracked flows of `stale`'s addresses. A failure is logged, not
    /// returned: the new table is in already, and a retry of the same state would
    /// find no binding changed.
    async fn forget(&self, stale: &Stale) {
        if stale.is_empty() || !self.conntrack {
            return;
        }
        let netns = &self.spec.netns;
        match crate::conntrack::forget(netns, stale).await {
            Ok(n) => tracing::info!(
                netns = %netns,
                public = ?stale.public,
                private = ?stale.private,
                flows = n,
                "router: forgot the tracked flows of changed addresses"
            ),
            Err(e) => tracing::warn!(
                netns = %netns,
                error = %e,
                "router: could not forget the tracked flows of changed addresses"
            ),
        }
    }

    /// Stops the DHCP server (the namespace stays).
    pub async fn stop(&self) {
        self.dhcp.stop().await;
    }
}

/// Refuses a state the router could only half apply (checked before anything is
/// changed or journaled): MACs that are not `xx:xx:xx:xx:xx:xx`, one address or
/// MAC claimed twice.
pub fn check_state(state: &NetworkState) -> Result<(), VnetError> {
    let mut macs = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut publics = BTreeSet::new();
    let dup = |what: &'static str, v: String| VnetError::Invalid { what, value: v };
    for i in &state.instances {
        if !crate::dhcp::valid_mac(&i.mac) {
            return Err(dup("MAC address", i.mac.clone()));
        }
        if !macs.insert(i.mac.to_ascii_lowercase()) {
            return Err(dup("repeated MAC address", i.mac.clone()));
        }
        if let Some(ip) = i.private_ip {
            if !ips.insert(ip) {
                return Err(dup("repeated private address", ip.to_string()));
            }
        }
        if let Some(ip) = i.public_ip {
            if !publics.insert(ip) {
                return Err(dup("repeated public address", ip.to_string()));
            }
        }
    }
    Ok(())
}

/// Deletes a router namespace (its links, and so the veths' outer ends, go with
/// it) and stops a dnsmasq still running for it.
pub async fn destroy(netns_name: &str) -> Result<(), VnetError> {
    check_netns(netns_name)?;
    // Any process still inside (a dnsmasq of an earlier CC) keeps nothing alive
    // that matters once the namespace's name is gone, but would hold its leases.
    if let Ok(out) = tokio::process::Command::new("ip")
        .args(["netns", "pids", netns_name])
        .stderr(Stdio::null())
        .output()
        .await
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                if pid > 1 {
                    // SAFETY: kill with a pid listed in that namespace.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
    }
    netns::delete(netns_name).await
}

/// An ingress rule as nftables matches: protocol and ports/ICMP, sources (the
/// rule's CIDRs and the addresses of its source groups' instances). `None` when it
/// cannot match anything or names a protocol not handled.
pub fn resolve_rule(r: &IngressRule, members: &HashMap<&str, Vec<Ipv4Addr>>) -> Option<Allow> {
    let proto = match r.protocol.to_ascii_lowercase().as_str() {
        "tcp" | "6" => Some(Proto::Tcp),
        "udp" | "17" => Some(Proto::Udp),
        "icmp" | "1" => Some(Proto::Icmp),
        "-1" | "all" => None,
        other => {
            tracing::warn!(
                protocol = other,
                "router: ingress protocol not handled; rule skipped"
            );
            return None;
        }
    };
    let mut a = Allow {
        proto,
        ports: None,
        icmp_type: None,
        icmp_code: None,
        sources: r.cidrs.clone(),
    };
    match proto {
        Some(Proto::Tcp | Proto::Udp) => {
            let any = r.from_port < 0 || (r.from_port == 0 && r.to_port >= 65535);
            if !any {
                let lo = u16::try_from(r.from_port).ok()?;
                let hi = u16::try_from(r.to_port.max(r.from_port)).ok()?;
                a.ports = Some((lo, hi));
            }
        }
        Some(Proto::Icmp) => {
            a.icmp_type = u8::try_from(r.from_port).ok();
            a.icmp_code = u8::try_from(r.to_port).ok();
        }
        None => {}
    }
    for g in &r.groups {
        if let Some(ips) = members.get(g.as_str()) {
            a.sources
                .extend(ips.iter().filter_map(|ip| Ipv4Net::new(*ip, 32).ok()));
        }
    }
    Some(a)
}

/// A rule as it admits hairpin traffic (an instance reaching the group through a
/// public address; the router rewrites its source to its own public address, or
/// the router's): the rule's CIDRs become the private addresses of the instances
/// whose hairpin source `seen` (private, source shown) they contain. Source-group
/// permissions admit private-address traffic only, as in EC2.
pub fn resolve_hairpin(r: &IngressRule, seen: &[(Ipv4Addr, Ipv4Addr)]) -> Option<Allow> {
    let cidrs_only = IngressRule {
        groups: Vec::new(),
        ..r.clone()
    };
    let mut a = resolve_rule(&cidrs_only, &HashMap::new())?;
    if a.sources.iter().any(|n| n.prefix_len() == 0) {
        return Some(a);
    }
    a.sources = seen
        .iter()
        .filter(|(_, shown)| r.cidrs.iter().any(|c| c.contains(shown)))
        .filter_map(|(private, _)| Ipv4Net::new(*private, 32).ok())
        .collect();
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_short() {
        let a = router_netns(Path::new("/nonexistent/a"));
        let b = router_netns(Path::new("/nonexistent/b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), "euca-".len() + 8);
        assert_eq!(a, router_netns(Path::new("/nonexistent/a")));
        let c = default_public_cidr(Path::new("/nonexistent/a"));
        assert_eq!(c.prefix_len(), 24);
    }

    #[test]
    fn rules_resolve_groups_and_ports() {
        let members: HashMap<&str, Vec<Ipv4Addr>> =
            [("sg-a", vec!["10.0.0.2".parse().unwrap()])].into();
        let r = IngressRule {
            protocol: "tcp".into(),
            from_port: 80,
            to_port: 81,
            cidrs: vec![],
            groups: vec!["sg-a".into(), "sg-none".into()],
        };
        let a = resolve_rule(&r, &members).unwrap();
        assert_eq!(a.ports, Some((80, 81)));
        assert_eq!(a.sources, vec!["10.0.0.2/32".parse::<Ipv4Net>().unwrap()]);
        let icmp = IngressRule {
            protocol: "icmp".into(),
            from_port: -1,
            to_port: -1,
            cidrs: vec!["0.0.0.0/0".parse().unwrap()],
            groups: vec![],
        };
        let a = resolve_rule(&icmp, &members).unwrap();
        assert_eq!((a.icmp_type, a.icmp_code), (None, None));
        let bad = IngressRule {
            protocol: "gre".into(),
            ..icmp
        };
        assert!(resolve_rule(&bad, &members).is_none());
    }

    #[test]
    fn hairpin_rules_match_the_public_source() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // 10.0.0.2 shows as 100.64.1.10; 10.0.0.3 has no public address and shows
        // as the router's 100.64.1.2.
        let seen = [
            (ip("10.0.0.2"), ip("100.64.1.10")),
            (ip("10.0.0.3"), ip("100.64.1.2")),
        ];
        let rule = |cidr: &str, groups: Vec<String>| IngressRule {
            protocol: "tcp".into(),
            from_port: 80,
            to_port: 80,
            cidrs: vec![cidr.parse().unwrap()],
            groups,
        };
        let a = resolve_hairpin(&rule("100.64.1.10/32", vec![]), &seen).unwrap();
        assert_eq!(a.sources, vec!["10.0.0.2/32".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(a.ports, Some((80, 80)));
        let a = resolve_hairpin(&rule("100.64.1.0/24", vec![]), &seen).unwrap();
        assert_eq!(a.sources.len(), 2);
        // A private CIDR admits no hairpin traffic (its source is public by then),
        // nor does a source group.
        let a = resolve_hairpin(&rule("10.0.0.0/24", vec!["sg-a".into()]), &seen).unwrap();
        assert!(a.sources.is_empty());
        let a = resolve_hairpin(&rule("0.0.0.0/0", vec![]), &seen).unwrap();
        assert_eq!(a.sources, vec!["0.0.0.0/0".parse::<Ipv4Net>().unwrap()]);
    }
}
