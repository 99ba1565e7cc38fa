//! A runner for MongoDB's unified test format, pointed at the testkit server.
//!
//! It reads the spec files at test time from `<workspace>/../shared/spec-tests` (or
//! `$MONGOSHIFT_SPEC_TESTS`); the files are CC BY-NC-SA data and are never copied into this
//! repository. When they are absent the tests print why and pass. Each suite prints
//! `N passed, N failed, N skipped`; any failure fails the test. A test counts as passed only
//! when every operation, expected result, expected error, expected event and outcome of it was
//! checked. Tests whose `runOnRequirements` this server does not meet (newer server versions,
//! sharded topologies, auth) are skipped, and so are the entries of [`skips::SKIPS`], each with
//! its reason.

// Test-only plumbing: the runner's own types need no API documentation.
#![allow(missing_docs)]

mod ejson;
mod matcher;
mod operations;
mod skips;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::ejson::Value;
use mongodb::bson::{Bson, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use mongoshift_testkit::{TestServer, TestServerHandle};

use crate::matcher::EntityValues;

/// The version this server claims, for `runOnRequirements`.
const SERVER_VERSION: (u64, u64, u64) = (7, 0, 14);

/// Where the spec tests live.
fn spec_root() -> PathBuf {
    if let Ok(p) = std::env::var("MONGOSHIFT_SPEC_TESTS") {
        return PathBuf::from(p);
    }
    // CARGO_MANIFEST_DIR is <workspace>/testkit.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec-tests")
}

/// One observed command-monitoring event.
#[derive(Debug, Clone)]
pub enum Event {
    /// `commandStartedEvent`.
    Started {
        name: String,
        db: String,
        command: Document,
    },
    /// `commandSucceededEvent`.
    Succeeded {
        name: String,
        db: String,
        reply: Document,
    },
    /// `commandFailedEvent`.
    Failed { name: String, db: String },
}

/// A client entity with its event log.
pub struct ClientEntity {
    pub client: Client,
    pub events: Arc<Mutex<Vec<Event>>>,
}

/// The entity map of one test.
#[derive(Default)]
pub struct Entities {
    pub clients: HashMap<String, ClientEntity>,
    pub databases: HashMap<String, Database>,
    pub collections: HashMap<String, Collection<Document>>,
    pub values: EntityValues,
    pub streams: HashMap<String, operations::Stream>,
    pub pending_stream: Option<operations::Stream>,
}

/// Why a test did not pass.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

/// Parses "x.y.z" into a comparable triple.
fn version(s: &str) -> (u64, u64, u64) {
    let mut parts = s.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Checks one `runOnRequirements` list; `Some(reason)` when none of them is met.
fn requirements_unmet(reqs: Option<&Value>, topology: &str) -> Option<String> {
    let reqs = reqs?.as_array()?;
    if reqs.is_empty() {
        return None;
    }
    let mut reasons = Vec::new();
    for req in reqs {
        let mut ok = true;
        if let Some(min) = req.get("minServerVersion").and_then(Value::as_str)
            && SERVER_VERSION < version(min)
        {
            ok = false;
            reasons.push(format!("needs server >= {min}"));
        }
        if let Some(max) = req.get("maxServerVersion").and_then(Value::as_str) {
            let (a, b, c) = version(max);
            // A max of "4.3.3" admits 4.3.3; a max of "4.2" admits 4.2.x.
            let limit = if max.split('.').count() < 3 {
                (a, b, u64::MAX)
            } else {
                (a, b, c)
            };
            if SERVER_VERSION > limit {
                ok = false;
                reasons.push(format!("needs server <= {max}"));
            }
        }
        if let Some(tops) = req.get("topologies").and_then(Value::as_array)
            && !tops.iter().any(|t| t.as_str() == Some(topology))
        {
            ok = false;
            reasons.push(format!("needs topology {tops:?}"));
        }
        if req.get("serverless").and_then(Value::as_str) == Some("require") {
            ok = false;
            reasons.push("needs serverless".into());
        }
        if req.get("auth").and_then(Value::as_bool) == Some(true) {
            ok = false;
            reasons.push("needs auth".into());
        }
        if req.get("csfle").is_some() {
            ok = false;
            reasons.push("needs CSFLE".into());
        }
        if ok {
            return None;
        }
    }
    Some(reasons.join("; "))
}

/// Builds a client entity from its `createEntities` description.
/// Fails on keys this runner does not implement, so no assertion is silently dropped.
fn only_keys(what: &str, value: &Value, allowed: &[&str]) -> Result<(), String> {
    for (key, _) in value.as_object().map(Vec::as_slice).unwrap_or_default() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "unsupported: {what} field '{key}' is not implemented by this runner"
            ));
        }
    }
    Ok(())
}

