//! The cloud's dynamic DNS (issue 14; Eucalyptus 1.6.1's): an authoritative,
//! non-recursive server (`hickory-server`, UDP and TCP) for instances' names,
//!
//! - `euca-A-B-C-D.eucalyptus.internal` → a current private address,
//! - `euca-A-B-C-D.eucalyptus.<dns_domain>` → a current public address,
//! - and the PTR records of both addresses' reverse names.
//!
//! Other names in those zones are NXDOMAIN, and so are reverse names of the cloud's
//! address ranges that no instance holds; everything else is REFUSED (it is not
//! a resolver). Answers come from an [`Index`] rebuilt from the instance records
//! whenever addresses change ([`crate::netstate::refresh_dns`]).
use crate::model::{Instance, InstanceState};
use crate::Clc;
use euca_compute_proto::net::ClusterNet;
use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Records change when addresses do: keep caches short.
const TTL: u32 = 60;
/// An idle TCP client is dropped after this.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding the DNS server to {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
}

/// The private name of `ip`.
pub fn private_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("euca-{a}-{b}-{c}-{d}.eucalyptus.internal")
}

/// The public name of `ip` in `domain`.
pub fn public_name(ip: Ipv4Addr, domain: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!(
        "euca-{a}-{b}-{c}-{d}.eucalyptus.{}",
        domain.trim_matches('.').to_ascii_lowercase()
    )
}

/// What the server answers: names (lower case, no final dot) → addresses, and
/// addresses → names.
#[derive(Debug, Default)]
pub struct Index {
    /// The zones served (`eucalyptus.internal`, `eucalyptus.<domain>`).
    zones: Vec<String>,
    forward: HashMap<String, Ipv4Addr>,
    reverse: HashMap<Ipv4Addr, String>,
    /// The cloud's address ranges: their reverse names are ours (NXDOMAIN when
    /// free), not REFUSED.
    ranges: Vec<Ipv4Net>,
    pools: HashSet<Ipv4Addr>,
}

impl Index {
    /// The index of `instances`' current addresses (ended ones have none), with the
    /// clusters' ranges `nets`.
    pub fn build<'a>(
        domain: &str,
        instances: impl IntoIterator<Item = &'a Instance>,
        nets: impl IntoIterator<Item = ClusterNet>,
    ) -> Index {
        let mut ix = Index {
            zones: vec![
                "eucalyptus.internal".into(),
                format!(
                    "eucalyptus.{}",
                    domain.trim_matches('.').to_ascii_lowercase()
                ),
            ],
            ..Index::default()
        };
        for n in nets {
            ix.ranges.extend(n.private_range);
            ix.pools.extend(n.public_ips.iter().chain(&n.static_ips));
        }
        for i in instances {
            if matches!(i.state, InstanceState::Terminated) {
                continue;
            }
            if let Some(ip) = i.private_ip {
                let name = private_name(ip);
                ix.forward.insert(name.clone(), ip);
                ix.reverse.insert(ip, name);
            }
            if let Some(ip) = i.public_ip {
                let name = public_name(ip, domain);
                ix.forward.insert(name.clone(), ip);
                ix.reverse.insert(ip, name);
            }
        }
        ix
    }

    /// No instance has a name.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    fn in_zone(&self, name: &str) -> bool {
        self.zones.iter().any(|z| {
            name == z
                || name
                    .strip_suffix(z.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }

    fn ours(&self, ip: Ipv4Addr) -> bool {
        self.pools.contains(&ip)
            || self.ranges.iter().any(|r| r.contains(&ip))
            || self.reverse.contains_key(&ip)
    }

    /// The answer to a query for `name` (any case, final dot or not) of type `qtype`.
    pub fn answer(&self, name: &str, qtype: RecordType) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ip) = reverse_ip(&name) {
            return match self.reverse.get(&ip) {
                Some(target) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                    Answer::Ptr(target.clone())
                }
                Some(_) => Answer::NoData,
                None if self.ours(ip) => Answer::NxDomain,
                None => Answer::Refused,
            };
        }
        if !self.in_zone(&name) {
            return Answer::Refused;
        }
        match self.forward.get(&name) {
            Some(ip) if matches!(qtype, RecordType::A | RecordType::ANY) => Answer::A(*ip),
            Some(_) => Answer::NoData,
            None if self.zones.contains(&name) => Answer::NoData,
            None => Answer::NxDomain,
        }
    }
}

