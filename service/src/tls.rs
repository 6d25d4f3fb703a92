//! Optional TLS on TCP listeners (`[service] tls_cert` / `tls_key`), through
//! OpenSSL (the project's one TLS library, as for NBD) with `tokio-openssl`.
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;

#[derive(Debug, thiserror::Error)]
#[error("TLS credentials {what}: {source}")]
pub struct TlsError {
    what: String,
    source: openssl::error::ErrorStack,
}

/// Server credentials (a PEM certificate chain and its key); TLS 1.2 or later,
/// Mozilla's intermediate settings. Cheap to clone.
#[derive(Clone)]
pub struct Tls(Arc<SslAcceptor>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let err = |what: String| move |source| TlsError { what, source };
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(err("setup".into()))?;
        b.set_certificate_chain_file(cert)
            .map_err(err(format!("certificate {}", cert.display())))?;
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(err(format!("key {}", key.display())))?;
        b.check_private_key()
            .map_err(err("key does not match the certificate".into()))?;
        Ok(Tls(Arc::new(b.build())))
    }

    /// The server side of a handshake on `s`.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: S,
    ) -> io::Result<SslStream<S>> {
        let ssl = Ssl::new(self.0.context()).map_err(io::Error::other)?;
        let mut stream = SslStream::new(ssl, s).map_err(io::Error::other)?;
        Pin::new(&mut stream)
            .accept()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(stream)
    }
}

/// A connection, in clear or in TLS.
pub(crate) enum MaybeTls<S> {
    Plain(S),
    Tls(Box<SslStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    // Forwarded so that hyper writes a response's head and body chunks with one
    // `writev` instead of first copying every body byte into its own buffer (what it
    // does for a stream that is not vectored: 12 % of Walrus's CPU on a large GET).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
