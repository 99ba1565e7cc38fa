//! Change streams through the official Rust driver: events, resume, history loss, invalidate.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::{ChangeStreamOptions, FullDocumentType};
use mongoshift_testkit::TestServer;

/// Waits for the next event (with a generous bound so a broken server fails instead of hanging).
async fn next<T>(stream: &mut mongodb::change_stream::ChangeStream<T>) -> T
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event arrives")
        .expect("the stream is open")
        .expect("no error")
}

#[tokio::test]
async fn collection_stream_reports_crud_events_with_real_shapes() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    assert!(
        stream.resume_token().is_some(),
        "the first batch carries a PBRT"
    );

    coll.insert_one(doc! {"_id": 1, "a": 1, "arr": [1, 2, 3]})
        .await
        .unwrap();
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 2}, "$unset": {"zz": ""}, "$pop": {"arr": 1}},
    )
    .await
    .unwrap();
    coll.replace_one(doc! {"_id": 1}, doc! {"b": 1})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();

    let insert: ChangeStreamEvent<Document> = next(&mut stream).await;
    assert_eq!(insert.operation_type, OperationType::Insert);
    assert_eq!(
        insert.full_document,
        Some(doc! {"_id": 1, "a": 1, "arr": [1, 2, 3]})
    );
    assert_eq!(insert.document_key, Some(doc! {"_id": 1}));
    assert!(insert.cluster_time.is_some());
    assert!(insert.wall_time.is_some());
    let ns = insert.ns.as_ref().unwrap();
    assert_eq!((ns.db.as_str(), ns.coll.as_deref()), ("db", Some("c")));

    let update = next(&mut stream).await;
    assert_eq!(update.operation_type, OperationType::Update);
    let description = update.update_description.unwrap();
    assert_eq!(description.updated_fields.get_i32("a").unwrap(), 2);
    // updateLookup reads the current version when the event is read: by then the document
    // has been replaced and deleted, so the lookup finds nothing (as on mongod).
    assert_eq!(update.full_document, None);
    let replace = next(&mut stream).await;
    assert_eq!(replace.operation_type, OperationType::Replace);
    assert_eq!(replace.full_document, Some(doc! {"_id": 1, "b": 1}));
    let delete = next(&mut stream).await;
    assert_eq!(delete.operation_type, OperationType::Delete);
    assert_eq!(delete.document_key, Some(doc! {"_id": 1}));
    assert!(delete.full_document.is_none());

    // Events have unique, increasing cluster times.
    let times = [
        insert.cluster_time,
        update.cluster_time,
        replace.cluster_time,
        delete.cluster_time,
    ];
    for pair in times.windows(2) {
        assert!(pair[0] < pair[1], "{pair:?}");
    }
}

/// Creates `c` in `db` and opens a change stream on it with a raw `aggregate`; the reply.
async fn open_raw_stream(db: &mongodb::Database) -> Document {
    db.create_collection("c").await.unwrap();
    db.run_command(doc! {"aggregate": "c", "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap()
}

#[tokio::test]
async fn raw_event_and_batch_fields_match_mongod() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let reply = open_raw_stream(&db).await;
    let cursor = reply.get_document("cursor").unwrap();
    assert!(cursor.get_array("firstBatch").unwrap().is_empty());
    let pbrt = cursor.get_document("postBatchResumeToken").unwrap().clone();
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    assert_eq!(cursor.get_str("ns").unwrap(), "db.c");
    let data = pbrt.get_str("_data").unwrap();
    assert!(data.starts_with("82"), "KeyString timestamp prefix: {data}");

    // An idle getMore waits for maxTimeMS and still answers a (newer) PBRT.
    let started = std::time::Instant::now();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 300})
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "awaitData waits"
    );
    let cursor = more.get_document("cursor").unwrap();
    assert!(cursor.get_array("nextBatch").unwrap().is_empty());
    assert!(cursor.get_document("postBatchResumeToken").is_ok());

    db.collection::<Document>("c")
        .insert_one(doc! {"_id": 7})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 5000})
        .await
        .unwrap();
    let cursor = more.get_document("cursor").unwrap();
    let event = cursor.get_array("nextBatch").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    let token = event
        .get_document("_id")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    assert!(token.as_str() > data, "tokens sort by cluster time");
    assert_eq!(event.get_str("operationType").unwrap(), "insert");
    assert!(matches!(event.get("clusterTime"), Some(Bson::Timestamp(_))));
    assert!(matches!(event.get("wallTime"), Some(Bson::DateTime(_))));
    assert_eq!(
        cursor
            .get_document("postBatchResumeToken")
            .unwrap()
            .get_str("_data")
            .unwrap(),
        token
    );
}

