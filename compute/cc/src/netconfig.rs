//! `[cc.net]`: the cluster's instance network (issue 14). Every field has a
//! default; unknown keys are refused (the table is not flattened, so serde's
//! `deny_unknown_fields` holds).
//!
//! ```toml
//! [cc.net]
//! mode = "managed-novlan"          # off | system | static | managed-novlan | managed
//! private_range = "10.128.0.0/16"  # managed modes: cut into one subnet per group
//! addrs_per_net = 32               # managed modes: addresses per group subnet
//! public_ips = ["100.64.7.10-100.64.7.20"]
//! ```
use std::net::Ipv4Addr;
use std::path::Path;

use euca_compute_proto::net::{ClusterNet, NetMode};
use euca_vnet::router::{default_public_cidr, router_netns, RouterSpec};
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::CcError;

/// Addresses one range may expand to at most (a typo like `10.0.0.1-10.9.0.1`
/// would otherwise allocate millions).
pub const MAX_RANGE: u32 = 65_536;

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// `off` (default: instances get a NIC on no network), `system`, `static`,
    /// `managed-novlan` or `managed`. Without root the CC runs `off` and says so.
    pub mode: NetMode,
    /// Managed modes: the range cut into one subnet per security group.
    pub private_range: Ipv4Net,
    /// Managed modes: addresses per group subnet (a power of two ≥ 16).
    pub addrs_per_net: u32,
    /// Managed modes: the public pool, addresses (`"a.b.c.d"`) or inclusive ranges
    /// (`"a.b.c.d-a.b.c.e"`). Default: `.10`–`.250` of `public_cidr`.
    pub public_ips: Vec<String>,
    /// The link between the router namespace and the CC's namespace: the CC's end
    /// is `.1`, the router's `.2` (its default route is `.1`). Default
    /// `100.64.X.0/24`, X from the router namespace's hash.
    pub public_cidr: Option<Ipv4Net>,
    /// An existing bridge in the CC's namespace reaching the nodes' instance
    /// bridges (`managed-novlan`, `static`): the router's `br0` gets a veth into
    /// it. Unset: the router's `br0` is the instances' bridge itself (one machine:
    /// tell the NC `[nc.net] netns = <router namespace>`, `bridge = "br0"`).
    pub private_bridge: Option<String>,
    /// `managed`: the device in the CC's namespace whose first IPv4 address
    /// carries VXLAN.
    pub underlay: Option<String>,
    /// `managed`: the multicast group VXLAN floods to.
    pub vxlan_group: Ipv4Addr,
    /// `managed`: VXLAN's UDP port.
    pub vxlan_port: u16,
    /// `managed`: group subnet `k` is VNI `vni_base + k`.
    pub vni_base: u32,
    /// `static`: the addresses handed out (addresses or ranges, as `public_ips`).
    pub static_ips: Vec<String>,
    /// `static`: the LAN's subnet (DHCP's range and netmask).
    pub static_subnet: Option<Ipv4Net>,
    /// `static`: the gateway DHCP hands out (unset: none).
    pub static_router: Option<Ipv4Addr>,
    /// `static`: the router namespace's address on the LAN (DHCP answers from it).
    pub static_server_ip: Option<Ipv4Addr>,
    /// DHCP option 6 for the instances (unset: not sent).
    pub dns: Option<Ipv4Addr>,
    /// Managed modes: instances without a public address reach the public side
    /// masqueraded behind the router's address.
    pub masquerade: bool,
    /// DHCP lease time, seconds.
    pub lease_secs: u32,
    /// The namespace standing for the CC's own (public link's outer end, private
    /// bridge, underlay); unset: the CC process's namespace. Tests and the
    /// emulated cluster set it.
    pub outer_netns: Option<String>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            mode: NetMode::Off,
            private_range: Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 16).unwrap_or_default(),
            addrs_per_net: 32,
            public_ips: Vec::new(),
            public_cidr: None,
            private_bridge: None,
            underlay: None,
            vxlan_group: Ipv4Addr::new(239, 35, 0, 1),
            vxlan_port: 4789,
            vni_base: 1000,
            static_ips: Vec::new(),
            static_subnet: None,
            static_router: None,
            static_server_ip: None,
            dns: None,
            masquerade: true,
            lease_secs: 3600,
            outer_netns: None,
        }
    }
}

