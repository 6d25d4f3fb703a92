//! Running the record store's blocking calls (redb transactions with durable
//! commits) and CPU-bound work (key generation) off the async runtime.
//!
//! Every write ([`crate::store::Db`]'s insert and update) checks where it runs:
//! on a thread of a tokio runtime but not inside [`blocking`], it is counted
//! ([`runtime_writes`], per thread) and logged, so tests can assert that an
//! action commits nothing on the runtime. Writes outside any runtime (start-up,
//! tools, synchronous tests) are fine.
use crate::error::Ec2Error;
use std::cell::Cell;

thread_local! {
    /// Set while [`blocking`] runs a closure on this (blocking-pool) thread.
    static OFFLOADED: Cell<bool> = const { Cell::new(false) };
    /// Writes this thread made on the runtime.
    static RUNTIME_WRITES: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Ec2Error> + Send + 'static,
) -> Result<R, Ec2Error> {
    tokio::task::spawn_blocking(move || {
        let was = OFFLOADED.replace(true);
        let r = f();
        OFFLOADED.set(was);
        r
    })
    .await
    .map_err(|e| Ec2Error::internal(format!("worker task failed: {e}")))?
}

/// [`blocking`] with a handle on the records: `f(&db)` off the runtime.
pub(crate) async fn on_db<R: Send + 'static>(
    db: &crate::store::Db,
    f: impl FnOnce(&crate::store::Db) -> Result<R, Ec2Error> + Send + 'static,
) -> Result<R, Ec2Error> {
    let db = db.clone();
    blocking(move || f(&db)).await
}

/// Called by every record write: counts (and logs) one made on the runtime.
pub(crate) fn check_write(what: &str) {
    if OFFLOADED.get() || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    RUNTIME_WRITES.set(RUNTIME_WRITES.get() + 1);
    tracing::warn!(what, "a record write on the async runtime (not offloaded)");
}

/// How many record writes this thread made on an async runtime (outside
/// [`blocking`]); a test on a current-thread runtime reads it around the calls
/// it makes.
pub fn runtime_writes() -> u64 {
    RUNTIME_WRITES.get()
}

/// Every record of one kind that `owner` has (bounded batches, id order).
pub(crate) fn all_of<T: crate::store::Record>(
    db: &crate::store::Db,
    owner: Option<&str>,
) -> Result<Vec<crate::store::Owned<T>>, Ec2Error> {
    let batch = crate::describe::MAX_RESULTS;
    let mut out: Vec<crate::store::Owned<T>> = Vec::new();
    loop {
        let after = out.last().map(|o| o.record.id().to_string());
        let got = db.scan::<T>(owner, after.as_deref(), batch)?;
        let done = got.len() < batch;
        out.extend(got);
        if done {
            return Ok(out);
        }
    }
}
