//! Change streams: resume tokens, event documents, and reading the oplog for one stream.
//!
//! Events are produced from the same oplog entries as `local.oplog.rs` (see
//! [`super::oplog`]). A stream's position is a point in the oplog: a cluster time plus the index
//! of the last op of that entry already handed out. Resume tokens encode that position in the
//! KeyString-prefix layout mongod uses, so they sort by cluster time and decode with the public
//! resume-token decoders:
//!
//! `82 <time BE32> <inc BE32> 2B04 (29 | 2C0100) <txnOpIndex> (6E | 6F) [5A1004 <uuid>] 04`
//!
//! (`2B04` = version 2; `29` = high-water mark, `2C0100` = event; `6F` = from an invalidate).
//! The documentKey/eventIdentifier part mongod appends is not encoded: the position alone
//! identifies an event here.

use std::sync::Arc;

use bson::{DateTime, Document, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp, cstr, doc};

use crate::engine::Engine;
use crate::engine::namespace::Namespace;
use crate::engine::oplog::{DdlOp, OplogEntry, OplogOp};
use crate::error::{CommandError, to_document, to_raw};
use crate::query::pipeline::{NoCollections, Pipeline};

/// What a stream watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// One collection (`coll.watch()`).
    Collection(Namespace),
    /// One database (`db.watch()`).
    Database(String),
    /// Every user database (`client.watch()`, `allChangesForCluster` on `admin`).
    Cluster,
}

/// `fullDocument`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullDocument {
    /// Only inserts and replaces carry `fullDocument`.
    Default,
    /// Updates carry the current version of the document, looked up when the event is read.
    UpdateLookup,
    /// Updates carry the post-image when the collection records images, else `null`.
    WhenAvailable,
    /// Like `WhenAvailable`, but a missing post-image is an error.
    Required,
}

/// `fullDocumentBeforeChange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeChange {
    /// No pre-images.
    Off,
    /// The pre-image when recorded, else `null`.
    WhenAvailable,
    /// The pre-image; a missing one is an error.
    Required,
}

/// A position in the oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The cluster time of the entry.
    pub ts: Timestamp,
    /// `None`: before every op of the entry at `ts` (a high-water mark); `Some(i)`: after op
    /// `i` of that entry.
    pub op: Option<u32>,
}

/// A decoded resume token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken {
    /// Where the token points.
    pub position: Position,
    /// Whether the token is the `_id` of an invalidate event.
    pub from_invalidate: bool,
}

/// Appends a KeyString non-negative integer (the token's `txnOpIndex`).
fn push_small_int(out: &mut Vec<u8>, n: u32) {
    if n == 0 {
        out.push(0x29);
        return;
    }
    let v = u64::from(n) << 1;
    let bytes = v.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    let len = 8 - first;
    out.push(0x2A + len as u8);
    out.extend_from_slice(&bytes[first..]);
}

fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    s
}

/// Encodes a token as `{_data: "<hex>"}`.
pub fn encode_token(
    position: Position,
    uuid: Option<bson::Uuid>,
    from_invalidate: bool,
) -> Document {
    doc! { "_data": token_data(position, uuid, from_invalidate) }
}

/// [`encode_token`] as raw BSON.
fn raw_token(
    position: Position,
    uuid: Option<bson::Uuid>,
    from_invalidate: bool,
) -> RawDocumentBuf {
    let mut d = RawDocumentBuf::new();
    d.append(cstr!("_data"), token_data(position, uuid, from_invalidate));
    d
}

/// A token's `_data`: the KeyString of its position, in upper-case hex.
fn token_data(position: Position, uuid: Option<bson::Uuid>, from_invalidate: bool) -> String {
    let mut out = Vec::with_capacity(40);
    out.push(0x82);
    out.extend_from_slice(&position.ts.time.to_be_bytes());
    out.extend_from_slice(&position.ts.increment.to_be_bytes());
    out.extend_from_slice(&[0x2B, 0x04]);
    match position.op {
        None => {
            out.push(0x29);
            out.push(0x29);
        }
        Some(i) => {
            out.extend_from_slice(&[0x2C, 0x01, 0x00]);
            push_small_int(&mut out, i);
        }
    }
    out.push(if from_invalidate { 0x6F } else { 0x6E });
    if let Some(uuid) = uuid {
        out.extend_from_slice(&[0x5A, 0x10, 0x04]);
        out.extend_from_slice(&uuid.bytes());
    }
    out.push(0x04);
    hex_upper(&out)
}

