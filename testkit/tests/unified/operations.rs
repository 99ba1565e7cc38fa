//! The operations of the unified format, mapped onto the Rust driver.
//!
//! Options are deserialized into the driver's own option types after checking that every
//! argument is one this runner applies; an argument it cannot apply fails the test instead of
//! being ignored. The Rust driver has no collection-level `bulkWrite`, so that operation sends
//! the batched `insert`/`update`/`delete` commands a driver would send, through `runCommand`.

use crate::ejson::Value;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::UpdateModifications;
use mongodb::{Client, IndexModel};
use mongoshift_testkit::TestServerHandle;
use serde::de::DeserializeOwned;

use crate::{Entities, ejson, matcher};

/// A change stream entity (events as raw documents, so every field can be matched).
pub type Stream = ChangeStream<Document>;

/// How an operation failed.
pub enum OpError {
    /// The driver returned an error (from the server or the client side).
    Driver(Error),
    /// A collection `bulkWrite` run by this runner failed on the server.
    Bulk {
        code: i32,
        code_name: Option<String>,
        message: String,
        partial: Document,
    },
    /// The runner could not perform the operation as specified.
    Runner(String),
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Driver(e)
    }
}

impl From<&str> for OpError {
    fn from(e: &str) -> Self {
        OpError::Runner(e.to_string())
    }
}

impl From<String> for OpError {
    fn from(e: String) -> Self {
        OpError::Runner(e)
    }
}

type OpResult = Result<Option<Bson>, OpError>;

/// Removes and returns an argument.
fn take(args: &mut Document, key: &str) -> Option<Bson> {
    args.remove(key)
}

fn take_doc(args: &mut Document, key: &str) -> Result<Document, String> {
    match args.remove(key) {
        Some(Bson::Document(d)) => Ok(d),
        Some(other) => Err(format!("argument {key} must be a document, got {other}")),
        None => Err(format!("missing argument {key}")),
    }
}

/// Deserializes the remaining arguments into a driver options type, refusing arguments this
/// runner does not apply.
pub fn options<T: DeserializeOwned + Default>(
    args: Document,
    allowed: &[&str],
) -> Result<T, String> {
    for k in args.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unsupported: argument '{k}' is not applied by this runner"
            ));
        }
    }
    if args.is_empty() {
        return Ok(T::default());
    }
    mongodb::bson::deserialize_from_document(args).map_err(|e| format!("options: {e}"))
}

fn modifications(update: Bson) -> Result<UpdateModifications, String> {
    match update {
        Bson::Document(d) => Ok(UpdateModifications::Document(d)),
        Bson::Array(stages) => Ok(UpdateModifications::Pipeline(
            stages
                .into_iter()
                .map(|s| match s {
                    Bson::Document(d) => Ok(d),
                    _ => Err("pipeline stages must be documents".to_string()),
                })
                .collect::<Result<_, _>>()?,
        )),
        other => Err(format!("bad update {other}")),
    }
}

fn count(n: u64) -> Bson {
    Bson::Int64(n as i64)
}

/// Runs one operation and checks its expectations.
pub async fn run(
    server: &TestServerHandle,
    internal: &Client,
    op: &Value,
    entities: &mut Entities,
) -> Result<(), String> {
    crate::only_keys(
        "operation",
        op,
        &[
            "name",
            "object",
            "arguments",
            "expectError",
            "expectResult",
            "saveResultAsEntity",
            "ignoreResultAndError",
        ],
    )?;
    let name = op["name"].as_str().ok_or("operation without name")?;
    let object = op["object"].as_str().ok_or("operation without object")?;
    let args = match op.get("arguments") {
        Some(a) => ejson::to_document(a)?,
        None => Document::new(),
    };
    let result = execute(server, internal, name, object, args, entities).await;
    let ignore = op
        .get("ignoreResultAndError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match (result, op.get("expectError")) {
        (Err(OpError::Runner(e)), Some(spec)) if e.starts_with("client: ") => {
            check_error(spec, &OpError::Runner(e), entities)
        }
        (Err(OpError::Runner(e)), _) => Err(e),
        (Ok(value), None) => {
            if let Some(expected) = op.get("expectResult") {
                let expected = ejson::to_bson(expected)?;
                matcher::matches_root(&expected, value.as_ref(), &entities.values)?;
            }
            if let Some(save) = op.get("saveResultAsEntity").and_then(Value::as_str) {
                if let Some(stream) = entities.pending_stream.take() {
                    entities.streams.insert(save.to_string(), stream);
                } else if let Some(v) = value {
                    entities.values.insert(save.to_string(), v);
                }
            }
            entities.pending_stream = None;
            Ok(())
        }
        (Ok(value), Some(_)) => Err(format!("expected an error, got {value:?}")),
        (Err(e), Some(spec)) => check_error(spec, &e, entities),
        (Err(_), None) if ignore => Ok(()),
        (Err(OpError::Driver(e)), None) => Err(format!("unexpected error: {e}")),
        (Err(OpError::Bulk { message, .. }), None) => Err(format!("unexpected error: {message}")),
    }
}

