//! The cluster controller against fake nodes: placement per policy, capacity
//! races, all-or-nothing, DOWN detection, POWERSAVE commands, restart safety,
//! and the API on its listener.
use crate::common;

use std::time::Duration;

use common::*;
use euca_cc::config::Policy;
use euca_cc::{CcError, Cluster};
use euca_compute_proto::cc::CcClient;
use euca_compute_proto::{codes, NodeState};

#[tokio::test]
async fn greedy_fills_nodes_in_order() {
    let fake = Fake::start(4, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    let r = c
        .launch(launch(&["i-1", "i-2", "i-3", "i-4"], 4))
        .await
        .unwrap();
    assert_eq!(per_node(&r, 4), vec![2, 2, 0, 0]);
    assert_eq!(
        fake.counts(),
        vec![2, 2, 0, 0],
        "what the nodes were asked to run"
    );
    // Once reported, the reservations are gone and the capacity is held by the instances.
    wait_nodes(&c, "reported", |ns| {
        ns.iter().all(|n| n.reserved.cores == 0)
    })
    .await;
    let ns = c.nodes();
    assert_eq!(ns[0].free.cores, 0);
    assert_eq!(ns[2].free.cores, 2);
    assert_eq!(ns[0].instances.len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn roundrobin_spreads() {
    let fake = Fake::start(4, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::RoundRobin, dir.path())).await;
    let r = c
        .launch(launch(&["i-1", "i-2", "i-3", "i-4"], 1))
        .await
        .unwrap();
    assert_eq!(per_node(&r, 4), vec![1, 1, 1, 1]);
    // The cursor carries over between launches: the next goes to n0 again.
    let r = c.launch(launch(&["i-5"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    assert_eq!(fake.counts(), vec![2, 1, 1, 1]);
    c.stop().await;
}

#[tokio::test]
async fn overcommit_scales_the_limit() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fake.config(Policy::Greedy, dir.path());
    cfg.overcommit.cores = 2.0;
    let c = cluster(cfg).await;
    let ids = ["i-1", "i-2", "i-3", "i-4", "i-5"];
    let r = c.launch(launch(&ids, 1)).await.unwrap();
    assert_eq!(r.placed.len(), 4, "2 cores × 2.0");
    assert_eq!(c.nodes()[0].limit.cores, 4);
    c.stop().await;
}

#[tokio::test]
async fn concurrent_launches_never_overfill() {
    let fake = Fake::start(4, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    let ids: Vec<String> = (0..20).map(|k| format!("i-{k:08x}")).collect();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let c = c.clone();
            let id = id.clone();
            tokio::spawn(async move { c.launch(launch(&[&id], 1)).await })
        })
        .collect();
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.placed.len(), 1);
                ok += 1
            }
            Err(CcError::InsufficientCapacity { min: 1, fit: 0 }) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, full), (8, 12));
    assert_eq!(fake.counts(), vec![2, 2, 2, 2]);
    c.stop().await;
}

