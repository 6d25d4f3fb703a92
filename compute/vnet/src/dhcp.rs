//! The router's DHCP server: one `dnsmasq` (DHCP only, static leases only) run in
//! the router namespace and supervised: restarted when it dies or when its
//! configuration changes (interfaces, ranges), sent SIGHUP when only the
//! MAC→address pairs change (dnsmasq re-reads its `dhcp-hostsfile` then).
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::process::Command;
use tokio::sync::watch;

use crate::link::{check_ifname, check_netns};
use crate::VnetError;

/// One subnet dnsmasq serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpSubnet {
    pub subnet: Ipv4Net,
    /// Option 3 (the default gateway), if any.
    pub router: Option<Ipv4Addr>,
    /// Option 121 (RFC 3442 classless static routes): destination → gateway.
    /// A client that takes option 121 ignores option 3, so when there are routes
    /// the default route via `router` is sent among them too.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// What dnsmasq is started with (a change restarts it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The router's instance-side interfaces it listens on.
    pub interfaces: Vec<String>,
    pub subnets: Vec<DhcpSubnet>,
    /// Option 6, if any (dnsmasq runs with DNS off, so it names no server itself).
    pub dns: Option<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_secs: u32,
}

/// The files it uses, all in the CC's state directory.
#[derive(Clone, Debug)]
struct Files {
    conf: PathBuf,
    hosts: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            conf: dir.join("dnsmasq.conf"),
            hosts: dir.join("dnsmasq.hosts"),
            pid: dir.join("dnsmasq.pid"),
            log: dir.join("dnsmasq.log"),
        }
    }
}

