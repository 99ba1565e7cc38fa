//! Catalog commands: `listDatabases`, `listCollections`, `listIndexes`, `create`, `drop`,
//! `dropDatabase`, `renameCollection`, `createIndexes`, `dropIndexes`, `collMod`, `collStats`,
//! `dbStats`.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{Bson, Document, RawBsonRef, RawDocumentBuf, doc};

use crate::command::args::{Fields, check_fields};
use crate::command::read::{CursorOptions, open_cursor};
use crate::command::{Ctx, Reply, Request};
use crate::engine::Engine;
use crate::engine::catalog::{Entry, View, id_index_spec, pipeline_to_bson};
use crate::engine::collection::{Collection, CollectionOptions};
use crate::engine::index::IndexSpec;
use crate::engine::namespace::{Namespace, validate_coll_name, validate_db_name};
use crate::engine::oplog::{DdlOp, OplogOp};
use crate::error::{CommandError, to_document, to_raw};
use crate::query::filter::Filter;

/// The namespace a collection-level command targets.
pub fn target(request: &Request) -> Result<Namespace, CommandError> {
    let fields = Fields::new(&request.name, &request.body);
    let coll = fields.collection()?;
    validate_db_name(&request.db)?;
    Ok(Namespace::new(request.db.clone(), coll))
}

/// `listDatabases` (admin only): name, size and emptiness of every database, plus `admin`,
/// `config` and `local`, which a real replica-set member always has.
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
    let mut names = engine.catalog.database_names();
    for internal in ["admin", "config", "local"] {
        if !names.iter().any(|n| n == internal) {
            names.push(internal.to_string());
        }
    }
    names.sort();
    let mut databases = Vec::new();
    let mut total: i64 = 0;
    for name in names {
        let (size, empty) = database_size(engine, &name);
        let mut entry = doc! { "name": name.clone() };
        if !name_only {
            entry.insert("sizeOnDisk", size);
            entry.insert("empty", empty);
        }
        if let Some(filter) = &filter
            && !filter.matches(&to_raw(
                &doc! {"name": name, "sizeOnDisk": size, "empty": empty},
            )?)?
        {
            continue;
        }
        total += size;
        databases.push(Bson::Document(entry));
    }
    let mut reply = doc! { "databases": databases };
    if !name_only {
        reply.insert("totalSize", total);
        reply.insert("totalSizeMb", total / (1024 * 1024));
    }
    to_raw(&reply)
}

/// Bytes a database occupies (documents plus indexes, rounded to 4 KiB pages like a storage
/// engine allocates them) and whether it holds no documents.
fn database_size(engine: &Engine, db: &str) -> (i64, bool) {
    let mut size = 0i64;
    let mut docs = 0usize;
    for (_, entry) in engine.catalog.entries(db) {
        if let Entry::Collection(c) = entry {
            let data = c.read();
            docs += data.count();
            size += storage_size(data.data_size()) as i64;
            size += data
                .index_sizes()
                .iter()
                .map(|(_, s)| storage_size(*s) as i64)
                .sum::<i64>();
        }
    }
    if db == "local" && engine.is_replica_set() {
        docs += engine.oplog.len();
    }
    (size.max(if docs > 0 { 4096 } else { 0 }), docs == 0)
}

/// Storage bytes for `bytes` of data: whole 4 KiB pages, at least one.
pub(crate) fn storage_size(bytes: u64) -> u64 {
    bytes.div_ceil(4096).max(1) * 4096
}

/// The `listCollections` document of one entry.
fn collection_info(name: &str, entry: &Entry) -> Document {
    match entry {
        Entry::View(v) => doc! {
            "name": name,
            "type": "view",
            "options": v.options.clone(),
            "info": { "readOnly": true },
        },
        Entry::Collection(c) => {
            let data = c.read();
            // The type from `data`: a second read lock on this thread deadlocks once a writer
            // waits between the two (std's RwLock lets waiting writers go first).
            let mut d = doc! {
                "name": name,
                "type": if data.options.timeseries { "timeseries" } else { "collection" },
                "options": data.options.options.clone(),
                "info": { "readOnly": false, "uuid": c.uuid },
            };
            if data.options.timeseries {
                // Time-series views carry no UUID of their own (it belongs to the buckets).
                d.insert("info", doc! { "readOnly": false });
            } else if !data.options.clustered {
                d.insert("idIndex", id_index_spec());
            }
            d
        }
    }
}

