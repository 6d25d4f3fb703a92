//! The CC's view of its nodes: what each answered to its last poll, how many
//! polls it missed, and the launches placed on it that it has not reported yet
//! (reservations). Every API answer is made from this view; nothing waits on a poll.
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use euca_compute_proto::nc::NcClient;
use euca_compute_proto::{
    InstanceReport, InstanceSpec, NodeReport, NodeState, NodeView, Overcommit, PlacedInstance,
    Resources,
};

/// A launch placed on a node and not reported by it yet.
#[derive(Clone, Debug)]
pub struct Reservation {
    pub spec: InstanceSpec,
    /// Whether a run call is in flight or was accepted (otherwise the next
    /// answered poll re-sends it).
    pub sent: bool,
}

pub struct NodeEntry {
    pub name: String,
    pub url: String,
    pub client: NcClient,
    pub state: NodeState,
    /// As last advertised (zero until the first answered poll: nothing fits).
    pub capacity: Resources,
    pub instances: Vec<InstanceReport>,
    /// Unix seconds of the last answered poll.
    pub last_seen: Option<u64>,
    pub missed: u32,
    pub reservations: BTreeMap<String, Reservation>,
    /// A poll of this node is in flight (a slow node is never polled twice at once).
    pub polling: bool,
    /// POWERSAVE: since when the node holds nothing.
    pub idle_since: Option<Instant>,
    /// When the wake command ran.
    pub waking_since: Option<Instant>,
    /// POWERSAVE: how many sleep/wake decisions were taken for this node (under
    /// the view's lock); a command runs only if its decision is still the
    /// latest when its turn comes.
    pub power_gen: u64,
    /// POWERSAVE: one sleep or wake command of this node at a time, so a wake
    /// decided while a sleep command runs is carried out after it.
    pub power_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl NodeEntry {
    pub fn new(name: &str, url: &str, client: NcClient) -> Self {
        NodeEntry {
            name: name.to_string(),
            url: url.to_string(),
            client,
            state: NodeState::Pending,
            capacity: Resources::ZERO,
            instances: Vec::new(),
            last_seen: None,
            missed: 0,
            reservations: BTreeMap::new(),
            polling: false,
            idle_since: None,
            waking_since: None,
            power_gen: 0,
            power_lock: Default::default(),
        }
    }

    /// What the node's live instances and its reservations hold.
    pub fn used(&self) -> Resources {
        let held = self
            .instances
            .iter()
            .filter(|i| i.state.holds_capacity())
            .fold(Resources::ZERO, |a, i| a.add(&i.vm_type.resources()));
        self.reservations
            .values()
            .fold(held, |a, r| a.add(&r.spec.resources()))
    }

    pub fn limit(&self, o: &Overcommit) -> Resources {
        o.scale(&self.capacity)
    }

    pub fn free(&self, o: &Overcommit) -> Resources {
        self.limit(o).saturating_sub(&self.used())
    }

    /// Whether `need` fits under the limit on every axis.
    pub fn fits(&self, o: &Overcommit, need: &Resources) -> bool {
        self.limit(o).fits(&self.used().add(need))
    }

    /// Holds a live instance or a reservation.
    pub fn busy(&self) -> bool {
        !self.reservations.is_empty() || self.instances.iter().any(|i| i.state.holds_capacity())
    }

    /// Awake: placements may go here without waking it.
    pub fn awake(&self) -> bool {
        matches!(self.state, NodeState::Up | NodeState::Waking)
    }

    pub fn view(&self, o: &Overcommit) -> NodeView {
        NodeView {
            name: self.name.clone(),
            url: self.url.clone(),
            state: self.state,
            capacity: self.capacity,
            limit: self.limit(o),
            free: self.free(o),
            reserved: self
                .reservations
                .values()
                .fold(Resources::ZERO, |a, r| a.add(&r.spec.resources())),
            instances: self.instances.clone(),
            last_seen: self.last_seen.map(euca_compute_proto::rfc3339),
        }
    }
}

/// What applying an answered poll leaves to do outside the lock.
#[derive(Default)]
pub struct Applied {
    /// Reservations the node now reports: remove them from the journal.
    pub reported: Vec<String>,
    /// Reservations to (re-)send to the node.
    pub resend: Vec<InstanceSpec>,
    /// The node's instances, when they differ from what it reported before
    /// (the journal keeps them).
    pub changed: Option<Vec<InstanceReport>>,
}

#[derive(Default)]
pub struct View {
    pub nodes: Vec<NodeEntry>,
    pub by_name: HashMap<String, usize>,
    /// Instance id → node index, for every reported or reserved instance.
    pub index: HashMap<String, usize>,
    /// ROUNDROBIN: the node used last.
    pub rr_last: Option<usize>,
}

impl View {
    /// Adds a node (or changes its URL); returns its index.
    pub fn upsert_node(
        &mut self,
        name: &str,
        url: &str,
        client: impl FnOnce() -> NcClient,
    ) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            let e = &mut self.nodes[i];
            if e.url != url {
                e.url = url.to_string();
                e.client = client();
            }
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(NodeEntry::new(name, url, client()));
        self.by_name.insert(name.to_string(), i);
        i
    }

