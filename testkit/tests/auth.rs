//! Authentication and authorization with the official driver: SCRAM-SHA-256 and SCRAM-SHA-1
//! logins, mongod's error replies (18, 13, 17, 334), built-in role privileges,
//! `connectionStatus`, `usersInfo`/`rolesInfo`, filtered `listDatabases`, cursor ownership and
//! the write-block bypass.

mod common;

use futures_util::TryStreamExt;
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::{AuthMechanism, ClientOptions, Credential};
use mongodb::{Client, error::ErrorKind};
use mongoshift_testkit::{TestServer, TestServerHandle};

use common::error_code;

/// A server with the users the tests log in as.
async fn start() -> TestServerHandle {
    TestServer::builder()
        .user("admin", "adminpw", ["root"])
        .user("reader", "readerpw", ["read@app"])
        .user("writer", "writerpw", ["readWrite@app", "clusterMonitor"])
        .user(
            "restorer",
            "restorerpw",
            ["restore", "backup", "readWrite@app"],
        )
        .user("local@app", "localpw", ["readWrite"])
        .start()
        .await
        .expect("the test server starts")
}

async fn options(server: &TestServerHandle) -> ClientOptions {
    let mut options = ClientOptions::parse(server.uri()).await.expect("valid uri");
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    // One connection, so that manual SASL conversations stay on one socket.
    options.max_pool_size = Some(1);
    options
}

/// A client authenticated as `user` (in `source`), with the given mechanism or, with `None`,
/// the driver's negotiation (saslSupportedMechs + speculative SCRAM-SHA-256).
async fn login(
    server: &TestServerHandle,
    user: &str,
    password: &str,
    source: &str,
    mechanism: Option<AuthMechanism>,
) -> Client {
    let mut options = options(server).await;
    options.credential = Some(
        Credential::builder()
            .username(user.to_string())
            .password(password.to_string())
            .source(source.to_string())
            .mechanism(mechanism)
            .build(),
    );
    Client::with_options(options).expect("client options are valid")
}

async fn anonymous(server: &TestServerHandle) -> Client {
    Client::with_options(options(server).await).expect("client options are valid")
}

fn command_error(e: &mongodb::error::Error) -> (i32, String, String) {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => (c.code, c.code_name.clone(), c.message.clone()),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => (
            w.code,
            w.code_name.clone().unwrap_or_default(),
            w.message.clone(),
        ),
        other => panic!("expected a command error, got {other:?}"),
    }
}

#[tokio::test]
async fn scram_sha_256_login_reads_and_writes() {
    let server = start().await;
    let client = login(
        &server,
        "writer",
        "writerpw",
        "admin",
        Some(AuthMechanism::ScramSha256),
    )
    .await;
    let coll = client.database("app").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "x": "y"}).await.unwrap();
    let found = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(found.get_str("x").unwrap(), "y");
}