/// `listCollections`: collections and views with options, `info.uuid` and `idIndex`;
/// `filter`, `nameOnly` and `authorizedCollections` as mongod applies them.
pub fn list_collections(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    check_fields(
        request,
        &[
            "filter",
            "nameOnly",
            "authorizedCollections",
            "cursor",
            "includePendingDrops",
        ],
    )?;
    let fields = Fields::new("listCollections", &request.body);
    let name_only = fields.bool("nameOnly")?.unwrap_or(false);
    let filter = match fields.doc("filter")? {
        Some(f) => Some(Filter::parse(f)?),
        None => None,
    };
    let engine = ctx.engine;
    let mut infos: Vec<Document> = engine
        .catalog
        .entries(&request.db)
        .iter()
        .map(|(name, entry)| collection_info(name, entry))
        .collect();
    if request.db == "local" && engine.is_replica_set() {
        infos.push(doc! {
            "name": "oplog.rs",
            "type": "collection",
            "options": { "capped": true, "size": 1_073_741_824i64 },
            "info": { "readOnly": false, "uuid": engine.oplog_uuid },
        });
        infos.sort_by(|a, b| a.get_str("name").ok().cmp(&b.get_str("name").ok()));
    }
    // A mongos lists the `config` collections it serves from the sharding metadata.
    let views = crate::command::mongos::config_views::collection_infos(engine, &request.db);
    if !views.is_empty() {
        infos.retain(|i| {
            !views
                .iter()
                .any(|v| v.get_str("name").ok() == i.get_str("name").ok())
        });
        infos.extend(views);
        infos.sort_by(|a, b| a.get_str("name").ok().cmp(&b.get_str("name").ok()));
    }
    let mut out = VecDeque::new();
    for info in infos {
        if let Some(filter) = &filter
            && !filter.matches(&to_raw(&info)?)?
        {
            continue;
        }
        let info = if name_only {
            doc! { "name": info.get("name").cloned().unwrap_or(Bson::Null), "type": info.get("type").cloned().unwrap_or(Bson::Null) }
        } else {
            info
        };
        out.push_back(Arc::new(to_raw(&info)?));
    }
    let options = CursorOptions::from_cursor_field(&fields)?;
    open_cursor(
        ctx,
        request,
        out,
        &request.db,
        "$cmd.listCollections",
        options,
    )
}

/// `listIndexes`: the `_id` index (or the clustered index) and the secondary indexes.
pub fn list_indexes(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(
        request,
        &["cursor", "includeBuildUUIDs", "includeIndexBuildInfo"],
    )?;
    let fields = Fields::new("listIndexes", &request.body);
    let coll = match ctx.engine.catalog.get(&ns) {
        Some(Entry::Collection(c)) => c,
        Some(Entry::View(_)) => {
            return Err(CommandError::new(
                166,
                format!("Namespace {ns} is a view, not a collection"),
            ));
        }
        None => {
            return Err(CommandError::namespace_not_found(format!(
                "ns does not exist: {ns}"
            )));
        }
    };
    let specs = index_specs(&coll);
    let mut out = VecDeque::new();
    for spec in specs {
        out.push_back(Arc::new(to_raw(&spec)?));
    }
    let options = CursorOptions::from_cursor_field(&fields)?;
    open_cursor(ctx, request, out, &ns.db, &ns.coll, options)
}

/// All index specifications of a collection as `listIndexes` reports them.
pub fn index_specs(coll: &Collection) -> Vec<Document> {
    let data = coll.read();
    let mut specs = Vec::new();
    if let Some(Bson::Document(clustered)) = data.options.options.get("clusteredIndex") {
        let mut spec = doc! { "v": 2, "key": { "_id": 1 } };
        spec.insert(
            "name",
            clustered
                .get("name")
                .cloned()
                .unwrap_or(Bson::String("_id_".into())),
        );
        spec.insert("unique", true);
        spec.insert("clustered", true);
        specs.push(spec);
    } else if !data.options.timeseries {
        specs.push(id_index_spec());
    }
    specs.extend(data.indexes.iter().map(|i| i.spec.spec.clone()));
    specs
}

/// The full collation document mongod stores for a non-simple locale (ICU defaults filled in).
fn normalize_collation(given: &Document) -> Result<Option<Document>, CommandError> {
    let locale = match given.get("locale") {
        Some(Bson::String(l)) => l.clone(),
        _ => {
            return Err(CommandError::failed_to_parse(
                "BSON field 'locale' is missing but a required field",
            ));
        }
    };
    if locale == "simple" {
        return Ok(None);
    }
    let mut out = doc! {
        "locale": locale,
        "caseLevel": false,
        "caseFirst": "off",
        "strength": 3,
        "numericOrdering": false,
        "alternate": "non-ignorable",
        "maxVariable": "punct",
        "normalization": false,
        "backwards": false,
        "version": "57.1",
    };
    for (k, v) in given {
        out.insert(k.clone(), v.clone());
    }
    Ok(Some(out))
}

/// Options of `create` we store and report; anything else is refused like mongod's IDL does.
const CREATE_OPTIONS: &[&str] = &[
    "capped",
    "size",
    "max",
    "validator",
    "validationLevel",
    "validationAction",
    "collation",
    "clusteredIndex",
    "viewOn",
    "pipeline",
    "timeseries",
    "expireAfterSeconds",
    "changeStreamPreAndPostImages",
    "storageEngine",
    "indexOptionDefaults",
    "idIndex",
    "autoIndexId",
    "flags",
    "temp",
];

/// Generic arguments that may appear in any command.
pub fn is_generic_argument(key: &str) -> bool {
    key.starts_with('$')
        || matches!(
            key,
            "lsid"
                | "txnNumber"
                | "startTransaction"
                | "autocommit"
                | "readConcern"
                | "writeConcern"
                | "maxTimeMS"
                | "comment"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
                | "recoveryToken"
                | "bypassDocumentValidation"
        )
}

