//! NBD STARTTLS with X.509 certificates against the real clients (nbdinfo and
//! nbdcopy from libnbd, qemu-img and qemu-io) and a raw TLS client. Each test
//! makes its own throwaway CA and server certificate (subjectAltName IP
//! 127.0.0.1, DNS localhost). A missing tool fails the test.

use crate::nbd_common;

use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use euca_sc::nbd::{TlsConfig, TlsMode};
use nbd_common::*;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod, SslStream};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);
const REP_ERR_TLS_REQD: u32 = 0x8000_0005;

/// A CA and a server certificate it issued, as files in a temp directory:
/// `<dir>/ca/ca-cert.pem` (the layout qemu and libnbd look for),
/// `<dir>/server-cert.pem`, `<dir>/server-key.pem`.
struct Pki {
    dir: tempfile::TempDir,
}

fn name(cn: &str) -> X509Name {
    let mut b = X509Name::builder().unwrap();
    b.append_entry_by_text("CN", cn).unwrap();
    b.build()
}

fn cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    sans: &[&str],
) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let mut bc = BasicConstraints::new();
    bc.critical();
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature().key_encipherment();
    if issuer.is_none() {
        bc.ca();
        ku.key_cert_sign().crl_sign();
    }
    b.append_extension(bc.build().unwrap()).unwrap();
    b.append_extension(ku.build().unwrap()).unwrap();
    if !sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        let ext = san
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .unwrap();
        b.append_extension(ext).unwrap();
    }
    match issuer {
        Some((c, k)) => {
            b.set_issuer_name(c.subject_name()).unwrap();
            b.sign(k, MessageDigest::sha256()).unwrap();
        }
        None => {
            b.set_issuer_name(&name(cn)).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rsa_key();
        let ca = cert("test nbd ca", &ca_key, None, &[]);
        let key = rsa_key();
        let server = cert(
            "test nbd server",
            &key,
            Some((&ca, &ca_key)),
            &["127.0.0.1", "localhost"],
        );
        std::fs::create_dir(dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("ca/ca-cert.pem"), ca.to_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("server-cert.pem"), server.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("server-key.pem"),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        Pki { dir }
    }

    /// Directory with `ca-cert.pem`, for `tls-certificates=` / `tls-creds-x509,dir=`.
    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn config(&self) -> TlsConfig {
        TlsConfig::from_pem_files(
            &self.dir.path().join("server-cert.pem"),
            &self.dir.path().join("server-key.pem"),
            None,
        )
        .expect("TLS config")
    }
}

fn tls_server(pki: &Pki, mode: TlsMode) -> TestServer {
    let config = pki.config();
    TestServer::start_with(move |s| s.tls(config, mode))
}

fn nbds_uri(server: &TestServer, name: &str, ca_dir: &Path) -> String {
    format!(
        "nbds://127.0.0.1:{}/{}?tls-certificates={}",
        server.port(),
        name,
        ca_dir.display()
    )
}

fn output_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn required_mode_nbdinfo_needs_tls_and_the_right_ca() {
    let nbdinfo = tool("nbdinfo");
    let pki = Pki::new();
    let server = tls_server(&pki, TlsMode::Required);
    server.add_volume("vol-tls", 8 * MIB);

    let out = run_ok(
        Command::new(&nbdinfo).arg(nbds_uri(&server, "vol-tls", &pki.ca_dir())),
        T,
    );
    assert!(
        out.contains("with TLS"),
        "nbdinfo does not report TLS:\n{out}"
    );
    assert!(out.contains(&(8 * MIB).to_string()), "{out}");
    let size = run_ok(
        Command::new(&nbdinfo).args(["--size", &nbds_uri(&server, "vol-tls", &pki.ca_dir())]),
        T,
    );
    assert_eq!(size.trim(), (8 * MIB).to_string());

    // Without TLS the server refuses everything.
    let plain = run(Command::new(&nbdinfo).arg(server.uri("vol-tls")), T);
    assert!(
        !plain.status.success(),
        "plain nbd:// must fail in required mode:\n{}",
        output_text(&plain)
    );

    // A client trusting another CA rejects the server's certificate.
    let other = Pki::new();
    let wrong = run(
        Command::new(&nbdinfo).arg(nbds_uri(&server, "vol-tls", &other.ca_dir())),
        T,
    );
    assert!(
        !wrong.status.success(),
        "a client trusting another CA must fail:\n{}",
        output_text(&wrong)
    );

    // The server survived the failed handshake.
    run_ok(
        Command::new(&nbdinfo).args(["--size", &nbds_uri(&server, "vol-tls", &pki.ca_dir())]),
        T,
    );
    server.stop();
}

#[test]
fn nbdcopy_round_trip_over_tls() {
    let nbdcopy = tool("nbdcopy");
    let pki = Pki::new();
    let server = tls_server(&pki, TlsMode::Required);
    let vol = server.add_volume("vol-tls-copy", 8 * MIB);
    let uri = nbds_uri(&server, "vol-tls-copy", &pki.ca_dir());
    let src = server.dir.path().join("src.raw");
    std::fs::write(&src, pattern(8 * MIB as usize, 7)).unwrap();

    for conns in ["--connections=1", "--connections=4"] {
        run_ok(
            Command::new(&nbdcopy).args([conns, src.to_str().unwrap(), &uri]),
            T,
        );
        assert!(
            std::fs::read(&vol).unwrap() == std::fs::read(&src).unwrap(),
            "volume differs from the source ({conns})"
        );
        let back = server.dir.path().join("back.raw");
        std::fs::File::create(&back).unwrap();
        run_ok(
            Command::new(&nbdcopy).args([conns, &uri, back.to_str().unwrap()]),
            T,
        );
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap(),
            "copy back differs from the source ({conns})"
        );
        std::fs::remove_file(&back).unwrap();
    }
    server.stop();
}

