//! The crash matrix: `apply` is killed (SIGKILL, no chance to save anything) at each phase of a
//! migration with a live writer, then run again to the end; the destination must then hold
//! exactly the source's documents, and the source's write block must be off.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{Document, doc};
use common::{Pair, Writer, block_on, client, output};
use mongoshift::state::{MigrationState, Phase, WriteBlock};
use mongoshift_testkit::TestServerHandle;

const BASE: i64 = 3000;

const CONFIG: &str = "[options.copy]\npartition_size = \"1MiB\"\nbatch_size = \"64KiB\"\nparallel_partitions = 2\n[cutover]\nblock_source_writes = true\nmax_lag = \"10s\"\n";

/// Where to kill, and how to make that moment last long enough to hit it.
struct Moment {
    name: &'static str,
    /// `failCommand` data slowing the destination (`None`: no slowing needed).
    slow: Option<fn() -> Document>,
    /// Approve the cutover before the kill (the moment is inside the cutover).
    approve_first: bool,
    reached: fn(&MigrationState) -> bool,
}

fn slow(commands: &[&str], millis: i32) -> Document {
    doc! { "failCommands": commands.to_vec(), "blockConnection": true, "blockTimeMS": millis }
}

fn moments() -> Vec<Moment> {
    vec![
        Moment {
            name: "creating namespaces",
            slow: Some(|| slow(&["create"], 400)),
            approve_first: false,
            reached: |s| s.phase == Phase::Preparing && s.namespaces.iter().any(|n| n.created),
        },
        Moment {
            name: "mid-partition",
            // Completed partitions are persisted at once, watermarks every 2 s: a partition's
            // batches (about 11 here) must outlast that interval, or no persisted state shows
            // one mid-way (seen under load with 150 ms per batch).
            slow: Some(|| slow(&["insert"], 400)),
            approve_first: false,
            reached: |s| {
                s.phase == Phase::Copying
                    && s.namespaces
                        .iter()
                        .flat_map(|n| &n.partitions)
                        .any(|p| p.resume_from.is_some() && !p.done)
            },
        },
        Moment {
            name: "spooling",
            slow: Some(|| slow(&["insert"], 100)),
            approve_first: false,
            reached: |s| s.phase == Phase::Copying && s.stream.events_spooled > 20,
        },
        Moment {
            name: "index build",
            slow: Some(|| slow(&["createIndexes"], 1500)),
            approve_first: false,
            reached: |s| {
                s.phase == Phase::CatchingUp && s.namespaces.iter().any(|n| !n.indexes_built)
            },
        },
        Moment {
            name: "applying",
            slow: Some(|| slow(&["update", "delete"], 50)),
            approve_first: false,
            reached: |s| s.phase >= Phase::CatchingUp && s.sync.counts.total() > 20,
        },
        Moment {
            name: "after the write block",
            // The block lasts from the drain to the commit: slow verification reads keep it
            // on long enough to be seen.
            slow: Some(|| slow(&["find"], 1000)),
            approve_first: true,
            reached: |s| s.cutover.write_block == WriteBlock::On,
        },
        Moment {
            name: "draining",
            // The lag these keep up is within max_lag, so the cutover still starts.
            slow: Some(|| slow(&["update", "delete"], 1000)),
            approve_first: true,
            reached: |s| s.phase == Phase::CuttingOver && s.cutover.final_time.is_some(),
        },
        Moment {
            name: "verifying",
            slow: Some(|| slow(&["find"], 300)),
            approve_first: true,
            reached: |s| s.phase == Phase::Verifying,
        },
    ]
}

fn seed(server: &TestServerHandle) {
    block_on(async {
        let c = client(server).await;
        let shop = c.database("shop");
        let pad = "x".repeat(700);
        shop.collection::<Document>("orders")
            .insert_many(
                (0..BASE)
                    .map(|i| doc! { "_id": i, "v": i, "customer": i % 17, "pad": pad.clone() }),
            )
            .await
            .unwrap();
        shop.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .unwrap();
        for coll in ["a", "b", "c"] {
            c.database("crm")
                .collection::<Document>(coll)
                .insert_many((0..200).map(|i| doc! { "_id": i, "n": i }))
                .await
                .unwrap();
        }
    });
}

/// Per namespace, `_id` (as Extended JSON) → raw document bytes.
type Contents = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn documents(server: &TestServerHandle) -> Contents {
    common::contents(server)
        .into_iter()
        .map(|(ns, (_, _, docs))| {
            let by_id = docs
                .into_iter()
                .map(|d| {
                    let raw = bson::RawDocumentBuf::from_bytes(d.clone()).unwrap();
                    let id = bson::Bson::try_from(raw.get("_id").unwrap().unwrap()).unwrap();
                    (id.into_canonical_extjson().to_string(), d)
                })
                .collect();
            (ns, by_id)
        })
        .collect()
}