/// `create`: a collection (capped, clustered, time-series, with validator, collation,
/// pre/post images) or a view (`viewOn` + `pipeline`).
pub fn create(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    validate_coll_name(&ns.db, &ns.coll)?;
    let body = to_document(&request.body)?;
    let mut options = Document::new();
    for (k, v) in body.iter().skip(1) {
        if is_generic_argument(k) {
            continue;
        }
        if k == "encryptedFields" {
            return Err(CommandError::new(
                6346402,
                "Encrypted collections are not supported by this test server",
            ));
        }
        if !CREATE_OPTIONS.contains(&k.as_str()) {
            return Err(CommandError::unknown_field("create", k));
        }
        options.insert(k.clone(), v.clone());
    }
    let engine = ctx.engine;
    let (entry, kind, id_index) = if options.contains_key("viewOn") {
        let view = parse_view(&ns, &options)?;
        (Entry::View(Arc::new(view)), "view", None)
    } else {
        let normalized = normalize_create_options(options)?;
        let parsed = CollectionOptions::from_document(normalized)?;
        let kind = if parsed.timeseries {
            "timeseries"
        } else {
            "collection"
        };
        let id_index = (!parsed.clustered && !parsed.timeseries).then(id_index_spec);
        (
            Entry::Collection(Arc::new(Collection::new(parsed))),
            kind,
            id_index,
        )
    };
    let mut dbs = engine.catalog.write();
    if let Some(existing) = dbs.get(&ns.db).and_then(|d| d.entries.get(&ns.coll)) {
        // mongod 7.0 treats a create with the options of the existing collection as a no-op.
        let same = match (existing, &entry) {
            (Entry::Collection(a), Entry::Collection(b)) => {
                a.read().options.options == b.read().options.options
            }
            (Entry::View(a), Entry::View(b)) => a == b,
            _ => false,
        };
        if same {
            return Ok(RawDocumentBuf::new());
        }
        return Err(CommandError::new(
            48,
            format!("Collection {ns} already exists."),
        ));
    }
    let (uuid, options_doc) = match &entry {
        Entry::Collection(c) => (c.uuid, c.read().options.options.clone()),
        Entry::View(v) => (bson::Uuid::new(), v.options.clone()),
    };
    let ts = engine.oplog.append(
        vec![OplogOp::Ddl(DdlOp::Create {
            ns: ns.clone(),
            uuid,
            options: options_doc,
            id_index,
            kind,
        })],
        None,
    );
    dbs.entry(ns.db.clone())
        .or_default()
        .entries
        .insert(ns.coll.clone(), entry);
    ctx.op_time = Some(ts);
    Ok(RawDocumentBuf::new())
}

