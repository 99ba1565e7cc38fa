//! Inserts, finds, cursors and their errors through the official Rust driver.

mod common;

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc, oid::ObjectId, rawdoc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{FindOptions, Hint, InsertManyOptions};

async fn count(coll: &mongodb::Collection<Document>) -> usize {
    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.len()
}

#[tokio::test]
async fn insert_and_find_round_trip_raw_documents() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    let docs: Vec<Document> = (0..250)
        .map(|i| doc! {"_id": i, "x": i % 7, "s": format!("v{i}")})
        .collect();
    let result = coll.insert_many(docs.clone()).await.unwrap();
    assert_eq!(result.inserted_ids.len(), 250);

    // Natural order, all documents, across several batches (101 + getMores).
    let found: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found, docs);

    // Filter, sort, skip, limit.
    let found: Vec<Document> = coll
        .find(doc! {"x": {"$gte": 5}})
        .sort(doc! {"_id": -1})
        .skip(2)
        .limit(3)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<i32> = found.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, vec![237, 236, 230]);

    // _id lookups use the index and honour the total order: 1 == 1.0 == 1L.
    let one = coll.find_one(doc! {"_id": 1.0}).await.unwrap().unwrap();
    assert_eq!(one, docs[1]);
    let one = coll.find_one(doc! {"_id": 1i64}).await.unwrap().unwrap();
    assert_eq!(one, docs[1]);
    assert!(coll.find_one(doc! {"_id": "1"}).await.unwrap().is_none());
}

#[tokio::test]
async fn server_generates_id_only_when_absent_and_moves_it_first() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    // The driver always adds _id; send raw commands to see the server's behaviour.
    db.run_command(doc! {"insert": "c", "documents": [{"a": 1}, {"b": 2, "_id": "x"}]})
        .await
        .unwrap();
    let docs: Vec<Document> = db
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(docs[0].get("_id"), Some(Bson::ObjectId(_))));
    assert_eq!(docs[0].keys().next().unwrap(), "_id");
    assert_eq!(docs[1], doc! {"_id": "x", "b": 2});
    let err = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": [1, 2]}]})
        .await
        .unwrap();
    assert_eq!(
        err.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        53
    );
}

#[tokio::test]
async fn duplicate_key_errors_have_the_real_shape() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "x": "foo"}).await.unwrap();
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    let ErrorKind::Write(WriteFailure::WriteError(w)) = err.kind.as_ref() else {
        panic!("expected a write error, got {err:?}");
    };
    assert_eq!(w.code, 11000);
    assert_eq!(
        w.message,
        "E11000 duplicate key error collection: db.c index: _id_ dup key: { _id: 1 }"
    );

    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! {"x": 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    // The raw reply carries keyPattern and keyValue.
    let reply = client
        .database("db")
        .run_command(doc! {"insert": "c", "documents": [{"_id": 2, "x": "foo"}]})
        .await
        .unwrap();
    let e = reply.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(e.get_i32("index").unwrap(), 0);
    assert_eq!(e.get_i32("code").unwrap(), 11000);
    assert_eq!(e.get_document("keyPattern").unwrap(), &doc! {"x": 1});
    assert_eq!(e.get_document("keyValue").unwrap(), &doc! {"x": "foo"});
    assert_eq!(
        e.get_str("errmsg").unwrap(),
        "E11000 duplicate key error collection: db.c index: x_1 dup key: { x: \"foo\" }"
    );
}

#[tokio::test]
async fn ordered_and_unordered_inserts_report_write_errors() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    let docs = vec![doc! {"_id": 1}, doc! {"_id": 1}, doc! {"_id": 2}];
    let err = coll.insert_many(docs.clone()).await.unwrap_err();
    let ErrorKind::InsertMany(e) = err.kind.as_ref() else {
        panic!("expected InsertMany, got {err:?}");
    };
    assert_eq!(e.write_errors.as_ref().unwrap()[0].index, 1);
    assert_eq!(count(&coll).await, 1, "ordered stops");

    coll.drop().await.unwrap();
    let err = coll
        .insert_many(docs)
        .with_options(InsertManyOptions::builder().ordered(false).build())
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(11000));
    assert_eq!(count(&coll).await, 2, "unordered continues");
}