/// What [`Index::answer`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    A(Ipv4Addr),
    Ptr(String),
    /// The name exists, without records of that type.
    NoData,
    NxDomain,
    Refused,
}

/// The address of a `d.c.b.a.in-addr.arpa` name.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let labels = name.strip_suffix(".in-addr.arpa")?;
    let o: Vec<u8> = labels
        .split('.')
        .map(|l| l.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    match o[..] {
        [d, c, b, a] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

/// Answers from the cloud controller's current [`Index`].
struct Handler {
    clc: Arc<Clc>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(false);
        let query = match request.queries() {
            [q] => q,
            // No question, or several (which no resolver sends): refused.
            _ => {
                let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
                return send(&mut response, msg).await;
            }
        };
        let qname = query.name().to_string();
        let answer = self.clc.dns().answer(&qname, query.query_type());
        tracing::debug!(name = %qname, qtype = %query.query_type(), ?answer, "dns");
        let rdata = match &answer {
            Answer::A(ip) => Some(RData::A(A(*ip))),
            Answer::Ptr(target) => match Name::from_ascii(format!("{target}.")) {
                Ok(n) => Some(RData::PTR(PTR(n))),
                Err(_) => None,
            },
            _ => None,
        };
        let code = match answer {
            Answer::NxDomain => ResponseCode::NXDomain,
            Answer::Refused => ResponseCode::Refused,
            _ => ResponseCode::NoError,
        };
        header.set_response_code(code);
        if code == ResponseCode::Refused {
            header.set_authoritative(false);
        }
        let records: Vec<Record> = rdata
            .into_iter()
            .map(|r| Record::from_rdata(Name::from(query.name().clone()), TTL, r))
            .collect();
        let msg = builder.build(header, records.iter(), [], [], []);
        send(&mut response, msg).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "dns: sending the answer");
            let mut h = Header::new();
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}

/// The running DNS server.
pub struct DnsServer {
    server: ServerFuture<Handler>,
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Stops listening.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "dns server shutdown");
        }
    }
}

/// Serves the cloud's names on `addr` (UDP and TCP on one port; port 0 picks one
/// free for both). (Boxed: compiled here once; see `euca_service::serve_api`.)
pub fn serve(
    clc: Arc<Clc>,
    addr: SocketAddr,
) -> futures::future::BoxFuture<'static, Result<DnsServer, DnsError>> {
    futures::FutureExt::boxed(serving(clc, addr))
}

async fn serving(clc: Arc<Clc>, addr: SocketAddr) -> Result<DnsServer, DnsError> {
    let bind_err = |proto, source| DnsError::Bind {
        addr,
        proto,
        source,
    };
    let mut tries = if addr.port() == 0 { 8 } else { 1 };
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("udp", e))?;
        let port = udp.local_addr().map_err(|e| bind_err("udp", e))?.port();
        match tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => break (udp, tcp),
            // A picked UDP port whose TCP twin is taken: pick again.
            Err(_) if tries > 1 => tries -= 1,
            Err(e) => return Err(bind_err("tcp", e)),
        }
    };
    let local = udp.local_addr().map_err(|e| bind_err("udp", e))?;
    let mut server = ServerFuture::new(Handler { clc });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    tracing::info!(addr = %local, "dynamic DNS listening (UDP and TCP)");
    Ok(DnsServer {
        server,
        addr: local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_reverse_names() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(private_name(ip), "euca-10-1-2-3.eucalyptus.internal");
        assert_eq!(
            public_name(ip, "Cloud.Example."),
            "euca-10-1-2-3.eucalyptus.cloud.example"
        );
        assert_eq!(reverse_ip("3.2.1.10.in-addr.arpa"), Some(ip));
        assert_eq!(reverse_ip("2.1.10.in-addr.arpa"), None);
        assert_eq!(reverse_ip("x.2.1.10.in-addr.arpa"), None);
    }

    #[test]
    fn empty_index_refuses_outside_and_nxdomains_inside() {
        let ix = Index::build("localhost", [], []);
        assert_eq!(
            ix.answer("euca-1-2-3-4.eucalyptus.internal.", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(ix.answer("example.com.", RecordType::A), Answer::Refused);
        assert_eq!(
            ix.answer("xeucalyptus.internal", RecordType::A),
            Answer::Refused
        );
        assert_eq!(
            ix.answer("4.3.2.1.in-addr.arpa.", RecordType::PTR),
            Answer::Refused
        );
    }
}
