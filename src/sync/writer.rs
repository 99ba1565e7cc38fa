//! Document writes to the destination.
//!
//! Inserts are unordered `insert` commands whose `documents` array is a batch of the source
//! cursor as it came (copied whole into the command, never decoded), with
//! `bypassDocumentValidation` (the source's documents are the truth even when the validator
//! copied from the source would refuse some of them, as the server itself allows for
//! documents that predate a validator) and the configured write concern.
//!
//! Server limits relied on (mongod and mongos 3.6+, reported by `hello` as `maxBsonObjectSize`
//! and `maxWriteBatchSize`): a cursor batch is at most 16 MiB and a command body may be up to
//! 16 MiB + 16 KiB, so any cursor batch fits in one `insert`; the copy asks for at most 100,000
//! documents per batch, the most a write command may carry.
//!
//! Duplicate-key errors are expected after a resume (the resumed range starts at the last
//! acknowledged `_id`, and a crash may have come after an insert but before its checkpoint).
//! A duplicate on `_id` means the document is already there and is counted; a duplicate on a
//! unique *secondary* index is a real conflict. Which index refused a document is decided by
//! asking the destination whether each refused `_id` exists, never by reading the error
//! message.

use std::time::Duration;

use bson::{Bson, Document, RawArray, RawArrayBuf, RawDocument, RawDocumentBuf, doc};
use futures_util::TryStreamExt;

use crate::cluster::{Cluster, ClusterError, Reply, codes};
use crate::config::model::{WriteConcernSpec, WriteConcernW};
use crate::namespace::Namespace;

/// What a batch insert did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertOutcome {
    /// Documents inserted.
    pub inserted: u64,
    /// Documents already present (same `_id`), skipped.
    pub duplicates: u64,
    /// Documents a unique secondary index refused (`_id` and the server's message): another
    /// destination document still holds their key, as it did on the source when it was read.
    /// Change application writes them once that document has changed.
    pub deferred: Vec<(Bson, String)>,
}

/// Runs a destination write command (`name` names it in errors). A `writeConcernError` is an
/// error; `writeErrors` are left to the caller.
pub async fn write_command(
    cluster: &Cluster,
    db: &str,
    name: &str,
    command: RawDocumentBuf,
) -> Result<Document, ClusterError> {
    let reply = cluster
        .run_raw(db, command)
        .await
        .map_err(|e| cluster.error(name, &e))?;
    let r = Reply::new(cluster.side(), name, &reply);
    if let Some(wce) = r.opt_doc("writeConcernError")? {
        let wce = r.nested(wce);
        return Err(ClusterError::Command {
            side: cluster.side(),
            command: name.to_owned(),
            code: wce.opt_i32("code")?,
            labels: Vec::new(),
            message: wce
                .opt_str("errmsg")?
                .unwrap_or("write concern error")
                .to_owned(),
        });
    }
    Ok(reply)
}

/// The configured write concern as the `writeConcern` field of a command (built once per run).
pub fn write_concern_document(spec: &WriteConcernSpec) -> RawDocumentBuf {
    let mut d = RawDocumentBuf::new();
    let w = bson::cstr!("w");
    match spec {
        WriteConcernSpec::Tag(t) => d.append(w, t.as_str()),
        WriteConcernSpec::Nodes(n) => d.append(w, i64::from(*n)),
        WriteConcernSpec::Full(table) => {
            match &table.w {
                WriteConcernW::Nodes(n) => d.append(w, i64::from(*n)),
                WriteConcernW::Tag(t) => d.append(w, t.as_str()),
            }
            if let Some(j) = table.journal {
                d.append(bson::cstr!("j"), j);
            }
            if let Some(t) = table.timeout {
                let millis = i64::try_from(t.get().as_millis()).unwrap_or(i64::MAX);
                d.append(bson::cstr!("wtimeout"), millis);
            }
        }
    }
    d
}

/// Documents gathered one by one for an `insert` command, as its `documents` array.
#[derive(Debug, Default)]
pub struct InsertBatch {
    documents: RawArrayBuf,
}

impl InsertBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a copy of `doc`.
    pub fn push(&mut self, doc: &RawDocument) {
        self.documents.push(doc);
    }

    /// The documents, as the command's array.
    pub fn documents(&self) -> &RawArray {
        &self.documents
    }
}

/// The `_id`s of the documents at `indexes` (ascending) of `documents`, in one pass; `None`
/// for an index that names no document with an `_id`.
fn ids_at(documents: &RawArray, indexes: &[usize]) -> Vec<Option<Bson>> {
    let mut wanted = indexes.iter().copied().peekable();
    let mut ids = Vec::with_capacity(indexes.len());
    for (i, element) in documents.into_iter().enumerate() {
        while wanted.next_if(|&w| w == i).is_some() {
            let doc = element.as_ref().ok().and_then(|e| e.as_document());
            ids.push(doc.and_then(super::ddl::raw_id));
        }
        if wanted.peek().is_none() {
            break;
        }
    }
    ids.resize(indexes.len(), None);
    ids
}

