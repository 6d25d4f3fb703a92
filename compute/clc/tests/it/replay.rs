//! The EC2 clients' captured requests (tests/data/ec2: awscli 1 and 2, boto3,
//! euca2ools 3.4, all signed with AKIDEXAMPLE / testsecret) replayed byte for byte
//! through the cloud controller's real listener, with the clock set to each
//! capture's X-Amz-Date so the signature verifies as it did when captured; and the
//! discovery actions (regions, zones, instance types) driven with requests this
//! test signs itself.
//!
//! The listener checks the Host header it is given, not the port it is on, so a
//! capture is sent unchanged to a server on any free port.
use euca_aws::sign::Signer;
use euca_aws::{Credential, CredentialLookup, LookupError, Principal};
use euca_clc::{Clc, ClcApi, ClcConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "testsecret";
const ACCOUNT: &str = "123456789012";

struct Keys;

#[async_trait::async_trait]
impl CredentialLookup for Keys {
    async fn lookup(&self, ak: &str) -> Result<Option<Credential>, LookupError> {
        Ok((ak == AKID).then(|| Credential {
            secret: SECRET.into(),
            principal: Principal {
                account_id: ACCOUNT.into(),
                canonical_id: "c".repeat(64),
                display_name: "replay".into(),
                access_key: AKID.into(),
            },
        }))
    }
}

/// A cloud controller on a free loopback port whose clock reads `now`.
struct Server {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(now: Option<OffsetDateTime>, config: ClcConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clc = Clc::open(
            &dir.path().join("clc"),
            "eucalyptus",
            &format!("http://{addr}/"),
            config,
        )
        .unwrap();
        if let Some(t) = now {
            clc.set_clock(move || t);
        }
        let store = euca_identity::IdentityStore::open(&dir.path().join("identity.redb")).unwrap();
        let identity =
            euca_identity::service::IdentityService::new(store, "eucalyptus", "admin", "system");
        let api = ClcApi::new(Arc::new(clc), identity, Arc::new(Keys));
        let (stop, rx) = watch::channel(false);
        let opts =
            euca_service::ListenOptions::new("clc", 16, &euca_service::ServiceConfig::default());
        let task = tokio::spawn(api.serve(listener, opts, euca_service::MetricsAccess::Closed, rx));
        Server {
            addr,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Sends `raw` (a whole HTTP/1.1 request) and reads one response.
    async fn exchange(&self, raw: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        read_response(&mut s).await
    }

    /// A request signed now (or at `at`) with the test key, POSTed as a form.
    async fn call(&self, path: &str, body: &str, at: OffsetDateTime) -> (u16, String) {
        let host = self.addr.to_string();
        let mut h = http::HeaderMap::new();
        h.insert("host", host.parse().unwrap());
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        Signer {
            access_key: AKID.into(),
            secret_key: SECRET.into(),
            region: "eucalyptus".into(),
            service: "ec2".into(),
        }
        .sign(
            "POST",
            path,
            "",
            &mut h,
            &euca_aws::sigv4::sha256_hex(body.as_bytes()),
            at,
        );
        let mut raw = format!("POST {path} HTTP/1.1\r\n");
        for (k, v) in &h {
            raw.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap()));
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        self.exchange(raw.as_bytes()).await
    }
}

async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status line");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            return (status, body);
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One capture: the request as sent (CRLF line ends), its action and X-Amz-Date.
struct Capture {
    name: String,
    raw: Vec<u8>,
    action: String,
    at: OffsetDateTime,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ec2")
}

fn load(path: &Path) -> Capture {
    let text = std::fs::read(path).unwrap();
    // The captures keep the wire's CRLF line ends.
    let (split, sep) = match find(&text, b"\r\n\r\n") {
        Some(i) => (i, 4),
        None => (
            find(&text, b"\n\n").expect("blank line after the headers"),
            2,
        ),
    };
    let head = std::str::from_utf8(&text[..split]).unwrap();
    let mut lines = head.lines();
    let mut raw = format!("{}\r\n", lines.next().unwrap());
    let (mut len, mut date) = (None, None);
    for l in lines {
        raw.push_str(l);
        raw.push_str("\r\n");
        let (k, v) = l.split_once(": ").expect("header line");
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<usize>().unwrap());
        }
        if k.eq_ignore_ascii_case("x-amz-date") {
            date = Some(v.to_string());
        }
    }
    raw.push_str("\r\n");
    let len = len.expect("Content-Length");
    let body = &text[split + sep..split + sep + len];
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    let action = std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .expect("Action in the body")
        .to_string();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(&date.expect("X-Amz-Date"), fmt)
        .unwrap()
        .assume_utc();
    Capture {
        name: path.file_name().unwrap().to_string_lossy().into(),
        raw,
        action,
        at,
    }
}

