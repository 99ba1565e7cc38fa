//! Sharded clusters: a replica set onto a sharded destination (keys from the configuration,
//! hashed and ranged), a sharded source onto a sharded destination (keys like the source's)
//! with a live writer that also changes shard-key values, and a sharded source onto a replica
//! set. Each ends with a full comparison (documents byte for byte, indexes, options) and the
//! destination's shard keys and chunks as `config.collections` and `config.chunks` show them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bson::{Document, doc};
use common::{Pair, block_on, client, output};
use futures_util::TryStreamExt;
use mongoshift::state::{Phase, WriteBlock};
use mongoshift_testkit::TestServerHandle;

const BASE: i64 = 1500;

/// Documents of every collection a test migrates: `shop.orders` (keyed by `customer` where
/// sharded), `shop.events` (by `region`), and an unsharded `crm.people`.
fn seed_documents(server: &TestServerHandle) {
    block_on(async {
        let c = client(server).await;
        let shop = c.database("shop");
        shop.collection::<Document>("orders")
            .insert_many((0..BASE).map(|i| doc! { "_id": i, "customer": i % 13, "v": i }))
            .await
            .unwrap();
        let regions = ["ap", "eu", "us"];
        shop.collection::<Document>("events")
            .insert_many(
                (0..BASE).map(|i| doc! { "_id": i, "region": regions[i as usize % 3], "n": i }),
            )
            .await
            .unwrap();
        shop.run_command(
            doc! { "createIndexes": "events", "indexes": [{ "key": { "n": 1 }, "name": "n_1" }] },
        )
        .await
        .unwrap();
        c.database("crm")
            .collection::<Document>("people")
            .insert_many((0..200).map(|i| doc! { "_id": i, "name": format!("p{i}") }))
            .await
            .unwrap();
    });
}

async fn admin(server: &TestServerHandle, command: Document) -> Document {
    client(server)
        .await
        .database("admin")
        .run_command(command)
        .await
        .unwrap_or_else(|e| panic!("admin command failed: {e}"))
}

/// A sharded source: `shop.orders` on a hashed `customer`, `shop.events` on a ranged `region`
/// split across both shards, `crm.people` unsharded; the balancer stopped, as `plan` asks.
fn seed_sharded(server: &TestServerHandle) {
    block_on(async {
        admin(server, doc! { "balancerStop": 1 }).await;
        admin(
            server,
            doc! { "shardCollection": "shop.orders", "key": { "customer": "hashed" } },
        )
        .await;
        admin(
            server,
            doc! { "shardCollection": "shop.events", "key": { "region": 1 } },
        )
        .await;
    });
    seed_documents(server);
    block_on(async {
        admin(
            server,
            doc! { "split": "shop.events", "middle": { "region": "eu" } },
        )
        .await;
        admin(
            server,
            doc! { "moveChunk": "shop.events", "find": { "region": "us" }, "to": "shard1" },
        )
        .await;
    });
}

fn stop_balancer(server: &TestServerHandle) {
    block_on(admin(server, doc! { "balancerStop": 1 }));
}

/// `config.collections` of a mongos: namespace → (key, unique).
fn shard_keys(server: &TestServerHandle) -> BTreeMap<String, (Document, bool)> {
    block_on(async {
        let docs: Vec<Document> = client(server)
            .await
            .database("config")
            .collection::<Document>("collections")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        docs.into_iter()
            .filter_map(|d| {
                let ns = d.get_str("_id").ok()?.to_owned();
                (!ns.starts_with("config.")).then(|| {
                    (
                        ns,
                        (
                            d.get_document("key").unwrap().clone(),
                            d.get_bool("unique").unwrap_or(false),
                        ),
                    )
                })
            })
            .collect()
    })
}

