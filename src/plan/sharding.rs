//! Which migrated collections are sharded on the destination, on which key, with which
//! supporting index, and what stands in the way: a pure function of the configuration, both
//! snapshots and the mapping, shared by the planner and the checks.
//!
//! A collection is sharded on the destination when the destination is a sharded cluster and
//! either `options.sharding.collections` names it (the entry wins) or it is sharded on the
//! source and `shard_like_source` is on (the source's key and `unique` flag). The server's
//! requirements are checked here rather than discovered by a failing `shardCollection`:
//! capped collections cannot be sharded; an index must support the key (the source's index is
//! built before sharding, or `shardCollection` creates one on the empty collection when
//! `create_supporting_indexes` allows it); a unique key needs a unique supporting index; every
//! unique index must start with `_id` or the key; a collection with a non-simple default
//! collation is sharded with `collation: {locale: "simple"}`.

use bson::{Bson, Document};

use super::mapping::{MappedNamespace, Mapping};
use crate::cluster::{ClusterSnapshot, CollectionKind, IndexSpec, Topology};
use crate::config::Config;
use crate::config::model::{IndexPolicy, ShardKeyKind, ShardKeySpec};
use crate::namespace::Namespace;
use crate::shard_key::ShardKey;

/// Where a destination shard key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrigin {
    /// An `options.sharding.collections` entry.
    #[default]
    Config,
    /// The source collection's shard key (`shard_like_source`).
    Source,
}

/// How the destination gets the index that supports a shard key.
#[derive(Debug, Clone, PartialEq)]
pub enum Supporting {
    /// The `_id` index (keys `{_id: 1}`).
    IdIndex,
    /// This source index, built before sharding.
    Source(IndexSpec),
    /// None exists: `shardCollection` creates this index on the empty collection.
    Created(IndexSpec),
}

/// One collection to shard on the destination.
#[derive(Debug, Clone)]
pub struct ShardTarget<'a> {
    /// The mapped namespace.
    pub mapped: &'a MappedNamespace<'a>,
    /// The key.
    pub key: ShardKey,
    /// A unique key.
    pub unique: bool,
    /// Where the key comes from.
    pub origin: KeyOrigin,
    /// How the key's index comes to exist.
    pub supporting: Supporting,
    /// The collection has a non-simple default collation: shard with the simple one.
    pub simple_collation: bool,
    /// Chunks to split a ranged key into before the copy (`None`: the server's initial
    /// chunks; hashed keys get two per shard from the server itself).
    pub presplit_chunks: Option<u32>,
}

/// The outcome of resolving destination sharding.
#[derive(Debug, Clone, Default)]
pub struct Resolution<'a> {
    /// Collections to shard (those whose problems are listed are left out).
    pub targets: Vec<ShardTarget<'a>>,
    /// Why a requested sharding cannot be done, one message per problem.
    pub problems: Vec<String>,
    /// Source shard keys not applied, and why (sharded source only).
    pub not_applied: Vec<(Namespace, Document, &'static str)>,
}

/// The key of a configuration entry as the server takes it: `{field: 1}` or `{field: "hashed"}`.
pub fn key_document(spec: &ShardKeySpec) -> Document {
    spec.0
        .iter()
        .map(|(field, kind)| {
            let value = match kind {
                ShardKeyKind::Ranged => Bson::Int32(1),
                ShardKeyKind::Hashed => Bson::String("hashed".to_owned()),
            };
            (field.clone(), value)
        })
        .collect()
}

/// The shard key a migrated collection should have on a sharded destination, with its
/// `unique` flag and origin: the configuration entry, or the source's key with
/// `shard_like_source`.
pub fn expected_key(
    config: &Config,
    m: &MappedNamespace<'_>,
) -> Option<(Document, bool, KeyOrigin, bool)> {
    let entry = config
        .options
        .sharding
        .iter()
        .find(|e| e.namespace == m.destination);
    match (entry, m.info.shard_key.as_ref()) {
        (Some(e), _) => Some((
            key_document(&e.key),
            e.unique,
            KeyOrigin::Config,
            e.create_supporting_indexes,
        )),
        // The source has an index for its own key, so nothing needs creating.
        (None, Some(key)) if config.options.shard_like_source => Some((
            key.clone(),
            m.info.shard_key_unique,
            KeyOrigin::Source,
            true,
        )),
        (None, _) => None,
    }
}

