//! The instance's NIC on the network (issue 14): its tap's name, the checks before
//! QEMU makes it, plugging it into the segment the spec's [`NicSpec`] names, and the
//! per-VNI segments (`managed` mode) the node shares between its instances of one
//! security group.
//!
//! QEMU creates the tap (`-netdev tap,ifname=…`) in the NC's namespace; it goes
//! away when QEMU exits (it is not persistent), wherever it was moved. With
//! `[nc.net] netns` set, the NC moves it into that namespace, where the bridge (and
//! the underlay) are, before enslaving it.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use euca_compute_proto::net::{NicSpec, Segment};
use euca_vnet::link::{check_ifname, netns};
use euca_vnet::{Ip, VnetError};

use crate::config::NcNetConfig;
use crate::NcError;

/// A link operation failed while plugging an instance.
fn net_err(what: &str, e: VnetError) -> NcError {
    NcError::Internal(format!("network: {what}: {e}"))
}

/// The instance's tap name: deterministic from its id (so a restarted NC finds it)
/// and at most 15 bytes: `t-<hex>` when the id's hex part fits, else `t` and 13 hex
/// digits of a hash of the id.
pub fn tap_name(instance_id: &str) -> String {
    let hex = instance_id.strip_prefix("i-").unwrap_or(instance_id);
    if hex.len() <= 13 {
        return format!("t-{hex}");
    }
    // FNV-1a: stable across releases (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("t{:013x}", h & ((1 << 52) - 1))
}

/// The bridge and VXLAN device of VNI `vni` (`nb<vni>`, `nx<vni>`; a VNI has at most
/// 8 digits, so the names fit).
pub fn segment_links(vni: u32) -> (String, String) {
    (format!("nb{vni}"), format!("nx{vni}"))
}

