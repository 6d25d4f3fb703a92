//! Accounts and keys in PostgreSQL (tables `identity_accounts`,
//! `identity_access_keys`, from `identity/migrations/postgres/`): one row per account
//! and per key, each change one statement or one short transaction.
//!
//! Credentials are cached per process ([`CredentialCache`]): every request of every
//! service looks its access key up, and a round trip each was an eighth of a small
//! PUT's statements. A change to the tables (through any front end, or by hand)
//! notifies channel `euca_identity` (a trigger, migration 2) and every process drops
//! its cache when the notification arrives; a process that changes them itself drops
//! it at once. While the listening connection is down, nothing is cached.
use crate::{AccessKey, Account, IdentityError};
use euca_aws::{Credential, Principal};
use euca_pg::{Conn, Migration, Pool};
use postgres::Row;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_identity.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_notify.sql"),
    },
];

/// The channel the tables' trigger notifies.
const CHANNEL: &str = "euca_identity";

/// Credentials kept at most.
const CACHE_ENTRIES: usize = 10_000;

/// Active access keys looked up: see [`euca_pg::NotifiedCache`].
pub(crate) type CredentialCache = euca_pg::NotifiedCache<Credential>;

/// One cache per database per process, so a change made through one store in
/// this process (the identity API) is seen at once by the others (each service's
/// request authentication).
static CACHES: LazyLock<Mutex<HashMap<String, Weak<CredentialCache>>>> =
    LazyLock::new(Default::default);

/// The process's cache for `url`, listening through `pool` if it is new.
pub(crate) fn cache_for(url: &str, pool: &Pool) -> Result<Arc<CredentialCache>, IdentityError> {
    let mut caches = CACHES
        .lock()
        .map_err(|_| IdentityError::Db("credential cache poisoned".into()))?;
    if let Some(c) = caches.get(url).and_then(Weak::upgrade) {
        return Ok(c);
    }
    let cache = listening_cache(pool)?;
    caches.insert(url.to_string(), Arc::downgrade(&cache));
    Ok(cache)
}

/// A cache of its own, fed by a listener on `pool`'s database.
pub(crate) fn listening_cache(pool: &Pool) -> Result<Arc<CredentialCache>, IdentityError> {
    Ok(CredentialCache::listening(pool, CHANNEL, CACHE_ENTRIES)?)
}

impl From<euca_pg::PgError> for IdentityError {
    fn from(e: euca_pg::PgError) -> Self {
        IdentityError::Db(e.to_string())
    }
}

impl From<postgres::Error> for IdentityError {
    fn from(e: postgres::Error) -> Self {
        IdentityError::Db(format!("postgresql: {}", euca_pg::message(&e)))
    }
}

const ACCOUNT_COLUMNS: &str = "name, id, canonical_id, enabled, created";
const KEY_COLUMNS: &str = "access_key_id, secret_access_key, account, enabled, created";

fn account_of(r: &Row) -> Account {
    Account {
        name: r.get(0),
        id: r.get(1),
        canonical_id: r.get(2),
        enabled: r.get(3),
        created: r.get(4),
    }
}

fn key_of(r: &Row) -> AccessKey {
    AccessKey {
        access_key_id: r.get(0),
        secret_access_key: r.get(1),
        account: r.get(2),
        enabled: r.get(3),
        created: r.get(4),
    }
}

pub(crate) fn open(url: &str) -> Result<Pool, IdentityError> {
    Ok(Pool::open_blocking(
        url,
        "euca-identity",
        4,
        "identity",
        MIGRATIONS,
    )?)
}

pub(crate) fn account(c: &mut Conn, name: &str) -> Result<Option<Account>, IdentityError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM identity_accounts WHERE name = $1");
    Ok(c.client.query_opt(&sql, &[&name])?.as_ref().map(account_of))
}

pub(crate) fn accounts(c: &mut Conn) -> Result<Vec<Account>, IdentityError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM identity_accounts ORDER BY name");
    Ok(c.client.query(&sql, &[])?.iter().map(account_of).collect())
}

pub(crate) fn account_by_canonical_id(
    c: &mut Conn,
    canonical_id: &str,
) -> Result<Option<Account>, IdentityError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM identity_accounts WHERE canonical_id = $1");
    Ok(c.client
        .query_opt(&sql, &[&canonical_id])?
        .as_ref()
        .map(account_of))
}

fn insert_key(c: &mut impl postgres::GenericClient, k: &AccessKey) -> Result<bool, IdentityError> {
    // Only for an account that exists (no row: it does not).
    let n = c.execute(
        "INSERT INTO identity_access_keys (access_key_id, secret_access_key, account, enabled, created)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM identity_accounts WHERE name = $3)",
        &[&k.access_key_id, &k.secret_access_key, &k.account, &k.enabled, &k.created],
    )?;
    Ok(n == 1)
}

