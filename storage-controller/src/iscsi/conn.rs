//! One iSCSI connection: login (security then operational negotiation), then either
//! a discovery session (SendTargets) or a normal session on one target's LUN 0.
//!
//! Commands run one at a time in arrival order, so a command's device I/O is done
//! before the next PDU is read: when a target is removed (detach) or the server
//! stops, the connection ends between PDUs, after every acknowledged write. Write
//! data goes to the device PDU by PDU as it arrives (nothing is staged), so a
//! connection holds at most one data segment of [`TARGET_MAX_RECV_DSL`] plus the
//! small parameter lists of UNMAP, WRITE SAME and COMPARE AND WRITE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::chap;
use super::error::IscsiError;
use super::pdu::{self, op, Pdu, F_CONTINUE, F_FINAL, NO_TAG};
use super::scsi::{self, Collected, Plan, Sense, BLOCK, CHECK_CONDITION, GOOD};
use super::shared::Shared;
use super::text::{self, Params, TARGET_MAX_RECV_DSL};
use crate::device::BlockDevice;
use crate::export::{wait_true, ExportEntry, Protocol};

/// Largest login or text request we accept (all its PDUs together).
const MAX_TEXT: usize = 64 * 1024;
/// Commands the initiator may have outstanding (the CmdSN window).
const CMD_WINDOW: u32 = 32;
/// Largest device read per step of a READ.
const READ_STEP: u64 = 1024 * 1024;
/// TASK SET FULL.
const TASK_SET_FULL: u8 = 0x28;

/// Login status (class << 8 | detail), RFC 7143 §11.13.5.
mod status {
    pub const INITIATOR_ERROR: u16 = 0x0200;
    pub const AUTH_FAILED: u16 = 0x0201;
    pub const NOT_FOUND: u16 = 0x0203;
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    pub const MISSING_PARAMETER: u16 = 0x0207;
    pub const SESSION_TYPE_UNSUPPORTED: u16 = 0x0209;
    pub const NO_SESSION: u16 = 0x020a;
}

/// What a finished login opened.
enum Session {
    Discovery,
    Normal {
        name: String,
        entry: Arc<ExportEntry>,
        close: watch::Receiver<bool>,
    },
}

/// Sequence numbers and negotiated parameters of the connection.
struct Seq {
    stat_sn: u32,
    exp_cmd_sn: u32,
    params: Params,
}

impl Seq {
    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(CMD_WINDOW - 1)
    }

    /// Fills StatSN (advancing it when `advance`), ExpCmdSN and MaxCmdSN.
    fn stamp(&mut self, p: &mut Pdu, advance: bool) {
        p.set_u32(24, self.stat_sn);
        if advance {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        p.set_u32(28, self.exp_cmd_sn);
        p.set_u32(32, self.max_cmd_sn());
    }

    /// Accounts a request's CmdSN. `false`: a non-immediate request outside the
    /// window [ExpCmdSN, MaxCmdSN], which RFC 7143 §3.2.2.1 says to drop silently.
    fn received(&mut self, p: &Pdu) -> bool {
        if p.immediate() {
            return true;
        }
        let sn = p.u32_at(24);
        // Serial-number arithmetic (RFC 1982): distance from ExpCmdSN.
        if sn.wrapping_sub(self.exp_cmd_sn) >= CMD_WINDOW {
            return false;
        }
        if sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
        true
    }
}

pub(crate) async fn run<S>(
    stream: S,
    peer: Option<IpAddr>,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), IscsiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (r, w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(TARGET_MAX_RECV_DSL as usize + 4096, r);
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut seq = Seq {
        stat_sn: 0,
        exp_cmd_sn: 0,
        params: Params::default(),
    };
    let login = tokio::select! {
        r = tokio::time::timeout(
            shared.cfg.login_timeout,
            login(&mut r, &mut w, &mut seq, &shared, peer),
        ) => r.map_err(|_| IscsiError::Timeout("login"))??,
        _ = wait_true(&mut stop) => return Ok(()),
    };
    let Some(session) = login else {
        return Ok(());
    };
    let mut ff = FullFeature {
        w,
        seq,
        shared: &shared,
        peer,
        local,
        tasks: HashMap::new(),
        next_ttt: 1,
        text_rest: None,
        unit: None,
        inflight: JoinSet::new(),
        writes: Vec::new(),
    };
    match session {
        Session::Discovery => {
            tracing::info!(?peer, "iSCSI discovery session");
            // A discovery session never closes for a detach.
            let (_never, close) = watch::channel(false);
            ff.serve(&mut r, close, stop).await
        }
        Session::Normal { name, entry, close } => {
            tracing::info!(?peer, target = %name, "iSCSI session opened");
            ff.unit = Some(UnitCtx {
                iqn: shared.iqn(&name),
                name,
                entry,
            });
            // `close` is this connection's registration on the export: it is
            // dropped only when serving ends, so `ExportTable::remove` waits for it.
            ff.serve(&mut r, close, stop).await
        }
    }
}

// ---------------------------------------------------------------- login

#[derive(Default)]
struct LoginKeys {
    initiator: Option<String>,
    session_type: Option<String>,
    target: Option<String>,
    auth_methods: Option<String>,
    chap: HashMap<String, String>,
}

enum Auth {
    /// Nothing chosen yet.
    Start,
    /// CHAP chosen; waiting for CHAP_A.
    ChapChosen,
    /// Challenge sent.
    ChapChallenged {
        id: u8,
        challenge: [u8; 16],
    },
    Done,
}