#[tokio::test]
async fn hint_id_with_min_max_partitions_in_total_order() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    // _id values of several BSON types, inserted out of order.
    let oid = ObjectId::new();
    let ids: Vec<Bson> = vec![
        Bson::String("b".into()),
        Bson::Int32(3),
        Bson::Double(1.5),
        Bson::ObjectId(oid),
        Bson::Int64(-7),
        Bson::String("a".into()),
        Bson::Document(doc! {"k": 1}),
        Bson::Null,
        Bson::Boolean(true),
    ];
    for id in &ids {
        coll.insert_one(doc! {"_id": id.clone()}).await.unwrap();
    }
    let scan = |min: Option<Bson>, max: Option<Bson>| {
        let coll = coll.clone();
        async move {
            let mut options = FindOptions::builder()
                .hint(Hint::Keys(doc! {"_id": 1}))
                .build();
            options.min = min.map(|m| doc! {"_id": m});
            options.max = max.map(|m| doc! {"_id": m});
            let docs: Vec<Document> = coll
                .find(doc! {})
                .with_options(options)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            docs.into_iter()
                .map(|d| d.get("_id").unwrap().clone())
                .collect::<Vec<_>>()
        }
    };
    // Null < numbers < strings < objects < ObjectId < booleans.
    let all = scan(None, None).await;
    assert_eq!(
        all,
        vec![
            Bson::Null,
            Bson::Int64(-7),
            Bson::Double(1.5),
            Bson::Int32(3),
            Bson::String("a".into()),
            Bson::String("b".into()),
            Bson::Document(doc! {"k": 1}),
            Bson::ObjectId(oid),
            Bson::Boolean(true),
        ]
    );
    // Two partitions split at "a": [MinKey, "a") and ["a", MaxKey) cover everything once.
    let left = scan(Some(Bson::MinKey), Some(Bson::String("a".into()))).await;
    let right = scan(Some(Bson::String("a".into())), Some(Bson::MaxKey)).await;
    assert_eq!(left.len() + right.len(), all.len());
    assert_eq!([left, right].concat(), all);
    // min without hint is refused as mongod refuses it.
    let mut options = FindOptions::default();
    options.min = Some(doc! {"_id": 0});
    let err = coll.find(doc! {}).with_options(options).await.unwrap_err();
    assert_eq!(common::error_code(&err), Some(51173));
}

#[tokio::test]
async fn cursors_batch_and_getmore_errors() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 3})
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(cursor.get_str("ns").unwrap(), "db.c");
    assert_eq!(cursor.get_array("firstBatch").unwrap().len(), 3);
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);

    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 4})
        .await
        .unwrap();
    let cursor = more.get_document("cursor").unwrap();
    assert_eq!(cursor.get_array("nextBatch").unwrap().len(), 4);
    assert_eq!(cursor.get_str("ns").unwrap(), "db.c");

    // Wrong namespace: 13 Unauthorized; unknown id: 43 CursorNotFound.
    let err = db
        .run_command(doc! {"getMore": id, "collection": "other"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(13));
    let err = db
        .run_command(doc! {"getMore": 12345i64, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(43));
    // maxTimeMS on a non-awaitData cursor is refused.
    let err = db
        .run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 10})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));

    let killed = db
        .run_command(doc! {"killCursors": "c", "cursors": [id, 777i64]})
        .await
        .unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![Bson::Int64(id)]
    );
    assert_eq!(
        killed.get_array("cursorsNotFound").unwrap(),
        &vec![Bson::Int64(777)]
    );
    let err = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(43));

    // Exhausted cursors report id 0 (an Int64, as the driver requires).
    let reply = db.run_command(doc! {"find": "c"}).await.unwrap();
    assert_eq!(
        reply.get_document("cursor").unwrap().get_i64("id").unwrap(),
        0
    );
}