#[test]
fn qemu_img_and_qemu_io_over_tls() {
    let qemu_img = tool("qemu-img");
    let qemu_io = tool("qemu-io");
    let pki = Pki::new();
    let server = tls_server(&pki, TlsMode::Required);
    let vol = server.add_volume("vol-tls-qemu", 16 * MIB);
    let object = |dir: &Path| {
        format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=client",
            dir.display()
        )
    };
    let opts = format!(
        "driver=nbd,host=127.0.0.1,port={},export=vol-tls-qemu,tls-creds=tls0",
        server.port()
    );

    let info = run_ok(
        Command::new(&qemu_img).args([
            "info",
            "--output=json",
            "--object",
            &object(&pki.ca_dir()),
            "--image-opts",
            &opts,
        ]),
        T,
    );
    let v: serde_json::Value =
        serde_json::from_str(&info).unwrap_or_else(|e| panic!("{e}: {info}"));
    assert_eq!(v["virtual-size"], 16 * MIB, "{info}");

    let out = run_ok(
        Command::new(&qemu_io).args([
            "--object",
            &object(&pki.ca_dir()),
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x5a 0 1M",
            "-c",
            "write -P 0xa5 3M 64k",
            "-c",
            "flush",
            "-c",
            "read -P 0x5a 0 1M",
            "-c",
            "read -P 0xa5 3M 64k",
            "-c",
            "read -P 0 1M 1M",
        ]),
        T,
    );
    for bad in ["fail", "error", "Pattern verification"] {
        assert!(!out.contains(bad), "qemu-io reported `{bad}`:\n{out}");
    }
    assert_eq!(out.matches("wrote ").count(), 2, "{out}");
    assert_eq!(out.matches("read ").count(), 3, "{out}");
    let disk = std::fs::read(&vol).unwrap();
    assert!(disk[..MIB as usize].iter().all(|&b| b == 0x5a));
    assert!(disk[3 * MIB as usize..3 * MIB as usize + 65536]
        .iter()
        .all(|&b| b == 0xa5));

    // qemu without TLS credentials, and qemu trusting another CA, both fail.
    let plain = run(
        Command::new(&qemu_img).args(["info", &server.uri("vol-tls-qemu")]),
        T,
    );
    assert!(!plain.status.success(), "{}", output_text(&plain));
    let other = Pki::new();
    let wrong = run(
        Command::new(&qemu_img).args([
            "info",
            "--object",
            &object(&other.ca_dir()),
            "--image-opts",
            &opts,
        ]),
        T,
    );
    assert!(
        !wrong.status.success(),
        "qemu trusting another CA must fail:\n{}",
        output_text(&wrong)
    );
    server.stop();
}

