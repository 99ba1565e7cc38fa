//! Reading a [`ClusterSnapshot`] from a live cluster.
//!
//! Server behaviours relied on (MongoDB 6.0+): `hello` reports `msg: "isdbgrid"` on mongos and
//! `setName` on replica-set members; `connectionStatus` with `showPrivileges` lists the
//! privileges of the authenticated users (none without access control); the oplog is
//! `local.oplog.rs`, read in natural order for its first and last entries, with its size and
//! `maxSize` from `$collStats`; `listCollections` returns `options` and `info.uuid`; through
//! mongos, `$collStats` returns one document per shard; shard keys are in `config.collections`.

use std::collections::BTreeMap;

use bson::spec::BinarySubtype;
use bson::{Bson, Document, Timestamp, doc};
use futures_util::{StreamExt, TryStreamExt};

use super::connect::Cluster;
use super::error::{ClusterError, codes};
use super::privileges::{Grant, Privileges, Resource};
use super::reply::{Reply, as_u64};
use super::snapshot::{
    Catalog, ClusterSnapshot, CollectionInfo, CollectionKind, CollectionStats, DatabaseInfo,
    IndexSpec, OplogInfo, ServerInfo, Shard, ShardingInfo, Topology,
};
use crate::namespace::{Namespace, NamespaceFilter, SYSTEM_DATABASES};

/// How many per-collection requests run at once; catalogs of thousands of collections would
/// otherwise take a round trip each, one after the other.
const CATALOG_CONCURRENCY: usize = 16;

/// What to inspect.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectRequest<'a> {
    /// Only namespaces the filter includes (the source). `None`: every user namespace (the
    /// destination, where any existing namespace may conflict).
    pub filter: Option<&'a NamespaceFilter>,
    /// Read the oplog window (the source).
    pub oplog: bool,
}

/// Inspects a cluster.
pub async fn inspect(
    cluster: &Cluster,
    request: InspectRequest<'_>,
) -> Result<ClusterSnapshot, ClusterError> {
    let server = server_info(cluster).await?;
    let privileges = privileges(cluster).await?;
    let mut oplog_unreadable = None;
    let oplog = match (&server.topology, request.oplog) {
        (Topology::ReplicaSet { .. }, true) => match oplog_info(cluster).await {
            Ok(info) => info,
            Err(e) => {
                oplog_unreadable = Some(e.to_string());
                None
            }
        },
        _ => None,
    };
    let sharding = match server.topology {
        Topology::Sharded => Some(sharding_info(cluster).await?),
        _ => None,
    };
    let shard_keys = match server.topology {
        Topology::Sharded => shard_keys(cluster).await?,
        _ => BTreeMap::new(),
    };
    let catalog = catalog(cluster, request.filter, &shard_keys).await?;
    Ok(ClusterSnapshot {
        server,
        privileges,
        oplog,
        oplog_unreadable,
        sharding,
        catalog,
    })
}

async fn server_info(cluster: &Cluster) -> Result<ServerInfo, ClusterError> {
    let hello = cluster.command("admin", doc! { "hello": 1 }).await?;
    let r = Reply::new(cluster.side(), "hello", &hello);
    let topology = if r.opt_str("msg")? == Some("isdbgrid") {
        Topology::Sharded
    } else if let Some(set_name) = r.opt_str("setName")? {
        Topology::ReplicaSet {
            set_name: set_name.to_owned(),
        }
    } else {
        Topology::Standalone
    };
    let hosts = match hello.get("hosts") {
        Some(Bson::Array(hosts)) => hosts
            .iter()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let max_wire_version = match hello.get("maxWireVersion") {
        Some(v) => as_u64(v)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| cluster.invalid_reply("hello", format!("`maxWireVersion` is {v}")))?,
        None => return Err(cluster.invalid_reply("hello", "`maxWireVersion` is missing")),
    };

    let build = cluster.command("admin", doc! { "buildInfo": 1 }).await?;
    let r = Reply::new(cluster.side(), "buildInfo", &build);
    let version = r.str("version")?.to_owned();
    let version_parts = parse_version(&build, &version).ok_or_else(|| {
        cluster.invalid_reply("buildInfo", format!("cannot read version {version:?}"))
    })?;

    // FCV lives on mongod; mongos or a user without the privilege may refuse: then unknown.
    let fcv = cluster
        .command(
            "admin",
            doc! { "getParameter": 1, "featureCompatibilityVersion": 1 },
        )
        .await
        .ok()
        .and_then(|reply| {
            reply
                .get_document("featureCompatibilityVersion")
                .ok()
                .and_then(|f| f.get_str("version").ok())
                .map(str::to_owned)
        });
    Ok(ServerInfo {
        topology,
        version,
        version_parts,
        fcv,
        hosts,
        max_wire_version,
    })
}

