//! Shared helpers for integration tests: two testkit servers, a migration directory with a
//! `migration.toml` pointing at them, the `mongoshift` binary, and seeding through the driver.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::Output;

use mongodb::Client;
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
