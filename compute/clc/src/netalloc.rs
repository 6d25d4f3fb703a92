//! Instance addresses (issue 14): the CLC allocates them from each zone's
//! [`ClusterNet`] and records every one it hands out, one record per thing taken,
//! so the store's id uniqueness is the address's (as [`crate::mac`] does for MACs):
//!
//! - managed modes: each (zone, security group) gets the lowest free subnet index
//!   `k` (`<zone>/subnet/<k>` and `<zone>/group/<sg>`), each instance the lowest
//!   free address of that subnet (`.2` … broadcast − 1; `.1` is the CC's gateway);
//!   the subnet is given back with the group's last instance in the zone;
//! - `static`: the lowest free of the zone's `static_ips`;
//! - `system`: nothing (the node learns the address);
//! - public addresses (managed modes): [`Address`] records `<zone>/<ip>`, taken at
//!   launch (launch-time) or by AllocateAddress (elastic).
//!
//! Every allocation and release holds one process-wide lock, so "lowest free" is
//! decided and taken in one step and a subnet is never given back while a launch
//! is putting an instance into it. All of it runs on the blocking pool.
use crate::error::Ec2Error;
use crate::model::{Address, GroupRef, Instance, NetRecord};
use crate::store::{Db, Owned, Record, Write};
use euca_compute_proto::net::{ClusterNet, NetMode, NicSpec, Segment};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

