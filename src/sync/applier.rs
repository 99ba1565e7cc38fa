//! The change applier: reads the spool up to its durable end and applies the changes to the
//! destination, in batches, as long as it is told to.
//!
//! Ordering: events of one document apply in order; different documents apply in parallel.
//! In `full_document` mode every event of a document is a whole-document write, so within a
//! batch only the last one per document matters: the batch is collapsed to one write per
//! document and each namespace's writes go out as unordered bulk commands. Deltas keep every
//! event, and their namespace is written with ordered commands. A DDL event ends the batch and
//! is applied alone (a barrier), so it sits exactly between the writes before and after it.
//!
//! Unique secondary indexes can refuse a write whose conflicting document is itself about to
//! change (events are applied in batches and documents looked up later than their event). Such
//! documents are remembered as pending and written again from the source's current version
//! until they go through; a conflict that outlives the final drain is reported as an error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bson::{Bson, Document, RawArrayBuf, RawDocumentBuf, doc};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::changes::{ChangeKind, DdlChange, DestinationOp, EventError, Interpreter};
use super::ddl;
use super::spool::{SpoolDamaged, SpoolReader};
use super::writer::{WriteErrorEntry, write_errors};
use crate::cluster::retry::{Backoff, retry};
use crate::cluster::{Cluster, ClusterError, Reply, codes};
use crate::config::model::{DdlPolicy, UpdateMode};
use crate::namespace::{Namespace, NamespaceFilter, NamespaceMapping};
use crate::state::model::id_key;
use crate::state::{ChangeCounts, ClusterTime, IdBound, PendingDocument, SpoolPosition};

/// At most this many events per batch.
const MAX_BATCH_EVENTS: usize = 5_000;

/// At most this many bytes of statements per write command (the server takes commands of up to
/// 16 MiB + 16 KiB; a larger document still goes out alone).
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

/// Namespaces written at once within a batch.
const NAMESPACE_CONCURRENCY: usize = 8;

/// The durable end of the spool and the source time it corresponds to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolLimit {
    /// Durable end.
    pub position: SpoolPosition,
    /// The reader's high-water mark at that end.
    pub high_water: Option<ClusterTime>,
}

/// What the applier reports to the state owner.
#[derive(Debug)]
pub enum ApplierReport {
    /// A DDL event is about to be applied that may create these destination namespaces; the
    /// applier waits for `recorded` (sent once the lockfile holds them) before applying it.
    DdlTargets {
        /// The namespaces.
        targets: Vec<Namespace>,
        /// Answered once they are durable.
        recorded: oneshot::Sender<()>,
    },
    /// A batch is applied.
    Applied {
        /// Everything before here is applied.
        position: SpoolPosition,
        /// The last applied event's cluster time.
        time: Option<ClusterTime>,
        /// Changes applied in the batch.
        counts: ChangeCounts,
        /// Documents now pending (the full list).
        pending: Vec<PendingDocument>,
        /// Namespaces the batch created, dropped or renamed on the destination.
        catalog: Vec<CatalogChange>,
    },
    /// Everything up to the limit is applied.
    CaughtUp {
        /// The limit reached.
        limit: SpoolLimit,
        /// Documents still pending.
        pending: Vec<PendingDocument>,
    },
}

/// A namespace change made by a replicated DDL event (recorded so `destroy` knows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// Created on the destination.
    Created(Namespace, Namespace),
    /// Dropped on the destination.
    Dropped(Namespace),
    /// Renamed on the destination.
    Renamed(Namespace, Namespace),
}

