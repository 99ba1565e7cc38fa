//! `mongoshift apply` (initial copy, lockfile, spool) against testkit servers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Decimal128, Document, RawDocumentBuf, doc, oid::ObjectId};
use common::{Pair, block_on, client};
use futures_util::TryStreamExt;
use mongoshift::state::{Phase, lockfile};
use mongoshift_testkit::{TestServer, TestServerHandle};

/// Every BSON type the server accepts as an `_id`, with no two values equal in the server's
/// order (1 and 1.0 would be the same `_id`).
fn mixed_ids() -> Vec<Bson> {
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(Bson::ObjectId(ObjectId::new()));
        ids.push(Bson::Int32(i));
        ids.push(Bson::Int64(10_000_000_000 + i64::from(i)));
        ids.push(Bson::Double(0.5 + f64::from(i)));
        ids.push(Bson::String(format!("key-{i:04}")));
        ids.push(Bson::Document(doc! { "tenant": i, "seq": "a" }));
        ids.push(Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![i as u8, 7, 7],
        }));
        ids.push(Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: vec![i as u8; 16],
        }));
        ids.push(Bson::DateTime(bson::DateTime::from_millis(
            1_600_000_000_000 + i64::from(i),
        )));
    }
    ids.push(Bson::Decimal128(
        "12345678901234567890.5".parse::<Decimal128>().unwrap(),
    ));
    ids.push(Bson::Boolean(true));
    ids.push(Bson::Boolean(false));
    ids.push(Bson::Null);
    ids.push(Bson::MinKey);
    ids.push(Bson::MaxKey);
    ids
}

/// Seeds `shop.mixed` (mixed `_id`s, one document near 16 MiB), `shop.orders` (plain),
/// an empty collection, a capped one, one with a validator and one with a collation.
fn seed_variety(server: &TestServerHandle) {
    block_on(async {
        let c = client(server).await;
        let shop = c.database("shop");
        let mixed = shop.collection::<Document>("mixed");
        let docs: Vec<Document> = mixed_ids()
            .into_iter()
            .enumerate()
            .map(|(n, id)| doc! { "_id": id, "n": n as i64, "nested": { "a": [1, 2, { "b": "c" }] }, "pad": "y".repeat(300) })
            .collect();
        mixed.insert_many(docs).await.unwrap();
        mixed
            .insert_one(doc! { "_id": "huge", "blob": "z".repeat(16 * 1024 * 1024 - 1024) })
            .await
            .unwrap();
        shop.collection::<Document>("orders")
            .insert_many((0..2000).map(|i| doc! { "_id": i, "customer": i % 31, "lines": [{ "sku": format!("s{i}"), "qty": i % 5 }] }))
            .await
            .unwrap();
        shop.run_command(doc! {
            "createIndexes": "orders",
            "indexes": [
                { "key": { "customer": 1 }, "name": "customer_1" },
                { "key": { "lines.sku": 1 }, "name": "sku_unique", "unique": true, "sparse": true },
                { "key": { "customer": -1, "_id": 1 }, "name": "by_customer", "partialFilterExpression": { "customer": { "$gt": 3 } } },
            ],
        })
        .await
        .unwrap();
        shop.run_command(doc! { "create": "empty" }).await.unwrap();
        shop.run_command(doc! { "create": "log", "capped": true, "size": 65_536, "max": 100 })
            .await
            .unwrap();
        shop.collection::<Document>("log")
            .insert_many((0..150).map(|i| doc! { "i": i }))
            .await
            .unwrap();
        shop.run_command(doc! {
            "create": "people",
            "validator": { "name": { "$type": "string" } },
            "validationLevel": "moderate",
            "validationAction": "warn",
        })
        .await
        .unwrap();
        shop.collection::<Document>("people")
            .insert_many([doc! { "name": "ann" }, doc! { "name": "bob" }])
            .await
            .unwrap();
        shop.run_command(
            doc! { "create": "names", "collation": { "locale": "fr", "strength": 2 } },
        )
        .await
        .unwrap();
        shop.collection::<Document>("names")
            .insert_one(doc! { "n": "Élodie" })
            .await
            .unwrap();
    });
}

/// Every document of a collection as raw bytes, sorted (a multiset).
fn raw_documents(server: &TestServerHandle, db: &str, coll: &str) -> Vec<Vec<u8>> {
    block_on(async {
        let c = client(server).await;
        let docs: Vec<RawDocumentBuf> = c
            .database(db)
            .collection::<RawDocumentBuf>(coll)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut bytes: Vec<Vec<u8>> = docs.into_iter().map(RawDocumentBuf::into_bytes).collect();
        bytes.sort();
        bytes
    })
}

