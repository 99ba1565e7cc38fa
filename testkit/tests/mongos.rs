//! Mongos mode through the official Rust driver: topology, shards, databases, sharded
//! collections and their chunks, placement of documents, reads, writes, change streams, the
//! balancer, and the errors of a real mongos.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::{ClientOptions, FindOptions, Hint};
use mongoshift_testkit::{Mode, TestServer, TestServerHandle};

async fn start_mongos(shards: usize) -> TestServerHandle {
    TestServer::builder()
        .mode(Mode::Mongos)
        .shards(shards)
        .noop_interval(Duration::from_millis(100))
        .start()
        .await
        .expect("the mongos starts")
}

async fn admin(client: &Client, command: Document) -> mongodb::error::Result<Document> {
    client.database("admin").run_command(command).await
}

fn code(result: mongodb::error::Result<Document>) -> i32 {
    let e = result.expect_err("the command fails");
    common::error_code(&e).unwrap_or_else(|| panic!("not a server error: {e}"))
}

/// Documents of a `config` collection.
async fn config(client: &Client, coll: &str, filter: Document) -> Vec<Document> {
    client
        .database("config")
        .collection::<Document>(coll)
        .find(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// `config.collections[_id].uuid`.
async fn collection_uuid(client: &Client, ns: &str) -> Bson {
    config(client, "collections", doc! {"_id": ns}).await[0]
        .get("uuid")
        .cloned()
        .unwrap()
}

/// Chunk counts per shard, as `sh.status()` computes them from `config.chunks`.
async fn chunk_counts(client: &Client, ns: &str) -> BTreeMap<String, i32> {
    let uuid = collection_uuid(client, ns).await;
    let groups: Vec<Document> = client
        .database("config")
        .collection::<Document>("chunks")
        .aggregate(vec![
            doc! {"$match": {"uuid": uuid}},
            doc! {"$group": {"_id": "$shard", "n": {"$sum": 1}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    groups
        .into_iter()
        .map(|g| {
            (
                g.get_str("_id").unwrap().to_string(),
                g.get_i32("n").unwrap(),
            )
        })
        .collect()
}

/// Document counts per shard from `collStats.shards`.
async fn shard_counts(client: &Client, db: &str, coll: &str) -> BTreeMap<String, i64> {
    let stats = client
        .database(db)
        .run_command(doc! {"collStats": coll})
        .await
        .unwrap();
    stats
        .get_document("shards")
        .unwrap()
        .iter()
        .map(|(shard, s)| {
            let s = s.as_document().unwrap();
            (shard.clone(), s.get_i64("count").unwrap())
        })
        .collect()
}

#[tokio::test]
async fn hello_says_isdbgrid_and_the_driver_sees_a_sharded_topology() {
    let server = start_mongos(2).await;
    assert!(!server.uri().contains("replicaSet"));
    let types = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&types);
    let mut options = ClientOptions::parse(server.uri()).await.unwrap();
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.sdam_event_handler = Some(EventHandler::callback(move |ev: SdamEvent| {
        if let SdamEvent::TopologyDescriptionChanged(change) = ev {
            seen.lock()
                .unwrap()
                .push(format!("{:?}", change.new_description.topology_type()));
        }
    }));
    let client = Client::with_options(options).unwrap();
    let hello = admin(&client, doc! {"hello": 1, "helloOk": true})
        .await
        .unwrap();
    assert_eq!(hello.get_str("msg").unwrap(), "isdbgrid");
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    for absent in ["setName", "hosts", "me", "primary", "readOnly"] {
        assert!(hello.get(absent).is_none(), "{absent} in {hello}");
    }
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 21);
    assert!(hello.get_document("$clusterTime").is_ok());
    assert!(
        types.lock().unwrap().iter().any(|t| t == "Sharded"),
        "{types:?}"
    );

    // Sessions, retryable writes and transactions work as on a mongos.
    let coll = client.database("app").collection::<Document>("t");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
}

#[tokio::test]
async fn list_shards_and_the_config_database_describe_the_cluster() {
    let server = start_mongos(3).await;
    let client = common::client(&server).await;
    let reply = admin(&client, doc! {"listShards": 1}).await.unwrap();
    let shards = reply.get_array("shards").unwrap();
    assert_eq!(shards.len(), 3);
    let first = shards[0].as_document().unwrap();
    assert_eq!(first.get_str("_id").unwrap(), "shard0");
    assert_eq!(
        first.get_str("host").unwrap(),
        format!("shard0/{}", server.addr())
    );
    assert_eq!(first.get_i32("state").unwrap(), 1);
    assert!(first.get_timestamp("topologyTime").is_ok());
    assert_eq!(
        config(&client, "shards", doc! {}).await,
        shards
            .iter()
            .map(|s| s.as_document().unwrap().clone())
            .collect::<Vec<_>>()
    );
    let version = config(&client, "version", doc! {}).await;
    assert!(version[0].get_object_id("clusterId").is_ok());
    // Every cluster shards config.system.sessions.
    let sessions = config(
        &client,
        "collections",
        doc! {"_id": "config.system.sessions"},
    )
    .await;
    assert_eq!(sessions[0].get_document("key").unwrap(), &doc! {"_id": 1});
    let names = client
        .database("config")
        .list_collection_names()
        .await
        .unwrap();
    for name in ["chunks", "collections", "databases", "shards"] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
    }
    // `listShards` is admin-only.
    assert_eq!(
        code(
            client
                .database("x")
                .run_command(doc! {"listShards": 1})
                .await
        ),
        13
    );
}

#[tokio::test]
async fn databases_get_a_primary_shard() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    // A database created by a write gets the least loaded shard (the first one).
    client
        .database("a")
        .collection::<Document>("c")
        .insert_one(doc! {"x": "a".repeat(1000)})
        .await
        .unwrap();
    // enableSharding creates a database with a chosen primary (optional since 6.0).
    admin(
        &client,
        doc! {"enableSharding": "b", "primaryShard": "shard1"},
    )
    .await
    .unwrap();
    // Idempotent with the same primary; a different one is refused.
    admin(
        &client,
        doc! {"enableSharding": "b", "primaryShard": "shard1"},
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"enableSharding": "b", "primaryShard": "shard0"}
            )
            .await
        ),
        48
    );
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"enableSharding": "c", "primaryShard": "shard9"}
            )
            .await
        ),
        70
    );
    assert_eq!(
        code(admin(&client, doc! {"enableSharding": "admin"}).await),
        72
    );
    // The next new database goes to the shard holding less data: shard1 (b is empty, a is on
    // shard0).
    client
        .database("c")
        .collection::<Document>("c")
        .insert_one(doc! {})
        .await
        .unwrap();
    let dbs = config(&client, "databases", doc! {}).await;
    let primaries: BTreeMap<String, String> = dbs
        .iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap().to_string(),
                d.get_str("primary").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(primaries.get("a").unwrap(), "shard0");
    assert_eq!(primaries.get("b").unwrap(), "shard1");
    assert_eq!(primaries.get("c").unwrap(), "shard1");
    let version = dbs[0].get_document("version").unwrap();
    assert!(version.get("uuid").is_some());
    assert!(version.get_timestamp("timestamp").is_ok());
    assert_eq!(version.get_i32("lastMod").unwrap(), 1);
    assert!(
        dbs[0].get("partitioned").is_none(),
        "7.0 has no partitioned flag"
    );

    // Unsharded collections live on their database's primary shard.
    let stats = client
        .database("c")
        .run_command(doc! {"collStats": "c"})
        .await
        .unwrap();
    assert!(!stats.get_bool("sharded").unwrap());
    assert_eq!(stats.get_str("primary").unwrap(), "shard1");
    assert_eq!(
        stats
            .get_document("shards")
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["shard1"]
    );
    // listDatabases reports each database's shards; local is not listed through a mongos.
    let list = admin(&client, doc! {"listDatabases": 1}).await.unwrap();
    let entries = list.get_array("databases").unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|d| d.as_document().unwrap().get_str("name").unwrap())
        .collect();
    assert!(!names.contains(&"local"), "{names:?}");
    assert!(names.contains(&"admin") && names.contains(&"config"));
    let a = entries
        .iter()
        .map(|d| d.as_document().unwrap())
        .find(|d| d.get_str("name").unwrap() == "a")
        .unwrap();
    assert_eq!(
        a.get_document("shards").unwrap().keys().collect::<Vec<_>>(),
        ["shard0"]
    );
    // Dropping a database forgets its entry.
    client.database("a").drop().await.unwrap();
    assert!(
        config(&client, "databases", doc! {"_id": "a"})
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn ranged_sharding_starts_with_one_chunk_on_the_primary() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    admin(
        &client,
        doc! {"enableSharding": "db", "primaryShard": "shard1"},
    )
    .await
    .unwrap();
    let reply = admin(&client, doc! {"shardCollection": "db.r", "key": {"a": 1}})
        .await
        .unwrap();
    assert_eq!(reply.get_str("collectionsharded").unwrap(), "db.r");
    // The collection and its shard key index were created.
    let indexes: Vec<String> = client
        .database("db")
        .collection::<Document>("r")
        .list_index_names()
        .await
        .unwrap();
    assert_eq!(indexes, ["_id_", "a_1"]);
    let coll = &config(&client, "collections", doc! {"_id": "db.r"}).await[0];
    assert_eq!(coll.get_document("key").unwrap(), &doc! {"a": 1});
    assert!(!coll.get_bool("unique").unwrap());
    assert!(!coll.get_bool("noBalance").unwrap());
    assert!(coll.get_object_id("lastmodEpoch").is_ok());
    assert!(coll.get_datetime("lastmod").is_ok());
    assert!(coll.get_timestamp("timestamp").is_ok());
    let chunks = config(&client, "chunks", doc! {"uuid": coll.get("uuid").unwrap()}).await;
    assert_eq!(chunks.len(), 1);
    let chunk = &chunks[0];
    assert_eq!(
        chunk.get_document("min").unwrap(),
        &doc! {"a": Bson::MinKey}
    );
    assert_eq!(
        chunk.get_document("max").unwrap(),
        &doc! {"a": Bson::MaxKey}
    );
    assert_eq!(chunk.get_str("shard").unwrap(), "shard1");
    assert!(chunk.get_object_id("_id").is_ok());
    assert!(chunk.get_timestamp("lastmod").is_ok());
    assert!(chunk.get_timestamp("onCurrentShardSince").is_ok());
    assert_eq!(
        chunk.get_array("history").unwrap()[0]
            .as_document()
            .unwrap()
            .get_str("shard")
            .unwrap(),
        "shard1"
    );
    // Sharding again with the same key is a no-op; another key is refused.
    admin(&client, doc! {"shardCollection": "db.r", "key": {"a": 1}})
        .await
        .unwrap();
    assert_eq!(
        code(admin(&client, doc! {"shardCollection": "db.r", "key": {"b": 1}}).await),
        23
    );
}

