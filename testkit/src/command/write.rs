//! Write commands: `insert`, `update`, `delete`, `findAndModify`.
//!
//! Every document change is committed to the oplog while the collection's write lock is held,
//! one entry per document (as mongod logs them), so change streams see the writes in the order
//! readers do. Document-level failures become `writeErrors` (with `ok: 1`); ordered batches stop
//! at the first one. `findAndModify` reports failures as command errors instead.

use std::sync::Arc;

use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};

use crate::command::args::{Fields, array_or_sequence, check_fields, refuse_collation, truthy};
use crate::command::catalog::target;
use crate::command::{Ctx, Reply, Request};
use crate::engine::catalog::Entry;
use crate::engine::collection::{Collection, CollectionData, prepare_for_insert};
use crate::engine::namespace::{Namespace, validate_coll_name};
use crate::engine::oplog::OplogOp;
use crate::engine::scan::{Match, matching};
use crate::engine::transaction::Store;
use crate::error::{CommandError, WriteError, to_bson, to_raw};
use crate::query::expr::Variables;
use crate::query::filter::Filter;
use crate::query::projection::Projection;
use crate::query::sort::SortSpec;
use crate::query::update::Update;

/// mongod's limit on statements per write command.
const MAX_WRITE_BATCH: usize = 100_000;

fn view_error(ns: &Namespace) -> CommandError {
    CommandError::new(166, format!("Namespace {ns} is a view, not a collection"))
}

/// Runs `f` with the collection's write lock, creating the collection first when `create` is
/// set. A collection dropped or renamed between lookup and lock is looked up again.
fn with_collection<T>(
    store: Store<'_>,
    ns: &Namespace,
    create: bool,
    mut f: impl FnMut(&Collection, &mut CollectionData) -> Result<T, CommandError>,
) -> Result<Option<T>, CommandError> {
    for _ in 0..8 {
        let coll = match store.get(ns) {
            Some(Entry::Collection(c)) => c,
            Some(Entry::View(_)) => return Err(view_error(ns)),
            None if create => store.get_or_create(ns)?,
            None => return Ok(None),
        };
        let mut data = coll.write();
        if data.dropped {
            continue;
        }
        return f(&coll, &mut data).map(Some);
    }
    Err(CommandError::new(
        112,
        format!("the collection {ns} kept changing; retry the write"),
    ))
}

/// On a mongos, an inserted document of a sharded collection must have a valid shard key.
fn check_shard_key_insert(
    store: Store<'_>,
    coll: &Collection,
    doc: &RawDocument,
) -> Result<(), CommandError> {
    match &store.engine.sharding {
        Some(sharding) => sharding.check_insert(&coll.uuid, doc),
        None => Ok(()),
    }
}

fn check_batch(len: usize) -> Result<(), CommandError> {
    if len == 0 || len > MAX_WRITE_BATCH {
        return Err(CommandError::new(
            16,
            format!(
                "Write batch sizes must be between 1 and {MAX_WRITE_BATCH}. Got {len} operations."
            ),
        ));
    }
    Ok(())
}

fn ordered(request: &Request) -> Result<bool, CommandError> {
    Ok(Fields::new(&request.name, &request.body)
        .bool("ordered")?
        .unwrap_or(true))
}

fn write_reply(n: i64, extra: Document, errors: &[WriteError]) -> Reply {
    let mut reply = doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) };
    for (k, v) in extra {
        reply.insert(k, v);
    }
    if !errors.is_empty() {
        reply.insert(
            "writeErrors",
            errors
                .iter()
                .map(|e| Bson::Document(e.to_document()))
                .collect::<Vec<_>>(),
        );
    }
    to_raw(&reply)
}

/// The variables of a command's `let`.
fn command_variables(request: &Request) -> Result<Variables, CommandError> {
    let fields = Fields::new(&request.name, &request.body);
    let vars = Variables::new();
    Ok(match fields.doc("let")? {
        Some(l) => vars.with_let(l)?,
        None => vars,
    })
}

