//! Fixed newstyle negotiation, up to the start of transmission.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::error::NbdError;
use super::proto::*;
use crate::export::{ExportEntry, ExportTable, Protocol};

/// Largest option payload we read into memory; bigger known options are drained
/// and refused with `NBD_REP_ERR_TOO_BIG`.
const MAX_OPTION_PAYLOAD: u32 = 64 << 10;

/// What the handshake settled on.
pub(crate) struct Negotiated {
    pub(crate) name: String,
    pub(crate) entry: Arc<ExportEntry>,
    /// Keeps this connection registered on the export until it is dropped.
    pub(crate) close_rx: watch::Receiver<bool>,
    pub(crate) structured: bool,
    pub(crate) base_allocation: bool,
}

/// The meta context selection made by SET_META_CONTEXT (valid for one export name).
struct MetaSelection {
    export: Vec<u8>,
    base_allocation: bool,
}

struct State<'a> {
    exports: &'a ExportTable,
    peer: Option<IpAddr>,
    no_zeroes: bool,
    structured: bool,
    meta: Option<MetaSelection>,
}

/// Transmission flags for `entry` given what was negotiated.
pub(crate) fn transmission_flags(entry: &ExportEntry, structured: bool) -> u16 {
    let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_CACHE;
    if entry.export.read_only {
        f |= TFLAG_READ_ONLY;
    } else {
        f |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
    }
    if structured {
        f |= TFLAG_SEND_DF;
    }
    if entry.export.device.multi_conn_safe() {
        f |= TFLAG_CAN_MULTI_CONN;
    }
    f
}

/// What the client said in reply to the greeting.
pub(crate) struct ClientFlags {
    pub(crate) fixed_newstyle: bool,
    pub(crate) no_zeroes: bool,
}

/// How STARTTLS and the other options are treated in one negotiation phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsPhase {
    /// NOTLS: STARTTLS is refused with `NBD_REP_ERR_POLICY`.
    Unavailable,
    /// TLS may be started; every option works without it.
    Optional,
    /// FORCEDTLS before STARTTLS: everything but STARTTLS and ABORT gets
    /// `NBD_REP_ERR_TLS_REQD`, and EXPORT_NAME a hard disconnect.
    Forced,
    /// Inside TLS: a second STARTTLS is `NBD_REP_ERR_INVALID`.
    Active,
}

/// How a negotiation phase ended.
pub(crate) enum Step {
    /// The client chose an export: transmission starts.
    Transmit(Negotiated),
    /// STARTTLS was acknowledged: the TLS handshake comes next, then a fresh
    /// negotiation inside TLS.
    StartTls,
    /// The client aborted or left before choosing an export.
    Closed,
}

/// Sends the greeting and reads the client flags. `Ok(None)`: the client left.
pub(crate) async fn greet<S>(stream: &mut S) -> Result<Option<ClientFlags>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&greeting).await?;
    stream.flush().await?;

    let mut cflags = [0u8; 4];
    if !read_or_eof(stream, &mut cflags).await? {
        return Ok(None);
    }
    let cflags = u32::from_be_bytes(cflags);
    if cflags & !(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES) != 0 {
        return Err(NbdError::BadClientFlags(cflags));
    }
    Ok(Some(ClientFlags {
        fixed_newstyle: cflags & CLIENT_FLAG_FIXED_NEWSTYLE != 0,
        no_zeroes: cflags & CLIENT_FLAG_NO_ZEROES != 0,
    }))
}