fn io_err(cmd: &str, source: std::io::Error) -> VnetError {
    VnetError::Spawn {
        cmd: cmd.to_string(),
        source,
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so dnsmasq never
/// reads half a file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), VnetError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io_err(&format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(&format!("rename {}", path.display()), e))
}

struct Supervisor {
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// The supervised dnsmasq of one router namespace.
pub struct Dhcp {
    netns: String,
    files: Files,
    config: Mutex<Option<DhcpConfig>>,
    /// The `(mac, address)` pairs last written (a removed one restarts dnsmasq).
    hosts: Mutex<Vec<(String, Ipv4Addr)>>,
    /// The running child's pid (0: none), for SIGHUP.
    pid: Arc<Mutex<u32>>,
    /// The running supervisor: bumping its generation restarts dnsmasq,
    /// dropping the sender stops it (each supervisor has its own channel, so a
    /// stopping one never sees a later start).
    supervisor: Mutex<Option<Supervisor>>,
}

impl Dhcp {
    /// A DHCP server for namespace `netns` keeping its files in `dir`; nothing runs
    /// until [`Dhcp::apply`]. A dnsmasq left running by an earlier process (its pid
    /// file names it) is stopped first: it would hold port 67.
    pub fn new(netns: &str, dir: &Path) -> Result<Dhcp, VnetError> {
        check_netns(netns)?;
        let files = Files::new(dir);
        kill_stale(&files.pid);
        Ok(Dhcp {
            netns: netns.to_string(),
            files,
            config: Mutex::new(None),
            hosts: Mutex::new(Vec::new()),
            pid: Arc::new(Mutex::new(0)),
            supervisor: Mutex::new(None),
        })
    }

    /// Makes dnsmasq serve `config` with the static `(mac, address)` pairs `hosts`:
    /// rewrites the hosts file, then restarts dnsmasq when the configuration
    /// changed (or starts it), else sends it SIGHUP.
    pub fn apply(
        &self,
        config: &DhcpConfig,
        hosts: &[(String, Ipv4Addr)],
    ) -> Result<(), VnetError> {
        for i in &config.interfaces {
            check_ifname(i)?;
        }
        let mut h = String::new();
        for (mac, ip) in hosts {
            if !valid_mac(mac) {
                return Err(VnetError::Invalid {
                    what: "MAC address",
                    value: mac.clone(),
                });
            }
            h.push_str(&format!("{},{ip}\n", mac.to_ascii_lowercase()));
        }
        write_atomic(&self.files.hosts, h.as_bytes())?;
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let mut sup = self.supervisor.lock().unwrap_or_else(|p| p.into_inner());
        let running = sup.as_ref().is_some_and(|s| !s.task.is_finished());
        // A pair that went away (its instance ended; the CLC may give the address
        // to another MAC next) must not outlive it as a lease: dnsmasq refuses a
        // static address leased to another MAC, and a SIGHUP rereads the hosts
        // file, not the leases it holds. Leases live in dnsmasq's memory only
        // (`leasefile-ro`), so a restart forgets them; additions need only SIGHUP.
        let removed = {
            let mut prev = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let gone = prev.iter().any(|p| !hosts.contains(p));
            *prev = hosts.to_vec();
            gone
        };
        if cur.as_ref() == Some(config) && running && !removed {
            let pid = *self.pid.lock().unwrap_or_else(|p| p.into_inner());
            if pid != 0 {
                // SAFETY: kill with a pid of our own child and a valid signal.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
            }
            return Ok(());
        }
        write_atomic(&self.files.conf, self.render(config).as_bytes())?;
        *cur = Some(config.clone());
        if config.interfaces.is_empty() {
            // Nothing to serve (no group left): without an `interface=` line
            // dnsmasq would listen everywhere, so it is stopped instead.
            *sup = None;
            return Ok(());
        }
        match sup.as_ref() {
            Some(s) if running => s.generation.send_modify(|g| *g += 1),
            _ => {
                let (generation, rx) = watch::channel(0);
                let task = tokio::spawn(supervise(
                    self.netns.clone(),
                    self.files.conf.clone(),
                    self.pid.clone(),
                    rx,
                ));
                *sup = Some(Supervisor { generation, task });
            }
        }
        Ok(())
    }

    fn render(&self, c: &DhcpConfig) -> String {
        let f = &self.files;
        let mut s = String::new();
        // DHCP only: no DNS service, no upstream resolvers, no /etc/hosts.
        s.push_str("port=0\nno-resolv\nno-hosts\nbind-interfaces\nexcept-interface=lo\n");
        s.push_str("dhcp-authoritative\nlog-dhcp\nuser=root\n");
        for i in &c.interfaces {
            s.push_str(&format!("interface={i}\n"));
        }
        s.push_str(&format!(
            "leasefile-ro\ndhcp-hostsfile={}\npid-file={}\nlog-facility={}\n",
            f.hosts.display(),
            f.pid.display(),
            f.log.display()
        ));
        for (k, sub) in c.subnets.iter().enumerate() {
            s.push_str(&format!(
                "dhcp-range=set:s{k},{},static,{},{}\n",
                sub.subnet.network(),
                sub.subnet.netmask(),
                c.lease_secs
            ));
            match sub.router {
                Some(r) => s.push_str(&format!("dhcp-option=tag:s{k},option:router,{r}\n")),
                // Without it dnsmasq would offer its own address as the gateway.
                None => s.push_str(&format!("dhcp-option=tag:s{k},option:router\n")),
            }
            if !sub.routes.is_empty() {
                let mut routes: Vec<String> = sub
                    .routes
                    .iter()
                    .map(|(dst, via)| format!("{dst},{via}"))
                    .collect();
                if let Some(r) = sub.router {
                    routes.push(format!("0.0.0.0/0,{r}"));
                }
                s.push_str(&format!(
                    "dhcp-option=tag:s{k},option:classless-static-route,{}\n",
                    routes.join(",")
                ));
            }
        }
        if let Some(d) = c.dns {
            s.push_str(&format!("dhcp-option=option:dns-server,{d}\n"));
        }
        s
    }

    /// Stops dnsmasq.
    pub async fn stop(&self) {
        let sup = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Supervisor { generation, task }) = sup {
            drop(generation);
            let _ = task.await;
        }
    }
}

/// `xx:xx:xx:xx:xx:xx` in hex digits.
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Stops the dnsmasq a pid file names, if that process is a dnsmasq.
fn kill_stale(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "dnsmasq" && pid > 1 {
        tracing::info!(pid, "dhcp: stopping the dnsmasq an earlier process left");
        // SAFETY: kill with a checked pid and a valid signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs dnsmasq until its generation's sender is dropped, restarting it when it
/// dies (after a second) or when the generation changes.
async fn supervise(
    netns: String,
    conf: PathBuf,
    pid: Arc<Mutex<u32>>,
    mut generation: watch::Receiver<u64>,
) {
    loop {
        generation.borrow_and_update();
        let mut child = match Command::new("ip")
            .args(["netns", "exec", &netns, "dnsmasq", "--keep-in-foreground"])
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "dhcp: cannot start dnsmasq");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    r = generation.changed() => if r.is_err() { return } else { continue },
                }
            }
        };
        *pid.lock().unwrap_or_else(|p| p.into_inner()) = child.id().unwrap_or(0);
        tracing::info!(netns = %netns, pid = child.id(), "dhcp: dnsmasq started");
        let outcome = tokio::select! {
            r = child.wait() => Ok(r),
            r = generation.changed() => Err(r.is_err()),
        };
        *pid.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        match outcome {
            Ok(status) => {
                tracing::warn!(status = ?status, "dhcp: dnsmasq exited; restarting in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    r = generation.changed() => if r.is_err() { return },
                }
            }
            Err(stopping) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                if stopping {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ranges_and_refuses_bad_macs() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dhcp::new("ccnet-x", dir.path()).unwrap();
        let c = DhcpConfig {
            interfaces: vec!["br0".into()],
            subnets: vec![DhcpSubnet {
                subnet: "10.128.0.32/27".parse().unwrap(),
                router: Some("10.128.0.33".parse().unwrap()),
                routes: vec![],
            }],
            dns: None,
            lease_secs: 3600,
        };
        let text = d.render(&c);
        assert!(text.contains("dhcp-range=set:s0,10.128.0.32,static,255.255.255.224,3600"));
        assert!(text.contains("dhcp-option=tag:s0,option:router,10.128.0.33"));
        assert!(text.contains("port=0"));
        assert!(!text.contains("classless-static-route"));
        // Static mode: the metadata route via the router namespace, and the
        // default route repeated in option 121 (which overrides option 3).
        let st = DhcpConfig {
            subnets: vec![DhcpSubnet {
                subnet: "10.231.1.0/24".parse().unwrap(),
                router: Some("10.231.1.1".parse().unwrap()),
                routes: vec![(
                    "169.254.169.254/32".parse().unwrap(),
                    "10.231.1.3".parse().unwrap(),
                )],
            }],
            ..c
        };
        assert!(d.render(&st).contains(
            "dhcp-option=tag:s0,option:classless-static-route,169.254.169.254/32,10.231.1.3,0.0.0.0/0,10.231.1.1\n"
        ));
        assert!(!valid_mac("52:54:00:00:00"));
        assert!(!valid_mac("52:54:00:00:00:0g"));
        assert!(valid_mac("52:54:00:AA:00:01"));
    }
}
