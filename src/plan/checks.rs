//! Preflight checks: everything that can be known before `apply` starts, all reported
//! together, each with a stable id, a status, a message and a fix.

use std::collections::{BTreeMap, BTreeSet};

use super::mapping::Mapping;
use super::model::Check;
use crate::cluster::{
    ClusterError, ClusterSnapshot, CollectionKind, Privileges, Side, Target, Topology, codes,
};
use crate::config::Config;
use crate::namespace::Namespace;

/// The oldest supported server version: change streams with expanded DDL events
/// (`showExpandedEvents`) and user write blocking arrived in 6.0.
pub const MIN_SERVER_VERSION: (u32, u32) = (6, 0);

/// The copy rate assumed when estimating how long the initial copy takes (bytes per second).
/// Deliberately conservative (field reports of peer tools are in this range); the oplog check
/// states it so a reviewer can rescale.
pub const ASSUMED_COPY_RATE: u64 = 25 * 1024 * 1024;

/// Everything the checks look at.
pub struct CheckInput<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The source, or why it could not be inspected.
    pub source: Result<&'a ClusterSnapshot, &'a ClusterError>,
    /// The destination, or why it could not be inspected.
    pub destination: Result<&'a ClusterSnapshot, &'a ClusterError>,
    /// The resolved mapping (when the source could be inspected).
    pub mapping: Option<&'a Mapping<'a>>,
    /// Destination namespaces this migration created itself (from its lockfile): never
    /// conflicts.
    pub owned: &'a BTreeSet<Namespace>,
}

/// Runs every check that the available information allows.
pub fn run(input: &CheckInput<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    for (side, snapshot) in [
        (Side::Source, input.source),
        (Side::Destination, input.destination),
    ] {
        match snapshot {
            Ok(s) => {
                checks.push(Check::passed(
                    &format!("{side}.reachable"),
                    format!(
                        "connected: {}, MongoDB {}",
                        s.server.topology.describe(),
                        s.server.version
                    ),
                ));
                checks.push(topology(side, s));
                checks.push(version(side, s));
            }
            Err(e) => checks.push(unreachable(side, e)),
        }
    }
    if let (Ok(source), Ok(destination)) = (input.source, input.destination) {
        checks.push(distinct(source, destination));
        checks.push(version_order(source, destination));
    }
    if let Ok(source) = input.source {
        checks.push(oplog_window(source, input.mapping));
        if let Some(mapping) = input.mapping {
            checks.push(privileges_source(input.config, source, mapping));
        }
        checks.extend(balancer(Side::Source, source));
        checks.extend(source_shards(source, input.mapping));
    }
    if let Ok(destination) = input.destination {
        checks.extend(balancer(Side::Destination, destination));
    }
    if let (Ok(destination), Some(mapping)) = (input.destination, input.mapping) {
        checks.push(privileges_destination(input.config, destination, mapping));
        checks.push(conflicts(input.config, destination, mapping, input.owned));
        checks.push(sharding(input.config, destination, mapping));
        if input
            .source
            .is_ok_and(|s| s.server.topology == Topology::Sharded)
        {
            checks.push(source_keys(input.config, destination, mapping));
        }
    }
    if let Some(mapping) = input.mapping {
        checks.extend(mapping_checks(mapping));
    }
    checks.sort_by(|a, b| a.status.cmp(&b.status).then_with(|| a.id.cmp(&b.id)));
    checks
}

fn unreachable(side: Side, e: &ClusterError) -> Check {
    let hint = match e {
        ClusterError::Connect {
            code: Some(codes::AUTHENTICATION_FAILED),
            ..
        } => "check the user name, password and authSource of the connection string",
        ClusterError::Connect { .. } => {
            "check the address, that this machine may reach it (firewall, IP access list), and the TLS settings"
        }
        ClusterError::Command {
            code: Some(codes::UNAUTHORIZED),
            ..
        } => {
            "the user lacks a privilege needed to inspect the cluster; see the required roles in the README"
        }
        _ => "see the message; run with -v for details",
    };
    Check::error(&format!("{side}.reachable"), e.to_string(), hint)
}

