//! Elastic IPs (EC2-classic, as Eucalyptus' managed modes had them):
//! AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress and
//! DescribeAddresses. Addresses come from a zone's public pool
//! (`ClusterNet::public_ips`); see [`crate::netalloc`] for the records.
//!
//! An instance has one public address: its launch-time one, or an elastic one
//! associated with it. Associating gives the launch-time one back to the pool;
//! disassociating (or moving the elastic IP to another instance) gives the
//! instance a fresh launch-time one, if the pool has any left. Every change
//! rebuilds the DNS index at once and kicks the reconciler, which sends the
//! cluster its new state.
//!
//! An account holds at most `[clc] max_elastic_ips` elastic IPs
//! (`AddressLimitExceeded` beyond; EC2's default of 5); a pool with no free
//! address answers `InsufficientAddressCapacity`.
use crate::call::Call;
use crate::describe::{self, Describe};
use crate::error::Ec2Error;
use crate::model::{Address, Instance, InstanceState};
use crate::netalloc::{self, address_id};
use crate::offload::{all_of, blocking};
use crate::store::{Db, Owned, Write};
use euca_aws::xml::XmlWriter;
use euca_compute_proto::net::ClusterNet;
use std::net::Ipv4Addr;

fn not_found(ip: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidAddress.NotFound", "address", ip)
}

/// The caller's elastic IP `ip` (another account's, a launch-time one, an
/// unknown one and a malformed one are all "not found").
async fn owned(cx: &Call<'_>, ip: &str) -> Result<Owned<Address>, Ec2Error> {
    let addr: Ipv4Addr = ip.parse().map_err(|_| not_found(ip))?;
    let ids: Vec<String> = cx.clc.zones().iter().map(|z| address_id(z, addr)).collect();
    let (db, me) = (cx.clc.db.clone(), cx.account().to_string());
    let found = blocking(move || {
        for id in ids {
            if let Some(o) = db.get::<Address>(&id)? {
                if o.owner == me && o.record.elastic {
                    return Ok(Some(o));
                }
            }
        }
        Ok(None)
    })
    .await?;
    found.ok_or_else(|| not_found(ip))
}

/// Address record `aid` when it is still `me`'s elastic IP (under the lock).
fn still_mine(db: &Db, aid: &str, me: &str) -> Result<Option<Owned<Address>>, Ec2Error> {
    Ok(db
        .get::<Address>(aid)?
        .filter(|a| a.owner == me && a.record.elastic))
}

/// After a change: DNS now, the cluster's state from the reconciler.
async fn changed(cx: &Call<'_>) {
    if let Err(e) = crate::netstate::refresh_dns(cx.clc).await {
        tracing::warn!(error = %e, "rebuilding the DNS index");
    }
    cx.clc.kick_reconciler();
}

pub async fn allocate_address(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    match cx.params.get("Domain") {
        None | Some("standard") | Some("") => {}
        Some(d) => {
            return Err(Ec2Error::invalid(format!(
            "Invalid value '{d}' for Domain: this cloud has EC2-classic addresses only (standard)"
        )))
        }
    }
    let mut pools: Vec<(String, ClusterNet)> = Vec::new();
    for z in cx.clc.zones() {
        if let Ok(n) = cx.clc.cluster_net(&z).await {
            if n.mode.is_managed() {
                pools.push((z, n));
            }
        }
    }
    if pools.is_empty() {
        return Err(Ec2Error::invalid(
            "Elastic IPs need a cluster in a managed network mode (managed or managed-novlan)",
        ));
    }
    let (db, me) = (cx.clc.db.clone(), cx.account().to_string());
    let limit = cx.clc.config.max_elastic_ips;
    let ip = blocking(move || {
        let _g = netalloc::lock();
        // Counted under the lock, so two allocations at once cannot both pass at
        // the limit's last free place.
        let held = all_of::<Address>(&db, Some(&me))?
            .iter()
            .filter(|o| o.record.elastic)
            .count();
        if held >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(Ec2Error::state(
                "AddressLimitExceeded",
                format!(
                    "The maximum number of addresses has been reached: this account may hold {limit} elastic IPs and holds {held}"
                ),
            ));
        }
        for (zone, net) in &pools {
            if let Some(ip) = netalloc::take_public(&db, net, zone, &me, None, true)? {
                return Ok(ip);
            }
        }
        Err(Ec2Error::state(
            "InsufficientAddressCapacity",
            "The public address pool has no free address",
        ))
    })
    .await?;
    x.elem("publicIp", ip.to_string())
        .elem("domain", "standard");
    Ok(())
}