#[tokio::test]
async fn hashed_sharding_presplits_and_places_documents_by_hash() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    admin(
        &client,
        doc! {"shardCollection": "db.h", "key": {"x": "hashed"}},
    )
    .await
    .unwrap();
    // 7.0: two chunks per shard, contiguous per shard, split at 0 and ±(2^63 / 2).
    assert_eq!(
        chunk_counts(&client, "db.h").await,
        BTreeMap::from([("shard0".to_string(), 2), ("shard1".to_string(), 2)])
    );
    let uuid = collection_uuid(&client, "db.h").await;
    let chunks: Vec<Document> = client
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {"uuid": uuid})
        .sort(doc! {"min": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let bounds: Vec<Bson> = chunks
        .iter()
        .map(|c| c.get_document("min").unwrap().get("x").cloned().unwrap())
        .collect();
    assert_eq!(
        bounds,
        [
            Bson::MinKey,
            Bson::Int64(-4_611_686_018_427_387_902),
            Bson::Int64(0),
            Bson::Int64(4_611_686_018_427_387_902)
        ]
    );
    let indexes = client
        .database("db")
        .collection::<Document>("h")
        .list_index_names()
        .await
        .unwrap();
    assert!(indexes.contains(&"x_hashed".to_string()));

    // Each document goes to the shard owning the chunk of its hash (mongod's md5-based hash).
    let coll = client.database("db").collection::<Document>("h");
    let docs: Vec<Document> = (0..200).map(|i| doc! {"_id": i, "x": i}).collect();
    coll.insert_many(docs).await.unwrap();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..200i32 {
        let raw = mongodb::bson::rawdoc! {"x": i};
        let hash = mongoshift_testkit::query::hashed::hash64(raw.get("x").unwrap().unwrap(), 0);
        let shard = if hash < 0 { "shard0" } else { "shard1" };
        *expected.entry(shard.to_string()).or_default() += 1;
    }
    assert_eq!(shard_counts(&client, "db", "h").await, expected);
    assert!(
        expected.values().all(|n| *n > 50),
        "hashing spreads: {expected:?}"
    );

    // collStats sums the shards; $collStats answers once per shard.
    let stats = client
        .database("db")
        .run_command(doc! {"collStats": "h"})
        .await
        .unwrap();
    assert!(stats.get_bool("sharded").unwrap());
    assert_eq!(stats.get_i64("count").unwrap(), 200);
    assert_eq!(stats.get_i32("nchunks").unwrap(), 4);
    let per_shard: Vec<Document> = coll
        .aggregate(vec![doc! {"$collStats": {"storageStats": {}, "count": {}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(per_shard.len(), 2);
    for d in &per_shard {
        let shard = d.get_str("shard").unwrap();
        let storage = d.get_document("storageStats").unwrap();
        assert_eq!(storage.get_i64("count").unwrap(), expected[shard]);
        assert!(storage.get_i64("size").unwrap() > 0);
        assert_eq!(
            d.get_document("count").unwrap().get_i64("count").unwrap(),
            expected[shard]
        );
    }

    // numInitialChunks: 6 chunks on 2 shards are 3 contiguous chunks each.
    admin(
        &client,
        doc! {"shardCollection": "db.h6", "key": {"k": "hashed"}, "numInitialChunks": 6},
    )
    .await
    .unwrap();
    assert_eq!(
        chunk_counts(&client, "db.h6").await,
        BTreeMap::from([("shard0".to_string(), 3), ("shard1".to_string(), 3)])
    );
}

#[tokio::test]
async fn split_move_chunk_and_move_range_move_documents_between_shards() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    admin(
        &client,
        doc! {"enableSharding": "db", "primaryShard": "shard0"},
    )
    .await
    .unwrap();
    admin(&client, doc! {"shardCollection": "db.r", "key": {"a": 1}})
        .await
        .unwrap();
    let coll = client.database("db").collection::<Document>("r");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "a": i}))
        .await
        .unwrap();
    assert_eq!(
        shard_counts(&client, "db", "r").await,
        BTreeMap::from([("shard0".to_string(), 100)])
    );
    admin(&client, doc! {"split": "db.r", "middle": {"a": 50}})
        .await
        .unwrap();
    admin(
        &client,
        doc! {"moveChunk": "db.r", "find": {"a": 75}, "to": "shard1"},
    )
    .await
    .unwrap();
    assert_eq!(
        shard_counts(&client, "db", "r").await,
        BTreeMap::from([("shard0".to_string(), 50), ("shard1".to_string(), 50)])
    );
    assert_eq!(
        chunk_counts(&client, "db.r").await,
        BTreeMap::from([("shard0".to_string(), 1), ("shard1".to_string(), 1)])
    );
    // moveRange splits at its bounds and moves [20, 30) to shard1.
    admin(
        &client,
        doc! {"moveRange": "db.r", "min": {"a": 20}, "max": {"a": 30}, "toShard": "shard1"},
    )
    .await
    .unwrap();
    assert_eq!(
        shard_counts(&client, "db", "r").await,
        BTreeMap::from([("shard0".to_string(), 40), ("shard1".to_string(), 60)])
    );
    assert_eq!(
        chunk_counts(&client, "db.r").await,
        BTreeMap::from([("shard0".to_string(), 2), ("shard1".to_string(), 2)])
    );
    // split by `find` cuts the chunk at the median of its documents.
    admin(&client, doc! {"split": "db.r", "find": {"a": 60}})
        .await
        .unwrap();
    let uuid = collection_uuid(&client, "db.r").await;
    let split_at = config(&client, "chunks", doc! {"uuid": uuid, "min": {"a": 75}}).await;
    assert_eq!(split_at.len(), 1, "the median of 50..100 is 75");
    // Bad requests get the real errors.
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"moveChunk": "db.r", "find": {"a": 1}, "to": "shard7"}
            )
            .await
        ),
        70
    );
    assert_eq!(
        code(admin(&client, doc! {"moveChunk": "db.r", "to": "shard1"}).await),
        72
    );
    assert_eq!(
        code(admin(&client, doc! {"split": "db.unsharded", "middle": {"a": 1}}).await),
        118
    );
    // A boundary split point is refused with mongos' legacy `errmsg`-only reply.
    let boundary = admin(&client, doc! {"split": "db.r", "middle": {"a": 50}})
        .await
        .unwrap_err();
    assert!(common::error_code(&boundary).is_none(), "{boundary}");
}

