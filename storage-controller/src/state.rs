//! The SC's durable records (volumes, snapshots) in an embedded redb database:
//! every change is one committed (fsynced) transaction, so a state an API call
//! reported survives `kill -9`.
use crate::error::ScError;
use crate::model::{Snapshot, Volume};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;

const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");

#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
}

fn db_err(e: impl std::fmt::Display) -> ScError {
    ScError::State(e.to_string())
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self, ScError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(VOLUMES).map_err(db_err)?;
        tx.open_table(SNAPSHOTS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        id: &str,
    ) -> Result<Option<T>, ScError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        match t.get(id).map_err(db_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(db_err)?)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, ScError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        id: &str,
        v: &T,
    ) -> Result<(), ScError> {
        let bytes = serde_json::to_vec(v).map_err(db_err)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(table)
            .map_err(db_err)?
            .insert(id, bytes.as_slice())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, id: &str) -> Result<(), ScError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(table)
            .map_err(db_err)?
            .remove(id)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    pub fn volume(&self, id: &str) -> Result<Option<Volume>, ScError> {
        self.get(VOLUMES, id)
    }
    pub fn volumes(&self) -> Result<Vec<Volume>, ScError> {
        self.all(VOLUMES)
    }
    pub fn put_volume(&self, v: &Volume) -> Result<(), ScError> {
        self.put(VOLUMES, &v.id, v)
    }
    pub fn remove_volume(&self, id: &str) -> Result<(), ScError> {
        self.remove(VOLUMES, id)
    }
    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, ScError> {
        self.get(SNAPSHOTS, id)
    }
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, ScError> {
        self.all(SNAPSHOTS)
    }
    pub fn put_snapshot(&self, s: &Snapshot) -> Result<(), ScError> {
        self.put(SNAPSHOTS, &s.id, s)
    }
    pub fn remove_snapshot(&self, id: &str) -> Result<(), ScError> {
        self.remove(SNAPSHOTS, id)
    }
}
