//! What each cluster's network should be (issue 14), built from the records: the
//! [`NetworkState`] the CLC sends its CC (`PUT /v1/network`) — the managed modes'
//! groups with their ingress rules, and every instance's addresses and metadata
//! tree — and the dynamic DNS [`crate::dns::Index`].
//!
//! [`sync`] runs at the end of every reconciler pass (each second, and at once
//! after an action that changed instances, groups, rules or addresses kicks it):
//! it re-reads each zone's config and the state its CC applied, and sends the
//! state again when the CC's digest differs (a change here, or a CC restart that
//! left it with none). A CC that does not answer is only logged (its last known
//! config is kept): no EC2 answer waits for it.
use crate::error::Ec2Error;
use crate::model::{self, Image, Instance, InstanceState, RuleSource, SecurityGroup};
use crate::offload::{all_of, blocking};
use crate::store::{Db, Owned};
use crate::Clc;
use euca_compute_proto::net::{ClusterNet, GroupNet, IngressRule, InstanceNet, NetworkState};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A stored ingress rule as the CC takes it: ports `-1` when any, CIDRs parsed
/// (an IPv6 or unparsable CIDR cannot be enforced on the IPv4 network: left out,
/// with a warning), source groups by id.
pub fn ingress_rule(r: &model::IngressRule) -> Option<IngressRule> {
    let mut out = IngressRule {
        protocol: r.protocol.clone(),
        from_port: r.from_port.unwrap_or(-1),
        to_port: r.to_port.unwrap_or(-1),
        cidrs: Vec::new(),
        groups: Vec::new(),
    };
    match &r.source {
        RuleSource::Cidr(c) => match c.parse::<ipnet::Ipv4Net>() {
            Ok(n) => out.cidrs.push(n.trunc()),
            Err(_) => {
                tracing::warn!(cidr = %c, "an ingress rule's CIDR is not IPv4: not sent to the cluster");
                return None;
            }
        },
        RuleSource::Group { group_id, .. } => out.groups.push(group_id.clone()),
    }
    Some(out)
}

