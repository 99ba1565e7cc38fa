//! Change application, the cutover, abort and destroy, against testkit servers with live
//! writers.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use common::{Pair, Writer, assert_same_clusters, block_on, client, output};
use mongoshift::state::{Phase, WriteBlock};
use mongoshift_testkit::{TestServer, TestServerHandle};

const BASE: i64 = 2000;

/// `shop.orders` (with an index), collections the writer renames and drops, a view, and
/// another database.
fn seed(server: &TestServerHandle) {
    block_on(async {
        let c = client(server).await;
        let shop = c.database("shop");
        shop.collection::<Document>("orders")
            .insert_many((0..BASE).map(|i| doc! { "_id": i, "v": i, "customer": i % 13 }))
            .await
            .unwrap();
        shop.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .unwrap();
        shop.collection::<Document>("scratch")
            .insert_many((0..50).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
        shop.collection::<Document>("doomed")
            .insert_many((0..50).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
        shop.run_command(doc! { "create": "big", "viewOn": "orders", "pipeline": [{ "$match": { "v": { "$gt": 100 } } }] })
            .await
            .unwrap();
        c.database("crm")
            .collection::<Document>("people")
            .insert_many((0..100).map(|i| doc! { "_id": i, "n": i }))
            .await
            .unwrap();
    });
}

/// Like [`output`] (the output is read while the process runs, so a verbose run cannot block
/// on a full pipe), but kills the process and fails the test, showing its output, when it runs
/// longer than `limit`. The kill goes through the `Child`, which is not reaped before it, so it
/// can never reach another process that reused the pid.
fn output_within(
    mut child: Child,
    limit: Duration,
    lockfile_dump: impl Fn() -> String,
) -> (i32, String, String) {
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the process can be waited for") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout was read");
    let stderr = stderr.join().expect("stderr was read");
    match status {
        Some(status) => (status.code().unwrap_or(-1), stdout, stderr),
        None => panic!(
            "apply did not finish within {limit:?}\n{stdout}\n{stderr}\n{}",
            lockfile_dump()
        ),
    }
}

fn source_accepts_writes(server: &TestServerHandle) -> bool {
    block_on(async {
        client(server)
            .await
            .database("probe")
            .collection::<Document>("w")
            .insert_one(doc! { "at": 1 })
            .await
            .is_ok()
    })
}

/// Small partitions and a cutover that blocks source writes, ready once the destination lags
/// by less than `max_lag`.
fn blocking(max_lag: &str) -> String {
    format!(
        "[options.copy]\npartition_size = \"1MiB\"\n[cutover]\nblock_source_writes = true\nmax_lag = \"{max_lag}\"\n"
    )
}

/// `max_lag` for tests that slow the destination's writes to act during the drain: those
/// writes keep the lag high, so `max_lag` must allow it, or the cutover would never start.
const SLOW_DESTINATION_MAX_LAG: &str = "60s";

#[test]
fn a_live_writer_with_ddl_converges_through_an_approved_cutover() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(&blocking("2s"));
    let writer = Writer::start(&pair.source, BASE, true, Duration::from_millis(3));
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    let status = pair.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["progress"]["phase"], "ready");
    assert!(
        status["progress"]["deadline"].is_string(),
        "the window is shown: {status}"
    );
    // Let the writer get through its DDL steps, then approve from "another terminal".
    writer.wait_for_steps(150, Duration::from_secs(60));
    let approve = pair.run(&["cutover"]);
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert!(
        approve.stdout.contains("the running apply acts on it"),
        "{}",
        approve.stdout
    );

    let written = writer.wait_refused(Duration::from_secs(60));
    let refusal = written.refused.clone().unwrap_or_default();
    assert!(
        refusal.contains("UserWritesBlocked"),
        "the writer was stopped by the write block: {refusal}"
    );
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("committed"), "{stdout}");
    assert!(
        written.ddl >= 7,
        "the writer ran its DDL steps: {written:?}"
    );

    assert_same_clusters(&pair.source, &pair.destination);
    assert!(
        source_accepts_writes(&pair.source),
        "the write block is released"
    );
    let s = pair.state();
    assert_eq!(s.phase, Phase::Committed);
    assert_eq!(s.cutover.write_block, WriteBlock::Off);
    assert!(s.cutover.approval.as_ref().unwrap().via == "file");
    // Re-running a committed migration is a no-op that says so.
    let again = pair.run(&["apply"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("already committed"),
        "{}",
        again.stdout
    );
}

