//! The instance metadata service at 169.254.169.254:80, inside the router
//! namespace. The instance asking is the one whose private address is the TCP
//! peer's (the router's nftables anti-spoofing admits that address only from that
//! instance's MAC, in `static` as in the managed modes); no header is ever
//! believed. Answers come from the network state's
//! [`InstanceNet::metadata`] and the launch's user-data (the CC journal).
//!
//! IMDSv2: `PUT /latest/api/token` (TTL 1–21600 s, refused with
//! `X-Forwarded-For`) hands out a token bound to the instance; a GET carrying a
//! token must carry a valid one of that instance, a GET without is served (IMDSv1).
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use euca_compute_proto::net::{InstanceNet, NetworkState};
use euca_imagecache::http::{edge_error, full, Body, Edge};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

/// Looks an instance's user-data (base64) up; blocking (the journal).
pub type UserData = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The versions listed at `/` (EC2's up to the tree served, then `latest`).
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "latest",
];

const TOKEN_TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";
/// Tokens kept at most (oldest dropped first): a guest looping on PUT cannot grow
/// the table without bound.
const MAX_TOKENS: usize = 65_536;
/// Live IMDSv2 tokens one instance may hold.
const TOKENS_PER_INSTANCE: usize = 16;

/// The metadata API.
pub struct Metadata {
    state: Arc<RwLock<Arc<NetworkState>>>,
    user_data: UserData,
    /// token → (instance id, expiry).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// The metadata service's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataEndpoint {
    Get,
    PutToken,
    Unsupported,
}

impl euca_service::Endpoint for MetadataEndpoint {
    fn name(&self) -> &'static str {
        match self {
            MetadataEndpoint::Get => "GetMetadata",
            MetadataEndpoint::PutToken => "PutToken",
            MetadataEndpoint::Unsupported => "Unsupported",
        }
    }
}

fn text(code: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

/// Binds a TCP listener at `addr` inside network namespace `netns`: a short-lived
/// thread enters the namespace (setns affects only the calling thread) and makes
/// the socket, which stays in that namespace wherever it is used.
pub fn bind_in_netns(netns: &str, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    euca_vnet::link::check_netns(netns)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path)?;
        // SAFETY: setns with an open namespace file and CLONE_NEWNET; it changes
        // this (throw-away) thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// The children of directory `dir` (`""`: the root) among the tree's leaf paths:
/// leaves by name, subdirectories with a trailing `/`.
fn listing(md: &std::collections::BTreeMap<String, String>, dir: &str) -> Option<String> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = BTreeSet::new();
    for k in md.keys() {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        match rest.find('/') {
            Some(i) => out.insert(rest[..=i].to_string()),
            None => out.insert(rest.to_string()),
        };
    }
    if out.is_empty() {
        return None;
    }
    Some(out.into_iter().collect::<Vec<_>>().join("\n"))
}

/// `meta-data/<path>`: a leaf's value, an explicit listing (a key ending in `/`),
/// or a directory's derived listing.
pub fn meta_data(inst: &InstanceNet, path: &str) -> Option<String> {
    let md = &inst.metadata;
    let key = path.trim_end_matches('/');
    if key.is_empty() {
        return listing(md, "");
    }
    if let Some(v) = md.get(&format!("{key}/")) {
        return Some(v.clone());
    }
    if !path.ends_with('/') {
        if let Some(v) = md.get(key) {
            return Some(v.clone());
        }
    }
    listing(md, key)
}