#[test]
fn auto_mode_lets_loopback_clients_choose() {
    let nbdinfo = tool("nbdinfo");
    let pki = Pki::new();
    let server = tls_server(&pki, TlsMode::Auto);
    server.add_volume("vol-auto", 4 * MIB);

    let plain = run_ok(Command::new(&nbdinfo).arg(server.uri("vol-auto")), T);
    assert!(
        plain.contains("without TLS"),
        "plain connection reports TLS:\n{plain}"
    );
    let tls = run_ok(
        Command::new(&nbdinfo).arg(nbds_uri(&server, "vol-auto", &pki.ca_dir())),
        T,
    );
    assert!(tls.contains("with TLS"), "nbds:// did not use TLS:\n{tls}");

    // Raw: options work without TLS from loopback, and STARTTLS is accepted.
    let mut c = connect(server.addr);
    c.greet(3);
    assert_eq!(c.opt(OPT_LIST, b"").last().unwrap().0, REP_ACK);
    assert_eq!(c.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ACK);
    let mut t = start_tls(c, &pki.ca_dir());
    assert_eq!(t.go("vol-auto").0, REP_ACK);
    t.write_at(1, 0, b"auto-tls");
    assert_eq!(t.read_at(2, 0, 8), b"auto-tls");
    server.stop();
}

/// Runs the client side of the TLS handshake after a STARTTLS ACK.
fn start_tls(c: Raw, ca_dir: &Path) -> Raw<SslStream<TcpStream>> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca_dir.join("ca-cert.pem")).unwrap();
    let s = b.build().connect("127.0.0.1", c.s).expect("TLS handshake");
    Raw { s }
}

#[test]
fn raw_required_mode_forced_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, TlsMode::Required);
    server.add_volume("vol-raw", 4 * MIB);

    // Before STARTTLS: every option but STARTTLS/ABORT is refused with
    // ERR_TLS_REQD (unknown ones and oversized payloads included).
    let mut c = connect(server.addr);
    c.greet(3);
    let (ty, _, _) = c.go("vol-raw");
    assert_eq!(ty, REP_ERR_TLS_REQD, "GO before STARTTLS");
    assert_eq!(
        c.opt(OPT_INFO, &info_payload("vol-raw", &[]))
            .last()
            .unwrap()
            .0,
        REP_ERR_TLS_REQD
    );
    let list = c.opt(OPT_LIST, b"");
    assert_eq!(list.len(), 1, "LIST must not show exports before TLS");
    assert_eq!(list[0].0, REP_ERR_TLS_REQD);
    assert_eq!(
        c.opt(OPT_STRUCTURED_REPLY, b"").last().unwrap().0,
        REP_ERR_TLS_REQD
    );
    assert_eq!(c.opt(99, b"xyz").last().unwrap().0, REP_ERR_TLS_REQD);
    assert_eq!(
        c.opt(OPT_STARTTLS, b"junk").last().unwrap().0,
        REP_ERR_INVALID
    );
    assert_eq!(c.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ACK);
    let mut t = start_tls(c, &pki.ca_dir());
    // Inside TLS: a second STARTTLS is invalid, everything else works.
    assert_eq!(t.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ERR_INVALID);
    let list = t.opt(OPT_LIST, b"");
    assert_eq!(list.last().unwrap().0, REP_ACK);
    assert_eq!(list.len(), 2, "one export, then ACK");
    let (ty, size, _) = t.go("vol-raw");
    assert_eq!((ty, size), (REP_ACK, 4 * MIB));
    let data = pattern(256 << 10, 3);
    t.write_at(1, 4096, &data);
    assert_eq!(t.read_at(2, 4096, data.len() as u32), data);
    let mut onfile = vec![0u8; data.len()];
    std::fs::File::open(server.path("vol-raw"))
        .unwrap()
        .read_exact_at(&mut onfile, 4096)
        .unwrap();
    assert_eq!(onfile, data);
    t.request(0, CMD_DISC, 3, 0, 0, &[]);
    assert!(t.is_closed());

    // State negotiated before STARTTLS is forgotten: structured replies agreed
    // in plain text (Auto mode lets loopback do that) don't carry over.
    drop(server);
    let server = tls_server(&pki, TlsMode::Auto);
    server.add_volume("vol-raw", 4 * MIB);
    let mut c = connect(server.addr);
    c.greet(3);
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, b"").last().unwrap().0, REP_ACK);
    assert_eq!(c.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ACK);
    let mut t = start_tls(c, &pki.ca_dir());
    assert_eq!(t.go("vol-raw").0, REP_ACK);
    // A simple reply (not a structured chunk) proves SR was reset.
    assert_eq!(t.read_at(1, 0, 512), vec![0u8; 512]);
    drop(t);

    // EXPORT_NAME before TLS in required mode: hard disconnect.
    drop(server);
    let server = tls_server(&pki, TlsMode::Required);
    server.add_volume("vol-raw", 4 * MIB);
    let mut c = connect(server.addr);
    c.greet(3);
    c.send_opt(OPT_EXPORT_NAME, b"vol-raw");
    assert!(c.is_closed(), "EXPORT_NAME before STARTTLS must disconnect");

    // A failed TLS handshake closes that connection only.
    let mut bad = connect(server.addr);
    bad.greet(3);
    assert_eq!(bad.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ACK);
    use std::io::{Read, Write};
    bad.s
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    // The server may send an alert first; then it must close.
    let mut rest = Vec::new();
    let _ = bad.s.read_to_end(&mut rest);
    assert!(
        rest.len() < 64,
        "unexpected data after a failed handshake: {rest:?}"
    );
    let mut good = connect(server.addr);
    good.greet(3);
    assert_eq!(good.opt(OPT_STARTTLS, b"").last().unwrap().0, REP_ACK);
    let mut t = start_tls(good, &pki.ca_dir());
    assert_eq!(t.go("vol-raw").0, REP_ACK);
    assert_eq!(t.read_at(1, 0, 8), vec![0u8; 8]);
    drop(t);
    server.stop();
}