#[tokio::test]
async fn scram_sha_1_login_works_for_the_same_user() {
    let server = start().await;
    let client = login(
        &server,
        "writer",
        "writerpw",
        "admin",
        Some(AuthMechanism::ScramSha1),
    )
    .await;
    let n = client
        .database("app")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn negotiated_login_and_users_outside_admin() {
    let server = start().await;
    // No mechanism: the driver asks saslSupportedMechs and tries speculative SCRAM-SHA-256.
    let client = login(&server, "admin", "adminpw", "admin", None).await;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    // A user defined on `app` authenticates against `app` only.
    let app_user = login(&server, "local", "localpw", "app", None).await;
    app_user
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"a": 1})
        .await
        .unwrap();
    let wrong_source = login(&server, "local", "localpw", "admin", None).await;
    let err = wrong_source
        .database("app")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert!(
        matches!(*err.kind, ErrorKind::Authentication { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshake_advertises_mechanisms_and_answers_speculative_auth() {
    let server = start().await;
    let client = anonymous(&server).await;
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! {"hello": 1, "saslSupportedMechs": "admin.writer"})
        .await
        .unwrap();
    assert_eq!(
        hello.get_array("saslSupportedMechs").unwrap(),
        &vec![Bson::from("SCRAM-SHA-1"), Bson::from("SCRAM-SHA-256")]
    );
    let unknown = admin
        .run_command(doc! {"hello": 1, "saslSupportedMechs": "admin.nobody"})
        .await
        .unwrap();
    assert!(unknown.get("saslSupportedMechs").is_none());
    let malformed = admin
        .run_command(doc! {"hello": 1, "saslSupportedMechs": "nodot"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&malformed).0, 2);

    let payload = Binary {
        subtype: BinarySubtype::Generic,
        bytes: b"n,,n=writer,r=clientnonce12345".to_vec(),
    };
    let hello = admin
        .run_command(doc! {"hello": 1, "speculativeAuthenticate": {
        "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": payload,
        "options": {"skipEmptyExchange": true}, "db": "admin"}})
        .await
        .unwrap();
    let spec = hello.get_document("speculativeAuthenticate").unwrap();
    assert_eq!(spec.get_i32("conversationId").unwrap(), 1);
    assert!(!spec.get_bool("done").unwrap());
    let first = String::from_utf8(spec.get_binary_generic("payload").unwrap().clone()).unwrap();
    assert!(first.starts_with("r=clientnonce12345"), "{first}");
    assert!(
        first.contains(",s=") && first.ends_with(",i=15000"),
        "{first}"
    );

    // A failing speculative attempt is left out, not an error.
    let hello = admin
        .run_command(doc! {"hello": 1, "speculativeAuthenticate": {
            "saslStart": 1, "mechanism": "PLAIN", "payload": Binary { subtype: BinarySubtype::Generic, bytes: vec![] },
            "db": "admin"}})
        .await
        .unwrap();
    assert!(hello.get("speculativeAuthenticate").is_none());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_with_18() {
    let server = start().await;
    for (user, password) in [("writer", "nope"), ("nobody", "writerpw")] {
        for mechanism in [AuthMechanism::ScramSha256, AuthMechanism::ScramSha1] {
            let client = login(&server, user, password, "admin", Some(mechanism.clone())).await;
            let err = client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await
                .unwrap_err();
            match err.kind.as_ref() {
                ErrorKind::Authentication { message, .. } => {
                    assert!(message.contains("Authentication failed."), "{message}")
                }
                other => {
                    panic!("{user}/{mechanism:?}: expected an authentication error, got {other:?}")
                }
            }
        }
    }

    // The reply itself, driven by hand on one connection.
    let client = anonymous(&server).await;
    let admin = client.database("admin");
    let start = admin
        .run_command(doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
            "payload": Binary { subtype: BinarySubtype::Generic, bytes: b"n,,n=writer,r=abcdefghijkl".to_vec() },
            "options": {"skipEmptyExchange": true}})
        .await
        .unwrap();
    assert_eq!(start.get_i32("conversationId").unwrap(), 1);
    let first = String::from_utf8(start.get_binary_generic("payload").unwrap().clone()).unwrap();
    let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
    let bad_proof = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let err = admin
        .run_command(doc! {"saslContinue": 1, "conversationId": 1,
        "payload": Binary { subtype: BinarySubtype::Generic, bytes: bad_proof.into_bytes() }})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err),
        (
            18,
            "AuthenticationFailed".into(),
            "Authentication failed.".into()
        )
    );
    // The failed conversation is gone.
    let err = admin
        .run_command(doc! {"saslContinue": 1, "conversationId": 1,
        "payload": Binary { subtype: BinarySubtype::Generic, bytes: vec![] }})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err),
        (
            17,
            "ProtocolError".into(),
            "No SASL session state found".into()
        )
    );
}

