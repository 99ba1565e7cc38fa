//! The sharding catalog as a mongos shows it in the `config` database: `config.shards`,
//! `config.databases`, `config.collections`, `config.chunks`, `config.version`, `config.tags`
//! and `config.mongos`, in MongoDB 7.0's document shapes.
//!
//! They are built from the sharding metadata whenever they are read and handed to `find`,
//! `aggregate`, `count` and `distinct` as an ordinary (temporary) collection, so every query
//! feature works on them, e.g. the chunk counts per shard of `sh.status()`:
//! `config.chunks.aggregate([{$match: {uuid}}, {$group: {_id: "$shard", n: {$sum: 1}}}])`.
//! `config.settings` is a real collection (the balancer switch is written there).
//!
//! Shapes (7.0): `config.databases` has `{_id, primary, version: {uuid, timestamp, lastMod}}`
//! (the `partitioned` flag was dropped after 6.0); `config.collections` has `{_id,
//! lastmodEpoch, lastmod, timestamp, uuid, key, unique, noBalance}`; `config.chunks` has `{_id,
//! uuid, min, max, shard, lastmod, onCurrentShardSince, history}`. `config.system.sessions` is
//! sharded on `{_id: 1}` as in every real cluster (with one chunk here, not 1024).

use std::sync::Arc;

use bson::{Bson, Document, Timestamp, doc};

use crate::engine::Engine;
use crate::engine::catalog::Entry;
use crate::engine::collection::{Collection, CollectionOptions, prepare_for_insert};
use crate::engine::namespace::Namespace;
use crate::engine::sharding::{ChunkMap, ShardKey, ShardedCollection, Sharding};
use crate::error::{CommandError, to_raw};

/// The collections served from metadata.
pub const VIEWS: &[&str] = &[
    "chunks",
    "collections",
    "databases",
    "mongos",
    "shards",
    "tags",
    "version",
];

/// The `config` collection `ns` as a temporary collection, when it is one of [`VIEWS`] and the
/// server is a mongos.
pub fn view(engine: &Engine, ns: &Namespace) -> Result<Option<Arc<Collection>>, CommandError> {
    let Some(sharding) = engine.sharding.as_ref() else {
        return Ok(None);
    };
    if ns.db != "config" || !VIEWS.contains(&ns.coll.as_str()) {
        return Ok(None);
    }
    sharding.register_new_databases(engine);
    let docs = match ns.coll.as_str() {
        "shards" => shards(sharding),
        "databases" => databases(sharding),
        "collections" => sharded_collections(engine, sharding)
            .iter()
            .map(|(ns, c)| collection_document(ns, c))
            .collect(),
        "chunks" => sharded_collections(engine, sharding)
            .iter()
            .flat_map(|(_, c)| chunk_documents(c))
            .collect(),
        "version" => vec![doc! { "_id": 1, "clusterId": sharding.cluster_id }],
        "mongos" => vec![mongos_document(engine)],
        _ => Vec::new(),
    };
    let coll = Arc::new(Collection::new(CollectionOptions::default()));
    {
        let mut data = coll.write();
        let name = ns.to_string();
        for d in docs {
            data.insert(&name, prepare_for_insert(to_raw(&d)?)?)?;
        }
    }
    Ok(Some(coll))
}

/// `listCollections` entries for the views (so `show collections` on `config` lists them).
pub fn collection_infos(engine: &Engine, db: &str) -> Vec<Document> {
    if !engine.is_mongos() || db != "config" {
        return Vec::new();
    }
    VIEWS
        .iter()
        .map(|name| {
            doc! {
                "name": *name,
                "type": "collection",
                "options": {},
                "info": { "readOnly": false },
                "idIndex": crate::engine::catalog::id_index_spec(),
            }
        })
        .collect()
}

fn shards(sharding: &Sharding) -> Vec<Document> {
    sharding
        .shards
        .iter()
        .map(|s| {
            doc! {
                "_id": s.id.clone(),
                "host": s.host.clone(),
                "state": 1,
                "topologyTime": s.topology_time,
            }
        })
        .collect()
}

fn databases(sharding: &Sharding) -> Vec<Document> {
    sharding
        .databases()
        .into_iter()
        .map(|(name, d)| {
            doc! {
                "_id": name,
                "primary": d.primary,
                "version": { "uuid": d.uuid, "timestamp": d.timestamp, "lastMod": d.last_mod },
            }
        })
        .collect()
}

/// The live sharded collections by current name (plus `config.system.sessions`), sorted.
fn sharded_collections(
    engine: &Engine,
    sharding: &Sharding,
) -> Vec<(Namespace, Arc<ShardedCollection>)> {
    let mut out = vec![(
        Namespace::new("config", "system.sessions"),
        Arc::new(system_sessions(sharding)),
    )];
    for db in engine.catalog.database_names() {
        for (name, entry) in engine.catalog.entries(&db) {
            if let Entry::Collection(c) = entry
                && let Some(sharded) = sharding.collection(&c.uuid)
            {
                out.push((Namespace::new(db.clone(), name), sharded));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `config.system.sessions`, sharded on `{_id: 1}` by every cluster at startup.
fn system_sessions(sharding: &Sharding) -> ShardedCollection {
    let key = ShardKey {
        pattern: doc! { "_id": 1 },
        fields: vec![crate::engine::sharding::shard_key::KeyField {
            path: "_id".to_string(),
            hashed: false,
        }],
    };
    let since = sharding.shards[0].topology_time;
    ShardedCollection {
        uuid: sharding.sessions_uuid,
        chunks: ChunkMap::single(&key, &sharding.shards[0].id, since),
        key,
        unique: false,
        epoch: sharding.sessions_epoch,
        last_mod: bson::DateTime::from_millis(i64::from(since.time) * 1000),
        timestamp: since,
        sharded_at: since,
        num_initial_chunks: 0,
    }
}

fn collection_document(ns: &Namespace, c: &ShardedCollection) -> Document {
    doc! {
        "_id": ns.to_string(),
        "lastmodEpoch": c.epoch,
        "lastmod": c.last_mod,
        "timestamp": c.timestamp,
        "uuid": c.uuid,
        "key": c.key.pattern.clone(),
        "unique": c.unique,
        "noBalance": false,
    }
}

fn chunk_documents(c: &ShardedCollection) -> Vec<Document> {
    c.chunks
        .chunks()
        .iter()
        .map(|chunk| {
            let history: Vec<Bson> = chunk
                .history
                .iter()
                .map(|(valid_after, shard)| {
                    Bson::Document(doc! { "validAfter": *valid_after, "shard": shard.clone() })
                })
                .collect();
            doc! {
                "_id": chunk.id,
                "uuid": c.uuid,
                "min": chunk.min.clone(),
                "max": chunk.max.clone(),
                "shard": chunk.shard.clone(),
                "lastmod": Timestamp { time: chunk.version.0, increment: chunk.version.1 },
                "onCurrentShardSince": chunk.on_current_shard_since,
                "history": history,
            }
        })
        .collect()
}

/// This router's `config.mongos` entry.
fn mongos_document(engine: &Engine) -> Document {
    doc! {
        "_id": engine.config.host.clone(),
        "advisoryHostFQDNs": [],
        "created": engine.started_at,
        "mongoVersion": crate::command::admin::VERSION,
        "ping": bson::DateTime::now(),
        "up": i64::try_from(engine.started.elapsed().as_secs()).unwrap_or(i64::MAX),
        "waiting": true,
    }
}