#[tokio::test]
async fn raw_batch_cursor_returns_every_document() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "pad": "x".repeat(100)}))
        .await
        .unwrap();
    // `find(..).batch()`: whole server batches as raw BSON arrays, as mongoshift copies them.
    let mut batches = coll.find(doc! {}).batch_size(300).batch().await.unwrap();
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    while let Some(batch) = batches.try_next().await.unwrap() {
        let docs = batch.doc_slices().unwrap();
        let mut n = 0;
        for doc in docs {
            let doc = doc.unwrap();
            let doc = doc.as_document().unwrap();
            ids.push(doc.get_i32("_id").unwrap());
            n += 1;
        }
        sizes.push(n);
    }
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    assert_eq!(sizes, vec![300, 300, 300, 100]);

    // The same through a raw cursor command.
    let db = client.database("db");
    let mut cursor = db
        .run_raw_cursor_command(rawdoc! {"find": "c", "batchSize": 300})
        .await
        .unwrap();
    let mut n = 0;
    while cursor.advance().await.unwrap() {
        let _ = cursor.current();
        n += 1;
    }
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn sixteen_mebibyte_documents_and_large_batches() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<RawDocumentBuf>("big");
    // One document just under the 16 MiB limit.
    let pad = "y".repeat(16 * 1024 * 1024 - 100);
    let big = rawdoc! {"_id": 1, "pad": pad.as_str()};
    assert!(big.as_bytes().len() <= 16 * 1024 * 1024);
    coll.insert_one(&big).await.unwrap();
    // Several large documents in one insert_many: the driver splits them into messages
    // of up to 48 MB, which the server must accept.
    let docs: Vec<RawDocumentBuf> = (2..8)
        .map(|i| rawdoc! {"_id": i, "pad": "z".repeat(10 * 1024 * 1024)})
        .collect();
    coll.insert_many(&docs).await.unwrap();
    let all: Vec<RawDocumentBuf> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], big);
    // Too large: refused.
    let too_big = rawdoc! {"_id": 9, "pad": "q".repeat(16 * 1024 * 1024 + 10)};
    assert!(coll.insert_one(&too_big).await.is_err());
}

#[tokio::test]
async fn count_distinct_and_estimated_count() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many(vec![
        doc! {"_id": 1, "tags": ["a", "b"], "n": 1},
        doc! {"_id": 2, "tags": ["b", "c"], "n": 2},
        doc! {"_id": 3, "tags": "a", "n": 2.0},
    ])
    .await
    .unwrap();
    assert_eq!(coll.estimated_document_count().await.unwrap(), 3);
    let n = client
        .database("db")
        .run_command(doc! {"count": "c", "query": {"n": 2}})
        .await
        .unwrap();
    assert_eq!(n.get_i32("n").unwrap(), 2);
    let values = coll.distinct("tags", doc! {}).await.unwrap();
    assert_eq!(
        values,
        vec![
            Bson::String("a".into()),
            Bson::String("b".into()),
            Bson::String("c".into())
        ]
    );
    // 2 and 2.0 are one distinct value.
    assert_eq!(coll.distinct("n", doc! {}).await.unwrap().len(), 2);
    // A missing collection counts 0.
    let missing = client.database("db").collection::<Document>("missing");
    assert_eq!(missing.estimated_document_count().await.unwrap(), 0);
}