/// Resolves which destination collections are sharded and how.
pub fn resolve<'a>(
    config: &Config,
    destination: &ClusterSnapshot,
    mapping: &'a Mapping<'a>,
) -> Resolution<'a> {
    let mut out = Resolution::default();
    let destination_sharded = destination.server.topology == Topology::Sharded;
    let shards = destination
        .sharding
        .as_ref()
        .map_or(0, |s| s.shards.len() as u32);
    for m in &mapping.namespaces {
        let wanted = expected_key(config, m);
        let applied = destination_sharded && wanted.is_some();
        if let (Some(key), false) = (&m.info.shard_key, applied) {
            let why = if destination_sharded {
                "options.sharding.shard_like_source is false"
            } else {
                "the destination is not a sharded cluster"
            };
            out.not_applied
                .push((m.destination.clone(), key.clone(), why));
        }
        let Some((key, unique, origin, create)) = wanted else {
            continue;
        };
        if !destination_sharded || m.info.kind != CollectionKind::Collection {
            // Reported by the entries check (entries on a replica set, views, time series).
            continue;
        }
        let ns = &m.destination;
        let Some(key) = ShardKey::new(&key) else {
            out.problems.push(format!(
                "{ns}: the shard key {} is not a valid key pattern",
                compact(&key)
            ));
            continue;
        };
        let before = out.problems.len();
        if m.info.is_capped() {
            out.problems.push(format!(
                "{ns} is capped: capped collections cannot be sharded"
            ));
        }
        if unique && key.is_hashed() {
            out.problems
                .push(format!("{ns}: a hashed shard key cannot be unique"));
        }
        let supporting = supporting_index(&key, unique, m, create);
        let supporting = match supporting {
            Ok(s) => Some(s),
            Err(problem) => {
                out.problems.push(format!("{ns}: {problem}"));
                None
            }
        };
        if config.options.indexes != IndexPolicy::Skip {
            let refused: Vec<String> = m
                .info
                .indexes
                .iter()
                .filter(|i| i.is_unique() && !i.is_id_index() && !key.allows_unique_index(&i.key))
                .map(|i| format!("{} {}", i.name, compact(&i.key)))
                .collect();
            if !refused.is_empty() {
                out.problems.push(format!(
                    "{ns}: the unique index {} does not start with the shard key {} (a sharded collection only enforces uniqueness of indexes prefixed by its key)",
                    refused.join(", "),
                    compact(&key.pattern)
                ));
            }
        }
        let Some(supporting) = supporting else {
            continue;
        };
        if out.problems.len() > before {
            continue;
        }
        let simple_collation = m
            .info
            .options
            .get_document("collation")
            .is_ok_and(|c| c.get_str("locale").map_or(true, |l| l != "simple"));
        let presplit_chunks =
            (!key.is_hashed() && shards > 1 && m.info.stats.count >= u64::from(2 * shards))
                .then_some(2 * shards);
        out.targets.push(ShardTarget {
            mapped: m,
            key,
            unique,
            origin,
            supporting,
            simple_collation,
            presplit_chunks,
        });
    }
    out
}

/// The index that will support the key on the destination.
fn supporting_index(
    key: &ShardKey,
    unique: bool,
    m: &MappedNamespace<'_>,
    create: bool,
) -> Result<Supporting, String> {
    let candidates: Vec<&IndexSpec> = m
        .info
        .indexes
        .iter()
        .filter(|i| key.is_supported_by(i))
        .collect();
    // Prefer the index whose key is exactly the shard key, then a unique one for a unique key.
    let best = candidates
        .iter()
        .copied()
        .filter(|i| !unique || i.is_unique())
        .min_by_key(|i| {
            (
                i.key.len() != key.pattern.len(),
                !i.is_unique(),
                i.name.clone(),
            )
        });
    match best {
        Some(i) if i.is_id_index() => Ok(Supporting::IdIndex),
        Some(i) => Ok(Supporting::Source(i.clone())),
        None if !candidates.is_empty() => Err(format!(
            "a unique shard key needs a unique supporting index, and the source's {} is not unique",
            candidates[0].name
        )),
        None if create => {
            let mut options = Document::new();
            if unique {
                options.insert("unique", true);
            }
            Ok(Supporting::Created(IndexSpec {
                name: key.index_name(),
                key: key.pattern.clone(),
                options,
            }))
        }
        None => Err(format!(
            "no source index supports the shard key {} and create_supporting_indexes is false: create the index on the source, or set create_supporting_indexes = true",
            compact(&key.pattern)
        )),
    }
}

fn compact(doc: &Document) -> String {
    super::planner::compact_json(doc)
}
