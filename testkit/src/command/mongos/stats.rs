//! Sizes through a mongos: `collStats` (with its `shards` sub-document), `$collStats` (one
//! document per shard, each naming its `shard`) and `listDatabases` (with per-database
//! `shards` sizes), aggregated the way `cluster_coll_stats_cmd` and
//! `cluster_list_databases_cmd` aggregate the shards' replies.
//!
//! A shard's part of a collection is the documents whose shard key falls in its chunks (all of
//! an unsharded collection is on the database's primary shard). Index sizes are split between
//! shards in proportion to their documents; data and storage sizes are exact for the stored
//! documents, with storage rounded to 4 KiB pages as on the single-node server.

use std::collections::BTreeMap;

use bson::{Bson, Document, doc};

use crate::command::args::{Fields, check_fields};
use crate::command::catalog::{stats_document, target};
use crate::command::mongos::sharding;
use crate::command::{Ctx, Reply, Request};
use crate::engine::Engine;
use crate::engine::catalog::Entry;
use crate::engine::collection::Collection;
use crate::engine::namespace::Namespace;
use crate::error::{CommandError, to_raw};
use crate::query::filter::Filter;

/// One shard's `collStats` numbers for its `count` documents of `bytes` bytes.
fn shard_stats(ns: &Namespace, coll: &Collection, count: u64, bytes: u64, scale: i64) -> Document {
    stats_document(ns, &coll.read(), count, bytes, scale)
}

/// `collStats` through a mongos: the shards' numbers summed, plus `sharded`, `primary` (when
/// unsharded), `nchunks` and every shard's own reply under `shards`.
pub fn coll_stats(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["scale", "verbose"])?;
    let fields = Fields::new("collStats", &request.body);
    let scale = match fields.get("scale") {
        None => 1,
        Some(v) => match crate::command::args::as_i64(v) {
            Some(n) if n >= 1 => n.min(i64::from(i32::MAX)),
            Some(_) => return Err(CommandError::new(4390200, "scale has to be >= 1")),
            None if crate::command::args::truthy(v) => {
                return Err(CommandError::new(4390201, "scale has to be a number >= 1"));
            }
            None => 1,
        },
    };
    let engine = ctx.engine;
    let sharding = sharding(engine)?;
    sharding.register_new_databases(engine);
    let coll = engine.catalog.collection(&ns).ok_or_else(|| {
        CommandError::namespace_not_found(format!("Collection [{ns}] not found."))
    })?;
    let sharded = sharding.collection(&coll.uuid);
    let distribution = sharding.distribution(&ns, &coll);

    let mut reply = Document::new();
    match &sharded {
        Some(_) => {
            reply.insert("sharded", true);
        }
        None => {
            reply.insert("sharded", false);
            reply.insert("primary", sharding.primary_of(&ns.db));
        }
    }
    let mut shards = Document::new();
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    let mut index_sizes: BTreeMap<String, i64> = BTreeMap::new();
    let mut unscaled_size = 0i64;
    let mut max_size = 0i64;
    let mut nindexes = 0i32;
    for (shard, (count, bytes)) in &distribution {
        // Each shard answers unscaled; the mongos sums, then scales.
        let stats = shard_stats(&ns, &coll, *count, *bytes, 1);
        if !reply.contains_key("capped") {
            reply.insert(
                "capped",
                stats.get("capped").cloned().unwrap_or(Bson::Boolean(false)),
            );
            if let Some(max) = stats.get("max") {
                reply.insert("max", max.clone());
            }
        }
        for field in [
            "count",
            "size",
            "storageSize",
            "totalIndexSize",
            "totalSize",
        ] {
            *sums.entry(field).or_default() += stats.get_i64(field).unwrap_or(0);
        }
        unscaled_size += *bytes as i64;
        max_size = max_size.max(stats.get_i64("maxSize").unwrap_or(0));
        nindexes = nindexes.max(stats.get_i32("nindexes").unwrap_or(0));
        if let Ok(sizes) = stats.get_document("indexSizes") {
            for (name, size) in sizes {
                if let Bson::Int64(s) = size {
                    *index_sizes.entry(name.clone()).or_default() += s;
                }
            }
        }
        let mut scaled = shard_stats(&ns, &coll, *count, *bytes, scale);
        scaled.insert("ok", 1.0);
        shards.insert(shard.clone(), scaled);
    }
    reply.insert("ns", ns.to_string());
    for (field, value) in &sums {
        if *field == "count" {
            reply.insert(*field, *value);
        } else {
            reply.insert(*field, value / scale);
        }
    }
    reply.insert(
        "indexSizes",
        index_sizes
            .into_iter()
            .map(|(k, v)| (k, Bson::Int64(v / scale)))
            .collect::<Document>(),
    );
    let count = sums.get("count").copied().unwrap_or(0);
    reply.insert(
        "avgObjSize",
        if count > 0 {
            unscaled_size as f64 / count as f64
        } else {
            0.0
        },
    );
    reply.insert("maxSize", max_size / scale);
    reply.insert("nindexes", nindexes);
    reply.insert("scaleFactor", scale as i32);
    reply.insert(
        "nchunks",
        sharded
            .as_ref()
            .map_or(1, |s| s.chunks.chunks().len() as i32),
    );
    reply.insert("shards", shards);
    to_raw(&reply)
}