/// Runs option haggling until the client picks an export, starts TLS or leaves.
/// Each call starts from a clean slate (structured replies and meta contexts
/// unset), which is what "forget everything negotiated before STARTTLS" needs.
pub(crate) async fn options<S>(
    stream: &mut S,
    exports: &ExportTable,
    peer: Option<IpAddr>,
    no_zeroes: bool,
    tls: TlsPhase,
) -> Result<Step, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut st = State {
        exports,
        peer,
        no_zeroes,
        structured: false,
        meta: None,
    };

    loop {
        let mut hdr = [0u8; 16];
        if !read_or_eof(stream, &mut hdr).await? {
            return Ok(Step::Closed);
        }
        let magic = u64::from_be_bytes(be8(&hdr[0..8]));
        if magic != IHAVEOPT {
            return Err(NbdError::BadOptionMagic(magic));
        }
        let opt = u32::from_be_bytes(be4(&hdr[8..12]));
        let len = u32::from_be_bytes(be4(&hdr[12..16]));

        if tls == TlsPhase::Forced && !matches!(opt, OPT_STARTTLS | OPT_ABORT) {
            if opt == OPT_EXPORT_NAME {
                // Can't answer with an error: hard disconnect.
                return Err(NbdError::TlsRequired);
            }
            drain(stream, u64::from(len)).await?;
            send(
                stream,
                &rep(
                    opt,
                    REP_ERR_TLS_REQD,
                    b"TLS is required: send STARTTLS first",
                ),
            )
            .await?;
            continue;
        }

        let known = matches!(
            opt,
            OPT_EXPORT_NAME
                | OPT_ABORT
                | OPT_LIST
                | OPT_STARTTLS
                | OPT_INFO
                | OPT_GO
                | OPT_STRUCTURED_REPLY
                | OPT_LIST_META_CONTEXT
                | OPT_SET_META_CONTEXT
        );
        if !known {
            // Includes EXTENDED_HEADERS, which we don't implement yet.
            drain(stream, u64::from(len)).await?;
            tracing::debug!(opt, "unsupported NBD option");
            send(stream, &rep(opt, REP_ERR_UNSUP, b"option not supported")).await?;
            continue;
        }
        if len > MAX_OPTION_PAYLOAD {
            if opt == OPT_EXPORT_NAME {
                // Can't answer with an error: hard disconnect.
                return Err(NbdError::OptionTooLarge(len));
            }
            drain(stream, u64::from(len)).await?;
            send(
                stream,
                &rep(opt, REP_ERR_TOO_BIG, b"option payload too large"),
            )
            .await?;
            continue;
        }
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await?;

        match opt {
            OPT_EXPORT_NAME => {
                let Some((entry, close_rx)) = exports.open(&payload, peer, Protocol::Nbd) else {
                    return Err(NbdError::ExportNameRefused);
                };
                let n = st.finish(payload, entry, close_rx);
                let flags = transmission_flags(&n.entry, n.structured);
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&n.entry.export.device.size().to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                if !st.no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                send(stream, &out).await?;
                return Ok(Step::Transmit(n));
            }
            OPT_ABORT => {
                // Best effort: the client may already be gone.
                let _ = send(stream, &rep(opt, REP_ACK, b"")).await;
                return Ok(Step::Closed);
            }
            OPT_LIST => {
                if !payload.is_empty() {
                    send(stream, &rep(opt, REP_ERR_INVALID, b"LIST takes no data")).await?;
                    continue;
                }
                let mut out = Vec::new();
                for (name, description) in exports.list_for(peer, Protocol::Nbd) {
                    let mut data = Vec::with_capacity(4 + name.len() + description.len());
                    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    data.extend_from_slice(name.as_bytes());
                    data.extend_from_slice(description.as_bytes());
                    out.extend_from_slice(&rep(opt, REP_SERVER, &data));
                }
                out.extend_from_slice(&rep(opt, REP_ACK, b""));
                send(stream, &out).await?;
            }
            OPT_STARTTLS => {
                let reply = if !payload.is_empty() {
                    rep(opt, REP_ERR_INVALID, b"STARTTLS takes no data")
                } else {
                    match tls {
                        TlsPhase::Unavailable => {
                            rep(opt, REP_ERR_POLICY, b"TLS is not available on this server")
                        }
                        TlsPhase::Active => rep(opt, REP_ERR_INVALID, b"TLS is already active"),
                        TlsPhase::Optional | TlsPhase::Forced => {
                            send(stream, &rep(opt, REP_ACK, b"")).await?;
                            return Ok(Step::StartTls);
                        }
                    }
                };
                send(stream, &reply).await?;
            }
            OPT_STRUCTURED_REPLY => {
                if payload.is_empty() {
                    st.structured = true;
                    send(stream, &rep(opt, REP_ACK, b"")).await?;
                } else {
                    send(
                        stream,
                        &rep(opt, REP_ERR_INVALID, b"STRUCTURED_REPLY takes no data"),
                    )
                    .await?;
                }
            }
            OPT_INFO | OPT_GO => {
                if let Some(n) = st.info_or_go(stream, opt, payload).await? {
                    return Ok(Step::Transmit(n));
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                st.meta_context(stream, opt, &payload).await?;
            }
            // Not reached: `known` filtered everything else.
            _ => send(stream, &rep(opt, REP_ERR_UNSUP, b"option not supported")).await?,
        }
    }
}

