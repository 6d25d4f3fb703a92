//! The cloud controller's background work on instances: one task, every second
//! and at once after a mutating call ([`Clc::kick_reconciler`]). Each pass pulls
//! every cluster's instances (`GET /v1/instances`, answered from the CC's last
//! polls) and
//! - maps the nodes' states to EC2's (pending, running, shutting-down,
//!   terminated; a guest that powered off: `stopped` for an EBS root, else
//!   `terminated` with `Client.InstanceInitiatedShutdown`; a failed one
//!   `terminated` with `Server.InternalError`; on a `DOWN` node the last state
//!   stays, with a `Server.NodeDown` reason: a `pending` instance is never
//!   placed again elsewhere, since the node may be running it),
//! - advances volume attachments (`attaching` → `attached`; `detaching` →
//!   SC detach → volume `available`),
//! - finishes terminations and stops (repeats the terminate until the node is
//!   done, then the SC detaches, and deletes `DeleteOnTermination` volumes; on
//!   a `DOWN` node the CC answers "unavailable", so the instance stays
//!   `shutting-down`/`stopping` until the node is back),
//! - re-drives `launching` records a crash left (see
//!   [`crate::actions::instances`]),
//! - ends strays: a guest the cluster reports holding capacity whose record is
//!   `terminated` or `stopped` (a terminate or stop that raced the launch: the
//!   node had not got the run when it was told to end it), or that has no
//!   record at all — only guests of this cloud (their MAC carries the cloud's
//!   prefix) and only once absent for [`STRAY_GRACE_SECS`], so a launch whose
//!   records were written after this pass read them is never killed. Each is
//!   re-read just before, after the cluster was listed; the cluster's terminate
//!   frees its capacity,
//! - gives back the addresses of ended instances, records the address a node
//!   learned (`system` mode), and sends each cluster its network state when it
//!   differs from what the CC applied ([`crate::netstate::sync`]); at start and
//!   every [`SWEEP_EVERY`] passes it also gives back address and MAC records whose
//!   holder is gone ([`sweep_leaks`]),
//! - removes terminated instances an hour after they ended.
//!
//! With records several cloud controllers share, only the holder of the
//! `reconciler` lease runs passes; the others rebuild their DNS index from the
//! records whenever the store says instance records changed (PostgreSQL: a
//! trigger notifies, [`crate::store::RecordStore::watch_instances`]), and at least
//! every [`DNS_REBUILD_MAX`]; they re-read the zones' network configs every
//! [`DNS_REFRESH_EVERY`] intervals.
use crate::actions::attachments::{release_volume, set_attachment};
use crate::actions::instances::{delete_instance, drive_launch, in_flight, TERMINATED_KEPT_SECS};
use crate::cluster::ClusterApi;
use crate::error::Ec2Error;
use crate::model::{AttachmentState, Instance, InstanceReason, InstanceState, Volume};
use crate::offload::{all_of, blocking};
use crate::store::{Owned, Write};
use crate::Clc;
use euca_compute_proto::{codes, NodeAttachState, NodeInstanceState, NodeState, PlacedInstance};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often a pass runs without being asked.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// With records shared by several cloud controllers, one that does not hold the
/// reconciler's lease re-reads the zones' network configs every this many
/// intervals (and rebuilds its DNS index then too if its store cannot say when
/// instance records change), so its DNS answers for the addresses the others
/// gave out.
pub const DNS_REFRESH_EVERY: u64 = 5;

/// A cloud controller told of instance changes still rebuilds its DNS index this
/// often (a safety net: a notification lost with its connection is also made up
/// for when the listener reconnects).
pub const DNS_REBUILD_MAX: Duration = Duration::from_secs(60);

/// How long a guest of this cloud with no instance record may run before the
/// reconciler terminates it (seconds).
pub const STRAY_GRACE_SECS: i64 = 30;

/// How many passes apart the leaked-address sweep runs (and once at start).
/// Leaks come only from a crash or a launch that failed half way, and the sweep
/// reads every address record, so not on every 1 s pass.
pub const SWEEP_EVERY: u64 = 60;

pub use crate::model::NODE_DOWN;

/// Runs passes until `shutdown` turns true (or its sender goes).
pub fn spawn(
    clc: Arc<Clc>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // With records other cloud controllers share, one of them reconciles at a
    // time: the holder of the lease, renewed every pass, taken over by another
    // LEASE_TTL after its holder dies, or at the next pass after it stops (it
    // gives the lease back).
    tokio::spawn(async move {
        run(&clc, shutdown).await;
        let store = clc.db.store().clone();
        if store.shared() {
            let holder = clc.holder.clone();
            if let Err(e) = blocking(move || store.release_lease("reconciler", &holder)).await {
                tracing::warn!(error = %e, "giving back the reconciler's lease");
            }
        }
    })
}