impl Metadata {
    pub fn new(state: Arc<RwLock<Arc<NetworkState>>>, user_data: UserData) -> Arc<Metadata> {
        Arc::new(Metadata {
            state,
            user_data,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Serves on `listener` (bound in the router namespace) until `shutdown`.
    /// (Boxed, and compiled here once: see `euca_service::serve_api`.)
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, ()> {
        let edge = Edge::new(
            "metadata",
            256,
            &euca_service::ServiceConfig::default(),
            euca_service::MetricsAccess::Closed,
        );
        euca_service::serve_api(listener, edge.listen, self, edge.metrics, shutdown)
    }

    /// The instance at `peer` in the state applied.
    fn instance(&self, peer: IpAddr) -> Option<InstanceNet> {
        let IpAddr::V4(v4) = peer else {
            return None;
        };
        let s = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        s.instances
            .iter()
            .find(|i| i.private_ip == Some(v4))
            .cloned()
    }

    fn put_token(&self, head: &http::request::Parts, peer: IpAddr) -> Response<Body> {
        if head.headers.contains_key("x-forwarded-for") {
            return text(StatusCode::FORBIDDEN, "Forbidden\n");
        }
        let ttl = head
            .headers
            .get(TOKEN_TTL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t));
        let Some(ttl) = ttl else {
            return text(StatusCode::BAD_REQUEST, "Bad Request\n");
        };
        let Some(inst) = self.instance(peer) else {
            return not_found();
        };
        let token = match euca_service::random_token() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "metadata: no random source");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Error\n");
            }
        };
        let now = Instant::now();
        {
            let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            t.retain(|_, (_, exp)| *exp > now);
            // A guest asking for tokens in a loop evicts only its own: each
            // instance holds at most TOKENS_PER_INSTANCE (its oldest goes first).
            let mine: Vec<(String, Instant)> = t
                .iter()
                .filter(|(_, (i, _))| *i == inst.instance_id)
                .map(|(k, (_, e))| (k.clone(), *e))
                .collect();
            if mine.len() >= TOKENS_PER_INSTANCE {
                if let Some((k, _)) = mine.iter().min_by_key(|(_, e)| *e) {
                    t.remove(k);
                }
            }
            if t.len() >= MAX_TOKENS {
                if let Some(k) = t
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone())
                {
                    t.remove(&k);
                }
            }
            t.insert(
                token.clone(),
                (inst.instance_id, now + Duration::from_secs(ttl)),
            );
        }
        let mut r = text(StatusCode::OK, token);
        if let Ok(v) = http::HeaderValue::from_str(&ttl.to_string()) {
            r.headers_mut().insert(TOKEN_TTL, v);
        }
        r
    }

    /// Whether the request's token (if any) is a live one of `instance`.
    fn token_ok(&self, head: &http::request::Parts, instance: &str) -> bool {
        let Some(tok) = head.headers.get(TOKEN) else {
            return true;
        };
        let Ok(tok) = tok.to_str() else {
            return false;
        };
        let t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        matches!(t.get(tok), Some((id, exp)) if id == instance && *exp > Instant::now())
    }

    async fn get(&self, head: &http::request::Parts, peer: IpAddr) -> Response<Body> {
        let Some(inst) = self.instance(peer) else {
            return not_found();
        };
        if !self.token_ok(head, &inst.instance_id) {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        }
        let path = head.uri.path().trim_start_matches('/');
        if path.is_empty() {
            return text(StatusCode::OK, VERSIONS.join("\n"));
        }
        let (version, rest) = path.split_once('/').unwrap_or((path, ""));
        if !VERSIONS.contains(&version) {
            return not_found();
        }
        let user_data = {
            let f = self.user_data.clone();
            let id = inst.instance_id.clone();
            tokio::task::spawn_blocking(move || f(&id))
                .await
                .ok()
                .flatten()
        };
        let (top, sub) = rest.split_once('/').unwrap_or((rest, ""));
        match top {
            "" => {
                let mut l = vec!["dynamic", "meta-data"];
                if user_data.is_some() {
                    l.push("user-data");
                }
                text(StatusCode::OK, l.join("\n"))
            }
            "meta-data" => match meta_data(&inst, sub) {
                Some(v) => text(StatusCode::OK, v),
                None => not_found(),
            },
            "user-data" if sub.is_empty() => {
                let Some(d) = user_data else {
                    return not_found();
                };
                match base64::engine::general_purpose::STANDARD.decode(d.trim()) {
                    Ok(bytes) => text(StatusCode::OK, bytes),
                    Err(_) => text(StatusCode::OK, d),
                }
            }
            "dynamic" => match sub.trim_end_matches('/') {
                "" => text(StatusCode::OK, "instance-identity/"),
                "instance-identity" => text(StatusCode::OK, "document"),
                "instance-identity/document" => {
                    let doc = serde_json::json!({
                        "instanceId": inst.instance_id,
                        "accountId": inst.account,
                        "privateIp": inst.private_ip,
                        "version": "2009-04-04",
                    });
                    let mut r = text(StatusCode::OK, doc.to_string());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                _ => not_found(),
            },
            _ => not_found(),
        }
    }
}