#[tokio::test]
async fn malformed_sasl_requests_get_error_replies() {
    let server = start().await;
    let client = anonymous(&server).await;
    let admin = client.database("admin");
    let bin = |b: &[u8]| Binary {
        subtype: BinarySubtype::Generic,
        bytes: b.to_vec(),
    };
    let unknown = admin
        .run_command(doc! {"saslStart": 1, "mechanism": "PLAIN", "payload": bin(b"\0u\0p")})
        .await
        .unwrap_err();
    let (code, name, message) = command_error(&unknown);
    assert_eq!((code, name.as_str()), (334, "MechanismUnavailable"));
    assert_eq!(
        message,
        "Received authentication for mechanism PLAIN which is unknown or not enabled"
    );
    for payload in [
        &b""[..],
        b"garbage",
        b"\xff\xff",
        b"p=tls,,n=a,r=abcdef",
        b"n,,",
    ] {
        let err = admin
            .run_command(doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-1", "payload": bin(payload)})
            .await
            .unwrap_err();
        assert_eq!(command_error(&err).0, 18, "{payload:?}");
    }
    let missing = admin
        .run_command(doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&missing).0, 40414);
    let wrong_type = admin
        .run_command(doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": 5})
        .await
        .unwrap_err();
    assert_eq!(command_error(&wrong_type).0, 14);
    // The server still serves the connection.
    admin.run_command(doc! {"ping": 1}).await.unwrap();
}

#[tokio::test]
async fn unauthenticated_commands_need_authentication() {
    let server = start().await;
    let client = anonymous(&server).await;
    let app = client.database("app");
    let err = app
        .collection::<Document>("c")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err),
        (
            13,
            "Unauthorized".into(),
            "Command find requires authentication".into()
        )
    );
    let err = client.list_database_names().await.unwrap_err();
    assert_eq!(
        command_error(&err).2,
        "Command listDatabases requires authentication"
    );
    // The handshake and a few diagnostics need no login, as on mongod.
    let admin = client.database("admin");
    for command in [
        doc! {"ping": 1},
        doc! {"hello": 1},
        doc! {"isMaster": 1},
        doc! {"buildInfo": 1},
        doc! {"connectionStatus": 1},
    ] {
        admin
            .run_command(command.clone())
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    let status = admin
        .run_command(doc! {"connectionStatus": 1})
        .await
        .unwrap();
    assert!(
        status
            .get_document("authInfo")
            .unwrap()
            .get_array("authenticatedUsers")
            .unwrap()
            .is_empty()
    );
    // An admin-only command on another database fails on that first.
    let err = app
        .run_command(doc! {"replSetGetStatus": 1})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err).2,
        "replSetGetStatus may only be run against the admin database."
    );
}

#[tokio::test]
async fn read_only_user_cannot_write() {
    let server = start().await;
    let client = login(&server, "reader", "readerpw", "admin", None).await;
    let coll = client.database("app").collection::<Document>("c");
    coll.find_one(doc! {}).await.unwrap();
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    let (code, name, message) = command_error(&err);
    assert_eq!((code, name.as_str()), (13, "Unauthorized"));
    // The body as the Rust driver sends it, printed like mongod prints BSON.
    assert!(
        message.starts_with(
            "not authorized on app to execute command { insert: \"c\", ordered: true, $db: \"app\", lsid: { id: UUID(\""
        ),
        "{message}"
    );
    assert!(
        message.contains("$clusterTime: { clusterTime: Timestamp("),
        "{message}"
    );
    assert!(message.ends_with(", txnNumber: 1 }"), "{message}");
    // Other databases are out of reach even for reads.
    let err = client
        .database("other")
        .collection::<Document>("c")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert!(
        command_error(&err)
            .2
            .starts_with("not authorized on other to execute command { find: \"c\"")
    );
    // So is the cluster.
    let err = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(13));
}