#[test]
fn the_report_counts_what_happened() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(&blocking("2s"));
    let apply = pair.spawn_apply(&["--json"]);
    // Every write happens after the copy, so each is exactly one applied change.
    pair.wait_for_phase(Phase::CatchingUp, Duration::from_secs(60));
    let writer = Writer::start(&pair.source, BASE, false, Duration::from_millis(2));
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    writer.wait_for_steps(200, Duration::from_secs(60));
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let written = writer.wait_refused(Duration::from_secs(60));
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["status"], "committed");
    let report = &result["report"];
    assert_eq!(
        report["changes_applied"]["inserts"].as_u64().unwrap()
            + report["changes_applied"]["updates"].as_u64().unwrap()
            + report["changes_applied"]["replaces"].as_u64().unwrap()
            + report["changes_applied"]["deletes"].as_u64().unwrap(),
        written.changes
    );
    assert_eq!(report["documents_copied"], BASE + 50 + 50 + 100);
    let downtime = report["downtime_secs"].as_f64().unwrap();
    let duration = report["duration_secs"].as_f64().unwrap();
    assert!(
        downtime > 0.0 && downtime < duration,
        "{downtime} < {duration}"
    );
    assert_eq!(
        report["verification"]["namespaces"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(report["created"]["collections"], 4);
    assert_eq!(report["created"]["views"], 1);
    assert_eq!(report["indexes_created"], 1);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pair.path().join("migration-report.json")).unwrap())
            .unwrap();
    assert_eq!(&saved, report);
    assert_same_clusters(&pair.source, &pair.destination);
}

#[test]
fn an_approval_given_before_ready_is_acted_on_at_ready() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[cutover]\nmax_lag = \"2s\"\n");
    let approve = pair.run(&["cutover"]);
    assert!(
        approve
            .stdout
            .contains("the next `mongoshift apply` acts on it"),
        "{}",
        approve.stdout
    );
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(pair.state().phase, Phase::Committed);
    assert_same_clusters(&pair.source, &pair.destination);

    // The flag policy: --approve-cutover.
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[cutover]\napproval = \"flag\"\nmax_lag = \"2s\"\n");
    let refused = pair.run(&["cutover"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let run = pair.run(&["apply", "--approve-cutover"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(pair.state().cutover.approval.unwrap().via, "flag");
}

/// An approval file that exists but cannot be read approves nothing, and `apply` says why
/// (once, not at every tick) instead of waiting without a word.
#[test]
fn an_unreadable_approval_file_is_reported_once() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[cutover]\nwindow = \"3s\"\nmax_lag = \"2s\"\n");
    std::fs::create_dir(pair.path().join("cutover.approved")).unwrap();
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 6, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr
            .matches("the approval file cannot be read")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cutover.approved"), "{}", run.stderr);
    assert!(pair.state().cutover.approval.is_none());
}

#[test]
fn an_expired_window_stops_with_exit_6_and_extend_reopens_it() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[cutover]\nwindow = \"1s\"\nmax_lag = \"2s\"\n");
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 6, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("window ended"), "{}", run.stderr);
    assert_eq!(pair.state().phase, Phase::Expired);
    // Still expired: apply says so again.
    assert_eq!(pair.run(&["apply"]).code, 6);

    let extend = pair.run(&["extend", "1h"]);
    assert_eq!(extend.code, 0, "{}", extend.stderr);
    assert!(extend.stdout.contains("now ends at"), "{}", extend.stdout);
    assert_eq!(pair.state().cutover.extensions, vec![3600]);
    assert_eq!(pair.run(&["cutover"]).code, 0);
    // Resumed by another version (as after an upgrade): it goes on, and says so.
    let lockfile = std::fs::read_to_string(pair.lockfile()).unwrap();
    let saved_by = format!("\"tool_version\": \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(lockfile.contains(&saved_by), "{lockfile}");
    std::fs::write(
        pair.lockfile(),
        lockfile.replace(&saved_by, "\"tool_version\": \"0.0.1-old\""),
    )
    .unwrap();
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("this migration was last saved by another mongoshift version")
            && run.stderr.contains("0.0.1-old"),
        "{}",
        run.stderr
    );
    assert_same_clusters(&pair.source, &pair.destination);
}