/// Why change application stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    /// The spool could not be read back.
    #[error(transparent)]
    Spool(#[from] SpoolDamaged),
    /// An event could not be understood.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The destination or source refused.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A write was refused for a reason other than a unique-index conflict.
    #[error("{namespace}: the destination refused a write ({code}): {message}")]
    Write {
        /// Namespace.
        namespace: Namespace,
        /// Server code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// A change cannot be expressed as a write statement (a value BSON cannot encode).
    #[error(
        "{namespace}: the change to the document with _id {id} cannot be written as a statement: {detail}"
    )]
    Unwritable {
        /// Namespace.
        namespace: Namespace,
        /// The document's `_id` (relaxed Extended JSON).
        id: String,
        /// What could not be encoded.
        detail: String,
    },
    /// `ddl = "fail"` and the source ran a DDL operation.
    #[error(
        "the source ran `{0}`; options.ddl = \"fail\" stops the migration here (the change is not applied; set ddl = \"replicate\" to follow it)"
    )]
    DdlRefused(String),
    /// A DDL operation cannot be followed.
    #[error(
        "the source ran `{0}`: a collection renamed into the migration from outside it was never copied, so the migration cannot follow it; start over with a configuration that includes it"
    )]
    CannotFollow(String),
    /// The state owner stopped listening.
    #[error("the applier's progress could not be recorded")]
    Disconnected,
}

impl crate::cluster::retry::Transient for ApplierError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Cluster(e) if e.is_transient())
    }
}

/// What the applier needs.
#[derive(Debug, Clone)]
pub struct ApplierContext {
    /// The source (for looking documents up).
    pub source: Cluster,
    /// The destination.
    pub destination: Cluster,
    /// Migrated namespaces.
    pub filter: NamespaceFilter,
    /// Renames.
    pub mapping: NamespaceMapping,
    /// Update mode.
    pub update_mode: UpdateMode,
    /// DDL policy.
    pub ddl: DdlPolicy,
    /// The write concern of destination writes, as a command field.
    pub write_concern: RawDocumentBuf,
    /// The spool directory.
    pub spool_dir: PathBuf,
    /// The destination's shard keys (upsert filters name the full shard key; see
    /// [`super::sharded`]). Read again after every replicated DDL operation.
    pub shard_keys: super::sharded::ShardKeys,
    /// Retries of transient failures.
    pub backoff: Backoff,
}

/// Applies changes from `start` on, following the limit, until `stop`.
pub async fn run_applier(
    ctx: ApplierContext,
    start: SpoolPosition,
    mut pending: Vec<PendingDocument>,
    mut limit: watch::Receiver<SpoolLimit>,
    reports: mpsc::Sender<ApplierReport>,
    stop: CancellationToken,
) -> Result<(), ApplierError> {
    let mut ctx = ctx;
    let mut reader = SpoolReader::new(&ctx.spool_dir, start);
    let mut peeked: Option<RawDocumentBuf> = None;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let current = *limit.borrow_and_update();
        let interpreter = Interpreter {
            filter: &ctx.filter,
            mapping: &ctx.mapping,
            update_mode: ctx.update_mode,
        };
        // One batch: document changes up to the first DDL, or one DDL alone.
        let mut batch = Vec::new();
        let mut ddl_event: Option<(bson::Timestamp, DdlChange)> = None;
        while batch.len() < MAX_BATCH_EVENTS {
            let event = match peeked.take() {
                Some(e) => e,
                None => match reader.next(current.position)? {
                    Some(e) => e,
                    None => break,
                },
            };
            let change = interpreter.interpret(&event)?;
            if let DestinationOp::Ddl(ddl) = change.op {
                if batch.is_empty() {
                    ddl_event = Some((change.time, ddl));
                } else {
                    peeked = Some(event);
                }
                break;
            }
            batch.push(change);
        }
        // The position after the batch (a peeked event is not part of it).
        let position = if peeked.is_some() {
            None
        } else {
            Some(reader.position())
        };

        if batch.is_empty() && ddl_event.is_none() {
            retry_pending(&ctx, &mut pending).await?;
            reports
                .send(ApplierReport::CaughtUp {
                    limit: current,
                    pending: pending.clone(),
                })
                .await
                .map_err(|_| ApplierError::Disconnected)?;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = limit.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(if pending.is_empty() { 1000 } else { 250 })) => {}
            }
            continue;
        }

        let mut counts = ChangeCounts::default();
        let mut catalog = Vec::new();
        let last_time;
        if let Some((time, ddl)) = ddl_event {
            if ctx.ddl == DdlPolicy::Fail && !matches!(ddl, DdlChange::Unsupported { .. }) {
                return Err(ApplierError::DdlRefused(ddl.describe()));
            }
            let what = ddl.describe();
            let targets = match &ddl {
                DdlChange::Create { ns, .. } => vec![ns.clone()],
                DdlChange::Rename { to, .. } => vec![to.clone()],
                _ => Vec::new(),
            };
            if !targets.is_empty() {
                // Write-ahead: a crash after the DDL but before its effect is recorded must not
                // leave a namespace the lockfile does not know.
                let (recorded, ack) = oneshot::channel();
                reports
                    .send(ApplierReport::DdlTargets { targets, recorded })
                    .await
                    .map_err(|_| ApplierError::Disconnected)?;
                ack.await.map_err(|_| ApplierError::Disconnected)?;
            }
            let change = retry(&what, ctx.backoff, || apply_ddl(&ctx, &ddl)).await?;
            catalog.extend(change);
            if !ctx.shard_keys.is_empty() {
                // A rename or drop changes which destination collections are sharded.
                ctx.shard_keys =
                    super::sharded::destination_shard_keys(&ctx.destination, ctx.backoff).await?;
            }
            counts.ddl += 1;
            last_time = Some(ClusterTime(time));
        } else {
            for c in &batch {
                match c.kind {
                    ChangeKind::Insert => counts.inserts += 1,
                    ChangeKind::Update => counts.updates += 1,
                    ChangeKind::Replace => counts.replaces += 1,
                    ChangeKind::Delete => counts.deletes += 1,
                    ChangeKind::Ddl => counts.ddl += 1,
                }
            }
            last_time = batch.last().map(|c| ClusterTime(c.time));
            let ops: Vec<DestinationOp> = batch.into_iter().map(|c| c.op).collect();
            apply_documents(&ctx, ops, &mut pending).await?;
        }
        if !pending.is_empty() {
            retry_pending(&ctx, &mut pending).await?;
        }
        let position =
            position.unwrap_or_else(|| reader_position_before_peek(&reader, peeked.as_ref()));
        reports
            .send(ApplierReport::Applied {
                position,
                time: last_time,
                counts,
                pending: pending.clone(),
                catalog,
            })
            .await
            .map_err(|_| ApplierError::Disconnected)?;
    }
}

