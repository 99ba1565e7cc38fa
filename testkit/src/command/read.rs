//! Read commands and cursors: `find`, `getMore`, `killCursors`, `count`, `distinct`,
//! `aggregate`.
//!
//! A `find` in natural order, or in `_id` order through the `_id` index (as the `hint` that
//! `min`/`max` require selects), reads its collection a batch at a time, as mongod's
//! collection and index scans do (see [`crate::engine::scan::Scan`]). Other results (sorts,
//! secondary indexes, aggregations) are computed when the command runs, as a consistent
//! snapshot. Either way they are handed out in batches: 101 documents or 16 MiB in a first
//! batch by default, up to 16 MiB per getMore. Documents without a projection are shared with
//! storage and copied into the reply bytes as they are, never re-encoded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};

use crate::command::args::{Fields, as_i64, check_fields, refuse_collation};
use crate::command::catalog::{storage_stats, target};
use crate::command::{Ctx, Reply, Request};
use crate::engine::Engine;
use crate::engine::catalog::{Entry, View};
use crate::engine::collection::CollectionData;
use crate::engine::cursor::{Cursor, CursorSource, Origin};
use crate::engine::namespace::Namespace;
use crate::engine::oplog_view;
use crate::engine::scan::{Scan, ScanOrder, Selection, matching};
use crate::error::{CommandError, to_document, to_raw};
use crate::query::Direction;
use crate::query::expr::Variables;
use crate::query::filter::Filter;
use crate::query::keystring;
use crate::query::pipeline::{Pipeline, PipelineContext};
use crate::query::projection::Projection;
use crate::query::sort::SortSpec;
use crate::wire::MAX_BSON_OBJECT_SIZE;

/// mongod's default first-batch size in documents.
const DEFAULT_FIRST_BATCH: usize = 101;
/// mongod caps every batch at 16 MiB of documents.
const MAX_BATCH_BYTES: usize = MAX_BSON_OBJECT_SIZE;

/// How a new cursor hands out its documents.
#[derive(Debug, Clone, Default)]
pub struct CursorOptions {
    /// `batchSize` of the opening command.
    pub batch_size: Option<usize>,
    /// Close the cursor after the first batch.
    pub single_batch: bool,
    /// `awaitData`.
    pub await_data: bool,
    /// `tailable`.
    pub tailable: bool,
    /// `noCursorTimeout`.
    pub no_timeout: bool,
    /// The collection the results come from: a getMore after it was dropped, renamed or
    /// replaced fails with 175 `QueryPlanKilled`, as on mongod.
    pub origin: Option<Origin>,
}

impl CursorOptions {
    /// Reads `cursor: {batchSize}` (aggregate, listCollections, listIndexes).
    pub fn from_cursor_field(fields: &Fields<'_>) -> Result<CursorOptions, CommandError> {
        let mut options = CursorOptions::default();
        if let Some(cursor) = fields.doc("cursor")? {
            let cursor_fields = Fields::new("cursor", cursor);
            if let Some(n) = cursor_fields.i64("batchSize")? {
                if n < 0 {
                    return Err(CommandError::new(
                        51024,
                        format!("BSON field 'batchSize' value must be >= 0, actual value '{n}'"),
                    ));
                }
                options.batch_size = Some(n as usize);
            }
        }
        Ok(options)
    }
}

/// Takes the next batch off a queue: at most `count` documents and about 16 MiB (at least one
/// document when any is left, as mongod always makes progress).
fn take_batch(
    queue: &mut VecDeque<Arc<RawDocumentBuf>>,
    count: Option<usize>,
) -> Vec<Arc<RawDocumentBuf>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let count = count.unwrap_or(usize::MAX);
    while out.len() < count {
        let Some(next) = queue.front() else { break };
        let size = next.as_bytes().len();
        if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        if let Some(doc) = queue.pop_front() {
            out.push(doc);
        }
    }
    out
}

/// Room left after a cursor reply for what `finish` appends (`ok`, `$clusterTime`,
/// `operationTime`: about 150 bytes).
const FINISH_ROOM: usize = 512;

/// Builds `{cursor: {firstBatch|nextBatch: [...], id, ns}}` with the documents' bytes copied
/// as they are.
pub fn cursor_reply(batch_key: &str, docs: &[Arc<RawDocumentBuf>], id: i64, ns: &str) -> Reply {
    batch_reply(batch_key, docs.iter().map(|d| &***d), None, id, ns)
}

/// Builds `{cursor: {<batch_key>: [...], <extra>, id, ns}}`, copying each document once: the
/// reply is written into one buffer sized up front, with room for the fields `finish`
/// appends. (Nesting `RawDocumentBuf`s would copy a batch of megabytes once per level, and
/// again at each doubling of each growing buffer.)
pub fn batch_reply<'a>(
    batch_key: &str,
    docs: impl Iterator<Item = &'a RawDocument> + Clone,
    extra: Option<(&str, &RawDocument)>,
    id: i64,
    ns: &str,
) -> Reply {
    // Element sizes: type byte, key, NUL, value.
    let array_len = 4
        + docs
            .clone()
            .enumerate()
            .map(|(i, d)| 2 + decimal_len(i) + d.as_bytes().len())
            .sum::<usize>()
        + 1;
    let extra_len = extra.map_or(0, |(key, d)| 2 + key.len() + d.as_bytes().len());
    let cursor_len = 4
        + (2 + batch_key.len() + array_len)
        + extra_len
        + (2 + "id".len() + 8)
        + (2 + "ns".len() + 4 + ns.len() + 1)
        + 1;
    let reply_len = 4 + (2 + "cursor".len() + cursor_len) + 1;
    let mut out = Vec::with_capacity(reply_len + FINISH_ROOM);
    push_len(&mut out, reply_len);
    push_key(&mut out, 0x03, "cursor");
    push_len(&mut out, cursor_len);
    push_key(&mut out, 0x04, batch_key);
    push_len(&mut out, array_len);
    let mut key = itoa::Buffer::new();
    for (i, d) in docs.clone().enumerate() {
        push_key(&mut out, 0x03, key.format(i));
        out.extend_from_slice(d.as_bytes());
    }
    out.push(0);
    if let Some((key, d)) = extra {
        push_key(&mut out, 0x03, key);
        out.extend_from_slice(d.as_bytes());
    }
    push_key(&mut out, 0x12, "id");
    out.extend_from_slice(&id.to_le_bytes());
    push_key(&mut out, 0x02, "ns");
    push_len(&mut out, ns.len() + 1);
    out.extend_from_slice(ns.as_bytes());
    out.push(0);
    out.push(0);
    out.push(0);
    debug_assert_eq!(out.len(), reply_len);
    // The lengths above are those of the bytes written, so this cannot fail.
    RawDocumentBuf::from_bytes(out)
        .map_err(|e| CommandError::new(1, format!("a cursor reply could not be built: {e}")))
}

