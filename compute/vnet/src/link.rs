//! Links, addresses and namespaces through iproute2's `ip` (`ip -n NS …` for a named
//! namespace). Names are checked before use: at most 15 bytes (IFNAMSIZ − 1) of
//! `[A-Za-z0-9_.-]`, never starting with `-`.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::process::Command;

use crate::VnetError;

/// `ip`, in the current namespace or a named one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ip {
    netns: Option<String>,
}

/// A name of at most `max` bytes of `[A-Za-z0-9_.-]` that starts with neither `-`
/// nor `.` (so `ip` never takes it for an option or a path).
fn check_name(name: &str, max: usize, what: &'static str) -> Result<(), VnetError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('-')
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(VnetError::Invalid {
            what,
            value: name.to_string(),
        })
    }
}

/// Refuses names `ip` or the kernel would take differently (IFNAMSIZ − 1 bytes).
pub fn check_ifname(name: &str) -> Result<(), VnetError> {
    check_name(name, 15, "interface name")
}

/// Refuses namespace names that are not plain file names.
pub fn check_netns(name: &str) -> Result<(), VnetError> {
    check_name(name, 64, "namespace name")
}

impl Ip {
    /// `ip` in this process's namespace.
    pub fn here() -> Ip {
        Ip { netns: None }
    }