fn topology(side: Side, s: &ClusterSnapshot) -> Check {
    let id = format!("{side}.topology");
    match (&s.server.topology, side) {
        (Topology::Standalone, Side::Source) => Check::error(
            &id,
            "the source is a standalone mongod: it keeps no oplog, so it cannot provide the change streams a live migration follows",
            "restart it as a single-node replica set (mongod --replSet rs0, then rs.initiate()); no data moves, and clients keep working",
        ),
        (Topology::Standalone, Side::Destination) => Check::warning(
            &id,
            "the destination is a standalone mongod: migrated data will not be replicated",
            "use a replica set or a sharded cluster for production data",
        ),
        (t, _) => Check::passed(&id, t.describe()),
    }
}

fn version(side: Side, s: &ClusterSnapshot) -> Check {
    let id = format!("{side}.version");
    let (major, minor) = s.server.major_minor();
    if (major, minor) < MIN_SERVER_VERSION {
        Check::error(
            &id,
            format!(
                "MongoDB {} is not supported: mongoshift needs {}.{} or later",
                s.server.version, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
            ),
            "upgrade the cluster to MongoDB 6.0 or later before migrating",
        )
    } else {
        let fcv = s
            .server
            .fcv
            .as_deref()
            .map(|f| format!(" (feature compatibility {f})"))
            .unwrap_or_default();
        Check::passed(&id, format!("MongoDB {}{fcv}", s.server.version))
    }
}

fn version_order(source: &ClusterSnapshot, destination: &ClusterSnapshot) -> Check {
    if destination.server.major_minor() < source.server.major_minor() {
        Check::warning(
            "destination.version_order",
            format!(
                "the destination runs MongoDB {}, older than the source's {}: options, indexes or validators the source uses may be refused",
                destination.server.version, source.server.version
            ),
            "migrate to the same or a newer version",
        )
    } else {
        Check::passed(
            "destination.version_order",
            "the destination runs the same or a newer version than the source",
        )
    }
}

fn distinct(source: &ClusterSnapshot, destination: &ClusterSnapshot) -> Check {
    let same = match (&source.server.topology, &destination.server.topology) {
        (Topology::ReplicaSet { set_name: a }, Topology::ReplicaSet { set_name: b }) => {
            a == b
                && source
                    .server
                    .hosts
                    .iter()
                    .any(|h| destination.server.hosts.contains(h))
        }
        _ => false,
    };
    if same {
        Check::error(
            "clusters.distinct",
            "the source and the destination are the same replica set",
            "point the destination at another cluster",
        )
    } else {
        Check::passed(
            "clusters.distinct",
            "the source and the destination are different clusters",
        )
    }
}

fn oplog_window(source: &ClusterSnapshot, mapping: Option<&Mapping<'_>>) -> Check {
    const ID: &str = "source.oplog_window";
    match &source.server.topology {
        Topology::ReplicaSet { .. } => {}
        Topology::Sharded => {
            return Check::warning(
                ID,
                "the oplog window of each shard cannot be read through mongos",
                "check each shard's window (rs.printReplicationInfo() on its primary): it must exceed the longest interruption of apply you could face",
            );
        }
        Topology::Standalone => return Check::passed(ID, "not applicable to a standalone"),
    }
    let Some(oplog) = &source.oplog else {
        let reason = source
            .oplog_unreadable
            .clone()
            .unwrap_or_else(|| "the oplog is empty".to_owned());
        return Check::warning(
            ID,
            format!("the oplog window could not be measured: {reason}"),
            "grant the clusterMonitor role (read access to local.oplog.rs) so plan can compare it with the copy time",
        );
    };
    let bytes: u64 = mapping.map_or(0, |m| {
        m.namespaces.iter().map(|n| n.info.stats.size_bytes).sum()
    });
    let copy_secs = bytes / ASSUMED_COPY_RATE;
    let (window, projected) = match oplog.projected_window_secs() {
        Some(p) => (p, true),
        None => (oplog.window_secs(), false),
    };
    let describe = format!(
        "{}oplog window {} vs. an estimated copy time of {} ({} at an assumed {}/s)",
        if projected { "projected " } else { "" },
        human_secs(window),
        human_secs(copy_secs),
        super::model::approx_bytes(bytes),
        super::model::approx_bytes(ASSUMED_COPY_RATE),
    );
    let hint = "enlarge the oplog (replSetResizeOplog) or set a minimum retention (oplogMinRetentionHours) of at least twice the copy time";
    if window < copy_secs {
        Check::error(
            ID,
            format!(
                "{describe}: the window is {} too short. mongoshift spools changes to disk during the copy, but if apply is interrupted for longer than the window, the history it needs is gone and the migration must start over",
                human_secs(copy_secs - window)
            ),
            hint,
        )
    } else if window < copy_secs.saturating_mul(2) {
        Check::warning(
            ID,
            format!(
                "{describe}: tight, with {} to spare",
                human_secs(window - copy_secs)
            ),
            hint,
        )
    } else {
        Check::passed(ID, describe)
    }
}

