//! Errors that end a connection, and device errors as the NBD error values clients get.
use std::io;

use super::proto;

/// Errors that end a connection. Request-level failures are NBD error replies and
/// never show up here.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("client sent unknown or unoffered handshake flags {0:#x}")]
    BadClientFlags(u32),
    #[error("bad option magic {0:#x}")]
    BadOptionMagic(u64),
    #[error("bad request magic {0:#x}")]
    BadRequestMagic(u32),
    #[error("NBD_OPT_EXPORT_NAME for an export this client cannot open")]
    ExportNameRefused,
    #[error("option payload of {0} bytes is too large")]
    OptionTooLarge(u32),
    #[error("write request of {0} bytes exceeds the maximum payload")]
    OversizedWrite(u32),
    #[error("handshake not finished in time")]
    HandshakeTimeout,
    #[error("client skipped STARTTLS, which this server requires of it")]
    TlsRequired,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Maps a device error to the NBD error value sent to the client.
pub(crate) fn nbd_errno(e: &io::Error) -> u32 {
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EPERM | libc::EACCES | libc::EROFS => proto::EPERM,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => proto::ENOSPC,
            libc::EINVAL => proto::EINVAL,
            libc::ENOMEM => proto::ENOMEM,
            libc::EOVERFLOW => proto::EOVERFLOW,
            libc::ESHUTDOWN => proto::ESHUTDOWN,
            _ => proto::EIO,
        };
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => proto::EPERM,
        io::ErrorKind::StorageFull => proto::ENOSPC,
        io::ErrorKind::InvalidInput => proto::EINVAL,
        io::ErrorKind::OutOfMemory => proto::ENOMEM,
        _ => proto::EIO,
    }
}