#[tokio::test]
async fn min_count_is_all_or_nothing() {
    let fake = Fake::start(4, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    let ids: Vec<String> = (0..10).map(|k| format!("i-{k}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let e = c.launch(launch(&refs, 9)).await.unwrap_err();
    assert_eq!(e.code(), codes::INSUFFICIENT_CAPACITY);
    assert_eq!(e.status(), 409);
    assert_eq!(fake.counts(), vec![0, 0, 0, 0], "nothing ran");
    assert!(
        c.nodes().iter().all(|n| n.reserved.cores == 0),
        "nothing reserved"
    );
    assert!(c.instances().is_empty());
    let r = c.launch(launch(&refs, 8)).await.unwrap();
    assert_eq!(r.placed.len(), 8);
    assert_eq!(r.placed[7].instance_id, "i-7", "the first ones, in order");
    // An explicit node takes only that node.
    let e = c
        .launch(euca_compute_proto::LaunchRequest {
            node: Some("n9".into()),
            zone: None,
            ..launch(&["i-x"], 1)
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);
    c.stop().await;
}

/// Serves the CC API of `c` on a free port: its URL, the stop switch, the task.
async fn serve(
    c: &std::sync::Arc<Cluster>,
) -> (
    String,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let api = euca_cc::api::CcApi::new(c.clone(), 2);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(api.serve(l, euca_imagecache::http::Edge::default(), rx));
    (url, stop, served)
}

#[tokio::test]
async fn hung_node_goes_down_while_the_api_answers() {
    let fake = Fake::start(2, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    let (url, stop, served) = serve(&c).await;
    let mut cc = CcClient::new(&url, token());
    cc.timeout = Duration::from_secs(2);
    // One instance on n1, then n1 hangs (as under SIGSTOP).
    let r = cc
        .launch(&euca_compute_proto::LaunchRequest {
            node: Some("n1".into()),
            zone: None,
            ..launch(&["i-on-n1"], 1)
        })
        .await
        .unwrap();
    assert_eq!(r.placed[0].node, "n1");
    wait_nodes(&c, "i-on-n1 reported", |ns| ns[1].instances.len() == 1).await;
    fake.set_mode(1, Mode::Hang);
    // The API answers (within the client's short timeout) while n1 hangs, and
    // n1 turns DOWN after its missed polls with its instance still listed.
    let mut down = false;
    for _ in 0..100 {
        let list = cc.instances().await.expect("answers while a node hangs");
        let i = list
            .iter()
            .find(|p| p.instance_id == "i-on-n1")
            .expect("still listed");
        if i.node_state == NodeState::Down {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "n1 never went DOWN: {:#?}", c.nodes());
    assert!(cc.nodes().await.unwrap()[1].state == NodeState::Down);
    // Calls for its instances are refused at once; launches go elsewhere.
    let e = cc.terminate("i-on-n1").await.unwrap_err();
    assert_eq!(e.code(), Some(codes::NODE_UNAVAILABLE));
    let r = cc.launch(&launch(&["i-2", "i-3"], 2)).await.unwrap();
    assert!(r.placed.iter().all(|p| p.node == "n0"));
    // n0 is full now and n1 DOWN: the API answers 409 InsufficientInstanceCapacity.
    match cc.launch(&launch(&["i-4"], 1)).await.unwrap_err() {
        euca_compute_proto::ProtoError::Refused { status, code, .. } => {
            assert_eq!((status, code.as_str()), (409, codes::INSUFFICIENT_CAPACITY))
        }
        e => panic!("unexpected {e}"),
    }
    let e = cc.terminate("i-nope").await.unwrap_err();
    assert_eq!(e.code(), Some(codes::INSTANCE_NOT_FOUND));
    // A wrong token is refused.
    let bad = CcClient::new(
        &url,
        euca_imagecache::http::Token::new("wrong-token-000000000").unwrap(),
    );
    assert_eq!(bad.nodes().await.unwrap_err().code(), Some("Forbidden"));
    let _ = stop.send(true);
    let _ = served.await;
    c.stop().await;
}

#[tokio::test]
async fn powersave_sleeps_idle_nodes_and_wakes_them() {
    let fake = Fake::start(2, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("power.log");
    let mut cfg = fake.config(Policy::PowerSave, &dir.path().join("state"));
    cfg.idle_sleep_secs = 1;
    let rec = |what: &str| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("echo {what} \"$0\" \"$1\" >> {}", log.display()),
            "{node}".to_string(),
            "{url}".to_string(),
        ]
    };
    cfg.sleep_command = rec("sleep");
    cfg.wake_command = rec("wake");
    let c = Cluster::start(cfg, token()).await.unwrap();
    wait_nodes(&c, "n0 polled", |ns| ns[0].capacity.cores == 2).await;
    let r = c.launch(launch(&["i-1"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    // n1 holds nothing: it is put to sleep; n0 is busy and stays up.
    wait_nodes(&c, "n1 asleep", |ns| ns[1].state == NodeState::Asleep).await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..100 {
        if !read().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(), format!("sleep n1 {}\n", fake.url(1)));
    assert_eq!(c.nodes()[0].state, NodeState::Up);
    // Two more: one packs onto busy n0, the other needs n1, which is woken and
    // gets its instance once it answers a poll.
    let r = c.launch(launch(&["i-2", "i-3"], 2)).await.unwrap();
    assert_eq!(per_node(&r, 2), vec![1, 1]);
    wait_nodes(&c, "n1 up with i-3", |ns| {
        ns[1].state == NodeState::Up && ns[1].instances.len() == 1
    })
    .await;
    assert_eq!(fake.runs(1, "i-3"), 1);
    assert_eq!(
        read(),
        format!("sleep n1 {u}\nwake n1 {u}\n", u = fake.url(1))
    );
    c.stop().await;
}

#[tokio::test]
async fn powersave_remembers_asleep_nodes_across_restarts() {
    let fake = Fake::start(2, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("power.log");
    let mut cfg = fake.config(Policy::PowerSave, &dir.path().join("state"));
    cfg.idle_sleep_secs = 0;
    let rec = |what: &str| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("echo {what} \"$0\" >> {}", log.display()),
            "{node}".to_string(),
        ]
    };
    cfg.sleep_command = rec("sleep");
    cfg.wake_command = rec("wake");
    let c = Cluster::start(cfg.clone(), token()).await.unwrap();
    wait_nodes(&c, "both asleep", |ns| {
        ns.iter().all(|n| n.state == NodeState::Asleep)
    })
    .await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..100 {
        if read().lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    drop(c);
    // Restarted: still asleep (not polled into DOWN), capacity remembered, and a
    // launch wakes the first one that fits.
    cfg.idle_sleep_secs = 3600;
    let c = Cluster::start(cfg, token()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ns = c.nodes();
    assert!(ns.iter().all(|n| n.state == NodeState::Asleep), "{ns:#?}");
    assert_eq!(ns[1].capacity, two_slots());
    let r = c.launch(launch(&["i-w"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    wait_nodes(&c, "n0 up with i-w", |ns| ns[0].instances.len() == 1).await;
    let mut lines: Vec<String> = read().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, vec!["sleep n0", "sleep n1", "wake n0"]);
    c.stop().await;
}

#[tokio::test]
async fn restart_keeps_pending_placements_and_never_places_twice() {
    let fake = Fake::start(2, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fake.config(Policy::Greedy, dir.path());
    let c = cluster(cfg.clone()).await;
    // n0 does not take runs for now: the launch is placed and journaled, pending.
    fake.set_mode(0, Mode::RefuseRuns);
    let r = c.launch(launch(&["i-p"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    assert_eq!(fake.runs(0, "i-p"), 0);
    c.stop().await;
    drop(c);
    // Restart on the same state dir: still reserved on n0, and re-sent once n0 answers.
    fake.set_mode(0, Mode::Normal);
    let c = Cluster::start(cfg, token()).await.unwrap();
    let reserved = c.instances();
    assert_eq!(reserved.len(), 1);
    assert_eq!(
        (reserved[0].instance_id.as_str(), reserved[0].node.as_str()),
        ("i-p", "n0")
    );
    wait_nodes(&c, "i-p reported by n0", |ns| {
        ns[0].instances.len() == 1 && ns[0].reserved.cores == 0
    })
    .await;
    assert_eq!(fake.runs(0, "i-p"), 1, "re-sent once");
    // The same id launched again answers its node; no second placement.
    let r = c.launch(launch(&["i-p"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    assert_eq!(fake.runs(0, "i-p"), 1);
    assert_eq!(fake.counts(), vec![1, 0]);
    c.stop().await;
    drop(c);
    // Reported placements left the journal: a third start reserves nothing.
    let c = Cluster::start(fake.config(Policy::Greedy, dir.path()), token())
        .await
        .unwrap();
    assert!(c.nodes().iter().all(|n| n.reserved.cores == 0));
    c.stop().await;
}

#[tokio::test]
async fn registered_nodes_persist() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fake.config(Policy::Greedy, dir.path());
    cfg.nodes.clear();
    let c = Cluster::start(cfg.clone(), token()).await.unwrap();
    let reg = euca_compute_proto::RegisterNode {
        name: "joined".into(),
        url: fake.url(0),
    };
    assert_eq!(c.register(reg.clone()).await.unwrap().name, "joined");
    assert!(c
        .register(euca_compute_proto::RegisterNode {
            name: "x".into(),
            url: "ftp://nope".into()
        })
        .await
        .is_err());
    c.stop().await;
    drop(c);
    let c = Cluster::start(cfg, token()).await.unwrap();
    wait_nodes(&c, "joined polled", |ns| {
        ns.len() == 1 && ns[0].name == "joined" && ns[0].capacity.cores == 2
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn terminating_a_pending_launch_cancels_it() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fake.config(Policy::Greedy, dir.path());
    let c = cluster(cfg.clone()).await;
    fake.set_mode(0, Mode::RefuseRuns);
    c.launch(launch(&["i-c"], 1)).await.unwrap();
    assert_eq!(c.nodes()[0].reserved.cores, 1);
    let t = c.terminate("i-c").await.unwrap();
    assert_eq!((t.node.as_str(), t.report), ("n0", None));
    assert_eq!(c.nodes()[0].reserved.cores, 0, "capacity released");
    // The node comes back: the cancelled launch is not re-sent, now or after a restart.
    fake.set_mode(0, Mode::Normal);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.runs(0, "i-c"), 0);
    c.stop().await;
    drop(c);
    let c = cluster(cfg).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.runs(0, "i-c"), 0);
    assert!(c.instances().is_empty());
    let e = c.terminate("i-c").await.unwrap_err();
    assert_eq!(e.code(), codes::INSTANCE_NOT_FOUND);
    c.stop().await;
}

/// A stopped EBS-root instance started again on its node (same id, next
/// incarnation) while the node still reports the stopped run's tombstone: the
/// reservation stays until the node reports the new run, and the instance is
/// listed as that reservation, never as the old run's `terminated`.
#[tokio::test]
async fn a_restarted_instance_is_not_its_earlier_runs_tombstone() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    c.launch(launch(&["i-s"], 1)).await.unwrap();
    wait_nodes(&c, "i-s reported", |ns| {
        ns[0].instances.len() == 1 && ns[0].reserved.cores == 0
    })
    .await;
    c.terminate("i-s").await.unwrap();
    wait_nodes(&c, "i-s a tombstone", |ns| {
        ns[0].instances[0].state == euca_compute_proto::NodeInstanceState::Terminated
    })
    .await;
    // The start: the node does not take the run yet.
    fake.set_mode(0, Mode::RefuseRuns);
    let mut again = launch(&["i-s"], 1);
    again.instances[0].incarnation = 1;
    again.node = Some("n0".into());
    assert_eq!(c.launch(again).await.unwrap().placed[0].node, "n0");
    // Several polls answered with the tombstone: still reserved, listed unreported.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.nodes()[0].reserved.cores, 1, "the reservation stays");
    let listed: Vec<_> = c
        .instances()
        .into_iter()
        .filter(|p| p.instance_id == "i-s")
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].report.is_none(), "{listed:?}");
    // The node takes it: the new run is reported and the reservation goes.
    fake.set_mode(0, Mode::Normal);
    wait_nodes(&c, "i-s's second run reported", |ns| {
        ns[0].reserved.cores == 0
            && ns[0].instances.iter().any(|r| {
                r.incarnation == 1 && r.state == euca_compute_proto::NodeInstanceState::Running
            })
    })
    .await;
    assert_eq!(fake.runs(0, "i-s"), 2);
    c.stop().await;
}

/// POWERSAVE: a placement that wakes a node whose sleep command is still
/// running gets its wake after that command (not before, which the sleep would
/// undo), the node comes up with its instance, and the journal does not keep
/// it asleep (a restarted CC polls it).
#[tokio::test]
async fn powersave_wake_during_a_sleep_command_is_not_undone() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("power.log");
    let mut cfg = fake.config(Policy::PowerSave, &dir.path().join("state"));
    cfg.idle_sleep_secs = 0;
    let l = log.display();
    // The sleep command takes a while (and says when it starts); the wake is quick.
    cfg.sleep_command = vec![
        "sh".into(),
        "-c".into(),
        format!("echo sleep-start >> {l}; sleep 1.5; echo sleep >> {l}"),
    ];
    cfg.wake_command = vec!["sh".into(), "-c".into(), format!("echo wake >> {l}")];
    let c = Cluster::start(cfg.clone(), token()).await.unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..200 {
        if !read().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(), "sleep-start\n");
    assert_eq!(c.nodes()[0].state, NodeState::Asleep);
    // Its sleep command is running now; a launch needs the node.
    let r = c.launch(launch(&["i-1"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    for _ in 0..200 {
        if read().lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(), "sleep-start\nsleep\nwake\n", "the wake comes last");
    wait_nodes(&c, "n0 up with i-1", |ns| {
        ns[0].state == NodeState::Up && ns[0].instances.len() == 1
    })
    .await;
    assert_eq!(fake.runs(0, "i-1"), 1);
    c.stop().await;
    drop(c);
    // Restarted: the journal does not say asleep, so it is polled UP at once.
    cfg.idle_sleep_secs = 3600;
    let c = Cluster::start(cfg, token()).await.unwrap();
    wait_nodes(&c, "n0 polled up", |ns| {
        ns[0].state == NodeState::Up && ns[0].instances.len() == 1
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_node_is_pending_and_unplaceable_until_its_first_answered_poll() {
    let fake = Fake::start(1, two_slots()).await;
    fake.set_mode(0, Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fake.config(Policy::Greedy, dir.path());
    // It must stay unheard (not DOWN) for the whole check.
    cfg.down_after_missed = 1_000;
    let c = Cluster::start(cfg, token()).await.unwrap();
    // Polled (and unanswered) a few times.
    wait_nodes(&c, "a few polls sent", |_| fake.requests(0) >= 3).await;
    let ns = c.nodes();
    assert_eq!(ns[0].state, NodeState::Pending, "{ns:#?}");
    assert_eq!(ns[0].capacity.cores, 0);
    assert!(ns[0].last_seen.is_none());
    // Not placeable: by policy (no capacity known) nor pinned to it.
    assert!(matches!(
        c.launch(launch(&["i-1"], 1)).await,
        Err(CcError::InsufficientCapacity { .. })
    ));
    let mut pinned = launch(&["i-2"], 1);
    pinned.node = Some("n0".into());
    assert!(matches!(
        c.launch(pinned).await,
        Err(CcError::NodeUnavailable(_))
    ));
    assert_eq!(fake.counts(), vec![0]);
    // It answers: UP with its capacity, and launches land there.
    fake.set_mode(0, Mode::Normal);
    wait_nodes(&c, "n0 UP", |ns| {
        ns[0].state == NodeState::Up && ns[0].capacity.cores == 2
    })
    .await;
    let r = c.launch(launch(&["i-3"], 1)).await.unwrap();
    assert_eq!(r.placed[0].node, "n0");
    c.stop().await;
}

#[tokio::test]
async fn network_routes_answer_and_take_large_states() {
    let fake = Fake::start(1, two_slots()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(fake.config(Policy::Greedy, dir.path())).await;
    let (url, stop, served) = serve(&c).await;
    let mut cc = CcClient::new(&url, token());
    cc.timeout = Duration::from_secs(10);
    // Mode off (the default): nothing applied yet.
    let st = cc.network().await.unwrap();
    assert_eq!(st.config.mode, euca_compute_proto::net::NetMode::Off);
    assert_eq!(st.applied, None);
    // A state past the 4 MiB cap of other routes (6 MiB of metadata) is taken.
    let mut md = std::collections::BTreeMap::new();
    md.insert("big".to_string(), "x".repeat(6 << 20));
    let state = euca_compute_proto::net::NetworkState {
        groups: vec![],
        instances: vec![euca_compute_proto::net::InstanceNet {
            instance_id: "i-00000001".into(),
            account: "000000000001".into(),
            mac: "d0:0d:00:00:00:01".into(),
            group_id: None,
            private_ip: None,
            public_ip: None,
            metadata: md,
        }],
    };
    let st = cc.apply_network(&state).await.unwrap();
    assert_eq!(st.applied, Some(state.digest()));
    assert_eq!(cc.network().await.unwrap().applied, Some(state.digest()));
    // A bad state is refused with 400.
    let mut bad = state.clone();
    bad.instances[0].mac = "nope".into();
    match cc.apply_network(&bad).await.unwrap_err() {
        euca_compute_proto::ProtoError::Refused { status, .. } => assert_eq!(status, 400),
        e => panic!("unexpected {e}"),
    }
    let _ = stop.send(true);
    let _ = served.await;
    c.stop().await;
}