#[tokio::test]
async fn finds_merge_shards_in_sort_order_and_honour_min_max() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    admin(
        &client,
        doc! {"shardCollection": "db.c", "key": {"_id": "hashed"}},
    )
    .await
    .unwrap();
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many((0..300).map(|i| doc! {"_id": i, "v": i % 7}))
        .await
        .unwrap();
    let counts = shard_counts(&client, "db", "c").await;
    assert_eq!(counts.len(), 2, "both shards hold documents: {counts:?}");
    let ids: Vec<i32> = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(17)
        .await
        .unwrap()
        .map(|d| d.unwrap().get_i32("_id").unwrap())
        .collect()
        .await;
    assert_eq!(ids, (0..300).collect::<Vec<_>>());
    // Copy partitioning: `_id` ranges with hint + min/max.
    let options = FindOptions::builder()
        .hint(Hint::Keys(doc! {"_id": 1}))
        .min(doc! {"_id": 100})
        .max(doc! {"_id": 150})
        .sort(doc! {"_id": 1})
        .build();
    let range: Vec<i32> = coll
        .find(doc! {})
        .with_options(options)
        .await
        .unwrap()
        .map(|d| d.unwrap().get_i32("_id").unwrap())
        .collect()
        .await;
    assert_eq!(range, (100..150).collect::<Vec<_>>());
    assert_eq!(coll.count_documents(doc! {"v": 3}).await.unwrap(), 43);
}