    /// Reserves `spec` on node `i`.
    pub fn reserve(&mut self, i: usize, spec: InstanceSpec, sent: bool) {
        self.index.insert(spec.instance_id.clone(), i);
        self.nodes[i]
            .reservations
            .insert(spec.instance_id.clone(), Reservation { spec, sent });
    }

    /// Drops a reservation (a rolled-back or refused launch).
    pub fn unreserve(&mut self, id: &str) {
        if let Some(&i) = self.index.get(id) {
            let e = &mut self.nodes[i];
            e.reservations.remove(id);
            if !e.instances.iter().any(|r| r.instance_id == id) {
                self.index.remove(id);
            }
        }
    }

    /// Node `i` answered a poll with `rep`.
    pub fn apply_report(&mut self, i: usize, rep: NodeReport, now_secs: u64) -> Applied {
        let mut out = Applied::default();
        let e = &mut self.nodes[i];
        e.missed = 0;
        e.last_seen = Some(now_secs);
        e.capacity = rep.capacity;
        e.waking_since = None;
        if e.state != NodeState::Asleep {
            if e.state != NodeState::Up {
                tracing::info!(node = %e.name, from = ?e.state, "cc: node UP");
            }
            e.state = NodeState::Up;
        }
        let old = std::mem::replace(&mut e.instances, rep.instances);
        if old != e.instances {
            out.changed = Some(e.instances.clone());
        }
        for r in &e.instances {
            // The tombstone of an earlier run (a stopped EBS-root instance started
            // again on the same node) is not the reserved run.
            let reported = e
                .reservations
                .get(&r.instance_id)
                .is_some_and(|x| r.incarnation >= x.spec.incarnation);
            if reported {
                e.reservations.remove(&r.instance_id);
                out.reported.push(r.instance_id.clone());
            }
        }
        for r in e.reservations.values_mut() {
            if !r.sent {
                r.sent = true;
                out.resend.push(r.spec.clone());
            }
        }
        for o in old {
            let gone = !e.instances.iter().any(|r| r.instance_id == o.instance_id)
                && !e.reservations.contains_key(&o.instance_id);
            if gone && self.index.get(&o.instance_id) == Some(&i) {
                self.index.remove(&o.instance_id);
            }
        }
        // Where an id lives: a live report or a reservation wins over a terminated
        // instance's tombstone on another node (an EBS-root instance started
        // again elsewhere after a stop).
        for r in &self.nodes[i].instances {
            let live = r.state.holds_capacity();
            match self.index.get(&r.instance_id) {
                Some(&j) if j != i && !live && self.is_live(j, &r.instance_id) => {}
                _ => {
                    self.index.insert(r.instance_id.clone(), i);
                }
            }
        }
        out
    }

    /// A node (not asleep) that has not answered a poll since this CC started,
    /// if any: until none is left the view may miss instances.
    pub fn unheard(&self) -> Option<String> {
        self.nodes
            .iter()
            .find(|e| e.last_seen.is_none() && e.state != NodeState::Asleep)
            .map(|e| e.name.clone())
    }

    /// Whether node `j` holds `id` live: reserved there, or reported in a state
    /// that holds capacity.
    pub fn is_live(&self, j: usize, id: &str) -> bool {
        let e = &self.nodes[j];
        e.reservations.contains_key(id)
            || e.instances
                .iter()
                .any(|r| r.instance_id == id && r.state.holds_capacity())
    }

    /// Node `i` missed a poll.
    pub fn apply_miss(&mut self, i: usize, down_after: u32, wake_timeout: std::time::Duration) {
        let e = &mut self.nodes[i];
        e.missed = e.missed.saturating_add(1);
        match e.state {
            NodeState::Up | NodeState::Pending if e.missed >= down_after => {
                tracing::warn!(node = %e.name, missed = e.missed, "cc: node DOWN");
                e.state = NodeState::Down;
            }
            NodeState::Waking if e.waking_since.is_none_or(|t| t.elapsed() >= wake_timeout) => {
                tracing::warn!(node = %e.name, "cc: node did not wake up in time: DOWN");
                e.state = NodeState::Down;
                e.waking_since = None;
            }
            _ => {}
        }
    }

    /// Every instance: reported ones with their node's state, and launches not
    /// reported yet (without a report).
    pub fn instances(&self) -> Vec<PlacedInstance> {
        let mut out = Vec::new();
        for (i, e) in self.nodes.iter().enumerate() {
            for r in &e.instances {
                // Only where the id lives now (see `apply_report`), and not an
                // earlier run's tombstone while the next run is reserved.
                if self.index.get(&r.instance_id).is_some_and(|&j| j != i)
                    || e.reservations.contains_key(&r.instance_id)
                {
                    continue;
                }
                out.push(PlacedInstance {
                    node: e.name.clone(),
                    node_state: e.state,
                    report: Some(r.clone()),
                    instance_id: r.instance_id.clone(),
                });
            }
            for id in e.reservations.keys() {
                out.push(PlacedInstance {
                    node: e.name.clone(),
                    node_state: e.state,
                    report: None,
                    instance_id: id.clone(),
                });
            }
        }
        out
    }
}
