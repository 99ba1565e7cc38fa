//! The catalog: which databases, collections and views exist, with their options.
//!
//! A database exists while it holds at least one collection or view, as in mongod. Every
//! catalog change (create, drop, rename, dropDatabase) is committed to the oplog while the
//! catalog write lock is held, so catalog order and oplog order agree.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bson::{Bson, Document, doc};

use crate::engine::collection::{Collection, CollectionOptions};
use crate::engine::namespace::Namespace;
use crate::engine::oplog::{DdlOp, Oplog, OplogOp};
use crate::error::CommandError;

/// A view: a stored aggregation over another collection of the same database.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The collection or view it reads (same database).
    pub view_on: String,
    /// The pipeline applied to it.
    pub pipeline: Vec<Document>,
    /// The options as `listCollections` reports them (`viewOn`, `pipeline`, `collation`).
    pub options: Document,
}

/// One name in a database.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A collection (regular, capped, clustered or time-series) with its documents.
    Collection(Arc<Collection>),
    /// A view.
    View(Arc<View>),
}

/// The names of one database.
#[derive(Debug, Default)]
pub struct Database {
    /// Collections and views by name.
    pub entries: BTreeMap<String, Entry>,
}

/// All databases.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Databases by name; std lock, never held across an await.
    dbs: RwLock<BTreeMap<String, Database>>,
}

impl Catalog {
    /// Read access to all databases.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Database>> {
        self.dbs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to all databases.
    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Database>> {
        self.dbs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry named `ns`, if any.
    pub fn get(&self, ns: &Namespace) -> Option<Entry> {
        self.read()
            .get(&ns.db)
            .and_then(|db| db.entries.get(&ns.coll))
            .cloned()
    }

    /// The collection named `ns`; views and missing names give `None`.
    pub fn collection(&self, ns: &Namespace) -> Option<Arc<Collection>> {
        match self.get(ns) {
            Some(Entry::Collection(c)) => Some(c),
            _ => None,
        }
    }

    /// The collection named `ns`, created (and committed to the oplog) when missing, as an
    /// insert or upsert into a new namespace does.
    pub fn collection_or_create(
        &self,
        ns: &Namespace,
        oplog: &Oplog,
    ) -> Result<Arc<Collection>, CommandError> {
        match self.get(ns) {
            Some(Entry::Collection(c)) => return Ok(c),
            Some(Entry::View(_)) => {
                return Err(CommandError::new(
                    166,
                    format!("Namespace {ns} is a view, not a collection"),
                ));
            }
            None => {}
        }
        crate::engine::namespace::validate_db_name(&ns.db)?;
        crate::engine::namespace::validate_coll_name(&ns.db, &ns.coll)?;
        let mut dbs = self.write();
        // Re-check under the write lock: another connection may have created it meanwhile.
        if let Some(entry) = dbs.get(&ns.db).and_then(|d| d.entries.get(&ns.coll)) {
            return match entry {
                Entry::Collection(c) => Ok(Arc::clone(c)),
                Entry::View(_) => Err(CommandError::new(
                    166,
                    format!("Namespace {ns} is a view, not a collection"),
                )),
            };
        }
        let coll = Arc::new(Collection::new(CollectionOptions::default()));
        oplog.append(
            vec![OplogOp::Ddl(DdlOp::Create {
                ns: ns.clone(),
                uuid: coll.uuid,
                options: Document::new(),
                id_index: Some(id_index_spec()),
                kind: "collection",
            })],
            None,
        );
        dbs.entry(ns.db.clone())
            .or_default()
            .entries
            .insert(ns.coll.clone(), Entry::Collection(Arc::clone(&coll)));
        Ok(coll)
    }

    /// Database names that exist (hold at least one collection or view).
    pub fn database_names(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, db)| !db.entries.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The names of the entries of a database, with the entries.
    pub fn entries(&self, db: &str) -> Vec<(String, Entry)> {
        self.read()
            .get(db)
            .map(|d| {
                d.entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `_id` index every collection has: `{v: 2, key: {_id: 1}, name: "_id_"}`.
pub fn id_index_spec() -> Document {
    doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
}

/// Converts a list of pipeline stage documents to a BSON array.
pub fn pipeline_to_bson(pipeline: &[Document]) -> Bson {
    Bson::Array(pipeline.iter().cloned().map(Bson::Document).collect())
}
