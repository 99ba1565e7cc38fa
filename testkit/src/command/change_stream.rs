//! `aggregate` with `$changeStream` and the getMores of change-stream cursors.
//!
//! Opening validates the stage as mongod does (scope, conflicting resume options, history
//! still retained), answers with whatever events already exist after the start point (a
//! mongos always answers an empty first batch), and
//! always registers the cursor. Every batch carries `postBatchResumeToken`. A getMore with no
//! events waits for the oplog to move, up to `maxTimeMS` (1 s by default), and never answers an
//! empty batch at once: the Rust driver sends its next getMore immediately, so the server's
//! wait is what paces an idle stream.

use std::time::{Duration, Instant};

use bson::{RawBsonRef, RawDocument};

use crate::command::args::Fields;
use crate::command::read::CursorOptions;
use crate::command::{Ctx, Reply, Request};
use crate::engine::change_stream::{
    BeforeChange, ChangeStreamCursor, FullDocument, Position, Scope, StreamBatch, decode_token,
};
use crate::engine::cursor::{Cursor, CursorSource};
use crate::engine::namespace::Namespace;
use crate::error::CommandError;
use crate::query::pipeline::Pipeline;

/// Stages mongod allows after `$changeStream`.
const ALLOWED_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
];

/// mongod's default wait of an awaitData getMore without `maxTimeMS`.
const DEFAULT_AWAIT: Duration = Duration::from_millis(1000);

/// Error codes mongod labels `ResumableChangeStreamError` on a change-stream getMore: the
/// network, retriable, not-primary and shutdown families the resume spec lists.
const RESUMABLE_CODES: &[i32] = &[
    6, 7, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Adds the label mongod puts on a change-stream getMore error: `ResumableChangeStreamError`
/// for the resumable families, `NonResumableChangeStreamError` for 280 and 286.
pub fn label_resumable(error: CommandError) -> CommandError {
    if RESUMABLE_CODES.contains(&error.code) {
        error.with_label("ResumableChangeStreamError")
    } else if matches!(error.code, 280 | 286) {
        error.with_label("NonResumableChangeStreamError")
    } else {
        error
    }
}

fn enum_error(field: &str, value: &str) -> CommandError {
    CommandError::bad_value(format!(
        "Enumeration value '{value}' for field '$changeStream.{field}' is not a valid value."
    ))
}

/// Opens a change stream: `pipeline` is the whole aggregate pipeline (first stage
/// `$changeStream`).
pub fn open(
    ctx: &mut Ctx<'_>,
    request: &Request,
    pipeline: &Pipeline,
    coll_name: &str,
    collectionless: bool,
    options: CursorOptions,
) -> Reply {
    let engine = ctx.engine;
    if !engine.is_replica_set() {
        return Err(CommandError::new(
            40573,
            "The $changeStream stage is only supported on replica sets",
        ));
    }
    let spec = match pipeline.stages()[0].spec().get("$changeStream") {
        Ok(Some(RawBsonRef::Document(d))) => d,
        _ => {
            return Err(CommandError::failed_to_parse(
                "the $changeStream stage must take a document",
            ));
        }
    };
    let fields = Fields::new("$changeStream", spec);
    for element in spec.iter() {
        let (key, _) = element?;
        if !matches!(
            key.as_str(),
            "fullDocument"
                | "fullDocumentBeforeChange"
                | "resumeAfter"
                | "startAfter"
                | "startAtOperationTime"
                | "allChangesForCluster"
                | "showExpandedEvents"
                | "showSystemEvents"
                | "showRawUpdateDescription"
                | "allowToRunOnConfigDB"
                | "allowToRunOnSystemNS"
                // The Rust driver also copies the aggregate's comment here (RUST-1658).
                | "comment"
        ) {
            return Err(CommandError::unknown_field("$changeStream", key.as_str()));
        }
    }
    let full_document = match fields.str("fullDocument")? {
        None | Some("default") => FullDocument::Default,
        Some("updateLookup") => FullDocument::UpdateLookup,
        Some("whenAvailable") => FullDocument::WhenAvailable,
        Some("required") => FullDocument::Required,
        Some(other) => return Err(enum_error("fullDocument", other)),
    };
    let before_change = match fields.str("fullDocumentBeforeChange")? {
        None | Some("off") => BeforeChange::Off,
        Some("whenAvailable") => BeforeChange::WhenAvailable,
        Some("required") => BeforeChange::Required,
        Some(other) => return Err(enum_error("fullDocumentBeforeChange", other)),
    };
    let show_expanded = fields.bool("showExpandedEvents")?.unwrap_or(false);
    let all_cluster = fields.bool("allChangesForCluster")?.unwrap_or(false);

    // Scope: collection, database, or the whole cluster from `admin`.
    let scope = if collectionless {
        if request.db == "admin" {
            if !all_cluster {
                return Err(CommandError::invalid_namespace(
                    "$changeStream may not be opened on the internal admin database",
                ));
            }
            Scope::Cluster
        } else if all_cluster {
            return Err(CommandError::invalid_namespace(
                "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database",
            ));
        } else if matches!(request.db.as_str(), "config" | "local") {
            return Err(CommandError::invalid_namespace(format!(
                "$changeStream may not be opened on the internal {} database",
                request.db
            )));
        } else {
            Scope::Database(request.db.clone())
        }
    } else {
        let ns = Namespace::new(request.db.clone(), coll_name);
        if ns.is_internal_db() {
            return Err(CommandError::invalid_namespace(format!(
                "$changeStream may not be opened on the internal {} database",
                ns.db
            )));
        }
        if ns.is_system() {
            return Err(CommandError::invalid_namespace(format!(
                "$changeStream may not be opened on the internal {ns} collection"
            )));
        }
        // Views (and time-series collections, which are views over buckets in mongod) cannot be
        // watched.
        match engine.catalog.get(&ns) {
            Some(crate::engine::catalog::Entry::View(_)) => {
                return Err(CommandError::new(
                    166,
                    format!("Namespace {ns} is a view, not a collection"),
                ));
            }
            Some(crate::engine::catalog::Entry::Collection(c)) if c.is_timeseries() => {
                return Err(CommandError::new(
                    166,
                    format!("Namespace {ns} is a view, not a collection"),
                ));
            }
            _ => {}
        }
        Scope::Collection(ns)
    };

    // Start point.
    let resume_after = fields.doc("resumeAfter")?;
    let start_after = fields.doc("startAfter")?;
    let start_at = match fields.get("startAtOperationTime") {
        None => None,
        Some(RawBsonRef::Timestamp(ts)) => Some(ts),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "BSON field '$changeStream.startAtOperationTime' is the wrong type, expected type 'timestamp'",
            ));
        }
    };
    let given = [
        resume_after.is_some(),
        start_after.is_some(),
        start_at.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        return Err(CommandError::new(
            40674,
            "Only one type of resume option is allowed, but multiple were found.",
        ));
    }
    let position = if let Some(token) = resume_after {
        let token = decode_token(token)?;
        if token.from_invalidate {
            return Err(CommandError::new(
                260,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
            ));
        }
        token.position
    } else if let Some(token) = start_after {
        decode_token(token)?.position
    } else if let Some(ts) = start_at {
        Position { ts, op: None }
    } else {
        // No start point: changes after the current cluster time.
        Position {
            ts: engine.oplog.cluster_time(),
            op: Some(u32::MAX),
        }
    };
    if (resume_after.is_some() || start_after.is_some() || start_at.is_some())
        && engine.oplog.history_lost_from(position.ts)
    {
        return Err(CommandError::new(
            286,
            "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
        ));
    }

    // The user's stages.
    for stage in &pipeline.stages()[1..] {
        if stage.name() == "$changeStream" {
            return Err(CommandError::new(
                40602,
                "$changeStream is only valid as the first stage in a pipeline",
            ));
        }
        if !ALLOWED_STAGES.contains(&stage.name()) {
            return Err(CommandError::new(
                20,
                format!(
                    "{} is not permitted in a $changeStream pipeline",
                    stage.name()
                ),
            ));
        }
    }
    let user_pipeline = pipeline.slice(1..pipeline.len());
    let mut stream = ChangeStreamCursor::new(
        scope.clone(),
        full_document,
        before_change,
        show_expanded,
        user_pipeline,
        position,
    );
    let limit = options.batch_size.unwrap_or(101);
    // A mongos answers the opening aggregate before any shard reports an event.
    let batch = if engine.is_mongos() {
        stream.empty_batch()
    } else {
        stream.read(engine, limit)?
    };
    let (db, coll) = match &scope {
        Scope::Collection(ns) => (ns.db.clone(), ns.coll.clone()),
        Scope::Database(db) => (db.clone(), "$cmd.aggregate".to_string()),
        Scope::Cluster => ("admin".to_string(), "$cmd.aggregate".to_string()),
    };
    let id = if batch.invalidated {
        0
    } else {
        let id = engine.cursors.new_id();
        engine.cursors.check_in(Cursor {
            id,
            db: db.clone(),
            coll: coll.clone(),
            source: CursorSource::ChangeStream(Box::new(stream)),
            lsid: request.lsid_bytes.clone(),
            await_data: true,
            tailable: true,
            no_timeout: false,
            last_used: Instant::now(),
            origin: None,
        });
        id
    };
    batch_reply("firstBatch", &batch, id, &format!("{db}.{coll}"))
}