#[tokio::test]
async fn writes_follow_the_shard_key_rules_of_7_0() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    admin(
        &client,
        doc! {"enableSharding": "db", "primaryShard": "shard0"},
    )
    .await
    .unwrap();
    admin(&client, doc! {"shardCollection": "db.w", "key": {"k": 1}})
        .await
        .unwrap();
    admin(&client, doc! {"split": "db.w", "middle": {"k": 100}})
        .await
        .unwrap();
    admin(
        &client,
        doc! {"moveChunk": "db.w", "bounds": [{"k": 100}, {"k": Bson::MaxKey}], "to": "shard1"},
    )
    .await
    .unwrap();
    let coll = client.database("db").collection::<Document>("w");
    coll.insert_many([
        doc! {"_id": 1, "k": 1, "n": 0},
        doc! {"_id": 2, "k": 200, "n": 0},
    ])
    .await
    .unwrap();
    // A missing shard key field is allowed (it counts as null); an array is not.
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    let e = coll
        .insert_one(doc! {"_id": 4, "k": [1, 2]})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&e), Some(61));
    // 7.0 routes updateOne/deleteOne without the shard key; upserts still need it.
    coll.update_one(doc! {"n": 0}, doc! {"$set": {"n": 1}})
        .await
        .unwrap();
    let e = coll
        .update_one(doc! {"n": 5}, doc! {"$set": {"x": 1}})
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&e), Some(61));
    coll.update_one(doc! {"k": 300}, doc! {"$set": {"x": 1}})
        .upsert(true)
        .await
        .unwrap();
    // Changing the shard key needs the full key in the filter and a single-document update;
    // the document then moves to the shard owning its new key.
    let e = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"k": 150}})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&e), Some(31025));
    let e = coll
        .update_many(doc! {"k": 1}, doc! {"$set": {"k": 150}})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&e), Some(72));
    coll.update_one(doc! {"k": 1}, doc! {"$set": {"k": 150}})
        .await
        .unwrap();
    assert_eq!(
        shard_counts(&client, "db", "w").await,
        BTreeMap::from([("shard0".to_string(), 1), ("shard1".to_string(), 3)])
    );
    coll.delete_one(doc! {"n": 0}).await.unwrap();
    // Unique indexes must be prefixed by the shard key.
    let e = coll
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"n": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&e), Some(67));
    let reply = client
        .database("db")
        .run_command(doc! {"createIndexes": "w", "indexes": [{"key": {"k": 1, "n": 1}, "name": "k_n", "unique": true}]})
        .await
        .unwrap();
    let raw = reply.get_document("raw").unwrap();
    assert_eq!(raw.len(), 2, "both shards own chunks: {reply}");
}