/// The spool position just before a peeked event (the reader is already past it). The reader
/// moves to a new segment only to read an event, so the peeked event ends at the reader's
/// offset in its current segment.
fn reader_position_before_peek(
    reader: &SpoolReader,
    peeked: Option<&RawDocumentBuf>,
) -> SpoolPosition {
    let mut p = reader.position();
    if let Some(e) = peeked {
        p.offset = p.offset.saturating_sub(e.as_bytes().len() as u64);
    }
    p
}

/// Writes a batch of document changes.
async fn apply_documents(
    ctx: &ApplierContext,
    ops: Vec<DestinationOp>,
    pending: &mut Vec<PendingDocument>,
) -> Result<(), ApplierError> {
    // Per namespace, in order; in full-document mode only the last write per document stays.
    let mut per_ns: BTreeMap<Namespace, Vec<DestinationOp>> = BTreeMap::new();
    for op in ops {
        let Some((ns, _)) = op.document() else {
            continue;
        };
        let ns = ns.clone();
        per_ns.entry(ns).or_default().push(op);
    }
    let results: Vec<Result<Vec<PendingDocument>, ApplierError>> =
        futures_util::stream::iter(per_ns)
            .map(|(ns, ops)| async move { apply_namespace(ctx, &ns, ops).await })
            .buffer_unordered(NAMESPACE_CONCURRENCY)
            .collect()
            .await;
    let refused = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    PendingDocument::merge(pending, refused.into_iter().flatten());
    Ok(())
}

/// Keeps, for each document, only what must still be written: the last whole-document write,
/// followed by any later deltas. Linear in the batch.
fn collapse(ops: Vec<DestinationOp>) -> Vec<DestinationOp> {
    let mut out: Vec<Option<DestinationOp>> = Vec::with_capacity(ops.len());
    // Per document, the slots that a later whole-document write supersedes.
    let mut live: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for op in ops {
        let Some((_, id)) = op.document() else {
            continue;
        };
        let key = id_key(id);
        let slots = live.entry(key).or_default();
        if !matches!(op, DestinationOp::Delta { .. }) {
            for i in slots.drain(..) {
                out[i] = None;
            }
        }
        slots.push(out.len());
        out.push(Some(op));
    }
    out.into_iter().flatten().collect()
}

