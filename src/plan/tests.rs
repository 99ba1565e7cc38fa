//! The planner on synthetic snapshots: actions, checks, determinism, and the rendered views.

use std::collections::BTreeSet;
use std::path::Path;

use bson::{Document, Timestamp, doc};

use super::*;
use crate::cluster::{
    Catalog, ClusterError, ClusterSnapshot, CollectionInfo, CollectionKind, CollectionStats, Grant,
    IndexSpec, OplogInfo, Privileges, Resource, ServerInfo, Side, Topology,
};
use crate::config::{self, Config};
use crate::namespace::Namespace;

fn config(extra: &str) -> Config {
    let text = format!(
        "version = 1\nname = \"test\"\n[source]\nuri = \"mongodb://u:secretpw@src:27017/?replicaSet=rs0\"\n[destination]\nuri = \"mongodb://dst:27017/?replicaSet=rs1\"\n{extra}"
    );
    match config::check_text(Path::new("migration.toml"), text, &[("X", "")]) {
        Ok(l) => l.config,
        Err(e) => panic!("{e:?}"),
    }
}

fn server(set: &str) -> ServerInfo {
    ServerInfo {
        topology: Topology::ReplicaSet {
            set_name: set.to_owned(),
        },
        version: "7.0.14".to_owned(),
        version_parts: [7, 0, 14],
        fcv: Some("7.0".to_owned()),
        hosts: vec![format!("{set}-host:27017")],
        max_wire_version: 21,
    }
}

fn index(name: &str, key: Document, options: Document) -> IndexSpec {
    IndexSpec {
        name: name.to_owned(),
        key,
        options,
    }
}

fn collection(count: u64, indexes: Vec<IndexSpec>, options: Document) -> CollectionInfo {
    let mut all = vec![index("_id_", doc! {"_id": 1}, doc! {})];
    all.extend(indexes);
    CollectionInfo {
        kind: CollectionKind::Collection,
        uuid: Some(format!("uuid-{count}")),
        options,
        indexes: all,
        stats: CollectionStats {
            count,
            size_bytes: count * 100,
        },
        shard_key: None,
        shard_key_unique: false,
        shard_stats: Default::default(),
    }
}

fn snapshot(set: &str, entries: Vec<(&str, CollectionInfo)>) -> ClusterSnapshot {
    let mut catalog = Catalog::default();
    for (ns, info) in entries {
        let ns = Namespace::parse(ns).unwrap();
        catalog
            .databases
            .entry(ns.db().to_owned())
            .or_default()
            .collections
            .insert(ns.coll().to_owned(), info);
    }
    ClusterSnapshot {
        server: server(set),
        privileges: None,
        oplog: Some(OplogInfo {
            first: Timestamp {
                time: 1_000,
                increment: 1,
            },
            last: Timestamp {
                time: 1_000 + 86_400,
                increment: 1,
            },
            used_bytes: None,
            max_bytes: None,
        }),
        oplog_unreadable: None,
        sharding: None,
        catalog,
    }
}

fn source() -> ClusterSnapshot {
    snapshot(
        "rs0",
        vec![
            (
                "shop.orders",
                collection(
                    1200,
                    vec![
                        index("customer_1", doc! {"customer": 1}, doc! {}),
                        index("email_1", doc! {"email": 1}, doc! {"unique": true}),
                    ],
                    doc! {},
                ),
            ),
            (
                "shop.log",
                collection(50, vec![], doc! {"capped": true, "size": 1_048_576_i64}),
            ),
            (
                "shop.big_orders",
                CollectionInfo {
                    kind: CollectionKind::View,
                    uuid: None,
                    options: doc! {"viewOn": "orders", "pipeline": [{"$match": {"total": {"$gt": 100}}}]},
                    indexes: vec![],
                    stats: CollectionStats::default(),
                    shard_key: None,
                    shard_key_unique: false,
                    shard_stats: Default::default(),
                },
            ),
            (
                "crm.people",
                collection(
                    10,
                    vec![],
                    doc! {"validator": {"name": {"$type": "string"}}},
                ),
            ),
        ],
    )
}

fn plan_with(config: &Config, source: &ClusterSnapshot, destination: &ClusterSnapshot) -> Plan {
    make_plan(&PlanInput {
        config,
        source: Ok(source),
        destination: Ok(destination),
        owned: &BTreeSet::new(),
    })
}

