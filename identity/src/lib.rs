//! Accounts and access keys: the one identity store every API of the cloud consults.
//!
//! Kept in an embedded transactional database (redb) under the data directory, or in
//! PostgreSQL beside the cloud's other metadata (`meta_url`). An
//! account owns buckets (and later instances and volumes); each account has one or
//! more access keys. Disabled accounts and keys no longer authenticate.
use euca_aws::{Credential, CredentialLookup, LookupError, Principal};
use rand::{Rng, RngCore};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

mod pg;
pub mod remote;
pub mod service;

pub use remote::RemoteIdentity;

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
/// Canonical user id → account name: what an S3 grant names, looked up once per
/// grantee of every ACL written.
const CANONICAL_IDS: TableDefinition<&str, &str> = TableDefinition::new("canonical_ids");

pub const ADMIN_ACCOUNT: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity database: {0}")]
    Db(String),
    #[error("account '{0}' already exists")]
    AccountExists(String),
    #[error("no account named '{0}'")]
    NoSuchAccount(String),
    #[error("no access key '{0}'")]
    NoSuchKey(String),
    #[error("invalid account name '{0}': use 1-64 of a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("{0}")]
    Conflict(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for IdentityError { fn from(e: $t) -> Self { IdentityError::Db(e.to_string()) } })*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// 12-digit account number, as EC2 and IAM show it.
    pub id: String,
    /// 64-hex canonical user id, as S3 ACLs and owners show it.
    pub canonical_id: String,
    pub enabled: bool,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account: String,
    pub enabled: bool,
    pub created: i64,
}

/// The accounts and keys: in redb under the data directory, or, when the cloud's
/// metadata is in PostgreSQL, in the same database ([`IdentityStore::open_postgres`]),
/// so every front end on it accepts the same keys. The methods block (a redb read or
/// write, or a PostgreSQL round trip): call them off the async runtime, as the
/// identity API and [`CredentialLookup::lookup`] do, or at start-up.
#[derive(Clone)]
pub struct IdentityStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(Arc<Database>),
    /// The pool, and the credentials looked up through it (see `pg`).
    Pg(euca_pg::Pool, Arc<pg::CredentialCache>),
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A new account's record: a random 12-digit number and 64-hex canonical id.
fn new_account(name: &str) -> Account {
    let mut rng = rand::rng();
    Account {
        name: name.to_string(),
        id: format!(
            "{:012}",
            rng.random_range(100_000_000_000u64..1_000_000_000_000)
        ),
        canonical_id: {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            hex::encode(b)
        },
        enabled: true,
        created: now(),
    }
}

/// A new access key for `account`: `AKIE` + 16 of A-Z 0-9, and a 40-character secret.
fn new_key(account: &str) -> AccessKey {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let id: String = "AKIE"
        .chars()
        .chain((0..16).map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char))
        .collect();
    let secret: String = (0..40)
        .map(|_| SECRET[rng.random_range(0..SECRET.len())] as char)
        .collect();
    AccessKey {
        access_key_id: id,
        secret_access_key: secret,
        account: account.to_string(),
        enabled: true,
        created: now(),
    }
}

