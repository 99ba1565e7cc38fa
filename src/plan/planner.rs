//! The planner: a pure function from the configuration and both snapshots to a [`Plan`].
//!
//! Desired destination state = the mapped source catalog (collections with their options,
//! views, indexes per the index policy, sharding entries); observed = the destination catalog.
//! The difference is an ordered list of actions. Everything is sorted by name, so the same
//! inputs in any order give the same plan, byte for byte.

use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, Document};

use super::checks::{self, CheckInput};
use super::mapping::{self, MappedNamespace};
use super::model::{
    Action, Change, Check, CheckStatus, ClusterSummary, IndexPhase, PLAN_FORMAT_VERSION, Plan,
    Presplit, ShardShare, Summary,
};
use super::sharding::{self, ShardTarget, Supporting};
use crate::cluster::{ClusterError, ClusterSnapshot, CollectionInfo, CollectionKind, IndexSpec};
use crate::config::Config;
use crate::config::model::IndexPolicy;
use crate::namespace::Namespace;

/// Everything the planner looks at.
pub struct PlanInput<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The source, or why it could not be inspected.
    pub source: Result<&'a ClusterSnapshot, &'a ClusterError>,
    /// The destination, or why it could not be inspected.
    pub destination: Result<&'a ClusterSnapshot, &'a ClusterError>,
    /// Destination namespaces this migration already created (from its lockfile).
    pub owned: &'a BTreeSet<Namespace>,
}

/// Computes the plan.
pub fn make_plan(input: &PlanInput<'_>) -> Plan {
    let config = input.config;
    let mapping = input
        .source
        .ok()
        .map(|s| mapping::resolve(config, &s.catalog));
    let checks = checks::run(&CheckInput {
        config,
        source: input.source,
        destination: input.destination,
        mapping: mapping.as_ref(),
        owned: input.owned,
    });

    let mut actions = Vec::new();
    let mut catalog_before = Vec::new();
    let mut catalog_after = Vec::new();
    if let (Some(mapping), Ok(destination)) = (&mapping, input.destination) {
        let sharding = sharding::resolve(config, destination, mapping);
        let conflicts_blocked = !config.options.clear_destination;
        let mut ordered: Vec<&MappedNamespace<'_>> = mapping.namespaces.iter().collect();
        ordered.sort_by(|a, b| {
            a.destination
                .cmp(&b.destination)
                .then(a.source.cmp(&b.source))
        });
        let colliding: BTreeSet<&Namespace> = mapping.collisions.keys().collect();

        let mut groups = ActionGroups::default();
        let mut after: BTreeMap<Namespace, CatalogEntry> = destination
            .catalog
            .namespaces()
            .map(|(ns, info)| (ns, CatalogEntry::from_info(info)))
            .collect();
        for m in ordered {
            if colliding.contains(&m.destination) || m.info.kind == CollectionKind::Timeseries {
                // Reported by the checks; no action can be right for them.
                continue;
            }
            let ours = input.owned.contains(&m.destination);
            let existing = destination.catalog.get(&m.destination);
            if let (Some(existing), false) = (existing, ours) {
                if conflicts_blocked {
                    continue;
                }
                groups.drops.push(Action {
                    namespace: m.destination.clone(),
                    change: Change::Drop {
                        kind: existing.kind,
                        documents: existing.stats.count,
                    },
                });
                after.remove(&m.destination);
            }
            let target = sharding
                .targets
                .iter()
                .find(|t| t.mapped.destination == m.destination);
            plan_namespace(
                config,
                m,
                mapping,
                target,
                existing.filter(|_| ours),
                &mut groups,
                &mut after,
            );
        }
        actions = groups.into_actions();
        catalog_before = catalog_lines(
            destination
                .catalog
                .namespaces()
                .map(|(ns, info)| (ns, CatalogEntry::from_info(info))),
        );
        catalog_after = catalog_lines(after.into_iter());
    }

    let mut summary = Summary::default();
    for a in &actions {
        match &a.change {
            Change::Drop { .. } => summary.namespaces_to_drop += 1,
            Change::CreateCollection { .. } => summary.collections_to_create += 1,
            Change::CreateView { .. } => summary.views_to_create += 1,
            Change::ShardCollection { .. } => summary.collections_to_shard += 1,
            Change::CreateIndex { .. } => summary.indexes_to_create += 1,
            Change::Copy {
                documents, bytes, ..
            } => {
                summary.documents_to_copy += documents;
                summary.bytes_to_copy += bytes;
            }
        }
    }
    summary.errors = count(&checks, CheckStatus::Error);
    summary.warnings = count(&checks, CheckStatus::Warning);

    Plan {
        format_version: PLAN_FORMAT_VERSION,
        migration: config.name.clone(),
        source: input
            .source
            .ok()
            .map(|s| summarize(&config.source.uri.redacted(), s)),
        destination: input
            .destination
            .ok()
            .map(|s| summarize(&config.destination.uri.redacted(), s)),
        checks,
        actions,
        catalog_before,
        catalog_after,
        summary,
    }
}

