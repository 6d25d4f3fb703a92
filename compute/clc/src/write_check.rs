//! Where record writes run. Every write ([`crate::store::Db`]'s insert and
//! update) checks it: on a thread of a tokio runtime but not inside
//! [`crate::offload`]'s blocking helpers, it is counted ([`runtime_writes`], per
//! thread) and logged, so tests can assert that an action commits nothing on the
//! runtime. Writes outside any runtime (start-up, tools, synchronous tests) are
//! fine.
use std::cell::Cell;

thread_local! {
    /// Set while the blocking helper runs a closure on this (blocking-pool) thread.
    static OFFLOADED: Cell<bool> = const { Cell::new(false) };
    /// Writes this thread made on the runtime.
    static RUNTIME_WRITES: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` marked as off the runtime (the blocking pool's side of
/// [`crate::offload`]).
pub(crate) fn offloaded<R>(f: impl FnOnce() -> R) -> R {
    let was = OFFLOADED.replace(true);
    let r = f();
    OFFLOADED.set(was);
    r
}

/// Called by every record write: counts (and logs) one made on the runtime.
pub(crate) fn check_write(what: &str) {
    if OFFLOADED.get() || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    RUNTIME_WRITES.set(RUNTIME_WRITES.get() + 1);
    tracing::warn!(what, "a record write on the async runtime (not offloaded)");
}

/// How many record writes this thread made on an async runtime (outside the
/// blocking helpers); a test on a current-thread runtime reads it around the
/// calls it makes.
pub fn runtime_writes() -> u64 {
    RUNTIME_WRITES.get()
}
