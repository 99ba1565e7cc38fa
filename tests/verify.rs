//! `mongoshift verify` against testkit servers.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bson::{Document, RawDocumentBuf, doc};
use common::{Pair, Writer, assert_same_clusters, block_on, client, output};
use mongoshift::state::Phase;

/// Source data: several collections, indexes (one unique), a validator; then copied with
/// `apply` so both sides agree.
fn migrated_pair() -> Pair {
    let pair = Pair::new();
    block_on(async {
        let c = client(&pair.source).await;
        let shop = c.database("shop");
        let orders = shop.collection::<Document>("orders");
        orders
            .insert_many((0..3000).map(|i| doc! { "_id": i, "customer": i % 40, "email": format!("u{i}@x.net"), "total": i }))
            .await
            .unwrap();
        shop.run_command(doc! {
            "createIndexes": "orders",
            "indexes": [
                { "key": { "customer": 1 }, "name": "customer_1" },
                { "key": { "email": 1 }, "name": "email_1", "unique": true },
            ],
        })
        .await
        .unwrap();
        shop.run_command(
            doc! { "create": "people", "validator": { "name": { "$type": "string" } } },
        )
        .await
        .unwrap();
        shop.collection::<Document>("people")
            .insert_many((0..50).map(|i| doc! { "_id": i, "name": format!("p{i}"), "age": i }))
            .await
            .unwrap();
    });
    pair.write_config("[options.copy]\npartition_size = \"1MiB\"\n[cutover]\napproval = \"auto\"\nmax_lag = \"2s\"\n");
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    pair
}

fn verify_json(pair: &Pair) -> (i32, serde_json::Value) {
    let run = pair.run(&["verify", "--json"]);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    (run.code, json)
}

fn namespace<'a>(report: &'a serde_json::Value, ns: &str) -> &'a serde_json::Value {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["destination"] == ns)
        .unwrap()
}

async fn destination_db(pair: &Pair) -> mongodb::Database {
    client(&pair.destination).await.database("shop")
}

#[test]
fn identical_clusters_pass_and_each_difference_is_named() {
    let pair = migrated_pair();
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        namespace(&report, "shop.orders")["documents_compared"],
        3000
    );
    let human = pair.run(&["verify"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains("source and destination agree"),
        "{}",
        human.stdout
    );

    // A changed field.
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .update_one(doc! { "_id": 17 }, doc! { "$set": { "total": -1 } })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    assert_eq!(
        namespace(&report, "shop.orders")["different"]["ids"],
        serde_json::json!(["17"])
    );
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .update_one(doc! { "_id": 17 }, doc! { "$set": { "total": 17 } })
            .await
            .unwrap()
    });
    assert_eq!(verify_json(&pair).0, 0, "restored");

    // A missing document.
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .delete_one(doc! { "_id": 2500 })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    let orders = namespace(&report, "shop.orders");
    assert_eq!(orders["missing"]["ids"], serde_json::json!(["2500"]));
    assert_eq!(
        (
            orders["source_count"].as_u64(),
            orders["destination_count"].as_u64()
        ),
        (Some(3000), Some(2999))
    );
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .insert_one(
                doc! { "_id": 2500, "customer": 2500 % 40, "email": "u2500@x.net", "total": 2500 },
            )
            .await
            .unwrap()
    });
    assert_eq!(verify_json(&pair).0, 0, "restored");

    // An extra document.
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("people")
            .insert_one(doc! { "_id": "stray", "name": "x" })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    assert_eq!(
        namespace(&report, "shop.people")["extra"]["ids"],
        serde_json::json!(["\"stray\""])
    );
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("people")
            .delete_one(doc! { "_id": "stray" })
            .await
            .unwrap()
    });

    // The same fields in another order.
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("people")
            .replace_one(doc! { "_id": 7 }, doc! { "_id": 7, "age": 7, "name": "p7" })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3, "field order is part of a document's bytes");
    assert_eq!(
        namespace(&report, "shop.people")["different"]["ids"],
        serde_json::json!(["7"])
    );
    block_on(async {
        let original: RawDocumentBuf = client(&pair.source)
            .await
            .database("shop")
            .collection::<RawDocumentBuf>("people")
            .find_one(doc! { "_id": 7 })
            .await
            .unwrap()
            .unwrap();
        destination_db(&pair)
            .await
            .collection::<RawDocumentBuf>("people")
            .replace_one(doc! { "_id": 7 }, original)
            .await
            .unwrap();
    });
    assert_eq!(verify_json(&pair).0, 0, "restored");

    // A missing index.
    block_on(async {
        destination_db(&pair)
            .await
            .run_command(doc! { "dropIndexes": "orders", "index": "customer_1" })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    assert_eq!(
        namespace(&report, "shop.orders")["indexes"],
        serde_json::json!(["index customer_1 {\"customer\":1} is missing"])
    );
    block_on(async {
        destination_db(&pair)
            .await
            .run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .unwrap()
    });

    // A unique index that is not unique any more.
    block_on(async {
        let db = destination_db(&pair).await;
        db.run_command(doc! { "dropIndexes": "orders", "index": "email_1" })
            .await
            .unwrap();
        db.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "email": 1 }, "name": "email_1" }] }).await.unwrap();
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    assert_eq!(
        namespace(&report, "shop.orders")["indexes"],
        serde_json::json!(["index email_1: options are {} instead of {\"unique\":true}"])
    );
    block_on(async {
        let db = destination_db(&pair).await;
        db.run_command(doc! { "dropIndexes": "orders", "index": "email_1" })
            .await
            .unwrap();
        db.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }] })
            .await
            .unwrap();
    });

    // Another validator.
    block_on(async {
        destination_db(&pair)
            .await
            .run_command(doc! { "collMod": "people", "validator": { "name": { "$type": "int" } } })
            .await
            .unwrap()
    });
    let (code, report) = verify_json(&pair);
    assert_eq!(code, 3);
    let options = namespace(&report, "shop.people")["options"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(options.len(), 1, "{options:?}");
    assert!(
        options[0]
            .as_str()
            .unwrap()
            .starts_with("option validator is"),
        "{options:?}"
    );
    let human = pair.run(&["verify"]);
    assert_eq!(human.code, 3);
    assert!(
        human.stdout.contains("differs   shop.people"),
        "{}",
        human.stdout
    );
}