/// A BSON length prefix. Replies are bounded by the 16 MiB batch limit, far below `i32::MAX`.
fn push_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_le_bytes());
}

/// An element's type byte and key.
fn push_key(out: &mut Vec<u8>, element_type: u8, key: &str) {
    out.push(element_type);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
}

/// Digits of `i` in decimal (an array element's key).
fn decimal_len(i: usize) -> usize {
    i.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Answers with a first batch and, if documents remain, registers a cursor for them.
pub fn open_cursor(
    ctx: &mut Ctx<'_>,
    request: &Request,
    mut queue: VecDeque<Arc<RawDocumentBuf>>,
    db: &str,
    coll: &str,
    options: CursorOptions,
) -> Reply {
    let first = take_batch(
        &mut queue,
        Some(options.batch_size.unwrap_or(DEFAULT_FIRST_BATCH)),
    );
    let more = !queue.is_empty() || options.tailable;
    answer_first(
        ctx,
        request,
        &first,
        more.then_some(CursorSource::Documents(queue)),
        (db, coll),
        options,
    )
}

/// The reply to a cursor-opening command: `first`, and a cursor registered for `rest` (or, with
/// `batchSize: 0`, for nothing yet, as mongod opens one before it has run the query).
fn answer_first(
    ctx: &mut Ctx<'_>,
    request: &Request,
    first: &[Arc<RawDocumentBuf>],
    rest: Option<CursorSource>,
    (db, coll): (&str, &str),
    options: CursorOptions,
) -> Reply {
    let ns = format!("{db}.{coll}");
    let keep_open = !options.single_batch && (rest.is_some() || options.batch_size == Some(0));
    let id = if keep_open {
        let engine = ctx.engine;
        let id = engine.cursors.new_id();
        engine.cursors.check_in(Cursor {
            id,
            db: db.to_string(),
            coll: coll.to_string(),
            source: rest.unwrap_or_else(|| CursorSource::Documents(VecDeque::new())),
            lsid: request.lsid_bytes.clone(),
            await_data: options.await_data,
            tailable: options.tailable,
            no_timeout: options.no_timeout,
            last_used: Instant::now(),
            origin: options.origin.clone(),
        });
        id
    } else {
        0
    };
    cursor_reply("firstBatch", first, id, &ns)
}

/// `getMore`.
pub async fn get_more(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    check_fields(
        request,
        &[
            "collection",
            "batchSize",
            "term",
            "lastKnownCommittedOpTime",
        ],
    )?;
    let fields = Fields::new("getMore", &request.body);
    let id = match fields.get("getMore") {
        Some(RawBsonRef::Int64(id)) => id,
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field 'getMore.getMore' is the wrong type '{}', expected type 'long'",
                crate::command::args::type_name(other)
            )));
        }
        None => return Err(CommandError::failed_to_parse("missing cursor id")),
    };
    let coll = fields.str("collection")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'getMore.collection' is missing but a required field",
        )
    })?;
    let batch_size = match fields.i64("batchSize")? {
        Some(n) if n < 0 => {
            return Err(CommandError::new(
                51024,
                format!("BSON field 'batchSize' value must be >= 0, actual value '{n}'"),
            ));
        }
        Some(0) | None => None,
        Some(n) => Some(n as usize),
    };
    let engine = ctx.engine;
    let mut cursor = engine.cursors.check_out(id, &request.db, coll)?;
    let is_stream = matches!(cursor.source, CursorSource::ChangeStream(_));
    if let Some(action) = engine.failpoints.check_get_more_after_checkout() {
        engine.cursors.release(id);
        if action.close_connection {
            ctx.close_connection = true;
        }
        let code = action.error_code.unwrap_or(1);
        let error = CommandError::new(
            code,
            "Failing getMore via 'failGetMoreAfterCursorCheckout' failpoint",
        );
        return Err(if is_stream {
            crate::command::change_stream::label_resumable(error)
        } else {
            error
        });
    }
    if request.max_time_ms.is_some() && !cursor.await_data {
        engine.cursors.check_in(cursor);
        return Err(CommandError::bad_value(
            "cannot set maxTimeMS on getMore command for a non-awaitData cursor",
        ));
    }
    if is_stream {
        return crate::command::change_stream::get_more(
            ctx,
            cursor,
            batch_size,
            request.max_time_ms,
        )
        .await
        .map_err(crate::command::change_stream::label_resumable);
    }
    let ns = cursor.ns();
    let (batch, exhausted) = match &mut cursor.source {
        CursorSource::Documents(queue) => {
            if let Some(origin) = &cursor.origin
                && let Err(e) = origin.check(&origin.collection.read())
            {
                engine.cursors.release(id);
                return Err(e);
            }
            let batch = take_batch(queue, batch_size);
            (batch, queue.is_empty() && !cursor.tailable)
        }
        CursorSource::Scan(scan) => {
            let next = match &cursor.origin {
                Some(origin) => {
                    // Checked under the lock the batch is read with.
                    let data = origin.collection.read();
                    origin.check(&data).and_then(|()| {
                        scan.next_batch(&data, batch_size.unwrap_or(usize::MAX), MAX_BATCH_BYTES)
                    })
                }
                None => Err(CommandError::new(1, "a scan cursor has no collection")),
            };
            match next {
                Ok(next) => next,
                Err(e) => {
                    // mongod kills a cursor whose getMore fails.
                    engine.cursors.release(id);
                    return Err(e);
                }
            }
        }
        CursorSource::ChangeStream(_) => (Vec::new(), true),
    };
    let reply_id = if exhausted {
        engine.cursors.release(id);
        0
    } else {
        engine.cursors.check_in(cursor);
        id
    };
    cursor_reply("nextBatch", &batch, reply_id, &ns)
}

/// `killCursors`.
pub fn kill_cursors(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    let fields = Fields::new("killCursors", &request.body);
    let ids = fields.array("cursors")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'killCursors.cursors' is missing but a required field",
        )
    })?;
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        let id = id
            .ok()
            .and_then(as_i64)
            .ok_or_else(|| CommandError::type_mismatch("cursor ids must be longs"))?;
        if ctx.engine.cursors.kill(id, &ns.db, &ns.coll) {
            killed.push(Bson::Int64(id));
        } else {
            not_found.push(Bson::Int64(id));
        }
    }
    to_raw(&doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
    })
}