/// One refused statement of a write command's reply.
#[derive(Debug, PartialEq)]
pub struct WriteErrorEntry {
    /// The statement's position in the command.
    pub index: usize,
    /// Server code.
    pub code: i32,
    /// Server message.
    pub message: String,
    /// A duplicate key on `_id` (`keyPattern` is `{_id: 1}`), not on a secondary unique index.
    pub on_id: bool,
}

/// The `writeErrors` of a reply to a command of `statements` statements. An error that names
/// no statement sent, or has no code, makes the reply invalid: a refusal this cannot place
/// would be a change silently lost.
pub fn write_errors(
    r: &Reply<'_>,
    statements: usize,
) -> Result<Vec<WriteErrorEntry>, ClusterError> {
    let Some(errors) = r.opt_array("writeErrors")? else {
        return Ok(Vec::new());
    };
    let mut entries = Vec::with_capacity(errors.len());
    for e in errors {
        let Bson::Document(e) = e else {
            return Err(r.invalid("a writeErrors element is not a document"));
        };
        let e = r.nested(e);
        let index = e
            .opt_u64("index")?
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < statements)
            .ok_or_else(|| {
                r.invalid(format!(
                    "a write error names no statement of the {statements} sent"
                ))
            })?;
        let code = e
            .opt_i32("code")?
            .ok_or_else(|| r.invalid("a write error has no `code`"))?;
        let message = e.opt_str("errmsg")?.unwrap_or_default().to_owned();
        let on_id = e
            .opt_doc("keyPattern")?
            .is_some_and(|k| k.keys().eq(["_id"]));
        entries.push(WriteErrorEntry {
            index,
            code,
            message,
            on_id,
        });
    }
    Ok(entries)
}

/// Room left in a batch command for what is appended after its documents (the array's own
/// key, and the run tag `Cluster::run_raw` adds as `comment`).
const APPENDED_FIELDS: usize = 1024;

/// `doc` in a buffer with room for `extra` more bytes. A `Vec` that grows past its capacity
/// doubles it, so appending a batch of megabytes to a small document and then one more field
/// would leave the command holding twice the batch.
fn with_room(doc: RawDocumentBuf, extra: usize) -> RawDocumentBuf {
    let mut bytes = Vec::with_capacity(doc.as_bytes().len() + extra);
    bytes.extend_from_slice(doc.as_bytes());
    // The bytes are those of a valid document, so this cannot fail; if it did, `doc` still
    // serves, only without the room.
    RawDocumentBuf::from_bytes(bytes).unwrap_or(doc)
}

/// Inserts a batch, tolerating documents that are already there (same `_id`).
pub async fn insert_batch(
    cluster: &Cluster,
    namespace: &Namespace,
    documents: &RawArray,
    write_concern: &RawDocument,
) -> Result<InsertOutcome, ClusterError> {
    if documents.is_empty() {
        return Ok(InsertOutcome::default());
    }
    let name = format!("insert {namespace}");
    let mut command = RawDocumentBuf::new();
    command.append(bson::cstr!("insert"), namespace.coll());
    command.append(bson::cstr!("ordered"), false);
    command.append(bson::cstr!("bypassDocumentValidation"), true);
    command.append(bson::cstr!("writeConcern"), write_concern);
    let mut command = with_room(command, documents.as_bytes().len() + APPENDED_FIELDS);
    command.append(bson::cstr!("documents"), documents);
    let reply = write_command(cluster, namespace.db(), &name, command).await?;
    let reply = Reply::new(cluster.side(), &name, &reply);
    let inserted = reply
        .opt_u64("n")?
        .ok_or_else(|| cluster.invalid_reply(&name, "`n` is missing"))?;
    let Some(errors) = reply.opt_array("writeErrors")? else {
        return Ok(InsertOutcome {
            inserted,
            ..InsertOutcome::default()
        });
    };
    // Every refusal must be a duplicate key; then check which refused `_id`s are present.
    let statements = documents.into_iter().count();
    let mut refusals: Vec<(usize, String)> = Vec::with_capacity(errors.len());
    for error in write_errors(&reply, statements)? {
        if error.code != codes::DUPLICATE_KEY {
            return Err(ClusterError::Command {
                side: cluster.side(),
                command: name.clone(),
                code: Some(error.code),
                labels: Vec::new(),
                message: error.message,
            });
        }
        refusals.push((error.index, error.message));
    }
    refusals.sort_by_key(|(index, _)| *index);
    let indexes: Vec<usize> = refusals.iter().map(|(index, _)| *index).collect();
    let mut refused: Vec<(Bson, String)> = Vec::with_capacity(refusals.len());
    for (id, (index, message)) in ids_at(documents, &indexes).into_iter().zip(refusals) {
        let id = id.ok_or_else(|| {
            cluster.invalid_reply(
                &name,
                format!("write error index {index} names no document of the batch"),
            )
        })?;
        refused.push((id, message));
    }
    let present = existing_ids(
        cluster,
        namespace,
        refused.iter().map(|(id, _)| id.clone()).collect(),
    )
    .await?;
    let (duplicates, deferred): (Vec<_>, Vec<_>) = refused
        .into_iter()
        .partition(|(id, _)| present.contains(id));
    Ok(InsertOutcome {
        inserted,
        duplicates: duplicates.len() as u64,
        deferred,
    })
}