/// Server-side facts of an error.
struct ErrorFacts {
    client_side: bool,
    code: Option<i32>,
    code_name: Option<String>,
    message: String,
    labels: Vec<String>,
    response: Option<Document>,
    partial: Option<Document>,
}

fn facts(e: &OpError) -> ErrorFacts {
    match e {
        OpError::Bulk {
            code,
            code_name,
            message,
            partial,
        } => ErrorFacts {
            client_side: false,
            code: Some(*code),
            code_name: code_name.clone(),
            message: message.clone(),
            labels: Vec::new(),
            response: None,
            partial: Some(partial.clone()),
        },
        OpError::Runner(m) => ErrorFacts {
            client_side: true,
            code: None,
            code_name: None,
            message: m.clone(),
            labels: Vec::new(),
            response: None,
            partial: None,
        },
        OpError::Driver(err) => {
            let (client_side, code, code_name) = match err.kind.as_ref() {
                ErrorKind::Command(c) => (false, Some(c.code), Some(c.code_name.clone())),
                ErrorKind::Write(WriteFailure::WriteError(w)) => {
                    (false, Some(w.code), w.code_name.clone())
                }
                ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
                    (false, Some(w.code), Some(w.code_name.clone()))
                }
                ErrorKind::InsertMany(i) => match (&i.write_errors, &i.write_concern_error) {
                    (Some(errs), _) if !errs.is_empty() => {
                        (false, Some(errs[0].code), errs[0].code_name.clone())
                    }
                    (_, Some(w)) => (false, Some(w.code), Some(w.code_name.clone())),
                    _ => (false, None, None),
                },
                ErrorKind::BulkWrite(_) => (false, None, None),
                _ => (true, None, None),
            };
            ErrorFacts {
                client_side,
                code,
                code_name,
                message: err.to_string(),
                labels: err.labels().iter().cloned().collect(),
                response: err
                    .server_response()
                    .and_then(|r| Document::try_from(r.clone()).ok()),
                partial: None,
            }
        }
    }
}

fn check_error(spec: &Value, e: &OpError, entities: &Entities) -> Result<(), String> {
    let f = facts(e);
    let spec = spec.as_object().ok_or("expectError must be an object")?;
    for (k, v) in spec {
        match k.as_str() {
            "isError" => {}
            "isClientError" => {
                if v.as_bool() != Some(f.client_side) {
                    return Err(format!("isClientError {v} but error was: {}", f.message));
                }
            }
            "errorCode" => {
                if v.as_i64().map(|c| c as i32) != f.code {
                    return Err(format!(
                        "expected code {v}, got {:?}: {}",
                        f.code, f.message
                    ));
                }
            }
            "errorCodeName" => {
                if v.as_str() != f.code_name.as_deref() {
                    return Err(format!(
                        "expected code name {v}, got {:?}: {}",
                        f.code_name, f.message
                    ));
                }
            }
            "errorContains" => {
                let needle = v.as_str().ok_or("errorContains")?.to_lowercase();
                if !f.message.to_lowercase().contains(&needle) {
                    return Err(format!("error '{}' does not contain '{needle}'", f.message));
                }
            }
            "errorLabelsContain" => {
                for l in v.as_array().ok_or("errorLabelsContain")? {
                    let l = l.as_str().unwrap_or_default();
                    if !f.labels.iter().any(|x| x == l) {
                        return Err(format!("missing label {l}; labels {:?}", f.labels));
                    }
                }
            }
            "errorLabelsOmit" => {
                for l in v.as_array().ok_or("errorLabelsOmit")? {
                    let l = l.as_str().unwrap_or_default();
                    if f.labels.iter().any(|x| x == l) {
                        return Err(format!("unexpected label {l}"));
                    }
                }
            }
            "errorResponse" => {
                let expected = ejson::to_bson(v)?;
                let actual = f.response.clone().map(Bson::Document);
                matcher::matches_root(&expected, actual.as_ref(), &entities.values)
                    .map_err(|m| format!("errorResponse: {m}"))?;
            }
            "expectResult" => {
                let expected = ejson::to_bson(v)?;
                let actual = f.partial.clone().map(Bson::Document);
                matcher::matches_root(&expected, actual.as_ref(), &entities.values)
                    .map_err(|m| format!("partial result: {m}"))?;
            }
            other => return Err(format!("unsupported: expectError.{other}")),
        }
    }
    Ok(())
}