async fn login<R, W>(
    r: &mut R,
    w: &mut W,
    seq: &mut Seq,
    shared: &Shared,
    peer: Option<IpAddr>,
) -> Result<Option<Session>, IscsiError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut first = true;
    let mut isid = [0u8; 6];
    let mut pending: Vec<u8> = Vec::new();
    let mut session: Option<Session> = None;
    let mut auth = Auth::Start;
    let mut declared = false;
    loop {
        let Some(req) = pdu::read_pdu(r, MAX_TEXT).await? else {
            return Ok(None);
        };
        if req.opcode() != op::LOGIN {
            return Err(IscsiError::Protocol(format!(
                "opcode {:#04x} before login completed",
                req.opcode()
            )));
        }
        let f = req.flags();
        let (transit, cont) = (f & F_FINAL != 0, f & F_CONTINUE != 0);
        let (csg, nsg) = ((f >> 2) & 3, f & 3);
        let itt = req.itt();
        let opening = first;
        if first {
            first = false;
            isid.copy_from_slice(&req.bhs[8..14]);
            seq.exp_cmd_sn = req.u32_at(24);
            seq.stat_sn = rand::random();
        }
        let respond = |seq: &mut Seq, flags: u8, tsih: u16, st: u16, data: Vec<u8>| {
            let mut p = Pdu::new(op::LOGIN_RSP, flags);
            p.bhs[8..14].copy_from_slice(&isid);
            p.set_u16(14, tsih);
            p.set_u32(16, itt);
            seq.stamp(&mut p, true);
            p.bhs[36] = (st >> 8) as u8;
            p.bhs[37] = st as u8;
            p.with_data(data)
        };
        if opening {
            let failure = if req.bhs[3] > 0 {
                // Version-min above 0: only RFC 7143's version 0 exists.
                Some(status::UNSUPPORTED_VERSION)
            } else if u16::from_be_bytes([req.bhs[14], req.bhs[15]]) != 0 {
                // Adding a connection to, or reinstating, a session: one
                // connection per session, and sessions do not outlive it.
                Some(status::NO_SESSION)
            } else {
                None
            };
            if let Some(st) = failure {
                return fail(w, respond(seq, 0, 0, st, Vec::new()), st).await;
            }
        }
        pending.extend_from_slice(&req.data);
        if pending.len() > MAX_TEXT {
            return Err(IscsiError::Protocol("login text too long".into()));
        }
        if cont {
            // More text follows; answer with an empty PDU, staying in the stage.
            let p = respond(seq, csg << 2, 0, 0, Vec::new());
            pdu::write_pdu(w, &p).await?;
            w.flush().await?;
            continue;
        }
        let mut keys = LoginKeys::default();
        let mut answer: Vec<(String, String)> = Vec::new();
        for (k, v) in text::parse(&std::mem::take(&mut pending))? {
            match k.as_str() {
                "InitiatorName" => keys.initiator = Some(v),
                "SessionType" => keys.session_type = Some(v),
                "TargetName" => keys.target = Some(v),
                "AuthMethod" => keys.auth_methods = Some(v),
                "InitiatorAlias" => {}
                k if k.starts_with("CHAP_") => {
                    keys.chap.insert(k.to_string(), v);
                }
                _ => {
                    let a = seq
                        .params
                        .negotiate(&k, &v)
                        .unwrap_or_else(|| "NotUnderstood".into());
                    if k == "MaxRecvDataSegmentLength" {
                        declared = true;
                    }
                    answer.push((k, a));
                }
            }
        }
        let mut failure: Option<u16> = None;
        if session.is_none() {
            match open_session(&keys, shared, peer) {
                Ok(s) => {
                    if matches!(s, Session::Normal { .. }) {
                        answer.push(("TargetPortalGroupTag".into(), "1".into()));
                    }
                    session = Some(s);
                }
                Err(st) => failure = Some(st),
            }
        }
        let secret = match &session {
            Some(Session::Normal { entry, .. }) => entry.export.chap.clone(),
            _ => None,
        };
        if failure.is_none() {
            failure = authenticate(&keys, secret.as_ref(), &mut auth, &mut answer, csg);
        }
        if failure.is_none() && csg == 1 && !matches!(auth, Auth::Done) {
            if secret.is_some() {
                // The operational stage needs a completed CHAP exchange.
                failure = Some(status::AUTH_FAILED);
            } else {
                auth = Auth::Done;
            }
        }
        let bad_stage = csg > 1 || (transit && nsg != 1 && nsg != 3);
        if failure.is_none() && bad_stage {
            failure = Some(status::INITIATOR_ERROR);
        }
        if let Some(st) = failure {
            return fail(w, respond(seq, csg << 2, 0, st, Vec::new()), st).await;
        }
        if csg == 1 && !declared {
            declared = true;
            answer.push((
                "MaxRecvDataSegmentLength".into(),
                TARGET_MAX_RECV_DSL.to_string(),
            ));
        }
        // Without AuthMethod the security stage defaults to None.
        if csg == 0 && transit && matches!(auth, Auth::Start) && secret.is_none() {
            auth = Auth::Done;
        }
        let can_transit = transit && nsg > csg && matches!(auth, Auth::Done);
        let done = can_transit && nsg == 3;
        let tsih = if done {
            rand::random::<u16>().max(1)
        } else {
            0
        };
        let flags = if can_transit {
            F_FINAL | (csg << 2) | nsg
        } else {
            csg << 2
        };
        let p = respond(seq, flags, tsih, 0, text::encode(&answer));
        pdu::write_pdu(w, &p).await?;
        w.flush().await?;
        if done {
            return Ok(session);
        }
    }
}

async fn fail<W: AsyncWrite + Unpin>(
    w: &mut W,
    p: Pdu,
    st: u16,
) -> Result<Option<Session>, IscsiError> {
    pdu::write_pdu(w, &p).await?;
    w.flush().await?;
    Err(IscsiError::LoginRefused(st))
}

fn open_session(keys: &LoginKeys, shared: &Shared, peer: Option<IpAddr>) -> Result<Session, u16> {
    if keys.initiator.as_deref().is_none_or(str::is_empty) {
        return Err(status::MISSING_PARAMETER);
    }
    match keys.session_type.as_deref().unwrap_or("Normal") {
        "Discovery" => Ok(Session::Discovery),
        "Normal" => {
            let iqn = keys.target.as_deref().ok_or(status::MISSING_PARAMETER)?;
            // Unknown and forbidden targets get the same answer.
            let name = shared.export_name(iqn).ok_or(status::NOT_FOUND)?;
            let (entry, close) = shared
                .exports
                .open(name.as_bytes(), peer, Protocol::Iscsi)
                .ok_or(status::NOT_FOUND)?;
            Ok(Session::Normal {
                name: name.to_string(),
                entry,
                close,
            })
        }
        _ => Err(status::SESSION_TYPE_UNSUPPORTED),
    }
}