    /// `ip -n NAME`.
    pub fn netns(name: &str) -> Result<Ip, VnetError> {
        check_netns(name)?;
        Ok(Ip {
            netns: Some(name.to_string()),
        })
    }

    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Runs `ip [-n NS] ARGS…`; a failure carries the first line of stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String, VnetError> {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.netns {
            cmd.args(["-n", ns]);
        }
        cmd.args(args);
        cmd.stdin(std::process::Stdio::null());
        let shown = || {
            let mut s = String::from("ip");
            if let Some(ns) = &self.netns {
                s.push_str(" -n ");
                s.push_str(ns);
            }
            for a in args {
                s.push(' ');
                s.push_str(a);
            }
            s
        };
        let out = cmd.output().await.map_err(|source| VnetError::Spawn {
            cmd: shown(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(VnetError::Failed {
                cmd: shown(),
                stderr: stderr.lines().next().unwrap_or("").to_string(),
            })
        }
    }

    /// Whether a link of this name exists (in this `Ip`'s namespace).
    pub async fn link_exists(&self, name: &str) -> Result<bool, VnetError> {
        check_ifname(name)?;
        Ok(self.run(&["link", "show", "dev", name]).await.is_ok())
    }

    /// Creates a bridge (no STP, forward delay 0) unless it exists, and sets it up.
    pub async fn ensure_bridge(&self, name: &str) -> Result<(), VnetError> {
        check_ifname(name)?;
        if !self.link_exists(name).await? {
            self.run(&[
                "link",
                "add",
                name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ])
            .await?;
        }
        self.set_up(name).await
    }

    /// Creates a veth pair `a` (here) ↔ `b`, `b` placed in namespace `b_netns`
    /// (`None`: here too). Nothing is done when `a` exists and `b` is where it
    /// belongs. An `a` whose peer is elsewhere is replaced: a deleted namespace is
    /// torn down by the kernel after its name is gone, so for a moment the outer
    /// end of a veth into it outlives it (a router restarted at once saw its old
    /// `er…` and no `pub` in the new namespace).
    pub async fn ensure_veth(
        &self,
        a: &str,
        b: &str,
        b_netns: Option<&str>,
    ) -> Result<(), VnetError> {
        check_ifname(a)?;
        check_ifname(b)?;
        let peer_side = match b_netns {
            Some(ns) => Ip::netns(ns)?,
            None => self.clone(),
        };
        if self.link_exists(a).await? {
            if peer_side.link_exists(b).await? {
                return Ok(());
            }
            tracing::info!(link = a, peer = b, "veth: peer gone, replacing the pair");
        }
        let mut args = vec!["link", "add", a, "type", "veth", "peer", "name", b];
        if let Some(ns) = b_netns {
            args.extend(["netns", ns]);
        }
        // The stale end may be going away on its own while we delete it: retry
        // for up to 2 s until the name is free.
        let mut tries = 0;
        loop {
            if self.link_exists(a).await? {
                let _ = self.run(&["link", "del", "dev", a]).await;
            }
            match self.run(&args).await {
                Ok(_) => return Ok(()),
                Err(e) if tries < 40 => {
                    tries += 1;
                    tracing::debug!(error = %e, "veth: retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a VXLAN device unless it exists: VNI `vni`, UDP `port`, underlay
    /// `dev`, flooding to multicast `group` (learning on).
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        group: Ipv4Addr,
        port: u16,
        dev: &str,
    ) -> Result<(), VnetError> {
        check_ifname(name)?;
        check_ifname(dev)?;
        if self.link_exists(name).await? {
            return Ok(());
        }
        let (vni, group, port) = (vni.to_string(), group.to_string(), port.to_string());
        self.run(&[
            "link", "add", name, "type", "vxlan", "id", &vni, "group", &group, "dstport", &port,
            "dev", dev,
        ])
        .await?;
        Ok(())
    }

    pub async fn set_up(&self, name: &str) -> Result<(), VnetError> {
        check_ifname(name)?;
        self.run(&["link", "set", "dev", name, "up"]).await?;
        Ok(())
    }

    /// Enslaves `name` to bridge `bridge` and sets it up. The bridge keeps its
    /// MAC address: it is pinned first (set to itself), since a bridge whose
    /// address was never set takes its lowest port's, and a new port (a tap, the
    /// router's veth) with a lower one would move it under the bridge's own IP
    /// address. The LAN's hosts would keep the old MAC in their ARP caches, and
    /// their frames to it, arriving on another port, would be dropped until the
    /// entry went stale (up to about a minute without reaching the host: seen as a
    /// node that could not reach its CC).
    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<(), VnetError> {
        check_ifname(name)?;
        check_ifname(bridge)?;
        if let Some(mac) = self.mac(bridge).await? {
            self.run(&["link", "set", "dev", bridge, "address", &mac])
                .await?;
        }
        self.run(&["link", "set", "dev", name, "master", bridge])
            .await?;
        self.set_up(name).await
    }

    /// The MAC address of link `name` (`link/ether`), if it has one.
    pub async fn mac(&self, name: &str) -> Result<Option<String>, VnetError> {
        check_ifname(name)?;
        let out = self.run(&["-o", "link", "show", "dev", name]).await?;
        Ok(out
            .split_whitespace()
            .skip_while(|t| *t != "link/ether")
            .nth(1)
            .map(str::to_string))
    }

    /// Moves link `name` from this namespace into namespace `to`.
    pub async fn move_to(&self, name: &str, to: &str) -> Result<(), VnetError> {
        check_ifname(name)?;
        check_netns(to)?;
        self.run(&["link", "set", "dev", name, "netns", to]).await?;
        Ok(())
    }

    /// Deletes link `name`; a link that is gone already is not an error.
    pub async fn del_link(&self, name: &str) -> Result<(), VnetError> {
        check_ifname(name)?;
        if self.link_exists(name).await? {
            self.run(&["link", "del", "dev", name]).await?;
        }
        Ok(())
    }

    /// Adds `addr` to `dev` (`ip addr replace`, so repeating it is harmless).
    pub async fn addr_replace(&self, dev: &str, addr: Ipv4Net) -> Result<(), VnetError> {
        check_ifname(dev)?;
        self.run(&["addr", "replace", &addr.to_string(), "dev", dev])
            .await?;
        Ok(())
    }

    /// Removes `addr` from `dev`; an address that is not there is not an error.
    pub async fn addr_del(&self, dev: &str, addr: Ipv4Net) -> Result<(), VnetError> {
        check_ifname(dev)?;
        let _ = self
            .run(&["addr", "del", &addr.to_string(), "dev", dev])
            .await;
        Ok(())
    }

    /// The IPv4 addresses (with prefix) on `dev`.
    pub async fn addrs(&self, dev: &str) -> Result<Vec<Ipv4Net>, VnetError> {
        check_ifname(dev)?;
        let out = self.run(&["-4", "-o", "addr", "show", "dev", dev]).await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|t| *t == "inet")?;
                w.next()?.parse().ok()
            })
            .collect())
    }

    /// The names of the links in this namespace.
    pub async fn links(&self) -> Result<Vec<String>, VnetError> {
        let out = self.run(&["-o", "link", "show"]).await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let name = l.split(':').nth(1)?.trim();
                Some(name.split('@').next().unwrap_or(name).to_string())
            })
            .collect())
    }

    /// Renames link `from` to `to` (it must be down).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), VnetError> {
        check_ifname(from)?;
        check_ifname(to)?;
        self.run(&["link", "set", "dev", from, "name", to]).await?;
        Ok(())
    }

    /// `ip route replace DEST via GW` (or `dev DEV` when `via` is none).
    pub async fn route_replace(
        &self,
        dest: &str,
        via: Option<Ipv4Addr>,
        dev: Option<&str>,
    ) -> Result<(), VnetError> {
        let mut args: Vec<String> = vec!["route".into(), "replace".into(), dest.into()];
        if let Some(gw) = via {
            args.push("via".into());
            args.push(gw.to_string());
        }
        if let Some(d) = dev {
            check_ifname(d)?;
            args.push("dev".into());
            args.push(d.into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs).await?;
        Ok(())
    }
}