#[test]
fn keep_syncing_outlives_the_window() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(
        "[cutover]\nwindow = \"1s\"\non_window_expiry = \"keep_syncing\"\nmax_lag = \"2s\"\n",
    );
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    // Past the window's end, and a few of the engine's ticks after it.
    let deadline: jiff::Timestamp = pair
        .state()
        .cutover
        .deadline
        .expect("a window has a deadline")
        .parse()
        .unwrap();
    let left = jiff::Timestamp::now().duration_until(deadline + jiff::SignedDuration::from_secs(2));
    // Negative (already past) does not convert: no wait.
    if let Ok(left) = Duration::try_from(left) {
        std::thread::sleep(left);
    }
    assert_eq!(
        pair.state().phase,
        Phase::Ready,
        "still syncing after the window"
    );
    block_on(async {
        client(&pair.source)
            .await
            .database("shop")
            .collection::<Document>("orders")
            .insert_one(doc! { "late": true })
            .await
            .unwrap()
    });
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, _, stderr) = output(apply);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the cutover window has ended; syncing continues"),
        "the expiry was noticed: {stderr}"
    );
    assert_same_clusters(&pair.source, &pair.destination);
}

/// Applier writes on the destination wait, so a cutover stays in its drain for a while.
fn slow_destination_writes(server: &TestServerHandle, millis: i32) {
    server
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["update", "delete"], "blockConnection": true, "blockTimeMS": millis },
        })
        .unwrap();
}

#[test]
fn abort_releases_the_write_block_and_destroy_removes_exactly_what_was_created() {
    let pair = Pair::new();
    seed(&pair.source);
    block_on(async {
        client(&pair.destination)
            .await
            .database("other")
            .collection::<Document>("keep")
            .insert_one(doc! { "mine": true })
            .await
            .unwrap()
    });
    // Destination writes of 4 s each keep the drain, and so the write block, on long enough
    // to abort in.
    pair.write_config(&blocking(SLOW_DESTINATION_MAX_LAG));
    let writer = Writer::start(&pair.source, BASE, false, Duration::from_millis(2));
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    slow_destination_writes(&pair.destination, 4000);
    assert_eq!(pair.run(&["cutover"]).code, 0);
    pair.wait_for_phase(Phase::CuttingOver, Duration::from_secs(30));
    writer.wait_refused(Duration::from_secs(30));
    assert!(
        !source_accepts_writes(&pair.source),
        "writes are blocked during the cutover"
    );

    let abort = pair.run(&["abort"]);
    assert_eq!(abort.code, 0, "{}", abort.stderr);
    let (code, _, stderr) = output(apply);
    assert_eq!(code, 1, "an aborted apply is not a success: {stderr}");
    assert!(stderr.contains("aborted"), "{stderr}");
    assert!(
        source_accepts_writes(&pair.source),
        "abort released the write block"
    );
    let s = pair.state();
    assert_eq!(
        (s.phase, s.cutover.write_block),
        (Phase::Aborted, WriteBlock::Off)
    );
    pair.destination.clear_fail_points();

    let refused = pair.run(&["apply"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("was aborted"), "{}", refused.stderr);
    let no_tty = pair.run(&["destroy"]);
    assert_eq!(no_tty.code, 1, "destroy asks for confirmation");
    let destroy = pair.run(&["destroy", "--yes"]);
    assert_eq!(destroy.code, 0, "{}", destroy.stderr);
    assert!(
        destroy.stdout.contains("shop.orders") && !destroy.stdout.contains("other.keep"),
        "{}",
        destroy.stdout
    );
    let left: Vec<String> = common::contents(&pair.destination).into_keys().collect();
    assert_eq!(
        left,
        vec!["other.keep".to_owned()],
        "only what the migration created is gone"
    );
    assert!(!pair.lockfile().exists(), "the lockfile is archived");
    // A rehearsal can start over.
    let plan = pair.run(&["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
}

#[test]
fn a_failure_during_the_cutover_releases_the_write_block() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config(&blocking("2s"));
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    // The verification's counts fail on the destination: after the block, before the commit.
    pair.destination
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["aggregate"], "errorCode": 8000 },
        })
        .unwrap();
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, _, stderr) = output(apply);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("failCommand") && stderr.contains("8000"),
        "{stderr}"
    );
    assert!(
        source_accepts_writes(&pair.source),
        "the write block is released on failure"
    );
    let s = pair.state();
    assert_eq!(s.cutover.write_block, WriteBlock::Off);
    assert!(
        s.cutover
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains("8000"),
        "{:?}",
        s.cutover.failure
    );
    assert_ne!(s.phase, Phase::Committed);
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_while_streaming_and_while_cutting_over_it_converges() {
    let pair = Pair::new();
    seed(&pair.source);
    // Destination writes of 3 s each (below) keep the drain, and so the write block, on for
    // seconds.
    pair.write_config(&blocking(SLOW_DESTINATION_MAX_LAG));
    let writer = Writer::start(&pair.source, BASE, true, Duration::from_millis(3));
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut apply, "applying", Duration::from_secs(60), |s| {
        s.phase >= Phase::CatchingUp && s.sync.counts.total() > 20
    });
    kill(&mut apply); // while applying changes

    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    slow_destination_writes(&pair.destination, 3000);
    assert_eq!(pair.run(&["cutover"]).code, 0);
    pair.wait_for_phase(Phase::CuttingOver, Duration::from_secs(30));
    let written = writer.wait_refused(Duration::from_secs(30));
    assert!(written.refused.is_some());
    kill(&mut apply); // while the write block is on
    assert!(
        !source_accepts_writes(&pair.source),
        "a killed apply cannot release the block"
    );

    pair.destination.clear_fail_points();
    let apply = pair.spawn_apply(&["-v"]);
    let (code, stdout, stderr) = output_within(apply, Duration::from_secs(60), || {
        let s = pair.state();
        format!("{:#?}\n{:#?}\nspooled {:?}", s.sync, s.cutover, s.stream)
    });
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        source_accepts_writes(&pair.source),
        "the resumed cutover released the block"
    );
    // The probe write above went to another database after the commit: compare the rest.
    block_on(async {
        client(&pair.source)
            .await
            .database("probe")
            .drop()
            .await
            .unwrap()
    });
    assert_same_clusters(&pair.source, &pair.destination);
}

