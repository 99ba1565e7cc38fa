//! Separate `mongoshift-testd` processes, and the binaries the harness runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::BoxError;

/// The binaries under test. Under `cargo run` they are built first, into their own target
/// directory (`target/bench-build`): built beside the harness, `-p mongoshift -p
/// mongoshift-testkit` unifies dependency features differently from `-p mongoshift-bench`, and
/// each command would rebuild the `mongodb` crate the other one just built. Run directly, the
/// harness looks next to its own executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `mongoshift`.
    pub mongoshift: PathBuf,
    /// `mongoshift-testd`.
    pub testd: PathBuf,
}

impl Binaries {
    /// Locates (and, under cargo, builds) both binaries in the harness's profile.
    pub fn locate() -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?;
        let mut dir = exe
            .parent()
            .ok_or("the harness has no directory")?
            .to_owned();
        // Under `cargo test` the executable lives in `target/<profile>/deps`.
        if dir.ends_with("deps") {
            dir = dir.parent().ok_or("no profile directory")?.to_owned();
        }
        if let Ok(cargo) = std::env::var("CARGO") {
            // Always rebuild under cargo: stale binaries would measure old code.
            let release = dir.ends_with("release");
            let target = dir
                .parent()
                .ok_or("the harness's profile directory has no parent")?
                .join("bench-build");
            let mut build = Command::new(cargo);
            build.args([
                "build",
                "--quiet",
                "-p",
                "mongoshift",
                "-p",
                "mongoshift-testkit",
            ]);
            build.args(["--bin", "mongoshift", "--bin", "mongoshift-testd"]);
            build.arg("--target-dir").arg(&target);
            if release {
                build.arg("--release");
            }
            let status = build.status()?;
            if !status.success() {
                return Err("building mongoshift and mongoshift-testd failed".into());
            }
            dir = target.join(if release { "release" } else { "debug" });
        }
        let found = Self {
            mongoshift: dir.join("mongoshift"),
            testd: dir.join("mongoshift-testd"),
        };
        for path in [&found.mongoshift, &found.testd] {
            if !path.exists() {
                return Err(format!(
                    "{} is missing: run `cargo build --release --workspace` first",
                    path.display()
                )
                .into());
            }
        }
        Ok(found)
    }
}

/// A `mongoshift-testd` process, killed when dropped.
pub struct Server {
    child: Child,
    /// The connection string.
    pub uri: String,
}

impl Server {
    /// Starts a single-member replica set named `name` and waits for its `listening` line.
    pub fn start(testd: &Path, name: &str, oplog_max_events: usize) -> Result<Self, BoxError> {
        let mut child = Command::new(testd)
            .args(["--port", "0", "--mode", "replset", "--replset", name])
            .args(["--oplog-max-events", &oplog_max_events.to_string()])
            // mongod's default is 10 s; a short interval keeps change-stream high-water marks
            // fresh when the source is idle, as on a busy production cluster.
            .args(["--noop-interval-ms", "200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("mongoshift-testd said {line:?} instead of `listening on`"))?
            .to_owned();
        Ok(Self {
            child,
            uri: format!("mongodb://{addr}/?replicaSet={name}"),
        })
    }

    /// The server's process id (for its memory and CPU figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