/// Runs the security-stage keys; returns a failure status, if any.
fn authenticate(
    keys: &LoginKeys,
    secret: Option<&chap::Chap>,
    auth: &mut Auth,
    answer: &mut Vec<(String, String)>,
    csg: u8,
) -> Option<u16> {
    if let Some(methods) = &keys.auth_methods {
        let offered: Vec<&str> = methods.split(',').collect();
        let chosen = match secret {
            Some(_) if offered.contains(&"CHAP") => "CHAP",
            None if offered.contains(&"None") => "None",
            _ => return Some(status::AUTH_FAILED),
        };
        answer.push(("AuthMethod".into(), chosen.into()));
        *auth = if chosen == "CHAP" {
            Auth::ChapChosen
        } else {
            Auth::Done
        };
    }
    if csg != 0 {
        return None;
    }
    match (&*auth, secret) {
        (Auth::ChapChosen, Some(_)) => {
            if let Some(a) = keys.chap.get("CHAP_A") {
                if !a.split(',').any(|x| x == "5") {
                    return Some(status::AUTH_FAILED);
                }
                let id: u8 = rand::random();
                let challenge: [u8; 16] = rand::random();
                answer.push(("CHAP_A".into(), "5".into()));
                answer.push(("CHAP_I".into(), id.to_string()));
                answer.push(("CHAP_C".into(), chap::encode_binary(&challenge)));
                *auth = Auth::ChapChallenged { id, challenge };
            }
            None
        }
        (Auth::ChapChallenged { id, challenge }, Some(c)) => {
            let (Some(n), Some(r)) = (keys.chap.get("CHAP_N"), keys.chap.get("CHAP_R")) else {
                return None;
            };
            let Some(r) = chap::decode_binary(r) else {
                return Some(status::AUTH_FAILED);
            };
            let user_ok = n.len() == c.user.len()
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    n.as_bytes(),
                    c.user.as_bytes(),
                ));
            if !(chap::verify(*id, &c.secret, challenge, &r) && user_ok) {
                return Some(status::AUTH_FAILED);
            }
            // Mutual CHAP: the initiator challenges us back.
            match (keys.chap.get("CHAP_I"), keys.chap.get("CHAP_C")) {
                (None, None) => {}
                (Some(i), Some(ch)) => {
                    let (Some((tuser, tsecret)), Ok(i), Some(ch)) =
                        (&c.target, i.parse::<u8>(), chap::decode_binary(ch))
                    else {
                        return Some(status::AUTH_FAILED);
                    };
                    // A reflected challenge would let an attacker use us as an oracle.
                    if ch.as_slice() == challenge.as_slice() || ch.len() < 16 {
                        return Some(status::AUTH_FAILED);
                    }
                    answer.push(("CHAP_N".into(), tuser.clone()));
                    answer.push((
                        "CHAP_R".into(),
                        chap::encode_binary(&chap::response(i, tsecret, &ch)),
                    ));
                }
                _ => return Some(status::AUTH_FAILED),
            }
            *auth = Auth::Done;
            None
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- full feature

struct UnitCtx {
    name: String,
    iqn: String,
    entry: Arc<ExportEntry>,
}

/// Where a write command's data goes.
enum Sink {
    Device { base: u64, fua: bool },
    Compare { base: u64, miscompare: Option<u32> },
    Buffer { buf: Vec<u8>, then: Collected },
}

struct WriteTask {
    sink: Sink,
    lun: [u8; 8],
    /// Bytes to take; `full` is what the command's transfer length asks for and
    /// `edtl` what the initiator announced (≥ needed).
    needed: u32,
    full: u64,
    edtl: u32,
    received: u32,
    /// Next offset to solicit with an R2T.
    next_r2t: u32,
    outstanding: Option<u32>,
    r2t_sn: u32,
    error: Option<Sense>,
}

struct FullFeature<'a, W> {
    w: BufWriter<W>,
    seq: Seq,
    shared: &'a Shared,
    peer: Option<IpAddr>,
    local: Option<SocketAddr>,
    tasks: HashMap<u32, WriteTask>,
    next_ttt: u32,
    /// A text answer too long for one PDU: (its TTT, what is left).
    text_rest: Option<(u32, Vec<u8>)>,
    unit: Option<UnitCtx>,
    /// READs of at most [`READ_STEP`] and WRITEs whose data all came with the
    /// command, running on the device while the next commands are read (at most
    /// [`CMD_WINDOW`]); their answers go out as they finish, in any order, as
    /// SCSI's simple task attribute allows.
    inflight: JoinSet<Done>,
    /// WRITEs (no FUA) whose data all came with the command, taken while more
    /// requests are already buffered: they go to the device as one
    /// [`BlockDevice::write_batch`] once the buffer is read (or the batch is full).
    writes: Vec<BatchedWrite>,
}

/// Where the next PDU's header comes from. Through the read buffer, except after a
/// PDU whose data segment was large and left the buffer empty: then the next
/// header is read alone from the stream, so that the next large segment is read
/// straight into its own buffer ([`pdu::read_pdu_past`]) rather than filling the
/// read buffer and being copied out of it (6.6 % of the target's CPU in a sequential
/// write, `perf record`; BENCHMARKS.md).
struct NextHeader {
    bhs: [u8; pdu::BHS_LEN],
    /// Bytes of `bhs` read from the stream so far.
    have: usize,
    /// Read the next header alone.
    alone: bool,
    /// What a read without waiting met, returned by the next [`NextHeader::wait`].
    error: Option<std::io::Error>,
}

impl Default for NextHeader {
    fn default() -> Self {
        NextHeader {
            bhs: [0; pdu::BHS_LEN],
            have: 0,
            alone: false,
            error: None,
        }
    }
}

impl NextHeader {
    fn reads_alone<R: AsyncRead>(&self, r: &BufReader<R>) -> bool {
        self.have > 0 || (self.alone && r.buffer().is_empty())
    }