async fn make_client(server: &TestServerHandle, spec: &Value) -> Result<ClientEntity, String> {
    only_keys(
        "client",
        spec,
        &[
            "id",
            "uriOptions",
            "useMultipleMongoses",
            "observeEvents",
            "ignoreCommandMonitoringEvents",
            "observeSensitiveCommands",
        ],
    )?;
    let mut uri = server.uri();
    if let Some(opts) = spec.get("uriOptions").and_then(Value::as_object) {
        for (k, v) in opts {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            uri.push('&');
            uri.push_str(k);
            uri.push('=');
            uri.push_str(&v);
        }
    }
    let mut options = ClientOptions::parse(&uri)
        .await
        .map_err(|e| e.to_string())?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let observe: Vec<String> = spec
        .get("observeEvents")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ignore: Vec<String> = spec
        .get("ignoreCommandMonitoringEvents")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let observe_sensitive = spec
        .get("observeSensitiveCommands")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    // Request id -> database, to label succeeded/failed events.
    let dbs: Arc<Mutex<HashMap<i32, String>>> = Arc::default();
    options.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
        let (name, kind) = match &ev {
            CommandEvent::Started(e) => (e.command_name.clone(), "commandStartedEvent"),
            CommandEvent::Succeeded(e) => (e.command_name.clone(), "commandSucceededEvent"),
            CommandEvent::Failed(e) => (e.command_name.clone(), "commandFailedEvent"),
            _ => return,
        };
        let sensitive = matches!(
            name.as_str(),
            "hello"
                | "isMaster"
                | "ismaster"
                | "saslStart"
                | "saslContinue"
                | "getnonce"
                | "authenticate"
                | "createUser"
                | "updateUser"
                | "copydbgetnonce"
                | "copydbsaslstart"
                | "copydb"
        );
        if !observe.iter().any(|o| o == kind)
            || ignore.contains(&name)
            || (sensitive && !observe_sensitive)
            || name == "configureFailPoint"
        {
            return;
        }
        let mut dbs = dbs.lock().unwrap();
        let event = match ev {
            CommandEvent::Started(e) => {
                dbs.insert(e.request_id, e.db.clone());
                Event::Started {
                    name,
                    db: e.db,
                    command: e.command,
                }
            }
            CommandEvent::Succeeded(e) => Event::Succeeded {
                name,
                db: dbs.get(&e.request_id).cloned().unwrap_or_default(),
                reply: e.reply,
            },
            CommandEvent::Failed(e) => Event::Failed {
                name,
                db: dbs.get(&e.request_id).cloned().unwrap_or_default(),
            },
            _ => return,
        };
        sink.lock().unwrap().push(event);
    }));
    let client = Client::with_options(options).map_err(|e| e.to_string())?;
    Ok(ClientEntity { client, events })
}

async fn create_entities(
    server: &TestServerHandle,
    list: &[Value],
    entities: &mut Entities,
) -> Result<(), String> {
    for item in list {
        let (kind, spec) = item.first_entry().ok_or("bad entity")?;
        let id = spec["id"].as_str().ok_or("entity without id")?.to_string();
        match kind {
            "client" => {
                if spec.get("serverApi").is_some() {
                    return Err("serverApi clients are not supported by this runner".into());
                }
                let c = make_client(server, spec).await?;
                entities.clients.insert(id, c);
            }
            "database" => {
                let client = spec["client"].as_str().ok_or("database without client")?;
                let name = spec["databaseName"].as_str().ok_or("databaseName")?;
                let c = entities.clients.get(client).ok_or("unknown client")?;
                let db = match spec.get("databaseOptions") {
                    Some(o) => c.client.database_with_options(
                        name,
                        operations::options(
                            ejson::to_document(o)?,
                            &["readConcern", "writeConcern", "readPreference"],
                        )?,
                    ),
                    None => c.client.database(name),
                };
                entities.databases.insert(id, db);
            }
            "collection" => {
                let db = spec["database"]
                    .as_str()
                    .ok_or("collection without database")?;
                let name = spec["collectionName"].as_str().ok_or("collectionName")?;
                let d = entities.databases.get(db).ok_or("unknown database")?;
                let coll = match spec.get("collectionOptions") {
                    Some(o) => d.collection_with_options(
                        name,
                        operations::options(
                            ejson::to_document(o)?,
                            &["readConcern", "writeConcern", "readPreference"],
                        )?,
                    ),
                    None => d.collection(name),
                };
                entities.collections.insert(id, coll);
            }
            other => {
                return Err(format!(
                    "entity type {other} is not supported by this runner"
                ));
            }
        }
    }
    Ok(())
}