async fn apply_namespace(
    ctx: &ApplierContext,
    ns: &Namespace,
    ops: Vec<DestinationOp>,
) -> Result<Vec<PendingDocument>, ApplierError> {
    let key = ctx.shard_keys.get(ns);
    let ops = collapse(super::sharded::key_changing_deltas_refetched(key, ops));
    let ops = resolve_refetches(ctx, ops).await?;
    super::sharded::delete_moved_documents(&ctx.destination, key, ns, &ops, &ctx.write_concern)
        .await?;
    let ordered = ops.iter().any(|o| matches!(o, DestinationOp::Delta { .. }));
    let mut pending = Vec::new();
    if ordered {
        // Consecutive statements of one kind go in one ordered command; commands in sequence.
        let mut i = 0;
        while i < ops.len() {
            let delete = matches!(ops[i], DestinationOp::Delete { .. });
            let run: Vec<&DestinationOp> = ops[i..]
                .iter()
                .take_while(|o| matches!(o, DestinationOp::Delete { .. }) == delete)
                .collect();
            i += run.len();
            pending.extend(write(ctx, ns, &run, true).await?);
        }
    } else {
        let (deletes, upserts): (Vec<&DestinationOp>, Vec<&DestinationOp>) = ops
            .iter()
            .partition(|o| matches!(o, DestinationOp::Delete { .. }));
        let (a, b) = tokio::join!(
            write(ctx, ns, &upserts, false),
            write(ctx, ns, &deletes, false)
        );
        pending.extend(a?);
        pending.extend(b?);
    }
    Ok(pending)
}

/// Turns `Refetch` into the source's current version (an upsert) or a delete.
async fn resolve_refetches(
    ctx: &ApplierContext,
    ops: Vec<DestinationOp>,
) -> Result<Vec<DestinationOp>, ApplierError> {
    let mut by_source: BTreeMap<Namespace, Vec<Bson>> = BTreeMap::new();
    for op in &ops {
        if let DestinationOp::Refetch { source, id, .. } = op {
            by_source
                .entry(source.clone())
                .or_default()
                .push(id.clone());
        }
    }
    if by_source.is_empty() {
        return Ok(ops);
    }
    let mut found: HashMap<(Namespace, Vec<u8>), RawDocumentBuf> = HashMap::new();
    for (source, ids) in by_source {
        let command = format!("find {source}");
        let docs: Vec<RawDocumentBuf> = retry(&command, ctx.backoff, || async {
            ctx.source
                .client()
                .database(source.db())
                .collection::<RawDocumentBuf>(source.coll())
                .find(doc! { "_id": { "$in": ids.clone() } })
                .await
                .map_err(|e| ctx.source.error(&command, &e))?
                .try_collect()
                .await
                .map_err(|e| ctx.source.error(&command, &e))
        })
        .await?;
        for d in docs {
            if let Some(id) = ddl::raw_id(&d) {
                found.insert((source.clone(), id_key(&id)), d);
            }
        }
    }
    Ok(ops
        .into_iter()
        .map(|op| match op {
            DestinationOp::Refetch { ns, id, source } => match found.remove(&(source, id_key(&id)))
            {
                Some(document) => DestinationOp::Upsert { ns, id, document },
                None => DestinationOp::Delete { ns, id },
            },
            other => other,
        })
        .collect())
}