fn parse_view(ns: &Namespace, options: &Document) -> Result<View, CommandError> {
    let view_on = match options.get("viewOn") {
        Some(Bson::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(CommandError::bad_value(
                "'viewOn' must be a non-empty string",
            ));
        }
    };
    let pipeline = match options.get("pipeline") {
        Some(Bson::Array(stages)) => stages
            .iter()
            .map(|s| match s {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(CommandError::type_mismatch(
                    "'pipeline' must be an array of documents",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
        Some(_) => {
            return Err(CommandError::type_mismatch("'pipeline' must be an array"));
        }
    };
    for (k, _) in options {
        if !matches!(k.as_str(), "viewOn" | "pipeline" | "collation") {
            return Err(CommandError::new(
                72,
                format!("option not supported on a view: {k}"),
            ));
        }
    }
    // Validate the pipeline now, as mongod does at view creation.
    let raw = to_raw(&doc! { "p": pipeline_to_bson(&pipeline) })?;
    if let Ok(Some(RawBsonRef::Array(stages))) = raw.get("p") {
        crate::query::pipeline::Pipeline::parse(stages, &crate::query::expr::Variables::new())?;
    }
    let mut stored = doc! { "viewOn": view_on.clone(), "pipeline": pipeline_to_bson(&pipeline) };
    if let Some(Bson::Document(c)) = options.get("collation")
        && let Some(c) = normalize_collation(c)?
    {
        stored.insert("collation", c);
    }
    if view_on == ns.coll {
        return Err(CommandError::new(
            5,
            format!("View cycle detected: [{ns} -> {ns}]"),
        ));
    }
    Ok(View {
        view_on,
        pipeline,
        options: stored,
    })
}

/// Validates and normalizes collection options as mongod stores them.
fn normalize_create_options(mut options: Document) -> Result<Document, CommandError> {
    if let Some(Bson::Document(c)) = options.get("collation").cloned() {
        match normalize_collation(&c)? {
            Some(full) => {
                options.insert("collation", full);
            }
            None => {
                options.remove("collation");
            }
        }
    }
    if matches!(options.get("capped"), Some(Bson::Boolean(true))) {
        let size = match options.get("size") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(d)) => *d as i64,
            _ => {
                return Err(CommandError::new(
                    72,
                    "the 'size' field is required when 'capped' is true",
                ));
            }
        };
        // mongod refuses sizes of 1 PB and more.
        if size <= 0 || size >= 1_i64 << 50 {
            return Err(CommandError::bad_value(
                "Capped collection size must be greater than 0 and less than 1 PB",
            ));
        }
        // mongod rounds the capped size up to a multiple of 256 bytes.
        let rounded = (size + 255) / 256 * 256;
        options.insert("size", rounded);
    }
    // Without `capped: true` mongod keeps `size`/`max` as given and ignores them; so do we.
    if let Some(spec) = options.get("clusteredIndex").cloned() {
        let Bson::Document(spec) = spec else {
            return Err(CommandError::bad_value(
                "The 'clusteredIndex' option must be a document",
            ));
        };
        if !matches!(spec.get("key"), Some(Bson::Document(k)) if k == &doc! {"_id": 1}) {
            return Err(CommandError::new(
                6243700,
                "The clusteredIndex option is only supported for key: {_id: 1}",
            ));
        }
        if !matches!(spec.get("unique"), Some(Bson::Boolean(true))) {
            return Err(CommandError::bad_value(
                "The 'clusteredIndex' option must have 'unique: true'",
            ));
        }
        let mut full = doc! { "v": 2, "key": { "_id": 1 } };
        full.insert(
            "name",
            spec.get("name")
                .cloned()
                .unwrap_or(Bson::String("_id_".into())),
        );
        full.insert("unique", true);
        options.insert("clusteredIndex", full);
    }
    if let Some(ts) = options.get("timeseries").cloned() {
        let Bson::Document(ts) = ts else {
            return Err(CommandError::type_mismatch(
                "'timeseries' must be a document",
            ));
        };
        if !matches!(ts.get("timeField"), Some(Bson::String(_))) {
            return Err(CommandError::new(
                40414,
                "BSON field 'create.timeseries.timeField' is missing but a required field",
            ));
        }
        let mut full = Document::new();
        full.insert(
            "timeField",
            ts.get("timeField").cloned().unwrap_or(Bson::Null),
        );
        if let Some(meta) = ts.get("metaField") {
            full.insert("metaField", meta.clone());
        }
        if let Some(span) = ts.get("bucketMaxSpanSeconds") {
            full.insert(
                "bucketRoundingSeconds",
                ts.get("bucketRoundingSeconds")
                    .cloned()
                    .unwrap_or(span.clone()),
            );
            full.insert("bucketMaxSpanSeconds", span.clone());
        } else {
            let granularity = match ts.get("granularity") {
                Some(Bson::String(g)) => g.clone(),
                _ => "seconds".to_string(),
            };
            let span = match granularity.as_str() {
                "seconds" => 3600,
                "minutes" => 86400,
                "hours" => 2_592_000,
                other => {
                    return Err(CommandError::bad_value(format!(
                        "Enumeration value '{other}' for field 'create.timeseries.granularity' is not a valid value."
                    )));
                }
            };
            full.insert("granularity", granularity);
            full.insert("bucketMaxSpanSeconds", span);
        }
        options.insert("timeseries", full);
    } else if options.contains_key("expireAfterSeconds") && !options.contains_key("clusteredIndex")
    {
        return Err(CommandError::new(
            72,
            "'expireAfterSeconds' is only supported on time-series and clustered collections",
        ));
    }
    Ok(options)
}

/// `drop`: removes a collection or view. mongod 7.0 answers a drop of a missing namespace with
/// success (drop became idempotent in 7.0).
pub fn drop(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["collectionUUID"])?;
    let engine = ctx.engine;
    let mut dbs = engine.catalog.write();
    let Some(db) = dbs.get_mut(&ns.db) else {
        return Ok(RawDocumentBuf::new());
    };
    let Some(entry) = db.entries.remove(&ns.coll) else {
        return Ok(RawDocumentBuf::new());
    };
    if db.entries.is_empty() {
        dbs.remove(&ns.db);
    }
    let reply = match &entry {
        Entry::Collection(c) => {
            let mut data = c.write();
            data.dropped = true;
            let n = data.indexes.len() as i32 + i32::from(!data.options.timeseries);
            let ts = engine.oplog.append(
                vec![OplogOp::Ddl(DdlOp::Drop {
                    ns: ns.clone(),
                    uuid: c.uuid,
                    view: false,
                })],
                None,
            );
            ctx.op_time = Some(ts);
            doc! { "nIndexesWas": n, "ns": ns.to_string() }
        }
        Entry::View(_) => {
            let ts = engine.oplog.append(
                vec![OplogOp::Ddl(DdlOp::Drop {
                    ns: ns.clone(),
                    uuid: bson::Uuid::new(),
                    view: true,
                })],
                None,
            );
            ctx.op_time = Some(ts);
            doc! { "ns": ns.to_string() }
        }
    };
    to_raw(&reply)
}

/// `dropDatabase`: drops every collection (one `drop` oplog entry each), then the database.
pub fn drop_database(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    validate_db_name(&request.db)?;
    if matches!(request.db.as_str(), "admin" | "config" | "local") {
        return Err(CommandError::new(
            20,
            format!("Dropping the '{}' database is prohibited.", request.db),
        ));
    }
    let engine = ctx.engine;
    let mut dbs = engine.catalog.write();
    let Some(db) = dbs.remove(&request.db) else {
        return Ok(RawDocumentBuf::new());
    };
    for (name, entry) in db.entries {
        let uuid = match &entry {
            Entry::Collection(c) => {
                c.write().dropped = true;
                c.uuid
            }
            Entry::View(_) => continue,
        };
        engine.oplog.append(
            vec![OplogOp::Ddl(DdlOp::Drop {
                ns: Namespace::new(request.db.clone(), name),
                uuid,
                view: false,
            })],
            None,
        );
    }
    let ts = engine.oplog.append(
        vec![OplogOp::Ddl(DdlOp::DropDatabase {
            db: request.db.clone(),
        })],
        None,
    );
    ctx.op_time = Some(ts);
    to_raw(&doc! { "dropped": request.db.clone() })
}

/// `renameCollection` (admin only), within or across databases, with `dropTarget`.
pub fn rename_collection(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    if request.db != "admin" {
        return Err(CommandError::new(
            13,
            "renameCollection may only be run against the admin database.",
        ));
    }
    check_fields(request, &["to", "dropTarget", "stayTemp", "collectionUUID"])?;
    let fields = Fields::new("renameCollection", &request.body);
    let from = Namespace::parse(fields.str("renameCollection")?.unwrap_or_default())?;
    let to = Namespace::parse(fields.str("to")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'renameCollection.to' is missing but a required field",
        )
    })?)?;
    let drop_target = fields.bool("dropTarget")?.unwrap_or(false);
    validate_db_name(&to.db)?;
    validate_coll_name(&to.db, &to.coll)?;
    if from == to {
        return Err(CommandError::new(20, "Can't rename a collection to itself"));
    }
    let engine = ctx.engine;
    let mut dbs = engine.catalog.write();
    let source = match dbs.get(&from.db).and_then(|d| d.entries.get(&from.coll)) {
        Some(Entry::Collection(c)) => Arc::clone(c),
        Some(Entry::View(_)) => {
            return Err(CommandError::new(
                166,
                format!("cannot rename view: {from}"),
            ));
        }
        None => {
            return Err(CommandError::namespace_not_found(format!(
                "Source collection {from} does not exist"
            )));
        }
    };
    let mut dropped_target = None;
    if let Some(existing) = dbs.get(&to.db).and_then(|d| d.entries.get(&to.coll)) {
        if !drop_target {
            return Err(CommandError::new(48, "target namespace exists"));
        }
        if let Entry::Collection(c) = existing {
            c.write().dropped = true;
            dropped_target = Some(c.uuid);
        }
    }
    // Within a database the collection keeps its UUID; across databases mongod copies it
    // into a new collection with a new UUID.
    let moved = if from.db == to.db {
        source.write().epoch += 1;
        Arc::clone(&source)
    } else {
        let mut old = source.write();
        let fresh = Arc::new(Collection::new(old.options.clone()));
        {
            let mut new = fresh.write();
            let docs: Vec<_> = old.documents().map(|(_, d)| (**d).clone()).collect();
            for d in docs {
                new.insert(&to.to_string(), d)?;
            }
            let specs: Vec<_> = old.indexes.iter().map(|i| i.spec.clone()).collect();
            for spec in specs {
                new.build_index(&to.to_string(), spec)?;
            }
        }
        old.dropped = true;
        fresh
    };
    let ts = engine.oplog.append(
        vec![OplogOp::Ddl(DdlOp::Rename {
            from: from.clone(),
            to: to.clone(),
            uuid: source.uuid,
            drop_target: dropped_target,
        })],
        None,
    );
    if let Some(db) = dbs.get_mut(&from.db) {
        db.entries.remove(&from.coll);
        if db.entries.is_empty() {
            dbs.remove(&from.db);
        }
    }
    dbs.entry(to.db.clone())
        .or_default()
        .entries
        .insert(to.coll.clone(), Entry::Collection(moved));
    ctx.op_time = Some(ts);
    Ok(RawDocumentBuf::new())
}

