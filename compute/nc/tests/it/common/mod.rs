//! Helpers shared by the tests that boot real guests (qemu.rs, qemu_net.rs).
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use euca_nc::hypervisor::QemuNode;
use euca_nc::Node;

/// A 64-hex image id made of one repeated digit.
/// The tiny guest's directory: `EUCA_GUEST_DIR`, or this workspace's `target/guest`
/// (where `scripts/test.sh` builds it, before `cargo test`).
pub fn guest_path() -> PathBuf {
    match std::env::var_os("EUCA_GUEST_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/guest")),
    }
}

pub fn img_id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Kills the processes named by these pid files, only if they still are QEMU or
/// qemu-nbd processes (a recycled pid is left alone).
pub fn kill_qemus(pidfiles: &[PathBuf]) {
    for f in pidfiles {
        let Some(pid) = std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains("qemu") {
            // SAFETY: plain syscall on a pid checked to be ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Polls `f` every 100 ms for `secs` seconds; panics naming `what` if it never holds.
pub async fn until<F: FnMut() -> bool>(what: &str, secs: u64, mut f: F) {
    for _ in 0..secs * 10 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Instance `id`'s console tail as text.
pub async fn console_of(node: &QemuNode, id: &str) -> String {
    let c = node.console(id).await.unwrap();
    let b = base64::engine::general_purpose::STANDARD
        .decode(c.output)
        .unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

/// Tests that boot guests take this, so at most one of them runs at a time (the
/// machine has 2 cores shared with others), across every file of this binary.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_guest() -> std::sync::MutexGuard<'static, ()> {
    ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner())
}