#[tokio::test]
async fn shard_collection_validates_like_mongos() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    let db = client.database("db");
    db.collection::<Document>("full")
        .insert_one(doc! {"a": 1, "arr": [1, 2]})
        .await
        .unwrap();
    // A non-empty collection needs an index that starts with the key.
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"shardCollection": "db.full", "key": {"a": 1}}
            )
            .await
        ),
        72
    );
    db.collection::<Document>("full")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"a": 1, "b": 1})
                .build(),
        )
        .await
        .unwrap();
    admin(
        &client,
        doc! {"shardCollection": "db.full", "key": {"a": 1}},
    )
    .await
    .unwrap();
    // A multikey index cannot support a shard key.
    db.collection::<Document>("multi")
        .insert_one(doc! {"arr": [1, 2]})
        .await
        .unwrap();
    db.collection::<Document>("multi")
        .create_index(mongodb::IndexModel::builder().keys(doc! {"arr": 1}).build())
        .await
        .unwrap();
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"shardCollection": "db.multi", "key": {"arr": 1}}
            )
            .await
        ),
        96
    );
    // Option and key checks.
    let cases = [
        (
            doc! {"shardCollection": "db.u", "key": {"a": "hashed"}, "unique": true},
            72,
        ),
        (doc! {"shardCollection": "db.u", "key": {"a": -1}}, 2),
        (doc! {"shardCollection": "db.u", "key": {}}, 2),
        (
            doc! {"shardCollection": "db.u", "key": {"a": 1}, "numInitialChunks": 4},
            72,
        ),
        (
            doc! {"shardCollection": "db.u", "key": {"a": "hashed"}, "presplitHashedZones": true},
            31387,
        ),
        (doc! {"shardCollection": "nodot", "key": {"a": 1}}, 73),
        (doc! {"shardCollection": "admin.x", "key": {"a": 1}}, 72),
        (doc! {"shardCollection": "db.u"}, 40414),
        (
            doc! {"shardCollection": "db.u", "key": {"a": 1}, "bogus": 1},
            40415,
        ),
        (
            doc! {"shardCollection": "db.u", "key": {"a": 1}, "collation": {"locale": "fr"}},
            2,
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(
            code(admin(&client, command.clone()).await),
            expected,
            "{command}"
        );
    }
    db.create_collection("capped")
        .capped(true)
        .size(4096)
        .await
        .unwrap();
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"shardCollection": "db.capped", "key": {"_id": 1}}
            )
            .await
        ),
        72
    );
    db.create_collection("v")
        .view_on("full".to_string())
        .pipeline(vec![])
        .await
        .unwrap();
    assert_eq!(
        code(admin(&client, doc! {"shardCollection": "db.v", "key": {"_id": 1}}).await),
        166
    );
    db.collection::<Document>("uniq")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"u": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            admin(
                &client,
                doc! {"shardCollection": "db.uniq", "key": {"other": 1}}
            )
            .await
        ),
        72
    );
    // Not on the admin database: 13.
    assert_eq!(
        code(
            db.run_command(doc! {"shardCollection": "db.x", "key": {"a": 1}})
                .await
        ),
        13
    );
}