#[tokio::test]
async fn aggregation_stages_the_product_uses() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "g": i % 4, "v": i}))
        .await
        .unwrap();
    assert_eq!(coll.count_documents(doc! {"g": 1}).await.unwrap(), 25);
    let groups: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$match": {"v": {"$lt": 40}}},
            doc! {"$group": {"_id": "$g", "n": {"$sum": 1}, "max": {"$max": "$v"}, "min": {"$min": "$v"}}},
            doc! {"$sort": {"_id": -1}},
            doc! {"$limit": 2},
            doc! {"$project": {"n": 1, "max": 1, "min": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        groups,
        vec![
            doc! {"_id": 3, "n": 10, "max": 39, "min": 3},
            doc! {"_id": 2, "n": 10, "max": 38, "min": 2},
        ]
    );
    let count: Vec<Document> = coll
        .aggregate(vec![doc! {"$match": {"g": 0}}, doc! {"$count": "n"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(count, vec![doc! {"n": 25}]);
    // $sample for partition boundaries: the requested number of distinct existing documents.
    let sample: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$sample": {"size": 10}},
            doc! {"$project": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sample.len(), 10);
    let mut ids: Vec<i32> = sample.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|i| (0..100).contains(i)));
    // Unknown stages answer 40324 naming the stage.
    let err = coll
        .aggregate(vec![doc! {"$frobnicate": {}}])
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!(c.code, 40324);
    assert!(c.message.contains("$frobnicate"), "{}", c.message);
}

#[tokio::test]
async fn oplog_window_is_readable_from_local_oplog_rs() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap()
        .unwrap();
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap();
    for entry in [&first, &last] {
        assert!(entry.get_timestamp("ts").is_ok(), "{entry}");
        assert_eq!(entry.get_i64("t").unwrap(), 1);
        assert!(entry.get_datetime("wall").is_ok());
        assert!(entry.get_str("op").is_ok());
        assert!(entry.get_str("ns").is_ok());
    }
    assert!(first.get_timestamp("ts").unwrap() < last.get_timestamp("ts").unwrap());
    assert_eq!(last.get_str("op").unwrap(), "u");
    assert_eq!(last.get_str("ns").unwrap(), "db.c");
    assert_eq!(last.get_document("o2").unwrap(), &doc! {"_id": 1});
    // The newest entry is the cluster time the server reports.
    assert_eq!(last.get_timestamp("ts").unwrap(), server.cluster_time());
    // Filters work on oplog entries too.
    let inserts: Vec<Document> = oplog
        .find(doc! {"op": "i", "ns": "db.c"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(inserts.len(), 1);
    assert_eq!(inserts[0].get_document("o").unwrap(), &doc! {"_id": 1});
}

/// `local.oplog.rs` is read in chunks from the end a scan starts at; results across chunk
/// boundaries come whole and in order, both ways, and aggregations see every entry.
#[tokio::test]
async fn oplog_scans_cross_chunks_in_both_directions() {
    // No periodic no-op entry between the counts compared below.
    let server = common::start_with_noop_interval(Duration::from_secs(3_600)).await;
    let client = common::client(&server).await;
    let coll = client.database("db").collection::<Document>("big");
    coll.insert_many((0..2_500).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    // The `_id`s of the insert entries of `db.big` matching `filter`, in `$natural` order
    // (with no sort: in insertion order), after `skip`, at most `limit` (0: all).
    let ids = |filter: Document, natural: Option<i32>, skip: u64, limit: i64| {
        let mut find = doc! {"op": "i", "ns": "db.big"};
        find.extend(filter);
        let mut query = oplog.find(find).skip(skip).limit(limit);
        if let Some(natural) = natural {
            query = query.sort(doc! {"$natural": natural});
        }
        async move {
            let entries: Vec<Document> = query.await.unwrap().try_collect().await.unwrap();
            entries
                .iter()
                .map(|e| e.get_document("o").unwrap().get_i32("_id").unwrap())
                .collect::<Vec<i32>>()
        }
    };
    let all_ids: Vec<i32> = (0..2_500).collect();
    let backwards: Vec<i32> = all_ids.iter().rev().copied().collect();
    assert_eq!(ids(doc! {}, None, 0, 0).await, all_ids);
    assert_eq!(ids(doc! {}, Some(1), 0, 0).await, all_ids);
    assert_eq!(ids(doc! {}, Some(-1), 0, 0).await, backwards);
    assert_eq!(ids(doc! {}, Some(-1), 0, 3).await, [2_499, 2_498, 2_497]);
    // Across a chunk boundary (the view reads 1,024 entries at a time), from either end.
    assert_eq!(
        ids(doc! {}, Some(-1), 1_020, 10).await,
        backwards[1_020..1_030]
    );
    assert_eq!(
        ids(doc! {}, Some(1), 1_020, 10).await,
        all_ids[1_020..1_030]
    );
    assert_eq!(
        ids(doc! {"o._id": {"$lt": 2}}, Some(-1), 0, 0).await,
        [1, 0]
    );
    let all = count(&oplog).await as u64;
    // Aggregations read the same entries (`countDocuments` is one).
    assert_eq!(oplog.count_documents(doc! {}).await.unwrap(), all);
    let inserts: Vec<Document> = oplog
        .aggregate([
            doc! {"$match": {"op": "i", "ns": "db.big"}},
            doc! {"$count": "n"},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(inserts, [doc! {"n": 2_500}]);
    let stats = client
        .database("local")
        .run_command(doc! {"collStats": "oplog.rs"})
        .await
        .unwrap();
    assert!(all > 2_500, "{all}");
    assert_eq!(stats.get_i64("count").unwrap() as u64, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_connections_write_and_read_consistently() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let coll = client
            .database("db")
            .collection::<Document>(&format!("c{}", t % 4));
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                coll.insert_one(doc! {"_id": t * 1000 + i, "t": t})
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    let n = coll.count_documents(doc! {"t": t}).await.unwrap();
                    assert!(n > i as u64, "a writer sees its own inserts");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for c in 0..4 {
        let coll = client
            .database("db")
            .collection::<Document>(&format!("c{c}"));
        assert_eq!(coll.estimated_document_count().await.unwrap(), 200);
    }
    // Every insert got its own oplog entry with a unique, increasing cluster time.
    let entries: Vec<Document> = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"op": "i"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(entries.len(), 800);
    let times: Vec<_> = entries
        .iter()
        .map(|e| e.get_timestamp("ts").unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn unsupported_arguments_are_refused_not_ignored() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    db.collection::<Document>("c")
        .insert_one(doc! {"_id": 1, "s": "A"})
        .await
        .unwrap();
    let err = db
        .run_command(doc! {"find": "c", "filtr": {}})
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!(c.code, 40415);
    assert_eq!(c.message, "BSON field 'find.filtr' is an unknown field.");
    let err = db
        .run_command(
            doc! {"find": "c", "filter": {"s": "a"}, "collation": {"locale": "en", "strength": 2}},
        )
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));
    // The simple collation is binary comparison, which is what this server does.
    let reply = db
        .run_command(doc! {"find": "c", "filter": {"s": "A"}, "collation": {"locale": "simple"}})
        .await
        .unwrap();
    assert_eq!(
        reply
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .len(),
        1
    );
    let err = db
        .run_command(doc! {"find": "c", "returnKey": true})
        .await
        .unwrap_err();
    assert_eq!(common::error_code(&err), Some(2));
}

#[tokio::test]
async fn dropping_a_collection_kills_its_open_find_cursors() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    db.collection::<Document>("c")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 1})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    db.collection::<Document>("c").drop().await.unwrap();
    let err = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(c) = err.kind.as_ref() else {
        panic!("expected a command error, got {err:?}");
    };
    assert_eq!((c.code, c.code_name.as_str()), (175, "QueryPlanKilled"));
}

/// The ids of a cursor reply's batch (`firstBatch` or `nextBatch`) and its cursor id.
fn batch_ids(reply: &Document, key: &str) -> (Vec<Bson>, i64) {
    let cursor = reply.get_document("cursor").unwrap();
    let ids = cursor
        .get_array(key)
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get("_id").unwrap().clone())
        .collect();
    (ids, cursor.get_i64("id").unwrap())
}

#[tokio::test]
async fn find_cursors_read_on_from_their_position_like_mongod_scans() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "odd": i % 2 == 1, "pad": "x"}))
        .await
        .unwrap();

    // An `_id` range: writes ahead of the position are seen, writes behind it and past `max`
    // are not, and nothing comes twice.
    let reply = db
        .run_command(doc! {
            "find": "c", "hint": {"_id": 1}, "min": {"_id": 2}, "max": {"_id": 50},
            "batchSize": 3,
        })
        .await
        .unwrap();
    let (first, id) = batch_ids(&reply, "firstBatch");
    assert_eq!(first, vec![Bson::Int32(2), Bson::Int32(3), Bson::Int32(4)]);
    assert_ne!(id, 0);
    coll.insert_many([doc! {"_id": 2.5}, doc! {"_id": 7.5}, doc! {"_id": 60}])
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 5}).await.unwrap();
    coll.update_one(doc! {"_id": 4}, doc! {"$set": {"pad": "y"}})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    let (rest, id) = batch_ids(&more, "nextBatch");
    let expected = [6.0, 7.0, 7.5, 8.0, 9.0];
    assert_eq!(
        rest.iter()
            .map(|b| b.as_f64().or(b.as_i32().map(f64::from)).unwrap())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(id, 0, "the range is exhausted");

    // Natural order with a filter, skip, limit and a projection, across batches.
    let reply = db
        .run_command(doc! {
            "find": "c", "filter": {"odd": true}, "skip": 1, "limit": 3,
            "projection": {"pad": 0}, "batchSize": 2,
        })
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    let batch = cursor.get_array("firstBatch").unwrap();
    assert_eq!(
        batch,
        &vec![
            Bson::Document(doc! {"_id": 3, "odd": true}),
            Bson::Document(doc! {"_id": 7, "odd": true}),
        ]
    );
    let id = cursor.get_i64("id").unwrap();
    // Read on, not from a snapshot: 9 is gone and 11, written after the first batch, comes.
    coll.delete_one(doc! {"_id": 9}).await.unwrap();
    coll.insert_one(doc! {"_id": 11, "odd": true})
        .await
        .unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    assert_eq!(
        batch_ids(&more, "nextBatch"),
        (vec![Bson::Int32(11)], 0),
        "the limit ends the cursor"
    );

    // `batchSize: 0` opens a cursor before reading anything.
    let reply = db
        .run_command(doc! {"find": "c", "hint": {"_id": 1}, "batchSize": 0})
        .await
        .unwrap();
    let (first, id) = batch_ids(&reply, "firstBatch");
    assert!(first.is_empty());
    assert_ne!(id, 0);
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    assert_eq!(batch_ids(&more, "nextBatch").0.len(), 12);
}

