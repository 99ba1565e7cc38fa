//! Sharding DDL through a mongos: `enableSharding`, `shardCollection`, `split`, `moveChunk`
//! and `moveRange`, with MongoDB 7.0's validations and error codes.
//!
//! `shardCollection` follows the 7.0 create-collection coordinator: argument checks, the
//! database created on demand (`enableSharding` is optional since 6.0), the shard key index
//! validated against the existing indexes (and created when the collection is empty), the
//! initial chunks of `InitialSplitPolicy`, a `shardCollection` no-op in the oplog (the
//! expanded change event) and the metadata. Splits and migrations only edit the chunk table.

use std::sync::Arc;

use bson::{Document, RawBsonRef, doc, rawdoc};

use crate::command::args::{Fields, check_fields};
use crate::command::mongos::{fully_qualified, require_admin, sharding, shell};
use crate::command::{Ctx, Reply, Request};
use crate::engine::catalog::Entry;
use crate::engine::collection::Collection;
use crate::engine::namespace::{Namespace, validate_coll_name, validate_db_name};
use crate::engine::oplog::{DdlOp, OplogOp};
use crate::engine::sharding::{ChunkMap, ShardKey, ShardedCollection};
use crate::error::{CommandError, to_document, to_raw};

/// `shardutil::kMaxSplitPoints`: the most initial chunks per shard.
const MAX_CHUNKS_PER_SHARD: i64 = 8192;
/// The most initial chunks of one collection.
const MAX_INITIAL_CHUNKS: i64 = 1_000_000;

/// `enableSharding: "<db>" [, primaryShard]`: creates the database's entry (optional since 6.0).
pub fn enable_sharding(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(request, &["primaryShard"])?;
    let fields = Fields::new(&request.name, &request.body);
    let Some(db) = fields.str(&request.name)? else {
        return Err(CommandError::type_mismatch(format!(
            "BSON field '{0}.{0}' is the wrong type, expected type 'string'",
            request.name
        )));
    };
    let primary = fields.str("primaryShard")?;
    create_database(ctx, db, primary)?;
    Ok(bson::RawDocumentBuf::new())
}

/// `ShardingCatalogManager::createDatabase`: the entry of `db`, created if needed.
fn create_database(ctx: &Ctx<'_>, db: &str, primary: Option<&str>) -> Result<(), CommandError> {
    if db == "config" {
        return Ok(());
    }
    if matches!(db, "admin" | "local") {
        return Err(CommandError::new(
            72,
            format!("Cannot manually create database'{db}'"),
        ));
    }
    if validate_db_name(db).is_err() {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid db name specified: {db}"
        )));
    }
    let engine = ctx.engine;
    let sharding = sharding(engine)?;
    if let Some(p) = primary
        && !sharding.has_shard(p)
    {
        return Err(CommandError::new(70, format!("Shard {p} not found")));
    }
    // Databases whose names differ only in case cannot coexist.
    let lower = db.to_lowercase();
    for (name, _) in sharding.databases() {
        if name != db && name.to_lowercase() == lower {
            return Err(CommandError::new(
                13297,
                format!(
                    "can't have 2 databases that just differ on case  have: {name} want to add: {db}"
                ),
            ));
        }
    }
    if let Some(existing) = sharding.database(db) {
        if let Some(p) = primary
            && existing.primary != p
        {
            return Err(CommandError::new(
                48,
                format!("database already created on a primary which is different from {p}"),
            ));
        }
        return Ok(());
    }
    sharding.ensure_database(engine, db, primary);
    Ok(())
}