async fn run(clc: &Arc<Clc>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = clc.holder.clone();
    let mut passes: u64 = 0;
    let mut idle: u64 = 0;
    // Instance records another CLC changed (as the store tells), for the DNS
    // index of a CLC that does not reconcile: a notification told while nobody
    // waits is kept (one permit) for the next wait.
    let changed = Arc::new(tokio::sync::Notify::new());
    let watching = clc.db.store().shared() && {
        let changed = changed.clone();
        let told = move || changed.notify_one();
        match clc.db.store().watch_instances(Box::new(told)) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "listening for instance changes");
                false
            }
        }
    };
    let mut rebuilt = std::time::Instant::now();
    let mut dirty = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !holds_lease(clc, &holder).await {
            // Another CLC reconciles (and its DNS follows every pass); this one
            // changes addresses only through its own actions, so its DNS reads
            // the others' from the records when told they changed (else now and
            // then).
            let nets_due = idle.is_multiple_of(DNS_REFRESH_EVERY);
            if nets_due {
                crate::netstate::refresh_nets(clc).await;
            }
            let rebuild = if watching {
                dirty || rebuilt.elapsed() >= DNS_REBUILD_MAX
            } else {
                nets_due
            };
            if rebuild {
                rebuilt = std::time::Instant::now();
                dirty = false;
                if let Err(e) = crate::netstate::refresh_dns(clc).await {
                    tracing::warn!(error = %e, "rebuilding the DNS index");
                    dirty = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => idle = idle.wrapping_add(1),
                _ = changed.notified() => dirty = true,
                r = shutdown.changed() => if r.is_err() { return },
            }
            continue;
        }
        if passes.is_multiple_of(SWEEP_EVERY) {
            if let Err(e) = sweep_leaks(clc).await {
                tracing::warn!(error = %e, "sweeping leaked address records");
            }
            // Installs whose cloud controller stopped (with shared records
            // another one may still be running; with its own, start-up did it).
            if clc.db.store().shared() {
                let c = clc.clone();
                match blocking(move || c.fail_abandoned_installs()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(images = n, "failed installs whose cloud controller stopped")
                    }
                    Err(e) => tracing::warn!(error = %e, "failing interrupted installs"),
                }
            }
        }
        passes = passes.wrapping_add(1);
        if let Err(e) = pass(clc).await {
            tracing::warn!(error = %e, "instance reconcile pass");
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = clc.kick.notified() => {}
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

/// How long the reconciler's lease outlives its last renewal.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Whether this process may run a pass now (always, with records of its own).
async fn holds_lease(clc: &Clc, holder: &str) -> bool {
    let store = clc.db.store().clone();
    if !store.shared() {
        return true;
    }
    let holder = holder.to_string();
    match blocking(move || store.lease("reconciler", &holder, LEASE_TTL)).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "renewing the reconciler's lease");
            false
        }
    }
}

/// One pass over every instance record (see the module doc).
///
/// (Boxed: compiled here once; see `euca_service::serve_api`.)
pub fn pass(clc: &Clc) -> futures::future::BoxFuture<'_, Result<(), Ec2Error>> {
    futures::FutureExt::boxed(passing(clc))
}