fn parse_version(build: &Document, version: &str) -> Option<[u32; 3]> {
    if let Ok(parts) = build.get_array("versionArray") {
        let nums: Vec<u32> = parts
            .iter()
            .take(3)
            .filter_map(|p| as_u64(p).and_then(|n| u32::try_from(n).ok()))
            .collect();
        if let [a, b, c] = nums[..] {
            return Some([a, b, c]);
        }
    }
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    Some([it.next()??, it.next()??, it.next().flatten().unwrap_or(0)])
}

async fn privileges(cluster: &Cluster) -> Result<Option<Privileges>, ClusterError> {
    let status = cluster
        .command(
            "admin",
            doc! { "connectionStatus": 1, "showPrivileges": true },
        )
        .await?;
    let r = Reply::new(cluster.side(), "connectionStatus", &status);
    let auth = r.doc("authInfo")?;
    let a = r.nested(auth);
    let users: Vec<String> = a
        .array("authenticatedUsers")?
        .iter()
        .filter_map(|u| u.as_document())
        .filter_map(|u| {
            Some(format!(
                "{}@{}",
                u.get_str("user").ok()?,
                u.get_str("db").ok()?
            ))
        })
        .collect();
    if users.is_empty() {
        // No authenticated user: the server does not enforce access control (or allows the
        // localhost exception); commands that need privileges would fail with 13 anyway.
        return Ok(None);
    }
    let roles = match auth.get("authenticatedUserRoles") {
        Some(Bson::Array(roles)) => roles
            .iter()
            .filter_map(|r| r.as_document())
            .filter_map(|r| {
                Some(format!(
                    "{}@{}",
                    r.get_str("role").ok()?,
                    r.get_str("db").ok()?
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut grants = Vec::new();
    for p in a.array("authenticatedUserPrivileges")? {
        let Some(p) = p.as_document() else {
            return Err(cluster.invalid_reply("connectionStatus", "a privilege is not a document"));
        };
        let pr = a.nested(p);
        let resource = pr.doc("resource")?;
        let resource = if resource.get_bool("cluster").unwrap_or(false) {
            Resource::Cluster
        } else if resource.get_bool("anyResource").unwrap_or(false) {
            Resource::AnyResource
        } else if let (Ok(db), Ok(collection)) =
            (resource.get_str("db"), resource.get_str("collection"))
        {
            Resource::Namespace {
                db: db.to_owned(),
                collection: collection.to_owned(),
            }
        } else {
            // Resources mongoshift never needs (e.g. `system_buckets`).
            continue;
        };
        let actions = pr
            .array("actions")?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        grants.push(Grant { resource, actions });
    }
    Ok(Some(Privileges {
        users,
        roles,
        grants,
    }))
}

async fn oplog_info(cluster: &Cluster) -> Result<Option<OplogInfo>, ClusterError> {
    let oplog = cluster
        .client()
        .database("local")
        .collection::<Document>("oplog.rs");
    let mut ends = Vec::new();
    for direction in [1, -1] {
        let entry = oplog
            .find_one(doc! {})
            .sort(doc! { "$natural": direction })
            .projection(doc! { "ts": 1, "_id": 0 })
            .await
            .map_err(|e| cluster.error("find local.oplog.rs", &e))?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let ts = entry.get_timestamp("ts").map_err(|_| {
            cluster.invalid_reply(
                "find local.oplog.rs",
                "an oplog entry has no `ts` timestamp",
            )
        })?;
        ends.push(ts);
    }
    let (used_bytes, max_bytes) =
        match collection_stats(cluster, &Namespace::new("local", "oplog.rs")).await {
            Ok(stats) => (Some(stats.size_bytes), stats.max_size),
            Err(_) => (None, None),
        };
    let first: Timestamp = ends[0];
    let last: Timestamp = ends[1];
    Ok(Some(OplogInfo {
        first,
        last,
        used_bytes,
        max_bytes,
    }))
}

async fn sharding_info(cluster: &Cluster) -> Result<ShardingInfo, ClusterError> {
    let reply = cluster.command("admin", doc! { "listShards": 1 }).await?;
    let r = Reply::new(cluster.side(), "listShards", &reply);
    let mut shards = Vec::new();
    for s in r.array("shards")? {
        let Some(s) = s.as_document() else {
            return Err(cluster.invalid_reply("listShards", "a shard is not a document"));
        };
        let sr = r.nested(s);
        shards.push(Shard {
            id: sr.str("_id")?.to_owned(),
            host: sr.str("host")?.to_owned(),
        });
    }
    shards.sort_by(|a, b| a.id.cmp(&b.id));
    let balancer_running = cluster
        .command("admin", doc! { "balancerStatus": 1 })
        .await
        .ok()
        .and_then(|b| b.get_str("mode").ok().map(|m| m != "off"));
    Ok(ShardingInfo {
        shards,
        balancer_running,
    })
}

/// A sharded collection's key and `unique` flag, from `config.collections`.
#[derive(Debug, Clone)]
struct ShardKeyEntry {
    key: Document,
    unique: bool,
}

async fn shard_keys(cluster: &Cluster) -> Result<BTreeMap<String, ShardKeyEntry>, ClusterError> {
    let coll = cluster
        .client()
        .database("config")
        .collection::<Document>("collections");
    let docs: Vec<Document> = coll
        .find(doc! { "dropped": { "$ne": true } })
        .await
        .map_err(|e| cluster.error("find config.collections", &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error("find config.collections", &e))?;
    Ok(docs
        .into_iter()
        .filter_map(|d| {
            Some((
                d.get_str("_id").ok()?.to_owned(),
                ShardKeyEntry {
                    key: d.get_document("key").ok()?.clone(),
                    unique: d.get_bool("unique").unwrap_or(false),
                },
            ))
        })
        .collect())
}

#[derive(Default)]
struct Stats {
    count: u64,
    size_bytes: u64,
    max_size: Option<u64>,
    /// Per shard, when the reply came through mongos (each document names its `shard`).
    shards: BTreeMap<String, CollectionStats>,
}

async fn collection_stats(cluster: &Cluster, ns: &Namespace) -> Result<Stats, ClusterError> {
    let coll = cluster
        .client()
        .database(ns.db())
        .collection::<Document>(ns.coll());
    let command = format!("$collStats {ns}");
    let docs: Vec<Document> = coll
        .aggregate([doc! { "$collStats": { "storageStats": {} } }])
        .await
        .map_err(|e| cluster.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error(&command, &e))?;
    let mut stats = Stats::default();
    // Through mongos there is one document per shard, with its `shard` id.
    for d in &docs {
        let r = Reply::new(cluster.side(), &command, d);
        let storage = r.doc("storageStats")?;
        let s = r.nested(storage);
        let count = s.opt_u64("count")?.unwrap_or(0);
        let size = s.opt_u64("size")?.unwrap_or(0);
        stats.count += count;
        stats.size_bytes += size;
        if let Some(max) = s.opt_u64("maxSize")? {
            stats.max_size = Some(stats.max_size.unwrap_or(0) + max);
        }
        if let Some(shard) = r.opt_str("shard")? {
            let entry = stats.shards.entry(shard.to_owned()).or_default();
            entry.count += count;
            entry.size_bytes += size;
        }
    }
    Ok(stats)
}

async fn catalog(
    cluster: &Cluster,
    filter: Option<&NamespaceFilter>,
    shard_keys: &BTreeMap<String, ShardKeyEntry>,
) -> Result<Catalog, ClusterError> {
    let reply = cluster
        .command("admin", doc! { "listDatabases": 1, "nameOnly": true })
        .await?;
    let r = Reply::new(cluster.side(), "listDatabases", &reply);
    let mut names = Vec::new();
    for d in r.array("databases")? {
        let Some(d) = d.as_document() else {
            return Err(
                cluster.invalid_reply("listDatabases", "a database entry is not a document")
            );
        };
        let name = r.nested(d).str("name")?;
        if SYSTEM_DATABASES.contains(&name) || filter.is_some_and(|f| !f.may_include_database(name))
        {
            continue;
        }
        names.push(name.to_owned());
    }

    // List collections of every database, then fetch indexes and stats concurrently.
    let mut entries: Vec<(Namespace, CollectionKind, Option<String>, Document)> = Vec::new();
    for db in &names {
        let command = format!("listCollections {db}");
        let listed: Vec<Document> = cluster
            .client()
            .database(db)
            .run_cursor_command(doc! { "listCollections": 1 })
            .await
            .map_err(|e| cluster.error(&command, &e))?
            .try_collect()
            .await
            .map_err(|e| cluster.error(&command, &e))?;
        for item in &listed {
            let ir = Reply::new(cluster.side(), &command, item);
            let name = ir.str("name")?;
            let ns = Namespace::new(db.clone(), name);
            if ns.is_system() || filter.is_some_and(|f| !f.includes(&ns)) {
                continue;
            }
            let kind = match ir.opt_str("type")? {
                None | Some("collection") => CollectionKind::Collection,
                Some("view") => CollectionKind::View,
                Some("timeseries") => CollectionKind::Timeseries,
                Some(other) => {
                    return Err(cluster.invalid_reply(
                        &command,
                        format!("unknown collection type {other:?} for {ns}"),
                    ));
                }
            };
            let options = match item.get("options") {
                Some(Bson::Document(o)) => o.clone(),
                None => Document::new(),
                Some(other) => {
                    return Err(cluster.invalid_reply(
                        &command,
                        format!("`options` of {ns} is {:?}", other.element_type()),
                    ));
                }
            };
            let uuid = item
                .get_document("info")
                .ok()
                .and_then(|info| match info.get("uuid") {
                    Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid => {
                        Some(format_uuid(&b.bytes))
                    }
                    _ => None,
                });
            entries.push((ns, kind, uuid, options));
        }
    }

    let details: Vec<Option<(Namespace, CollectionInfo)>> = futures_util::stream::iter(entries)
        .map(|(ns, kind, uuid, options)| async move {
            let (indexes, stats) = if kind == CollectionKind::View {
                (Vec::new(), Stats::default())
            } else {
                let indexes = match list_indexes(cluster, &ns).await {
                    Ok(i) => i,
                    // Dropped since it was listed: it is simply not part of the snapshot.
                    Err(e) if e.code() == Some(codes::NAMESPACE_NOT_FOUND) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let stats = match collection_stats(cluster, &ns).await {
                    Ok(s) => s,
                    Err(e) if e.code() == Some(codes::NAMESPACE_NOT_FOUND) => Stats::default(),
                    Err(e) => return Err(e),
                };
                (indexes, stats)
            };
            let sharded = shard_keys.get(&ns.to_string());
            Ok(Some((
                ns,
                CollectionInfo {
                    kind,
                    uuid,
                    options,
                    indexes,
                    stats: CollectionStats {
                        count: stats.count,
                        size_bytes: stats.size_bytes,
                    },
                    shard_key: sharded.map(|s| s.key.clone()),
                    shard_key_unique: sharded.is_some_and(|s| s.unique),
                    shard_stats: stats.shards,
                },
            )))
        })
        .buffer_unordered(CATALOG_CONCURRENCY)
        .try_collect()
        .await?;

    let mut catalog = Catalog::default();
    for db in names {
        catalog
            .databases
            .entry(db)
            .or_insert_with(DatabaseInfo::default);
    }
    for (ns, info) in details.into_iter().flatten() {
        catalog
            .databases
            .entry(ns.db().to_owned())
            .or_default()
            .collections
            .insert(ns.coll().to_owned(), info);
    }
    Ok(catalog)
}

/// A collection's indexes (`listIndexes`), sorted by name.
pub async fn list_indexes(
    cluster: &Cluster,
    ns: &Namespace,
) -> Result<Vec<IndexSpec>, ClusterError> {
    let command = format!("listIndexes {ns}");
    let docs: Vec<Document> = cluster
        .client()
        .database(ns.db())
        .run_cursor_command(doc! { "listIndexes": ns.coll() })
        .await
        .map_err(|e| cluster.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error(&command, &e))?;
    let mut specs = Vec::with_capacity(docs.len());
    for d in docs {
        let r = Reply::new(cluster.side(), &command, &d);
        let name = r.str("name")?.to_owned();
        let key = r.doc("key")?.clone();
        let options: Document = d
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "key" | "v" | "ns"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        specs.push(IndexSpec { name, key, options });
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn format_uuid(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_array_or_the_string() {
        let build = doc! { "versionArray": [7, 0, 14, 0] };
        assert_eq!(parse_version(&build, "x"), Some([7, 0, 14]));
        assert_eq!(parse_version(&doc! {}, "6.0.3-ent"), Some([6, 0, 3]));
        assert_eq!(parse_version(&doc! {}, "8.0"), Some([8, 0, 0]));
        assert_eq!(parse_version(&doc! {}, "weird"), None);
    }

    #[test]
    fn uuids_are_hyphenated() {
        let bytes: Vec<u8> = (0u8..16).collect();
        assert_eq!(format_uuid(&bytes), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