/// The reply of one change-stream batch, with `postBatchResumeToken`.
fn batch_reply(key: &str, batch: &StreamBatch, id: i64, ns: &str) -> Reply {
    let token = crate::error::to_raw(&batch.post_batch_token)?;
    super::read::batch_reply(
        key,
        batch.events.iter().map(|e| e.as_ref() as &RawDocument),
        Some(("postBatchResumeToken", &token)),
        id,
        ns,
    )
}

/// A getMore on a change-stream cursor: waits up to `maxTimeMS` for events. The cursor stays
/// checked out (so no other getMore can use it) while waiting.
pub async fn get_more(
    ctx: &mut Ctx<'_>,
    mut cursor: Cursor,
    batch_size: Option<usize>,
    max_time_ms: Option<u64>,
) -> Reply {
    let engine = ctx.engine;
    let id = cursor.id;
    let ns = cursor.ns();
    let CursorSource::ChangeStream(stream) = &mut cursor.source else {
        engine.cursors.release(id);
        return Err(CommandError::new(1, "not a change-stream cursor"));
    };
    let wait = max_time_ms.map_or(DEFAULT_AWAIT, Duration::from_millis);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = engine.oplog.subscribe();
    let limit = batch_size.unwrap_or(usize::MAX);
    let batch = loop {
        let batch = match stream.read(engine, limit) {
            Ok(b) => b,
            Err(e) => {
                engine.cursors.release(id);
                return Err(e);
            }
        };
        if !batch.events.is_empty() || batch.invalidated {
            break batch;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break batch;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break batch,
        }
    };
    let reply_id = if batch.invalidated {
        engine.cursors.release(id);
        0
    } else {
        engine.cursors.check_in(cursor);
        id
    };
    batch_reply("nextBatch", &batch, reply_id, &ns)
}
