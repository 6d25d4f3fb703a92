//! The cloud controller's records: key pairs, security groups, images, volumes and
//! snapshots, each stored under its EC2 id (unique across the cloud) with the
//! account that owns it. [`RecordStore`] is the interface (PostgreSQL can stand
//! behind it later); [`RedbStore`] is the embedded one (`<data>/clc/clc.redb`).
//! Every write is one redb transaction committed durably before the API answers,
//! so an acknowledged change survives `kill -9`.
//!
//! Records are JSON documents; by convention every kind has a `tags` map, which is
//! how CreateTags/DescribeTags treat all kinds alike. [`Db`] is the typed view the
//! actions use.
use crate::error::Ec2Error;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// The kinds of record, each its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    KeyPair,
    SecurityGroup,
    Image,
    Volume,
    Snapshot,
    Instance,
    /// The cloud's MAC addresses (internal: not a resource clients see): one
    /// record per MAC handed out, id = the address, so an id clash is a MAC clash
    /// caught in the inserting transaction; and the cloud's prefix under
    /// [`crate::mac::PREFIX_ID`].
    Mac,
    /// Public addresses taken from a zone's pool (elastic or launch-time):
    /// [`crate::model::Address`].
    Address,
    /// Private network allocations: [`crate::model::NetRecord`].
    Net,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::KeyPair,
        Kind::SecurityGroup,
        Kind::Image,
        Kind::Volume,
        Kind::Snapshot,
        Kind::Instance,
    ];

    /// Kinds kept for the cloud's own bookkeeping (no tags, not in DescribeTags).
    pub const INTERNAL: [Kind; 3] = [Kind::Mac, Kind::Address, Kind::Net];

    /// The EC2 `resourceType` (DescribeTags).
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::KeyPair => "key-pair",
            Kind::SecurityGroup => "security-group",
            Kind::Image => "image",
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
            Kind::Instance => "instance",
            Kind::Mac => "mac-address",
            Kind::Address => "elastic-ip",
            Kind::Net => "network-allocation",
        }
    }

    /// The kind an id names, from its prefix (`emi-`, `eki-`, `eri-` are images).
    pub fn of_id(id: &str) -> Option<Kind> {
        let (prefix, _) = id.split_once('-')?;
        Some(match prefix {
            "key" => Kind::KeyPair,
            "sg" => Kind::SecurityGroup,
            "emi" | "eki" | "eri" | "ami" | "aki" | "ari" => Kind::Image,
            "vol" => Kind::Volume,
            "snap" => Kind::Snapshot,
            "i" => Kind::Instance,
            _ => return None,
        })
    }

    /// The kind's table name (redb; PostgreSQL's `clc_records.kind`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::KeyPair => "key_pairs",
            Kind::SecurityGroup => "security_groups",
            Kind::Image => "images",
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
            Kind::Instance => "instances",
            Kind::Mac => "macs",
            Kind::Address => "addresses",
            Kind::Net => "net_allocations",
        }
    }

    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }

    /// `owner \0 id` → (), for listing one account's records in id order.
    fn owner_index(self) -> TableDefinition<'static, &'static str, ()> {
        TableDefinition::new(match self {
            Kind::KeyPair => "key_pairs_by_owner",
            Kind::SecurityGroup => "security_groups_by_owner",
            Kind::Image => "images_by_owner",
            Kind::Volume => "volumes_by_owner",
            Kind::Snapshot => "snapshots_by_owner",
            Kind::Instance => "instances_by_owner",
            Kind::Mac => "macs_by_owner",
            Kind::Address => "addresses_by_owner",
            Kind::Net => "net_allocations_by_owner",
        })
    }
}

/// One stored record.
#[derive(Debug, Clone)]
pub struct Stored {
    pub owner: String,
    pub id: String,
    pub value: Vec<u8>,
}

/// What an [`RecordStore::update`] callback decides.
pub enum Change {
    /// Leave the record as it is.
    Keep,
    /// Replace the record's value (the owner stays).
    Put(Vec<u8>),
    /// Remove the record.
    Delete,
}