fn invalid_token(why: &str) -> CommandError {
    CommandError::new(260, format!("Invalid resume token: {why}"))
}

/// Decodes a `{_data: hex}` token produced by [`encode_token`] (or by mongod for the fields
/// this server uses).
pub fn decode_token(token: &RawDocument) -> Result<ResumeToken, CommandError> {
    let data = match token.get("_data") {
        Ok(Some(RawBsonRef::String(s))) => s,
        _ => {
            return Err(invalid_token(
                "expected a document with a string '_data' field",
            ));
        }
    };
    if data.len() % 2 != 0 || !data.is_ascii() {
        return Err(invalid_token("'_data' is not hex"));
    }
    let bytes: Vec<u8> = (0..data.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&data[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid_token("'_data' is not hex"))?;
    let mut r = bytes.as_slice();
    let mut take = |n: usize| -> Result<&[u8], CommandError> {
        if r.len() < n {
            return Err(invalid_token("token is truncated"));
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Ok(head)
    };
    if take(1)? != [0x82] {
        return Err(invalid_token("token does not start with a cluster time"));
    }
    let t = take(8)?;
    let ts = Timestamp {
        time: u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
        increment: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
    };
    let version = take(2)?;
    if version != [0x2B, 0x04] && version != [0x2B, 0x02] {
        return Err(invalid_token("unsupported token version"));
    }
    let kind = take(1)?[0];
    let is_event = match kind {
        0x29 => false,
        0x2C => {
            if take(2)? != [0x01, 0x00] {
                return Err(invalid_token("unknown token type"));
            }
            true
        }
        _ => return Err(invalid_token("unknown token type")),
    };
    let marker = take(1)?[0];
    let op_index = match marker {
        0x29 => 0u64,
        0x2B..=0x2F => {
            let len = usize::from(marker - 0x2A);
            let mut v = 0u64;
            for b in take(len)? {
                v = (v << 8) | u64::from(*b);
            }
            v >> 1
        }
        _ => return Err(invalid_token("bad txnOpIndex")),
    };
    let from_invalidate = match take(1)?[0] {
        0x6E => false,
        0x6F => true,
        _ => return Err(invalid_token("bad fromInvalidate")),
    };
    let op = u32::try_from(op_index).map_err(|_| invalid_token("txnOpIndex out of range"))?;
    Ok(ResumeToken {
        position: Position {
            ts,
            op: is_event.then_some(op),
        },
        from_invalidate,
    })
}

/// The next cluster time after `ts` in the order of the clock (`(t, i + 1)`).
pub fn next_ts(ts: Timestamp) -> Timestamp {
    match ts.increment.checked_add(1) {
        Some(i) => Timestamp {
            time: ts.time,
            increment: i,
        },
        None => Timestamp {
            time: ts.time.saturating_add(1),
            increment: 0,
        },
    }
}

/// The state of one change-stream cursor.
#[derive(Debug)]
pub struct ChangeStreamCursor {
    /// What it watches.
    pub scope: Scope,
    /// `fullDocument`.
    pub full_document: FullDocument,
    /// `fullDocumentBeforeChange`.
    pub before_change: BeforeChange,
    /// `showExpandedEvents`.
    pub show_expanded: bool,
    /// The stages after `$changeStream`.
    pub pipeline: Pipeline,
    /// Everything up to and including this position has been handed out or filtered out.
    pub position: Position,
    /// Set once the stream emitted an invalidate (its cursor is closed).
    pub invalidated: bool,
    /// The token of the last event handed out, if it is later than every scanned no-event
    /// position (the post-batch resume token when a batch ends on an event).
    last_event_token: Option<Document>,
}

/// What one read of a stream produced.
#[derive(Debug)]
pub struct StreamBatch {
    /// The events, as the client receives them.
    pub events: Vec<RawDocumentBuf>,
    /// `postBatchResumeToken`.
    pub post_batch_token: Document,
    /// True when the batch ends with an invalidate (the cursor must close).
    pub invalidated: bool,
}

impl ChangeStreamCursor {
    /// A stream starting at `position`.
    pub fn new(
        scope: Scope,
        full_document: FullDocument,
        before_change: BeforeChange,
        show_expanded: bool,
        pipeline: Pipeline,
        position: Position,
    ) -> ChangeStreamCursor {
        ChangeStreamCursor {
            scope,
            full_document,
            before_change,
            show_expanded,
            pipeline,
            position,
            invalidated: false,
            last_event_token: None,
        }
    }

    fn sees(&self, ns: &Namespace) -> bool {
        if ns.is_system() {
            return false;
        }
        match &self.scope {
            Scope::Collection(target) => ns == target,
            Scope::Database(db) => &ns.db == db,
            Scope::Cluster => !ns.is_internal_db(),
        }
    }

    /// Reads events after the current position: at most `limit` of them.
    pub fn read(&mut self, engine: &Engine, limit: usize) -> Result<StreamBatch, CommandError> {
        /// Oplog entries fetched per step, so a stream far behind does not copy the whole
        /// retained oplog for every batch.
        const CHUNK: usize = 1024;
        // mongod fails a getMore whose oplog position was deleted rather than skipping the
        // lost entries: a consumer must learn that it missed changes.
        let fully_read = self.position.op == Some(u32::MAX);
        if engine
            .oplog
            .history_lost_after(self.position.ts, fully_read)
        {
            return Err(CommandError::new(
                286,
                "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
            ));
        }
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut invalidated = false;
        let mut batch_full = false;
        // True when ops were scanned after the last event handed out in this batch.
        let mut scanned_past_event = false;
        let mut scanned_through;
        'chunks: loop {
            let (entries, through) = engine.oplog.entries_from(self.position.ts, CHUNK);
            scanned_through = through;
            let complete = entries.len() < CHUNK;
            let mut progressed = false;
            for entry in &entries {
                for (i, op) in entry.ops.iter().enumerate() {
                    let i = i as u32;
                    let here = Position {
                        ts: entry.ts,
                        op: Some(i),
                    };
                    if here <= self.position {
                        continue;
                    }
                    if batch_full {
                        break 'chunks;
                    }
                    let produced = self.events_for(engine, entry, i, op)?;
                    self.position = here;
                    progressed = true;
                    scanned_past_event = true;
                    for (event, is_invalidate) in produced {
                        // Invalidate events are delivered whatever the user's stages say.
                        let event = if is_invalidate {
                            event
                        } else {
                            match self.apply_pipeline(event)? {
                                Some(e) => e,
                                None => continue,
                            }
                        };
                        self.last_event_token = Some(event_id(&event)?);
                        scanned_past_event = false;
                        bytes += event.as_bytes().len();
                        events.push(event);
                        if is_invalidate {
                            invalidated = true;
                        }
                    }
                    if invalidated {
                        break 'chunks;
                    }
                    // Batches stop at the requested size or at 16 MiB, like mongod's.
                    if events.len() >= limit || bytes >= crate::wire::MAX_BSON_OBJECT_SIZE {
                        batch_full = true;
                    }
                }
            }
            if complete || !progressed {
                break;
            }
        }
        if invalidated {
            self.invalidated = true;
        }
        let ends_on_event = !events.is_empty() && !scanned_past_event;
        let post_batch_token = if batch_full || invalidated || ends_on_event {
            // The batch ends on an event: its token is the resume point.
            self.last_event_token
                .clone()
                .unwrap_or_else(|| encode_token(self.position, None, false))
        } else {
            // Everything up to the clock was scanned and nothing after the last event matched:
            // the high-water mark is the next cluster time, so a resume from it sees every later
            // write and nothing already seen.
            let hwm = Position {
                ts: next_ts(scanned_through),
                op: None,
            };
            self.position = self.position.max(Position {
                ts: scanned_through,
                op: Some(u32::MAX),
            });
            self.last_event_token = None;
            encode_token(hwm, None, false)
        };
        Ok(StreamBatch {
            events,
            post_batch_token,
            invalidated,
        })
    }

    /// The first batch of a stream opened through a mongos: always empty (the mongos returns
    /// before its shard cursors have produced anything), with a `postBatchResumeToken` that
    /// names the start point, so resuming from it loses and repeats nothing.
    pub fn empty_batch(&self) -> StreamBatch {
        let point = match self.position.op {
            // Everything at `ts` was already seen: the high-water mark is the next time.
            Some(u32::MAX) => Position {
                ts: next_ts(self.position.ts),
                op: None,
            },
            _ => self.position,
        };
        StreamBatch {
            events: Vec::new(),
            post_batch_token: encode_token(point, None, false),
            invalidated: false,
        }
    }

    /// Applies the user's stages to one event; `None` when filtered out. Projecting out `_id`
    /// is refused with 280, as mongod refuses to return events without resume tokens.
    fn apply_pipeline(
        &self,
        event: RawDocumentBuf,
    ) -> Result<Option<RawDocumentBuf>, CommandError> {
        if self.pipeline.is_empty() {
            return Ok(Some(event));
        }
        let original_id = event.get("_id").ok().flatten().map(bson::RawBson::from);
        let mut out = self
            .pipeline
            .run(std::iter::once(event), &mut NoCollections)?;
        let Some(result) = out.pop() else {
            return Ok(None);
        };
        let id = result.get("_id").ok().flatten().map(bson::RawBson::from);
        if id.is_none() || id != original_id {
            return Err(CommandError::new(
                280,
                "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point. Only transformations that retain the unmodified _id field are allowed.",
            ));
        }
        Ok(Some(result))
    }

    /// The events one op produces for this stream (with an "is invalidate" flag).
    fn events_for(
        &self,
        engine: &Engine,
        entry: &OplogEntry,
        index: u32,
        op: &OplogOp,
    ) -> Result<Vec<(RawDocumentBuf, bool)>, CommandError> {
        let position = Position {
            ts: entry.ts,
            op: Some(index),
        };
        // Events are built as raw BSON, their documents copied as bytes (never decoded and
        // encoded again); DDL events, rare, are built as documents from the same head.
        let head = |kind: &str, uuid: Option<bson::Uuid>| -> Result<RawDocumentBuf, CommandError> {
            let mut d = RawDocumentBuf::new();
            d.append(cstr!("_id"), raw_token(position, uuid, false));
            d.append(cstr!("operationType"), kind);
            d.append(cstr!("clusterTime"), entry.ts);
            d.append(cstr!("wallTime"), entry.wall);
            if let Some(txn) = &entry.txn {
                d.append(cstr!("lsid"), to_raw(&txn.lsid)?);
                d.append(cstr!("txnNumber"), txn.txn_number);
            }
            if self.show_expanded
                && let Some(u) = uuid
            {
                d.append(cstr!("collectionUUID"), bson::Binary::from_uuid(u));
            }
            Ok(d)
        };
        let mut base = |kind: &str, uuid: Option<bson::Uuid>| to_document(&head(kind, uuid)?);
        let ns_doc = |ns: &Namespace| {
            let mut d = RawDocumentBuf::new();
            d.append(cstr!("db"), ns.db.as_str());
            d.append(cstr!("coll"), ns.coll.as_str());
            d
        };
        let mut out = Vec::new();
        // mongod keeps time-series measurements in `system.buckets.*` collections, which change
        // streams never report: writes to a time-series collection produce no events.
        if let OplogOp::Insert { ns, .. } | OplogOp::Update { ns, .. } | OplogOp::Delete { ns, .. } =
            op
            && self.sees(ns)
            && engine
                .catalog
                .collection(ns)
                .is_some_and(|c| c.is_timeseries())
        {
            return Ok(out);
        }
        match op {
            OplogOp::Noop => {}
            OplogOp::Insert { ns, uuid, doc } if self.sees(ns) => {
                let mut d = head("insert", Some(*uuid))?;
                d.append(cstr!("fullDocument"), &**doc);
                d.append(cstr!("ns"), ns_doc(ns));
                d.append(
                    cstr!("documentKey"),
                    document_key(engine, uuid, entry.ts, doc)?,
                );
                out.push((d, false));
            }
            OplogOp::Update {
                ns,
                uuid,
                before,
                after,
                replacement,
                images,
                description,
            } if self.sees(ns) => {
                let kind = if *replacement { "replace" } else { "update" };
                let mut d = head(kind, Some(*uuid))?;
                if *replacement {
                    d.append(cstr!("fullDocument"), &**after);
                }
                d.append(cstr!("ns"), ns_doc(ns));
                d.append(
                    cstr!("documentKey"),
                    document_key(engine, uuid, entry.ts, after)?,
                );
                if !*replacement {
                    let desc = match description {
                        Some(desc) => desc.to_document(self.show_expanded),
                        None => crate::query::diff::update_description(before, after)
                            .to_document(self.show_expanded),
                    };
                    d.append(cstr!("updateDescription"), to_raw(&desc)?);
                    match self.full_document {
                        FullDocument::Default => {}
                        FullDocument::UpdateLookup => match lookup(engine, ns, after) {
                            Some(current) => d.append(cstr!("fullDocument"), &*current),
                            None => d.append(cstr!("fullDocument"), RawBsonRef::Null),
                        },
                        FullDocument::WhenAvailable | FullDocument::Required => {
                            if *images {
                                d.append(cstr!("fullDocument"), &**after);
                            } else if self.full_document == FullDocument::Required {
                                return Err(missing_image("post-image"));
                            } else {
                                d.append(cstr!("fullDocument"), RawBsonRef::Null);
                            }
                        }
                    }
                }
                self.before_image(&mut d, *images, before)?;
                out.push((d, false));
            }
            OplogOp::Delete {
                ns,
                uuid,
                before,
                images,
            } if self.sees(ns) => {
                let mut d = head("delete", Some(*uuid))?;
                d.append(cstr!("ns"), ns_doc(ns));
                d.append(
                    cstr!("documentKey"),
                    document_key(engine, uuid, entry.ts, before)?,
                );
                self.before_image(&mut d, *images, before)?;
                out.push((d, false));
            }
            OplogOp::Ddl(ddl) => self.ddl_events(ddl, &mut base, &mut out, position)?,
            _ => {}
        }
        Ok(out)
    }

    fn before_image(
        &self,
        d: &mut RawDocumentBuf,
        images: bool,
        before: &RawDocumentBuf,
    ) -> Result<(), CommandError> {
        match self.before_change {
            BeforeChange::Off => {}
            BeforeChange::WhenAvailable | BeforeChange::Required => {
                if images {
                    d.append(cstr!("fullDocumentBeforeChange"), &**before);
                } else if self.before_change == BeforeChange::Required {
                    return Err(missing_image("pre-image"));
                } else {
                    d.append(cstr!("fullDocumentBeforeChange"), RawBsonRef::Null);
                }
            }
        }
        Ok(())
    }

    fn ddl_events(
        &self,
        ddl: &DdlOp,
        base: &mut EventBase<'_>,
        out: &mut Vec<(RawDocumentBuf, bool)>,
        position: Position,
    ) -> Result<(), CommandError> {
        let ns_doc = |ns: &Namespace| doc! { "db": ns.db.clone(), "coll": ns.coll.clone() };
        let invalidate = |out: &mut Vec<(RawDocumentBuf, bool)>,
                          uuid: Option<bson::Uuid>|
         -> Result<(), CommandError> {
            let mut d = Document::new();
            d.insert("_id", encode_token(position, uuid, true));
            d.insert("operationType", "invalidate");
            d.insert("clusterTime", position.ts);
            d.insert("wallTime", DateTime::now());
            out.push((to_raw(&d)?, true));
            Ok(())
        };
        match ddl {
            DdlOp::Create {
                ns,
                uuid,
                options,
                id_index,
                kind,
            } if self.show_expanded && self.sees(ns) => {
                let mut d = base("create", Some(*uuid))?;
                d.insert("ns", ns_doc(ns));
                let mut description = Document::new();
                if *kind == "view" {
                    description.extend(options.clone());
                } else {
                    if let Some(i) = id_index {
                        description.insert("idIndex", i.clone());
                    }
                    description.extend(options.clone());
                }
                d.insert("operationDescription", description);
                out.push((to_raw(&d)?, false));
            }
            DdlOp::Drop { ns, uuid, view } if self.sees(ns) => {
                if *view && !self.show_expanded {
                    return Ok(());
                }
                let mut d = base("drop", Some(*uuid))?;
                d.insert("ns", ns_doc(ns));
                out.push((to_raw(&d)?, false));
                if matches!(&self.scope, Scope::Collection(t) if t == ns) {
                    invalidate(out, Some(*uuid))?;
                }
            }
            DdlOp::Rename {
                from,
                to,
                uuid,
                drop_target,
            } if self.sees(from) || (self.show_expanded && self.sees(to)) => {
                let mut d = base("rename", Some(*uuid))?;
                d.insert("ns", ns_doc(from));
                d.insert("to", ns_doc(to));
                if self.show_expanded {
                    let mut description = doc! { "to": ns_doc(to) };
                    if let Some(t) = drop_target {
                        description.insert("dropTarget", *t);
                    }
                    d.insert("operationDescription", description);
                }
                out.push((to_raw(&d)?, false));
                if matches!(&self.scope, Scope::Collection(t) if t == from) {
                    invalidate(out, Some(*uuid))?;
                }
            }
            DdlOp::DropDatabase { db } => {
                let watched = match &self.scope {
                    Scope::Collection(_) => false,
                    Scope::Database(d) => d == db,
                    Scope::Cluster => !crate::engine::namespace::is_internal_db(db),
                };
                if watched {
                    let mut d = base("dropDatabase", None)?;
                    d.insert("ns", doc! { "db": db.clone() });
                    out.push((to_raw(&d)?, false));
                    if matches!(&self.scope, Scope::Database(_)) {
                        invalidate(out, None)?;
                    }
                }
            }
            DdlOp::CreateIndexes { ns, uuid, indexes } if self.show_expanded && self.sees(ns) => {
                for index in indexes {
                    let mut d = base("createIndexes", Some(*uuid))?;
                    d.insert("ns", ns_doc(ns));
                    d.insert("operationDescription", doc! { "indexes": [index.clone()] });
                    out.push((to_raw(&d)?, false));
                }
            }
            DdlOp::DropIndexes { ns, uuid, indexes } if self.show_expanded && self.sees(ns) => {
                for index in indexes {
                    let mut d = base("dropIndexes", Some(*uuid))?;
                    d.insert("ns", ns_doc(ns));
                    d.insert("operationDescription", doc! { "indexes": [index.clone()] });
                    out.push((to_raw(&d)?, false));
                }
            }
            DdlOp::ShardCollection {
                ns,
                uuid,
                description,
            } if self.show_expanded && self.sees(ns) => {
                let mut d = base("shardCollection", Some(*uuid))?;
                d.insert("ns", ns_doc(ns));
                d.insert("operationDescription", description.clone());
                out.push((to_raw(&d)?, false));
            }
            DdlOp::Modify {
                ns,
                uuid,
                description,
                state_before,
            } if self.show_expanded && self.sees(ns) => {
                let mut d = base("modify", Some(*uuid))?;
                d.insert("ns", ns_doc(ns));
                d.insert("operationDescription", description.clone());
                d.insert("stateBeforeChange", state_before.clone());
                out.push((to_raw(&d)?, false));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Builds the common fields of an event of the given type and collection.
type EventBase<'a> = dyn FnMut(&str, Option<bson::Uuid>) -> Result<Document, CommandError> + 'a;

fn missing_image(which: &str) -> CommandError {
    CommandError::new(
        47,
        format!(
            "Change stream was configured to require a {which} for all update, delete and replace events, but the {which} was not found for event"
        ),
    )
}

/// `documentKey`: `{_id}` of the document; on a mongos, for a collection that was sharded when
/// the write happened, the shard key fields first and then `_id` (what mongod logs in `o2`).
fn document_key(
    engine: &Engine,
    uuid: &bson::Uuid,
    ts: Timestamp,
    doc: &RawDocumentBuf,
) -> Result<RawDocumentBuf, CommandError> {
    if let Some(key) = engine
        .sharding
        .as_ref()
        .and_then(|s| s.event_shard_key(uuid, ts))
    {
        return to_raw(&key.document_key(doc)?);
    }
    let mut key = RawDocumentBuf::new();
    match doc.get("_id") {
        Ok(Some(id)) => key.append(cstr!("_id"), id),
        _ => key.append(cstr!("_id"), RawBsonRef::Null),
    }
    Ok(key)
}

/// `fullDocument: "updateLookup"`: the current version of the document (`None`: `null`).
fn lookup(engine: &Engine, ns: &Namespace, after: &RawDocumentBuf) -> Option<Arc<RawDocumentBuf>> {
    let coll = engine.catalog.collection(ns)?;
    let key = crate::engine::collection::id_key(after);
    let data = coll.read();
    data.find_by_id_key(&key).map(|(_, d)| Arc::clone(d))
}

/// The `_id` (resume token) of an event.
fn event_id(event: &RawDocumentBuf) -> Result<Document, CommandError> {
    match event.get("_id") {
        Ok(Some(RawBsonRef::Document(d))) => to_document(d),
        _ => Err(CommandError::new(
            280,
            "change event without a resume token",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sort_by_position() {
        let positions = [
            Position {
                ts: Timestamp {
                    time: 5,
                    increment: 1,
                },
                op: None,
            },
            Position {
                ts: Timestamp {
                    time: 5,
                    increment: 1,
                },
                op: Some(0),
            },
            Position {
                ts: Timestamp {
                    time: 5,
                    increment: 1,
                },
                op: Some(1),
            },
            Position {
                ts: Timestamp {
                    time: 5,
                    increment: 1,
                },
                op: Some(200),
            },
            Position {
                ts: Timestamp {
                    time: 5,
                    increment: 2,
                },
                op: None,
            },
            Position {
                ts: Timestamp {
                    time: 6,
                    increment: 0,
                },
                op: Some(0),
            },
        ];
        let uuid = bson::Uuid::new();
        let mut previous: Option<String> = None;
        for p in positions {
            let token = encode_token(p, Some(uuid), false);
            let raw = to_raw(&token).unwrap();
            let decoded = decode_token(&raw).unwrap();
            assert_eq!(decoded.position, p);
            assert!(!decoded.from_invalidate);
            let hex = token.get_str("_data").unwrap().to_string();
            if let Some(prev) = previous {
                assert!(prev < hex, "{prev} < {hex}");
            }
            previous = Some(hex);
        }
        let inv = to_raw(&encode_token(positions[1], None, true)).unwrap();
        assert!(decode_token(&inv).unwrap().from_invalidate);
    }

    #[test]
    fn matches_the_documented_real_layout() {
        // A real mongod high-water-mark token (wire-protocol notes §4.5), version 1.
        let raw = to_raw(&doc! {"_data": "82612F653E000000022B0229296E04"}).unwrap();
        let t = decode_token(&raw).unwrap();
        assert_eq!(
            t.position.ts,
            Timestamp {
                time: 1_630_496_062,
                increment: 2
            }
        );
        assert_eq!(t.position.op, None);
        // And ours for the same point starts with the same cluster-time bytes.
        let ours = encode_token(t.position, None, false);
        assert!(
            ours.get_str("_data")
                .unwrap()
                .starts_with("82612F653E00000002")
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_resume_tokens() {
        for bad in ["", "zz", "83", "82612F", "82612F653E000000022B0629296E04"] {
            let raw = to_raw(&doc! {"_data": bad}).unwrap();
            assert_eq!(decode_token(&raw).unwrap_err().code, 260, "{bad}");
        }
        let raw = to_raw(&doc! {"nodata": 1}).unwrap();
        assert_eq!(decode_token(&raw).unwrap_err().code, 260);
    }
}