fn check<'a>(plan: &'a Plan, id: &str) -> &'a Check {
    plan.checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {:#?}", plan.checks))
}

fn action_lines(plan: &Plan) -> Vec<String> {
    render::human(plan, false)
        .lines()
        .skip_while(|l| !l.starts_with("Actions"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn empty_destination_gets_everything_in_apply_order() {
    let c = config("");
    let plan = plan_with(&c, &source(), &snapshot("rs1", vec![]));
    assert!(plan.is_valid(), "{:#?}", plan.checks);
    assert_eq!(
        action_lines(&plan),
        vec![
            "+ create collection crm.people {\"validator\":{\"name\":{\"$type\":\"string\"}}}",
            "+ create collection shop.log {\"capped\":true,\"size\":1048576}",
            "+ create collection shop.orders",
            "+ create view shop.big_orders on orders",
            "~ copy crm.people → crm.people (~10 documents, 1000 B)",
            "~ copy shop.log → shop.log (~50 documents, 4.9 KiB)",
            "~ copy shop.orders → shop.orders (~1.2k documents, 117.2 KiB)",
            "+ create index shop.orders customer_1 {\"customer\":1} (after copy)",
            "+ create index shop.orders email_1 {\"email\":1} {\"unique\":true} (after copy)",
        ]
    );
    assert_eq!(
        plan.summary.to_string(),
        "Plan: 3 collections, 1 view and 2 indexes to create, 0 to drop; ~1.3k documents, 123.0 KiB to copy"
    );
}

#[test]
fn index_policy_moves_or_skips_index_builds() {
    let before = plan_with(
        &config("[options]\nindexes = \"before_copy\"\n"),
        &source(),
        &snapshot("rs1", vec![]),
    );
    let lines = action_lines(&before);
    let first_copy = lines.iter().position(|l| l.starts_with("~ copy")).unwrap();
    let last_index = lines
        .iter()
        .rposition(|l| l.contains("create index"))
        .unwrap();
    assert!(last_index < first_copy, "{lines:#?}");
    let skip = plan_with(
        &config("[options]\nindexes = \"skip\"\n"),
        &source(),
        &snapshot("rs1", vec![]),
    );
    assert_eq!(skip.summary.indexes_to_create, 0);
}

#[test]
fn conflicts_are_errors_unless_cleared() {
    let destination = snapshot("rs1", vec![("shop.orders", collection(3, vec![], doc! {}))]);
    let plan = plan_with(&config(""), &source(), &destination);
    let c = check(&plan, "destination.conflicts");
    assert_eq!(c.status, CheckStatus::Error);
    assert!(c.message.contains("shop.orders"), "{}", c.message);
    assert!(!plan.is_valid());
    assert!(
        !action_lines(&plan)
            .iter()
            .any(|l| l.contains("shop.orders"))
    );

    let plan = plan_with(
        &config("[options]\nclear_destination = true\n"),
        &source(),
        &destination,
    );
    assert_eq!(
        check(&plan, "destination.conflicts").status,
        CheckStatus::Warning
    );
    assert!(plan.is_valid());
    let lines = action_lines(&plan);
    assert_eq!(lines[0], "- drop collection shop.orders (3 documents)");
    assert!(lines.contains(&"+ create collection shop.orders".to_owned()));
    assert_eq!(plan.summary.namespaces_to_drop, 1);
}

#[test]
fn renames_apply_to_collections_and_views() {
    let c = config(
        "[options]\nrename = { \"shop\" = \"shop_v2\", \"shop.orders\" = \"shop_v2.purchases\" }\n",
    );
    let plan = plan_with(&c, &source(), &snapshot("rs1", vec![]));
    let lines = action_lines(&plan);
    assert!(
        lines.contains(&"+ create collection shop_v2.purchases (from shop.orders)".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"+ create view shop_v2.big_orders on purchases (from shop.big_orders)".to_owned()
        ),
        "{lines:#?}"
    );
    assert!(lines.contains(
        &"~ copy shop.orders → shop_v2.purchases (~1.2k documents, 117.2 KiB)".to_owned()
    ));
}

#[test]
fn collisions_and_unused_rules_are_reported() {
    let c = config(
        "[options]\nrename = { \"crm\" = \"shop\", \"crm.people\" = \"shop.orders\", \"nope\" = \"x\" }\n",
    );
    let plan = plan_with(&c, &source(), &snapshot("rs1", vec![]));
    let one_to_one = check(&plan, "mapping.one_to_one");
    assert_eq!(one_to_one.status, CheckStatus::Error);
    assert!(
        one_to_one
            .message
            .contains("shop.orders ← crm.people and shop.orders"),
        "{}",
        one_to_one.message
    );
    assert_eq!(check(&plan, "mapping.renames").status, CheckStatus::Warning);
}

#[test]
fn unreachable_and_standalone_clusters_fail_checks() {
    let c = config("");
    let standalone = ClusterSnapshot {
        server: ServerInfo {
            topology: Topology::Standalone,
            ..server("x")
        },
        ..source()
    };
    let down = ClusterError::Connect {
        side: Side::Destination,
        message: "no server available".to_owned(),
        code: None,
    };
    let plan = make_plan(&PlanInput {
        config: &c,
        source: Ok(&standalone),
        destination: Err(&down),
        owned: &BTreeSet::new(),
    });
    let topology = check(&plan, "source.topology");
    assert_eq!(topology.status, CheckStatus::Error);
    assert!(topology.hint.as_deref().unwrap().contains("rs.initiate()"));
    assert_eq!(
        check(&plan, "destination.reachable").status,
        CheckStatus::Error
    );
    assert!(plan.actions.is_empty());
    assert!(!plan.is_valid());
}

#[test]
fn oplog_window_is_compared_with_the_copy_time() {
    let c = config("");
    let mut s = source();
    let big = 10 * checks::ASSUMED_COPY_RATE * 3600; // ten hours of copying
    s.catalog
        .databases
        .get_mut("shop")
        .unwrap()
        .collections
        .get_mut("orders")
        .unwrap()
        .stats
        .size_bytes = big;
    let window = |secs: u32| OplogInfo {
        first: Timestamp {
            time: 1_000,
            increment: 0,
        },
        last: Timestamp {
            time: 1_000 + secs,
            increment: 0,
        },
        used_bytes: None,
        max_bytes: None,
    };
    s.oplog = Some(window(5 * 3600));
    let plan = plan_with(&c, &s, &snapshot("rs1", vec![]));
    let w = check(&plan, "source.oplog_window");
    assert_eq!(w.status, CheckStatus::Error);
    assert!(w.message.contains("5h too short"), "{}", w.message);
    s.oplog = Some(window(15 * 3600));
    assert_eq!(
        check(
            &plan_with(&c, &s, &snapshot("rs1", vec![])),
            "source.oplog_window"
        )
        .status,
        CheckStatus::Warning
    );
    // A fresh oplog that has not wrapped yet is judged by its projected window.
    s.oplog = Some(OplogInfo {
        used_bytes: Some(1 << 20),
        max_bytes: Some(1 << 30),
        ..window(3600)
    });
    assert_eq!(
        check(
            &plan_with(&c, &s, &snapshot("rs1", vec![])),
            "source.oplog_window"
        )
        .status,
        CheckStatus::Passed
    );
}

#[test]
fn missing_privileges_are_listed_per_action() {
    let c = config("[cutover]\nblock_source_writes = true\n");
    let mut s = source();
    s.privileges = Some(Privileges {
        users: vec!["migrator@admin".to_owned()],
        roles: vec!["read@shop".to_owned()],
        grants: vec![Grant {
            resource: Resource::Namespace {
                db: "shop".to_owned(),
                collection: String::new(),
            },
            actions: ["find", "listIndexes", "collStats", "listCollections"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }],
    });
    let plan = plan_with(&c, &s, &snapshot("rs1", vec![]));
    let p = check(&plan, "source.privileges");
    assert_eq!(p.status, CheckStatus::Error);
    for expected in [
        "user migrator@admin lacks",
        "changeStream on all databases",
        "find on all databases",
        "crm.people, local.oplog.rs",
        "listDatabases on the cluster",
        "setUserWriteBlockMode on the cluster",
        "listCollections on database crm",
    ] {
        assert!(
            p.message.contains(expected),
            "{expected:?} not in {}",
            p.message
        );
    }
    assert!(!p.message.contains("shop.orders"), "{}", p.message);
}

#[test]
fn same_inputs_in_any_order_give_identical_plans() {
    let c = config("[options]\nclear_destination = true\n");
    let s1 = source();
    // The same source, built in reverse order with shuffled index lists.
    let mut entries: Vec<(Namespace, CollectionInfo)> = s1
        .catalog
        .namespaces()
        .map(|(ns, info)| (ns, info.clone()))
        .collect();
    entries.reverse();
    let mut s2 = ClusterSnapshot {
        catalog: Catalog::default(),
        ..s1.clone()
    };
    for (ns, mut info) in entries {
        info.indexes.reverse();
        s2.catalog
            .databases
            .entry(ns.db().to_owned())
            .or_default()
            .collections
            .insert(ns.coll().to_owned(), info);
    }
    let d = snapshot("rs1", vec![("shop.log", collection(1, vec![], doc! {}))]);
    let a = plan_with(&c, &s1, &d);
    let b = plan_with(&c, &s2, &d);
    assert_eq!(render::json(&a), render::json(&b));
    assert_eq!(render::human(&a, false), render::human(&b, false));
}

#[test]
fn views_render_for_review() {
    let c = config("[options]\nclear_destination = true\nrename = { \"crm\" = \"people_v2\" }\n");
    let d = snapshot(
        "rs1",
        vec![
            ("shop.log", collection(7, vec![], doc! {})),
            ("other.keep", collection(1, vec![], doc! {})),
        ],
    );
    let plan = plan_with(&c, &source(), &d);
    let human = render::human(&plan, false);
    assert!(!human.contains("secretpw"));
    insta::assert_snapshot!("plan_human", human);
    let json = render::json(&plan);
    assert!(!json.contains("secretpw"));
    insta::assert_snapshot!("plan_json", json);
}

#[test]
fn plan_files_round_trip_and_detect_staleness() {
    let c = config("");
    let s = source();
    let d = snapshot("rs1", vec![]);
    let plan = plan_with(&c, &s, &d);
    let fp = fingerprints(&c, &s, &d, &plan);
    let file = PlanFile::new(plan, fp.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    file.save(&path).unwrap();
    let loaded = PlanFile::load(&path).unwrap();
    assert_eq!(loaded, file);
    assert!(loaded.staleness(&fp).is_empty());
    // BSON types survive the file (the capped size is an Int64).
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"$numberLong\": \"1048576\""), "{text}");

    // A new index on the source makes the plan stale; size changes do not.
    let mut grown = s.clone();
    grown
        .catalog
        .databases
        .get_mut("shop")
        .unwrap()
        .collections
        .get_mut("orders")
        .unwrap()
        .stats
        .count += 500;
    assert!(
        loaded
            .staleness(&fingerprints(&c, &grown, &d, &loaded.plan))
            .is_empty()
    );
    let mut changed = s.clone();
    changed
        .catalog
        .databases
        .get_mut("crm")
        .unwrap()
        .collections
        .get_mut("people")
        .unwrap()
        .indexes
        .push(index("n_1", doc! {"n": 1}, doc! {}));
    assert_eq!(
        loaded.staleness(&fingerprints(&c, &changed, &d, &loaded.plan)),
        vec![Staleness::SourceCatalog]
    );
    let other = config("[options]\nverify = \"counts\"\n");
    assert_eq!(
        loaded.staleness(&fingerprints(&other, &s, &d, &loaded.plan)),
        vec![Staleness::Config]
    );
}

#[test]
fn damaged_and_newer_plan_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, "{\"format_version\": 1, \"plan\": ").unwrap();
    assert!(matches!(
        PlanFile::load(&path),
        Err(PlanFileError::Corrupt { .. })
    ));
    std::fs::write(&path, "{\"format_version\": 99}").unwrap();
    assert!(matches!(
        PlanFile::load(&path),
        Err(PlanFileError::NewerFormat { found: 99, .. })
    ));
    std::fs::write(&path, "{\"hello\": 1}").unwrap();
    assert!(matches!(
        PlanFile::load(&path),
        Err(PlanFileError::Corrupt { .. })
    ));
}