#[test]
fn delta_updates_converge_too() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[options]\nupdate_mode = \"delta\"\n[cutover]\nblock_source_writes = true\napproval = \"auto\"\nmax_lag = \"2s\"\n");
    let writer = Writer::start(&pair.source, BASE, false, Duration::from_millis(2));
    let run = pair.run(&["apply"]);
    let _ = writer.wait_refused(Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_same_clusters(&pair.source, &pair.destination);
}

#[test]
fn source_ddl_stops_the_migration_when_ddl_is_fail() {
    let pair = Pair::new();
    seed(&pair.source);
    pair.write_config("[options]\nddl = \"fail\"\n[cutover]\nmax_lag = \"2s\"\n");
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    block_on(async {
        client(&pair.source)
            .await
            .database("shop")
            .run_command(doc! { "create": "surprise" })
            .await
            .unwrap()
    });
    let (code, _, stderr) = output(apply);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("create shop.surprise") && stderr.contains("options.ddl = \"fail\""),
        "{stderr}"
    );
    let s = pair.state();
    assert_eq!(s.phase, Phase::Ready, "the state is kept");
    assert!(
        !common::contents(&pair.destination).contains_key("shop.surprise"),
        "the DDL was not applied"
    );
}

#[test]
fn lost_source_history_is_a_clear_error_and_nothing_is_dropped() {
    let pair = Pair::with(
        TestServer::builder()
            .replica_set_name("src")
            .oplog_max_events(50),
        TestServer::builder().replica_set_name("dst"),
    );
    seed(&pair.source);
    pair.write_config("[cutover]\nmax_lag = \"2s\"\n");
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    Command::new("kill")
        .args(["-INT", &apply.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(apply.wait().unwrap().code(), Some(130));
    let before = pair.state();
    let destination_before = common::contents(&pair.destination);
    // While no apply runs, the source writes more than its oplog keeps.
    block_on(async {
        let orders = client(&pair.source)
            .await
            .database("shop")
            .collection::<Document>("orders");
        for i in 0..200 {
            orders
                .insert_one(doc! { "_id": 5_000_000 + i })
                .await
                .unwrap();
        }
    });
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("oplog no longer holds the changes"),
        "{}",
        run.stderr
    );
    let after = pair.state();
    assert_eq!(after.phase, before.phase, "the state is kept");
    assert_eq!(after.stream.resume_token, before.stream.resume_token);
    assert_eq!(
        common::contents(&pair.destination),
        destination_before,
        "nothing was dropped or changed"
    );
}

#[test]
fn notify_command_hears_ready_and_committed() {
    let pair = Pair::new();
    seed(&pair.source);
    let log = pair.path().join("events.log");
    pair.write_config(&format!(
        "[cutover]\napproval = \"auto\"\nblock_source_writes = true\nmax_lag = \"2s\"\nnotify_command = \"echo \\\"$MONGOSHIFT_EVENT $MONGOSHIFT_MIGRATION\\\" >> {}\"\n",
        log.display()
    ));
    let run = pair.run(&["apply"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events = std::fs::read_to_string(&log).unwrap();
    assert!(events.contains("ready test\n"), "{events}");
    assert!(events.ends_with("committed test\n"), "{events}");
    assert!(
        events.contains("window_expiring") || !events.contains("failed"),
        "{events}"
    );
}

/// `shop.users` on a server.
async fn users(server: &TestServerHandle) -> mongodb::Collection<Document> {
    client(server).await.database("shop").collection("users")
}

/// Ten users `{_id: i, u: i}` on the source, and `apply` with `config` running until ready.
fn ready_with_users(pair: &Pair, config: &str) -> Child {
    block_on(async {
        users(&pair.source)
            .await
            .insert_many((0..10).map(|i| doc! { "_id": i, "u": i }))
            .await
            .unwrap();
    });
    pair.write_config(config);
    let apply = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    apply
}

/// In delta mode, changes are written by ordered commands. When one stops at a refused
/// statement, the deltas before it that matched nothing (their document is missing on the
/// destination) are still found and fetched again, before the statements after it are resent.
#[test]
fn deltas_before_a_refused_statement_are_still_checked_for_missing_documents() {
    let pair = Pair::new();
    let apply = ready_with_users(
        &pair,
        "[options]\nupdate_mode = \"delta\"\n[cutover]\nblock_source_writes = true\nmax_lag = \"2s\"\n",
    );
    block_on(async {
        let destination = client(&pair.destination).await;
        let users_d = destination.database("shop").collection::<Document>("users");
        // The destination lacks document 5, and only it holds `u: 500`.
        users_d.delete_one(doc! { "_id": 5 }).await.unwrap();
        destination
            .database("shop")
            .run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "u": 1 }, "name": "u_1", "unique": true }] })
            .await
            .unwrap();
        users_d
            .insert_one(doc! { "_id": 999, "u": 500 })
            .await
            .unwrap();
        // Hold the applier's next update, so that the three changes below reach it together.
        pair.destination
            .configure_fail_point(&doc! {
                "configureFailPoint": "failCommand",
                "mode": { "times": 1 },
                "data": { "failCommands": ["update"], "blockConnection": true, "blockTimeMS": 1500 },
            })
            .unwrap();
        users(&pair.source)
            .await
            .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // One source command: a delta on the missing document, one the unique index refuses,
        // and one after it.
        client(&pair.source)
            .await
            .database("shop")
            .run_command(doc! { "update": "users", "updates": [
                { "q": { "_id": 5 }, "u": { "$set": { "v": 1 } } },
                { "q": { "_id": 6 }, "u": { "$set": { "u": 500 } } },
                { "q": { "_id": 7 }, "u": { "$set": { "v": 1 } } },
            ] })
            .await
            .unwrap();
    });
    let limit = Instant::now() + Duration::from_secs(60);
    while pair.state().sync.pending.is_empty() {
        assert!(Instant::now() < limit, "document 6 was never refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Clear the conflict and the destination-only index, then cut over.
    block_on(async {
        let destination = client(&pair.destination).await;
        let shop = destination.database("shop");
        shop.collection::<Document>("users")
            .delete_one(doc! { "_id": 999 })
            .await
            .unwrap();
        shop.run_command(doc! { "dropIndexes": "users", "index": "u_1" })
            .await
            .unwrap();
    });
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, stdout, stderr) = output_within(apply, Duration::from_secs(60), || {
        format!("{:?}", pair.state().cutover)
    });
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_same_clusters(&pair.source, &pair.destination);
}

