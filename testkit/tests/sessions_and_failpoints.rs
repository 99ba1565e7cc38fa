//! Sessions, retryable-write replay, failpoints and the legacy OP_QUERY handshake.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc, rawdoc, spec::BinarySubtype};
use mongoshift_testkit::wire::{self, HEADER_LEN, Header};

/// A raw connection speaking OP_MSG, for commands the driver would not let us send verbatim.
struct Raw(TcpStream);

impl Raw {
    fn connect(server: &mongoshift_testkit::TestServerHandle) -> Raw {
        let s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    fn read_reply(&mut self) -> (Header, Vec<u8>) {
        let mut header = [0u8; HEADER_LEN];
        self.0.read_exact(&mut header).unwrap();
        let header = Header::parse(&header);
        let mut rest = vec![0u8; header.length as usize - HEADER_LEN];
        self.0.read_exact(&mut rest).unwrap();
        (header, rest)
    }

    fn command(&mut self, body: Document) -> Document {
        let raw = RawDocumentBuf::try_from(&body).unwrap();
        self.0
            .write_all(&wire::encode_op_msg_request(1, 0, &raw, &[]))
            .unwrap();
        let (header, rest) = self.read_reply();
        assert_eq!(header.op_code, wire::OP_MSG);
        Document::try_from(RawDocumentBuf::from_bytes(rest[5..].to_vec()).unwrap()).unwrap()
    }
}

fn lsid() -> Document {
    doc! {"id": mongodb::bson::Binary { subtype: BinarySubtype::Uuid, bytes: vec![7u8; 16] }}
}

#[tokio::test]
async fn retried_writes_replay_the_stored_reply() {
    let server = common::start().await;
    let mut raw = Raw::connect(&server);
    let insert = doc! {
        "insert": "c", "documents": [{"_id": 1}], "$db": "db",
        "lsid": lsid(), "txnNumber": 5i64,
    };
    let first = raw.command(insert.clone());
    assert_eq!(first.get_i32("n").unwrap(), 1);
    // The same statement again (a retry): same answer, no second execution (which would be a
    // duplicate-key write error).
    let again = raw.command(insert);
    assert_eq!(again.get_i32("n").unwrap(), 1);
    assert!(again.get("writeErrors").is_none());
    let count = raw.command(doc! {"count": "c", "$db": "db"});
    assert_eq!(count.get_i32("n").unwrap(), 1);
    // An older txnNumber is refused.
    let old = raw.command(doc! {
        "insert": "c", "documents": [{"_id": 2}], "$db": "db",
        "lsid": lsid(), "txnNumber": 4i64,
    });
    assert_eq!(old.get_i32("code").unwrap(), 225);
    assert_eq!(old.get_str("codeName").unwrap(), "TransactionTooOld");
}

#[tokio::test]
async fn driver_retries_writes_after_failpoint_errors_and_closed_connections() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();

    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "closeConnection": true},
        })
        .unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();

    // A retryable code gets the RetryableWriteError label from the server; the driver retries.
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "errorCode": 91},
        })
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let ids: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids.len(), 3, "each insert applied exactly once: {ids:?}");

    // A non-retryable code with explicit labels surfaces with them.
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2, "errorLabels": ["Custom"]},
        })
        .unwrap();
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));
    assert!(err.contains_label("Custom"));
    assert!(
        coll.find_one(doc! {}).await.unwrap().is_some(),
        "times: 1 is spent"
    );

    // writeConcernError is attached to a successful write.
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["delete"], "writeConcernError": {"code": 100, "errmsg": "wc"}},
        })
        .unwrap();
    let err = coll.delete_one(doc! {"_id": 0}).await.unwrap_err();
    assert_eq!(common::error_code(&err), None);
    assert!(matches!(
        err.kind.as_ref(),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(w)) if w.code == 100
    ));
    assert!(
        coll.find_one(doc! {"_id": 0}).await.unwrap().is_none(),
        "the write happened"
    );
}

#[tokio::test]
async fn fail_command_can_target_one_application() {
    let server = common::start().await;
    let uri = format!("{}&appName=victim", server.uri());
    let victim = common::client_for_uri(&uri).await;
    let bystander = common::client(&server).await;
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["ping"], "errorCode": 8, "appName": "victim"},
        })
        .unwrap();
    bystander
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    let err = victim
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(8));
    server.clear_fail_points();
    victim
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
}

#[tokio::test]
async fn block_connection_delays_only_the_blocked_command() {
    let server = common::start().await;
    let client = common::client(&server).await;
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["ping"], "blockConnection": true, "blockTimeMS": 300},
        })
        .unwrap();
    let started = std::time::Instant::now();
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    // A lower bound only: the server slept at least blockTimeMS before answering.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn end_sessions_kills_their_cursors() {
    let server = common::start().await;
    let mut raw = Raw::connect(&server);
    raw.command(
        doc! {"insert": "c", "documents": [{"_id": 1}, {"_id": 2}, {"_id": 3}], "$db": "db"},
    );
    let reply = raw.command(doc! {"find": "c", "batchSize": 1, "$db": "db", "lsid": lsid()});
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    let end = raw.command(doc! {"endSessions": [lsid()], "$db": "admin"});
    assert_eq!(end.get_f64("ok").unwrap(), 1.0);
    let more = raw.command(doc! {"getMore": id, "collection": "c", "$db": "db"});
    assert_eq!(more.get_i32("code").unwrap(), 43);
    let kill_all = raw.command(doc! {"killAllSessions": [], "$db": "admin"});
    assert_eq!(kill_all.get_f64("ok").unwrap(), 1.0);
}

