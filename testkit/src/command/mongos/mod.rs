//! A mongos: the commands only a router has, the mongod commands it answers differently, and
//! the bookkeeping around the ones it passes through.
//!
//! Every command of a [`Mode::Mongos`](crate::Mode::Mongos) server comes through [`execute`]:
//! - `local` is refused, as a mongos refuses it (20);
//! - sharding commands run here: [`cluster`] (`listShards`, `balancerStatus`/`Start`/`Stop`),
//!   [`ddl`] (`enableSharding`, `shardCollection`, `split`, `moveChunk`, `moveRange`),
//!   [`stats`] (`collStats` and `listDatabases` with their per-shard breakdowns);
//! - `replSetGetStatus` answers mongos' stub error and `replSetGetConfig` does not exist;
//!   `serverStatus` and `getCmdLineOpts` describe a mongos;
//! - everything else runs as on a mongod (one store serves all shards), then the new databases
//!   it created get their primary shard and a dropped database loses its entry.
//!
//! Reads of `config.shards`, `config.databases`, `config.collections`, `config.chunks`, ... are
//! served from the sharding metadata by [`config_views`].

pub mod cluster;
pub mod config_views;
pub mod ddl;
pub mod stats;

use bson::{Document, doc};

use crate::command::args::type_name;
use crate::command::{Ctx, Reply, Request, dispatch};
use crate::engine::Engine;
use crate::engine::namespace::{Namespace, validate_db_name};
use crate::engine::sharding::Sharding;
use crate::error::{CommandError, to_document, to_raw};

/// Commands after which a new database may exist (its primary shard is assigned then).
const CREATING_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "findAndModify",
    "findandmodify",
    "create",
    "createIndexes",
    "renameCollection",
    "aggregate",
    "commitTransaction",
];

/// The default `chunkSize` of MongoDB 7.0 (128 MiB), as `serverStatus.sharding` reports it.
pub const MAX_CHUNK_SIZE_BYTES: i64 = 128 * 1024 * 1024;

/// Runs one command on a mongos.
pub async fn execute(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    if request.db == "local" {
        return Err(CommandError::new(
            20,
            "Can't use 'local' database through mongos",
        ));
    }
    match request.name.as_str() {
        "listShards" | "listshards" => cluster::list_shards(ctx, request),
        "balancerStatus" => cluster::balancer_status(ctx, request),
        "balancerStart" => cluster::balancer_start(ctx, request),
        "balancerStop" => cluster::balancer_stop(ctx, request),
        "enableSharding" | "enablesharding" => ddl::enable_sharding(ctx, request),
        "shardCollection" | "shardcollection" => ddl::shard_collection(ctx, request),
        "split" => ddl::split(ctx, request),
        "moveChunk" | "movechunk" => ddl::move_chunk(ctx, request),
        "moveRange" => ddl::move_range(ctx, request),
        "collStats" | "collstats" => stats::coll_stats(ctx, request),
        "listDatabases" => stats::list_databases(ctx, request),
        "replSetGetStatus" => {
            require_admin(request)?;
            // mongos' stub sets only `errmsg` (and `info`): no code, as on a real mongos.
            Err(
                CommandError::without_code("replSetGetStatus is not supported through mongos")
                    .with_extra("info", "mongos"),
            )
        }
        // Replica-set commands a mongos does not have.
        "replSetGetConfig" => Err(CommandError::new(
            59,
            format!("no such command: '{}'", request.name),
        )),
        "serverStatus" => server_status(ctx, request).await,
        "getCmdLineOpts" => get_cmd_line_opts(ctx, request).await,
        "createIndexes" => {
            check_unique_indexes(ctx.engine, request)?;
            let reply = pass_through(ctx, request).await?;
            per_shard_reply(ctx.engine, request, reply)
        }
        _ => pass_through(ctx, request).await,
    }
}

/// Runs a command as a mongod does, then keeps the sharding metadata in step with the catalog.
async fn pass_through(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let reply = dispatch(ctx, request).await?;
    let sharding = sharding(ctx.engine)?;
    if request.name == "dropDatabase" {
        sharding.drop_database(&request.db);
    } else if CREATING_COMMANDS.contains(&request.name.as_str()) {
        sharding.register_new_databases(ctx.engine);
    }
    Ok(reply)
}

/// The sharding state (always present on a mongos).
pub fn sharding(engine: &Engine) -> Result<&Sharding, CommandError> {
    engine
        .sharding
        .as_ref()
        .ok_or_else(|| CommandError::new(1, "this server is not a mongos"))
}

/// The 13 `Unauthorized` of commands that only run against `admin`.
pub fn require_admin(request: &Request) -> Result<(), CommandError> {
    if request.db != "admin" {
        return Err(CommandError::new(
            13,
            format!(
                "{} may only be run against the admin database.",
                request.name
            ),
        ));
    }
    Ok(())
}