/// Takes elastic IP `aid` off its instance (which gets a fresh launch-time address
/// unless it ended, and `keep_instance` is not it). Hold the lock.
fn unassociate(
    db: &Db,
    net: Option<&ClusterNet>,
    aid: &str,
    keep_instance: Option<&str>,
) -> Result<(), Ec2Error> {
    let was = db.update::<Address, _>(aid, |cur| {
        Ok(match cur {
            Some(c) if c.record.instance_id.is_some() => {
                let was = c.record.instance_id.take();
                (Write::Put, was.map(|i| (i, c.record.zone.clone())))
            }
            _ => (Write::Keep, None),
        })
    })?;
    let Some((iid, zone)) = was else {
        return Ok(());
    };
    if keep_instance == Some(iid.as_str()) {
        return Ok(());
    }
    let Some(inst) = db.get::<Instance>(&iid)? else {
        return Ok(());
    };
    let live = !matches!(
        inst.record.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    );
    let fresh = match net {
        Some(n) if live => netalloc::take_public(db, n, &zone, &inst.owner, Some(&iid), false)?,
        _ => None,
    };
    netalloc::set_public(db, &iid, fresh)
}

pub async fn associate_address(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let p = cx.params;
    if p.get("AllocationId").is_some() {
        return Err(Ec2Error::invalid(
            "AllocationId is for VPC addresses; this cloud's are EC2-classic: give PublicIp",
        ));
    }
    let ip = p.required("PublicIp")?;
    let iid = p.required("InstanceId")?.to_string();
    let addr = owned(cx, ip).await?;
    let inst = super::instances::owned_instance(cx, &iid)?;
    if inst.record.zone != addr.record.zone {
        return Err(Ec2Error::Parameter {
            code: "InvalidParameterCombination",
            message: format!(
                "The address {ip} is in zone {}; the instance {iid} is in zone {}",
                addr.record.zone, inst.record.zone
            ),
        });
    }
    if !matches!(
        inst.record.state,
        InstanceState::Pending | InstanceState::Running | InstanceState::Stopped
    ) {
        return Err(Ec2Error::state(
            "IncorrectInstanceState",
            format!(
                "The instance '{iid}' is {}; an address is associated with a pending, running or stopped instance.",
                inst.record.state.as_str()
            ),
        ));
    }
    let net = cx.clc.cluster_net(&addr.record.zone).await.ok();
    let (db, aid, public, me) = (
        cx.clc.db.clone(),
        addr.record.id.clone(),
        addr.record.public_ip,
        cx.account().to_string(),
    );
    blocking(move || {
        let _g = netalloc::lock();
        // Checked again under the lock: a Release racing this call may have given
        // the address back to the pool, and another account may hold it now.
        let Some(cur) = still_mine(&db, &aid, &me)? else {
            return Err(not_found(&public.to_string()));
        };
        if cur.record.instance_id.as_deref() == Some(iid.as_str()) {
            return Ok(());
        }
        let Some(target) = db.get::<Instance>(&iid)? else {
            return Err(super::instances::not_found(&iid));
        };
        // An instance ending since the check above would keep the address.
        if !matches!(
            target.record.state,
            InstanceState::Pending | InstanceState::Running | InstanceState::Stopped
        ) {
            return Err(Ec2Error::state(
                "IncorrectInstanceState",
                format!("The instance '{iid}' is {}.", target.record.state.as_str()),
            ));
        }
        // Moving: the instance it leaves gets a fresh launch-time address.
        unassociate(&db, net.as_ref(), &aid, Some(&iid))?;
        // Its launch-time address goes back to the pool (another elastic one
        // stays its owner's, unassociated).
        if let Some(old) = target.record.public_ip {
            netalloc::drop_public(&db, &target.record.zone, old, &iid)?;
        }
        db.update::<Address, _>(&aid, |c| {
            Ok(match c {
                Some(c) => {
                    c.record.instance_id = Some(iid.clone());
                    (Write::Put, ())
                }
                None => (Write::Keep, ()),
            })
        })?;
        netalloc::set_public(&db, &iid, Some(public))
    })
    .await?;
    changed(cx).await;
    x.elem("return", "true");
    Ok(())
}

