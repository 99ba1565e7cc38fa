//! `mongoshift plan` against testkit servers.

mod common;

use bson::doc;
use common::{Pair, block_on, client};
use mongodb::IndexModel;
use mongodb::options::IndexOptions;

/// Seeds the source with a few databases: collections with indexes, a capped collection, a view.
fn seed(pair: &Pair) {
    block_on(async {
        let c = client(&pair.source).await;
        let shop = c.database("shop");
        let orders = shop.collection::<bson::Document>("orders");
        orders
            .insert_many((0..500).map(|i| doc! { "_id": i, "customer": i % 17, "email": format!("u{i}@example.net"), "total": i * 3 }))
            .await
            .unwrap();
        orders
            .create_index(IndexModel::builder().keys(doc! { "customer": 1 }).build())
            .await
            .unwrap();
        orders
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .unwrap();
        shop.run_command(doc! { "create": "log", "capped": true, "size": 1_048_576 })
            .await
            .unwrap();
        shop.collection::<bson::Document>("log")
            .insert_one(doc! { "m": "hello" })
            .await
            .unwrap();
        shop.run_command(doc! { "create": "big_orders", "viewOn": "orders", "pipeline": [{ "$match": { "total": { "$gt": 100 } } }] })
            .await
            .unwrap();
        c.database("crm")
            .run_command(
                doc! { "create": "people", "validator": { "name": { "$type": "string" } } },
            )
            .await
            .unwrap();
        c.database("crm")
            .collection::<bson::Document>("people")
            .insert_one(doc! { "name": "ann" })
            .await
            .unwrap();
    });
}

fn json(run: &common::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn check<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

#[test]
fn empty_destination_plan_reads_well() {
    let pair = Pair::new();
    seed(&pair);
    pair.write_config("[options]\nrename = { \"shop\" = \"shop_v2\" }\n");
    let run = pair.run(&["plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!("plan_empty_destination_human", pair.filter(&run.stdout));

    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 0);
    let plan = json(&run);
    assert_eq!(plan["format_version"], 1);
    insta::assert_snapshot!("plan_empty_destination_json", pair.filter(&run.stdout));

    let run = pair.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "changes pending");
}

#[test]
fn nothing_to_do_is_exit_zero_even_with_detailed_exitcode() {
    let pair = Pair::new();
    pair.write_config("");
    let run = pair.run(&["plan", "--detailed-exitcode", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let plan = json(&run);
    assert_eq!(plan["actions"].as_array().unwrap().len(), 0);
    assert_eq!(check(&plan, "mapping.nonempty")["status"], "warning");
}

#[test]
fn conflicts_fail_unless_the_destination_is_cleared() {
    let pair = Pair::new();
    seed(&pair);
    block_on(async {
        let d = client(&pair.destination).await;
        d.database("shop")
            .collection::<bson::Document>("orders")
            .insert_one(doc! { "stale": true })
            .await
            .unwrap();
        d.database("other")
            .collection::<bson::Document>("keep")
            .insert_one(doc! { "x": 1 })
            .await
            .unwrap();
    });
    pair.write_config("");
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1, "an error check fails the plan");
    let plan = json(&run);
    let conflicts = check(&plan, "destination.conflicts");
    assert_eq!(conflicts["status"], "error");
    assert!(
        conflicts["message"]
            .as_str()
            .unwrap()
            .contains("shop.orders")
    );
    let human = pair.run(&["plan"]);
    assert_eq!(human.code, 1);
    assert!(
        human.stdout.contains("apply would refuse this plan"),
        "{}",
        human.stdout
    );

    pair.write_config("[options]\nclear_destination = true\n");
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let plan = json(&run);
    let actions = plan["actions"].as_array().unwrap();
    assert_eq!(actions[0]["action"], "drop");
    assert_eq!(actions[0]["namespace"], "shop.orders");
    assert!(
        !actions.iter().any(|a| a["namespace"] == "other.keep"),
        "unrelated namespaces are never touched"
    );
    assert_eq!(plan["summary"]["namespaces_to_drop"], 1);
}

#[test]
fn filters_and_renames_select_and_map_namespaces() {
    let pair = Pair::new();
    seed(&pair);
    // Moving the orders collection to another database would strand the view that reads it.
    pair.write_config(
        "[options]\ninclude = [\"shop.*\"]\nexclude = [\"shop.log\"]\nrename = { \"shop.orders\" = \"sales.orders\" }\n",
    );
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1);
    let views = check(&json(&run), "mapping.views").clone();
    assert_eq!(views["status"], "error");
    assert!(
        views["message"]
            .as_str()
            .unwrap()
            .contains("shop.big_orders"),
        "{views}"
    );

    pair.write_config(
        "[options]\ninclude = [\"shop.*\"]\nexclude = [\"shop.log\", \"shop.big_*\"]\nrename = { \"shop.orders\" = \"sales.orders\" }\n",
    );
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let plan = json(&run);
    let touched: Vec<String> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["namespace"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        touched,
        [
            "create_collection sales.orders",
            "copy sales.orders",
            "create_index sales.orders",
            "create_index sales.orders"
        ]
    );
    assert_eq!(plan["actions"][1]["source"], "shop.orders");
}

#[test]
fn a_standalone_source_is_refused_with_the_remedy() {
    let pair = Pair::standalone_source();
    let text = format!(
        "version = 1\n[source]\nuri = \"mongodb://{}/?directConnection=true\"\n[destination]\nuri = \"{}\"\n",
        pair.source.addr(),
        pair.destination.uri()
    );
    std::fs::write(pair.path().join("migration.toml"), text).unwrap();
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1);
    let plan = json(&run);
    let topology = check(&plan, "source.topology");
    assert_eq!(topology["status"], "error");
    assert!(topology["message"].as_str().unwrap().contains("standalone"));
    assert!(topology["hint"].as_str().unwrap().contains("rs.initiate()"));
}