/// A getMore waiting for events is woken by a write made while it waits, and one that starts
/// after writes made with nobody waiting finds them at once.
#[tokio::test]
async fn a_waiting_get_more_is_woken_by_a_write() {
    // No periodic no-op: its append would wake the getMore too, and the test would pass
    // without the write's own wake-up.
    let server = common::start_with_noop_interval(Duration::from_secs(3_600)).await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let reply = open_raw_stream(&db).await;
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    let coll = db.collection::<Document>("c");
    let next_batch = |reply: Document| -> Vec<i32> {
        let cursor = reply.get_document("cursor").unwrap();
        cursor
            .get_array("nextBatch")
            .unwrap()
            .iter()
            .map(|e| {
                let e = e.as_document().unwrap();
                e.get_document("documentKey")
                    .unwrap()
                    .get_i32("_id")
                    .unwrap()
            })
            .collect()
    };

    // Written while no getMore waits.
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 30_000})
        .await
        .unwrap();
    assert_eq!(next_batch(more), [1]);

    // Written while a getMore waits (with a deadline far beyond the test's bound).
    let writer = tokio::spawn({
        let coll = coll.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            coll.insert_one(doc! {"_id": 2}).await.unwrap();
        }
    });
    let more = tokio::time::timeout(
        Duration::from_secs(5),
        db.run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 30_000}),
    )
    .await
    .expect("the write wakes the getMore before its 30 s deadline")
    .unwrap();
    assert_eq!(next_batch(more), [2]);
    writer.await.unwrap();
}

#[tokio::test]
async fn standalone_refuses_change_streams_with_40573() {
    let server = TestServer::builder()
        .mode(mongoshift_testkit::Mode::Standalone)
        .start()
        .await
        .unwrap();
    let client = common::client(&server).await;
    let err = client
        .database("db")
        .collection::<Document>("c")
        .watch()
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(40573));
}

#[tokio::test]
async fn driver_resumes_after_the_server_closes_the_connection() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.document_key, Some(doc! {"_id": 1}));

    // The next getMore loses its connection; the driver must resume from its token.
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "closeConnection": true},
        })
        .unwrap();
    for i in 2..6 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 2..6 {
        let event = next(&mut stream).await;
        seen.push(event.document_key.unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(seen, vec![2, 3, 4, 5], "no event lost or duplicated");

    // A resumable server error (with the label) is resumed too.
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failGetMoreAfterCursorCheckout",
            "mode": {"times": 1},
            "data": {"errorCode": 10107},
        })
        .unwrap();
    coll.insert_one(doc! {"_id": 6}).await.unwrap();
    let event = next(&mut stream).await;
    assert_eq!(event.document_key, Some(doc! {"_id": 6}));
}

#[tokio::test]
async fn resume_from_a_stored_token_after_the_consumer_restarts() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    let mut stream = client.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let event = next(&mut stream).await;
    let token: ResumeToken = event.id.clone();
    drop(stream);
    drop(client);

    // Writes while no consumer runs.
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    coll.insert_one(doc! {"_id": 3}).await.unwrap();

    let mut stream = client
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .resume_after(Some(token))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.document_key, Some(doc! {"_id": 2}));
    assert_eq!(next(&mut stream).await.document_key, Some(doc! {"_id": 3}));

    // startAtOperationTime replays events at and after the given time. A read's operationTime
    // is the time of the last write (here the insert of 3), as on mongod.
    let reply = client
        .database("db")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    let at = reply.get_timestamp("operationTime").unwrap();
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    let mut stream = coll
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .start_at_operation_time(Some(at))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.document_key, Some(doc! {"_id": 3}));
    assert_eq!(next(&mut stream).await.document_key, Some(doc! {"_id": 4}));
}

#[tokio::test]
async fn history_loss_is_change_stream_history_lost() {
    let server = TestServer::builder()
        .oplog_max_events(5)
        .start()
        .await
        .unwrap();
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let token = next(&mut stream).await.id;
    drop(stream);
    for i in 2..20 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let err = coll
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .resume_after(Some(token))
                .build(),
        )
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!(
        (c.code, c.code_name.as_str()),
        (286, "ChangeStreamHistoryLost")
    );
}