async fn execute(
    server: &TestServerHandle,
    internal: &Client,
    name: &str,
    object: &str,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    if args.contains_key("session") {
        return Err(OpError::Runner(
            "unsupported: sessions are not supported by this runner".into(),
        ));
    }
    if object == "testRunner" {
        return test_runner(server, internal, name, args, entities).await;
    }
    if let Some(coll) = entities.collections.get(object).cloned() {
        return collection_op(&coll, name, args, entities).await;
    }
    if let Some(db) = entities.databases.get(object).cloned() {
        return database_op(&db, name, args, entities).await;
    }
    if entities.clients.contains_key(object) {
        let client = entities.clients[object].client.clone();
        return client_op(&client, name, args, entities).await;
    }
    if entities.streams.contains_key(object) {
        return stream_op(object, name, entities).await;
    }
    let _ = &mut args;
    Err(OpError::Runner(format!("unknown object {object}")))
}

async fn test_runner(
    _server: &TestServerHandle,
    internal: &Client,
    name: &str,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    match name {
        "failPoint" => {
            let client = take(&mut args, "client").and_then(|c| c.as_str().map(str::to_string));
            let fp = take_doc(&mut args, "failPoint")?;
            let client = client
                .and_then(|c| entities.clients.get(&c).map(|e| e.client.clone()))
                .ok_or("failPoint: unknown client")?;
            client.database("admin").run_command(fp).await?;
            Ok(None)
        }
        "assertCollectionExists" | "assertCollectionNotExists" => {
            let db = take(&mut args, "databaseName")
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or("databaseName")?;
            let coll = take(&mut args, "collectionName")
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or("collectionName")?;
            let names = internal.database(&db).list_collection_names().await?;
            let exists = names.contains(&coll);
            if exists != (name == "assertCollectionExists") {
                return Err(OpError::Runner(format!("{name} failed for {db}.{coll}")));
            }
            Ok(None)
        }
        "assertIndexExists" | "assertIndexNotExists" => {
            let db = take(&mut args, "databaseName")
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or("databaseName")?;
            let coll = take(&mut args, "collectionName")
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or("collectionName")?;
            let index = take(&mut args, "indexName")
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or("indexName")?;
            let names = internal
                .database(&db)
                .collection::<Document>(&coll)
                .list_index_names()
                .await
                .unwrap_or_default();
            if names.contains(&index) != (name == "assertIndexExists") {
                return Err(OpError::Runner(format!("{name} failed for {index}")));
            }
            Ok(None)
        }
        other => Err(OpError::Runner(format!(
            "unsupported: testRunner operation {other}"
        ))),
    }
}

async fn client_op(
    client: &Client,
    name: &str,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    match name {
        "listDatabases" | "listDatabaseNames" => {
            let filter = take(&mut args, "filter").and_then(|f| f.as_document().cloned());
            let _: mongodb::options::ListDatabasesOptions =
                options(args, &["nameOnly", "authorizedDatabases"])?;
            let names = match filter {
                Some(f) => client.list_database_names().filter(f).await?,
                None => client.list_database_names().await?,
            };
            Ok(Some(Bson::Array(
                names.into_iter().map(Bson::String).collect(),
            )))
        }
        "createChangeStream" => {
            create_stream(StreamSource::Client(client.clone()), args, entities).await
        }
        other => Err(OpError::Runner(format!(
            "unsupported: client operation {other}"
        ))),
    }
}