/// `createIndexes`: builds new indexes, recognising existing ones and name/key conflicts
/// (85 `IndexOptionsConflict`, 86 `IndexKeySpecsConflict`) as mongod does.
pub fn create_indexes(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    validate_coll_name(&ns.db, &ns.coll)?;
    check_fields(request, &["indexes", "commitQuorum"])?;
    let fields = Fields::new("createIndexes", &request.body);
    let Some(list) = fields.array("indexes")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'createIndexes.indexes' is missing but a required field",
        ));
    };
    let mut specs = Vec::new();
    for item in list {
        match item {
            Ok(RawBsonRef::Document(d)) => specs.push(IndexSpec::parse(&to_document(d)?)?),
            _ => {
                return Err(CommandError::type_mismatch(
                    "BSON field 'createIndexes.indexes' must be an array of documents",
                ));
            }
        }
    }
    if specs.is_empty() {
        return Err(CommandError::bad_value(
            "Must specify at least one index to create",
        ));
    }
    let engine = ctx.engine;
    let existed = engine.catalog.get(&ns).is_some();
    let coll = engine.catalog.collection_or_create(&ns, &engine.oplog)?;
    let mut data = coll.write();
    if data.dropped {
        return Err(CommandError::new(
            96,
            format!("collection {ns} was dropped while creating indexes"),
        ));
    }
    let before = data.indexes.len() as i32 + i32::from(!data.options.timeseries);
    let mut created = Vec::new();
    for spec in specs {
        let is_id = spec.key == doc! {"_id": 1};
        if is_id || spec.name == "_id_" {
            if is_id && (spec.name == "_id_" || data.options.clustered) && !spec.unique {
                continue;
            }
            if is_id && spec.name == "_id_" {
                continue;
            }
            return Err(CommandError::new(
                if spec.name == "_id_" { 86 } else { 85 },
                format!(
                    "An existing index has the same name as the requested index or the same key pattern. Requested index: {}, existing index: {}",
                    spec.spec,
                    id_index_spec()
                ),
            ));
        }
        if let Some(existing) = data.indexes.iter().find(|i| i.spec.name == spec.name) {
            if existing.spec.key != spec.key {
                return Err(CommandError::new(
                    86,
                    format!(
                        "An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: {}, existing index: {}",
                        spec.spec, existing.spec.spec
                    ),
                ));
            }
            if !existing.spec.same_options(&spec) {
                return Err(CommandError::new(
                    85,
                    format!(
                        "An equivalent index already exists with the same name but different options. Requested index: {}, existing index: {}",
                        spec.spec, existing.spec.spec
                    ),
                ));
            }
            continue;
        }
        if let Some(existing) = data.indexes.iter().find(|i| i.spec.key == spec.key)
            && (existing.spec.same_options(&spec) || existing.spec.unique == spec.unique)
        {
            return Err(CommandError::new(
                85,
                format!(
                    "Index already exists with a different name: {}",
                    existing.spec.name
                ),
            ));
        }
        created.push(spec.spec.clone());
        data.build_index(&ns.to_string(), spec)?;
    }
    let after = data.indexes.len() as i32 + i32::from(!data.options.timeseries);
    let mut reply = doc! {
        "numIndexesBefore": before,
        "numIndexesAfter": after,
        "createdCollectionAutomatically": !existed,
    };
    if created.is_empty() {
        reply.insert("note", "all indexes already exist");
    } else {
        let ts = engine.oplog.append(
            vec![OplogOp::Ddl(DdlOp::CreateIndexes {
                ns: ns.clone(),
                uuid: coll.uuid,
                indexes: created,
            })],
            None,
        );
        ctx.op_time = Some(ts);
    }
    to_raw(&reply)
}