/// `insert`.
pub fn insert(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    validate_coll_name(&ns.db, &ns.coll)?;
    check_fields(request, &["documents", "ordered"])?;
    let docs = array_or_sequence(request, "documents")?;
    check_batch(docs.len())?;
    let ordered = ordered(request)?;
    let bypass = Fields::new("insert", &request.body)
        .bool("bypassDocumentValidation")?
        .unwrap_or(false);
    let store = ctx.store();
    let ns_string = ns.to_string();
    // Documents are checked (and given an `_id`) before the collection is locked, so that
    // concurrent inserts into one collection share only the index and oplog work.
    let prepared: Vec<Result<RawDocumentBuf, CommandError>> =
        docs.into_iter().map(prepare_for_insert).collect();
    let mut docs = prepared.into_iter().enumerate();
    let mut n = 0i64;
    let mut errors = Vec::new();
    let mut last_ts = None;
    with_collection(store, &ns, true, |coll, data| {
        let saved_validator = bypass.then(|| data.options.validator.take());
        for (index, doc) in docs.by_ref() {
            let result = doc
                .and_then(|d| check_shard_key_insert(store, coll, &d).map(|()| d))
                .and_then(|d| data.insert(&ns_string, d));
            match result {
                Ok(stored) => {
                    n += 1;
                    last_ts = Some(store.log(OplogOp::Insert {
                        ns: ns.clone(),
                        uuid: coll.uuid,
                        doc: stored,
                    }));
                }
                Err(error) => {
                    errors.push(WriteError { index, error });
                    if ordered {
                        break;
                    }
                }
            }
        }
        if let Some(v) = saved_validator {
            data.options.validator = v;
        }
        Ok(())
    })?;
    ctx.op_time = last_ts.or(ctx.op_time);
    write_reply(n, Document::new(), &errors)
}

/// Finds the index named by a `hint` (a name or a key pattern); mongod refuses hints that do
/// not correspond to an index with 2 `BadValue`.
fn check_hint(data: &CollectionData, hint: Option<RawBsonRef<'_>>) -> Result<(), CommandError> {
    let found = match hint {
        None => return Ok(()),
        Some(RawBsonRef::String(name)) => {
            name == "_id_" || data.indexes.iter().any(|i| i.spec.name == name)
        }
        Some(RawBsonRef::Document(key)) => {
            let key = crate::error::to_document(key)?;
            key.is_empty()
                || key == doc! {"_id": 1}
                || key.keys().any(|k| k == "$natural")
                || data.indexes.iter().any(|i| i.spec.key == key)
        }
        Some(_) => {
            return Err(CommandError::failed_to_parse(
                "hint must be a string or a document",
            ));
        }
    };
    if found {
        Ok(())
    } else {
        Err(CommandError::bad_value(
            "hint provided does not correspond to an existing index",
        ))
    }
}

/// The documents before and after a write.
type DocumentPair = (Arc<RawDocumentBuf>, Arc<RawDocumentBuf>);

/// The result of one update statement.
#[derive(Default)]
struct UpdateOutcome {
    matched: i64,
    modified: i64,
    upserted: Option<Bson>,
}

/// mongod keeps a document's `_id` through replacements and pipeline updates that drop it
/// (`$replaceRoot`, `$project`): the original `_id` is put back, first.
fn keep_id(
    original: &RawDocument,
    updated: RawDocumentBuf,
) -> Result<RawDocumentBuf, CommandError> {
    if matches!(updated.get("_id"), Ok(Some(_))) {
        return Ok(updated);
    }
    let Some(id) = original.get("_id")? else {
        return Ok(updated);
    };
    let mut out = RawDocumentBuf::new();
    out.append(bson::cstr!("_id"), id);
    for element in updated.iter() {
        let (k, v) = element?;
        out.append(k, v);
    }
    Ok(out)
}