async fn database_op(
    db: &mongodb::Database,
    name: &str,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    match name {
        "runCommand" => {
            let command = take_doc(&mut args, "command")?;
            take(&mut args, "commandName");
            if !args.is_empty() {
                return Err(OpError::Runner(format!(
                    "unsupported: runCommand arguments {args}"
                )));
            }
            Ok(Some(Bson::Document(db.run_command(command).await?)))
        }
        "createCollection" => {
            let coll = take(&mut args, "collection")
                .and_then(|c| c.as_str().map(str::to_string))
                .ok_or("collection")?;
            let opts: mongodb::options::CreateCollectionOptions = options(
                args,
                &[
                    "capped",
                    "size",
                    "max",
                    "validator",
                    "validationLevel",
                    "validationAction",
                    "viewOn",
                    "pipeline",
                    "collation",
                    "clusteredIndex",
                    "timeseries",
                    "expireAfterSeconds",
                    "changeStreamPreAndPostImages",
                    "indexOptionDefaults",
                    "storageEngine",
                    "comment",
                ],
            )?;
            db.create_collection(&coll).with_options(opts).await?;
            Ok(None)
        }
        "dropCollection" => {
            let coll = take(&mut args, "collection")
                .and_then(|c| c.as_str().map(str::to_string))
                .ok_or("collection")?;
            let opts: mongodb::options::DropCollectionOptions = options(args, &["comment"])?;
            db.collection::<Document>(&coll)
                .drop()
                .with_options(opts)
                .await?;
            Ok(None)
        }
        "listCollections" | "listCollectionNames" => {
            let filter = take(&mut args, "filter")
                .and_then(|f| f.as_document().cloned())
                .unwrap_or_default();
            if !args.is_empty() {
                return Err(OpError::Runner(format!(
                    "unsupported: listCollections arguments {args}"
                )));
            }
            let docs: Vec<Document> = db
                .run_cursor_command(doc! {"listCollections": 1, "filter": filter})
                .await?
                .try_collect()
                .await?;
            if name == "listCollectionNames" {
                return Ok(Some(Bson::Array(
                    docs.iter().filter_map(|d| d.get("name").cloned()).collect(),
                )));
            }
            Ok(Some(Bson::Array(
                docs.into_iter().map(Bson::Document).collect(),
            )))
        }
        "modifyCollection" => {
            let coll = take(&mut args, "collection")
                .and_then(|c| c.as_str().map(str::to_string))
                .ok_or("collection")?;
            let mut command = doc! {"collMod": coll};
            command.extend(args);
            db.run_command(command).await?;
            Ok(None)
        }
        "aggregate" => {
            let pipeline = pipeline_arg(&mut args)?;
            let opts: mongodb::options::AggregateOptions = options(
                args,
                &[
                    "allowDiskUse",
                    "batchSize",
                    "bypassDocumentValidation",
                    "collation",
                    "comment",
                    "let",
                    "maxTimeMS",
                    "hint",
                ],
            )?;
            let docs: Vec<Document> = db
                .aggregate(pipeline)
                .with_options(opts)
                .await?
                .try_collect()
                .await?;
            Ok(Some(Bson::Array(
                docs.into_iter().map(Bson::Document).collect(),
            )))
        }
        "createChangeStream" => {
            create_stream(StreamSource::Database(db.clone()), args, entities).await
        }
        other => Err(OpError::Runner(format!(
            "unsupported: database operation {other}"
        ))),
    }
}

fn pipeline_arg(args: &mut Document) -> Result<Vec<Document>, String> {
    match take(args, "pipeline") {
        Some(Bson::Array(a)) => a
            .into_iter()
            .map(|s| match s {
                Bson::Document(d) => Ok(d),
                _ => Err("pipeline stages must be documents".to_string()),
            })
            .collect(),
        _ => Err("missing pipeline".into()),
    }
}