#[test]
fn an_unreachable_destination_is_a_failed_check() {
    let pair = Pair::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "version = 1\n[source]\nuri = \"{}\"\n[destination]\nuri = \"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=1000\"\n",
        pair.source.uri()
    );
    std::fs::write(pair.path().join("migration.toml"), text).unwrap();
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1);
    let plan = json(&run);
    let reach = check(&plan, "destination.reachable");
    assert_eq!(reach["status"], "error");
    assert!(
        reach["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{reach}"
    );
    assert_eq!(check(&plan, "source.reachable")["status"], "passed");
}

#[test]
fn an_oplog_window_shorter_than_the_copy_is_an_error() {
    // Few retained events, all written within a second or two, and enough data that the copy
    // takes longer at the assumed rate.
    let pair = Pair::with(
        mongoshift_testkit::TestServer::builder()
            .replica_set_name("src")
            .oplog_max_events(20),
        mongoshift_testkit::TestServer::builder().replica_set_name("dst"),
    );
    block_on(async {
        let c = client(&pair.source).await;
        let big = "x".repeat(1 << 20);
        let coll = c.database("big").collection::<bson::Document>("blobs");
        for chunk in 0..6 {
            coll.insert_many((0..12).map(|i| doc! { "_id": chunk * 12 + i, "b": big.clone() }))
                .await
                .unwrap();
        }
    });
    pair.write_config("");
    let run = pair.run(&["plan", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let plan = json(&run);
    let window = check(&plan, "source.oplog_window");
    assert_eq!(window["status"], "error", "{window}");
    assert!(
        window["message"].as_str().unwrap().contains("too short"),
        "{window}"
    );
    assert!(
        window["hint"]
            .as_str()
            .unwrap()
            .contains("replSetResizeOplog")
    );
}

#[test]
fn plans_are_deterministic_whatever_the_order_things_were_created_in() {
    let first = Pair::new();
    seed(&first);
    // The same catalog, created in another order.
    let second = Pair::new();
    block_on(async {
        let c = client(&second.source).await;
        c.database("crm")
            .run_command(
                doc! { "create": "people", "validator": { "name": { "$type": "string" } } },
            )
            .await
            .unwrap();
        c.database("crm")
            .collection::<bson::Document>("people")
            .insert_one(doc! { "name": "ann" })
            .await
            .unwrap();
        let shop = c.database("shop");
        shop.run_command(doc! { "create": "big_orders", "viewOn": "orders", "pipeline": [{ "$match": { "total": { "$gt": 100 } } }] })
            .await
            .unwrap();
        let orders = shop.collection::<bson::Document>("orders");
        orders
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .unwrap();
        orders
            .create_index(IndexModel::builder().keys(doc! { "customer": 1 }).build())
            .await
            .unwrap();
        orders
            .insert_many((0..500).rev().map(|i| doc! { "_id": i, "customer": i % 17, "email": format!("u{i}@example.net"), "total": i * 3 }))
            .await
            .unwrap();
        shop.run_command(doc! { "create": "log", "capped": true, "size": 1_048_576 })
            .await
            .unwrap();
        shop.collection::<bson::Document>("log")
            .insert_one(doc! { "m": "hello" })
            .await
            .unwrap();
    });
    for pair in [&first, &second] {
        pair.write_config("[options]\nrename = { \"shop\" = \"shop_v2\" }\n");
    }
    let a = first.run(&["plan", "--json"]);
    let b = second.run(&["plan", "--json"]);
    let again = first.run(&["plan", "--json"]);
    assert_eq!(
        a.stdout, again.stdout,
        "the same inputs give byte-identical output"
    );
    let normalize = |pair: &Pair, text: &str| {
        pair.filter(text)
            .replace("replicaSet=src", "")
            .replace("replicaSet=dst", "")
    };
    assert_eq!(normalize(&first, &a.stdout), normalize(&second, &b.stdout));
}

#[test]
fn saved_plans_round_trip_and_go_stale_when_the_source_changes() {
    use mongoshift::plan::{PlanFile, Staleness, refresh};
    let pair = Pair::new();
    seed(&pair);
    let config_path = pair.write_config("");
    let run = pair.run(&["plan", "--out", "reviewed.plan"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("mongoshift apply reviewed.plan"),
        "{}",
        run.stdout
    );
    let file = PlanFile::load(&pair.path().join("reviewed.plan")).unwrap();
    let config = mongoshift::config::load(&config_path).unwrap().config;
    let current = block_on(async {
        refresh(&config, &Default::default())
            .await
            .fingerprints(&config)
            .unwrap()
    });
    assert!(file.staleness(&current).is_empty(), "nothing changed yet");

    block_on(async {
        let c = client(&pair.source).await;
        let orders = c.database("shop").collection::<bson::Document>("orders");
        orders.insert_one(doc! { "_id": 10_000 }).await.unwrap();
    });
    let current = block_on(async {
        refresh(&config, &Default::default())
            .await
            .fingerprints(&config)
            .unwrap()
    });
    assert!(
        file.staleness(&current).is_empty(),
        "more documents do not make a plan stale"
    );

    block_on(async {
        let c = client(&pair.source).await;
        let orders = c.database("shop").collection::<bson::Document>("orders");
        orders
            .create_index(IndexModel::builder().keys(doc! { "total": -1 }).build())
            .await
            .unwrap();
    });
    let current = block_on(async {
        refresh(&config, &Default::default())
            .await
            .fingerprints(&config)
            .unwrap()
    });
    assert_eq!(file.staleness(&current), vec![Staleness::SourceCatalog]);
}