#[tokio::test]
async fn legacy_op_query_handshake_gets_an_op_reply() {
    let server = common::start().await;
    let mut raw = Raw::connect(&server);
    let query =
        rawdoc! {"ismaster": 1, "helloOk": true, "client": {"application": {"name": "node"}}};
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(b"admin.$cmd\0");
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    body.extend_from_slice(query.as_bytes());
    let mut msg = Vec::new();
    msg.extend_from_slice(&((HEADER_LEN + body.len()) as i32).to_le_bytes());
    msg.extend_from_slice(&99i32.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&wire::OP_QUERY.to_le_bytes());
    msg.extend_from_slice(&body);
    raw.0.write_all(&msg).unwrap();
    let (header, rest) = raw.read_reply();
    assert_eq!(header.op_code, wire::OP_REPLY);
    assert_eq!(header.response_to, 99);
    // responseFlags AwaitCapable, cursor 0, startingFrom 0, numberReturned 1.
    assert_eq!(i32::from_le_bytes(rest[0..4].try_into().unwrap()), 8);
    assert_eq!(i32::from_le_bytes(rest[16..20].try_into().unwrap()), 1);
    let reply =
        Document::try_from(RawDocumentBuf::from_bytes(rest[20..].to_vec()).unwrap()).unwrap();
    assert!(reply.get_bool("ismaster").unwrap());
    assert_eq!(reply.get_i32("maxWireVersion").unwrap(), 21);
    assert!(reply.get("__nodejs_mock_server__").is_none());
    // After the handshake the connection speaks OP_MSG.
    let ping = raw.command(doc! {"ping": 1, "$db": "admin"});
    assert_eq!(ping.get_f64("ok").unwrap(), 1.0);
    // Other OP_QUERY commands are refused like mongod 5.1+ refuses them.
    let other = rawdoc! {"find": "c"};
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(b"db.$cmd\0");
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    body.extend_from_slice(other.as_bytes());
    let mut msg = Vec::new();
    msg.extend_from_slice(&((HEADER_LEN + body.len()) as i32).to_le_bytes());
    msg.extend_from_slice(&100i32.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&wire::OP_QUERY.to_le_bytes());
    msg.extend_from_slice(&body);
    raw.0.write_all(&msg).unwrap();
    let (_, rest) = raw.read_reply();
    let reply =
        Document::try_from(RawDocumentBuf::from_bytes(rest[20..].to_vec()).unwrap()).unwrap();
    assert_eq!(reply.get_i32("code").unwrap(), 352);
    assert!(matches!(reply.get("ok"), Some(Bson::Double(v)) if *v == 0.0));
}

/// The operations `$currentOp` lists whose command carries `comment`.
async fn ops_with_comment(admin: &mongodb::Database, comment: &str) -> Vec<Document> {
    admin
        .aggregate([
            doc! { "$currentOp": { "allUsers": true } },
            doc! { "$match": { "command.comment": comment } },
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_op_lists_a_write_of_a_vanished_client_until_it_ends() {
    let server = common::start().await;
    let observer = common::client(&server).await;
    let admin = observer.database("admin");
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand", "mode": { "times": 2 },
            "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": 5000, "appName": "zombie" },
        })
        .await
        .unwrap();
    // A client sends two blocked inserts and goes away before they are answered.
    let uri = format!("{}&appName=zombie", server.uri());
    let doomed = common::client_for_uri(&uri).await;
    let coll = doomed.database("db").collection::<Document>("c");
    let first = tokio::spawn({
        let coll = coll.clone();
        async move {
            coll.insert_one(doc! { "_id": 1 })
                .comment(Bson::from("gone"))
                .await
        }
    });
    let second = tokio::spawn(async move {
        coll.insert_one(doc! { "_id": 2 })
            .comment(Bson::from("gone"))
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let ops = ops_with_comment(&admin, "gone").await;
        if ops.len() == 2 || std::time::Instant::now() > deadline {
            break ops;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(listed.len(), 2, "both inserts are listed: {listed:?}");
    let op = &listed[0];
    assert_eq!(op.get_str("ns").unwrap(), "db.c");
    assert_eq!(op.get_str("op").unwrap(), "insert");
    assert_eq!(op.get_str("appName").unwrap(), "zombie");
    assert!(op.get_bool("active").unwrap());
    first.abort();
    second.abort();
    drop(doomed);

    // killOp interrupts one before it executes; the other still runs after its client left.
    let killed = listed[0].get_i64("opid").unwrap();
    admin
        .run_command(doc! { "killOp": 1, "op": killed })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ops_with_comment(&admin, "gone").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the operations end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<i32> = observer
        .database("db")
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one insert ran, the killed one did not: {ids:?}"
    );
}

#[tokio::test]
async fn current_op_runs_only_on_admin_with_aggregate_1() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let err = client
        .database("db")
        .run_command(doc! { "aggregate": 1, "pipeline": [{ "$currentOp": {} }], "cursor": {} })
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(73));
    let err = client
        .database("admin")
        .run_command(
            doc! { "aggregate": 1, "pipeline": [{ "$currentOp": { "bogus": 1 } }], "cursor": {} },
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(9));
    let err = client
        .database("admin")
        .run_command(
            doc! { "aggregate": 1, "pipeline": [{ "$currentOp": { "allUsers": 1 } }], "cursor": {} },
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(9), "options are booleans");
}
