//! Forgetting the router's tracked flows that an address change made wrong.
//!
//! The NAT decision of a flow is taken on its first packet and kept in its conntrack
//! entry, and the filter's `ct state established` accepts the rest of it: replacing
//! the nftables table changes neither. So when a public address moves to another
//! instance, a flow already tracked through it would keep reaching the old one, and
//! when a private address is given to a new instance (another MAC, maybe another
//! account and group), flows of its old owner would keep passing without the new
//! owner's group rules. [`Stale::between`] finds the addresses whose binding changed
//! and [`forget`] deletes their entries, and only theirs, in the router's namespace
//! with `conntrack -D` (Debian's `conntrack` package).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Stdio;

use euca_compute_proto::net::NetworkState;
use tokio::process::Command;

use crate::link::check_netns;
use crate::VnetError;

/// The tool.
const CONNTRACK: &str = "conntrack";

/// Who holds a private address: the instance and the MAC the anti-spoofing ties to it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    instance_id: String,
    mac: String,
}

/// The address bindings of an applied state that tracked flows depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bindings {
    /// public → private (DNAT in, SNAT out).
    nat: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// private → its instance.
    owners: BTreeMap<Ipv4Addr, Owner>,
}

impl Bindings {
    pub fn of(state: &NetworkState) -> Bindings {
        let mut b = Bindings::default();
        for i in &state.instances {
            let Some(private) = i.private_ip else {
                continue;
            };
            b.owners.insert(
                private,
                Owner {
                    instance_id: i.instance_id.clone(),
                    mac: i.mac.to_ascii_lowercase(),
                },
            );
            if let Some(public) = i.public_ip {
                b.nat.insert(public, private);
            }
        }
        b
    }
}

/// Addresses whose tracked flows must go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// Public addresses mapped before and now mapped elsewhere or not at all: their
    /// DNAT'd flows in (original destination) and SNAT'd flows out (reply
    /// destination) are the old instance's.
    pub public: BTreeSet<Ipv4Addr>,
    /// Private addresses whose instance (or MAC) changed or that are gone: every flow
    /// from or to them.
    pub private: BTreeSet<Ipv4Addr>,
}