/// Which index a `hint` names, resolved against a collection: `None` for the `_id` index,
/// `Some(i)` for secondary index `i`.
fn resolve_hint(
    data: &CollectionData,
    hint: RawBsonRef<'_>,
) -> Result<Option<Option<usize>>, CommandError> {
    let not_found =
        || CommandError::bad_value("hint provided does not correspond to an existing index");
    match hint {
        RawBsonRef::String(name) => {
            if name == "_id_" {
                return Ok(Some(None));
            }
            data.indexes
                .iter()
                .position(|i| i.spec.name == name)
                .map(|i| Some(Some(i)))
                .ok_or_else(not_found)
        }
        RawBsonRef::Document(key) => {
            let key = to_document(key)?;
            if key.is_empty() {
                return Ok(None);
            }
            if key.keys().any(|k| k == "$natural") {
                return Ok(None);
            }
            if key == doc! {"_id": 1} || key == doc! {"_id": -1} {
                return Ok(Some(None));
            }
            data.indexes
                .iter()
                .position(|i| i.spec.key == key)
                .map(|i| Some(Some(i)))
                .ok_or_else(not_found)
        }
        _ => Err(CommandError::failed_to_parse(
            "hint must be a string or a document",
        )),
    }
}

/// Encodes a `min`/`max` bound for an index with the given key pattern. The bound's field
/// names must equal the pattern's, as mongod requires (51174).
fn encode_bound(
    bound: &RawDocument,
    pattern: &[(String, Direction)],
) -> Result<Vec<u8>, CommandError> {
    let mut values = Vec::new();
    for element in bound.iter() {
        let (k, v) = element?;
        values.push((k.as_str().to_string(), v));
    }
    if values.len() != pattern.len() || values.iter().zip(pattern).any(|((k, _), (p, _))| k != p) {
        return Err(CommandError::new(
            51174,
            "The index chosen is not equal to the given min/max bounds",
        ));
    }
    Ok(keystring::encode_compound(
        values.iter().zip(pattern).map(|((_, v), (_, d))| (*v, *d)),
    ))
}

/// The parsed arguments of a `find`.
struct FindArgs<'a> {
    filter: Filter,
    sort: Option<SortSpec>,
    projection: Option<Projection>,
    skip: usize,
    limit: Option<usize>,
    hint: Option<RawBsonRef<'a>>,
    min: Option<&'a RawDocument>,
    max: Option<&'a RawDocument>,
}

fn non_negative(fields: &Fields<'_>, key: &str) -> Result<Option<usize>, CommandError> {
    match fields.i64(key)? {
        Some(n) if n < 0 => Err(CommandError::new(
            51024,
            format!("BSON field '{key}' value must be >= 0, actual value '{n}'"),
        )),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Ok(None),
    }
}

/// The entry `ns` names: a collection or a view of the (transaction's) store, or on a mongos
/// one of the `config` collections built from the sharding metadata.
fn entry(ctx: &Ctx<'_>, ns: &Namespace) -> Result<Option<Entry>, CommandError> {
    if let Some(view) = crate::command::mongos::config_views::view(ctx.engine, ns)? {
        return Ok(Some(Entry::Collection(view)));
    }
    Ok(ctx.store().get(ns))
}

/// `find`.
pub fn find(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(
        request,
        &[
            "filter",
            "sort",
            "projection",
            "hint",
            "skip",
            "limit",
            "batchSize",
            "singleBatch",
            "max",
            "min",
            "returnKey",
            "showRecordId",
            "tailable",
            "oplogReplay",
            "noCursorTimeout",
            "awaitData",
            "allowPartialResults",
            "collation",
            "allowDiskUse",
            "let",
            "term",
            "readOnce",
        ],
    )?;
    let fields = Fields::new("find", &request.body);
    refuse_collation("find", fields.doc("collation")?)?;
    for unsupported in ["returnKey", "showRecordId", "tailable"] {
        if fields.bool(unsupported)?.unwrap_or(false) {
            return Err(CommandError::bad_value(format!(
                "find: '{unsupported}' is not supported by this test server"
            )));
        }
    }
    let vars = match fields.doc("let")? {
        Some(l) => Variables::new().with_let(l)?,
        None => Variables::new(),
    };
    let empty = RawDocumentBuf::new();
    let args = FindArgs {
        filter: Filter::parse_with(fields.doc("filter")?.unwrap_or(&empty), &vars)?,
        sort: fields
            .doc("sort")?
            .map(SortSpec::parse)
            .transpose()?
            .filter(|s| !s.is_empty() || s.natural().is_some()),
        projection: fields
            .doc("projection")?
            .filter(|p| !p.is_empty())
            .map(|p| Projection::parse_with(p, &vars))
            .transpose()?,
        skip: non_negative(&fields, "skip")?.unwrap_or(0),
        limit: non_negative(&fields, "limit")?.filter(|l| *l > 0),
        hint: fields.get("hint"),
        min: fields.doc("min")?,
        max: fields.doc("max")?,
    };
    let mut options = CursorOptions {
        batch_size: non_negative(&fields, "batchSize")?,
        single_batch: fields.bool("singleBatch")?.unwrap_or(false),
        tailable: fields.bool("tailable")?.unwrap_or(false),
        await_data: fields.bool("awaitData")?.unwrap_or(false),
        no_timeout: fields.bool("noCursorTimeout")?.unwrap_or(false),
        origin: None,
    };
    let engine = ctx.engine;
    if oplog_view::serves(engine, &ns) {
        let docs = oplog_view::find(
            engine,
            &args.filter,
            args.sort.as_ref(),
            args.skip,
            args.limit,
        )?;
        let docs = project_all(docs, args.projection.as_ref(), &args.filter)?;
        return open_cursor(ctx, request, docs, &ns.db, &ns.coll, options);
    }
    let docs = match entry(ctx, &ns)? {
        None => VecDeque::new(),
        Some(Entry::View(view)) => {
            // A find on a view runs as an aggregation of the view's pipeline.
            let mut stages: Vec<Document> =
                vec![doc! {"$match": to_document(fields.doc("filter")?.unwrap_or(&empty))?}];
            if let Some(s) = fields.doc("sort")? {
                stages.push(doc! {"$sort": to_document(s)?});
            }
            if args.skip > 0 {
                stages.push(doc! {"$skip": args.skip as i64});
            }
            if let Some(l) = args.limit {
                stages.push(doc! {"$limit": l as i64});
            }
            if let Some(p) = fields.doc("projection")?.filter(|p| !p.is_empty()) {
                stages.push(doc! {"$project": to_document(p)?});
            }
            let out = run_view(engine, &ns.db, &view, &stages, &vars)?;
            out.into_iter().map(Arc::new).collect()
        }
        Some(Entry::Collection(coll)) => {
            let data = coll.read();
            options.origin = Some(Origin {
                collection: Arc::clone(&coll),
                epoch: data.epoch,
            });
            if let Some(order) = scan_order(&data, &args)? {
                let mut scan = Scan {
                    order,
                    select: Selection {
                        filter: args.filter,
                        projection: args.projection,
                        skip: args.skip,
                        remaining: args.limit,
                    },
                };
                let count = options.batch_size.unwrap_or(DEFAULT_FIRST_BATCH);
                let (first, over) = scan.next_batch(&data, count, MAX_BATCH_BYTES)?;
                drop(data);
                let rest = (!over).then(|| CursorSource::Scan(Box::new(scan)));
                return answer_first(ctx, request, &first, rest, (&ns.db, &ns.coll), options);
            }
            find_in_collection(&data, &args)?
        }
    };
    open_cursor(ctx, request, docs, &ns.db, &ns.coll, options)
}