/// The owner of the internal allocation records.
const OWNER: &str = "cloud";

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the allocation lock (a poisoned lock is still a lock: the records, not
/// the guard, hold the state).
pub(crate) fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every record of kind `T` whose id starts with `prefix`, in id order.
pub(crate) fn with_prefix<T: Record>(db: &Db, prefix: &str) -> Result<Vec<Owned<T>>, Ec2Error> {
    let batch = crate::describe::MAX_RESULTS;
    let mut out: Vec<Owned<T>> = Vec::new();
    let mut after = prefix.to_string();
    loop {
        let got = db.scan::<T>(None, Some(&after), batch)?;
        let done = got.len() < batch;
        for o in got {
            if !o.record.id().starts_with(prefix) {
                return Ok(out);
            }
            after = o.record.id().to_string();
            out.push(o);
        }
        if done {
            return Ok(out);
        }
    }
}

fn ip_id(zone: &str, ip: Ipv4Addr) -> String {
    format!("{zone}/ip/{ip}")
}
fn group_id(zone: &str, sg: &str) -> String {
    format!("{zone}/group/{sg}")
}
fn subnet_id(zone: &str, k: u32) -> String {
    format!("{zone}/subnet/{k}")
}
fn member_prefix(zone: &str, sg: &str) -> String {
    format!("{zone}/member/{sg}/")
}
/// The id of public address `ip`'s record in `zone`.
pub fn address_id(zone: &str, ip: Ipv4Addr) -> String {
    format!("{zone}/{ip}")
}

fn no_room(what: String) -> Ec2Error {
    Ec2Error::state("InsufficientAddressCapacity", what)
}

/// What a launch got: the instance's addresses and its NIC.
#[derive(Debug, Clone, Default)]
pub struct Allocated {
    pub private_ip: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
    pub index: Option<u32>,
    pub nic: Option<NicSpec>,
}

/// Allocates instance `id`'s addresses in `zone` (see the module doc). `group` is
/// its one security group in the managed modes; `public` asks for a launch-time
/// public address (managed modes; none left is not an error: the instance is
/// private only). Hold [`lock`].
pub(crate) fn allocate(
    db: &Db,
    net: &ClusterNet,
    zone: &str,
    owner: &str,
    id: &str,
    group: Option<&GroupRef>,
    public: bool,
) -> Result<Allocated, Ec2Error> {
    let nic = |segment, private_ip| NicSpec {
        mode: net.mode,
        segment,
        private_ip,
    };
    match net.mode {
        NetMode::Off => Ok(Allocated::default()),
        NetMode::System => Ok(Allocated {
            nic: Some(nic(Segment::Bridge, None)),
            ..Allocated::default()
        }),
        NetMode::Static => {
            let ip = take_ip(db, zone, id, net.static_ips.iter().copied())?.ok_or_else(|| {
                no_room(format!(
                    "All {} static addresses of zone {zone} are in use",
                    net.static_ips.len()
                ))
            })?;
            Ok(Allocated {
                private_ip: Some(ip),
                nic: Some(nic(Segment::Bridge, Some(ip))),
                ..Allocated::default()
            })
        }
        NetMode::Managed | NetMode::ManagedNovlan => {
            let g = group.ok_or_else(|| {
                Ec2Error::invalid("An instance needs a security group in this network mode")
            })?;
            let k = group_index(db, net, zone, &g.id)?;
            let subnet = net
                .group_subnet(k)
                .ok_or_else(|| Ec2Error::internal(format!("no subnet {k} in zone {zone}")))?;
            let first = u32::from(subnet.network()).saturating_add(2);
            let last = u32::from(subnet.broadcast()).saturating_sub(1);
            let hosts = (first..=last).map(Ipv4Addr::from);
            let ip = match take_ip(db, zone, id, hosts)? {
                Some(ip) => ip,
                None => {
                    drop_group_if_unused(db, zone, &g.id)?;
                    return Err(no_room(format!(
                        "The subnet {subnet} of security group {} in zone {zone} is full",
                        g.name
                    )));
                }
            };
            db.insert_new(
                OWNER,
                &NetRecord {
                    id: format!("{}{id}", member_prefix(zone, &g.id)),
                    holder: ip.to_string(),
                },
            )?;
            let public_ip = if public {
                take_public(db, net, zone, owner, Some(id), false)?
            } else {
                None
            };
            let segment = if net.mode == NetMode::Managed {
                Segment::Vxlan {
                    vni: net.vni_base.saturating_add(k),
                }
            } else {
                Segment::Bridge
            };
            Ok(Allocated {
                private_ip: Some(ip),
                public_ip,
                index: Some(k),
                nic: Some(nic(segment, Some(ip))),
            })
        }
    }
}

/// Takes the first of `candidates` no instance of `zone` holds, for `id`.
fn take_ip(
    db: &Db,
    zone: &str,
    id: &str,
    candidates: impl Iterator<Item = Ipv4Addr>,
) -> Result<Option<Ipv4Addr>, Ec2Error> {
    let used: BTreeSet<String> = with_prefix::<NetRecord>(db, &format!("{zone}/ip/"))?
        .into_iter()
        .map(|o| o.record.id)
        .collect();
    for ip in candidates {
        let rid = ip_id(zone, ip);
        if used.contains(&rid) {
            continue;
        }
        let rec = NetRecord {
            id: rid,
            holder: id.to_string(),
        };
        if db.insert_new(OWNER, &rec)? {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// Group `sg`'s subnet index in `zone`: the one it has, or the lowest free.
fn group_index(db: &Db, net: &ClusterNet, zone: &str, sg: &str) -> Result<u32, Ec2Error> {
    if let Some(o) = db.get::<NetRecord>(&group_id(zone, sg))? {
        return o
            .record
            .holder
            .parse()
            .map_err(|_| Ec2Error::internal(format!("group record {} is damaged", o.record.id)));
    }
    let used: BTreeSet<String> = with_prefix::<NetRecord>(db, &format!("{zone}/subnet/"))?
        .into_iter()
        .map(|o| o.record.id)
        .collect();
    let mut k = 0u32;
    while net.group_subnet(k).is_some() {
        let sid = subnet_id(zone, k);
        if !used.contains(&sid)
            && db.insert_new(
                OWNER,
                &NetRecord {
                    id: sid,
                    holder: sg.to_string(),
                },
            )?
        {
            db.insert_new(
                OWNER,
                &NetRecord {
                    id: group_id(zone, sg),
                    holder: k.to_string(),
                },
            )?;
            return Ok(k);
        }
        k += 1;
    }
    Err(no_room(format!(
        "No free subnet for security group {sg} in zone {zone}: all {k} subnets of its private range are taken by other groups"
    )))
}

/// Gives group `sg`'s subnet back if no instance of the zone is in it.
fn drop_group_if_unused(db: &Db, zone: &str, sg: &str) -> Result<(), Ec2Error> {
    if !with_prefix::<NetRecord>(db, &member_prefix(zone, sg))?.is_empty() {
        return Ok(());
    }
    let k = db.update::<NetRecord, _>(&group_id(zone, sg), |cur| {
        Ok(match cur {
            Some(c) => (Write::Delete, Some(c.record.holder.clone())),
            None => (Write::Keep, None),
        })
    })?;
    if let Some(k) = k.and_then(|k| k.parse::<u32>().ok()) {
        db.update::<NetRecord, _>(&subnet_id(zone, k), |cur| {
            Ok(match cur {
                Some(c) if c.record.holder == sg => (Write::Delete, ()),
                _ => (Write::Keep, ()),
            })
        })?;
    }
    Ok(())
}

/// Takes the lowest free public address of `zone`'s pool: launch-time for
/// `instance` (`elastic` false) or an elastic IP of `owner`. None when the pool
/// is used up. Hold [`lock`].
pub(crate) fn take_public(
    db: &Db,
    net: &ClusterNet,
    zone: &str,
    owner: &str,
    instance: Option<&str>,
    elastic: bool,
) -> Result<Option<Ipv4Addr>, Ec2Error> {
    let used: BTreeSet<String> = with_prefix::<Address>(db, &format!("{zone}/"))?
        .into_iter()
        .map(|o| o.record.id)
        .collect();
    for ip in &net.public_ips {
        let id = address_id(zone, *ip);
        if used.contains(&id) {
            continue;
        }
        let rec = Address {
            id,
            zone: zone.to_string(),
            public_ip: *ip,
            elastic,
            instance_id: instance.map(String::from),
        };
        if db.insert_new(owner, &rec)? {
            return Ok(Some(*ip));
        }
    }
    Ok(None)
}

/// Lets go of the public address `ip` instance `id` holds: a launch-time one goes
/// back to the pool, an elastic one stays its owner's, unassociated. Hold [`lock`].
pub(crate) fn drop_public(db: &Db, zone: &str, ip: Ipv4Addr, id: &str) -> Result<(), Ec2Error> {
    db.update::<Address, _>(&address_id(zone, ip), |cur| {
        Ok(match cur {
            Some(c) if c.record.instance_id.as_deref() == Some(id) => {
                if c.record.elastic {
                    c.record.instance_id = None;
                    (Write::Put, ())
                } else {
                    (Write::Delete, ())
                }
            }
            _ => (Write::Keep, ()),
        })
    })
}

/// Gives back everything instance `i` holds (idempotent) and clears its record's
/// addresses (when the record is still there). Hold [`lock`].
pub(crate) fn release(db: &Db, i: &Instance) -> Result<(), Ec2Error> {
    let zone = &i.zone;
    if let Some(ip) = i.public_ip {
        drop_public(db, zone, ip, &i.id)?;
    }
    if let (Some(ip), true) = (
        i.private_ip,
        matches!(
            i.net_mode(),
            NetMode::Static | NetMode::Managed | NetMode::ManagedNovlan
        ),
    ) {
        db.update::<NetRecord, _>(&ip_id(zone, ip), |cur| {
            Ok(match cur {
                Some(c) if c.record.holder == i.id => (Write::Delete, ()),
                _ => (Write::Keep, ()),
            })
        })?;
    }
    if i.net_index.is_some() {
        if let Some(g) = i.groups.first() {
            let member = format!("{}{}", member_prefix(zone, &g.id), i.id);
            db.update::<NetRecord, _>(&member, |_| Ok((Write::Delete, ())))?;
            drop_group_if_unused(db, zone, &g.id)?;
        }
    }
    db.update::<Instance, _>(&i.id, |cur| {
        Ok(match cur {
            Some(c)
                if c.record.private_ip.is_some()
                    || c.record.public_ip.is_some()
                    || c.record.net_index.is_some() =>
            {
                c.record.private_ip = None;
                c.record.public_ip = None;
                c.record.net_index = None;
                (Write::Put, ())
            }
            _ => (Write::Keep, ()),
        })
    })
}

/// Sets instance `id`'s public address to `ip` (or none).
pub(crate) fn set_public(db: &Db, id: &str, ip: Option<Ipv4Addr>) -> Result<(), Ec2Error> {
    db.update::<Instance, _>(id, |cur| {
        Ok(match cur {
            Some(c) if c.record.public_ip != ip => {
                c.record.public_ip = ip;
                (Write::Put, ())
            }
            _ => (Write::Keep, ()),
        })
    })
}
