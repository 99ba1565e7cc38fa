//! The sharding state of a mongos: shards, databases with their primary shards, sharded
//! collections with their chunks, and the balancer.
//!
//! One process plays the mongos, the config server and `shards` internal shards. Documents are
//! stored once, in the ordinary catalog; what makes the cluster sharded is this metadata:
//! - every user database has a primary shard (`config.databases`), chosen like
//!   `createDatabase` does (the shard holding the least data, ties to the lowest id), and its
//!   unsharded collections live there;
//! - a sharded collection has a shard key and a [`ChunkMap`]; a document lives on the shard that
//!   owns the chunk its shard key value falls in.
//!
//! So placement is a pure function of a document and the metadata, evaluated when someone asks
//! (`collStats`, `$collStats`, `listDatabases`); chunk migrations are metadata updates, with no
//! data to copy. Sharded collections are keyed by UUID, so a rename keeps its sharding, a drop
//! makes it disappear from `config.collections` (whose view only lists live collections) and a
//! recreated collection starts unsharded; the entries of dropped incarnations are kept so change
//! events written before the drop still get their shard key in `documentKey`.

pub mod chunks;
pub mod shard_key;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{DateTime, RawDocument, Timestamp};

pub use self::chunks::{Chunk, ChunkMap};
pub use self::shard_key::ShardKey;
use crate::engine::Engine;
use crate::engine::catalog::Entry;
use crate::engine::namespace::{Namespace, is_internal_db};

/// How often mongod's balancer starts a round (`kBalanceRoundDefaultInterval`).
pub const BALANCER_ROUND_INTERVAL: Duration = Duration::from_secs(10);

/// One shard as `listShards` and `config.shards` describe it.
#[derive(Debug, Clone)]
pub struct Shard {
    /// `shard0`, `shard1`, ...
    pub id: String,
    /// `shard0/127.0.0.1:PORT`: a replica-set connection string. The address is the mongos'
    /// own: the shards live inside this process and are not separately reachable.
    pub host: String,
    /// When the shard joined the cluster (`topologyTime`).
    pub topology_time: Timestamp,
}

/// A `config.databases` entry.
#[derive(Debug, Clone)]
pub struct DatabaseEntry {
    /// The primary shard.
    pub primary: String,
    /// `version.uuid`.
    pub uuid: bson::Uuid,
    /// `version.timestamp`: the cluster time of creation.
    pub timestamp: Timestamp,
    /// `version.lastMod`.
    pub last_mod: i32,
}

/// A sharded collection (`config.collections` plus its chunks).
#[derive(Debug, Clone)]
pub struct ShardedCollection {
    /// The collection incarnation.
    pub uuid: bson::Uuid,
    /// The shard key.
    pub key: ShardKey,
    /// `unique` of `shardCollection`.
    pub unique: bool,
    /// `lastmodEpoch`.
    pub epoch: ObjectId,
    /// `lastmod`: when it was sharded.
    pub last_mod: DateTime,
    /// `timestamp`: the cluster time of sharding (also the chunks' first `validAfter`).
    pub timestamp: Timestamp,
    /// The cluster time of the `shardCollection` oplog entry: change events after it carry
    /// the shard key in `documentKey`.
    pub sharded_at: Timestamp,
    /// `numInitialChunks` as requested (0 when not given), for the `shardCollection` event.
    pub num_initial_chunks: i64,
    /// The routing table.
    pub chunks: ChunkMap,
}

impl ShardedCollection {
    /// The shard that owns a document (by its shard key).
    pub fn shard_of(&self, doc: &RawDocument) -> String {
        match self.key.encode_document(doc) {
            Ok(k) => self.chunks.find(&k).shard.clone(),
            // A stored document with an array in its shard key predates sharding (mongod
            // refuses to shard such a collection); count it where null keys go.
            Err(_) => self
                .chunks
                .find(&self.key.encode(&bson::Document::new()))
                .shard
                .clone(),
        }
    }
}

/// Mutable metadata, under one lock.
#[derive(Debug, Default)]
struct State {
    /// `config.databases`, by name.
    databases: BTreeMap<String, DatabaseEntry>,
    /// Sharded collections by UUID (current and dropped incarnations).
    collections: HashMap<bson::Uuid, Arc<ShardedCollection>>,
}

/// The balancer's bookkeeping: it never moves data here, but its rounds are counted while it
/// is enabled, as `balancerStatus.numBalancerRounds` counts a real one's.
#[derive(Debug)]
struct BalancerClock {
    /// When it was last enabled, while enabled.
    enabled_since: Option<Instant>,
    /// Enabled time before `enabled_since`.
    accumulated: Duration,
}

/// The sharding state of a mongos.
#[derive(Debug)]
pub struct Sharding {
    /// The shards, in id order.
    pub shards: Vec<Shard>,
    /// `config.version.clusterId`.
    pub cluster_id: ObjectId,
    /// The UUID of `config.system.sessions`, which every cluster shards at startup.
    pub sessions_uuid: bson::Uuid,
    /// Its `lastmodEpoch`.
    pub sessions_epoch: ObjectId,
    /// Databases and sharded collections.
    state: RwLock<State>,
    /// Balancer rounds.
    balancer: Mutex<BalancerClock>,
}