/// The order of a `find` that reads its collection a batch at a time: the `_id` index
/// ascending when hinted (bounded by `min`/`max`), natural order when unhinted and unsorted;
/// `None` for what is answered at once (sorts, secondary indexes, descending scans, a filter
/// that pins `_id`).
fn scan_order(
    data: &CollectionData,
    args: &FindArgs<'_>,
) -> Result<Option<ScanOrder>, CommandError> {
    let sort_keys = args.sort.as_ref().map(|s| {
        (
            s.natural(),
            s.keys().iter().map(|k| (k.path.as_str(), k.direction)),
        )
    });
    match args.hint {
        Some(hint) => {
            if resolve_hint(data, hint)? != Some(None) {
                return Ok(None);
            }
            let ascending = !matches!(hint, RawBsonRef::Document(d) if matches!(d.get("_id"), Ok(Some(v)) if as_i64(v).is_some_and(|n| n < 0)));
            let by_id = match sort_keys {
                None => true,
                Some((natural, mut keys)) => {
                    natural.is_none()
                        && keys.next() == Some(("_id", Direction::Ascending))
                        && keys.next().is_none()
                }
            };
            if !ascending || !by_id {
                return Ok(None);
            }
            let id_pattern = [("_id".to_string(), Direction::Ascending)];
            Ok(Some(ScanOrder::Id {
                min: args.min.map(|m| encode_bound(m, &id_pattern)).transpose()?,
                max: args.max.map(|m| encode_bound(m, &id_pattern)).transpose()?,
                after: None,
            }))
        }
        None => {
            let natural = match sort_keys {
                None => true,
                Some((natural, _)) => natural == Some(Direction::Ascending),
            };
            let point = !data.options.timeseries && args.filter.id_value().is_some();
            let bounded = args.min.is_some() || args.max.is_some();
            Ok((natural && !point && !bounded).then_some(ScanOrder::Natural { after: None }))
        }
    }
}

fn project_all(
    docs: Vec<RawDocumentBuf>,
    projection: Option<&Projection>,
    filter: &Filter,
) -> Result<VecDeque<Arc<RawDocumentBuf>>, CommandError> {
    let mut out = VecDeque::with_capacity(docs.len());
    for d in docs {
        let d = match projection {
            Some(p) => {
                let details = if p.needs_match_details() {
                    filter.matches_details(&d)?
                } else {
                    None
                };
                p.apply(&d, details.as_ref())?
            }
            None => d,
        };
        out.push_back(Arc::new(d));
    }
    Ok(out)
}

/// Runs a find against a collection snapshot under its read lock.
fn find_in_collection(
    data: &CollectionData,
    args: &FindArgs<'_>,
) -> Result<VecDeque<Arc<RawDocumentBuf>>, CommandError> {
    let hinted = match args.hint {
        Some(h) => resolve_hint(data, h)?,
        None => None,
    };
    if (args.min.is_some() || args.max.is_some()) && hinted.is_none() {
        return Err(CommandError::new(
            51173,
            "When using min()/max() a hint of which index to use must be provided",
        ));
    }
    // Candidate documents with their match details, in scan order.
    let mut candidates: Vec<(
        Arc<RawDocumentBuf>,
        Option<crate::query::filter::MatchDetails>,
    )> = Vec::new();
    let early_stop = if args.sort.as_ref().is_some_and(|s| !s.is_empty()) {
        None
    } else {
        args.limit.map(|l| l.saturating_add(args.skip))
    };
    let mut push = |doc: &Arc<RawDocumentBuf>| -> Result<bool, CommandError> {
        if let Some(details) = args.filter.matches_details(doc)? {
            candidates.push((Arc::clone(doc), Some(details)));
        }
        Ok(early_stop.is_some_and(|n| candidates.len() >= n))
    };
    // A sort the scan's order already provides is not performed, as mongod's planner
    // answers `sort: {_id: 1}` over the `_id` index from the index, without a blocking sort.
    let mut presorted = false;
    match hinted {
        Some(None) => {
            // The `_id` index: `_id` order, bounded by min (inclusive) and max (exclusive).
            let id_pattern = [("_id".to_string(), Direction::Ascending)];
            let min = args.min.map(|m| encode_bound(m, &id_pattern)).transpose()?;
            let max = args.max.map(|m| encode_bound(m, &id_pattern)).transpose()?;
            let descending = matches!(args.hint, Some(RawBsonRef::Document(d)) if matches!(d.get("_id"), Ok(Some(v)) if as_i64(v).is_some_and(|n| n < 0)));
            let scan_direction = if descending {
                Direction::Descending
            } else {
                Direction::Ascending
            };
            presorted = args.sort.as_ref().is_some_and(|s| {
                s.natural().is_none()
                    && matches!(s.keys(), [k] if k.path == "_id" && k.direction == scan_direction)
            });
            let range: Vec<_> = data.id_range(min.as_deref(), max.as_deref()).collect();
            let iter: Box<dyn Iterator<Item = _>> = if descending {
                Box::new(range.into_iter().rev())
            } else {
                Box::new(range.into_iter())
            };
            for (_, doc) in iter {
                if push(doc)? {
                    break;
                }
            }
        }
        Some(Some(index)) => {
            let pattern = data.indexes[index].spec.pattern.clone();
            let min = args.min.map(|m| encode_bound(m, &pattern)).transpose()?;
            let max = args.max.map(|m| encode_bound(m, &pattern)).transpose()?;
            for rid in data.index_range(index, min.as_deref(), max.as_deref()) {
                if let Some(doc) = data.get(rid)
                    && push(doc)?
                {
                    break;
                }
            }
        }
        None => {
            let natural_desc = args
                .sort
                .as_ref()
                .and_then(SortSpec::natural)
                .is_some_and(|d| d == Direction::Descending);
            if natural_desc {
                for (_, doc) in data.documents().rev() {
                    if push(doc)? {
                        break;
                    }
                }
            } else {
                let matches = matching(data, &args.filter, early_stop)?;
                candidates = matches.into_iter().map(|m| (m.doc, m.details)).collect();
            }
        }
    }
    if let Some(sort) = args.sort.as_ref().filter(|s| !s.is_empty() && !presorted) {
        let mut keyed: Vec<_> = candidates
            .into_iter()
            .map(|c| (sort.sort_key(&c.0), c))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        candidates = keyed.into_iter().map(|(_, c)| c).collect();
    }
    let selected = candidates
        .into_iter()
        .skip(args.skip)
        .take(args.limit.unwrap_or(usize::MAX));
    let mut out = VecDeque::new();
    for (doc, details) in selected {
        match &args.projection {
            Some(p) => out.push_back(Arc::new(p.apply(&doc, details.as_ref())?)),
            None => out.push_back(doc),
        }
    }
    Ok(out)
}