/// `shardCollection: "<db>.<coll>", key, [unique], [numInitialChunks], [collation]`.
pub fn shard_collection(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(
        request,
        &[
            "key",
            "unique",
            "numInitialChunks",
            "presplitHashedZones",
            "collation",
            "timeseries",
            "collectionUUID",
            "implicitlyCreateIndex",
            "enforceUniquenessCheck",
        ],
    )?;
    let ns = fully_qualified(request)?;
    let fields = Fields::new("shardCollection", &request.body);
    let Some(key_doc) = fields.doc("key")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'shardCollection.key' is missing but a required field",
        ));
    };
    let key = ShardKey::parse(&to_document(key_doc)?)?;
    let unique = fields.bool("unique")?.unwrap_or(false);
    let num_initial = fields.i64("numInitialChunks")?.unwrap_or(0);
    let presplit = fields.bool("presplitHashedZones")?.unwrap_or(false);
    let collation = fields.doc("collation")?;
    if fields.get("timeseries").is_some() {
        return Err(CommandError::bad_value(
            "shardCollection: sharding time-series collections is not supported by this test server",
        ));
    }
    let engine = ctx.engine;
    let sharding = sharding(engine)?;

    // Checks of the router and the coordinator, in their order.
    if matches!(ns.db.as_str(), "admin" | "local") {
        return Err(CommandError::new(
            72,
            format!("Cannot manually create database'{}'", ns.db),
        ));
    }
    if ns.db == "config" {
        return Err(CommandError::new(
            20,
            "only special collections in the config db may be sharded",
        ));
    }
    validate_coll_name(&ns.db, &ns.coll)?;
    if key.is_hashed() && unique {
        return Err(CommandError::new(
            72,
            "Hashed shard keys cannot be declared unique. It's possible to ensure uniqueness on the hashed field by declaring an additional (non-hashed) unique index on the field.",
        ));
    }
    let n_shards = sharding.shards.len() as i64;
    let max_for_shards = n_shards * MAX_CHUNKS_PER_SHARD;
    if num_initial != 0
        && !(num_initial >= 0 && num_initial <= max_for_shards && num_initial <= MAX_INITIAL_CHUNKS)
    {
        return Err(CommandError::new(
            72,
            format!(
                "numInitialChunks cannot be more than either: {max_for_shards}, {MAX_CHUNKS_PER_SHARD} * number of shards; or {MAX_INITIAL_CHUNKS}"
            ),
        ));
    }
    if ns.is_system() {
        return Err(CommandError::new(20, "can't shard system namespaces"));
    }
    if let Some(c) = collation
        && !matches!(c.get("locale"), Ok(Some(RawBsonRef::String("simple"))))
    {
        return Err(CommandError::bad_value(format!(
            "The collation for shardCollection must be {{locale: 'simple'}}, but found: {}",
            shell(&to_document(c)?)
        )));
    }
    let existing = match engine.catalog.get(&ns) {
        Some(Entry::View(_)) => {
            return Err(CommandError::new(
                166,
                format!("Namespace {ns} is a view, not a collection"),
            ));
        }
        Some(Entry::Collection(c)) => Some(c),
        None => None,
    };
    if let Some(coll) = &existing {
        let data = coll.read();
        if data.options.capped.is_some() {
            return Err(CommandError::new(72, "can't shard a capped collection"));
        }
        if data.options.timeseries {
            return Err(CommandError::bad_value(
                "shardCollection: sharding time-series collections is not supported by this test server",
            ));
        }
        if collation.is_none()
            && let Ok(c) = data.options.options.get_document("collation")
            && c.get_str("locale").is_ok_and(|l| l != "simple")
        {
            return Err(CommandError::bad_value(format!(
                "If no collation was specified, the collection collation must be {{locale: 'simple'}}, but found: {}",
                shell(c)
            )));
        }
        drop(data);
        if let Some(sharded) = sharding.collection(&coll.uuid) {
            // Resharding with the same options succeeds; anything else is refused.
            if sharded.key.pattern == key.pattern && sharded.unique == unique {
                return to_raw(&doc! { "collectionsharded": ns.to_string() });
            }
            return Err(CommandError::new(
                23,
                format!("sharding already enabled for collection {ns}"),
            ));
        }
    }
    let empty = existing.as_ref().is_none_or(|c| c.read().count() == 0);
    if num_initial != 0 && !(key.is_hashed() && empty) {
        return Err(CommandError::new(
            72,
            "numInitialChunks is only supported when the collection is empty and has a hashed field in the shard key pattern",
        ));
    }
    if num_initial != 0 && !key.has_hashed_prefix() && !presplit {
        return Err(CommandError::new(
            72,
            "When the prefix of the hashed shard key is a range field, 'numInitialChunks' can only be used when the 'presplitHashedZones' is true",
        ));
    }
    if presplit {
        // There are no zones on this cluster, so pre-splitting by zones is never possible.
        return Err(CommandError::new(
            31387,
            "'presplitHashedZones' is only supported when the collection is empty, zones are set up and shard key pattern has a hashed field",
        ));
    }

    create_database(ctx, &ns.db, None)?;
    let needs_index = match &existing {
        Some(coll) => validate_shard_key_index(&ns, coll, &key, unique)?,
        None => true,
    };
    if needs_index {
        create_shard_key_index(ctx, &ns, &key, unique)?;
    }
    let coll = engine.catalog.collection(&ns).ok_or_else(|| {
        CommandError::namespace_not_found(format!("Collection [{ns}] not found."))
    })?;

    let description = doc! {
        "shardKey": key.pattern.clone(),
        "unique": unique,
        "numInitialChunks": num_initial,
        "presplitHashedZones": presplit,
    };
    let ts = engine.oplog.append(
        vec![OplogOp::Ddl(DdlOp::ShardCollection {
            ns: ns.clone(),
            uuid: coll.uuid,
            description,
        })],
        None,
    );
    let primary = sharding.primary_of(&ns.db);
    let chunks = if key.has_hashed_prefix() && empty {
        ChunkMap::hashed(&key, &sharding.shard_ids(), &primary, num_initial, ts)
    } else {
        ChunkMap::single(&key, &primary, ts)
    };
    sharding.add_collection(ShardedCollection {
        uuid: coll.uuid,
        key,
        unique,
        epoch: bson::oid::ObjectId::new(),
        last_mod: bson::DateTime::now(),
        timestamp: ts,
        sharded_at: ts,
        num_initial_chunks: num_initial,
        chunks,
    });
    ctx.op_time = Some(ts);
    to_raw(&doc! { "collectionsharded": ns.to_string() })
}