fn count(checks: &[Check], status: CheckStatus) -> u64 {
    checks.iter().filter(|c| c.status == status).count() as u64
}

fn summarize(uri: &str, s: &ClusterSnapshot) -> ClusterSummary {
    ClusterSummary {
        uri: uri.to_owned(),
        topology: s.server.topology.describe(),
        version: s.server.version.clone(),
    }
}

/// Actions by kind, concatenated in apply order at the end.
#[derive(Default)]
struct ActionGroups {
    drops: Vec<Action>,
    collections: Vec<Action>,
    views: Vec<Action>,
    /// Indexes that support a shard key: built before the collection is sharded.
    supporting: Vec<Action>,
    shards: Vec<Action>,
    indexes_before: Vec<Action>,
    copies: Vec<Action>,
    indexes_after: Vec<Action>,
}

impl ActionGroups {
    fn into_actions(self) -> Vec<Action> {
        [
            self.drops,
            self.collections,
            self.views,
            self.supporting,
            self.shards,
            self.indexes_before,
            self.copies,
            self.indexes_after,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Plans one namespace. `shard` says how it is sharded on the destination; `ours` is its
/// current state when this migration already created it.
fn plan_namespace(
    config: &Config,
    m: &MappedNamespace<'_>,
    mapping: &mapping::Mapping<'_>,
    shard: Option<&ShardTarget<'_>>,
    ours: Option<&CollectionInfo>,
    groups: &mut ActionGroups,
    after: &mut BTreeMap<Namespace, CatalogEntry>,
) {
    let ns = &m.destination;
    match m.info.kind {
        CollectionKind::View => {
            let (view_on, options) = view_definition(m, mapping);
            if ours.is_none() {
                groups.views.push(Action {
                    namespace: ns.clone(),
                    change: Change::CreateView {
                        source: m.source.clone(),
                        view_on,
                        options: options.clone(),
                    },
                });
            }
            after.insert(
                ns.clone(),
                CatalogEntry {
                    kind: CollectionKind::View,
                    options,
                    indexes: Vec::new(),
                    shard_key: None,
                    shard_key_unique: false,
                },
            );
        }
        CollectionKind::Collection => {
            let options = creation_options(&m.info.options);
            if ours.is_none() {
                groups.collections.push(Action {
                    namespace: ns.clone(),
                    change: Change::CreateCollection {
                        source: m.source.clone(),
                        options: options.clone(),
                    },
                });
            }
            let already_sharded = ours.and_then(|o| o.shard_key.as_ref());
            let supporting = shard.and_then(|t| match &t.supporting {
                Supporting::Source(index) => Some(index),
                Supporting::IdIndex | Supporting::Created(_) => None,
            });
            let mut indexes: Vec<IndexSpec> = Vec::new();
            if let (Some(t), None) = (shard, already_sharded) {
                if let Some(index) = supporting
                    && !ours.is_some_and(|o| o.indexes.iter().any(|i| i.name == index.name))
                {
                    groups.supporting.push(Action {
                        namespace: ns.clone(),
                        change: Change::CreateIndex {
                            index: index.clone(),
                            phase: IndexPhase::BeforeCopy,
                        },
                    });
                }
                let creates_index = match &t.supporting {
                    Supporting::Created(index) => Some(index.name.clone()),
                    _ => None,
                };
                groups.shards.push(Action {
                    namespace: ns.clone(),
                    change: Change::ShardCollection {
                        key: t.key.pattern.clone(),
                        unique: t.unique,
                        origin: t.origin,
                        creates_index,
                        simple_collation: t.simple_collation,
                        presplit: t.presplit_chunks.map(|chunks| Presplit {
                            source: m.source.clone(),
                            chunks,
                        }),
                    },
                });
            }
            if let Some(Supporting::Created(index)) = shard.map(|t| &t.supporting) {
                indexes.push(index.clone());
            }
            let mut source_indexes: Vec<&IndexSpec> = m.info.indexes.iter().collect();
            source_indexes.sort_by(|a, b| a.name.cmp(&b.name));
            for index in source_indexes {
                let is_supporting = supporting.is_some_and(|s| s.name == index.name);
                let wanted = index.is_id_index()
                    || is_supporting
                    || config.options.indexes != IndexPolicy::Skip;
                if !wanted {
                    continue;
                }
                indexes.push(index.clone());
                let exists = ours.is_some_and(|o| o.indexes.iter().any(|i| i.name == index.name));
                if index.is_id_index() || exists || is_supporting {
                    continue;
                }
                let phase = match config.options.indexes {
                    IndexPolicy::BeforeCopy => IndexPhase::BeforeCopy,
                    _ => IndexPhase::AfterCopy,
                };
                let action = Action {
                    namespace: ns.clone(),
                    change: Change::CreateIndex {
                        index: index.clone(),
                        phase,
                    },
                };
                match phase {
                    IndexPhase::BeforeCopy => groups.indexes_before.push(action),
                    IndexPhase::AfterCopy => groups.indexes_after.push(action),
                }
            }
            groups.copies.push(Action {
                namespace: ns.clone(),
                change: Change::Copy {
                    source: m.source.clone(),
                    documents: m.info.stats.count,
                    bytes: m.info.stats.size_bytes,
                    source_shard_key: m.info.shard_key.clone(),
                    shards: m
                        .info
                        .shard_stats
                        .iter()
                        .map(|(shard, s)| ShardShare {
                            shard: shard.clone(),
                            documents: s.count,
                            bytes: s.size_bytes,
                        })
                        .collect(),
                },
            });
            indexes.sort_by(|a, b| a.name.cmp(&b.name));
            indexes.dedup_by(|a, b| a.name == b.name);
            after.insert(
                ns.clone(),
                CatalogEntry {
                    kind: CollectionKind::Collection,
                    options,
                    indexes,
                    shard_key: already_sharded
                        .cloned()
                        .or_else(|| shard.map(|t| t.key.pattern.clone())),
                    shard_key_unique: ours
                        .filter(|o| o.shard_key.is_some())
                        .map_or_else(|| shard.is_some_and(|t| t.unique), |o| o.shard_key_unique),
                },
            );
        }
        CollectionKind::Timeseries => {}
    }
}

/// `create` options of a collection: as listed, without what `create` does not take back
/// (`clusteredIndex.v` is reported but not accepted as input).
fn creation_options(listed: &Document) -> Document {
    let mut options = listed.clone();
    if let Ok(clustered) = options.get_document_mut("clusteredIndex") {
        clustered.remove("v");
    }
    options
}

/// A view's definition with `viewOn` renamed as the collection it reads is renamed (views and
/// their sources stay in one database; the checks reject mappings that split them).
fn view_definition(m: &MappedNamespace<'_>, mapping: &mapping::Mapping<'_>) -> (String, Document) {
    let mut options = m.info.options.clone();
    let original = options.get_str("viewOn").unwrap_or_default().to_owned();
    let base = Namespace::new(m.source.db(), original.as_str());
    let view_on = mapping
        .namespaces
        .iter()
        .find(|n| n.source == base)
        .map_or(original, |n| n.destination.coll().to_owned());
    options.insert("viewOn", view_on.clone());
    (view_on, options)
}

/// One namespace in the rendered catalog.
struct CatalogEntry {
    kind: CollectionKind,
    options: Document,
    indexes: Vec<IndexSpec>,
    shard_key: Option<Document>,
    shard_key_unique: bool,
}

impl CatalogEntry {
    fn from_info(info: &CollectionInfo) -> Self {
        Self {
            kind: info.kind,
            options: info.options.clone(),
            indexes: info.indexes.clone(),
            shard_key: info.shard_key.clone(),
            shard_key_unique: info.shard_key_unique,
        }
    }
}

/// One line per namespace, index and shard key, sorted, for the before/after diff.
fn catalog_lines(entries: impl Iterator<Item = (Namespace, CatalogEntry)>) -> Vec<String> {
    let mut entries: Vec<(Namespace, CatalogEntry)> = entries.collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut lines = Vec::new();
    for (ns, e) in entries {
        let kind = match e.kind {
            CollectionKind::Collection => "collection",
            CollectionKind::View => "view",
            CollectionKind::Timeseries => "timeseries",
        };
        let options = if e.options.is_empty() {
            String::new()
        } else {
            format!(" {}", compact_json(&e.options))
        };
        lines.push(format!("{ns} ({kind}){options}"));
        if let Some(key) = &e.shard_key {
            let unique = if e.shard_key_unique { " unique" } else { "" };
            lines.push(format!("    sharded {}{unique}", compact_json(key)));
        }
        let mut indexes = e.indexes;
        indexes.sort_by(|a, b| a.name.cmp(&b.name));
        for i in indexes {
            let options = if i.options.is_empty() {
                String::new()
            } else {
                format!(" {}", compact_json(&i.options))
            };
            lines.push(format!(
                "    index {} {}{options}",
                i.name,
                compact_json(&i.key)
            ));
        }
    }
    lines
}

/// Relaxed Extended JSON on one line (readable: `{"x":1}`; exact types live in the plan file).
pub fn compact_json(doc: &Document) -> String {
    Bson::Document(doc.clone())
        .into_relaxed_extjson()
        .to_string()
}