impl Stale {
    /// What changed from `old` to `new`. A binding that did not exist before has no
    /// flows to forget: nothing reached an unmapped public address (the forward
    /// policy drops it, so no entry is confirmed), and the flows of an address's
    /// previous owner went when that owner did.
    pub fn between(old: &Bindings, new: &Bindings) -> Stale {
        let mut s = Stale::default();
        for (public, private) in &old.nat {
            if new.nat.get(public) != Some(private) {
                s.public.insert(*public);
            }
        }
        for (private, owner) in &old.owners {
            if new.owners.get(private) != Some(owner) {
                s.private.insert(*private);
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.public.is_empty() && self.private.is_empty()
    }

    /// One `conntrack -D` filter per address and direction (the tool ANDs the
    /// options of one call, so each is a call of its own).
    pub fn filters(&self) -> Vec<(&'static str, Ipv4Addr)> {
        let mut f = Vec::new();
        for a in &self.public {
            f.push(("--orig-dst", *a));
            f.push(("--reply-dst", *a));
        }
        for a in &self.private {
            f.push(("--orig-src", *a));
            f.push(("--orig-dst", *a));
            // A flow DNAT'd to it from outside: its original destination is public.
            f.push(("--reply-src", *a));
        }
        f
    }
}

/// Whether the `conntrack` tool can be run.
pub async fn available() -> bool {
    Command::new(CONNTRACK)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The count in conntrack's "N flow entries have been deleted." (stderr).
fn deleted_count(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("): ")?;
        let (n, tail) = rest.split_once(' ')?;
        if tail.starts_with("flow entries have been deleted") {
            n.parse().ok()
        } else {
            None
        }
    })
}

/// Deletes the entries of `stale`'s addresses in namespace `netns`; how many went.
/// Every filter is tried; the first failure (other than "nothing matched", which the
/// tool reports with exit status 1) is returned after the rest ran.
pub async fn forget(netns: &str, stale: &Stale) -> Result<u64, VnetError> {
    check_netns(netns)?;
    let mut total = 0;
    let mut first_err = None;
    for (opt, addr) in stale.filters() {
        let a = addr.to_string();
        let argv = ["ip", "netns", "exec", netns, CONNTRACK, "-D", opt, &a];
        let shown = argv.join(" ");
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| VnetError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
        let err = String::from_utf8_lossy(&out.stderr);
        match (out.status.code(), deleted_count(&err)) {
            (Some(0 | 1), Some(n)) => total += n,
            _ => {
                if first_err.is_none() {
                    first_err = Some(VnetError::Failed {
                        cmd: shown,
                        stderr: err.lines().next().unwrap_or("").to_string(),
                    });
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_compute_proto::net::InstanceNet;

    fn inst(id: &str, mac: &str, private: &str, public: Option<&str>) -> InstanceNet {
        InstanceNet {
            instance_id: id.into(),
            account: "000000000001".into(),
            mac: mac.into(),
            group_id: Some("sg-a".into()),
            private_ip: Some(private.parse().unwrap()),
            public_ip: public.map(|p| p.parse().unwrap()),
            metadata: Default::default(),
        }
    }

    fn bindings(instances: Vec<InstanceNet>) -> Bindings {
        Bindings::of(&NetworkState {
            groups: vec![],
            instances,
        })
    }

    fn ips(v: &[&str]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_changed_bindings_are_stale() {
        let a = inst("i-a", "52:54:00:00:00:01", "10.0.0.2", Some("100.64.1.10"));
        let b = inst("i-b", "52:54:00:00:00:02", "10.0.0.3", None);
        let c = inst("i-c", "52:54:00:00:00:03", "10.0.0.4", Some("100.64.1.11"));
        let old = bindings(vec![a.clone(), b.clone(), c.clone()]);

        // The same state, a MAC in other case, a new instance, a new public
        // address: nothing tracked is wrong.
        let mut a_upper = a.clone();
        a_upper.mac = a.mac.to_ascii_uppercase();
        let d = inst("i-d", "52:54:00:00:00:04", "10.0.0.5", Some("100.64.1.12"));
        let same = bindings(vec![a_upper, b.clone(), c.clone(), d]);
        assert!(Stale::between(&old, &same).is_empty());

        // 100.64.1.10 moves from a to b: its flows go; both instances keep theirs.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.public_ip = None;
        b2.public_ip = Some("100.64.1.10".parse().unwrap());
        let s = Stale::between(&old, &bindings(vec![a2, b2, c.clone()]));
        assert_eq!(s.public, ips(&["100.64.1.10"]));
        assert!(s.private.is_empty());

        // c ends and a new instance takes its private address: c's public address
        // and every flow of 10.0.0.4 go.
        let e = inst("i-e", "52:54:00:00:00:05", "10.0.0.4", None);
        let s = Stale::between(&old, &bindings(vec![a.clone(), b.clone(), e]));
        assert_eq!(s.public, ips(&["100.64.1.11"]));
        assert_eq!(s.private, ips(&["10.0.0.4"]));

        // Same instance id, another MAC (a relaunch reusing the record): stale too.
        let mut b3 = b.clone();
        b3.mac = "52:54:00:00:00:99".into();
        let s = Stale::between(&old, &bindings(vec![a, b3, c]));
        assert_eq!(s.private, ips(&["10.0.0.3"]));
        assert_eq!(
            s.filters(),
            vec![
                ("--orig-src", "10.0.0.3".parse().unwrap()),
                ("--orig-dst", "10.0.0.3".parse().unwrap()),
                ("--reply-src", "10.0.0.3".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn the_deleted_count_is_read_from_stderr() {
        let none = "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n";
        assert_eq!(deleted_count(none), Some(0));
        let two = "tcp 6 431999 ESTABLISHED src=1.2.3.4 ...\nconntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n";
        assert_eq!(deleted_count(two), Some(2));
        let broken =
            "conntrack v1.4.7 (conntrack-tools): Operation failed: Protocol not supported\n";
        assert_eq!(deleted_count(broken), None);
    }
}