/// `2h 5m`, `45s`.
pub fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Missing actions, grouped by action, for one side.
#[derive(Default)]
struct Missing(BTreeMap<&'static str, BTreeSet<String>>);

impl Missing {
    fn require(&mut self, privileges: &Privileges, action: &'static str, target: Target<'_>) {
        if !privileges.allows(action, target) {
            let what = match target {
                Target::Cluster => "the cluster".to_owned(),
                Target::Database(db) => format!("database {db}"),
                Target::Collection(ns) => ns.to_string(),
                Target::AllCollections => "all databases (cluster-wide change stream)".to_owned(),
            };
            self.0.entry(action).or_default().insert(what);
        }
    }

    fn into_check(self, id: &str, user: &str, roles_hint: &str) -> Check {
        if self.0.is_empty() {
            return Check::passed(id, format!("{user} has every privilege mongoshift needs"));
        }
        let list: Vec<String> = self
            .0
            .iter()
            .map(|(action, targets)| {
                let mut shown: Vec<&str> = targets.iter().map(String::as_str).take(4).collect();
                let more = targets.len().saturating_sub(shown.len());
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                shown.sort_unstable();
                format!("{action} on {}{tail}", shown.join(", "))
            })
            .collect();
        Check::error(id, format!("{user} lacks: {}", list.join("; ")), roles_hint)
    }
}

fn user_of(p: &Privileges) -> String {
    if p.users.is_empty() {
        "the user".to_owned()
    } else {
        format!("user {}", p.users.join(", "))
    }
}

fn privileges_source(config: &Config, source: &ClusterSnapshot, mapping: &Mapping<'_>) -> Check {
    const ID: &str = "source.privileges";
    let Some(p) = &source.privileges else {
        return Check::passed(
            ID,
            "the source does not enforce access control (no authenticated user)",
        );
    };
    let mut missing = Missing::default();
    missing.require(p, "listDatabases", Target::Cluster);
    // A cluster-wide change stream needs `changeStream` and `find` on every non-system
    // collection ({db: "", collection: ""}).
    missing.require(p, "changeStream", Target::AllCollections);
    missing.require(p, "find", Target::AllCollections);
    let mut dbs = BTreeSet::new();
    for m in &mapping.namespaces {
        dbs.insert(m.source.db().to_owned());
        for action in ["find", "listIndexes", "collStats"] {
            if m.info.kind != CollectionKind::View || action == "find" {
                missing.require(p, action, Target::Collection(&m.source));
            }
        }
    }
    for db in &dbs {
        missing.require(p, "listCollections", Target::Database(db));
    }
    if matches!(source.server.topology, Topology::ReplicaSet { .. }) {
        missing.require(
            p,
            "find",
            Target::Collection(&Namespace::new("local", "oplog.rs")),
        );
    }
    if source.server.topology == Topology::Sharded {
        // Shard keys and chunk ranges, for the copy's partitions.
        for coll in ["collections", "chunks"] {
            missing.require(
                p,
                "find",
                Target::Collection(&Namespace::new("config", coll)),
            );
        }
    }
    if config.cutover.block_source_writes {
        missing.require(p, "setUserWriteBlockMode", Target::Cluster);
    }
    missing.into_check(
        ID,
        &user_of(p),
        "grant the built-in roles readAnyDatabase and clusterMonitor (and, with block_source_writes, backup, which grants setUserWriteBlockMode)",
    )
}

fn privileges_destination(
    config: &Config,
    destination: &ClusterSnapshot,
    mapping: &Mapping<'_>,
) -> Check {
    const ID: &str = "destination.privileges";
    let Some(p) = &destination.privileges else {
        return Check::passed(
            ID,
            "the destination does not enforce access control (no authenticated user)",
        );
    };
    let mut missing = Missing::default();
    missing.require(p, "listDatabases", Target::Cluster);
    let replicate_ddl = config.options.ddl == crate::config::model::DdlPolicy::Replicate;
    let mut dbs = BTreeSet::new();
    for m in &mapping.namespaces {
        dbs.insert(m.destination.db().to_owned());
        let ns = &m.destination;
        let mut actions = vec![
            "find",
            "insert",
            "update",
            "remove",
            "createIndex",
            "listIndexes",
            "collStats",
            "bypassDocumentValidation",
        ];
        if config.options.clear_destination || replicate_ddl {
            actions.push("dropCollection");
        }
        if replicate_ddl {
            actions.extend(["dropIndex", "collMod"]);
        }
        for action in actions {
            missing.require(p, action, Target::Collection(ns));
        }
    }
    for db in &dbs {
        missing.require(p, "createCollection", Target::Database(db));
        missing.require(p, "listCollections", Target::Database(db));
    }
    for target in super::sharding::resolve(config, destination, mapping).targets {
        let ns = &target.mapped.destination;
        missing.require(p, "enableSharding", Target::Collection(ns));
        if target.presplit_chunks.is_some() {
            // `split` and `moveRange` of the presplit.
            missing.require(p, "splitChunk", Target::Collection(ns));
            missing.require(p, "moveChunk", Target::Collection(ns));
        }
    }
    missing.into_check(
        ID,
        &user_of(p),
        "grant the built-in role readWriteAnyDatabase plus dbAdminAnyDatabase (and clusterManager to shard collections)",
    )
}

fn conflicts(
    config: &Config,
    destination: &ClusterSnapshot,
    mapping: &Mapping<'_>,
    owned: &BTreeSet<Namespace>,
) -> Check {
    const ID: &str = "destination.conflicts";
    let existing: Vec<String> = mapping
        .namespaces
        .iter()
        .filter(|m| {
            !owned.contains(&m.destination) && destination.catalog.get(&m.destination).is_some()
        })
        .map(|m| m.destination.to_string())
        .collect();
    if existing.is_empty() {
        Check::passed(ID, "no migrated namespace exists on the destination")
    } else if config.options.clear_destination {
        Check::warning(
            ID,
            format!(
                "{} will be dropped first (clear_destination): {}",
                plural(existing.len(), "destination namespace"),
                existing.join(", ")
            ),
            "make sure nothing on the destination needs them; the plan shows each drop",
        )
    } else {
        Check::error(
            ID,
            format!(
                "{} already on the destination: {}",
                plural(existing.len(), "namespace exists",),
                existing.join(", ")
            ),
            "set options.clear_destination = true to drop them first, rename them with options.rename, or exclude them",
        )
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn sharding(config: &Config, destination: &ClusterSnapshot, mapping: &Mapping<'_>) -> Check {
    const ID: &str = "sharding.entries";
    let entries = &config.options.sharding;
    let resolution = super::sharding::resolve(config, destination, mapping);
    if entries.is_empty() && resolution.targets.is_empty() && resolution.problems.is_empty() {
        return Check::passed(ID, "no destination collection is to be sharded");
    }
    if !entries.is_empty() && destination.server.topology != Topology::Sharded {
        return Check::error(
            ID,
            format!(
                "options.sharding lists {} collections, but the destination is a {}",
                entries.len(),
                destination.server.topology.describe()
            ),
            "connect the destination through a mongos of a sharded cluster, or remove the entries",
        );
    }
    let mut problems = Vec::new();
    for entry in entries {
        match mapping
            .namespaces
            .iter()
            .find(|m| m.destination == entry.namespace)
        {
            None => problems.push(format!(
                "{} is not a migrated destination namespace",
                entry.namespace
            )),
            Some(m) if m.info.kind != CollectionKind::Collection => {
                problems.push(format!("{} is not a collection", entry.namespace));
            }
            Some(_) => {}
        }
    }
    problems.extend(resolution.problems.iter().cloned());
    if problems.is_empty() {
        let from_source = resolution
            .targets
            .iter()
            .filter(|t| t.origin == super::sharding::KeyOrigin::Source)
            .count();
        let alike = if from_source > 0 {
            format!(" ({from_source} like on the source)")
        } else {
            String::new()
        };
        Check::passed(
            ID,
            format!(
                "{} will be sharded before the copy{alike}",
                plural(resolution.targets.len(), "destination collection"),
            ),
        )
    } else {
        Check::error(
            ID,
            problems.join("; "),
            "sharding entries name destination namespaces (after rename) of migrated collections, with a key an index can support; see the README's sharding section",
        )
    }
}

/// What happens to the source's shard keys (a sharded source only).
fn source_keys(config: &Config, destination: &ClusterSnapshot, mapping: &Mapping<'_>) -> Check {
    const ID: &str = "sharding.source_keys";
    let resolution = super::sharding::resolve(config, destination, mapping);
    let sharded = mapping
        .namespaces
        .iter()
        .filter(|m| m.info.shard_key.is_some())
        .count();
    if sharded == 0 {
        return Check::passed(ID, "no migrated source collection is sharded");
    }
    if resolution.not_applied.is_empty() {
        return Check::passed(
            ID,
            format!(
                "{} sharded on the source: each is sharded on the destination before the copy",
                plural(sharded, "migrated collection"),
            ),
        );
    }
    let list: Vec<String> = resolution
        .not_applied
        .iter()
        .take(8)
        .map(|(ns, key, _)| format!("{ns} {}", super::planner::compact_json(key)))
        .collect();
    let more = resolution.not_applied.len().saturating_sub(list.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let why = resolution.not_applied[0].2;
    Check::passed(
        ID,
        format!(
            "{why}: {} stay unsharded on the destination: {}{more}",
            plural(resolution.not_applied.len(), "sharded source collection"),
            list.join(", ")
        ),
    )
}

/// The balancer of a sharded cluster. The copy reads the source's chunks as they are when it
/// starts (one partition per run of chunks on one shard); chunk migrations during the copy
/// would move documents between the ranges being read, so the source's balancer must be off,
/// as mongosync requires. On the destination, migrations only cost throughput: a warning.
fn balancer(side: Side, s: &ClusterSnapshot) -> Option<Check> {
    let sharding = s.sharding.as_ref()?;
    let id = format!("{side}.balancer");
    let stop = "run sh.stopBalancer() in mongosh (or db.adminCommand({balancerStop: 1})) on a mongos of that cluster; after the migration, sh.startBalancer() turns it back on";
    Some(match (side, sharding.balancer_running) {
        (_, Some(false)) => Check::passed(&id, "the balancer is stopped"),
        (Side::Source, Some(true)) => Check::error(
            &id,
            "the balancer is running on the source: chunk migrations during the copy can move documents out of the ranges being copied",
            stop,
        ),
        (Side::Destination, Some(true)) => Check::warning(
            &id,
            "the balancer is running on the destination: chunk migrations compete with the copy for throughput",
            stop,
        ),
        (_, None) => Check::warning(
            &id,
            "the balancer's state could not be read (balancerStatus)",
            "make sure the balancer is stopped: sh.stopBalancer() in mongosh, or db.adminCommand({balancerStop: 1})",
        ),
    })
}

/// The shards of a sharded source and how much of the migrated data each holds.
fn source_shards(source: &ClusterSnapshot, mapping: Option<&Mapping<'_>>) -> Option<Check> {
    let sharding = source.sharding.as_ref()?;
    let mut per_shard: BTreeMap<&str, (u64, u64)> = sharding
        .shards
        .iter()
        .map(|s| (s.id.as_str(), (0, 0)))
        .collect();
    for m in mapping.map(|m| m.namespaces.as_slice()).unwrap_or_default() {
        for (shard, stats) in &m.info.shard_stats {
            let e = per_shard.entry(shard.as_str()).or_default();
            e.0 += stats.count;
            e.1 += stats.size_bytes;
        }
    }
    let parts: Vec<String> = per_shard
        .iter()
        .map(|(shard, (docs, bytes))| {
            format!(
                "{shard} {}, {}",
                super::model::approx_documents(*docs),
                super::model::approx_bytes(*bytes)
            )
        })
        .collect();
    Some(Check::passed(
        "source.shards",
        format!(
            "{} holding the migrated data: {}",
            plural(sharding.shards.len(), "shard"),
            parts.join("; ")
        ),
    ))
}

fn mapping_checks(mapping: &Mapping<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    if mapping.namespaces.is_empty() {
        checks.push(Check::warning(
            "mapping.nonempty",
            "no source namespace is selected: there is nothing to migrate",
            "check options.include and options.exclude against the source's databases",
        ));
    } else {
        checks.push(Check::passed(
            "mapping.nonempty",
            format!(
                "{} selected",
                plural(mapping.namespaces.len(), "source namespace")
            ),
        ));
    }
    if !mapping.unmatched_includes.is_empty() {
        checks.push(Check::warning(
            "mapping.include_patterns",
            format!(
                "include patterns match nothing on the source: {}",
                mapping.unmatched_includes.join(", ")
            ),
            "fix or remove the patterns",
        ));
    }
    if !mapping.unused_renames.is_empty() {
        checks.push(Check::warning(
            "mapping.renames",
            format!(
                "rename rules apply to nothing migrated: {}",
                mapping.unused_renames.join(", ")
            ),
            "fix or remove the rules",
        ));
    }
    if mapping.collisions.is_empty() {
        checks.push(Check::passed(
            "mapping.one_to_one",
            "every destination namespace has exactly one source",
        ));
    } else {
        let list: Vec<String> = mapping
            .collisions
            .iter()
            .map(|(to, from)| {
                let from: Vec<String> = from.iter().map(ToString::to_string).collect();
                format!("{} ← {}", to, from.join(" and "))
            })
            .collect();
        checks.push(Check::error(
            "mapping.one_to_one",
            format!(
                "several source namespaces map to the same destination: {}",
                list.join("; ")
            ),
            "add rename rules so each destination namespace has one source",
        ));
    }
    let invalid: Vec<String> = mapping
        .namespaces
        .iter()
        .filter_map(|m| {
            m.destination
                .validate_for_creation()
                .err()
                .map(|e| e.to_string())
        })
        .collect();
    if invalid.is_empty() {
        checks.push(Check::passed(
            "mapping.names",
            "every destination name is valid",
        ));
    } else {
        checks.push(Check::error(
            "mapping.names",
            invalid.join("; "),
            "rename them with options.rename",
        ));
    }
    let unsupported: Vec<String> = mapping
        .namespaces
        .iter()
        .filter_map(|m| {
            if m.info.kind == CollectionKind::Timeseries {
                Some(format!("{} (time-series)", m.source))
            } else if m.info.options.contains_key("encryptedFields") {
                Some(format!("{} (Queryable Encryption)", m.source))
            } else {
                None
            }
        })
        .collect();
    if unsupported.is_empty() {
        checks.push(Check::passed(
            "source.unsupported_collections",
            "every selected collection can be followed by change streams",
        ));
    } else {
        checks.push(Check::error(
            "source.unsupported_collections",
            format!("change streams cannot follow these collections live: {}", unsupported.join(", ")),
            "exclude them (options.exclude) and move them separately, e.g. with mongodump/mongorestore during the cutover",
        ));
    }
    let moved_views: Vec<String> = mapping
        .namespaces
        .iter()
        .filter(|m| m.info.kind == CollectionKind::View)
        .filter_map(|m| {
            let view_on = m.info.options.get_str("viewOn").ok()?;
            let base = Namespace::new(m.source.db(), view_on);
            let target = mapping.namespaces.iter().find(|n| n.source == base)?;
            (target.destination.db() != m.destination.db()).then(|| {
                format!(
                    "{} reads {} which moves to another database",
                    m.source, base
                )
            })
        })
        .collect();
    if !moved_views.is_empty() {
        checks.push(Check::error(
            "mapping.views",
            moved_views.join("; "),
            "a view must stay in the database of the collection it reads: rename both alike",
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(45), "45s");
        assert_eq!(human_secs(3 * 3600 + 5 * 60 + 7), "3h 5m");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2d 1h");
    }
}
