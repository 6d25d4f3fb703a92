//! The NC API end to end: simulated nodes behind `NcApi` on a free loopback port,
//! driven by the CC's client (`NcClient`) and, for the edge cases a client never
//! sends, by raw HTTP/1.1 over TCP.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use euca_compute_proto::cc::CcClient;
use euca_compute_proto::nc::NcClient;
use euca_compute_proto::{
    codes, AttachSpec, CachedImage, InstanceSpec, NodeAttachState, NodeInstanceState, ProtoError,
    RegisterNode, Resources, RootDisk, VmType, VolumeExport,
};
use euca_imagecache::http::{Edge, Token};
use euca_nc::api::NcApi;
use euca_nc::register::{keep_registered, Joined};
use euca_nc::simulate::{SimConfig, SimNode};
use euca_nc::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Served {
    url: String,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn sim(name: &str, delay: Duration) -> Arc<dyn Node> {
    Arc::new(SimNode::new(SimConfig {
        name: name.into(),
        capacity: Resources {
            cores: 4,
            memory_mib: 4096,
            disk_gib: 50,
        },
        delay,
    }))
}

async fn serve(api: Arc<NcApi>) -> Served {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(api.serve(l, Edge::default(), rx));
    Served {
        url: format!("http://{addr}"),
        addr,
        stop,
        task,
    }
}

async fn one_node(delay: Duration) -> Served {
    serve(NcApi::new(sim("node-a", delay), Token::new(TOKEN).unwrap())).await
}

fn client(url: &str) -> NcClient {
    NcClient::new(url, Token::new(TOKEN).unwrap())
}

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        account: "123456789012".into(),
        reservation_id: "r-0000abcd".into(),
        vm_type: VmType {
            name: "m1.small".into(),
            cores: 1,
            memory_mib: 256,
            disk_gib: 5,
        },
        root: RootDisk::Image(CachedImage {
            installed_id: "ab".repeat(32),
            size: 1 << 20,
        }),
        kernel: None,
        ramdisk: None,
        mac: "d2:aa:00:00:00:01".into(),
        user_data: Some("aGVsbG8=".into()),
        public_key: None,
        volumes: vec![],
        nic: None,
        incarnation: 0,
    }
}

fn vol(id: &str) -> AttachSpec {
    AttachSpec {
        volume_id: id.into(),
        device: "/dev/sdf".into(),
        export: VolumeExport {
            uri: format!("nbd://127.0.0.1:10809/{id}"),
        },
    }
}