/// Index specs (without the server's `v`), sorted by name.
fn indexes(server: &TestServerHandle, db: &str, coll: &str) -> Vec<Document> {
    block_on(async {
        let c = client(server).await;
        let mut out: Vec<Document> = c
            .database(db)
            .run_cursor_command(doc! { "listIndexes": coll })
            .await
            .unwrap()
            .try_collect::<Vec<Document>>()
            .await
            .unwrap()
            .into_iter()
            .map(|mut d| {
                d.remove("v");
                d
            })
            .collect();
        out.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
        out
    })
}

/// Collection options as `listCollections` reports them, by name.
fn options(server: &TestServerHandle, db: &str) -> Vec<(String, Document)> {
    block_on(async {
        let c = client(server).await;
        let mut out: Vec<(String, Document)> = c
            .database(db)
            .run_cursor_command(doc! { "listCollections": 1 })
            .await
            .unwrap()
            .try_collect::<Vec<Document>>()
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.get_str("name").unwrap().to_owned(),
                    d.get_document("options").cloned().unwrap_or_default(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    })
}

fn assert_same_data(pair: &Pair, db: &str, colls: &[&str]) {
    for coll in colls {
        let source = raw_documents(&pair.source, db, coll);
        let destination = raw_documents(&pair.destination, db, coll);
        assert_eq!(
            source.len(),
            destination.len(),
            "{db}.{coll}: document counts differ"
        );
        assert!(
            source == destination,
            "{db}.{coll}: documents differ byte for byte"
        );
    }
}

/// Slows every insert on the destination, so a copy stays in progress long enough to act on.
fn slow_inserts(server: &TestServerHandle, millis: i32) {
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": millis },
        })
        .unwrap();
}

/// Cut over as soon as the destination is ready (these tests are about the copy).
const AUTO: &str = "[cutover]\napproval = \"auto\"\nmax_lag = \"2s\"\n";

const SMALL_PARTITIONS: &str = "[options.copy]\npartition_size = \"1MiB\"\nbatch_size = \"64KiB\"\nparallel_partitions = 4\n[cutover]\napproval = \"auto\"\nmax_lag = \"2s\"\n";

#[test]
fn every_id_type_and_option_arrives_byte_identical() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(SMALL_PARTITIONS);
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("committed"), "{}", run.stdout);

    assert_same_data(
        &pair,
        "shop",
        &["mixed", "orders", "empty", "log", "people", "names"],
    );
    assert_eq!(
        options(&pair.source, "shop"),
        options(&pair.destination, "shop"),
        "collection options are preserved"
    );
    assert_eq!(
        indexes(&pair.source, "shop", "orders"),
        indexes(&pair.destination, "shop", "orders"),
        "indexes are built"
    );
    let s = pair.state();
    assert_eq!(s.phase, Phase::Committed);
    let mixed = s
        .namespaces
        .iter()
        .find(|n| n.destination.coll() == "mixed")
        .unwrap();
    assert!(
        mixed.partitions.len() > 1,
        "the mixed collection was split: {:?}",
        mixed.partitions.len()
    );
    assert_eq!(mixed.documents_copied(), mixed_ids().len() as u64 + 1);
    assert!(s.start_time.is_some(), "T0 is recorded");

    // Re-running a committed migration does nothing and says so.
    let again = pair.run(&["apply"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("already committed; nothing to do"),
        "{}",
        again.stdout
    );
    let status = pair.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["progress"]["phase"], "committed");
    assert_eq!(status["holder"], serde_json::Value::Null);
}