impl IdentityStore {
    pub fn open(path: &Path) -> Result<Self, IdentityError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        let accounts = tx.open_table(ACCOUNTS)?;
        tx.open_table(KEYS)?;
        let mut ids = tx.open_table(CANONICAL_IDS)?;
        // A database from before the index (or one whose index missed an account)
        // gets it filled in; accounts are never deleted, so equal counts mean done.
        if ids.len()? != accounts.len()? {
            for item in accounts.iter()? {
                let (name, v) = item?;
                let a: Account = serde_json::from_slice(v.value())?;
                ids.insert(a.canonical_id.as_str(), name.value())?;
            }
        }
        drop((accounts, ids));
        tx.commit()?;
        Ok(Self {
            backend: Backend::Redb(Arc::new(db)),
        })
    }

    /// The store in PostgreSQL at `url` (tables `identity_…`, created at first open).
    /// Stores opened on one URL in one process share their credential cache.
    pub fn open_postgres(url: &str) -> Result<Self, IdentityError> {
        let pool = pg::open(url)?;
        let cache = pg::cache_for(url, &pool)?;
        Ok(Self {
            backend: Backend::Pg(pool, cache),
        })
    }

    /// [`IdentityStore::open_postgres`] with a cache of its own, as another process
    /// on the same database has (for tests).
    #[doc(hidden)]
    pub fn open_postgres_alone(url: &str) -> Result<Self, IdentityError> {
        let pool = pg::open(url)?;
        let cache = pg::listening_cache(&pool)?;
        Ok(Self {
            backend: Backend::Pg(pool, cache),
        })
    }

    /// Runs `f` on a PostgreSQL connection, waiting for it.
    fn pg<T: Send + 'static>(
        pool: &euca_pg::Pool,
        f: impl FnOnce(&mut euca_pg::Conn) -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        pool.run_blocking(f)
    }

    /// [`IdentityStore::pg`] for a change to accounts or keys: this process's
    /// cached credentials are dropped once it is made (other processes drop theirs
    /// when its notification arrives), and also if it failed (it may have landed).
    fn pg_change<T: Send + 'static>(
        pool: &euca_pg::Pool,
        cache: &pg::CredentialCache,
        f: impl FnOnce(&mut euca_pg::Conn) -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        let r = pool.run_blocking(f);
        cache.invalidate();
        r
    }

    /// The active key `access_key` in PostgreSQL, through the cache.
    async fn pg_credential(
        pool: &euca_pg::Pool,
        cache: &pg::CredentialCache,
        access_key: &str,
    ) -> Result<Option<Credential>, IdentityError> {
        let key = access_key.to_string();
        let load = pool.run(move |c| pg::credential(c, &key));
        cache.get_or_load(access_key, load).await
    }

    /// Copies an account and its keys in exactly (ids, secrets, enabled or not), for
    /// `euca migrate`: into PostgreSQL only. Running it again is harmless; an account
    /// or key already there with other values is refused ([`IdentityError::Conflict`]).
    pub fn import(&self, a: &Account, keys: &[AccessKey]) -> Result<(), IdentityError> {
        match &self.backend {
            Backend::Pg(pool, cache) => {
                let (a, keys) = (a.clone(), keys.to_vec());
                Self::pg_change(pool, cache, move |c| pg::import(c, &a, &keys))
            }
            Backend::Redb(_) => Err(IdentityError::Db(
                "accounts are imported into PostgreSQL only".into(),
            )),
        }
    }

    /// Creates the admin account and its first key on first start; returns them.
    /// Front ends starting at once on one database agree on the account (whoever
    /// creates it first).
    pub fn ensure_admin(&self) -> Result<(Account, AccessKey), IdentityError> {
        let admin = self.ensure_account(ADMIN_ACCOUNT)?;
        let key = match self.keys(ADMIN_ACCOUNT)?.into_iter().find(|k| k.enabled) {
            Some(k) => k,
            None => self.create_key(ADMIN_ACCOUNT)?,
        };
        Ok((admin, key))
    }

    /// The account `name`, created (with a first key) if there is none.
    pub fn ensure_account(&self, name: &str) -> Result<Account, IdentityError> {
        if let Some(a) = self.account(name)? {
            return Ok(a);
        }
        match self.create_account(name) {
            Ok((a, _)) => Ok(a),
            // Made meanwhile by another front end on the same database.
            Err(IdentityError::AccountExists(_)) => self
                .account(name)?
                .ok_or_else(|| IdentityError::NoSuchAccount(name.to_string())),
            Err(e) => Err(e),
        }
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, _) => {
                let name = name.to_string();
                return Self::pg(pool, move |c| pg::account(c, &name));
            }
        };
        let tx = db.begin_read()?;
        let t = tx.open_table(ACCOUNTS)?;
        Ok(match t.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn accounts(&self) -> Result<Vec<Account>, IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, _) => return Self::pg(pool, pg::accounts),
        };
        let tx = db.begin_read()?;
        let t = tx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn account_by_canonical_id(
        &self,
        canonical_id: &str,
    ) -> Result<Option<Account>, IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, _) => {
                let id = canonical_id.to_string();
                return Self::pg(pool, move |c| pg::account_by_canonical_id(c, &id));
            }
        };
        let name = {
            let tx = db.begin_read()?;
            let t = tx.open_table(CANONICAL_IDS)?;
            let Some(name) = t.get(canonical_id)? else {
                return Ok(None);
            };
            name.value().to_string()
        };
        self.account(&name)
    }

    /// Creates an account with a first access key.
    pub fn create_account(&self, name: &str) -> Result<(Account, AccessKey), IdentityError> {
        if !valid_name(name) {
            return Err(IdentityError::InvalidName(name.to_string()));
        }
        let account = new_account(name);
        let key = new_key(name);
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, cache) => {
                let (a, k) = (account.clone(), key.clone());
                Self::pg_change(pool, cache, move |c| pg::create_account(c, &a, &k))?;
                return Ok((account, key));
            }
        };
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(ACCOUNTS)?;
            if t.get(name)?.is_some() {
                return Err(IdentityError::AccountExists(name.to_string()));
            }
            t.insert(name, serde_json::to_vec(&account)?.as_slice())?;
            let mut ids = tx.open_table(CANONICAL_IDS)?;
            ids.insert(account.canonical_id.as_str(), name)?;
        }
        Self::insert_key(&tx, &key)?;
        tx.commit()?;
        Ok((account, key))
    }

    fn insert_key(tx: &redb::WriteTransaction, key: &AccessKey) -> Result<(), IdentityError> {
        let mut t = tx.open_table(KEYS)?;
        t.insert(
            key.access_key_id.as_str(),
            serde_json::to_vec(key)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn create_key(&self, account: &str) -> Result<AccessKey, IdentityError> {
        let key = new_key(account);
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, cache) => {
                let k = key.clone();
                Self::pg_change(pool, cache, move |c| pg::create_key(c, &k))?;
                return Ok(key);
            }
        };
        if self.account(account)?.is_none() {
            return Err(IdentityError::NoSuchAccount(account.to_string()));
        }
        let tx = db.begin_write()?;
        Self::insert_key(&tx, &key)?;
        tx.commit()?;
        Ok(key)
    }

    pub fn keys(&self, account: &str) -> Result<Vec<AccessKey>, IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, _) => {
                let account = account.to_string();
                return Self::pg(pool, move |c| pg::keys(c, &account));
            }
        };
        let tx = db.begin_read()?;
        let t = tx.open_table(KEYS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            let k: AccessKey = serde_json::from_slice(v.value())?;
            if k.account == account {
                out.push(k);
            }
        }
        Ok(out)
    }

    pub fn set_account_enabled(&self, name: &str, enabled: bool) -> Result<(), IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, cache) => {
                let name = name.to_string();
                return Self::pg_change(pool, cache, move |c| {
                    pg::set_account_enabled(c, &name, enabled)
                });
            }
        };
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(ACCOUNTS)?;
            let mut a: Account = match t.get(name)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(IdentityError::NoSuchAccount(name.to_string())),
            };
            a.enabled = enabled;
            t.insert(name, serde_json::to_vec(&a)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_key_enabled(&self, id: &str, enabled: bool) -> Result<(), IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, cache) => {
                let id = id.to_string();
                return Self::pg_change(pool, cache, move |c| pg::set_key_enabled(c, &id, enabled));
            }
        };
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(KEYS)?;
            let mut k: AccessKey = match t.get(id)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(IdentityError::NoSuchKey(id.to_string())),
            };
            k.enabled = enabled;
            t.insert(id, serde_json::to_vec(&k)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The active key `access_key` with its account (`None` if unknown or disabled).
    pub fn credential(&self, access_key: &str) -> Result<Option<Credential>, IdentityError> {
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Pg(pool, _) => {
                let key = access_key.to_string();
                return Self::pg(pool, move |c| pg::credential(c, &key));
            }
        };
        let tx = db.begin_read()?;
        let keys = tx.open_table(KEYS)?;
        let Some(v) = keys.get(access_key)? else {
            return Ok(None);
        };
        let key: AccessKey = serde_json::from_slice(v.value())?;
        let accounts = tx.open_table(ACCOUNTS)?;
        let Some(a) = accounts.get(key.account.as_str())? else {
            return Ok(None);
        };
        let account: Account = serde_json::from_slice(a.value())?;
        if !key.enabled || !account.enabled {
            return Ok(None);
        }
        Ok(Some(Credential {
            secret: key.secret_access_key,
            principal: Principal {
                account_id: account.id,
                canonical_id: account.canonical_id,
                display_name: account.name,
                access_key: key.access_key_id,
            },
        }))
    }
}