async fn collection_op(
    coll: &mongodb::Collection<Document>,
    name: &str,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    match name {
        "find" => {
            let filter = take_doc(&mut args, "filter").unwrap_or_default();
            let opts: mongodb::options::FindOptions = options(
                args,
                &[
                    "sort",
                    "projection",
                    "skip",
                    "limit",
                    "batchSize",
                    "hint",
                    "min",
                    "max",
                    "comment",
                    "collation",
                    "let",
                    "allowDiskUse",
                    "maxTimeMS",
                    "returnKey",
                    "showRecordId",
                    "noCursorTimeout",
                    "allowPartialResults",
                ],
            )?;
            let docs: Vec<Document> = coll
                .find(filter)
                .with_options(opts)
                .await?
                .try_collect()
                .await?;
            Ok(Some(Bson::Array(
                docs.into_iter().map(Bson::Document).collect(),
            )))
        }
        "findOne" => {
            let filter = take_doc(&mut args, "filter").unwrap_or_default();
            let opts: mongodb::options::FindOneOptions = options(
                args,
                &[
                    "sort",
                    "projection",
                    "skip",
                    "hint",
                    "comment",
                    "collation",
                    "let",
                    "maxTimeMS",
                    "min",
                    "max",
                    "returnKey",
                    "showRecordId",
                ],
            )?;
            Ok(Some(
                coll.find_one(filter)
                    .with_options(opts)
                    .await?
                    .map_or(Bson::Null, Bson::Document),
            ))
        }
        "aggregate" => {
            let pipeline = pipeline_arg(&mut args)?;
            let opts: mongodb::options::AggregateOptions = options(
                args,
                &[
                    "allowDiskUse",
                    "batchSize",
                    "bypassDocumentValidation",
                    "collation",
                    "comment",
                    "let",
                    "maxTimeMS",
                    "hint",
                ],
            )?;
            let docs: Vec<Document> = coll
                .aggregate(pipeline)
                .with_options(opts)
                .await?
                .try_collect()
                .await?;
            Ok(Some(Bson::Array(
                docs.into_iter().map(Bson::Document).collect(),
            )))
        }
        "countDocuments" => {
            let filter = take_doc(&mut args, "filter").unwrap_or_default();
            let opts: mongodb::options::CountOptions = options(
                args,
                &["skip", "limit", "hint", "collation", "comment", "maxTimeMS"],
            )?;
            Ok(Some(count(
                coll.count_documents(filter).with_options(opts).await?,
            )))
        }
        "estimatedDocumentCount" => {
            let opts: mongodb::options::EstimatedDocumentCountOptions =
                options(args, &["comment", "maxTimeMS"])?;
            Ok(Some(count(
                coll.estimated_document_count().with_options(opts).await?,
            )))
        }
        "count" => {
            let mut command = doc! {"count": coll.name()};
            if let Some(f) = take(&mut args, "filter") {
                command.insert("query", f);
            }
            for k in ["skip", "limit", "collation", "comment", "hint"] {
                if let Some(v) = take(&mut args, k) {
                    command.insert(k, v);
                }
            }
            if !args.is_empty() {
                return Err(OpError::Runner(format!(
                    "unsupported: count arguments {args}"
                )));
            }
            let reply = coll
                .client()
                .database(&coll.namespace().db)
                .run_command(command)
                .await?;
            Ok(Some(reply.get("n").cloned().unwrap_or(Bson::Null)))
        }
        "distinct" => {
            let field = take(&mut args, "fieldName")
                .and_then(|f| f.as_str().map(str::to_string))
                .ok_or("fieldName")?;
            let filter = take_doc(&mut args, "filter").unwrap_or_default();
            let opts: mongodb::options::DistinctOptions =
                options(args, &["collation", "comment", "hint", "maxTimeMS"])?;
            Ok(Some(Bson::Array(
                coll.distinct(field, filter).with_options(opts).await?,
            )))
        }
        "insertOne" => {
            let document = take_doc(&mut args, "document")?;
            let opts: mongodb::options::InsertOneOptions =
                options(args, &["bypassDocumentValidation", "comment"])?;
            let r = coll.insert_one(document).with_options(opts).await?;
            Ok(Some(Bson::Document(doc! {"insertedId": r.inserted_id})))
        }
        "insertMany" => {
            let docs: Vec<Document> = match take(&mut args, "documents") {
                Some(Bson::Array(a)) => a
                    .into_iter()
                    .filter_map(|d| d.as_document().cloned())
                    .collect(),
                _ => return Err(OpError::Runner("missing documents".into())),
            };
            let opts: mongodb::options::InsertManyOptions =
                options(args, &["ordered", "bypassDocumentValidation", "comment"])?;
            let r = coll.insert_many(docs).with_options(opts).await?;
            let mut ids = Document::new();
            let mut keys: Vec<_> = r.inserted_ids.keys().copied().collect();
            keys.sort_unstable();
            for k in keys {
                ids.insert(k.to_string(), r.inserted_ids[&k].clone());
            }
            Ok(Some(Bson::Document(doc! {"insertedIds": ids})))
        }
        "updateOne" | "updateMany" | "replaceOne" => {
            let filter = take_doc(&mut args, "filter")?;
            let result = if name == "replaceOne" {
                let replacement = take_doc(&mut args, "replacement")?;
                let opts: mongodb::options::ReplaceOptions = options(
                    args,
                    &[
                        "upsert",
                        "bypassDocumentValidation",
                        "collation",
                        "hint",
                        "let",
                        "comment",
                    ],
                )?;
                coll.replace_one(filter, replacement)
                    .with_options(opts)
                    .await?
            } else {
                let update = modifications(take(&mut args, "update").ok_or("missing update")?)?;
                let opts: mongodb::options::UpdateOptions = options(
                    args,
                    &[
                        "upsert",
                        "arrayFilters",
                        "bypassDocumentValidation",
                        "collation",
                        "hint",
                        "let",
                        "comment",
                    ],
                )?;
                if name == "updateOne" {
                    coll.update_one(filter, update).with_options(opts).await?
                } else {
                    coll.update_many(filter, update).with_options(opts).await?
                }
            };
            let mut d = doc! {
                "matchedCount": count(result.matched_count),
                "modifiedCount": count(result.modified_count),
                "upsertedCount": i64::from(result.upserted_id.is_some()),
            };
            if let Some(id) = result.upserted_id {
                d.insert("upsertedId", id);
            }
            Ok(Some(Bson::Document(d)))
        }
        "deleteOne" | "deleteMany" => {
            let filter = take_doc(&mut args, "filter")?;
            let opts: mongodb::options::DeleteOptions =
                options(args, &["collation", "hint", "let", "comment"])?;
            let r = if name == "deleteOne" {
                coll.delete_one(filter).with_options(opts).await?
            } else {
                coll.delete_many(filter).with_options(opts).await?
            };
            Ok(Some(Bson::Document(
                doc! {"deletedCount": count(r.deleted_count)},
            )))
        }
        "findOneAndDelete" => {
            let filter = take_doc(&mut args, "filter")?;
            let opts: mongodb::options::FindOneAndDeleteOptions = options(
                args,
                &[
                    "sort",
                    "projection",
                    "collation",
                    "hint",
                    "let",
                    "comment",
                    "maxTimeMS",
                ],
            )?;
            Ok(Some(
                coll.find_one_and_delete(filter)
                    .with_options(opts)
                    .await?
                    .map_or(Bson::Null, Bson::Document),
            ))
        }
        "findOneAndReplace" => {
            let filter = take_doc(&mut args, "filter")?;
            let replacement = take_doc(&mut args, "replacement")?;
            let opts: mongodb::options::FindOneAndReplaceOptions = options(
                args,
                &[
                    "sort",
                    "projection",
                    "collation",
                    "hint",
                    "let",
                    "comment",
                    "upsert",
                    "returnDocument",
                    "bypassDocumentValidation",
                    "maxTimeMS",
                ],
            )?;
            Ok(Some(
                coll.find_one_and_replace(filter, replacement)
                    .with_options(opts)
                    .await?
                    .map_or(Bson::Null, Bson::Document),
            ))
        }
        "findOneAndUpdate" => {
            let filter = take_doc(&mut args, "filter")?;
            let update = modifications(take(&mut args, "update").ok_or("missing update")?)?;
            let opts: mongodb::options::FindOneAndUpdateOptions = options(
                args,
                &[
                    "sort",
                    "projection",
                    "collation",
                    "hint",
                    "let",
                    "comment",
                    "upsert",
                    "returnDocument",
                    "bypassDocumentValidation",
                    "arrayFilters",
                    "maxTimeMS",
                ],
            )?;
            Ok(Some(
                coll.find_one_and_update(filter, update)
                    .with_options(opts)
                    .await?
                    .map_or(Bson::Null, Bson::Document),
            ))
        }
        "bulkWrite" => bulk_write(coll, args).await,
        "createIndex" => {
            let keys = take_doc(&mut args, "keys")?;
            let opts: mongodb::options::IndexOptions = options(
                args,
                &[
                    "name",
                    "unique",
                    "sparse",
                    "expireAfterSeconds",
                    "partialFilterExpression",
                    "hidden",
                    "collation",
                ],
            )?;
            let r = coll
                .create_index(IndexModel::builder().keys(keys).options(opts).build())
                .await?;
            Ok(Some(Bson::String(r.index_name)))
        }
        "dropIndex" => {
            let index = take(&mut args, "name")
                .and_then(|n| n.as_str().map(str::to_string))
                .ok_or("name")?;
            coll.drop_index(index).await?;
            Ok(None)
        }
        "listIndexes" => {
            if !args.is_empty() {
                return Err(OpError::Runner(format!(
                    "unsupported: listIndexes arguments {args}"
                )));
            }
            let docs: Vec<Document> = coll
                .client()
                .database(&coll.namespace().db)
                .run_cursor_command(doc! {"listIndexes": coll.name()})
                .await?
                .try_collect()
                .await?;
            Ok(Some(Bson::Array(
                docs.into_iter().map(Bson::Document).collect(),
            )))
        }
        "rename" => {
            let to = take(&mut args, "to")
                .and_then(|t| t.as_str().map(str::to_string))
                .ok_or("to")?;
            let mut command = doc! {
                "renameCollection": coll.namespace().to_string(),
                "to": format!("{}.{to}", coll.namespace().db),
            };
            if let Some(d) = take(&mut args, "dropTarget") {
                command.insert("dropTarget", d);
            }
            if !args.is_empty() {
                return Err(OpError::Runner(format!(
                    "unsupported: rename arguments {args}"
                )));
            }
            coll.client().database("admin").run_command(command).await?;
            Ok(None)
        }
        "createChangeStream" => {
            create_stream(StreamSource::Collection(coll.clone()), args, entities).await
        }
        other => Err(OpError::Runner(format!(
            "unsupported: collection operation {other}"
        ))),
    }
}