#[test]
fn killed_at_random_points_it_resumes_without_loss_or_recopy() {
    let pair = Pair::new();
    block_on(async {
        let c = client(&pair.source).await;
        let orders = c.database("shop").collection::<Document>("orders");
        for chunk in 0..6 {
            orders
                .insert_many(
                    (0..5000)
                        .map(|i| doc! { "_id": chunk * 5000 + i, "v": i, "pad": "p".repeat(120) }),
                )
                .await
                .unwrap();
        }
        let ids = c.database("shop").collection::<Document>("ids");
        ids.insert_many(mixed_ids().into_iter().map(|id| doc! { "_id": id }))
            .await
            .unwrap();
    });
    pair.write_config(&format!("[options.copy]\npartition_size = \"1MiB\"\nbatch_size = \"32KiB\"\nparallel_partitions = 2\n{AUTO}"));
    // Slow enough that kills land inside the copy.
    slow_inserts(&pair.destination, 15);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    println!("kill delays seeded with {seed}");
    let mut rng = seed;
    let mut kills = 0;
    // Partitions recorded as complete at some kill, with the bytes they had moved then.
    let mut completed: Vec<(String, u32, u64)> = Vec::new();
    for _ in 0..5 {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(200 + (rng >> 33) % 1500);
        let mut child = pair.spawn_apply(&[]);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no chance to save anything
            kills += 1;
        }
        child.wait().unwrap();
        if let Ok(Some(s)) = lockfile::load(&pair.path().join("migration.lock")) {
            for n in &s.namespaces {
                for p in n.partitions.iter().filter(|p| p.done) {
                    let key = (n.destination.to_string(), p.id);
                    if !completed.iter().any(|(ns, id, _)| (ns.clone(), *id) == key) {
                        completed.push((key.0, key.1, p.bytes));
                    }
                }
            }
        }
    }
    pair.destination.clear_fail_points();
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    println!(
        "killed {kills} times; {} partitions were complete at some kill",
        completed.len()
    );

    assert_same_data(&pair, "shop", &["orders", "ids"]);
    let s = pair.state();
    assert_eq!(s.phase, Phase::Committed);
    for (ns, id, bytes) in &completed {
        let n = s
            .namespaces
            .iter()
            .find(|n| &n.destination.to_string() == ns)
            .unwrap();
        let p = n.partitions.iter().find(|p| p.id == *id).unwrap();
        assert_eq!(
            p.bytes, *bytes,
            "{ns} partition {id} was complete, and was copied again"
        );
    }
    let copied: u64 = s.namespaces.iter().map(|n| n.documents_copied()).sum();
    assert_eq!(
        copied,
        30_000 + mixed_ids().len() as u64,
        "every document counted exactly once"
    );
}

#[test]
fn a_second_apply_is_refused_while_the_first_runs() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(SMALL_PARTITIONS);
    // Two seconds per insert: the first run certainly outlasts the second and `status`.
    slow_inserts(&pair.destination, 2000);
    let mut first = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Preparing, Duration::from_secs(60));

    let second = pair.run(&["apply"]);
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert!(
        second.stderr.contains("locked by `mongoshift apply` (pid"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    let status = pair.run(&["status"]);
    assert!(
        status.stdout.contains(&format!("pid {}", first.id())),
        "{}",
        status.stdout
    );

    // With --lock-timeout the second waits for the first to finish.
    pair.destination.clear_fail_points();
    let waited = pair.run(&["apply", "--lock-timeout", "60s"]);
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    assert!(first.wait().unwrap().success());
    assert_same_data(&pair, "shop", &["mixed", "orders"]);
}

#[test]
fn a_corrupt_lockfile_is_refused_and_left_untouched() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(AUTO);
    let path = pair.path().join("migration.lock");
    let cases: [&[u8]; 3] = [
        b"{\"format_version\": 1, \"lineage\": \"x\", \"ser",
        b"not json at all",
        b"{\"format_version\": 7}",
    ];
    for bytes in cases {
        std::fs::write(&path, bytes).unwrap();
        let run = pair.run(&["apply"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains("migration.lock"), "{}", run.stderr);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left untouched");
        let status = pair.run(&["status"]);
        assert_eq!(status.code, 1);
    }
    let truncated = pair.run(&["apply"]);
    assert!(
        truncated.stderr.contains("newer") || truncated.stderr.contains("format 7"),
        "{}",
        truncated.stderr
    );
    assert!(
        raw_documents(&pair.destination, "shop", "orders").is_empty(),
        "nothing was copied"
    );
}

#[test]
fn an_interrupt_saves_state_and_exits_130() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(SMALL_PARTITIONS);
    // A second per insert: the copy certainly lasts until the interrupt, and stopping
    // promptly means waiting for the inserts in flight only.
    slow_inserts(&pair.destination, 1000);
    let mut child = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Copying, Duration::from_secs(60));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it stops promptly"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("state saved"), "{stderr}");
    assert_eq!(pair.state().phase, Phase::Copying);
    assert!(
        mongoshift::state::lock::read_holder(&pair.path().join("migration.lock")).is_none(),
        "the lock is released"
    );

    pair.destination.clear_fail_points();
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_data(&pair, "shop", &["mixed", "orders", "log"]);
}