/// (lost, extra, different) documents of the destination against the source.
fn compare(source: &Contents, destination: &Contents) -> (usize, usize, usize) {
    let empty = BTreeMap::new();
    let (mut lost, mut extra, mut different) = (0, 0, 0);
    for (ns, docs) in source {
        let other = destination.get(ns).unwrap_or(&empty);
        for (id, bytes) in docs {
            match other.get(id) {
                None => lost += 1,
                Some(b) if b != bytes => different += 1,
                Some(_) => {}
            }
        }
        extra += other.keys().filter(|id| !docs.contains_key(*id)).count();
    }
    for (ns, docs) in destination {
        if !source.contains_key(ns) {
            extra += docs.len();
        }
    }
    (lost, extra, different)
}

fn source_accepts_writes(server: &TestServerHandle) -> bool {
    block_on(async {
        client(server)
            .await
            .database("probe")
            .collection::<Document>("w")
            .insert_one(doc! { "x": 1 })
            .await
            .is_ok()
    })
}

struct Outcome {
    lost: usize,
    extra: usize,
    different: usize,
}

fn kill_at(moment: &Moment) -> Outcome {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(CONFIG);
    let writer = Writer::start(&pair.source, BASE, false, Duration::from_millis(3));
    if let Some(data) = moment.slow
        && !moment.approve_first
    {
        let mut command = doc! { "configureFailPoint": "failCommand", "mode": "alwaysOn" };
        command.insert("data", data());
        pair.destination.configure_fail_point(&command).unwrap();
    }
    let mut apply = pair.spawn_apply(&[]);
    if moment.approve_first {
        pair.wait_for_state(&mut apply, "ready", Duration::from_secs(120), |s| {
            s.phase >= Phase::Ready
        });
        if let Some(data) = moment.slow {
            let mut command = doc! { "configureFailPoint": "failCommand", "mode": "alwaysOn" };
            command.insert("data", data());
            pair.destination.configure_fail_point(&command).unwrap();
        }
        assert_eq!(pair.run(&["cutover"]).code, 0);
    }
    pair.wait_for_state(
        &mut apply,
        moment.name,
        Duration::from_secs(120),
        moment.reached,
    );
    apply.kill().expect("SIGKILL");
    let _ = apply.wait();
    pair.destination.clear_fail_points();

    // Run again until committed; before the cutover started, approve it once ready.
    let mut again = pair.spawn_apply(&[]);
    if !moment.approve_first {
        pair.wait_for_state(
            &mut again,
            "ready after the restart",
            Duration::from_secs(120),
            |s| s.phase >= Phase::Ready,
        );
        assert_eq!(pair.run(&["cutover"]).code, 0);
    }
    let written = writer.wait_refused(Duration::from_secs(120));
    let (code, stdout, stderr) = output(again);
    assert_eq!(code, 0, "{}: {stdout}\n{stderr}", moment.name);
    assert!(written.changes > 0, "{}: the writer wrote", moment.name);
    let (lost, extra, different) = compare(&documents(&pair.source), &documents(&pair.destination));
    assert!(
        source_accepts_writes(&pair.source),
        "{}: the write block is off after the run",
        moment.name
    );
    Outcome {
        lost,
        extra,
        different,
    }
}

#[test]
fn killed_at_every_phase_it_converges() {
    let started = Instant::now();
    let moments = moments();
    let mut total = Outcome {
        lost: 0,
        extra: 0,
        different: 0,
    };
    for chunk in moments.chunks(2) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|m| {
                let m = Moment {
                    name: m.name,
                    slow: m.slow,
                    approve_first: m.approve_first,
                    reached: m.reached,
                };
                std::thread::spawn(move || (m.name, kill_at(&m)))
            })
            .collect();
        for h in handles {
            let (name, o) = h.join().expect("scenario");
            eprintln!(
                "  killed while {name}: {} lost, {} extra, {} different",
                o.lost, o.extra, o.different
            );
            total.lost += o.lost;
            total.extra += o.extra;
            total.different += o.different;
        }
    }
    eprintln!(
        "reliability: {} kills, {} lost, {} duplicated, {} different ({:.0}s)",
        moments.len(),
        total.lost,
        total.extra,
        total.different,
        started.elapsed().as_secs_f64()
    );
    assert_eq!((total.lost, total.extra, total.different), (0, 0, 0));
}