    /// Waits until a PDU has begun to arrive: `Ok(false)` at the end of the
    /// stream. Cancel-safe: what was read is kept.
    async fn wait<R: AsyncRead + Unpin>(&mut self, r: &mut BufReader<R>) -> std::io::Result<bool> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.have > 0 {
            return Ok(true);
        }
        if !self.reads_alone(r) {
            return Ok(!r.fill_buf().await?.is_empty());
        }
        let n = r.get_mut().read(&mut self.bhs).await?;
        self.have = n;
        Ok(n > 0)
    }

    /// The PDU that has begun to arrive (`None` if the stream ended before it).
    async fn read_pdu<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut BufReader<R>,
        max_data: usize,
    ) -> Result<Option<pdu::Pdu>, IscsiError> {
        let bhs = if self.reads_alone(r) {
            r.get_mut().read_exact(&mut self.bhs[self.have..]).await?;
            self.have = 0;
            self.bhs
        } else {
            match pdu::read_bhs(r).await? {
                Some(bhs) => bhs,
                None => return Ok(None),
            }
        };
        let p = pdu::read_pdu_past(r, bhs, max_data).await?;
        self.alone = p.data.len() >= pdu::LARGE_SEGMENT;
        Ok(Some(p))
    }

    /// Whether a whole further header can be read without waiting (reading what
    /// the stream already holds of it, when headers are read alone).
    async fn more<R: AsyncRead + Unpin>(&mut self, r: &mut BufReader<R>) -> bool {
        if !self.reads_alone(r) {
            return r.buffer().len() >= pdu::BHS_LEN;
        }
        if self.have < pdu::BHS_LEN && self.error.is_none() {
            let mut read = std::pin::pin!(r.get_mut().read(&mut self.bhs[self.have..]));
            match futures::poll!(read.as_mut()) {
                std::task::Poll::Ready(Ok(n)) => self.have += n,
                std::task::Poll::Ready(Err(e)) => self.error = Some(e),
                std::task::Poll::Pending => {}
            }
        }
        self.have == pdu::BHS_LEN
    }
}

/// A WRITE waiting in [`FullFeature::writes`].
struct BatchedWrite {
    itt: u32,
    res: (u8, u32),
    offset: u64,
    data: Bytes,
}

/// At most this many WRITEs go to the device as one batch.
const MAX_BATCH: usize = CMD_WINDOW as usize;

/// A pipelined command that finished on the device.
enum Done {
    Read {
        itt: u32,
        lun: [u8; 8],
        res: (u8, u32),
        data: std::io::Result<Bytes>,
    },
    /// WRITEs (one with FUA, or a batch): (itt, residual) each, and whether
    /// they all succeeded.
    Writes {
        cmds: Vec<(u32, (u8, u32))>,
        ok: bool,
    },
}

enum Flow {
    Continue,
    End,
}

fn residual(edtl: u32, actual: u64) -> (u8, u32) {
    let e = u64::from(edtl);
    if actual > e {
        (0x04, (actual - e).min(u64::from(u32::MAX)) as u32)
    } else if actual < e {
        (0x02, (e - actual) as u32)
    } else {
        (0, 0)
    }
}

fn lun_number(l: &[u8; 8]) -> u64 {
    // Single-level LUN structure: peripheral (00b) or flat (01b) addressing in the
    // first two bytes; anything beyond them names no LUN here.
    if l[2..].iter().any(|&b| b != 0) {
        return u64::MAX;
    }
    match l[0] >> 6 {
        0 | 1 => (u64::from(l[0] & 0x3f) << 8) | u64::from(l[1]),
        _ => u64::MAX,
    }
}

