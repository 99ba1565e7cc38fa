//! Document writes to the destination.
//!
//! Inserts are unordered batches of raw documents (never decoded), with
//! `bypassDocumentValidation` (the source's documents are the truth even when the validator
//! copied from the source would refuse some of them, as the server itself allows for
//! documents that predate a validator) and the configured write concern.
//!
//! Duplicate-key errors are expected after a resume (the resumed range starts at the last
//! acknowledged `_id`, and a crash may have come after an insert but before its checkpoint).
//! A duplicate on `_id` means the document is already there and is counted; a duplicate on a
//! unique *secondary* index is a real conflict. The driver does not expose which index
//! refused a document, so the decision is made by asking the destination whether each refused
//! `_id` exists — never by reading the error message.

use std::time::Duration;

use bson::{Bson, Document, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, WriteConcern};

use crate::cluster::{Cluster, ClusterError, codes};
use crate::config::model::{WriteConcernSpec, WriteConcernW};
use crate::namespace::Namespace;

/// What a batch insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Documents inserted.
    pub inserted: u64,
    /// Documents already present (same `_id`), skipped.
    pub duplicates: u64,
}

/// A write failure that is not transient.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The destination refused the write.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A unique secondary index refused a document that is not on the destination yet.
    #[error(
        "{namespace}: the document with _id {id} conflicts with a unique index on the destination: {message}"
    )]
    UniqueConflict {
        /// The destination namespace.
        namespace: Namespace,
        /// The document's `_id` (relaxed Extended JSON).
        id: String,
        /// The server's message (names the index and key).
        message: String,
    },
}

/// The driver write concern for the configured one.
pub fn write_concern(spec: &WriteConcernSpec) -> WriteConcern {
    let w = |w: &WriteConcernW| match w {
        WriteConcernW::Nodes(n) => Acknowledgment::Nodes(*n),
        WriteConcernW::Tag(t) if t == "majority" => Acknowledgment::Majority,
        WriteConcernW::Tag(t) => Acknowledgment::Custom(t.clone()),
    };
    match spec {
        WriteConcernSpec::Tag(t) if t == "majority" => WriteConcern::majority(),
        WriteConcernSpec::Tag(t) => WriteConcern::custom(t.clone()),
        WriteConcernSpec::Nodes(n) => WriteConcern::nodes(*n),
        WriteConcernSpec::Full(table) => WriteConcern::builder()
            .w(w(&table.w))
            .journal(table.journal)
            .w_timeout(table.timeout.map(|d| d.get()))
            .build(),
    }
}

/// The configured write concern as the `writeConcern` field of a command.
pub fn write_concern_document(spec: &WriteConcernSpec) -> Document {
    let w = |w: &WriteConcernW| match w {
        WriteConcernW::Nodes(n) => Bson::Int64(i64::from(*n)),
        WriteConcernW::Tag(t) => Bson::String(t.clone()),
    };
    match spec {
        WriteConcernSpec::Tag(t) => doc! { "w": t.clone() },
        WriteConcernSpec::Nodes(n) => doc! { "w": i64::from(*n) },
        WriteConcernSpec::Full(table) => {
            let mut d = doc! { "w": w(&table.w) };
            if let Some(j) = table.journal {
                d.insert("j", j);
            }
            if let Some(t) = table.timeout {
                d.insert(
                    "wtimeout",
                    i64::try_from(t.get().as_millis()).unwrap_or(i64::MAX),
                );
            }
            d
        }
    }
}

/// Inserts a batch, tolerating documents that are already there.
pub async fn insert_batch(
    cluster: &Cluster,
    coll: &Collection<RawDocumentBuf>,
    namespace: &Namespace,
    docs: &[RawDocumentBuf],
    write_concern: &WriteConcern,
) -> Result<InsertOutcome, WriteError> {
    if docs.is_empty() {
        return Ok(InsertOutcome::default());
    }
    let command = format!("insert {namespace}");
    let result = coll
        .insert_many(docs)
        .ordered(false)
        .bypass_document_validation(true)
        .write_concern(write_concern.clone())
        .await;
    let err = match result {
        Ok(r) => {
            return Ok(InsertOutcome {
                inserted: r.inserted_ids.len() as u64,
                duplicates: 0,
            });
        }
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        return Err(cluster.error(&command, &err).into());
    };
    if let Some(wce) = &failure.write_concern_error {
        return Err(WriteError::Cluster(ClusterError::Command {
            side: cluster.side(),
            command,
            code: Some(wce.code),
            labels: err.labels().iter().cloned().collect(),
            message: wce.message.clone(),
        }));
    }
    let write_errors = failure.write_errors.as_deref().unwrap_or_default();
    if let Some(other) = write_errors.iter().find(|e| e.code != codes::DUPLICATE_KEY) {
        return Err(WriteError::Cluster(ClusterError::Command {
            side: cluster.side(),
            command,
            code: Some(other.code),
            labels: Vec::new(),
            message: other.message.clone(),
        }));
    }
    // Every refusal is a duplicate key: check which refused `_id`s are really present.
    let refused: Vec<(Bson, &str)> = write_errors
        .iter()
        .filter_map(|e| {
            let doc = docs.get(e.index)?;
            let id = Bson::try_from(doc.get("_id").ok().flatten()?).ok()?;
            Some((id, e.message.as_str()))
        })
        .collect();
    let present = existing_ids(
        cluster,
        coll,
        namespace,
        refused.iter().map(|(id, _)| id.clone()).collect(),
    )
    .await?;
    for (id, message) in &refused {
        if !present.iter().any(|p| p == id) {
            return Err(WriteError::UniqueConflict {
                namespace: namespace.clone(),
                id: id.clone().into_relaxed_extjson().to_string(),
                message: (*message).to_owned(),
            });
        }
    }
    let duplicates = refused.len() as u64;
    Ok(InsertOutcome {
        inserted: docs.len() as u64 - duplicates,
        duplicates,
    })
}

/// The `_id`s among `ids` that exist on the destination (as stored there).
async fn existing_ids(
    cluster: &Cluster,
    coll: &Collection<RawDocumentBuf>,
    namespace: &Namespace,
    ids: Vec<Bson>,
) -> Result<Vec<Bson>, WriteError> {
    let command = format!("find {namespace}");
    let found: Vec<Document> = coll
        .clone_with_type::<Document>()
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