/// Decides whether an existing record (its JSON) conflicts with a new one.
pub type Conflict<'a> = &'a dyn Fn(&[u8]) -> bool;

/// The storage behind the records. The calls block (a redb transaction, or
/// PostgreSQL round trips): run them off the async runtime ([`crate::offload`]).
pub trait RecordStore: Send + Sync + 'static {
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Stored>, Ec2Error>;
    /// Stores a new record, unless the id exists or `conflict` is true for one of
    /// `owner`'s records of the same kind (a name already taken): then returns false
    /// and stores nothing. Check and insert are one transaction. Without `conflict`
    /// no other record is read.
    fn insert(
        &self,
        kind: Kind,
        owner: &str,
        id: &str,
        value: &[u8],
        conflict: Option<Conflict>,
    ) -> Result<bool, Ec2Error>;
    /// Reads, decides and writes one record in one transaction; `f` sees `None` if
    /// there is no such record. Returns what `f` returned.
    fn update(
        &self,
        kind: Kind,
        id: &str,
        f: &mut dyn FnMut(Option<&Stored>) -> Result<Change, Ec2Error>,
    ) -> Result<(), Ec2Error>;
    /// Up to `limit` records in id order, with ids after `after`: `owner`'s, or every
    /// account's when `owner` is `None`.
    fn scan(
        &self,
        kind: Kind,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, Ec2Error>;
    /// Takes or renews the lease `name` for `holder` for `ttl`: true if `holder`
    /// has it now. A store only one process opens (redb) always grants it.
    fn lease(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, Ec2Error> {
        Ok(true)
    }
    /// Gives up the lease `name` if `holder` has it (a lease per piece of work,
    /// once the work is done).
    fn release_lease(&self, _name: &str, _holder: &str) -> Result<(), Ec2Error> {
        Ok(())
    }
    /// Whether other processes may share these records (background work then
    /// runs under a lease).
    fn shared(&self) -> bool {
        false
    }
    /// Calls `changed` whenever another process may have changed instance records
    /// (and once listening starts), for as long as the store lives: false if this
    /// store cannot tell (then only this process changes them).
    fn watch_instances(&self, _changed: Box<dyn Fn() + Send + Sync>) -> Result<bool, Ec2Error> {
        Ok(false)
    }
}

/// Every kind of record, the internal ones included (for copies between stores).
fn every_kind() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().chain(Kind::INTERNAL)
}

/// Copies every record of `src` into `dst` (for `euca migrate`: the CLC's redb
/// onto PostgreSQL) under the same ids and owners, then reads each kind back from
/// `dst` and compares its digest with the source's. Refuses a `dst` that holds
/// any record (a copy never merges). Returns the number of records per kind.
pub fn copy_records(
    src: &dyn RecordStore,
    dst: &dyn RecordStore,
) -> Result<Vec<(Kind, usize)>, Ec2Error> {
    const PAGE: usize = 1000;
    for kind in every_kind() {
        if !dst.scan(kind, None, None, 1)?.is_empty() {
            return Err(Ec2Error::internal(format!(
                "the target already holds {} records: copy into an empty database",
                kind.name()
            )));
        }
    }
    // Each kind's records, page by page, in id order, as (owner, id, value).
    let pages = |store: &dyn RecordStore,
                 kind: Kind,
                 f: &mut dyn FnMut(Vec<Stored>) -> Result<(), Ec2Error>| {
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(kind, None, after.as_deref(), PAGE)?;
            let done = page.len() < PAGE;
            after = page.last().map(|r| r.id.clone());
            f(page)?;
            if done {
                return Ok::<(), Ec2Error>(());
            }
        }
    };
    // Each record, length-prefixed, into a digest: the source's as it is copied,
    // the target's as it is read back (nothing held in memory but a page).
    fn digest(h: &mut sha2::Sha256, r: &Stored) {
        use sha2::Digest;
        for part in [r.owner.as_bytes(), r.id.as_bytes(), &r.value] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    let mut counts = Vec::new();
    for kind in every_kind() {
        use sha2::Digest;
        let (mut n, mut want) = (0, sha2::Sha256::new());
        pages(src, kind, &mut |page| {
            for r in page {
                if !dst.insert(kind, &r.owner, &r.id, &r.value, None)? {
                    return Err(Ec2Error::internal(format!(
                        "{} {} exists in the target",
                        kind.name(),
                        r.id
                    )));
                }
                digest(&mut want, &r);
                n += 1;
            }
            Ok(())
        })?;
        let (mut n_back, mut got) = (0, sha2::Sha256::new());
        pages(dst, kind, &mut |page| {
            n_back += page.len();
            page.iter().for_each(|r| digest(&mut got, r));
            Ok(())
        })?;
        if (n_back, got.finalize()) != (n, want.finalize()) {
            return Err(Ec2Error::internal(format!(
                "the {} records read back from the target differ from the source",
                kind.name()
            )));
        }
        counts.push((kind, n));
    }
    Ok(counts)
}