/// `dropIndexes`: `"*"`, a name, a key pattern, or a list of names.
pub fn drop_indexes(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["index"])?;
    let fields = Fields::new(&request.name, &request.body);
    let engine = ctx.engine;
    let coll = match engine.catalog.get(&ns) {
        Some(Entry::Collection(c)) => c,
        Some(Entry::View(_)) => {
            return Err(CommandError::new(
                166,
                format!("Namespace {ns} is a view, not a collection"),
            ));
        }
        None => {
            return Err(CommandError::namespace_not_found(format!(
                "ns not found {ns}"
            )));
        }
    };
    let mut data = coll.write();
    let was = data.indexes.len() as i32 + 1;
    let mut targets: Vec<usize> = Vec::new();
    let mut message = None;
    match fields.get("index") {
        Some(RawBsonRef::String("*")) => {
            targets = (0..data.indexes.len()).collect();
            message = Some("non-_id indexes dropped for collection");
        }
        Some(RawBsonRef::String(name)) => {
            if name == "_id_" {
                return Err(CommandError::new(72, "cannot drop _id index"));
            }
            match data.indexes.iter().position(|i| i.spec.name == name) {
                Some(i) => targets.push(i),
                None => {
                    return Err(CommandError::new(
                        27,
                        format!("index not found with name [{name}]"),
                    ));
                }
            }
        }
        Some(RawBsonRef::Document(key)) => {
            let key = to_document(key)?;
            if key == doc! {"_id": 1} {
                return Err(CommandError::new(72, "cannot drop _id index"));
            }
            let matching: Vec<usize> = data
                .indexes
                .iter()
                .enumerate()
                .filter(|(_, i)| i.spec.key == key)
                .map(|(n, _)| n)
                .collect();
            match matching.len() {
                0 => {
                    return Err(CommandError::new(
                        27,
                        format!(
                            "can't find index with key: {}",
                            crate::engine::index::shell_format_document(&key)
                        ),
                    ));
                }
                1 => targets = matching,
                _ => {
                    return Err(CommandError::new(
                        27,
                        "index specification matches more than one index; drop it by name",
                    ));
                }
            }
        }
        Some(RawBsonRef::Array(names)) => {
            for name in names {
                let Ok(RawBsonRef::String(name)) = name else {
                    return Err(CommandError::type_mismatch(
                        "dropIndexes 'index' array must contain index names",
                    ));
                };
                if name == "_id_" {
                    return Err(CommandError::new(72, "cannot drop _id index"));
                }
                match data.indexes.iter().position(|i| i.spec.name == name) {
                    Some(i) => targets.push(i),
                    None => {
                        return Err(CommandError::new(
                            27,
                            format!("index not found with name [{name}]"),
                        ));
                    }
                }
            }
        }
        _ => {
            return Err(CommandError::new(
                40414,
                "BSON field 'dropIndexes.index' is missing but a required field",
            ));
        }
    }
    targets.sort_unstable();
    targets.dedup();
    let mut dropped = Vec::new();
    for i in targets.into_iter().rev() {
        dropped.push(data.indexes.remove(i).spec.spec);
    }
    dropped.reverse();
    if !dropped.is_empty() {
        let ts = engine.oplog.append(
            vec![OplogOp::Ddl(DdlOp::DropIndexes {
                ns: ns.clone(),
                uuid: coll.uuid,
                indexes: dropped,
            })],
            None,
        );
        ctx.op_time = Some(ts);
    }
    let mut reply = doc! { "nIndexesWas": was };
    if let Some(m) = message {
        reply.insert("msg", m);
    }
    to_raw(&reply)
}