#[tokio::test]
async fn change_streams_through_mongos_start_empty_and_carry_the_shard_key() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("s");
    // One write before the collection is sharded.
    coll.insert_one(doc! {"_id": 0, "sk": "before"})
        .await
        .unwrap();
    let before_sharding = server.cluster_time();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"sk": 1}).build())
        .await
        .unwrap();
    admin(&client, doc! {"shardCollection": "db.s", "key": {"sk": 1}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 9, "sk": "after"})
        .await
        .unwrap();
    let start = server.cluster_time();

    // The opening aggregate answers an empty first batch even when events exist after the
    // start point, with a postBatchResumeToken.
    let opened = db
        .run_command(doc! {
            "aggregate": "s",
            "pipeline": [{"$changeStream": {"startAtOperationTime": start}}],
            "cursor": {},
        })
        .await
        .unwrap();
    let cursor = opened.get_document("cursor").unwrap();
    assert!(cursor.get_array("firstBatch").unwrap().is_empty());
    assert!(cursor.get_document("postBatchResumeToken").is_ok());

    let mut stream = client.watch().show_expanded_events(true).await.unwrap();
    let first_token = stream
        .resume_token()
        .expect("the empty first batch has a PBRT");
    coll.insert_one(doc! {"_id": 1, "sk": "a", "v": 1})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    admin(
        &client,
        doc! {"shardCollection": "db.t", "key": {"_id": "hashed"}},
    )
    .await
    .unwrap();

    let mut events: Vec<ChangeStreamEvent<Document>> = Vec::new();
    while events.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        // The collection and index creation of db.t come before its shardCollection event.
        if matches!(
            event.operation_type,
            OperationType::Other(ref t) if t == "create" || t == "createIndexes"
        ) {
            continue;
        }
        events.push(event);
    }
    for event in &events[..3] {
        assert_eq!(
            event.document_key,
            Some(doc! {"sk": "a", "_id": 1}),
            "{:?}",
            event.operation_type
        );
    }
    assert_eq!(events[0].operation_type, OperationType::Insert);
    assert_eq!(events[1].operation_type, OperationType::Update);
    assert_eq!(events[2].operation_type, OperationType::Delete);
    assert_eq!(
        events[3].operation_type,
        OperationType::Other("shardCollection".to_string())
    );

    // Resuming from the first token replays the same events.
    let mut resumed = coll.watch().resume_after(first_token).await.unwrap();
    let replay = tokio::time::timeout(Duration::from_secs(20), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(replay.id, events[0].id);

    // The high-water mark advances while nothing happens (periodic no-ops).
    let idle = db
        .run_command(doc! {"aggregate": 1, "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap();
    let cursor = idle.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    let mut previous = cursor.get_document("postBatchResumeToken").unwrap().clone();
    for _ in 0..2 {
        let more = db
            .run_command(doc! {"getMore": id, "collection": "$cmd.aggregate", "maxTimeMS": 400})
            .await
            .unwrap();
        let cursor = more.get_document("cursor").unwrap();
        assert!(cursor.get_array("nextBatch").unwrap().is_empty());
        let token = cursor.get_document("postBatchResumeToken").unwrap().clone();
        assert!(
            token.get_str("_data").unwrap() > previous.get_str("_data").unwrap(),
            "the postBatchResumeToken advances while idle"
        );
        previous = token;
    }

    // Events written before the collection was sharded keep `{_id}` only; later ones carry
    // the shard key.
    let mut old = coll
        .watch()
        .start_at_operation_time(before_sharding)
        .await
        .unwrap();
    let mut keys = Vec::new();
    while keys.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(20), old.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        keys.push(event.document_key.unwrap());
    }
    assert_eq!(keys, [doc! {"_id": 0}, doc! {"sk": "after", "_id": 9}]);
}

#[tokio::test]
async fn a_shard_key_change_that_moves_a_document_is_a_delete_and_an_insert() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("m");
    admin(&client, doc! {"shardCollection": "db.m", "key": {"k": 1}})
        .await
        .unwrap();
    admin(&client, doc! {"split": "db.m", "middle": {"k": 100}})
        .await
        .unwrap();
    admin(
        &client,
        doc! {"moveChunk": "db.m", "find": {"k": 100}, "to": "shard1"},
    )
    .await
    .unwrap();
    coll.insert_one(doc! {"_id": 1, "k": 5}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    // Within a shard: one update event. Across shards: the insert on the new shard and the
    // delete on the old one, at one cluster time (one transaction).
    coll.update_one(doc! {"_id": 1, "k": 5}, doc! {"$set": {"k": 6}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1, "k": 6}, doc! {"$set": {"k": 150}})
        .await
        .unwrap();
    let mut events: Vec<ChangeStreamEvent<Document>> = Vec::new();
    while events.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        events.push(event);
    }
    assert_eq!(events[0].operation_type, OperationType::Update);
    assert_eq!(events[1].operation_type, OperationType::Insert);
    assert_eq!(events[1].document_key, Some(doc! {"k": 150, "_id": 1}));
    assert_eq!(events[2].operation_type, OperationType::Delete);
    assert_eq!(events[2].document_key, Some(doc! {"k": 6, "_id": 1}));
    assert_eq!(events[1].cluster_time, events[2].cluster_time);
    assert_eq!(
        shard_counts(&client, "db", "m").await,
        BTreeMap::from([("shard0".to_string(), 0), ("shard1".to_string(), 1)])
    );
}