#[tokio::test]
async fn drop_invalidates_a_collection_stream() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.drop().await.unwrap();
    let drop_event = next(&mut stream).await;
    assert_eq!(drop_event.operation_type, OperationType::Drop);
    let invalidate = next(&mut stream).await;
    assert_eq!(invalidate.operation_type, OperationType::Invalidate);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after invalidate");
    assert!(!stream.is_alive());

    // resumeAfter an invalidate token is refused with 260; startAfter is allowed.
    let token = invalidate.id;
    let err = coll
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .resume_after(Some(token.clone()))
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(260));
    let mut stream = coll
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .start_after(Some(token))
                .build(),
        )
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 9}).await.unwrap();
    assert_eq!(next(&mut stream).await.document_key, Some(doc! {"_id": 9}));
}

#[tokio::test]
async fn cluster_stream_with_expanded_events() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let stream = client
        .watch()
        .show_expanded_events(true)
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    let db = client.database("db");
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"x": 1}).build())
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1, "x": 1}).await.unwrap();
    client
        .database("admin")
        .run_command(doc! {"renameCollection": "db.c", "to": "db.d"})
        .await
        .unwrap();
    // Internal databases are not reported.
    client
        .database("admin")
        .run_command(doc! {"create": "ignored"})
        .await
        .unwrap();
    db.drop().await.unwrap();

    let mut raw: mongodb::change_stream::ChangeStream<Document> = stream.with_type();
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let e: Document = next(&mut raw).await;
        kinds.push(e.get_str("operationType").unwrap().to_string());
        match e.get_str("operationType").unwrap() {
            "create" => assert!(
                e.get_document("operationDescription")
                    .unwrap()
                    .get_document("idIndex")
                    .is_ok()
            ),
            "createIndexes" => {
                let indexes = e
                    .get_document("operationDescription")
                    .unwrap()
                    .get_array("indexes")
                    .unwrap();
                assert_eq!(
                    indexes[0].as_document().unwrap().get_str("name").unwrap(),
                    "x_1"
                );
            }
            "rename" => assert_eq!(
                e.get_document("to").unwrap(),
                &doc! {"db": "db", "coll": "d"}
            ),
            "dropDatabase" => assert_eq!(e.get_document("ns").unwrap(), &doc! {"db": "db"}),
            _ => {}
        }
        if e.get_str("operationType").unwrap() != "dropDatabase" {
            assert!(
                matches!(e.get("collectionUUID"), Some(Bson::Binary(_))),
                "{e}"
            );
        }
    }
    assert_eq!(
        kinds,
        vec![
            "create",
            "createIndexes",
            "insert",
            "rename",
            "drop",
            "dropDatabase"
        ]
    );
}