/// One request of a collection `bulkWrite`, as a write-command statement.
struct Statement {
    kind: &'static str,
    body: Document,
    index: usize,
}

async fn bulk_write(coll: &mongodb::Collection<Document>, mut args: Document) -> OpResult {
    let requests = match take(&mut args, "requests") {
        Some(Bson::Array(r)) => r,
        _ => return Err(OpError::Runner("missing requests".into())),
    };
    let ordered = take(&mut args, "ordered")
        .and_then(|o| o.as_bool())
        .unwrap_or(true);
    let mut common = Document::new();
    for k in ["bypassDocumentValidation", "comment", "let"] {
        if let Some(v) = take(&mut args, k) {
            common.insert(k, v);
        }
    }
    if !args.is_empty() {
        return Err(OpError::Runner(format!(
            "unsupported: bulkWrite arguments {args}"
        )));
    }
    let mut statements = Vec::new();
    let mut inserted_ids = Document::new();
    for (index, request) in requests.into_iter().enumerate() {
        let Bson::Document(request) = request else {
            return Err(OpError::Runner("bad request".into()));
        };
        let (kind, spec) = request.into_iter().next().ok_or("empty request")?;
        let Bson::Document(mut spec) = spec else {
            return Err(OpError::Runner("bad request".into()));
        };
        let statement = match kind.as_str() {
            "insertOne" => {
                let mut document = take_doc(&mut spec, "document")?;
                if !document.contains_key("_id") {
                    let mut with_id = doc! {"_id": ObjectId::new()};
                    with_id.extend(document);
                    document = with_id;
                }
                inserted_ids.insert(
                    index.to_string(),
                    document.get("_id").cloned().unwrap_or(Bson::Null),
                );
                Statement {
                    kind: "insert",
                    body: document,
                    index,
                }
            }
            "updateOne" | "updateMany" | "replaceOne" => {
                let mut body = doc! {"q": take_doc(&mut spec, "filter")?};
                let u = if kind == "replaceOne" {
                    Bson::Document(take_doc(&mut spec, "replacement")?)
                } else {
                    take(&mut spec, "update").ok_or("missing update")?
                };
                // Drivers validate update documents before sending anything.
                let first_is_operator = match &u {
                    Bson::Document(d) => d.keys().next().is_some_and(|k| k.starts_with('$')),
                    _ => true,
                };
                if kind == "replaceOne" && first_is_operator {
                    return Err(OpError::Runner(
                        "client: replacement document must not contain update operators".into(),
                    ));
                }
                if kind != "replaceOne" && !first_is_operator {
                    return Err(OpError::Runner(
                        "client: update document must contain update operators".into(),
                    ));
                }
                body.insert("u", u);
                if kind == "updateMany" {
                    body.insert("multi", true);
                }
                for k in ["upsert", "arrayFilters", "collation", "hint", "sort"] {
                    if let Some(v) = take(&mut spec, k) {
                        body.insert(k, v);
                    }
                }
                if !spec.is_empty() {
                    return Err(OpError::Runner(format!(
                        "unsupported: {kind} fields {spec}"
                    )));
                }
                Statement {
                    kind: "update",
                    body,
                    index,
                }
            }
            "deleteOne" | "deleteMany" => {
                let mut body = doc! {"q": take_doc(&mut spec, "filter")?, "limit": if kind == "deleteOne" { 1 } else { 0 }};
                for k in ["collation", "hint"] {
                    if let Some(v) = take(&mut spec, k) {
                        body.insert(k, v);
                    }
                }
                if !spec.is_empty() {
                    return Err(OpError::Runner(format!(
                        "unsupported: {kind} fields {spec}"
                    )));
                }
                Statement {
                    kind: "delete",
                    body,
                    index,
                }
            }
            other => {
                return Err(OpError::Runner(format!(
                    "unsupported: bulk request {other}"
                )));
            }
        };
        statements.push(statement);
    }
    // Batches: consecutive statements of one kind when ordered; grouped by kind otherwise.
    let mut batches: Vec<Vec<Statement>> = Vec::new();
    if ordered {
        for s in statements {
            match batches.last_mut() {
                Some(b) if b[0].kind == s.kind => b.push(s),
                _ => batches.push(vec![s]),
            }
        }
    } else {
        for kind in ["insert", "update", "delete"] {
            let group: Vec<Statement> = statements
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| Statement {
                    kind: s.kind,
                    body: s.body.clone(),
                    index: s.index,
                })
                .collect();
            if !group.is_empty() {
                batches.push(group);
            }
        }
    }
    let db = coll.client().database(&coll.namespace().db);
    let (mut inserted, mut matched, mut modified, mut deleted, mut upserted) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut upserted_ids = Document::new();
    let mut first_error: Option<(i32, Option<String>, String)> = None;
    for batch in batches {
        let kind = batch[0].kind;
        let array_key = match kind {
            "insert" => "documents",
            "update" => "updates",
            _ => "deletes",
        };
        let mut command = doc! { kind: coll.name(), array_key: batch.iter().map(|s| Bson::Document(s.body.clone())).collect::<Vec<_>>(), "ordered": ordered };
        command.extend(common.clone());
        let reply = db.run_command(command).await?;
        let n = reply.get_i32("n").map(i64::from).unwrap_or(0);
        match kind {
            "insert" => inserted += n,
            "update" => {
                let ups = reply
                    .get_array("upserted")
                    .map(|a| a.len() as i64)
                    .unwrap_or(0);
                upserted += ups;
                matched += n - ups;
                modified += reply.get_i32("nModified").map(i64::from).unwrap_or(0);
                if let Ok(list) = reply.get_array("upserted") {
                    for u in list {
                        if let Some(u) = u.as_document() {
                            let i = u.get_i32("index").unwrap_or(0) as usize;
                            upserted_ids.insert(
                                batch[i].index.to_string(),
                                u.get("_id").cloned().unwrap_or(Bson::Null),
                            );
                        }
                    }
                }
            }
            _ => deleted += n,
        }
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(first) = errors.first().and_then(Bson::as_document)
        {
            if first_error.is_none() {
                first_error = Some((
                    first.get_i32("code").unwrap_or(0),
                    first.get_str("codeName").ok().map(str::to_string),
                    first.get_str("errmsg").unwrap_or_default().to_string(),
                ));
            }
            if ordered {
                break;
            }
        }
    }
    let result = doc! {
        "deletedCount": deleted,
        "insertedCount": inserted,
        "insertedIds": inserted_ids,
        "matchedCount": matched,
        "modifiedCount": modified,
        "upsertedCount": upserted,
        "upsertedIds": upserted_ids,
    };
    match first_error {
        Some((code, code_name, message)) => Err(OpError::Bulk {
            code,
            code_name,
            message,
            partial: result,
        }),
        None => Ok(Some(Bson::Document(result))),
    }
}

