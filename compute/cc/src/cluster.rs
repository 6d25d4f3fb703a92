//! The cluster controller's core: the view, the journal, launches and the
//! instance calls forwarded to nodes.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use euca_compute_proto::nc::NcClient;
use euca_compute_proto::{
    AttachSpec, ConsoleOutput, InstanceReport, LaunchReply, LaunchRequest, NodeState, NodeView,
    PlacedInstance, RegisterNode, VolumeReport,
};
use euca_imagecache::http::Token;
use euca_service::failpoint::failpoint;
use tokio::sync::watch;

use crate::config::CcConfig;
use crate::journal::{Journal, PendingPlacement};
use crate::view::View;
use crate::{schedule, CcError};

/// How long the CC waits for a node to accept a run or a forwarded call.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Counters {
    pub placements: AtomicU64,
    pub launch_refused: AtomicU64,
    pub run_failed: AtomicU64,
    pub polls: AtomicU64,
    pub poll_misses: AtomicU64,
}

pub struct Cluster {
    pub(crate) cfg: CcConfig,
    pub(crate) token: Token,
    pub(crate) view: Mutex<View>,
    pub(crate) journal: Arc<Journal>,
    /// The cluster's network (router namespace, metadata service).
    pub net: Arc<crate::net::Network>,
    pub(crate) counters: Counters,
    stop: watch::Sender<bool>,
    me: Weak<Cluster>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Runs blocking journal work off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CcError> + Send + 'static,
) -> Result<T, CcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CcError::Journal(e.to_string()))?
}

fn dir_of(cfg: &CcConfig) -> Result<std::path::PathBuf, CcError> {
    cfg.state_dir
        .clone()
        .ok_or_else(|| CcError::Config("[cc] state_dir is not set".into()))
}

impl Cluster {
    /// Opens the journal in `cfg.state_dir` and loads the node list (static, then
    /// registered) and the pending placements (kept reserved and re-sent to their
    /// node once it answers a poll). `Cluster::start` (in `poll.rs`) opens and
    /// starts polling.
    pub(crate) async fn open(
        cfg: CcConfig,
        token: Token,
    ) -> Result<(Arc<Cluster>, watch::Receiver<bool>), CcError> {
        cfg.validate()?;
        let dir = cfg
            .state_dir
            .clone()
            .ok_or_else(|| CcError::Config("[cc] state_dir is not set".into()))?;
        let (journal, registered, pending, asleep, reports) = blocking(move || {
            let j = Journal::open(&dir)?;
            let nodes = j.nodes()?;
            let pending = j.placements()?;
            let asleep = j.asleep()?;
            let reports = j.last_reports()?;
            Ok((j, nodes, pending, asleep, reports))
        })
        .await?;
        let journal = Arc::new(journal);
        // Weak: the journal must close once the cluster is dropped.
        let weak = Arc::downgrade(&journal);
        let user_data: crate::metadata::UserData =
            Arc::new(move |id| weak.upgrade().and_then(|j| j.user_data(id).ok().flatten()));
        let net = crate::net::Network::start(&cfg.net, &dir_of(&cfg)?, user_data).await?;
        let mut view = View::default();
        let mk = |url: &str| {
            let mut c = NcClient::new(url, token.clone());
            c.timeout = NODE_CALL_TIMEOUT;
            c
        };
        for n in &cfg.nodes {
            view.upsert_node(&n.name, &n.url, || mk(&n.url));
        }
        for (name, url) in &registered {
            view.upsert_node(name, url, || mk(url));
        }
        for (name, capacity) in asleep {
            if let Some(&i) = view.by_name.get(&name) {
                let e = &mut view.nodes[i];
                e.state = NodeState::Asleep;
                e.capacity = capacity;
            }
        }
        // What each node last reported, until it answers again (a node DOWN at
        // the restart keeps its instances listed, and calls for them answer
        // "unavailable"). Capacity stays unknown until a poll: nothing is placed
        // on a node not heard from.
        for (name, instances) in reports {
            if let Some(&i) = view.by_name.get(&name) {
                for r in &instances {
                    view.index.insert(r.instance_id.clone(), i);
                }
                view.nodes[i].instances = instances;
            }
        }
        for p in pending {
            match view.by_name.get(&p.node) {
                Some(&i) => view.reserve(i, p.spec, false),
                None => tracing::warn!(
                    node = %p.node, instance = %p.spec.instance_id,
                    "cc: pending placement on a node no longer listed (kept in the journal)"
                ),
            }
        }
        let (stop, rx) = watch::channel(false);
        let c = Arc::new_cyclic(|me| Cluster {
            cfg,
            token,
            view: Mutex::new(view),
            journal,
            net,
            counters: Counters::default(),
            stop,
            me: me.clone(),
            poller: Mutex::new(None),
        });
        euca_service::registry::add_source(&c);
        Ok((c, rx))
    }

