//! Faults injected with `configureFailPoint` on either side of a live migration (a writer runs
//! throughout): each is survived with retries and the destination ends equal to the source; a
//! fault that persists ends the run with a clear error and a state that resumes.

mod common;

use std::time::{Duration, Instant};

use bson::{Document, doc};
use common::{Pair, Writer, assert_same_clusters, block_on, client, output};
use mongoshift::state::Phase;
use mongoshift_testkit::TestServerHandle;

const BASE: i64 = 2000;

/// Few parallel partitions, so that consecutive failures land on the same operation and go
/// beyond the driver's own single retry.
const CONFIG: &str = "[options.copy]\npartition_size = \"1MiB\"\nparallel_partitions = 2\nparallel_collections = 1\n[cutover]\nblock_source_writes = true\nmax_lag = \"2s\"\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Source,
    Destination,
}

struct Fault {
    name: &'static str,
    side: Side,
    commands: &'static [&'static str],
    data: fn() -> Document,
}

fn faults() -> Vec<Fault> {
    const READS: &[&str] = &["find", "getMore", "aggregate"];
    const WRITES: &[&str] = &["insert", "update", "delete"];
    vec![
        Fault {
            name: "closed connections",
            side: Side::Source,
            commands: READS,
            data: || doc! { "closeConnection": true },
        },
        Fault {
            name: "InterruptedDueToReplStateChange (11602)",
            side: Side::Source,
            commands: READS,
            data: || doc! { "errorCode": 11602 },
        },
        Fault {
            name: "ExceededTimeLimit (262)",
            side: Side::Source,
            commands: &["find", "getMore"],
            data: || doc! { "errorCode": 262 },
        },
        Fault {
            name: "resumable change-stream error",
            side: Side::Source,
            commands: &["getMore"],
            data: || doc! { "errorCode": 6, "errorLabels": ["ResumableChangeStreamError"] },
        },
        Fault {
            name: "slow connections",
            side: Side::Source,
            commands: READS,
            data: || doc! { "blockConnection": true, "blockTimeMS": 300 },
        },
        Fault {
            name: "closed connections",
            side: Side::Destination,
            commands: WRITES,
            data: || doc! { "closeConnection": true },
        },
        Fault {
            name: "NotWritablePrimary (10107)",
            side: Side::Destination,
            commands: &["insert", "update", "delete", "createIndexes"],
            data: || doc! { "errorCode": 10107 },
        },
        Fault {
            name: "InterruptedDueToReplStateChange (11602)",
            side: Side::Destination,
            commands: WRITES,
            data: || doc! { "errorCode": 11602 },
        },
        Fault {
            name: "WriteConflict (112)",
            side: Side::Destination,
            commands: &["update", "delete"],
            data: || doc! { "errorCode": 112 },
        },
        Fault {
            name: "ExceededTimeLimit (262)",
            side: Side::Destination,
            commands: &["createIndexes", "find", "insert"],
            data: || doc! { "errorCode": 262 },
        },
        Fault {
            name: "slow connections",
            side: Side::Destination,
            commands: WRITES,
            data: || doc! { "blockConnection": true, "blockTimeMS": 300 },
        },
    ]
}

fn seed(server: &TestServerHandle) {
    block_on(async {
        let c = client(server).await;
        let shop = c.database("shop");
        let pad = "p".repeat(1000);
        shop.collection::<Document>("orders")
            .insert_many(
                (0..BASE)
                    .map(|i| doc! { "_id": i, "v": i, "customer": i % 13, "pad": pad.clone() }),
            )
            .await
            .unwrap();
        shop.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .unwrap();
        c.database("crm")
            .collection::<Document>("people")
            .insert_many((0..300).map(|i| doc! { "_id": i, "n": i }))
            .await
            .unwrap();
    });
}

fn server(pair: &Pair, side: Side) -> &TestServerHandle {
    match side {
        Side::Source => &pair.source,
        Side::Destination => &pair.destination,
    }
}