/// Where the node's side of the network lives.
pub struct NodeNet {
    cfg: NcNetConfig,
    /// `ip` in `[nc.net] netns`, or here.
    ip: Ip,
    /// VNI → the instances whose taps are plugged into its segment; the segment is
    /// removed with the last of them.
    segments: Mutex<BTreeMap<u32, BTreeSet<String>>>,
    /// Serializes segment creation (two instances of one VNI booting at once).
    segment_op: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeNet {
    /// Checks the configured names (not whether the links exist: that is checked
    /// per instance, so a node without networking still runs NIC-less instances).
    pub fn new(cfg: NcNetConfig) -> Result<NodeNet, NcError> {
        let bad = |e: VnetError| NcError::Config(format!("[nc.net]: {e}"));
        check_ifname(&cfg.bridge).map_err(bad)?;
        if let Some(u) = &cfg.underlay {
            check_ifname(u).map_err(bad)?;
        }
        let ip = match &cfg.netns {
            Some(ns) => Ip::netns(ns).map_err(bad)?,
            None => Ip::here(),
        };
        Ok(NodeNet {
            cfg,
            ip,
            segments: Mutex::new(BTreeMap::new()),
            segment_op: tokio::sync::Mutex::new(()),
        })
    }

    /// The namespace taps end up in (`None`: the NC's).
    pub fn netns(&self) -> Option<&str> {
        self.cfg.netns.as_deref()
    }

    fn where_(&self) -> String {
        match &self.cfg.netns {
            Some(ns) => format!("in namespace {ns}"),
            None => "in the node controller's namespace".into(),
        }
    }

    /// What must hold before QEMU makes the tap: root, the namespace, and the
    /// bridge (or the underlay) — so an instance never runs with an unplugged NIC.
    pub async fn check(&self, nic: &NicSpec) -> Result<(), NcError> {
        if !euca_vnet::can_admin_network() {
            return Err(NcError::Internal(
                "network: the instance has a network interface, but the node controller \
                 is not root (its tap needs CAP_NET_ADMIN)"
                    .into(),
            ));
        }
        if let Some(ns) = &self.cfg.netns {
            if !netns::exists(ns).await.map_err(|e| net_err("netns", e))? {
                return Err(NcError::Internal(format!(
                    "network: namespace {ns} ([nc.net] netns) does not exist"
                )));
            }
        }
        let need = match &nic.segment {
            Segment::Bridge => ("bridge", self.cfg.bridge.clone()),
            Segment::Vxlan { .. } => match &self.cfg.underlay {
                Some(u) => ("underlay", u.clone()),
                None => {
                    return Err(NcError::Internal(
                        "network: a VXLAN segment, but [nc.net] underlay is not set".into(),
                    ))
                }
            },
        };
        let exists = self
            .ip
            .link_exists(&need.1)
            .await
            .map_err(|e| net_err(need.0, e))?;
        if !exists {
            return Err(NcError::Internal(format!(
                "network: {} {} does not exist {}",
                need.0,
                need.1,
                self.where_()
            )));
        }
        Ok(())
    }

    /// Plugs instance `id`'s tap into its segment; idempotent, so it also re-checks
    /// the plug of an adopted instance.
    pub async fn plug(&self, id: &str, mac: &str, nic: &NicSpec) -> Result<(), NcError> {
        let tap = tap_name(id);
        if let Some(ns) = &self.cfg.netns {
            // Where QEMU made it; absent here once moved (an earlier plug).
            if Ip::here()
                .link_exists(&tap)
                .await
                .map_err(|e| net_err("tap", e))?
            {
                Ip::here()
                    .move_to(&tap, ns)
                    .await
                    .map_err(|e| net_err("moving the tap", e))?;
            }
        }
        if !self
            .ip
            .link_exists(&tap)
            .await
            .map_err(|e| net_err("tap", e))?
        {
            return Err(NcError::Internal(format!(
                "network: tap {tap} does not exist {}",
                self.where_()
            )));
        }
        let bridge = match &nic.segment {
            Segment::Bridge => self.cfg.bridge.clone(),
            Segment::Vxlan { vni } => {
                // Registered first: a concurrent unplug of the VNI's last other
                // instance must not remove the segment under this one.
                lock(&self.segments)
                    .entry(*vni)
                    .or_default()
                    .insert(id.to_string());
                self.ensure_segment(*vni).await?
            }
        };
        // The guard goes on before the tap joins the bridge: no frame of the guest
        // with another's MAC or address ever reaches the segment.
        euca_vnet::port::guard(self.cfg.netns.as_deref(), &tap, mac, nic.private_ip)
            .await
            .map_err(|e| net_err(&format!("guarding {tap}"), e))?;
        self.ip
            .set_master(&tap, &bridge)
            .await
            .map_err(|e| net_err(&format!("plugging {tap} into {bridge}"), e))?;
        tracing::info!(instance = id, tap, bridge, netns = ?self.cfg.netns, "NIC plugged");
        Ok(())
    }

    /// Counts an adopted instance's VNI before any instance is unplugged (so a
    /// terminate finished at start does not remove a segment another uses).
    pub fn register(&self, id: &str, nic: &NicSpec) {
        if let Segment::Vxlan { vni } = nic.segment {
            lock(&self.segments)
                .entry(vni)
                .or_default()
                .insert(id.to_string());
        }
    }

    /// `nb<vni>` with `nx<vni>` on the underlay enslaved, both up.
    async fn ensure_segment(&self, vni: u32) -> Result<String, NcError> {
        let underlay = self.cfg.underlay.as_deref().ok_or_else(|| {
            NcError::Internal("network: a VXLAN segment, but [nc.net] underlay is not set".into())
        })?;
        let (br, vx) = segment_links(vni);
        let e = |e| net_err(&format!("segment {vni}"), e);
        let _g = self.segment_op.lock().await;
        self.ip.ensure_bridge(&br).await.map_err(e)?;
        self.ip
            .ensure_vxlan(
                &vx,
                vni,
                self.cfg.vxlan_group,
                self.cfg.vxlan_port,
                underlay,
            )
            .await
            .map_err(e)?;
        self.ip.set_master(&vx, &br).await.map_err(e)?;
        Ok(br)
    }

    /// Instance `id` ended (QEMU gone, so is its tap): removes its VNI's segment when
    /// it was the node's last instance on it.
    pub async fn unplug(&self, id: &str, nic: &NicSpec) {
        let tap = tap_name(id);
        if let Err(e) = euca_vnet::port::unguard(self.cfg.netns.as_deref(), &tap).await {
            tracing::warn!(instance = id, tap, "removing the tap's guard: {e}");
        }
        let Segment::Vxlan { vni } = nic.segment else {
            return;
        };
        let last = {
            let mut segs = lock(&self.segments);
            let users = segs.entry(vni).or_default();
            users.remove(id);
            let last = users.is_empty();
            if last {
                segs.remove(&vni);
            }
            last
        };
        if !last {
            return;
        }
        let (br, vx) = segment_links(vni);
        let _g = self.segment_op.lock().await;
        // Re-checked under the lock: an instance of this VNI may have plugged since.
        if lock(&self.segments).contains_key(&vni) {
            return;
        }
        for link in [vx, br] {
            if let Err(e) = self.ip.del_link(&link).await {
                tracing::warn!(instance = id, vni, "removing {link}: {e}");
            }
        }
        tracing::info!(instance = id, vni, "last instance of the segment: removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_and_differ() {
        assert_eq!(tap_name("i-0badc0de"), "t-0badc0de");
        let a = tap_name("i-0123456789abcdef0");
        let b = tap_name("i-0123456789abcdef1");
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert!(t.len() <= 15, "{t}");
            assert!(check_ifname(t).is_ok());
        }
        assert_eq!(a, tap_name("i-0123456789abcdef0"));
        let (br, vx) = segment_links(16_777_215);
        assert!(check_ifname(&br).is_ok() && check_ifname(&vx).is_ok());
    }

    #[test]
    fn config_names_are_checked() {
        let mut c = NcNetConfig {
            bridge: "br with space".into(),
            ..NcNetConfig::default()
        };
        assert!(NodeNet::new(c.clone()).is_err());
        c.bridge = "eucabr".into();
        c.netns = Some("../x".into());
        assert!(NodeNet::new(c.clone()).is_err());
        c.netns = Some("node-x".into());
        assert_eq!(NodeNet::new(c).unwrap().netns(), Some("node-x"));
    }
}