/// `validateShardKeyIndexExistsOrCreateIfPossible` for an existing collection: returns whether
/// the shard key index still has to be created.
fn validate_shard_key_index(
    ns: &Namespace,
    coll: &Collection,
    key: &ShardKey,
    unique: bool,
) -> Result<bool, CommandError> {
    let data = coll.read();
    // The `_id` index is always there; its listed spec has no `unique` field.
    let mut indexes: Vec<(Document, bool, bool)> = vec![(doc! { "_id": 1 }, false, true)];
    for index in &data.indexes {
        let usable = !index.spec.sparse
            && index.spec.partial.is_none()
            && !index.spec.spec.contains_key("collation");
        indexes.push((index.spec.key.clone(), index.spec.unique, usable));
    }
    // 1. Existing unique indexes must stay enforceable.
    for (index_key, is_unique, _) in &indexes {
        if *is_unique && !key.is_unique_index_compatible(index_key) {
            return Err(CommandError::new(
                72,
                format!(
                    "can't shard collection '{ns}' with unique index on {} and proposed shard key {}. Uniqueness can't be maintained unless shard key is a prefix",
                    shell(index_key),
                    key.display()
                ),
            ));
        }
    }
    // 2. An index whose prefix is the shard key.
    let mut useful = indexes
        .iter()
        .any(|(index_key, _, usable)| *usable && key.is_prefix_of(index_key));
    // 3. A unique shard key needs a unique index on exactly the key.
    if useful && unique {
        match indexes.iter().find(|(k, _, _)| *k == key.pattern) {
            None => useful = false,
            Some((k, is_unique, _)) => {
                let is_id = k.keys().next().is_some_and(|f| f == "_id");
                if !is_unique && !is_id {
                    return Err(CommandError::new(
                        72,
                        format!(
                            "can't shard collection {ns}, {} index not unique, and unique index explicitly specified",
                            key.display()
                        ),
                    ));
                }
            }
        }
    }
    if useful {
        // `checkShardingIndex`: the index must not be multikey.
        let is_id_key = key.pattern == doc! { "_id": 1 };
        if !is_id_key
            && data.documents().any(|(_, d)| {
                key.fields
                    .iter()
                    .any(|f| key.extract_field_is_array(d, &f.path))
            })
        {
            return Err(CommandError::new(
                96,
                "couldn't find valid index for shard key",
            ));
        }
        return Ok(false);
    }
    // 4. Without one, only an empty collection can get it created.
    if data.count() > 0 {
        return Err(CommandError::new(
            72,
            "Please create an index that starts with the proposed shard key before sharding the collection",
        ));
    }
    Ok(true)
}