#[test]
fn counts_mode_compares_counts_only() {
    let pair = migrated_pair();
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .update_one(doc! { "_id": 1 }, doc! { "$set": { "total": 0 } })
            .await
            .unwrap()
    });
    let run = pair.run(&["verify", "--counts", "--json"]);
    assert_eq!(
        run.code, 0,
        "a changed field keeps the counts equal: {}",
        run.stdout
    );
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .delete_one(doc! { "_id": 1 })
            .await
            .unwrap()
    });
    let run = pair.run(&["verify", "--counts", "--json"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
}

#[test]
fn a_killed_verification_resumes_from_its_checkpoint() {
    let pair = Pair::new();
    block_on(async {
        let orders = client(&pair.source)
            .await
            .database("shop")
            .collection::<Document>("orders");
        let pad = "v".repeat(1000);
        orders
            .insert_many((0..6000).map(|i| doc! { "_id": i, "total": i, "pad": pad.clone() }))
            .await
            .unwrap();
    });
    pair.write_config("[options.copy]\npartition_size = \"1MiB\"\n[cutover]\napproval = \"auto\"\nmax_lag = \"2s\"\n");
    assert_eq!(pair.run(&["apply"]).code, 0);
    // One range at a time, each read slowed, so the verification is still running when killed.
    pair.write_config("[options.copy]\npartition_size = \"1MiB\"\nparallel_partitions = 1\n");
    pair.source
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["find", "getMore"], "blockConnection": true, "blockTimeMS": 400 },
        })
        .unwrap();
    let checkpoint = pair.path().join("migration.verify.json");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("mongoshift"))
        .current_dir(pair.path())
        .args(["verify", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results = |c: &serde_json::Value| -> Vec<serde_json::Value> {
        c["namespaces"][0]["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let started = std::time::Instant::now();
    let recorded = loop {
        let current = std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(c) = current.filter(|c| !results(c).is_empty()) {
            break c;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the verification ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no range was verified"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running when killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    pair.source.clear_fail_points();
    let partitions = recorded["namespaces"][0]["partitions"]
        .as_array()
        .unwrap()
        .len();
    let done = results(&recorded);
    assert!(
        done.len() < partitions,
        "killed halfway: {} of {partitions} ranges done",
        done.len()
    );

    // A difference planted in a range verified before the kill is not seen by the resumed
    // verification (those ranges are not compared again), though a fresh one sees it.
    let done_id = done[0]["id"].as_u64().unwrap();
    let partition = recorded["namespaces"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_u64() == Some(done_id))
        .unwrap()
        .clone();
    let lower = partition["min"]["_id"]["$numberInt"]
        .as_str()
        .map_or(0, |s| s.parse::<i32>().unwrap());
    block_on(async {
        destination_db(&pair)
            .await
            .collection::<Document>("orders")
            .update_one(doc! { "_id": lower }, doc! { "$set": { "total": -5 } })
            .await
            .unwrap()
    });
    let (code, resumed) = verify_json(&pair);
    assert_eq!(
        code, 0,
        "the resumed verification skips ranges already verified: {resumed:#}"
    );
    assert_eq!(
        namespace(&resumed, "shop.orders")["documents_compared"],
        6000,
        "their results still count"
    );
    assert!(
        !checkpoint.exists(),
        "a finished verification removes its checkpoint"
    );
    let (code, fresh) = verify_json(&pair);
    assert_eq!(code, 3, "a fresh verification compares everything again");
    assert_eq!(
        namespace(&fresh, "shop.orders")["different"]["ids"],
        serde_json::json!([lower.to_string()])
    );
}

#[test]
fn a_writer_during_verify_on_a_live_sync_reports_no_false_differences() {
    let pair = Pair::new();
    block_on(async {
        client(&pair.source)
            .await
            .database("shop")
            .collection::<Document>("orders")
            .insert_many((0..2000).map(|i| doc! { "_id": i, "v": i }))
            .await
            .unwrap();
    });
    pair.write_config("[cutover]\nblock_source_writes = true\nmax_lag = \"2s\"\n");
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));

    // Every change reaches the destination a little late, so the verification certainly
    // meets changes in flight (differences that the recheck must see resolve).
    pair.destination
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["insert", "update", "delete"], "blockConnection": true, "blockTimeMS": 150 },
        })
        .unwrap();
    let writer = Writer::start(&pair.source, 2000, false, Duration::from_millis(2));
    // Counted in steps rather than waited for in time: how fast the writer goes depends on
    // the machine, and a loaded one must not make the test meaningless or failing.
    writer.wait_for_steps(100, Duration::from_secs(60));
    let before = writer.steps();
    let (code, report) = verify_json(&pair);
    let during = writer.steps() - before;
    let written = writer.finish();
    assert_eq!(code, 0, "no false differences: {report}");
    assert!(
        during > 0 && written.refused.is_none(),
        "the writer kept writing during the verification: {during} steps, {written:?}"
    );
    let resolved = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["resolved_on_recheck"].as_u64().unwrap())
        .sum::<u64>();
    assert!(resolved > 0, "in-flight changes were rechecked: {report}");

    pair.destination.clear_fail_points();
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_same_clusters(&pair.source, &pair.destination);
}