impl<W: AsyncWrite + Unpin + Send> FullFeature<'_, W> {
    async fn serve<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut BufReader<R>,
        close: watch::Receiver<bool>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), IscsiError> {
        let result = self.serve_pdus(r, close, stop).await;
        // Commands already on the device finish before the connection goes (a
        // detach waits for the connection, so for them); their answers are sent
        // when the connection is still fine. Batched WRITEs are received
        // commands too: they go to the device first.
        let answer = result.is_ok();
        if let Some(op) = self.batch_op() {
            self.inflight.spawn(op);
        }
        while let Some(done) = self.inflight.join_next().await {
            if let (true, Ok(d)) = (answer, done) {
                if self.answer(d).await.is_err() {
                    break;
                }
            }
        }
        while self.inflight.join_next().await.is_some() {}
        if answer {
            let _ = self.w.flush().await;
        }
        result
    }

    async fn serve_pdus<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut BufReader<R>,
        mut close: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), IscsiError> {
        let cfg = &self.shared.cfg;
        let mut ping_sent = false;
        let mut next = NextHeader::default();
        loop {
            let room = self.inflight.len() < CMD_WINDOW as usize;
            let ready = tokio::select! {
                // Cancel-safe: what arrives stays buffered (or in `next`).
                r = tokio::time::timeout(cfg.nop_interval, next.wait(r)), if room => r,
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    let done = done.map_err(|e| IscsiError::Protocol(format!("command task: {e}")))?;
                    self.answer(done).await?;
                    if r.buffer().is_empty() {
                        self.w.flush().await?;
                    }
                    continue;
                }
                _ = wait_true(&mut close) => return Ok(()),
                _ = wait_true(&mut stop) => return Ok(()),
            };
            match ready {
                Err(_) if ping_sent => return Err(IscsiError::Timeout("NOP-In ping")),
                Err(_) => {
                    // Idle: ping; the initiator must answer within one more interval.
                    let mut p = Pdu::new(op::NOP_IN, F_FINAL);
                    p.set_u32(16, NO_TAG);
                    p.set_u32(20, self.next_tag());
                    self.seq.stamp(&mut p, false);
                    self.send(p).await?;
                    self.w.flush().await?;
                    ping_sent = true;
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(false)) => return Ok(()),
                Ok(Ok(true)) => ping_sent = false,
            }
            let req = tokio::time::timeout(
                cfg.pdu_timeout,
                next.read_pdu(r, TARGET_MAX_RECV_DSL as usize),
            )
            .await
            .map_err(|_| IscsiError::Timeout("PDU"))??;
            let Some(req) = req else { return Ok(()) };
            let pipelined = req.opcode() == op::SCSI_CMD || req.opcode() == op::DATA_OUT;
            if !pipelined {
                // Task management, logout, text, NOP: after what is on the device.
                self.drain().await?;
            }
            let flow = self.dispatch(req).await?;
            // More requests already here: take them before writing to the socket
            // (and before sending the WRITEs taken so far to the device).
            let more = next.more(r).await;
            if !more || self.writes.len() >= MAX_BATCH {
                self.submit_writes().await?;
            }
            if !more {
                self.w.flush().await?;
            }
            if let Flow::End = flow {
                return Ok(());
            }
        }
    }

    /// Answers a command at once when it completes without waiting (the page cache
    /// took the write, or held the data read); one that has to wait (disk I/O on
    /// the blocking pool) runs on while the next commands are read.
    async fn run_or_pipeline(
        &mut self,
        op: impl std::future::Future<Output = Done> + Send + 'static,
    ) -> Result<(), IscsiError> {
        let mut op = Box::pin(op);
        if let std::task::Poll::Ready(done) = futures::poll!(op.as_mut()) {
            return self.answer(done).await;
        }
        self.inflight.spawn(op);
        Ok(())
    }

    /// The batched WRITEs as one device operation, if there are any.
    fn batch_op(&mut self) -> Option<impl std::future::Future<Output = Done> + Send + 'static> {
        if self.writes.is_empty() {
            return None;
        }
        let dev = self.unit.as_ref()?.entry.export.device.clone();
        let batch = std::mem::take(&mut self.writes);
        let cmds = batch.iter().map(|w| (w.itt, w.res)).collect();
        let writes = batch.into_iter().map(|w| (w.offset, w.data)).collect();
        Some(async move {
            let ok = match dev.write_batch(writes).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "iSCSI write failed");
                    false
                }
            };
            Done::Writes { cmds, ok }
        })
    }

    /// Sends the batched WRITEs to the device.
    async fn submit_writes(&mut self) -> Result<(), IscsiError> {
        match self.batch_op() {
            Some(op) => self.run_or_pipeline(op).await,
            None => Ok(()),
        }
    }

    /// Waits for every pipelined command and sends its answer.
    async fn drain(&mut self) -> Result<(), IscsiError> {
        self.submit_writes().await?;
        while let Some(done) = self.inflight.join_next().await {
            let done = done.map_err(|e| IscsiError::Protocol(format!("command task: {e}")))?;
            self.answer(done).await?;
        }
        Ok(())
    }

    /// The answer to a pipelined command.
    async fn answer(&mut self, done: Done) -> Result<(), IscsiError> {
        match done {
            Done::Read {
                itt,
                lun,
                res,
                data: Ok(data),
            } => {
                let mut sn = 0;
                self.data_in_pieces(itt, &lun, data, 0, true, res, &mut sn)
                    .await
            }
            Done::Read {
                itt, data: Err(e), ..
            } => {
                tracing::warn!(error = %e, "iSCSI read failed");
                self.status(itt, CHECK_CONDITION, Some(Sense::READ_ERROR), (0, 0))
                    .await
            }
            Done::Writes { cmds, ok } => {
                for (itt, res) in cmds {
                    match ok {
                        true => self.status(itt, GOOD, None, res).await?,
                        false => {
                            self.status(itt, CHECK_CONDITION, Some(Sense::WRITE_ERROR), (0, 0))
                                .await?
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn next_tag(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == NO_TAG {
            self.next_ttt = 1;
        }
        t
    }

    async fn send(&mut self, p: Pdu) -> Result<(), IscsiError> {
        pdu::write_pdu(&mut self.w, &p).await?;
        Ok(())
    }

    async fn dispatch(&mut self, req: Pdu) -> Result<Flow, IscsiError> {
        let numbered = matches!(
            req.opcode(),
            op::SCSI_CMD | op::NOP_OUT | op::TEXT | op::TASK_MGMT | op::LOGOUT
        );
        if numbered && !self.seq.received(&req) {
            tracing::debug!(
                cmd_sn = req.u32_at(24),
                "iSCSI request outside the CmdSN window dropped"
            );
            return Ok(Flow::Continue);
        }
        match req.opcode() {
            op::SCSI_CMD => {
                if self.unit.is_none() {
                    return self.reject(&req, 0x05).await;
                }
                self.scsi_command(req).await?;
            }
            op::DATA_OUT => self.data_out(req).await?,
            op::NOP_OUT => {
                if req.itt() != NO_TAG {
                    let mut p = Pdu::new(op::NOP_IN, F_FINAL);
                    p.bhs[8..16].copy_from_slice(&req.bhs[8..16]);
                    p.set_u32(16, req.itt());
                    p.set_u32(20, NO_TAG);
                    self.seq.stamp(&mut p, true);
                    self.send(p.with_data(req.data.clone())).await?;
                }
            }
            op::TEXT => {
                self.text(req).await?;
            }
            op::TASK_MGMT => {
                let function = req.flags() & 0x7f;
                let response = match function {
                    // ABORT TASK: a task not found here has already completed.
                    1 => {
                        self.tasks.remove(&req.u32_at(20));
                        0
                    }
                    // ABORT/CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET.
                    2 | 4 | 5 | 6 | 7 => {
                        self.tasks.clear();
                        0
                    }
                    _ => 5, // not supported
                };
                let mut p = Pdu::new(op::TASK_MGMT_RSP, F_FINAL);
                p.bhs[2] = response;
                p.set_u32(16, req.itt());
                self.seq.stamp(&mut p, true);
                self.send(p).await?;
                if function == 7 {
                    return Ok(Flow::End);
                }
            }
            op::LOGOUT => {
                let mut p = Pdu::new(op::LOGOUT_RSP, F_FINAL);
                // Removing a connection for recovery is not supported (level 0).
                p.bhs[2] = if req.flags() & 0x7f == 2 { 2 } else { 0 };
                p.set_u32(16, req.itt());
                self.seq.stamp(&mut p, true);
                self.send(p).await?;
                return Ok(Flow::End);
            }
            op::SNACK => return self.reject(&req, 0x04).await,
            _ => return self.reject(&req, 0x05).await,
        }
        Ok(Flow::Continue)
    }

    async fn reject(&mut self, req: &Pdu, reason: u8) -> Result<Flow, IscsiError> {
        let mut p = Pdu::new(op::REJECT, F_FINAL);
        p.bhs[2] = reason;
        p.set_u32(16, NO_TAG);
        self.seq.stamp(&mut p, true);
        self.send(p.with_data(req.bhs.to_vec())).await?;
        Ok(Flow::Continue)
    }

    /// SendTargets, and the continuation of a long answer.
    async fn text(&mut self, req: Pdu) -> Result<(), IscsiError> {
        let ttt = req.u32_at(20);
        let body = match self.text_rest.take() {
            Some((t, rest)) if t == ttt => rest,
            _ => {
                let mut answer = Vec::new();
                for (k, v) in text::parse(&req.data)? {
                    if k == "SendTargets" {
                        answer.extend(self.send_targets(&v));
                    } else {
                        answer.push((k, "NotUnderstood".into()));
                    }
                }
                text::encode(&answer)
            }
        };
        let max = self.seq.params.initiator_max_recv_dsl as usize;
        let (now, rest) = body.split_at(body.len().min(max));
        let mut p;
        if rest.is_empty() {
            p = Pdu::new(op::TEXT_RSP, F_FINAL);
            p.set_u32(20, NO_TAG);
        } else {
            p = Pdu::new(op::TEXT_RSP, F_CONTINUE);
            let t = self.next_tag();
            p.set_u32(20, t);
            self.text_rest = Some((t, rest.to_vec()));
        }
        p.set_u32(16, req.itt());
        self.seq.stamp(&mut p, true);
        let p = p.with_data(now.to_vec());
        self.send(p).await
    }

    fn send_targets(&self, which: &str) -> Vec<(String, String)> {
        let portal = match self.local {
            Some(SocketAddr::V4(a)) => format!("{}:{},1", a.ip(), a.port()),
            Some(SocketAddr::V6(a)) => format!("[{}]:{},1", a.ip(), a.port()),
            None => String::new(),
        };
        let names: Vec<String> = match (which, &self.unit) {
            ("", Some(u)) => vec![u.name.clone()],
            ("All", _) => self
                .shared
                .exports
                .list_for(self.peer, Protocol::Iscsi)
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            (iqn, _) => self
                .shared
                .export_name(iqn)
                .filter(|n| {
                    self.shared
                        .exports
                        .lookup(n.as_bytes(), self.peer, Protocol::Iscsi)
                        .is_some()
                })
                .map(|n| vec![n.to_string()])
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        for n in names {
            out.push(("TargetName".into(), self.shared.iqn(&n)));
            if !portal.is_empty() {
                out.push(("TargetAddress".into(), portal.clone()));
            }
        }
        out
    }

    async fn scsi_command(&mut self, req: Pdu) -> Result<(), IscsiError> {
        let Some(u) = &self.unit else { return Ok(()) };
        let itt = req.itt();
        let lun = req.lun();
        let edtl = req.u32_at(20);
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&req.bhs[32..48]);
        let dev = u.entry.export.device.clone();
        let unit = scsi::Unit {
            blocks: dev.size() / BLOCK,
            read_only: u.entry.export.read_only,
            serial: &u.name,
            iqn: &u.iqn,
        };
        let plan = scsi::plan(&cdb, lun_number(&lun), &unit, edtl);
        match plan {
            Plan::Data(v) => self.data_in(itt, &lun, Bytes::from(v), edtl).await,
            Plan::Good => self.status(itt, GOOD, None, residual(edtl, 0)).await,
            Plan::Check(s) => self.status(itt, CHECK_CONDITION, Some(s), (0, 0)).await,
            Plan::Flush => {
                // Stronger than SCSI asks (only commands completed before it):
                // every WRITE already received, batched or on the device, is
                // written before the flush.
                self.drain().await?;
                let s = dev.flush().await.err().map(|_| Sense::WRITE_ERROR);
                self.finish(itt, s, residual(edtl, 0)).await
            }
            Plan::Read { offset, len } => self.read(itt, &lun, dev, offset, len, edtl).await,
            Plan::Write { offset, len, fua } => {
                // An expected length short of the command's writes only what the
                // initiator sends, answered with an overflow residual (as libiscsi's
                // residual tests and other targets do).
                let sink = Sink::Device { base: offset, fua };
                let take = len.min(u64::from(edtl));
                self.start_write(req, sink, take, len).await
            }
            Plan::Compare { offset, len } => {
                let sink = Sink::Compare {
                    base: offset,
                    miscompare: None,
                };
                self.start_write(req, sink, len, len).await
            }
            Plan::Collect { len, then } => {
                let sink = Sink::Buffer {
                    buf: vec![0u8; len as usize],
                    then,
                };
                self.start_write(req, sink, u64::from(len), u64::from(len))
                    .await
            }
        }
    }

    /// GOOD or CHECK CONDITION with `sense`.
    async fn finish(
        &mut self,
        itt: u32,
        sense: Option<Sense>,
        res: (u8, u32),
    ) -> Result<(), IscsiError> {
        match sense {
            None => self.status(itt, GOOD, None, res).await,
            Some(s) => self.status(itt, CHECK_CONDITION, Some(s), res).await,
        }
    }

    async fn status(
        &mut self,
        itt: u32,
        st: u8,
        sense: Option<Sense>,
        (flags, count): (u8, u32),
    ) -> Result<(), IscsiError> {
        let mut p = Pdu::new(op::SCSI_RSP, F_FINAL | flags);
        p.bhs[3] = st;
        p.set_u32(16, itt);
        self.seq.stamp(&mut p, true);
        p.set_u32(44, count);
        if let Some(s) = sense {
            let mut d = vec![0u8, 18];
            d.extend_from_slice(&s.fixed());
            p = p.with_data(d);
        }
        self.send(p).await
    }

    /// Sends `data` as Data-In PDUs (cut to the expected transfer length), the last
    /// one carrying GOOD status.
    async fn data_in(
        &mut self,
        itt: u32,
        lun: &[u8; 8],
        data: Bytes,
        edtl: u32,
    ) -> Result<(), IscsiError> {
        let res = residual(edtl, data.len() as u64);
        let n = data.len().min(edtl as usize);
        if n == 0 {
            return self.status(itt, GOOD, None, res).await;
        }
        let mut sn = 0;
        self.data_in_pieces(itt, lun, data.slice(..n), 0, true, res, &mut sn)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn data_in_pieces(
        &mut self,
        itt: u32,
        lun: &[u8; 8],
        data: Bytes,
        offset: u32,
        last: bool,
        res: (u8, u32),
        data_sn: &mut u32,
    ) -> Result<(), IscsiError> {
        let max = self.seq.params.initiator_max_recv_dsl as usize;
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + max).min(data.len());
            let final_piece = last && end == data.len();
            let flags = if final_piece {
                F_FINAL | 0x01 | res.0
            } else {
                0
            };
            let mut p = Pdu::new(op::DATA_IN, flags);
            p.bhs[8..16].copy_from_slice(lun);
            p.set_u32(16, itt);
            p.set_u32(20, NO_TAG);
            if final_piece {
                p.bhs[3] = GOOD;
                self.seq.stamp(&mut p, true);
                p.set_u32(44, res.1);
            } else {
                self.seq.stamp(&mut p, false);
                p.set_u32(24, 0);
            }
            p.set_u32(36, *data_sn);
            *data_sn += 1;
            p.set_u32(40, offset + pos as u32);
            self.send(p.with_data(data.slice(pos..end))).await?;
            pos = end;
        }
        Ok(())
    }

    async fn read(
        &mut self,
        itt: u32,
        lun: &[u8; 8],
        dev: Arc<dyn BlockDevice>,
        offset: u64,
        len: u64,
        edtl: u32,
    ) -> Result<(), IscsiError> {
        let res = residual(edtl, len);
        let total = len.min(u64::from(edtl));
        if total == 0 {
            return self.status(itt, GOOD, None, res).await;
        }
        if total <= READ_STEP {
            // One device read: it runs while the next commands come in.
            let lun = *lun;
            let op = async move {
                let data = dev.read(offset, total as u32).await;
                Done::Read {
                    itt,
                    lun,
                    res,
                    data,
                }
            };
            return self.run_or_pipeline(op).await;
        }
        let mut done = 0u64;
        let mut sn = 0u32;
        while done < total {
            let step = (total - done).min(READ_STEP);
            let data = match dev.read(offset + done, step as u32).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "iSCSI read failed");
                    return self
                        .status(itt, CHECK_CONDITION, Some(Sense::READ_ERROR), (0, 0))
                        .await;
                }
            };
            let last = done + step == total;
            self.data_in_pieces(itt, lun, data, done as u32, last, res, &mut sn)
                .await?;
            done += step;
        }
        Ok(())
    }

    /// Starts taking `len` bytes for a command whose full transfer is `full`.
    async fn start_write(
        &mut self,
        req: Pdu,
        sink: Sink,
        len: u64,
        full: u64,
    ) -> Result<(), IscsiError> {
        let itt = req.itt();
        let edtl = req.u32_at(20);
        if u64::from(edtl) < len || (len > 0 && req.flags() & 0x20 == 0) {
            // The initiator would not send all the data the command needs.
            let res = residual(edtl, len);
            return self
                .status(itt, CHECK_CONDITION, Some(Sense::TRANSFER_TOO_SHORT), res)
                .await;
        }
        if self.tasks.len() >= CMD_WINDOW as usize || self.tasks.contains_key(&itt) {
            return self.status(itt, TASK_SET_FULL, None, (0, 0)).await;
        }
        let needed = len as u32;
        let p = &self.seq.params;
        let imm = req.data.len() as u32;
        let unsolicited = if p.initial_r2t {
            imm
        } else {
            p.first_burst.min(edtl).max(imm)
        };
        if let (Sink::Device { base, fua }, Some(u)) = (&sink, &self.unit) {
            if needed > 0 && req.data.len() as u32 >= needed && !self.tasks.contains_key(&itt) {
                // All its data came with the command: it runs while the next
                // commands come in, batched with the WRITEs that came with it.
                let (base, fua) = (*base, *fua);
                let data = req.data.slice(..needed as usize);
                let res = residual(edtl, full);
                if !fua {
                    self.writes.push(BatchedWrite {
                        itt,
                        res,
                        offset: base,
                        data,
                    });
                    return Ok(());
                }
                let dev = u.entry.export.device.clone();
                let op = async move {
                    let ok = match dev.write(base, data, fua).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "iSCSI write failed");
                            false
                        }
                    };
                    Done::Writes {
                        cmds: vec![(itt, res)],
                        ok,
                    }
                };
                return self.run_or_pipeline(op).await;
            }
        }
        let mut task = WriteTask {
            sink,
            lun: req.lun(),
            needed,
            full,
            edtl,
            received: 0,
            next_r2t: unsolicited.min(needed),
            outstanding: None,
            r2t_sn: 0,
            error: None,
        };
        if !req.data.is_empty() {
            Self::feed(&mut task, &self.unit, 0, req.data).await;
        }
        self.advance(itt, task).await
    }

    async fn data_out(&mut self, req: Pdu) -> Result<(), IscsiError> {
        let itt = req.itt();
        // Data for a task already answered (refused, aborted) is dropped.
        let Some(mut task) = self.tasks.remove(&itt) else {
            return Ok(());
        };
        let ttt = req.u32_at(20);
        let offset = req.u32_at(40);
        if req.flags() & F_FINAL != 0 && task.outstanding == Some(ttt) {
            task.outstanding = None;
        }
        Self::feed(&mut task, &self.unit, offset, req.data).await;
        self.advance(itt, task).await
    }

    /// Completes the task once all its data is in, else solicits more.
    async fn advance(&mut self, itt: u32, mut task: WriteTask) -> Result<(), IscsiError> {
        if task.received >= task.needed {
            return self.complete(itt, task).await;
        }
        if task.outstanding.is_none() && task.next_r2t < task.needed {
            let len = self.seq.params.max_burst.min(task.needed - task.next_r2t);
            let ttt = self.next_tag();
            let mut p = Pdu::new(op::R2T, F_FINAL);
            p.bhs[8..16].copy_from_slice(&task.lun);
            p.set_u32(16, itt);
            p.set_u32(20, ttt);
            self.seq.stamp(&mut p, false);
            p.set_u32(36, task.r2t_sn);
            p.set_u32(40, task.next_r2t);
            p.set_u32(44, len);
            task.r2t_sn += 1;
            task.next_r2t += len;
            task.outstanding = Some(ttt);
            self.send(p).await?;
        }
        self.tasks.insert(itt, task);
        Ok(())
    }

    /// Places `data` at `offset` of the task's transfer.
    async fn feed(task: &mut WriteTask, unit: &Option<UnitCtx>, offset: u32, data: Bytes) {
        let Some(u) = unit else { return };
        if offset >= task.needed {
            return;
        }
        let take = (data.len() as u32).min(task.needed - offset);
        let data = data.slice(..take as usize);
        let dev = &u.entry.export.device;
        match &mut task.sink {
            Sink::Device { base, fua } => {
                if task.error.is_none() {
                    if let Err(e) = dev.write(*base + u64::from(offset), data, *fua).await {
                        tracing::warn!(error = %e, "iSCSI write failed");
                        task.error = Some(Sense::WRITE_ERROR);
                    }
                }
            }
            Sink::Compare { base, miscompare } => {
                if miscompare.is_none() && task.error.is_none() {
                    match dev.read(*base + u64::from(offset), take).await {
                        Ok(have) => {
                            if let Some(i) = have.iter().zip(data.iter()).position(|(a, b)| a != b)
                            {
                                *miscompare = Some(offset + i as u32);
                            }
                        }
                        Err(_) => task.error = Some(Sense::READ_ERROR),
                    }
                }
            }
            Sink::Buffer { buf, .. } => {
                let o = offset as usize;
                buf[o..o + take as usize].copy_from_slice(&data);
            }
        }
        task.received += take;
    }

    async fn complete(&mut self, itt: u32, task: WriteTask) -> Result<(), IscsiError> {
        let res = residual(task.edtl, task.full);
        let sense = match (task.error, task.sink) {
            (Some(e), _) => Some(e),
            (None, Sink::Device { .. }) => None,
            (None, Sink::Compare { miscompare, .. }) => miscompare.map(|at| Sense {
                info: Some(at),
                ..Sense::new(scsi::key::MISCOMPARE, 0x1d, 0x00)
            }),
            (None, Sink::Buffer { buf, then }) => self.collected(then, buf).await,
        };
        self.finish(itt, sense, res).await
    }

    /// Runs UNMAP, WRITE SAME and COMPARE AND WRITE once their data is in.
    async fn collected(&mut self, then: Collected, buf: Vec<u8>) -> Option<Sense> {
        let u = self.unit.as_ref()?;
        let dev = u.entry.export.device.clone();
        let blocks = dev.size() / BLOCK;
        match then {
            Collected::Unmap => {
                let ranges = match scsi::unmap_ranges(&buf, blocks) {
                    Ok(r) => r,
                    Err(s) => return Some(s),
                };
                for (off, len) in ranges {
                    if dev.trim(off, len).await.is_err() {
                        return Some(Sense::WRITE_ERROR);
                    }
                }
                None
            }
            Collected::WriteSame { lba, blocks, unmap } => {
                let (off, len) = (lba * BLOCK, blocks * BLOCK);
                if buf.iter().all(|&b| b == 0) {
                    return dev
                        .write_zeroes(off, len, unmap, false)
                        .await
                        .err()
                        .map(|_| Sense::WRITE_ERROR);
                }
                // Repeat the block in 1 MiB writes.
                let step = (READ_STEP / BLOCK).min(blocks);
                let pattern = Bytes::from(buf.repeat(step as usize));
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(pattern.len() as u64) as usize;
                    if dev
                        .write(off + done, pattern.slice(..n), false)
                        .await
                        .is_err()
                    {
                        return Some(Sense::WRITE_ERROR);
                    }
                    done += n as u64;
                }
                None
            }
            Collected::CompareAndWrite { lba, blocks, fua } => {
                let n = (blocks * BLOCK) as usize;
                let (verify, write) = buf.split_at(n);
                let _guard = self.shared.compare_and_write.lock().await;
                let have = match dev.read(lba * BLOCK, n as u32).await {
                    Ok(h) => h,
                    Err(_) => return Some(Sense::READ_ERROR),
                };
                if let Some(i) = have.iter().zip(verify).position(|(a, b)| a != b) {
                    return Some(Sense {
                        info: Some(i as u32),
                        ..Sense::new(scsi::key::MISCOMPARE, 0x1d, 0x00)
                    });
                }
                dev.write(lba * BLOCK, Bytes::copy_from_slice(write), fua)
                    .await
                    .err()
                    .map(|_| Sense::WRITE_ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals_and_luns() {
        assert_eq!(residual(512, 512), (0, 0));
        assert_eq!(residual(256, 512), (0x04, 256));
        assert_eq!(residual(1024, 512), (0x02, 512));
        assert_eq!(lun_number(&[0; 8]), 0);
        assert_eq!(lun_number(&[0, 1, 0, 0, 0, 0, 0, 0]), 1);
        assert_eq!(lun_number(&[0x40, 2, 0, 0, 0, 0, 0, 0]), 2);
        assert_eq!(lun_number(&[0, 0, 1, 0, 0, 0, 0, 0]), u64::MAX);
    }

    /// PDUs read through [`NextHeader`] come out whole and in order whichever way
    /// their headers are read (through the buffer, or alone after a large segment,
    /// in pieces), and `more` says whether a whole next header is already here.
    #[tokio::test]
    async fn pdus_read_around_large_segments_come_out_whole() {
        use tokio::io::AsyncWriteExt;
        let segment = |n: usize, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
        };
        let pdus: Vec<Pdu> = vec![
            Pdu::new(op::DATA_OUT, F_FINAL).with_data(segment(256 << 10, 1)),
            Pdu::new(op::DATA_OUT, F_FINAL).with_data(segment(100, 2)),
            Pdu::new(op::DATA_OUT, F_FINAL).with_data(segment(64 << 10, 3)),
            Pdu::new(op::NOP_OUT, F_FINAL),
            Pdu::new(op::DATA_OUT, F_FINAL).with_data(segment((128 << 10) + 2, 4)),
            Pdu::new(op::DATA_OUT, F_FINAL).with_data(segment(70 << 10, 5)),
        ];
        let mut wire = Vec::new();
        for p in &pdus {
            pdu::write_pdu(&mut wire, p).await.unwrap();
        }
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut r = BufReader::with_capacity(TARGET_MAX_RECV_DSL as usize + 4096, server);
        let mut next = NextHeader::default();
        // The first PDU and 10 bytes of the second's header, then a pause.
        let first = pdu::BHS_LEN + (256 << 10);
        client.write_all(&wire[..first + 10]).await.unwrap();
        assert!(next.wait(&mut r).await.unwrap());
        let got = next.read_pdu(&mut r, 1 << 20).await.unwrap().unwrap();
        assert!(got.data == pdus[0].data);
        assert!(next.alone, "a large segment: the next header is read alone");
        assert!(!next.more(&mut r).await, "only 10 bytes of it are here");
        // The rest of it and everything after.
        let sender = tokio::spawn(async move {
            for piece in wire[first + 10..].chunks(30_000) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        for want in &pdus[1..] {
            assert!(next.wait(&mut r).await.unwrap());
            let got = next.read_pdu(&mut r, 1 << 20).await.unwrap().unwrap();
            assert_eq!(got.bhs, want.bhs);
            assert!(got.data == want.data, "{} bytes", want.data.len());
            next.more(&mut r).await;
        }
        drop(sender.await.unwrap());
        assert!(!next.wait(&mut r).await.unwrap(), "the end of the stream");
    }
}
