//! The poll loop: every `poll_interval_ms` each awake node is asked
//! `GET /v1/node` with `poll_timeout_ms`, all in parallel (one task per round,
//! at most [`MAX_POLLS_IN_FLIGHT`] requests at once, each node's client keeping
//! its connection), and each answer updates the view as soon as it arrives: a
//! slow or stopped node delays nobody. A node still being polled is skipped, a
//! node missing `down_after_missed` polls in a row is `DOWN` (its instances stay
//! listed). POWERSAVE decisions are taken once per round.
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use euca_compute_proto::nc::NcClient;
use euca_compute_proto::NodeState;
use futures::StreamExt;
use tokio::sync::watch;

use crate::cluster::{blocking, Cluster};
use crate::config::Policy;

impl Cluster {
    /// Opens the journal in `cfg.state_dir`, loads the node list (static, then
    /// registered) and the pending placements (kept reserved and re-sent to their
    /// node once it answers a poll), and starts polling. (Boxed: compiled here
    /// once; see `euca_service::serve_api`.)
    pub fn start(
        cfg: crate::config::CcConfig,
        token: euca_imagecache::http::Token,
    ) -> futures::future::BoxFuture<'static, Result<Arc<Cluster>, crate::CcError>> {
        futures::FutureExt::boxed(async move {
            let (c, rx) = Cluster::open(cfg, token).await?;
            c.set_poller(tokio::spawn(run(Arc::downgrade(&c), rx)));
            Ok(c)
        })
    }
}

/// Polls in flight at most (all nodes of a big cluster within one round).
pub const MAX_POLLS_IN_FLIGHT: usize = 1024;

fn poll_histogram() -> &'static prometheus::Histogram {
    static H: OnceLock<prometheus::Histogram> = OnceLock::new();
    H.get_or_init(|| {
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "euca_cc_poll_duration_seconds",
                "Time a node took to answer the CC's poll (answered polls).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .expect("valid metric");
        if let Err(e) = euca_service::registry::registry().register(Box::new(h.clone())) {
            tracing::warn!(error = %e, "cc: poll histogram not registered");
        }
        h
    })
}

pub(crate) async fn run(me: Weak<Cluster>, mut stop: watch::Receiver<bool>) {
    let interval = match me.upgrade() {
        Some(c) => Duration::from_millis(c.cfg.poll_interval_ms),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rounds = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        while rounds.try_join_next().is_some() {}
        let Some(c) = me.upgrade() else { break };
        if c.cfg.policy == Policy::PowerSave {
            c.power_round();
        }
        rounds.spawn(c.poll_round());
    }
    rounds.shutdown().await;
}

impl Cluster {
    /// One round: every awake node not already being polled.
    async fn poll_round(self: Arc<Self>) {
        let targets: Vec<(usize, NcClient)> = {
            let mut v = self.lock();
            v.nodes
                .iter_mut()
                .enumerate()
                .filter(|(_, e)| e.state != NodeState::Asleep && !e.polling)
                .map(|(i, e)| {
                    e.polling = true;
                    (i, e.client.clone())
                })
                .collect()
        };
        let me = &self;
        futures::stream::iter(targets)
            .for_each_concurrent(MAX_POLLS_IN_FLIGHT, |(i, c)| async move {
                me.poll_one(i, c).await
            })
            .await;
    }

    async fn poll_one(&self, i: usize, c: NcClient) {
        let timeout = Duration::from_millis(self.cfg.poll_timeout_ms);
        let t0 = Instant::now();
        let r = c.describe(timeout).await;
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let applied = {
            let mut v = self.lock();
            v.nodes[i].polling = false;
            match r {
                Ok(rep) => {
                    poll_histogram().observe(t0.elapsed().as_secs_f64());
                    Some(v.apply_report(i, rep, now))
                }
                Err(e) => {
                    tracing::debug!(node = %v.nodes[i].name, error = %e, "cc: poll missed");
                    self.counters.poll_misses.fetch_add(1, Ordering::Relaxed);
                    v.apply_miss(
                        i,
                        self.cfg.down_after_missed,
                        Duration::from_secs(self.cfg.wake_timeout_secs),
                    );
                    None
                }
            }
        };
        let Some(applied) = applied else { return };
        if applied.changed.is_some() || !applied.reported.is_empty() {
            // Both writes in one blocking task: once started it finishes even if
            // this poll is abandoned (CC stopping), so a reported placement never
            // stays journaled because the first write was still being awaited.
            let j = self.journal.clone();
            let name = self.lock().nodes[i].name.clone();
            let (changed, ids) = (applied.changed, applied.reported);
            let r = blocking(move || {
                // One failing write does not keep the other from being made.
                let report = changed.map_or(Ok(()), |list| j.put_last_report(&name, &list));
                let removed = j.remove_placements(&ids);
                report.and(removed)
            })
            .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "cc: journal");
            }
        }
        for spec in applied.resend {
            tracing::info!(instance = %spec.instance_id, "cc: sending a pending placement to its node");
            if let Err(e) = c.run(&spec).await {
                self.run_refused(&spec.instance_id, e).await;
            }
        }
    }

    /// POWERSAVE: puts nodes idle for `idle_sleep_secs` to sleep.
    fn power_round(&self) {
        let idle = Duration::from_secs(self.cfg.idle_sleep_secs);
        let mut sleep = Vec::new();
        {
            let mut v = self.lock();
            for (i, e) in v.nodes.iter_mut().enumerate() {
                if e.state != NodeState::Up || e.last_seen.is_none() || e.busy() {
                    e.idle_since = None;
                    continue;
                }
                let since = *e.idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= idle {
                    e.state = NodeState::Asleep;
                    e.idle_since = None;
                    sleep.push(i);
                }
            }
        }
        for i in sleep {
            self.run_power_command(i, true);
        }
    }
}