/// Applies one update statement under the collection lock.
#[allow(clippy::too_many_arguments)]
fn apply_update(
    store: Store<'_>,
    ns: &Namespace,
    coll: &Collection,
    data: &mut CollectionData,
    query: &RawDocument,
    filter: &Filter,
    update: &Update,
    multi: bool,
    upsert: bool,
    sort: Option<&SortSpec>,
    last_ts: &mut Option<bson::Timestamp>,
) -> Result<(UpdateOutcome, Option<DocumentPair>), CommandError> {
    let ns_string = ns.to_string();
    let mut matches: Vec<Match> = matching(
        data,
        filter,
        if multi || sort.is_some() {
            None
        } else {
            Some(1)
        },
    )?;
    if let Some(sort) = sort {
        matches.sort_by(|a, b| sort.compare(&a.doc, &b.doc));
        matches.truncate(1);
    }
    let mut outcome = UpdateOutcome::default();
    let mut last_pair = None;
    if matches.is_empty() {
        if upsert {
            let doc = update.upsert_document(filter)?;
            let doc = prepare_for_insert(doc)?;
            check_shard_key_insert(store, coll, &doc)?;
            let stored = data.insert(&ns_string, doc)?;
            let id = stored
                .get("_id")
                .ok()
                .flatten()
                .map(to_bson)
                .transpose()?
                .unwrap_or(Bson::Null);
            *last_ts = Some(store.log(OplogOp::Insert {
                ns: ns.clone(),
                uuid: coll.uuid,
                doc: Arc::clone(&stored),
            }));
            outcome.upserted = Some(id);
            last_pair = Some((Arc::clone(&stored), stored));
        }
        return Ok((outcome, last_pair));
    }
    let images = data.options.pre_and_post_images;
    for m in matches {
        outcome.matched += 1;
        let applied = update.apply_logged(&m.doc, m.details.as_ref())?;
        match applied {
            Some(mut applied) => {
                let document = keep_id(&m.doc, std::mem::take(&mut applied.document))?;
                let mut moves_shard = false;
                if let Some(sharding) = &store.engine.sharding {
                    sharding.check_update(&coll.uuid, query, multi, &m.doc, &document)?;
                    moves_shard = sharding
                        .collection(&coll.uuid)
                        .is_some_and(|c| c.shard_of(&m.doc) != c.shard_of(&document));
                }
                let after = data.replace(&ns_string, m.rid, document)?;
                outcome.modified += 1;
                *last_ts = Some(if moves_shard {
                    // mongod 7.0 (`WouldChangeOwningShard`): the update becomes a delete on the
                    // old shard and an insert on the new one, in one transaction, and change
                    // streams show those two events, in either order (SERVER-95461). Logged as
                    // one entry, insert first: the order readers most easily get wrong.
                    store.log_all(vec![
                        OplogOp::Insert {
                            ns: ns.clone(),
                            uuid: coll.uuid,
                            doc: Arc::clone(&after),
                        },
                        OplogOp::Delete {
                            ns: ns.clone(),
                            uuid: coll.uuid,
                            before: Arc::clone(&m.doc),
                            images,
                        },
                    ])
                } else {
                    store.log(OplogOp::Update {
                        ns: ns.clone(),
                        uuid: coll.uuid,
                        before: Arc::clone(&m.doc),
                        after: Arc::clone(&after),
                        replacement: update.is_replacement(),
                        images,
                        description: applied.description,
                    })
                });
                last_pair = Some((m.doc, after));
            }
            None => last_pair = Some((Arc::clone(&m.doc), m.doc)),
        }
    }
    Ok((outcome, last_pair))
}

fn parse_statement_update(
    statement: &RawDocument,
    vars: &Variables,
) -> Result<(Filter, Update, bool, bool), CommandError> {
    let fields = Fields::new("update.updates", statement);
    let q = fields.doc("q")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'update.updates.q' is missing but a required field",
        )
    })?;
    let u = fields.get("u").ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'update.updates.u' is missing but a required field",
        )
    })?;
    let array_filters = fields.array("arrayFilters")?;
    let filter = Filter::parse_with(q, vars)?;
    let update = Update::parse_with(u, array_filters, vars)?;
    let multi = fields.bool("multi")?.unwrap_or(false);
    let upsert = fields.bool("upsert")?.unwrap_or(false);
    if multi && update.is_replacement() {
        return Err(CommandError::failed_to_parse(
            "multi update is not supported for replacement-style update",
        ));
    }
    Ok((filter, update, multi, upsert))
}

/// Refuses statement fields mongod 7.0's IDL does not know, failing the whole command as mongod
/// does (e.g. `sort` in an update statement arrived with 8.0).
fn check_statement_fields(
    statements: &[RawDocumentBuf],
    context: &str,
    allowed: &[&str],
) -> Result<(), CommandError> {
    for statement in statements {
        for element in statement.iter() {
            let (key, _) = element?;
            if !allowed.contains(&key.as_str()) {
                return Err(CommandError::unknown_field(context, key.as_str()));
            }
        }
    }
    Ok(())
}