/// Expands addresses and `a-b` ranges (inclusive), in order, without repeats.
pub fn expand_ranges(items: &[String]) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item.trim(), item.trim()),
        };
        let lo: Ipv4Addr = lo.parse().map_err(|_| format!("bad address {item:?}"))?;
        let hi: Ipv4Addr = hi.parse().map_err(|_| format!("bad address {item:?}"))?;
        let (lo, hi) = (u32::from(lo), u32::from(hi));
        if hi < lo || hi - lo >= MAX_RANGE {
            return Err(format!(
                "bad range {item:?} (empty or over {MAX_RANGE} addresses)"
            ));
        }
        for a in lo..=hi {
            if seen.insert(a) {
                out.push(Ipv4Addr::from(a));
            }
        }
    }
    Ok(out)
}

fn ifname_ok(n: &str) -> bool {
    euca_vnet::link::check_ifname(n).is_ok()
}

impl NetConfig {
    /// Refuses values the router cannot be built from.
    pub fn validate(&self) -> Result<(), CcError> {
        let bad = |m: String| Err(CcError::Config(format!("[cc.net] {m}")));
        let n = self.addrs_per_net;
        if !(16..=1 << 24).contains(&n) || !n.is_power_of_two() {
            return bad(format!("addrs_per_net {n} must be a power of two ≥ 16"));
        }
        if 32 - n.trailing_zeros() < u32::from(self.private_range.prefix_len()) {
            return bad("addrs_per_net is larger than private_range".into());
        }
        if let Err(e) = expand_ranges(&self.public_ips) {
            return bad(format!("public_ips: {e}"));
        }
        if let Err(e) = expand_ranges(&self.static_ips) {
            return bad(format!("static_ips: {e}"));
        }
        if let Some(c) = self.public_cidr {
            if c.prefix_len() > 29 {
                return bad("public_cidr must be /29 or larger".into());
            }
        }
        for (what, v) in [
            ("private_bridge", &self.private_bridge),
            ("underlay", &self.underlay),
        ] {
            if let Some(v) = v {
                if !ifname_ok(v) {
                    return bad(format!("{what} {v:?} is not an interface name"));
                }
            }
        }
        if let Some(o) = &self.outer_netns {
            if euca_vnet::link::check_netns(o).is_err() {
                return bad(format!("outer_netns {o:?} is not a namespace name"));
            }
        }
        match self.mode {
            NetMode::Managed if self.underlay.is_none() => {
                bad("mode managed needs underlay (the device carrying VXLAN)".into())
            }
            NetMode::Static
                if self.static_subnet.is_none()
                    || self.static_server_ip.is_none()
                    || self.static_ips.is_empty() =>
            {
                bad("mode static needs static_subnet, static_server_ip and static_ips".into())
            }
            _ => Ok(()),
        }
    }

    /// The public link subnet in force.
    pub fn public_cidr(&self, state_dir: &Path) -> Ipv4Net {
        self.public_cidr
            .unwrap_or_else(|| default_public_cidr(state_dir))
    }

    /// What `GET /v1/network` tells the CLC about this cluster.
    pub fn cluster_net(&self, state_dir: &Path) -> Result<ClusterNet, CcError> {
        let mode = self.mode;
        let mut c = ClusterNet {
            mode,
            ..ClusterNet::default()
        };
        let cfg = |e: String| CcError::Config(format!("[cc.net] {e}"));
        if mode.is_managed() {
            c.private_range = Some(self.private_range);
            c.addrs_per_net = self.addrs_per_net;
            c.public_ips = if self.public_ips.is_empty() {
                let net = self.public_cidr(state_dir);
                let base = u32::from(net.network());
                let last = u32::from(net.broadcast()).saturating_sub(1);
                (base + 10..=last.min(base + 250))
                    .map(Ipv4Addr::from)
                    .collect()
            } else {
                expand_ranges(&self.public_ips).map_err(cfg)?
            };
            if mode == NetMode::Managed {
                c.vni_base = self.vni_base;
            }
        }
        if mode == NetMode::Static {
            c.static_ips = expand_ranges(&self.static_ips).map_err(cfg)?;
        }
        Ok(c)
    }

