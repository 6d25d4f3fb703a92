//! SYSTEM mode (issue 14): the LAN's DHCP server gives the guest its address, and
//! the cloud only observes it. A thread per instance reads every frame on the
//! instance's tap through an `AF_PACKET` socket (opened inside the namespace the tap
//! was moved to), and learns the address from a DHCPACK to the instance's MAC
//! (`yiaddr`, decoded with `dhcproto`) or, while none was seen, from an ARP packet
//! the guest sent (its sender address). The lease file of the LAN's server is never
//! read: it is not ours.
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder};
use tokio::sync::mpsc;

use crate::NcError;

/// How an address was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A DHCPACK to the instance's MAC: the lease itself.
    Dhcp(Ipv4Addr),
    /// An ARP packet from the instance's MAC: what the guest uses (a fallback, e.g.
    /// a lease acknowledged while the NC was down).
    Arp(Ipv4Addr),
}

impl Learned {
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Learned::Dhcp(ip) | Learned::Arp(ip) => ip,
        }
    }
}

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const IPPROTO_UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// What an Ethernet frame seen on the tap tells of `mac`'s address, if anything.
pub fn inspect(frame: &[u8], mac: &[u8; 6]) -> Option<Learned> {
    let ethertype = be16(frame, 12)?;
    let l3 = frame.get(ETH_HEADER..)?;
    match ethertype {
        ETHERTYPE_ARP => {
            // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4; sender hw 8..14, ip 14..18.
            if be16(l3, 0)? != 1 || be16(l3, 2)? != ETHERTYPE_IPV4 || l3.get(4..6)? != [6, 4] {
                return None;
            }
            let src = frame.get(6..12)?;
            let sha = l3.get(8..14)?;
            let spa: [u8; 4] = l3.get(14..18)?.try_into().ok()?;
            let ip = Ipv4Addr::from(spa);
            // Probes (sender 0.0.0.0) claim nothing.
            (src == mac && sha == mac && !ip.is_unspecified()).then_some(Learned::Arp(ip))
        }
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            if l3.first()? >> 4 != 4 || ihl < 20 || *l3.get(9)? != IPPROTO_UDP {
                return None;
            }
            let udp = l3.get(ihl..)?;
            let (sport, dport) = (be16(udp, 0)?, be16(udp, 2)?);
            if sport != DHCP_SERVER_PORT || dport != DHCP_CLIENT_PORT {
                return None;
            }
            let msg = Message::decode(&mut Decoder::new(udp.get(8..)?)).ok()?;
            let ack = msg.opcode() == Opcode::BootReply
                && msg.opts().msg_type() == Some(MessageType::Ack)
                && msg.chaddr().get(..6) == Some(mac.as_slice());
            let ip = msg.yiaddr();
            (ack && !ip.is_unspecified()).then_some(Learned::Dhcp(ip))
        }
        _ => None,
    }
}

/// Six colon-separated hex octets.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A running learner; dropping it stops the thread (within a second).
pub struct Learner {
    stop: Arc<AtomicBool>,
}

impl Drop for Learner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn os_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Enters `netns` (this thread only: it is the learner's own) and opens an
/// `AF_PACKET` socket bound to `tap` there, with a receive timeout so the thread
/// notices its stop flag.
fn open_socket(tap: &str, netns: Option<&str>) -> std::io::Result<OwnedFd> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))?;
        // SAFETY: a plain syscall on a valid namespace fd; it only moves this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(os_err("setns"));
        }
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(tap).map_err(std::io::Error::other)?;
    // SAFETY: `name` is a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(os_err(&format!("no interface {tap}")));
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: `sll` is a properly sized sockaddr_ll for this AF_PACKET socket.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(os_err(&format!("binding to {tap}")));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of this size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if r != 0 {
        return Err(os_err("SO_RCVTIMEO"));
    }
    Ok(fd)
}

