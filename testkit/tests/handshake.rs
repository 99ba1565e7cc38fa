//! Handshake, monitoring and admin commands through the official Rust driver.

mod common;

use mongodb::bson::{Bson, Document, doc};

#[tokio::test]
async fn hello_reply_has_the_replica_set_shape() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let admin = client.database("admin");
    let reply = admin
        .run_command(doc! {"hello": 1, "helloOk": true})
        .await
        .unwrap();
    let host = server.addr().to_string();
    assert!(reply.get_bool("isWritablePrimary").unwrap());
    assert!(reply.get_bool("helloOk").unwrap());
    assert_eq!(reply.get_str("setName").unwrap(), "rs0");
    assert_eq!(
        reply.get_array("hosts").unwrap(),
        &vec![Bson::String(host.clone())]
    );
    assert_eq!(reply.get_str("me").unwrap(), host);
    assert_eq!(reply.get_str("primary").unwrap(), host);
    assert_eq!(
        reply.get_i32("maxBsonObjectSize").unwrap(),
        16 * 1024 * 1024
    );
    assert_eq!(reply.get_i32("maxMessageSizeBytes").unwrap(), 48_000_000);
    assert_eq!(reply.get_i32("maxWriteBatchSize").unwrap(), 100_000);
    assert_eq!(reply.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
    assert_eq!(reply.get_i32("maxWireVersion").unwrap(), 21);
    assert!(matches!(
        reply.get("connectionId"),
        Some(Bson::Int64(_) | Bson::Int32(_))
    ));
    assert!(reply.get("topologyVersion").is_none(), "polling SDAM only");
    assert!(reply.get("compression").is_none());
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0);
    let cluster_time = reply.get_document("$clusterTime").unwrap();
    assert!(cluster_time.get_timestamp("clusterTime").is_ok());
    assert!(cluster_time.get_document("signature").is_ok());
    assert!(reply.get_timestamp("operationTime").is_ok());

    // The legacy spelling answers `ismaster`.
    let legacy = admin.run_command(doc! {"isMaster": 1}).await.unwrap();
    assert!(legacy.get_bool("ismaster").unwrap());
    assert!(legacy.get("isWritablePrimary").is_none());
    assert!(legacy.get("helloOk").is_none());
}

#[tokio::test]
async fn standalone_mode_has_no_replica_set_fields() {
    let server = mongoshift_testkit::TestServer::builder()
        .mode(mongoshift_testkit::Mode::Standalone)
        .start()
        .await
        .unwrap();
    assert!(!server.uri().contains("replicaSet"));
    let client = common::client(&server).await;
    let reply = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert!(reply.get("setName").is_none());
    assert!(reply.get("hosts").is_none());
    assert!(reply.get("$clusterTime").is_none());
    let status = client
        .database("admin")
        .run_command(doc! {"replSetGetStatus": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&status), Some(76));
}