/// One statement of an `update` or `delete` command (`key`: the destination's shard key of
/// `ns`); `None` for an operation that writes nothing (a delta without changes, or one that is
/// not a document write).
fn statement(
    key: Option<&crate::shard_key::ShardKey>,
    ns: &Namespace,
    op: &DestinationOp,
) -> Result<Option<RawDocumentBuf>, ApplierError> {
    let Some((_, id)) = op.document() else {
        return Ok(None);
    };
    let unwritable = |detail: String| ApplierError::Unwritable {
        namespace: ns.clone(),
        id: id.clone().into_relaxed_extjson().to_string(),
        detail,
    };
    let raw_id = bson::RawBson::try_from(id.clone()).map_err(|e| unwritable(e.to_string()))?;
    let mut filter = RawDocumentBuf::new();
    filter.append(bson::cstr!("_id"), raw_id);
    let mut s = RawDocumentBuf::new();
    match op {
        DestinationOp::Upsert { document, .. } => {
            let filter = super::sharded::upsert_filter(key, id, document)
                .ok_or_else(|| unwritable("its shard-key filter".to_owned()))?;
            s.append(bson::cstr!("q"), filter);
            s.append(bson::cstr!("u"), document);
            s.append(bson::cstr!("upsert"), true);
        }
        DestinationOp::Delete { .. } => {
            s.append(bson::cstr!("q"), filter);
            // Every document with the `_id`: a destination sharded on another key than `_id`
            // enforces `_id` per shard only, and the copy of a sharded source can store a
            // document that moved between shards twice.
            s.append(bson::cstr!("limit"), 0);
        }
        DestinationOp::Delta {
            set,
            unset,
            truncate,
            ..
        } => {
            // Truncation first (`$push` with an empty `$each` and `$slice`), then the fields;
            // in one statement the two could name the same array, which the server refuses.
            let mut u = Document::new();
            if !truncate.is_empty() {
                let mut push = Document::new();
                for (field, size) in truncate {
                    push.insert(field.clone(), doc! { "$each": [], "$slice": size });
                }
                u.insert("$push", push);
            } else {
                if !set.is_empty() {
                    u.insert("$set", set.clone());
                }
                if !unset.is_empty() {
                    let fields: Document = unset
                        .iter()
                        .map(|f| (f.clone(), Bson::String(String::new())))
                        .collect();
                    u.insert("$unset", fields);
                }
            }
            if u.is_empty() {
                return Ok(None);
            }
            let u = RawDocumentBuf::try_from(&u).map_err(|e| unwritable(e.to_string()))?;
            s.append(bson::cstr!("q"), filter);
            s.append(bson::cstr!("u"), u);
        }
        DestinationOp::Refetch { .. } | DestinationOp::Ddl(_) | DestinationOp::Skip(_) => {
            return Ok(None);
        }
    }
    Ok(Some(s))
}

/// Expands a delta with both a truncation and field changes into two ordered operations.
fn split_delta(op: &DestinationOp) -> Vec<DestinationOp> {
    match op {
        DestinationOp::Delta {
            ns,
            id,
            source,
            set,
            unset,
            truncate,
        } if !truncate.is_empty() && (!set.is_empty() || !unset.is_empty()) => vec![
            DestinationOp::Delta {
                ns: ns.clone(),
                id: id.clone(),
                source: source.clone(),
                set: Document::new(),
                unset: Vec::new(),
                truncate: truncate.clone(),
            },
            DestinationOp::Delta {
                ns: ns.clone(),
                id: id.clone(),
                source: source.clone(),
                set: set.clone(),
                unset: unset.clone(),
                truncate: Vec::new(),
            },
        ],
        other => vec![other.clone()],
    }
}

/// Writes statements of one kind, in commands of bounded size. Returns documents a unique
/// index refused (pending). In delta mode, documents missing on the destination are written
/// whole from the source.
async fn write(
    ctx: &ApplierContext,
    ns: &Namespace,
    ops: &[&DestinationOp],
    ordered: bool,
) -> Result<Vec<PendingDocument>, ApplierError> {
    let expanded: Vec<DestinationOp> = ops.iter().flat_map(|o| split_delta(o)).collect();
    let mut pending = Vec::new();
    let mut missing = Vec::new();
    send_chunked(
        ctx,
        ns,
        expanded.iter(),
        ordered,
        &mut pending,
        &mut missing,
    )
    .await?;
    if !missing.is_empty() {
        // Deltas for documents the destination does not have: write them whole. (Whole
        // writes match by `_id`, so nothing is missing in their turn.)
        let resolved = resolve_refetches(ctx, missing).await?;
        let (deletes, upserts): (Vec<&DestinationOp>, Vec<&DestinationOp>) = resolved
            .iter()
            .partition(|o| matches!(o, DestinationOp::Delete { .. }));
        for group in [upserts, deletes] {
            let mut none_missing = Vec::new();
            send_chunked(ctx, ns, group, false, &mut pending, &mut none_missing).await?;
        }
    }
    Ok(pending)
}