impl euca_service::Api for Metadata {
    type Endpoint = MetadataEndpoint;
    type Body = Body;
    fn service(&self) -> &'static str {
        "metadata"
    }
    fn route(&self, head: &http::request::Parts) -> MetadataEndpoint {
        match (&head.method, head.uri.path()) {
            (&Method::PUT, "/latest/api/token") => MetadataEndpoint::PutToken,
            (&Method::GET | &Method::HEAD, _) => MetadataEndpoint::Get,
            _ => MetadataEndpoint::Unsupported,
        }
    }
    async fn handle(
        self: Arc<Self>,
        ep: MetadataEndpoint,
        req: Request<Incoming>,
        cx: euca_service::Ctx,
    ) -> Response<Body> {
        // The TCP peer only: `cx.peer.client` could come from a header.
        let peer = cx.peer.tcp.ip();
        let (head, _body) = req.into_parts();
        match ep {
            MetadataEndpoint::PutToken => self.put_token(&head, peer),
            MetadataEndpoint::Get => self.get(&head, peer).await,
            MetadataEndpoint::Unsupported => {
                text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
            }
        }
    }
    fn render_error(&self, e: &euca_service::EdgeError, _cx: &euca_service::Ctx) -> Response<Body> {
        edge_error(e)
    }
    fn body(&self, bytes: bytes::Bytes) -> Body {
        full(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_listings_and_leaves() {
        let mut md = std::collections::BTreeMap::new();
        for (k, v) in [
            ("instance-id", "i-12345678"),
            ("local-ipv4", "10.128.0.2"),
            ("placement/availability-zone", "zone-a"),
            ("public-keys/", "0=mykey"),
            ("public-keys/0/openssh-key", "ssh-ed25519 AAAA"),
        ] {
            md.insert(k.to_string(), v.to_string());
        }
        let inst = InstanceNet {
            instance_id: "i-12345678".into(),
            account: "000000000001".into(),
            mac: "d0:0d:00:00:00:01".into(),
            group_id: None,
            private_ip: None,
            public_ip: None,
            metadata: md,
        };
        assert_eq!(
            meta_data(&inst, "").unwrap(),
            "instance-id\nlocal-ipv4\nplacement/\npublic-keys/"
        );
        assert_eq!(meta_data(&inst, "instance-id").unwrap(), "i-12345678");
        assert_eq!(meta_data(&inst, "placement/").unwrap(), "availability-zone");
        assert_eq!(meta_data(&inst, "placement").unwrap(), "availability-zone");
        assert_eq!(meta_data(&inst, "public-keys/").unwrap(), "0=mykey");
        assert_eq!(meta_data(&inst, "public-keys").unwrap(), "0=mykey");
        assert_eq!(meta_data(&inst, "public-keys/0/").unwrap(), "openssh-key");
        assert_eq!(
            meta_data(&inst, "public-keys/0/openssh-key").unwrap(),
            "ssh-ed25519 AAAA"
        );
        assert!(meta_data(&inst, "nope").is_none());
        assert!(meta_data(&inst, "instance-id/").is_none());
    }
}