/// Where a change stream watches.
pub enum StreamSource {
    Client(Client),
    Database(mongodb::Database),
    Collection(mongodb::Collection<Document>),
}

async fn create_stream(
    source: StreamSource,
    mut args: Document,
    entities: &mut Entities,
) -> OpResult {
    let pipeline = match take(&mut args, "pipeline") {
        Some(Bson::Array(stages)) => stages
            .into_iter()
            .map(|s| match s {
                Bson::Document(d) => Ok(d),
                _ => Err("pipeline stages must be documents".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(OpError::Runner("bad pipeline".into())),
    };
    let opts: mongodb::options::ChangeStreamOptions = options(
        args,
        &[
            "batchSize",
            "comment",
            "fullDocument",
            "fullDocumentBeforeChange",
            "showExpandedEvents",
            "resumeAfter",
            "startAfter",
            "startAtOperationTime",
            "maxAwaitTimeMS",
            "collation",
        ],
    )?;
    let stream = match source {
        StreamSource::Client(c) => c.watch().pipeline(pipeline).with_options(opts).await?,
        StreamSource::Database(d) => d.watch().pipeline(pipeline).with_options(opts).await?,
        StreamSource::Collection(c) => c.watch().pipeline(pipeline).with_options(opts).await?,
    };
    entities.pending_stream = Some(stream.with_type::<Document>());
    Ok(None)
}

async fn stream_op(object: &str, name: &str, entities: &mut Entities) -> OpResult {
    let stream = entities
        .streams
        .get_mut(object)
        .ok_or("unknown change stream")?;
    match name {
        "iterateUntilDocumentOrError" => {
            match tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await {
                Err(_) => Err(OpError::Runner("no change event within 10 s".into())),
                Ok(None) => Err(OpError::Runner("the change stream ended".into())),
                Ok(Some(Err(e))) => Err(OpError::Driver(e)),
                Ok(Some(Ok(event))) => Ok(Some(Bson::Document(event))),
            }
        }
        "iterateOnce" => Ok(stream.next_if_any().await?.map(Bson::Document)),
        "close" => {
            entities.streams.remove(object);
            Ok(None)
        }
        other => Err(OpError::Runner(format!(
            "unsupported: change stream operation {other}"
        ))),
    }
}