/// With indexes built before the copy, a document whose unique key another document still held
/// when the copy read it is refused by the destination. It is left to change application, which
/// writes it once the other document's change is applied, and the migration commits.
#[test]
fn a_unique_conflict_in_the_copy_is_resolved_by_change_application() {
    let pair = Pair::new();
    block_on(async {
        users(&pair.source)
            .await
            .insert_many((0..2000).map(|i| doc! { "_id": i, "k": i, "pad": "x".repeat(200) }))
            .await
            .unwrap();
        client(&pair.source)
            .await
            .database("shop")
            .run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "k": 1 }, "name": "k_1", "unique": true }] })
            .await
            .unwrap();
    });
    pair.write_config(
        "[options]\nindexes = \"before_copy\"\n[options.copy]\nparallel_partitions = 1\nbatch_size = \"16KiB\"\n[cutover]\nmax_lag = \"2s\"\n",
    );
    // Each copied batch (101 documents, the fewest the copy reads at once) waits 300 ms.
    pair.destination
        .configure_fail_point(&doc! {
            "configureFailPoint": "failCommand", "mode": "alwaysOn",
            "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": 300, "appName": "mongoshift" },
        })
        .unwrap();
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut apply, "a batch copied", Duration::from_secs(60), |s| {
        s.namespaces
            .iter()
            .flat_map(|n| &n.partitions)
            .any(|p| p.resume_from.is_some())
    });
    apply.kill().expect("SIGKILL");
    let _ = apply.wait();
    // _id 0 is on the destination; on the source it gives up its key and _id 1999 takes it.
    // The resumed copy reads _id 1999 afresh, after the change.
    block_on(async {
        let source = users(&pair.source).await;
        source
            .update_one(doc! { "_id": 0 }, doc! { "$set": { "k": -1 } })
            .await
            .unwrap();
        source
            .update_one(doc! { "_id": 1999 }, doc! { "$set": { "k": 0 } })
            .await
            .unwrap();
    });
    pair.destination.clear_fail_points();
    let again = pair.spawn_apply(&[]);
    pair.wait_for_phase(Phase::Ready, Duration::from_secs(60));
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, stdout, stderr) = output(again);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("a unique index refused a copied document"),
        "the conflict happened: {stderr}"
    );
    assert_same_clusters(&pair.source, &pair.destination);
}