/// Named namespaces (`ip netns`, bind mounts under `/run/netns`).
pub mod netns {
    use super::{check_netns, Ip};
    use crate::VnetError;

    pub async fn exists(name: &str) -> Result<bool, VnetError> {
        check_netns(name)?;
        Ok(std::path::Path::new("/run/netns").join(name).exists())
    }

    /// Runs `ip netns add|del NAME` in the outer mount namespace when this process
    /// has its own: under `ip netns exec` (how the emulated cluster runs its
    /// services) the mount namespace is a slave of the host's, so a namespace
    /// bind-mounted here would be invisible to every other process and vanish
    /// with this one; mounted in the outer one, it propagates here too.
    async fn host_netns_cmd(verb: &str, name: &str) -> Result<(), VnetError> {
        let args = ["netns", verb, name];
        if let Some(host) = outer_mount_ns() {
            let out = tokio::process::Command::new("nsenter")
                .arg(format!("--mount={host}"))
                .args(["--", "ip"])
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|source| VnetError::Spawn {
                    cmd: format!("nsenter ip netns {verb} {name}"),
                    source,
                })?;
            if !out.status.success() {
                return Err(VnetError::Failed {
                    cmd: format!("nsenter ip netns {verb} {name}"),
                    stderr: String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                });
            }
            return Ok(());
        }
        Ip::here().run(&args).await.map(|_| ())
    }

    /// The mount namespace (`/proc/PID/ns/mnt`) of the nearest ancestor not in
    /// this process's, when there is one: PID 1's when it can be read, else the
    /// parent chain's (the shell that ran `ip netns exec`). `None`: this process
    /// is in the host's mount namespace, or no other one is reachable.
    fn outer_mount_ns() -> Option<String> {
        let mine = std::fs::read_link("/proc/self/ns/mnt").ok()?;
        let differs = |pid: u32| {
            let p = format!("/proc/{pid}/ns/mnt");
            match std::fs::read_link(&p) {
                Ok(ns) if ns != mine => Some(p),
                _ => None,
            }
        };
        if let Some(p) = differs(1) {
            return Some(p);
        }
        let mut pid = std::process::id();
        for _ in 0..64 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ppid: u32 = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            if ppid <= 1 {
                return None;
            }
            if let Some(p) = differs(ppid) {
                return Some(p);
            }
            pid = ppid;
        }
        None
    }

    /// Creates the namespace unless it exists, with its loopback up. A name left
    /// without its namespace (a file no longer mounted) is made anew.
    pub async fn ensure(name: &str) -> Result<(), VnetError> {
        let ip = Ip::netns(name)?;
        if exists(name).await? && ip.run(&["link", "show", "lo"]).await.is_err() {
            let _ = std::fs::remove_file(std::path::Path::new("/run/netns").join(name));
        }
        if !exists(name).await? {
            host_netns_cmd("add", name).await?;
        }
        ip.set_up("lo").await
    }

    /// Deletes the namespace (its links go with it); a missing one is not an error.
    pub async fn delete(name: &str) -> Result<(), VnetError> {
        if exists(name).await? {
            host_netns_cmd("del", name).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port with a lower MAC than the bridge's does not move the bridge's
    /// address (root only: a scratch namespace).
    #[tokio::test]
    async fn a_new_port_leaves_the_bridge_mac() {
        if !crate::can_admin_network() {
            eprintln!("skipped: needs CAP_NET_ADMIN");
            return;
        }
        let ns = format!("euca-mt{}", std::process::id() % 100_000);
        netns::ensure(&ns).await.unwrap();
        let ip = Ip::netns(&ns).unwrap();
        let outcome = async {
            ip.ensure_bridge("tbr0").await?;
            ip.ensure_veth("thi", "thi2", None).await?;
            ip.run(&["link", "set", "dev", "thi", "address", "02:00:00:00:00:60"])
                .await?;
            ip.set_master("thi", "tbr0").await?;
            let before = ip.mac("tbr0").await?;
            ip.ensure_veth("tlo", "tlo2", None).await?;
            ip.run(&["link", "set", "dev", "tlo", "address", "02:00:00:00:00:05"])
                .await?;
            ip.set_master("tlo", "tbr0").await?;
            Ok::<_, VnetError>((before, ip.mac("tbr0").await?))
        }
        .await;
        netns::delete(&ns).await.unwrap();
        let (before, after) = outcome.unwrap();
        assert!(before.is_some());
        assert_eq!(after, before, "the bridge took the lower port's MAC");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_ifname("eucabr0").is_ok());
        assert!(check_ifname("a-very-long-name-x").is_err());
        assert!(check_ifname("-dev").is_err());
        assert!(check_ifname("br 0").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_netns("euca-0123abcd").is_ok());
        assert!(check_netns("../x").is_err());
    }
}