    /// The router to build for this config (its namespace named after `state_dir`).
    pub fn router_spec(&self, state_dir: &Path) -> Result<RouterSpec, CcError> {
        Ok(RouterSpec {
            cluster: self.cluster_net(state_dir)?,
            netns: router_netns(state_dir),
            outer_netns: self.outer_netns.clone(),
            state_dir: state_dir.to_path_buf(),
            public_cidr: self.public_cidr(state_dir),
            private_bridge: self.private_bridge.clone(),
            underlay: self.underlay.clone(),
            vxlan_group: self.vxlan_group,
            vxlan_port: self.vxlan_port,
            static_subnet: self.static_subnet,
            static_router: self.static_router,
            static_server_ip: self.static_server_ip,
            dns: self.dns,
            masquerade: self.masquerade,
            lease_secs: self.lease_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CcConfig;

    #[test]
    fn nested_table_parses_with_defaults_and_refuses_unknown_keys() {
        let c: CcConfig = toml::from_str(
            r#"policy = "GREEDY"
               [net]
               mode = "managed-novlan"
               public_ips = ["192.0.2.10-192.0.2.12", "192.0.2.20"]"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.net.mode, NetMode::ManagedNovlan);
        assert_eq!(c.net.addrs_per_net, 32);
        let cn = c.net.cluster_net(Path::new("/nonexistent")).unwrap();
        assert_eq!(cn.public_ips.len(), 4);
        assert_eq!(cn.private_range, Some("10.128.0.0/16".parse().unwrap()));
        assert_eq!(cn.group_subnet(1), Some("10.128.0.32/27".parse().unwrap()));
        assert!(toml::from_str::<CcConfig>("[net]\nmod = \"static\"").is_err());
        assert!(toml::from_str::<CcConfig>("[net]\nmode = \"vlan\"").is_err());
        // Managed without an underlay, static without its addresses: refused.
        let m: CcConfig = toml::from_str("[net]\nmode = \"managed\"").unwrap();
        assert!(m.validate().is_err());
        let s: CcConfig = toml::from_str("[net]\nmode = \"static\"").unwrap();
        assert!(s.validate().is_err());
        let bad: CcConfig = toml::from_str("[net]\naddrs_per_net = 24").unwrap();
        assert!(bad.validate().is_err());
        // Off by default; the default pool is .10–.250 of the public link subnet.
        let d: CcConfig = toml::from_str("").unwrap();
        assert_eq!(d.net.mode, NetMode::Off);
        let n = NetConfig {
            mode: NetMode::ManagedNovlan,
            public_cidr: Some("100.64.9.0/24".parse().unwrap()),
            ..NetConfig::default()
        };
        let cn = n.cluster_net(Path::new("/x")).unwrap();
        assert_eq!(cn.public_ips.first(), Some(&"100.64.9.10".parse().unwrap()));
        assert_eq!(cn.public_ips.last(), Some(&"100.64.9.250".parse().unwrap()));
    }

    #[test]
    fn ranges_expand_and_are_bounded() {
        let v = expand_ranges(&["10.0.0.1-10.0.0.3".into(), "10.0.0.2".into()]).unwrap();
        assert_eq!(v.len(), 3);
        assert!(expand_ranges(&["10.0.0.3-10.0.0.1".into()]).is_err());
        assert!(expand_ranges(&["10.0.0.0-10.9.0.0".into()]).is_err());
        assert!(expand_ranges(&["nope".into()]).is_err());
    }
}