/// Sends the statements of `ops` (all of one kind) in commands of at most
/// [`MAX_COMMAND_BYTES`], in order.
async fn send_chunked<'a>(
    ctx: &ApplierContext,
    ns: &Namespace,
    ops: impl IntoIterator<Item = &'a DestinationOp>,
    ordered: bool,
    pending: &mut Vec<PendingDocument>,
    missing: &mut Vec<DestinationOp>,
) -> Result<(), ApplierError> {
    let mut chunk: Vec<(&DestinationOp, RawDocumentBuf)> = Vec::new();
    let mut chunk_bytes = 0usize;
    for op in ops {
        let Some(s) = statement(ctx.shard_keys.get(ns), ns, op)? else {
            continue;
        };
        if !chunk.is_empty() && chunk_bytes + s.as_bytes().len() > MAX_COMMAND_BYTES {
            send(ctx, ns, &chunk, ordered, pending, missing).await?;
            chunk.clear();
            chunk_bytes = 0;
        }
        chunk_bytes += s.as_bytes().len();
        chunk.push((op, s));
    }
    if !chunk.is_empty() {
        send(ctx, ns, &chunk, ordered, pending, missing).await?;
    }
    Ok(())
}

async fn send(
    ctx: &ApplierContext,
    ns: &Namespace,
    chunk: &[(&DestinationOp, RawDocumentBuf)],
    ordered: bool,
    pending: &mut Vec<PendingDocument>,
    missing: &mut Vec<DestinationOp>,
) -> Result<(), ApplierError> {
    let delete = matches!(chunk[0].0, DestinationOp::Delete { .. });
    let mut statements = RawArrayBuf::new();
    for (_, s) in chunk {
        statements.push(s);
    }
    let mut command = RawDocumentBuf::new();
    command.append(
        if delete {
            bson::cstr!("delete")
        } else {
            bson::cstr!("update")
        },
        ns.coll(),
    );
    command.append(
        if delete {
            bson::cstr!("deletes")
        } else {
            bson::cstr!("updates")
        },
        statements,
    );
    command.append(bson::cstr!("ordered"), ordered);
    command.append(bson::cstr!("bypassDocumentValidation"), true);
    command.append(bson::cstr!("writeConcern"), &ctx.write_concern);
    let name = format!("{} {ns}", if delete { "delete" } else { "update" });
    let reply = retry(&name, ctx.backoff, || {
        super::writer::write_command(&ctx.destination, ns.db(), &name, command.clone())
    })
    .await?;
    let mut failed = vec![false; chunk.len()];
    let destination = &ctx.destination;
    let r = Reply::new(destination.side(), &name, &reply);
    // Where an ordered command stopped (its first error): the statements after it are sent
    // again once those before it are checked.
    let mut resend_from = None;
    for WriteErrorEntry {
        index,
        code,
        message,
        on_id,
    } in write_errors(&r, chunk.len())?
    {
        let op = chunk[index].0;
        failed[index] = true;
        match (code, op.document()) {
            (codes::DUPLICATE_KEY, Some((_, id))) if !on_id => {
                let source = match op {
                    DestinationOp::Delta { source, .. } => source.clone(),
                    _ => source_of(ctx, ns),
                };
                pending.push(PendingDocument {
                    namespace: ns.clone(),
                    source,
                    id: IdBound::new(id.clone()),
                    reason: message,
                });
            }
            _ => {
                return Err(ApplierError::Write {
                    namespace: ns.clone(),
                    code,
                    message,
                });
            }
        }
        if ordered {
            resend_from = Some(index + 1);
            break;
        }
    }
    // Deltas the server ran that matched nothing: the destination lacks the document. (`n`
    // counts only the statements that ran, those before an ordered command's error, and
    // never a refused one.)
    let ran = resend_from.unwrap_or(chunk.len());
    let refused = failed[..ran].iter().filter(|f| **f).count();
    let deltas: Vec<&DestinationOp> = chunk[..ran]
        .iter()
        .zip(&failed)
        .filter(|((op, _), f)| !**f && matches!(op, DestinationOp::Delta { .. }))
        .map(|((op, _), _)| *op)
        .collect();
    let matched = r
        .opt_u64("n")?
        .ok_or_else(|| destination.invalid_reply(&name, "`n` is missing"))?;
    if !deltas.is_empty() && matched < (ran - refused) as u64 {
        for op in find_missing(ctx, ns, &deltas).await? {
            if let DestinationOp::Delta { ns, id, source, .. } = op {
                missing.push(DestinationOp::Refetch {
                    ns: ns.clone(),
                    id: id.clone(),
                    source: source.clone(),
                });
            }
        }
    }
    if let Some(from) = resend_from
        && from < chunk.len()
    {
        return Box::pin(send(ctx, ns, &chunk[from..], ordered, pending, missing)).await;
    }
    Ok(())
}