/// The `_id`s among `ids` that exist on the destination (as stored there).
async fn existing_ids(
    cluster: &Cluster,
    namespace: &Namespace,
    ids: Vec<Bson>,
) -> Result<Vec<Bson>, ClusterError> {
    let command = format!("find {namespace}");
    let found: Vec<Document> = cluster
        .client()
        .database(namespace.db())
        .collection::<Document>(namespace.coll())
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "_id": 1 })
        .max_time(Duration::from_secs(60))
        .await
        .map_err(|e| cluster.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error(&command, &e))?;
    Ok(found
        .into_iter()
        .filter_map(|mut d| d.remove("_id"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Side;
    use bson::rawdoc;

    fn parse(reply: &Document, statements: usize) -> Result<Vec<WriteErrorEntry>, String> {
        let r = Reply::new(Side::Destination, "update a.b", reply);
        write_errors(&r, statements).map_err(|e| e.to_string())
    }

    #[test]
    fn write_errors_place_each_refusal_and_tell_an_id_duplicate_from_a_unique_index() {
        let reply = doc! {
            "n": 1, "ok": 1,
            "writeErrors": [
                {"index": 0, "code": 11000, "errmsg": "dup", "keyPattern": {"email": 1}},
                {"index": 2_i64, "code": 11000, "errmsg": "dup id", "keyPattern": {"_id": 1}},
            ],
        };
        let entries = parse(&reply, 3).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].index, entries[0].code, entries[0].on_id),
            (0, 11000, false)
        );
        assert_eq!((entries[1].index, entries[1].on_id), (2, true));
        assert_eq!(entries[1].message, "dup id");
        assert!(parse(&doc! {"n": 3, "ok": 1}, 3).unwrap().is_empty());
    }

    #[test]
    fn a_write_error_that_names_no_statement_or_code_makes_the_reply_invalid() {
        for (error, expected) in [
            (doc! {"code": 11000}, "names no statement of the 2 sent"),
            (
                doc! {"index": 2, "code": 11000},
                "names no statement of the 2 sent",
            ),
            (doc! {"index": -1, "code": 11000}, "`index`"),
            (doc! {"index": 0.5, "code": 11000}, "`index`"),
            (doc! {"index": 1}, "has no `code`"),
            (doc! {"index": 1, "code": "E11000"}, "`code`"),
        ] {
            let reply = doc! {"n": 0, "ok": 1, "writeErrors": [error.clone()]};
            let e = parse(&reply, 2).unwrap_err();
            assert!(e.contains(expected), "{error}: {e}");
            assert!(e.contains("update a.b"), "{e}");
        }
        let e = parse(&doc! {"ok": 1, "writeErrors": [1]}, 2).unwrap_err();
        assert!(e.contains("not a document"), "{e}");
    }

    #[test]
    fn write_concerns_become_the_command_field() {
        use crate::config::HumanDuration;
        use crate::config::model::WriteConcernTable;
        let tag = write_concern_document(&WriteConcernSpec::Tag("majority".to_owned()));
        assert_eq!(tag, rawdoc! { "w": "majority" });
        let nodes = write_concern_document(&WriteConcernSpec::Nodes(2));
        assert_eq!(nodes, rawdoc! { "w": 2_i64 });
        let full = write_concern_document(&WriteConcernSpec::Full(WriteConcernTable {
            w: WriteConcernW::Tag("dc".to_owned()),
            journal: Some(true),
            timeout: Some(HumanDuration(std::time::Duration::from_secs(30))),
        }));
        assert_eq!(
            full,
            rawdoc! { "w": "dc", "j": true, "wtimeout": 30_000_i64 }
        );
    }

    #[test]
    fn refused_indexes_map_to_the_ids_of_the_batch() {
        let mut batch = InsertBatch::new();
        for i in 0..5 {
            batch.push(&rawdoc! { "_id": i * 10 });
        }
        assert_eq!(
            ids_at(batch.documents(), &[0, 3, 3, 4, 9]),
            vec![
                Some(Bson::Int32(0)),
                Some(Bson::Int32(30)),
                Some(Bson::Int32(30)),
                Some(Bson::Int32(40)),
                None
            ]
        );
        assert!(ids_at(InsertBatch::new().documents(), &[0]) == vec![None]);
    }
}
