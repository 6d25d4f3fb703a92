//! A PostgreSQL store on a fresh database of the test binary's throwaway server
//! (`euca_pg::testing`).
use std::sync::Arc;
use walrus::meta::MetaStore;
use walrus::meta_pg::PgMeta;

/// A [`PgMeta`] on a fresh database.
pub async fn postgres() -> Arc<dyn MetaStore> {
    let url = tokio::task::spawn_blocking(euca_pg::testing::database_url)
        .await
        .unwrap();
    Arc::new(PgMeta::open(&url, 8).await.expect("open PgMeta"))
}