async fn orders(server: &TestServerHandle) -> mongodb::Collection<Document> {
    client(server).await.database("shop").collection("orders")
}

/// The `$currentOp` entries of the destination that carry a mongoshift run's comment.
fn tagged_operations(server: &TestServerHandle, op: &str) -> Vec<Document> {
    use futures_util::TryStreamExt;
    block_on(async {
        client(server)
            .await
            .database("admin")
            .aggregate([
                doc! { "$currentOp": { "allUsers": true } },
                doc! { "$match": { "op": op, "command.comment.mongoshift": { "$exists": true } } },
            ])
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    })
}

/// Kills `apply` once one of its `op` commands is held on the destination; returns when.
fn kill_while_held(pair: &Pair, apply: &mut std::process::Child, op: &str) -> Instant {
    let start = Instant::now();
    while tagged_operations(&pair.destination, op).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {op} of mongoshift reached the destination"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    apply.kill().expect("SIGKILL");
    let _ = apply.wait();
    Instant::now()
}

/// How long the killed-run tests hold the old run's write on the destination: long enough
/// that a loaded machine cannot race past it.
const HELD_MS: u64 = 10_000;

/// A killed apply's last write is still running on the destination (held there for 10 s). The
/// resumed run deletes the document, as the source did since; without waiting for the old
/// write, it would land afterwards and bring the deleted document back.
#[test]
fn a_resumed_apply_waits_for_the_killed_runs_writes_still_in_flight() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(CONFIG);
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut apply, "ready", Duration::from_secs(120), |s| {
        s.phase >= Phase::Ready
    });
    // Only mongoshift's connections: its next update command waits 10 s, then runs (long
    // enough for the kill and the restart below, however loaded the machine).
    pair.destination
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand", "mode": { "times": 1 },
            "data": { "failCommands": ["update"], "blockConnection": true, "blockTimeMS": HELD_MS as i64, "appName": "mongoshift" },
        })
        .unwrap();
    block_on(async {
        orders(&pair.source)
            .await
            .insert_one(doc! { "_id": "late", "v": 1 })
            .await
            .unwrap()
    });
    let killed_at = kill_while_held(&pair, &mut apply, "update");
    block_on(async {
        orders(&pair.source)
            .await
            .delete_one(doc! { "_id": "late" })
            .await
            .unwrap()
    });

    let mut again = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut again, "ready again", Duration::from_secs(120), |s| {
        s.phase >= Phase::Ready && s.sync.counts.deletes >= 1
    });
    // Past the old write's 10 s: had it run, it would have run by now.
    std::thread::sleep(Duration::from_millis(HELD_MS + 500).saturating_sub(killed_at.elapsed()));
    assert!(tagged_operations(&pair.destination, "update").is_empty());
    let late = block_on(async {
        orders(&pair.destination)
            .await
            .find_one(doc! { "_id": "late" })
            .await
            .unwrap()
    });
    assert_eq!(
        late, None,
        "the deleted document stays deleted on the destination"
    );
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, stdout, stderr) = output(again);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("ending them and waiting before writing"),
        "the resumed run found the old write and waited for it: {stderr}"
    );
}

/// `destroy` after a killed apply: the killed run's insert, still held on the destination,
/// would recreate a collection that destroy has dropped. destroy ends it first.
#[test]
fn destroy_after_a_kill_leaves_no_late_write_behind() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(CONFIG);
    // Only mongoshift's connections: its first insert waits 10 s, then runs (long enough for
    // destroy to find it still running, however loaded the machine).
    pair.destination
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand", "mode": { "times": 1 },
            "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": HELD_MS as i64, "appName": "mongoshift" },
        })
        .unwrap();
    let mut apply = pair.spawn_apply(&[]);
    let killed_at = kill_while_held(&pair, &mut apply, "insert");
    let destroy = pair.run(&["destroy", "--yes"]);
    assert_eq!(destroy.code, 0, "{}\n{}", destroy.stdout, destroy.stderr);
    assert!(
        destroy
            .stderr
            .contains("ending them and waiting before writing"),
        "destroy found the old insert and ended it first: {}",
        destroy.stderr
    );
    // Past the old insert's 10 s: had it run, it would have run by now.
    std::thread::sleep(Duration::from_millis(HELD_MS + 500).saturating_sub(killed_at.elapsed()));
    let left = common::contents(&pair.destination);
    assert!(
        left.keys()
            .all(|ns| !ns.starts_with("shop.") && !ns.starts_with("crm.")),
        "destroy left the migrated namespaces behind: {:?}",
        left.keys().collect::<Vec<_>>()
    );
}