/// Drops and fills the collections of `initialData` with the internal client.
async fn initial_data(internal: &Client, data: &[Value]) -> Result<(), String> {
    for item in data {
        let db = internal.database(item["databaseName"].as_str().ok_or("databaseName")?);
        let name = item["collectionName"].as_str().ok_or("collectionName")?;
        db.collection::<Document>(name)
            .drop()
            .await
            .map_err(|e| format!("initialData drop: {e}"))?;
        let mut create = doc! {"create": name};
        if let Some(opts) = item.get("createOptions") {
            create.extend(ejson::to_document(opts)?);
        }
        let docs: Vec<Document> = item["documents"]
            .as_array()
            .ok_or("documents")?
            .iter()
            .map(ejson::to_document)
            .collect::<Result<_, _>>()?;
        if item.get("createOptions").is_some() || docs.is_empty() {
            db.run_command(create)
                .await
                .map_err(|e| format!("initialData create: {e}"))?;
        }
        if !docs.is_empty() {
            db.collection::<Document>(name)
                .insert_many(docs)
                .await
                .map_err(|e| format!("initialData insert: {e}"))?;
        }
    }
    Ok(())
}

/// Compares the observed events with `expectEvents`.
fn check_events(expect: &[Value], entities: &Entities) -> Result<(), String> {
    for block in expect {
        only_keys(
            "expectEvents",
            block,
            &["client", "eventType", "ignoreExtraEvents", "events"],
        )?;
        let client = block["client"].as_str().ok_or("expectEvents.client")?;
        let event_type = block
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("command");
        if event_type != "command" {
            return Err(format!(
                "{event_type} events are not supported by this runner"
            ));
        }
        let ignore_extra = block
            .get("ignoreExtraEvents")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let expected = block["events"].as_array().ok_or("events")?;
        let actual = entities
            .clients
            .get(client)
            .ok_or("unknown client")?
            .events
            .lock()
            .unwrap()
            .clone();
        if actual.len() < expected.len() || (!ignore_extra && actual.len() != expected.len()) {
            return Err(format!(
                "expected {} events, observed {}: {:#?}",
                expected.len(),
                actual.len(),
                actual
            ));
        }
        for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
            let (kind, spec) = e
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or("bad event")?;
            let spec = ejson::to_document(spec)?;
            let (name, db, body, actual_kind) = match a {
                Event::Started { name, db, command } => {
                    (name, db, Some(command), "commandStartedEvent")
                }
                Event::Succeeded { name, db, reply } => {
                    (name, db, Some(reply), "commandSucceededEvent")
                }
                Event::Failed { name, db } => (name, db, None, "commandFailedEvent"),
            };
            if kind != actual_kind {
                return Err(format!(
                    "event {i}: expected {kind}, got {actual_kind} ({name})"
                ));
            }
            for (k, v) in &spec {
                match k.as_str() {
                    "commandName" => {
                        if v.as_str() != Some(name.as_str()) {
                            return Err(format!("event {i}: expected command {v}, got {name}"));
                        }
                    }
                    "databaseName" => {
                        if v.as_str() != Some(db.as_str()) {
                            return Err(format!("event {i}: expected database {v}, got {db}"));
                        }
                    }
                    "command" | "reply" => {
                        let body = body.ok_or("no body")?;
                        matcher::matches_root(
                            v,
                            Some(&Bson::Document(body.clone())),
                            &entities.values,
                        )
                        .map_err(|m| format!("event {i} ({name}) {k}: {m}"))?;
                    }
                    "hasServiceId" | "hasServerConnectionId" => {}
                    other => {
                        return Err(format!(
                            "event field {other} is not supported by this runner"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Compares collection contents with `outcome` (sorted by `_id`).
async fn check_outcome(internal: &Client, outcome: &[Value]) -> Result<(), String> {
    use futures_util::TryStreamExt;
    for item in outcome {
        let db = internal.database(item["databaseName"].as_str().ok_or("databaseName")?);
        let coll =
            db.collection::<Document>(item["collectionName"].as_str().ok_or("collectionName")?);
        let actual: Vec<Document> = coll
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let expected = ejson::to_bson(&item["documents"])?;
        let actual = Bson::Array(actual.into_iter().map(Bson::Document).collect());
        if !matcher::equal_exact(&expected, &actual) {
            return Err(format!(
                "outcome mismatch:\n expected {expected}\n actual   {actual}"
            ));
        }
    }
    Ok(())
}

/// Runs one test of a file.
async fn run_test(
    server: &TestServerHandle,
    internal: &Client,
    file: &Value,
    test: &Value,
) -> Outcome {
    let mut entities = Entities::default();
    let result = async {
        only_keys(
            "test",
            test,
            &[
                "description",
                "runOnRequirements",
                "skipReason",
                "operations",
                "expectEvents",
                "outcome",
            ],
        )?;
        let _ = internal
            .database("admin")
            .run_command(doc! {"killAllSessions": []})
            .await;
        if let Some(data) = file.get("initialData").and_then(Value::as_array) {
            initial_data(internal, data).await?;
        }
        if let Some(list) = file.get("createEntities").and_then(Value::as_array) {
            create_entities(server, list, &mut entities).await?;
        }
        for (i, op) in test["operations"]
            .as_array()
            .ok_or("operations")?
            .iter()
            .enumerate()
        {
            operations::run(server, internal, op, &mut entities)
                .await
                .map_err(|e| format!("operation {i} ({}): {e}", op["name"]))?;
        }
        if let Some(expect) = test.get("expectEvents").and_then(Value::as_array) {
            check_events(expect, &entities)?;
        }
        if let Some(outcome) = test.get("outcome").and_then(Value::as_array) {
            check_outcome(internal, outcome).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    server.clear_fail_points();
    for (_, stream) in entities.streams.drain() {
        drop(stream);
    }
    match result {
        Ok(()) => Outcome::Passed,
        Err(e) if e.starts_with("unsupported:") => Outcome::Failed(e),
        Err(e) => Outcome::Failed(e),
    }
}

/// Runs every file of a suite; prints and returns (passed, failed, skipped).
async fn run_suite(suite: &str) -> Option<(usize, usize, usize)> {
    let dir = spec_root().join(suite);
    let Ok(read) = std::fs::read_dir(&dir) else {
        println!(
            "SKIP {suite}: spec tests not found at {} (set MONGOSHIFT_SPEC_TESTS to run them)",
            dir.display()
        );
        return None;
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let server = TestServer::builder()
        .noop_interval(std::time::Duration::from_millis(200))
        .start()
        .await
        .expect("server starts");
    let internal = {
        let mut o = ClientOptions::parse(server.uri()).await.unwrap();
        o.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        Client::with_options(o).unwrap()
    };
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let filter = std::env::var("UNIFIED_FILTER").ok();
    for path in files {
        let file_name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("spec file is readable");
        let file = Value::parse(&text).expect("spec file is JSON");
        let file_unmet = requirements_unmet(file.get("runOnRequirements"), "replicaset");
        for test in file["tests"].as_array().cloned().unwrap_or_default() {
            let description = test["description"].as_str().unwrap_or("").to_string();
            if let Some(f) = &filter
                && !format!("{file_name}: {description}").contains(f.as_str())
            {
                continue;
            }
            let outcome = if let Some(reason) = file_unmet
                .clone()
                .or_else(|| requirements_unmet(test.get("runOnRequirements"), "replicaset"))
            {
                Outcome::Skipped(format!("not applicable: {reason}"))
            } else if let Some(reason) = test.get("skipReason").and_then(Value::as_str) {
                Outcome::Skipped(format!("skipReason: {reason}"))
            } else if let Some(reason) = skips::reason(suite, &file_name, &description) {
                Outcome::Skipped(format!("skip list: {reason}"))
            } else {
                run_test(&server, &internal, &file, &test).await
            };
            match outcome {
                Outcome::Passed => passed += 1,
                Outcome::Skipped(why) => {
                    skipped += 1;
                    if std::env::var("UNIFIED_VERBOSE").is_ok() {
                        println!("skip {file_name}: {description}: {why}");
                    }
                }
                Outcome::Failed(why) => {
                    failed += 1;
                    println!("FAIL {file_name}: {description}\n     {why}");
                }
            }
        }
    }
    drop(internal);
    server.shutdown().await;
    println!("{suite}: {passed} passed, {failed} failed, {skipped} skipped");
    Some((passed, failed, skipped))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_spec_tests() {
    if let Some((_, failed, _)) = run_suite("crud").await {
        assert_eq!(failed, 0, "crud spec tests failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_spec_tests() {
    if let Some((_, failed, _)) = run_suite("change-streams").await {
        assert_eq!(failed, 0, "change-stream spec tests failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_management_spec_tests() {
    if let Some((_, failed, _)) = run_suite("collection-management").await {
        assert_eq!(failed, 0, "collection-management spec tests failed");
    }
}
