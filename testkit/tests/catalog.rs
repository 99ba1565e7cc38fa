//! Catalog commands through the official Rust driver: reply shapes and error codes.

mod common;

use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::IndexOptions;

async fn collection_infos(db: &mongodb::Database, filter: Document) -> Vec<Document> {
    let reply = db
        .run_command(doc! {"listCollections": 1, "filter": filter})
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(
        cursor.get_str("ns").unwrap(),
        format!("{}.$cmd.listCollections", db.name())
    );
    cursor
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn list_collections_reports_options_uuid_views_and_timeseries() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    db.run_command(doc! {
        "create": "capped", "capped": true, "size": 1000, "max": 10,
        "validator": {"x": {"$exists": true}}, "validationLevel": "moderate",
        "collation": {"locale": "fr"},
        "changeStreamPreAndPostImages": {"enabled": true},
    })
    .await
    .unwrap();
    db.run_command(
        doc! {"create": "clustered", "clusteredIndex": {"key": {"_id": 1}, "unique": true}},
    )
    .await
    .unwrap();
    db.run_command(doc! {"create": "view", "viewOn": "capped", "pipeline": [{"$match": {"x": 1}}]})
        .await
        .unwrap();
    db.run_command(doc! {"create": "ts", "timeseries": {"timeField": "t", "metaField": "m"}})
        .await
        .unwrap();

    let infos = collection_infos(&db, doc! {}).await;
    let names: Vec<&str> = infos.iter().map(|i| i.get_str("name").unwrap()).collect();
    assert_eq!(names, vec!["capped", "clustered", "ts", "view"]);

    let capped = &infos[0];
    assert_eq!(capped.get_str("type").unwrap(), "collection");
    let options = capped.get_document("options").unwrap();
    assert!(options.get_bool("capped").unwrap());
    assert_eq!(
        options.get_i64("size").unwrap(),
        1024,
        "capped size rounds up to 256 bytes"
    );
    assert_eq!(options.get_i32("max").unwrap(), 10);
    assert_eq!(options.get_str("validationLevel").unwrap(), "moderate");
    let collation = options.get_document("collation").unwrap();
    assert_eq!(collation.get_str("locale").unwrap(), "fr");
    assert_eq!(collation.get_i32("strength").unwrap(), 3);
    assert!(
        options
            .get_document("changeStreamPreAndPostImages")
            .unwrap()
            .get_bool("enabled")
            .unwrap()
    );
    let info = capped.get_document("info").unwrap();
    assert!(!info.get_bool("readOnly").unwrap());
    let uuid = info.get_binary_generic("uuid").err();
    assert!(uuid.is_some(), "uuid is subtype 4, not generic");
    match info.get("uuid") {
        Some(Bson::Binary(b)) => assert_eq!(b.subtype, BinarySubtype::Uuid),
        other => panic!("uuid missing: {other:?}"),
    }
    assert_eq!(
        capped.get_document("idIndex").unwrap(),
        &doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    );

    let clustered = &infos[1];
    assert!(clustered.get("idIndex").is_none());
    assert_eq!(
        clustered
            .get_document("options")
            .unwrap()
            .get_document("clusteredIndex")
            .unwrap(),
        &doc! {"v": 2, "key": {"_id": 1}, "name": "_id_", "unique": true}
    );

    let ts = &infos[2];
    assert_eq!(ts.get_str("type").unwrap(), "timeseries");
    let ts_opts = ts
        .get_document("options")
        .unwrap()
        .get_document("timeseries")
        .unwrap();
    assert_eq!(ts_opts.get_str("timeField").unwrap(), "t");
    assert_eq!(ts_opts.get_str("granularity").unwrap(), "seconds");

    let view = &infos[3];
    assert_eq!(view.get_str("type").unwrap(), "view");
    assert!(
        view.get_document("info")
            .unwrap()
            .get_bool("readOnly")
            .unwrap()
    );
    assert_eq!(
        view.get_document("options")
            .unwrap()
            .get_str("viewOn")
            .unwrap(),
        "capped"
    );

    // The UUID is stable across calls for the same incarnation and changes on re-create.
    let again = collection_infos(&db, doc! {"name": "capped"}).await;
    assert_eq!(
        again[0].get_document("info").unwrap().get("uuid"),
        info.get("uuid")
    );
    db.collection::<Document>("capped").drop().await.unwrap();
    db.create_collection("capped").await.unwrap();
    let recreated = collection_infos(&db, doc! {"name": "capped"}).await;
    assert_ne!(
        recreated[0].get_document("info").unwrap().get("uuid"),
        info.get("uuid")
    );

    // nameOnly and the typed driver helper.
    let reply = db
        .run_command(doc! {"listCollections": 1, "nameOnly": true, "filter": {"type": "view"}})
        .await
        .unwrap();
    let first = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert_eq!(
        first,
        &vec![Bson::Document(doc! {"name": "view", "type": "view"})]
    );
    let mut names = db.list_collection_names().await.unwrap();
    names.sort();
    assert_eq!(names, vec!["capped", "clustered", "ts", "view"]);
    let specs: Vec<_> = db
        .list_collections()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(specs.len(), 4);
}