#[test]
fn tls_config_rejects_mismatched_key() {
    let a = Pki::new();
    let b = Pki::new();
    let err = TlsConfig::from_pem_files(
        &a.dir.path().join("server-cert.pem"),
        &b.dir.path().join("server-key.pem"),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    assert!(TlsConfig::from_pem_files(
        &a.dir.path().join("missing.pem"),
        &a.dir.path().join("server-key.pem"),
        None
    )
    .is_err());
}

/// `StorageController::attach` hands out `nbds://` exactly when that node must
/// use TLS under the configured mode.
#[test]
fn attach_uri_scheme_follows_tls_mode() {
    use euca_sc::nbd::ExportTable;
    use euca_sc::service::StorageController;
    use euca_sc::snapshot::MemChunks;
    use euca_sc::state::StateStore;
    use euca_sc::store::FileVolumeStore;
    use euca_sc::ScConfig;
    use std::sync::Arc;

    let pki = Pki::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let remote: std::net::IpAddr = "10.9.8.7".parse().unwrap();
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let cases = [
        ("auto", true, [(remote, "nbds"), (local, "nbd")]),
        ("required", true, [(remote, "nbds"), (local, "nbds")]),
        ("off", true, [(remote, "nbd"), (local, "nbd")]),
        // "auto" without credentials means no TLS.
        ("auto", false, [(remote, "nbd"), (local, "nbd")]),
    ];
    for (mode, creds, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ScConfig {
            data_dir: dir.path().to_path_buf(),
            nbd_tls: mode.into(),
            ..ScConfig::default()
        };
        if creds {
            cfg.tls_cert = Some(pki.dir.path().join("server-cert.pem"));
            cfg.tls_key = Some(pki.dir.path().join("server-key.pem"));
        }
        rt.block_on(async {
            let sc = StorageController::open(
                StateStore::open(&dir.path().join("sc.redb")).unwrap(),
                Arc::new(FileVolumeStore::new(dir.path().join("volumes")).unwrap()),
                Arc::new(MemChunks::new()),
                ExportTable::new(),
                &cfg,
                "127.0.0.1:10809".parse().unwrap(),
                None,
            )
            .await
            .unwrap();
            let v = sc.create_volume(Some(1), None).await.unwrap();
            for (node, scheme) in expect {
                let (_, uri) = sc
                    .attach(&v.id, node, euca_sc::export::Protocol::Nbd)
                    .await
                    .unwrap();
                assert!(
                    uri.starts_with(&format!("{scheme}://127.0.0.1:10809/{}-", v.id)),
                    "mode {mode} (creds {creds}), node {node}: {uri}"
                );
                sc.detach(&v.id).await.unwrap();
            }
        });
    }
    let bad = ScConfig {
        nbd_tls: "sometimes".into(),
        ..ScConfig::default()
    };
    assert!(bad.nbd_tls_mode().is_err());
}
