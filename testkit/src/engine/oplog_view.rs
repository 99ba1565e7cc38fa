//! `local.oplog.rs`: the retained oplog entries rendered as mongod's oplog documents.
//!
//! Each entry has at least `ts` (Timestamp), `t` (term, Int64), `v`, `wall` (Date), `op` and
//! `ns`, so clients can compute the oplog window as the shell's `getReplicationInfo()` does
//! (first and last entry by `{$natural: 1}` / `{$natural: -1}`). Data ops carry `ui` (the
//! collection UUID), `o` and, for updates, `o2`. Update entries carry a simplified `$v: 2`
//! delta (`{u: {...}, d: {...}}` with dotted paths) rather than mongod's nested diff format.

use bson::{Bson, Document, RawDocumentBuf, Timestamp, doc};

use crate::engine::Engine;
use crate::engine::namespace::Namespace;
use crate::engine::oplog::{DdlOp, OplogEntry, OplogOp};
use crate::error::{CommandError, to_document, to_raw};
use crate::query::Direction;
use crate::query::filter::Filter;
use crate::query::sort::SortSpec;

/// Renders one op.
fn op_document(op: &OplogOp) -> Result<Document, CommandError> {
    let id_of = |d: &RawDocumentBuf| -> Result<Document, CommandError> {
        let id = d
            .get("_id")
            .ok()
            .flatten()
            .map(crate::error::to_bson)
            .transpose()?
            .unwrap_or(Bson::Null);
        Ok(doc! { "_id": id })
    };
    Ok(match op {
        OplogOp::Insert { ns, uuid, doc } => doc! {
            "op": "i", "ns": ns.to_string(), "ui": *uuid, "o": to_document(doc)?, "o2": id_of(doc)?,
        },
        OplogOp::Update {
            ns,
            uuid,
            before,
            after,
            replacement,
            ..
        } => {
            let o = if *replacement {
                to_document(after)?
            } else {
                let desc = crate::query::diff::update_description(before, after);
                let mut diff = Document::new();
                if !desc.updated_fields.is_empty() {
                    diff.insert("u", desc.updated_fields.clone());
                }
                if !desc.removed_fields.is_empty() {
                    let mut d = Document::new();
                    for f in &desc.removed_fields {
                        d.insert(f.clone(), false);
                    }
                    diff.insert("d", d);
                }
                doc! { "$v": 2, "diff": diff }
            };
            doc! { "op": "u", "ns": ns.to_string(), "ui": *uuid, "o": o, "o2": id_of(after)? }
        }
        OplogOp::Delete {
            ns, uuid, before, ..
        } => doc! {
            "op": "d", "ns": ns.to_string(), "ui": *uuid, "o": id_of(before)?,
        },
        OplogOp::Noop => doc! { "op": "n", "ns": "", "o": { "msg": "periodic noop" } },
        OplogOp::Ddl(DdlOp::ShardCollection {
            ns,
            uuid,
            description,
        }) => {
            let mut o2 = doc! { "shardCollection": ns.to_string() };
            o2.extend(description.clone());
            doc! {
                "op": "n", "ns": ns.to_string(), "ui": *uuid,
                "o": { "msg": { "shardCollection": ns.to_string() } }, "o2": o2,
            }
        }
        OplogOp::Ddl(ddl) => {
            let (db, uuid, o) = match ddl {
                DdlOp::Create {
                    ns,
                    uuid,
                    options,
                    id_index,
                    ..
                } => {
                    let mut o = doc! { "create": ns.coll.clone() };
                    o.extend(options.clone());
                    if let Some(i) = id_index {
                        o.insert("idIndex", i.clone());
                    }
                    (ns.db.clone(), Some(*uuid), o)
                }
                DdlOp::Drop { ns, uuid, .. } => {
                    (ns.db.clone(), Some(*uuid), doc! { "drop": ns.coll.clone() })
                }
                DdlOp::Rename {
                    from,
                    to,
                    uuid,
                    drop_target,
                } => {
                    let mut o = doc! { "renameCollection": from.to_string(), "to": to.to_string(), "stayTemp": false };
                    if let Some(t) = drop_target {
                        o.insert("dropTarget", *t);
                    }
                    (from.db.clone(), Some(*uuid), o)
                }
                DdlOp::DropDatabase { db } => (db.clone(), None, doc! { "dropDatabase": 1 }),
                DdlOp::CreateIndexes { ns, uuid, indexes } => {
                    let mut o = doc! { "createIndexes": ns.coll.clone() };
                    if let Some(first) = indexes.first() {
                        o.extend(first.clone());
                    }
                    (ns.db.clone(), Some(*uuid), o)
                }
                DdlOp::DropIndexes { ns, uuid, indexes } => {
                    let name = indexes
                        .first()
                        .and_then(|i| i.get_str("name").ok())
                        .unwrap_or_default()
                        .to_string();
                    (
                        ns.db.clone(),
                        Some(*uuid),
                        doc! { "dropIndexes": ns.coll.clone(), "index": name },
                    )
                }
                DdlOp::Modify {
                    ns,
                    uuid,
                    description,
                    ..
                } => {
                    let mut o = doc! { "collMod": ns.coll.clone() };
                    o.extend(description.clone());
                    (ns.db.clone(), Some(*uuid), o)
                }
                // Rendered above as the no-op it is.
                DdlOp::ShardCollection { ns, uuid, .. } => {
                    (ns.db.clone(), Some(*uuid), Document::new())
                }
            };
            let mut d = doc! { "op": "c", "ns": format!("{db}.$cmd") };
            if let Some(u) = uuid {
                d.insert("ui", u);
            }
            d.insert("o", o);
            d
        }
    })
}