#[tokio::test]
async fn list_databases_sizes_name_only_and_filter() {
    let server = common::start().await;
    let client = common::client(&server).await;
    client
        .database("alpha")
        .collection::<Document>("c")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    client
        .database("beta")
        .create_collection("c")
        .await
        .unwrap();
    let dbs = client.list_databases().await.unwrap();
    let alpha = dbs.iter().find(|d| d.name == "alpha").unwrap();
    assert!(alpha.size_on_disk > 0);
    assert!(!alpha.empty);
    let beta = dbs.iter().find(|d| d.name == "beta").unwrap();
    assert!(beta.empty);
    assert!(dbs.iter().any(|d| d.name == "admin"));
    assert!(dbs.iter().any(|d| d.name == "local"));
    let names = client
        .list_database_names()
        .filter(doc! {"name": {"$regex": "^a"}})
        .await
        .unwrap();
    assert_eq!(names, vec!["admin", "alpha"]);
    let err = client
        .database("alpha")
        .run_command(doc! {"listDatabases": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(13));
}

#[tokio::test]
async fn indexes_create_list_conflict_and_drop() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("c");
    let reply = db
        .run_command(doc! {"createIndexes": "c", "indexes": [
            {"key": {"a": 1}, "name": "a_1", "unique": true},
            {"key": {"b": -1, "c": 1}, "name": "b_-1_c_1", "sparse": true, "partialFilterExpression": {"b": {"$gt": 0}}},
            {"key": {"t": 1}, "name": "t_1", "expireAfterSeconds": 60, "hidden": true},
        ]})
        .await
        .unwrap();
    assert_eq!(reply.get_i32("numIndexesBefore").unwrap(), 1);
    assert_eq!(reply.get_i32("numIndexesAfter").unwrap(), 4);
    assert!(reply.get_bool("createdCollectionAutomatically").unwrap());

    let again = db
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a_1", "unique": true}]})
        .await
        .unwrap();
    assert_eq!(again.get_str("note").unwrap(), "all indexes already exist");

    // Same name, different key: 86. Same key, different name: 85.
    let err = db
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"z": 1}, "name": "a_1"}]})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(86));
    let err = db
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "other", "unique": true}]})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(85));

    let names: Vec<String> = coll.list_index_names().await.unwrap();
    assert_eq!(names, vec!["_id_", "a_1", "b_-1_c_1", "t_1"]);
    let indexes: Vec<IndexModel> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(indexes[1].keys, doc! {"a": 1});
    assert_eq!(indexes[1].options.as_ref().unwrap().unique, Some(true));

    // The unique index is enforced; a build over duplicates fails with 11000.
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    assert_eq!(
        common::error_code(&coll.insert_one(doc! {"_id": 2, "a": 1}).await.unwrap_err()),
        Some(11000)
    );
    // A missing field indexes as null, so a second document without `a` conflicts too.
    coll.insert_one(doc! {"_id": 5}).await.unwrap();
    assert_eq!(
        common::error_code(&coll.insert_one(doc! {"_id": 6}).await.unwrap_err()),
        Some(11000)
    );

    // dropIndexes by name, by key, by list, and "*".
    coll.drop_index("a_1").await.unwrap();
    coll.insert_one(doc! {"_id": 3, "d": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 4, "d": 1}).await.unwrap();
    let err = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"d": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(11000));
    db.run_command(doc! {"dropIndexes": "c", "index": {"b": -1, "c": 1}})
        .await
        .unwrap();
    let err = db
        .run_command(doc! {"dropIndexes": "c", "index": "nope"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(27));
    let err = db
        .run_command(doc! {"dropIndexes": "c", "index": "_id_"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(72));
    coll.create_index(IndexModel::builder().keys(doc! {"e": 1}).build())
        .await
        .unwrap();
    db.run_command(doc! {"dropIndexes": "c", "index": ["e_1"]})
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"dropIndexes": "c", "index": "*"})
        .await
        .unwrap();
    assert_eq!(reply.get_i32("nIndexesWas").unwrap(), 2);
    assert_eq!(coll.list_index_names().await.unwrap(), vec!["_id_"]);

    let err = db
        .run_command(doc! {"listIndexes": "missing"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(26));
}

