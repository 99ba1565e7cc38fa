//! The quickstart example's scenario at a small scale: the first thing a newcomer runs must work.

#[path = "../examples/quickstart/scenario.rs"]
mod scenario;

use std::sync::Mutex;

use mongoshift::sync::ApplyOutcome;
use scenario::Scale;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_migrates_everything_while_the_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lines = Mutex::new(Vec::<String>::new());
    let say = |line: &str| lines.lock().unwrap().push(line.to_owned());
    let finished = scenario::run(dir.path(), Scale::SMALL, CancellationToken::new(), &say)
        .await
        .unwrap();
    let narration = lines.into_inner().unwrap().join("\n");

    let report = match finished.outcome {
        Ok(ApplyOutcome::Committed(report)) => report,
        other => panic!("not committed: {other:?}\n{narration}"),
    };
    assert!(
        finished
            .plan
            .contains("+ create view shop.open_orders on orders"),
        "{}",
        finished.plan
    );
    assert!(narration.contains("$ mongoshift cutover"), "{narration}");
    // The writer ran through the copy and the sync, and only the write block stopped it.
    let writer = &finished.writer;
    let stopped_by = writer.stopped_by.as_deref().unwrap_or_default();
    assert!(
        stopped_by.starts_with("UserWritesBlocked (371)"),
        "{writer:?}"
    );
    assert!(report.changes_applied.total() > 0, "{}", report.human());
    // The writer's inserts before the copy's snapshot are copied too.
    assert!(report.documents_copied >= finished.seeded as u64);
    assert_eq!(report.created.collections, 5);
    assert_eq!(report.created.views, 1);
    assert_eq!(report.indexes_created, 6);
    let verification = report.verification.as_ref().expect("verified");
    assert!(verification.passed(), "{}", verification.human());
    assert_eq!(verification.namespaces.len(), 6);
    assert!(dir.path().join("migration-report.json").exists());
}
