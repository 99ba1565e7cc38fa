//! What mongoshift learns about a cluster: who it is, what it holds, what the connected user
//! may do, and how much change history it keeps.
//!
//! Snapshots are plain data: the planner and the preflight checks are pure functions over them,
//! and plan files store them (documents as canonical Extended JSON, so every BSON type
//! survives the round trip).

use std::collections::BTreeMap;

use bson::{Document, Timestamp};
use serde::{Deserialize, Serialize};

use super::privileges::Privileges;
use crate::namespace::Namespace;

/// Everything inspected on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// Server identity and topology.
    pub server: ServerInfo,
    /// What the connected user may do; `None` when the server does not enforce access control.
    pub privileges: Option<Privileges>,
    /// The change history the source keeps (replica sets only).
    pub oplog: Option<OplogInfo>,
    /// Why the oplog could not be read, when it was asked for and could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_unreadable: Option<String>,
    /// Shards, when the cluster is sharded.
    pub sharding: Option<ShardingInfo>,
    /// Databases and collections.
    pub catalog: Catalog,
}

/// How the cluster is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Topology {
    /// A replica set (connected to its primary).
    ReplicaSet {
        /// `setName`.
        set_name: String,
    },
    /// A sharded cluster, reached through `mongos`.
    Sharded,
    /// A single `mongod` that is not part of a replica set.
    Standalone,
}

impl Topology {
    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::ReplicaSet { set_name } => format!("replica set {set_name}"),
            Self::Sharded => "sharded cluster (mongos)".to_owned(),
            Self::Standalone => "standalone mongod".to_owned(),
        }
    }
}

/// Server identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Topology.
    pub topology: Topology,
    /// `buildInfo.version`, e.g. `7.0.14`.
    pub version: String,
    /// Major, minor, patch from `buildInfo.versionArray` (or parsed from `version`).
    pub version_parts: [u32; 3],
    /// `featureCompatibilityVersion`, when readable.
    pub fcv: Option<String>,
    /// The hosts the cluster reports (`hello.hosts`, or the seed list for mongos).
    pub hosts: Vec<String>,
    /// The highest wire version the server speaks.
    pub max_wire_version: i32,
}

impl ServerInfo {
    /// `major.minor`.
    pub fn major_minor(&self) -> (u32, u32) {
        (self.version_parts[0], self.version_parts[1])
    }
}

/// The oplog of a replica-set source: how far back change history reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogInfo {
    /// Cluster time of the oldest entry.
    #[serde(with = "timestamp_serde")]
    pub first: Timestamp,
    /// Cluster time of the newest entry.
    #[serde(with = "timestamp_serde")]
    pub last: Timestamp,
    /// Bytes used by the oplog, when reported.
    pub used_bytes: Option<u64>,
    /// Configured maximum size of the oplog, when reported.
    pub max_bytes: Option<u64>,
}

impl OplogInfo {
    /// Seconds of history currently kept.
    pub fn window_secs(&self) -> u64 {
        u64::from(self.last.time.saturating_sub(self.first.time))
    }

    /// The window once the oplog is full, extrapolated from the current fill level (a fresh
    /// oplog's window is only as old as the cluster, and keeps growing until the oplog wraps).
    /// `None` when the oplog is (nearly) full or its sizes are unknown.
    pub fn projected_window_secs(&self) -> Option<u64> {
        let (used, max) = (self.used_bytes?, self.max_bytes?);
        if used == 0 || used.saturating_mul(10) >= max.saturating_mul(9) {
            return None;
        }
        let window = self.window_secs() as f64 * (max as f64 / used as f64);
        Some(window as u64)
    }
}

/// The shards of a sharded cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardingInfo {
    /// Shard ids and hosts.
    pub shards: Vec<Shard>,
    /// Whether the balancer is running (`balancerStatus.mode != "off"`), when readable.
    pub balancer_running: Option<bool>,
}

/// One shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// `_id`.
    pub id: String,
    /// `host` (`rs/host:port,...`).
    pub host: String,
}

/// The user databases of a cluster (system databases are never listed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Databases by name.
    pub databases: BTreeMap<String, DatabaseInfo>,
}

impl Catalog {
    /// Every collection and view, in namespace order.
    pub fn namespaces(&self) -> impl Iterator<Item = (Namespace, &CollectionInfo)> {
        self.databases.iter().flat_map(|(db, info)| {
            info.collections
                .iter()
                .map(move |(name, c)| (Namespace::new(db.clone(), name.clone()), c))
        })
    }

