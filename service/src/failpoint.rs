//! Named crash points for restart tests: `EUCA_FAILPOINT=cc.after_reserve` (a
//! comma-separated list) makes the process kill itself with `SIGKILL` when it
//! reaches [`failpoint`]`("cc.after_reserve")` — the same as an operator's `kill -9`
//! at that exact moment, without racing a test's timer. Unset (always, outside
//! tests), a failpoint costs one load of a cached flag.
use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("EUCA_FAILPOINT")
            .map(|v| {
                v.split(',')
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Kills this process (`SIGKILL`) if `EUCA_FAILPOINT` names `name`.
pub fn failpoint(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::error!(
            failpoint = name,
            "EUCA_FAILPOINT reached: killing this process"
        );
        // SAFETY: kill(2) on our own pid; no memory is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
