//! The same migration against real clusters, when `MONGOSHIFT_TEST_SOURCE_URI` and
//! `MONGOSHIFT_TEST_DESTINATION_URI` name them (otherwise the test says it is skipped).
//!
//! It seeds a database of its own (`mongoshift_test_<random>`) on the source, migrates only that
//! database with a writer running, verifies, and drops the database on both sides afterwards.
//! The source user needs write access to that database for the seeding (the tool itself only
//! reads the source, apart from the write block, which this test does not use).

use std::time::Duration;

use bson::{Document, doc};
use mongodb::Client;

struct Cleanup {
    uris: [String; 2],
    db: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (uris, db) = (self.uris.clone(), self.db.clone());
        let _ = std::thread::spawn(move || {
            block_on(async {
                for uri in uris {
                    if let Ok(c) = Client::with_uri_str(&uri).await {
                        let _ = c.database(&db).drop().await;
                    }
                }
            });
        })
        .join();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = assert_cmd::Command::cargo_bin("mongoshift")
        .expect("binary built")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("mongoshift runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_migration_between_real_clusters_converges() {
    let (Ok(source), Ok(destination)) = (
        std::env::var("MONGOSHIFT_TEST_SOURCE_URI"),
        std::env::var("MONGOSHIFT_TEST_DESTINATION_URI"),
    ) else {
        eprintln!(
            "skipped: set MONGOSHIFT_TEST_SOURCE_URI and MONGOSHIFT_TEST_DESTINATION_URI to run \
             this test against real clusters"
        );
        return;
    };
    let db = format!("mongoshift_test_{}", std::process::id());
    let _cleanup = Cleanup {
        uris: [source.clone(), destination.clone()],
        db: db.clone(),
    };
    block_on(async {
        let c = Client::with_uri_str(&source)
            .await
            .expect("source reachable");
        let orders = c.database(&db).collection::<Document>("orders");
        orders
            .insert_many(
                (0..5_000)
                    .map(|i| doc! { "_id": i, "customer": i % 97, "total": f64::from(i) / 3.0 }),
            )
            .await
            .expect("seeding the source");
        c.database(&db)
            .run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .expect("index on the source");
    });

    let dir = tempfile::tempdir().unwrap();
    // The URIs (and any password in them) come from the environment, never from the file.
    std::fs::write(
        dir.path().join("migration.toml"),
        format!(
            "version = 1\nname = \"real-clusters-test\"\n[source]\nuri_env = \"MONGOSHIFT_TEST_SOURCE_URI\"\n\
             [destination]\nuri_env = \"MONGOSHIFT_TEST_DESTINATION_URI\"\n[options]\ninclude = [\"{db}.*\"]\n\
             [cutover]\napproval = \"flag\"\nmax_lag = \"5s\"\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // A writer runs during the copy and the sync. Without a write block, the approval given by
    // the flag means "applications stopped writing": apply waits for a quiet source, which
    // comes once the writer is done.
    let apply = std::process::Command::new(assert_cmd::cargo::cargo_bin("mongoshift"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(["apply", "--approve-cutover"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apply starts");
    block_on(async {
        let c = Client::with_uri_str(&source).await.unwrap();
        let orders = c.database(&db).collection::<Document>("orders");
        for i in 0..200 {
            orders
                .update_one(doc! { "_id": i * 7 }, doc! { "$inc": { "total": 1 } })
                .await
                .unwrap();
            orders
                .insert_one(doc! { "_id": 10_000 + i, "customer": 1 })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let out = apply.wait_with_output().expect("apply ran");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("committed"), "{stdout}");
    let (code, stdout, stderr) = run(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    eprintln!(
        "real clusters: {}",
        stdout.lines().last().unwrap_or_default()
    );
}