pub(crate) fn create_account(
    c: &mut Conn,
    a: &Account,
    k: &AccessKey,
) -> Result<(), IdentityError> {
    let mut tx = c.client.transaction()?;
    let n = tx.execute(
        "INSERT INTO identity_accounts (name, id, canonical_id, enabled, created)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        &[&a.name, &a.id, &a.canonical_id, &a.enabled, &a.created],
    )?;
    if n == 0 {
        return Err(IdentityError::AccountExists(a.name.clone()));
    }
    insert_key(&mut tx, k)?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn create_key(c: &mut Conn, k: &AccessKey) -> Result<(), IdentityError> {
    if !insert_key(&mut c.client, k)? {
        return Err(IdentityError::NoSuchAccount(k.account.clone()));
    }
    Ok(())
}

pub(crate) fn keys(c: &mut Conn, account: &str) -> Result<Vec<AccessKey>, IdentityError> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM identity_access_keys WHERE account = $1 ORDER BY access_key_id"
    );
    Ok(c.client
        .query(&sql, &[&account])?
        .iter()
        .map(key_of)
        .collect())
}

pub(crate) fn set_account_enabled(
    c: &mut Conn,
    name: &str,
    enabled: bool,
) -> Result<(), IdentityError> {
    let n = c.client.execute(
        "UPDATE identity_accounts SET enabled = $2 WHERE name = $1",
        &[&name, &enabled],
    )?;
    if n == 0 {
        return Err(IdentityError::NoSuchAccount(name.to_string()));
    }
    Ok(())
}

pub(crate) fn set_key_enabled(c: &mut Conn, id: &str, enabled: bool) -> Result<(), IdentityError> {
    let n = c.client.execute(
        "UPDATE identity_access_keys SET enabled = $2 WHERE access_key_id = $1",
        &[&id, &enabled],
    )?;
    if n == 0 {
        return Err(IdentityError::NoSuchKey(id.to_string()));
    }
    Ok(())
}

/// The active key with its account, in one round trip (a prepared statement).
pub(crate) fn credential(
    c: &mut Conn,
    access_key: &str,
) -> Result<Option<Credential>, IdentityError> {
    let st = c.statements.get(
        &mut c.client,
        "SELECT k.secret_access_key, a.id, a.canonical_id, a.name
         FROM identity_access_keys k JOIN identity_accounts a ON a.name = k.account
         WHERE k.access_key_id = $1 AND k.enabled AND a.enabled",
    )?;
    Ok(c.client
        .query_opt(&st, &[&access_key])?
        .map(|r| Credential {
            secret: r.get(0),
            principal: Principal {
                account_id: r.get(1),
                canonical_id: r.get(2),
                display_name: r.get(3),
                access_key: access_key.to_string(),
            },
        }))
}

/// Inserts `a` and its `keys` exactly as given (ids, secrets, state), in one
/// transaction. Rows already there are kept if they are the same; a different account
/// under the name, or a key under another account, is an [`IdentityError::Conflict`].
pub(crate) fn import(c: &mut Conn, a: &Account, keys: &[AccessKey]) -> Result<(), IdentityError> {
    let mut tx = c.client.transaction()?;
    tx.execute(
        "INSERT INTO identity_accounts (name, id, canonical_id, enabled, created)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&a.name, &a.id, &a.canonical_id, &a.enabled, &a.created],
    )?;
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM identity_accounts WHERE name = $1");
    let there = tx.query_opt(&sql, &[&a.name])?.as_ref().map(account_of);
    if there.as_ref().map(|t| (&t.id, &t.canonical_id)) != Some((&a.id, &a.canonical_id)) {
        return Err(IdentityError::Conflict(format!(
            "account '{}' (or its number or canonical id) is already there, different",
            a.name
        )));
    }
    for k in keys {
        tx.execute(
            "INSERT INTO identity_access_keys (access_key_id, secret_access_key, account, enabled, created)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&k.access_key_id, &k.secret_access_key, &k.account, &k.enabled, &k.created],
        )?;
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM identity_access_keys WHERE access_key_id = $1");
        let there = tx
            .query_opt(&sql, &[&k.access_key_id])?
            .as_ref()
            .map(key_of);
        if there.as_ref().map(|t| (&t.secret_access_key, &t.account))
            != Some((&k.secret_access_key, &k.account))
        {
            return Err(IdentityError::Conflict(format!(
                "access key {} is already there, different",
                k.access_key_id
            )));
        }
    }
    tx.commit()?;
    Ok(())
}