/// The shards that own chunks of a collection.
fn chunk_shards(server: &TestServerHandle, ns: &str) -> BTreeSet<String> {
    block_on(async {
        let c = client(server).await;
        let config = c.database("config");
        let entry = config
            .collection::<Document>("collections")
            .find_one(doc! { "_id": ns })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{ns} is sharded"));
        let chunks: Vec<Document> = config
            .collection::<Document>("chunks")
            .find(doc! { "uuid": entry.get("uuid").unwrap().clone() })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        chunks
            .iter()
            .map(|c| c.get_str("shard").unwrap().to_owned())
            .collect()
    })
}

/// The full comparison: the same namespaces, options and documents (byte for byte), and the
/// same indexes except `extra` ones the destination has for its shard keys.
fn assert_same_data(source: &TestServerHandle, destination: &TestServerHandle, extra: &[&str]) {
    let s = common::contents(source);
    let d = common::contents(destination);
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        d.keys().collect::<Vec<_>>(),
        "the same namespaces"
    );
    for (ns, (options, indexes, docs)) in &s {
        let (o2, i2, d2) = &d[ns];
        assert_eq!(options, o2, "{ns}: options");
        let kept: Vec<&Document> = i2
            .iter()
            .filter(|i| {
                let name = format!("{ns}.{}", i.get_str("name").unwrap());
                !extra.contains(&name.as_str())
            })
            .collect();
        assert_eq!(indexes.iter().collect::<Vec<_>>(), kept, "{ns}: indexes");
        assert_eq!(docs.len(), d2.len(), "{ns}: document counts");
        assert!(docs == d2, "{ns}: documents differ");
    }
}

/// A writer for sharded collections: inserts, updates and deletes by `_id`, replacements and
/// changes of `customer` (the shard key of `shop.orders`) that name the full current key, as
/// MongoDB 7.0 requires for a key change, until stopped or refused.
struct KeyWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64, Option<String>)>>,
}