/// Configures `failCommand` through the wire protocol, as against a real server, and returns
/// how often it has fired so far (mongod's reply `count`, its cumulative `timesEntered`).
fn configure(server: &TestServerHandle, command: Document) -> i64 {
    block_on(async {
        let reply = client(server)
            .await
            .database("admin")
            .run_command(command)
            .await
            .unwrap();
        reply
            .get_i64("count")
            .or_else(|_| reply.get_i32("count").map(i64::from))
            .expect("configureFailPoint replies with count")
    })
}

fn arm(server: &TestServerHandle, fault: &Fault, mode: Document) -> i64 {
    let mut data = (fault.data)();
    data.insert("failCommands", fault.commands.to_vec());
    configure(
        server,
        doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data },
    )
}

fn disarm(server: &TestServerHandle) -> i64 {
    configure(
        server,
        doc! { "configureFailPoint": "failCommand", "mode": "off" },
    )
}

/// One migration with the fault armed for the copy and armed again once ready; returns how
/// often it fired.
fn survive(fault: &Fault) -> i64 {
    const TIMES: i32 = 6;
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(CONFIG);
    let writer = Writer::start(&pair.source, BASE, false, Duration::from_millis(3));
    let faulty = server(&pair, fault.side);
    let before = arm(faulty, fault, doc! { "times": TIMES });
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut apply, "ready", Duration::from_secs(120), |s| {
        s.phase >= Phase::Ready
    });
    let after_copy = disarm(faulty);
    let applied = pair.state().sync.counts.total();
    arm(faulty, fault, doc! { "times": TIMES });
    // The writer's changes meet the fault while they are applied: wait until a good number
    // of them were applied after it was armed.
    pair.wait_for_state(&mut apply, "applying", Duration::from_secs(120), |s| {
        s.sync.counts.total() > applied + 100
    });
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let written = writer.wait_refused(Duration::from_secs(60));
    let (code, stdout, stderr) = output(apply);
    let after_sync = disarm(faulty);
    assert_eq!(
        code, 0,
        "{} on the {:?}: {stdout}\n{stderr}",
        fault.name, fault.side
    );
    assert!(written.changes > 0);
    assert_same_clusters(&pair.source, &pair.destination);
    eprintln!(
        "  {:?} {}: fired {} times before ready, {} after",
        fault.side,
        fault.name,
        after_copy - before,
        after_sync - after_copy
    );
    after_sync - before
}

#[test]
fn injected_faults_are_survived_without_loss() {
    let started = Instant::now();
    let faults = faults();
    // Two at a time: each scenario has its own servers.
    let mut injected = 0;
    for pair in faults.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|f| {
                let f = Fault {
                    name: f.name,
                    side: f.side,
                    commands: f.commands,
                    data: f.data,
                };
                std::thread::spawn(move || (f.name, f.side, survive(&f)))
            })
            .collect();
        for h in handles {
            let (name, side, fired) = h.join().expect("scenario");
            assert!(fired > 0, "{name} on the {side:?} never fired");
            injected += fired;
        }
    }
    eprintln!(
        "faults: {} scenarios, {injected} injected, 0 lost, 0 different ({:.0}s)",
        faults.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_persistent_fault_stops_with_a_clear_error_and_resumes_once_fixed() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(&format!("[options]\nretry_for = \"3s\"\n{CONFIG}"));
    let fault = Fault {
        name: "closed connections",
        side: Side::Destination,
        commands: &["insert"],
        data: || doc! { "closeConnection": true },
    };
    arm(&pair.destination, &fault, doc! { "times": 1_000_000 });
    let started = Instant::now();
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it gives up after retry_for"
    );
    assert!(
        run.stderr.contains("error: destination: `insert ")
            && run.stderr.contains("`mongoshift apply` resumes"),
        "the error says which side and operation: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("transient failure"),
        "it retried first: {}",
        run.stderr
    );
    let state = pair.state();
    assert_eq!(state.phase, Phase::Copying, "the state is kept");

    disarm(&pair.destination);
    pair.write_config(&format!("{CONFIG}approval = \"auto\"\n"));
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_clusters(&pair.source, &pair.destination);
}