#[tokio::test]
async fn connection_status_shows_the_user_roles_and_privileges() {
    let server = start().await;
    let client = login(&server, "writer", "writerpw", "admin", None).await;
    let status = client
        .database("admin")
        .run_command(doc! {"connectionStatus": 1, "showPrivileges": true})
        .await
        .unwrap();
    let info = status.get_document("authInfo").unwrap();
    assert_eq!(
        info.get_array("authenticatedUsers").unwrap(),
        &vec![Bson::Document(doc! {"user": "writer", "db": "admin"})]
    );
    assert_eq!(
        info.get_array("authenticatedUserRoles").unwrap(),
        &vec![
            Bson::Document(doc! {"role": "readWrite", "db": "app"}),
            Bson::Document(doc! {"role": "clusterMonitor", "db": "admin"}),
        ]
    );
    let privileges = info.get_array("authenticatedUserPrivileges").unwrap();
    let on = |resource: Document| {
        privileges
            .iter()
            .filter_map(Bson::as_document)
            .find(|p| p.get_document("resource").unwrap() == &resource)
            .map(|p| {
                p.get_array("actions")
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| panic!("no privilege on {resource}"))
    };
    let app = on(doc! {"db": "app", "collection": ""});
    for action in [
        "find",
        "insert",
        "update",
        "remove",
        "changeStream",
        "createIndex",
    ] {
        assert!(app.contains(&action.to_string()), "{action} in {app:?}");
    }
    let cluster = on(doc! {"cluster": true});
    for action in [
        "serverStatus",
        "replSetGetStatus",
        "listDatabases",
        "hostInfo",
    ] {
        assert!(
            cluster.contains(&action.to_string()),
            "{action} in {cluster:?}"
        );
    }
    assert!(on(doc! {"db": "local", "collection": ""}).contains(&"find".to_string()));
    // Without showPrivileges the field is absent.
    let status = client
        .database("admin")
        .run_command(doc! {"connectionStatus": 1})
        .await
        .unwrap();
    assert!(
        status
            .get_document("authInfo")
            .unwrap()
            .get("authenticatedUserPrivileges")
            .is_none()
    );
}

#[tokio::test]
async fn roles_info_and_users_info_describe_built_in_roles() {
    let server = start().await;
    let client = login(&server, "admin", "adminpw", "admin", None).await;
    let app = client.database("app");
    let info = app
        .run_command(doc! {"rolesInfo": "read", "showPrivileges": true})
        .await
        .unwrap();
    let roles = info.get_array("roles").unwrap();
    assert_eq!(roles.len(), 1);
    let read = roles[0].as_document().unwrap();
    assert_eq!(read.get_str("role").unwrap(), "read");
    assert_eq!(read.get_str("db").unwrap(), "app");
    assert!(read.get_bool("isBuiltin").unwrap());
    assert!(read.get_array("roles").unwrap().is_empty());
    let privileges = read.get_array("privileges").unwrap();
    assert_eq!(
        privileges[0]
            .as_document()
            .unwrap()
            .get_document("resource")
            .unwrap(),
        &doc! {"db": "app", "collection": ""}
    );
    assert_eq!(privileges, read.get_array("inheritedPrivileges").unwrap());
    // All built-in roles of admin.
    let all = client
        .database("admin")
        .run_command(doc! {"rolesInfo": 1, "showBuiltinRoles": true})
        .await
        .unwrap();
    let names: Vec<&str> = all
        .get_array("roles")
        .unwrap()
        .iter()
        .map(|r| r.as_document().unwrap().get_str("role").unwrap())
        .collect();
    for role in [
        "root",
        "backup",
        "restore",
        "clusterMonitor",
        "readAnyDatabase",
    ] {
        assert!(names.contains(&role), "{role} in {names:?}");
    }
    let none = client
        .database("admin")
        .run_command(doc! {"rolesInfo": 1})
        .await
        .unwrap();
    assert!(
        none.get_array("roles").unwrap().is_empty(),
        "no user-defined roles"
    );

    let users = client
        .database("admin")
        .run_command(doc! {"usersInfo": "writer"})
        .await
        .unwrap();
    let writer = users.get_array("users").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(writer.get_str("_id").unwrap(), "admin.writer");
    assert_eq!(
        writer.get_array("mechanisms").unwrap(),
        &vec![Bson::from("SCRAM-SHA-1"), Bson::from("SCRAM-SHA-256")]
    );

    // A user without viewUser sees only themselves.
    let reader = login(&server, "reader", "readerpw", "admin", None).await;
    let me = reader
        .database("admin")
        .run_command(doc! {"usersInfo": "reader", "showPrivileges": true})
        .await
        .unwrap();
    let doc = me.get_array("users").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert!(!doc.get_array("inheritedPrivileges").unwrap().is_empty());
    let err = reader
        .database("admin")
        .run_command(doc! {"usersInfo": "writer"})
        .await
        .unwrap_err();
    assert!(
        command_error(&err)
            .2
            .starts_with("not authorized on admin to execute command { usersInfo: \"writer\"")
    );
    // ... and the roles they hold.
    reader
        .database("app")
        .run_command(doc! {"rolesInfo": "read"})
        .await
        .unwrap();
    let err = reader
        .database("app")
        .run_command(doc! {"rolesInfo": "readWrite"})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(13));
}