impl State<'_> {
    fn finish(
        &self,
        name: Vec<u8>,
        entry: Arc<ExportEntry>,
        close_rx: watch::Receiver<bool>,
    ) -> Negotiated {
        let base_allocation = self.structured
            && self
                .meta
                .as_ref()
                .is_some_and(|m| m.base_allocation && m.export == name);
        Negotiated {
            name: String::from_utf8_lossy(&name).into_owned(),
            entry,
            close_rx,
            structured: self.structured,
            base_allocation,
        }
    }

    async fn info_or_go<S>(
        &mut self,
        stream: &mut S,
        opt: u32,
        payload: Vec<u8>,
    ) -> Result<Option<Negotiated>, NbdError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Some((name, requests)) = parse_info_request(&payload) else {
            send(
                stream,
                &rep(opt, REP_ERR_INVALID, b"malformed INFO/GO request"),
            )
            .await?;
            return Ok(None);
        };
        // Same answer whether the export doesn't exist or this peer may not see it.
        let opened = if opt == OPT_GO {
            self.exports.open(name, self.peer, Protocol::Nbd)
        } else {
            self.exports
                .lookup(name, self.peer, Protocol::Nbd)
                .map(|e| (e, watch::channel(false).1))
        };
        let Some((entry, close_rx)) = opened else {
            send(stream, &rep(opt, REP_ERR_UNKNOWN, b"unknown export")).await?;
            return Ok(None);
        };
        let flags = transmission_flags(&entry, self.structured);
        let mut out = Vec::new();
        let mut info = Vec::with_capacity(12);
        info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        info.extend_from_slice(&entry.export.device.size().to_be_bytes());
        info.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&rep(opt, REP_INFO, &info));
        if requests.contains(&INFO_NAME) {
            let mut info = INFO_NAME.to_be_bytes().to_vec();
            info.extend_from_slice(name);
            out.extend_from_slice(&rep(opt, REP_INFO, &info));
        }
        let description = entry.export.description.as_bytes();
        if requests.contains(&INFO_DESCRIPTION) && !description.is_empty() {
            let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
            info.extend_from_slice(&description[..description.len().min(MAX_STRING)]);
            out.extend_from_slice(&rep(opt, REP_INFO, &info));
        }
        // Always sent: our constraints are the protocol defaults, so they don't
        // restrict a client that didn't ask.
        let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        info.extend_from_slice(&MIN_BLOCK.to_be_bytes());
        info.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
        info.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&rep(opt, REP_INFO, &info));
        out.extend_from_slice(&rep(opt, REP_ACK, b""));
        send(stream, &out).await?;
        if opt == OPT_GO {
            let name = name.to_vec();
            return Ok(Some(self.finish(name, entry, close_rx)));
        }
        Ok(None)
    }

    async fn meta_context<S>(
        &mut self,
        stream: &mut S,
        opt: u32,
        payload: &[u8],
    ) -> Result<(), NbdError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if !self.structured {
            send(
                stream,
                &rep(opt, REP_ERR_INVALID, b"negotiate structured replies first"),
            )
            .await?;
            return Ok(());
        }
        let Some((name, queries)) = parse_meta_request(payload) else {
            send(
                stream,
                &rep(opt, REP_ERR_INVALID, b"malformed meta context request"),
            )
            .await?;
            return Ok(());
        };
        if self
            .exports
            .lookup(name, self.peer, Protocol::Nbd)
            .is_none()
        {
            send(stream, &rep(opt, REP_ERR_UNKNOWN, b"unknown export")).await?;
            return Ok(());
        }
        let mut out = Vec::new();
        if opt == OPT_LIST_META_CONTEXT {
            // No query: everything we have. `base:` lists the base namespace.
            let base = queries.is_empty()
                || queries
                    .iter()
                    .any(|q| *q == "base:" || *q == META_BASE_ALLOCATION);
            if base {
                out.extend_from_slice(&meta_reply(opt, 0, META_BASE_ALLOCATION));
            }
        } else {
            let base = queries.contains(&META_BASE_ALLOCATION);
            if base {
                out.extend_from_slice(&meta_reply(
                    opt,
                    META_ID_BASE_ALLOCATION,
                    META_BASE_ALLOCATION,
                ));
            }
            self.meta = Some(MetaSelection {
                export: name.to_vec(),
                base_allocation: base,
            });
        }
        out.extend_from_slice(&rep(opt, REP_ACK, b""));
        send(stream, &out).await?;
        Ok(())
    }
}