impl Sharding {
    /// A cluster of `n` shards (at least 1) whose advertised address is `host`.
    pub fn new(n: usize, host: &str, now: Timestamp) -> Sharding {
        let shards = (0..n.max(1))
            .map(|i| Shard {
                id: format!("shard{i}"),
                host: format!("shard{i}/{host}"),
                topology_time: now,
            })
            .collect();
        Sharding {
            shards,
            cluster_id: ObjectId::new(),
            sessions_uuid: bson::Uuid::new(),
            sessions_epoch: ObjectId::new(),
            state: RwLock::new(State::default()),
            balancer: Mutex::new(BalancerClock {
                enabled_since: Some(Instant::now()),
                accumulated: Duration::ZERO,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard ids, in order.
    pub fn shard_ids(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.id.clone()).collect()
    }

    /// True when a shard with this id exists.
    pub fn has_shard(&self, id: &str) -> bool {
        self.shards.iter().any(|s| s.id == id)
    }

    /// A database's entry, if it has one.
    pub fn database(&self, name: &str) -> Option<DatabaseEntry> {
        self.read().databases.get(name).cloned()
    }

    /// All database entries, by name.
    pub fn databases(&self) -> Vec<(String, DatabaseEntry)> {
        self.read()
            .databases
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `createDatabase`: the existing entry, or a new one whose primary is `primary` or else
    /// the shard holding the least data. Internal databases are not registered.
    pub fn ensure_database(
        &self,
        engine: &Engine,
        name: &str,
        primary: Option<&str>,
    ) -> Option<DatabaseEntry> {
        if is_internal_db(name) {
            return None;
        }
        if let Some(existing) = self.database(name) {
            return Some(existing);
        }
        let primary = match primary {
            Some(p) => p.to_string(),
            None => self.least_loaded_shard(engine),
        };
        let mut state = self.write();
        // Another connection may have registered it meanwhile.
        let entry = state
            .databases
            .entry(name.to_string())
            .or_insert_with(|| DatabaseEntry {
                primary,
                uuid: bson::Uuid::new(),
                timestamp: engine.oplog.cluster_time(),
                last_mod: 1,
            });
        Some(entry.clone())
    }

    /// Registers every user database of the catalog that has no entry yet, as a mongos creates
    /// the entry when the first collection of a database is created through it.
    pub fn register_new_databases(&self, engine: &Engine) {
        let names = engine.catalog.database_names();
        let missing: Vec<String> = {
            let state = self.read();
            names
                .into_iter()
                .filter(|n| !is_internal_db(n) && !state.databases.contains_key(n))
                .collect()
        };
        for name in missing {
            self.ensure_database(engine, &name, None);
        }
    }

    /// Forgets a dropped database (and the sharding of its collections).
    pub fn drop_database(&self, name: &str) {
        self.write().databases.remove(name);
    }

    /// The sharding of a collection incarnation, if it is sharded.
    pub fn collection(&self, uuid: &bson::Uuid) -> Option<Arc<ShardedCollection>> {
        self.read().collections.get(uuid).cloned()
    }

    /// The sharding of the collection currently named `ns`, if it is sharded.
    pub fn collection_at(&self, engine: &Engine, ns: &Namespace) -> Option<Arc<ShardedCollection>> {
        let coll = engine.catalog.collection(ns)?;
        self.collection(&coll.uuid)
    }

    /// Records a newly sharded collection.
    pub fn add_collection(&self, sharded: ShardedCollection) {
        self.write()
            .collections
            .insert(sharded.uuid, Arc::new(sharded));
    }

    /// Changes a sharded collection's metadata (copy on write: readers holding the previous
    /// version keep a consistent snapshot).
    pub fn update_collection<T>(
        &self,
        uuid: &bson::Uuid,
        f: impl FnOnce(&mut ShardedCollection) -> T,
    ) -> Option<T> {
        let mut state = self.write();
        let current = state.collections.get(uuid)?;
        let mut next = (**current).clone();
        let out = f(&mut next);
        state.collections.insert(*uuid, Arc::new(next));
        Some(out)
    }

    /// The shard key that change events of `uuid` written at `ts` carry in `documentKey`.
    pub fn event_shard_key(&self, uuid: &bson::Uuid, ts: Timestamp) -> Option<ShardKey> {
        let state = self.read();
        let sharded = state.collections.get(uuid)?;
        (ts > sharded.sharded_at).then(|| sharded.key.clone())
    }

    /// The primary shard of a database (the first shard when it has no entry yet).
    pub fn primary_of(&self, db: &str) -> String {
        self.database(db)
            .map(|d| d.primary)
            .unwrap_or_else(|| self.shards[0].id.clone())
    }

    /// Document count and data bytes per shard of one collection, for every shard that owns
    /// part of it (shards owning chunks of a sharded collection, the primary shard of an
    /// unsharded one), in shard-id order.
    pub fn distribution(
        &self,
        ns: &Namespace,
        coll: &crate::engine::collection::Collection,
    ) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        match self.collection(&coll.uuid) {
            Some(sharded) => {
                for shard in sharded.chunks.shards() {
                    out.insert(shard, (0, 0));
                }
                let data = coll.read();
                for (_, doc) in data.documents() {
                    let entry = out.entry(sharded.shard_of(doc)).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 += doc.as_bytes().len() as u64;
                }
            }
            None => {
                let data = coll.read();
                out.insert(
                    self.primary_of(&ns.db),
                    (data.count() as u64, data.data_size()),
                );
            }
        }
        out
    }

    /// Data bytes per shard over all user databases (for choosing a new database's primary).
    fn least_loaded_shard(&self, engine: &Engine) -> String {
        let mut sizes: BTreeMap<String, u64> =
            self.shards.iter().map(|s| (s.id.clone(), 0)).collect();
        let registered: Vec<String> = self.read().databases.keys().cloned().collect();
        for db in registered {
            for (name, entry) in engine.catalog.entries(&db) {
                if let Entry::Collection(c) = entry {
                    let ns = Namespace::new(db.clone(), name);
                    for (shard, (_, bytes)) in self.distribution(&ns, &c) {
                        *sizes.entry(shard).or_default() += bytes;
                    }
                }
            }
        }
        // The first shard with the smallest size, as `selectShardForNewDatabase` picks.
        let mut best = self.shards[0].id.clone();
        let mut best_size = u64::MAX;
        for shard in &self.shards {
            let size = sizes.get(&shard.id).copied().unwrap_or(0);
            if size < best_size {
                best = shard.id.clone();
                best_size = size;
            }
        }
        best
    }

    /// Enables or disables the balancer's round counting.
    pub fn set_balancer_enabled(&self, enabled: bool) {
        let mut clock = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        match (enabled, clock.enabled_since) {
            (true, None) => clock.enabled_since = Some(Instant::now()),
            (false, Some(since)) => {
                clock.accumulated += since.elapsed();
                clock.enabled_since = None;
            }
            _ => {}
        }
    }

    /// Balancer rounds so far: one per [`BALANCER_ROUND_INTERVAL`] of enabled time.
    pub fn balancer_rounds(&self) -> i64 {
        let clock = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        let enabled =
            clock.accumulated + clock.enabled_since.map_or(Duration::ZERO, |s| s.elapsed());
        i64::try_from(enabled.as_secs() / BALANCER_ROUND_INTERVAL.as_secs()).unwrap_or(i64::MAX)
    }
}

/// The shard key rules of writes to sharded collections (MongoDB 7.0). A mongos routes
/// `updateOne`/`deleteOne`/`findAndModify` without the shard key through its two-phase write
/// protocol, so only these remain errors.
impl Sharding {
    /// An inserted (or upserted) document's shard key paths must not hold arrays (61).
    pub fn check_insert(
        &self,
        uuid: &bson::Uuid,
        doc: &RawDocument,
    ) -> Result<(), crate::error::CommandError> {
        if let Some(sharded) = self.collection(uuid) {
            sharded.key.extract(doc)?;
        }
        Ok(())
    }

    /// An upsert must name the whole shard key by equality in its filter (until 7.1).
    pub fn check_upsert(
        &self,
        uuid: &bson::Uuid,
        query: &RawDocument,
    ) -> Result<(), crate::error::CommandError> {
        if let Some(sharded) = self.collection(uuid)
            && sharded.key.equality_key(query).is_none()
        {
            return Err(crate::error::CommandError::new(
                61,
                "Failed to target upsert by query :: could not extract exact shard key",
            ));
        }
        Ok(())
    }

    /// An update that changes a document's shard key value (`UpdateStage`'s checks): the new
    /// key must hold no arrays (54), the filter must name the full shard key (31025), and it
    /// must not be a multi-update (72). The document may then move to another shard, which
    /// here is a change of owning chunk only.
    pub fn check_update(
        &self,
        uuid: &bson::Uuid,
        query: &RawDocument,
        multi: bool,
        before: &RawDocument,
        after: &RawDocument,
    ) -> Result<(), crate::error::CommandError> {
        use crate::error::CommandError;
        let Some(sharded) = self.collection(uuid) else {
            return Ok(());
        };
        let old = sharded.key.extract(before).ok();
        let new = match sharded.key.extract(after) {
            Ok(k) => k,
            Err(_) => {
                let field = sharded
                    .key
                    .fields
                    .iter()
                    .find(|f| sharded.key.extract_field_is_array(after, &f.path))
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                return Err(CommandError::new(
                    54,
                    format!(
                        "After applying the update to the document, the (immutable) field '{field}' was found to be an array or array descendant."
                    ),
                ));
            }
        };
        if old.as_ref() == Some(&new) {
            return Ok(());
        }
        if sharded.key.equality_key(query).is_none() {
            return Err(CommandError::new(
                31025,
                "Shard key update is not allowed without specifying the full shard key in the query",
            ));
        }
        if multi {
            return Err(CommandError::new(
                72,
                "Multi-update operations are not allowed when updating the shard key field.",
            ));
        }
        Ok(())
    }
}