fn captures() -> Vec<Capture> {
    let mut out: Vec<Capture> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| load(&p))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The elements an answer to `action` must carry when the action answers 200.
fn required(action: &str) -> &'static [&'static str] {
    match action {
        "DescribeVolumes" => &["<volumeSet>", "<requestId>"],
        "DescribeSnapshots" => &["<snapshotSet>"],
        "DescribeInstances" => &["<reservationSet>"],
        "DescribeInstanceTypes" => &["<instanceTypeDetails>", "<instanceTypeSet>"],
        "ImportKeyPair" => &["<keyName>", "<keyFingerprint>"],
        "RegisterImage" => &["<imageId>"],
        _ => &["<requestId>"],
    }
}

/// Actions every capture of must answer 200 (the others reference resources the
/// fresh cloud does not have, or actions that come with instances: they must
/// pass authentication and answer an EC2 error with a RequestID).
const MUST_ANSWER: &[&str] = &["DescribeInstanceTypes"];

#[tokio::test]
async fn every_capture_authenticates_and_gets_ec2_answers() {
    let all = captures();
    assert!(all.len() >= 19, "captures missing: {}", all.len());
    for c in &all {
        let server = Server::start(Some(c.at), ClcConfig::default()).await;
        let (status, body) = server.exchange(&c.raw).await;
        server.shutdown().await;
        assert!(
            !body.contains("<Code>AuthFailure</Code>") && status != 403,
            "{}: refused: {status} {body}",
            c.name
        );
        if status == 200 {
            let root = format!(
                "<{}Response xmlns=\"http://ec2.amazonaws.com/doc/",
                c.action
            );
            assert!(body.contains(&root), "{}: {body}", c.name);
            for e in required(&c.action) {
                assert!(body.contains(e), "{}: no {e} in {body}", c.name);
            }
        } else {
            assert!(
                !MUST_ANSWER.contains(&c.action.as_str()),
                "{}: {status} {body}",
                c.name
            );
            // 4xx: an action not built yet, or the caller's mistake; 503: the action
            // needs a service this in-process cloud controller has none of (the
            // storage controller, the image installer).
            assert!(
                (400..500).contains(&status)
                    || (status == 503 && body.contains("<Code>ServiceUnavailable</Code>")),
                "{}: {status} {body}",
                c.name
            );
            assert!(
                body.contains("<Response><Errors><Error><Code>") && body.contains("<RequestID>"),
                "{}: {body}",
                c.name
            );
        }
    }
}

#[tokio::test]
async fn euca2ools_instance_types_capture_gets_both_shapes_with_availability() {
    let c = load(&data_dir().join("euca2ools-DescribeInstanceTypes.txt"));
    let mut config = ClcConfig::default();
    config.capacity.cpus = Some(4);
    config.capacity.memory_mib = Some(2048);
    config.capacity.disk_gib = Some(40);
    let server = Server::start(Some(c.at), config).await;
    let (status, body) = server.exchange(&c.raw).await;
    server.shutdown().await;
    assert_eq!(status, 200, "{body}");
    // Version 2015-10-01 as euca2ools sent it.
    assert!(body.contains("xmlns=\"http://ec2.amazonaws.com/doc/2015-10-01/\""));
    assert!(
        body.contains(
            "<item><name>m1.small</name><cpu>1</cpu><memory>256</memory><disk>5</disk>\
         <networkInterfaces>1</networkInterfaces><availability><item>\
         <zoneName>eucalyptusa</zoneName><max>4</max><available>4</available></item>\
         </availability></item>"
        ),
        "{body}"
    );
    // c1.xlarge: 2 CPUs, 2048 MiB, 10 GiB → memory allows one.
    assert!(body.contains("<name>c1.xlarge</name><cpu>2</cpu><memory>2048</memory><disk>10</disk><networkInterfaces>1</networkInterfaces><availability><item><zoneName>eucalyptusa</zoneName><max>1</max>"));
    assert!(body.contains("<instanceType>m1.small</instanceType>"));
    assert!(body.contains("<vCpuInfo><defaultVCpus>1</defaultVCpus>"));
    assert!(body.contains("<memoryInfo><sizeInMiB>256</sizeInMiB></memoryInfo>"));
    assert!(body
        .contains("<instanceStorageInfo><totalSizeInGB>5</totalSizeInGB></instanceStorageInfo>"));
    assert_eq!(body.matches("<instanceType>").count(), 18);
}