pub async fn disassociate_address(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let_go(cx, x, "AssociationId", false).await
}

pub async fn release_address(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let_go(cx, x, "AllocationId", true).await
}

/// DisassociateAddress and ReleaseAddress (`release`: the address goes back to
/// the pool after it is disassociated). `vpc_param` is the VPC form of the
/// address's name, which EC2-classic addresses do not have.
async fn let_go(
    cx: &Call<'_>,
    x: &mut XmlWriter,
    vpc_param: &str,
    release: bool,
) -> Result<(), Ec2Error> {
    if cx.params.get(vpc_param).is_some() {
        return Err(Ec2Error::invalid(format!(
            "{vpc_param} is for VPC addresses; this cloud's are EC2-classic: give PublicIp"
        )));
    }
    let addr = owned(cx, cx.params.required("PublicIp")?).await?;
    let net = cx.clc.cluster_net(&addr.record.zone).await.ok();
    let (db, aid, me) = (
        cx.clc.db.clone(),
        addr.record.id.clone(),
        cx.account().to_string(),
    );
    let public = addr.record.public_ip.to_string();
    blocking(move || {
        let _g = netalloc::lock();
        // As in AssociateAddress: the address may have changed hands since.
        if still_mine(&db, &aid, &me)?.is_none() {
            return Err(not_found(&public));
        }
        unassociate(&db, net.as_ref(), &aid, None)?;
        if release {
            db.update::<Address, _>(&aid, |_| Ok((Write::Delete, ())))?;
        }
        Ok(())
    })
    .await?;
    changed(cx).await;
    x.elem("return", "true");
    Ok(())
}

/// DescribeAddresses' filter values of `a`.
fn filter_values(a: &Address, name: &str) -> Result<Vec<String>, Ec2Error> {
    Ok(match name {
        "public-ip" => vec![a.public_ip.to_string()],
        "instance-id" => a.instance_id.clone().into_iter().collect(),
        "domain" => vec!["standard".into()],
        _ => {
            return Err(Ec2Error::invalid(format!(
                "The filter '{name}' is invalid for DescribeAddresses"
            )))
        }
    })
}

pub async fn describe_addresses(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let d = Describe::from_params(cx.params, "PublicIp")?;
    let (db, me) = (cx.clc.db.clone(), cx.account().to_string());
    let mine: Vec<Address> = blocking(move || all_of::<Address>(&db, Some(&me)))
        .await?
        .into_iter()
        .map(|o| o.record)
        .filter(|a| a.elastic)
        .collect();
    for ip in &d.ids {
        if !mine.iter().any(|a| a.public_ip.to_string() == *ip) {
            return Err(not_found(ip));
        }
    }
    x.open("addressesSet");
    for a in &mine {
        if !d.ids.is_empty() && !d.ids.iter().any(|ip| a.public_ip.to_string() == *ip) {
            continue;
        }
        let mut keep = true;
        for f in &d.filters {
            let have = filter_values(a, &f.name)?;
            if !f
                .values
                .iter()
                .any(|w| have.iter().any(|h| describe::wildcard(w, h)))
            {
                keep = false;
            }
        }
        if !keep {
            continue;
        }
        x.open("item").elem("publicIp", a.public_ip.to_string());
        x.elem("domain", "standard");
        if let Some(i) = &a.instance_id {
            x.elem("instanceId", i);
        }
        x.close();
    }
    x.close();
    Ok(())
}