#[tokio::test]
async fn rename_drop_and_drop_database() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let admin = client.database("admin");
    db.collection::<Document>("a")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    let uuid_of = |name: &'static str, db: mongodb::Database| async move {
        let infos = collection_infos(&db, doc! {"name": name}).await;
        infos[0].get_document("info").unwrap().get("uuid").cloned()
    };
    let uuid_a = uuid_of("a", db.clone()).await;

    let err = admin
        .run_command(doc! {"renameCollection": "db.a", "to": "db.b"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(48));
    admin
        .run_command(doc! {"renameCollection": "db.a", "to": "db.b", "dropTarget": true})
        .await
        .unwrap();
    let docs: Vec<Document> = db
        .collection::<Document>("b")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs, vec![doc! {"_id": 1}]);
    assert_eq!(
        uuid_of("b", db.clone()).await,
        uuid_a,
        "a rename within a database keeps the UUID"
    );

    // Across databases.
    admin
        .run_command(doc! {"renameCollection": "db.b", "to": "other.c"})
        .await
        .unwrap();
    let other = client.database("other");
    let docs: Vec<Document> = other
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs, vec![doc! {"_id": 1}]);
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&"db".to_string())
    );
    let err = admin
        .run_command(doc! {"renameCollection": "db.nope", "to": "db.x"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(26));

    // Drop reports nIndexesWas; dropping a missing collection succeeds (mongod 7.0).
    let reply = other.run_command(doc! {"drop": "c"}).await.unwrap();
    assert_eq!(reply.get_i32("nIndexesWas").unwrap(), 1);
    other.run_command(doc! {"drop": "c"}).await.unwrap();

    other.create_collection("x").await.unwrap();
    other.drop().await.unwrap();
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&"other".to_string())
    );
    // Creating an existing collection with other options: 48.
    db.create_collection("y").await.unwrap();
    let err = db
        .run_command(doc! {"create": "y", "capped": true, "size": 100})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(48));
    let err = db
        .run_command(doc! {"create": "z", "bogus": 1})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(40415));
}