/// `collMod`: validator, validation level/action, pre/post images, index `hidden` and
/// `expireAfterSeconds`, view definitions.
pub fn coll_mod(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    let body = to_document(&request.body)?;
    let engine = ctx.engine;
    let entry = engine
        .catalog
        .get(&ns)
        .ok_or_else(|| CommandError::namespace_not_found(format!("ns does not exist: {ns}")))?;
    let mut description = Document::new();
    let mut reply = Document::new();
    let coll = match entry {
        Entry::View(view) => {
            let mut options = view.options.clone();
            for (k, v) in body.iter().skip(1) {
                if is_generic_argument(k) {
                    continue;
                }
                if !matches!(k.as_str(), "viewOn" | "pipeline") {
                    return Err(CommandError::new(
                        72,
                        format!("option not supported on a view: {k}"),
                    ));
                }
                options.insert(k.clone(), v.clone());
                description.insert(k.clone(), v.clone());
            }
            let new_view = parse_view(&ns, &options)?;
            let mut dbs = engine.catalog.write();
            let state_before = view.options.clone();
            let ts = engine.oplog.append(
                vec![OplogOp::Ddl(DdlOp::Modify {
                    ns: ns.clone(),
                    uuid: bson::Uuid::new(),
                    description,
                    state_before,
                })],
                None,
            );
            if let Some(db) = dbs.get_mut(&ns.db) {
                db.entries
                    .insert(ns.coll.clone(), Entry::View(Arc::new(new_view)));
            }
            ctx.op_time = Some(ts);
            return Ok(RawDocumentBuf::new());
        }
        Entry::Collection(c) => c,
    };
    let mut data = coll.write();
    let state_before = data.options.options.clone();
    let mut options = data.options.options.clone();
    for (k, v) in body.iter().skip(1) {
        if is_generic_argument(k) {
            continue;
        }
        match k.as_str() {
            "validator"
            | "validationLevel"
            | "validationAction"
            | "changeStreamPreAndPostImages" => {
                options.insert(k.clone(), v.clone());
                description.insert(k.clone(), v.clone());
            }
            "expireAfterSeconds" => {
                options.insert(k.clone(), v.clone());
                description.insert(k.clone(), v.clone());
            }
            "cappedSize" | "cappedMax" => {
                if data.options.capped.is_none() {
                    return Err(CommandError::new(
                        72,
                        format!("{k} is only supported on capped collections"),
                    ));
                }
                let key = if k == "cappedSize" { "size" } else { "max" };
                options.insert(key, v.clone());
                description.insert(k.clone(), v.clone());
            }
            "index" => {
                let Bson::Document(spec) = v else {
                    return Err(CommandError::type_mismatch("'index' must be a document"));
                };
                let position = if let Some(Bson::String(name)) = spec.get("name") {
                    data.indexes.iter().position(|i| &i.spec.name == name)
                } else if let Some(Bson::Document(key)) = spec.get("keyPattern") {
                    data.indexes.iter().position(|i| &i.spec.key == key)
                } else {
                    return Err(CommandError::new(
                        72,
                        "must specify either index name or key pattern",
                    ));
                };
                let Some(position) = position else {
                    return Err(CommandError::new(
                        27,
                        format!("cannot find index {spec} for ns {ns}"),
                    ));
                };
                // Documents sharing a key, by `_id` (what blocks a conversion to unique).
                let violations: Vec<Bson> = data.indexes[position]
                    .duplicate_groups()
                    .iter()
                    .map(|group| {
                        let ids: Vec<Bson> = group
                            .iter()
                            .filter_map(|rid| data.get(*rid))
                            .filter_map(|d| d.get("_id").ok().flatten())
                            .filter_map(|v| crate::error::to_bson(v).ok())
                            .collect();
                        Bson::Document(doc! {"ids": ids})
                    })
                    .collect();
                let index = &mut data.indexes[position];
                for (option, value) in spec {
                    match option.as_str() {
                        "name" | "keyPattern" => {}
                        "hidden" | "expireAfterSeconds" => {
                            let old = index.spec.spec.get(option).cloned();
                            if let Some(old) = old {
                                reply.insert(format!("{option}_old"), old);
                            } else if option == "hidden" {
                                reply.insert("hidden_old", false);
                            }
                            reply.insert(format!("{option}_new"), value.clone());
                            index.spec.spec.insert(option.clone(), value.clone());
                        }
                        "prepareUnique" => {
                            let on = matches!(value, Bson::Boolean(true));
                            reply.insert("prepareUnique_old", index.spec.prepare_unique);
                            reply.insert("prepareUnique_new", on);
                            index.spec.prepare_unique = on;
                            index.spec.spec.insert("prepareUnique", on);
                        }
                        "unique" => {
                            if !matches!(value, Bson::Boolean(true)) {
                                return Err(CommandError::bad_value(
                                    "collMod can only convert an index to unique, not back",
                                ));
                            }
                            if !index.spec.prepare_unique {
                                return Err(CommandError::new(
                                    6_724_100,
                                    "Cannot make index unique with 'unique: true' unless 'prepareUnique' is set to true",
                                ));
                            }
                            if !violations.is_empty() {
                                return Err(CommandError::new(
                                    359,
                                    "Cannot convert the index to unique. Please resolve conflicting documents before running collMod again.",
                                )
                                .with_extra("violations", violations));
                            }
                            index.spec.unique = true;
                            index.spec.prepare_unique = false;
                            index.spec.spec.insert("unique", true);
                            index.spec.spec.remove("prepareUnique");
                            reply.insert("unique_new", true);
                        }
                        other => {
                            return Err(CommandError::new(
                                72,
                                format!(
                                    "collMod index option '{other}' is not supported by this test server"
                                ),
                            ));
                        }
                    }
                }
                description.insert("index", spec.clone());
            }
            other => return Err(CommandError::unknown_field("collMod", other)),
        }
    }
    data.options = CollectionOptions::from_document(options)?;
    let ts = engine.oplog.append(
        vec![OplogOp::Ddl(DdlOp::Modify {
            ns: ns.clone(),
            uuid: coll.uuid,
            description,
            state_before: doc! { "collectionOptions": state_before },
        })],
        None,
    );
    ctx.op_time = Some(ts);
    to_raw(&reply)
}