#[test]
fn saved_plans_apply_exactly_or_are_refused_when_stale() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(AUTO);
    assert_eq!(pair.run(&["plan", "--out", "reviewed.plan"]).code, 0);
    block_on(async {
        let c = client(&pair.source).await;
        c.database("shop").run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "lines.sku": 1 }, "name": "sku_1" }] }).await.unwrap();
    });
    let stale = pair.run(&["apply", "reviewed.plan"]);
    assert_eq!(stale.code, 5, "{}", stale.stderr);
    assert!(
        stale
            .stderr
            .contains("the source's namespaces, options or indexes changed"),
        "{}",
        stale.stderr
    );
    assert!(
        !pair.path().join("migration.lock").exists(),
        "a refused plan starts nothing"
    );

    assert_eq!(pair.run(&["plan", "--out", "reviewed.plan"]).code, 0);
    let run = pair.run(&["apply", "reviewed.plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_data(&pair, "shop", &["orders", "mixed"]);
    // A plan file describes a migration's start: it cannot be applied to one that exists.
    let again = pair.run(&["apply", "reviewed.plan"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(
        again.stderr.contains("phase committed) already exists"),
        "{}",
        again.stderr
    );
}

#[test]
fn changes_during_a_copy_longer_than_the_oplog_window_all_arrive() {
    // The source keeps only 100 oplog entries; 150 writes happen during the copy.
    let pair = Pair::with(
        TestServer::builder()
            .replica_set_name("src")
            .oplog_max_events(100),
        TestServer::builder().replica_set_name("dst"),
    );
    seed_variety(&pair.source);
    pair.write_config(SMALL_PARTITIONS);
    // Inserts on the destination wait six seconds each: the largest collection is three
    // batches, so the copy (18 s or more) outlasts the writer's five seconds, with room to
    // spare on a loaded machine.
    slow_inserts(&pair.destination, 6000);
    let mut child = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Copying, Duration::from_secs(60));
    block_on(async {
        let c = client(&pair.source).await;
        let live = c.database("shop").collection::<Document>("live");
        // About 30 writes a second: the oplog then holds about three seconds of history, far
        // less than the copy takes, while the reader keeps up with the pace.
        for i in 0..150 {
            live.insert_one(doc! { "_id": i, "at": i }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let copying = pair.state();
    assert_eq!(
        copying.phase,
        Phase::Copying,
        "the copy was still running while the source changed"
    );
    pair.destination.clear_fail_points();
    assert!(child.wait().unwrap().success());

    let s = pair.state();
    assert!(
        s.stream.events_spooled >= 150,
        "every change was spooled: {}",
        s.stream.events_spooled
    );
    // Every change made while the copy ran arrived, though the source kept only 100 of them.
    let live = raw_documents(&pair.destination, "shop", "live");
    assert_eq!(live.len(), 150);
    assert_same_data(&pair, "shop", &["live", "mixed", "orders"]);
}

#[test]
fn json_progress_is_one_event_per_line() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(SMALL_PARTITIONS);
    let run = pair.run(&["apply", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "progress"),
        "{}",
        run.stdout
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["status"], "committed");
    assert_eq!(last["exit_code"], 0);
    let final_progress = events
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .unwrap();
    assert_eq!(final_progress["progress"]["phase"], "committed");
    assert_eq!(
        final_progress["progress"]["documents"],
        final_progress["progress"]["documents_estimate"]
    );
}

#[test]
fn unlock_clears_the_record_of_a_holder_on_another_host() {
    let pair = Pair::new();
    seed_variety(&pair.source);
    pair.write_config(AUTO);
    let lockfile = pair.path().join("migration.lock");
    let holder = mongoshift::state::Holder {
        id: "3f1c0b1e-remote".to_owned(),
        host: "other-host.example.net".to_owned(),
        pid: 4242,
        since: "2026-11-22T00:00:00Z".to_owned(),
        command: "apply".to_owned(),
    };
    std::fs::write(
        mongoshift::state::lock::holder_path(&lockfile),
        serde_json::to_vec(&holder).unwrap(),
    )
    .unwrap();
    let refused = pair.run(&["apply"]);
    assert_eq!(refused.code, 4);
    assert!(
        refused.stderr.contains("mongoshift unlock 3f1c0b1e-remote"),
        "{}",
        refused.stderr
    );
    let wrong = pair.run(&["unlock", "nope"]);
    assert_eq!(wrong.code, 1);
    let run = pair.run(&["unlock", "3f1c0b1e-remote"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("other-host.example.net"),
        "{}",
        run.stdout
    );
    assert_eq!(pair.run(&["apply"]).code, 0);
}