/// `CommandHelpers::parseNsFullyQualified`: the command's value as a `db.collection` namespace.
pub fn fully_qualified(request: &Request) -> Result<Namespace, CommandError> {
    match request.body.get(&request.name) {
        Ok(Some(bson::RawBsonRef::String(s))) => {
            let ns = Namespace::parse(s).map_err(|_| {
                CommandError::invalid_namespace(format!("Invalid namespace specified '{s}'"))
            })?;
            validate_db_name(&ns.db).map_err(|_| {
                CommandError::invalid_namespace(format!("Invalid namespace specified '{s}'"))
            })?;
            Ok(ns)
        }
        Ok(Some(v)) => Err(CommandError::bad_value(format!(
            "collection name has invalid type {}",
            type_name(v)
        ))),
        _ => Err(CommandError::bad_value(
            "collection name has invalid type missing",
        )),
    }
}

/// A unique index on a sharded collection must be prefixed by the shard key (or `_id`), as
/// the shards' `createIndexes` checks (67 `CannotCreateIndex`).
fn check_unique_indexes(engine: &Engine, request: &Request) -> Result<(), CommandError> {
    let Ok(Some(bson::RawBsonRef::String(coll))) = request.body.get("createIndexes") else {
        return Ok(());
    };
    let ns = Namespace::new(request.db.clone(), coll);
    let Some(sharded) = sharding(engine)?.collection_at(engine, &ns) else {
        return Ok(());
    };
    let Ok(Some(bson::RawBsonRef::Array(indexes))) = request.body.get("indexes") else {
        return Ok(());
    };
    for spec in indexes.into_iter().flatten() {
        let bson::RawBsonRef::Document(spec) = spec else {
            continue;
        };
        let unique = matches!(spec.get("unique"), Ok(Some(v)) if crate::command::args::truthy(v));
        let Ok(Some(bson::RawBsonRef::Document(key))) = spec.get("key") else {
            continue;
        };
        let key = to_document(key)?;
        if unique && !sharded.key.is_unique_index_compatible(&key) {
            return Err(CommandError::new(
                67,
                format!(
                    "cannot create unique index over {} with shard key pattern {}",
                    crate::engine::index::shell_format_document(&key),
                    sharded.key.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A mongos reports the shards' replies of a broadcast DDL command under `raw`, keyed by each
/// shard's connection string: `{raw: {"shard0/host:port": {...}}}`.
fn per_shard_reply(engine: &Engine, request: &Request, reply: bson::RawDocumentBuf) -> Reply {
    let sharding = sharding(engine)?;
    let Ok(Some(bson::RawBsonRef::String(coll))) = request.body.get(&request.name) else {
        return Ok(reply);
    };
    let ns = Namespace::new(request.db.clone(), coll);
    let owners = match sharding.collection_at(engine, &ns) {
        Some(sharded) => sharded.chunks.shards(),
        None => vec![sharding.primary_of(&ns.db)],
    };
    let mut body = to_document(&reply)?;
    body.insert("ok", 1.0);
    let mut raw = Document::new();
    for shard in owners {
        if let Some(s) = sharding.shards.iter().find(|s| s.id == shard) {
            raw.insert(s.host.clone(), body.clone());
        }
    }
    to_raw(&doc! { "raw": raw })
}

/// `serverStatus` of a mongos: `process: "mongos"`, a `sharding` section, no `repl` and no
/// storage engine.
async fn server_status(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let reply = dispatch(ctx, request).await?;
    let mut status = to_document(&reply)?;
    status.insert("process", "mongos");
    status.remove("repl");
    status.remove("storageEngine");
    let ts = ctx.engine.oplog.cluster_time();
    status.insert(
        "sharding",
        doc! {
            "configsvrConnectionString": config_server_string(ctx.engine),
            "lastSeenConfigServerOpTime": { "ts": ts, "t": 1i64 },
            "maxChunkSizeInBytes": MAX_CHUNK_SIZE_BYTES,
        },
    );
    to_raw(&status)
}

/// `getCmdLineOpts` of a mongos: `sharding.configDB` instead of `replication`.
async fn get_cmd_line_opts(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let reply = dispatch(ctx, request).await?;
    let mut opts = to_document(&reply)?;
    if let Ok(parsed) = opts.get_document_mut("parsed") {
        parsed.remove("replication");
        parsed.insert(
            "sharding",
            doc! { "configDB": config_server_string(ctx.engine) },
        );
    }
    to_raw(&opts)
}

/// The config server replica set's connection string (it lives in this process too).
pub fn config_server_string(engine: &Engine) -> String {
    format!("configRepl/{}", engine.config.host)
}

/// `{ a: 1 }`-style rendering of a document for messages.
pub fn shell(d: &Document) -> String {
    crate::engine::index::shell_format_document(d)
}