/// Renders one entry (a transaction becomes one `applyOps` command entry).
pub fn entry_document(entry: &OplogEntry) -> Result<Document, CommandError> {
    let mut d = if entry.ops.len() == 1 && entry.txn.is_none() {
        op_document(&entry.ops[0])?
    } else {
        let ops = entry
            .ops
            .iter()
            .map(|op| op_document(op).map(Bson::Document))
            .collect::<Result<Vec<_>, _>>()?;
        let mut d = doc! { "op": "c", "ns": "admin.$cmd", "o": { "applyOps": ops } };
        if let Some(txn) = &entry.txn {
            d.insert("lsid", txn.lsid.clone());
            d.insert("txnNumber", txn.txn_number);
        }
        d
    };
    d.insert("ts", entry.ts);
    d.insert("t", 1i64);
    d.insert("v", 2i64);
    d.insert("wall", entry.wall);
    Ok(d)
}

/// True when `ns` is `local.oplog.rs` of a replica set, which this view answers for (there is
/// no stored collection behind it).
pub fn serves(engine: &Engine, ns: &Namespace) -> bool {
    ns.db == "local" && ns.coll == "oplog.rs" && engine.is_replica_set()
}

/// Answers a `find` on `local.oplog.rs`.
pub fn find(
    engine: &Engine,
    filter: &Filter,
    sort: Option<&SortSpec>,
    skip: usize,
    limit: Option<usize>,
) -> Result<Vec<RawDocumentBuf>, CommandError> {
    let descending = sort
        .and_then(SortSpec::natural)
        .is_some_and(|d| d == Direction::Descending);
    let by_keys = sort.is_some_and(|s| !s.is_empty());
    let wanted = if by_keys {
        usize::MAX
    } else {
        limit.map_or(usize::MAX, |l| l.saturating_add(skip))
    };
    // Read in chunks from the wanted end, not a copy of the whole oplog: `plan` and `apply`
    // read its first and last entries, of an oplog of millions. Entries written after the scan
    // began are left out, so that a scan ends however fast writes come.
    // `oplog_scans_cross_chunks_in_both_directions` (tests/crud.rs) reads across the first
    // boundary at this size: change them together.
    const CHUNK: usize = 1024;
    let through = engine.oplog.cluster_time();
    let mut out = Vec::new();
    let mut bound: Option<Timestamp> = None;
    'scan: while out.len() < wanted {
        let chunk = if descending {
            let mut chunk = engine.oplog.entries_before(bound, CHUNK);
            chunk.reverse();
            chunk
        } else {
            let after = bound.unwrap_or(Timestamp {
                time: 0,
                increment: 0,
            });
            engine.oplog.entries_after(after, CHUNK).0
        };
        let Some(last) = chunk.last() else {
            break;
        };
        bound = Some(last.ts);
        for entry in &chunk {
            if entry.ts > through {
                if descending {
                    continue;
                }
                break 'scan;
            }
            let raw = to_raw(&entry_document(entry)?)?;
            if filter.matches(&raw)? {
                out.push(raw);
                if out.len() >= wanted {
                    break 'scan;
                }
            }
        }
        if chunk.len() < CHUNK {
            break;
        }
    }
    if let Some(sort) = sort.filter(|s| !s.is_empty()) {
        out.sort_by_key(|d| sort.sort_key(d));
    }
    Ok(out
        .into_iter()
        .skip(skip)
        .take(limit.unwrap_or(usize::MAX))
        .collect())
}

/// `collStats` / `$collStats.storageStats` of `local.oplog.rs`, scaled. Retention here is by
/// entry count, so `maxSize` is that count times the average entry size (sampled from the newest
/// entries): the size a capped oplog holding as many entries would have. Clients then project
/// the window of a not-yet-full oplog from `size`/`maxSize` as they would on mongod.
pub fn storage_stats(engine: &Engine, scale: i64) -> Result<Document, CommandError> {
    const SAMPLE: usize = 256;
    let scale = scale.max(1);
    let mut sampled = 0i64;
    let mut sampled_bytes = 0i64;
    for entry in &engine.oplog.entries_before(None, SAMPLE) {
        sampled += 1;
        sampled_bytes += to_raw(&entry_document(entry)?)?.as_bytes().len() as i64;
    }
    let average = if sampled > 0 {
        sampled_bytes / sampled
    } else {
        0
    };
    let count = engine.oplog.len() as i64;
    let size = average * count;
    let max_size = average.max(1) * engine.config.oplog_max_events as i64;
    Ok(doc! {
        "ns": "local.oplog.rs",
        "size": size / scale,
        "count": count,
        "avgObjSize": average,
        "numOrphanDocs": 0,
        "storageSize": size / scale,
        "freeStorageSize": 0,
        "capped": true,
        "max": 0i64,
        "maxSize": max_size / scale,
        "nindexes": 0,
        "indexBuilds": [],
        "totalIndexSize": 0,
        "totalSize": size / scale,
        "indexSizes": {},
        "scaleFactor": scale as i32,
    })
}
