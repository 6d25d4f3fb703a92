//! NBD STARTTLS: X.509 server credentials and the per-connection TLS policy.
//!
//! TLS goes through OpenSSL (the project's one TLS library) with `tokio-openssl`
//! as the async adapter. Clients speak it the way qemu (`tls-creds-x509` object,
//! `endpoint=client`) and libnbd (`nbds://` URIs, `tls-certificates=DIR`) do: they
//! verify the server certificate against a CA found as `ca-cert.pem` in a
//! directory, and check that the host they connected to is in its
//! subjectAltName.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509Name;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use super::error::NbdError;

/// Which clients must use TLS (given a [`TlsConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS: STARTTLS is answered with `NBD_REP_ERR_POLICY` (NOTLS).
    Off,
    /// TLS required for clients on other hosts (FORCEDTLS); loopback and Unix
    /// socket clients may use it or not.
    #[default]
    Auto,
    /// TLS required for every client (FORCEDTLS).
    Required,
}

impl TlsMode {
    /// Whether a client at `peer` (`None`: a Unix socket) must negotiate TLS
    /// before any other option.
    pub fn requires_tls(self, peer: Option<IpAddr>) -> bool {
        match self {
            TlsMode::Off => false,
            TlsMode::Required => true,
            TlsMode::Auto => !peer.is_none_or(|ip| ip.to_canonical().is_loopback()),
        }
    }
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(TlsMode::Off),
            "auto" => Ok(TlsMode::Auto),
            "required" => Ok(TlsMode::Required),
            other => Err(format!(
                "unknown NBD TLS mode {other:?} (expected \"auto\", \"required\" or \"off\")"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Auto => "auto",
            TlsMode::Required => "required",
        })
    }
}

/// The server's TLS credentials: a certificate chain and its private key, and
/// optionally a CA that client certificates must chain to. TLS 1.2 or later.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: Arc<SslAcceptor>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// `cert_chain`: PEM, the server certificate first, then any intermediates.
    /// `key`: its PEM private key. `client_ca`: when given, clients must present
    /// a certificate issued by one of the PEM CA certificates in that file
    /// (qemu: `verify-peer=on` on the client side's `tls-creds-x509` with its
    /// `client-cert.pem`); by default client certificates are not asked for.
    pub fn from_pem_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> io::Result<TlsConfig> {
        let ctx = |what: &str, path: &Path, e: openssl::error::ErrorStack| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NBD TLS {what} {}: {e}", path.display()),
            )
        };
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(io::Error::other)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(io::Error::other)?;
        b.set_certificate_chain_file(cert_chain)
            .map_err(|e| ctx("certificate", cert_chain, e))?;
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| ctx("private key", key, e))?;
        b.check_private_key()
            .map_err(|e| ctx("private key (does not match the certificate)", key, e))?;
        if let Some(ca) = client_ca {
            b.set_ca_file(ca).map_err(|e| ctx("client CA", ca, e))?;
            let names = X509Name::load_client_ca_file(ca).map_err(|e| ctx("client CA", ca, e))?;
            b.set_client_ca_list(names);
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        // Needed for session resumption once client certificates are verified.
        b.set_session_id_context(b"euca-nbd")
            .map_err(io::Error::other)?;
        Ok(TlsConfig {
            acceptor: Arc::new(b.build()),
        })
    }

    /// Runs the server side of the TLS handshake on `stream` (after the
    /// STARTTLS ACK went out on it).
    pub(crate) async fn accept<S>(&self, stream: S) -> Result<SslStream<S>, NbdError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(self.acceptor.context()).map_err(|e| NbdError::Tls(e.to_string()))?;
        let mut tls = SslStream::new(ssl, stream).map_err(|e| NbdError::Tls(e.to_string()))?;
        Pin::new(&mut tls)
            .accept()
            .await
            .map_err(|e| NbdError::Tls(e.to_string()))?;
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let lo: IpAddr = "127.0.0.5".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        for p in [Some(lo), Some(lo6), Some(mapped), None] {
            assert!(!TlsMode::Auto.requires_tls(p), "{p:?}");
            assert!(TlsMode::Required.requires_tls(p), "{p:?}");
            assert!(!TlsMode::Off.requires_tls(p), "{p:?}");
        }
        assert!(TlsMode::Auto.requires_tls(Some(remote)));
        assert!(!TlsMode::Off.requires_tls(Some(remote)));
        for m in [TlsMode::Off, TlsMode::Auto, TlsMode::Required] {
            assert_eq!(m.to_string().parse::<TlsMode>(), Ok(m));
        }
        assert!("yes".parse::<TlsMode>().is_err());
        assert_eq!(TlsMode::default(), TlsMode::Auto);
    }
}