/// The embedded store: one redb file.
pub struct RedbStore {
    db: Database,
}

fn owner_key(owner: &str, id: &str) -> String {
    format!("{owner}\0{id}")
}

/// The stored form: the owner, a newline, the record's JSON. (Owners are account
/// ids: digits, never a newline.)
fn encode(owner: &str, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(owner.len() + 1 + value.len());
    v.extend_from_slice(owner.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(value);
    v
}

fn decode(id: &str, raw: &[u8]) -> Result<Stored, Ec2Error> {
    let nl = raw
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| Ec2Error::internal(format!("record {id} is damaged")))?;
    let owner = std::str::from_utf8(&raw[..nl])
        .map_err(|_| Ec2Error::internal(format!("record {id} is damaged")))?;
    Ok(Stored {
        owner: owner.to_string(),
        id: id.to_string(),
        value: raw[nl + 1..].to_vec(),
    })
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, Ec2Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Ec2Error::internal)?;
        }
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for k in Kind::ALL.into_iter().chain(Kind::INTERNAL) {
            tx.open_table(k.table())?;
            tx.open_table(k.owner_index())?;
        }
        tx.commit()?;
        Ok(RedbStore { db })
    }

    /// Stores many new records of one owner in one transaction, without the
    /// conflict check (for load generators filling a store that is not serving;
    /// an id already present is skipped). Returns how many were stored.
    pub fn bulk_insert(
        &self,
        kind: Kind,
        owner: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<usize, Ec2Error> {
        let tx = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(kind.table())?;
            let mut ix = tx.open_table(kind.owner_index())?;
            for (id, value) in records {
                if t.get(id.as_str())?.is_some() {
                    continue;
                }
                t.insert(id.as_str(), encode(owner, value).as_slice())?;
                ix.insert(owner_key(owner, id).as_str(), ())?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

impl RecordStore for RedbStore {
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Stored>, Ec2Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(kind.table())?;
        let got = t.get(id)?;
        got.map(|v| decode(id, v.value())).transpose()
    }

    fn insert(
        &self,
        kind: Kind,
        owner: &str,
        id: &str,
        value: &[u8],
        conflict: Option<Conflict>,
    ) -> Result<bool, Ec2Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(kind.table())?;
            let mut ix = tx.open_table(kind.owner_index())?;
            if t.get(id)?.is_some() {
                return Ok(false);
            }
            if let Some(conflict) = conflict {
                let start = owner_key(owner, "");
                let end = format!("{owner}\u{1}");
                for e in ix.range(start.as_str()..end.as_str())? {
                    let (k, _) = e?;
                    let other = k.value().split_once('\0').map(|(_, i)| i).unwrap_or("");
                    if let Some(v) = t.get(other)? {
                        if conflict(&decode(other, v.value())?.value) {
                            return Ok(false);
                        }
                    }
                }
            }
            t.insert(id, encode(owner, value).as_slice())?;
            ix.insert(owner_key(owner, id).as_str(), ())?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn update(
        &self,
        kind: Kind,
        id: &str,
        f: &mut dyn FnMut(Option<&Stored>) -> Result<Change, Ec2Error>,
    ) -> Result<(), Ec2Error> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(kind.table())?;
            let cur = match t.get(id)? {
                Some(v) => Some(decode(id, v.value())?),
                None => None,
            };
            match f(cur.as_ref())? {
                Change::Keep => return Ok(()),
                Change::Put(value) => {
                    let Some(cur) = cur else {
                        return Err(Ec2Error::internal(format!("no record {id} to replace")));
                    };
                    t.insert(id, encode(&cur.owner, &value).as_slice())?;
                }
                Change::Delete => {
                    if let Some(cur) = cur {
                        t.remove(id)?;
                        let mut ix = tx.open_table(kind.owner_index())?;
                        ix.remove(owner_key(&cur.owner, id).as_str())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn scan(
        &self,
        kind: Kind,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, Ec2Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(kind.table())?;
        let mut out = Vec::new();
        match owner {
            Some(owner) => {
                let ix = tx.open_table(kind.owner_index())?;
                let start = owner_key(owner, after.unwrap_or(""));
                let end = format!("{owner}\u{1}");
                for e in ix.range(start.as_str()..end.as_str())? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = e?;
                    let id = k.value().split_once('\0').map(|(_, i)| i).unwrap_or("");
                    if Some(id) == after {
                        continue;
                    }
                    if let Some(v) = t.get(id)? {
                        out.push(decode(id, v.value())?);
                    }
                }
            }
            None => {
                let iter = match after {
                    Some(a) => t.range(a..)?,
                    None => t.range::<&str>(..)?,
                };
                for e in iter {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = e?;
                    if Some(k.value()) == after {
                        continue;
                    }
                    out.push(decode(k.value(), v.value())?);
                }
            }
        }
        Ok(out)
    }
}

/// A kind of record the actions store.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: Kind;
    fn id(&self) -> &str;
}

/// A record and the account that owns it.
#[derive(Debug, Clone)]
pub struct Owned<T> {
    pub owner: String,
    pub record: T,
}

/// The typed view of a [`RecordStore`].
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn RecordStore>,
}

impl Db {
    pub fn new(store: Arc<dyn RecordStore>) -> Db {
        Db { store }
    }

    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    pub fn get<T: Record>(&self, id: &str) -> Result<Option<Owned<T>>, Ec2Error> {
        self.store
            .get(T::KIND, id)?
            .map(|s| {
                Ok(Owned {
                    record: serde_json::from_slice(&s.value)?,
                    owner: s.owner,
                })
            })
            .transpose()
    }

    /// Stores a new record for `owner`; false if `conflict` matched one of the
    /// owner's records (e.g. the name is taken) or the id exists.
    pub fn insert<T: Record>(
        &self,
        owner: &str,
        record: &T,
        conflict: impl Fn(&T) -> bool,
    ) -> Result<bool, Ec2Error> {
        crate::write_check::check_write(T::KIND.resource_type());
        let value = serde_json::to_vec(record)?;
        let check = |raw: &[u8]| serde_json::from_slice::<T>(raw).is_ok_and(|t| conflict(&t));
        self.store
            .insert(T::KIND, owner, record.id(), &value, Some(&check))
    }

    /// Stores a new record for `owner` unless its id exists (no other record is
    /// read: creating is O(log n) however many the owner has).
    pub fn insert_new<T: Record>(&self, owner: &str, record: &T) -> Result<bool, Ec2Error> {
        crate::write_check::check_write(T::KIND.resource_type());
        let value = serde_json::to_vec(record)?;
        self.store.insert(T::KIND, owner, record.id(), &value, None)
    }

    /// Changes one record atomically. `f` gets the record (or `None`) and returns
    /// whether to keep, put back (the record as `f` left it) or delete it, and a
    /// result for the caller.
    pub fn update<T: Record, R>(
        &self,
        id: &str,
        mut f: impl FnMut(Option<&mut Owned<T>>) -> Result<(Write, R), Ec2Error>,
    ) -> Result<R, Ec2Error> {
        crate::write_check::check_write(T::KIND.resource_type());
        let mut out = None;
        self.store.update(T::KIND, id, &mut |cur| {
            let mut owned = match cur {
                Some(s) => Some(Owned {
                    record: serde_json::from_slice::<T>(&s.value)?,
                    owner: s.owner.clone(),
                }),
                None => None,
            };
            let (w, r) = f(owned.as_mut())?;
            out = Some(r);
            Ok(match (w, owned) {
                (Write::Put, Some(o)) => Change::Put(serde_json::to_vec(&o.record)?),
                (Write::Delete, _) => Change::Delete,
                _ => Change::Keep,
            })
        })?;
        out.ok_or_else(|| Ec2Error::internal("update callback did not run"))
    }

    /// Changes the record only while `still` holds (e.g. a state learnt from the
    /// storage controller lands only on a record still `creating`); returns the
    /// record as stored afterwards, `None` if it is gone.
    pub fn update_while<T: Record + Clone>(
        &self,
        id: &str,
        still: impl Fn(&T) -> bool,
        mut change: impl FnMut(&mut T),
    ) -> Result<Option<Owned<T>>, Ec2Error> {
        self.update::<T, _>(id, |cur| {
            Ok(match cur {
                Some(c) if still(&c.record) => {
                    change(&mut c.record);
                    (Write::Put, Some(c.clone()))
                }
                Some(c) => (Write::Keep, Some(c.clone())),
                None => (Write::Keep, None),
            })
        })
    }

    /// Up to `limit` records of `owner` (or of everyone) after id `after`.
    pub fn scan<T: Record>(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Owned<T>>, Ec2Error> {
        self.store
            .scan(T::KIND, owner, after, limit)?
            .into_iter()
            .map(|s| {
                Ok(Owned {
                    record: serde_json::from_slice(&s.value)?,
                    owner: s.owner,
                })
            })
            .collect()
    }
}

/// What [`Db::update`]'s callback wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Keep,
    Put,
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Vol {
        id: String,
        name: String,
    }
    impl Record for Vol {
        const KIND: Kind = Kind::Volume;
        fn id(&self) -> &str {
            &self.id
        }
    }

    fn vol(id: &str, name: &str) -> Vol {
        Vol {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn insert_conflict_update_scan_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clc.redb");
        store_rules(&|| Arc::new(RedbStore::open(&path).unwrap()));
    }

    /// A redb store's records, copied onto PostgreSQL, read back the same; a
    /// second copy into the now non-empty database is refused.
    #[test]
    fn records_copy_from_redb_onto_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let src: Arc<dyn RecordStore> =
            Arc::new(RedbStore::open(&dir.path().join("clc.redb")).unwrap());
        let db = Db::new(src.clone());
        for i in 0..1203 {
            let owner = if i % 3 == 0 { "111" } else { "222" };
            assert!(db
                .insert(
                    owner,
                    &vol(&format!("vol-{i:05}"), &format!("n{i}")),
                    |_| false
                )
                .unwrap());
        }
        src.insert(Kind::Mac, "", "d0:0d:00:00:00:01", b"{}", None)
            .unwrap();
        let dst: Arc<dyn RecordStore> = Arc::new(
            crate::store_pg::PgRecordStore::open(&euca_pg::testing::database_url(), 2).unwrap(),
        );
        let counts = copy_records(&*src, &*dst).unwrap();
        assert!(counts.contains(&(Kind::Volume, 1203)), "{counts:?}");
        assert!(counts.contains(&(Kind::Mac, 1)), "{counts:?}");
        let copied = Db::new(dst.clone());
        let v = copied.get::<Vol>("vol-00600").unwrap().unwrap();
        assert_eq!((v.owner.as_str(), v.record.name.as_str()), ("111", "n600"));
        assert_eq!(
            copied.scan::<Vol>(Some("222"), None, 5000).unwrap().len(),
            802
        );
        let again = copy_records(&*src, &*dst).unwrap_err();
        assert!(again.to_string().contains("empty database"), "{again}");
    }

    #[test]
    fn insert_conflict_update_scan_survive_reopen_on_postgres() {
        let url = euca_pg::testing::database_url();
        store_rules(&|| Arc::new(crate::store_pg::PgRecordStore::open(&url, 2).unwrap()));
    }

    /// Two front ends on one database: of racing inserts of one name (different
    /// ids) exactly one wins; racing read-modify-writes lose no update; the lease
    /// has one holder.
    #[test]
    fn front_ends_sharing_postgres_race_safely() {
        let url = euca_pg::testing::database_url();
        let stores: Vec<Arc<dyn RecordStore>> = (0..2)
            .map(|_| {
                Arc::new(crate::store_pg::PgRecordStore::open(&url, 4).unwrap())
                    as Arc<dyn RecordStore>
            })
            .collect();
        for round in 0..5 {
            let wins: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|i| {
                        let db = Db::new(stores[i % 2].clone());
                        s.spawn(move || {
                            let v = vol(&format!("vol-r{round}-{i}"), &format!("name{round}"));
                            db.insert("111", &v, |o: &Vol| o.name == v.name).unwrap() as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
        let db0 = Db::new(stores[0].clone());
        assert!(db0.insert("111", &vol("vol-count", ""), |_| false).unwrap());
        std::thread::scope(|s| {
            for i in 0..8 {
                let db = Db::new(stores[i % 2].clone());
                s.spawn(move || {
                    for _ in 0..10 {
                        db.update::<Vol, _>("vol-count", |v| {
                            v.unwrap().record.name.push('x');
                            Ok((Write::Put, ()))
                        })
                        .unwrap();
                    }
                });
            }
        });
        let n = db0
            .get::<Vol>("vol-count")
            .unwrap()
            .unwrap()
            .record
            .name
            .len();
        assert_eq!(n, 80);
        let ttl = std::time::Duration::from_secs(30);
        assert!(stores[0].lease("work", "a", ttl).unwrap());
        assert!(!stores[1].lease("work", "b", ttl).unwrap());
        assert!(stores[0].lease("work", "a", ttl).unwrap());
        assert!(stores[0].shared() && stores[1].shared());
    }

    fn store_rules(open: &dyn Fn() -> Arc<dyn RecordStore>) {
        {
            let db = Db::new(open());
            assert!(db.insert("111", &vol("vol-01", "a"), |_| false).unwrap());
            assert!(db.insert("111", &vol("vol-02", "b"), |_| false).unwrap());
            assert!(db.insert("222", &vol("vol-03", "a"), |_| false).unwrap());
            // The same id, or a name taken within the account: refused.
            assert!(!db.insert("222", &vol("vol-01", "z"), |_| false).unwrap());
            assert!(!db
                .insert("111", &vol("vol-04", "a"), |o: &Vol| o.name == "a")
                .unwrap());
            let renamed: bool = db
                .update::<Vol, _>("vol-02", |v| {
                    let v = v.unwrap();
                    v.record.name = "B".into();
                    Ok((Write::Put, true))
                })
                .unwrap();
            assert!(renamed);
            db.update::<Vol, _>("vol-03", |_| Ok((Write::Delete, ())))
                .unwrap();
        }
        let db = Db::new(open());
        let mine: Vec<_> = db
            .scan::<Vol>(Some("111"), None, 10)
            .unwrap()
            .into_iter()
            .map(|o| o.record)
            .collect();
        assert_eq!(mine, [vol("vol-01", "a"), vol("vol-02", "B")]);
        let page2 = db.scan::<Vol>(Some("111"), Some("vol-01"), 10).unwrap();
        assert_eq!(page2.len(), 1);
        assert_eq!(page2[0].record.id, "vol-02");
        assert!(db.scan::<Vol>(Some("222"), None, 10).unwrap().is_empty());
        assert_eq!(db.scan::<Vol>(None, None, 1).unwrap().len(), 1);
        assert!(db.get::<Vol>("vol-03").unwrap().is_none());
        assert_eq!(db.get::<Vol>("vol-01").unwrap().unwrap().owner, "111");
    }
}