#[tokio::test]
async fn a_scan_batch_stops_at_16_mib() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let coll = db.collection::<Document>("big");
    let pad = "x".repeat(1024 * 1024);
    for i in 0..20 {
        coll.insert_one(doc! {"_id": i, "pad": &pad}).await.unwrap();
    }
    let reply = db
        .run_command(doc! {"find": "big", "hint": {"_id": 1}, "batchSize": 100})
        .await
        .unwrap();
    let (first, id) = batch_ids(&reply, "firstBatch");
    // Each document is a little over 1 MiB: fifteen fit in 16 MiB.
    assert_eq!(first.len(), 15);
    let more = db
        .run_command(doc! {"getMore": id, "collection": "big"})
        .await
        .unwrap();
    let (rest, id) = batch_ids(&more, "nextBatch");
    assert_eq!(id, 0);
    let all: Vec<Bson> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (0..20).map(Bson::Int32).collect::<Vec<_>>());
}

#[tokio::test]
async fn scans_end_as_on_mongod_when_their_collection_is_renamed_replaced_or_overrun() {
    let server = common::start().await;
    let client = common::client(&server).await;
    let db = client.database("db");
    let open = |coll: &'static str| {
        let db = db.clone();
        async move {
            let reply = db
                .run_command(doc! {"find": coll, "hint": {"_id": 1}, "batchSize": 1})
                .await
                .unwrap();
            let (_, id) = batch_ids(&reply, "firstBatch");
            assert_ne!(id, 0);
            id
        }
    };
    let get_more = |id: i64, coll: &'static str| {
        let db = db.clone();
        async move {
            db.run_command(doc! {"getMore": id, "collection": coll})
                .await
        }
    };
    for name in ["renamed", "replaced", "source"] {
        db.collection::<Document>(name)
            .insert_many((0..5).map(|i| doc! {"_id": i}))
            .await
            .unwrap();
    }

    // A rename within the database ends the cursors on the old name: 175 QueryPlanKilled.
    let id = open("renamed").await;
    client
        .database("admin")
        .run_command(doc! {"renameCollection": "db.renamed", "to": "db.elsewhere"})
        .await
        .unwrap();
    assert_eq!(
        common::error_code(&get_more(id, "renamed").await.unwrap_err()),
        Some(175)
    );

    // `$out` replacing a collection's contents ends its cursors too.
    let id = open("replaced").await;
    db.collection::<Document>("source")
        .aggregate(vec![doc! {"$out": "replaced"}])
        .await
        .unwrap();
    assert_eq!(
        common::error_code(&get_more(id, "replaced").await.unwrap_err()),
        Some(175)
    );

    // A natural-order scan of a capped collection whose position was overwritten: 136.
    db.create_collection("capped")
        .capped(true)
        .size(1_000_000)
        .max(3)
        .await
        .unwrap();
    let capped = db.collection::<Document>("capped");
    capped
        .insert_many((0..3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "capped", "batchSize": 1})
        .await
        .unwrap();
    let (first, id) = batch_ids(&reply, "firstBatch");
    assert_eq!(first, vec![Bson::Int32(0)]);
    capped
        .insert_many((3..6).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    assert_eq!(
        common::error_code(&get_more(id, "capped").await.unwrap_err()),
        Some(136)
    );
    // The cursor is gone after its failed getMore.
    assert_eq!(
        common::error_code(&get_more(id, "capped").await.unwrap_err()),
        Some(43)
    );
}