#[tokio::test]
async fn transactions_are_isolated_atomic_and_share_one_cluster_time() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let a = db.collection::<Document>("a");
    let b = db.collection::<Document>("b");
    a.insert_one(doc! {"_id": 0}).await.unwrap();
    b.insert_one(doc! {"_id": 0}).await.unwrap();
    let stream = db.watch().await.unwrap();

    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    a.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    b.update_one(doc! {"_id": 0}, doc! {"$set": {"x": 1}})
        .session(&mut session)
        .await
        .unwrap();
    // The transaction reads its own writes; others do not see them before the commit.
    assert!(
        a.find_one(doc! {"_id": 1})
            .session(&mut session)
            .await
            .unwrap()
            .is_some()
    );
    assert!(a.find_one(doc! {"_id": 1}).await.unwrap().is_none());
    assert_eq!(
        b.find_one(doc! {"_id": 0}).await.unwrap(),
        Some(doc! {"_id": 0})
    );
    session.commit_transaction().await.unwrap();
    assert!(a.find_one(doc! {"_id": 1}).await.unwrap().is_some());
    assert_eq!(
        b.find_one(doc! {"_id": 0}).await.unwrap(),
        Some(doc! {"_id": 0, "x": 1})
    );

    // Both events carry lsid and txnNumber and share one cluster time.
    let mut raw: mongodb::change_stream::ChangeStream<Document> = stream.with_type();
    let first: Document = next(&mut raw).await;
    let second: Document = next(&mut raw).await;
    assert_eq!(first.get_str("operationType").unwrap(), "insert");
    assert_eq!(second.get_str("operationType").unwrap(), "update");
    assert_eq!(first.get("clusterTime"), second.get("clusterTime"));
    assert_ne!(first.get("_id"), second.get("_id"));
    assert!(first.get_document("lsid").is_ok());
    assert_eq!(
        first.get_i64("txnNumber").unwrap(),
        second.get_i64("txnNumber").unwrap()
    );
    assert!(
        first.get_document("_id").unwrap().get_str("_data").unwrap()
            < second
                .get_document("_id")
                .unwrap()
                .get_str("_data")
                .unwrap()
    );

    // An aborted transaction leaves no trace.
    session.start_transaction().await.unwrap();
    a.insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert!(a.find_one(doc! {"_id": 2}).await.unwrap().is_none());

    // Concurrent writes to other documents of the same collection do not conflict.
    session.start_transaction().await.unwrap();
    a.insert_one(doc! {"_id": 3})
        .session(&mut session)
        .await
        .unwrap();
    a.insert_one(doc! {"_id": 4}).await.unwrap();
    session.commit_transaction().await.unwrap();
    assert!(a.find_one(doc! {"_id": 3}).await.unwrap().is_some());
    assert!(a.find_one(doc! {"_id": 4}).await.unwrap().is_some());

    // A concurrent write to a document the transaction wrote makes the commit fail with a
    // transient write conflict, and none of the transaction's writes are applied.
    session.start_transaction().await.unwrap();
    a.update_one(doc! {"_id": 3}, doc! {"$set": {"t": 1}})
        .session(&mut session)
        .await
        .unwrap();
    a.insert_one(doc! {"_id": 5})
        .session(&mut session)
        .await
        .unwrap();
    a.update_one(doc! {"_id": 3}, doc! {"$set": {"other": 1}})
        .await
        .unwrap();
    let err = session.commit_transaction().await.unwrap_err();
    assert_eq!(common::error_code(&err), Some(112));
    assert!(err.contains_label("TransientTransactionError"));
    assert_eq!(
        a.find_one(doc! {"_id": 3}).await.unwrap(),
        Some(doc! {"_id": 3, "other": 1})
    );
    assert!(a.find_one(doc! {"_id": 5}).await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_far_behind_catches_up_in_order() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    let other = client.database("db").collection::<Document>("other");
    let reply = client
        .database("db")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    let start = reply.get_timestamp("operationTime").unwrap();
    // A backlog larger than one oplog read step, interleaved with writes the stream filters out.
    for chunk in 0..6 {
        let docs: Vec<Document> = (0..500).map(|i| doc! {"_id": chunk * 500 + i}).collect();
        coll.insert_many(docs.clone()).await.unwrap();
        other.insert_many(docs).await.unwrap();
    }
    let mut stream = coll
        .watch()
        .with_options(
            ChangeStreamOptions::builder()
                .start_at_operation_time(Some(start))
                .build(),
        )
        .await
        .unwrap();
    for expected in 0..3000 {
        let event = next(&mut stream).await;
        assert_eq!(event.document_key, Some(doc! {"_id": expected}));
    }
}

#[tokio::test]
async fn the_high_water_mark_advances_while_idle() {
    let server = common::start_with_noop_interval(Duration::from_millis(50)).await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let reply = open_raw_stream(&db).await;
    let cursor = reply.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    let mut previous = cursor
        .get_document("postBatchResumeToken")
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string();
    // No writes at all: each awaitData getMore (waiting past the no-op interval) answers an
    // empty batch whose token is later than the previous one.
    for _ in 0..3 {
        let more = db
            .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 500})
            .await
            .unwrap();
        let cursor = more.get_document("cursor").unwrap();
        assert!(cursor.get_array("nextBatch").unwrap().is_empty());
        let token = cursor
            .get_document("postBatchResumeToken")
            .unwrap()
            .get_str("_data")
            .unwrap()
            .to_string();
        assert!(token > previous, "{token} > {previous}");
        previous = token;
    }
}

#[tokio::test]
async fn time_series_and_views_are_not_watched() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    db.run_command(doc! {"create": "ts", "timeseries": {"timeField": "t"}})
        .await
        .unwrap();
    db.run_command(doc! {"create": "v", "viewOn": "c", "pipeline": []})
        .await
        .unwrap();
    for name in ["ts", "v"] {
        let err = db.collection::<Document>(name).watch().await.unwrap_err();
        assert_eq!(common::error_code(&err), Some(166), "{name}");
    }
    let mut stream = db.watch().await.unwrap();
    db.collection::<Document>("ts")
        .insert_one(doc! {"t": mongodb::bson::DateTime::now()})
        .await
        .unwrap();
    db.collection::<Document>("c")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    // The first event is the regular collection's insert: the measurement produced none.
    let event = next(&mut stream).await;
    assert_eq!(event.ns.unwrap().coll.as_deref(), Some("c"));
}