fn refused_code(e: &ProtoError) -> (u16, &str) {
    match e {
        ProtoError::Refused { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls the node until instance `id` is in `want` (bounded: 200 polls).
async fn wait_state(c: &NcClient, id: &str, want: NodeInstanceState) {
    for _ in 0..200 {
        let r = c.describe(Duration::from_secs(5)).await.unwrap();
        let i = r.instances.iter().find(|i| i.instance_id == id).unwrap();
        if i.state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} never became {want:?}");
}

async fn wait_volume(c: &NcClient, id: &str, vol: &str, want: NodeAttachState) {
    for _ in 0..200 {
        let r = c.describe(Duration::from_secs(5)).await.unwrap();
        let i = r.instances.iter().find(|i| i.instance_id == id).unwrap();
        let v = i.volumes.iter().find(|v| v.volume_id == vol).unwrap();
        if v.state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{vol} on {id} never became {want:?}");
}

#[tokio::test]
async fn run_is_idempotent_and_progresses_to_running() {
    let s = one_node(Duration::from_millis(100)).await;
    let c = client(&s.url);
    let r = c.run(&spec("i-00000001")).await.unwrap();
    assert_eq!(r.state, NodeInstanceState::Pending);
    assert_eq!(r.mac, "d2:aa:00:00:00:01");
    wait_state(&c, "i-00000001", NodeInstanceState::Running).await;

    // The same spec again: the same instance, as it is now (not a second one).
    let again = c.run(&spec("i-00000001")).await.unwrap();
    assert_eq!(again.state, NodeInstanceState::Running);
    assert_eq!(again.launched_at, r.launched_at);
    let report = c.describe(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.name, "node-a");
    assert_eq!(report.capacity.cores, 4);
    assert_eq!(report.instances.len(), 1);

    // Another spec under the same id: refused.
    let mut other = spec("i-00000001");
    other.mac = "d2:aa:00:00:00:02".into();
    let e = c.run(&other).await.unwrap_err();
    assert_eq!(refused_code(&e), (409, codes::INSTANCE_EXISTS));

    // The console of a running simulated guest shows the tiny guest's marker.
    let out = c.console("i-00000001").await.unwrap();
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD
        .decode(out.output)
        .unwrap();
    assert!(String::from_utf8_lossy(&text).contains("TG-BOOTED"));
    s.stop().await;
}

#[tokio::test]
async fn unknown_instances_are_404() {
    let s = one_node(Duration::ZERO).await;
    let c = client(&s.url);
    for e in [
        c.terminate("i-0000dead").await.unwrap_err(),
        c.reboot("i-0000dead").await.unwrap_err(),
    ] {
        assert_eq!(refused_code(&e), (404, codes::INSTANCE_NOT_FOUND));
    }
    let e = c.console("i-0000dead").await.unwrap_err();
    assert_eq!(refused_code(&e), (404, codes::INSTANCE_NOT_FOUND));
    let e = c.attach("i-0000dead", &vol("vol-1")).await.unwrap_err();
    assert_eq!(refused_code(&e), (404, codes::INSTANCE_NOT_FOUND));
    let e = c.detach("i-0000dead", "vol-1", false).await.unwrap_err();
    assert_eq!(refused_code(&e), (404, codes::INSTANCE_NOT_FOUND));
    s.stop().await;
}

#[tokio::test]
async fn attach_detach_and_terminate() {
    let s = one_node(Duration::from_millis(50)).await;
    let c = client(&s.url);
    c.run(&spec("i-00000002")).await.unwrap();
    wait_state(&c, "i-00000002", NodeInstanceState::Running).await;

    let v = c.attach("i-00000002", &vol("vol-00000001")).await.unwrap();
    assert_eq!(v.state, NodeAttachState::Attaching);
    assert_eq!(v.device, "/dev/sdf");
    wait_volume(&c, "i-00000002", "vol-00000001", NodeAttachState::Attached).await;
    // Attaching again is answered with the attachment as it is.
    let v = c.attach("i-00000002", &vol("vol-00000001")).await.unwrap();
    assert_eq!(v.state, NodeAttachState::Attached);

    // A volume that is not attached.
    let e = c
        .detach("i-00000002", "vol-0000beef", false)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), (404, codes::VOLUME_NOT_ATTACHED));

    let v = c.detach("i-00000002", "vol-00000001", false).await.unwrap();
    assert_eq!(v.state, NodeAttachState::Detaching);
    wait_volume(&c, "i-00000002", "vol-00000001", NodeAttachState::Detached).await;

    let t = c.terminate("i-00000002").await.unwrap();
    assert_eq!(t.state, NodeInstanceState::ShuttingDown);
    let reason = t.reason.unwrap();
    assert_eq!(reason.code, "Client.UserInitiatedShutdown");
    wait_state(&c, "i-00000002", NodeInstanceState::Terminated).await;
    // Still reported, and terminate again answers it as it is.
    let t = c.terminate("i-00000002").await.unwrap();
    assert_eq!(t.state, NodeInstanceState::Terminated);
    let report = c.describe(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].state, NodeInstanceState::Terminated);
    // No attach to a terminated instance; a run of the same id does not revive it.
    let e = c
        .attach("i-00000002", &vol("vol-00000002"))
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), (409, codes::INCORRECT_STATE));
    let r = c.run(&spec("i-00000002")).await.unwrap();
    assert_eq!(r.state, NodeInstanceState::Terminated);
    // A new spec under the ended id (a start after a stop) launches it again.
    let mut again = spec("i-00000002");
    again.mac = "d2:00:00:00:00:99".into();
    let r = c.run(&again).await.unwrap();
    assert_eq!(r.state, NodeInstanceState::Pending);
    s.stop().await;
}