    /// Keeps the poll loop's task, for [`Cluster::stop`].
    pub(crate) fn set_poller(&self, h: tokio::task::JoinHandle<()>) {
        *self.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// Stops polling (in-flight polls are abandoned); the journal closes when the
    /// last reference goes. (Boxed: compiled here once.)
    pub fn stop(&self) -> futures::future::BoxFuture<'_, ()> {
        futures::FutureExt::boxed(self.stopping())
    }

    async fn stopping(&self) {
        let _ = self.stop.send(true);
        self.net.stop().await;
        let h = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.await;
        }
        // Journal writes already running off the runtime finish (bounded wait), so
        // the journal can be reopened once this cluster is dropped.
        for _ in 0..500 {
            if Arc::strong_count(&self.journal) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn config(&self) -> &CcConfig {
        &self.cfg
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn client_for(&self, url: &str) -> NcClient {
        let mut c = NcClient::new(url, self.token.clone());
        c.timeout = NODE_CALL_TIMEOUT;
        c
    }

    /// Every node as the CC sees it.
    pub fn nodes(&self) -> Vec<NodeView> {
        let o = self.cfg.overcommit;
        self.lock().nodes.iter().map(|e| e.view(&o)).collect()
    }

    /// Every instance from the last polls, and placed launches not reported yet.
    pub fn instances(&self) -> Vec<PlacedInstance> {
        self.lock().instances()
    }

    /// Adds a node (or updates its URL), persisted before the answer.
    pub async fn register(&self, r: RegisterNode) -> Result<NodeView, CcError> {
        if r.name.is_empty() || r.name.len() > 255 || r.name.chars().any(char::is_control) {
            return Err(CcError::BadRequest("bad node name".into()));
        }
        if !(r.url.starts_with("http://") || r.url.starts_with("https://"))
            || r.url.parse::<http::Uri>().is_err()
        {
            return Err(CcError::BadRequest(format!("bad node URL {:?}", r.url)));
        }
        let j = self.journal.clone();
        let (name, url) = (r.name.clone(), r.url.clone());
        blocking(move || j.put_node(&name, &url)).await?;
        let o = self.cfg.overcommit;
        let mut v = self.lock();
        let i = v.upsert_node(&r.name, &r.url, || self.client_for(&r.url));
        Ok(v.nodes[i].view(&o))
    }

    /// Places a launch (see [`schedule::place`]), records the new placements
    /// durably, then asks their nodes to run them.
    pub async fn launch(&self, req: LaunchRequest) -> Result<LaunchReply, CcError> {
        check_launch(&req)?;
        if let (Some(serves), Some(asked)) = (&self.cfg.zone, &req.zone) {
            if serves != asked {
                return Err(CcError::ZoneMismatch {
                    serves: serves.clone(),
                    asked: asked.clone(),
                });
            }
        }
        let placed = {
            let mut v = self.lock();
            schedule::place(&mut v, self.cfg.policy, &self.cfg.overcommit, &req)
        };
        let placed = match placed {
            Ok(p) => p,
            Err(e) => {
                self.counters.launch_refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if !placed.new.is_empty() {
            let items: Vec<PendingPlacement> = {
                let v = self.lock();
                placed
                    .new
                    .iter()
                    .map(|&(i, k)| PendingPlacement {
                        node: v.nodes[i].name.clone(),
                        spec: req.instances[k].clone(),
                    })
                    .collect()
            };
            let j = self.journal.clone();
            if let Err(e) = blocking(move || j.put_placements(&items)).await {
                schedule::rollback(&mut self.lock(), &req, &placed);
                self.counters.launch_refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            self.counters
                .placements
                .fetch_add(placed.new.len() as u64, Ordering::Relaxed);
        }
        failpoint("cc.after_reserve");
        for &i in &placed.woken {
            self.run_power_command(i, false);
        }
        // Ask the nodes (a waking one gets it once it answers a poll).
        let calls: Vec<_> = {
            let mut v = self.lock();
            placed
                .new
                .iter()
                .filter_map(|&(i, k)| {
                    let e = &mut v.nodes[i];
                    let id = &req.instances[k].instance_id;
                    if e.state == NodeState::Waking {
                        if let Some(r) = e.reservations.get_mut(id) {
                            r.sent = false;
                        }
                        return None;
                    }
                    Some((e.client.clone(), req.instances[k].clone()))
                })
                .collect()
        };
        let results = futures::future::join_all(calls.iter().map(|(c, spec)| c.run(spec))).await;
        let mut accepted = false;
        let mut refused = Vec::new();
        for ((_, spec), r) in calls.iter().zip(results) {
            match r {
                Ok(_) => accepted = true,
                Err(e) => {
                    if !e.is_unavailable() {
                        refused.push(spec.instance_id.clone());
                    }
                    self.run_refused(&spec.instance_id, e).await
                }
            }
        }
        if accepted {
            failpoint("cc.after_nc_run");
        }
        // What a node refused is not placed (the caller deletes its record).
        let mut placements = placed.placements;
        placements.retain(|p| !refused.contains(&p.instance_id));
        Ok(LaunchReply { placed: placements })
    }

    /// A node did not take a run: re-sent after its next answered poll when it
    /// was unreachable, dropped when it refused.
    pub(crate) async fn run_refused(&self, id: &str, e: euca_compute_proto::ProtoError) {
        if e.is_unavailable() {
            tracing::warn!(instance = %id, error = %e, "cc: node unreachable for run; will re-send");
            let mut v = self.lock();
            if let Some(&i) = v.index.get(id) {
                if let Some(r) = v.nodes[i].reservations.get_mut(id) {
                    r.sent = false;
                }
            }
            return;
        }
        tracing::warn!(instance = %id, error = %e, "cc: node refused the instance");
        self.counters.run_failed.fetch_add(1, Ordering::Relaxed);
        self.lock().unreserve(id);
        let j = self.journal.clone();
        let ids = vec![id.to_string()];
        if let Err(e) = blocking(move || j.remove_placements(&ids)).await {
            tracing::error!(error = %e, "cc: journal");
        }
    }

    /// Drops `id`'s reservation (and its journal entry) if it is one; whether it was.
    async fn cancel_pending(&self, id: &str) -> Result<bool, CcError> {
        let pending = {
            let v = self.lock();
            v.index
                .get(id)
                .is_some_and(|&i| v.nodes[i].reservations.contains_key(id))
        };
        if !pending {
            return Ok(false);
        }
        let j = self.journal.clone();
        let ids = vec![id.to_string()];
        blocking(move || j.remove_placements(&ids)).await?;
        self.lock().unreserve(id);
        Ok(true)
    }

    /// The node holding `id`, if it can be asked.
    fn locate(&self, id: &str) -> Result<(NcClient, String, NodeState), CcError> {
        let v = self.lock();
        let Some(&i) = v.index.get(id) else {
            // Until every node has answered once since this CC started, an id not
            // in the view may be on a node not heard from yet (after a restart):
            // "try again", never "no such instance" (the CLC would free its
            // volumes while the guest runs).
            return Err(match v.unheard() {
                Some(node) => CcError::NodeUnavailable(node),
                None => CcError::InstanceNotFound(id.to_string()),
            });
        };
        let e = &v.nodes[i];
        if e.state == NodeState::Down {
            return Err(CcError::NodeUnavailable(e.name.clone()));
        }
        Ok((e.client.clone(), e.name.clone(), e.state))
    }

    /// Records what a node answered about an instance, so the next Describe shows
    /// it before the next poll.
    fn note(&self, node: &str, r: &InstanceReport) {
        let mut v = self.lock();
        if let Some(&i) = v.by_name.get(node) {
            let e = &mut v.nodes[i];
            match e
                .instances
                .iter_mut()
                .find(|x| x.instance_id == r.instance_id)
            {
                Some(x) => *x = r.clone(),
                None if !e.reservations.contains_key(&r.instance_id) => e.instances.push(r.clone()),
                None => {}
            }
        }
    }

    /// Terminates an instance. One placed but not reported yet is cancelled first
    /// (never re-sent); the node is still told, in case it got the run.
    pub async fn terminate(&self, id: &str) -> Result<PlacedInstance, CcError> {
        let (c, node, state) = self.locate(id)?;
        if self.cancel_pending(id).await? {
            return match c.terminate(id).await {
                Ok(r) => {
                    self.note(&node, &r);
                    Ok(PlacedInstance {
                        node,
                        node_state: state,
                        report: Some(r),
                        instance_id: id.to_string(),
                    })
                }
                Err(e) if e.code() == Some(euca_compute_proto::codes::INSTANCE_NOT_FOUND) => {
                    Ok(PlacedInstance {
                        node,
                        node_state: state,
                        report: None,
                        instance_id: id.to_string(),
                    })
                }
                Err(e) => Err(CcError::Node(e)),
            };
        }
        let r = c.terminate(id).await.map_err(CcError::Node)?;
        self.note(&node, &r);
        Ok(PlacedInstance {
            node,
            node_state: state,
            report: Some(r),
            instance_id: id.to_string(),
        })
    }

    pub async fn reboot(&self, id: &str) -> Result<PlacedInstance, CcError> {
        let (c, node, state) = self.locate(id)?;
        let r = c.reboot(id).await.map_err(CcError::Node)?;
        self.note(&node, &r);
        Ok(PlacedInstance {
            node,
            node_state: state,
            report: Some(r),
            instance_id: id.to_string(),
        })
    }

    pub async fn console(&self, id: &str) -> Result<ConsoleOutput, CcError> {
        let (c, _, _) = self.locate(id)?;
        c.console(id).await.map_err(CcError::Node)
    }

    pub async fn attach(&self, id: &str, spec: &AttachSpec) -> Result<VolumeReport, CcError> {
        let (c, _, _) = self.locate(id)?;
        c.attach(id, spec).await.map_err(CcError::Node)
    }

    pub async fn detach(&self, id: &str, vol: &str, force: bool) -> Result<VolumeReport, CcError> {
        let (c, _, _) = self.locate(id)?;
        c.detach(id, vol, force).await.map_err(CcError::Node)
    }

    /// Runs the sleep (or wake) command for node `i` in the background; a sleep
    /// command that fails leaves the node awake.
    ///
    /// The decision (the node's state set to `Asleep` by the idle timer, or to
    /// `Waking` by a placement) is taken under the view's lock, as every
    /// reservation is, and numbered (`power_gen`). Commands of one node run one
    /// at a time (`power_lock`), and each first checks, under the view's lock,
    /// that its decision is still the node's latest — and for a sleep that the
    /// node is still asleep with nothing reserved — else it is skipped. So a
    /// node that got a reservation is never put to sleep, and a wake decided
    /// while a sleep command runs is carried out after that command, not undone
    /// by it.
    pub(crate) fn run_power_command(&self, i: usize, sleep: bool) {
        let (name, url, capacity, gen, turn) = {
            let mut v = self.lock();
            let e = &mut v.nodes[i];
            e.power_gen += 1;
            (
                e.name.clone(),
                e.url.clone(),
                e.capacity,
                e.power_gen,
                e.power_lock.clone(),
            )
        };
        let tmpl = if sleep {
            &self.cfg.sleep_command
        } else {
            &self.cfg.wake_command
        };
        let argv: Vec<String> = tmpl
            .iter()
            .map(|a| a.replace("{node}", &name).replace("{url}", &url))
            .collect();
        let what = if sleep { "sleep" } else { "wake" };
        let Some((prog, args)) = argv.split_first() else {
            return;
        };
        let (prog, args) = (prog.clone(), args.to_vec());
        let weak = self.me.clone();
        let journal = self.journal.clone();
        tokio::spawn(async move {
            let _turn = turn.lock().await;
            let current = |c: &Cluster| {
                let v = c.lock();
                v.nodes.get(i).is_some_and(|e| {
                    e.power_gen == gen && (!sleep || (e.state == NodeState::Asleep && !e.busy()))
                })
            };
            match weak.upgrade() {
                Some(c) if current(&c) => {}
                _ => {
                    tracing::info!(node = %name, command = what, "cc: POWERSAVE decision superseded; not run");
                    return;
                }
            }
            tracing::info!(node = %name, command = what, "cc: POWERSAVE");
            // The journal first: a CC restarted after the command still knows.
            let (j, n) = (journal.clone(), name.clone());
            let rec = sleep.then_some(capacity);
            if let Err(e) = blocking(move || j.set_asleep(&n, rec)).await {
                tracing::error!(error = %e, "cc: journal");
            }
            let status = tokio::task::spawn_blocking(move || {
                std::process::Command::new(&prog)
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .status()
            })
            .await;
            let ok = matches!(status, Ok(Ok(s)) if s.success());
            if !ok {
                tracing::warn!(node = %name, command = what, "cc: POWERSAVE command failed");
                if sleep {
                    let n = name.clone();
                    if let Err(e) = blocking(move || journal.set_asleep(&n, None)).await {
                        tracing::error!(error = %e, "cc: journal");
                    }
                    if let Some(c) = weak.upgrade() {
                        let mut v = c.lock();
                        if let Some(e) = v.nodes.get_mut(i) {
                            if e.state == NodeState::Asleep && e.power_gen == gen {
                                e.state = NodeState::Up;
                                e.idle_since = None;
                            }
                        }
                    }
                }
            }
        });
    }
}

fn check_launch(req: &LaunchRequest) -> Result<(), CcError> {
    if req.instances.is_empty() {
        return Err(CcError::BadRequest("no instances to launch".into()));
    }
    if req.min_count as usize > req.instances.len() {
        return Err(CcError::BadRequest(
            "min_count exceeds the instances given".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &req.instances {
        let id = &s.instance_id;
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(CcError::BadRequest(format!("bad instance id {id:?}")));
        }
        if !seen.insert(id.as_str()) {
            return Err(CcError::BadRequest(format!("instance id {id} given twice")));
        }
    }
    Ok(())
}