/// The body of a 200 answer to `params`, signed now.
async fn ok(server: &Server, params: &str) -> String {
    let (status, body) = server.call("/", params, OffsetDateTime::now_utc()).await;
    assert_eq!(status, 200, "{params}: {body}");
    body
}

async fn err(server: &Server, params: &str) -> (u16, String) {
    let (status, body) = server.call("/", params, OffsetDateTime::now_utc()).await;
    assert_ne!(status, 200, "{params}: {body}");
    let code = body
        .split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or_default()
        .to_string();
    assert!(body.contains("<RequestID>"), "{body}");
    (status, code)
}

#[tokio::test]
async fn regions() {
    let s = Server::start(None, ClcConfig::default()).await;
    let endpoint = format!("http://{}/", s.addr);
    let b = ok(&s, "Action=DescribeRegions&Version=2016-11-15").await;
    assert!(b.contains(&format!(
        "<regionInfo><item><optInStatus>opt-in-not-required</optInStatus>\
         <regionName>eucalyptus</regionName><regionEndpoint>{endpoint}</regionEndpoint></item></regionInfo>"
    )), "{b}");
    let b = ok(&s, "Action=DescribeRegions&RegionName.1=eucalyptus").await;
    assert!(b.contains("<regionName>eucalyptus</regionName>"));
    let b = ok(
        &s,
        "Action=DescribeRegions&Filter.1.Name=region-name&Filter.1.Value.1=us-*",
    )
    .await;
    assert!(b.contains("<regionInfo></regionInfo>"), "{b}");
    let b = ok(
        &s,
        "Action=DescribeRegions&Filter.1.Name=endpoint&Filter.1.Value.1=*127.0.0.1*",
    )
    .await;
    assert!(b.contains("<regionName>eucalyptus</regionName>"), "{b}");
    assert_eq!(
        err(&s, "Action=DescribeRegions&RegionName.1=us-east-1").await,
        (400, "InvalidParameterValue".into())
    );
    assert_eq!(
        err(
            &s,
            "Action=DescribeRegions&Filter.1.Name=nope&Filter.1.Value.1=x"
        )
        .await,
        (400, "InvalidParameterValue".into())
    );
    s.shutdown().await;
}

#[tokio::test]
async fn availability_zones_and_verbose_capacity() {
    let mut config = ClcConfig::default();
    config.capacity.cpus = Some(6);
    config.capacity.memory_mib = Some(8192);
    config.capacity.disk_gib = Some(30);
    config.instance_types = serde_json::from_str(
        r#"[{"name":"m1.small","cpus":1,"memory_mib":256,"disk_gib":5},
            {"name":"m1.large","cpus":2,"memory_mib":512,"disk_gib":10}]"#,
    )
    .unwrap();
    let s = Server::start(None, config).await;
    let zone = "<item><optInStatus>opt-in-not-required</optInStatus><messageSet></messageSet>\
                <regionName>eucalyptus</regionName><zoneName>eucalyptusa</zoneName>\
                <zoneId>eucalyptus-az1</zoneId><groupName>eucalyptus</groupName>\
                <zoneType>availability-zone</zoneType><zoneState>available</zoneState></item>";
    let b = ok(&s, "Action=DescribeAvailabilityZones").await;
    assert!(
        b.contains(&format!(
            "<availabilityZoneInfo>{zone}</availabilityZoneInfo>"
        )),
        "{b}"
    );
    for q in [
        "ZoneName.1=eucalyptusa",
        "ZoneId.1=eucalyptus-az1",
        "Filter.1.Name=state&Filter.1.Value.1=available",
        "Filter.1.Name=zone-name&Filter.1.Value.1=euca*",
        "Filter.1.Name=region-name&Filter.1.Value.1=eucalyptus",
    ] {
        let b = ok(&s, &format!("Action=DescribeAvailabilityZones&{q}")).await;
        assert!(b.contains(zone), "{q}: {b}");
    }
    let b = ok(
        &s,
        "Action=DescribeAvailabilityZones&Filter.1.Name=state&Filter.1.Value.1=impaired",
    )
    .await;
    assert!(
        b.contains("<availabilityZoneInfo></availabilityZoneInfo>"),
        "{b}"
    );
    assert_eq!(
        err(&s, "Action=DescribeAvailabilityZones&ZoneName.1=us-east-1a").await,
        (400, "InvalidParameterValue".into())
    );
    // euca2ools' `verbose`: the zone, then Eucalyptus's capacity lines (printf
    // `%04d / %04d %3d %6d %5d`): m1.small fits 6 by CPU, 32 by memory, 6 by disk;
    // m1.large 3 by CPU, 3 by disk.
    let b = ok(&s, "Action=DescribeAvailabilityZones&ZoneName.1=verbose").await;
    let expect = format!(
        "<availabilityZoneInfo>{zone}\
         <item><messageSet></messageSet><zoneName>|- vm types</zoneName><zoneState>free / max   cpu   ram  disk</zoneState></item>\
         <item><messageSet></messageSet><zoneName>|- m1.small</zoneName><zoneState>0006 / 0006   1    256     5</zoneState></item>\
         <item><messageSet></messageSet><zoneName>|- m1.large</zoneName><zoneState>0003 / 0003   2    512    10</zoneState></item>\
         </availabilityZoneInfo>"
    );
    assert!(b.contains(&expect), "{b}");
    s.shutdown().await;
}