async fn passing(clc: &Clc) -> Result<(), Ec2Error> {
    let db = clc.db.clone();
    let records = blocking(move || all_of::<Instance>(&db, None)).await?;
    let now = clc.now().unix_timestamp();
    // Each connected zone's instances, as its CC last saw them.
    let mut live: HashMap<String, HashMap<String, PlacedInstance>> = HashMap::new();
    for (zone, cluster) in clc.clusters() {
        match cluster.instances().await {
            Ok(list) => {
                live.insert(
                    zone,
                    list.into_iter()
                        .map(|p| (p.instance_id.clone(), p))
                        .collect(),
                );
            }
            Err(e) => tracing::debug!(%zone, error = %e, "the cluster did not list its instances"),
        }
    }
    let known: HashMap<String, InstanceState> = records
        .iter()
        .map(|o| (o.record.id.clone(), o.record.state))
        .collect();
    if let Err(e) = strays(clc, &live, &known, now).await {
        tracing::warn!(error = %e, "ending stray guests");
    }
    // Launches a crash interrupted, by reservation.
    let mut launching: BTreeMap<String, Vec<Owned<Instance>>> = BTreeMap::new();
    for o in records {
        let i = &o.record;
        if i.state == InstanceState::Launching {
            if !in_flight(&i.reservation_id) {
                launching
                    .entry(i.reservation_id.clone())
                    .or_default()
                    .push(o);
            }
            continue;
        }
        if let Err(e) = one(clc, &o, &live, now).await {
            tracing::warn!(instance = %i.id, error = %e, "reconciling an instance");
        }
    }
    for (rid, recs) in launching {
        let Some(mut recs) = interrupted(clc, &rid, &recs[0], now).await? else {
            continue;
        };
        let zone = recs[0].record.zone.clone();
        let Ok(cluster) = clc.cluster(&zone) else {
            continue;
        };
        recs.sort_by_key(|o| o.record.launch_index);
        let owner = recs[0].owner.clone();
        let records: Vec<Instance> = recs.into_iter().map(|o| o.record).collect();
        match drive_launch(clc, &*cluster, &owner, records).await {
            Ok(placed) => {
                tracing::info!(reservation = %rid, placed = placed.len(), "re-drove an interrupted launch")
            }
            Err(e) => {
                tracing::warn!(reservation = %rid, error = %e, "re-driving an interrupted launch")
            }
        }
    }
    if let Err(e) = crate::netstate::sync(clc).await {
        tracing::warn!(error = %e, "syncing the clusters' networks");
    }
    Ok(())
}

/// How long a `launching` record in records several cloud controllers share is
/// left to the controller whose RunInstances wrote it before this one re-drives
/// it (a launch in flight elsewhere is not visible here; one in flight in this
/// process is, through [`in_flight`]).
pub const SHARED_LAUNCH_GRACE_SECS: i64 = 300;

