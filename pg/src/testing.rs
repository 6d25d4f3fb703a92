//! A throwaway PostgreSQL for tests (feature `testing`): one server per test binary,
//! started at first use from Debian's server binaries (`scripts/install-test-deps.sh`
//! installs them), one fresh database per test ([`database_url`]).
//!
//! initdb refuses root, so as root the server runs as the `postgres` user. It is
//! spawned from a thread that lives as long as the test binary, with a parent-death
//! signal: when the binary exits, the server is killed. Its directory
//! (`$TMPDIR/euca-test-pg-<pid>`) is removed by the next run.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Server {
    port: u16,
    bin: PathBuf,
    /// The user the server runs as (root cannot), for `psql`.
    as_user: Option<(u32, u32)>,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin \
         (scripts/install-test-deps.sh installs Debian's postgresql package)",
    )
}

fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs the postgres user (from the postgresql package)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("euca-test-pg-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Server {
    let bin = bin_dir();
    let tmp = std::env::temp_dir();
    remove_stale_dirs(&tmp);
    let dir = tmp.join(format!("euca-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let as_user = postgres_ids();
    if let Some((uid, gid)) = as_user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data);
    if let Some((uid, gid)) = as_user {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb.output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let (bin2, data2, dir2) = (bin.clone(), data.clone(), dir.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    // The server's parent is this thread, which never ends: the parent-death signal
    // fires when the test binary exits.
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin2.join("postgres"));
        cmd.arg("-D")
            .arg(&data2)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir2)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir2.join("server.log")).unwrap());
        if let Some((uid, gid)) = as_user {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let _ = tx.send(child.map(|c| c.id()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().expect("spawn postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "postgres did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { port, bin, as_user }
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A fresh database's URL on the test binary's server (blocks while it starts).
pub fn database_url() -> String {
    let s = SERVER.get_or_init(start);
    let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut psql = Command::new(s.bin.join("psql"));
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ]);
        if let Some((uid, gid)) = s.as_user {
            psql.uid(uid).gid(gid);
        }
        let out = psql.output().expect("run psql");
        if out.status.success() {
            break;
        }
        // Until the server accepts connections (it listens a moment before).
        assert!(
            Instant::now() < deadline,
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("postgres://postgres@127.0.0.1:{}/{name}", s.port)
}
