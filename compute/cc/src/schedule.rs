//! Placement: which node takes each instance of a launch, per policy, all in one
//! critical section over the [`View`] (the caller holds its lock), so concurrent
//! launches never over-fill a node: each placement is reserved at once.
use std::time::Instant;

use euca_compute_proto::{LaunchRequest, NodeState, Overcommit, Placement, Resources};

use crate::config::Policy;
use crate::view::View;
use crate::CcError;

/// What a launch placed.
#[derive(Debug, Default)]
pub struct Placed {
    /// Every instance placed, in request order (already placed ones included).
    pub placements: Vec<Placement>,
    /// The newly placed ones: (node index, index into the request's instances).
    pub new: Vec<(usize, usize)>,
    /// Asleep nodes this launch woke (their wake command is to run).
    pub woken: Vec<usize>,
}

/// Picks a node for `need` among the candidates, in the policy's order.
fn pick(view: &View, policy: Policy, o: &Overcommit, need: &Resources) -> Option<usize> {
    let fits = |i: usize| view.nodes[i].fits(o, need);
    let awake = |i: usize| view.nodes[i].awake();
    let asleep = |i: usize| view.nodes[i].state == NodeState::Asleep;
    let n = view.nodes.len();
    let found = match policy {
        Policy::Greedy => (0..n).find(|&i| awake(i) && fits(i)),
        Policy::RoundRobin => {
            let start = view.rr_last.map_or(0, |l| l + 1);
            (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| awake(i) && fits(i))
        }
        Policy::PowerSave => (0..n)
            .find(|&i| awake(i) && view.nodes[i].busy() && fits(i))
            .or_else(|| (0..n).find(|&i| awake(i) && fits(i))),
    };
    found.or_else(|| (0..n).find(|&i| asleep(i) && fits(i)))
}

/// Places as many of `req.instances` as fit (in order), at least `req.min_count`,
/// or none (`InsufficientCapacity`). Instance ids already placed (reserved or
/// reported) keep their node and are not placed again.
pub fn place(
    view: &mut View,
    policy: Policy,
    o: &Overcommit,
    req: &LaunchRequest,
) -> Result<Placed, CcError> {
    let only = match &req.node {
        Some(name) => {
            let i = *view
                .by_name
                .get(name)
                .ok_or_else(|| CcError::NodeNotFound(name.clone()))?;
            if matches!(view.nodes[i].state, NodeState::Down | NodeState::Pending) {
                return Err(CcError::NodeUnavailable(name.clone()));
            }
            Some(i)
        }
        None => None,
    };
    let rr_before = view.rr_last;
    let mut out = Placed::default();
    for (k, spec) in req.instances.iter().enumerate() {
        // Already placed and live: the same node again (idempotent). An id whose
        // instance ended (terminated) is placed anew: a start after a stop.
        if let Some(&i) = view
            .index
            .get(&spec.instance_id)
            .filter(|&&i| view.is_live(i, &spec.instance_id))
        {
            out.placements.push(Placement {
                instance_id: spec.instance_id.clone(),
                node: view.nodes[i].name.clone(),
            });
            continue;
        }
        let need = spec.resources();
        let chosen = match only {
            Some(i) => view.nodes[i].fits(o, &need).then_some(i),
            None => pick(view, policy, o, &need),
        };
        let Some(i) = chosen else { break };
        if view.nodes[i].state == NodeState::Asleep {
            let e = &mut view.nodes[i];
            e.state = NodeState::Waking;
            e.waking_since = Some(Instant::now());
            e.missed = 0;
            out.woken.push(i);
        }
        view.nodes[i].idle_since = None;
        if only.is_none() {
            view.rr_last = Some(i);
        }
        view.reserve(i, spec.clone(), true);
        out.new.push((i, k));
        out.placements.push(Placement {
            instance_id: spec.instance_id.clone(),
            node: view.nodes[i].name.clone(),
        });
    }
    let fit = out.placements.len() as u32;
    if fit < req.min_count {
        rollback(view, req, &out);
        view.rr_last = rr_before;
        return Err(CcError::InsufficientCapacity {
            min: req.min_count,
            fit,
        });
    }
    Ok(out)
}

/// Undoes the new reservations and wake-ups of `placed`.
pub fn rollback(view: &mut View, req: &LaunchRequest, placed: &Placed) {
    for &(_, k) in &placed.new {
        view.unreserve(&req.instances[k].instance_id);
    }
    for &i in &placed.woken {
        let e = &mut view.nodes[i];
        e.state = NodeState::Asleep;
        e.waking_since = None;
    }
}
