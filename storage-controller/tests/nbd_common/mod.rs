//! Shared helpers for the NBD integration tests: an in-process server on a
//! background runtime, real-client runners, and a tiny raw protocol client.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use euca_sc::device::{BlockDevice, FileDevice};
use euca_sc::nbd::{Export, ExportTable, NbdServer};

pub const INSTALL_HINT: &str =
    "run scripts/install-test-deps.sh (needs libnbd-bin, python3-libnbd, qemu-utils)";

/// An NBD server running in-process on 127.0.0.1:<ephemeral> with its own runtime.
pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub exports: ExportTable,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|s| s)
    }

    pub fn start_with(configure: impl FnOnce(NbdServer) -> NbdServer) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let exports = ExportTable::new();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = configure(NbdServer::new(exports.clone()));
        let task = rt.spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            rt,
            exports,
            addr,
            dir: tempfile::tempdir().expect("tempdir"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn uri(&self, name: &str) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.port(), name)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.img"))
    }

    /// Creates a sparse volume file and exports it as `name` (open to any peer).
    pub fn add_volume(&self, name: &str, size: u64) -> PathBuf {
        self.add_volume_with(name, size, None, false)
    }

    pub fn add_volume_with(
        &self,
        name: &str,
        size: u64,
        allowed_peer: Option<IpAddr>,
        read_only: bool,
    ) -> PathBuf {
        let path = self.path(name);
        let dev = FileDevice::create(&path, size).expect("create volume");
        self.add_device(name, Arc::new(dev), allowed_peer, read_only);
        path
    }

    /// Exports an existing file (e.g. one pre-filled by the test).
    pub fn add_file(&self, name: &str, path: &Path) {
        let dev = FileDevice::open(path).expect("open volume");
        self.add_device(name, Arc::new(dev), None, false);
    }

    pub fn add_device(
        &self,
        name: &str,
        device: Arc<dyn BlockDevice>,
        allowed_peer: Option<IpAddr>,
        read_only: bool,
    ) {
        self.exports.insert(
            name.to_string(),
            Export {
                protocol: euca_sc::export::Protocol::Nbd,
                device,
                allowed_peer,
                read_only,
                description: format!("test volume {name}"),
                chap: None,
            },
        );
    }

    /// Stops the server and checks that `serve` returned cleanly and promptly.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Like `stop`, keeping the temp directory (and runtime) alive.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let res = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), task).await });
            let res = res.expect("server did not stop within 20 s");
            res.expect("server task panicked")
                .expect("serve returned an error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        } else if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Path of a client binary; fails the test (never skips) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("`{name}` is not installed: {INSTALL_HINT}");
}

/// Runs a command with a deadline; returns its output (never hangs the suite).
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e} ({INSTALL_HINT})"));
    // Drain the pipes on threads so a chatty child can't block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Runs a command that must succeed; returns stdout as a string.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let desc = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.status.success(),
        "{desc} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one check of tests/nbd_checks.py with Debian's python3 (the only one