#[tokio::test]
async fn list_databases_shows_only_authorized_databases() {
    let server = start().await;
    let admin = login(&server, "admin", "adminpw", "admin", None).await;
    for db in ["app", "other"] {
        admin
            .database(db)
            .collection::<Document>("c")
            .insert_one(doc! {"x": 1})
            .await
            .unwrap();
    }
    let mut all = admin.list_database_names().await.unwrap();
    all.sort();
    assert_eq!(all, vec!["admin", "app", "config", "local", "other"]);

    // No listDatabases action: only the databases the user has privileges on.
    let reader = login(&server, "reader", "readerpw", "admin", None).await;
    assert_eq!(reader.list_database_names().await.unwrap(), vec!["app"]);
    let err = reader
        .database("admin")
        .run_command(doc! {"listDatabases": 1, "authorizedDatabases": false})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err),
        (
            13,
            "Unauthorized".into(),
            "Insufficient permissions to list all databases".into()
        )
    );
    // With the action, authorizedDatabases: true still filters: a readWrite-only user of
    // another database sees just it (`totalSize` follows), while clusterMonitor's collStats
    // on every normal resource makes every database visible.
    let names = |reply: &Document| -> Vec<String> {
        reply
            .get_array("databases")
            .unwrap()
            .iter()
            .map(|d| {
                d.as_document()
                    .unwrap()
                    .get_str("name")
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let app_user = login(&server, "local", "localpw", "app", None).await;
    let listed = app_user
        .database("admin")
        .run_command(doc! {"listDatabases": 1, "authorizedDatabases": true})
        .await
        .unwrap();
    assert_eq!(names(&listed), vec!["app"]);
    let app_size = listed.get_array("databases").unwrap()[0]
        .as_document()
        .unwrap()
        .get_i64("sizeOnDisk")
        .unwrap();
    assert_eq!(listed.get_i64("totalSize").unwrap(), app_size);
    let writer = login(&server, "writer", "writerpw", "admin", None).await;
    let listed = writer
        .database("admin")
        .run_command(doc! {"listDatabases": 1, "nameOnly": true, "authorizedDatabases": true})
        .await
        .unwrap();
    assert_eq!(
        names(&listed),
        vec!["admin", "app", "config", "local", "other"]
    );
}

#[tokio::test]
async fn change_streams_need_change_stream_and_find() {
    let server = start().await;
    let reader = login(&server, "reader", "readerpw", "admin", None).await;
    reader
        .database("app")
        .collection::<Document>("c")
        .watch()
        .await
        .unwrap();
    reader.database("app").watch().await.unwrap();
    let err = reader.watch().await.unwrap_err();
    assert!(command_error(&err).2.starts_with(
        "not authorized on admin to execute command { aggregate: 1, pipeline: [ { $changeStream: { allChangesForCluster: true"
    ), "{err}");
    // The oplog is not a normal collection: readAnyDatabase-style roles do not reach it, but
    // clusterMonitor (read on local) does.
    let err = reader
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(13));
    let writer = login(&server, "writer", "writerpw", "admin", None).await;
    writer
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .unwrap();
}

#[tokio::test]
async fn cursors_belong_to_the_user_who_opened_them() {
    let server = start().await;
    let admin = login(&server, "admin", "adminpw", "admin", None).await;
    let coll = admin.database("app").collection::<Document>("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = admin
        .database("app")
        .run_command(doc! {"find": "c", "batchSize": 1})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let reader = login(&server, "reader", "readerpw", "admin", None).await;
    let err = reader
        .database("app")
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err),
        (
            13,
            "Unauthorized".into(),
            format!("cursor id {id} was not created by the authenticated user")
        )
    );
    // The owner continues it; the driver's own cursors work end to end.
    admin
        .database("app")
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 10})
        .await
        .unwrap();
    let all: Vec<Document> = reader
        .database("app")
        .collection::<Document>("c")
        .find(doc! {})
        .batch_size(2)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn write_blocking_needs_its_action_and_restore_bypasses_it() {
    let server = start().await;
    let writer = login(&server, "writer", "writerpw", "admin", None).await;
    let err = writer
        .database("admin")
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": true})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(13));
    let restorer = login(&server, "restorer", "restorerpw", "admin", None).await;
    restorer
        .database("admin")
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": true})
        .await
        .unwrap();
    let err = writer
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(371));
    // bypassWriteBlockingMode (restore) lets the migration tool write anyway.
    restorer
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"x": 2})
        .await
        .unwrap();
}

#[test]
fn invalid_users_make_start_fail() {
    let err = TestServer::builder()
        .user("u", "pw", ["root@app"])
        .start_blocking()
        .unwrap_err();
    assert!(
        err.to_string().contains("no built-in role root@app"),
        "{err}"
    );
    let err = TestServer::builder()
        .user("u", "pw", ["readWrite@app"])
        .user("u", "pw2", ["read@app"])
        .start_blocking()
        .unwrap_err();
    assert!(err.to_string().contains("declared twice"), "{err}");
}