    /// One collection or view.
    pub fn get(&self, ns: &Namespace) -> Option<&CollectionInfo> {
        self.databases.get(ns.db())?.collections.get(ns.coll())
    }
}

/// One database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Collections and views by name.
    pub collections: BTreeMap<String, CollectionInfo>,
}

/// What kind of namespace a catalog entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionKind {
    /// A regular (possibly capped or clustered) collection.
    #[default]
    Collection,
    /// A view: a stored aggregation over another namespace.
    View,
    /// A time-series collection (change streams cannot follow it).
    Timeseries,
}

/// One collection or view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Kind.
    pub kind: CollectionKind,
    /// Collection UUID (`info.uuid`); views have none.
    pub uuid: Option<String>,
    /// `options` from `listCollections`, exactly as the server reports them.
    #[serde(with = "document_serde")]
    pub options: Document,
    /// Indexes, by name (views have none).
    pub indexes: Vec<IndexSpec>,
    /// Size figures (estimates; they change while the source is written).
    pub stats: CollectionStats,
    /// Shard key, when the collection is sharded.
    #[serde(default, with = "option_document_serde")]
    pub shard_key: Option<Document>,
    /// The shard key is unique (`config.collections.unique`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shard_key_unique: bool,
    /// Size figures per shard, through mongos (one `$collStats` document per shard that owns
    /// data of the collection); empty on a replica set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shard_stats: BTreeMap<String, CollectionStats>,
}

impl CollectionInfo {
    /// True when `options.capped` is set.
    pub fn is_capped(&self) -> bool {
        self.options.get_bool("capped").unwrap_or(false)
    }
}

/// One index specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// `name`.
    pub name: String,
    /// `key`, in order.
    #[serde(with = "document_serde")]
    pub key: Document,
    /// Every other field that defines the index (`unique`, `partialFilterExpression`,
    /// `expireAfterSeconds`, `collation`, `hidden`, `sparse`, ...), without the server-owned
    /// `v` and `ns`.
    #[serde(with = "document_serde")]
    pub options: Document,
}

impl IndexSpec {
    /// True for the `_id` index, which every collection has and nobody creates.
    pub fn is_id_index(&self) -> bool {
        self.name == "_id_"
    }

    /// True when the index enforces uniqueness.
    pub fn is_unique(&self) -> bool {
        self.options.get_bool("unique").unwrap_or(false)
    }
}

/// Size figures of a collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionStats {
    /// Estimated number of documents.
    pub count: u64,
    /// Uncompressed data size in bytes.
    pub size_bytes: u64,
}

/// Canonical Extended JSON for documents, so plan files keep every BSON type exactly.
pub mod document_serde {
    use bson::{Bson, Document};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes as canonical Extended JSON.
    pub fn serialize<S: Serializer>(doc: &Document, s: S) -> Result<S::Ok, S::Error> {
        Bson::Document(doc.clone())
            .into_canonical_extjson()
            .serialize(s)
    }

    /// Reads canonical (or relaxed) Extended JSON.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Document, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match Bson::try_from(value).map_err(serde::de::Error::custom)? {
            Bson::Document(doc) => Ok(doc),
            other => Err(serde::de::Error::custom(format!(
                "expected a document, found {:?}",
                other.element_type()
            ))),
        }
    }
}

/// [`document_serde`] for optional documents.
pub mod option_document_serde {
    use bson::Document;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as null.
    pub fn serialize<S: Serializer>(doc: &Option<Document>, s: S) -> Result<S::Ok, S::Error> {
        match doc {
            Some(d) => super::document_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads null or a document.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Document>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super::document_serde")] Document);
        Ok(Option::<Wrapper>::deserialize(d)?.map(|w| w.0))
    }
}

/// Timestamps as `{t, i}`.
pub mod timestamp_serde {
    use bson::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Ts {
        t: u32,
        i: u32,
    }

    /// Serializes as `{t, i}`.
    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        Ts {
            t: ts.time,
            i: ts.increment,
        }
        .serialize(s)
    }

    /// Reads `{t, i}`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let Ts { t, i } = Ts::deserialize(d)?;
        Ok(Timestamp {
            time: t,
            increment: i,
        })
    }
}