/// that can import python3-libnbd).
pub fn py_check(check: &str, args: &[&str]) {
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.is_file(),
        "/usr/bin/python3 is missing: {INSTALL_HINT}"
    );
    let probe = run(
        Command::new(python).args(["-c", "import nbd"]),
        Duration::from_secs(20),
    );
    assert!(
        probe.status.success(),
        "python3-libnbd is not importable from /usr/bin/python3: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nbd_checks.py");
    let out = run(
        Command::new(python).arg(&script).arg(check).args(args),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "python check `{check}` failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("ok {check}")),
        "python check `{check}` did not report success:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Raw protocol client.

pub const NBDMAGIC: u64 = u64::from_be_bytes(*b"NBDMAGIC");
pub const IHAVEOPT: u64 = u64::from_be_bytes(*b"IHAVEOPT");
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;

pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;

pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// One request (header, then `payload`) as it goes on the wire.
pub fn request_bytes(
    flags: u16,
    ty: u16,
    cookie: u64,
    offset: u64,
    len: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(28 + payload.len());
    v.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A hand-rolled NBD client for sending what real clients won't.
pub struct Raw<S: Read + Write = TcpStream> {
    pub s: S,
}

pub fn connect(addr: SocketAddr) -> Raw {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    Raw { s }
}

/// Connects from a chosen local address (e.g. 127.0.0.2) to the server.
pub fn connect_from(server: &TestServer, local: IpAddr) -> Raw {
    let addr = server.addr;
    let s = server
        .rt
        .block_on(async move {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(local, 0))?;
            let stream = sock.connect(addr).await?;
            stream.into_std()
        })
        .expect("connect from local address");
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Raw { s }
}

impl<S: Read + Write> Raw<S> {
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v).expect("read from server");
        v
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.read_n(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read_n(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.read_n(8).try_into().unwrap())
    }

    /// True once the server has closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
        }
    }

    /// Reads the greeting and answers with `client_flags`; returns the server's
    /// handshake flags.
    pub fn greet(&mut self, client_flags: u32) -> u16 {
        assert_eq!(self.u64(), NBDMAGIC);
        assert_eq!(self.u64(), IHAVEOPT);
        let flags = self.u16();
        self.s.write_all(&client_flags.to_be_bytes()).unwrap();
        flags
    }

    pub fn send_opt(&mut self, opt: u32, data: &[u8]) {
        let mut v = Vec::new();
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        self.s.write_all(&v).unwrap();
    }

    /// Reads option replies up to and including the final one (ACK or error).
    pub fn opt_replies(&mut self, opt: u32) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            assert_eq!(self.u64(), OPT_REPLY_MAGIC);
            assert_eq!(self.u32(), opt, "reply to another option");
            let ty = self.u32();
            let len = self.u32() as usize;
            let data = self.read_n(len);
            let last = ty == REP_ACK || ty & 0x8000_0000 != 0;
            out.push((ty, data));
            if last {
                return out;
            }
        }
    }

    pub fn opt(&mut self, opt: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.send_opt(opt, data);
        self.opt_replies(opt)
    }

    /// NBD_OPT_GO; returns (final reply type, export size, transmission flags).
    pub fn go(&mut self, name: &str) -> (u32, u64, u16) {
        let replies = self.opt(OPT_GO, &info_payload(name, &[]));
        let (last, _) = replies.last().cloned().unwrap();
        let mut size = 0;
        let mut flags = 0;
        for (ty, d) in &replies {
            if *ty == REP_INFO && d.len() == 12 && d[0..2] == [0, 0] {
                size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
            }
        }
        (last, size, flags)
    }

    pub fn request(
        &mut self,
        flags: u16,
        ty: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let v = request_bytes(flags, ty, cookie, offset, len, payload);
        self.s.write_all(&v).unwrap();
    }

    /// Reads `n` simple replies, each with no error and a cookie not seen before;
    /// their cookies.
    pub fn ok_replies(&mut self, n: usize) -> std::collections::BTreeSet<u64> {
        let mut cookies = std::collections::BTreeSet::new();
        for _ in 0..n {
            let (err, cookie) = self.simple_reply();
            assert_eq!(err, 0, "request {cookie}");
            assert!(cookies.insert(cookie), "request {cookie} answered twice");
        }
        cookies
    }

    /// Reads a simple reply header: (error, cookie).
    pub fn simple_reply(&mut self) -> (u32, u64) {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC, "expected a simple reply");
        let err = self.u32();
        let cookie = self.u64();
        (err, cookie)
    }

    pub fn read_at(&mut self, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
        self.request(0, CMD_READ, cookie, offset, len, &[]);
        let (err, c) = self.simple_reply();
        assert_eq!((err, c), (0, cookie));
        self.read_n(len as usize)
    }

    pub fn write_at(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        self.request(0, CMD_WRITE, cookie, offset, data.len() as u32, data);
        assert_eq!(self.simple_reply(), (0, cookie));
    }
}

/// Fixed-newstyle client: greet with FIXED_NEWSTYLE|NO_ZEROES and GO to `name`
/// (simple replies only). Panics if the export can't be opened.
pub fn open_export(mut raw: Raw, name: &str) -> Raw {
    raw.greet(3);
    let (last, _, _) = raw.go(name);
    assert_eq!(last, REP_ACK, "GO {name} refused");
    raw
}

pub fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(name.len() as u32).to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        p.extend_from_slice(&i.to_be_bytes());
    }
    p
}

/// Waits until `cond` holds (polling), failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}