/// `count`.
pub fn count(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(
        request,
        &["query", "limit", "skip", "hint", "collation", "fields"],
    )?;
    let fields = Fields::new("count", &request.body);
    refuse_collation("count", fields.doc("collation")?)?;
    let empty = RawDocumentBuf::new();
    let filter = Filter::parse(fields.doc("query")?.unwrap_or(&empty))?;
    let skip = non_negative(&fields, "skip")?.unwrap_or(0);
    let limit = fields
        .i64("limit")?
        .map(|l| l.unsigned_abs() as usize)
        .filter(|l| *l > 0);
    let n = match entry(ctx, &ns)? {
        None => 0,
        Some(Entry::View(view)) => {
            let stages =
                vec![doc! {"$match": to_document(fields.doc("query")?.unwrap_or(&empty))?}];
            run_view(ctx.engine, &ns.db, &view, &stages, &Variables::new())?.len()
        }
        Some(Entry::Collection(coll)) => {
            let data = coll.read();
            if let Some(h) = fields.get("hint") {
                resolve_hint(&data, h)?;
            }
            if filter.is_match_all() {
                data.count()
            } else {
                matching(&data, &filter, None)?.len()
            }
        }
    };
    let n = n.saturating_sub(skip);
    let n = limit.map_or(n, |l| n.min(l));
    to_raw(&doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) })
}

/// `distinct`: the distinct values of a path, in the server's order, arrays expanded.
pub fn distinct(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ns = target(request)?;
    check_fields(request, &["key", "query", "collation", "hint"])?;
    let fields = Fields::new("distinct", &request.body);
    refuse_collation("distinct", fields.doc("collation")?)?;
    let key = fields.str("key")?.ok_or_else(|| {
        CommandError::new(
            40414,
            "BSON field 'distinct.key' is missing but a required field",
        )
    })?;
    let empty = RawDocumentBuf::new();
    let filter = Filter::parse(fields.doc("query")?.unwrap_or(&empty))?;
    let docs: Vec<Arc<RawDocumentBuf>> = match entry(ctx, &ns)? {
        None => Vec::new(),
        Some(Entry::View(view)) => {
            let stages =
                vec![doc! {"$match": to_document(fields.doc("query")?.unwrap_or(&empty))?}];
            run_view(ctx.engine, &ns.db, &view, &stages, &Variables::new())?
                .into_iter()
                .map(Arc::new)
                .collect()
        }
        Some(Entry::Collection(coll)) => {
            let data = coll.read();
            if let Some(h) = fields.get("hint") {
                resolve_hint(&data, h)?;
            }
            matching(&data, &filter, None)?
                .into_iter()
                .map(|m| m.doc)
                .collect()
        }
    };
    // mongod collects distinct values in a set ordered by BSON comparison.
    let mut values: BTreeMap<Vec<u8>, Bson> = BTreeMap::new();
    for doc in &docs {
        for v in crate::query::path::distinct_values(doc, key) {
            values
                .entry(keystring::encode_value(v))
                .or_insert(crate::error::to_bson(v)?);
        }
    }
    to_raw(&doc! { "values": values.into_values().collect::<Vec<_>>() })
}

/// Gives pipelines access to other collections (`$lookup`, `$unionWith`).
struct EngineCollections<'a> {
    engine: &'a Engine,
    db: String,
}

impl PipelineContext for EngineCollections<'_> {
    fn collection(
        &mut self,
        db: Option<&str>,
        coll: &str,
    ) -> Result<Vec<RawDocumentBuf>, crate::query::QueryError> {
        let ns = Namespace::new(db.unwrap_or(&self.db), coll);
        let config_view = crate::command::mongos::config_views::view(self.engine, &ns)
            .map_err(|e| crate::query::QueryError::new(e.code, "CommandFailed", e.message))?;
        let entry = match config_view {
            Some(view) => Some(Entry::Collection(view)),
            None => self.engine.catalog.get(&ns),
        };
        match entry {
            Some(Entry::Collection(c)) => {
                Ok(c.read().documents().map(|(_, d)| (**d).clone()).collect())
            }
            Some(Entry::View(v)) => run_view(self.engine, &ns.db, &v, &[], &Variables::new())
                .map_err(|e| crate::query::QueryError::new(e.code, "CommandFailed", e.message)),
            None => Ok(Vec::new()),
        }
    }
}

/// Runs `stages` over a view: the view's own pipeline first, over its source (views may stack).
fn run_view(
    engine: &Engine,
    db: &str,
    view: &View,
    stages: &[Document],
    vars: &Variables,
) -> Result<Vec<RawDocumentBuf>, CommandError> {
    let mut all: Vec<Document> = view.pipeline.clone();
    all.extend_from_slice(stages);
    let mut source = view.view_on.clone();
    // Resolve stacked views (mongod allows a depth of 20).
    for _ in 0..20 {
        match engine.catalog.get(&Namespace::new(db, source.clone())) {
            Some(Entry::View(inner)) => {
                let mut combined = inner.pipeline.clone();
                combined.extend(all);
                all = combined;
                source = inner.view_on.clone();
            }
            Some(Entry::Collection(c)) => {
                let docs: Vec<Arc<RawDocumentBuf>> =
                    c.read().documents().map(|(_, d)| Arc::clone(d)).collect();
                return run_stages(engine, db, &all, docs, vars);
            }
            None => return run_stages(engine, db, &all, Vec::new(), vars),
        }
    }
    Err(CommandError::new(
        165,
        "View depth too deep or view cycle detected; maximum depth is 20",
    ))
}