/// `$collStats` through a mongos: the single-node document `single` (built from the stage's
/// options) becomes one document per shard holding part of the collection, with `shard` after
/// `ns` and that shard's `storageStats` and `count`.
pub fn coll_stats_per_shard(
    engine: &Engine,
    ns: &Namespace,
    coll: &Collection,
    single: &Document,
) -> Result<Vec<Document>, CommandError> {
    let sharding = sharding(engine)?;
    let scale = single
        .get_document("storageStats")
        .ok()
        .and_then(|s| s.get("scaleFactor"))
        .and_then(|v| match v {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(1);
    let mut out = Vec::new();
    for (shard, (count, bytes)) in sharding.distribution(ns, coll) {
        let mut d = Document::new();
        for (k, v) in single {
            match k.as_str() {
                "ns" => {
                    d.insert("ns", v.clone());
                    d.insert("shard", shard.clone());
                }
                "storageStats" => {
                    d.insert("storageStats", shard_stats(ns, coll, count, bytes, scale));
                }
                "count" => {
                    d.insert("count", doc! { "count": count as i64 });
                }
                _ => {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// `listDatabases` through a mongos: every database any shard holds, with `sizeOnDisk` summed
/// and a `shards` document of each shard's part; `admin` and `config` come from the config
/// server (shard id `config`); `local` is never listed.
pub fn list_databases(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    if request.db != "admin" {
        return Err(CommandError::new(
            13,
            "listDatabases may only be run against the admin database.",
        ));
    }
    check_fields(request, &["filter", "nameOnly", "authorizedDatabases"])?;
    let fields = Fields::new("listDatabases", &request.body);
    let name_only = fields.bool("nameOnly")?.unwrap_or(false);
    let filter = match fields.doc("filter")? {
        Some(f) => Some(Filter::parse(f)?),
        None => None,
    };
    let engine = ctx.engine;
    let sharding = sharding(engine)?;
    sharding.register_new_databases(engine);
    // Every shard (and the config server) answers for the databases it holds; the mongos
    // keeps the per-shard entries that pass the filter there.
    let mut per_db: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    let mut names = engine.catalog.database_names();
    for internal in ["admin", "config"] {
        if !names.iter().any(|n| n == internal) {
            names.push(internal.to_string());
        }
    }
    for db in names {
        if db == "local" {
            continue;
        }
        let parts: BTreeMap<String, (i64, u64)> = if matches!(db.as_str(), "admin" | "config") {
            let (size, docs) = database_part(engine, &db, None);
            BTreeMap::from([("config".to_string(), (size, docs))])
        } else {
            let mut parts = BTreeMap::new();
            for shard in sharding.shard_ids() {
                let (size, docs) = database_part(engine, &db, Some(&shard));
                if size > 0 {
                    parts.insert(shard, (size, docs));
                }
            }
            parts
        };
        for (shard, (size, docs)) in parts {
            if let Some(filter) = &filter {
                let shard_view =
                    to_raw(&doc! { "name": db.clone(), "sizeOnDisk": size, "empty": docs == 0 })?;
                if !filter.matches(&shard_view)? {
                    continue;
                }
            }
            per_db.entry(db.clone()).or_default().push((shard, size));
        }
    }
    let mut databases = Vec::new();
    let mut total = 0i64;
    for (name, parts) in per_db {
        let mut entry = doc! { "name": name };
        if !name_only {
            let size: i64 = parts.iter().map(|(_, s)| s).sum();
            let shards: Document = parts
                .into_iter()
                .map(|(shard, s)| (shard, Bson::Int64(s)))
                .collect();
            entry.insert("sizeOnDisk", size);
            // mongos' legacy test: only a size of exactly 1 byte counts as empty.
            entry.insert("empty", size == 1);
            entry.insert("shards", shards);
            total += size;
        }
        databases.push(Bson::Document(entry));
    }
    let mut reply = doc! { "databases": databases };
    if !name_only {
        reply.insert("totalSize", total);
        reply.insert("totalSizeMb", total / (1024 * 1024));
    }
    to_raw(&reply)
}

/// The bytes (documents and indexes in 4 KiB pages) and documents of `db` on one shard (or the
/// whole database for `None`).
fn database_part(engine: &Engine, db: &str, shard: Option<&str>) -> (i64, u64) {
    let Some(sharding) = engine.sharding.as_ref() else {
        return (0, 0);
    };
    let mut size = 0i64;
    let mut docs = 0u64;
    for (name, entry) in engine.catalog.entries(db) {
        let Entry::Collection(coll) = entry else {
            continue;
        };
        let ns = Namespace::new(db, name);
        let parts = match shard {
            None => {
                let data = coll.read();
                BTreeMap::from([(String::new(), (data.count() as u64, data.data_size()))])
            }
            Some(_) => sharding.distribution(&ns, &coll),
        };
        for (owner, (count, bytes)) in parts {
            if shard.is_some_and(|s| s != owner) {
                continue;
            }
            let stats = shard_stats(&ns, &coll, count, bytes, 1);
            size += stats.get_i64("totalSize").unwrap_or(0);
            docs += count;
        }
    }
    (size, docs)
}