/// Creates the shard key index (`a_1`, `x_hashed`; unique when asked, unless it is `_id`),
/// creating the collection if needed, through the ordinary `createIndexes`.
fn create_shard_key_index(
    ctx: &mut Ctx<'_>,
    ns: &Namespace,
    key: &ShardKey,
    unique: bool,
) -> Result<(), CommandError> {
    let mut spec = doc! { "key": key.pattern.clone(), "name": key.index_name() };
    let is_id = key.pattern.keys().next().is_some_and(|k| k == "_id") && key.pattern.len() == 1;
    if unique && !is_id {
        spec.insert("unique", true);
    }
    let mut body = rawdoc! { "createIndexes": ns.coll.clone() };
    body.append(
        bson::cstr!("indexes"),
        to_raw(&doc! { "i": [spec] })?
            .get_array("i")
            .map_err(CommandError::from)?
            .to_owned(),
    );
    body.append(bson::cstr!("$db"), ns.db.clone());
    let request = Request {
        name: "createIndexes".to_string(),
        db: ns.db.clone(),
        body,
        sequences: Vec::new(),
        lsid: None,
        lsid_bytes: None,
        txn_number: None,
        max_time_ms: None,
        autocommit: None,
    };
    crate::command::catalog::create_indexes(ctx, &request)?;
    Ok(())
}

/// The sharding of `ns` for the chunk commands: 118 `NamespaceNotSharded` when it has none.
fn sharded_or_error(
    ctx: &Ctx<'_>,
    ns: &Namespace,
) -> Result<(Arc<Collection>, Arc<ShardedCollection>), CommandError> {
    let engine = ctx.engine;
    let not_sharded = || CommandError::new(118, format!("Expected collection {ns} to be sharded"));
    let coll = engine.catalog.collection(ns).ok_or_else(not_sharded)?;
    let sharded = sharding(engine)?
        .collection(&coll.uuid)
        .ok_or_else(not_sharded)?;
    Ok((coll, sharded))
}

/// The `[min, max)` bounds of a `bounds: [min, max]` argument, normalized, if both are valid
/// shard keys.
fn parse_bounds(
    bounds: &bson::RawArray,
    key: &ShardKey,
) -> Result<Option<(Document, Document)>, CommandError> {
    let mut items = bounds.into_iter();
    let (Some(Ok(RawBsonRef::Document(min))), Some(Ok(RawBsonRef::Document(max)))) =
        (items.next(), items.next())
    else {
        return Ok(None);
    };
    let (min, max) = (to_document(min)?, to_document(max)?);
    if !key.is_shard_key(&min) || !key.is_shard_key(&max) {
        return Ok(None);
    }
    Ok(Some((key.normalize(&min), key.normalize(&max))))
}