/// The `collStats`/`$collStats.storageStats` numbers of a collection, scaled.
pub fn storage_stats(ns: &Namespace, coll: &Collection, scale: i64) -> Document {
    let data = coll.read();
    stats_document(ns, &data, data.count() as u64, data.data_size(), scale)
}

/// The `collStats` numbers of `count` documents of `bytes` bytes of a collection (all of it,
/// or a shard's part through a mongos), scaled. Index sizes are the collection's, split in
/// proportion to the documents.
pub(crate) fn stats_document(
    ns: &Namespace,
    data: &crate::engine::collection::CollectionData,
    count: u64,
    bytes: u64,
    scale: i64,
) -> Document {
    let scale = scale.max(1);
    let total = data.count() as u64;
    let storage = storage_size(bytes) as i64;
    let mut sizes = Document::new();
    let mut total_index = 0i64;
    let index_sizes = data.index_sizes();
    for (name, size) in &index_sizes {
        let share = if total > 0 {
            (u128::from(*size) * u128::from(count) / u128::from(total)) as u64
        } else {
            0
        };
        let s = storage_size(share) as i64;
        total_index += s;
        sizes.insert(name.clone(), s / scale);
    }
    let count = count as i64;
    let bytes = bytes as i64;
    let mut stats = doc! {
        "ns": ns.to_string(),
        "size": bytes / scale,
        "count": count,
        "avgObjSize": if count > 0 { bytes / count } else { 0 },
        "numOrphanDocs": 0,
        "storageSize": storage / scale,
        "freeStorageSize": 0,
        "capped": data.options.capped.is_some(),
        "nindexes": index_sizes.len() as i32,
        "indexBuilds": [],
        "totalIndexSize": total_index / scale,
        "totalSize": (storage + total_index) / scale,
        "indexSizes": sizes,
        "scaleFactor": scale as i32,
    };
    if let Some((max_size, max)) = data.options.capped {
        stats.insert("maxSize", max_size as i64 / scale);
        stats.insert("max", max.map_or(0, |m| m as i64));
    }
    stats
}

/// `collStats` (deprecated in 6.2 but still served by 7.0).
pub fn coll_stats(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["scale", "verbose"])?;
    let fields = Fields::new("collStats", &request.body);
    let scale = fields.i64("scale")?.unwrap_or(1);
    if scale < 1 {
        return Err(CommandError::bad_value("scale has to be >= 1"));
    }
    if crate::engine::oplog_view::serves(ctx.engine, &ns) {
        return to_raw(&crate::engine::oplog_view::storage_stats(
            ctx.engine, scale,
        )?);
    }
    let coll = ctx.engine.catalog.collection(&ns).ok_or_else(|| {
        CommandError::namespace_not_found(format!("Collection [{ns}] not found."))
    })?;
    to_raw(&storage_stats(&ns, &coll, scale))
}

/// `dbStats`.
pub fn db_stats(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    check_fields(request, &["scale", "freeStorage"])?;
    let fields = Fields::new("dbStats", &request.body);
    let scale = fields.i64("scale")?.unwrap_or(1).max(1);
    let mut collections = 0i32;
    let mut views = 0i32;
    let mut objects = 0i64;
    let mut data_size = 0i64;
    let mut storage = 0i64;
    let mut indexes = 0i32;
    let mut index_size = 0i64;
    for (_, entry) in ctx.engine.catalog.entries(&request.db) {
        match entry {
            Entry::View(_) => views += 1,
            Entry::Collection(c) => {
                collections += 1;
                let data = c.read();
                objects += data.count() as i64;
                data_size += data.data_size() as i64;
                storage += storage_size(data.data_size()) as i64;
                for (_, s) in data.index_sizes() {
                    indexes += 1;
                    index_size += storage_size(s) as i64;
                }
            }
        }
    }
    to_raw(&doc! {
        "db": request.db.clone(),
        "collections": collections,
        "views": views,
        "objects": objects,
        "avgObjSize": if objects > 0 { data_size as f64 / objects as f64 } else { 0.0 },
        "dataSize": data_size / scale,
        "storageSize": storage / scale,
        "indexes": indexes,
        "indexSize": index_size / scale,
        "totalSize": (storage + index_size) / scale,
        "scaleFactor": scale,
        "fsUsedSize": 0i64,
        "fsTotalSize": 0i64,
    })
}