/// The reservation `rid`'s records to re-drive, read again now: this pass's
/// scan may predate the end of the RunInstances that wrote them (it made them
/// `pending`, or deleted them, after the scan and before [`in_flight`] was
/// asked), or have seen only the first of them. So: none while a call in this
/// process drives the reservation; else every record of the reservation still
/// `launching` — on shared records only once [`SHARED_LAUNCH_GRACE_SECS`] have
/// passed since the launch.
async fn interrupted(
    clc: &Clc,
    rid: &str,
    seen: &Owned<Instance>,
    now: i64,
) -> Result<Option<Vec<Owned<Instance>>>, Ec2Error> {
    if in_flight(rid) {
        return Ok(None);
    }
    if clc.db.store().shared() {
        let launched = time::OffsetDateTime::parse(
            &seen.record.launch_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .unwrap_or(i64::MIN);
        if launched.saturating_add(SHARED_LAUNCH_GRACE_SECS) > now {
            return Ok(None);
        }
    }
    let db = clc.db.clone();
    let (owner, rid) = (seen.owner.clone(), rid.to_string());
    let recs = blocking(move || all_of::<Instance>(&db, Some(&owner))).await?;
    let recs: Vec<Owned<Instance>> = recs
        .into_iter()
        .filter(|o| o.record.reservation_id == rid && o.record.state == InstanceState::Launching)
        .collect();
    Ok((!recs.is_empty()).then_some(recs))
}

/// Gives back an ended instance's addresses (idempotent).
async fn release_net(clc: &Clc, i: &Instance) -> Result<(), Ec2Error> {
    if i.private_ip.is_none() && i.public_ip.is_none() && i.net_index.is_none() {
        return Ok(());
    }
    let (db, i) = (clc.db.clone(), i.clone());
    blocking(move || {
        let _g = crate::netalloc::lock();
        crate::netalloc::release(&db, &i)
    })
    .await
}

/// Gives back the address records whose holder is terminated or was never
/// written ([`crate::netalloc::sweep`]), and the MAC records whose holder's record
/// is gone ([`crate::mac::sweep`]); the DNS index follows at once, the
/// clusters on the next pass.
pub async fn sweep_leaks(clc: &Clc) -> Result<crate::netalloc::Swept, Ec2Error> {
    let db = clc.db.clone();
    let swept = blocking(move || {
        let now = crate::netalloc::unix_now();
        let mut swept = {
            let _g = crate::netalloc::lock();
            crate::netalloc::sweep(&db, now)?
        };
        // MACs are taken outside the address lock (their uniqueness is the
        // record id's): their sweep needs none.
        swept.macs = crate::mac::sweep(&db, now)?;
        Ok(swept)
    })
    .await?;
    if !swept.is_empty() {
        tracing::warn!(
            ?swept,
            "gave back address records an ended or missing instance held"
        );
        if let Err(e) = crate::netstate::refresh_dns(clc).await {
            tracing::warn!(error = %e, "rebuilding the DNS index");
        }
        clc.kick_reconciler();
    }
    Ok(swept)
}

/// Terminates the guests nothing should be running (see the module doc):
/// `known` is every record's state as this pass read it, before `live`.
async fn strays(
    clc: &Clc,
    live: &HashMap<String, HashMap<String, PlacedInstance>>,
    known: &HashMap<String, InstanceState>,
    now: i64,
) -> Result<(), Ec2Error> {
    let mut suspects: Vec<(String, String, bool)> = Vec::new();
    for (zone, placed) in live {
        for (id, p) in placed {
            let Some(r) = &p.report else { continue };
            if !r.state.holds_capacity() {
                continue;
            }
            match known.get(id) {
                Some(InstanceState::Terminated | InstanceState::Stopped) => {
                    suspects.push((zone.clone(), id.clone(), false))
                }
                Some(_) => {}
                None => suspects.push((zone.clone(), id.clone(), true)),
            }
        }
    }
    // Absent ones only once past the grace.
    let due: Vec<(String, String, bool)> = {
        let mut first_seen = clc.strays.lock().unwrap_or_else(|e| e.into_inner());
        first_seen.retain(|id, _| suspects.iter().any(|(_, s, absent)| *absent && s == id));
        for (_, id, absent) in &suspects {
            if *absent {
                first_seen.entry(id.clone()).or_insert(now);
            }
        }
        suspects
            .into_iter()
            .filter(|(_, id, absent)| {
                !absent
                    || first_seen
                        .get(id)
                        .is_some_and(|t| t + STRAY_GRACE_SECS <= now)
            })
            .collect()
    };
    if due.is_empty() {
        return Ok(());
    }
    // Re-read after the listing: a Start or a launch committed since is not a stray.
    let db = clc.db.clone();
    let ids: Vec<String> = due.iter().map(|(_, id, _)| id.clone()).collect();
    let (prefix, fresh) = blocking(move || {
        let prefix = db
            .get::<crate::model::MacRecord>(crate::mac::PREFIX_ID)?
            .map(|o| o.record.value);
        let mut fresh = HashMap::new();
        for id in ids {
            let state = db.get::<Instance>(&id)?.map(|o| o.record.state);
            fresh.insert(id, state);
        }
        Ok((prefix, fresh))
    })
    .await?;
    for (zone, id, _) in due {
        let ours = || {
            let mac = live
                .get(&zone)
                .and_then(|z| z.get(&id))
                .and_then(|p| p.report.as_ref())
                .map(|r| r.mac.as_str());
            match (&prefix, mac) {
                (Some(pre), Some(mac)) => {
                    mac.len() > pre.len()
                        && mac.starts_with(pre.as_str())
                        && mac.as_bytes()[pre.len()] == b':'
                }
                _ => false,
            }
        };
        let stray = match fresh.get(&id).copied().flatten() {
            Some(InstanceState::Terminated | InstanceState::Stopped) => true,
            Some(_) => false,
            None => ours(),
        };
        if !stray {
            continue;
        }
        let Ok(cluster) = clc.cluster(&zone) else {
            continue;
        };
        match cluster.terminate(&id).await {
            Ok(_) => {
                tracing::warn!(instance = %id, %zone, "terminated a guest with no live instance record")
            }
            Err(e) => {
                tracing::warn!(instance = %id, %zone, error = %e, "terminating a stray guest")
            }
        }
    }
    Ok(())
}

fn reason(code: &str, message: impl Into<String>) -> InstanceReason {
    InstanceReason {
        code: code.to_string(),
        message: message.into(),
    }
}

/// Writes `f`'s change to instance `id` (off the runtime).
async fn change(
    clc: &Clc,
    id: &str,
    f: impl Fn(&mut Instance) -> bool + Send + 'static,
) -> Result<(), Ec2Error> {
    let db = clc.db.clone();
    let id = id.to_string();
    blocking(move || {
        db.update::<Instance, _>(&id, |cur| {
            Ok(match cur {
                Some(c) => {
                    if f(&mut c.record) {
                        (Write::Put, ())
                    } else {
                        (Write::Keep, ())
                    }
                }
                None => (Write::Keep, ()),
            })
        })
    })
    .await
}

async fn one(
    clc: &Clc,
    o: &Owned<Instance>,
    live: &HashMap<String, HashMap<String, PlacedInstance>>,
    now: i64,
) -> Result<(), Ec2Error> {
    let i = &o.record;
    use InstanceState::*;
    if i.state == Terminated {
        release_net(clc, i).await?;
        if !i.volumes.is_empty() {
            free_volumes(clc, i, true).await?;
        }
        if i.terminated_at
            .is_some_and(|t| t + TERMINATED_KEPT_SECS <= now)
        {
            let db = clc.db.clone();
            let id = i.id.clone();
            blocking(move || delete_instance(&db, &id)).await?;
        }
        return Ok(());
    }
    if i.state == Stopped {
        return Ok(());
    }
    let (Some(zone_live), Ok(cluster)) = (live.get(&i.zone), clc.cluster(&i.zone)) else {
        return Ok(());
    };
    let placed = zone_live.get(&i.id);
    let node_state = placed.map(|p| p.node_state);
    // A report of an earlier run (the tombstone of the run a stop ended, until
    // the node has the run StartInstances asked for) says nothing of this one.
    let report = placed
        .and_then(|p| p.report.as_ref())
        .filter(|r| r.incarnation >= i.spec.incarnation);
    if matches!(i.state, ShuttingDown | Stopping) {
        let done = match report.map(|r| r.state) {
            Some(NodeInstanceState::Terminated | NodeInstanceState::Failed) => true,
            _ => terminate_again(&*cluster, &i.id).await,
        };
        if done {
            if i.state == ShuttingDown {
                end(clc, i, None, now).await?;
            } else {
                stopped(clc, i).await?;
            }
        }
        return Ok(());
    }
    // Pending or running.
    if node_state == Some(NodeState::Down) {
        let node = placed.map(|p| p.node.clone()).unwrap_or_default();
        return change(clc, &i.id, move |r| {
            if r.state_reason.as_ref().is_some_and(|x| x.code == NODE_DOWN) {
                return false;
            }
            r.state_reason = Some(reason(
                NODE_DOWN,
                format!("the node {node} does not answer; the instance's state is its last known"),
            ));
            true
        })
        .await;
    }
    let Some(r) = report else { return Ok(()) };
    let failure = r
        .reason
        .as_ref()
        .map(|x| x.message.clone())
        .unwrap_or_default();
    match r.state {
        NodeInstanceState::Pending
        | NodeInstanceState::Running
        | NodeInstanceState::ShuttingDown => {
            let to = match r.state {
                NodeInstanceState::Pending => Pending,
                NodeInstanceState::Running => Running,
                _ => ShuttingDown,
            };
            let node = placed.map(|p| p.node.clone());
            // `system` mode: the address is the LAN's, as the node saw it.
            let learned = r
                .learned_ip
                .filter(|_| i.net_mode() == euca_compute_proto::net::NetMode::System);
            change(clc, &i.id, move |rec| {
                if !matches!(rec.state, Pending | Running) {
                    return false;
                }
                let mut changed = false;
                if learned.is_some() && rec.private_ip != learned {
                    rec.private_ip = learned;
                    changed = true;
                }
                if rec.state != to {
                    rec.state = to;
                    changed = true;
                }
                if rec
                    .state_reason
                    .as_ref()
                    .is_some_and(|x| x.code == NODE_DOWN)
                {
                    rec.state_reason = None;
                    changed = true;
                }
                if node.is_some() && rec.node != node {
                    rec.node = node.clone();
                    changed = true;
                }
                changed
            })
            .await?;
            attachments(clc, i, r).await?;
        }
        NodeInstanceState::Terminated => {
            end(
                clc,
                i,
                Some(reason(
                    "Server.InternalError",
                    "Server.InternalError: the node ended the instance",
                )),
                now,
            )
            .await?
        }
        NodeInstanceState::Failed => {
            end(
                clc,
                i,
                Some(reason(
                    "Server.InternalError",
                    format!("Server.InternalError: {failure}"),
                )),
                now,
            )
            .await?;
            let _ = cluster.terminate(&i.id).await;
        }
        NodeInstanceState::Shutoff => {
            let _ = cluster.terminate(&i.id).await;
            if i.root_device_type == "ebs" {
                stopped(clc, i).await?;
            } else {
                end(
                    clc,
                    i,
                    Some(reason(
                        "Client.InstanceInitiatedShutdown",
                        "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                    )),
                    now,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Asks the cluster to terminate again; true once the node is done with it.
async fn terminate_again(cluster: &dyn ClusterApi, id: &str) -> bool {
    match cluster.terminate(id).await {
        Ok(p) => p.report.is_some_and(|r| !r.state.holds_capacity()),
        Err(e) => e.code() == Some(codes::INSTANCE_NOT_FOUND),
    }
}

/// The instance ended: `terminated` (with `why` unless it has a reason), its
/// volumes freed.
async fn end(
    clc: &Clc,
    i: &Instance,
    why: Option<InstanceReason>,
    now: i64,
) -> Result<(), Ec2Error> {
    change(clc, &i.id, move |r| {
        if r.state == InstanceState::Terminated {
            return false;
        }
        r.state = InstanceState::Terminated;
        r.terminated_at = Some(now);
        if r.state_reason.is_none() || r.state_reason.as_ref().is_some_and(|x| x.code == NODE_DOWN)
        {
            r.state_reason = why.clone();
        }
        true
    })
    .await?;
    release_net(clc, i).await?;
    free_volumes(clc, i, true).await
}

/// The node is done with a stopping instance: exports removed, `stopped`.
async fn stopped(clc: &Clc, i: &Instance) -> Result<(), Ec2Error> {
    free_volumes(clc, i, false).await?;
    change(clc, &i.id, |r| {
        if r.state == InstanceState::Stopped {
            return false;
        }
        r.state = InstanceState::Stopped;
        true
    })
    .await
}

/// Removes the SC exports of the instance's volumes; with `release` (the
/// instance ended) also the attachments: `DeleteOnTermination` volumes are
/// deleted, the others become `available`.
async fn free_volumes(clc: &Clc, i: &Instance, release: bool) -> Result<(), Ec2Error> {
    if i.volumes.is_empty() {
        return Ok(());
    }
    let sc = clc.sc()?;
    for v in &i.volumes {
        sc.detach_volume(&v.volume_id).await?;
        if !release {
            continue;
        }
        if v.delete_on_termination {
            sc.delete_volume(&v.volume_id).await?;
            let (db, vid, iid) = (clc.db.clone(), v.volume_id.clone(), i.id.clone());
            blocking(move || {
                db.update::<Volume, _>(&vid, |_| Ok((Write::Delete, ())))?;
                release_volume(&db, &vid, &iid)
            })
            .await?;
        } else {
            let (db, vid, iid) = (clc.db.clone(), v.volume_id.clone(), i.id.clone());
            blocking(move || release_volume(&db, &vid, &iid)).await?;
        }
    }
    Ok(())
}

/// Advances the instance's attachments from the node's report.
async fn attachments(
    clc: &Clc,
    i: &Instance,
    r: &euca_compute_proto::InstanceReport,
) -> Result<(), Ec2Error> {
    for v in &i.volumes {
        let node = r.volumes.iter().find(|n| n.volume_id == v.volume_id);
        let node_state = node.map(|n| n.state);
        let (db, vid, iid) = (clc.db.clone(), v.volume_id.clone(), i.id.clone());
        match (v.status, node_state) {
            (AttachmentState::Attaching, Some(NodeAttachState::Attached)) => {
                blocking(move || set_attachment(&db, &vid, &iid, AttachmentState::Attached, None))
                    .await?;
            }
            (AttachmentState::Attaching, Some(NodeAttachState::Failed)) => {
                tracing::warn!(volume = %v.volume_id, instance = %i.id, error = ?node.and_then(|n| n.error.clone()), "the node could not attach the volume");
                clc.sc()?.detach_volume(&v.volume_id).await?;
                blocking(move || release_volume(&db, &vid, &iid)).await?;
            }
            (AttachmentState::Detaching, Some(NodeAttachState::Failed)) if !v.force => {
                let err = node
                    .and_then(|n| n.error.clone())
                    .unwrap_or_else(|| "the detach failed".into());
                blocking(move || {
                    set_attachment(&db, &vid, &iid, AttachmentState::Attached, Some(err))
                })
                .await?;
            }
            (AttachmentState::Detaching, Some(NodeAttachState::Detached) | None) => {
                clc.sc()?.detach_volume(&v.volume_id).await?;
                blocking(move || release_volume(&db, &vid, &iid)).await?;
            }
            (AttachmentState::Detaching, _) if v.force => {
                clc.sc()?.detach_volume(&v.volume_id).await?;
                blocking(move || release_volume(&db, &vid, &iid)).await?;
            }
            _ => {}
        }
    }
    Ok(())
}