/// `update`.
pub fn update(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    validate_coll_name(&ns.db, &ns.coll)?;
    check_fields(request, &["updates", "ordered", "let"])?;
    let statements = array_or_sequence(request, "updates")?;
    check_batch(statements.len())?;
    for statement in &statements {
        refuse_collation("update", Fields::new("update", statement).doc("collation")?)?;
    }
    check_statement_fields(
        &statements,
        "update.updates",
        &[
            "q",
            "u",
            "c",
            "upsert",
            "multi",
            "arrayFilters",
            "hint",
            "collation",
            "upsertSupplied",
            "sampleId",
        ],
    )?;
    let ordered = ordered(request)?;
    let vars = command_variables(request)?;
    let store = ctx.store();
    let mut n = 0i64;
    let mut modified = 0i64;
    let mut upserted = Vec::new();
    let mut errors = Vec::new();
    let mut last_ts = None;
    for (index, statement) in statements.iter().enumerate() {
        let result = (|| -> Result<UpdateOutcome, CommandError> {
            let (filter, update, multi, upsert) = parse_statement_update(statement, &vars)?;
            let statement_fields = Fields::new("update.updates", statement);
            let hint = statement_fields.get("hint");
            let empty = RawDocumentBuf::new();
            let query = statement_fields.doc("q")?.unwrap_or(&empty);
            let sort: Option<SortSpec> = None;
            let outcome = with_collection(store, &ns, upsert, |coll, data| {
                check_hint(data, hint)?;
                if upsert && let Some(sharding) = &store.engine.sharding {
                    sharding.check_upsert(&coll.uuid, query)?;
                }
                apply_update(
                    store,
                    &ns,
                    coll,
                    data,
                    query,
                    &filter,
                    &update,
                    multi,
                    upsert,
                    sort.as_ref(),
                    &mut last_ts,
                )
                .map(|(o, _)| o)
            })?;
            Ok(outcome.unwrap_or_default())
        })();
        match result {
            Ok(outcome) => {
                if let Some(id) = outcome.upserted {
                    n += 1;
                    upserted.push(Bson::Document(doc! {"index": index as i32, "_id": id}));
                } else {
                    n += outcome.matched;
                    modified += outcome.modified;
                }
            }
            Err(error) => {
                errors.push(WriteError { index, error });
                if ordered {
                    break;
                }
            }
        }
    }
    ctx.op_time = last_ts.or(ctx.op_time);
    let mut extra = doc! { "nModified": i32::try_from(modified).unwrap_or(i32::MAX) };
    if !upserted.is_empty() {
        extra.insert("upserted", upserted);
    }
    write_reply(n, extra, &errors)
}

/// `delete`.
pub fn delete(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["deletes", "ordered", "let"])?;
    let statements = array_or_sequence(request, "deletes")?;
    check_batch(statements.len())?;
    for statement in &statements {
        refuse_collation("delete", Fields::new("delete", statement).doc("collation")?)?;
    }
    check_statement_fields(
        &statements,
        "delete.deletes",
        &["q", "limit", "hint", "collation", "sampleId"],
    )?;
    let ordered = ordered(request)?;
    let vars = command_variables(request)?;
    let store = ctx.store();
    let mut n = 0i64;
    let mut errors = Vec::new();
    let mut last_ts = None;
    for (index, statement) in statements.iter().enumerate() {
        let result = (|| -> Result<i64, CommandError> {
            let fields = Fields::new("delete.deletes", statement);
            let q = fields.doc("q")?.ok_or_else(|| {
                CommandError::new(
                    40414,
                    "BSON field 'delete.deletes.q' is missing but a required field",
                )
            })?;
            let limit = fields.i64("limit")?.ok_or_else(|| {
                CommandError::new(
                    40414,
                    "BSON field 'delete.deletes.limit' is missing but a required field",
                )
            })?;
            if limit != 0 && limit != 1 {
                return Err(CommandError::failed_to_parse(format!(
                    "The limit field in delete objects must be 0 or 1. Got {limit}"
                )));
            }
            let filter = Filter::parse_with(q, &vars)?;
            let hint = fields.get("hint");
            let deleted = with_collection(store, &ns, false, |coll, data| {
                check_hint(data, hint)?;
                let matches = matching(data, &filter, (limit == 1).then_some(1))?;
                let images = data.options.pre_and_post_images;
                let mut count = 0;
                for m in matches {
                    if let Some(before) = data.remove(m.rid) {
                        count += 1;
                        last_ts = Some(store.log(OplogOp::Delete {
                            ns: ns.clone(),
                            uuid: coll.uuid,
                            before,
                            images,
                        }));
                    }
                }
                Ok(count)
            })?;
            Ok(deleted.unwrap_or(0))
        })();
        match result {
            Ok(count) => n += count,
            Err(error) => {
                errors.push(WriteError { index, error });
                if ordered {
                    break;
                }
            }
        }
    }
    ctx.op_time = last_ts.or(ctx.op_time);
    write_reply(n, Document::new(), &errors)
}