impl KeyWriter {
    fn start(server: &TestServerHandle, pause: Duration) -> Self {
        let uri = server.uri();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            block_on(async move {
                let c = mongodb::Client::with_uri_str(uri).await.unwrap();
                let orders = c.database("shop").collection::<Document>("orders");
                let events = c.database("shop").collection::<Document>("events");
                // The current `customer` of documents 0..200, which the writer moves around.
                let mut customer: Vec<i64> = (0..200).map(|i| i % 13).collect();
                let (mut changes, mut key_changes) = (0u64, 0u64);
                let mut i: i64 = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = ((i / 6) % 100) as usize;
                    let step = match i % 6 {
                        0 => orders
                            .insert_one(doc! { "_id": 1_000_000 + i, "customer": i % 7, "v": i })
                            .await
                            .map(|_| 1),
                        1 => orders
                            .update_one(
                                doc! { "_id": 200 + i % (BASE - 200) },
                                doc! { "$inc": { "v": 1 } },
                            )
                            .await
                            .map(|u| u.modified_count),
                        2 => {
                            let next = customer[k] + 100;
                            let r = orders
                                .update_one(
                                    doc! { "_id": k as i64, "customer": customer[k] },
                                    doc! { "$set": { "customer": next } },
                                )
                                .await
                                .map(|u| u.modified_count);
                            if r.is_ok() {
                                customer[k] = next;
                                key_changes += 1;
                            }
                            r
                        }
                        3 => orders
                            .delete_one(doc! { "_id": 1_000_000 + i - 3 })
                            .await
                            .map(|d| d.deleted_count),
                        4 => events
                            .insert_one(doc! { "_id": 2_000_000 + i, "region": "us", "n": i })
                            .await
                            .map(|_| 1),
                        _ => {
                            let k = 100 + k;
                            orders
                                .replace_one(
                                    doc! { "_id": k as i64, "customer": customer[k] },
                                    doc! { "customer": customer[k], "replaced": i },
                                )
                                .await
                                .map(|u| u.modified_count)
                        }
                    };
                    match step {
                        Ok(n) => changes += n,
                        Err(e) => return (changes, key_changes, Some(e.to_string())),
                    }
                    i += 1;
                    tokio::time::sleep(pause).await;
                }
                (changes, key_changes, None)
            })
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Waits until a write is refused (the cutover's block), up to `limit`; then stops.
    fn wait_refused(mut self, limit: Duration) -> (u64, u64, Option<String>) {
        let start = std::time::Instant::now();
        while self.handle.as_ref().is_some_and(|h| !h.is_finished()) && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

const ENTRIES: &str = r#"
[[options.sharding.collections]]
namespace = "shop.orders"
key = { customer = "hashed" }

[[options.sharding.collections]]
namespace = "shop.events"
key = { region = 1, _id = 1 }
"#;

const CUTOVER: &str = "[options.copy]\npartition_size = \"1MiB\"\n[cutover]\napproval = \"flag\"\nblock_source_writes = true\nmax_lag = \"2s\"\n";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn check<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {plan}"))
}

#[test]
fn a_replica_set_moves_onto_hashed_and_ranged_keys_with_a_live_writer() {
    let pair = Pair::with(Pair::replica_set("src"), Pair::mongos(3));
    seed_documents(&pair.source);
    stop_balancer(&pair.destination);
    pair.write_config(&format!("{CUTOVER}{ENTRIES}"));

    let plan = pair.run(&["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    insta::assert_snapshot!("plan_replica_set_to_sharded", pair.filter(&plan.stdout));

    let writer = KeyWriter::start(&pair.source, Duration::from_millis(3));
    let apply = pair.spawn_apply(&["--approve-cutover"]);
    let (changes, key_changes, refused) = writer.wait_refused(Duration::from_secs(90));
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        refused
            .as_deref()
            .unwrap_or_default()
            .contains("UserWritesBlocked"),
        "the writer was stopped by the write block: {refused:?}"
    );
    assert!(
        changes > 0 && key_changes > 0,
        "the writer changed shard keys: {changes} {key_changes}"
    );

    assert_same_data(
        &pair.source,
        &pair.destination,
        &["shop.orders.customer_hashed", "shop.events.region_1__id_1"],
    );
    let keys = shard_keys(&pair.destination);
    assert_eq!(
        keys.get("shop.orders"),
        Some(&(doc! { "customer": "hashed" }, false))
    );
    assert_eq!(
        keys.get("shop.events"),
        Some(&(doc! { "region": 1, "_id": 1 }, false))
    );
    assert!(
        !keys.contains_key("crm.people"),
        "unlisted collections stay unsharded"
    );
    assert_eq!(
        chunk_shards(&pair.destination, "shop.orders").len(),
        3,
        "a hashed key's initial chunks are on every shard"
    );
    assert!(
        chunk_shards(&pair.destination, "shop.events").len() >= 2,
        "the ranged key was split and spread before the copy"
    );
    let state = pair.state();
    assert_eq!(state.phase, Phase::Committed);
    let events = state
        .namespaces
        .iter()
        .find(|n| n.destination.to_string() == "shop.events")
        .unwrap();
    assert_eq!(events.shard_key, Some(doc! { "region": 1, "_id": 1 }));
}

#[test]
fn a_sharded_cluster_moves_onto_another_with_its_keys_through_an_approved_cutover() {
    let pair = Pair::with(Pair::mongos(2), Pair::mongos(3));
    seed_sharded(&pair.source);
    stop_balancer(&pair.destination);
    pair.write_config(CUTOVER);

    let plan = pair.run(&["plan", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    let plan = json(&plan.stdout);
    assert_eq!(check(&plan, "source.balancer")["status"], "passed");
    assert_eq!(
        check(&plan, "sharding.entries")["message"],
        "2 destination collections will be sharded before the copy (2 like on the source)"
    );
    let copy = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "copy" && a["namespace"] == "shop.events")
        .unwrap();
    let shards: Vec<&str> = copy["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_str().unwrap())
        .collect();
    assert_eq!(shards, ["shard0", "shard1"], "per-shard sizes: {copy}");

    let writer = KeyWriter::start(&pair.source, Duration::from_millis(3));
    let apply = pair.spawn_apply(&["--approve-cutover"]);
    let (changes, key_changes, refused) = writer.wait_refused(Duration::from_secs(90));
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        refused
            .as_deref()
            .unwrap_or_default()
            .contains("UserWritesBlocked"),
        "the writer was stopped by the write block through mongos: {refused:?}"
    );
    assert!(changes > 0 && key_changes > 0, "{changes} {key_changes}");

    // The destination has exactly the source's indexes: the source's key indexes support the
    // same keys there.
    assert_same_data(&pair.source, &pair.destination, &[]);
    let source_keys = shard_keys(&pair.source);
    let destination_keys = shard_keys(&pair.destination);
    assert_eq!(source_keys, destination_keys, "sharded alike");
    assert_eq!(chunk_shards(&pair.destination, "shop.orders").len(), 3);

    let state = pair.state();
    assert_eq!(
        (state.phase, state.cutover.write_block),
        (Phase::Committed, WriteBlock::Off)
    );
    // The copy went shard by shard: every partition of a sharded collection is one shard's.
    let orders = state
        .namespaces
        .iter()
        .find(|n| n.destination.to_string() == "shop.orders")
        .unwrap();
    assert!(orders.partitions.iter().all(|p| p.range.is_some()));
    let status = json(&pair.run(&["status", "--json"]).stdout);
    let per_shard = status["progress"]["shards"].as_array().unwrap();
    assert_eq!(per_shard.len(), 2, "{status}");
    let copied: u64 = per_shard
        .iter()
        .map(|s| s["documents"].as_u64().unwrap())
        .sum();
    assert_eq!(
        copied,
        status["progress"]["documents"].as_u64().unwrap(),
        "every copied document is counted to its source shard"
    );
    let human = pair.run(&["status"]);
    assert!(
        human.stdout.contains("Source shards (copy)")
            && human
                .stdout
                .contains("source sharded on {\"customer\":\"hashed\"}"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_sharded_cluster_moves_onto_a_replica_set_without_its_keys() {
    let pair = Pair::with(Pair::mongos(2), Pair::replica_set("dst"));
    seed_sharded(&pair.source);
    pair.write_config("[cutover]\napproval = \"auto\"\nmax_lag = \"2s\"\n");

    let plan = pair.run(&["plan", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    let plan = json(&plan.stdout);
    let keys = check(&plan, "sharding.source_keys");
    assert!(
        keys["message"].as_str().unwrap().starts_with(
            "the destination is not a sharded cluster: 2 sharded source collections stay unsharded"
        ),
        "{keys}"
    );
    assert!(
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] != "shard_collection")
    );

    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    common::assert_same_clusters(&pair.source, &pair.destination);
    let verify = pair.run(&["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
}

#[test]
fn a_resumed_apply_does_not_shard_again_and_destroy_drops_what_was_sharded() {
    let pair = Pair::with(Pair::replica_set("src"), Pair::mongos(2));
    seed_documents(&pair.source);
    stop_balancer(&pair.destination);
    pair.write_config(&format!(
        "[cutover]\nwindow = \"1s\"\nmax_lag = \"2s\"\n{ENTRIES}"
    ));
    let run = pair.run(&["apply"]);
    assert_eq!(
        run.code, 6,
        "the window expires: {}\n{}",
        run.stdout, run.stderr
    );
    let state = pair.state();
    let sharded: Vec<String> = state
        .namespaces
        .iter()
        .filter(|n| n.shard_key.is_some())
        .map(|n| n.destination.to_string())
        .collect();
    assert_eq!(sharded, ["shop.events", "shop.orders"]);

    // A fresh plan against the half-done migration shards nothing again.
    let plan = json(&pair.run(&["plan", "--json"]).stdout);
    assert!(
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] != "shard_collection"),
        "{plan}"
    );
    assert_eq!(pair.run(&["extend", "1h"]).code, 0);
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_same_data(
        &pair.source,
        &pair.destination,
        &["shop.orders.customer_hashed", "shop.events.region_1__id_1"],
    );

    let destroy = pair.run(&["destroy", "--yes"]);
    assert_eq!(destroy.code, 0, "{}", destroy.stderr);
    assert!(common::contents(&pair.destination).is_empty());
    assert!(
        shard_keys(&pair.destination).is_empty(),
        "dropping a sharded collection removes its routing entry"
    );
}

#[test]
fn plan_shows_shard_keys_per_shard_sizes_and_the_balancer() {
    let pair = Pair::with(Pair::mongos(2), Pair::mongos(3));
    seed_sharded(&pair.source);
    stop_balancer(&pair.destination);
    pair.write_config(
        "[[options.sharding.collections]]\nnamespace = \"crm.people\"\nkey = { name = 1 }\nunique = true\n",
    );
    let run = pair.run(&["plan"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    insta::assert_snapshot!("plan_sharded_to_sharded", pair.filter(&run.stdout));

    // A running balancer on the source stops the plan, with the command to stop it.
    block_on(admin(&pair.source, doc! { "balancerStart": 1 }));
    block_on(admin(&pair.destination, doc! { "balancerStart": 1 }));
    let plan = json(&pair.run(&["plan", "--json"]).stdout);
    let source = check(&plan, "source.balancer");
    assert_eq!(source["status"], "error");
    assert!(
        source["hint"]
            .as_str()
            .unwrap()
            .contains("sh.stopBalancer()")
            && source["hint"]
                .as_str()
                .unwrap()
                .contains("{balancerStop: 1}"),
        "{source}"
    );
    assert_eq!(check(&plan, "destination.balancer")["status"], "warning");
}

#[test]
fn sharding_entries_the_destination_cannot_take_are_refused_by_plan() {
    let pair = Pair::with(Pair::replica_set("src"), Pair::mongos(2));
    seed_documents(&pair.source);
    block_on(async {
        let c = client(&pair.source).await;
        c.database("shop")
            .run_command(doc! { "create": "log", "capped": true, "size": 65_536 })
            .await
            .unwrap();
        c.database("crm")
            .run_command(doc! { "createIndexes": "people", "indexes": [{ "key": { "name": 1 }, "name": "name_1", "unique": true }] })
            .await
            .unwrap();
    });
    stop_balancer(&pair.destination);
    pair.write_config(
        r#"
[[options.sharding.collections]]
namespace = "shop.log"
key = { _id = 1 }

[[options.sharding.collections]]
namespace = "crm.people"
key = { _id = "hashed" }

[[options.sharding.collections]]
namespace = "shop.events"
key = { n = 1, region = 1 }
create_supporting_indexes = false

[[options.sharding.collections]]
namespace = "shop.missing"
key = { a = 1 }
"#,
    );
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let plan = json(&run.stdout);
    let entries = check(&plan, "sharding.entries");
    assert_eq!(entries["status"], "error");
    let message = entries["message"].as_str().unwrap();
    for expected in [
        "shop.missing is not a migrated destination namespace",
        "shop.log is capped",
        "crm.people: the unique index name_1 {\"name\":1} does not start with the shard key",
        "shop.events: no source index supports the shard key {\"n\":1,\"region\":1} and create_supporting_indexes is false",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }

    // The same entries against a replica set: sharding needs a sharded destination.
    let rs = Pair::new();
    seed_documents(&rs.source);
    rs.write_config(ENTRIES);
    let plan = json(&rs.run(&["plan", "--json"]).stdout);
    let entries = check(&plan, "sharding.entries");
    assert_eq!(entries["status"], "error");
    assert!(
        entries["message"]
            .as_str()
            .unwrap()
            .contains("but the destination is a replica set dst"),
        "{entries}"
    );
}