fn run_stages(
    engine: &Engine,
    db: &str,
    stages: &[Document],
    input: Vec<Arc<RawDocumentBuf>>,
    vars: &Variables,
) -> Result<Vec<RawDocumentBuf>, CommandError> {
    let raw =
        to_raw(&doc! { "p": stages.iter().cloned().map(Bson::Document).collect::<Vec<_>>() })?;
    let Ok(Some(RawBsonRef::Array(array))) = raw.get("p") else {
        return Ok(Vec::new());
    };
    let pipeline = Pipeline::parse(array, vars)?;
    let mut context = EngineCollections {
        engine,
        db: db.to_string(),
    };
    Ok(pipeline.run(
        input.iter().map(|d| d.as_ref() as &RawDocument),
        &mut context,
    )?)
}

/// `aggregate`: collection and database pipelines; `$collStats` and `$out` are run by the
/// server, the rest by the query module.
pub async fn aggregate(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    aggregate_sync(ctx, request)
}

fn aggregate_sync(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    check_fields(
        request,
        &[
            "pipeline",
            "explain",
            "allowDiskUse",
            "cursor",
            "collation",
            "hint",
            "let",
            "fromMongos",
            "needsMerge",
            "isMapReduceCommand",
        ],
    )?;
    let fields = Fields::new("aggregate", &request.body);
    refuse_collation("aggregate", fields.doc("collation")?)?;
    let collectionless = !matches!(fields.get("aggregate"), Some(RawBsonRef::String(_)));
    let coll_name = match fields.get("aggregate") {
        Some(RawBsonRef::String(s)) => s.to_string(),
        Some(v) if as_i64(v) == Some(1) => "$cmd.aggregate".to_string(),
        _ => {
            return Err(CommandError::failed_to_parse(
                "Invalid aggregate namespace: must be a collection name or 1",
            ));
        }
    };
    let Some(stages) = fields.array("pipeline")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'aggregate.pipeline' is missing but a required field",
        ));
    };
    if fields.bool("explain")?.unwrap_or(false) {
        return Err(CommandError::new(
            2,
            "explain is not supported by this test server",
        ));
    }
    if fields.doc("cursor")?.is_none() {
        return Err(CommandError::failed_to_parse(
            "The 'cursor' option is required, except for aggregate with the explain argument",
        ));
    }
    let options = CursorOptions::from_cursor_field(&fields)?;
    let mut vars = match fields.doc("let")? {
        Some(l) => Variables::new().with_let(l)?,
        None => Variables::new(),
    };
    if ctx.engine.is_replica_set() {
        vars.set_cluster_time(ctx.engine.oplog.cluster_time());
    }
    let pipeline = Pipeline::parse(stages, &vars)?;
    let engine = ctx.engine;
    let ns = Namespace::new(request.db.clone(), coll_name.clone());

    // Stages the server runs itself.
    for (i, stage) in pipeline.stages().iter().enumerate() {
        match stage.name() {
            "$collStats" | "$changeStream" | "$indexStats" | "$currentOp"
            | "$listLocalSessions" | "$documents"
                if i != 0 =>
            {
                return Err(CommandError::new(
                    40602,
                    format!(
                        "{} is only valid as the first stage in a pipeline",
                        stage.name()
                    ),
                ));
            }
            "$out" | "$merge" if i + 1 != pipeline.len() => {
                return Err(CommandError::new(
                    40601,
                    format!(
                        "{} can only be the final stage in the pipeline",
                        stage.name()
                    ),
                ));
            }
            _ => {}
        }
    }
    let first = pipeline.stages().first().map(|s| s.name().to_string());
    let last = pipeline.stages().last().map(|s| s.name().to_string());
    if let Some(stage @ ("$out" | "$merge")) = last.as_deref() {
        let level = fields
            .doc("readConcern")?
            .and_then(|rc| rc.get_str("level").ok());
        if level == Some("linearizable") {
            return Err(CommandError::new(
                72,
                format!("{stage} cannot be used with a 'linearizable' read concern level"),
            ));
        }
    }
    if first.as_deref() == Some("$changeStream") {
        return crate::command::change_stream::open(
            ctx,
            request,
            &pipeline,
            &coll_name,
            collectionless,
            options,
        );
    }
    if first.as_deref() == Some("$currentOp") && !(collectionless && request.db == "admin") {
        return Err(CommandError::invalid_namespace(
            "$currentOp must be run against the 'admin' database with {aggregate: 1}",
        ));
    }
    if collectionless
        && !matches!(
            first.as_deref(),
            Some("$documents" | "$listLocalSessions" | "$currentOp")
        )
    {
        let name = first.unwrap_or_else(|| "an empty pipeline".to_string());
        return Err(CommandError::invalid_namespace(format!(
            "{{aggregate: 1}} is not valid for '{name}'; a collection is required."
        )));
    }

    let (input, body) = if first.as_deref() == Some("$collStats") {
        let spec = pipeline.stages()[0].spec();
        let is_oplog = oplog_view::serves(engine, &ns);
        let coll = engine.catalog.collection(&ns);
        if coll.is_none() && !is_oplog {
            return Err(CommandError::namespace_not_found(format!(
                "Unable to retrieve storageStats in $collStats stage :: caused by :: Collection [{ns}] not found."
            )));
        }
        let stats_spec = match spec.get("$collStats") {
            Ok(Some(RawBsonRef::Document(d))) => to_document(d)?,
            _ => {
                return Err(CommandError::failed_to_parse(
                    "$collStats must take a nested object",
                ));
            }
        };
        let mut out = doc! {
            "ns": ns.to_string(),
            "host": engine.config.host.clone(),
            "localTime": bson::DateTime::now(),
        };
        for (k, v) in &stats_spec {
            match k.as_str() {
                "storageStats" => {
                    let scale = match v {
                        Bson::Document(d) => d.get("scale").and_then(|s| match s {
                            Bson::Int32(n) => Some(i64::from(*n)),
                            Bson::Int64(n) => Some(*n),
                            Bson::Double(d) => Some(*d as i64),
                            _ => None,
                        }),
                        _ => None,
                    }
                    .unwrap_or(1);
                    let stats = match &coll {
                        Some(coll) => storage_stats(&ns, coll, scale),
                        None => oplog_view::storage_stats(engine, scale)?,
                    };
                    out.insert("storageStats", stats);
                }
                "count" => {
                    let count = coll
                        .as_ref()
                        .map_or(engine.oplog.len(), |c| c.read().count());
                    out.insert("count", doc! { "count": count as i64 });
                }
                "latencyStats" => {
                    out.insert(
                        "latencyStats",
                        doc! {
                            "reads": {"latency": 0i64, "ops": 0i64},
                            "writes": {"latency": 0i64, "ops": 0i64},
                            "commands": {"latency": 0i64, "ops": 0i64},
                            "transactions": {"latency": 0i64, "ops": 0i64},
                        },
                    );
                }
                "queryExecStats" => {
                    out.insert(
                        "queryExecStats",
                        doc! {"collectionScans": {"total": 0i64, "nonTailable": 0i64}},
                    );
                }
                other => {
                    return Err(CommandError::new(
                        40415,
                        format!("BSON field '$collStats.{other}' is an unknown field."),
                    ));
                }
            }
        }
        // Through a mongos every shard holding part of the collection answers for its part.
        let docs = match &coll {
            Some(coll) if engine.is_mongos() => {
                crate::command::mongos::stats::coll_stats_per_shard(engine, &ns, coll, &out)?
            }
            _ => vec![out],
        };
        (
            docs.iter()
                .map(|d| to_raw(d).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?,
            pipeline.slice(1..pipeline.len()),
        )
    } else if first.as_deref() == Some("$documents") {
        (Vec::new(), pipeline.clone())
    } else if first.as_deref() == Some("$currentOp") {
        let spec = pipeline.stages()[0].spec();
        let ops = current_ops(ctx, spec)?;
        (ops, pipeline.slice(1..pipeline.len()))
    } else if first.as_deref() == Some("$listLocalSessions") {
        // The sessions this server has seen, as mongod's logical session cache lists them.
        let sessions = engine
            .sessions
            .list()
            .into_iter()
            .map(|(id, last_use)| {
                let uid = bson::Binary {
                    subtype: bson::spec::BinarySubtype::Generic,
                    bytes: vec![0u8; 32],
                };
                let id = bson::Binary {
                    subtype: bson::spec::BinarySubtype::Uuid,
                    bytes: id,
                };
                to_raw(&doc! { "_id": { "id": id, "uid": uid }, "lastUse": last_use }).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        (sessions, pipeline.slice(1..pipeline.len()))
    } else if oplog_view::serves(engine, &ns) {
        // Its entries rendered as mongod's documents, as a find on it reads them.
        let docs = oplog_view::find(engine, &Filter::match_all(), None, 0, None)?;
        (docs.into_iter().map(Arc::new).collect(), pipeline.clone())
    } else {
        match entry(ctx, &ns)? {
            None => (Vec::new(), pipeline.clone()),
            Some(Entry::View(view)) => {
                let docs = run_view(engine, &ns.db, &view, &[], &vars)?;
                (docs.into_iter().map(Arc::new).collect(), pipeline.clone())
            }
            Some(Entry::Collection(coll)) => {
                let data = coll.read();
                let docs = match pipeline.stages().first() {
                    Some(stage) if stage.name() == "$sample" => sample_records(&data, stage.spec()),
                    _ => data.documents().map(|(_, d)| Arc::clone(d)).collect(),
                };
                (docs, pipeline.clone())
            }
        }
    };

    if let Some(stage) = body
        .stages()
        .iter()
        .find(|s| s.is_server_stage() && !matches!(s.name(), "$out" | "$merge"))
    {
        return Err(CommandError::new(
            40324,
            format!(
                "Unrecognized pipeline stage name: '{}' (this test server does not run it)",
                stage.name()
            ),
        ));
    }
    let mut context = EngineCollections {
        engine,
        db: request.db.clone(),
    };
    if last.as_deref() == Some("$merge") {
        let merge_stage = body.stages().last().map(|s| s.spec().to_owned());
        let inner = body.slice(0..body.len().saturating_sub(1));
        let docs = inner.run(
            input.iter().map(|d| d.as_ref() as &RawDocument),
            &mut context,
        )?;
        if let Some(spec) = merge_stage {
            crate::command::merge::run(ctx, &request.db, &spec, docs)?;
        }
        return open_cursor(ctx, request, VecDeque::new(), &ns.db, &coll_name, options);
    }
    if last.as_deref() == Some("$out") {
        let out_stage = body.stages().last().map(|s| s.spec().to_owned());
        let inner = body.slice(0..body.len().saturating_sub(1));
        let docs = inner.run(
            input.iter().map(|d| d.as_ref() as &RawDocument),
            &mut context,
        )?;
        if let Some(spec) = out_stage {
            let target = out_target(&request.db, &spec)?;
            write_out(ctx, &target, docs)?;
        }
        return open_cursor(ctx, request, VecDeque::new(), &ns.db, &coll_name, options);
    }
    let input = match body.stages().first() {
        Some(stage) if stage.name() == "$sample" => presample(input, stage.spec()),
        _ => input,
    };
    let docs = body.run(
        input.iter().map(|d| d.as_ref() as &RawDocument),
        &mut context,
    )?;
    let queue = docs.into_iter().map(Arc::new).collect();
    open_cursor(ctx, request, queue, &ns.db, &coll_name, options)
}

/// For a leading `$sample` of fewer documents than the input, the documents picked at random
/// before the pipeline runs (as mongod reads a leading `$sample` with a random cursor instead
/// of evaluating every document); the stage itself then keeps them all, in random order.
fn presample(input: Vec<Arc<RawDocumentBuf>>, stage: &RawDocument) -> Vec<Arc<RawDocumentBuf>> {
    match sample_size(stage) {
        Some(n) if n < input.len() => rand::seq::index::sample(&mut rand::rng(), input.len(), n)
            .into_iter()
            .map(|i| Arc::clone(&input[i]))
            .collect(),
        // Invalid sizes are the stage's to report.
        _ => input,
    }
}

/// The input of a pipeline that starts with `$sample` (`stage`) on a collection: only the
/// sampled documents when the sample is smaller than the collection, picked in one walk
/// (rather than every document of a large collection held for a few).
fn sample_records(data: &CollectionData, stage: &RawDocument) -> Vec<Arc<RawDocumentBuf>> {
    let count = data.count();
    match sample_size(stage) {
        Some(n) if n < count => {
            let mut picks = rand::seq::index::sample(&mut rand::rng(), count, n).into_vec();
            picks.sort_unstable();
            let mut picks = picks.into_iter().peekable();
            let mut out = Vec::with_capacity(n);
            for (i, (_, doc)) in data.documents().enumerate() {
                if picks.next_if_eq(&i).is_some() {
                    out.push(Arc::clone(doc));
                }
                if picks.peek().is_none() {
                    break;
                }
            }
            out
        }
        _ => data.documents().map(|(_, d)| Arc::clone(d)).collect(),
    }
}

/// The `size` of a `$sample` stage, when it is a valid one.
fn sample_size(stage: &RawDocument) -> Option<usize> {
    let size = match stage.get("$sample") {
        Ok(Some(RawBsonRef::Document(d))) => d.get("size").ok().flatten().and_then(as_i64),
        _ => None,
    };
    size.and_then(|n| usize::try_from(n).ok())
}

/// The namespace an `$out` stage writes to (`"coll"` or `{db, coll}`).
fn out_target(db: &str, spec: &RawDocument) -> Result<Namespace, CommandError> {
    match spec.get("$out") {
        Ok(Some(RawBsonRef::String(coll))) => Ok(Namespace::new(db, coll)),
        Ok(Some(RawBsonRef::Document(d))) => {
            let f = Fields::new("$out", d);
            let target_db = f.str("db")?.unwrap_or(db);
            let coll = f
                .str("coll")?
                .ok_or_else(|| CommandError::failed_to_parse("$out requires a 'coll' field"))?;
            Ok(Namespace::new(target_db, coll))
        }
        _ => Err(CommandError::new(
            16990,
            "$out only supports a string or object argument",
        )),
    }
}

/// Replaces the contents of `target` with `docs`, as `$out` does (the target keeps its
/// indexes; every change is committed to the oplog).
fn write_out(
    ctx: &mut Ctx<'_>,
    target: &Namespace,
    docs: Vec<RawDocumentBuf>,
) -> Result<(), CommandError> {
    crate::engine::namespace::validate_coll_name(&target.db, &target.coll)?;
    let store = ctx.store();
    let coll = store.get_or_create(target)?;
    let mut data = coll.write();
    data.epoch += 1;
    let ns = target.to_string();
    let existing: Vec<_> = data.documents().map(|(rid, _)| *rid).collect();
    let images = data.options.pre_and_post_images;
    let mut last = None;
    for rid in existing {
        if let Some(before) = data.remove(rid) {
            last = Some(store.log(crate::engine::oplog::OplogOp::Delete {
                ns: target.clone(),
                uuid: coll.uuid,
                before,
                images,
            }));
        }
    }
    for d in docs {
        let d = crate::engine::collection::prepare_for_insert(d)?;
        let stored = data.insert(&ns, d)?;
        last = Some(store.log(crate::engine::oplog::OplogOp::Insert {
            ns: target.clone(),
            uuid: coll.uuid,
            doc: stored,
        }));
    }
    ctx.op_time = last.or(ctx.op_time);
    Ok(())
}

/// The documents of `$currentOp`: the operations in progress (idle connections, cursors and
/// sessions are not listed). Without `allUsers`, only the caller's own operations when
/// authentication is on; a mongos lists its own operations (as with `localOps: true`).
fn current_ops(
    ctx: &Ctx<'_>,
    spec: &RawDocument,
) -> Result<Vec<Arc<RawDocumentBuf>>, CommandError> {
    let Ok(Some(RawBsonRef::Document(options))) = spec.get("$currentOp") else {
        return Err(CommandError::failed_to_parse(
            "$currentOp options must be specified in an object, but found: non-object",
        ));
    };
    let mut all_users = false;
    for element in options {
        let (k, v) = element?;
        match k.as_str() {
            "allUsers" | "idleConnections" | "idleCursors" | "idleSessions" | "localOps"
            | "truncateOps" | "backtrace" | "targetAllNodes" => {
                // As mongod: each option is a boolean (authz reads `allUsers` the same way).
                let RawBsonRef::Boolean(on) = v else {
                    return Err(CommandError::failed_to_parse(format!(
                        "The '{}' parameter of the $currentOp stage must be a boolean value, but found: {}",
                        k.as_str(),
                        crate::command::args::type_name(v)
                    )));
                };
                if k.as_str() == "allUsers" {
                    all_users = on;
                }
            }
            other => {
                return Err(CommandError::failed_to_parse(format!(
                    "Unrecognized option '{other}' in $currentOp stage."
                )));
            }
        }
    }
    let auth = &ctx.conn.auth;
    let me = auth
        .user()
        .map(|u| (u.spec.name.clone(), u.spec.db.clone()));
    ctx.engine
        .operations
        .list()
        .into_iter()
        .filter(|op| all_users || !auth.is_enabled() || op.user == me)
        .map(|op| to_raw(&op.describe(&ctx.engine.config.host)).map(Arc::new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::cstr;

    /// The reply built the plain way, field by field.
    fn nested(
        key: &str,
        docs: &[Arc<RawDocumentBuf>],
        extra: Option<(&str, &RawDocument)>,
    ) -> Vec<u8> {
        let mut cursor = Document::new();
        let batch: Vec<Bson> = docs
            .iter()
            .map(|d| Bson::Document(Document::try_from(d.as_ref() as &RawDocument).unwrap()))
            .collect();
        cursor.insert(key, batch);
        if let Some((k, d)) = extra {
            cursor.insert(k, Document::try_from(d).unwrap());
        }
        cursor.insert("id", 42_i64);
        cursor.insert("ns", "db.coll");
        to_raw(&doc! { "cursor": cursor }).unwrap().into_bytes()
    }

    #[test]
    fn a_batch_reply_built_in_one_buffer_equals_the_nested_one_and_takes_finish_fields() {
        let token = bson::rawdoc! { "_data": "8263" };
        for count in [0usize, 1, 9, 10, 11, 101, 1000] {
            let docs: Vec<Arc<RawDocumentBuf>> = (0..count)
                .map(|i| {
                    let mut d = RawDocumentBuf::new();
                    d.append(cstr!("_id"), i as i64);
                    d.append(cstr!("s"), "x".repeat(i % 37));
                    Arc::new(d)
                })
                .collect();
            for (key, extra) in [
                ("firstBatch", None),
                ("nextBatch", None),
                ("nextBatch", Some(("postBatchResumeToken", token.as_ref()))),
            ] {
                let mut one =
                    batch_reply(key, docs.iter().map(|d| &***d), extra, 42, "db.coll").unwrap();
                assert_eq!(
                    one.as_bytes(),
                    nested(key, &docs, extra),
                    "{count} documents, {key}"
                );
                one.append(cstr!("ok"), 1.0);
                let back = Document::try_from(one.as_ref()).unwrap();
                assert_eq!(back.get_f64("ok").unwrap(), 1.0);
                let batch = back.get_document("cursor").unwrap().get_array(key).unwrap();
                assert_eq!(batch.len(), count);
            }
        }
    }
}
