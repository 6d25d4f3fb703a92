//! The node joins its CC: `POST /v1/nodes` ([`RegisterNode`]) at start and every
//! [`PERIOD`], retried with backoff while the CC cannot be reached or refuses.
//! A process with many simulated nodes registers them all from this one task (a
//! few calls at a time), so 1 000 nodes cost one task.
//!
//! It logs once per change of state (registered / unreachable / refused), never per
//! attempt.
use std::time::Duration;

use euca_compute_proto::cc::CcClient;
use euca_compute_proto::{ProtoError, RegisterNode};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often a registered node registers again (the CC keeps its list across
/// restarts; this heals a CC that lost it).
pub const PERIOD: Duration = Duration::from_secs(30);

/// First retry delay after a failed round; doubled up to [`PERIOD`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Registrations in flight at once.
const CONCURRENCY: usize = 16;

/// The outcome of one round, as far as logging cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joined {
    /// Every node is registered.
    Registered,
    /// The CC did not answer (down, unreachable, timed out).
    Unreachable(String),
    /// The CC answered with an error (wrong token, bad name…).
    Refused(String),
}

/// Registers `nodes` with `cc` once, at most [`CONCURRENCY`] calls at a time;
/// answers the nodes that failed and the first failure.
pub async fn register_once(
    cc: &CcClient,
    nodes: &[RegisterNode],
) -> (Vec<RegisterNode>, Option<ProtoError>) {
    let mut failed = Vec::new();
    let mut first_err = None;
    let mut set = JoinSet::new();
    let mut queue = nodes.iter().cloned();
    loop {
        while set.len() < CONCURRENCY {
            let Some(n) = queue.next() else { break };
            let cc = cc.clone();
            set.spawn(async move {
                let r = cc.register(&n).await;
                (n, r)
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok((_, Ok(_))) => {}
            Ok((n, Err(e))) => {
                failed.push(n);
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(ProtoError::Transport(e.to_string()));
            }
        }
    }
    (failed, first_err)
}

fn state_of(total: usize, failed: usize, err: Option<&ProtoError>) -> Joined {
    match err {
        None => Joined::Registered,
        Some(e) => {
            let what = if total > 1 {
                format!("{failed} of {total} nodes: {e}")
            } else {
                e.to_string()
            };
            if e.is_unavailable() {
                Joined::Unreachable(what)
            } else {
                Joined::Refused(what)
            }
        }
    }
}

/// Keeps `nodes` registered with `cc` until `shutdown`: a round at start, then every
/// `period`; after a failed round, the failed nodes again after a backoff (from
/// [`FIRST_BACKOFF`], doubling up to `period`). `changed` is told every change of
/// state (and it is logged once). (Boxed: compiled here once; see
/// `euca_service::serve_api`.)
pub fn keep_registered(
    cc: CcClient,
    nodes: Vec<RegisterNode>,
    period: Duration,
    changed: Option<watch::Sender<Option<Joined>>>,
    shutdown: watch::Receiver<bool>,
) -> futures::future::BoxFuture<'static, ()> {
    futures::FutureExt::boxed(registering(cc, nodes, period, changed, shutdown))
}

async fn registering(
    cc: CcClient,
    nodes: Vec<RegisterNode>,
    period: Duration,
    changed: Option<watch::Sender<Option<Joined>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Option<Joined> = None;
    let mut backoff = FIRST_BACKOFF.min(period);
    let mut pending = nodes.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let (failed, err) = tokio::select! {
            r = register_once(&cc, &pending) => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let state = state_of(nodes.len(), failed.len(), err.as_ref());
        if last.as_ref() != Some(&state) {
            match &state {
                Joined::Registered => tracing::info!(
                    cc = cc.base(),
                    nodes = nodes.len(),
                    "registered with the cluster controller"
                ),
                Joined::Unreachable(e) => tracing::warn!(
                    cc = cc.base(),
                    "cannot reach the cluster controller ({e}); retrying"
                ),
                Joined::Refused(e) => tracing::warn!(
                    cc = cc.base(),
                    "the cluster controller refused the registration ({e}); retrying"
                ),
            }
            if let Some(tx) = &changed {
                tx.send_replace(Some(state.clone()));
            }
            last = Some(state.clone());
        }
        let wait = if failed.is_empty() {
            backoff = FIRST_BACKOFF.min(period);
            pending = nodes.clone();
            period
        } else {
            let w = backoff;
            backoff = (backoff * 2).min(period);
            pending = failed;
            w
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}
