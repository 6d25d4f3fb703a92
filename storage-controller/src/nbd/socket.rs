//! A plain (non-TLS) connection's socket in transmission: its reading and its
//! sending side each watched by the runtime on a descriptor of their own, so the
//! reading side can stop being watched while a write burst reads the socket on a
//! blocking thread ([`super::burst`]).
//!
//! With one registration for both directions, every segment that reached the
//! socket while a burst ran woke the runtime's event loop (readiness nobody was
//! waiting for): ~1.4 wake-ups per 256 KiB WRITE on an otherwise idle core. The
//! kernel keys epoll registrations by descriptor, so two duplicates of the socket
//! are watched apart: the sending side for `EPOLLOUT` only (data arriving does
//! not wake it), the reading side for `EPOLLIN`, dropped for the length of a
//! burst ([`Unwatch`]) and registered again after it (the kernel reports bytes
//! already there to the new registration; the first read after it is tried at
//! once rather than after the event loop's next turn).
//!
//! Two descriptors per connection, as before the split: bursts and replies sent
//! where they are made use the reading side's descriptor, shared (`Arc`), so a
//! burst that outlives its connection's task (aborted at shutdown) still holds it
//! open and never touches a reused descriptor number.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A reading side the runtime can stop watching while a burst reads the socket.
pub(crate) trait Unwatch {
    /// Stops watching (a no-op where bursts never run).
    fn unwatch(&mut self) {}
    /// Watches again; reads fail until this succeeds.
    fn rewatch(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T> Unwatch for tokio::io::ReadHalf<T> {}

/// Splits a plain connection's socket into its two watched sides and the reading
/// side's descriptor, for bursts and for replies sent where they are made.
/// `stream` is dropped (and stops being watched) once both sides are watched;
/// if they cannot be (no descriptor left), it comes back with the error.
pub(crate) fn split<S: AsFd>(stream: S) -> Result<(Reader, Writer, Arc<OwnedFd>), (S, io::Error)> {
    let sides = || -> io::Result<_> {
        let fd = stream.as_fd();
        let r = Arc::new(fd.try_clone_to_owned()?);
        let w = fd.try_clone_to_owned()?;
        Ok((
            watch(r.clone(), Interest::READABLE)?,
            watch(w, Interest::WRITABLE)?,
            r,
        ))
    };
    match sides() {
        Ok((r, w, shared)) => {
            drop(stream);
            let reader = Reader {
                fd: Watched::Yes(r),
                fresh: true,
            };
            Ok((reader, Writer { fd: w }, shared))
        }
        Err(e) => Err((stream, e)),
    }
}

/// Registers `fd` with the runtime for `interest`.
fn watch<T: AsRawFd>(fd: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: only called with an `OwnedFd` or an `Arc` of one: an open
    // descriptor that stays open, and is the one `as_raw_fd` returns, for as long
    // as the `AsyncFd` holds it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

enum Watched {
    Yes(AsyncFd<Arc<OwnedFd>>),
    No(Arc<OwnedFd>),
    /// Only if registering again failed (reads fail from then on).
    Gone,
}

/// The reading side (see the module docs).
pub(crate) struct Reader {
    fd: Watched,
    /// Just registered: the next read is tried before waiting for readiness.
    fresh: bool,
}

impl Unwatch for Reader {
    fn unwatch(&mut self) {
        self.fd = match std::mem::replace(&mut self.fd, Watched::Gone) {
            Watched::Yes(fd) => Watched::No(fd.into_inner()),
            other => other,
        };
    }

    fn rewatch(&mut self) -> io::Result<()> {
        self.fd = match std::mem::replace(&mut self.fd, Watched::Gone) {
            Watched::No(fd) => {
                self.fresh = true;
                Watched::Yes(watch(fd, Interest::READABLE)?)
            }
            other => other,
        };
        Ok(())
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Watched::Yes(fd) = &this.fd else {
            return Poll::Ready(Err(io::Error::other("socket not watched for reading")));
        };
        // Once at once after registering: the new registration learns of bytes
        // already there only on the event loop's next turn.
        if std::mem::take(&mut this.fresh) {
            match recv_into(fd.as_raw_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| recv_into(fd.as_raw_fd(), buf)) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One non-blocking `recv` into `buf`'s unfilled part.
fn recv_into(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: recv only writes into the unfilled part, and `assume_init` and
    // `advance` cover only the bytes it reports written.
    unsafe {
        let spare = buf.unfilled_mut();
        let n = recv_raw(fd, spare.as_mut_ptr().cast(), spare.len())?;
        buf.assume_init(n);
        buf.advance(n);
    }
    Ok(())
}

/// The sending side (see the module docs).
pub(crate) struct Writer {
    fd: AsyncFd<OwnedFd>,
}

impl Writer {
    fn poll_send(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match send_vectored(self.fd.as_raw_fd(), bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| send_vectored(fd.as_raw_fd(), bufs)) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: shutdown on a socket we hold.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } == 0 {
            return Poll::Ready(Ok(()));
        }
        let e = io::Error::last_os_error();
        // The client has gone already: nothing left to end.
        Poll::Ready(match e.raw_os_error() {
            Some(libc::ENOTCONN) => Ok(()),
            _ => Err(e),
        })
    }
}

/// `recv(MSG_DONTWAIT)`, retried on `EINTR`; returns at most `len`.
///
/// # Safety
/// `ptr` must be valid for `len` bytes of writes.
pub(super) unsafe fn recv_raw(fd: RawFd, ptr: *mut libc::c_void, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: the caller vouches for `ptr` and `len`.
        let n = unsafe { libc::recv(fd, ptr, len, libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok((n as usize).min(len));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One non-blocking `sendmsg` of `bufs` (no `SIGPIPE`), retried on `EINTR`; the
/// bytes sent.
pub(super) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid; it points at `bufs`, which `IoSlice`
    // lays out as iovecs, valid and only read for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize);
    loop {
        // SAFETY: `msg` is valid for the call (above).
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