#[tokio::test]
async fn admin_commands_answer_like_mongod_7() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let admin = client.database("admin");

    admin.run_command(doc! {"ping": 1}).await.unwrap();

    let build = admin.run_command(doc! {"buildInfo": 1}).await.unwrap();
    assert!(build.get_str("version").unwrap().starts_with("7.0."));
    assert_eq!(build.get_array("versionArray").unwrap()[0], Bson::Int32(7));

    let fcv = admin
        .run_command(doc! {"getParameter": 1, "featureCompatibilityVersion": 1})
        .await
        .unwrap();
    assert_eq!(
        fcv.get_document("featureCompatibilityVersion")
            .unwrap()
            .get_str("version")
            .unwrap(),
        "7.0"
    );
    let all = admin.run_command(doc! {"getParameter": "*"}).await.unwrap();
    assert!(all.get_document("featureCompatibilityVersion").is_ok());
    assert!(all.get("cursorTimeoutMillis").is_some());
    let unknown = admin
        .run_command(doc! {"getParameter": 1, "noSuchParameter": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&unknown), Some(72));

    let host = admin.run_command(doc! {"hostInfo": 1}).await.unwrap();
    assert!(
        host.get_document("system")
            .unwrap()
            .get_i32("numCores")
            .unwrap()
            >= 1
    );

    let status = admin.run_command(doc! {"serverStatus": 1}).await.unwrap();
    assert!(status.get_str("host").is_ok());
    assert!(status.get_str("version").unwrap().starts_with("7.0."));
    assert!(status.get_f64("uptime").is_ok());
    assert!(status.get_datetime("localTime").is_ok());
    assert_eq!(status.get_str("process").unwrap(), "mongod");
    assert_eq!(
        status
            .get_document("repl")
            .unwrap()
            .get_str("setName")
            .unwrap(),
        "rs0"
    );

    let rs = admin
        .run_command(doc! {"replSetGetStatus": 1})
        .await
        .unwrap();
    assert_eq!(rs.get_str("set").unwrap(), "rs0");
    assert_eq!(rs.get_i32("myState").unwrap(), 1);
    let members = rs.get_array("members").unwrap();
    assert_eq!(members.len(), 1);
    let member = members[0].as_document().unwrap();
    assert_eq!(member.get_str("stateStr").unwrap(), "PRIMARY");
    assert_eq!(member.get_str("name").unwrap(), server.addr().to_string());
    let optime = member.get_document("optime").unwrap();
    assert!(optime.get_timestamp("ts").is_ok());
    assert_eq!(optime.get_i64("t").unwrap(), 1);
    assert!(
        rs.get_document("optimes")
            .unwrap()
            .get_document("appliedOpTime")
            .is_ok()
    );

    let config = admin
        .run_command(doc! {"replSetGetConfig": 1})
        .await
        .unwrap();
    let config = config.get_document("config").unwrap();
    assert_eq!(config.get_str("_id").unwrap(), "rs0");
    assert_eq!(
        config.get_array("members").unwrap()[0]
            .as_document()
            .unwrap()
            .get_str("host")
            .unwrap(),
        server.addr().to_string()
    );
    let set_id = config
        .get_document("settings")
        .unwrap()
        .get_object_id("replicaSetId")
        .unwrap();
    let again = admin
        .run_command(doc! {"replSetGetConfig": 1})
        .await
        .unwrap();
    assert_eq!(
        again
            .get_document("config")
            .unwrap()
            .get_document("settings")
            .unwrap()
            .get_object_id("replicaSetId")
            .unwrap(),
        set_id,
        "the replica set id is stable"
    );

    let conn = admin
        .run_command(doc! {"connectionStatus": 1, "showPrivileges": true})
        .await
        .unwrap();
    let info = conn.get_document("authInfo").unwrap();
    assert!(info.get_array("authenticatedUsers").unwrap().is_empty());
    assert!(info.get_array("authenticatedUserRoles").unwrap().is_empty());
    assert!(
        info.get_array("authenticatedUserPrivileges")
            .unwrap()
            .is_empty()
    );

    let opts = admin.run_command(doc! {"getCmdLineOpts": 1}).await.unwrap();
    assert_eq!(
        opts.get_document("parsed")
            .unwrap()
            .get_document("replication")
            .unwrap()
            .get_str("replSet")
            .unwrap(),
        "rs0"
    );
    assert!(opts.get_array("argv").is_ok());

    // Admin-only commands refuse other databases as mongod does.
    let err = client
        .database("db")
        .run_command(doc! {"getCmdLineOpts": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(13));
}

#[tokio::test]
async fn unknown_commands_get_command_not_found() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let err = client
        .database("db")
        .run_command(doc! {"frobnicate": 1})
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!(c.code, 59);
    assert_eq!(c.code_name, "CommandNotFound");
    assert_eq!(c.message, "no such command: 'frobnicate'");
}

#[tokio::test]
async fn cluster_time_is_on_every_reply_and_advances_with_writes() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let before: Document = db.run_command(doc! {"ping": 1}).await.unwrap();
    let t0 = before.get_timestamp("operationTime").unwrap();
    db.collection::<Document>("c")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let after = db.run_command(doc! {"ping": 1}).await.unwrap();
    let t1 = after.get_timestamp("operationTime").unwrap();
    assert!(t1 > t0, "{t1:?} > {t0:?}");
}

#[test]
fn synchronous_callers_can_start_and_drop_a_server() {
    let server = mongoshift_testkit::TestServer::builder()
        .start_blocking()
        .unwrap();
    let addr = server.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(server);
    // After drop the port is closed.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