/// `findAndModify`: update, replace or remove one document (the first in `sort` order) and
/// return it before or after the change.
pub fn find_and_modify(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    validate_coll_name(&ns.db, &ns.coll)?;
    check_fields(
        request,
        &[
            "query",
            "sort",
            "remove",
            "update",
            "new",
            "fields",
            "upsert",
            "arrayFilters",
            "hint",
            "collation",
            "let",
        ],
    )?;
    let fields = Fields::new(&request.name, &request.body);
    refuse_collation("findAndModify", fields.doc("collation")?)?;
    let vars = command_variables(request)?;
    let empty = RawDocumentBuf::new();
    let query = fields.doc("query")?.unwrap_or(&empty);
    let filter = Filter::parse_with(query, &vars)?;
    let sort = fields.doc("sort")?.map(SortSpec::parse).transpose()?;
    let remove = fields.get("remove").is_some_and(truthy);
    let return_new = fields.bool("new")?.unwrap_or(false);
    let upsert = fields.bool("upsert")?.unwrap_or(false);
    let projection = fields
        .doc("fields")?
        .map(|p| Projection::parse_with(p, &vars))
        .transpose()?;
    let update_spec = fields.get("update");
    let hint = fields.get("hint");
    if remove && update_spec.is_some() {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both an update and remove=true",
        ));
    }
    if remove && (return_new || upsert) {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document",
        ));
    }
    if !remove && update_spec.is_none() {
        return Err(CommandError::failed_to_parse(
            "Either an update or remove=true must be specified",
        ));
    }
    let update = update_spec
        .map(|u| Update::parse_with(u, fields.array("arrayFilters").ok().flatten(), &vars))
        .transpose()?;
    let store = ctx.store();
    let mut last_ts = None;
    let result = with_collection(store, &ns, upsert && !remove, |coll, data| {
        check_hint(data, hint)?;
        if remove {
            let mut matches = matching(data, &filter, if sort.is_some() { None } else { Some(1) })?;
            if let Some(sort) = &sort {
                matches.sort_by(|a, b| sort.compare(&a.doc, &b.doc));
            }
            let Some(m) = matches.into_iter().next() else {
                return Ok((doc! {"n": 0}, None, None));
            };
            let images = data.options.pre_and_post_images;
            let before = data.remove(m.rid);
            if let Some(before) = &before {
                last_ts = Some(store.log(OplogOp::Delete {
                    ns: ns.clone(),
                    uuid: coll.uuid,
                    before: Arc::clone(before),
                    images,
                }));
            }
            return Ok((doc! {"n": 1}, before, m.details));
        }
        let Some(update) = &update else {
            return Ok((doc! {"n": 0}, None, None));
        };
        if upsert && let Some(sharding) = &store.engine.sharding {
            sharding.check_upsert(&coll.uuid, query)?;
        }
        let (outcome, pair) = apply_update(
            store,
            &ns,
            coll,
            data,
            query,
            &filter,
            update,
            false,
            upsert,
            sort.as_ref(),
            &mut last_ts,
        )?;
        let mut leo = Document::new();
        if let Some(id) = outcome.upserted {
            leo.insert("n", 1);
            leo.insert("updatedExisting", false);
            leo.insert("upserted", id);
            let value = if return_new {
                pair.map(|(_, a)| a)
            } else {
                None
            };
            return Ok((leo, value, None));
        }
        leo.insert("n", i32::try_from(outcome.matched).unwrap_or(1));
        leo.insert("updatedExisting", outcome.matched > 0);
        let value = pair.map(|(before, after)| if return_new { after } else { before });
        Ok((leo, value, None))
    })?;
    ctx.op_time = last_ts.or(ctx.op_time);
    let (leo, value, details) =
        result.unwrap_or((doc! {"n": 0, "updatedExisting": false}, None, None));
    let leo = if remove {
        doc! { "n": leo.get("n").cloned().unwrap_or(Bson::Int32(0)) }
    } else {
        leo
    };
    let mut reply = RawDocumentBuf::new();
    reply.append(bson::cstr!("lastErrorObject"), to_raw(&leo)?);
    match value {
        Some(doc) => {
            let doc = match &projection {
                Some(p) => p.apply(&doc, details.as_ref())?,
                None => (*doc).clone(),
            };
            reply.append(bson::cstr!("value"), doc);
        }
        None => reply.append(bson::cstr!("value"), RawBsonRef::Null),
    }
    Ok(reply)
}