#[tokio::test]
async fn balancer_start_stop_and_status() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    let status = admin(&client, doc! {"balancerStatus": 1}).await.unwrap();
    assert_eq!(status.get_str("mode").unwrap(), "full");
    assert!(!status.get_bool("inBalancerRound").unwrap());
    assert!(status.get_i64("numBalancerRounds").is_ok());
    admin(&client, doc! {"balancerStop": 1}).await.unwrap();
    let status = admin(&client, doc! {"balancerStatus": 1}).await.unwrap();
    assert_eq!(status.get_str("mode").unwrap(), "off");
    let settings = config(&client, "settings", doc! {"_id": "balancer"}).await;
    assert_eq!(
        settings,
        vec![doc! {"_id": "balancer", "stopped": true, "mode": "off"}]
    );
    admin(&client, doc! {"balancerStart": 1}).await.unwrap();
    let status = admin(&client, doc! {"balancerStatus": 1}).await.unwrap();
    assert_eq!(status.get_str("mode").unwrap(), "full");
    assert!(
        !config(&client, "settings", doc! {"_id": "balancer"}).await[0]
            .get_bool("stopped")
            .unwrap()
    );
    assert_eq!(
        code(
            client
                .database("db")
                .run_command(doc! {"balancerStatus": 1})
                .await
        ),
        13
    );
}

