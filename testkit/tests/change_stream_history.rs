//! A live change stream that falls behind the oplog's retention fails with 286, as mongod's does,
//! instead of silently skipping the lost changes.

use bson::{Document, doc};
use mongodb::Client;
use mongoshift_testkit::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_falls_behind_retention_reports_history_lost() {
    let server = TestServer::builder()
        .oplog_max_events(5)
        .start()
        .await
        .unwrap();
    let client = Client::with_uri_str(server.uri()).await.unwrap();
    let coll = client.database("db").collection::<Document>("c");
    let mut stream = client.watch().await.unwrap();
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    let first = loop {
        if let Some(e) = stream.next_if_any().await.unwrap() {
            break e;
        }
    };
    assert_eq!(first.document_key, Some(doc! { "_id": 0 }));
    // Twenty more changes while the consumer is not reading: retention keeps five.
    for i in 1..=20 {
        coll.insert_one(doc! { "_id": i }).await.unwrap();
    }
    let err = loop {
        match stream.next_if_any().await {
            Ok(Some(event)) => panic!("a lost change must not be skipped silently: got {event:?}"),
            Ok(None) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 286),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_keeps_up_loses_nothing_under_tight_retention() {
    let server = TestServer::builder()
        .oplog_max_events(5)
        .start()
        .await
        .unwrap();
    let client = Client::with_uri_str(server.uri()).await.unwrap();
    let coll = client.database("db").collection::<Document>("c");
    let mut stream = client.watch().await.unwrap();
    for i in 0..30 {
        coll.insert_one(doc! { "_id": i }).await.unwrap();
        let event = loop {
            if let Some(e) = stream.next_if_any().await.unwrap() {
                break e;
            }
        };
        assert_eq!(event.document_key, Some(doc! { "_id": i }));
    }
    server.shutdown().await;
}