#[tokio::test]
async fn instance_types_ids_filters_pages_and_unknown() {
    let s = Server::start(None, ClcConfig::default()).await;
    let b = ok(
        &s,
        "Action=DescribeInstanceTypes&InstanceType.1=m1.small&InstanceType.2=t1.micro",
    )
    .await;
    assert_eq!(b.matches("<instanceType>").count(), 2, "{b}");
    assert!(!b.contains("<availability>"), "{b}");
    let (status, code) = err(&s, "Action=DescribeInstanceTypes&InstanceType.1=m9.huge").await;
    assert_eq!((status, code.as_str()), (400, "InvalidInstanceType"));
    let b = ok(
        &s,
        "Action=DescribeInstanceTypes&Filter.1.Name=instance-type&Filter.1.Value.1=m1.*",
    )
    .await;
    let names: Vec<&str> = b
        .split("<instanceType>")
        .skip(1)
        .map(|r| r.split('<').next().unwrap())
        .collect();
    assert_eq!(names, ["m1.small", "m1.medium", "m1.large", "m1.xlarge"]);
    let b = ok(
        &s,
        "Action=DescribeInstanceTypes&Filter.1.Name=vcpu-info.default-vcpus&Filter.1.Value.1=16",
    )
    .await;
    assert_eq!(b.matches("<instanceType>").count(), 3, "{b}");
    // Pages of 5: 18 types in 4 pages, in table order, each type once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            None => "Action=DescribeInstanceTypes&MaxResults=5".to_string(),
            Some(t) => format!("Action=DescribeInstanceTypes&MaxResults=5&NextToken={t}"),
        };
        let b = ok(&s, &q).await;
        seen.extend(
            b.split("<instanceType>")
                .skip(1)
                .map(|r| r.split('<').next().unwrap().to_string()),
        );
        token = b
            .split("<nextToken>")
            .nth(1)
            .map(|r| r.split('<').next().unwrap().to_string());
        if token.is_none() {
            break;
        }
    }
    let all: Vec<String> = ClcConfig::default()
        .instance_types
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(seen, all);
    let (status, code) = err(&s, "Action=DescribeInstanceTypes&NextToken=zz").await;
    assert_eq!((status, code.as_str()), (400, "InvalidNextToken"));
    s.shutdown().await;
}

#[tokio::test]
async fn paths_and_unknown_action() {
    let s = Server::start(None, ClcConfig::default()).await;
    for path in ["/", "/services/compute", "/services/Eucalyptus"] {
        let (status, body) = s
            .call(path, "Action=DescribeRegions", OffsetDateTime::now_utc())
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("<DescribeRegionsResponse"));
    }
    assert_eq!(
        err(&s, "Action=RebootTheCloud").await,
        (400, "InvalidAction".into())
    );
    s.shutdown().await;
}

/// The verifier must refuse a capture whose body was changed after signing.
#[tokio::test]
async fn a_changed_byte_is_refused() {
    let mut c = load(&data_dir().join("awscli2-DescribeVolumes.txt"));
    let last = c.raw.len() - 1;
    c.raw[last] ^= 1;
    let server = Server::start(Some(c.at), ClcConfig::default()).await;
    let (status, body) = server.exchange(&c.raw).await;
    server.shutdown().await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AuthFailure</Code>"), "{body}");
}