/// The deltas whose documents are not on the destination.
async fn find_missing<'a>(
    ctx: &ApplierContext,
    ns: &Namespace,
    deltas: &[&'a DestinationOp],
) -> Result<Vec<&'a DestinationOp>, ApplierError> {
    let ids: Vec<Bson> = deltas
        .iter()
        .filter_map(|d| d.document().map(|(_, id)| id.clone()))
        .collect();
    let command = format!("find {ns}");
    let present: Vec<Document> = ctx
        .destination
        .client()
        .database(ns.db())
        .collection::<Document>(ns.coll())
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "_id": 1 })
        .await
        .map_err(|e| ctx.destination.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| ctx.destination.error(&command, &e))?;
    let present: Vec<Vec<u8>> = present
        .iter()
        .filter_map(|d| d.get("_id"))
        .map(id_key)
        .collect();
    Ok(deltas
        .iter()
        .filter(|d| {
            d.document()
                .is_some_and(|(_, id)| !present.contains(&id_key(id)))
        })
        .copied()
        .collect())
}

/// The source namespace a destination namespace is mapped from.
fn source_of(ctx: &ApplierContext, ns: &Namespace) -> Namespace {
    use crate::namespace::RenameRule;
    for rule in ctx.mapping.rules() {
        match rule {
            RenameRule::Namespace { from, to } if to == ns => return from.clone(),
            _ => {}
        }
    }
    for rule in ctx.mapping.rules() {
        if let RenameRule::Database { from, to } = rule
            && to == ns.db()
        {
            return Namespace::new(from.clone(), ns.coll());
        }
    }
    ns.clone()
}

/// Writes pending documents again from the source's current version.
async fn retry_pending(
    ctx: &ApplierContext,
    pending: &mut Vec<PendingDocument>,
) -> Result<(), ApplierError> {
    if pending.is_empty() {
        return Ok(());
    }
    let taken = std::mem::take(pending);
    let ops: Vec<DestinationOp> = taken
        .iter()
        .filter_map(|p| {
            Some(DestinationOp::Refetch {
                ns: p.namespace.clone(),
                id: p.id.id()?.clone(),
                source: p.source.clone(),
            })
        })
        .collect();
    apply_documents(ctx, ops, pending).await
}