/// Sends `head` (and `body_prefix`) over TCP and reads the answer until the server
/// closes or answers a full head; bounded by a 10 s read timeout.
async fn raw(addr: std::net::SocketAddr, head: &str, body_prefix: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    if !body_prefix.is_empty() {
        s.write_all(body_prefix).await.unwrap();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the server did not answer: it waited for the body")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(h) = text.find("\r\n\r\n") {
            // Whole head and a body of the announced length: done.
            let len = text[..h]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= h + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn wrong_or_missing_token_is_403_before_the_body() {
    let s = one_node(Duration::ZERO).await;
    // A 1 GiB body announced, 1 KiB sent: the answer comes without the rest.
    for auth in ["Authorization: Bearer wrong-token-wrong-token\r\n", ""] {
        let head = format!(
            "PUT /v1/instances/i-00000003 HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        );
        let answer = raw(s.addr, &head, &[b'{'; 1024]).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("\"Forbidden\""), "{answer}");
    }
    // Through the client too: a wrong token is refused, nothing runs.
    let bad = NcClient::new(
        &s.url,
        Token::new("another-token-of-enough-length").unwrap(),
    );
    let e = bad.run(&spec("i-00000003")).await.unwrap_err();
    assert_eq!(refused_code(&e).0, 403);
    let e = bad.describe(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(refused_code(&e).0, 403);
    let r = client(&s.url)
        .describe(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.instances.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn oversized_or_bad_bodies_are_refused() {
    let s = one_node(Duration::ZERO).await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    // Announced too large: refused unread.
    let head = format!(
        "PUT /v1/instances/i-00000004 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1073741824\r\n\r\n"
    );
    let answer = raw(s.addr, &head, b"{").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"TooLarge\""), "{answer}");
    // Chunked and growing past the cap: refused at the cap.
    let head = format!(
        "PUT /v1/instances/i-00000004 HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..(euca_nc::api::MAX_BODY / 4096 + 2) {
        body.extend_from_slice(b"1000\r\n");
        body.extend_from_slice(&[b' '; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    let answer = raw(s.addr, &head, &body).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Not JSON of a spec: 400; a spec for another id than the path: 400.
    let head = format!(
        "PUT /v1/instances/i-00000004 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\n\r\n"
    );
    let answer = raw(s.addr, &head, b"{}").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let other = serde_json::to_vec(&spec("i-00000005")).unwrap();
    let head = format!(
        "PUT /v1/instances/i-00000004 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
        other.len()
    );
    let answer = raw(s.addr, &head, &other).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A bad force value on detach: 400.
    let head = format!(
        "DELETE /v1/instances/i-00000004/volumes/vol-1?force=maybe HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
    );
    let answer = raw(s.addr, &head, b"").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Unknown route: 404 in the JSON shape.
    let head = format!("GET /v2/whatever HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let answer = raw(s.addr, &head, b"").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("\"NotFound\""), "{answer}");
    let r = client(&s.url)
        .describe(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.instances.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_thousand_simulated_nodes_on_one_listener() {
    let nodes: Vec<Arc<dyn Node>> = (0..1000)
        .map(|k| sim(&format!("sim-{k}"), Duration::ZERO))
        .collect();
    let api = NcApi::simulated(nodes, Token::new(TOKEN).unwrap());
    assert_eq!(api.prefix(999), "/sim/999");
    let s = serve(api).await;
    let c999 = client(&format!("{}/sim/999", s.url));
    let r = c999.describe(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.name, "sim-999");
    c999.run(&spec("i-00000999")).await.unwrap();
    wait_state(&c999, "i-00000999", NodeInstanceState::Running).await;
    // Node 998 does not have it; node 1000 does not exist; the root is no node.
    let c998 = client(&format!("{}/sim/998", s.url));
    assert!(c998
        .describe(Duration::from_secs(5))
        .await
        .unwrap()
        .instances
        .is_empty());
    let e = c998.terminate("i-00000999").await.unwrap_err();
    assert_eq!(refused_code(&e), (404, codes::INSTANCE_NOT_FOUND));
    for base in [format!("{}/sim/1000", s.url), s.url.clone()] {
        let e = client(&base)
            .describe(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(refused_code(&e).0, 404, "{base}");
    }
    s.stop().await;
}

/// A CC that records registrations (`POST /v1/nodes`).
async fn fake_cc(
    listener: tokio::net::TcpListener,
    seen: Arc<Mutex<Vec<RegisterNode>>>,
    mut stop: watch::Receiver<bool>,
) {
    use http_body_util::BodyExt;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.wait_for(|v| *v) => return,
        };
        let Ok((stream, _)) = conn else { continue };
        let seen = seen.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/nodes");
                        let body = req.into_body().collect().await?.to_bytes();
                        let n: RegisterNode = serde_json::from_slice(&body).unwrap();
                        let view = serde_json::json!({
                            "name": n.name, "url": n.url, "state": "UP",
                            "capacity": {"cores":0,"memory_mib":0,"disk_gib":0},
                            "limit": {"cores":0,"memory_mib":0,"disk_gib":0},
                            "free": {"cores":0,"memory_mib":0,"disk_gib":0},
                            "reserved": {"cores":0,"memory_mib":0,"disk_gib":0},
                            "instances": []
                        });
                        seen.lock().unwrap().push(n);
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(view.to_string()),
                        )))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::test]
async fn registers_once_the_cc_answers() {
    // A port nothing listens on yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cc = CcClient::new(
        &format!("http://127.0.0.1:{port}"),
        Token::new(TOKEN).unwrap(),
    );
    let nodes: Vec<RegisterNode> = (0..3)
        .map(|k| RegisterNode {
            name: format!("n1-sim{k}"),
            url: format!("http://127.0.0.1:9/sim/{k}"),
        })
        .collect();
    let (state_tx, mut state_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(keep_registered(
        cc,
        nodes.clone(),
        Duration::from_secs(30),
        Some(state_tx),
        stop_rx.clone(),
    ));
    let first = tokio::time::timeout(Duration::from_secs(20), state_rx.wait_for(|s| s.is_some()))
        .await
        .expect("no first round")
        .unwrap()
        .clone();
    assert!(matches!(first, Some(Joined::Unreachable(_))), "{first:?}");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let cc_task = tokio::spawn(fake_cc(l, seen.clone(), stop_rx));
    tokio::time::timeout(
        Duration::from_secs(30),
        state_rx.wait_for(|s| *s == Some(Joined::Registered)),
    )
    .await
    .expect("never registered")
    .unwrap();
    let mut got: Vec<RegisterNode> = seen.lock().unwrap().clone();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, nodes);
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), cc_task).await;
}
