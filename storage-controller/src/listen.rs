//! What the two block servers' (NBD, iSCSI) accept loops share: listeners (TCP
//! with keepalive, Unix sockets), the bound on connections per listener and per
//! source address, and the loop that admits connections, stops on shutdown and
//! drains them.
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// A listener: a stream and the peer's address (`None` for Unix sockets).
pub(crate) trait Acceptor: Send {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + std::os::fd::AsFd + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Option<IpAddr>)>> + Send;
}

pub(crate) struct TcpAcceptor(pub(crate) tokio::net::TcpListener);

impl Acceptor for TcpAcceptor {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, Option<IpAddr>)> {
        let (stream, addr) = self.0.accept().await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        set_keepalive(&stream);
        Ok((stream, Some(addr.ip().to_canonical())))
    }
}

pub(crate) struct UnixAcceptor(pub(crate) tokio::net::UnixListener);

impl Acceptor for UnixAcceptor {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Stream, Option<IpAddr>)> {
        let (stream, _) = self.0.accept().await?;
        Ok((stream, None))
    }
}

/// TCP keepalive (idle 60 s, then 6 probes 10 s apart) so that connections to
/// clients that vanished without a FIN are eventually closed.
fn set_keepalive(stream: &tokio::net::TcpStream) {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
}

/// How many connections one listener holds at most, in all and per source
/// address (Unix-socket clients, which have none, count only in all).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) total: usize,
    pub(crate) per_source: usize,
}

/// One admitted connection's share of the caps, given back when it is dropped.
struct Admission {
    _permit: OwnedSemaphorePermit,
    _source: Option<SourceSlot>,
}

/// One connection's share of its source address's cap.
struct SourceSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Accepts on `acceptor` until `shutdown` resolves, running `serve(stream, peer,
/// stop)` for each connection the caps admit (the others are closed at once).
/// Then `stop` turns true, and the connections get `drain` to end before they
/// are aborted.
pub(crate) async fn accept_loop<A, F, Fut>(
    proto: &'static str,
    acceptor: A,
    shutdown: impl Future<Output = ()> + Send,
    caps: Caps,
    drain: Duration,
    serve: F,
) where
    A: Acceptor,
    F: Fn(A::Stream, Option<IpAddr>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(caps.total.max(1)));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = acceptor.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(?peer, "{proto} connection limit reached; dropping client");
                        continue;
                    };
                    let source = match peer {
                        Some(ip) => match SourceSlot::take(&per_source, ip, caps.per_source.max(1)) {
                            Some(s) => Some(s),
                            None => {
                                tracing::warn!(%ip, "{proto} per-source connection limit reached; dropping client");
                                continue;
                            }
                        },
                        None => None,
                    };
                    let admitted = Admission { _permit: permit, _source: source };
                    let conn = serve(stream, peer, stop_rx.clone());
                    conns.spawn(async move {
                        let _admitted = admitted;
                        conn.await;
                    });
                }
                Err(e) => {
                    // EMFILE, ECONNABORTED...: keep serving.
                    tracing::warn!(error = %e, "{proto} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(acceptor);
    stop_tx.send_replace(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("{proto} connections still busy after {drain:?}; aborting them");
        conns.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_slots_count_and_give_back() {
        let map = Arc::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = SourceSlot::take(&map, ip, 2).unwrap();
        let b = SourceSlot::take(&map, ip, 2).unwrap();
        assert!(SourceSlot::take(&map, ip, 2).is_none());
        assert!(SourceSlot::take(&map, "10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        let c = SourceSlot::take(&map, ip, 2).unwrap();
        drop((b, c));
        assert!(map.lock().unwrap().is_empty());
    }
}
