//! The CC's router namespace end to end (root + netns; skipped otherwise): fake
//! instances are namespaces with a veth (or a VXLAN segment) into the router,
//! take their address by DHCP (busybox udhcpc) from the router's dnsmasq, and are
//! checked for group isolation, rule changes within a second, public addresses
//! and their moves, SNAT, the metadata service and anti-spoofing.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use euca_cc::net::{delete_router, Network};
use euca_cc::netconfig::NetConfig;
use euca_compute_proto::net::{GroupNet, IngressRule, InstanceNet, NetMode, NetworkState};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root (network namespaces)");
        return false;
    }
    let tools = [
        ("dnsmasq", "--version"),
        ("nft", "--version"),
        ("busybox", "true"),
        ("curl", "--version"),
        ("tcpdump", "--version"),
    ];
    for (tool, arg) in tools {
        let ok = std::process::Command::new(tool)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            eprintln!("SKIP: needs {tool}");
            return false;
        }
    }
    true
}

/// Runs `sh -c CMD`; (success, stdout).
async fn sh(cmd: &str) -> (bool, String) {
    let out = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("sh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn must(cmd: &str) -> String {
    let out = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .await
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces and processes made by a test, removed when it ends (even failing).
struct Cleanup {
    netns: Vec<String>,
    pids: Vec<u32>,
    state_dir: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.pids {
            // SAFETY: kill with a pid this test started.
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        let router = euca_vnet::router::router_netns(&self.state_dir);
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("for p in $(ip netns pids {router} 2>/dev/null); do kill $p; done"),
            ])
            .status();
        for n in self.netns.iter().chain(std::iter::once(&router)) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A test's namespaces (`ccnet-<pid>-<suffix>`, made by the test), state dir and
/// DHCP client script; all removed when it is dropped.
struct Bed {
    clean: Cleanup,
    dir: tempfile::TempDir,
    script: std::path::PathBuf,
}

impl Bed {
    async fn new<const N: usize>(suffixes: [&str; N]) -> (Bed, [String; N]) {
        let tag = format!("ccnet-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let names = suffixes.map(|s| format!("{tag}-{s}"));
        let script = dir.path().join("udhcpc.sh");
        std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
        must(&format!("chmod +x {}", script.display())).await;
        let clean = Cleanup {
            netns: names.to_vec(),
            pids: vec![],
            state_dir: dir.path().to_path_buf(),
        };
        (Bed { clean, dir, script }, names)
    }

    async fn start(&self, cfg: &NetConfig) -> Arc<Network> {
        Network::start(cfg, self.dir.path(), user_data())
            .await
            .unwrap()
    }

    /// Stops the CC's network and deletes its router namespace.
    async fn finish(self, net: Arc<Network>) {
        net.stop().await;
        delete_router(self.dir.path()).await.unwrap();
    }
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    [ -n "$router" ] && ip route replace default via "$router"
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    ;;
esac
exit 0
"#;

fn inst(id: &str, mac: &str, group: &str, ip: &str, public: Option<&str>) -> InstanceNet {
    let mut md = BTreeMap::new();
    md.insert("instance-id".to_string(), id.to_string());
    md.insert("local-ipv4".to_string(), ip.to_string());
    md.insert("public-keys/".to_string(), "0=mykey".to_string());
    md.insert(
        "public-keys/0/openssh-key".to_string(),
        format!("ssh-ed25519 AAAA {id}"),
    );
    InstanceNet {
        instance_id: id.into(),
        account: "000000000001".into(),
        mac: mac.into(),
        group_id: Some(group.into()),
        private_ip: Some(ip.parse().unwrap()),
        public_ip: public.map(|p| p.parse().unwrap()),
        metadata: md,
    }
}

fn rule(proto: &str, from: i32, to: i32, cidrs: &[&str], groups: &[&str]) -> IngressRule {
    IngressRule {
        protocol: proto.into(),
        from_port: from,
        to_port: to,
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn user_data() -> euca_cc::metadata::UserData {
    Arc::new(|id: &str| {
        Some(base64::engine::general_purpose::STANDARD.encode(format!("#!/bin/sh\necho {id}\n")))
    })
}

/// A fake instance: namespace `ns`, `eth0` with `mac`, its peer `host_if` left in
/// namespace `host_ns` enslaved to `bridge`.
async fn plug(ns: &str, mac: &str, host_ns: &str, host_if: &str, bridge: &str) {
    must(&format!("ip netns add {ns}")).await;
    must(&format!(
        "ip -n {ns} link set lo up && ip -n {ns} link add eth0 address {mac} type veth peer name {host_if} netns {host_ns} && ip -n {ns} link set eth0 up && ip -n {host_ns} link set {host_if} master {bridge} up"
    ))
    .await;
}

async fn dhcp(ns: &str, script: &Path) -> Option<Ipv4Addr> {
    let (ok, _) = sh(&format!(
        "ip netns exec {ns} busybox udhcpc -i eth0 -n -q -t 8 -T 1 -O staticroutes -s {}",
        script.display()
    ))
    .await;
    if !ok {
        return None;
    }
    let out = must(&format!("ip -n {ns} -4 -o addr show dev eth0")).await;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

async fn ping(ns: &str, to: &str) -> bool {
    sh(&format!("ip netns exec {ns} busybox ping -c1 -W1 {to}"))
        .await
        .0
}

async fn wget(ns: &str, url: &str, headers: &[&str]) -> Option<String> {
    let h: String = headers.iter().map(|h| format!(" -H '{h}'")).collect();
    // curl: busybox-static's wget crashes in its resolver on this system.
    let (ok, out) = sh(&format!("ip netns exec {ns} curl -sf -m 1{h} {url}")).await;
    ok.then_some(out)
}

/// Polls `check` until it holds or `within` passes; how long it took.
async fn within<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spawn_bg(cmd: &str, pids: &mut Vec<u32>) {
    let child = tokio::process::Command::new("sh")
        .args(["-c", &format!("exec {cmd}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    pids.push(child.id().unwrap_or(0));
    // The handle is dropped without kill_on_drop: Cleanup kills it by pid.
    drop(child);
}

/// Starts `tcpdump` on `dev` in `ns`, writing what `filter` matches to `file`.
async fn capture(ns: &str, dev: &str, filter: &str, file: &Path) -> tokio::process::Child {
    let child = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "--immediate-mode",
            "-Z",
            "root",
        ])
        .args([
            "-nn",
            "-U",
            "-i",
            dev,
            "-w",
            &file.to_string_lossy(),
            filter,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    child
}

/// Stops the capture (SIGINT, so it flushes) and returns it as text.
async fn captured(mut child: tokio::process::Child, file: &Path) -> String {
    if let Some(pid) = child.id() {
        // SAFETY: SIGINT to the tcpdump this test started.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    }
    let _ = child.wait().await;
    must(&format!("tcpdump -nn -r {} 2>/dev/null", file.display())).await
}

async fn apply_timed(net: &Network, s: &NetworkState) {
    let t = Instant::now();
    net.apply(s.clone()).await.expect("apply");
    let took = t.elapsed();
    eprintln!("apply of {} instances took {took:?}", s.instances.len());
    assert!(took < Duration::from_millis(900), "apply took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managed_novlan_router_end_to_end() {
    if !root() {
        return;
    }
    let (mut bed, [outer, a1, a2, b1]) = Bed::new(["o", "a1", "a2", "b1"]).await;
    must(&format!(
        "ip netns add {outer} && ip -n {outer} link set lo up"
    ))
    .await;

    let cfg = NetConfig {
        mode: NetMode::ManagedNovlan,
        public_cidr: Some("100.64.201.0/24".parse().unwrap()),
        outer_netns: Some(outer.clone()),
        ..NetConfig::default()
    };
    let net = bed.start(&cfg).await;
    let router = net.router_netns().unwrap().to_string();
    assert_eq!(net.status().applied, None);
    assert_eq!(net.status().config.mode, NetMode::ManagedNovlan);

    let sg_a = GroupNet {
        group_id: "sg-a".into(),
        account: "000000000001".into(),
        name: "a".into(),
        index: 0,
        // The public side may ping and fetch port 80 (public IP checks).
        rules: vec![
            rule("icmp", -1, -1, &["100.64.0.0/10"], &[]),
            rule("tcp", 80, 80, &["100.64.0.0/10"], &[]),
        ],
    };
    let sg_b = GroupNet {
        group_id: "sg-b".into(),
        account: "000000000001".into(),
        name: "b".into(),
        index: 1,
        rules: vec![],
    };
    let mut state = NetworkState {
        groups: vec![sg_a.clone(), sg_b.clone()],
        instances: vec![
            inst(
                "i-000000a1",
                "52:54:00:cc:00:01",
                "sg-a",
                "10.128.0.2",
                Some("100.64.201.10"),
            ),
            inst(
                "i-000000a2",
                "52:54:00:cc:00:02",
                "sg-a",
                "10.128.0.3",
                None,
            ),
            inst(
                "i-000000b1",
                "52:54:00:cc:00:03",
                "sg-b",
                "10.128.0.34",
                None,
            ),
        ],
    };
    apply_timed(&net, &state).await;
    assert_eq!(net.status().applied, Some(state.digest()));

    // Plug the three fake instances into the router's br0 (one machine).
    for (ns, mac, hif) in [
        (&a1, "52:54:00:cc:00:01", "ccnetv1"),
        (&a2, "52:54:00:cc:00:02", "ccnetv2"),
        (&b1, "52:54:00:cc:00:03", "ccnetv3"),
    ] {
        plug(ns, mac, &router, hif, "br0").await;
    }
    // Leases are the state's addresses.
    for (ns, want) in [
        (&a1, "10.128.0.2"),
        (&a2, "10.128.0.3"),
        (&b1, "10.128.0.34"),
    ] {
        let got = dhcp(ns, &bed.script).await;
        assert_eq!(got, Some(want.parse().unwrap()), "{ns}'s DHCP lease");
    }

    // Same group: reachable; other group: not.
    if !ping(&a1, "10.128.0.3").await {
        let d = sh(&format!("ip netns exec {router} sysctl net.bridge.bridge-nf-call-iptables; ip -n {a1} addr; ip -n {a1} route; ip -n {a2} addr; ip -n {a1} neigh; ip -n {router} link; ip netns exec {router} nft list ruleset")).await;
        panic!("same group ping: {}", d.1);
    }
    assert!(
        !ping(&a1, "10.128.0.34").await,
        "other group must be blocked"
    );
    assert!(
        !ping(&b1, "10.128.0.2").await,
        "other group must be blocked"
    );

    // A web server in b1; sg-b admits tcp/8080 from sg-a: reachable within 1 s,
    // then blocked again within 1 s of the revoke.
    let www = bed.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("who"), "b1\n").unwrap();
    spawn_bg(
        &format!(
            "ip netns exec {b1} busybox httpd -f -p 8080 -h {}",
            www.display()
        ),
        &mut bed.clean.pids,
    )
    .await;
    let b1_url = "http://10.128.0.34:8080/who";
    assert!(
        wget(&a1, b1_url, &[]).await.is_none(),
        "blocked before the rule"
    );
    state.groups[1].rules = vec![rule("tcp", 8080, 8080, &[], &["sg-a"])];
    apply_timed(&net, &state).await;
    let t = within(Duration::from_secs(1), || async {
        wget(&a1, b1_url, &[]).await.as_deref() == Some("b1\n")
    })
    .await;
    if t.is_none() {
        let d = sh(&format!("ip netns exec {a1} curl -sS -m 1 {b1_url} 2>&1; ip netns exec {b1} curl -sS -m 1 http://127.0.0.1:8080/who 2>&1; ip netns exec {router} nft list chain ip euca group1")).await;
        panic!("authorize by source group took over 1 s: {}", d.1);
    }
    // Only tcp/8080 was opened: ping stays blocked.
    assert!(!ping(&a1, "10.128.0.34").await);
    state.groups[1].rules = vec![];
    apply_timed(&net, &state).await;
    let t = within(Duration::from_secs(1), || async {
        wget(&a1, b1_url, &[]).await.is_none()
    })
    .await;
    assert!(t.is_some(), "revoke took over 1 s");

    // Public address: reachable from the CC's side on port 80, moves with the state.
    for (ns, who) in [(&a1, "a1"), (&a2, "a2")] {
        let d = bed.dir.path().join(format!("www-{who}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("who"), format!("{who}\n")).unwrap();
        spawn_bg(
            &format!(
                "ip netns exec {ns} busybox httpd -f -p 80 -h {}",
                d.display()
            ),
            &mut bed.clean.pids,
        )
        .await;
    }
    let pub_url = "http://100.64.201.10/who";
    let got = within(Duration::from_secs(2), || async {
        wget(&outer, pub_url, &[]).await.as_deref() == Some("a1\n")
    })
    .await;
    assert!(got.is_some(), "public IP reaches a1");
    state.instances[0].public_ip = None;
    state.instances[1].public_ip = Some("100.64.201.10".parse().unwrap());
    apply_timed(&net, &state).await;
    let moved = within(Duration::from_secs(1), || async {
        wget(&outer, pub_url, &[]).await.as_deref() == Some("a2\n")
    })
    .await;
    assert!(moved.is_some(), "public IP moved to a2");

    // Egress: a2 leaves as its public address, b1 (none) as the router's.
    let cap = bed.dir.path().join("egress.pcap");
    let outer_if = format!("er{}", router.trim_start_matches("euca-"));
    let dump = capture(&outer, &outer_if, "icmp", &cap).await;
    assert!(ping(&a2, "100.64.201.1").await, "a2 reaches the CC side");
    assert!(ping(&b1, "100.64.201.1").await, "b1 reaches the CC side");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = captured(dump, &cap).await;
    assert!(
        seen.contains("100.64.201.10 > 100.64.201.1: ICMP echo request"),
        "a2 SNAT'd to its public IP: {seen}"
    );
    assert!(
        seen.contains("100.64.201.2 > 100.64.201.1: ICMP echo request"),
        "b1 masqueraded: {seen}"
    );
    assert!(
        !seen.contains("10.128."),
        "no private address leaves: {seen}"
    );

    // Metadata: each instance sees itself, whatever headers it forges.
    let md = "http://169.254.169.254/latest/meta-data/instance-id";
    for (ns, id) in [
        (&a1, "i-000000a1"),
        (&a2, "i-000000a2"),
        (&b1, "i-000000b1"),
    ] {
        assert_eq!(wget(ns, md, &[]).await.as_deref(), Some(id), "{ns}");
        let forged = wget(
            ns,
            md,
            &[
                "X-Forwarded-For: 10.128.0.3",
                "Host: 10.128.0.3",
                "X-Real-IP: 10.128.0.3",
            ],
        )
        .await;
        assert_eq!(forged.as_deref(), Some(id), "{ns} with forged headers");
    }
    let ud = wget(&a1, "http://169.254.169.254/latest/user-data", &[]).await;
    assert_eq!(ud.as_deref(), Some("#!/bin/sh\necho i-000000a1\n"));
    let keys = wget(
        &a1,
        "http://169.254.169.254/latest/meta-data/public-keys/",
        &[],
    )
    .await;
    assert_eq!(keys.as_deref(), Some("0=mykey"));

    // IMDSv2: a token for a1 works for a1, not for a2; a wrong one is refused;
    // a PUT through a proxy (X-Forwarded-For) gets none.
    let put = |ns: String, extra: &'static str| async move {
        sh(&format!(
            "ip netns exec {ns} curl -si -m 1 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {extra} http://169.254.169.254/latest/api/token"
        ))
        .await
        .1
    };
    let reply = put(a1.clone(), "").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let token = reply.rsplit("\r\n\r\n").next().unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "{reply}");
    let hdr = format!("X-aws-ec2-metadata-token: {token}");
    assert_eq!(wget(&a1, md, &[&hdr]).await.as_deref(), Some("i-000000a1"));
    assert!(
        wget(&a2, md, &[&hdr]).await.is_none(),
        "a1's token is not a2's"
    );
    assert!(wget(&a1, md, &["X-aws-ec2-metadata-token: nope"])
        .await
        .is_none());
    let proxied = put(a1.clone(), "-H 'X-Forwarded-For: 1.2.3.4'").await;
    assert!(proxied.starts_with("HTTP/1.1 403"), "{proxied}");
    // A token expires with its TTL.
    let (_, short) = sh(&format!(
        "ip netns exec {a1} curl -sf -m 1 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 1' http://169.254.169.254/latest/api/token"
    ))
    .await;
    let hdr = format!("X-aws-ec2-metadata-token: {}", short.trim());
    assert_eq!(wget(&a1, md, &[&hdr]).await.as_deref(), Some("i-000000a1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        wget(&a1, md, &[&hdr]).await.is_none(),
        "expired token refused"
    );

    // Spoofing: a1 takes a2's address on its own MAC and gets nothing.
    must(&format!(
        "ip -n {a1} addr flush dev eth0 && ip -n {a1} addr add 10.128.0.3/27 dev eth0 && ip -n {a1} route replace default via 10.128.0.1"
    ))
    .await;
    assert!(
        wget(&a1, md, &[]).await.is_none(),
        "spoofed source got metadata"
    );
    assert!(
        !ping(&a1, "100.64.201.1").await,
        "spoofed source left the router"
    );
    // Its ARP under a2's address did not redirect a2's traffic to it.
    let neigh = must(&format!("ip -n {router} neigh show 10.128.0.3")).await;
    assert!(!neigh.contains("52:54:00:cc:00:01"), "ARP spoofed: {neigh}");
    must(&format!(
        "ip -n {a1} addr flush dev eth0 && ip -n {a1} addr add 10.128.0.2/27 dev eth0 && ip -n {a1} route replace default via 10.128.0.1"
    ))
    .await;

    // A restarted CC keeps the network (journaled state re-applied), and says
    // nothing is applied yet so the CLC re-sends.
    net.stop().await;
    drop(net);
    let net = bed.start(&cfg).await;
    assert_eq!(net.status().applied, None);
    assert_eq!(
        wget(&a2, md, &[]).await.as_deref(),
        Some("i-000000a2"),
        "metadata after a CC restart"
    );
    assert!(ping(&a2, "100.64.201.1").await, "routed after a CC restart");
    net.stop().await;
    delete_router(bed.dir.path()).await.unwrap();
    assert!(!Path::new("/run/netns").join(&router).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn managed_vxlan_segments_per_group() {
    if !root() {
        return;
    }
    let (bed, [outer, node, a1, b1]) = Bed::new(["vo", "vn", "va1", "vb1"]).await;
    // The underlay: a veth between the CC's namespace and a "node".
    must(&format!(
        "ip netns add {outer} && ip netns add {node} && ip -n {outer} link set lo up && ip -n {node} link set lo up \
         && ip -n {outer} link add under0 type veth peer name eth0 netns {node} \
         && ip -n {outer} addr add 192.168.77.1/24 dev under0 && ip -n {outer} link set under0 up \
         && ip -n {node} addr add 192.168.77.2/24 dev eth0 && ip -n {node} link set eth0 up"
    ))
    .await;
    // The node's side of each group's segment (what the NC does per VNI).
    for vni in [1000, 1001] {
        must(&format!(
            "ip -n {node} link add nb{vni} type bridge && ip -n {node} link set nb{vni} up \
             && ip -n {node} link add vx{vni} type vxlan id {vni} group 239.35.0.1 dstport 4789 dev eth0 \
             && ip -n {node} link set vx{vni} master nb{vni} up"
        ))
        .await;
    }
    let cfg = NetConfig {
        mode: NetMode::Managed,
        public_cidr: Some("100.64.202.0/24".parse().unwrap()),
        underlay: Some("under0".into()),
        outer_netns: Some(outer.clone()),
        ..NetConfig::default()
    };
    let net = bed.start(&cfg).await;
    assert_eq!(net.status().config.vni_base, 1000);
    let state = NetworkState {
        groups: vec![
            GroupNet {
                group_id: "sg-a".into(),
                account: "000000000001".into(),
                name: "a".into(),
                index: 0,
                rules: vec![],
            },
            GroupNet {
                group_id: "sg-b".into(),
                account: "000000000001".into(),
                name: "b".into(),
                index: 1,
                rules: vec![],
            },
        ],
        instances: vec![
            inst(
                "i-0000vxa1",
                "52:54:00:cd:00:01",
                "sg-a",
                "10.128.0.2",
                None,
            ),
            inst(
                "i-0000vxb1",
                "52:54:00:cd:00:02",
                "sg-b",
                "10.128.0.34",
                None,
            ),
        ],
    };
    apply_timed(&net, &state).await;
    plug(&a1, "52:54:00:cd:00:01", &node, "ccnetva", "nb1000").await;
    plug(&b1, "52:54:00:cd:00:02", &node, "ccnetvb", "nb1001").await;

    let cap = bed.dir.path().join("vxlan.pcap");
    let dump = capture(&node, "eth0", "udp port 4789", &cap).await;
    assert_eq!(
        dhcp(&a1, &bed.script).await,
        Some("10.128.0.2".parse().unwrap())
    );
    assert_eq!(
        dhcp(&b1, &bed.script).await,
        Some("10.128.0.34".parse().unwrap())
    );
    let md = "http://169.254.169.254/latest/meta-data/instance-id";
    assert_eq!(wget(&a1, md, &[]).await.as_deref(), Some("i-0000vxa1"));
    assert_eq!(wget(&b1, md, &[]).await.as_deref(), Some("i-0000vxb1"));
    assert!(!ping(&a1, "10.128.0.34").await, "other group blocked");
    let seen = captured(dump, &cap).await;
    assert!(seen.contains("vni 1000"), "group a on VNI 1000: {seen}");
    assert!(seen.contains("vni 1001"), "group b on VNI 1001: {seen}");

    // A dnsmasq that dies is restarted (and serves again).
    let pid_file = bed.dir.path().join("dnsmasq.pid");
    let old = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    must(&format!("kill -9 {old}")).await;
    let back = within(Duration::from_secs(4), || {
        let (pid_file, old) = (pid_file.clone(), old.clone());
        async move {
            let now = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let now = now.trim();
            !now.is_empty() && now != old && Path::new("/proc").join(now).exists()
        }
    })
    .await;
    assert!(back.is_some(), "dnsmasq restarted after it died");
    must(&format!("ip -n {b1} addr flush dev eth0")).await;
    assert_eq!(
        dhcp(&b1, &bed.script).await,
        Some("10.128.0.34".parse().unwrap())
    );

    bed.finish(net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_mode_dhcp_through_a_private_bridge() {
    if !root() {
        return;
    }
    let (bed, [outer, i1]) = Bed::new(["so", "si1"]).await;
    // The CC's namespace has the LAN bridge the nodes' instances reach.
    must(&format!(
        "ip netns add {outer} && ip -n {outer} link set lo up \
         && ip -n {outer} link add lanbr type bridge && ip -n {outer} link set lanbr up"
    ))
    .await;
    let cfg = NetConfig {
        mode: NetMode::Static,
        public_cidr: Some("100.64.203.0/24".parse().unwrap()),
        private_bridge: Some("lanbr".into()),
        static_subnet: Some("192.168.50.0/24".parse().unwrap()),
        static_server_ip: Some("192.168.50.1".parse().unwrap()),
        static_router: Some("192.168.50.254".parse().unwrap()),
        static_ips: vec!["192.168.50.10-192.168.50.20".into()],
        outer_netns: Some(outer.clone()),
        ..NetConfig::default()
    };
    let net = bed.start(&cfg).await;
    let c = net.status().config;
    assert_eq!(c.mode, NetMode::Static);
    assert_eq!(c.static_ips.len(), 11);
    let mut i = inst(
        "i-000000s1",
        "52:54:00:ce:00:01",
        "-",
        "192.168.50.12",
        None,
    );
    i.group_id = None;
    let state = NetworkState {
        groups: vec![],
        instances: vec![i],
    };
    apply_timed(&net, &state).await;
    plug(&i1, "52:54:00:ce:00:01", &outer, "ccnets1", "lanbr").await;
    assert_eq!(
        dhcp(&i1, &bed.script).await,
        Some("192.168.50.12".parse().unwrap())
    );
    let routes = must(&format!("ip -n {i1} route")).await;
    assert!(
        routes.contains("default via 192.168.50.254"),
        "static_router handed out: {routes}"
    );
    // Option 121: the metadata service through the router's LAN address, which
    // answers the instance about itself.
    assert!(
        routes.contains("169.254.169.254 via 192.168.50.1"),
        "the metadata route handed out: {routes}"
    );
    let md = "http://169.254.169.254/latest/meta-data/instance-id";
    assert_eq!(wget(&i1, md, &[]).await.as_deref(), Some("i-000000s1"));
    // A LAN host with the instance's address but not its MAC (the router has
    // forgotten the instance's): nothing.
    let router = euca_vnet::router::router_netns(bed.dir.path());
    must(&format!(
        "ip -n {i1} link set eth0 address 52:54:00:ce:00:77 && ip -n {i1} neigh flush all \
         && ip -n {router} neigh flush all"
    ))
    .await;
    assert_eq!(wget(&i1, md, &[]).await, None);
    must(&format!(
        "ip -n {i1} link set eth0 address 52:54:00:ce:00:01"
    ))
    .await;
    assert_eq!(wget(&i1, md, &[]).await.as_deref(), Some("i-000000s1"));
    // An unknown MAC gets no lease (static leases only).
    must(&format!(
        "ip -n {i1} addr flush dev eth0 && ip -n {i1} link set eth0 address 52:54:00:ce:00:99"
    ))
    .await;
    assert_eq!(dhcp(&i1, &bed.script).await, None);
    // The first instance ends and the CLC gives its address to a new MAC: dnsmasq
    // still held a lease of it for the old MAC and refused it ("leased to …")
    // until a pair that goes away restarted it without its leases.
    let mut j = inst(
        "i-000000s2",
        "52:54:00:ce:00:99",
        "-",
        "192.168.50.12",
        None,
    );
    j.group_id = None;
    let state = NetworkState {
        groups: vec![],
        instances: vec![j],
    };
    apply_timed(&net, &state).await;
    assert_eq!(
        dhcp(&i1, &bed.script).await,
        Some("192.168.50.12".parse().unwrap()),
        "an address given to another MAC is leased to it"
    );
    bed.finish(net).await;
}

#[tokio::test]
async fn off_mode_accepts_the_state_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let net = Network::start(&NetConfig::default(), dir.path(), user_data())
        .await
        .unwrap();
    assert!(net.router_netns().is_none(), "no router in mode off");
    assert_eq!(net.status().config.mode, NetMode::Off);
    let state = NetworkState {
        groups: vec![],
        instances: vec![inst(
            "i-00000001",
            "52:54:00:00:00:01",
            "sg-a",
            "10.128.0.2",
            None,
        )],
    };
    let st = net.apply(state.clone()).await.unwrap();
    assert_eq!(st.applied, Some(state.digest()));
    // Journaled: a restart reads it back (and reports nothing applied yet).
    let saved = std::fs::read(dir.path().join(euca_cc::net::STATE_FILE)).unwrap();
    let back: NetworkState = serde_json::from_slice(&saved).unwrap();
    assert_eq!(back, state);
    // A MAC that is not one, or an address claimed twice: 400, nothing kept.
    let mut bad = state.clone();
    bad.instances[0].mac = "52:54:00:00:00".into();
    let e = net.apply(bad).await.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    let mut twice = state.clone();
    let mut other = twice.instances[0].clone();
    other.mac = "52:54:00:00:00:02".into();
    twice.instances.push(other);
    assert_eq!(net.apply(twice).await.unwrap_err().status(), 400);
    assert_eq!(net.status().applied, Some(state.digest()));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_change_in_a_large_cluster_applies_within_a_second() {
    if !root() {
        return;
    }
    let (bed, [outer]) = Bed::new(["lo"]).await;
    must(&format!("ip netns add {outer}")).await;
    let cfg = NetConfig {
        mode: NetMode::ManagedNovlan,
        public_cidr: Some("100.64.204.0/24".parse().unwrap()),
        outer_netns: Some(outer.clone()),
        ..NetConfig::default()
    };
    let net = bed.start(&cfg).await;
    // 200 groups of 10 instances, every group admitting the next one.
    let mut state = NetworkState::default();
    for g in 0..200u32 {
        state.groups.push(GroupNet {
            group_id: format!("sg-{g:08x}"),
            account: "000000000001".into(),
            name: format!("g{g}"),
            index: g,
            rules: vec![rule(
                "tcp",
                22,
                22,
                &["0.0.0.0/0"],
                &[&format!("sg-{:08x}", g + 1)],
            )],
        });
        for n in 0..10u32 {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + g * 32 + 2 + n);
            let k = g * 10 + n;
            state.instances.push(inst(
                &format!("i-{k:08x}"),
                &format!("52:54:00:00:{:02x}:{:02x}", k >> 8, k & 0xff),
                &format!("sg-{g:08x}"),
                &ip.to_string(),
                (n == 0)
                    .then(|| format!("100.64.204.{}", 10 + g % 200))
                    .as_deref(),
            ));
        }
    }
    net.apply(state.clone()).await.unwrap();
    state.groups[7]
        .rules
        .push(rule("udp", 53, 53, &["10.0.0.0/8"], &[]));
    apply_timed(&net, &state).await;
    let rules = must(&format!(
        "ip netns exec {} nft list chain ip euca group7",
        net.router_netns().unwrap()
    ))
    .await;
    assert!(rules.contains("udp dport 53"), "{rules}");
    bed.finish(net).await;
}

/// A UDP socket bound to `port` inside namespace `ns`: a throw-away thread enters
/// the namespace to make it, and the socket stays there.
fn udp_in(ns: &str, port: u16) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns with an open namespace file and CLONE_NEWNET; it changes
        // this thread only, which ends here.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    })
    .join()
    .unwrap()
}

/// Sends `msg` from `tx` to `to` until `rx` receives it (up to 3 s); whether it did.
async fn udp_reaches(
    tx: &Arc<std::net::UdpSocket>,
    to: &str,
    rx: &Arc<std::net::UdpSocket>,
    msg: &str,
) -> bool {
    let (tx, rx, to, msg) = (tx.clone(), rx.clone(), to.to_string(), msg.to_string());
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while start.elapsed() < Duration::from_secs(3) {
            tx.send_to(msg.as_bytes(), to.as_str()).unwrap();
            if let Ok(n) = rx.recv(&mut buf) {
                if &buf[..n] == msg.as_bytes() {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap()
}

/// What `rx` receives within 600 ms.
async fn udp_drain(rx: &Arc<std::net::UdpSocket>) -> Vec<String> {
    let rx = rx.clone();
    tokio::task::spawn_blocking(move || {
        let mut got = vec![];
        let mut buf = [0u8; 64];
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(600) {
            if let Ok(n) = rx.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    })
    .await
    .unwrap()
}

/// A fake instance with a fixed address (DHCP is tested above).
async fn plug_at(ns: &str, mac: &str, router: &str, host_if: &str, ip: &str, gw: &str) {
    plug(ns, mac, router, host_if, "br0").await;
    must(&format!(
        "ip -n {ns} addr add {ip}/27 dev eth0 && ip -n {ns} route replace default via {gw}"
    ))
    .await;
}

/// A flow tracked through a public address follows the address when it moves (its
/// conntrack entry, which holds the NAT decision, is deleted), and flows to a
/// private address end when a new instance takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_move_forgets_the_flows_tracked_through_it() {
    if !root() {
        return;
    }
    if !euca_vnet::conntrack::available().await {
        eprintln!("SKIP: needs conntrack");
        return;
    }
    let (bed, [outer, a1, a2, b1]) = Bed::new(["co", "ca1", "ca2", "cb1"]).await;
    must(&format!(
        "ip netns add {outer} && ip -n {outer} link set lo up"
    ))
    .await;
    let cfg = NetConfig {
        mode: NetMode::ManagedNovlan,
        public_cidr: Some("100.64.205.0/24".parse().unwrap()),
        outer_netns: Some(outer.clone()),
        ..NetConfig::default()
    };
    let net = bed.start(&cfg).await;
    let router = net.router_netns().unwrap().to_string();
    let group = |id: &str, index: u32, rules: Vec<IngressRule>| GroupNet {
        group_id: id.into(),
        account: "000000000001".into(),
        name: id.into(),
        index,
        rules,
    };
    // sg-a admits udp/5000 from the public side and from the other group.
    let udp = rule("udp", 5000, 5000, &["100.64.0.0/10", "10.128.0.0/16"], &[]);
    let mut state = NetworkState {
        groups: vec![group("sg-a", 0, vec![udp]), group("sg-b", 1, vec![])],
        instances: vec![
            inst(
                "i-0000ct01",
                "52:54:00:cf:00:01",
                "sg-a",
                "10.128.0.2",
                Some("100.64.205.10"),
            ),
            inst(
                "i-0000ct02",
                "52:54:00:cf:00:02",
                "sg-a",
                "10.128.0.3",
                None,
            ),
            inst(
                "i-0000ct03",
                "52:54:00:cf:00:03",
                "sg-b",
                "10.128.0.34",
                None,
            ),
        ],
    };
    apply_timed(&net, &state).await;
    for (ns, mac, host_if, ip, gw) in [
        (
            &a1,
            "52:54:00:cf:00:01",
            "ccnetc1",
            "10.128.0.2",
            "10.128.0.1",
        ),
        (
            &a2,
            "52:54:00:cf:00:02",
            "ccnetc2",
            "10.128.0.3",
            "10.128.0.1",
        ),
        (
            &b1,
            "52:54:00:cf:00:03",
            "ccnetc3",
            "10.128.0.34",
            "10.128.0.33",
        ),
    ] {
        plug_at(ns, mac, &router, host_if, ip, gw).await;
    }
    let rx1 = Arc::new(udp_in(&a1, 5000));
    let rx2 = Arc::new(udp_in(&a2, 5000));
    let tx = Arc::new(udp_in(&outer, 40000));
    let tracked = |filter: &str| {
        let cmd = format!("ip netns exec {router} conntrack -L -p udp {filter} 2>/dev/null");
        async move { must(&cmd).await }
    };

    // One flow (outer:40000 → 100.64.205.10:5000), DNAT'd to a1.
    let public = "100.64.205.10:5000";
    assert!(
        udp_reaches(&tx, public, &rx1, "one").await,
        "a1 gets the flow"
    );
    let entry = tracked("--orig-dst 100.64.205.10").await;
    assert!(entry.contains("src=10.128.0.2"), "tracked to a1: {entry}");

    // The address moves to a2: the entry is gone, and the same flow's next
    // datagrams reach a2, not a1.
    state.instances[0].public_ip = None;
    state.instances[1].public_ip = Some("100.64.205.10".parse().unwrap());
    apply_timed(&net, &state).await;
    let entry = tracked("--orig-dst 100.64.205.10").await;
    assert!(
        entry.trim().is_empty(),
        "the old NAT binding stays: {entry}"
    );
    assert!(
        udp_reaches(&tx, public, &rx2, "two").await,
        "the flow follows the address to a2"
    );
    let late = udp_drain(&rx1).await;
    assert!(!late.iter().any(|m| m == "two"), "a1 still gets the flow");
    let entry = tracked("--orig-dst 100.64.205.10").await;
    assert!(entry.contains("src=10.128.0.3"), "tracked to a2: {entry}");

    // b1 (another group, admitted by sg-a's rule) has a flow to a1's private
    // address; a1 ends and a new instance (another MAC) takes 10.128.0.2.
    let txb = Arc::new(udp_in(&b1, 40001));
    assert!(
        udp_reaches(&txb, "10.128.0.2:5000", &rx1, "three").await,
        "b1 reaches a1"
    );
    let entry = tracked("--orig-dst 10.128.0.2").await;
    assert!(entry.contains("sport=40001"), "b1's flow tracked: {entry}");
    state.instances[0] = inst(
        "i-0000ct04",
        "52:54:00:cf:00:04",
        "sg-a",
        "10.128.0.2",
        None,
    );
    apply_timed(&net, &state).await;
    let entry = tracked("--orig-dst 10.128.0.2").await;
    assert!(
        entry.trim().is_empty(),
        "the old owner's flow stays: {entry}"
    );
    // Only changed addresses are touched: a2's flow through the public address
    // is still tracked.
    let other = tracked("--orig-dst 100.64.205.10").await;
    assert!(
        other.contains("sport=40000") && other.contains("src=10.128.0.3"),
        "a2's flow was forgotten: {other}"
    );

    bed.finish(net).await;
}
