//! Shared helpers for integration tests: two testkit servers, a migration directory with a
//! `migration.toml` pointing at them, the `mongoshift` binary, and seeding through the driver.

#![allow(dead_code, reason = "each test binary uses a different subset")]

/// A CA and a server certificate for TLS tests (the testkit's own helper).
#[path = "../../testkit/tests/common/certs.rs"]
pub mod certs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongoshift::state::{MigrationState, Phase, lockfile};
use mongoshift_testkit::{Mode, TestServer, TestServerHandle};
use tempfile::TempDir;

/// A source and a destination server and a directory for the migration's files.
pub struct Pair {
    /// The source.
    pub source: TestServerHandle,
    /// The destination.
    pub destination: TestServerHandle,
    /// Holds migration.toml, migration.lock, ...
    pub dir: TempDir,
}

impl Pair {
    /// Two replica sets.
    pub fn new() -> Self {
        Self::with(
            TestServer::builder().replica_set_name("src"),
            TestServer::builder().replica_set_name("dst"),
        )
    }

    /// Two servers from the given builders.
    pub fn with(
        source: mongoshift_testkit::TestServerBuilder,
        destination: mongoshift_testkit::TestServerBuilder,
    ) -> Self {
        Self {
            source: source.start_blocking().expect("source starts"),
            destination: destination.start_blocking().expect("destination starts"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A mongos in front of `shards` shards, for `Pair::with`.
    pub fn mongos(shards: usize) -> mongoshift_testkit::TestServerBuilder {
        TestServer::builder()
            .mode(Mode::Mongos)
            .shards(shards)
            .noop_interval(Duration::from_millis(200))
    }

    /// A replica set named `name`, for `Pair::with`.
    pub fn replica_set(name: &str) -> mongoshift_testkit::TestServerBuilder {
        TestServer::builder().replica_set_name(name)
    }

    /// A standalone source.
    pub fn standalone_source() -> Self {
        Self::with(
            TestServer::builder().mode(Mode::Standalone),
            TestServer::builder().replica_set_name("dst"),
        )
    }

    /// Writes migration.toml with both URIs and the given extra TOML; returns its path.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "version = 1\nname = \"test\"\n[source]\nuri = \"{}\"\n[destination]\nuri = \"{}\"\n{extra}",
            self.source.uri(),
            self.destination.uri()
        );
        let path = self.dir.path().join("migration.toml");
        std::fs::write(&path, text).expect("config written");
        path
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs mongoshift in the migration directory.
    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), args)
    }

    /// Starts `mongoshift apply ARGS` in the migration directory without waiting for it.
    pub fn spawn_apply(&self, args: &[&str]) -> Child {
        Command::new(assert_cmd::cargo::cargo_bin("mongoshift"))
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("MONGOSHIFT_LOG")
            .args(["apply"].iter().chain(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("apply starts")
    }

    /// The lockfile's path.
    pub fn lockfile(&self) -> PathBuf {
        self.path().join("migration.lock")
    }

    /// The migration's state as the lockfile records it.
    pub fn state(&self) -> MigrationState {
        lockfile::load(&self.lockfile())
            .expect("a readable lockfile")
            .expect("a lockfile")
    }

    /// Waits until the lockfile's state satisfies `ready`; fails with the output of `apply`
    /// (killed) when it ends first or `limit` passes.
    pub fn wait_for_state(
        &self,
        apply: &mut Child,
        what: &str,
        limit: Duration,
        ready: impl Fn(&MigrationState) -> bool,
    ) {
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = lockfile::load(&self.lockfile())
                && ready(&s)
            {
                return;
            }
            let ended = apply.try_wait().ok().flatten().is_some();
            if ended || start.elapsed() > limit {
                let _ = apply.kill();
                let _ = apply.wait();
                let mut text = String::new();
                if let Some(o) = apply.stdout.as_mut() {
                    let _ = std::io::Read::read_to_string(o, &mut text);
                }
                if let Some(e) = apply.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(e, &mut text);
                }
                panic!("apply did not reach {what} within {limit:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the lockfile shows `phase` (or a later one), up to `limit`.
    pub fn wait_for_phase(&self, phase: Phase, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = lockfile::load(&self.lockfile())
                && s.phase >= phase
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the migration did not reach {phase} within {limit:?}");
    }

    /// Replaces both servers' ports and other run-specific values in output, for snapshots.
    pub fn filter(&self, text: &str) -> String {
        let text = text
            .replace(&self.source.addr().port().to_string(), "SRC_PORT")
            .replace(&self.destination.addr().port().to_string(), "DST_PORT");
        let text = uuid_pattern().replace_all(&text, "UUID");
        // The measured window depends on when the test's writes happened.
        let window = regex::Regex::new(r"oplog window (\d+[dhms] ?)+").expect("valid regex");
        window
            .replace_all(&text, "oplog window <measured> ")
            .into_owned()
    }
}

fn uuid_pattern() -> regex::Regex {
    regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
        .expect("valid regex")
}

/// The outcome of running the binary.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs mongoshift with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = assert_cmd::Command::cargo_bin("mongoshift")
        .expect("binary built")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("MONGOSHIFT_LOG")
        .args(args)
        .output()
        .expect("mongoshift runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Waits for a spawned process and returns its exit code, stdout and stderr.
pub fn output(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().expect("the process ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A driver client for a server (blocking helpers run it on a private runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Connects the driver to a server.
pub async fn client(server: &TestServerHandle) -> Client {
    Client::with_uri_str(server.uri()).await.expect("client")
}

/// Every user namespace of a server: name → (options, indexes without `v`, documents as sorted
/// raw bytes).
pub type ClusterContents =
    std::collections::BTreeMap<String, (bson::Document, Vec<bson::Document>, Vec<Vec<u8>>)>;

/// Reads everything a migration must reproduce.
pub fn contents(server: &TestServerHandle) -> ClusterContents {
    use futures_util::TryStreamExt;
    block_on(async {
        let c = client(server).await;
        let mut out = ClusterContents::new();
        for db in c.list_database_names().await.expect("listDatabases") {
            if ["admin", "local", "config"].contains(&db.as_str()) {
                continue;
            }
            let database = c.database(&db);
            let listed: Vec<bson::Document> = database
                .run_cursor_command(bson::doc! { "listCollections": 1 })
                .await
                .expect("listCollections")
                .try_collect()
                .await
                .expect("listCollections");
            for item in listed {
                let name = item.get_str("name").expect("name").to_owned();
                if name.starts_with("system.") {
                    continue;
                }
                let options = item.get_document("options").cloned().unwrap_or_default();
                let is_view = item.get_str("type").ok() == Some("view");
                let (indexes, docs) = if is_view {
                    (Vec::new(), Vec::new())
                } else {
                    let mut indexes: Vec<bson::Document> = database
                        .run_cursor_command(bson::doc! { "listIndexes": &name })
                        .await
                        .expect("listIndexes")
                        .try_collect::<Vec<bson::Document>>()
                        .await
                        .expect("listIndexes")
                        .into_iter()
                        .map(|mut d| {
                            d.remove("v");
                            d
                        })
                        .collect();
                    indexes.sort_by(|a, b| {
                        a.get_str("name")
                            .unwrap_or("")
                            .cmp(b.get_str("name").unwrap_or(""))
                    });
                    let mut docs: Vec<Vec<u8>> = database
                        .collection::<bson::RawDocumentBuf>(&name)
                        .find(bson::doc! {})
                        .await
                        .expect("find")
                        .try_collect::<Vec<bson::RawDocumentBuf>>()
                        .await
                        .expect("find")
                        .into_iter()
                        .map(bson::RawDocumentBuf::into_bytes)
                        .collect();
                    docs.sort();
                    (indexes, docs)
                };
                out.insert(format!("{db}.{name}"), (options, indexes, docs));
            }
        }
        out
    })
}

/// Asserts that the destination holds exactly what the source holds.
pub fn assert_same_clusters(source: &TestServerHandle, destination: &TestServerHandle) {
    let s = contents(source);
    let d = contents(destination);
    let names = |c: &ClusterContents| c.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&s), names(&d), "the same namespaces");
    for (ns, (options, indexes, docs)) in &s {
        let (o2, i2, d2) = &d[ns];
        assert_eq!(options, o2, "{ns}: options");
        assert_eq!(indexes, i2, "{ns}: indexes");
        assert_eq!(docs.len(), d2.len(), "{ns}: document counts");
        assert!(docs == d2, "{ns}: documents differ");
    }
}

/// A source writer: inserts, updates, replaces and deletes on `shop.orders` (ids 0..base
/// exist), plus DDL at fixed steps, until stopped or refused (the cutover's write block).
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    steps: std::sync::Arc<std::sync::atomic::AtomicI64>,
    handle: Option<std::thread::JoinHandle<WriterResult>>,
}

/// What a writer did.
#[derive(Debug, Clone, Default)]
pub struct WriterResult {
    /// Operations that changed a document (each is one change event).
    pub changes: u64,
    /// DDL operations run.
    pub ddl: u64,
    /// Why it stopped, when a write was refused.
    pub refused: Option<String>,
}

impl Writer {
    /// Starts writing to the server. `base` documents `0..base` exist in `shop.orders`; with
    /// `ddl`, the writer also creates, renames and drops collections and indexes.
    pub fn start(
        server: &TestServerHandle,
        base: i64,
        ddl: bool,
        pause: std::time::Duration,
    ) -> Self {
        let uri = server.uri();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let steps = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let done = steps.clone();
        let handle = std::thread::spawn(move || {
            block_on(async move {
                let c = Client::with_uri_str(uri).await.expect("client");
                let shop = c.database("shop");
                let orders = shop.collection::<bson::Document>("orders");
                let mut r = WriterResult::default();
                let mut i: i64 = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let step = async {
                        match i % 5 {
                            0 | 4 => orders.insert_one(bson::doc! { "_id": 1_000_000 + i, "v": i, "tags": ["a", "b", i] }).await.map(|_| 1),
                            1 => orders.update_one(bson::doc! { "_id": i % base }, bson::doc! { "$inc": { "v": 1 }, "$set": { "at": i } }).await.map(|u| u.modified_count),
                            2 => orders.replace_one(bson::doc! { "_id": (i * 7) % base }, bson::doc! { "replaced": i }).await.map(|u| u.modified_count),
                            _ => orders.delete_one(bson::doc! { "_id": 1_000_000 + i - 3 }).await.map(|d| d.deleted_count),
                        }
                    };
                    match step.await {
                        Ok(n) => r.changes += n,
                        Err(e) => {
                            r.refused = Some(e.to_string());
                            break;
                        }
                    }
                    if ddl {
                        let result = match i {
                            40 => shop.run_command(bson::doc! { "create": "fresh", "validator": { "n": { "$type": "int" } } }).await.map(|_| 1),
                            41..=60 => shop.collection::<bson::Document>("fresh").insert_one(bson::doc! { "n": i as i32 }).await.map(|_| 0),
                            70 => shop.run_command(bson::doc! { "createIndexes": "orders", "indexes": [{ "key": { "at": 1 }, "name": "at_1" }] }).await.map(|_| 1),
                            90 => c.database("admin").run_command(bson::doc! { "renameCollection": "shop.scratch", "to": "shop.scratch_renamed" }).await.map(|_| 1),
                            95 => c.database("admin").run_command(bson::doc! { "renameCollection": "shop.scratch_renamed", "to": "shop.scratch_final" }).await.map(|_| 1),
                            110 => shop.run_command(bson::doc! { "drop": "doomed" }).await.map(|_| 1),
                            130 => shop.run_command(bson::doc! { "dropIndexes": "orders", "index": "at_1" }).await.map(|_| 1),
                            140 => shop.run_command(bson::doc! { "createIndexes": "fresh", "indexes": [{ "key": { "n": 1 }, "name": "n_unique", "unique": true }] }).await.map(|_| 1),
                            _ => Ok(0),
                        };
                        match result {
                            Ok(n) => r.ddl += n,
                            Err(e) => {
                                r.refused = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    i += 1;
                    done.store(i, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                r
            })
        });
        Self {
            stop,
            steps,
            handle: Some(handle),
        }
    }

    /// Steps completed so far (the DDL steps are done after step 140).
    pub fn steps(&self) -> i64 {
        self.steps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the writer completed `n` steps, up to `limit`.
    pub fn wait_for_steps(&self, n: i64, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.steps() < n {
            assert!(
                start.elapsed() < limit,
                "the writer did {} of {n} steps",
                self.steps()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops (if still running) and returns what it did.
    pub fn finish(mut self) -> WriterResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("writer thread"))
            .unwrap_or_default()
    }

    /// Waits until the writer stopped by itself (refused), up to `limit`.
    pub fn wait_refused(self, limit: std::time::Duration) -> WriterResult {
        let start = std::time::Instant::now();
        while self.handle.as_ref().is_some_and(|h| !h.is_finished()) && start.elapsed() < limit {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.finish()
    }
}