/// The local store. A read is a short in-memory/page-cache B-tree lookup, kept on
/// the runtime as before (moving it to the blocking pool would cost more than it does).
#[async_trait::async_trait]
impl CredentialLookup for IdentityStore {
    /// Reads redb off the runtime (a read may wait on the disk); PostgreSQL through
    /// the process's cache, else on one of its connection threads.
    async fn lookup(&self, access_key: &str) -> Result<Option<Credential>, LookupError> {
        if let Backend::Pg(pool, cache) = &self.backend {
            return Self::pg_credential(pool, cache, access_key)
                .await
                .map_err(|e| LookupError(e.to_string()));
        }
        let (store, key) = (self.clone(), access_key.to_string());
        tokio::task::spawn_blocking(move || store.credential(&key))
            .await
            .map_err(|e| LookupError(e.to_string()))?
            .map_err(|e| LookupError(e.to_string()))
    }

    async fn account_name(&self, canonical_id: &str) -> Result<Option<String>, LookupError> {
        let (store, id) = (self.clone(), canonical_id.to_string());
        tokio::task::spawn_blocking(move || store.account_by_canonical_id(&id))
            .await
            .map_err(|e| LookupError(e.to_string()))?
            .map(|a| a.map(|a| a.name))
            .map_err(|e| LookupError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_keys_and_disable() {
        let dir = tempfile::tempdir().unwrap();
        accounts_keys_and_disable_in(IdentityStore::open(&dir.path().join("id.redb")).unwrap());
    }

    #[test]
    fn accounts_keys_and_disable_on_postgres() {
        let url = euca_pg::testing::database_url();
        let store = IdentityStore::open_postgres(&url).unwrap();
        accounts_keys_and_disable_in(store.clone());
        // A second front end on the same database sees the same accounts and keys,
        // and ensuring an account that exists returns it.
        let other = IdentityStore::open_postgres(&url).unwrap();
        let admin = store.account(ADMIN_ACCOUNT).unwrap().unwrap();
        assert_eq!(other.ensure_admin().unwrap().0, admin);
        assert_eq!(other.ensure_account(ADMIN_ACCOUNT).unwrap(), admin);
        let k = other.create_key(ADMIN_ACCOUNT).unwrap();
        assert_eq!(
            store.credential(&k.access_key_id).unwrap().unwrap().secret,
            k.secret_access_key
        );
        assert_eq!(
            store.account_by_canonical_id(&admin.canonical_id).unwrap(),
            Some(admin)
        );
        assert!(matches!(
            other.create_key("nobody"),
            Err(IdentityError::NoSuchAccount(_))
        ));
        assert!(matches!(
            other.set_key_enabled("AKIENOPE", false),
            Err(IdentityError::NoSuchKey(_))
        ));
    }

    fn cache_of(s: &IdentityStore) -> &pg::CredentialCache {
        match &s.backend {
            Backend::Pg(_, cache) => cache,
            Backend::Redb(_) => panic!("a redb store has no credential cache"),
        }
    }

    /// Waits up to 5 s for `ok`.
    fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Credentials are cached per process, and a change made anywhere (another
    /// front end, or by hand) reaches every cache; while a process does not hear
    /// changes, it caches nothing.
    #[test]
    fn cached_credentials_follow_changes_made_anywhere_on_postgres() {
        let url = euca_pg::testing::database_url();
        // Lookups that reach the database fail fast while its tables are locked.
        let quick = format!("{url}?options=-c%20lock_timeout%3D200");
        let a = IdentityStore::open_postgres_alone(&quick).unwrap();
        let b = IdentityStore::open_postgres_alone(&quick).unwrap();
        let (_, key) = a.create_account("user").unwrap();
        let id = key.access_key_id.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let known = |s: &IdentityStore, k: &str| rt.block_on(s.lookup(k)).unwrap().is_some();
        let mut admin = url
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        eventually("b listens", || cache_of(&b).generation().is_some());
        // What b finds is kept: asked again while the tables are locked, it is
        // answered (once a's own notification, which may come late, is heard).
        let lock = "LOCK TABLE identity_access_keys, identity_accounts IN ACCESS EXCLUSIVE MODE";
        eventually("b keeps the key it found", || {
            assert!(known(&b, &id));
            let mut tx = admin.transaction().unwrap();
            tx.batch_execute(lock).unwrap();
            let kept = rt.block_on(b.lookup(&id)).is_ok();
            tx.rollback().unwrap();
            kept
        });
        // A key nobody has is not kept: it is asked about each time.
        assert!(!known(&b, "AKIELATER"));
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute(lock).unwrap();
        assert!(rt.block_on(b.lookup("AKIELATER")).is_err());
        tx.rollback().unwrap();

        // Changes through the other store, and by hand, reach b's cache.
        a.set_key_enabled(&id, false).unwrap();
        eventually("b refuses the key a disabled", || !known(&b, &id));
        admin
            .execute("UPDATE identity_access_keys SET enabled = true", &[])
            .unwrap();
        eventually("b accepts the key enabled by hand", || known(&b, &id));
        admin
            .execute(
                "INSERT INTO identity_access_keys VALUES ('AKIELATER', 's', 'user', true, 0)",
                &[],
            )
            .unwrap();
        eventually("b accepts a key added by hand", || known(&b, "AKIELATER"));
        // This process's own change is seen at once, notification or not.
        b.set_account_enabled("user", false).unwrap();
        assert!(!known(&b, &id));
        b.set_account_enabled("user", true).unwrap();
        assert!(known(&b, &id));

        // The listeners' connections end: until b listens again it caches nothing,
        // so a change made meanwhile (unheard) is seen at once.
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'euca-identity-listen'
                   AND datname = current_database()",
                &[],
            )
            .unwrap();
        assert_eq!(ended.len(), 2);
        eventually("b notices", || cache_of(&b).generation().is_none());
        admin
            .execute("UPDATE identity_access_keys SET enabled = false", &[])
            .unwrap();
        assert!(!known(&b, &id), "a stale entry was used");
        eventually("b listens again", || cache_of(&b).generation().is_some());
        assert!(!known(&b, &id));
        assert!(!known(&b, "AKIELATER"));
    }

    fn accounts_keys_and_disable_in(store: IdentityStore) {
        let (admin, key) = store.ensure_admin().unwrap();
        assert_eq!(
            store.ensure_admin().unwrap(),
            (admin.clone(), key.clone()),
            "admin is created once"
        );
        let cred = store.credential(&key.access_key_id).unwrap().unwrap();
        assert_eq!(cred.principal.canonical_id, admin.canonical_id);
        let (other, okey) = store.create_account("other").unwrap();
        assert!(matches!(
            store.create_account("other"),
            Err(IdentityError::AccountExists(_))
        ));
        assert!(matches!(
            store.create_account("Bad Name"),
            Err(IdentityError::InvalidName(_))
        ));
        assert_eq!(
            store
                .credential(&okey.access_key_id)
                .unwrap()
                .unwrap()
                .principal
                .account_id,
            other.id
        );
        store.set_key_enabled(&okey.access_key_id, false).unwrap();
        assert!(store.credential(&okey.access_key_id).unwrap().is_none());
        let k2 = store.create_key("other").unwrap();
        assert!(store.credential(&k2.access_key_id).unwrap().is_some());
        store.set_account_enabled("other", false).unwrap();
        assert!(store.credential(&k2.access_key_id).unwrap().is_none());
        assert_eq!(store.accounts().unwrap().len(), 2);
        assert!(store.credential("AKIENOPE").unwrap().is_none());
        for a in [&admin, &other] {
            let found = store.account_by_canonical_id(&a.canonical_id).unwrap();
            assert_eq!(found.map(|f| f.name), Some(a.name.clone()));
        }
        assert_eq!(
            store.account_by_canonical_id(&"0".repeat(64)).unwrap(),
            None
        );
    }

    /// A database written before the canonical-id index existed gets the index at
    /// open, and lookups by canonical id find its accounts.
    #[test]
    fn an_older_database_gets_its_canonical_id_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.redb");
        let (admin, other) = {
            let store = IdentityStore::open(&path).unwrap();
            let admin = store.ensure_admin().unwrap().0;
            let other = store.create_account("other").unwrap().0;
            let Backend::Redb(db) = &store.backend else {
                panic!("redb store")
            };
            let tx = db.begin_write().unwrap();
            assert!(tx.delete_table(CANONICAL_IDS).unwrap());
            tx.commit().unwrap();
            assert!(store.account_by_canonical_id(&admin.canonical_id).is_err());
            (admin, other)
        };
        let store = IdentityStore::open(&path).unwrap();
        assert_eq!(
            store.account_by_canonical_id(&admin.canonical_id).unwrap(),
            Some(admin)
        );
        assert_eq!(
            store.account_by_canonical_id(&other.canonical_id).unwrap(),
            Some(other)
        );
    }
}
