//! The client's address behind a trusted proxy: the PROXY protocol header (v1 or
//! v2, parsed by the `ppp` crate) at the start of a connection, or
//! `X-Forwarded-For` on each request.
use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes (the spec's bound).
const V1_MAX: usize = 107;
/// Longest v2 header accepted (addresses plus a few TLVs).
const V2_MAX: usize = 16 + 512;

pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical_ip(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (dual-stack listeners) as IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no valid PROXY protocol header")]
    Invalid,
}

/// Reads a PROXY protocol header from the start of `s`, consuming exactly its
/// bytes. Returns the client's address, or `None` for `UNKNOWN` / `LOCAL` (health
/// checks of the proxy itself).
pub(crate) async fn read_proxy_header(s: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; 6];
    s.read_exact(&mut buf).await?;
    if buf == b"PROXY " {
        // v1: text up to CRLF, read one byte at a time so nothing after it is consumed.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyError::Invalid);
            }
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            buf.push(b[0]);
        }
    } else if V2_SIGNATURE.starts_with(&buf) {
        buf.resize(16, 0);
        s.read_exact(&mut buf[6..]).await?;
        if &buf[..12] != V2_SIGNATURE {
            return Err(ProxyError::Invalid);
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if 16 + len > V2_MAX {
            return Err(ProxyError::Invalid);
        }
        buf.resize(16 + len, 0);
        s.read_exact(&mut buf[16..]).await?;
    } else {
        return Err(ProxyError::Invalid);
    }
    parse(&buf)
}

fn parse(buf: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{v1, v2, HeaderResult};
    match HeaderResult::parse(buf) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        }),
        _ => Err(ProxyError::Invalid),
    }
}

/// The client of a request that reached us from `peer`: `peer` itself unless it
/// is a trusted proxy; then the right-most `X-Forwarded-For` entry that is not a
/// trusted proxy (entries further left were written by the client and prove
/// nothing). Falls back to `peer` when the header is missing or unreadable.
pub fn client_from_forwarded(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_only_from_trusted() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            client_from_forwarded(&h, lb, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_from_forwarded(&h, stranger, &trusted), stranger);
        h.insert("x-forwarded-for", "6.6.6.6, 5.5.5.5".parse().unwrap());
        assert_eq!(
            client_from_forwarded(&h, lb, &trusted),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "junk".parse().unwrap());
        assert_eq!(client_from_forwarded(&h, lb, &trusted), lb);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(is_trusted(mapped, &trusted));
    }

    #[test]
    fn proxy_headers() {
        let v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 8773\r\n";
        assert_eq!(
            parse(v1).unwrap(),
            Some("198.51.100.7:40000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), None);
        assert!(parse(b"PROXY TCP4 x y 1 2\r\n").is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 203, 0, 113, 5, 10, 0, 0, 1, 0x1f, 0x90, 0x22, 0x45,
        ]);
        assert_eq!(
            parse(&v2).unwrap(),
            Some("203.0.113.5:8080".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\nGET / HTTP/1.1\r\n")
                .await
                .unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        let got = read_proxy_header(&mut s).await.unwrap();
        assert_eq!(got, Some("[2001:db8::1]:1234".parse().unwrap()));
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET /");
        drop(client.await.unwrap());
    }
}