/// A unique index only the destination has refuses a change for good. Once every change up to
/// the write block is applied, nothing can free the key, so the cutover is called off with the
/// document named, and the source is writable again. An approval file that cannot be withdrawn
/// is said to be in the way of the next apply.
#[test]
fn a_conflict_only_the_destination_has_calls_the_cutover_off() {
    let pair = Pair::new();
    let mut apply = ready_with_users(&pair, &blocking("2s"));
    block_on(async {
        client(&pair.destination)
            .await
            .database("shop")
            .run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "u": 1 }, "name": "u_1", "unique": true }] })
            .await
            .unwrap();
        users(&pair.source)
            .await
            .insert_one(doc! { "_id": 100, "u": 1 })
            .await
            .unwrap();
    });
    assert_eq!(pair.run(&["cutover"]).code, 0);
    // Once the approval is recorded, something that cannot be removed as a file takes the
    // approval file's place: the call-off must say that it could not withdraw the approval.
    // (The conflict is called off only after several seconds of retries.)
    let approval_file = pair.path().join("cutover.approved");
    pair.wait_for_state(
        &mut apply,
        "the approval recorded",
        Duration::from_secs(30),
        |s| s.cutover.approval.is_some(),
    );
    std::fs::remove_file(&approval_file).unwrap();
    std::fs::create_dir(&approval_file).unwrap();
    let (code, stdout, stderr) = output_within(apply, Duration::from_secs(60), || {
        format!("{:?}", pair.state().cutover)
    });
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 document(s) are still refused by a unique index")
            && stderr.contains("shop.users _id 100"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the approval file of the called-off cutover could not be removed")
            && stderr.contains("cutover.approved"),
        "{stderr}"
    );
    assert!(
        source_accepts_writes(&pair.source),
        "the write block is released"
    );
    let s = pair.state();
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(s.cutover.write_block, WriteBlock::Off);
    assert!(s.cutover.approval.is_none(), "a new approval is needed");
}