#[tokio::test]
async fn coll_stats_db_stats_and_coll_mod() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "pad": "p".repeat(100)}))
        .await
        .unwrap();
    coll.create_index(IndexModel::builder().keys(doc! {"pad": 1}).build())
        .await
        .unwrap();
    let stats = db.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert_eq!(
        stats
            .get_i32("count")
            .or_else(|_| stats.get_i64("count").map(|n| n as i32))
            .unwrap(),
        10
    );
    let size = stats.get_i64("size").unwrap();
    assert!(size >= 10 * 100);
    assert_eq!(stats.get_i64("avgObjSize").unwrap(), size / 10);
    assert!(stats.get_i64("storageSize").unwrap() >= size);
    assert_eq!(stats.get_i32("nindexes").unwrap(), 2);
    assert!(stats.get_i64("totalIndexSize").unwrap() > 0);
    assert!(!stats.get_bool("capped").unwrap());

    let via_stage: Vec<Document> = coll
        .aggregate(vec![doc! {"$collStats": {"storageStats": {}, "count": {}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let storage = via_stage[0].get_document("storageStats").unwrap();
    assert_eq!(storage.get_i64("count").unwrap(), 10);
    assert_eq!(storage.get_i64("size").unwrap(), size);
    assert_eq!(
        via_stage[0]
            .get_document("count")
            .unwrap()
            .get_i64("count")
            .unwrap(),
        10
    );

    let db_stats = db.run_command(doc! {"dbStats": 1}).await.unwrap();
    assert_eq!(db_stats.get_i32("collections").unwrap(), 1);
    assert_eq!(db_stats.get_i64("objects").unwrap(), 10);

    db.run_command(doc! {"collMod": "c", "validator": {"x": {"$exists": true}}})
        .await
        .unwrap();
    let infos = collection_infos(&db, doc! {"name": "c"}).await;
    assert!(
        infos[0]
            .get_document("options")
            .unwrap()
            .get_document("validator")
            .is_ok()
    );
    let reply = db
        .run_command(doc! {"collMod": "c", "index": {"keyPattern": {"pad": 1}, "hidden": true}})
        .await
        .unwrap();
    assert!(!reply.get_bool("hidden_old").unwrap());
    assert!(reply.get_bool("hidden_new").unwrap());
    let err = db
        .run_command(doc! {"collMod": "missing"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(26));
    let err = db
        .run_command(doc! {"collStats": "missing"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(26));
}

#[tokio::test]
async fn user_write_block_mode_blocks_user_writes_only() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let admin = client.database("admin");
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    admin
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": true})
        .await
        .unwrap();
    let err = coll.insert_one(doc! {"_id": 2}).await.unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!((c.code, c.code_name.as_str()), (371, "UserWritesBlocked"));
    assert_eq!(
        common::error_code(
            &client
                .database("db")
                .create_collection("d")
                .await
                .unwrap_err()
        ),
        Some(371)
    );
    // Reads still work.
    assert!(coll.find_one(doc! {"_id": 1}).await.unwrap().is_some());
    admin
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": false})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_commits_after_the_write_blocks_operation_time() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    let admin = client.database("admin");
    let op_time = |reply: Document| reply.get_timestamp("operationTime").unwrap();
    // A large insert is under way (past its write-block check, its first documents already
    // in the oplog) when the block is asked for: the block must wait for it, so that none of
    // its documents commits after the block's operationTime.
    let before = op_time(admin.run_command(doc! {"ping": 1}).await.unwrap());
    let insert = tokio::spawn({
        let coll = coll.clone();
        async move {
            let docs = (0..100_000).map(|i| doc! {"_id": i, "pad": "x".repeat(100)});
            coll.insert_many(docs).await.map(|r| r.inserted_ids.len())
        }
    });
    while op_time(admin.run_command(doc! {"ping": 1}).await.unwrap()) == before {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let blocked_at = op_time(
        admin
            .run_command(doc! {"setUserWriteBlockMode": 1, "global": true})
            .await
            .unwrap(),
    );
    assert_eq!(
        insert.await.unwrap().unwrap(),
        100_000,
        "the insert under way completes"
    );
    let after = mongodb::bson::Timestamp {
        time: blocked_at.time,
        increment: blocked_at.increment + 1,
    };
    let mut stream = coll
        .watch()
        .start_at_operation_time(after)
        .max_await_time(std::time::Duration::from_millis(100))
        .await
        .unwrap();
    for _ in 0..3 {
        let late = stream.next_if_any().await.unwrap();
        assert!(
            late.is_none(),
            "a write committed after the block's operationTime {blocked_at:?}: {:?}",
            late.map(|e| (e.document_key, e.cluster_time))
        );
    }
}

#[tokio::test]
async fn out_of_range_numbers_are_refused_not_overflowed() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let err = db
        .run_command(doc! {"create": "big", "capped": true, "size": i64::MAX})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));
    let err = db
        .run_command(doc! {"find": "c", "maxTimeMS": i64::MAX})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));
    // The server is still serving.
    db.run_command(doc! {"ping": 1}).await.unwrap();
}

#[tokio::test]
async fn oplog_stats_report_its_fill_level_like_a_capped_oplog() {
    let server = mongoshift_testkit::TestServer::builder()
        .replica_set_name("rs0")
        .oplog_max_events(1_000)
        .start()
        .await
        .unwrap();
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "pad": "x".repeat(100)}))
        .await
        .unwrap();
    let local = client.database("local");
    let stats = local
        .run_command(doc! {"collStats": "oplog.rs"})
        .await
        .unwrap();
    assert!(stats.get_bool("capped").unwrap());
    let count = stats.get_i64("count").unwrap();
    let size = stats.get_i64("size").unwrap();
    let max_size = stats.get_i64("maxSize").unwrap();
    assert!(count >= 100, "every insert is an entry: {stats}");
    assert!(size > 100 * 100, "entries carry their documents: {stats}");
    // 1,000 entries of the same average size fit in maxSize.
    let average = stats.get_i64("avgObjSize").unwrap();
    assert_eq!(max_size, average * 1_000);

    let agg: Vec<Document> = local
        .collection::<Document>("oplog.rs")
        .aggregate([doc! {"$collStats": {"storageStats": {}, "count": {}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let storage = agg[0].get_document("storageStats").unwrap();
    assert_eq!(storage.get_i64("maxSize").unwrap(), max_size);
    assert_eq!(
        agg[0]
            .get_document("count")
            .unwrap()
            .get_i64("count")
            .unwrap(),
        count
    );
}
