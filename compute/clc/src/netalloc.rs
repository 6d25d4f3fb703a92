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
//!
//! Records whose holder is gone (a crash between a launch's allocation and its
//! instance record, an instance ended while the CLC was down) are given back by
//! [`sweep`], which the reconciler runs now and then.
use crate::error::Ec2Error;
use crate::model::{Address, GroupRef, Instance, InstanceState, NetRecord};
use crate::offload::all_of;
use crate::store::{Db, Owned, Record, Write};
use euca_compute_proto::net::{ClusterNet, NetMode, NicSpec, Segment};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

/// The owner of the internal allocation records.
const OWNER: &str = "cloud";

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the allocation lock (a poisoned lock is still a lock: the records, not
/// the guard, hold the state).
pub fn lock() -> MutexGuard<'static, ()> {
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

/// The time stamped on new records ([`NetRecord::created`], [`Address::created`]):
/// Unix seconds of the system clock, which [`sweep`]'s caller reads too (not the
/// CLC's replaceable clock, which tests pin to the past).
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Deletes NetRecord `id` if `holder` still holds it; whether it did.
fn delete_if_held(db: &Db, id: &str, holder: &str) -> Result<bool, Ec2Error> {
    db.update::<NetRecord, _>(id, |cur| {
        Ok(match cur {
            Some(c) if c.record.holder == holder => (Write::Delete, true),
            _ => (Write::Keep, false),
        })
    })
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
                    created: Some(unix_now()),
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
            created: Some(unix_now()),
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
                    created: Some(unix_now()),
                },
            )?
        {
            db.insert_new(
                OWNER,
                &NetRecord {
                    id: group_id(zone, sg),
                    holder: k.to_string(),
                    created: Some(unix_now()),
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

/// Gives group `sg`'s subnet back if no instance of the zone is in it; whether
/// it had one to give back.
fn drop_group_if_unused(db: &Db, zone: &str, sg: &str) -> Result<bool, Ec2Error> {
    if !with_prefix::<NetRecord>(db, &member_prefix(zone, sg))?.is_empty() {
        return Ok(false);
    }
    let k = db.update::<NetRecord, _>(&group_id(zone, sg), |cur| {
        Ok(match cur {
            Some(c) => (Write::Delete, Some(c.record.holder.clone())),
            None => (Write::Keep, None),
        })
    })?;
    let Some(k) = k else {
        return Ok(false);
    };
    if let Ok(k) = k.parse::<u32>() {
        delete_if_held(db, &subnet_id(zone, k), sg)?;
    }
    Ok(true)
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
            created: Some(unix_now()),
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
///
/// `i` may be a stale copy (the reconciler's, read before an elastic IP was
/// associated with the instance), so the stored record is read again here, under
/// the lock, and what either of them names is given back; every give-back is
/// guarded by the holder, so naming an address the instance no longer holds
/// frees nothing of anyone else's. The copy still counts for a record that is gone
/// or was never written (a launch that failed before writing it).
pub fn release(db: &Db, i: &Instance) -> Result<(), Ec2Error> {
    // A stored record of another reservation is another instance that drew the
    // same id (a launch's id clash): not this one's to clear.
    let stored = db
        .get::<Instance>(&i.id)?
        .map(|o| o.record)
        .filter(|s| s.reservation_id == i.reservation_id);
    let views: Vec<&Instance> = std::iter::once(i).chain(stored.as_ref()).collect();
    let zone = &i.zone;
    let publics: BTreeSet<Ipv4Addr> = views.iter().filter_map(|v| v.public_ip).collect();
    for ip in publics {
        drop_public(db, zone, ip, &i.id)?;
    }
    let privates: BTreeSet<Ipv4Addr> = views
        .iter()
        .filter(|v| {
            matches!(
                v.net_mode(),
                NetMode::Static | NetMode::Managed | NetMode::ManagedNovlan
            )
        })
        .filter_map(|v| v.private_ip)
        .collect();
    for ip in privates {
        delete_if_held(db, &ip_id(zone, ip), &i.id)?;
    }
    if views.iter().any(|v| v.net_index.is_some()) {
        if let Some(g) = i.groups.first() {
            let member = format!("{}{}", member_prefix(zone, &g.id), i.id);
            db.update::<NetRecord, _>(&member, |_| Ok((Write::Delete, ())))?;
            drop_group_if_unused(db, zone, &g.id)?;
        }
    }
    if stored.is_none() {
        return Ok(());
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

/// How long [`sweep`] leaves a record alone whose holder has no instance record
/// (seconds). A launch takes its addresses under [`lock`] and writes its
/// (`launching`) instance record only after letting go of it, so for a moment a
/// live launch's records name an instance that does not exist yet. The records
/// carry the time they were taken rather than the launch holding the lock across
/// its write: the sweep then needs nothing from the launch path, and it tells a
/// young record from a leaked one after a restart too. The window is one blocking
/// closure with no network call in it; five minutes is for a stalled disk or a
/// starved blocking pool. A record without a time was written by an older
/// version, so by no launch of this process: it is judged at once.
pub const LEAK_GRACE_SECS: i64 = 300;

/// What one [`sweep`] gave back, by record id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Private allocations (`<zone>/ip/…`, `<zone>/member/…`).
    pub private: Vec<String>,
    /// Group subnets no instance is in any more (`<zone>/group/…`, and
    /// `<zone>/subnet/…` left without their group).
    pub subnets: Vec<String>,
    /// Launch-time public addresses, back in the pool.
    pub public: Vec<String>,
    /// Elastic IPs taken off an ended or missing instance (still their owner's).
    pub disassociated: Vec<String>,
    /// MAC addresses ([`crate::mac::sweep`]).
    pub macs: Vec<String>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.private.is_empty()
            && self.subnets.is_empty()
            && self.public.is_empty()
            && self.disassociated.is_empty()
            && self.macs.is_empty()
    }
}

/// Where an allocation's holder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Live,
    Ended,
    Missing,
}

/// Instance `id`'s standing, read once per sweep.
fn holder(db: &Db, seen: &mut HashMap<String, Holder>, id: &str) -> Result<Holder, Ec2Error> {
    if let Some(h) = seen.get(id) {
        return Ok(*h);
    }
    let h = match db.get::<Instance>(id)? {
        None => Holder::Missing,
        Some(o) if o.record.state == InstanceState::Terminated => Holder::Ended,
        Some(_) => Holder::Live,
    };
    seen.insert(id.to_string(), h);
    Ok(h)
}

/// Whether a record taken at `created` for a holder standing `h` is a leak.
fn leaked(h: Holder, created: Option<i64>, now: i64) -> bool {
    match h {
        Holder::Live => false,
        Holder::Ended => true,
        Holder::Missing => created.is_none_or(|t| t.saturating_add(LEAK_GRACE_SECS) <= now),
    }
}

/// Gives back every allocation whose holder is terminated, or has had no
/// instance record for [`LEAK_GRACE_SECS`] (by `now`, [`unix_now`]'s clock):
/// private addresses and group memberships, then the group subnets left empty,
/// and launch-time public addresses; an elastic IP associated with such an
/// instance is disassociated and stays its owner's. Hold [`lock`].
pub fn sweep(db: &Db, now: i64) -> Result<Swept, Ec2Error> {
    let mut out = Swept::default();
    let mut seen: HashMap<String, Holder> = HashMap::new();
    let mut groups: BTreeSet<(String, String)> = BTreeSet::new();
    let mut subnets: Vec<NetRecord> = Vec::new();
    for o in all_of::<NetRecord>(db, None)? {
        let r = o.record;
        let mut parts = r.id.splitn(3, '/');
        let (Some(zone), Some(kind), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let holder_id = match kind {
            "ip" => r.holder.as_str(),
            "member" => match rest.split_once('/') {
                Some((_, iid)) => iid,
                None => continue,
            },
            "group" => {
                groups.insert((zone.to_string(), rest.to_string()));
                continue;
            }
            "subnet" => {
                subnets.push(r);
                continue;
            }
            _ => continue,
        };
        if !leaked(holder(db, &mut seen, holder_id)?, r.created, now) {
            continue;
        }
        if delete_if_held(db, &r.id, &r.holder)? {
            out.private.push(r.id);
        }
    }
    // Under the lock a group record always has a member (a launch adds the member
    // in the same hold that made the group), so an empty group is a leak.
    for (zone, sg) in &groups {
        if drop_group_if_unused(db, zone, sg)? {
            out.subnets.push(group_id(zone, sg));
        }
    }
    // A subnet whose group record is gone or names another subnet: a crash
    // between the two writes of `group_index`.
    for r in subnets {
        let Some((zone, k)) = r.id.split_once("/subnet/") else {
            continue;
        };
        let mine = db
            .get::<NetRecord>(&group_id(zone, &r.holder))?
            .is_some_and(|g| g.record.holder == k);
        if mine {
            continue;
        }
        if delete_if_held(db, &r.id, &r.holder)? {
            out.subnets.push(r.id);
        }
    }
    for o in all_of::<Address>(db, None)? {
        let a = o.record;
        match (a.instance_id.as_deref(), a.elastic) {
            // AssociateAddress checks its target is live under the lock, so a
            // missing holder is never a launch in progress: no grace.
            (Some(iid), true) => {
                if holder(db, &mut seen, iid)? == Holder::Live {
                    continue;
                }
                drop_public(db, &a.zone, a.public_ip, iid)?;
                forget_public(db, iid, a.public_ip)?;
                out.disassociated.push(a.id);
            }
            (Some(iid), false) => {
                if !leaked(holder(db, &mut seen, iid)?, a.created, now) {
                    continue;
                }
                drop_public(db, &a.zone, a.public_ip, iid)?;
                forget_public(db, iid, a.public_ip)?;
                out.public.push(a.id);
            }
            // A launch-time address is always taken for an instance; one naming
            // none has no holder to wait for.
            (None, false) => {
                if !leaked(Holder::Missing, a.created, now) {
                    continue;
                }
                let gone = db.update::<Address, _>(&a.id, |cur| {
                    Ok(match cur {
                        Some(c) if !c.record.elastic && c.record.instance_id.is_none() => {
                            (Write::Delete, true)
                        }
                        _ => (Write::Keep, false),
                    })
                })?;
                if gone {
                    out.public.push(a.id);
                }
            }
            // Allocated, not associated: its owner's until released.
            (None, true) => {}
        }
    }
    Ok(out)
}

/// Clears instance `id`'s public address if it is still `ip`.
fn forget_public(db: &Db, id: &str, ip: Ipv4Addr) -> Result<(), Ec2Error> {
    db.update::<Instance, _>(id, |cur| {
        Ok(match cur {
            Some(c) if c.record.public_ip == Some(ip) => {
                c.record.public_ip = None;
                (Write::Put, ())
            }
            _ => (Write::Keep, ()),
        })
    })
}