#[tokio::test]
async fn replica_set_only_commands_fail_as_on_a_mongos() {
    let server = start_mongos(2).await;
    let client = common::client(&server).await;
    // mongos' stub answers `{info: "mongos", ok: 0, errmsg}` without a code, which the driver
    // cannot parse as a command error.
    let e = admin(&client, doc! {"replSetGetStatus": 1})
        .await
        .unwrap_err();
    assert!(common::error_code(&e).is_none(), "{e}");
    assert!(e.to_string().contains("code"), "{e}");
    assert_eq!(code(admin(&client, doc! {"replSetGetConfig": 1}).await), 59);
    assert_eq!(
        code(
            client
                .database("local")
                .run_command(doc! {"find": "oplog.rs"})
                .await
        ),
        20
    );
    let status = admin(&client, doc! {"serverStatus": 1}).await.unwrap();
    assert_eq!(status.get_str("process").unwrap(), "mongos");
    assert!(status.get("repl").is_none());
    assert!(status.get_document("sharding").is_ok());
    let opts = admin(&client, doc! {"getCmdLineOpts": 1}).await.unwrap();
    let parsed = opts.get_document("parsed").unwrap();
    assert!(parsed.get("replication").is_none());
    assert!(parsed.get_document("sharding").is_ok());
}

#[tokio::test]
async fn current_op_through_a_mongos_lists_its_operations_with_their_comment() {
    use futures_util::TryStreamExt;
    let server = start_mongos(2).await;
    let client = Client::with_uri_str(server.uri()).await.unwrap();
    let ops: Vec<Document> = client
        .database("admin")
        .aggregate([
            doc! { "$currentOp": { "allUsers": true } },
            doc! { "$match": { "command.comment": "me" } },
        ])
        .comment(Bson::from("me"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ops.len(), 1, "the aggregate lists itself: {ops:?}");
    assert_eq!(ops[0].get_str("op").unwrap(), "command");
}
