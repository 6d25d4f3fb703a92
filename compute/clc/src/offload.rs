//! Running the record store's blocking calls (redb transactions with durable
//! commits) and CPU-bound work (key generation) off the async runtime.
//! Record writes check that they run here ([`crate::write_check`]).
use crate::error::Ec2Error;

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Ec2Error> + Send + 'static,
) -> Result<R, Ec2Error> {
    tokio::task::spawn_blocking(move || crate::write_check::offloaded(f))
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