/// The median shard key of the documents in chunk `index` (`splitVector` with `force`).
fn median_key(
    coll: &Collection,
    sharded: &ShardedCollection,
    index: usize,
) -> Result<Document, CommandError> {
    let chunk = &sharded.chunks.chunks()[index];
    let max_key = sharded.key.encode(&chunk.max);
    let mut keys: Vec<(Vec<u8>, Document)> = Vec::new();
    for (_, doc) in coll.read().documents() {
        if let Ok(k) = sharded.key.extract(doc) {
            let encoded = sharded.key.encode(&k);
            if encoded >= chunk.min_key && encoded < max_key {
                keys.push((encoded, k));
            }
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    match keys.get(keys.len() / 2) {
        Some((encoded, k)) if *encoded != chunk.min_key => Ok(k.clone()),
        _ => Err(CommandError::new(
            106,
            "Unable to find median in chunk because chunk is indivisible.",
        )),
    }
}

/// `split: "<ns>", middle | find | bounds`: splits one chunk in two (no data moves).
pub fn split(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(request, &["find", "bounds", "middle"])?;
    let ns = fully_qualified(request)?;
    let (coll, sharded) = sharded_or_error(ctx, &ns)?;
    let fields = Fields::new("split", &request.body);
    let find = fields.doc("find")?.filter(|d| !d.is_empty());
    let bounds = fields.array("bounds")?.filter(|a| !a.is_empty());
    let middle = fields.doc("middle")?.filter(|d| !d.is_empty());
    // The router's legacy argument checks answer with `errmsg` only.
    if let Some(b) = bounds {
        let mut it = b.into_iter();
        if it.next().is_none() {
            return Err(CommandError::without_code("lower bound not specified"));
        }
        if it.next().is_none() {
            return Err(CommandError::without_code("upper bound not specified"));
        }
    }
    if find.is_some() && bounds.is_some() {
        return Err(CommandError::without_code(
            "cannot specify bounds and find at the same time",
        ));
    }
    if find.is_none() && bounds.is_none() && middle.is_none() {
        return Err(CommandError::without_code(
            "need to specify find/bounds or middle",
        ));
    }
    if find.is_some() && middle.is_some() {
        return Err(CommandError::without_code(
            "cannot specify find and middle together",
        ));
    }
    if bounds.is_some() && middle.is_some() {
        return Err(CommandError::without_code(
            "cannot specify bounds and middle together",
        ));
    }
    let key = &sharded.key;
    let split_point = if let Some(find) = find {
        let Some(shard_key) = key.equality_key(find) else {
            return Err(CommandError::without_code(format!(
                "no shard key found in chunk query {}",
                shell(&to_document(find)?)
            )));
        };
        let index = sharded.chunks.index_of(&key.encode(&shard_key));
        median_key(&coll, &sharded, index)?
    } else if let Some(bounds) = bounds {
        let Some((min, max)) = parse_bounds(bounds, key)? else {
            return Err(CommandError::without_code(format!(
                "shard key bounds are not valid for shard key pattern {}",
                key.display()
            )));
        };
        let Some(index) = sharded.chunks.exact(key, &min, &max) else {
            return Err(CommandError::without_code(format!(
                "no chunk found with the shard key bounds [{}, {})",
                shell(&min),
                shell(&max)
            )));
        };
        median_key(&coll, &sharded, index)?
    } else {
        let middle = match middle {
            Some(m) => to_document(m)?,
            None => Document::new(),
        };
        if !key.is_shard_key(&middle) {
            return Err(CommandError::without_code(format!(
                "new split key {} is not valid for shard key pattern {}",
                shell(&middle),
                key.display()
            )));
        }
        key.normalize(&middle)
    };
    sharding(ctx.engine)?
        .update_collection(&coll.uuid, |s| {
            let key = s.key.clone();
            s.chunks.split(&key, &split_point)
        })
        .unwrap_or(Ok(()))?;
    Ok(bson::RawDocumentBuf::new())
}

/// `moveChunk: "<ns>", find | bounds, to`: gives one chunk to another shard.
pub fn move_chunk(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(
        request,
        &[
            "find",
            "bounds",
            "to",
            "forceJumbo",
            "secondaryThrottle",
            "_secondaryThrottle",
            "waitForDelete",
            "_waitForDelete",
            "maxChunkSizeBytes",
        ],
    )?;
    let ns = fully_qualified(request)?;
    let (coll, sharded) = sharded_or_error(ctx, &ns)?;
    let fields = Fields::new("moveChunk", &request.body);
    let to = match fields.get("to") {
        Some(RawBsonRef::String(s)) => s.to_string(),
        _ => return Err(CommandError::type_mismatch("'to' must be of type String")),
    };
    if to.is_empty() {
        return Err(CommandError::new(
            72,
            "you have to specify where you want to move the chunk",
        ));
    }
    let sharding = sharding(ctx.engine)?;
    if !sharding.has_shard(&to) {
        return Err(CommandError::new(
            70,
            format!(
                "Could not move chunk in '{ns}' to shard '{to}' because that shard does not exist"
            ),
        ));
    }
    let find = fields.doc("find")?.filter(|d| !d.is_empty());
    let bounds = fields.array("bounds")?.filter(|a| !a.is_empty());
    if find.is_some() == bounds.is_some() {
        return Err(CommandError::new(
            72,
            "need to specify either a find query, or both lower and upper bounds.",
        ));
    }
    let key = &sharded.key;
    let index = if let Some(find) = find {
        let Some(shard_key) = key.equality_key(find) else {
            return Err(CommandError::new(
                72,
                format!(
                    "no shard key found in chunk query {}",
                    shell(&to_document(find)?)
                ),
            ));
        };
        sharded.chunks.index_of(&key.encode(&shard_key))
    } else {
        let parsed = match bounds {
            Some(b) => parse_bounds(b, key)?,
            None => None,
        };
        let found = parsed
            .as_ref()
            .and_then(|(min, max)| sharded.chunks.exact(key, min, max));
        match (parsed, found) {
            (_, Some(i)) => i,
            (Some((min, max)), None) => {
                return Err(CommandError::new(
                    72,
                    format!(
                        "no chunk found with the shard key bounds [{}, {})",
                        shell(&min),
                        shell(&max)
                    ),
                ));
            }
            (None, None) => {
                return Err(CommandError::new(
                    72,
                    format!(
                        "shard key bounds are not valid for shard key pattern {}",
                        key.display()
                    ),
                ));
            }
        }
    };
    let now = ctx.engine.oplog.cluster_time();
    sharding.update_collection(&coll.uuid, |s| s.chunks.migrate(index, &to, now));
    to_raw(&doc! { "millis": 0 })
}

/// `moveRange: "<ns>", min, [max], toShard`: moves `[min, max)` (by default up to the end of
/// the chunk containing `min`), splitting at `min` and `max` first when they are not bounds.
pub fn move_range(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(
        request,
        &[
            "toShard",
            "min",
            "max",
            "forceJumbo",
            "waitForDelete",
            "secondaryThrottle",
        ],
    )?;
    let ns = fully_qualified(request)?;
    let (_, sharded) = sharded_or_error(ctx, &ns)?;
    let fields = Fields::new("moveRange", &request.body);
    let Some(to) = fields.str("toShard")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'moveRange.toShard' is missing but a required field",
        ));
    };
    let sharding = sharding(ctx.engine)?;
    if !sharding.has_shard(to) {
        return Err(CommandError::new(70, format!("Shard {to} not found")));
    }
    let key = sharded.key.clone();
    let Some(min) = fields.doc("min")? else {
        return Err(CommandError::bad_value(
            "moveRange: a range without 'min' is not supported by this test server",
        ));
    };
    let min = to_document(min)?;
    let max = fields.doc("max")?.map(to_document).transpose()?;
    for bound in std::iter::once(&min).chain(max.as_ref()) {
        if !key.is_shard_key(bound) {
            return Err(CommandError::new(
                72,
                format!(
                    "Shard key bound {} is not valid for shard key pattern {}",
                    shell(bound),
                    key.display()
                ),
            ));
        }
    }
    let min = key.normalize(&min);
    let max = max.map(|m| key.normalize(&m));
    if let Some(max) = &max
        && key.encode(max) <= key.encode(&min)
    {
        return Err(CommandError::new(
            72,
            format!(
                "Invalid range: min {} must be lower than max {}",
                shell(&min),
                shell(max)
            ),
        ));
    }
    let now = ctx.engine.oplog.cluster_time();
    sharding
        .update_collection(&sharded.uuid, |s| -> Result<(), CommandError> {
            let k = s.key.clone();
            let min_key = k.encode(&min);
            let index = s.chunks.index_of(&min_key);
            if s.chunks.chunks()[index].min_key != min_key {
                s.chunks.split(&k, &min)?;
            }
            if let Some(max) = &max {
                let max_key = k.encode(max);
                let index = s.chunks.index_of(&min_key);
                if k.encode(&s.chunks.chunks()[index].max) > max_key {
                    s.chunks.split(&k, max)?;
                }
            }
            let index = s.chunks.index_of(&min_key);
            s.chunks.migrate(index, to, now);
            Ok(())
        })
        .unwrap_or(Ok(()))?;
    Ok(bson::RawDocumentBuf::new())
}