/// Starts learning `mac`'s address on `tap` (in `netns`); each new address goes to
/// `out`. `known` is the address already recorded (an adopted instance): ARP does
/// not override it, a DHCPACK does. Blocking until the socket is open (call from
/// the blocking pool); the error says why it could not be.
pub fn spawn(
    instance: &str,
    tap: &str,
    netns: Option<&str>,
    mac: [u8; 6],
    known: Option<Ipv4Addr>,
    out: mpsc::UnboundedSender<Learned>,
) -> Result<Learner, NcError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    let (tap2, ns2, stop2, id) = (
        tap.to_string(),
        netns.map(str::to_string),
        stop.clone(),
        instance.to_string(),
    );
    std::thread::Builder::new()
        .name(format!("learn-{tap}"))
        .spawn(move || {
            let fd = match open_socket(&tap2, ns2.as_deref()) {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut current = known;
            let mut from_dhcp = false;
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: an all-zero sockaddr_ll is valid; recvfrom fills it.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` is valid for `buf.len()` bytes and `from` for
                // `from_len` bytes for the call.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut from_len,
                    )
                };
                let Ok(n) = usize::try_from(n) else {
                    let e = std::io::Error::last_os_error();
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) {
                        // The tap is down or gone (QEMU exiting): wait for the stop.
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    continue;
                };
                let Some(l) = buf.get(..n).and_then(|f| inspect(f, &mac)) else {
                    continue;
                };
                // The socket sees both ways: a DHCPACK counts only on its way to
                // the guest (the server's), ARP only from it, so a guest cannot
                // claim an address by sending itself ACKs.
                let to_guest = from.sll_pkttype == libc::PACKET_OUTGOING;
                let take = match l {
                    Learned::Dhcp(_) if !to_guest => false,
                    Learned::Dhcp(ip) => {
                        from_dhcp = true;
                        current != Some(ip)
                    }
                    Learned::Arp(_) => !to_guest && current.is_none() && !from_dhcp,
                };
                if take {
                    current = Some(l.ip());
                    tracing::info!(instance = id, tap = tap2, ?l, "guest address learned");
                    if out.send(l).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| NcError::Internal(format!("starting the address learner: {e}")))?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(Learner { stop }),
        Ok(Err(e)) => Err(NcError::Internal(format!(
            "network: watching tap {tap} for the guest's address: {e}"
        ))),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            Err(NcError::Internal(format!(
                "network: the address learner on {tap} did not start"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Message};
    use dhcproto::{Encodable, Encoder};

    const MAC: [u8; 6] = [0xd0, 0x0d, 0x0b, 0xad, 0xc0, 0xde];

    fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x52, 0x54, 0, 0, 0, 1]);
        f.extend(ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend([10, 77, 0, 1, 255, 255, 255, 255]);
        f.extend(ip);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        f
    }

    fn dhcp(kind: MessageType, chaddr: &[u8], yiaddr: Ipv4Addr) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_chaddr(chaddr)
            .set_yiaddr(yiaddr);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    fn arp(sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(sha);
        f.extend(ETHERTYPE_ARP.to_be_bytes());
        f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend(sha);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend([10, 77, 0, 1]);
        f
    }

    #[test]
    fn learns_from_a_dhcpack_to_its_mac_only() {
        let ip = Ipv4Addr::new(10, 77, 0, 123);
        let ack = udp_frame(67, 68, &dhcp(MessageType::Ack, &MAC, ip));
        assert_eq!(inspect(&ack, &MAC), Some(Learned::Dhcp(ip)));
        // An offer is not a lease; an ACK to another MAC is someone else's.
        let offer = udp_frame(67, 68, &dhcp(MessageType::Offer, &MAC, ip));
        assert_eq!(inspect(&offer, &MAC), None);
        let other = udp_frame(67, 68, &dhcp(MessageType::Ack, &[1, 2, 3, 4, 5, 6], ip));
        assert_eq!(inspect(&other, &MAC), None);
        // Not DHCP's ports; truncated; garbage.
        let wrong = udp_frame(53, 68, &dhcp(MessageType::Ack, &MAC, ip));
        assert_eq!(inspect(&wrong, &MAC), None);
        assert_eq!(inspect(&ack[..40], &MAC), None);
        assert_eq!(inspect(&udp_frame(67, 68, b"junk"), &MAC), None);
        assert_eq!(inspect(&[], &MAC), None);
    }

    #[test]
    fn learns_from_arp_of_its_mac_but_not_probes() {
        assert_eq!(
            inspect(&arp(MAC, [10, 77, 0, 9]), &MAC),
            Some(Learned::Arp(Ipv4Addr::new(10, 77, 0, 9)))
        );
        assert_eq!(inspect(&arp(MAC, [0, 0, 0, 0]), &MAC), None);
        assert_eq!(
            inspect(&arp([2, 0, 0, 0, 0, 1], [10, 77, 0, 9]), &MAC),
            None
        );
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("d0:0d:0b:ad:c0:de"), Some(MAC));
        assert_eq!(parse_mac("d0:0d:0b:ad:c0"), None);
        assert_eq!(parse_mac("d0:0d:0b:ad:c0:de:00"), None);
        assert_eq!(parse_mac("d0:0d:0b:ad:c0:zz"), None);
    }
}