/// Bytes-reading cursor that never panics.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > MAX_STRING {
            return None;
        }
        self.take(len)
    }
}

/// INFO/GO payload: u32 name length, name, u16 count, count × u16 info type.
pub fn parse_info_request(p: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let mut c = Cursor(p);
    let name = c.string()?;
    let n = c.u16()?;
    let mut requests = Vec::with_capacity(usize::from(n).min(16));
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.0.is_empty().then_some((name, requests))
}

/// LIST/SET_META_CONTEXT payload: export name, u32 count, count × (u32 len, query).
pub fn parse_meta_request(p: &[u8]) -> Option<(&[u8], Vec<&str>)> {
    let mut c = Cursor(p);
    let name = c.string()?;
    let n = c.u32()?;
    let mut queries = Vec::new();
    for _ in 0..n {
        queries.push(std::str::from_utf8(c.string()?).ok()?);
    }
    c.0.is_empty().then_some((name, queries))
}

fn rep(opt: u32, ty: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn meta_reply(opt: u32, id: u32, name: &str) -> Vec<u8> {
    let mut data = id.to_be_bytes().to_vec();
    data.extend_from_slice(name.as_bytes());
    rep(opt, REP_META_CONTEXT, &data)
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Fills `buf`; false on a clean EOF before the first byte.
async fn read_or_eof<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> std::io::Result<bool> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads and discards `n` bytes through a small buffer.
pub(crate) async fn drain<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn be4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn be8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_request_parsing_is_bounded() {
        let mut p = Vec::new();
        p.extend_from_slice(&3u32.to_be_bytes());
        p.extend_from_slice(b"vol");
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(&INFO_NAME.to_be_bytes());
        p.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        let (name, req) = parse_info_request(&p).unwrap();
        assert_eq!(name, b"vol");
        assert_eq!(req, vec![INFO_NAME, INFO_BLOCK_SIZE]);
        // Truncations and trailing bytes are refused, never a panic.
        for cut in 0..p.len() {
            assert!(parse_info_request(&p[..cut]).is_none(), "cut {cut}");
        }
        let mut long = p.clone();
        long.push(0);
        assert!(parse_info_request(&long).is_none());
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(b"xx");
        assert!(parse_info_request(&huge).is_none());
    }

    #[test]
    fn meta_request_parsing() {
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(b"v");
        p.extend_from_slice(&2u32.to_be_bytes());
        for q in ["base:", "qemu:dirty-bitmap:x"] {
            p.extend_from_slice(&(q.len() as u32).to_be_bytes());
            p.extend_from_slice(q.as_bytes());
        }
        let (name, q) = parse_meta_request(&p).unwrap();
        assert_eq!(name, b"v");
        assert_eq!(q, vec!["base:", "qemu:dirty-bitmap:x"]);
        for cut in 0..p.len() {
            assert!(parse_meta_request(&p[..cut]).is_none(), "cut {cut}");
        }
        let mut many = Vec::new();
        many.extend_from_slice(&0u32.to_be_bytes());
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta_request(&many).is_none());
    }
}