/// Applies one DDL change.
/// Every branch tolerates having been applied already (a retry after a lost reply, or a replay
/// after a crash). Returns the catalog change to record.
async fn apply_ddl(
    ctx: &ApplierContext,
    change: &DdlChange,
) -> Result<Option<CatalogChange>, ApplierError> {
    let dest = &ctx.destination;
    match change {
        DdlChange::Create { ns, options } => {
            ddl::create_namespace(dest, ns, options, true).await?;
            return Ok(Some(CatalogChange::Created(source_of(ctx, ns), ns.clone())));
        }
        DdlChange::Drop { ns } => {
            ddl::drop_namespace(dest, ns).await?;
            return Ok(Some(CatalogChange::Dropped(ns.clone())));
        }
        DdlChange::Rename {
            from,
            to,
            drop_target,
        } => {
            let command = doc! { "renameCollection": from.to_string(), "to": to.to_string(), "dropTarget": *drop_target };
            match dest.command("admin", command).await {
                Ok(_) => {}
                // Applied before a crash: the source name is gone and the target exists.
                Err(e) if e.code() == Some(codes::NAMESPACE_NOT_FOUND) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Some(CatalogChange::Renamed(from.clone(), to.clone())));
        }
        DdlChange::RenamedIn { .. } => return Err(ApplierError::CannotFollow(change.describe())),
        DdlChange::CreateIndexes { ns, indexes } => {
            let command = doc! { "createIndexes": ns.coll(), "indexes": indexes.clone() };
            dest.command(ns.db(), command).await?;
        }
        DdlChange::DropIndexes { ns, names } => {
            for name in names {
                match dest
                    .command(
                        ns.db(),
                        doc! { "dropIndexes": ns.coll(), "index": name.clone() },
                    )
                    .await
                {
                    Ok(_) => {}
                    // Already gone (applied before a crash, or the collection was dropped).
                    Err(e) if matches!(e.code(), Some(27) | Some(codes::NAMESPACE_NOT_FOUND)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        DdlChange::Modify { ns, changes } => {
            let mut command = doc! { "collMod": ns.coll() };
            command.extend(changes.clone());
            match dest.command(ns.db(), command).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(codes::NAMESPACE_NOT_FOUND) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Its collections' drops came first, as separate events.
        DdlChange::DropDatabase { .. } => {}
        DdlChange::Unsupported { operation, ns } => {
            tracing::warn!(
                operation,
                ns,
                "a source DDL operation that does not change data is not replicated"
            );
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;
    #[test]
    fn a_change_bson_cannot_encode_is_an_error_naming_the_document() {
        let op = DestinationOp::Delta {
            ns: ns(),
            id: Bson::Int32(7),
            source: ns(),
            set: doc! { "a\0b": 1 },
            unset: vec![],
            truncate: vec![],
        };
        let e = statement(None, &ns(), &op).unwrap_err().to_string();
        assert!(e.contains("d.c") && e.contains("_id 7"), "{e}");
        let ok = statement(None, &ns(), &upsert(7, 1)).unwrap().unwrap();
        assert!(ok.get_bool("upsert").unwrap());
        assert_eq!(
            ok.get_document("u").unwrap(),
            rawdoc! { "_id": 7, "v": 1 }.as_ref()
        );
    }

    fn ns() -> Namespace {
        Namespace::new("d", "c")
    }

    fn upsert(id: i32, v: i32) -> DestinationOp {
        DestinationOp::Upsert {
            ns: ns(),
            id: Bson::Int32(id),
            document: rawdoc! { "_id": id, "v": v },
        }
    }

    fn delta(id: i32) -> DestinationOp {
        DestinationOp::Delta {
            ns: ns(),
            id: Bson::Int32(id),
            source: ns(),
            set: doc! { "v": id },
            unset: vec![],
            truncate: vec![],
        }
    }

    #[test]
    fn collapsing_keeps_the_last_whole_write_and_later_deltas_per_document() {
        let ops = vec![
            upsert(1, 1),
            upsert(2, 1),
            delta(1),
            upsert(1, 2),
            delta(1),
            DestinationOp::Delete {
                ns: ns(),
                id: Bson::Int32(2),
            },
        ];
        let out = collapse(ops);
        assert_eq!(
            out,
            vec![
                upsert(1, 2),
                delta(1),
                DestinationOp::Delete {
                    ns: ns(),
                    id: Bson::Int32(2)
                }
            ]
        );
    }

    #[test]
    fn int32_and_int64_ids_are_different_documents() {
        let a = DestinationOp::Delete {
            ns: ns(),
            id: Bson::Int32(1),
        };
        let b = DestinationOp::Delete {
            ns: ns(),
            id: Bson::Int64(1),
        };
        assert_eq!(collapse(vec![a.clone(), b.clone()]), vec![a, b]);
    }
}