/// Instance `i`'s 2009-04-04 meta-data tree as leaf paths → values (the
/// `public-keys/` entry is the explicit listing `0=<key name>`).
pub fn metadata(i: &Instance, image: Option<&Image>, domain: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("ami-id", i.image_id.clone());
    put("ami-launch-index", i.launch_index.to_string());
    put(
        "ami-manifest-path",
        image
            .and_then(|im| im.location.clone())
            .unwrap_or_else(|| "(unknown)".into()),
    );
    put("block-device-mapping/ami", i.root_device_name.clone());
    put("block-device-mapping/root", i.root_device_name.clone());
    if i.root_device_type == "instance-store" {
        put("block-device-mapping/ephemeral0", "sda2".into());
    }
    let private = i.private_ip.map(crate::dns::private_name);
    if let Some(h) = &private {
        put("hostname", h.clone());
        put("local-hostname", h.clone());
    }
    if let Some(a) = i.private_ip {
        put("local-ipv4", a.to_string());
    }
    put("instance-action", "none".into());
    put("instance-id", i.id.clone());
    put("instance-type", i.instance_type.clone());
    if let Some(k) = &i.kernel_id {
        put("kernel-id", k.clone());
    }
    if let Some(r) = &i.ramdisk_id {
        put("ramdisk-id", r.clone());
    }
    put("mac", i.mac.clone());
    put("placement/availability-zone", i.zone.clone());
    if let Some(a) = i.public_ip {
        put("public-hostname", crate::dns::public_name(a, domain));
        put("public-ipv4", a.to_string());
    }
    if let (Some(name), Some(key)) = (&i.key_name, &i.spec.public_key) {
        put("public-keys/", format!("0={name}"));
        put("public-keys/0/openssh-key", key.clone());
    }
    put("reservation-id", i.reservation_id.clone());
    put(
        "security-groups",
        i.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    m
}

/// Zone `zone`'s desired state from `instances` (every record; those of other
/// zones, ended ones and ones launched without networking are left out).
pub fn desired_state(
    db: &Db,
    zone: &str,
    net: &ClusterNet,
    domain: &str,
    instances: &[Owned<Instance>],
) -> Result<NetworkState, Ec2Error> {
    let mut state = NetworkState::default();
    let mut groups: BTreeMap<u32, GroupNet> = BTreeMap::new();
    let mut images: HashMap<String, Option<Image>> = HashMap::new();
    for o in instances {
        let i = &o.record;
        if i.zone != zone || i.state == InstanceState::Terminated || i.spec.nic.is_none() {
            continue;
        }
        let managed = net.mode.is_managed();
        let group = if managed { i.groups.first() } else { None };
        if let (Some(g), Some(k)) = (group, i.net_index) {
            if let std::collections::btree_map::Entry::Vacant(e) = groups.entry(k) {
                let rec = db.get::<SecurityGroup>(&g.id)?;
                let (account, rules) = match &rec {
                    Some(r) => (
                        r.owner.clone(),
                        r.record.ingress.iter().filter_map(ingress_rule).collect(),
                    ),
                    None => (o.owner.clone(), Vec::new()),
                };
                e.insert(GroupNet {
                    group_id: g.id.clone(),
                    account,
                    name: g.name.clone(),
                    index: k,
                    rules,
                });
            }
        }
        if !images.contains_key(&i.image_id) {
            let im = db.get::<Image>(&i.image_id)?.map(|o| o.record);
            images.insert(i.image_id.clone(), im);
        }
        let image = images.get(&i.image_id).and_then(|x| x.as_ref());
        state.instances.push(InstanceNet {
            instance_id: i.id.clone(),
            account: o.owner.clone(),
            mac: i.mac.clone(),
            group_id: group.map(|g| g.id.clone()),
            private_ip: i.private_ip,
            public_ip: i.public_ip,
            metadata: metadata(i, image, domain),
        });
    }
    state
        .instances
        .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    state.groups = groups.into_values().collect();
    Ok(state)
}

/// Rebuilds the DNS index from `instances` (every record).
fn set_dns(clc: &Clc, instances: &[Owned<Instance>]) {
    let nets: Vec<ClusterNet> = clc
        .zones()
        .iter()
        .filter_map(|z| clc.cached_net(z))
        .collect();
    let ix = crate::dns::Index::build(
        &clc.config.dns_domain,
        instances.iter().map(|o| &o.record),
        nets,
    );
    clc.set_dns(ix);
}

/// Rebuilds the DNS index from the store now (after an action changed addresses).
pub async fn refresh_dns(clc: &Clc) -> Result<(), Ec2Error> {
    let db = clc.db.clone();
    let all = blocking(move || all_of::<Instance>(&db, None)).await?;
    set_dns(clc, &all);
    Ok(())
}

/// Re-reads each zone's network config from its cluster: what a cloud controller
/// that does not reconcile (another holds the lease on shared records) does now
/// and then, so its DNS knows the zones' ranges.
pub async fn refresh_nets(clc: &Clc) {
    for (zone, cluster) in clc.clusters() {
        match cluster.network().await {
            Ok(status) => clc.set_cached_net(&zone, status.config),
            Err(e) => tracing::debug!(%zone, error = %e, "the cluster did not say its network"),
        }
    }
}

/// Reads each zone's network config and applied state, sends the desired state
/// where it differs, and rebuilds the DNS index (see the module doc).
pub async fn sync(clc: &Clc) -> Result<(), Ec2Error> {
    let mut on = Vec::new();
    for (zone, cluster) in clc.clusters() {
        match cluster.network().await {
            Ok(status) => {
                clc.set_cached_net(&zone, status.config.clone());
                if status.config.mode != euca_compute_proto::net::NetMode::Off {
                    on.push((zone, cluster, status));
                }
            }
            // Its last known config stays: launches and address actions go on
            // from the records, and the next pass reads it again.
            Err(e) => tracing::debug!(%zone, error = %e, "the cluster did not say its network"),
        }
    }
    // Networking off everywhere (every CC without its router): no addresses, so
    // no second scan of every record each pass.
    if on.is_empty() && clc.dns().is_empty() {
        return Ok(());
    }
    let db = clc.db.clone();
    let all = Arc::new(blocking(move || all_of::<Instance>(&db, None)).await?);
    for (zone, cluster, status) in on {
        let net = status.config;
        let (db, z, n, d, recs) = (
            clc.db.clone(),
            zone.clone(),
            net.clone(),
            clc.config.dns_domain.clone(),
            all.clone(),
        );
        let state = blocking(move || desired_state(&db, &z, &n, &d, &recs)).await?;
        let digest = state.digest();
        if status.applied.as_deref() == Some(digest.as_str()) {
            continue;
        }
        match cluster.apply_network(&state).await {
            Ok(s) if s.applied.as_deref() == Some(digest.as_str()) => {
                tracing::info!(%zone, groups = state.groups.len(), instances = state.instances.len(), "sent the cluster its network state")
            }
            Ok(s) => {
                tracing::warn!(%zone, applied = ?s.applied, want = %digest, "the cluster applied another network state")
            }
            Err(e) => {
                tracing::warn!(%zone, error = %e, "sending the cluster its network state")
            }
        }
    }
    set_dns(clc, &all);
    Ok(())
}
